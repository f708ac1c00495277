//! Applying layers to the tree, and the one way we open input files.
//!
//! Layers are resolved by the caller (from layer YAML) into a flat list of
//! [`Op`]s, so this module only has to apply them with the same invariants
//! as any import: [`Tree::insert`] refuses paths beneath symlinks, dangling
//! hardlinks and entries no image can hold ([`crate::limits`]), and removals of paths that do not exist are errors —
//! a stale removal usually means a layer no longer matches its base, and
//! silently ignoring it would hide that.
//!
//! [`read_source_file`] is used everywhere file contents are read (export,
//! staging): it refuses to follow a symlink in the last component and
//! refuses anything that is not a regular file, so a content path that was
//! swapped for a symlink or a FIFO after import cannot make us read (or
//! hang on) something outside the inputs.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::OFlags;

use crate::limits::shown_entry;
use crate::path::RelPath;
use crate::tree::{Node, Tree};

/// One layer operation.
#[derive(Clone, Debug)]
pub enum Op {
    /// Create or replace `path`. If both the old and new node are
    /// directories only the metadata changes and the contents stay.
    Put { path: RelPath, node: Node },
    /// Delete `path` and everything below it; the path must exist.
    Remove { path: RelPath },
}

/// Applies `ops` in order. On error the tree may hold the ops before the
/// failing one; callers abort the build anyway.
pub fn apply(tree: &mut Tree, ops: &[Op]) -> Result<()> {
    for op in ops {
        match op {
            Op::Put { path, node } => tree
                .insert(path.clone(), node.clone())
                .with_context(|| format!("layer: put {}", shown_entry(path)))?,
            Op::Remove { path } => {
                if path.is_root() {
                    bail!("layer: remove /: the root cannot be removed");
                }
                if !tree.remove(path) {
                    bail!(
                        "layer: remove {}: no such path in the rootfs",
                        shown_entry(path)
                    );
                }
            }
        }
    }
    Ok(())
}

/// Opens a content file for reading without following a symlink in its
/// last component (`O_NOFOLLOW`) and without blocking on a FIFO
/// (`O_NONBLOCK`, which does not affect reads of regular files), then
/// checks that it really is a regular file.
pub fn read_source_file(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC).bits() as i32)
        .open(path)
        .with_context(|| format!("opening {} (symlinks are not followed)", path.display()))?;
    let md = file
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?;
    if !md.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    Ok(file)
}

/// Streams exactly `size` bytes of `content` into `w` through the caller's
/// fixed buffer. The recorded size is checked before and after: an input
/// that changed since import is an error, because a short or long body
/// would corrupt a tar stream or an image.
pub(crate) fn stream_exact(
    content: &crate::tree::Content,
    size: u64,
    w: &mut impl Write,
    buf: &mut [u8],
) -> Result<()> {
    let mut f = content.open(size)?;
    let changed = || format!("{} changed during the build", content.location());
    let mut remaining = size;
    while remaining > 0 {
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = f
            .read(&mut buf[..want])
            .with_context(|| format!("reading {}", content.location()))?;
        if n == 0 {
            bail!("{}: it shrank while being read", changed());
        }
        w.write_all(&buf[..n]).context("writing the output")?;
        remaining -= n as u64;
    }
    // A whole file must not have grown; a slice ends where it ends.
    if !matches!(content, crate::tree::Content::Slice { .. }) {
        let mut inner = f.into_inner();
        let mut probe = [0u8; 1];
        if inner
            .read(&mut probe)
            .with_context(|| format!("reading {}", content.location()))?
            != 0
        {
            bail!("{}: it grew while being read", changed());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Content, Kind, Meta};

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn put_and_remove() {
        let mut t = Tree::new(Meta::new(0o755, 0, 0, 0));
        let file = Node::new(
            Kind::File {
                content: Content::Source("/dev/null".into()),
                size: 0,
            },
            Meta::new(0o644, 0, 0, 1),
        );
        let ops = vec![
            Op::Put {
                path: p("etc/a"),
                node: file.clone(),
            },
            Op::Put {
                path: p("etc"),
                node: Node::new(Kind::Dir, Meta::new(0o700, 0, 0, 1)),
            },
            Op::Remove { path: p("etc/a") },
        ];
        apply(&mut t, &ops).unwrap();
        assert_eq!(t.get(&p("etc")).unwrap().meta.mode, 0o700);
        assert!(t.get(&p("etc/a")).is_none());
        let err = apply(&mut t, &[Op::Remove { path: p("etc/a") }]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "layer: remove /etc/a: no such path in the rootfs"
        );
        let link = Node::new(
            Kind::Symlink { target: "/".into() },
            Meta::new(0o777, 0, 0, 1),
        );
        apply(
            &mut t,
            &[Op::Put {
                path: p("x"),
                node: link,
            }],
        )
        .unwrap();
        let err = apply(
            &mut t,
            &[Op::Put {
                path: p("x/y"),
                node: file,
            }],
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("beneath symlink /x -> /"),
            "{err:#}"
        );
    }

    #[test]
    fn source_files_are_never_followed() {
        let tmp = std::env::temp_dir().join(format!("slotsmith-overlay-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let target = tmp.join("real");
        std::fs::write(&target, "x").unwrap();
        let link = tmp.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read_source_file(&target).is_ok());
        assert!(read_source_file(&link).is_err());
        assert!(
            read_source_file(&tmp).is_err(),
            "a directory is not a content file"
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
