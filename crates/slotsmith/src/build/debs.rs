//! The content-addressed `.deb` cache (`<deb_cache>/<sha256>.deb`), the
//! local repository a locked Debian base is bootstrapped from, and the
//! resolution against the archive that `lock` and a cache fill share.
//!
//! Trust: a resolution downloads through apt, which checks every `.deb`
//! against the archive's signed indexes (the keyring the lock records).
//! After that, the lock's sha256 is the only authority. The local
//! repository is marked `trusted=yes` for apt (it has no signature), so
//! every file in it is copied from the cache while being hashed, and a
//! byte that differs from the lock stops the build, naming the package.
//! Cache entries are named by their hash but never believed by name.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::lockfile::{self, LockedPackage};
use crate::plan::tools::slot;
use crate::plan::{Plan, PlanLock};
use crate::progress::Progress;
use crate::tool::Tool;
use slotsmith_yaml::escape::shown;

/// What a resolution found: every package the bootstrap installed, and
/// the archive indexes it read with their dates.
pub struct Resolved {
    pub packages: Vec<LockedPackage>,
    pub indexes: Vec<(String, String)>,
}

/// The host's apt sources files, as the image definition promises when it
/// names no mirror.
pub(super) fn host_sources() -> Vec<OsString> {
    [
        "/etc/apt/sources.list",
        "/etc/apt/sources.list.d/debian.sources",
    ]
    .iter()
    .filter(|f| {
        fs::metadata(f)
            .map(|m| m.is_file() && m.len() > 0)
            .unwrap_or(false)
    })
    .map(|f| (*f).into())
    .collect()
}

/// The cache entry of a package.
pub fn cache_path(deb_cache: &Path, p: &LockedPackage) -> PathBuf {
    deb_cache.join(format!("{}.deb", p.sha256))
}

