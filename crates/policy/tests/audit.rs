//! Auditing a Debian-like rootfs: the baseline passes once its generated
//! settings are applied, and each way an image can silently lose a setting
//! makes the audit fail naming the rule and the offending path or value.

mod common;

use std::collections::BTreeSet;

use slotsmith_policy::audit::{audit, Status};
use slotsmith_policy::model::{Profile, Waiver};
use slotsmith_policy::rootfs::MemRootfs;
use slotsmith_policy::{generate, Report};

/// The Debian-like rootfs with the production baseline applied, and the
/// command line the image would boot with.
fn hardened() -> (MemRootfs, String) {
    let rules = common::baseline();
    let mut fs = common::debian_like();
    let g = generate(&rules, Profile::Production, &BTreeSet::new(), &fs).unwrap();
    fs.apply(&g);
    let cmdline = common::good_cmdline(&g.cmdline);
    (fs, cmdline)
}

fn run(fs: &MemRootfs, cmdline: &str) -> Report {
    audit(&common::baseline(), Profile::Production, &[], fs, cmdline)
}

fn failed(r: &Report) -> Vec<String> {
    r.results
        .iter()
        .filter(|x| x.status == Status::Fail)
        .map(|x| x.message.clone())
        .collect()
}

/// Asserts that exactly `rule` fails and that its message names `needle`.
fn fails_with(r: &Report, rule: &str, needle: &str) {
    let f = failed(r);
    assert_eq!(f.len(), 1, "expected only {rule} to fail, got {f:#?}");
    assert!(f[0].starts_with(&format!("{rule}: ")), "{f:#?}");
    assert!(
        f[0].contains(needle),
        "{rule} message lacks '{needle}': {}",
        f[0]
    );
}

#[test]
fn baseline_passes_after_applying_generated_settings() {
    let (fs, cmdline) = hardened();
    let r = run(&fs, &cmdline);
    assert_eq!(failed(&r), Vec::<String>::new());
    assert_eq!(r.summary.pass, r.summary.total);
    // Evidence carries the hash of the file as in the image.
    let sysctl = r
        .results
        .iter()
        .find(|x| x.id == "KERNEL-SYSCTL-005")
        .unwrap();
    let fifos = sysctl
        .evidence
        .iter()
        .find(|e| e.value.starts_with("fs.protected_fifos"))
        .unwrap();
    assert_eq!(fifos.path, "/etc/sysctl.d/99-zz-slotsmith.conf");
    assert_eq!(fifos.value, "fs.protected_fifos = 2");
    assert_eq!(fifos.sha256.as_ref().unwrap().len(), 64);
    // Development rules are all production rules too; nothing is n/a here,
    // but in development the production-only rules are.
    let dev = audit(
        &common::baseline(),
        Profile::Development,
        &[],
        &fs,
        &cmdline,
    );
    let na: Vec<&str> = dev
        .results
        .iter()
        .filter(|x| x.status == Status::NotApplicable)
        .map(|x| x.id.as_str())
        .collect();
    assert_eq!(
        na,
        [
            "KERNEL-CMDLINE-002",
            "KERNEL-CMDLINE-004",
            "SVC-CONSOLE-001",
            "SVC-DEBUG-001"
        ]
    );
}

#[test]
fn unhardened_debian_fails_on_the_known_traps() {
    let fs = common::debian_like();
    let r = run(&fs, "root=/dev/sda2 console=ttyS0,115200");
    let f = failed(&r).join("\n");
    // procps's 99-protect-links.conf sets fifos=1 and nothing overrides it.
    assert!(f.contains("KERNEL-SYSCTL-005: fs.protected_fifos is 1 from /usr/lib/sysctl.d/99-protect-links.conf:1"), "{f}");
    // The stock ruleset accepts everything.
    assert!(f.contains("NET-FW-001: /etc/nftables.conf: chain inet filter input on hook input has policy accept, not drop"), "{f}");
    // Debian's sshd_config does not set PermitRootLogin at all.
    assert!(
        f.contains("SSH-001: sshd HostbasedAuthentication is not set"),
        "{f}"
    );
    assert!(f.contains("getty@tty1.service is enabled by /etc/systemd/system/getty.target.wants/getty@tty1.service"), "{f}");
    assert!(
        f.contains("FILES-PERM-001: /usr/bin/chage is setgid (mode 2755)"),
        "{f}"
    );
}

