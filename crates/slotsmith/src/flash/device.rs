//! Which device `flash` may write, decided before anything is written.
//!
//! A flash station plugs in many devices and a typo costs a workstation,
//! so the refusals are explicit and each names the device: the disk the
//! running system lives on (found from `/`'s mount through device-mapper
//! and md layers in sysfs, so an LVM or LUKS root still names its disk), a
//! device with a mounted, swapped or held partition (mountinfo, swaps and
//! sysfs `holders`), a symlink that leaves /dev, and anything but a block
//! device or (when asked) a regular file. The kernel adds its own guard:
//! the block device is opened with `O_EXCL`, which fails on a mounted one.
//!
//! Every path and file here is a parameter of [`System`], so the tests run
//! the same code on a fake sysfs tree.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use slotsmith_yaml::escape::shown;

/// Where the checks look: the real system, or a fake tree in tests.
#[derive(Debug, Clone)]
pub struct System {
    /// sysfs (`/sys`).
    pub sys: PathBuf,
    /// `/proc/self/mountinfo`.
    pub mountinfo: PathBuf,
    /// `/proc/swaps`.
    pub swaps: PathBuf,
    /// udev's database (`/run/udev/data`).
    pub udev: PathBuf,
    /// `/proc/meminfo`, for how much of the image to keep in memory.
    pub meminfo: PathBuf,
    /// `/proc/self/cgroup`, for the memory limits that bind this process.
    pub cgroup: PathBuf,
}

impl Default for System {
    fn default() -> Self {
        System {
            sys: "/sys".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            swaps: "/proc/swaps".into(),
            udev: "/run/udev/data".into(),
            meminfo: "/proc/meminfo".into(),
            cgroup: "/proc/self/cgroup".into(),
        }
    }
}

/// Deepest device stack followed (dm on md on partitions is three).
const MAX_DEPTH: usize = 16;
/// Largest sysfs, mountinfo or udev file read.
const MAX_SMALL_FILE: u64 = 4 << 20;

/// What the path names, before it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A block device (at this path, symlinks resolved), with its number.
    Block { path: PathBuf, rdev: (u32, u32) },
    /// A regular file, or a path that does not exist yet (`--allow-file`).
    File { path: PathBuf },
}

/// Classifies `device`: a symlink is followed only to a block device under
/// /dev; a regular file (or a new path) needs `allow_file`; anything else
/// is refused.
pub fn classify(device: &Path, allow_file: bool) -> Result<Kind> {
    let shown_dev = shown(&device.to_string_lossy());
    let lmd = match std::fs::symlink_metadata(device) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && allow_file => {
            return Ok(Kind::File {
                path: device.to_path_buf(),
            })
        }
        Err(e) => return Err(e).with_context(|| format!("{shown_dev}: no such device")),
    };
    let path = if lmd.file_type().is_symlink() {
        let target = device
            .canonicalize()
            .with_context(|| format!("{shown_dev}: resolving the symlink"))?;
        // by-id and by-path links point into /dev; one that leaves it is
        // not a device name and is not followed.
        if !target.starts_with("/dev/") {
            bail!(
                "{shown_dev} is a symlink to {}, outside /dev: give the device itself",
                shown(&target.to_string_lossy())
            );
        }
        target
    } else {
        device.to_path_buf()
    };
    let md = std::fs::symlink_metadata(&path).with_context(|| format!("{shown_dev}: stat"))?;
    let ft = md.file_type();
    if ft.is_block_device() {
        let rdev = md.rdev();
        Ok(Kind::Block {
            path,
            rdev: (major(rdev), minor(rdev)),
        })
    } else if ft.is_file() && path == device {
        if !allow_file {
            bail!("{shown_dev} is a regular file, not a block device: pass --allow-file to write an image file");
        }
        Ok(Kind::File { path })
    } else if ft.is_file() {
        bail!(
            "{shown_dev} is a symlink to a regular file: give the file itself (with --allow-file)"
        );
    } else {
        bail!("{shown_dev} is neither a block device nor a regular file");
    }
}

