//! Auditing a built rootfs against the policy: every rule gets a status and
//! the evidence read back from the image.
//!
//! The point of the audit is that the report's claims are about the image
//! that ships, not about what the build meant to write. So each check
//! computes the value the real program would end up with, from every file
//! that program reads, in the order it reads them. One module per
//! subsystem says what the device computes and how the check mirrors it:
//! - `sysctl`: systemd-sysctl's `sysctl.d` search path and override order;
//! - `modprobe`: kmod's first `install` command per module;
//! - `units`: systemd masks and the `.wants`/`.requires` links that would
//!   start a unit anyway;
//! - `console`: getty units and `systemd.getty_auto`;
//! - `cmdline`: the kernel command line, last value of a key wins;
//! - `sshd`: `sshd_config` with `Include` and `Match`, first value wins;
//! - `accounts`: `/etc/passwd` and `/etc/shadow`;
//! - `files`: setuid/setgid and world-writable modes of every entry;
//! - `firewall`: the nftables ruleset and its enablement.
//!
//! This module holds what they share: the report types, the evaluation
//! context (`Ctx`: the image index and the command line), the `Outcome`
//! of one check, and the dispatch from a rule's setting to its check.
//!
//! Rules outside the profile are `not-applicable`; waived rules are still
//! evaluated, so the report shows what the waiver hides.

mod accounts;
mod cmdline;
mod console;
mod files;
mod firewall;
mod forbidden;
mod modprobe;
mod sshd;
mod sysctl;
mod units;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::*;
use crate::rootfs::{sha256_hex, Index, RootfsRead};

/// The outcome for one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The image enforces the rule.
    Pass,
    /// The image does not.
    Fail,
    /// An approved waiver covers the rule for this image.
    Waived,
    /// The rule is not part of the audited profile.
    NotApplicable,
}

impl Status {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Waived => "waived",
            Status::NotApplicable => "not-applicable",
        }
    }
}

/// One observation backing a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The path in the image (or `kernel-cmdline`).
    pub path: String,
    /// sha256 of the file as stored in the image, when it is a file.
    pub sha256: Option<String>,
    /// The effective value found.
    pub value: String,
    /// The value the rule requires.
    pub expected: String,
}

/// The result for one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleResult {
    /// Rule id.
    pub id: String,
    /// Rule title.
    pub title: String,
    /// Rule rationale.
    pub rationale: String,
    /// Rule severity.
    pub severity: Severity,
    /// The outcome.
    pub status: Status,
    /// How the check was made, for reviewers.
    pub check: String,
    /// What was found; for failures it names the rule id and the offending
    /// path or value.
    pub message: String,
    /// Observations.
    pub evidence: Vec<Evidence>,
    /// The control mapping.
    pub controls: Controls,
    /// Policy file and line.
    pub file: String,
    /// Line of the rule in its file.
    pub line: usize,
    /// The waiver applied, if any.
    pub waiver: Option<Waiver>,
}

/// Counts per status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// All rules.
    pub total: usize,
    /// Passing.
    pub pass: usize,
    /// Failing.
    pub fail: usize,
    /// Waived.
    pub waived: usize,
    /// Not in the profile.
    pub not_applicable: usize,
}

/// A rule's status under one control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlEntry {
    /// Rule id.
    pub rule: String,
    /// Its status.
    pub status: Status,
}

/// A waiver as used by the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaiverUse {
    /// The waiver.
    #[serde(flatten)]
    pub waiver: Waiver,
    /// Whether a rule in the profile matched it.
    pub applied: bool,
    /// Whether the waived rule would pass without the waiver.
    pub would_pass: Option<bool>,
}