#[test]
fn later_sysctl_file_overriding_a_value_fails() {
    let (mut fs, cmdline) = hardened();
    fs.file(
        "/etc/sysctl.d/99-zzz-override.conf",
        0o644,
        "net.ipv4.ip_forward = 1\n",
    );
    fails_with(
        &run(&fs, &cmdline),
        "NET-SYSCTL-001",
        "net.ipv4.ip_forward is 1 from /etc/sysctl.d/99-zzz-override.conf:1",
    );
}

#[test]
fn sysctl_unset_by_a_later_minus_line_fails() {
    let (mut fs, cmdline) = hardened();
    fs.file("/run/sysctl.d/zzzz.conf", 0o644, "-kernel.kptr_restrict\n");
    fails_with(
        &run(&fs, &cmdline),
        "KERNEL-SYSCTL-001",
        "kernel.kptr_restrict is (unset by '-key') from /run/sysctl.d/zzzz.conf:1",
    );
}

#[test]
fn sysctl_file_shadowed_by_an_earlier_directory_fails() {
    // A same-named file in /etc masks the vendor one; ours in /usr/lib
    // would then never be read.
    let (mut fs, cmdline) = hardened();
    let ours = fs_read(&fs, "/etc/sysctl.d/99-zz-slotsmith.conf");
    fs.remove("/etc/sysctl.d/99-zz-slotsmith.conf");
    fs.file("/usr/lib/sysctl.d/99-zz-slotsmith.conf", 0o644, ours);
    assert!(failed(&run(&fs, &cmdline)).is_empty());
    fs.symlink("/etc/sysctl.d/99-zz-slotsmith.conf", "/dev/null");
    let r = run(&fs, &cmdline);
    let f = failed(&r);
    assert!(
        f.iter().all(|m| m.contains("is missing or lacks it")
            || m.contains(" is 1 from")
            || m.contains("from /usr/lib")),
        "{f:#?}"
    );
    assert!(
        f.iter()
            .any(|m| m.starts_with("NET-SYSCTL-001: net.ipv4.ip_forward is not set")),
        "{f:#?}"
    );
}

fn fs_read(fs: &MemRootfs, p: &str) -> Vec<u8> {
    use slotsmith_policy::RootfsRead;
    fs.read(p).unwrap().unwrap()
}

#[test]
fn dropped_sysctl_file_fails() {
    let (mut fs, cmdline) = hardened();
    fs.remove("/etc/sysctl.d/99-zz-slotsmith.conf");
    let f = failed(&run(&fs, &cmdline));
    assert!(
        f.iter().any(|m| m
            .starts_with("NET-SYSCTL-001: net.ipv4.ip_forward is not set by any sysctl.d file")),
        "{f:#?}"
    );
    assert!(f.iter().any(|m| m.starts_with("KERNEL-SYSCTL-005: fs.protected_fifos is 1 from /usr/lib/sysctl.d/99-protect-links.conf")), "{f:#?}");
    // systemd's 50-default.conf says sysrq = 0x01b6.
    assert!(
        f.iter().any(|m| m.contains("kernel.sysrq is 0x01b6")),
        "{f:#?}"
    );
}

#[test]
fn wants_link_re_enabling_a_masked_service_fails() {
    let (mut fs, cmdline) = hardened();
    fs.symlink(
        "/etc/systemd/system/multi-user.target.wants/avahi-daemon.service",
        "/lib/systemd/system/avahi-daemon.service",
    );
    fails_with(&run(&fs, &cmdline), "SVC-MASK-001", "avahi-daemon.service is enabled by /etc/systemd/system/multi-user.target.wants/avahi-daemon.service");
    // A layer replacing the mask with a unit file fails too.
    let (mut fs, cmdline) = hardened();
    fs.remove("/etc/systemd/system/debug-shell.service");
    fs.file(
        "/etc/systemd/system/debug-shell.service",
        0o644,
        "[Service]\nExecStart=/bin/sh\n",
    );
    fails_with(
        &run(&fs, &cmdline),
        "SVC-DEBUG-001",
        "debug-shell.service is not masked: /etc/systemd/system/debug-shell.service is unit file",
    );
}

#[test]
fn world_writable_file_fails() {
    let (mut fs, cmdline) = hardened();
    fs.file("/etc/app/config.ini", 0o666, "x=1");
    fails_with(
        &run(&fs, &cmdline),
        "FILES-PERM-001",
        "/etc/app/config.ini is world-writable (mode 0666)",
    );
    let (mut fs, cmdline) = hardened();
    fs.dir("/var/spool/drop", 0o777);
    fails_with(
        &run(&fs, &cmdline),
        "FILES-PERM-001",
        "/var/spool/drop is world-writable directory without the sticky bit",
    );
}

