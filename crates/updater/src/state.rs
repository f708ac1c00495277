//! The device's update state on the data partition (`/data/slotsmith/`):
//! the minimum security version, the marker of an install in progress,
//! and the rollbacks already recorded. The audit trail is in `audit.rs`.
//!
//! # Where the anti-rollback minimum lives, and what that is worth
//!
//! `min-security-version` is a decimal number on the data partition. The
//! init reads it before it verifies a slot and refuses a manifest signed
//! with a lower security version; the updater's pre-update hook refuses a
//! `.swu` with a lower one. It is raised (never lowered) when a slot is
//! committed. The data partition is neither signed nor encrypted, so an
//! attacker with physical access who can write the disk can lower or
//! delete the file and then boot an older *signed* release; a remote
//! attacker without root cannot. A TPM NV counter would close that gap
//! and is not used yet (see ARCHITECTURE.md).
//!
//! Files here are opened with `O_NOFOLLOW` and written atomically
//! (temporary file, fsync, rename, fsync of the directory): the partition
//! is writable by whoever holds the device, and a planted symlink must not
//! redirect a write of ours.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The minimum security version's file name.
pub const MIN_SVN: &str = "min-security-version";
/// The in-progress marker: an install that started and did not finish.
pub const PENDING: &str = "install-in-progress.json";
/// The slot an install wrote and the loader is about to try: consumed by
/// the commit, or by the rollback record when the try fails.
pub const TRIAL: &str = "trial.json";
/// A refusal the init wrote before it rebooted (read by the next boot).
pub const BOOT_REFUSAL: &str = "boot-refusal";
/// Largest small state file read.
const MAX_SMALL: u64 = 64 << 10;

fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Creates the state directory (mode 0700) if it is missing, refusing a
/// symlink in its place.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("{} exists and is not a directory", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

use std::os::unix::fs::DirBuilderExt as _;

/// Opens `path` for appending, creating it 0600; never through a symlink.
pub fn open_append(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        ensure_dir(dir)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nofollow())
        .open(path)
        .with_context(|| format!("opening {} for appending", path.display()))
}

/// fsyncs a directory, so a created or renamed entry survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Reads at most the last `max` bytes of `path`; `None` if it is missing.
pub fn read_tail(path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let len = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
        bail!("{} is not a regular file", path.display());
    }
    f.seek(SeekFrom::Start(len.saturating_sub(max)))
        .with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    f.take(max)
        .read_to_end(&mut out)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(out))
}

/// Reads a small state file whole; `None` if it is missing.
pub fn read_small(path: &Path) -> Result<Option<Vec<u8>>> {
    let bytes = read_tail(path, MAX_SMALL + 1)?;
    if bytes.as_ref().is_some_and(|b| b.len() as u64 > MAX_SMALL) {
        bail!("{} is larger than {MAX_SMALL} bytes", path.display());
    }
    Ok(bytes)
}

/// Replaces `path` with `contents` atomically and durably.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().context("a state file has a directory")?;
    ensure_dir(dir)?;
    let name = path
        .file_name()
        .context("a state file has a name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    // A leftover temporary file (or a planted symlink) is removed, not
    // followed: unlink never follows.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nofollow())
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_dir(dir)
}

/// Removes a state file if it exists.
pub fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => path.parent().map_or(Ok(()), sync_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Parses the minimum's file: a decimal number and an optional newline.
/// Anything else is an error: a damaged anti-rollback floor is not
/// silently read as "no floor".
pub fn parse_min_svn(bytes: &[u8], path: &Path) -> Result<u64> {
    let text = std::str::from_utf8(bytes)
        .ok()
        .map(|t| t.strip_suffix('\n').unwrap_or(t));
    match text {
        Some(t) if !t.is_empty() && t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit()) => t
            .parse()
            .with_context(|| format!("{} is out of range", path.display())),
        _ => bail!(
            "{} is damaged ({}): it must hold one decimal number",
            path.display(),
            slotsmith_yaml::escape::shown_bytes(&bytes[..bytes.len().min(64)])
        ),
    }
}

/// The device's minimum security version (0 when none was recorded yet:
/// a device that never committed anything).
pub fn min_svn(state_dir: &Path) -> Result<u64> {
    let p = state_dir.join(MIN_SVN);
    match read_small(&p)? {
        None => Ok(0),
        Some(b) => parse_min_svn(&b, &p),
    }
}

