//! The host firewall: the nftables ruleset the device loads at boot.
//!
//! On the device, nftables.service (enabled by its link in
//! sysinit.target.wants) runs `nft -f /etc/nftables.conf` before the
//! network comes up. A packet goes through every base chain on its hook
//! (input, forward, output) in every table, and a base chain without a
//! `policy` accepts what its rules leave undecided, so a single chain
//! without `policy drop` on a hook is enough to let traffic through.
//!
//! The build host cannot load the ruleset into the device's kernel, so the
//! check reads its text with `crate::nft` and requires: input and forward
//! base chains, all with policy drop (output too with `output: drop`); an
//! established/related accept and a loopback accept in each dropping input
//! or output chain; accepted ports exactly the allow-list, limited to their
//! sources where the policy limits them; nothing accepted on forward; no
//! rule or `include` the reader cannot judge. The ruleset only counts if
//! boot loads it, so the enabling link must resolve to an installed
//! nftables.service that no mask in /etc/systemd/system stops.

use std::collections::BTreeMap;

use super::{outcome, Ctx, Evidence, Outcome};
use crate::apply::{NFT_ENABLE_LINK, NFT_PATH, SYSTEMD_ETC};
use crate::model::{Allow, Firewall, OutputPolicy};
use crate::nft::{self, RuleClass};
use crate::rootfs::{sha256_hex, EntryKind};

/// How the check reads the image, for the report.
pub(super) const CHECK: &str = "nftables ruleset in the image and nftables.service enablement";

/// The ruleset against the policy, and whether boot loads it.
pub(super) fn check(fw: &Firewall, ctx: &Ctx<'_>) -> Outcome {
    let mut fails = Vec::new();
    let mut ev = Vec::new();
    let Some((_, content)) = ctx.read(NFT_PATH) else {
        return Outcome {
            ok: false,
            message: format!("{NFT_PATH} is absent"),
            evidence: vec![Evidence {
                path: NFT_PATH.into(),
                sha256: None,
                value: "absent".into(),
                expected: "default-deny ruleset".into(),
            }],
        };
    };
    let sha = Some(sha256_hex(&content));
    let text = String::from_utf8_lossy(&content);
    match nft::parse(&text) {
        Err(e) => fails.push(format!("{NFT_PATH} cannot be read: {e}")),
        Ok(rs) => {
            for inc in &rs.includes {
                fails.push(format!(
                    "{NFT_PATH} includes {inc}, which the audit does not follow"
                ));
            }
            firewall_rules(fw, &rs, &sha, &mut fails, &mut ev);
        }
    }
    // The ruleset only matters if something loads it at boot.
    let link = ctx.ix.get(NFT_ENABLE_LINK).map(|e| e.kind.clone());
    let enabled = match link {
        Some(EntryKind::Symlink { target }) => {
            let real = ctx.ix.resolve(NFT_ENABLE_LINK).unwrap_or_default();
            let unit_ok = real.ends_with("/nftables.service")
                && ctx.ix.get(&real).is_some_and(|e| e.kind == EntryKind::File);
            if !unit_ok {
                fails.push(format!("{NFT_ENABLE_LINK} points to {target}, which is not an installed nftables.service"));
            }
            unit_ok
        }
        _ => {
            fails.push(format!(
                "nftables.service is not enabled: {NFT_ENABLE_LINK} is absent"
            ));
            false
        }
    };
    let mask = format!("{SYSTEMD_ETC}/nftables.service");
    if ctx.ix.get(&mask).is_some() && ctx.ix.resolve(&mask).as_deref() == Some("/dev/null") {
        fails.push(format!("nftables.service is masked by {mask}"));
    }
    ev.push(Evidence {
        path: NFT_ENABLE_LINK.into(),
        sha256: None,
        value: if enabled {
            "enabled".into()
        } else {
            "not enabled".into()
        },
        expected: "enabled".into(),
    });
    let n = fw.input.len();
    outcome(fails, format!("input and forward default to drop; {n} allowed inbound services match the policy; nftables.service enabled"), ev)
}

type PortSet = BTreeMap<(String, u16), bool /* all rules restricted */>;

