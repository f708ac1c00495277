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

#[cfg(test)]
mod tests {
    use super::super::testkit::{Fixture, Setup};
    use super::*;
    use std::fs;

    const REPORTS: [&str; 3] = ["report.md", "report.json", "report.sarif"];

    fn summary(dir: &Path) -> serde_json::Value {
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("report.json")).unwrap()).unwrap();
        json["summary"].clone()
    }

    #[test]
    fn a_failing_rule_fails_a_production_build_and_keeps_the_report() {
        // A product layer adds a world-writable file after the policies.
        let mut fx = Fixture::new(Setup::default().policies().layer(
            "files:\n  /etc/product.conf:\n    mode: \"0666\"\n",
            &[("/etc/product.conf", b"x=1\n")],
        ));
        let rootfs = fx.rootfs();
        let err = stage(&fx.plan, &rootfs, &fx.out, &fx.work, &mut fx.progress).unwrap_err();
        let msg = format!("{err:#}");
        let kept = fx.work.join("audit-report");
        assert!(
            msg.contains("the hardening audit failed 1 rule(s) without a waiver"),
            "{msg}"
        );
        assert!(msg.contains("  FILES-PERM-001: "), "{msg}");
        assert!(
            msg.contains(&kept.join("report.md").display().to_string()),
            "{msg}"
        );
        // The kept copy survives the staging directory; it says why.
        let md = fs::read_to_string(kept.join("report.md")).unwrap();
        assert!(
            md.contains("Result: **FAILED**") && md.contains("FILES-PERM-001"),
            "{md}"
        );
        assert_eq!(summary(&kept)["fail"], 1);
        for r in REPORTS {
            assert_eq!(
                fs::read(kept.join(r)).unwrap(),
                fs::read(fx.out.join("audit").join(r)).unwrap(),
                "{r}"
            );
        }
    }

    #[test]
    fn a_passing_audit_writes_the_three_reports() {
        let mut fx = Fixture::new(Setup::default().policies());
        let rootfs = fx.rootfs();
        stage(&fx.plan, &rootfs, &fx.out, &fx.work, &mut fx.progress).unwrap();
        let dir = fx.out.join("audit");
        let md = fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(md.contains("Result: **PASSED**"), "{md}");
        let s = summary(&dir);
        assert_eq!(s["fail"], 0);
        assert!(s["pass"].as_u64().unwrap() > 0, "{s}");
        let sarif: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("report.sarif")).unwrap()).unwrap();
        assert_eq!(sarif["version"], "2.1.0");
        // No temporary file is left beside the reports.
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["report.json", "report.md", "report.sarif"]);
        assert!(fx
            .log
            .text()
            .contains(&format!("{} pass, 0 fail", s["pass"].as_u64().unwrap())));
    }

    #[test]
    fn without_policies_nothing_is_audited_or_written() {
        let mut fx = Fixture::new(Setup::default());
        let rootfs = fx.rootfs();
        stage(&fx.plan, &rootfs, &fx.out, &fx.work, &mut fx.progress).unwrap();
        assert!(!fx.out.join("audit").exists());
        assert!(!fx.work.join("audit-report").exists());
        assert!(!fx.log.text().contains("==> audit"), "{}", fx.log.text());
    }

    #[test]
    fn the_audited_command_line_is_slot_a_signed_one() {
        let fx = Fixture::new(Setup::default().policies());
        let a = &fx.plan.boot.slots[0];
        assert_eq!(a.name, "a");
        assert_eq!(audited_cmdline(&fx.plan), a.cmdline);
        assert!(a.cmdline.ends_with("slotsmith.slot=a ro"), "{}", a.cmdline);
    }
}
