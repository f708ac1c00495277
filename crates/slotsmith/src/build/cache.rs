//! The stage cache: each stage's outputs, content-addressed by the hash of
//! exactly what the stage consumes, so a rebuild redoes only what changed.
//!
//! **Keys.** [`Cache::key`] is sha256 over a domain string, the stage name,
//! this slotsmith's version and the canonical JSON of the stage's inputs:
//! the plan parts it reads, the hashes of the artifacts it reads (never
//! their paths), the public fingerprints of its keys and the versions of
//! the tools it runs. Anything a stage reads that is not in its key would
//! be a bug; each stage's key function lists its inputs in one place.
//!
//! **Entries.** `<work>/.stage-cache/<image>/<stage>/<key>/` holds the
//! output files and `entry.json` (each file's sha256 and size, and a
//! stamp: inode, size and mtime in nanoseconds), written into a temporary
//! directory and renamed into place, so an entry is whole or absent. Files
//! move between the staging directory and the cache by hard link (a copy
//! across filesystems), so a cache hit costs no copying, only hashing.
//!
//! **Integrity.** A hit is published only if every file still has the
//! hash it was stored with: every file of every hit is hashed again, on
//! background threads while the later stages run (holes fed from a zero
//! buffer: the 2.5 GiB golden image takes about 1.4 s), and the build
//! settles them before publishing ([`Cache::settle`]). No stamp is trusted,
//! since mtimes can be set back and a hard link shares the inode with a
//! published file anyone may edit. A file whose size or entry is wrong
//! misses at once; one whose hash differs has its entry deleted, and the
//! build runs again without it, so corrupted bytes are never published.
//! `--no-cache` bypasses the cache.
//!
//! **Size.** Only the newest [`KEEP`] entries of each stage of each image
//! are kept.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Hashed;
use crate::progress::Progress;

/// Entries kept per stage and image.
pub(super) const KEEP: usize = 2;

/// The cache of one image's stages (or none, with `--no-cache`).
pub(super) struct Cache {
    dir: Option<PathBuf>,
    /// What each lookup found, in order: reported in `--json`, never in
    /// build.json (a cached and an uncached build give the same bytes).
    outcomes: std::cell::RefCell<BTreeMap<String, Outcome>>,
    /// Hashes of hit files still being checked: (stage, entry, file, job).
    pending: std::cell::RefCell<Vec<Pending>>,
}

type Pending = (
    String,
    PathBuf,
    String,
    std::thread::JoinHandle<Result<(), String>>,
);

/// What a stage's lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Taken from the cache.
    Hit,
    /// Run, and stored.
    Miss,
    /// Run: the cache is off (`--no-cache`) or the stage cannot be cached.
    Off,
}

/// A stage's cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Key(String);

impl Key {
    /// The key as hex.
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredFile {
    sha256: String,
    size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct EntryFile {
    stage: String,
    files: BTreeMap<String, StoredFile>,
    meta: serde_json::Value,
}

/// A verified cache hit.
pub(super) struct Entry {
    dir: PathBuf,
    files: BTreeMap<String, Hashed>,
    meta: serde_json::Value,
}

impl Entry {
    /// The stored hash of output `name`.
    pub(super) fn hashed(&self, name: &str) -> anyhow::Result<Hashed> {
        self.files
            .get(name)
            .copied()
            .with_context(|| format!("cache entry {} has no {name}", self.dir.display()))
    }

    /// Every stored file with its hash.
    pub(super) fn files(&self) -> &BTreeMap<String, Hashed> {
        &self.files
    }

    /// Puts output `name` at `dest` (a hard link, or a copy).
    pub(super) fn place(&self, name: &str, dest: &Path) -> anyhow::Result<()> {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        link_or_copy(&self.dir.join(name), dest)
    }

    /// The stage's metadata, as stored.
    pub(super) fn meta<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_value(self.meta.clone())
            .with_context(|| format!("reading the metadata of cache entry {}", self.dir.display()))
    }
}

impl Cache {
    /// The cache of image `name` under `work_root`, or a disabled one.
    pub(super) fn new(work_root: &Path, name: &str, enabled: bool) -> Cache {
        Cache {
            dir: enabled.then(|| work_root.join(".stage-cache").join(name)),
            outcomes: Default::default(),
            pending: Default::default(),
        }
    }

