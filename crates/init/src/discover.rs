//! Finding the slot's partitions through sysfs, without udev.
//!
//! The init looks partitions up by their GPT partition name (`boot-a`,
//! `root-a`, `root-a-verity`, `data`), which the kernel reports as
//! `PARTNAME=` in `/sys/class/block/<part>/uevent`. Why names and not
//! UUIDs: an update rewrites a slot's root and verity partitions but keeps
//! the partition table, so UUIDs derived from the root hash (systemd's
//! discoverable-partitions convention) would go stale after the first
//! update, and rewriting the GPT from an update is a risk of its own. A
//! name-based lookup is safe because nothing found here is trusted for its
//! name: the boot partition only supplies a manifest whose signature is
//! checked, and the root partition is only ever read through dm-verity,
//! which binds its content to the signed root hash. The worst a forged
//! partition name can do is fail the boot.
//!
//! What is not tolerated is ambiguity: all four partitions must be on one
//! disk, a disk may not carry a role twice, and if two disks each carry a
//! full set (a USB stick cloned from a device, say) the init refuses to
//! guess. No udev is needed: devtmpfs creates `/dev/<DEVNAME>` itself, and
//! the device numbers come from the same `uevent` file.

use crate::cmdline::Slot;
use anyhow::{bail, Context, Result};
use slotsmith_yaml::escape::shown;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::path::Path;

/// The most entries read from `/sys/class/block` (a bound on work, not a
/// realistic count).
pub const MAX_BLOCK_DEVICES: usize = 4096;
/// The largest `uevent` file read (real ones are about 100 bytes).
pub const MAX_UEVENT: u64 = 4096;

/// A block device as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDev {
    /// The name under /sys/class/block, e.g. `vda3`.
    pub name: String,
    /// `DEVNAME=`: the node devtmpfs creates, relative to /dev.
    pub devname: String,
    pub major: u32,
    pub minor: u32,
}

impl BlockDev {
    /// `MAJ:MIN`, the form a device-mapper table names a device by.
    pub fn dev_t(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    /// The node under `/dev` devtmpfs created for this device.
    pub fn node(&self) -> String {
        format!("/dev/{}", self.devname)
    }
}

/// The four partitions of one slot, all on one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotDevices {
    /// The disk's name under /sys/block, e.g. `vda`.
    pub disk: String,
    pub boot: BlockDev,
    pub root: BlockDev,
    pub verity: BlockDev,
    pub data: BlockDev,
}

/// What a look through sysfs found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Exactly one disk carries the whole set.
    Complete(Box<SlotDevices>),
    /// No disk does (yet: disks are probed asynchronously); the text says
    /// what was seen, for the message if the wait times out.
    Incomplete(String),
}

/// The GPT partition names of `slot`'s roles, in the order boot, root,
/// verity, data.
pub fn role_names(slot: Slot) -> [String; 4] {
    let s = slot.name();
    [
        format!("boot-{s}"),
        format!("root-{s}"),
        format!("root-{s}-verity"),
        "data".to_string(),
    ]
}

/// The `KEY=value` lines of a uevent file. A line without `=` is an error:
/// the kernel never writes one, so it means the file is not what we think.
pub fn parse_uevent(text: &str) -> Result<BTreeMap<&str, &str>> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            bail!("line `{}` has no `=`", shown(line));
        };
        if out.insert(k, v).is_some() {
            bail!("key {} appears twice", shown(k));
        }
    }
    Ok(out)
}

/// One partition from sysfs: its disk, its GPT name and the device.
#[derive(Debug, Clone)]
struct Partition {
    disk: String,
    partname: String,
    dev: BlockDev,
}

/// Looks through `<sysfs>/class/block` for `slot`'s partitions. `sysfs` is
/// `/sys` on a device; tests pass a directory laid out the same way.
pub fn discover(sysfs: &Path, slot: Slot) -> Result<Found> {
    let wanted = role_names(slot);
    let class = sysfs.join("class/block");
    let mut parts = Vec::new();
    let entries =
        fs::read_dir(&class).with_context(|| format!("cannot list {}", class.display()))?;
    for (n, entry) in entries.enumerate() {
        if n == MAX_BLOCK_DEVICES {
            bail!(
                "{} has more than {MAX_BLOCK_DEVICES} entries",
                class.display()
            );
        }
        let entry = entry.with_context(|| format!("cannot list {}", class.display()))?;
        if let Some(p) = read_partition(&entry.path(), &wanted)? {
            parts.push(p);
        }
    }
    // readdir order is arbitrary; messages and choices must not be.
    parts.sort_by(|a, b| a.dev.name.cmp(&b.dev.name));
    choose(parts, &wanted)
}

