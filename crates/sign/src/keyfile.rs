//! Key files on disk, shared by the boot key (Ed25519) and the update key
//! (ECDSA P-256, `slotsmith-cms`): exclusive creation with the final mode
//! set at open, and the ssh-style permission check on reading. One copy of
//! these security checks, so the two key roles can never drift apart.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use zeroize::Zeroizing;

/// Creates `path` with `mode` and writes `data`, refusing to replace
/// anything that exists there, including a dangling symlink, so we can
/// neither clobber a key nor be tricked into writing through a planted
/// link. The mode is applied by the kernel at creation (minus umask), so a
/// private key is never readable by others, not even for the instant a
/// later chmod would take.
pub fn write_new(path: &Path, mode: u32, data: &[u8]) -> Result<()> {
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::AlreadyExists => bail!(
            "{} already exists: refusing to overwrite a key or certificate (move it away first)",
            path.display()
        ),
        Err(err) => return Err(err).with_context(|| format!("cannot create {}", path.display())),
    };
    if let Err(err) = file.write_all(data).and_then(|()| file.sync_all()) {
        // A truncated key would fail to parse confusingly later and block
        // the next generation; remove what we (exclusively) created.
        drop(file);
        let _ = fs::remove_file(path);
        return Err(err).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// The ssh-style permission check.
///
/// Security point: a signing key that group or others could read must be
/// assumed leaked (anyone holding it can sign images or push updates to the
/// fleet), and failing loudly here is how the operator finds out before it
/// signs anything. The owner is not compared with the current user: a 0600
/// key of another user is unreadable anyway unless we are root.
pub fn check_private_mode(path: &Path, mode: u32) -> Result<()> {
    if mode & 0o077 != 0 {
        bail!(
            "permissions {:04o} for {p} are too open: a private key must not be \
             accessible by group or others (chmod 600 {p})",
            mode & 0o7777,
            p = path.display()
        );
    }
    Ok(())
}

/// Opens `path` (following symlinks, as ssh does, because secret stores
/// expose keys through links), checks through the descriptor that it is a
/// regular file no larger than `max`, applies the private-key mode check to
/// that same inode when `private`, and reads it into a zeroizing buffer.
pub fn read_bounded(path: &Path, max: u64, private: bool) -> Result<Zeroizing<Vec<u8>>> {
    // Cheap pre-check on the path so that a FIFO is reported instead of
    // blocking in open(); the descriptor check below is the one that counts.
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(meta.is_file(), "{} is not a regular file", path.display());
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    ensure!(meta.is_file(), "{} is not a regular file", path.display());
    if private {
        check_private_mode(path, meta.permissions().mode())?;
    }
    ensure!(
        meta.len() <= max,
        "{} is {} bytes, too large for a key or certificate file",
        path.display(),
        meta.len()
    );
    // Full capacity up front so the vector never reallocates, which would
    // leave an unzeroized copy of a key behind. +1 notices a growing file.
    let cap = usize::try_from(max + 1).unwrap_or(usize::MAX);
    let mut data = Zeroizing::new(Vec::with_capacity(cap));
    file.take(max + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        data.len() as u64 <= max,
        "{} is too large for a key or certificate file",
        path.display()
    );
    Ok(data)
}
