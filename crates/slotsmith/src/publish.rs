//! Publishing a build into `out/<name>/`: one build of an image at a
//! time, stale staging directories cleaned, and an atomic swap that either
//! makes the new build live and removes the old one, or leaves `out/` as it
//! was.
//!
//! The rules, in the order a build meets them:
//!
//! 1. [`ImageLock::acquire`] takes an exclusive `flock` on
//!    `work/.<name>.lock` for the whole build. A second build of the same
//!    image waits (saying so) rather than sharing the work directory. The
//!    lock file lives in the scratch directory, never in `out/`, so a
//!    failed build leaves `out/` byte for byte as it was. The kernel
//!    releases the lock when the process dies, so a killed build never
//!    leaves it held.
//! 2. Each build also holds a `flock` on its own staging directory
//!    ([`StagingLock`]). [`clean_stale`] removes every
//!    `out/.<name>.partial-*` directory whose lock it can take: nobody
//!    holds it, so a killed build left it (a default image's is
//!    gigabytes). A staging directory of a running build, even one using
//!    another work directory, is locked and left alone.
//! 3. [`publish`] first checks that the previous build can be removed
//!    (every directory in it writable and searchable by us); when it cannot,
//!    it fails before touching anything. Only then does it swap the two
//!    with `renameat2(RENAME_EXCHANGE)`, and remove the old one. If that
//!    removal still fails, the swap is undone, so a failure never leaves
//!    the new build live.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rustix::fs::{FlockOperation, RenameFlags, CWD};

use crate::progress::Progress;

/// The exclusive lock on one image's work directory.
pub struct ImageLock {
    _file: File,
    path: PathBuf,
}

