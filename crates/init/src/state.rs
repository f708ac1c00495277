//! The writable state on the data partition: the directories behind the
//! `/var` overlay and the per-device machine-id.
//!
//! The data partition is the one thing the init mounts that no signature
//! covers: anyone with the disk in hand can write it. So nothing read from
//! it can make the init boot what it would otherwise refuse (the one thing
//! read before verification, the anti-rollback minimum, can only add a
//! refusal), and its layout is checked rather than trusted: every state directory must be a real directory (a symlink
//! planted there could point the `/var` overlay or the machine-id write
//! anywhere in the initramfs or the root), and a machine-id that is not
//! exactly 32 lowercase hex digits and a newline is replaced by a fresh one
//! rather than handed to systemd. New files are written atomically (temp
//! file, fsync, rename, fsync of the directory) so a power cut never
//! leaves a half-written machine-id.
//!
//! The machine-id is generated the way systemd generates one: 128 random
//! bits from getrandom, with the UUID version 4 and variant bits set,
//! written as 32 hex digits without dashes.

use anyhow::{bail, Context, Result};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// The state directory, relative to the data partition's root.
pub const STATE_DIR: &str = ".state";
/// The updater's directory on the data partition (`slotsmith-update`).
pub const UPDATE_DIR: &str = "slotsmith";
/// The anti-rollback minimum in it: one decimal number.
pub const MIN_SVN_FILE: &str = "min-security-version";
/// Where a refusal is left for the next boot's audit record.
pub const REFUSAL_FILE: &str = "boot-refusal";
/// The largest minimum file read.
const MAX_MIN_SVN_FILE: u64 = 64;
/// The largest refusal written.
const MAX_REFUSAL: usize = 1024;
/// The largest machine-id file read (a valid one is 33 bytes).
const MAX_MACHINE_ID_FILE: u64 = 64;

/// The directories of the `/var` overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarOverlay {
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// True if `bytes` is a machine-id file systemd accepts as it is: 32
/// lowercase hex digits, not all zero, and a newline.
pub fn is_valid_machine_id(bytes: &[u8]) -> bool {
    let Some(id) = bytes.strip_suffix(b"\n") else {
        return false;
    };
    id.len() == 32
        && id
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        && id.iter().any(|&b| b != b'0')
}

/// The machine-id file contents for 128 random bits: the v4 UUID version
/// and variant bits set (as systemd's `sd_id128_randomize` does), 32
/// lowercase hex digits, a newline.
pub fn format_machine_id(mut random: [u8; 16]) -> String {
    random[6] = (random[6] & 0x0f) | 0x40;
    random[8] = (random[8] & 0x3f) | 0x80;
    format!("{}\n", hex::encode(random))
}

/// Makes sure `path` is a real directory (creating it with mode 0755 if
/// it is missing); a symlink or any other file type is refused.
pub fn ensure_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_dir() => Ok(()),
        Ok(meta) if meta.file_type().is_symlink() => {
            bail!("{} is a symlink, not a directory", path.display())
        }
        Ok(_) => bail!("{} is not a directory", path.display()),
        Err(err) if err.kind() == ErrorKind::NotFound => DirBuilder::new()
            .mode(0o755)
            .create(path)
            .with_context(|| format!("cannot create {}", path.display())),
        Err(err) => Err(err).with_context(|| format!("cannot inspect {}", path.display())),
    }
}

/// Parses the minimum file: one decimal number and an optional newline.
/// Anything else is an error (and a refusal to boot): a damaged floor is
/// not read as "no floor".
pub fn parse_min_svn(bytes: &[u8]) -> Result<u64> {
    let text = std::str::from_utf8(bytes)
        .ok()
        .map(|t| t.strip_suffix('\n').unwrap_or(t));
    match text {
        Some(t) if !t.is_empty() && t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit()) => t
            .parse()
            .context("the minimum security version is out of range"),
        _ => bail!(
            "the minimum security version file is damaged ({}); it must hold one decimal number",
            slotsmith_yaml::escape::shown_bytes(&bytes[..bytes.len().min(32)])
        ),
    }
}

/// The device's anti-rollback minimum under the data partition mounted at
/// `data`; `None` when none was ever recorded (a device that has not yet
/// committed a release).
pub fn read_min_svn(data: &Path) -> Result<Option<u64>> {
    let path = data.join(UPDATE_DIR).join(MIN_SVN_FILE);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_file() => {}
        Ok(_) => bail!("{} is not a regular file", path.display()),
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot inspect {}", path.display())),
    }
    let mut out = Vec::new();
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .and_then(|f| f.take(MAX_MIN_SVN_FILE + 1).read_to_end(&mut out))
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse_min_svn(&out)
        .with_context(|| format!("{}", path.display()))
        .map(Some)
}

