//! Read-only views of a root filesystem for `apply` and `audit`.
//!
//! The audit must read the BUILT image, not the staging directory it came
//! from: a rootless build (fakeroot, user namespaces) can show root-owned,
//! correctly-moded files in staging while the packed image says otherwise,
//! and a packing step can drop or rewrite files. [`SquashfsRootfs`] therefore
//! parses the squashfs image file itself (with `backhand`, no mounting, no
//! root), and [`Ext4Rootfs`] the ext4 image (with `ext4-view`). [`MemRootfs`]
//! is an in-memory tree used by tests and by the build for its view of the
//! rootfs before packing.
//!
//! [`Index`] adds what both need on top: lookups that follow symlinks the
//! way the kernel would inside the image (absolute targets resolve against
//! the image root, never the build host).
//!
//! # Untrusted images
//!
//! `audit --image` reads images the build did not make, so an image is
//! untrusted input: a corrupt or hostile one must give an error, never a
//! panic, a hang or an allocation it did not pay for in bytes. Both readers
//! check the on-disk structures *before* the third-party parser sees them
//! (superblock fields against the file size, table sizes, counts), because
//! those parsers size allocations from them, and walk the tree with the
//! limits below. Names and paths in errors are escaped
//! (`slotsmith_yaml::escape`). As a last resort, each call into `backhand`
//! or `ext4-view` runs under `catch_unwind` ([`guarded`]): their code is not
//! ours to fix, and a panic in it on a corrupt image must become "corrupt
//! image", not a crashed build.
//!
//! | limit | value | why |
//! |---|---|---|
//! | entries (paths) in an image | [`MAX_ENTRIES`] = 1,000,000 | a Debian rootfs has 30,000-100,000 |
//! | squashfs inodes | [`MAX_ENTRIES`] | each entry is at most one inode |
//! | depth | [`MAX_DEPTH`] = 256 components | the builder's own limit; keeps backhand's recursive walk short |
//! | path | [`MAX_PATH`] = 4095 bytes | `PATH_MAX` |
//! | name | [`MAX_NAME`] = 255 bytes | `NAME_MAX` |
//! | all paths together | [`MAX_PATH_BYTES`] = 64 MiB | the index holds every path |
//! | squashfs inode or directory table | [`MAX_METADATA`] = 64 MiB uncompressed | real images: a few MiB |
//! | squashfs fragments | [`MAX_FRAGMENTS`] = 1,048,576 | one per small file at most |
//! | ext4 block groups | [`MAX_BLOCK_GROUPS`] = 1,048,576 | 128 TiB with 4 KiB blocks |
//! | file read by the audit | [`MAX_READ`] = 64 MiB | it reads configuration files only |

use std::collections::BTreeMap;

use std::panic::{catch_unwind, AssertUnwindSafe};

use anyhow::{anyhow, Result};
use serde::Serialize;

mod ext4;
pub mod fuzz;
mod squashfs;

pub use ext4::Ext4Rootfs;
pub use squashfs::SquashfsRootfs;

/// The type of a filesystem entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link and its target as stored.
    Symlink {
        /// The link text.
        target: String,
    },
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
}

