//! Writes the boot chain's device files into the tree: SWUpdate's
//! configuration, the hardware revision, and the update certificate the
//! device trusts (see `plan::chain::device_files`). Runs after the
//! hardening policies and before the layers, so a product layer can still
//! replace a file (the audit reads the result either way).

use std::path::Path;

use anyhow::Context;
use slotsmith_rootfs::overlay::Op;
use slotsmith_rootfs::path::RelPath;
use slotsmith_rootfs::tree::{Content, Kind, Meta, Node, Tree};

use crate::plan::Plan;

/// Largest update certificate accepted.
const MAX_CERT: u64 = 64 << 10;

/// Adds the plan's device files; `update_cert` is the update signing
/// certificate (PEM).
pub(super) fn apply(
    plan: &Plan,
    tree: &mut Tree,
    store: &Path,
    update_cert: &Path,
) -> anyhow::Result<()> {
    let Some(chain) = &plan.chain else {
        return Ok(());
    };
    let mut ops = Vec::new();
    for (i, f) in chain.device_files.iter().enumerate() {
        let bytes = match &f.text {
            Some(t) => t.clone().into_bytes(),
            None => {
                let meta = std::fs::metadata(update_cert)
                    .with_context(|| format!("reading {}", update_cert.display()))?;
                anyhow::ensure!(
                    meta.is_file() && meta.len() <= MAX_CERT,
                    "the update certificate {} is not a file under 64 KiB",
                    update_cert.display()
                );
                std::fs::read(update_cert)
                    .with_context(|| format!("reading {}", update_cert.display()))?
            }
        };
        let stored = store.join(format!("device-{i}"));
        std::fs::write(&stored, &bytes).with_context(|| format!("writing {}", stored.display()))?;
        ops.push(Op::Put {
            path: RelPath::parse(&f.path)?,
            node: Node {
                kind: Kind::File {
                    content: Content::Store(stored),
                    size: bytes.len() as u64,
                },
                meta: Meta {
                    mode: f.mode,
                    uid: 0,
                    gid: 0,
                    mtime: plan.source_date_epoch as i64,
                    xattrs: Default::default(),
                },
            },
        });
    }
    slotsmith_rootfs::overlay::apply(tree, &ops).context("adding the device files")
}
