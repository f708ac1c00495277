//! Writes the boot chain's device files into the tree: SWUpdate's
//! configuration, the hardware revision, the update certificate the
//! device trusts, and the updater with its settings (see
//! `plan::chain::device_files`). Runs after the
//! hardening policies and before the layers, so a product layer can still
//! replace a file (the audit reads the result either way).

use std::path::Path;

use anyhow::Context;
use slotsmith_rootfs::overlay::Op;
use slotsmith_rootfs::path::RelPath;
use slotsmith_rootfs::tree::{Content, Kind, Meta, Node, Tree};

use crate::plan::chain::DeviceFileSource;
use crate::plan::Plan;

/// Largest update certificate accepted.
const MAX_CERT: u64 = 64 << 10;
/// Largest updater program accepted.
const MAX_UPDATER: u64 = 64 << 20;

/// Reads a file the build did not write, bounded and required to be a
/// regular file.
fn read_input(path: &Path, max: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading the {what} {}", path.display()))?;
    anyhow::ensure!(
        meta.is_file() && meta.len() <= max,
        "the {what} {} is not a file under {} KiB",
        path.display(),
        max >> 10
    );
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

/// The updater's bytes, which the driver built (`initbin`).
pub(super) fn updater_binary(opts: &super::BuildOptions) -> anyhow::Result<Vec<u8>> {
    let Some(path) = &opts.updater_binary else {
        anyhow::bail!("the image has a boot chain but no updater binary was given (cargo xtask builds crates/updater and passes it)");
    };
    let bytes = read_input(path, MAX_UPDATER, "updater binary")?;
    anyhow::ensure!(
        bytes.starts_with(b"\x7fELF"),
        "the updater binary {} is not an ELF executable",
        path.display()
    );
    Ok(bytes)
}

/// Adds the plan's device files; `update_cert` is the update signing
/// certificate (PEM).
pub(super) fn apply(
    plan: &Plan,
    tree: &mut Tree,
    store: &Path,
    update_cert: &Path,
    opts: &super::BuildOptions,
) -> anyhow::Result<()> {
    let Some(chain) = &plan.chain else {
        return Ok(());
    };
    let mut ops = Vec::new();
    for (i, f) in chain.device_files.iter().enumerate() {
        let bytes = match &f.source {
            DeviceFileSource::Text(t) => t.clone().into_bytes(),
            DeviceFileSource::UpdateCertificate => {
                read_input(update_cert, MAX_CERT, "update certificate")?
            }
            DeviceFileSource::Updater => updater_binary(opts)?,
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
