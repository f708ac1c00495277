//! What the baseline writes into a production rootfs, snapshot by snapshot,
//! and a real nftables load of the generated ruleset.

mod common;

use std::collections::BTreeSet;

use slotsmith_policy::apply::{generate, nft_ruleset, NFT_PATH};
use slotsmith_policy::model::{Profile, Setting};

fn production() -> slotsmith_policy::Generated {
    let rules = common::baseline();
    generate(
        &rules,
        Profile::Production,
        &BTreeSet::new(),
        &common::debian_like(),
    )
    .unwrap()
}

#[test]
fn generated_files_for_the_production_baseline() {
    let g = production();
    for f in &g.files {
        let name = f.path.trim_start_matches('/').replace('/', "__");
        let text = String::from_utf8(f.content.clone()).unwrap();
        let header = format!(
            "path: {}\nmode: {:04o}\nowner: {}:{}\nrules: {}\n---\n",
            f.path,
            f.mode,
            f.uid,
            f.gid,
            f.rule_ids.join(", ")
        );
        insta::assert_snapshot!(format!("file__{name}"), format!("{header}{text}"));
    }
    let links: Vec<String> = g
        .symlinks
        .iter()
        .map(|l| format!("{} -> {}  [{}]", l.path, l.target, l.rule_ids.join(", ")))
        .collect();
    insta::assert_snapshot!("symlinks", links.join("\n"));
    let other: Vec<String> = g
        .remove
        .iter()
        .map(|r| format!("remove {}  [{}]", r.path, r.rule_ids.join(", ")))
        .chain(g.chmod.iter().map(|c| {
            format!(
                "chmod {:04o} {}  [{}]",
                c.mode,
                c.path,
                c.rule_ids.join(", ")
            )
        }))
        .chain(std::iter::once(format!("cmdline: {}", g.cmdline.join(" "))))
        .collect();
    insta::assert_snapshot!("removals_modes_cmdline", other.join("\n"));
    let paths: Vec<&str> = g.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/etc/modprobe.d/00-slotsmith-disabled.conf",
            "/etc/nftables.conf",
            "/etc/shadow",
            "/etc/ssh/sshd_config.d/00-slotsmith.conf",
            "/etc/sysctl.d/99-zz-slotsmith.conf",
        ]
    );
}

#[test]
fn generation_is_deterministic_and_respects_profile_and_waivers() {
    let rules = common::baseline();
    let fs = common::debian_like();
    let a = generate(&rules, Profile::Production, &BTreeSet::new(), &fs).unwrap();
    let b = generate(&rules, Profile::Production, &BTreeSet::new(), &fs).unwrap();
    assert_eq!(a, b);
    // Development: no console masks, no debug-shell mask, no lockdown.
    let d = generate(&rules, Profile::Development, &BTreeSet::new(), &fs).unwrap();
    assert!(!d.symlinks.iter().any(|l| l.path.contains("debug-shell")));
    assert!(!d.symlinks.iter().any(|l| l.path.contains("getty")));
    assert!(!d.cmdline.iter().any(|a| a.starts_with("lockdown")));
    assert!(a.cmdline.iter().any(|a| a == "systemd.getty_auto=0"));
    // A waived rule is not applied.
    let waived: BTreeSet<String> = ["NET-FW-001".to_string()].into();
    let w = generate(&rules, Profile::Production, &waived, &fs).unwrap();
    assert!(!w.files.iter().any(|f| f.path == NFT_PATH));
}

#[test]
fn shadow_keeps_owner_and_locks_root_and_empty_passwords() {
    let mut fs = common::debian_like();
    fs.file_owned(
        "/etc/shadow",
        0o640,
        0,
        42,
        "root::19000:0:99999:7:::\nguest::1::::::\nsvc:$y$x:1::::::\n",
    );
    let g = generate(
        &common::baseline(),
        Profile::Production,
        &BTreeSet::new(),
        &fs,
    )
    .unwrap();
    let f = g.files.iter().find(|f| f.path == "/etc/shadow").unwrap();
    assert_eq!((f.mode, f.uid, f.gid), (0o640, 0, 42));
    assert_eq!(
        String::from_utf8_lossy(&f.content),
        "root:!:19000:0:99999:7:::\nguest:!:1::::::\nsvc:$y$x:1::::::\n"
    );
}