/// Metadata of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The entry type.
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777` mask).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes for files, 0 otherwise.
    pub size: u64,
}

/// Read access to a root filesystem. Paths are absolute and normalised
/// (`/etc/passwd`); the root itself is `/`.
pub trait RootfsRead {
    /// Every entry, sorted by path.
    fn entries(&self) -> Vec<(String, Entry)>;
    /// The contents of the regular file at exactly `path` (symlinks are not
    /// followed; see [`Index::read_resolved`]); `None` when there is no
    /// regular file there.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>>;
    /// The sha256 and length of the regular file at exactly `path`, or
    /// `None` when there is none. The image readers stream it, so any size
    /// the image holds is hashed in bounded memory (`xtask diff` hashes every
    /// file; [`RootfsRead::read`] stops at [`MAX_READ`]).
    fn sha256(&self, path: &str) -> Result<Option<([u8; 32], u64)>> {
        use sha2::{Digest, Sha256};
        Ok(self
            .read(path)?
            .map(|d| (Sha256::digest(&d).into(), d.len() as u64)))
    }
}

/// Hashes everything `reader` yields, in bounded memory; for the readers'
/// [`RootfsRead::sha256`].
pub(crate) fn hash_reader(mut reader: impl std::io::Read) -> std::io::Result<([u8; 32], u64)> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let n = std::io::copy(&mut reader, &mut h)?;
    Ok((h.finalize().into(), n))
}

/// Files larger than this are refused by [`RootfsRead::read`] of the image
/// readers: the audit only reads configuration files, and a corrupt size
/// field must not make it allocate gigabytes.
pub const MAX_READ: u64 = 64 << 20;
/// Most entries an image may have.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Deepest path, in components (the builder's own limit).
pub const MAX_DEPTH: usize = 256;
/// Longest path, as `/a/b` (`PATH_MAX` without the NUL).
pub const MAX_PATH: usize = 4095;
/// Longest name (`NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Most bytes of all paths together.
pub const MAX_PATH_BYTES: usize = 64 << 20;
/// Largest uncompressed squashfs inode or directory table.
pub const MAX_METADATA: u64 = 64 << 20;
/// Most squashfs fragments.
pub const MAX_FRAGMENTS: u32 = 1 << 20;
/// Most ext4 block groups.
pub const MAX_BLOCK_GROUPS: u64 = 1 << 20;

/// Runs a call into a third-party image parser, turning a panic into an
/// error that names the image. A last resort: the readers check what they
/// can before calling, but `backhand` and `ext4-view` are not ours to fix,
/// and a panic on a corrupt image must not crash the build or the audit.
pub(crate) fn guarded<T>(image: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(anyhow!(
            "{image}: the image is corrupt (its reader failed on inconsistent data)"
        ))
    })
}

/// Counts entries, path bytes and depth while an image's tree is walked,
/// failing at the first limit exceeded, with the path escaped.
#[derive(Default)]
pub(crate) struct TreeBudget {
    entries: usize,
    path_bytes: usize,
}

impl TreeBudget {
    /// Accounts for the entry `name` inside a directory whose path is
    /// `parent_len` bytes long at `depth`; returns the entry's path length.
    pub(crate) fn enter(
        &mut self,
        image: &str,
        parent: &str,
        parent_len: usize,
        depth: usize,
        name: &[u8],
    ) -> Result<usize> {
        let shown_name = || slotsmith_yaml::escape::shown_bytes(name);
        let where_ = || {
            format!(
                "{image}: {}/{}",
                slotsmith_yaml::escape::shown(parent.trim_end_matches('/')),
                shown_name()
            )
        };
        anyhow::ensure!(
            !name.is_empty()
                && name != b"."
                && name != b".."
                && !name.contains(&b'/')
                && !name.contains(&0),
            "{}: not a valid file name",
            where_()
        );
        anyhow::ensure!(
            name.len() <= MAX_NAME,
            "{}: the name is {} bytes, more than {MAX_NAME}",
            where_(),
            name.len()
        );
        anyhow::ensure!(
            depth <= MAX_DEPTH,
            "{}: deeper than {MAX_DEPTH} levels",
            where_()
        );
        // "/" + name at the root, parent + "/" + name elsewhere.
        let len = if parent_len <= 1 { 1 } else { parent_len + 1 } + name.len();
        anyhow::ensure!(
            len <= MAX_PATH,
            "{}: the path is {len} bytes, more than {MAX_PATH}",
            where_()
        );
        self.entries += 1;
        anyhow::ensure!(
            self.entries <= MAX_ENTRIES,
            "{image}: more than {MAX_ENTRIES} entries"
        );
        self.path_bytes = self.path_bytes.saturating_add(len);
        anyhow::ensure!(
            self.path_bytes <= MAX_PATH_BYTES,
            "{image}: the paths of its entries add up to more than {MAX_PATH_BYTES} bytes"
        );
        Ok(len)
    }
}

/// An in-memory root filesystem.
#[derive(Debug, Clone, Default)]
pub struct MemRootfs {
    entries: BTreeMap<String, (Entry, Vec<u8>)>,
}

impl MemRootfs {
    /// An empty tree with only `/`.
    pub fn new() -> MemRootfs {
        let mut fs = MemRootfs::default();
        fs.entries
            .insert("/".into(), (dir_entry(0o755), Vec::new()));
        fs
    }

