//! The self-check stage: before anything is published, the build verifies
//! what it made in the staging directory with the same code as `cargo xtask
//! verify`: the image from the file alone (GPT, every slot's verity tree
//! recomputed from the partition bytes, the signed manifests and the boot
//! files) and the `.swu` (member order, checksums, CMS signature, sha256s,
//! slot sizes). A build whose artifacts do not verify fails, and `out/`
//! keeps the previous build.

use std::path::Path;

use anyhow::Context;

use crate::plan::Plan;
use crate::progress::Progress;

/// Verifies the staged image and update.
pub(super) fn stage(
    plan: &Plan,
    out: &Path,
    boot_key: &ed25519_dalek::VerifyingKey,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    progress.stage(
        "self-check",
        "verifying the image and the update before publishing",
    );
    let image = out.join(&plan.outputs.image);
    let report = crate::verify::verify_image(&image, boot_key).with_context(|| {
        format!(
            "self-check of {} failed; nothing was published",
            plan.outputs.image
        )
    })?;
    let swu = out.join(&plan.update.file);
    let cert = out.join(&plan.outputs.update_cert);
    crate::verify::verify_swu(&swu, &cert).with_context(|| {
        format!(
            "self-check of {} failed; nothing was published",
            plan.update.file
        )
    })?;
    progress.note(&format!(
        "{} slot(s) verified, {} empty; update signature and payloads verified",
        report.slots.len(),
        report.empty_slots.len()
    ));
    Ok(())
}
