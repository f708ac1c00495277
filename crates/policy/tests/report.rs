//! Report renderings: SARIF a CI system accepts, Markdown a reviewer can
//! read (with the per-control view and waivers), JSON as data.

mod common;

use std::collections::BTreeSet;

use slotsmith_policy::audit::audit;
use slotsmith_policy::model::{Profile, Waiver};
use slotsmith_policy::{generate, to_json, to_markdown, to_sarif, Report};

fn report() -> Report {
    let rules = common::baseline();
    let mut fs = common::debian_like();
    let g = generate(&rules, Profile::Production, &BTreeSet::new(), &fs).unwrap();
    fs.apply(&g);
    // Two failures and one waiver.
    fs.file(
        "/etc/sysctl.d/99-zzz-override.conf",
        0o644,
        "net.ipv4.ip_forward = 1\n",
    );
    fs.file(
        "/etc/ssh/sshd_config.d/00-aaa.conf",
        0o600,
        "PermitRootLogin yes\n",
    );
    fs.file("/usr/local/bin/helper", 0o4755, "ELF");
    let waivers = vec![Waiver {
        rule: "FILES-PERM-001".into(),
        justification: "vendor tool | needs setuid".into(),
        approver: "A. Reviewer".into(),
    }];
    audit(
        &rules,
        Profile::Production,
        &waivers,
        &fs,
        &common::good_cmdline(&g.cmdline),
    )
    .for_image("demo", "1.0.0")
}

#[test]
fn sarif_is_valid_2_1_0_with_failures_and_suppressed_waivers() {
    let r = report();
    let v: serde_json::Value = serde_json::from_str(&to_sarif(&r)).unwrap();
    assert_eq!(v["version"], "2.1.0");
    assert!(v["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "slotsmith");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), r.results.len());
    let fw = rules.iter().find(|x| x["id"] == "NET-FW-001").unwrap();
    assert_eq!(fw["properties"]["severity"], "critical");
    assert_eq!(fw["properties"]["controls"]["sp800-53"][1], "SC-7(5)");
    assert!(fw["fullDescription"]["text"]
        .as_str()
        .unwrap()
        .contains("nftables ruleset drops"));
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{results:#?}");
    let errors: Vec<&str> = results
        .iter()
        .filter(|x| x["level"] == "error")
        .map(|x| x["ruleId"].as_str().unwrap())
        .collect();
    assert_eq!(errors, ["NET-SYSCTL-001", "SSH-001"]);
    let note = results.iter().find(|x| x["level"] == "note").unwrap();
    assert_eq!(note["ruleId"], "FILES-PERM-001");
    assert_eq!(note["suppressions"][0]["kind"], "external");
    assert!(note["suppressions"][0]["justification"]
        .as_str()
        .unwrap()
        .contains("A. Reviewer"));
    // Locations are paths in the image.
    let ssh = results.iter().find(|x| x["ruleId"] == "SSH-001").unwrap();
    let uris: Vec<&str> = ssh["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["physicalLocation"]["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(
        uris.contains(&"etc/ssh/sshd_config.d/00-aaa.conf"),
        "{uris:?}"
    );
    // ruleIndex points at the rule.
    let idx = ssh["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(rules[idx]["id"], "SSH-001");
}

#[test]
fn markdown_has_summary_rules_controls_and_waivers() {
    let r = report();
    let md = to_markdown(&r);
    assert!(md.starts_with("# Hardening audit: demo 1.0.0\n"), "{md}");
    assert!(md.contains("Result: **FAILED**"));
    assert!(md.contains("| Profile | production |"));
    assert!(md.contains(&r.policy_set_sha256));
    assert!(md.contains("| NET-SYSCTL-001 | The device does not route packets between interfaces | high | FAIL |"), "{md}");
    // The per-control view.
    assert!(md.contains("## Controls"));
    assert!(md.contains("### IEC 62443-4-2"));
    assert!(md.contains("| SC-7(5) | NET-FW-001 (pass) | met |"), "{md}");
    assert!(
        md.contains("| 3.3.1 | NET-SYSCTL-001 (fail) | not met |"),
        "{md}"
    );
    assert!(md.contains("| EDR 2.13 | KERNEL-CMDLINE-004 (pass), SVC-CONSOLE-001 (pass), SVC-DEBUG-001 (pass) | met |"), "{md}");
    // Waivers, with table-breaking characters escaped.
    assert!(
        md.contains(
            "| FILES-PERM-001 | vendor tool \\| needs setuid | A. Reviewer | yes | fails |"
        ),
        "{md}"
    );
    // Deterministic: no dates, same bytes twice.
    assert_eq!(md, to_markdown(&report()));
}

#[test]
fn json_round_trips_as_data() {
    let r = report();
    let v: serde_json::Value = serde_json::from_str(&to_json(&r)).unwrap();
    assert_eq!(v["image"], "demo");
    assert_eq!(v["summary"]["fail"], 2);
    assert_eq!(v["summary"]["waived"], 1);
    assert_eq!(
        v["controls"]["sp800-53"]["SC-7(5)"][0]["rule"],
        "NET-FW-001"
    );
    assert_eq!(v["results"][0]["status"], "pass");
    assert_eq!(v["policy_set_sha256"].as_str().unwrap().len(), 64);
}
