//! Conflicts between rules and with layer files, each naming the rule's
//! policy file and line.

mod common;

use slotsmith_policy::lint;
use slotsmith_policy::load_policies;

#[test]
fn conflicts_are_found_and_located() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    let text = "rules:
  - id: A-FW-001
    title: fw
    rationale: r
    severity: high
    profiles: [production]
    controls: {sp800-53: [SC-7]}
    firewall:
      input: [{service: avahi-daemon, port: 5353, protocol: udp}]
      icmp: true
      log-drops: true
      output: accept
  - id: A-SVC-001
    title: mask
    rationale: r
    severity: high
    profiles: [production, development]
    controls: {sp800-53: [CM-7]}
    masked-units: [avahi-daemon.service, nftables.service]
  - id: A-SYS-001
    title: one
    rationale: r
    severity: low
    profiles: [production]
    controls: {sp800-53: [CM-6]}
    sysctl: {net.ipv4.ip_forward: 0}
  - id: A-SYS-002
    title: two
    rationale: r
    severity: low
    profiles: [production]
    controls: {sp800-53: [CM-6]}
    sysctl: {net.ipv4.ip_forward: 1}
  - id: A-SYS-003
    title: other profile
    rationale: r
    severity: low
    profiles: [development]
    controls: {sp800-53: [CM-6]}
    sysctl: {net.ipv4.ip_forward: 1}
  - id: A-ACC-001
    title: acc
    rationale: r
    severity: low
    profiles: [production]
    controls: {sp800-53: [AC-2]}
    accounts: {root-locked: true, no-empty-passwords: false, single-uid0: false}
";
    std::fs::write(dir.path().join("policies/a.yaml"), text).unwrap();
    let rules = load_policies(dir.path(), &["a".to_string()]).unwrap();
    let layer = vec![
        (
            "/etc/nftables.conf".to_string(),
            "layers/meta-demo/conf/layer.yaml:12".to_string(),
        ),
        (
            "/etc/shadow".to_string(),
            "layers/meta-demo/conf/layer.yaml:20".to_string(),
        ),
        (
            "/etc/sysctl.d/99-zz-slotsmith.conf".to_string(),
            "layers/meta-demo/conf/layer.yaml:30".to_string(),
        ),
        (
            "/etc/motd".to_string(),
            "layers/meta-demo/conf/layer.yaml:40".to_string(),
        ),
    ];
    let out: Vec<String> = lint(&rules, &layer).iter().map(|d| d.to_string()).collect();
    assert_eq!(
        out,
        [
            "policies/a.yaml:2: A-FW-001: allows 5353/udp for avahi-daemon.service, which A-SVC-001 (policies/a.yaml:13) masks",
            "policies/a.yaml:2: A-FW-001: layers/meta-demo/conf/layer.yaml:12 writes /etc/nftables.conf, which this rule manages; the policy's version replaces it (change the policy or waive the rule instead)",
            "policies/a.yaml:13: A-SVC-001: masks nftables.service, so the ruleset of A-FW-001 (policies/a.yaml:2) never loads",
            "policies/a.yaml:20: A-SYS-001: layers/meta-demo/conf/layer.yaml:30 writes /etc/sysctl.d/99-zz-slotsmith.conf, which this rule manages; the policy's version replaces it (change the policy or waive the rule instead)",
            "policies/a.yaml:27: A-SYS-002: sets sysctl net.ipv4.ip_forward to 1, but A-SYS-001 (policies/a.yaml:20) sets it to 0",
            "policies/a.yaml:41: A-ACC-001: layers/meta-demo/conf/layer.yaml:20 writes /etc/shadow, which this rule manages; the policy's version replaces it (change the policy or waive the rule instead)",
        ]
    );
}