#[test]
fn extra_setuid_binary_fails() {
    let (mut fs, cmdline) = hardened();
    fs.file("/usr/local/bin/helper", 0o4755, "ELF");
    fails_with(
        &run(&fs, &cmdline),
        "FILES-PERM-001",
        "/usr/local/bin/helper is setuid (mode 4755) and not on the allow-list",
    );
}

#[test]
fn root_with_an_empty_password_fails() {
    let (mut fs, cmdline) = hardened();
    fs.file_owned(
        "/etc/shadow",
        0o640,
        0,
        42,
        "root::19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
    );
    let f = failed(&run(&fs, &cmdline));
    assert_eq!(f.len(), 2, "{f:#?}");
    assert!(
        f[0].starts_with("ACCT-001: root has an empty password in /etc/shadow"),
        "{f:#?}"
    );
    assert!(
        f[1].starts_with("ACCT-002: account root (/etc/shadow) has an empty password field"),
        "{f:#?}"
    );
}

#[test]
fn second_uid0_account_fails() {
    let (mut fs, cmdline) = hardened();
    let passwd = format!("{}toor:x:0:0::/root:/bin/sh\n", common::PASSWD);
    fs.file("/etc/passwd", 0o644, passwd);
    fails_with(
        &run(&fs, &cmdline),
        "ACCT-003",
        "account toor has UID 0 in /etc/passwd",
    );
}

#[test]
fn sshd_first_value_and_match_blocks() {
    // A drop-in sorting before ours wins.
    let (mut fs, cmdline) = hardened();
    fs.file(
        "/etc/ssh/sshd_config.d/00-aaa.conf",
        0o600,
        "PermitRootLogin yes\n",
    );
    fails_with(
        &run(&fs, &cmdline),
        "SSH-001",
        "sshd PermitRootLogin is 'yes' from /etc/ssh/sshd_config.d/00-aaa.conf:1",
    );
    // A setting before the Include in the main file wins.
    let (mut fs, cmdline) = hardened();
    fs.file(
        "/etc/ssh/sshd_config",
        0o644,
        format!("PasswordAuthentication yes\n{}", common::SSHD_CONFIG),
    );
    fails_with(
        &run(&fs, &cmdline),
        "SSH-002",
        "sshd PasswordAuthentication is 'yes' from /etc/ssh/sshd_config:1",
    );
    // A Match block weakening a managed keyword.
    let (mut fs, cmdline) = hardened();
    fs.file(
        "/etc/ssh/sshd_config",
        0o644,
        format!(
            "{}Match User service\n  AllowTcpForwarding yes\n",
            common::SSHD_CONFIG
        ),
    );
    fails_with(&run(&fs, &cmdline), "SSH-004", "sshd AllowTcpForwarding is 'yes' at /etc/ssh/sshd_config:13 inside Match User service (/etc/ssh/sshd_config:12)");
    // No sshd at all: nothing to harden.
    let (mut fs, cmdline) = hardened();
    fs.remove("/etc/ssh").remove("/usr/sbin/sshd");
    let r = run(&fs, &cmdline);
    assert!(failed(&r).is_empty(), "{:#?}", failed(&r));
}

