//! Loading policy files: the shipped baseline, and every kind of mistake a
//! policy author can make, each reported as `file:line:col: key: message`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use slotsmith_policy::model::{Setting, SETTING_KINDS};
use slotsmith_policy::{load_policies, read_waivers};
use slotsmith_yaml::yaml::{Doc, Reader};

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    for (name, text) in files {
        std::fs::write(
            dir.path().join("policies").join(format!("{name}.yaml")),
            text,
        )
        .unwrap();
    }
    dir
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

const GOOD: &str = "\
description: test
rules:
  - id: T-SYSCTL-001
    title: forwarding off
    rationale: because
    severity: high
    profiles: [production, development]
    controls:
      sp800-53: [CM-6, SC-7(5)]
      iec62443-4-2: [CR 7.6 RE1]
      nist-ir-8259a: [Device Configuration]
      fda-premarket: [App1-B]
      cis-debian12: [3.3.1]
    sysctl:
      net.ipv4.ip_forward: 0
      net.ipv4.ip_local_port_range: \"32768 60999\"
  - id: T-FW-001
    title: firewall
    rationale: deny by default
    severity: critical
    profiles: [production]
    controls:
      sp800-53: [SC-7]
    firewall:
      input:
        - service: ssh
          port: 22
          protocol: tcp
          sources: [10.20.0.0/16, fd00::/8]
      icmp: true
      log-drops: false
      output: drop
      output-allow:
        - service: systemd-resolved
          port: 53
          protocol: udp
          sources: [10.0.0.53]
  - id: T-SSH-001
    title: ssh
    rationale: r
    severity: low
    profiles: [development]
    controls: {cis-debian12: [5.1.20]}
    ssh:
      permitrootlogin: \"no\"
      MaxAuthTries: 3
";

#[test]
fn good_policy_loads() {
    let p = project(&[("good", GOOD)]);
    let rules = load_policies(p.path(), &names(&["good"])).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(rules.len(), 3);
    let r = &rules[0];
    assert_eq!(r.id, "T-SYSCTL-001");
    assert_eq!(r.file, "policies/good.yaml");
    assert_eq!(r.line, 3);
    let Setting::Sysctl(m) = &r.setting else {
        panic!()
    };
    assert_eq!(m["net.ipv4.ip_forward"], "0");
    assert_eq!(m["net.ipv4.ip_local_port_range"], "32768 60999");
    assert_eq!(r.controls.sp800_53, vec!["CM-6", "SC-7(5)"]);
    // Profiles are sorted.
    assert_eq!(r.profiles.len(), 2);
    let Setting::Firewall(fw) = &rules[1].setting else {
        panic!()
    };
    assert_eq!(fw.input[0].sources, vec!["10.20.0.0/16", "fd00::/8"]);
    assert_eq!(fw.input[0].unit(), "ssh.service");
    let Setting::Ssh(s) = &rules[2].setting else {
        panic!()
    };
    // Keywords are normalised to OpenSSH's spelling.
    assert_eq!(s["PermitRootLogin"], "no");
    assert_eq!(s["MaxAuthTries"], "3");
}