/// The audit of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Image name (set by the caller, see [`Report::for_image`]).
    pub image: String,
    /// Image version (set by the caller).
    pub version: String,
    /// The audited profile.
    pub profile: Profile,
    /// sha256 over the loaded rules (canonical JSON, sorted by id, without
    /// line numbers), so a report names the exact policy set.
    pub policy_set_sha256: String,
    /// The kernel command line audited.
    pub cmdline: String,
    /// Counts.
    pub summary: Summary,
    /// One result per rule, sorted by id.
    pub results: Vec<RuleResult>,
    /// framework -> control id -> rules and their statuses.
    pub controls: BTreeMap<String, BTreeMap<String, Vec<ControlEntry>>>,
    /// Waivers given for the image.
    pub waivers: Vec<WaiverUse>,
}

impl Report {
    /// Sets the image name and version shown in the report.
    pub fn for_image(mut self, image: &str, version: &str) -> Report {
        self.image = image.to_string();
        self.version = version.to_string();
        self
    }

    /// Whether no rule failed.
    pub fn passed(&self) -> bool {
        self.summary.fail == 0
    }
}

/// The waived rule ids, for [`crate::apply::generate`].
pub fn waived_ids(waivers: &[Waiver]) -> BTreeSet<String> {
    waivers.iter().map(|w| w.rule.clone()).collect()
}

/// sha256 over the rule set: canonical JSON, sorted by id, without lines
/// (moving a rule or editing a comment does not change it; any setting,
/// rationale or mapping change does).
pub fn policy_set_sha256(rules: &[Rule]) -> String {
    let mut sorted: Vec<&Rule> = rules.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let vals: Vec<serde_json::Value> = sorted
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.remove("line");
            }
            v
        })
        .collect();
    let text = serde_json::to_string(&vals).unwrap_or_default();
    sha256_hex(text.as_bytes())
}

/// Audits `fs` (the built image) for `profile`: every rule gets a status.
pub fn audit(
    rules: &[Rule],
    profile: Profile,
    waivers: &[Waiver],
    fs: &dyn RootfsRead,
    cmdline: &str,
) -> Report {
    let ctx = Ctx::new(fs, cmdline);
    let mut sorted: Vec<&Rule> = rules.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut results = Vec::new();
    let mut waiver_uses: Vec<WaiverUse> = waivers
        .iter()
        .map(|w| WaiverUse {
            waiver: w.clone(),
            applied: false,
            would_pass: None,
        })
        .collect();
    for r in sorted {
        let (check, outcome) = evaluate(r, &ctx);
        let waiver = waivers.iter().find(|w| w.rule == r.id).cloned();
        let (status, message) = if !r.applies_to(profile) {
            (
                Status::NotApplicable,
                format!(
                    "{}: not part of the {profile} profile (applies to {})",
                    r.id,
                    profiles_text(&r.profiles)
                ),
            )
        } else if let Some(w) = &waiver {
            if let Some(u) = waiver_uses.iter_mut().find(|u| u.waiver.rule == r.id) {
                u.applied = true;
                u.would_pass = Some(outcome.ok);
            }
            let now = if outcome.ok {
                "the check passes anyway".to_string()
            } else {
                format!("without the waiver: {}", outcome.message)
            };
            (
                Status::Waived,
                format!(
                    "{}: waived by {} ({}); {now}",
                    r.id, w.approver, w.justification
                ),
            )
        } else if outcome.ok {
            (Status::Pass, format!("{}: {}", r.id, outcome.message))
        } else {
            (Status::Fail, format!("{}: {}", r.id, outcome.message))
        };
        results.push(RuleResult {
            id: r.id.clone(),
            title: r.title.clone(),
            rationale: r.rationale.clone(),
            severity: r.severity,
            status,
            check: check.to_string(),
            message,
            evidence: outcome.evidence,
            controls: r.controls.clone(),
            file: r.file.clone(),
            line: r.line,
            waiver,
        });
    }
    let mut summary = Summary {
        total: results.len(),
        ..Summary::default()
    };
    let mut controls: BTreeMap<String, BTreeMap<String, Vec<ControlEntry>>> = BTreeMap::new();
    for res in &results {
        match res.status {
            Status::Pass => summary.pass += 1,
            Status::Fail => summary.fail += 1,
            Status::Waived => summary.waived += 1,
            Status::NotApplicable => summary.not_applicable += 1,
        }
        for (fw, ids) in res.controls.by_framework() {
            for id in ids {
                controls
                    .entry(fw.to_string())
                    .or_default()
                    .entry(id.clone())
                    .or_default()
                    .push(ControlEntry {
                        rule: res.id.clone(),
                        status: res.status,
                    });
            }
        }
    }
    Report {
        image: String::new(),
        version: String::new(),
        profile,
        policy_set_sha256: policy_set_sha256(rules),
        cmdline: cmdline.to_string(),
        summary,
        results,
        controls,
        waivers: waiver_uses,
    }
}