    /// The key of `stage` over `inputs` (see the module documentation).
    pub(super) fn key(stage: &str, inputs: &impl Serialize) -> anyhow::Result<Key> {
        let json = serde_json::to_vec(inputs).context("serialising a stage's cache inputs")?;
        let mut h = Sha256::new();
        h.update(b"slotsmith stage cache v1\0");
        h.update(stage.as_bytes());
        h.update(b"\0");
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(b"\0");
        h.update(&json);
        Ok(Key(hex::encode(h.finalize())))
    }

    /// A verified entry for `stage` and `key`, if there is one. A corrupted
    /// entry is removed (and said so), never returned.
    pub(super) fn get(&self, stage: &str, key: &Key, progress: &mut Progress) -> Option<Entry> {
        let found = self.lookup(stage, key, progress);
        let outcome = match (&self.dir, &found) {
            (None, _) => Outcome::Off,
            (Some(_), Some(_)) => Outcome::Hit,
            (Some(_), None) => Outcome::Miss,
        };
        self.outcomes
            .borrow_mut()
            .insert(stage.to_string(), outcome);
        found
    }

    /// How many hit files are still being verified.
    pub(super) fn pending(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Waits for the verification of every hit. True when all of them
    /// still have their stored hashes; otherwise the corrupted entries are
    /// deleted (and named), and the build must not publish what it made.
    pub(super) fn settle(&self, progress: &mut Progress) -> bool {
        let jobs: Vec<Pending> = self.pending.borrow_mut().drain(..).collect();
        let mut ok = true;
        for (stage, dir, name, job) in jobs {
            let res = job
                .join()
                .unwrap_or_else(|_| Err("could not be checked (a thread panicked)".into()));
            if let Err(why) = res {
                ok = false;
                discard(&dir, progress, &stage, &format!("{name} {why}"));
            }
        }
        ok
    }

    /// Records that `stage` ran without a cache key (it cannot be cached).
    pub(super) fn uncacheable(&self, stage: &str) {
        self.outcomes
            .borrow_mut()
            .insert(stage.to_string(), Outcome::Off);
    }

    /// What every lookup found, by stage.
    pub(super) fn outcomes(&self) -> BTreeMap<String, Outcome> {
        self.outcomes.borrow().clone()
    }

    fn lookup(&self, stage: &str, key: &Key, progress: &mut Progress) -> Option<Entry> {
        let dir = self.dir.as_ref()?.join(stage).join(key.as_str());
        let text = fs::read(dir.join("entry.json")).ok()?;
        let entry: EntryFile = match serde_json::from_slice(&text) {
            Ok(e) => e,
            Err(_) => {
                discard(&dir, progress, stage, "its entry.json does not parse");
                return None;
            }
        };
        // Sizes now; every file's hash on a background thread, settled
        // before publishing.
        let mut files = BTreeMap::new();
        for (name, stored) in &entry.files {
            match check_size(&dir.join(name), stored) {
                Ok(h) => {
                    files.insert(name.clone(), h);
                }
                Err(why) => {
                    discard(&dir, progress, stage, &format!("{name} {why}"));
                    return None;
                }
            }
        }
        for (name, stored) in &entry.files {
            let path = dir.join(name);
            let stored = stored.clone();
            let job = std::thread::spawn(move || check_hash(&path, &stored));
            self.pending
                .borrow_mut()
                .push((stage.to_string(), dir.clone(), name.clone(), job));
        }
        // Mark it recently used, for the eviction order.
        let _ = fs::File::open(dir.join("entry.json"))
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Some(Entry {
            dir,
            files,
            meta: entry.meta,
        })
    }

    /// Stores `files` (output name, the file in the staging directory, its
    /// hash) and `meta` as the entry for `stage` and `key`. Failing to
    /// store is not a build failure: the next build just runs the stage.
    pub(super) fn put(
        &self,
        stage: &str,
        key: &Key,
        files: &[(&str, &Path, Hashed)],
        meta: &impl Serialize,
        progress: &mut Progress,
    ) {
        let Some(root) = &self.dir else { return };
        if let Err(e) = self.try_put(root, stage, key, files, meta) {
            progress.note(&format!("not caching the {stage} stage: {e:#}"));
        }
    }

    fn try_put(
        &self,
        root: &Path,
        stage: &str,
        key: &Key,
        files: &[(&str, &Path, Hashed)],
        meta: &impl Serialize,
    ) -> anyhow::Result<()> {
        let stage_dir = root.join(stage);
        fs::create_dir_all(&stage_dir)
            .with_context(|| format!("creating {}", stage_dir.display()))?;
        let dest = stage_dir.join(key.as_str());
        if dest.join("entry.json").is_file() {
            return Ok(());
        }
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&stage_dir)
            .with_context(|| format!("creating a temporary entry in {}", stage_dir.display()))?;
        let mut stored = BTreeMap::new();
        for (name, src, h) in files {
            let to = tmp.path().join(name);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            link_or_copy(src, &to)?;
            stored.insert(
                name.to_string(),
                StoredFile {
                    sha256: hex::encode(h.sha256),
                    size: h.size,
                },
            );
        }
        let entry = EntryFile {
            stage: stage.to_string(),
            files: stored,
            meta: serde_json::to_value(meta)?,
        };
        fs::write(
            tmp.path().join("entry.json"),
            serde_json::to_vec_pretty(&entry)?,
        )?;
        let tmp = tmp.keep();
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = slotsmith_rootfs::cleanup::remove_tree(&tmp);
            // A concurrent build stored the same entry first: fine.
            if !dest.join("entry.json").is_file() {
                return Err(e).with_context(|| format!("storing {}", dest.display()));
            }
        }
        evict(&stage_dir);
        Ok(())
    }
}

