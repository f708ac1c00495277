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

#[cfg(test)]
mod tests {
    use super::super::testkit::{self, flip, Fixture, Setup};
    use super::*;

    #[test]
    fn a_staged_build_verifies() {
        let mut fx = Fixture::new(Setup::default());
        let (made, _) = fx.staged();
        stage(
            &fx.plan,
            &fx.out,
            &made.boot_signer.public_key,
            &mut fx.progress,
        )
        .unwrap();
        let log = fx.log.text();
        assert!(log.contains("2 slot(s) verified, 0 empty"), "{log}");
    }

    #[test]
    fn one_flipped_byte_in_slot_a_fails_the_stage() {
        let mut fx = Fixture::new(Setup::default());
        let (made, _) = fx.staged();
        let a = &fx.plan.boot.slots[0];
        let root = fx.plan.partition(&a.root_partition).unwrap();
        let img = fx.out.join(&fx.plan.outputs.image);
        flip(&img, root.offset + made.rootfs.hashed.size / 2 + 17);
        let err = stage(
            &fx.plan,
            &fx.out,
            &made.boot_signer.public_key,
            &mut fx.progress,
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with(&format!(
                "self-check of {} failed; nothing was published",
                fx.plan.outputs.image
            )),
            "{msg}"
        );
        assert!(msg.contains("slot a"), "{msg}");
    }

    #[test]
    fn one_flipped_byte_in_the_update_fails_the_stage() {
        let mut fx = Fixture::new(Setup::default());
        let (made, _) = fx.staged();
        let swu = fx.out.join(&fx.plan.update.file);
        // Past sw-description and its signature: inside a payload.
        let len = std::fs::metadata(&swu).unwrap().len();
        flip(&swu, len / 2);
        let err = stage(
            &fx.plan,
            &fx.out,
            &made.boot_signer.public_key,
            &mut fx.progress,
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with(&format!(
                "self-check of {} failed; nothing was published",
                fx.plan.update.file
            )),
            "{msg}"
        );
    }

    #[test]
    fn another_boot_key_fails_the_stage() {
        let mut fx = Fixture::new(Setup::default());
        fx.staged();
        let other = testkit::other_boot_signer(&fx.root().join("other-key"));
        let err = stage(&fx.plan, &fx.out, &other.public_key, &mut fx.progress).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with(&format!("self-check of {} failed", fx.plan.outputs.image)),
            "{msg}"
        );
    }
}
