//! Hardening rules and waivers changed between two builds, from each
//! build's `audit/report.json` (written by `slotsmith_policy::to_json`: a
//! result per rule with its status, and the waivers given with their
//! approver). A build without policies has no report and no section.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where the build publishes the audit as data.
pub const REPORT: &str = "audit/report.json";

#[derive(Debug, Clone, Deserialize)]
struct RuleIn {
    id: String,
    status: String,
}

/// A waiver as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Waiver {
    /// The rule waived.
    pub rule: String,
    /// Why the risk is accepted.
    pub justification: String,
    /// Who accepted it.
    pub approver: String,
    /// Whether a rule in the audited profile matched it.
    #[serde(default)]
    pub applied: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct ReportIn {
    policy_set_sha256: String,
    results: Vec<RuleIn>,
    #[serde(default)]
    waivers: Vec<Waiver>,
}

/// What the diff keeps of one audit report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// sha256 over the policy set.
    pub policy_set_sha256: String,
    /// Rule id -> status.
    pub rules: BTreeMap<String, String>,
    /// Rule id -> its waiver.
    pub waivers: BTreeMap<String, Waiver>,
}

/// Parses `audit/report.json`; `name` names it in errors.
pub fn parse(name: &str, bytes: &[u8]) -> anyhow::Result<Audit> {
    let r: ReportIn = serde_json::from_slice(bytes).map_err(|e| {
        anyhow::format_err!(
            "{name} is not an audit report: {}",
            slotsmith_yaml::escape::shown(&e.to_string())
        )
    })?;
    Ok(Audit {
        policy_set_sha256: r.policy_set_sha256,
        rules: r.results.into_iter().map(|r| (r.id, r.status)).collect(),
        waivers: r.waivers.into_iter().map(|w| (w.rule.clone(), w)).collect(),
    })
}

/// A rule on one side only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Rule id.
    pub id: String,
    /// Its status there.
    pub status: String,
}

/// A rule whose status changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleChanged {
    /// Rule id.
    pub id: String,
    /// Old status.
    pub old: String,
    /// New status.
    pub new: String,
}

/// A waiver whose text, approver or use changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaiverChanged {
    /// The rule waived.
    pub rule: String,
    /// The old waiver.
    pub old: Waiver,
    /// The new waiver.
    pub new: Waiver,
}

/// The policy section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PolicyDiff {
    /// The policy set's sha256 on each side, when it changed (`null` for a
    /// side without an audit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_set: Option<(Option<String>, Option<String>)>,
    /// Rules only the new build audits.
    pub rules_added: Vec<Rule>,
    /// Rules only the old build audited.
    pub rules_removed: Vec<Rule>,
    /// Rules whose status changed.
    pub rules_changed: Vec<RuleChanged>,
    /// Waivers only the new build has.
    pub waivers_added: Vec<Waiver>,
    /// Waivers only the old build had.
    pub waivers_removed: Vec<Waiver>,
    /// Waivers changed.
    pub waivers_changed: Vec<WaiverChanged>,
}

impl PolicyDiff {
    /// Whether anything differs.
    pub fn is_empty(&self) -> bool {
        self.policy_set.is_none()
            && self.rules_added.is_empty()
            && self.rules_removed.is_empty()
            && self.rules_changed.is_empty()
            && self.waivers_added.is_empty()
            && self.waivers_removed.is_empty()
            && self.waivers_changed.is_empty()
    }
}

/// The difference between two audits (a side without policies is empty).
pub fn diff(old: Option<&Audit>, new: Option<&Audit>) -> PolicyDiff {
    let empty = Audit {
        policy_set_sha256: String::new(),
        rules: BTreeMap::new(),
        waivers: BTreeMap::new(),
    };
    let (o, n) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
    let mut d = PolicyDiff::default();
    let set = |a: Option<&Audit>| a.map(|a| a.policy_set_sha256.clone());
    if set(old) != set(new) {
        d.policy_set = Some((set(old), set(new)));
    }
    for (id, s) in &o.rules {
        match n.rules.get(id) {
            None => d.rules_removed.push(Rule {
                id: id.clone(),
                status: s.clone(),
            }),
            Some(ns) if ns != s => d.rules_changed.push(RuleChanged {
                id: id.clone(),
                old: s.clone(),
                new: ns.clone(),
            }),
            Some(_) => {}
        }
    }
    for (id, s) in &n.rules {
        if !o.rules.contains_key(id) {
            d.rules_added.push(Rule {
                id: id.clone(),
                status: s.clone(),
            });
        }
    }
    for (rule, w) in &o.waivers {
        match n.waivers.get(rule) {
            None => d.waivers_removed.push(w.clone()),
            Some(nw) if nw != w => d.waivers_changed.push(WaiverChanged {
                rule: rule.clone(),
                old: w.clone(),
                new: nw.clone(),
            }),
            Some(_) => {}
        }
    }
    for (rule, w) in &n.waivers {
        if !o.waivers.contains_key(rule) {
            d.waivers_added.push(w.clone());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(set: &str, rules: &[(&str, &str)], waivers: &[(&str, &str)]) -> Audit {
        let json = serde_json::json!({
            "image": "x", "version": "1", "profile": "production",
            "policy_set_sha256": set, "cmdline": "", "summary": {},
            "results": rules.iter().map(|(id, s)| serde_json::json!({"id": id, "status": s, "title": "t"})).collect::<Vec<_>>(),
            "controls": {},
            "waivers": waivers.iter().map(|(r, a)| serde_json::json!({"rule": r, "justification": "j", "approver": a, "applied": true, "would_pass": false})).collect::<Vec<_>>(),
        });
        parse("report.json", json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn rule_status_and_waiver_approver_changes_are_found() {
        let old = report(
            "s1",
            &[
                ("SSH-001", "pass"),
                ("KERNEL-MOD-002", "waived"),
                ("OLD-1", "fail"),
            ],
            &[("KERNEL-MOD-002", "Jane Roe (QA)")],
        );
        let new = report(
            "s2",
            &[
                ("SSH-001", "fail"),
                ("KERNEL-MOD-002", "waived"),
                ("NEW-1", "pass"),
            ],
            &[("KERNEL-MOD-002", "John Doe (Security)"), ("SSH-001", "A")],
        );
        let d = diff(Some(&old), Some(&new));
        assert_eq!(d.policy_set, Some((Some("s1".into()), Some("s2".into()))));
        assert_eq!(
            d.rules_added,
            [Rule {
                id: "NEW-1".into(),
                status: "pass".into()
            }]
        );
        assert_eq!(
            d.rules_removed,
            [Rule {
                id: "OLD-1".into(),
                status: "fail".into()
            }]
        );
        assert_eq!(
            d.rules_changed,
            [RuleChanged {
                id: "SSH-001".into(),
                old: "pass".into(),
                new: "fail".into()
            }]
        );
        assert_eq!(d.waivers_added.len(), 1);
        assert_eq!(d.waivers_added[0].rule, "SSH-001");
        assert_eq!(d.waivers_changed.len(), 1);
        assert_eq!(d.waivers_changed[0].old.approver, "Jane Roe (QA)");
        assert_eq!(d.waivers_changed[0].new.approver, "John Doe (Security)");
        assert!(diff(Some(&old), Some(&old)).is_empty());
        assert!(diff(None, None).is_empty());
        let e = parse("audit/report.json", b"{\"results\": 3}").unwrap_err();
        assert!(format!("{e}").starts_with("audit/report.json is not an audit report"));
    }
}
