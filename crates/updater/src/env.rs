//! The EFI Boot Guard environments of both slots, read from the boot
//! partitions of the disk the running root lives on.
//!
//! The partitions are found through sysfs, starting from the verity
//! device's backing partition, not through `/dev/disk/by-partlabel`: a
//! USB stick with a partition named `boot-a` would otherwise be able to
//! stand in for the device's own. They are read without mounting, through
//! a reader that refuses every write.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use slotsmith_disk::bgenv::{self, BgEnv};

/// The root's device-mapper device (the init creates exactly one).
const ROOT_DM: &str = "/sys/block/dm-0/slaves";
/// Largest environment file read.
const MAX_ENV: u64 = 1 << 20;
/// Largest uevent read.
const MAX_UEVENT: u64 = 4096;
/// The SBOM's name on a slot's boot partition (the build's
/// `plan::files::SBOM_NAME`), beside the slot's manifest.
pub const SBOM_NAME: &str = "sbom.spdx.json";
/// Largest SBOM read (a Debian image's is well under a megabyte).
const MAX_SBOM: u64 = 64 << 20;

/// A block device opened read-only, for the FAT reader (which wants
/// `Write` in its signature but must never get to use it here).
struct ReadOnly(File);

impl Read for ReadOnly {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}
impl Seek for ReadOnly {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}
impl Write for ReadOnly {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the boot partition is opened read-only",
        ))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One slot's environment as found.
#[derive(Debug, Clone)]
pub struct SlotEnv {
    /// The slot.
    pub slot: String,
    /// The decoded environment, or why it could not be read.
    pub env: Result<BgEnv, String>,
}

/// The disk holding the running root (`vda` for `vda4`).
fn root_disk(sys: &Path) -> Result<String> {
    let slaves = sys.join(ROOT_DM.trim_start_matches("/sys/"));
    let mut names: Vec<String> = std::fs::read_dir(&slaves)
        .with_context(|| format!("reading {}", slaves.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let first = names
        .first()
        .context("the root device has no backing partition")?;
    let part = std::fs::canonicalize(sys.join("class/block").join(first))
        .with_context(|| format!("resolving partition {first}"))?;
    let disk = part
        .parent()
        .and_then(|p| p.file_name())
        .context("a partition's sysfs directory has a parent disk")?;
    Ok(disk.to_string_lossy().into_owned())
}

/// `/dev/<DEVNAME>` of the partition named `partname` on `disk`.
fn partition_node(sys: &Path, disk: &str, partname: &str) -> Result<PathBuf> {
    let dir = sys.join("class/block").join(disk);
    let dir =
        std::fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))?;
    let mut found = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(disk) {
            continue;
        }
        let Ok(text) = crate::read_bounded(&e.path().join("uevent"), MAX_UEVENT) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .map(str::to_string)
        };
        if field("PARTNAME").as_deref() == Some(partname) {
            if let Some(dev) = field("DEVNAME") {
                found.push(dev);
            }
        }
    }
    match found.as_slice() {
        [one] => Ok(PathBuf::from("/dev").join(one)),
        [] => bail!("disk {disk} has no partition named {partname}"),
        _ => bail!(
            "disk {disk} has {} partitions named {partname}",
            found.len()
        ),
    }
}

/// Reads `BGENV.DAT` from a FAT volume on `dev`.
fn read_env(dev: &Path) -> Result<BgEnv> {
    let f = File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    let bytes = slotsmith_disk::fat::read_fat_file_max(ReadOnly(f), "BGENV.DAT", MAX_ENV)
        .with_context(|| format!("reading BGENV.DAT on {}", dev.display()))?;
    bgenv::decode(&bytes).with_context(|| format!("BGENV.DAT on {}", dev.display()))
}

/// The SBOM on `slot`'s boot partition, as SWUpdate (or the golden
/// image) wrote it there; refused unless it is JSON. JSON strings may
/// still hold raw DEL and C1 characters: print it through
/// [`printable_sbom`].
pub fn read_sbom(config: &crate::config::Config, slot: &str) -> Result<Vec<u8>> {
    let part = config
        .boot_partitions
        .iter()
        .find(|(s, _)| s == slot)
        .map(|(_, p)| p)
        .with_context(|| {
            format!(
                "no boot partition for slot {}",
                slotsmith_yaml::escape::shown(slot)
            )
        })?;
    let sys = Path::new("/sys");
    let dev = partition_node(sys, &root_disk(sys)?, part)?;
    read_sbom_on(&dev)
}

/// [`read_sbom`] on the FAT volume `dev`.
fn read_sbom_on(dev: &Path) -> Result<Vec<u8>> {
    let f = File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    let bytes = slotsmith_disk::fat::read_fat_file_max(ReadOnly(f), SBOM_NAME, MAX_SBOM)
        .with_context(|| format!("reading {SBOM_NAME} on {}", dev.display()))?;
    serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
        .with_context(|| format!("{SBOM_NAME} on {} is not JSON", dev.display()))?;
    Ok(bytes)
}

/// What `slotsmith-update sbom` prints for the SBOM `bytes` (checked to be
/// JSON by [`read_sbom`], so UTF-8): the same JSON with DEL, C1, bidi and
/// other terminal-steering characters as `\u` escapes (U+009B is CSI on
/// some terminals). slotsmith writes its SBOMs escaped the same way, so
/// one of them prints byte for byte and its sha256 still matches.
pub fn printable_sbom(bytes: &[u8]) -> Vec<u8> {
    slotsmith_yaml::escape::json_for_terminal(&String::from_utf8_lossy(bytes)).into_bytes()
}

