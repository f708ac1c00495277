//! Rendering an audit [`Report`] for people and for tools.
//!
//! - Markdown for a reviewer or regulator who has never seen slotsmith: what
//!   was audited, the outcome, each rule with its evidence, the same results
//!   grouped per control framework (the view a submission maps to), and every
//!   waiver with its justification and approver.
//! - JSON: the report as data (IEC 62443-4-2 CR 7.6 RE1 asks for
//!   machine-readable settings reporting).
//! - SARIF 2.1.0 so CI systems show failures and waivers next to code
//!   scanning results.
//!
//! All three are deterministic (no dates, sorted maps): the same image and
//! policies give the same bytes, so reports can be signed and diffed.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::audit::{Report, RuleResult, Status};

/// Escapes text for a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('\n', " ")
        .replace('<', "&lt;")
}

fn framework_title(fw: &str) -> &'static str {
    match fw {
        "nist-ir-8259a" => "NIST IR 8259A (core device cybersecurity capabilities)",
        "sp800-53" => "NIST SP 800-53 Rev. 5",
        "iec62443-4-2" => "IEC 62443-4-2",
        "fda-premarket" => "FDA premarket cybersecurity guidance, Appendix 1 categories",
        "cis-debian12" => "CIS Debian Linux 12 Benchmark",
        _ => "other",
    }
}

fn status_text(s: Status) -> &'static str {
    match s {
        Status::Pass => "PASS",
        Status::Fail => "FAIL",
        Status::Waived => "WAIVED",
        Status::NotApplicable => "n/a",
    }
}

/// The report as Markdown.
pub fn to_markdown(r: &Report) -> String {
    let mut s = String::new();
    let name = if r.image.is_empty() {
        "(unnamed image)"
    } else {
        &r.image
    };
    let _ = writeln!(s, "# Hardening audit: {name} {}\n", r.version);
    s.push_str(
        "This report was produced by slotsmith by reading the built root filesystem image back \
         and checking every hardening rule of the policy set against it. Each rule states why it \
         exists, which controls it supports, and the evidence found in the image (file path, \
         sha256 of the file as stored in the image, the effective value and the expected one). \
         Effective values are computed the way the device computes them (for example the last \
         sysctl.d assignment and the first sshd_config value win). These are static checks of \
         the image contents; live values (loaded ruleset, running sysctls, listening ports) need \
         confirmation on a running device.\n\n",
    );
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| Image | {} |", cell(name));
    let _ = writeln!(s, "| Version | {} |", cell(&r.version));
    let _ = writeln!(s, "| Profile | {} |", r.profile);
    let _ = writeln!(s, "| Policy set sha256 | `{}` |", r.policy_set_sha256);
    let _ = writeln!(s, "| Kernel command line | `{}` |", cell(&r.cmdline));
    let sm = &r.summary;
    let verdict = if sm.fail == 0 { "PASSED" } else { "FAILED" };
    let _ = writeln!(s, "\n## Summary\n\nResult: **{verdict}**\n");
    let _ = writeln!(s, "| Status | Rules |\n|---|---|");
    let _ = writeln!(s, "| pass | {} |", sm.pass);
    let _ = writeln!(s, "| fail | {} |", sm.fail);
    let _ = writeln!(s, "| waived | {} |", sm.waived);
    let _ = writeln!(
        s,
        "| not applicable (other profile) | {} |",
        sm.not_applicable
    );
    let _ = writeln!(s, "| total | {} |", sm.total);

    s.push_str(
        "\n## Rules\n\n| ID | Title | Severity | Status | Evidence |\n|---|---|---|---|---|\n",
    );
    for res in &r.results {
        let ev = evidence_cell(res);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            res.id,
            cell(&res.title),
            res.severity.as_str(),
            status_text(res.status),
            ev
        );
    }

    s.push_str("\n## Rule details\n");
    for res in &r.results {
        let _ = writeln!(s, "\n### {} {}\n", res.id, res.title);
        let _ = writeln!(
            s,
            "- Status: **{}** ({})\n- Severity: {}\n- Defined in: {}:{}\n- Check: {}",
            status_text(res.status),
            res.message,
            res.severity.as_str(),
            res.file,
            res.line,
            res.check
        );
        let mapped: Vec<String> = res
            .controls
            .by_framework()
            .into_iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(fw, ids)| format!("{fw}: {}", ids.join(", ")))
            .collect();
        let _ = writeln!(s, "- Controls: {}", mapped.join("; "));
        let _ = writeln!(s, "\nRationale: {}", res.rationale.replace('\n', " "));
    }

    s.push_str("\n## Controls\n\nEach control lists the rules that implement it and their status in this image.\n");
    for (fw, ctrls) in &r.controls {
        let _ = writeln!(
            s,
            "\n### {}\n\n| Control | Rules | Status |\n|---|---|---|",
            framework_title(fw)
        );
        for (id, entries) in ctrls {
            let rules: Vec<String> = entries
                .iter()
                .map(|e| format!("{} ({})", e.rule, e.status.as_str()))
                .collect();
            let applicable: Vec<Status> = entries
                .iter()
                .map(|e| e.status)
                .filter(|s| *s != Status::NotApplicable)
                .collect();
            let overall = if applicable.is_empty() {
                "not applicable"
            } else if applicable.contains(&Status::Fail) {
                "not met"
            } else if applicable.contains(&Status::Waived) {
                "met with waivers"
            } else {
                "met"
            };
            let _ = writeln!(s, "| {} | {} | {overall} |", cell(id), rules.join(", "));
        }
    }

    s.push_str("\n## Waivers\n\n");
    if r.waivers.is_empty() {
        s.push_str("No waivers were given for this image.\n");
    } else {
        s.push_str("| Rule | Justification | Approver | Applied | Check without waiver |\n|---|---|---|---|---|\n");
        for w in &r.waivers {
            let would = match w.would_pass {
                Some(true) => "passes",
                Some(false) => "fails",
                None => "-",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {would} |",
                cell(&w.waiver.rule),
                cell(&w.waiver.justification),
                cell(&w.waiver.approver),
                if w.applied {
                    "yes"
                } else {
                    "no (rule not in this profile or unknown)"
                }
            );
        }
    }
    s
}

