//! Staging tree + `debugfs` fix-up script for an ext4 rootfs.
//!
//! `mke2fs -d staging` copies a directory into a fresh filesystem, but it
//! takes ownership and modes from the staging files — which belong to the
//! unprivileged builder — and an unprivileged builder cannot create device
//! nodes there at all. So the tree is materialized with the builder's own
//! ownership ([`materialize`]), device nodes as empty placeholder files, and
//! afterwards `debugfs -w -f script fs.img` rewrites every inode from the
//! tree ([`debugfs_script`]): uid, gid, full mode, timestamps, real device
//! nodes and xattrs.
//!
//! Materializing writes into a directory, so it is the one place where a
//! symlink could redirect a write. Every entry is created with exclusive
//! semantics (mkdir, `O_CREAT|O_EXCL|O_NOFOLLOW`, symlink, link, mknod all
//! fail on an existing name and never follow a final symlink), the staging
//! directory must start empty, entries are created parents-first, and the
//! tree guarantees no path lies beneath a symlink — so every parent we
//! write into is a directory we created ourselves.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::{FileType, Mode, OFlags, CWD};

use crate::limits::{self, Target};
use crate::overlay::stream_exact;
use crate::path::RelPath;
use crate::tree::{Content, Kind, Tree};

/// Creates `tree` below `staging`, which must be an existing, empty
/// directory (and not a symlink).
///
/// Regular files are hard-linked from the content store when possible
/// (each store file at most once, so `mke2fs` cannot mistake two tree files
/// for one inode) and copied otherwise; hardlink groups become real
/// hardlinks to the group's first path; fifos are real fifos; device nodes
/// are empty placeholder files that [`debugfs_script`] replaces. Host
/// modes and owners are left alone (the builder's), debugfs sets the real
/// ones.
///
/// The tree must first pass the ext4 limits ([`limits::check_tree`]), which
/// also keep every staging path short enough for `mke2fs -d`.
pub fn materialize(tree: &Tree, staging: &Path) -> Result<()> {
    limits::check_tree(tree, Target::Ext4).context("the rootfs cannot be stored in ext4")?;
    let shown = staging.display();
    let md = fs::symlink_metadata(staging).with_context(|| format!("staging directory {shown}"))?;
    if !md.is_dir() {
        bail!("staging directory {shown}: not a directory");
    }
    if fs::read_dir(staging)
        .with_context(|| format!("staging directory {shown}"))?
        .next()
        .is_some()
    {
        bail!("staging directory {shown}: not empty");
    }

    let leaders = tree.hardlink_leaders();
    let mut linked_store: HashSet<PathBuf> = HashSet::new();
    let mut buf = vec![0u8; 128 * 1024];
    for (path, node) in tree.iter() {
        if path.is_root() {
            continue;
        }
        let dest = staging.join(path.as_str());
        let ctx = || format!("staging {path} in {shown}");
        // Hardlink groups: the first path gets the body, the rest link to it.
        let file = match &node.kind {
            Kind::File { content, size } => Some((path, content, *size)),
            Kind::Hardlink { target } => match tree.get(target).map(|n| &n.kind) {
                Some(Kind::File { content, size }) => Some((target, content, *size)),
                _ => bail!("staging {path}: hardlink target {target} is not a regular file"),
            },
            _ => None,
        };
        if let Some((file_path, content, size)) = file {
            let leader = leaders.get(file_path).unwrap_or(file_path);
            if leader != path {
                // link(2) without AT_SYMLINK_FOLLOW: never follows.
                fs::hard_link(staging.join(leader.as_str()), &dest).with_context(ctx)?;
            } else {
                write_file(content, size, &dest, &mut linked_store, &mut buf).with_context(ctx)?;
            }
            continue;
        }
        match &node.kind {
            Kind::Dir => fs::DirBuilder::new()
                .mode(0o755)
                .create(&dest)
                .with_context(ctx)?,
            Kind::Symlink { target } => {
                std::os::unix::fs::symlink(target, &dest).with_context(ctx)?
            }
            Kind::CharDev { .. } | Kind::BlockDev { .. } => {
                create_exclusive(&dest).with_context(ctx)?;
            }
            Kind::Fifo => rustix::fs::mknodat(CWD, &dest, FileType::Fifo, Mode::from(0o644), 0)
                .map_err(io::Error::from)
                .with_context(ctx)?,
            Kind::File { .. } | Kind::Hardlink { .. } => {}
        }
    }
    Ok(())
}

fn create_exclusive(dest: &Path) -> io::Result<fs::File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
        .open(dest)
}

fn write_file(
    content: &Content,
    size: u64,
    dest: &Path,
    linked_store: &mut HashSet<PathBuf>,
    buf: &mut [u8],
) -> Result<()> {
    if let Content::Store(p) = content {
        // Our own store files are immutable once written, so sharing the
        // inode is safe; inputs (Content::Source) are always copied because
        // they are not ours to alias and may be on another filesystem.
        if fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.len() == size)
            && linked_store.insert(p.clone())
            && fs::hard_link(p, dest).is_ok()
        {
            return Ok(());
        }
    }
    let mut out = create_exclusive(dest)?;
    stream_exact(content, size, &mut out, buf)
}

/// Output of [`debugfs_script`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugfsScript {
    /// The script text, one command per line, for `debugfs -w -f`.
    pub script: String,
    /// Files the script reads xattr values from (`ea_set -f`): the caller
    /// writes each value to its path under `xattr_dir` before running it.
    pub xattr_files: Vec<(PathBuf, Vec<u8>)>,
}