/// Both slots' environments, in the order of the settings.
pub fn read_all(config: &crate::config::Config) -> Result<Vec<SlotEnv>> {
    let sys = Path::new("/sys");
    let disk = root_disk(sys)?;
    let mut out = Vec::new();
    for (slot, part) in &config.boot_partitions {
        let got = partition_node(sys, &disk, part).and_then(|dev| read_env(&dev));
        out.push(SlotEnv {
            slot: slot.clone(),
            env: got.map_err(|e| format!("{e:#}")),
        });
    }
    Ok(out)
}

/// The environment of `slot`, or an error saying why it is unreadable.
pub fn of<'a>(envs: &'a [SlotEnv], slot: &str) -> Result<&'a BgEnv> {
    let e = envs
        .iter()
        .find(|e| e.slot == slot)
        .with_context(|| format!("no environment for slot {slot}"))?;
    e.env
        .as_ref()
        .map_err(|why| anyhow::anyhow!("slot {slot}'s environment: {why}"))
}

/// One line per slot for `status`.
pub fn describe(e: &SlotEnv) -> String {
    match &e.env {
        Ok(env) => format!(
            "slot {}: revision {}, ustate {} ({}), kernel {}{}",
            e.slot,
            env.revision,
            env.ustate as u8,
            env.ustate.name(),
            slotsmith_yaml::escape::shown(&env.kernelfile),
            if env.in_progress { ", in progress" } else { "" }
        ),
        Err(why) => format!(
            "slot {}: unreadable ({})",
            e.slot,
            slotsmith_yaml::escape::shown(why)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake sysfs: dm-0 over vda4, vda with boot-a on vda2 and boot-b
    /// on vda3, and a stick sda with a planted boot-a.
    fn fake_sys() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let s = t.path();
        let dev = s.join("devices/pci/block");
        for (disk, parts) in [
            (
                "vda",
                &[("vda2", "boot-a"), ("vda3", "boot-b"), ("vda4", "root-a")][..],
            ),
            ("sda", &[("sda1", "boot-a")][..]),
        ] {
            for (p, name) in parts {
                let d = dev.join(disk).join(p);
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("uevent"), format!("DEVNAME={p}\nPARTNAME={name}\n"))
                    .unwrap();
            }
        }
        std::fs::create_dir_all(s.join("class/block")).unwrap();
        for (link, target) in [
            ("vda", "vda"),
            ("sda", "sda"),
            ("vda2", "vda/vda2"),
            ("vda3", "vda/vda3"),
            ("vda4", "vda/vda4"),
            ("sda1", "sda/sda1"),
        ] {
            std::os::unix::fs::symlink(dev.join(target), s.join("class/block").join(link)).unwrap();
        }
        std::fs::create_dir_all(s.join("block/dm-0/slaves/vda4")).unwrap();
        t
    }

    #[test]
    fn boot_partitions_are_found_on_the_root_s_disk_only() {
        let t = fake_sys();
        let disk = root_disk(t.path()).unwrap();
        assert_eq!(disk, "vda");
        assert_eq!(
            partition_node(t.path(), &disk, "boot-a").unwrap(),
            PathBuf::from("/dev/vda2")
        );
        assert_eq!(
            partition_node(t.path(), "sda", "boot-a").unwrap(),
            PathBuf::from("/dev/sda1")
        );
        assert!(partition_node(t.path(), &disk, "boot-c").is_err());
    }

    #[test]
    fn the_sbom_is_read_from_the_boot_partition_as_written_and_must_be_json() {
        let t = tempfile::tempdir().unwrap();
        let vol = |name: &str, bytes: &[u8]| {
            let path = t.path().join(name);
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap();
            let spec = slotsmith_disk::fat::FatSpec {
                label: "BOOT1".into(),
                volume_id: 1,
                mtime: 1_700_000_000,
                files: vec![slotsmith_disk::fat::FatFile {
                    path: SBOM_NAME.into(),
                    source: slotsmith_disk::fat::FatSource::Bytes(bytes.to_vec()),
                }],
            };
            slotsmith_disk::fat::format_fat(f, 16 << 20, &spec).unwrap();
            path
        };
        let sbom = b"{\"spdxVersion\": \"SPDX-2.3\", \"name\": \"demo\"}\n";
        assert_eq!(read_sbom_on(&vol("good", sbom)).unwrap(), sbom);
        let e = read_sbom_on(&vol("bad", b"\x1b[2Jnot json")).unwrap_err();
        assert!(format!("{e:#}").contains("is not JSON"), "{e:#}");
    }

    #[test]
    fn the_printed_sbom_holds_no_terminal_controls_and_means_the_same() {
        let raw = "{\"name\": \"a\u{7f}b\u{9b}2J\u{202e}c\", \"n\": 1}\n";
        let shown = printable_sbom(raw.as_bytes());
        let text = String::from_utf8(shown.clone()).unwrap();
        assert_eq!(
            text,
            "{\"name\": \"a\\u007fb\\u009b2J\\u202ec\", \"n\": 1}\n"
        );
        let a: serde_json::Value = serde_json::from_str(raw).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&shown).unwrap();
        assert_eq!(a, b);
        // An SBOM as slotsmith writes it prints byte for byte.
        let plain = b"{\n  \"spdxVersion\": \"SPDX-2.3\"\n}\n";
        assert_eq!(printable_sbom(plain), plain);
    }

    #[test]
    fn the_reader_refuses_writes() {
        let t = tempfile::NamedTempFile::new().unwrap();
        let mut r = ReadOnly(File::open(t.path()).unwrap());
        assert!(r.write(b"x").is_err());
    }
}