/// Leaves `reason` for the next boot's updater, which records it with the
/// rollback. Best effort: the refusal happens whether or not this works.
pub fn note_refusal(data: &Path, reason: &str) -> Result<()> {
    let dir = data.join(UPDATE_DIR);
    ensure_dir(&dir)?;
    let mut text = reason.to_string();
    if text.len() > MAX_REFUSAL {
        let mut end = MAX_REFUSAL;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text.push('\n');
    write_atomically(&dir.join(REFUSAL_FILE), text.as_bytes(), 0o600)
}

/// Creates (or checks) `<data>/.state/var/{upper,work}`.
pub fn prepare_var_overlay(data: &Path) -> Result<VarOverlay> {
    let state = data.join(STATE_DIR);
    let var = state.join("var");
    let upper = var.join("upper");
    let work = var.join("work");
    for dir in [&state, &var, &upper, &work] {
        ensure_dir(dir)?;
    }
    Ok(VarOverlay { upper, work })
}

/// Returns the path of a valid machine-id under `<data>/.state`, creating
/// one from `random` (128 bits, called only when needed) if it is missing
/// or invalid.
pub fn ensure_machine_id(
    data: &Path,
    random: impl FnOnce() -> Result<[u8; 16]>,
) -> Result<PathBuf> {
    let state = data.join(STATE_DIR);
    ensure_dir(&state)?;
    let path = state.join("machine-id");
    if read_regular(&path)?.is_some_and(|b| is_valid_machine_id(&b)) {
        return Ok(path);
    }
    let id = format_machine_id(random().context("cannot get random bytes for a machine-id")?);
    write_atomically(&path, id.as_bytes(), 0o444)?;
    Ok(path)
}

/// The contents of `path` if it is a regular file (not through a symlink),
/// at most [`MAX_MACHINE_ID_FILE`] + 1 bytes; `None` if it is missing or
/// anything else (it will be replaced).
fn read_regular(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => {}
        Ok(meta) if meta.file_type().is_dir() => {
            bail!("{} is a directory", path.display())
        }
        Ok(_) => return Ok(None),
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot inspect {}", path.display())),
    }
    let mut out = Vec::new();
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|f| f.take(MAX_MACHINE_ID_FILE + 1).read_to_end(&mut out))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(out))
}

/// Writes `contents` to `path` through a temporary file in the same
/// directory, fsyncs it, renames it over `path` and fsyncs the directory.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no directory", path.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    // A temp file left by a power cut is stale; whatever it is (even a
    // symlink), remove the name rather than write through it.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot remove {}", tmp.display())),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_is_a_number_or_a_refusal_and_absent_means_none() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_min_svn(d.path()).unwrap(), None);
        fs::create_dir(d.path().join(UPDATE_DIR)).unwrap();
        let f = d.path().join(UPDATE_DIR).join(MIN_SVN_FILE);
        fs::write(&f, "2\n").unwrap();
        assert_eq!(read_min_svn(d.path()).unwrap(), Some(2));
        for bad in [&b""[..], b"two", b"-1\n", b"1\n\n", b"99999999999999999999"] {
            fs::write(&f, bad).unwrap();
            assert!(read_min_svn(d.path()).is_err(), "{bad:?}");
        }
        // A symlink in its place is refused, not followed.
        fs::remove_file(&f).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &f).unwrap();
        assert!(read_min_svn(d.path()).is_err());
    }

    #[test]
    fn a_refusal_is_left_bounded_for_the_next_boot() {
        let d = tempfile::tempdir().unwrap();
        note_refusal(d.path(), &"x".repeat(5000)).unwrap();
        let got = fs::read_to_string(d.path().join(UPDATE_DIR).join(REFUSAL_FILE)).unwrap();
        assert_eq!(got.len(), MAX_REFUSAL + 1);
    }

    #[test]
    fn machine_id_format_matches_systemd() {
        let id = format_machine_id([0xff; 16]);
        // version nibble 4, variant bits 10.
        assert_eq!(id, "ffffffffffff4fffbfffffffffffffff\n");
        let id = format_machine_id([0; 16]);
        assert_eq!(id, "00000000000040008000000000000000\n");
        assert!(is_valid_machine_id(id.as_bytes()));
    }

    #[test]
    fn machine_id_validation() {
        assert!(is_valid_machine_id(b"0123456789abcdef0123456789abcdef\n"));
        for bad in [
            &b"0123456789abcdef0123456789abcdef"[..],
            b"0123456789ABCDEF0123456789abcdef\n",
            b"0123456789abcdef0123456789abcde\n",
            b"0123456789abcdef0123456789abcdef0\n",
            b"00000000000000000000000000000000\n",
            b"0123456789abcdef0123456789abcdef\n\n",
            b"",
        ] {
            assert!(!is_valid_machine_id(bad), "{bad:?}");
        }
    }
}