/// Raises the minimum to `svn` (never lowers it); returns the minimum now
/// in force.
pub fn raise_min_svn(state_dir: &Path, svn: u64) -> Result<u64> {
    let current = min_svn(state_dir)?;
    if svn <= current {
        return Ok(current);
    }
    write_atomically(&state_dir.join(MIN_SVN), format!("{svn}\n").as_bytes())?;
    Ok(svn)
}

/// Updates that were tried on this device and rolled back, by the sha256
/// of their `.swu` (newest last, bounded).
pub const ROLLED_BACK: &str = "rolled-back";
/// How many are remembered.
const MAX_ROLLED_BACK: usize = 64;

/// Whether the `.swu` with this sha256 rolled back on this device.
pub fn rolled_back(state_dir: &Path, sha256: &str) -> bool {
    read_small(&state_dir.join(ROLLED_BACK))
        .ok()
        .flatten()
        .is_some_and(|b| String::from_utf8_lossy(&b).lines().any(|l| l == sha256))
}

/// Remembers that the `.swu` with this sha256 rolled back.
pub fn remember_rollback(state_dir: &Path, sha256: &str) -> Result<()> {
    let path = state_dir.join(ROLLED_BACK);
    let old = read_small(&path)?.unwrap_or_default();
    let old = String::from_utf8_lossy(&old).into_owned();
    let mut lines: Vec<&str> = old.lines().filter(|l| *l != sha256).collect();
    lines.push(sha256);
    let keep = lines.len().saturating_sub(MAX_ROLLED_BACK);
    write_atomically(&path, format!("{}\n", lines[keep..].join("\n")).as_bytes())
}

/// Creates (or checks) a root-only directory for scratch files: mode
/// 0700, owned by us, not a symlink.
pub fn private_dir(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    ensure_dir(dir)?;
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if meta.uid() != rustix::process::geteuid().as_raw() {
        bail!("{} is not ours", dir.display());
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// The in-progress marker's path.
pub fn pending(state_dir: &Path) -> PathBuf {
    state_dir.join(PENDING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_only_rises_and_a_damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("slotsmith");
        assert_eq!(min_svn(&d).unwrap(), 0);
        assert_eq!(raise_min_svn(&d, 2).unwrap(), 2);
        assert_eq!(raise_min_svn(&d, 1).unwrap(), 2);
        assert_eq!(min_svn(&d).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(d.join(MIN_SVN)).unwrap(), "2\n");
        for bad in [
            &b""[..],
            b"x",
            b"-1",
            b"1 2",
            b"99999999999999999999",
            b"\xff",
        ] {
            let err = parse_min_svn(bad, Path::new("m")).unwrap_err().to_string();
            assert!(
                err.contains("m is damaged") || err.contains("out of range"),
                "{err}"
            );
        }
    }

    #[test]
    fn rolled_back_updates_are_remembered_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(!rolled_back(d, "aa"));
        remember_rollback(d, "aa").unwrap();
        remember_rollback(d, "aa").unwrap();
        assert!(rolled_back(d, "aa"));
        for i in 0..100 {
            remember_rollback(d, &format!("{i:064x}")).unwrap();
        }
        assert!(!rolled_back(d, "aa"), "the oldest is forgotten");
        let text = std::fs::read_to_string(d.join(ROLLED_BACK)).unwrap();
        assert_eq!(text.lines().count(), MAX_ROLLED_BACK);
    }

    #[test]
    fn a_private_dir_is_root_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = private_dir(&dir.path().join("tmp")).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::os::unix::fs::symlink("/tmp", dir.path().join("link")).unwrap();
        assert!(private_dir(&dir.path().join("link")).is_err());
    }

    #[test]
    fn a_planted_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("slotsmith");
        ensure_dir(&d).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, d.join(crate::audit::FILE)).unwrap();
        assert!(open_append(&d.join(crate::audit::FILE)).is_err());
        std::os::unix::fs::symlink(&victim, d.join(MIN_SVN)).unwrap();
        assert!(min_svn(&d).is_err());
        // An atomic write replaces the link itself, never its target.
        std::os::unix::fs::symlink(&victim, d.join(format!(".{MIN_SVN}.tmp"))).unwrap();
        write_atomically(&d.join("other"), b"1\n").unwrap();
        std::fs::remove_file(d.join(MIN_SVN)).unwrap();
        raise_min_svn(&d, 3).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        // A state directory that is a symlink is refused.
        let link = dir.path().join("linked");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(ensure_dir(&link).is_err());
    }
}
