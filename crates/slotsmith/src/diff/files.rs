//! Files added, removed and changed in the rootfs between two builds:
//! every entry of both images, read back with the audit's own squashfs and
//! ext4 readers (`slotsmith_policy::rootfs`, which check the image before
//! their parsers trust it and bound entries, depth and path bytes), with
//! kind, mode, owner, size, the sha256 of each regular file (streamed, so a
//! file of any size costs one block of memory) and each symlink's target.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use slotsmith_policy::{EntryKind, RootfsRead};
use slotsmith_yaml::escape::shown_path;

use super::record::Record;

/// One entry as the diff shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    /// `file`, `dir`, `symlink`, `char`, `block`, `fifo` or `socket`.
    pub kind: &'static str,
    /// Permission bits, octal (`0644`).
    pub mode: String,
    /// `uid:gid`.
    pub owner: String,
    /// Size of a regular file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// sha256 of a regular file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A symlink's target as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Every entry of an image by path.
pub type Listing = BTreeMap<String, FileInfo>;

/// An entry present on one side only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OneSide {
    /// Absolute path inside the image.
    pub path: String,
    /// The entry.
    #[serde(flatten)]
    pub info: FileInfo,
}

/// An entry present in both builds that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    /// Absolute path inside the image.
    pub path: String,
    /// What differs: `kind`, `mode`, `owner`, `content`, `target`.
    pub what: Vec<&'static str>,
    /// The old entry.
    pub old: FileInfo,
    /// The new entry.
    pub new: FileInfo,
}

/// The files section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilesDiff {
    /// Entries only the new image has.
    pub added: Vec<OneSide>,
    /// Entries only the old image has.
    pub removed: Vec<OneSide>,
    /// Entries in both that differ.
    pub changed: Vec<Changed>,
}

impl FilesDiff {
    /// Whether anything differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Opens the rootfs image of the build in `dir` (record `r`) with the
/// audit's reader for its filesystem. The readers get the handle
/// [`super::record::open_artifact`] checked (a regular file reached through
/// no symlink, of the recorded size and sha256), never the path, so nothing
/// can be swapped in between the check and the read.
pub fn open_image(dir: &Path, r: &Record) -> anyhow::Result<Box<dyn RootfsRead>> {
    let name = r.rootfs_file()?;
    let path = dir.join(name);
    let file = super::record::open_artifact(dir, r, name)
        .with_context(|| format!("opening the rootfs image {}", shown_path(&path)))?;
    Ok(match r.rootfs.filesystem.as_str() {
        "ext4" => Box::new(slotsmith_policy::Ext4Rootfs::from_file(file, &path)?),
        _ => Box::new(slotsmith_policy::SquashfsRootfs::from_file(file, &path)?),
    })
}

/// Lists every entry of `fs`, hashing each regular file.
pub fn list(fs: &dyn RootfsRead) -> anyhow::Result<Listing> {
    let mut out = Listing::new();
    for (path, e) in fs.entries() {
        let (kind, target) = match &e.kind {
            EntryKind::File => ("file", None),
            EntryKind::Dir => ("dir", None),
            EntryKind::Symlink { target } => ("symlink", Some(target.clone())),
            EntryKind::Char => ("char", None),
            EntryKind::Block => ("block", None),
            EntryKind::Fifo => ("fifo", None),
            EntryKind::Socket => ("socket", None),
        };
        let (size, sha256) = if e.kind == EntryKind::File {
            match fs.sha256(&path)? {
                Some((sum, n)) => (Some(n), Some(hex::encode(sum))),
                None => (Some(e.size), None),
            }
        } else {
            (None, None)
        };
        out.insert(
            path,
            FileInfo {
                kind,
                mode: format!("{:04o}", e.mode & 0o7777),
                owner: format!("{}:{}", e.uid, e.gid),
                size,
                sha256,
                target,
            },
        );
    }
    Ok(out)
}

/// What differs between two entries at the same path.
fn what(old: &FileInfo, new: &FileInfo) -> Vec<&'static str> {
    let mut w = Vec::new();
    if old.kind != new.kind {
        w.push("kind");
    }
    if old.mode != new.mode {
        w.push("mode");
    }
    if old.owner != new.owner {
        w.push("owner");
    }
    if old.kind == new.kind && (old.sha256 != new.sha256 || old.size != new.size) {
        w.push("content");
    }
    if old.kind == new.kind && old.target != new.target {
        w.push("target");
    }
    w
}

/// The difference between two listings, sorted by path.
pub fn diff(old: &Listing, new: &Listing) -> FilesDiff {
    let mut d = FilesDiff::default();
    for (p, o) in old {
        match new.get(p) {
            None => d.removed.push(OneSide {
                path: p.clone(),
                info: o.clone(),
            }),
            Some(n) => {
                let w = what(o, n);
                if !w.is_empty() {
                    d.changed.push(Changed {
                        path: p.clone(),
                        what: w,
                        old: o.clone(),
                        new: n.clone(),
                    });
                }
            }
        }
    }
    for (p, n) in new {
        if !old.contains_key(p) {
            d.added.push(OneSide {
                path: p.clone(),
                info: n.clone(),
            });
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use slotsmith_policy::MemRootfs;

    #[test]
    fn mode_owner_content_and_link_changes_are_named() {
        let mut a = MemRootfs::new();
        a.file("/etc/motd", 0o644, "hi\n")
            .file("/usr/bin/tool", 0o755, "x")
            .file_owned("/var/db", 0o600, 107, 107, "d")
            .symlink("/bin/sh", "dash")
            .file("/gone", 0o644, "");
        let mut b = MemRootfs::new();
        b.file("/etc/motd", 0o644, "hello\n")
            .file("/usr/bin/tool", 0o4755, "x")
            .file_owned("/var/db", 0o600, 0, 0, "d")
            .symlink("/bin/sh", "bash")
            .file("/new", 0o640, "n");
        let (la, lb) = (list(&a).unwrap(), list(&b).unwrap());
        assert_eq!(
            la["/etc/motd"].sha256.as_deref(),
            Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"hi\n")).as_str())
        );
        let d = diff(&la, &lb);
        assert_eq!(d.added.len(), 1);
        assert_eq!(d.added[0].path, "/new");
        assert_eq!(d.added[0].info.mode, "0640");
        assert_eq!(d.removed.len(), 1);
        assert_eq!(d.removed[0].path, "/gone");
        let changed: Vec<(&str, &[&str])> = d
            .changed
            .iter()
            .map(|c| (c.path.as_str(), c.what.as_slice()))
            .collect();
        assert_eq!(
            changed,
            [
                ("/bin/sh", &["target"][..]),
                ("/etc/motd", &["content"][..]),
                ("/usr/bin/tool", &["mode"][..]),
                ("/var/db", &["owner"][..]),
            ]
        );
        assert_eq!(d.changed[2].new.mode, "4755");
        assert!(diff(&la, &la).is_empty());
    }
}