fn profiles_text(p: &[Profile]) -> String {
    p.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
}

/// What one subsystem check found, before waivers and profiles apply.
struct Outcome {
    /// Whether the image meets the setting.
    ok: bool,
    /// The pass message, or every failure joined by "; ".
    message: String,
    /// Observations, pass or fail.
    evidence: Vec<Evidence>,
}

/// What every check reads: the image and the command line it boots with.
struct Ctx<'a> {
    /// The image as stored (for reads that must not follow links).
    fs: &'a dyn RootfsRead,
    /// Its index: metadata, link resolution, directory listings.
    ix: Index<'a>,
    /// The kernel command line split at whitespace, as the kernel does.
    cmdline: Vec<String>,
    /// The command line as given, for messages.
    raw_cmdline: String,
}

impl<'a> Ctx<'a> {
    fn new(fs: &'a dyn RootfsRead, cmdline: &str) -> Ctx<'a> {
        Ctx {
            fs,
            ix: Index::new(fs),
            cmdline: cmdline.split_whitespace().map(str::to_string).collect(),
            raw_cmdline: cmdline.to_string(),
        }
    }

    /// Reads a file following links. A read error counts as absent, which
    /// fails the checks that need the file: the audit never passes on data
    /// it could not read.
    fn read(&self, path: &str) -> Option<(String, Vec<u8>)> {
        self.ix.read_resolved(path).ok().flatten()
    }

    fn sha(&self, path: &str) -> Option<String> {
        self.read(path).map(|(_, c)| sha256_hex(&c))
    }

    /// Config files of a `*.d` search path: a name in an earlier directory
    /// shadows the same name in a later one; sorted by name.
    fn conf_files(&self, dirs: &[&str]) -> Vec<String> {
        let mut by_name: BTreeMap<String, String> = BTreeMap::new();
        for d in dirs {
            for name in self.ix.list_dir(d) {
                if !name.ends_with(".conf") {
                    continue;
                }
                let p = format!("{d}/{name}");
                if self.ix.is_dir(&p) {
                    continue;
                }
                by_name.entry(name).or_insert(p);
            }
        }
        by_name.into_values().collect()
    }
}

/// The dispatch table: each kind of setting to its subsystem's check, with
/// the one-line description of how that check reads the image.
fn evaluate(r: &Rule, ctx: &Ctx<'_>) -> (&'static str, Outcome) {
    match &r.setting {
        Setting::Sysctl(m) => (sysctl::CHECK, sysctl::check(m, ctx)),
        Setting::ModulesDisabled(m) => (modprobe::CHECK, modprobe::check(m, ctx)),
        Setting::Firewall(f) => (firewall::CHECK, firewall::check(f, ctx)),
        Setting::MaskedUnits(u) => (units::CHECK, units::check(u, ctx)),
        Setting::Ssh(m) => (sshd::CHECK, sshd::check(m, ctx)),
        Setting::Accounts(a) => (accounts::CHECK, accounts::check(a, ctx)),
        Setting::Files(f) => (files::CHECK, files::check(f, ctx)),
        Setting::KernelCmdline(k) => (cmdline::CHECK, cmdline::check(k, ctx)),
        Setting::Console(c) => (console::CHECK, console::check(c, ctx)),
        Setting::ForbiddenFiles(f) => (forbidden::CHECK, forbidden::check(f, ctx)),
    }
}

/// A passing outcome with `pass_msg` when nothing failed, else a failing
/// one listing every failure.
fn outcome(failures: Vec<String>, pass_msg: String, evidence: Vec<Evidence>) -> Outcome {
    if failures.is_empty() {
        Outcome {
            ok: true,
            message: pass_msg,
            evidence,
        }
    } else {
        Outcome {
            ok: false,
            message: failures.join("; "),
            evidence,
        }
    }
}

/// fnmatch where `*` and `?` do not cross `sep`: a dot for sysctl keys
/// (systemd globs /proc/sys paths, where dots are slashes), a slash for
/// path components, `\0` (nothing) for module names.
fn glob_match(pat: &str, s: &str, sep: char) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let t: Vec<char> = s.chars().collect();
    fn go(p: &[char], t: &[char], sep: char) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != sep)
                .any(|i| go(&p[1..], &t[i..], sep)),
            Some('?') => !t.is_empty() && t[0] != sep && go(&p[1..], &t[1..], sep),
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..], sep),
        }
    }
    go(&p, &t, sep)
}

