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
