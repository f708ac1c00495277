//! Hardening on a fixture image: the shipped baseline in the production
//! profile passes the audit of the built image, and a layer that breaks a
//! setting after the policies applied makes the build fail and name the
//! rule. (The default image's checks with nft, systemctl and
//! systemd-analyze are in `demo.rs`, on a real Debian rootfs.)

use std::fs;

use crate::support::*;

fn project(extra_layer_yaml: Option<&str>, layer_file: Option<(&str, &str)>) -> (Project, CliRun) {
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    for e in fs::read_dir(repo_root().join("policies")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), p.path().join("policies").join(e.file_name())).unwrap();
    }
    let mut layers = Vec::new();
    if let Some(y) = extra_layer_yaml {
        layer(&p, "meta-product", "product", 7, y);
        if let Some((path, text)) = layer_file {
            p.write(&format!("layers/meta-product/files{path}"), text);
        }
        layers.push("meta-product");
    }
    let image = fixture_image("hard", "fixtures/base.tar.gz", &layers, "squashfs", "16MiB")
        + "profile: production\npolicies: [network, kernel, services, ssh, accounts, files]\n";
    p.write("images/hard.yaml", &image);
    let out = p.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let r = slotsmith(
        &[
            "build",
            p.image("hard").to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--work-dir",
            p.path().join("work").to_str().unwrap(),
            "--quiet",
        ],
        &[],
        false,
        None,
    );
    (p, r)
}

