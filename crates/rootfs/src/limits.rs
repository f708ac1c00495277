//! What the target filesystems can hold: names, paths, link targets,
//! device numbers and xattrs, checked once for every entry of a tree.
//!
//! A name the image cannot hold must be refused while we can still say
//! which input it came from. Passed on, it fails late and badly: a 256-byte
//! name gives a squashfs that `unsquashfs` and the kernel cannot read (and
//! `tar2sqfs` exits 0), `5000:2000000` is silently truncated to another
//! device, an unknown xattr namespace is dropped with a warning, and a
//! 2040-byte path makes `mke2fs -d` abort with a corrupted heap.
//!
//! [`crate::tree::Tree::insert`] checks every entry against
//! [`Target::Either`] (what at least one of the formats can hold), so the
//! tarball importer, the directory importer and layer operations all refuse
//! such entries, naming them. Where squashfs and ext4 differ, the exporters
//! check the whole tree again for their own format ([`check_tree`]:
//! `export::write_tar` for squashfs, `ext4::materialize` and
//! `ext4::debugfs_script` for ext4). The loader calls [`check_entry`] (or the
//! single checks) for layer entries, so a layer fails at load with a position.
//!
//! The limits, and where they come from:
//!
//! | limit | value | source |
//! |---|---|---|
//! | name (path component) | 255 bytes | `NAME_MAX`; ext4 `EXT4_NAME_LEN`; the kernel's squashfs reader |
//! | whole path, as `/a/b` | 4095 bytes | `PATH_MAX` (4096 with the NUL) |
//! | whole path on ext4 | 2039 bytes | e2fsprogs 1.47 `mke2fs -d` (`path_append`) writes one byte past its path buffer when a path is exactly as long as the buffer (255·2^k); at 2040 bytes glibc's heap is corrupted and mke2fs aborts |
//! | depth | 256 components | our limit, far beyond any real rootfs; keeps every recursion in the tools and the kernel's path walk short |
//! | symlink target | 1..=4095 bytes, no NUL | `PATH_MAX`; ext4 with 4 KiB blocks (block size - 1); squashfs rejects a target over `PAGE_SIZE` |
//! | device numbers | major <= 4095, minor <= 1048575 | both formats store the kernel's 32-bit `new_encode_dev` (12-bit major, 20-bit minor): squashfs `rdev` is read with `new_decode_dev`, e2fsprogs writes `i_block[1]` the same way |
//! | device minor on ext4 | 65535 | e2fsprogs `debugfs mknod`, which makes our ext4 device nodes, refuses larger numbers |
//! | xattr name | 1..=255 bytes, no control characters, a known namespace | `XATTR_NAME_MAX`; squashfs stores only `user.`, `trusted.`, `security.` (tar2sqfs drops others with a warning); ext4 also `system.posix_acl_access`/`_default` |
//! | xattr value | 65536 bytes | `XATTR_SIZE_MAX` |
//! | xattrs of one inode on ext4 | one 4 KiB block | the build's `mke2fs` has no `ea_inode`, so all values must share the inode's xattr block |
//! | names of one file on ext4 | 65000 | `EXT4_LINK_MAX` (`i_links_count` is 16 bits) |

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use slotsmith_yaml::escape::shown;

use crate::path::RelPath;
use crate::tree::{Kind, Node, Tree};

/// Longest path component (`NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Longest path, measured as the image sees it (`/etc/passwd`).
pub const MAX_PATH: usize = 4095;
/// Longest path in an ext4 image (see the module documentation).
pub const MAX_PATH_EXT4: usize = 2039;
/// Deepest path, in components.
pub const MAX_DEPTH: usize = 256;
/// Longest symlink target.
pub const MAX_SYMLINK_TARGET: usize = 4095;
/// Largest device major number (12 bits).
pub const MAX_DEV_MAJOR: u32 = (1 << 12) - 1;
/// Largest device minor number (20 bits).
pub const MAX_DEV_MINOR: u32 = (1 << 20) - 1;
/// Largest device minor number in an ext4 image: `debugfs mknod`, which
/// creates the device nodes, refuses majors and minors over 65535.
pub const EXT4_MAX_DEV_MINOR: u32 = 65535;
/// Longest xattr name, namespace included (`XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest xattr value (`XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE: usize = 64 * 1024;
/// The ext4 block that holds all the xattrs of one inode.
pub const EXT4_XATTR_BLOCK: usize = 4096;
/// Most names (hardlinks) one ext4 file can have (`EXT4_LINK_MAX`).
pub const EXT4_MAX_LINKS: usize = 65000;