/// Resolves the plan's Debian base against the archive (network): runs
/// the bootstrap, keeps every downloaded `.deb` in the cache under its
/// hash, and returns the packages. `scratch` holds the temporary tarball.
pub fn resolve(
    plan: &Plan,
    deb_cache: &Path,
    scratch: &Path,
    progress: &mut Progress,
) -> anyhow::Result<Resolved> {
    let steps = &plan.tools.resolve;
    let [bootstrap, extract, fields] = steps.as_slice() else {
        bail!("the plan has no resolution for a debian base");
    };
    fs::create_dir_all(scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("resolve-")
        .tempdir_in(scratch)
        .with_context(|| format!("creating a directory in {}", scratch.display()))?;
    let tar = tmp.path().join("resolve.tar");
    let out = tmp.path().join("x");
    fs::create_dir(&out).with_context(|| format!("creating {}", out.display()))?;
    let sources = host_sources();
    if sources.is_empty() && bootstrap.args.iter().any(|a| a == slot::HOST_APT_SOURCES) {
        bail!("no host apt sources found (/etc/apt/sources.list or /etc/apt/sources.list.d/debian.sources); set base.debian.mirror");
    }
    let epoch = plan.source_date_epoch;
    let tool = Tool::from_invocation(
        bootstrap,
        &[
            (slot::OUTPUT, vec![tar.clone().into()]),
            (slot::HOST_APT_SOURCES, sources),
        ],
        epoch,
    )?;
    progress.note(&format!("resolving against the archive: {}", tool.argv()));
    tool.run()
        .context("resolving the debian base with mmdebstrap (this needs the network)")?;
    Tool::from_invocation(
        extract,
        &[
            (slot::OUTPUT, vec![tar.clone().into()]),
            (slot::DIR, vec![out.clone().into()]),
        ],
        epoch,
    )?
    .run()
    .with_context(|| format!("taking the .debs out of {}", tar.display()))?;
    let archives = out.join("var/cache/apt/archives");
    let mut debs: Vec<PathBuf> = fs::read_dir(&archives)
        .with_context(|| format!("reading {}", archives.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    fs::create_dir_all(deb_cache)
        .with_context(|| format!("creating the .deb cache {}", deb_cache.display()))?;
    let mut packages = Vec::new();
    for deb in &debs {
        let o = Tool::from_invocation(fields, &[(slot::DEB, vec![deb.clone().into()])], epoch)?
            .run()
            .with_context(|| format!("reading the fields of {}", deb.display()))?;
        let text = String::from_utf8_lossy(&o.stdout);
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix(':')))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let (name, version, architecture) =
            (field("Package"), field("Version"), field("Architecture"));
        if !lockfile::valid_package_name(&name)
            || !lockfile::valid_version(&version)
            || !lockfile::valid_arch(&architecture)
        {
            bail!(
                "{} has an invalid package name, version or architecture ({} {} {})",
                deb.display(),
                shown(&name),
                shown(&version),
                shown(&architecture)
            );
        }
        let (sha256, size) = store(deb_cache, deb)?;
        packages.push(LockedPackage {
            name,
            version,
            architecture,
            sha256,
            size,
        });
    }
    if packages.is_empty() {
        bail!(
            "the resolution downloaded no packages ({} is empty)",
            archives.display()
        );
    }
    packages.sort();
    let lists = out.join("var/lib/apt/lists");
    let mut indexes = Vec::new();
    if let Ok(rd) = fs::read_dir(&lists) {
        let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for p in names {
            let Some(n) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = n.strip_suffix("_InRelease") else {
                continue;
            };
            let mut text = String::new();
            File::open(&p)
                .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
                .with_context(|| format!("reading {}", p.display()))?;
            if let Some(date) = text.lines().find_map(|l| l.strip_prefix("Date: ")) {
                indexes.push((stem.replace(' ', "_"), date.trim().to_string()));
            }
        }
    }
    Ok(Resolved { packages, indexes })
}

/// Moves (or copies) a downloaded `.deb` into the cache under its hash;
/// an entry already there is kept. Returns the hash and size.
fn store(deb_cache: &Path, deb: &Path) -> anyhow::Result<(String, u64)> {
    let (sha, size) =
        crate::load::hash_file(deb).with_context(|| format!("hashing {}", deb.display()))?;
    let dest = deb_cache.join(format!("{sha}.deb"));
    // An entry already there is kept only if it still is what its name
    // says: going online again repairs a damaged cache.
    if is_intact(&dest, &sha, size) {
        return Ok((sha, size));
    }
    let tmp = deb_cache.join(format!(".{sha}.partial-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    if fs::rename(deb, &tmp).is_err() {
        fs::copy(deb, &tmp).with_context(|| format!("copying {} into the cache", deb.display()))?;
    }
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    fs::rename(&tmp, &dest).with_context(|| format!("caching {}", dest.display()))?;
    Ok((sha, size))
}

/// Makes sure every locked package is in the cache, fetching the missing
/// ones from the archive (the only step of a locked build that may need
/// the network). A version the archive no longer offers is an error
/// naming it: a build never takes another.
pub fn ensure_cached(
    plan: &Plan,
    lock: &PlanLock,
    deb_cache: &Path,
    scratch: &Path,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let missing = |l: &PlanLock| -> Vec<LockedPackage> {
        l.packages
            .iter()
            .filter(|p| !cache_path(deb_cache, p).is_file())
            .cloned()
            .collect()
    };
    let first = missing(lock);
    if first.is_empty() {
        progress.note(&format!(
            "all {} locked packages are in {}",
            lock.packages.len(),
            deb_cache.display()
        ));
        return Ok(());
    }
    progress.note(&format!(
        "{} of {} locked packages are not in {} (first: {}); fetching them",
        first.len(),
        lock.packages.len(),
        deb_cache.display(),
        first[0].label()
    ));
    resolve(plan, deb_cache, scratch, progress).with_context(|| {
        format!(
            "fetching {} locked packages missing from the cache {} (first: {})",
            first.len(),
            deb_cache.display(),
            first[0].label()
        )
    })?;
    let still = missing(lock);
    if !still.is_empty() {
        let names: Vec<String> = still.iter().take(10).map(|p| p.label()).collect();
        bail!(
            "{} locked packages are neither in the cache {} nor offered by the archive any more: {}{}. \
             Bring the .debs from where the release was built (`cargo xtask lock --export DIR` there, \
             then `cargo xtask build --deb-cache DIR/debs`); a build never takes another version",
            still.len(),
            deb_cache.display(),
            names.join(", "),
            if still.len() > 10 { ", ..." } else { "" }
        );
    }
    Ok(())
}

/// Opens a cache entry only if it is a regular file, itself: not through
/// a symlink (an exported cache is carried between machines), and not a
/// FIFO or device, which would block or never end.
pub fn open_regular(path: &Path) -> anyhow::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let f = File::from(fd);
    if !f.metadata()?.file_type().is_file() {
        bail!("not a regular file");
    }
    Ok(f)
}

/// Whether `path` is a regular file (not a link) whose sha256 is `sha`.
pub fn is_intact(path: &Path, sha: &str, size: u64) -> bool {
    open_regular(path)
        .ok()
        .and_then(|f| {
            let mut h = Sha256::new();
            std::io::copy(&mut f.take(size.saturating_add(1)), &mut h).ok()?;
            Some(hex::encode(h.finalize()) == sha)
        })
        .unwrap_or(false)
}

/// Copies one cached package to `dest` while hashing it, and refuses it
/// unless it is exactly what the lock names.
pub fn copy_verified(
    deb_cache: &Path,
    p: &LockedPackage,
    lock_path: &str,
    dest: &Path,
) -> anyhow::Result<()> {
    let src = cache_path(deb_cache, p);
    let from = open_regular(&src).with_context(|| {
        format!(
            "opening the cached .deb of {} ({})",
            p.label(),
            src.display()
        )
    })?;
    // At most one byte more than locked: a cache entry that is a huge
    // file cannot fill the work directory before the size check.
    let mut from = from.take(p.size.saturating_add(1));
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .with_context(|| format!("creating {}", dest.display()))?;
    let mut h = Sha256::new();
    let mut n: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = from
            .read(&mut buf)
            .with_context(|| format!("reading {}", src.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n = n.saturating_add(k as u64);
        to.write_all(&buf[..k])
            .with_context(|| format!("writing {}", dest.display()))?;
    }
    let actual = hex::encode(h.finalize());
    if actual != p.sha256 || n != p.size {
        let _ = fs::remove_file(dest);
        bail!(
            "the cached .deb of {} ({}) has sha256 {actual} and {n} bytes, but {lock_path} locks \
             sha256 {} and {} bytes: the cache entry is damaged or was replaced. Delete it and \
             build again to fetch the locked one",
            p.label(),
            src.display(),
            p.sha256,
            p.size
        );
    }
    Ok(())
}

/// Makes the local repository of a locked base in `dir`: every locked
/// package, verified, and its `Packages` index.
pub(super) fn make_repo(
    plan: &Plan,
    lock: &PlanLock,
    deb_cache: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    let Some(scan) = plan.tools.lock.first() else {
        bail!("a locked plan without its repository step");
    };
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for p in &lock.packages {
        copy_verified(deb_cache, p, &lock.path, &dir.join(p.deb_file_name()))?;
    }
    let out = Tool::from_invocation(scan, &[], plan.source_date_epoch)?
        .dir(dir)
        .run()
        .with_context(|| format!("indexing the local repository {}", dir.display()))?;
    let index = dir.join("Packages");
    fs::write(&index, &out.stdout).with_context(|| format!("writing {}", index.display()))?;
    Ok(())
}

/// Compares the packages a base tarball's dpkg status lists as installed
/// with the lock: both ways, so neither an extra package nor a missing
/// one passes.
pub(super) fn check_installed(status: &str, lock: &PlanLock) -> anyhow::Result<()> {
    let mut installed = BTreeSet::new();
    for stanza in status.split("\n\n") {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix(':')))
                .map(|v| v.trim().to_string())
        };
        if field("Status").as_deref() != Some("install ok installed") {
            continue;
        }
        if let (Some(n), Some(v), Some(a)) =
            (field("Package"), field("Version"), field("Architecture"))
        {
            installed.insert((n, v, a));
        }
    }
    let locked: BTreeSet<(String, String, String)> = lock
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone(), p.architecture.clone()))
        .collect();
    let show = |s: Vec<&(String, String, String)>| {
        s.iter()
            .take(10)
            .map(|(n, v, a)| format!("{} {} ({})", shown(n), shown(v), shown(a)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let extra: Vec<_> = installed.difference(&locked).collect();
    let absent: Vec<_> = locked.difference(&installed).collect();
    if !extra.is_empty() || !absent.is_empty() {
        bail!(
            "the base installed other packages than {} locks: not locked but installed: [{}]; locked but not installed: [{}]",
            lock.path,
            show(extra),
            show(absent)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(pkgs: &[(&str, &str)]) -> PlanLock {
        PlanLock {
            path: "images/x.lock".into(),
            sha256: "0".repeat(64),
            packages: pkgs
                .iter()
                .map(|(n, v)| {
                    let body = format!("{n} {v}");
                    LockedPackage {
                        name: n.to_string(),
                        version: v.to_string(),
                        architecture: "amd64".into(),
                        sha256: hex::encode(Sha256::digest(body.as_bytes())),
                        size: body.len() as u64,
                    }
                })
                .collect(),
        }
    }

    fn status(pkgs: &[(&str, &str, &str)]) -> String {
        pkgs.iter()
            .map(|(n, v, st)| {
                format!("Package: {n}\nStatus: {st}\nArchitecture: amd64\nVersion: {v}\nDescription: x\n y\n")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_installed_set_must_equal_the_lock_both_ways() {
        let l = lock(&[("libc6", "2.36"), ("systemd", "252")]);
        let ok = "install ok installed";
        check_installed(
            &status(&[("libc6", "2.36", ok), ("systemd", "252", ok)]),
            &l,
        )
        .unwrap();
        // Removed (config-files) packages are not installed.
        check_installed(
            &status(&[
                ("libc6", "2.36", ok),
                ("systemd", "252", ok),
                ("old1", "1", "deinstall ok config-files"),
            ]),
            &l,
        )
        .unwrap();
        let e = check_installed(
            &status(&[
                ("libc6", "2.37", ok),
                ("systemd", "252", ok),
                ("curl", "8", ok),
            ]),
            &l,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("not locked but installed: [curl 8 (amd64), libc6 2.37 (amd64)]"),
            "{e}"
        );
        assert!(
            e.contains("locked but not installed: [libc6 2.36 (amd64)]"),
            "{e}"
        );
        assert!(e.contains("images/x.lock"), "{e}");
    }

    #[test]
    fn a_cached_deb_is_copied_only_when_it_is_exactly_the_locked_one() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("debs");
        fs::create_dir(&cache).unwrap();
        let l = lock(&[("systemd", "252")]);
        let p = &l.packages[0];
        fs::write(cache_path(&cache, p), b"systemd 252").unwrap();
        let dest = dir.path().join("out.deb");
        copy_verified(&cache, p, &l.path, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"systemd 252");
        // One flipped byte, same name and size: refused, naming the
        // package, the entry and the lock; nothing is left at `dest`.
        fs::remove_file(&dest).unwrap();
        fs::write(cache_path(&cache, p), b"systemd 253").unwrap();
        let e = format!(
            "{:#}",
            copy_verified(&cache, p, &l.path, &dest).unwrap_err()
        );
        assert!(e.contains("the cached .deb of systemd 252 (amd64)"), "{e}");
        assert!(
            e.contains(&cache_path(&cache, p).display().to_string()),
            "{e}"
        );
        assert!(e.contains("images/x.lock locks"), "{e}");
        assert!(!dest.exists());
        // A truncated entry, and a missing one.
        fs::write(cache_path(&cache, p), b"systemd").unwrap();
        assert!(copy_verified(&cache, p, &l.path, &dest).is_err());
        fs::remove_file(cache_path(&cache, p)).unwrap();
        let e = format!(
            "{:#}",
            copy_verified(&cache, p, &l.path, &dest).unwrap_err()
        );
        assert!(e.contains("opening the cached .deb of systemd 252"), "{e}");
        // A link to the right bytes is still refused (a carried cache must
        // hold its files), and so are a FIFO and a device, which would
        // block or never end; `dest` is never followed either.
        let real = dir.path().join("real.deb");
        fs::write(&real, b"systemd 252").unwrap();
        std::os::unix::fs::symlink(&real, cache_path(&cache, p)).unwrap();
        let e = format!(
            "{:#}",
            copy_verified(&cache, p, &l.path, &dest).unwrap_err()
        );
        assert!(e.contains("opening the cached .deb"), "{e}");
        assert!(!is_intact(&cache_path(&cache, p), &p.sha256, p.size));
        fs::remove_file(cache_path(&cache, p)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            cache_path(&cache, p),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = format!(
            "{:#}",
            copy_verified(&cache, p, &l.path, &dest).unwrap_err()
        );
        assert!(e.contains("not a regular file"), "{e}");
        fs::remove_file(cache_path(&cache, p)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", cache_path(&cache, p)).unwrap();
        assert!(copy_verified(&cache, p, &l.path, &dest).is_err());
        fs::remove_file(cache_path(&cache, p)).unwrap();
        fs::write(cache_path(&cache, p), b"systemd 252").unwrap();
        std::os::unix::fs::symlink(&real, &dest).unwrap();
        assert!(copy_verified(&cache, p, &l.path, &dest).is_err());
        assert_eq!(fs::read(&real).unwrap(), b"systemd 252");
    }

    #[test]
    fn storing_repairs_a_damaged_entry_and_keeps_an_intact_one() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("debs");
        fs::create_dir(&cache).unwrap();
        let deb = dir.path().join("x.deb");
        fs::write(&deb, b"package bytes").unwrap();
        let (sha, size) = crate::load::hash_file(&deb).unwrap();
        let entry = cache.join(format!("{sha}.deb"));
        fs::write(&entry, b"package bytez").unwrap();
        assert_eq!(store(&cache, &deb).unwrap(), (sha.clone(), size));
        assert_eq!(fs::read(&entry).unwrap(), b"package bytes");
        fs::write(&deb, b"package bytes").unwrap();
        assert_eq!(store(&cache, &deb).unwrap(), (sha, size));
        assert_eq!(fs::read(&entry).unwrap(), b"package bytes");
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 1, "no partial left");
    }
}