fn firewall_rules(
    fw: &Firewall,
    rs: &nft::Ruleset,
    sha: &Option<String>,
    fails: &mut Vec<String>,
    ev: &mut Vec<Evidence>,
) {
    let chains: Vec<(&nft::Table, &nft::Chain)> = rs
        .tables
        .iter()
        .flat_map(|t| t.chains.iter().map(move |c| (t, c)))
        .collect();
    let hook = |h: &str| -> Vec<(&nft::Table, &nft::Chain)> {
        chains
            .iter()
            .filter(|(_, c)| c.hook.as_deref() == Some(h))
            .copied()
            .collect()
    };
    let mut check_hook = |h: &str, want_drop: bool| -> Option<PortSet> {
        let cs = hook(h);
        let policies: Vec<String> = cs
            .iter()
            .map(|(t, c)| {
                format!(
                    "{} {} {}: policy {}",
                    t.family,
                    t.name,
                    c.name,
                    c.policy.as_deref().unwrap_or("accept")
                )
            })
            .collect();
        ev.push(Evidence {
            path: NFT_PATH.into(),
            sha256: sha.clone(),
            value: if policies.is_empty() {
                format!("no {h} chain")
            } else {
                policies.join("; ")
            },
            expected: if want_drop {
                format!("{h} hook chain with policy drop")
            } else {
                format!("{h} hook chain")
            },
        });
        if want_drop {
            if cs.is_empty() {
                fails.push(format!(
                    "{NFT_PATH} has no {h} chain, so {h} traffic is accepted"
                ));
            }
            for (t, c) in &cs {
                if c.policy.as_deref() != Some("drop") {
                    fails.push(format!(
                        "{NFT_PATH}: chain {} {} {} on hook {h} has policy {}, not drop",
                        t.family,
                        t.name,
                        c.name,
                        c.policy.as_deref().unwrap_or("accept")
                    ));
                }
            }
        }
        let mut ports: PortSet = BTreeMap::new();
        let mut est = false;
        let mut lo = false;
        for (_, c) in &cs {
            for r in &c.rules {
                match nft::classify(r) {
                    RuleClass::Established => est = true,
                    RuleClass::Loopback => lo = true,
                    RuleClass::Icmp | RuleClass::NoAccept => {}
                    RuleClass::Ports { proto, ports: ps, restricted } => {
                        for p in ps {
                            let e = ports.entry((proto.clone(), p)).or_insert(true);
                            *e &= restricted;
                        }
                    }
                    RuleClass::Unknown => fails.push(format!(
                        "{NFT_PATH}: chain {} rule '{}' accepts or diverts traffic in a way the audit cannot check",
                        c.name,
                        r.join(" ")
                    )),
                }
            }
        }
        if want_drop && !cs.is_empty() && h != "forward" {
            if !est {
                fails.push(format!(
                    "{NFT_PATH}: {h} chain lacks 'ct state established,related accept'"
                ));
            }
            if !lo {
                fails.push(format!(
                    "{NFT_PATH}: {h} chain lacks a loopback accept rule"
                ));
            }
        }
        Some(ports)
    };
    let input = check_hook("input", true);
    let forward = check_hook("forward", true);
    let output = check_hook("output", fw.output == OutputPolicy::Drop);
    if let Some(fwd) = forward {
        for ((proto, port), _) in fwd {
            fails.push(format!(
                "{NFT_PATH}: forward chain accepts {proto} port {port}"
            ));
        }
    }
    compare_ports("input", &fw.input, input, sha, fails, ev);
    if fw.output == OutputPolicy::Drop {
        compare_ports("output", &fw.output_allow, output, sha, fails, ev);
    }
}