#[test]
fn every_schema_error_is_reported_with_its_position() {
    let bad = "\
rules:
  - id: bad id
    title: \"\"
    rationale: r
    severity: urgent
    profiles: [production, staging]
    controls:
      sp800-53: [SC7]
      iec62443-4-2: [CR7.7]
      nist-ir-8259a: [Device Config]
      fda-premarket: [App1-Z]
      cis-debian12: [x.1]
      iso27001: [A.5]
    sysctl:
      net.ipv4.ip_forward: true
      \"bad key\": 1
      kernel.x: \"1 # comment\"
    extra: 1
  - id: T-TWO-001
    title: two settings
    rationale: r
    severity: low
    profiles: [production]
    controls: {sp800-53: [CM-7]}
    masked-units: [foo]
    modules-disabled: [dccp]
  - id: T-NONE-001
    title: nothing
    rationale: r
    severity: low
    profiles: []
    controls: {}
  - id: T-FW-001
    title: fw
    rationale: r
    severity: low
    profiles: [production]
    controls: {sp800-53: [SC-7]}
    firewall:
      input:
        - {service: ssh, port: 70000, protocol: sctp, sources: [10.0.0.0/33]}
      icmp: yes
      output: maybe
  - id: T-SSH-001
    title: ssh
    rationale: r
    severity: low
    profiles: [production]
    controls: {sp800-53: [AC-17]}
    ssh:
      PermitRootLogn: \"no\"
      Banner: \"/etc/issue\\nPermitRootLogin yes\"
  - id: T-CMD-001
    title: cmd
    rationale: r
    severity: low
    profiles: [production]
    controls: {sp800-53: [SI-16]}
    kernel-cmdline:
      require: [\"a b\", init=/x]
      forbid: [init=]
  - id: T-CON-001
    title: console
    rationale: r
    severity: low
    profiles: [production]
    controls: {sp800-53: [CM-7]}
    console: {serial-getty: off, serial-ttys: [\"tty/S0\"]}
  - id: T-ACC-001
    title: accounts
    rationale: r
    severity: low
    profiles: [production]
    controls: {sp800-53: [AC-2]}
    accounts: {root-locked: \"yes\"}
  - id: T-FIL-001
    title: files
    rationale: r
    severity: low
    profiles: [production]
    controls: {sp800-53: [AC-6]}
    files: {setuid-allow: [usr/bin/su, /usr/../bin/x], no-world-writable: true}
";
    let p = project(&[("bad", bad)]);
    let err = load_policies(p.path(), &names(&["bad"]))
        .unwrap_err()
        .to_string();
    let expected = [
        "policies/bad.yaml:2:9: rules[0].id: 'bad id' is not a rule id",
        "policies/bad.yaml:3:12: rules[0].title: must be 1 to 120 characters",
        "policies/bad.yaml:5:15: rules[0].severity: unknown severity 'urgent'",
        "policies/bad.yaml:6:28: rules[0].profiles[1]: unknown profile 'staging'",
        "policies/bad.yaml:8:18: rules[0].controls.sp800-53[0]: unknown sp800-53 control 'SC7'",
        "policies/bad.yaml:9:22: rules[0].controls.iec62443-4-2[0]: unknown iec62443-4-2 control 'CR7.7'",
        "policies/bad.yaml:10:23: rules[0].controls.nist-ir-8259a[0]: unknown nist-ir-8259a control 'Device Config'",
        "policies/bad.yaml:11:23: rules[0].controls.fda-premarket[0]: unknown fda-premarket control 'App1-Z'",
        "policies/bad.yaml:12:22: rules[0].controls.cis-debian12[0]: unknown cis-debian12 control 'x.1'",
        "policies/bad.yaml:13:7: rules[0].controls.iso27001: unknown key 'iso27001'",
        "policies/bad.yaml:15:28: rules[0].sysctl.net.ipv4.ip_forward: write the value the program expects",
        "policies/bad.yaml:16:7: rules[0].sysctl.bad key: 'bad key' is not a sysctl key",
        "policies/bad.yaml:17:17: rules[0].sysctl.kernel.x: '1 # comment' is not a sysctl value",
        "policies/bad.yaml:18:5: rules[0].extra: unknown key 'extra'",
        "rules[1]: set exactly one of sysctl, modules-disabled, firewall, masked-units, ssh, accounts, files, kernel-cmdline, console, forbidden-files (found modules-disabled and masked-units)",
        "rules[2].profiles: list at least one profile",
        "rules[2].controls: map the rule to at least one control",
        "rules[2]: set exactly one of",
        "rules[3].firewall.input[0].port: invalid value: integer `70000`",
        "rules[3].firewall.input[0].protocol: unknown protocol 'sctp'",
        "rules[3].firewall.input[0].sources[0]: '10.0.0.0/33' is not an IPv4 or IPv6 network",
        "rules[3].firewall.icmp: invalid type: string \"yes\", expected a boolean",
        "rules[3].firewall.log-drops: missing required key 'log-drops'",
        "rules[3].firewall.output: unknown output policy 'maybe'",
        "rules[4].ssh.PermitRootLogn: 'PermitRootLogn' is not an sshd keyword",
        "rules[4].ssh.Banner: control character '\\n' is not allowed in values",
        "rules[5].kernel-cmdline.require[0]: 'a b' is not one kernel argument",
        "rules[5].kernel-cmdline.require[1]: 'init=/x' is both required and forbidden",
        "rules[6].console.serial-getty: unknown value 'off'",
        "rules[6].console.getty-auto: missing required key 'getty-auto'",
        "rules[6].console.serial-ttys[0]: 'tty/S0' is not a tty name",
        "rules[6].console.vts",
        "rules[7].accounts.root-locked: invalid type: string \"yes\", expected a boolean",
        "rules[7].accounts.no-empty-passwords: missing required key",
        "rules[8].files.setuid-allow[0]: 'usr/bin/su' is not a normalised absolute path",
        "rules[8].files.setuid-allow[1]: '/usr/../bin/x' is not a normalised absolute path",
    ];
    let mut missing = Vec::new();
    for e in expected {
        if e == "rules[6].console.vts" {
            // vts is optional: no diagnostic expected.
            assert!(!err.contains(e), "{err}");
            continue;
        }
        if !err.contains(e) {
            missing.push(e);
        }
    }
    assert!(missing.is_empty(), "missing {missing:#?} in:\n{err}");
    // Every line is `file:line:col: key: message`.
    for line in err.lines() {
        let mut parts = line.splitn(4, ':');
        assert_eq!(parts.next(), Some("policies/bad.yaml"), "{line}");
        assert!(
            parts.next().unwrap().parse::<usize>().unwrap() > 0,
            "{line}"
        );
        assert!(
            parts.next().unwrap().parse::<usize>().unwrap() > 0,
            "{line}"
        );
    }
}

#[test]
fn duplicate_ids_name_both_places() {
    let a = "rules:\n  - id: DUP-001\n    title: a\n    rationale: r\n    severity: low\n    profiles: [production]\n    controls: {sp800-53: [CM-7]}\n    masked-units: [a.service]\n";
    let b = "rules:\n  - id: OK-001\n    title: a\n    rationale: r\n    severity: low\n    profiles: [production]\n    controls: {sp800-53: [CM-7]}\n    masked-units: [b.service]\n  - id: DUP-001\n    title: b\n    rationale: r\n    severity: low\n    profiles: [production]\n    controls: {sp800-53: [CM-7]}\n    masked-units: [c.service]\n";
    let p = project(&[("a", a), ("b", b)]);
    let err = load_policies(p.path(), &names(&["a", "b"]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "policies/b.yaml:9:9: rules[1].id: duplicate rule id 'DUP-001' (also at policies/a.yaml:2)"
    );
    // Within one file too.
    let p = project(&[("a", &format!("{a}{}", &a[7..]))]);
    let err = load_policies(p.path(), &names(&["a"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("duplicate rule id 'DUP-001' (also at policies/a.yaml:2)"),
        "{err}"
    );
}

#[test]
fn unknown_control_ids_are_diagnostics() {
    let text = "rules:\n  - id: C-001\n    title: a\n    rationale: r\n    severity: low\n    profiles: [production]\n    controls:\n      sp800-53: [XY-7, SC-7(5)(a), AC-17]\n      iec62443-4-2: [EDR 3.14, FR 7.7, CR 7.6 RE1]\n    masked-units: [a.service]\n";
    let p = project(&[("c", text)]);
    let err = load_policies(p.path(), &names(&["c"]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "policies/c.yaml:8:18: rules[0].controls.sp800-53[0]: unknown sp800-53 control 'XY-7' (expected a control such as AC-17, SC-7(5) or CM-7(a))\n\
         policies/c.yaml:9:32: rules[0].controls.iec62443-4-2[1]: unknown iec62443-4-2 control 'FR 7.7' (expected a requirement such as CR 7.7, EDR 3.14 or CR 7.6 RE1)"
    );
}

#[test]
fn missing_and_malformed_files() {
    let p = project(&[
        ("syntax", "rules: [\n"),
        ("list", "rules: {a: 1}\n"),
        ("empty", ""),
    ]);
    let err = load_policies(
        p.path(),
        &names(&["nope", "syntax", "list", "empty", "../x"]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("policies/nope.yaml: cannot read"), "{err}");
    assert!(err.contains("policies/syntax.yaml:"), "{err}");
    assert!(err.contains("invalid yaml"), "{err}");
    assert!(
        err.contains("policies/list.yaml:1:8: rules: must be a list, found a mapping"),
        "{err}"
    );
    assert!(
        err.contains("policies/empty.yaml:1:1: the document must be a mapping"),
        "{err}"
    );
    assert!(err.contains("'../x' is not a policy name"), "{err}");
}

#[test]
fn shipped_baseline_loads_and_covers_every_setting_kind() {
    let rules = common::baseline();
    let kinds: BTreeSet<&str> = rules.iter().map(|r| r.setting.kind()).collect();
    let all: BTreeSet<&str> = SETTING_KINDS.iter().copied().collect();
    assert_eq!(kinds, all);
    // Ids are unique and every rule is mapped and explained.
    let ids: BTreeSet<&str> = rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), rules.len());
    for r in &rules {
        assert!(r.rationale.len() > 80, "{} has a thin rationale", r.id);
        assert!(!r.controls.sp800_53.is_empty(), "{} lacks SP 800-53", r.id);
        assert!(
            !r.controls.iec62443_4_2.is_empty(),
            "{} lacks IEC 62443-4-2",
            r.id
        );
        assert!(!r.controls.fda_premarket.is_empty(), "{} lacks FDA", r.id);
    }
    // And the rules do not contradict each other.
    let diags = slotsmith_policy::lint(&rules, &[]);
    assert!(diags.is_empty(), "{diags:#?}");
}

#[test]
fn waivers_need_a_justification_and_an_approver() {
    let text = "waivers:\n  - rule: NET-MOD-002\n    justification: the device has a Wi-Fi module (risk file RF-12)\n    approver: J. Doe, security officer\n  - rule: SSH-001\n    justification: \"  \"\n    approver: x\n  - rule: bad\n    approver: y\n  - rule: NET-MOD-002\n    justification: again\n    approver: z\n    until: never\n";
    let doc = Doc::parse(Path::new("images/x.yaml"), text).unwrap();
    let mut r = Reader::new(&doc);
    let v = doc.value.get("waivers").unwrap();
    let w = read_waivers(&mut r, v);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].rule, "NET-MOD-002");
    assert_eq!(w[0].approver, "J. Doe, security officer");
    let text = r.diags.sorted().to_string();
    assert_eq!(
        text,
        "images/x.yaml:6:20: waivers[1].justification: justification must not be empty\n\
         images/x.yaml:8:9: waivers[2].justification: missing required key 'justification'\n\
         images/x.yaml:8:11: waivers[2].rule: 'bad' is not a rule id\n\
         images/x.yaml:10:11: waivers[3].rule: rule 'NET-MOD-002' is waived twice\n\
         images/x.yaml:13:5: waivers[3].until: unknown key 'until' (expected one of: rule, justification, approver)"
    );
}

/// Asserts that `rendered` holds no control or format character other
/// than the newlines between diagnostics.
fn assert_clean(rendered: &str) {
    for line in rendered.split('\n') {
        let bad: Vec<char> = line
            .chars()
            .filter(|&c| c != '\\' && slotsmith_yaml::escape::needs_escape(c))
            .collect();
        assert!(bad.is_empty(), "raw {bad:?} in rendered line {line:?}");
    }
}

#[test]
fn hostile_bytes_in_a_policy_reach_diagnostics_only_escaped() {
    // An erase-screen, a right-to-left override and a C1 CSI in a rule id,
    // an unknown key, a sysctl key and a unit name.
    let h = r#"\e[2J\u202E\x9b31m"#;
    let text = format!(
        "rules:\n  - id: \"T-{h}\"\n    title: t\n    rationale: r\n    severity: high\n    profiles: [production]\n    controls: {{sp800-53: [CM-6]}}\n    \"x{h}\": 1\n    sysctl: {{\"net.{h}\": 1}}\n  - id: T-UNIT-001\n    title: t\n    rationale: r\n    severity: high\n    profiles: [production]\n    controls: {{sp800-53: [CM-6]}}\n    masked-units: [\"a{h}.service\"]\n"
    );
    let err = slotsmith_policy::load::parse_policy("policies/h.yaml", &text).unwrap_err();
    assert!(err.len() >= 4, "{err}");
    let rendered = err.to_string();
    assert_clean(&rendered);
    assert!(rendered.contains("\\x1b[2J"), "{rendered}");
    assert!(rendered.contains("\\u{202e}"), "{rendered}");
}

#[test]
fn oversize_policy_files_are_refused_naming_the_file_and_limit() {
    let big = format!("rules: []\n{}", "# padding\n".repeat(200_000));
    let p = project(&[("big", &big)]);
    let start = std::time::Instant::now();
    let err = load_policies(p.path(), &names(&["big"]))
        .unwrap_err()
        .to_string();
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(
        err,
        "policies/big.yaml: is larger than the 1 MiB limit for this input"
    );
}

#[test]
fn ten_thousand_unknown_keys_give_fifty_diagnostics_and_a_count() {
    let mut text = String::from("rules: []\n");
    for i in 0..10_000 {
        text.push_str(&format!("k{i:05}: 1\n"));
    }
    let err = slotsmith_policy::load::parse_policy("policies/many.yaml", &text).unwrap_err();
    assert_eq!(err.len(), 10_000);
    let rendered = err.to_string();
    let lines: Vec<&str> = rendered.lines().collect();
    assert_eq!(lines.len(), 51, "{rendered}");
    assert!(
        lines[0].starts_with("policies/many.yaml:2:1: k00000: unknown key"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[50], "... and 9950 more problem(s)");
}

#[test]
fn duplicate_keys_bom_and_bad_utf8_have_exact_positions() {
    let dup = "rules:\n  - id: T-A-001\n    title: a\n    title: b\n";
    let err = slotsmith_policy::load::parse_policy("policies/d.yaml", dup)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "policies/d.yaml:4:5: rules[0].title: duplicate key 'title' (first at line 3)"
    );
    let p = project(&[("bom", &format!("\u{feff}{GOOD}"))]);
    let rules = load_policies(p.path(), &names(&["bom"])).unwrap();
    assert_eq!(rules[0].line, 3);
    let dir = project(&[]);
    std::fs::write(
        dir.path().join("policies/bad.yaml"),
        b"rules:\n  - id: T-\xff\n",
    )
    .unwrap();
    let err = load_policies(dir.path(), &names(&["bad"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("policies/bad.yaml:2:11: not valid UTF-8 (bytes \\xff)"),
        "{err}"
    );
}

#[test]
fn sysctl_and_sshd_maps_share_their_key_and_value_rules() {
    let text = "rules:
  - id: T-SSH-001
    title: ssh
    rationale: r
    severity: low
    profiles: [production]
    controls: {sp800-53: [AC-17]}
    ssh: {PermitRootLogin: \"no\", permitrootlogin: \"no\", MaxAuthTries: \"3 # x\"}
  - id: T-SSH-002
    title: empty ssh
    rationale: r
    severity: low
    profiles: [production]
    controls: {sp800-53: [AC-17]}
    ssh: {}
  - id: T-SYS-001
    title: empty sysctl
    rationale: r
    severity: low
    profiles: [production]
    controls: {sp800-53: [SC-7]}
    sysctl: {}
";
    let p = project(&[("kv", text)]);
    let err = load_policies(p.path(), &names(&["kv"]))
        .unwrap_err()
        .to_string();
    for want in [
        "rules[0].ssh.permitrootlogin: 'permitrootlogin' is set twice (sshd keywords ignore case)",
        "rules[0].ssh.MaxAuthTries: '3 # x' is not an sshd value (printable, no '#', ';' or quotes)",
        "rules[1].ssh: set at least one keyword",
        "rules[2].sysctl: set at least one key",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}
