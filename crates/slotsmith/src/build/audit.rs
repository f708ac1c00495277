//! The audit stage: evaluates every hardening rule on the built slot image
//! (read back from the file, not the tree), writes the reports for
//! publication, keeps a copy in the work directory so a failed build's
//! report can still be read, and fails a production build on any rule
//! that fails without a waiver.

use std::path::Path;

use super::rootfs::RootfsImage;
use crate::plan::Plan;
use crate::progress::Progress;

/// Audits `rootfs`; writes `audit/report.{md,json,sarif}` into `out`.
pub(super) fn stage(
    plan: &Plan,
    rootfs: &RootfsImage,
    out: &Path,
    work: &Path,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    if plan.hardening.rules.is_empty() {
        return Ok(());
    }
    progress.stage("audit", "evaluating every rule on the built rootfs image");
    let report = crate::harden::audit(plan, &rootfs.path, audited_cmdline(plan))?;
    let s = &report.summary;
    progress.note(&format!(
        "{} pass, {} fail, {} waived, {} not applicable",
        s.pass, s.fail, s.waived, s.not_applicable
    ));
    crate::harden::write_reports(&report, &out.join("audit"))?;
    let kept = work.join("audit-report");
    crate::harden::write_reports(&report, &kept)?;
    crate::harden::gate(plan, &report, &kept.join("report.md"))
}

/// The command line the audit checks: slot A's, as signed into its
/// manifest. `cargo xtask audit` reads the same line back from the signed
/// manifest, so both reports agree byte for byte.
pub(super) fn audited_cmdline(plan: &Plan) -> &str {
    plan.boot
        .slots
        .first()
        .map(|s| s.cmdline.as_str())
        .unwrap_or_default()
}