fn compare_ports(
    h: &str,
    want: &[Allow],
    got: Option<PortSet>,
    sha: &Option<String>,
    fails: &mut Vec<String>,
    ev: &mut Vec<Evidence>,
) {
    let got = got.unwrap_or_default();
    let want_set: BTreeMap<(String, u16), &Allow> = want
        .iter()
        .map(|a| ((a.protocol.as_str().to_string(), a.port), a))
        .collect();
    for ((proto, port), restricted) in &got {
        match want_set.get(&(proto.clone(), *port)) {
            None => fails.push(format!("{NFT_PATH}: {h} accepts {proto} port {port}, which is not on the allow-list")),
            Some(a) if !a.sources.is_empty() && !restricted => fails.push(format!(
                "{NFT_PATH}: {h} accepts {proto} port {port} from anywhere; the policy limits it to {}",
                a.sources.join(", ")
            )),
            Some(_) => {}
        }
    }
    for (proto, port) in want_set.keys() {
        if !got.contains_key(&(proto.clone(), *port)) {
            fails.push(format!(
                "{NFT_PATH}: {h} does not accept {proto} port {port} from the allow-list"
            ));
        }
    }
    let fmt = |v: Vec<String>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    ev.push(Evidence {
        path: NFT_PATH.into(),
        sha256: sha.clone(),
        value: format!(
            "{h} accepts {}",
            fmt(got.keys().map(|(p, n)| format!("{n}/{p}")).collect())
        ),
        expected: format!(
            "{h} accepts {}",
            fmt(want_set.keys().map(|(p, n)| format!("{n}/{p}")).collect())
        ),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;
    use crate::rootfs::MemRootfs;

    const GOOD: &str = "flush ruleset
table inet filter {
\tchain input {
\t\ttype filter hook input priority filter; policy drop;
\t\tct state { established, related } accept
\t\tiif \"lo\" accept
\t\ticmp type echo-request accept
\t\ttcp dport 22 ct state new accept
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy drop;
\t}
\tchain output {
\t\ttype filter hook output priority filter; policy accept;
\t}
}
";

    fn allow(port: u16, protocol: Protocol, sources: &[&str]) -> Allow {
        Allow {
            service: "svc".into(),
            port,
            protocol,
            sources: sources.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn policy() -> Firewall {
        Firewall {
            input: vec![allow(22, Protocol::Tcp, &[])],
            icmp: true,
            log_drops: false,
            output: OutputPolicy::Accept,
            output_allow: Vec::new(),
        }
    }

    /// An image loading `ruleset` at boot the way Debian does.
    fn image(ruleset: &str) -> MemRootfs {
        let mut fs = MemRootfs::new();
        fs.file(NFT_PATH, 0o755, ruleset)
            .file("/lib/systemd/system/nftables.service", 0o644, "[Unit]\n")
            .symlink(NFT_ENABLE_LINK, "/lib/systemd/system/nftables.service");
        fs
    }

    fn run(fs: &MemRootfs, fw: &Firewall) -> Outcome {
        check(fw, &Ctx::new(fs, ""))
    }

    #[test]
    fn a_default_drop_ruleset_matching_the_allow_list_passes() {
        let o = run(&image(GOOD), &policy());
        assert!(o.ok, "{}", o.message);
        assert_eq!(
            o.message,
            "input and forward default to drop; 1 allowed inbound services match the policy; \
             nftables.service enabled"
        );
        let values: Vec<&str> = o.evidence.iter().map(|e| e.value.as_str()).collect();
        assert_eq!(
            values,
            [
                "inet filter input: policy drop",
                "inet filter forward: policy drop",
                "inet filter output: policy accept",
                "input accepts 22/tcp",
                "enabled"
            ]
        );
        assert_eq!(
            o.evidence[0].sha256.as_deref(),
            Some(sha256_hex(GOOD.as_bytes()).as_str())
        );
    }

    #[test]
    fn a_base_chain_without_a_drop_policy_fails() {
        // No policy at all means accept.
        let text = GOOD.replace(" policy drop;\n\t\tct state", "\n\t\tct state");
        let o = run(&image(&text), &policy());
        assert_eq!(
            o.message,
            "/etc/nftables.conf: chain inet filter input on hook input has policy accept, not drop"
        );
        // A second input chain that accepts lets traffic through the first.
        let text = format!(
            "{GOOD}table ip extra {{\n\tchain in2 {{\n\t\ttype filter hook input priority 10; policy accept;\n\t\tct state established accept\n\t\tiif lo accept\n\t}}\n}}\n"
        );
        let o = run(&image(&text), &policy());
        assert_eq!(
            o.message,
            "/etc/nftables.conf: chain ip extra in2 on hook input has policy accept, not drop"
        );
    }

    #[test]
    fn a_missing_hook_chain_or_basic_accepts_fail() {
        let text = GOOD.replace(
            "\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n",
            "",
        );
        assert_eq!(
            run(&image(&text), &policy()).message,
            "/etc/nftables.conf has no forward chain, so forward traffic is accepted"
        );
        let text = GOOD
            .replace("\t\tct state { established, related } accept\n", "")
            .replace("\t\tiif \"lo\" accept\n", "");
        assert_eq!(
            run(&image(&text), &policy()).message,
            "/etc/nftables.conf: input chain lacks 'ct state established,related accept'; \
             /etc/nftables.conf: input chain lacks a loopback accept rule"
        );
    }

    #[test]
    fn accepted_ports_must_be_exactly_the_allow_list() {
        let text = GOOD.replace("tcp dport 22", "tcp dport { 22, 8080 }");
        assert_eq!(
            run(&image(&text), &policy()).message,
            "/etc/nftables.conf: input accepts tcp port 8080, which is not on the allow-list"
        );
        let mut fw = policy();
        fw.input.push(allow(68, Protocol::Udp, &[]));
        assert_eq!(
            run(&image(GOOD), &fw).message,
            "/etc/nftables.conf: input does not accept udp port 68 from the allow-list"
        );
        // A port limited to sources must be limited in the ruleset too.
        let fw = Firewall {
            input: vec![allow(22, Protocol::Tcp, &["10.0.0.0/8"])],
            ..policy()
        };
        assert_eq!(
            run(&image(GOOD), &fw).message,
            "/etc/nftables.conf: input accepts tcp port 22 from anywhere; the policy limits it to 10.0.0.0/8"
        );
        let text = GOOD.replace("tcp dport 22", "ip saddr 10.0.0.0/8 tcp dport 22");
        assert!(run(&image(&text), &fw).ok);
    }

    #[test]
    fn forwarding_jumps_and_includes_fail() {
        let text = GOOD.replace(
            "hook forward priority filter; policy drop;\n",
            "hook forward priority filter; policy drop;\n\t\ttcp dport 80 accept\n",
        );
        assert_eq!(
            run(&image(&text), &policy()).message,
            "/etc/nftables.conf: forward chain accepts tcp port 80"
        );
        let text = GOOD.replace("\t\ticmp type", "\t\tmeta mark 1 jump allow\n\t\ticmp type");
        assert_eq!(
            run(&image(&text), &policy()).message,
            "/etc/nftables.conf: chain input rule 'meta mark 1 jump allow' accepts or diverts traffic \
             in a way the audit cannot check"
        );
        let text = format!("include \"/etc/nftables.d/*.nft\"\n{GOOD}");
        assert_eq!(
            run(&image(&text), &policy()).message,
            "/etc/nftables.conf includes /etc/nftables.d/*.nft, which the audit does not follow"
        );
    }

    #[test]
    fn an_output_drop_policy_checks_the_output_chain_like_input() {
        let fw = Firewall {
            output: OutputPolicy::Drop,
            output_allow: vec![allow(53, Protocol::Udp, &[])],
            ..policy()
        };
        assert_eq!(
            run(&image(GOOD), &fw).message,
            "/etc/nftables.conf: chain inet filter output on hook output has policy accept, not drop; \
             /etc/nftables.conf: output chain lacks 'ct state established,related accept'; \
             /etc/nftables.conf: output chain lacks a loopback accept rule; \
             /etc/nftables.conf: output does not accept udp port 53 from the allow-list"
        );
        let text = GOOD.replace(
            "hook output priority filter; policy accept;\n",
            "hook output priority filter; policy drop;\n\t\tct state established,related accept\n\t\toif lo accept\n\t\tudp dport 53 accept\n",
        );
        let o = run(&image(&text), &fw);
        assert!(o.ok, "{}", o.message);
    }

    #[test]
    fn the_ruleset_only_counts_if_boot_loads_it() {
        let mut fs = image(GOOD);
        fs.remove(NFT_ENABLE_LINK);
        assert_eq!(
            run(&fs, &policy()).message,
            format!("nftables.service is not enabled: {NFT_ENABLE_LINK} is absent")
        );
        let mut fs = image(GOOD);
        fs.remove("/lib/systemd/system/nftables.service");
        assert_eq!(
            run(&fs, &policy()).message,
            format!(
                "{NFT_ENABLE_LINK} points to /lib/systemd/system/nftables.service, \
                 which is not an installed nftables.service"
            )
        );
        let mut fs = image(GOOD);
        fs.symlink("/etc/systemd/system/nftables.service", "/dev/null");
        assert_eq!(
            run(&fs, &policy()).message,
            "nftables.service is masked by /etc/systemd/system/nftables.service"
        );
    }

    #[test]
    fn a_missing_or_unreadable_ruleset_fails() {
        let mut fs = image(GOOD);
        fs.remove(NFT_PATH);
        let o = run(&fs, &policy());
        assert!(!o.ok);
        assert_eq!(o.message, "/etc/nftables.conf is absent");
        assert_eq!(o.evidence.len(), 1);
        assert_eq!(o.evidence[0].value, "absent");
        let o = run(&image("table inet filter {\n"), &policy());
        assert!(
            o.message.starts_with("/etc/nftables.conf cannot be read: "),
            "{}",
            o.message
        );
    }
}