    /// Inserts an entry (replacing what was at `path`), creating missing
    /// parent directories as 0755 root:root.
    pub fn insert(&mut self, path: &str, entry: Entry, content: Vec<u8>) {
        self.mkparents(path);
        self.entries.insert(path.to_string(), (entry, content));
    }

    /// A regular file owned by root.
    pub fn file(&mut self, path: &str, mode: u32, content: impl Into<Vec<u8>>) -> &mut Self {
        self.file_owned(path, mode, 0, 0, content)
    }

    /// A regular file with an owner and group.
    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        content: impl Into<Vec<u8>>,
    ) -> &mut Self {
        let content = content.into();
        let e = Entry {
            kind: EntryKind::File,
            mode: mode & 0o7777,
            uid,
            gid,
            size: content.len() as u64,
        };
        self.insert(path, e, content);
        self
    }

    /// A directory owned by root.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.insert(path, dir_entry(mode), Vec::new());
        self
    }

    /// A symlink.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let e = Entry {
            kind: EntryKind::Symlink {
                target: target.to_string(),
            },
            mode: 0o777,
            uid: 0,
            gid: 0,
            size: 0,
        };
        self.insert(path, e, Vec::new());
        self
    }

    /// Removes `path` and everything below it.
    pub fn remove(&mut self, path: &str) -> &mut Self {
        let prefix = format!("{path}/");
        self.entries
            .retain(|p, _| p != path && !p.starts_with(&prefix));
        self
    }

    /// Changes the permission bits of an existing entry.
    pub fn chmod(&mut self, path: &str, mode: u32) -> &mut Self {
        if let Some((e, _)) = self.entries.get_mut(path) {
            e.mode = mode & 0o7777;
        }
        self
    }

    /// Applies generated settings the way the build does: removals first,
    /// then files (replacing whatever was there), symlinks and mode changes.
    pub fn apply(&mut self, g: &crate::apply::Generated) -> &mut Self {
        for r in &g.remove {
            self.remove(&r.path);
        }
        for f in &g.files {
            self.remove(&f.path);
            self.file_owned(&f.path, f.mode, f.uid, f.gid, f.content.clone());
        }
        for l in &g.symlinks {
            self.remove(&l.path);
            self.symlink(&l.path, &l.target);
        }
        for c in &g.chmod {
            self.chmod(&c.path, c.mode);
        }
        self
    }

    fn mkparents(&mut self, path: &str) {
        let mut p = path;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            let key = if p.is_empty() { "/" } else { p };
            if self.entries.contains_key(key) {
                break;
            }
            self.entries
                .insert(key.to_string(), (dir_entry(0o755), Vec::new()));
        }
    }
}

fn dir_entry(mode: u32) -> Entry {
    Entry {
        kind: EntryKind::Dir,
        mode: mode & 0o7777,
        uid: 0,
        gid: 0,
        size: 0,
    }
}

impl RootfsRead for MemRootfs {
    fn entries(&self) -> Vec<(String, Entry)> {
        self.entries
            .iter()
            .map(|(p, (e, _))| (p.clone(), e.clone()))
            .collect()
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        Ok(match self.entries.get(path) {
            Some((e, c)) if e.kind == EntryKind::File => Some(c.clone()),
            _ => None,
        })
    }
}

/// Entries by path, with symlink resolution inside the image.
pub struct Index<'a> {
    fs: &'a dyn RootfsRead,
    /// Every entry by path.
    pub map: BTreeMap<String, Entry>,
}

/// Symlink hops allowed before giving up, as the kernel's limit.
const MAX_HOPS: usize = 40;

impl<'a> Index<'a> {
    /// Indexes `fs`.
    pub fn new(fs: &'a dyn RootfsRead) -> Index<'a> {
        Index {
            fs,
            map: fs.entries().into_iter().collect(),
        }
    }

    /// The entry at exactly `path` (no symlink following).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.map.get(path)
    }