fn evidence_cell(res: &RuleResult) -> String {
    let mut parts = Vec::new();
    for e in res.evidence.iter().take(6) {
        let sha = e
            .sha256
            .as_deref()
            .map(|h| format!(" sha256:{}…", &h[..h.len().min(12)]))
            .unwrap_or_default();
        parts.push(format!("`{}`{sha}: {}", cell(&e.path), cell(&e.value)));
    }
    if res.evidence.len() > 6 {
        parts.push(format!("and {} more (see JSON)", res.evidence.len() - 6));
    }
    if res.status == Status::Fail {
        parts.insert(0, format!("**{}**", cell(&res.message)));
    }
    parts.join("<br>")
}

/// The report as pretty JSON.
pub fn to_json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The report as SARIF 2.1.0: one reporting descriptor per rule, a result
/// for each failing rule (`error`) and each waived rule (`note`, suppressed
/// externally with the waiver's justification).
pub fn to_sarif(r: &Report) -> String {
    let rules: Vec<Value> = r
        .results
        .iter()
        .map(|res| {
            let controls: serde_json::Map<String, Value> = res
                .controls
                .by_framework()
                .into_iter()
                .filter(|(_, ids)| !ids.is_empty())
                .map(|(fw, ids)| (fw.to_string(), json!(ids)))
                .collect();
            json!({
                "id": res.id,
                "name": res.id,
                "shortDescription": { "text": res.title },
                "fullDescription": { "text": res.rationale },
                "help": { "text": format!("{}\n\nCheck: {}\nDefined in {}:{}", res.rationale, res.check, res.file, res.line) },
                "defaultConfiguration": { "level": "error" },
                "properties": {
                    "severity": res.severity.as_str(),
                    "controls": controls,
                    "tags": ["security", "hardening"],
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for (i, res) in r.results.iter().enumerate() {
        let level = match res.status {
            Status::Fail => "error",
            Status::Waived => "note",
            _ => continue,
        };
        let mut locations: Vec<Value> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for e in &res.evidence {
            if !e.path.starts_with('/') || !seen.insert(e.path.clone()) {
                continue;
            }
            locations.push(json!({
                "physicalLocation": {
                    "artifactLocation": { "uri": e.path.trim_start_matches('/'), "uriBaseId": "ROOTFS" }
                }
            }));
        }
        let mut result = json!({
            "ruleId": res.id,
            "ruleIndex": i,
            "level": level,
            "message": { "text": res.message },
            "locations": locations,
            "properties": { "severity": res.severity.as_str(), "status": res.status.as_str() },
        });
        if let (Status::Waived, Some(w)) = (res.status, &res.waiver) {
            result["suppressions"] = json!([{
                "kind": "external",
                "status": "accepted",
                "justification": format!("{} (approved by {})", w.justification, w.approver),
            }]);
        }
        results.push(result);
    }
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "slotsmith",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }
            },
            "originalUriBaseIds": {
                "ROOTFS": { "uri": "file:///", "description": { "text": "the root of the audited image" } }
            },
            "properties": {
                "image": r.image,
                "version": r.version,
                "profile": r.profile.as_str(),
                "policySetSha256": r.policy_set_sha256,
            },
            "results": results,
        }]
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}