#[test]
fn baseline_passes_and_reports_are_written() {
    let (p, r) = project(None, None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = p.path().join("out/hard");
    let md = fs::read_to_string(dir.join("audit/report.md")).unwrap();
    assert!(md.contains("Result: **PASSED**"), "{md}");
    assert!(
        md.contains("| FILES-PERM-001 |") && md.contains("CR 7.7"),
        "per-rule table and control view"
    );
    let sarif: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("audit/report.sarif")).unwrap()).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(
        sarif["runs"][0]["results"].as_array().unwrap().len(),
        0,
        "no failures"
    );
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("audit/report.json")).unwrap()).unwrap();
    assert_eq!(json["summary"]["fail"], 0);
    // The setuid bit the base gave su was cleared (FILES-PERM-001), as the
    // independent unsquashfs sees it.
    let ls = run(
        "unsquashfs",
        &["-lln", dir.join("rootfs.squashfs").to_str().unwrap()],
    );
    let su = ls
        .lines()
        .find(|l| l.ends_with("squashfs-root/usr/bin/su"))
        .unwrap();
    assert!(su.starts_with("-rwxr-xr-x 0/0"), "{su}");
    // cargo xtask audit re-reads the image and agrees with the build byte
    // for byte, without changing the published build.
    let before: Vec<(String, String)> = walkdir::WalkDir::new(&dir)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().display().to_string(), sha256(e.path())))
        .collect();
    let reports = p.path().join("reaudit");
    let r = slotsmith(
        &[
            "audit",
            dir.to_str().unwrap(),
            "--image",
            p.image("hard").to_str().unwrap(),
            "--report-dir",
            reports.to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    for f in ["report.md", "report.json", "report.sarif"] {
        assert_eq!(
            fs::read(reports.join(f)).unwrap(),
            fs::read(dir.join("audit").join(f)).unwrap(),
            "{f} of cargo xtask audit differs from the build's"
        );
    }
    let after: Vec<(String, String)> = walkdir::WalkDir::new(&dir)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().display().to_string(), sha256(e.path())))
        .collect();
    assert_eq!(
        before, after,
        "cargo xtask audit changed the published build"
    );
    // The reports may not be written into the build itself.
    let r = slotsmith(
        &[
            "audit",
            dir.to_str().unwrap(),
            "--image",
            p.image("hard").to_str().unwrap(),
            "--report-dir",
            dir.join("audit").to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    // A manifest edited after the build is refused, not trusted for the
    // command line.
    let m = dir.join("boot-a.manifest");
    let text = fs::read_to_string(&m).unwrap().replace(" ro\n", " rw\n");
    fs::write(&m, text).unwrap();
    let r = slotsmith(
        &[
            "audit",
            dir.to_str().unwrap(),
            "--image",
            p.image("hard").to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("boot-a.manifest"), "{}", r.stderr);
}

#[test]
fn a_layer_that_breaks_hardening_fails_the_build_and_names_the_rule() {
    // (what, layer yaml, layer file, a rule that must be named, how many
    // rules fail: every sysctl rule lives in the dropped file).
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, &'a str, usize);
    let cases: Vec<Case> = vec![
        (
            "re-enables a masked service",
            "files:\n  /etc/systemd/system/multi-user.target.wants/avahi-daemon.service:\n    type: symlink\n    target: /lib/systemd/system/avahi-daemon.service\n",
            None,
            "SVC-MASK-001",
            1,
        ),
        ("drops the sysctl file", "remove:\n  - /etc/sysctl.d/99-zz-slotsmith.conf\n", None, "NET-SYSCTL-001", 14),
        (
            "adds a world-writable file",
            "files:\n  /etc/product.conf:\n    mode: \"0666\"\n",
            Some(("/etc/product.conf", "x=1\n")),
            "FILES-PERM-001",
            1,
        ),
    ];
    for (what, yaml, file, rule, count) in cases {
        let (p, r) = project(Some(yaml), file);
        assert_eq!(r.code, 1, "{what}: the build passed:\n{}", r.stderr);
        let head = format!("the hardening audit failed {count} rule(s) without a waiver");
        assert!(
            r.stderr.contains(&head),
            "{what}: expected {head:?} in:\n{}",
            r.stderr
        );
        assert!(
            r.stderr.contains(&format!("  {rule}: ")),
            "{what}: expected rule {rule} in:\n{}",
            r.stderr
        );
        // Nothing was published, but the report is kept for review.
        assert!(!p.path().join("out/hard").exists(), "{what}");
        let kept = fs::read_to_string(p.path().join("work/hard/audit-report/report.md")).unwrap();
        assert!(
            kept.contains("Result: **FAILED**") && kept.contains(rule),
            "{what}"
        );
    }
}

#[test]
fn lint_finds_conflicts_with_file_and_line() {
    // The repository itself is clean.
    let r = slotsmith(&["lint"], &[], false, None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A layer overriding a policy-managed file, a sysctl set to two values
    // and a port opened for a masked service.
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    p.write(
        "policies/extra.yaml",
        r#"rules:
  - id: EXTRA-001
    title: Faster forwarding
    rationale: A router build forwards packets.
    severity: low
    profiles: [development]
    controls:
      sp800-53: [CM-6]
    sysctl:
      net.ipv4.ip_forward: "1"
  - id: EXTRA-002
    title: Web console
    rationale: The service console listens on 80.
    severity: low
    profiles: [development]
    controls:
      sp800-53: [CM-7]
    firewall:
      input:
        - service: apache2.service
          port: 80
          protocol: tcp
      icmp: true
      log-drops: true
      output: accept
"#,
    );
    for e in fs::read_dir(repo_root().join("policies")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), p.path().join("policies").join(e.file_name())).unwrap();
    }
    layer(&p, "meta-x", "x", 5, "");
    p.write("layers/meta-x/files/etc/nftables.conf", "flush ruleset\n");
    let image = fixture_image(
        "l",
        "fixtures/base.tar.gz",
        &["meta-x"],
        "squashfs",
        "16MiB",
    ) + "policies: [network, services, extra]\n";
    p.write("images/l.yaml", &image);
    let r = slotsmith(
        &["lint", "--root", p.path().to_str().unwrap()],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    for want in [
        "policies/extra.yaml:",
        "EXTRA-001",
        "net.ipv4.ip_forward",
        "apache2.service",
        "/etc/nftables.conf",
    ] {
        assert!(
            r.stderr.contains(want),
            "expected {want:?} in:\n{}",
            r.stderr
        );
    }
    assert!(
        r.stderr.lines().all(|l| l.starts_with("error:")
            || l.split(':')
                .nth(1)
                .is_some_and(|n| n.parse::<usize>().is_ok())),
        "every finding has file:line:\n{}",
        r.stderr
    );
}

#[test]
fn a_waiver_turns_a_failure_into_a_documented_exception() {
    // The same world-writable file, now with an approved waiver: the build
    // passes and the report shows the rule as waived, with who and why.
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    for e in fs::read_dir(repo_root().join("policies")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), p.path().join("policies").join(e.file_name())).unwrap();
    }
    layer(
        &p,
        "meta-product",
        "product",
        7,
        "files:\n  /etc/product.conf:\n    mode: \"0666\"\n",
    );
    p.write("layers/meta-product/files/etc/product.conf", "x=1\n");
    let image = fixture_image("w", "fixtures/base.tar.gz", &["meta-product"], "squashfs", "16MiB")
        + "profile: production\npolicies: [files]\nwaivers:\n  - rule: FILES-PERM-001\n    \
justification: The product's calibration tool rewrites /etc/product.conf as any user until release 2.2.\n    \
approver: QA lead, change request CR-1234\n";
    p.write("images/w.yaml", &image);
    let out = p.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let r = slotsmith(
        &[
            "build",
            p.image("w").to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--work-dir",
            p.path().join("work").to_str().unwrap(),
            "--quiet",
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let md = fs::read_to_string(out.join("w/audit/report.md")).unwrap();
    assert!(
        md.contains("FILES-PERM-001") && md.contains("WAIVED"),
        "{md}"
    );
    assert!(
        md.contains("CR-1234") && md.contains("calibration tool"),
        "the waiver's approver and justification are in the report"
    );
    let sarif: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("w/audit/report.sarif")).unwrap())
            .unwrap();
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert!(
        results
            .iter()
            .any(|r| r["ruleId"] == "FILES-PERM-001" && r["suppressions"].is_array()),
        "{results:?}"
    );
    // A waiver for a rule that does not exist is an input error.
    p.write(
        "images/w.yaml",
        &image.replace("rule: FILES-PERM-001", "rule: FILES-PERM-999"),
    );
    let r = slotsmith(&["plan", p.image("w").to_str().unwrap()], &[], false, None);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("waivers[0].rule: no rule 'FILES-PERM-999'"),
        "{}",
        r.stderr
    );
}