/// Which filesystem the tree is checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Not decided yet (import, layers): accept what at least one format
    /// can hold. The exporter checks again for its own.
    Either,
    Squashfs,
    Ext4,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Either => "squashfs and ext4",
            Target::Squashfs => "squashfs",
            Target::Ext4 => "ext4",
        }
    }
}

/// Namespaces both formats store.
const COMMON_NAMESPACES: [&str; 3] = ["user.", "trusted.", "security."];
/// Whole names only ext4 stores (debugfs converts them to its ACL format).
const EXT4_ONLY_NAMES: [&str; 2] = ["system.posix_acl_access", "system.posix_acl_default"];

/// A path for a message: escaped, and shortened in the middle when long,
/// so a hostile 4 KiB path neither controls the terminal nor floods it.
pub fn shown_entry(path: &RelPath) -> String {
    shorten(&shown(&path.to_string()))
}

/// `s` (already escaped) cut in the middle when long.
pub(crate) fn shorten(s: &str) -> String {
    const KEEP: usize = 80;
    if s.chars().count() <= 2 * KEEP + 20 {
        return s.to_string();
    }
    let head: String = s.chars().take(KEEP).collect();
    let tail: String = {
        let mut t: Vec<char> = s.chars().rev().take(KEEP).collect();
        t.reverse();
        t.into_iter().collect()
    };
    format!("{head}…{tail} ({} bytes)", s.len())
}

/// Name length, path length and depth of `path`.
pub fn check_path(path: &RelPath, target: Target) -> Result<()> {
    let mut depth = 0usize;
    for c in path.components() {
        depth += 1;
        if c.len() > MAX_NAME {
            bail!(
                "name {} is {} bytes long; {} hold at most {MAX_NAME} bytes per name",
                shorten(&shown(c)),
                c.len(),
                Target::Either.name()
            );
        }
    }
    if depth > MAX_DEPTH {
        bail!("path is {depth} levels deep; at most {MAX_DEPTH} are allowed");
    }
    // As the image sees it: a leading `/` plus the stored form.
    let len = path.as_str().len() + 1;
    if len > MAX_PATH {
        bail!("path is {len} bytes long; at most {MAX_PATH} fit PATH_MAX");
    }
    if target == Target::Ext4 && len > MAX_PATH_EXT4 {
        bail!(
            "path is {len} bytes long; ext4 images hold at most {MAX_PATH_EXT4} \
             (mke2fs -d overflows its path buffer at 2040 bytes)"
        );
    }
    Ok(())
}

/// A symlink target: not empty, no NUL, at most [`MAX_SYMLINK_TARGET`] bytes.
pub fn check_symlink_target(target: &str) -> Result<()> {
    if target.is_empty() {
        bail!("symlink target is empty");
    }
    if target.contains('\0') {
        bail!("symlink target contains a NUL byte");
    }
    if target.len() > MAX_SYMLINK_TARGET {
        bail!(
            "symlink target is {} bytes long; squashfs and ext4 hold at most {MAX_SYMLINK_TARGET}",
            target.len()
        );
    }
    Ok(())
}

/// Device numbers the on-disk formats can encode, and for ext4 what
/// `debugfs mknod` (which makes our ext4 device nodes) accepts.
pub fn check_device(major: u32, minor: u32, target: Target) -> Result<()> {
    if major > MAX_DEV_MAJOR || minor > MAX_DEV_MINOR {
        bail!(
            "device number {major}:{minor} does not fit squashfs or ext4 \
             (major at most {MAX_DEV_MAJOR}, minor at most {MAX_DEV_MINOR})"
        );
    }
    if target == Target::Ext4 && minor > EXT4_MAX_DEV_MINOR {
        bail!(
            "device number {major}:{minor}: ext4 images take minors up to \
             {EXT4_MAX_DEV_MINOR} (debugfs mknod refuses larger ones)"
        );
    }
    Ok(())
}