/// Runs of whitespace as one space: sshd and sysctl split values at
/// whitespace, so `4096  8192` and `4096 8192` are the same value.
fn norm_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::MemRootfs;

    #[test]
    fn glob_stars_do_not_cross_the_separator() {
        assert!(glob_match(
            "net.ipv4.conf.*.rp_filter",
            "net.ipv4.conf.all.rp_filter",
            '.'
        ));
        assert!(!glob_match("net.*", "net.ipv4.x", '.'));
        assert!(glob_match("net.ipv?.x", "net.ipv4.x", '.'));
        assert!(!glob_match("net?ipv4", "net.ipv4", '.'));
        assert!(glob_match("*.conf", "00-slotsmith.conf", '/'));
        assert!(!glob_match("*.conf", "a/b.conf", '/'));
        // No separator: a module pattern matches across anything.
        assert!(glob_match("dccp", "dccp", '\0'));
        assert!(glob_match("nf_*", "nf_conntrack_ftp", '\0'));
        assert!(!glob_match("dccp", "dccp_ipv4", '\0'));
    }

    #[test]
    fn whitespace_runs_compare_equal() {
        assert_eq!(norm_ws("  4096\t 8192 "), "4096 8192");
    }

    #[test]
    fn conf_files_shadow_by_name_and_sort_across_directories() {
        let mut fs = MemRootfs::new();
        fs.file("/etc/x.d/50-b.conf", 0o644, "")
            .file("/usr/lib/x.d/50-b.conf", 0o644, "")
            .file("/usr/lib/x.d/10-a.conf", 0o644, "")
            .file("/usr/lib/x.d/README", 0o644, "")
            .dir("/usr/lib/x.d/20-dir.conf", 0o755);
        let ctx = Ctx::new(&fs, "");
        assert_eq!(
            ctx.conf_files(&["/etc/x.d", "/run/x.d", "/usr/lib/x.d"]),
            ["/usr/lib/x.d/10-a.conf", "/etc/x.d/50-b.conf"]
        );
    }

    #[test]
    fn unreadable_or_absent_files_read_as_absent() {
        let mut fs = MemRootfs::new();
        fs.file("/a", 0o644, "x")
            .symlink("/l", "/a")
            .symlink("/dangling", "/nope");
        let ctx = Ctx::new(&fs, "  quiet   ro ");
        assert_eq!(ctx.read("/l"), Some(("/a".into(), b"x".to_vec())));
        assert_eq!(ctx.read("/dangling"), None);
        assert_eq!(ctx.sha("/nope"), None);
        assert_eq!(ctx.cmdline, ["quiet", "ro"]);
    }

    #[test]
    fn outcome_joins_every_failure() {
        let o = outcome(vec!["a".into(), "b".into()], "fine".into(), vec![]);
        assert!(!o.ok);
        assert_eq!(o.message, "a; b");
        let o = outcome(vec![], "fine".into(), vec![]);
        assert!(o.ok);
        assert_eq!(o.message, "fine");
    }
}
