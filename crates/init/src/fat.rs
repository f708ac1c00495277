//! Reading `manifest` and `manifest.sig` from the slot's FAT boot partition
//! in user space.
//!
//! The partition is read with the `fatfs` crate straight from the block
//! device, so the initramfs needs neither the vfat module nor a mount, and
//! nothing is ever written: the device is opened read-only and wrapped in
//! [`ReadOnly`], whose `write` fails, so even a code path in the library
//! that wanted to set a dirty flag could not touch the disk.
//!
//! Everything on this partition is unauthenticated until the signature
//! check, so every size is bounded before it is trusted: at most
//! [`MAX_ROOT_ENTRIES`] root directory entries are looked at (a crafted
//! directory whose cluster chain loops would otherwise be walked forever),
//! the manifest's recorded size is checked against the format's 64 KiB
//! limit before reading, the signature must be exactly 64 bytes, and a
//! file that reads shorter or longer than its directory entry says is
//! refused. Two entries with the same name (FAT compares names without
//! case) are refused as ambiguous rather than resolved by order.

use anyhow::{bail, Context, Result};
use slotsmith_sign::manifest::MAX_MANIFEST_SIZE;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Root directory entries examined before giving up.
pub const MAX_ROOT_ENTRIES: usize = 1024;
/// The manifest's file name in the partition's root directory.
pub const MANIFEST_NAME: &str = "manifest";
/// The signature's file name next to it (64 raw bytes).
pub const SIG_NAME: &str = "manifest.sig";

/// A disk that can be read and sought but never written.
#[derive(Debug)]
pub struct ReadOnly<D>(pub D);

impl<D: Read> Read for ReadOnly<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<D: Seek> Seek for ReadOnly<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl<D> Write for ReadOnly<D> {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the boot partition is read-only to the init",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The two files the init needs from the boot partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    pub manifest: Vec<u8>,
    pub sig: Vec<u8>,
}

/// Opens the block device (or image file) at `path` read-only and reads
/// the boot files from the FAT filesystem on it.
pub fn read_boot_files_at(path: &Path) -> Result<BootFiles> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    read_boot_files(file)
        .with_context(|| format!("cannot read the boot files on {}", path.display()))
}

/// Reads `manifest` and `manifest.sig` from the root directory of the FAT
/// filesystem on `disk`.
pub fn read_boot_files<D: Read + Seek>(disk: D) -> Result<BootFiles> {
    let fs = fatfs::FileSystem::new(ReadOnly(disk), fatfs::FsOptions::new())
        .context("not a FAT filesystem")?;
    let root = fs.root_dir();
    let mut manifest = None;
    let mut sig = None;
    for (n, entry) in root.iter().enumerate() {
        if n == MAX_ROOT_ENTRIES {
            bail!("the root directory has more than {MAX_ROOT_ENTRIES} entries");
        }
        let entry = entry.context("cannot read the root directory")?;
        let name = entry.file_name();
        let slot = if name.eq_ignore_ascii_case(MANIFEST_NAME) {
            &mut manifest
        } else if name.eq_ignore_ascii_case(SIG_NAME) {
            &mut sig
        } else {
            continue;
        };
        if slot.is_some() {
            bail!("the root directory has two entries named {name}");
        }
        if !entry.is_file() {
            bail!("{name} is not a file");
        }
        *slot = Some(entry);
    }
    let manifest = manifest.with_context(|| format!("there is no /{MANIFEST_NAME}"))?;
    let sig = sig.with_context(|| format!("there is no /{SIG_NAME}"))?;
    if manifest.len() > MAX_MANIFEST_SIZE as u64 {
        bail!(
            "/{MANIFEST_NAME} is {} bytes, over the {MAX_MANIFEST_SIZE}-byte limit",
            manifest.len()
        );
    }
    if sig.len() != crate::verify::SIG_LEN as u64 {
        bail!(
            "/{SIG_NAME} is {} bytes, not the {} of a raw Ed25519 signature",
            sig.len(),
            crate::verify::SIG_LEN
        );
    }
    let manifest = read_exact_len(manifest.to_file(), manifest.len(), MANIFEST_NAME)?;
    let sig = read_exact_len(sig.to_file(), sig.len(), SIG_NAME)?;
    Ok(BootFiles { manifest, sig })
}

/// Reads a file whose directory entry says `len` bytes (already bounded),
/// refusing a shorter or longer cluster chain.
fn read_exact_len(file: impl Read, len: u64, name: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    file.take(len.saturating_add(1))
        .read_to_end(&mut out)
        .with_context(|| format!("cannot read /{name}"))?;
    if out.len() as u64 != len {
        bail!(
            "/{name} reads as {} bytes but its directory entry says {len}",
            out.len()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn writes_are_refused() {
        let mut d = ReadOnly(Cursor::new(vec![0u8; 4]));
        let err = d.write(b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(d.0.get_ref(), &vec![0u8; 4]);
    }

    #[test]
    fn garbage_is_not_a_filesystem() {
        let err = read_boot_files(Cursor::new(vec![0u8; 64 * 1024])).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("not a FAT filesystem"),
            "{err:#}"
        );
    }
}