#[test]
fn ext4_rootfs_is_audited_from_the_image() {
    // The same baseline on an ext4 rootfs: the audit reads the ext4 image
    // back, so the modes the debugfs fix-ups stored are what it sees.
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    for e in fs::read_dir(repo_root().join("policies")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), p.path().join("policies").join(e.file_name())).unwrap();
    }
    let image = fixture_image("e4", "fixtures/base.tar.gz", &[], "ext4", "16MiB")
        + "profile: production\npolicies: [network, kernel, services, ssh, accounts, files]\n";
    p.write("images/e4.yaml", &image);
    let out = p.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let r = slotsmith(
        &[
            "build",
            p.image("e4").to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--work-dir",
            p.path().join("work").to_str().unwrap(),
            "--quiet",
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("e4/audit/report.json")).unwrap())
            .unwrap();
    assert_eq!(json["summary"]["fail"], 0);
    // Break the image after the build: make /etc/passwd world-writable in
    // the ext4 image itself; the audit must see it.
    let rootfs = out.join("e4/rootfs.ext4");
    run(
        "debugfs",
        &[
            "-w",
            "-R",
            "sif /etc/passwd mode 0100666",
            rootfs.to_str().unwrap(),
        ],
    );
    let r = slotsmith(
        &[
            "audit",
            out.join("e4").to_str().unwrap(),
            "--image",
            p.image("e4").to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("FILES-PERM-001") && r.stderr.contains("/etc/passwd"),
        "{}",
        r.stderr
    );
}