/// One xattr's name and value.
pub fn check_xattr(name: &str, value: &[u8], target: Target) -> Result<()> {
    if name.is_empty() {
        bail!("xattr name is empty");
    }
    if name.chars().any(|c| c.is_control()) {
        bail!(
            "xattr name {} contains a control character",
            shorten(&shown(name))
        );
    }
    if name.len() > MAX_XATTR_NAME {
        bail!(
            "xattr name {} is {} bytes long; at most {MAX_XATTR_NAME} are allowed",
            shorten(&shown(name)),
            name.len()
        );
    }
    let common = COMMON_NAMESPACES
        .iter()
        .any(|ns| name.len() > ns.len() && name.starts_with(ns));
    let ext4_only = EXT4_ONLY_NAMES.contains(&name);
    let ok = match target {
        Target::Either => common || ext4_only,
        Target::Squashfs => common,
        Target::Ext4 => common || ext4_only,
    };
    if !ok {
        let allowed = match target {
            Target::Squashfs => "user.*, trusted.* or security.*".to_string(),
            _ => format!(
                "user.*, trusted.*, security.* or (ext4 only) {}",
                EXT4_ONLY_NAMES.join(", ")
            ),
        };
        bail!(
            "xattr name {}: {} cannot store it (names must be {allowed})",
            shown(name),
            target.name()
        );
    }
    if target == Target::Squashfs && name.contains('=') {
        // The squashfs route is a PAX stream, whose record keys end at `=`.
        bail!(
            "xattr name {} contains `=`, which the PAX stream tar2sqfs reads cannot carry",
            shown(name)
        );
    }
    if value.len() > MAX_XATTR_VALUE {
        bail!(
            "xattr {} has a {}-byte value; at most {MAX_XATTR_VALUE} bytes are allowed",
            shown(name),
            value.len()
        );
    }
    Ok(())
}

/// Every xattr of one inode, and for ext4 whether they fit its one block.
pub fn check_xattrs(xattrs: &BTreeMap<String, Vec<u8>>, target: Target) -> Result<()> {
    for (name, value) in xattrs {
        check_xattr(name, value, target)?;
    }
    if target == Target::Ext4 {
        let need = ext4_xattr_bytes(xattrs);
        if need > EXT4_XATTR_BLOCK {
            bail!(
                "xattrs need {need} bytes; ext4 holds the xattrs of one inode in one \
                 {EXT4_XATTR_BLOCK}-byte block (no ea_inode feature)"
            );
        }
    }
    Ok(())
}

/// Bytes the xattrs take in an ext4 xattr block: a 32-byte header, per
/// entry 16 bytes plus the name without its namespace prefix, rounded up to
/// 4, plus the value rounded up to 4, and a 4-byte end marker.
fn ext4_xattr_bytes(xattrs: &BTreeMap<String, Vec<u8>>) -> usize {
    let round4 = |n: usize| n.saturating_add(3) & !3;
    let mut total: usize = 32 + 4;
    for (name, value) in xattrs {
        let suffix = COMMON_NAMESPACES
            .iter()
            .find_map(|ns| name.strip_prefix(ns))
            .map_or(0, str::len);
        total = total
            .saturating_add(16)
            .saturating_add(round4(suffix))
            .saturating_add(round4(value.len()));
    }
    total
}

/// Everything about one entry: its path, its kind's payload (symlink
/// target, device numbers) and its xattrs. The error names the entry.
pub fn check_entry(path: &RelPath, node: &Node, target: Target) -> Result<()> {
    let res = check_path(path, target).and_then(|()| {
        match &node.kind {
            Kind::Symlink { target } => check_symlink_target(target)?,
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                check_device(*major, *minor, target)?
            }
            _ => {}
        }
        check_xattrs(&node.meta.xattrs, target)
    });
    res.map_err(|e| e.context(shown_entry(path)))
}

