//! `cargo xtask audit out/<name>`: the hardening audit of a published
//! build, again, without changing it.

use std::path::Path;

use anyhow::Context;

use crate::{env_epoch, input_error, require_project, AuditArgs, Failure};

/// `cargo xtask audit out/<name>`: audits a published build again, without
/// changing it. The plan comes from the image file build.json names; the
/// kernel command line from slot A's manifest, parsed and verified with the
/// boot key, exactly as the build audited it; the rootfs image is read from
/// the output directory. Reports go to `--report-dir` or stdout, never into
/// the build (SHA256SUMS covers its own reports). On an unchanged build the
/// reports are byte-identical to the build's.
pub(crate) fn run(a: AuditArgs, project: Option<&Path>) -> Result<(), Failure> {
    let record_path = a.out.join("build.json");
    let text = read_bounded(&record_path, 16 << 20)?;
    let record: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("parsing {}", record_path.display()))?;
    let image_file = match &a.image {
        Some(p) => p.clone(),
        None => require_project(project)?.join(
            record["image_file"]
                .as_str()
                .context("build.json has no image_file")?,
        ),
    };
    let loaded = slotsmith::load::load_image(&image_file)?;
    let plan = slotsmith::plan::plan(
        &loaded,
        record["source_date_epoch"].as_u64().or(env_epoch()?),
    )?;
    if record["plan_sha256"].as_str() != Some(plan.hash().as_str()) {
        eprintln!(
            "note: {} changed since this build; auditing against its current policies",
            image_file.display()
        );
    }
    if plan.hardening.rules.is_empty() {
        return Err(input_error(
            "policies",
            &format!(
                "{} names no policies: nothing to audit",
                image_file.display()
            ),
        ));
    }
    // The command line the device boots from slot A, as signed.
    let slot = plan.boot.slots.first().context("the plan has no slot")?;
    let key_path = a
        .boot_key
        .clone()
        .unwrap_or_else(|| a.out.join(&plan.outputs.boot_public_key));
    let key = slotsmith_sign::load_verifying_key(&key_path)
        .with_context(|| format!("loading boot key {}", key_path.display()))?;
    let manifest_path = a.out.join(&slot.manifest_output);
    let manifest_bytes = read_bounded(&manifest_path, 64 << 10)?;
    let sig_path = a.out.join(&slot.signature_output);
    let sig = read_bounded(&sig_path, 4 << 10)?;
    let manifest = slotsmith_sign::verify_manifest(&manifest_bytes, &sig, &key)
        .with_context(|| format!("verifying {}", manifest_path.display()))?;
    let rootfs = a.out.join(&plan.outputs.rootfs);
    let report = slotsmith::harden::audit(&plan, &rootfs, &manifest.cmdline)?;
    if let Some(dir) = &a.report_dir {
        if dir.starts_with(&a.out) {
            return Err(input_error(
                "--report-dir",
                "the reports may not go into the build's own directory: SHA256SUMS covers its reports",
            ));
        }
        slotsmith::harden::write_reports(&report, dir)?;
    }
    if a.json {
        println!("{}", slotsmith_policy::to_json(&report));
    } else {
        if a.report_dir.is_none() {
            print!("{}", slotsmith_policy::to_markdown(&report));
        }
        let s = &report.summary;
        eprintln!(
            "{}: {} pass, {} fail, {} waived, {} not applicable{}",
            a.out.display(),
            s.pass,
            s.fail,
            s.waived,
            s.not_applicable,
            a.report_dir
                .as_ref()
                .map(|d| format!("; reports in {}", d.display()))
                .unwrap_or_default()
        );
    }
    let shown = a
        .report_dir
        .as_ref()
        .map(|d| d.join("report.md"))
        .unwrap_or_else(|| a.out.join("audit/report.md"));
    slotsmith::harden::gate(&plan, &report, &shown)?;
    Ok(())
}

/// Reads a file of at most `limit` bytes: files under `out/` are inputs
/// here, and may be anything.
fn read_bounded(path: &Path, limit: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    if buf.len() as u64 > limit {
        anyhow::bail!("{} is larger than {limit} bytes", path.display());
    }
    Ok(buf)
}