fn major(rdev: u64) -> u32 {
    rustix::fs::major(rdev)
}

fn minor(rdev: u64) -> u32 {
    rustix::fs::minor(rdev)
}

/// What the checks learned about a block device that may be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    /// Kernel name (`sdb`, `loop3`, `sdb1`).
    pub name: String,
    /// The whole disk it is or belongs to.
    pub disk: String,
    /// Size from sysfs (512-byte sectors times 512), when reported.
    pub sysfs_size: Option<u64>,
    /// The disk's serial, where the kernel or udev reports one.
    pub serial: Option<String>,
}

/// The refusals for a block device `device` (as given) with number `rdev`.
pub fn check_block(sys: &System, device: &str, rdev: (u32, u32)) -> Result<BlockInfo> {
    let node = node_dir(sys, rdev).with_context(|| {
        format!(
            "{device}: block device {}:{} is not in sysfs",
            rdev.0, rdev.1
        )
    })?;
    let disk = whole_disk(&node);
    let name = file_name(&node);
    let disk_name = file_name(&disk);

    // 1. The running system's disk. Both stacks are followed down to
    // their disks: an unmounted LVM volume or open LUKS mapping that
    // lives on the root's disk is that disk too.
    let mounts = read_mountinfo(sys)?;
    let mut below = Vec::new();
    collect_down(&node, 0, &mut below);
    let target_disks: Vec<PathBuf> = below.iter().map(|n| whole_disk(n)).collect();
    if let Some(root) = mounts.iter().rev().find(|m| m.point == "/") {
        let mut stack = Vec::new();
        if let Some(d) = mount_node(sys, root) {
            collect_down(&d, 0, &mut stack);
        }
        for n in &stack {
            if target_disks.contains(&whole_disk(n)) || *n == node {
                bail!(
                    "{device} is the disk the running system lives on: / is mounted from {} ({}), which is on {}",
                    shown(&root.source),
                    file_name(&stack[0]),
                    file_name(&whole_disk(n))
                );
            }
        }
    }

    // 2. Mounted, swapped or held: the node itself, every partition of a
    // whole disk, and every layer built on them.
    let mut on = vec![node.clone()];
    if node == disk {
        on.extend(partitions(&disk));
    }
    let mut all = Vec::new();
    for n in &on {
        collect_up(n, 0, &mut all);
    }
    let devs: Vec<((u32, u32), &PathBuf)> = all
        .iter()
        .filter_map(|n| dev_of(n).map(|d| (d, n)))
        .collect();
    for m in &mounts {
        let hit = devs.iter().find(|(d, _)| Some(*d) == mount_dev(m));
        if let Some((_, n)) = hit {
            bail!(
                "{device} has a mounted filesystem: {} ({}) is mounted on {} ({}); unmount it first",
                shown(&m.source),
                file_name(n),
                shown(&m.point),
                shown(&m.fstype)
            );
        }
    }
    for swap in read_small(&sys.swaps).unwrap_or_default().lines().skip(1) {
        let Some(path) = swap.split_whitespace().next() else {
            continue;
        };
        let path = unescape(path);
        if let Some(d) = block_dev_of(Path::new(&path)) {
            if let Some((_, n)) = devs.iter().find(|(x, _)| *x == d) {
                bail!(
                    "{device} is in use as swap: {} ({}); swapoff it first",
                    shown(&path),
                    file_name(n)
                );
            }
        }
    }
    for n in &on {
        if let Some(h) = list(&n.join("holders")).first() {
            bail!("{device} is in use: {} is held by {} (device-mapper, md or a similar layer); stop it first", file_name(n), h);
        }
    }

    let sysfs_size = read_small(&node.join("size"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .and_then(|s| s.checked_mul(512));
    Ok(BlockInfo {
        name,
        disk: disk_name,
        sysfs_size,
        serial: serial(sys, &disk),
    })
}

/// The sysfs directory of device `rdev` (`/sys/dev/block/M:m`, resolved).
fn node_dir(sys: &System, rdev: (u32, u32)) -> Option<PathBuf> {
    sys.sys
        .join(format!("dev/block/{}:{}", rdev.0, rdev.1))
        .canonicalize()
        .ok()
}

/// A partition's directory sits inside its disk's.
fn whole_disk(node: &Path) -> PathBuf {
    match node.parent() {
        Some(parent) if node.join("partition").exists() => parent.to_path_buf(),
        _ => node.to_path_buf(),
    }
}

fn partitions(disk: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(disk)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("partition").is_file())
        .collect();
    out.sort();
    out
}

/// The names in a sysfs `holders` or `slaves` directory, sorted.
fn list(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// `node` and every device it is built from (dm and md `slaves`).
fn collect_down(node: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH || out.iter().any(|n| n == node) {
        return;
    }
    out.push(node.to_path_buf());
    for s in list(&node.join("slaves")) {
        if let Ok(p) = node.join("slaves").join(&s).canonicalize() {
            collect_down(&p, depth + 1, out);
        }
    }
}

/// `node` and every device built on it (`holders`).
fn collect_up(node: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH || out.iter().any(|n| n == node) {
        return;
    }
    out.push(node.to_path_buf());
    for h in list(&node.join("holders")) {
        if let Ok(p) = node.join("holders").join(&h).canonicalize() {
            collect_up(&p, depth + 1, out);
        }
    }
}

fn file_name(p: &Path) -> String {
    shown(&p.file_name().unwrap_or_default().to_string_lossy())
}

fn dev_of(node: &Path) -> Option<(u32, u32)> {
    parse_dev(read_small(&node.join("dev")).ok()?.trim())
}

fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn block_dev_of(path: &Path) -> Option<(u32, u32)> {
    let md = std::fs::metadata(path).ok()?;
    md.file_type()
        .is_block_device()
        .then(|| (major(md.rdev()), minor(md.rdev())))
}

/// One line of mountinfo.
#[derive(Debug)]
struct Mount {
    dev: Option<(u32, u32)>,
    point: String,
    fstype: String,
    source: String,
}

fn read_mountinfo(sys: &System) -> Result<Vec<Mount>> {
    let text = read_small(&sys.mountinfo)
        .with_context(|| format!("reading {}", sys.mountinfo.display()))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.len() < 5 || f.len() < sep + 3 {
            continue;
        }
        out.push(Mount {
            dev: parse_dev(f[2]),
            point: unescape(f[4]),
            fstype: unescape(f[sep + 1]),
            source: unescape(f[sep + 2]),
        });
    }
    Ok(out)
}

/// The device a mount is on: its number, or for filesystems that report
/// an anonymous one (btrfs), the device its source names.
fn mount_dev(m: &Mount) -> Option<(u32, u32)> {
    match m.dev {
        Some((0, _)) | None if m.source.starts_with("/dev/") => block_dev_of(Path::new(&m.source)),
        d => d,
    }
}

fn mount_node(sys: &System, m: &Mount) -> Option<PathBuf> {
    m.dev.and_then(|d| node_dir(sys, d)).or_else(|| {
        m.source
            .starts_with("/dev/")
            .then(|| block_dev_of(Path::new(&m.source)))
            .flatten()
            .and_then(|d| node_dir(sys, d))
    })
}

/// mountinfo and swaps escape space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        let value = octal.map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')));
        if let (b'\\', Some(v @ 0..=255)) = (b[i], value) {
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = String::new();
    File::open(path)?
        .take(MAX_SMALL_FILE)
        .read_to_string(&mut s)?;
    Ok(s)
}

/// The disk's serial: sysfs `device/serial`, `serial` (virtio),
/// `device/wwid`, else udev's `ID_SERIAL`. Loop devices have none.
fn serial(sys: &System, disk: &Path) -> Option<String> {
    let clean = |s: String| {
        let s: String = s
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(256)
            .collect();
        (!s.is_empty()).then_some(s)
    };
    for f in ["device/serial", "serial", "device/wwid"] {
        if let Some(s) = read_small(&disk.join(f)).ok().and_then(clean) {
            return Some(s);
        }
    }
    let (ma, mi) = dev_of(disk)?;
    let db = read_small(&sys.udev.join(format!("b{ma}:{mi}"))).ok()?;
    db.lines()
        .find_map(|l| l.strip_prefix("E:ID_SERIAL="))
        .and_then(|s| clean(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A fake sysfs: sda (sda1, sda2), dm-0 on sda2, sdb (sdb1), loop0.
    fn fake(root_line: &str) -> (tempfile::TempDir, System) {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let dev = |p: &str, d: &str| {
            fs::create_dir_all(r.join(p).join("holders")).unwrap();
            fs::create_dir_all(r.join(p).join("slaves")).unwrap();
            fs::write(r.join(p).join("dev"), format!("{d}\n")).unwrap();
            fs::write(r.join(p).join("size"), "2048\n").unwrap();
            fs::create_dir_all(r.join("dev/block")).unwrap();
            symlink(r.join(p), r.join("dev/block").join(d)).unwrap();
        };
        dev("devices/pci/block/sda", "8:0");
        dev("devices/pci/block/sda/sda1", "8:1");
        dev("devices/pci/block/sda/sda2", "8:2");
        dev("devices/pci/block/sdb", "8:16");
        dev("devices/pci/block/sdb/sdb1", "8:17");
        dev("devices/virtual/block/dm-0", "253:0");
        dev("devices/virtual/block/dm-3", "253:3");
        dev("devices/virtual/block/dm-4", "253:4");
        dev("devices/virtual/block/loop0", "7:0");
        for p in ["sda/sda1", "sda/sda2", "sdb/sdb1"] {
            fs::write(r.join("devices/pci/block").join(p).join("partition"), "1\n").unwrap();
        }
        symlink(
            r.join("devices/pci/block/sda/sda2"),
            r.join("devices/virtual/block/dm-0/slaves/sda2"),
        )
        .unwrap();
        symlink(
            r.join("devices/virtual/block/dm-0"),
            r.join("devices/pci/block/sda/sda2/holders/dm-0"),
        )
        .unwrap();
        // dm-3: another, unmounted volume on sda1 (the root's disk); dm-4:
        // one on sdb1.
        for (dm, part) in [("dm-3", "sda/sda1"), ("dm-4", "sdb/sdb1")] {
            let base = part.rsplit('/').next().unwrap();
            symlink(
                r.join("devices/pci/block").join(part),
                r.join("devices/virtual/block")
                    .join(dm)
                    .join("slaves")
                    .join(base),
            )
            .unwrap();
        }
        fs::create_dir_all(r.join("devices/pci/block/sdb/device")).unwrap();
        fs::write(r.join("devices/pci/block/sdb/device/serial"), "  SN-0042\n").unwrap();
        fs::write(
            r.join("mountinfo"),
            format!("22 27 0:21 / /proc rw - proc proc rw\n{root_line}\n"),
        )
        .unwrap();
        fs::write(r.join("swaps"), "Filename Type Size Used Priority\n").unwrap();
        let sys = System {
            sys: r.to_path_buf(),
            mountinfo: r.join("mountinfo"),
            swaps: r.join("swaps"),
            udev: r.join("udev"),
            meminfo: r.join("meminfo"),
            cgroup: r.join("cgroup"),
        };
        (t, sys)
    }

    const ROOT_ON_DM: &str = "27 1 253:0 / / rw - ext4 /dev/mapper/root rw";

    #[test]
    fn the_root_disk_is_refused_through_device_mapper() {
        let (_t, sys) = fake(ROOT_ON_DM);
        for (dev, rdev) in [
            ("/dev/sda", (8, 0)),
            ("/dev/sda1", (8, 1)),
            ("/dev/dm-0", (253, 0)),
        ] {
            let e = format!("{:#}", check_block(&sys, dev, rdev).unwrap_err());
            assert!(
                e.starts_with(&format!("{dev} is the disk the running system lives on")),
                "{e}"
            );
            assert!(e.contains("/dev/mapper/root (dm-0), which is on"), "{e}");
        }
    }

    #[test]
    fn a_volume_that_lives_on_the_root_disk_is_refused() {
        let (_t, sys) = fake(ROOT_ON_DM);
        let e = format!(
            "{:#}",
            check_block(&sys, "/dev/dm-3", (253, 3)).unwrap_err()
        );
        assert!(
            e.starts_with("/dev/dm-3 is the disk the running system lives on"),
            "{e}"
        );
        assert!(e.ends_with("which is on sda"), "{e}");
        // A volume on another disk is not.
        assert_eq!(
            check_block(&sys, "/dev/dm-4", (253, 4)).unwrap().name,
            "dm-4"
        );
    }

    #[test]
    fn a_mounted_or_held_partition_is_refused_and_a_free_disk_passes() {
        let (_t, sys) = fake(ROOT_ON_DM);
        let info = check_block(&sys, "/dev/sdb", (8, 16)).unwrap();
        assert_eq!(info.disk, "sdb");
        assert_eq!(info.serial.as_deref(), Some("SN-0042"));
        assert_eq!(info.sysfs_size, Some(2048 * 512));
        assert_eq!(
            check_block(&sys, "/dev/loop0", (7, 0)).unwrap().serial,
            None
        );

        let mut mi = fs::read_to_string(&sys.mountinfo).unwrap();
        mi.push_str("40 27 8:17 / /media/my\\040stick rw - vfat /dev/sdb1 rw\n");
        fs::write(&sys.mountinfo, mi).unwrap();
        let e = format!("{:#}", check_block(&sys, "/dev/sdb", (8, 16)).unwrap_err());
        assert_eq!(e, "/dev/sdb has a mounted filesystem: /dev/sdb1 (sdb1) is mounted on /media/my stick (vfat); unmount it first");

        // A partition held by a layer (an open LUKS or LVM volume) with
        // nothing mounted.
        let (t, sys) = fake(
            ROOT_ON_DM
                .replace("253:0", "7:0")
                .replace("/dev/mapper/root", "/dev/loop0")
                .as_str(),
        );
        symlink(
            t.path().join("devices/virtual/block/dm-0"),
            t.path().join("devices/pci/block/sdb/sdb1/holders/dm-0"),
        )
        .unwrap();
        let e = format!("{:#}", check_block(&sys, "/dev/sdb", (8, 16)).unwrap_err());
        assert!(
            e.starts_with("/dev/sdb is in use: sdb1 is held by dm-0"),
            "{e}"
        );
    }

    #[test]
    fn classify_refuses_files_symlinks_out_of_dev_and_other_kinds() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("disk.img");
        fs::write(&f, b"x").unwrap();
        let e = format!("{:#}", classify(&f, false).unwrap_err());
        assert!(
            e.ends_with(
                "is a regular file, not a block device: pass --allow-file to write an image file"
            ),
            "{e}"
        );
        assert_eq!(classify(&f, true).unwrap(), Kind::File { path: f.clone() });
        let link = t.path().join("link");
        symlink(&f, &link).unwrap();
        let e = format!("{:#}", classify(&link, true).unwrap_err());
        assert!(
            e.contains("is a symlink to") && e.contains("outside /dev"),
            "{e}"
        );
        let e = format!("{:#}", classify(Path::new("/dev/null"), true).unwrap_err());
        assert_eq!(e, "/dev/null is neither a block device nor a regular file");
        let e = format!(
            "{:#}",
            classify(&t.path().join("missing"), false).unwrap_err()
        );
        assert!(e.contains("no such device"), "{e}");
        assert!(matches!(
            classify(&t.path().join("new.img"), true).unwrap(),
            Kind::File { .. }
        ));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b\\011c\\134"), "/a b\tc\\");
        assert_eq!(unescape("trail\\04"), "trail\\04");
    }
}