/// Reads one /sys/class/block entry; `None` unless it is a partition with
/// one of the `wanted` names.
fn read_partition(dir: &Path, wanted: &[String; 4]) -> Result<Option<Partition>> {
    let path = dir.join("uevent");
    let mut text = String::new();
    fs::File::open(&path)
        .and_then(|f| f.take(MAX_UEVENT + 1).read_to_string(&mut text))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if text.len() as u64 > MAX_UEVENT {
        bail!("{} is over {MAX_UEVENT} bytes", path.display());
    }
    let keys = parse_uevent(&text).with_context(|| format!("{} is malformed", path.display()))?;
    if keys.get("DEVTYPE") != Some(&"partition") {
        return Ok(None);
    }
    let Some(partname) = keys.get("PARTNAME") else {
        return Ok(None);
    };
    if !wanted.iter().any(|w| w == partname) {
        return Ok(None);
    }
    let number = |key: &str| -> Result<u32> {
        let v = keys
            .get(key)
            .with_context(|| format!("{} has no {key}=", path.display()))?;
        v.parse()
            .ok()
            .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
            .with_context(|| format!("{}: {key}={} is not a number", path.display(), shown(v)))
    };
    let major = number("MAJOR")?;
    let minor = number("MINOR")?;
    let devname = keys
        .get("DEVNAME")
        .with_context(|| format!("{} has no DEVNAME=", path.display()))?;
    let devname_ok = !devname.is_empty()
        && Path::new(devname)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !devname_ok {
        bail!(
            "{}: DEVNAME={} is not a path below /dev",
            path.display(),
            shown(devname)
        );
    }
    // The sysfs entry is a symlink into /sys/devices/.../block/<disk>/<part>:
    // the partition's disk is the directory that holds it.
    let real =
        fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let disk = real
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no parent disk", real.display()))?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} is not a UTF-8 name", dir.display()))?;
    Ok(Some(Partition {
        disk: disk.to_string(),
        partname: partname.to_string(),
        dev: BlockDev {
            name: name.to_string(),
            devname: devname.to_string(),
            major,
            minor,
        },
    }))
}

/// Groups partitions by disk and picks the one disk with the full set.
fn choose(parts: Vec<Partition>, wanted: &[String; 4]) -> Result<Found> {
    // disk -> role index -> devices with that name on that disk
    let mut disks: BTreeMap<String, [Vec<BlockDev>; 4]> = BTreeMap::new();
    for p in parts {
        let Some(role) = wanted.iter().position(|w| *w == p.partname) else {
            continue;
        };
        disks.entry(p.disk).or_default()[role].push(p.dev);
    }
    let complete: Vec<&String> = disks
        .iter()
        .filter(|(_, roles)| roles.iter().all(|r| !r.is_empty()))
        .map(|(disk, _)| disk)
        .collect();
    if complete.len() > 1 {
        let names: Vec<String> = complete.iter().map(|d| shown(d)).collect();
        bail!(
            "disks {} each carry {}: refusing to guess which one to boot",
            names.join(" and "),
            wanted.join(", ")
        );
    }
    let Some(disk) = complete.first().map(|d| d.to_string()) else {
        let seen: Vec<String> = disks
            .iter()
            .map(|(disk, roles)| {
                let names: Vec<&str> = wanted
                    .iter()
                    .zip(roles)
                    .filter(|(_, devs)| !devs.is_empty())
                    .map(|(w, _)| w.as_str())
                    .collect();
                format!("{} has {}", shown(disk), names.join(", "))
            })
            .collect();
        let seen = if seen.is_empty() {
            "no partition has any of these names".to_string()
        } else {
            seen.join("; ")
        };
        return Ok(Found::Incomplete(format!(
            "no disk has all of {} ({seen})",
            wanted.join(", ")
        )));
    };
    let Some(roles) = disks.remove(&disk) else {
        bail!("disk {} vanished from the list", shown(&disk));
    };
    let mut picked = Vec::with_capacity(4);
    for (name, mut devs) in wanted.iter().zip(roles) {
        if devs.len() > 1 {
            let list: Vec<String> = devs.iter().map(|d| shown(&d.name)).collect();
            bail!(
                "disk {} has {} partitions named {name} ({}): refusing to guess",
                shown(&disk),
                devs.len(),
                list.join(", ")
            );
        }
        match devs.pop() {
            Some(dev) => picked.push(dev),
            None => bail!("disk {} lost its {name} partition", shown(&disk)),
        }
    }
    let [boot, root, verity, data]: [BlockDev; 4] = match picked.try_into() {
        Ok(all) => all,
        Err(_) => bail!("disk {} does not have four roles", shown(&disk)),
    };
    Ok(Found::Complete(Box::new(SlotDevices {
        disk,
        boot,
        root,
        verity,
        data,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uevent_lines_are_key_value() {
        let m = parse_uevent("MAJOR=254\nMINOR=1\nDEVNAME=vda1\nPARTNAME=a=b\n").unwrap();
        assert_eq!(m["PARTNAME"], "a=b");
        assert!(parse_uevent("MAJOR=1\nnonsense\n").is_err());
        assert!(parse_uevent("A=1\nA=2\n").is_err());
    }

    #[test]
    fn role_names_follow_the_slot() {
        assert_eq!(
            role_names(Slot::B),
            ["boot-b", "root-b", "root-b-verity", "data"]
        );
    }
}
