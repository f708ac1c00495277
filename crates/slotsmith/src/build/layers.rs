//! The layers stage: applies each layer's removals and entries to the
//! tree in priority order, and drops what squashfs cannot store.

use anyhow::Context;

use crate::plan::Plan;
use crate::progress::Progress;
use crate::spec::LayerEntryKind;
use slotsmith_rootfs as rootfs;
use slotsmith_rootfs::path::RelPath;
use slotsmith_rootfs::tree::{Kind, Meta, Node, Tree};

use super::resolve;
use super::BuildOptions;

/// Applies every layer, in priority order, to the tree.
pub(super) fn stage(
    plan: &Plan,
    opts: &BuildOptions,
    tree: &mut Tree,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    if plan.layers.is_empty() {
        return Ok(());
    }
    progress.stage(
        "layers",
        &format!("applying {} layer(s)", plan.layers.len()),
    );
    let sde = plan.source_date_epoch as i64;
    for layer in &plan.layers {
        let mut ops = Vec::new();
        // A removal of a path that neither the base nor a lower layer has
        // is the layer's mistake: an input error at its `remove[i]`, every
        // one of them at once.
        let mut missing = Vec::new();
        for p in &layer.remove {
            let path = RelPath::parse(p)?;
            if tree.get(&path).is_none() {
                let at = layer.remove_at.get(p).cloned().unwrap_or_default();
                missing.push(at.diagnostic(format!(
                    "cannot remove {}: no such path in the base or a lower-priority layer",
                    slotsmith_yaml::escape::shown(p)
                )));
            }
            ops.push(rootfs::overlay::Op::Remove { path });
        }
        if !missing.is_empty() {
            return Err(anyhow::Error::new(crate::spec::InputError(
                crate::diag::Diagnostics::from(missing),
            )));
        }
        for e in &layer.entries {
            let kind = match &e.kind {
                LayerEntryKind::File { source, size, .. } => Kind::File {
                    content: rootfs::tree::Content::Source(resolve(&opts.project_root, source)),
                    size: *size,
                },
                LayerEntryKind::Directory => Kind::Dir,
                LayerEntryKind::Symlink { target } => Kind::Symlink {
                    target: target.clone(),
                },
                LayerEntryKind::Char { major, minor } => Kind::CharDev {
                    major: *major,
                    minor: *minor,
                },
                LayerEntryKind::Block { major, minor } => Kind::BlockDev {
                    major: *major,
                    minor: *minor,
                },
                LayerEntryKind::Fifo => Kind::Fifo,
            };
            let xattrs = e.xattrs.clone();
            // Layer files take the epoch as mtime: git checkouts give
            // arbitrary mtimes, which must not reach the image.
            let meta = Meta {
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                mtime: sde,
                xattrs,
            };
            let path = RelPath::parse(&e.path)?;
            // A layer directory that already exists keeps the base's
            // attributes unless the layer declares its own.
            if kind_is_dir(&kind) {
                if let Some(existing) = tree.get(&path) {
                    if matches!(existing.kind, Kind::Dir) && !e_declares_attrs(e) {
                        continue;
                    }
                }
            }
            ops.push(rootfs::overlay::Op::Put {
                path,
                node: Node { kind, meta },
            });
        }
        rootfs::overlay::apply(tree, &ops)
            .with_context(|| format!("applying layer {}", layer.name))?;
        progress.note(&format!(
            "{}: {} entries, {} removals",
            layer.name,
            layer.entries.len(),
            layer.remove.len()
        ));
    }
    Ok(())
}

fn kind_is_dir(k: &Kind) -> bool {
    matches!(k, Kind::Dir)
}

fn e_declares_attrs(e: &crate::spec::LayerEntry) -> bool {
    e.mode != 0o755 || e.uid != 0 || e.gid != 0 || !e.xattrs.is_empty()
}

/// squashfs has no place for POSIX ACLs (`system.posix_acl_*` xattrs; a
/// Debian base has them on /var/log/journal). They are dropped, and the
/// paths are named, rather than failing the build.
pub(super) fn drop_acls(tree: &mut Tree, progress: &mut Progress) {
    let with_acl: Vec<RelPath> = tree
        .iter()
        .filter(|(_, n)| {
            n.meta
                .xattrs
                .keys()
                .any(|k| k.starts_with("system.posix_acl_"))
        })
        .map(|(p, _)| p.clone())
        .collect();
    for p in &with_acl {
        if let Some(n) = tree.get_mut(p) {
            n.meta
                .xattrs
                .retain(|k, _| !k.starts_with("system.posix_acl_"));
        }
    }
    if !with_acl.is_empty() {
        let names: Vec<String> = with_acl.iter().map(|p| p.to_string()).collect();
        progress.note(&format!(
            "squashfs cannot store POSIX ACLs; dropped them on {}",
            names.join(", ")
        ));
    }
}
