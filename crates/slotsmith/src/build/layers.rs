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

#[cfg(test)]
mod tests {
    use super::super::testkit::{self, contents, node, Fixture, Setup};
    use super::*;

    fn base(fx: &mut Fixture) -> Tree {
        super::super::base::stage(&fx.plan, &fx.opts, &fx.store, &mut fx.progress).unwrap()
    }

    #[test]
    fn a_layer_overrides_adds_and_removes_base_entries() {
        let passwd = b"root:x:0:0:root:/root:/bin/false\n";
        let mut fx = Fixture::new(Setup::default().layer(
            "files:\n  /usr/local/bin/tool:\n    mode: \"0750\"\n    group: 50\n\
             remove:\n  - /etc/shadow\n",
            &[
                ("/etc/passwd", passwd),
                ("/usr/local/bin/tool", b"#!/bin/sh\n"),
                ("/tmp/seed", b"x\n"),
            ],
        ));
        let mut tree = base(&mut fx);
        stage(&fx.plan, &fx.opts, &mut tree, &mut fx.progress).unwrap();
        // The layer's file replaces the base's, read from the layer in
        // place, dated at the epoch whatever the checkout's mtime.
        assert_eq!(contents(&tree, "etc/passwd"), passwd);
        let p = node(&tree, "etc/passwd");
        let Kind::File { content, .. } = &p.kind else {
            panic!("etc/passwd is not a file")
        };
        assert!(
            matches!(content, slotsmith_rootfs::tree::Content::Source(s)
                if s.starts_with(fx.root().join("layers/meta-test"))),
            "{content:?}"
        );
        assert_eq!(p.meta.mtime, fx.plan.source_date_epoch as i64);
        // Declared attributes apply; new directories appear.
        let tool = node(&tree, "usr/local/bin/tool");
        assert_eq!(
            (tool.meta.mode, tool.meta.uid, tool.meta.gid),
            (0o750, 0, 50)
        );
        assert_eq!(node(&tree, "usr/local/bin").kind, Kind::Dir);
        // A directory the base has keeps the base's attributes when the
        // layer declares none (git cannot carry the sticky bit).
        assert_eq!(node(&tree, "tmp").meta.mode, 0o1777);
        assert_eq!(contents(&tree, "tmp/seed"), b"x\n");
        // The removal took the base's file; the rest of the base is intact.
        assert!(tree.get(&RelPath::parse("etc/shadow").unwrap()).is_none());
        assert_eq!(node(&tree, "usr/bin/su").meta.mode, 0o4755);
        assert!(fx.log.text().contains("meta-test: "), "{}", fx.log.text());
    }

    #[test]
    fn removing_a_missing_path_is_an_input_error_at_each_removal() {
        let mut fx = Fixture::new(Setup::default().layer(
            "remove:\n  - /etc/shadow\n  - /etc/nope\n  - /usr/gone\n",
            &[("/etc/motd", b"hi\n")],
        ));
        let mut tree = base(&mut fx);
        let before = tree.clone();
        let err = stage(&fx.plan, &fx.opts, &mut tree, &mut fx.progress).unwrap_err();
        let input = err
            .downcast_ref::<crate::spec::InputError>()
            .unwrap_or_else(|| panic!("not an input error: {err:#}"));
        // Every missing path at once, each at its own line of layer.yaml
        // (four header lines, then `remove:`).
        let got: Vec<(String, usize, String, bool)> = input
            .0
            .iter()
            .map(|d| {
                (
                    d.file.display().to_string(),
                    d.line,
                    d.key.clone(),
                    d.message.contains("cannot remove"),
                )
            })
            .collect();
        let file = "layers/meta-test/conf/layer.yaml".to_string();
        assert_eq!(
            got,
            [
                (file.clone(), 7, "remove[1]".to_string(), true),
                (file, 8, "remove[2]".to_string(), true),
            ],
            "{err:#}"
        );
        let msg = format!("{err:#}");
        assert!(
            msg.contains("/etc/nope") && msg.contains("/usr/gone"),
            "{msg}"
        );
        // Nothing of the failing layer was applied.
        assert!(before.iter().eq(tree.iter()), "the tree changed");
    }

    #[test]
    fn without_layers_the_tree_is_unchanged() {
        let mut fx = Fixture::new(Setup::default());
        let mut tree = base(&mut fx);
        let before = tree.clone();
        stage(&fx.plan, &fx.opts, &mut tree, &mut fx.progress).unwrap();
        assert!(before.iter().eq(tree.iter()), "the tree changed");
    }

    #[test]
    fn posix_acls_are_dropped_and_named_other_xattrs_kept() {
        let mut fx = Fixture::new(Setup::default());
        let mut tree = base(&mut fx);
        let acl = RelPath::parse("var/lib").unwrap();
        tree.get_mut(&acl)
            .unwrap()
            .meta
            .xattrs
            .insert("system.posix_acl_default".into(), vec![2, 0, 0, 0]);
        drop_acls(&mut tree, &mut fx.progress);
        assert!(node(&tree, "var/lib").meta.xattrs.is_empty());
        assert_eq!(
            node(&tree, "usr/bin/ping")
                .meta
                .xattrs
                .get("security.capability")
                .map(Vec::as_slice),
            Some(testkit::CAP_NET_RAW_EP.as_slice())
        );
        let log = fx.log.text();
        assert!(
            log.contains("cannot store POSIX ACLs; dropped them on /var/lib"),
            "{log}"
        );
    }
}