/// The file's stored hash if its size still matches, else why not.
fn check_size(path: &Path, stored: &StoredFile) -> Result<Hashed, String> {
    let md = fs::symlink_metadata(path).map_err(|e| format!("is unreadable: {e}"))?;
    if !md.is_file() {
        return Err("is not a regular file".into());
    }
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(&stored.sha256, &mut sha256).map_err(|_| "has a bad stored hash")?;
    if md.len() != stored.size {
        return Err(format!("has {} bytes, not {}", md.len(), stored.size));
    }
    Ok(Hashed {
        sha256,
        size: stored.size,
    })
}

/// Whether the file still has its stored sha256.
fn check_hash(path: &Path, stored: &StoredFile) -> Result<(), String> {
    let f = fs::File::open(path).map_err(|e| format!("cannot be opened: {e}"))?;
    let actual = slotsmith_disk::bmap::sha256_file_sparse(&f)
        .map_err(|e| format!("cannot be read: {e:#}"))?;
    if hex::encode(actual) != stored.sha256 {
        return Err("changed since it was cached (sha256 differs)".into());
    }
    Ok(())
}

fn discard(dir: &Path, progress: &mut Progress, stage: &str, why: &str) {
    progress.note(&format!(
        "cache entry of the {stage} stage is corrupted ({why}); running the stage again"
    ));
    let _ = slotsmith_rootfs::cleanup::remove_tree(dir);
}

/// Keeps the [`KEEP`] most recently used entries of a stage.
fn evict(stage_dir: &Path) {
    let Ok(rd) = fs::read_dir(stage_dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let used = fs::metadata(e.path().join("entry.json"))
                .and_then(|m| m.modified())
                .ok()?;
            Some((used, e.path()))
        })
        .collect();
    entries.sort();
    let n = entries.len();
    for (_, p) in entries.into_iter().take(n.saturating_sub(KEEP)) {
        let _ = slotsmith_rootfs::cleanup::remove_tree(&p);
    }
}