fn nft_check(file: &std::path::Path) {
    let nft = common::need("nft", "nftables");
    let unshare = common::need("unshare", "util-linux");
    // Syntax and semantic check in a throwaway network namespace.
    let out = duct::cmd!(&unshare, "-rn", &nft, "-c", "-f", file)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .unwrap();
    assert!(
        out.status.success(),
        "nft -c failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A real load (catches what -c does not, such as jump loops), listed in
    // the same namespace.
    let script = format!(
        "{} -f {} && {} list ruleset",
        nft.display(),
        file.display(),
        nft.display()
    );
    let out = duct::cmd!(&unshare, "-rn", "sh", "-c", script)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "nft load failed:\n{listed}");
    let chain_policy = |hook: &str| {
        listed
            .lines()
            .find(|l| l.contains(&format!("hook {hook} ")))
            .unwrap_or_else(|| panic!("no {hook} chain in:\n{listed}"))
            .to_string()
    };
    assert!(chain_policy("input").contains("policy drop"), "{listed}");
    assert!(chain_policy("forward").contains("policy drop"), "{listed}");
    assert!(listed.contains("tcp dport 22"), "{listed}");
}

#[test]
fn generated_ruleset_loads_into_a_real_kernel() {
    let g = production();
    let f = g.files.iter().find(|f| f.path == NFT_PATH).unwrap();
    assert_eq!(f.mode, 0o755);
    assert!(f.content.starts_with(b"#!/usr/sbin/nft -f\n"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nftables.conf");
    std::fs::write(&path, &f.content).unwrap();
    nft_check(&path);
}

#[test]
fn ruleset_with_sources_and_output_drop_loads() {
    let rules =
        slotsmith_policy::load_policies(&common::workspace(), &["network".to_string()]).unwrap();
    let Setting::Firewall(mut fw) = rules
        .iter()
        .find(|r| r.id == "NET-FW-001")
        .unwrap()
        .setting
        .clone()
    else {
        panic!()
    };
    fw.input[0].sources = vec!["10.20.0.0/16".into(), "192.0.2.7".into(), "fd00::/8".into()];
    fw.output = slotsmith_policy::model::OutputPolicy::Drop;
    fw.output_allow = vec![slotsmith_policy::model::Allow {
        service: "systemd-timesyncd".into(),
        port: 123,
        protocol: slotsmith_policy::model::Protocol::Udp,
        sources: vec!["10.0.0.1".into()],
    }];
    let text = nft_ruleset("NET-FW-001", &fw);
    assert!(
        text.contains("ip saddr { 10.20.0.0/16, 192.0.2.7 } tcp dport 22 ct state new accept"),
        "{text}"
    );
    assert!(
        text.contains("ip6 saddr { fd00::/8 } tcp dport 22 ct state new accept"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nftables.conf");
    std::fs::write(&path, &text).unwrap();
    nft_check(&path);
}

#[test]
fn contradicting_rules_fail_naming_both() {
    // Two rules setting one key to different values: generation refuses,
    // for sysctl.d and sshd_config.d alike, naming both rules.
    let mut rules = common::baseline();
    let mut clash = rules
        .iter()
        .find(|r| r.id == "NET-SYSCTL-001")
        .unwrap()
        .clone();
    clash.id = "CLASH-001".into();
    clash.setting = Setting::Sysctl([("net.ipv4.ip_forward".to_string(), "1".to_string())].into());
    rules.push(clash);
    let e = generate(
        &rules,
        Profile::Production,
        &BTreeSet::new(),
        &common::debian_like(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("sysctl net.ipv4.ip_forward is 1 in CLASH-001 and 0 in NET-SYSCTL-001"),
        "{msg}"
    );
    assert!(msg.ends_with("rules must agree"), "{msg}");

    let mut rules = common::baseline();
    let mut clash = rules.iter().find(|r| r.id == "SSH-001").unwrap().clone();
    clash.id = "CLASH-002".into();
    clash.setting = Setting::Ssh([("PermitRootLogin".to_string(), "yes".to_string())].into());
    rules.push(clash);
    let msg = generate(
        &rules,
        Profile::Production,
        &BTreeSet::new(),
        &common::debian_like(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("sshd PermitRootLogin is 'yes' in CLASH-002 and 'no' in SSH-001"),
        "{msg}"
    );
}