/// Every entry of `tree` for `target`, and the limits only the whole tree
/// shows (the number of names of one ext4 file).
pub fn check_tree(tree: &Tree, target: Target) -> Result<()> {
    let mut links: BTreeMap<&RelPath, usize> = BTreeMap::new();
    for (path, node) in tree.iter() {
        check_entry(path, node, target)?;
        match &node.kind {
            Kind::File { .. } => *links.entry(path).or_default() += 1,
            Kind::Hardlink { target } => *links.entry(target).or_default() += 1,
            _ => {}
        }
    }
    if target == Target::Ext4 {
        if let Some((file, n)) = links.iter().find(|(_, n)| **n > EXT4_MAX_LINKS) {
            bail!(
                "{}: the file has {n} names (hardlinks); ext4 counts at most {EXT4_MAX_LINKS}",
                shown_entry(file)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Meta;
    use std::ops::Add;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn path_limits_at_the_boundary() {
        let name = "n".repeat(MAX_NAME);
        check_path(&p(&name), Target::Either).unwrap();
        let err = check_path(&p(&format!("a/{name}x")), Target::Either).unwrap_err();
        assert!(err.to_string().contains("256 bytes long"), "{err}");

        let deep = vec!["d"; MAX_DEPTH].join("/");
        check_path(&p(&deep), Target::Either).unwrap();
        let err = check_path(&p(&format!("{deep}/d")), Target::Either).unwrap_err();
        assert!(err.to_string().contains("257 levels deep"), "{err}");

        // 16 components of 255 bytes: 4096 bytes with the leading slash.
        let long = vec![name.as_str(); 16].join("/");
        let err = check_path(&p(&long), Target::Either).unwrap_err();
        assert!(err.to_string().contains("4096 bytes long"), "{err}");
        check_path(&p(&long[..4094]), Target::Either).unwrap();

        // `/` + 20 x (99 bytes + `/`) + 38 bytes = 2039 bytes.
        let ext4 = format!("{}{}", "e".repeat(99).add("/").repeat(20), "e".repeat(38));
        check_path(&p(&ext4), Target::Ext4).unwrap();
        let err = check_path(&p(&format!("{ext4}x")), Target::Ext4).unwrap_err();
        assert!(err.to_string().contains("2040 bytes long"), "{err}");
        assert!(err.to_string().contains("mke2fs"), "{err}");
        check_path(&p(&format!("{ext4}x")), Target::Squashfs).unwrap();
    }

    #[test]
    fn links_devices_and_xattrs() {
        assert!(check_symlink_target("").is_err());
        assert!(check_symlink_target("a\0b").is_err());
        check_symlink_target(&"t".repeat(4095)).unwrap();
        assert!(check_symlink_target(&"t".repeat(4096)).is_err());

        check_device(4095, 1_048_575, Target::Squashfs).unwrap();
        let err = check_device(5000, 2_000_000, Target::Either)
            .unwrap_err()
            .to_string();
        assert!(err.contains("5000:2000000"), "{err}");
        assert!(check_device(4096, 0, Target::Either).is_err());
        assert!(check_device(0, 1 << 20, Target::Either).is_err());
        check_device(4095, 65535, Target::Ext4).unwrap();
        assert!(check_device(1, 65536, Target::Ext4).is_err());
        check_device(1, 65536, Target::Either).unwrap();

        for t in [Target::Either, Target::Squashfs, Target::Ext4] {
            check_xattr("security.capability", &[1; 20], t).unwrap();
            check_xattr("user.x", &vec![0; MAX_XATTR_VALUE], t).unwrap();
            assert!(check_xattr("user.x", &vec![0; MAX_XATTR_VALUE + 1], t).is_err());
            assert!(check_xattr("", b"", t).is_err());
            assert!(
                check_xattr("user.", b"", t).is_err(),
                "empty name in namespace"
            );
            assert!(check_xattr("foo.bar", b"", t).is_err());
            assert!(check_xattr(&format!("user.{}", "x".repeat(251)), b"", t).is_err());
            let err = check_xattr("user.a\x1b[2Jb", b"", t)
                .unwrap_err()
                .to_string();
            assert!(err.contains("control character"), "{err}");
            assert!(!err.contains('\x1b'), "escaped: {err:?}");
            let err = check_xattr("user.\u{9b}x", b"", t).unwrap_err().to_string();
            assert!(err.contains("control character"), "C1 too: {err}");
        }
        check_xattr("system.posix_acl_access", b"", Target::Either).unwrap();
        check_xattr("system.posix_acl_access", b"", Target::Ext4).unwrap();
        assert!(check_xattr("system.posix_acl_access", b"", Target::Squashfs).is_err());
        assert!(check_xattr("system.data", b"", Target::Ext4).is_err());
        assert!(check_xattr("user.a=b", b"", Target::Squashfs).is_err());
        check_xattr("user.a=b", b"", Target::Ext4).unwrap();

        let mut xattrs = BTreeMap::new();
        xattrs.insert("user.big".to_string(), vec![0; 4000]);
        check_xattrs(&xattrs, Target::Ext4).unwrap();
        xattrs.insert("user.more".to_string(), vec![0; 100]);
        let err = check_xattrs(&xattrs, Target::Ext4).unwrap_err().to_string();
        assert!(err.contains("one 4096-byte block"), "{err}");
        check_xattrs(&xattrs, Target::Squashfs).unwrap();
    }

    #[test]
    fn entries_are_named_escaped() {
        let node = Node::new(
            Kind::CharDev {
                major: 5000,
                minor: 2_000_000,
            },
            Meta::new(0o600, 0, 0, 0),
        );
        let err = check_entry(&p("dev/\u{202e}x"), &node, Target::Either).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with("/dev/\\u{202e}x: device number 5000:2000000"),
            "{msg}"
        );
    }
}