    /// Resolves every symlink in `path` inside the image; `None` when the
    /// links loop. The result need not exist.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut hops = 0;
        let mut pending: Vec<String> = split(path);
        pending.reverse();
        let mut cur: Vec<String> = Vec::new();
        while let Some(comp) = pending.pop() {
            if comp == "." || comp.is_empty() {
                continue;
            }
            if comp == ".." {
                cur.pop();
                continue;
            }
            cur.push(comp);
            let p = join(&cur);
            match self.map.get(&p) {
                Some(Entry {
                    kind: EntryKind::Symlink { target },
                    ..
                }) => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return None;
                    }
                    cur.pop();
                    if target.starts_with('/') {
                        cur.clear();
                    }
                    let mut t = split(target);
                    t.reverse();
                    pending.extend(t);
                }
                Some(_) => {}
                None => {
                    // Nothing exists below a missing component, so no
                    // further link can apply: the rest is appended as
                    // written (`/dev/null` in an image with an empty /dev).
                    while let Some(c) = pending.pop() {
                        match c.as_str() {
                            "" | "." => {}
                            ".." => {
                                cur.pop();
                            }
                            _ => cur.push(c),
                        }
                    }
                }
            }
        }
        Some(join(&cur))
    }

    /// The target a symlink at `path` resolves to (absolute, inside the
    /// image), when `path` is a symlink.
    pub fn link_target(&self, path: &str) -> Option<String> {
        match self.map.get(path) {
            Some(Entry {
                kind: EntryKind::Symlink { .. },
                ..
            }) => self.resolve(path),
            _ => None,
        }
    }

    /// Reads a file, following symlinks; `/dev/null` reads as empty (the
    /// systemd and sysctl.d convention for masking a file).
    pub fn read_resolved(&self, path: &str) -> Result<Option<(String, Vec<u8>)>> {
        let Some(real) = self.resolve(path) else {
            return Ok(None);
        };
        if real == "/dev/null" {
            return Ok(Some((real, Vec::new())));
        }
        Ok(self.fs.read(&real)?.map(|c| (real, c)))
    }

    /// Whether `path` resolves to a directory.
    pub fn is_dir(&self, path: &str) -> bool {
        self.resolve(path)
            .and_then(|p| self.map.get(&p))
            .is_some_and(|e| e.kind == EntryKind::Dir)
    }

    /// Names directly inside the directory `dir` (resolved), sorted.
    pub fn list_dir(&self, dir: &str) -> Vec<String> {
        let Some(real) = self.resolve(dir) else {
            return Vec::new();
        };
        if !self.is_dir(&real) {
            return Vec::new();
        }
        let prefix = if real == "/" {
            "/".to_string()
        } else {
            format!("{real}/")
        };
        self.map
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter_map(|(p, _)| {
                let rest = &p[prefix.len()..];
                (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_string())
            })
            .collect()
    }
}

fn split(p: &str) -> Vec<String> {
    p.split('/').map(str::to_string).collect()
}

fn join(comps: &[String]) -> String {
    if comps.is_empty() {
        "/".to_string()
    } else {
        format!("/{}", comps.join("/"))
    }
}

/// The sha256 of `data` as lowercase hex, for evidence.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_links_inside_the_image() {
        let mut fs = MemRootfs::new();
        fs.symlink("/lib", "usr/lib")
            .file("/usr/lib/systemd/system/nftables.service", 0o644, "x")
            .symlink("/etc/sysctl.d/99-sysctl.conf", "../sysctl.conf")
            .file("/etc/sysctl.conf", 0o644, "a=1")
            .symlink("/etc/x", "/dev/null")
            .symlink("/loop", "/loop");
        let ix = Index::new(&fs);
        assert_eq!(
            ix.resolve("/lib/systemd/system/nftables.service")
                .as_deref(),
            Some("/usr/lib/systemd/system/nftables.service")
        );
        assert_eq!(
            ix.read_resolved("/etc/sysctl.d/99-sysctl.conf")
                .unwrap()
                .unwrap()
                .1,
            b"a=1"
        );
        assert_eq!(ix.read_resolved("/etc/x").unwrap().unwrap().1, b"");
        assert_eq!(ix.resolve("/loop"), None);
        assert_eq!(ix.resolve("/nope/x").as_deref(), Some("/nope/x"));
        assert_eq!(ix.list_dir("/lib/systemd"), vec!["system".to_string()]);
    }
}