#[test]
fn modules_firewall_and_cmdline_failures_name_the_rule() {
    let (mut fs, cmdline) = hardened();
    fs.file(
        "/etc/modprobe.d/00-aaa.conf",
        0o644,
        "install sctp /sbin/modprobe --ignore-install sctp\n",
    );
    fails_with(&run(&fs, &cmdline), "NET-MOD-001", "module sctp is loadable: first install command is '/sbin/modprobe --ignore-install sctp' at /etc/modprobe.d/00-aaa.conf:1");

    let (mut fs, cmdline) = hardened();
    fs.remove("/etc/systemd/system/sysinit.target.wants/nftables.service");
    fails_with(
        &run(&fs, &cmdline),
        "NET-FW-001",
        "nftables.service is not enabled",
    );

    let (mut fs, cmdline) = hardened();
    let text = String::from_utf8(fs_read(&fs, "/etc/nftables.conf")).unwrap();
    fs.file(
        "/etc/nftables.conf",
        0o755,
        text.replace(
            "\t\tcounter drop\n\t}\n\n\tchain forward",
            "\t\ttcp dport 8080 accept\n\t\tcounter drop\n\t}\n\n\tchain forward",
        ),
    );
    fails_with(
        &run(&fs, &cmdline),
        "NET-FW-001",
        "input accepts tcp port 8080, which is not on the allow-list",
    );

    let (fs, cmdline) = hardened();
    let r = run(
        &fs,
        &format!("{cmdline} init_on_free=0 systemd.debug_shell"),
    );
    let f = failed(&r);
    assert_eq!(f.len(), 2, "{f:#?}");
    assert!(
        f[0].starts_with(
            "KERNEL-CMDLINE-001: kernel argument init_on_free=1 required, found init_on_free=0"
        ),
        "{f:#?}"
    );
    assert!(
        f[1].starts_with("KERNEL-CMDLINE-004: forbidden kernel argument systemd.debug_shell"),
        "{f:#?}"
    );

    let (fs, _) = hardened();
    let r = run(&fs, "root=/dev/sda2 slab_nomerge init_on_alloc=1 init_on_free=1 page_alloc.shuffle=1 randomize_kstack_offset=1 module.sig_enforce=1 lockdown=integrity apparmor=1 security=apparmor audit=1 audit_backlog_limit=8192");
    fails_with(&r, "SVC-CONSOLE-001", "lacks systemd.getty_auto=0");
}

#[test]
fn waivers_are_reported_with_what_they_hide() {
    let (mut fs, cmdline) = hardened();
    fs.file("/usr/local/bin/helper", 0o4755, "ELF");
    let waivers = vec![
        Waiver {
            rule: "FILES-PERM-001".into(),
            justification: "vendor tool needs setuid; risk RF-7".into(),
            approver: "A. Reviewer".into(),
        },
        Waiver {
            rule: "NO-SUCH-001".into(),
            justification: "x".into(),
            approver: "y".into(),
        },
    ];
    let r = audit(
        &common::baseline(),
        Profile::Production,
        &waivers,
        &fs,
        &cmdline,
    );
    assert_eq!(r.summary.fail, 0);
    assert_eq!(r.summary.waived, 1);
    let res = r.results.iter().find(|x| x.id == "FILES-PERM-001").unwrap();
    assert_eq!(res.status, Status::Waived);
    assert!(
        res.message.contains("waived by A. Reviewer"),
        "{}",
        res.message
    );
    assert!(
        res.message.contains("/usr/local/bin/helper is setuid"),
        "{}",
        res.message
    );
    assert!(r.waivers[0].applied && r.waivers[0].would_pass == Some(false));
    assert!(!r.waivers[1].applied);
}

#[test]
fn each_setting_kind_reports_the_check_of_its_subsystem() {
    // The report tells reviewers how each rule was checked; the dispatch
    // table in audit.rs gives every kind of setting its subsystem's text.
    let rules = common::baseline();
    let (fs, cmdline) = hardened();
    let r = run(&fs, &cmdline);
    let mut by_kind: std::collections::BTreeMap<&str, BTreeSet<&str>> = Default::default();
    for res in &r.results {
        let rule = rules.iter().find(|x| x.id == res.id).unwrap();
        by_kind
            .entry(rule.setting.kind())
            .or_default()
            .insert(res.check.as_str());
    }
    let got: Vec<(&str, Vec<&str>)> = by_kind
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect();
    let want: Vec<(&str, Vec<&str>)> = vec![
        ("accounts", vec!["/etc/passwd and /etc/shadow in the image"]),
        (
            "console",
            vec!["getty units masked and kernel command line"],
        ),
        ("files", vec!["modes of every entry in the image"]),
        (
            "firewall",
            vec!["nftables ruleset in the image and nftables.service enablement"],
        ),
        (
            "forbidden-files",
            vec!["paths of every entry in the image against the forbidden patterns"],
        ),
        (
            "kernel-cmdline",
            vec!["kernel command line of the image (last value of a key wins)"],
        ),
        (
            "masked-units",
            vec!["unit linked to /dev/null in /etc/systemd/system, no enabling links"],
        ),
        (
            "modules-disabled",
            vec!["first matching modprobe.d install command per module"],
        ),
        (
            "ssh",
            vec!["effective sshd_config value (first match, Include resolved in the image)"],
        ),
        (
            "sysctl",
            vec!["effective sysctl.d value per key (systemd-sysctl order)"],
        ),
    ];
    assert_eq!(got, want);
    // The baseline exercises every kind of setting there is.
    assert_eq!(got.len(), slotsmith_policy::model::SETTING_KINDS.len());
}
