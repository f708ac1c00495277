//! A USB stick image holding one `.swu`, as a service person would carry
//! it: an MBR partition table with one FAT partition (type 0x0c, from
//! 1 MiB), the `.swu` in its root directory. `cargo xtask stick` writes
//! one; `cargo xtask qemu --usb` attaches it; the device's udev rule
//! installs what is on it.
//!
//! The image is deterministic (volume id from the file's name and size,
//! every timestamp the given epoch) and written to a temporary file that
//! is renamed into place only when complete.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::Digest;
use slotsmith_disk::fat::{FatFile, FatSource, FatSpec};
use slotsmith_disk::window::Window;

/// Where the partition starts (the usual 1 MiB alignment).
const PART_START: u64 = 1 << 20;
/// Room beyond the file for the FAT and directories.
const HEADROOM: u64 = 48 << 20;
/// Sector size.
const SECTOR: u64 = 512;
/// Timestamps when no SOURCE_DATE_EPOCH is given (2025-01-01).
pub const DEFAULT_EPOCH: i64 = 1_735_689_600;
/// The stick's volume label.
pub const LABEL: &str = "SLOTSMITH";

/// The MBR: one partition of `sectors` sectors from [`PART_START`], FAT32
/// with LBA (0x0c), CHS fields saturated as for any disk above 8 GiB.
fn mbr(sectors: u32, disk_id: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[440..444].copy_from_slice(&disk_id.to_le_bytes());
    let e = &mut m[446..462];
    e[0] = 0x00; // not bootable
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[4] = 0x0c;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&((PART_START / SECTOR) as u32).to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xaa;
    m
}

/// Writes a stick image holding `swu` to `out`; returns its size.
pub fn make(swu: &Path, out: &Path, epoch: i64) -> Result<u64> {
    let meta = std::fs::metadata(swu).with_context(|| format!("reading {}", swu.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", swu.display());
    }
    let name = swu
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no UTF-8 file name", swu.display()))?;
    if !name.to_ascii_lowercase().ends_with(".swu") || name.len() > 200 {
        bail!(
            "{} is not a .swu file name (the device installs only *.swu)",
            slotsmith_yaml::escape::shown(name)
        );
    }
    let mib = 1 << 20;
    let part_size = meta
        .len()
        .checked_add(HEADROOM)
        .and_then(|n| n.checked_next_multiple_of(mib))
        .context("the .swu is too large for a stick image")?;
    let sectors =
        u32::try_from(part_size / SECTOR).context("the .swu is too large for an MBR stick")?;
    let total = part_size + PART_START;
    let seed = sha2::Sha256::digest(format!("{name}\0{}", meta.len()));
    let id = u32::from_le_bytes([seed[0], seed[1], seed[2], seed[3]]);

    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".stick-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut f = tmp.as_file();
    f.set_len(total)
        .with_context(|| format!("sizing {}", tmp.path().display()))?;
    f.write_all(&mbr(sectors, id))
        .with_context(|| format!("writing the partition table of {}", tmp.path().display()))?;
    f.seek(SeekFrom::Start(0))?;
    let spec = FatSpec {
        label: LABEL.into(),
        volume_id: id,
        mtime: epoch,
        files: vec![FatFile {
            path: name.to_string(),
            source: FatSource::File(swu.to_path_buf()),
        }],
    };
    slotsmith_disk::fat::format_fat(Window::new(f, PART_START, part_size), part_size, &spec)
        .with_context(|| format!("writing the FAT volume of {}", out.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", tmp.path().display()))?;
    tmp.persist(out)
        .with_context(|| format!("moving the stick image to {}", out.display()))?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_table_has_one_fat32_lba_partition_at_1_mib() {
        let m = mbr(2048 * 100, 0x1234_5678);
        assert_eq!(&m[510..], &[0x55, 0xaa]);
        assert_eq!(m[446 + 4], 0x0c);
        assert_eq!(u32::from_le_bytes(m[454..458].try_into().unwrap()), 2048);
        assert_eq!(u32::from_le_bytes(m[458..462].try_into().unwrap()), 204_800);
        assert!(m[462..510].iter().all(|b| *b == 0), "one entry only");
    }

    #[test]
    fn a_stick_is_refused_for_a_file_that_is_not_a_swu() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("notes.txt");
        std::fs::write(&f, "x").unwrap();
        let err = make(&f, &d.path().join("s.img"), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a .swu file name"), "{err}");
        assert!(!d.path().join("s.img").exists());
    }
}