/// The `debugfs -w -f` script that makes an image built by
/// `mke2fs -d staging` match `tree`, plus the xattr value files it refers
/// to (to be written by the caller under `xattr_dir` before debugfs runs;
/// `ea_set -f` reads values from files, which keeps binary values out of
/// the script).
///
/// For every inode (once per hardlink group): `sif` uid, gid, full mode
/// (type | permissions), and atime/mtime/ctime/crtime from the tree's mtime
/// (also zeroing the nanosecond fields mke2fs copied from the host). Device
/// placeholders are replaced with `rm` + `mknod` (debugfs's mknod takes a
/// name in the current directory, hence the `cd`). Paths are double-quoted
/// for debugfs's parser, where `""` stands for a literal quote; anything it
/// cannot express (control characters, which `RelPath` already excludes)
/// is rejected.
pub fn debugfs_script(tree: &Tree, xattr_dir: &Path) -> Result<DebugfsScript> {
    limits::check_tree(tree, Target::Ext4).context("the rootfs cannot be stored in ext4")?;
    let mut s = String::new();
    let mut files = Vec::new();
    for (path, node) in tree.iter() {
        let ctx = || format!("debugfs script for {path}");
        let p = quote(&path.to_string()).with_context(ctx)?;
        let ty = match &node.kind {
            Kind::Hardlink { .. } => continue, // shares the file's inode
            Kind::Dir => 0o040000,
            Kind::File { .. } => 0o100000,
            Kind::Symlink { .. } => 0o120000,
            Kind::CharDev { .. } => 0o020000,
            Kind::BlockDev { .. } => 0o060000,
            Kind::Fifo => 0o010000,
        };
        if let Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } = &node.kind {
            let c = if ty == 0o020000 { 'c' } else { 'b' };
            let parent = path.parent().unwrap_or_else(RelPath::root);
            let name = path
                .file_name()
                .ok_or_else(|| anyhow!("a device node cannot be the root"))?;
            let _ = writeln!(s, "rm {p}");
            let _ = writeln!(s, "cd {}", quote(&parent.to_string()).with_context(ctx)?);
            let _ = writeln!(
                s,
                "mknod {} {c} {major} {minor}",
                quote(name).with_context(ctx)?
            );
            let _ = writeln!(s, "cd \"/\"");
        }
        let m = &node.meta;
        let _ = writeln!(s, "sif {p} uid {}", m.uid);
        let _ = writeln!(s, "sif {p} gid {}", m.gid);
        let _ = writeln!(s, "sif {p} mode 0{:o}", ty | (m.mode & 0o7777));
        for field in ["atime", "mtime", "ctime", "crtime"] {
            let _ = writeln!(s, "sif {p} {field} @{}", m.mtime);
        }
        for (name, value) in &m.xattrs {
            // ea_set parses options with getopt, so a name starting with
            // `-` would be taken as an option; paths always start with `/`.
            if name.is_empty() || name.starts_with('-') || name.chars().any(|c| c.is_control()) {
                bail!("debugfs script for {path}: xattr name {name:?} cannot be expressed");
            }
            let file = xattr_dir.join(files.len().to_string());
            let f = file
                .to_str()
                .ok_or_else(|| anyhow!("xattr directory {} is not UTF-8", xattr_dir.display()))?;
            let _ = writeln!(
                s,
                "ea_set -f {} {p} {}",
                quote(f).with_context(ctx)?,
                quote(name).with_context(ctx)?
            );
            files.push((file, value.clone()));
        }
    }
    Ok(DebugfsScript {
        script: s,
        xattr_files: files,
    })
}

/// Quotes one argument for debugfs's (libss) parser.
fn quote(arg: &str) -> Result<String> {
    if arg.chars().any(|c| c.is_control()) {
        bail!("{arg:?} contains a control character, which debugfs cannot express");
    }
    Ok(format!("\"{}\"", arg.replace('"', "\"\"")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Meta, Node};

    #[test]
    fn script_quotes_and_covers_every_inode() {
        let mut t = Tree::new(Meta::new(0o755, 0, 0, 5));
        let mut meta = Meta::new(0o4755, 0, 0, 7);
        meta.xattrs.insert("security.capability".into(), vec![1, 2]);
        let file = Kind::File {
            content: Content::Source("/nonexistent".into()),
            size: 0,
        };
        t.insert(RelPath::parse("a b/q\"x").unwrap(), Node::new(file, meta))
            .unwrap();
        t.insert(
            RelPath::parse("dev/console").unwrap(),
            Node::new(
                Kind::CharDev { major: 5, minor: 1 },
                Meta::new(0o600, 0, 5, 7),
            ),
        )
        .unwrap();
        let DebugfsScript {
            script: s,
            xattr_files: files,
        } = debugfs_script(&t, Path::new("/x")).unwrap();
        assert!(s.contains("sif \"/a b/q\"\"x\" mode 0104755\n"), "{s}");
        assert!(s.contains("sif \"/\" mtime @5\n"), "{s}");
        assert!(
            s.contains("cd \"/dev\"\nmknod \"console\" c 5 1\ncd \"/\"\n"),
            "{s}"
        );
        assert!(
            s.contains("ea_set -f \"/x/0\" \"/a b/q\"\"x\" \"security.capability\""),
            "{s}"
        );
        assert_eq!(files, vec![(PathBuf::from("/x/0"), vec![1, 2])]);
    }
}