/// A hard link, or a copy when the two paths are on different filesystems
/// (or links are not allowed there).
fn link_or_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(_) => fs::copy(from, to)
            .map(|_| ())
            .with_context(|| format!("copying {} to {}", from.display(), to.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_one(cache: &Cache, key: &Key, dir: &Path, body: &[u8]) -> PathBuf {
        let f = dir.join("out.bin");
        let _ = fs::remove_file(&f);
        fs::write(&f, body).unwrap();
        let h = Hashed::of_bytes(body);
        cache.put(
            "stage",
            key,
            &[("out.bin", &f, h)],
            &serde_json::json!({"n": 1}),
            &mut Progress::new(true),
        );
        f
    }

    #[test]
    fn keys_depend_on_stage_and_inputs() {
        let a = Cache::key("rootfs", &serde_json::json!({"x": 1})).unwrap();
        assert_eq!(
            a,
            Cache::key("rootfs", &serde_json::json!({"x": 1})).unwrap()
        );
        assert_ne!(
            a,
            Cache::key("rootfs", &serde_json::json!({"x": 2})).unwrap()
        );
        assert_ne!(a, Cache::key("boot", &serde_json::json!({"x": 1})).unwrap());
    }

    #[test]
    fn a_stored_entry_is_found_and_placed() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path(), "img", true);
        let key = Cache::key("stage", &1).unwrap();
        put_one(&cache, &key, tmp.path(), b"hello");
        let e = cache.get("stage", &key, &mut Progress::new(true)).unwrap();
        assert_eq!(e.hashed("out.bin").unwrap(), Hashed::of_bytes(b"hello"));
        let dest = tmp.path().join("placed/out.bin");
        e.place("out.bin", &dest).unwrap();
        assert_eq!(fs::read(dest).unwrap(), b"hello");
        let meta: serde_json::Value = e.meta().unwrap();
        assert_eq!(meta["n"], 1);
        assert!(
            cache.settle(&mut Progress::new(true)),
            "an intact hit verifies"
        );
        // Another key misses; a disabled cache misses.
        assert!(cache
            .get(
                "stage",
                &Cache::key("stage", &2).unwrap(),
                &mut Progress::new(true)
            )
            .is_none());
        let off = Cache::new(tmp.path(), "img", false);
        assert!(off.get("stage", &key, &mut Progress::new(true)).is_none());
    }

    #[test]
    fn a_corrupted_entry_is_detected_removed_and_never_used() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path(), "img", true);
        let key = Cache::key("stage", &1).unwrap();
        let staged = put_one(&cache, &key, tmp.path(), b"hello");
        // The staged file is a hard link of the cached one: editing it in
        // place (same size) corrupts the entry.
        fs::write(&staged, b"jello").unwrap();
        // Same size: the hit is returned, and its verification fails.
        assert!(cache.get("stage", &key, &mut Progress::new(true)).is_some());
        assert!(!cache.settle(&mut Progress::new(true)));
        // The entry is gone, so the next build stores a fresh one.
        assert!(!tmp
            .path()
            .join(".stage-cache/img/stage")
            .join(key.as_str())
            .exists());
    }

    #[test]
    fn a_corruption_that_keeps_size_and_mtime_is_still_detected() {
        use std::io::{Seek, SeekFrom, Write};
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path(), "img", true);
        let key = Cache::key("stage", &1).unwrap();
        let big: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
        put_one(&cache, &key, tmp.path(), &big);
        let cached = tmp
            .path()
            .join(".stage-cache/img/stage")
            .join(key.as_str())
            .join("out.bin");
        let mtime = fs::metadata(&cached).unwrap().modified().unwrap();
        let mut f = fs::OpenOptions::new().write(true).open(&cached).unwrap();
        f.seek(SeekFrom::Start(7 << 20)).unwrap();
        f.write_all(b"X").unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        assert_eq!(fs::metadata(&cached).unwrap().modified().unwrap(), mtime);
        assert!(cache.get("stage", &key, &mut Progress::new(true)).is_some());
        assert!(!cache.settle(&mut Progress::new(true)));
        // Deleted: the next lookup misses.
        assert!(cache.get("stage", &key, &mut Progress::new(true)).is_none());
    }

    #[test]
    fn only_the_newest_entries_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path(), "img", true);
        for i in 0..5 {
            let key = Cache::key("stage", &i).unwrap();
            put_one(&cache, &key, tmp.path(), format!("v{i}").as_bytes());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let n = fs::read_dir(tmp.path().join(".stage-cache/img/stage"))
            .unwrap()
            .count();
        assert_eq!(n, KEEP);
        assert!(cache
            .get(
                "stage",
                &Cache::key("stage", &4).unwrap(),
                &mut Progress::new(true)
            )
            .is_some());
    }
}