impl ImageLock {
    /// Takes the lock on `work_root/.<name>.lock`, waiting for another
    /// build of the same image to finish (and saying so) if one holds it.
    pub fn acquire(
        work_root: &Path,
        name: &str,
        progress: &mut Progress,
    ) -> anyhow::Result<ImageLock> {
        fs::create_dir_all(work_root)
            .with_context(|| format!("creating work directory {}", work_root.display()))?;
        let path = lock_path(work_root, name);
        // flock needs no write access: an existing lock file, perhaps made
        // by another user sharing the work directory, is opened read-only.
        let flags = (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32;
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(&path)
        {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o644)
                .custom_flags(flags)
                .open(&path),
            other => other,
        }
        .with_context(|| format!("opening build lock {}", path.display()))?;
        if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            progress.note(&format!(
                "another build of {name} is running; waiting for its lock {}",
                path.display()
            ));
            rustix::fs::flock(&file, FlockOperation::LockExclusive)
                .map_err(std::io::Error::from)
                .with_context(|| format!("waiting for build lock {}", path.display()))?;
        }
        Ok(ImageLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file of image `name` under `work_root`.
pub fn lock_path(work_root: &Path, name: &str) -> PathBuf {
    work_root.join(format!(".{name}.lock"))
}

/// A build's hold on its own staging directory: a `flock` on the
/// directory itself, so [`clean_stale`] can tell a live staging directory
/// from a dead one without any file inside it (everything inside is
/// published).
pub struct StagingLock {
    _dir: File,
}

impl StagingLock {
    /// Locks `dir`, which this build has just created.
    pub fn acquire(dir: &Path) -> anyhow::Result<StagingLock> {
        let f = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
        rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive)
            .map_err(std::io::Error::from)
            .with_context(|| format!("locking staging directory {}", dir.display()))?;
        Ok(StagingLock { _dir: f })
    }
}

/// The prefix of image `name`'s staging directories.
pub fn staging_prefix(name: &str) -> String {
    format!(".{name}.partial-")
}

/// Removes the staging directories that killed builds of `name` left in
/// `out_root`: those no running build holds a [`StagingLock`] on.
pub fn clean_stale(out_root: &Path, name: &str, progress: &mut Progress) -> anyhow::Result<()> {
    let prefix = staging_prefix(name);
    let rd = match fs::read_dir(out_root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", out_root.display())),
    };
    for e in rd {
        let e = e.with_context(|| format!("listing {}", out_root.display()))?;
        let file_name = e.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        // Exactly our staging names: the prefix and tempfile's random
        // suffix, which has no '.', so image "a" never takes "a.partial-x"'s.
        let Some(suffix) = n.strip_prefix(&prefix) else {
            continue;
        };
        if suffix.is_empty() || !suffix.chars().all(|c| c.is_ascii_alphanumeric()) {
            continue;
        }
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let p = e.path();
        // Held while we remove it, so a build cannot start using it.
        let Ok(dir) = File::open(&p) else { continue };
        if rustix::fs::flock(&dir, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        progress.note(&format!(
            "removing {} left by an interrupted build",
            p.display()
        ));
        slotsmith_rootfs::cleanup::remove_tree(&p)
            .with_context(|| format!("removing stale staging directory {}", p.display()))?;
    }
    Ok(())
}

/// Moves the finished staging directory to `out_dir`, replacing an older
/// build atomically. On error, `out_dir` is exactly as it was and the
/// staging directory is gone.
pub fn publish(staging: tempfile::TempDir, out_dir: &Path) -> anyhow::Result<()> {
    if fs::symlink_metadata(out_dir).is_err() {
        let tmp = staging.keep();
        return fs::rename(&tmp, out_dir)
            .inspect_err(|_| {
                let _ = slotsmith_rootfs::cleanup::remove_tree(&tmp);
            })
            .with_context(|| format!("publishing {}", out_dir.display()));
    }
    // Fail before the swap when the old build cannot be removed afterwards
    // (a read-only copy, files of another user): the TempDir's drop then
    // removes the staging directory and out/ is untouched.
    check_removable(out_dir).with_context(|| {
        format!(
            "cannot replace {}: the previous build cannot be removed; it is left as it was",
            out_dir.display()
        )
    })?;
    let tmp = staging.keep();
    if let Err(e) = rustix::fs::renameat_with(CWD, &tmp, CWD, out_dir, RenameFlags::EXCHANGE) {
        let _ = slotsmith_rootfs::cleanup::remove_tree(&tmp);
        return Err(std::io::Error::from(e))
            .with_context(|| format!("publishing {}", out_dir.display()));
    }
    // `tmp` now holds the old build.
    if let Err(e) = slotsmith_rootfs::cleanup::remove_tree(&tmp) {
        // Undo: the old build (perhaps missing what was removed before the
        // error) goes back, the new one is dropped. Reaching this needs a
        // concurrent change, since check_removable passed.
        let undo = rustix::fs::renameat_with(CWD, &tmp, CWD, out_dir, RenameFlags::EXCHANGE);
        let _ = slotsmith_rootfs::cleanup::remove_tree(&tmp);
        if let Err(u) = undo {
            return Err(e).with_context(|| {
                format!(
                    "removing the previous build of {} after publishing (and undoing the swap failed: {u})",
                    out_dir.display()
                )
            });
        }
        return Err(e).with_context(|| {
            format!(
                "removing the previous build of {}; the swap was undone",
                out_dir.display()
            )
        });
    }
    Ok(())
}

/// Checks that every directory under `dir` (itself included) is writable
/// and searchable by this process, so its entries can be removed. Symlinks
/// are not followed.
fn check_removable(dir: &Path) -> anyhow::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let md = fs::symlink_metadata(&d).with_context(|| format!("reading {}", d.display()))?;
        if !md.is_dir() {
            continue;
        }
        if rustix::fs::access(
            &d,
            rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        )
        .is_err()
        {
            bail!("{} is not writable", d.display());
        }
        for e in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e.with_context(|| format!("listing {}", d.display()))?;
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn staging_in(out_root: &Path, name: &str, file: &str, text: &str) -> tempfile::TempDir {
        let t = tempfile::Builder::new()
            .prefix(&staging_prefix(name))
            .tempdir_in(out_root)
            .unwrap();
        fs::write(t.path().join(file), text).unwrap();
        t
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn first_publish_renames_and_a_second_replaces_leaving_no_partial() {
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("img");
        publish(staging_in(out.path(), "img", "a", "1"), &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("a")).unwrap(), "1");
        publish(staging_in(out.path(), "img", "b", "2"), &dest).unwrap();
        assert_eq!(listing(&dest), ["b"]);
        assert_eq!(listing(out.path()), ["img"]);
    }

    #[test]
    fn an_old_build_that_cannot_be_removed_stays_live_and_untouched() {
        if rustix::process::geteuid().is_root() {
            // Root ignores directory permissions; the integration test
            // `failed_publish_leaves_out_as_it_was` covers this as nobody.
            return;
        }
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("img");
        publish(staging_in(out.path(), "img", "a", "1"), &dest).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o555)).unwrap();
        let err = publish(staging_in(out.path(), "img", "b", "2"), &dest).unwrap_err();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(format!("{err:#}").contains("left as it was"), "{err:#}");
        assert_eq!(listing(&dest), ["a"]);
        assert_eq!(listing(out.path()), ["img"]);
    }

    #[test]
    fn stale_partials_of_this_image_only_are_removed() {
        let out = tempfile::tempdir().unwrap();
        let mut p = Progress::new(true);
        for d in [
            ".img.partial-abc123",
            ".img.partial-x.y",
            ".other.partial-abc123",
        ] {
            fs::create_dir_all(out.path().join(d).join("deep/er")).unwrap();
        }
        fs::create_dir(out.path().join(".img.partial-ro")).unwrap();
        fs::set_permissions(
            out.path().join(".img.partial-ro"),
            fs::Permissions::from_mode(0o500),
        )
        .unwrap();
        // A live build's staging directory is locked and stays.
        let live = out.path().join(".img.partial-live01");
        fs::create_dir(&live).unwrap();
        let _held = StagingLock::acquire(&live).unwrap();
        clean_stale(out.path(), "img", &mut p).unwrap();
        assert_eq!(
            listing(out.path()),
            [
                ".img.partial-live01",
                ".img.partial-x.y",
                ".other.partial-abc123"
            ]
        );
    }

    #[test]
    fn the_lock_is_exclusive_per_image() {
        let out = tempfile::tempdir().unwrap();
        let mut p = Progress::new(true);
        let _held = ImageLock::acquire(out.path(), "img", &mut p).unwrap();
        // A second open file description cannot take it while it is held.
        let f = File::open(lock_path(out.path(), "img")).unwrap();
        assert!(rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_err());
        // Another image's lock is independent.
        let _other = ImageLock::acquire(out.path(), "other", &mut p).unwrap();
    }
}
