//! Conflicts between rules, and between rules and layers, found before a
//! build.
//!
//! Each of these would otherwise surface late and confusingly: as a build
//! error from `generate`, as a failed audit after a full image build, or
//! worse as a setting silently replaced (a layer shipping its own
//! `/etc/nftables.conf` is overwritten by the policy's, and the layer author
//! never learns why their rule disappeared). Every diagnostic names the
//! rule's policy file and line.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::apply::*;
use crate::model::*;

/// One conflict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LintDiag {
    /// The policy (or layer) file the diagnostic points at.
    pub file: String,
    /// Line in that file.
    pub line: usize,
    /// The rule concerned.
    pub rule: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LintDiag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every field can carry bytes from a policy or layer file: escaped
        // here, where it reaches a terminal, so no caller can forget.
        use slotsmith_yaml::escape::defang;
        write!(
            f,
            "{}:{}: {}: {}",
            defang(&self.file),
            self.line,
            defang(&self.rule),
            defang(&self.message)
        )
    }
}

fn share_profile(a: &Rule, b: &Rule) -> bool {
    a.profiles.iter().any(|p| b.profiles.contains(p))
}

fn at(r: &Rule) -> String {
    format!("{}:{}", r.file, r.line)
}

/// Finds conflicts among `rules`, and layer files (`(rootfs path, "layer
/// file:line")`) that write a path a rule manages.
pub fn lint(rules: &[Rule], layer_paths: &[(String, String)]) -> Vec<LintDiag> {
    let mut out = Vec::new();
    let mut sorted: Vec<&Rule> = rules.iter().collect();
    sorted.sort_by(|a, b| (a.file.as_str(), a.line).cmp(&(b.file.as_str(), b.line)));

    // Ports opened for a service that another rule masks: the port is either
    // dead (and the allow-list misleading) or the mask is wrong.
    for fw_rule in &sorted {
        let Setting::Firewall(fw) = &fw_rule.setting else {
            continue;
        };
        for a in fw.input.iter() {
            let unit = a.unit();
            for other in &sorted {
                if !share_profile(fw_rule, other) {
                    continue;
                }
                let masked = match &other.setting {
                    Setting::MaskedUnits(u) => u.contains(&unit),
                    Setting::Console(c) => c.masked_units().contains(&unit),
                    _ => false,
                };
                if masked {
                    out.push(LintDiag {
                        file: fw_rule.file.clone(),
                        line: fw_rule.line,
                        rule: fw_rule.id.clone(),
                        message: format!(
                            "allows {}/{} for {unit}, which {} ({}) masks",
                            a.port,
                            a.protocol.as_str(),
                            other.id,
                            at(other)
                        ),
                    });
                }
            }
        }
        // Masking nftables.service itself leaves the ruleset unloaded.
        for other in &sorted {
            if let Setting::MaskedUnits(u) = &other.setting {
                if u.iter().any(|x| x == "nftables.service") && share_profile(fw_rule, other) {
                    out.push(LintDiag {
                        file: other.file.clone(),
                        line: other.line,
                        rule: other.id.clone(),
                        message: format!(
                            "masks nftables.service, so the ruleset of {} ({}) never loads",
                            fw_rule.id,
                            at(fw_rule)
                        ),
                    });
                }
            }
        }
    }

    // Two firewall rules in one profile: generate refuses them.
    let fws: Vec<&&Rule> = sorted
        .iter()
        .filter(|r| matches!(r.setting, Setting::Firewall(_)))
        .collect();
    for (i, a) in fws.iter().enumerate() {
        for b in &fws[i + 1..] {
            if share_profile(a, b) {
                out.push(LintDiag {
                    file: b.file.clone(),
                    line: b.line,
                    rule: b.id.clone(),
                    message: format!(
                        "a second firewall ruleset for the same profile as {} ({})",
                        a.id,
                        at(a)
                    ),
                });
            }
        }
    }

    // The same key with two values: one of the rules cannot hold.
    keyed_conflicts(
        &sorted,
        "sysctl",
        |r| match &r.setting {
            Setting::Sysctl(m) => Some(m),
            _ => None,
        },
        &mut out,
    );
    keyed_conflicts(
        &sorted,
        "sshd",
        |r| match &r.setting {
            Setting::Ssh(m) => Some(m),
            _ => None,
        },
        &mut out,
    );

    // Required and forbidden kernel arguments across rules.
    for a in &sorted {
        let Setting::KernelCmdline(ka) = &a.setting else {
            continue;
        };
        for b in &sorted {
            let Setting::KernelCmdline(kb) = &b.setting else {
                continue;
            };
            if a.id == b.id || !share_profile(a, b) {
                continue;
            }
            for req in &ka.require {
                if let Some(f) = kb.forbid.iter().find(|f| cmdline_forbids(f, req)) {
                    out.push(LintDiag {
                        file: a.file.clone(),
                        line: a.line,
                        rule: a.id.clone(),
                        message: format!(
                            "requires kernel argument {req}, which {} ({}) forbids as {f}",
                            b.id,
                            at(b)
                        ),
                    });
                }
            }
        }
    }

    // Layer files at paths the policies write.
    let managed = managed_paths(&sorted);
    for (path, origin) in layer_paths {
        if let Some(ids) = managed.get(path.as_str()) {
            let r = ids[0];
            out.push(LintDiag {
                file: r.file.clone(),
                line: r.line,
                rule: r.id.clone(),
                message: format!(
                    "{origin} writes {path}, which this rule manages; the policy's version replaces it (change the policy or waive the rule instead)"
                ),
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

fn keyed_conflicts<'r>(
    rules: &[&'r Rule],
    what: &str,
    get: impl Fn(&'r Rule) -> Option<&'r BTreeMap<String, String>>,
    out: &mut Vec<LintDiag>,
) {
    for (i, a) in rules.iter().enumerate() {
        let Some(ma) = get(a) else { continue };
        for b in &rules[i + 1..] {
            let Some(mb) = get(b) else { continue };
            if !share_profile(a, b) {
                continue;
            }
            for (k, va) in ma {
                let vb = mb
                    .iter()
                    .find(|(kb, _)| kb.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v);
                if let Some(vb) = vb.filter(|vb| *vb != va) {
                    out.push(LintDiag {
                        file: b.file.clone(),
                        line: b.line,
                        rule: b.id.clone(),
                        message: format!(
                            "sets {what} {k} to {vb}, but {} ({}) sets it to {va}",
                            a.id,
                            at(a)
                        ),
                    });
                }
            }
        }
    }
}

/// Paths the rules write, with the rules that write them.
fn managed_paths<'r>(rules: &[&'r Rule]) -> BTreeMap<String, Vec<&'r Rule>> {
    let mut m: BTreeMap<String, Vec<&Rule>> = BTreeMap::new();
    for r in rules {
        let paths: Vec<String> = match &r.setting {
            Setting::Sysctl(_) => vec![SYSCTL_PATH.into()],
            Setting::ModulesDisabled(_) => vec![MODPROBE_PATH.into()],
            Setting::Firewall(_) => vec![NFT_PATH.into(), NFT_ENABLE_LINK.into()],
            Setting::Ssh(_) => vec![SSHD_DROPIN.into()],
            Setting::Accounts(a) if a.root_locked || a.no_empty_passwords => {
                vec![SHADOW_PATH.into()]
            }
            Setting::MaskedUnits(u) => u.iter().map(|u| format!("{SYSTEMD_ETC}/{u}")).collect(),
            Setting::Console(c) => c
                .masked_units()
                .iter()
                .map(|u| format!("{SYSTEMD_ETC}/{u}"))
                .collect(),
            _ => Vec::new(),
        };
        for p in paths {
            m.entry(p).or_default().push(r);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_a_lint_finding_is_escaped_when_printed() {
        let d = LintDiag {
            file: "policies/x\u{1b}[2J.yaml".into(),
            line: 3,
            rule: "NET-\u{202e}001".into(),
            message: "value \u{9b}31m from a layer".into(),
        };
        let text = d.to_string();
        for c in ['\u{1b}', '\u{202e}', '\u{9b}'] {
            assert!(!text.contains(c), "{text:?}");
        }
        assert!(text.starts_with("policies/x"), "{text}");
    }
}
