//! Auditing a built rootfs against the policy: every rule gets a status and
//! the evidence read back from the image.
//!
//! The point of the audit is that the report's claims are about the image
//! that ships, not about what the build meant to write. So each check
//! computes the value the real program would end up with, from every file
//! that program reads, in the order it reads them:
//! - sysctl: every `*.conf` of /etc, /run, /usr/local/lib, /usr/lib (and
//!   /lib) `sysctl.d`, a name in an earlier directory shadowing the same
//!   name in a later one, sorted by file name, last assignment wins
//!   (`-key` lines unset a key); `/etc/sysctl.conf` counts through Debian's
//!   `99-sysctl.conf` symlink.
//! - sshd: `sshd_config` with `Include` globs resolved inside the image, the
//!   first value of a keyword wins, and any `Match` block that sets a
//!   managed keyword to another value fails the rule.
//! - systemd: a unit is masked when `/etc/systemd/system/<unit>` links to
//!   /dev/null (or is empty) and no `.wants`/`.requires` link pulls it in.
//! - kmod: the first `install` line for a module across `modprobe.d`, in
//!   name order, must run `/bin/false` or `/bin/true`.
//! - nftables: the image's `/etc/nftables.conf` is read (see [`crate::nft`])
//!   and nftables.service must be enabled.
//!
//! Rules outside the profile are `not-applicable`; waived rules are still
//! evaluated, so the report shows what the waiver hides.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::apply::*;
use crate::model::*;
use crate::nft::{self, RuleClass};
use crate::rootfs::{sha256_hex, EntryKind, Index, RootfsRead};

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

struct Outcome {
    ok: bool,
    message: String,
    evidence: Vec<Evidence>,
}

struct Ctx<'a> {
    fs: &'a dyn RootfsRead,
    ix: Index<'a>,
    cmdline: Vec<String>,
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

fn evaluate(r: &Rule, ctx: &Ctx<'_>) -> (&'static str, Outcome) {
    match &r.setting {
        Setting::Sysctl(m) => (
            "effective sysctl.d value per key (systemd-sysctl order)",
            check_sysctl(m, ctx),
        ),
        Setting::ModulesDisabled(m) => (
            "first matching modprobe.d install command per module",
            check_modules(m, ctx),
        ),
        Setting::Firewall(f) => (
            "nftables ruleset in the image and nftables.service enablement",
            check_firewall(f, ctx),
        ),
        Setting::MaskedUnits(u) => (
            "unit linked to /dev/null in /etc/systemd/system, no enabling links",
            check_masked(u, ctx),
        ),
        Setting::Ssh(m) => (
            "effective sshd_config value (first match, Include resolved in the image)",
            check_ssh(m, ctx),
        ),
        Setting::Accounts(a) => (
            "/etc/passwd and /etc/shadow in the image",
            check_accounts(a, ctx),
        ),
        Setting::Files(f) => ("modes of every entry in the image", check_files(f, ctx)),
        Setting::KernelCmdline(k) => (
            "kernel command line of the image (last value of a key wins)",
            check_cmdline(k, ctx),
        ),
        Setting::Console(c) => (
            "getty units masked and kernel command line",
            check_console(c, ctx),
        ),
    }
}

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

// ---------------------------------------------------------------- sysctl

/// Directories systemd-sysctl reads, highest priority first. /lib is read
/// too for split-usr systems; on merged-usr images it resolves to /usr/lib
/// and its names are already shadowed.
const SYSCTL_DIRS: &[&str] = &[
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
];

#[derive(Clone)]
struct Assign {
    /// `None`: a `-key` line without a value, which unsets the key.
    value: Option<String>,
    file: String,
    line: usize,
}

struct SysctlState {
    explicit: BTreeMap<String, Assign>,
    globs: Vec<(String, Assign)>,
}

/// Normalises a key: slashes as separators (sysctl.d(5): when the first
/// separator is a slash, slashes and dots swap meaning).
fn norm_sysctl_key(k: &str) -> String {
    let first = k.find(['.', '/']);
    match first.map(|i| k.as_bytes()[i]) {
        Some(b'/') => k
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => k.to_string(),
    }
}

fn sysctl_state(ctx: &Ctx<'_>) -> SysctlState {
    let mut st = SysctlState {
        explicit: BTreeMap::new(),
        globs: Vec::new(),
    };
    for path in ctx.conf_files(SYSCTL_DIRS) {
        let Some((_, content)) = ctx.read(&path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&content);
        for (n, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                continue;
            }
            let (key, value) = match l.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim().to_string())),
                // Only "-key" is meaningful without a value.
                None if l.starts_with('-') => (l, None),
                None => continue,
            };
            let key = norm_sysctl_key(key.strip_prefix('-').unwrap_or(key).trim());
            let a = Assign {
                value,
                file: path.clone(),
                line: n + 1,
            };
            if key.contains(['*', '?', '[']) {
                st.globs.retain(|(k, _)| *k != key);
                st.globs.push((key, a));
            } else {
                st.explicit.insert(key, a);
            }
        }
    }
    st
}

/// fnmatch for dotted keys: `*` and `?` do not cross a dot (systemd globs
/// /proc/sys paths, where dots are slashes).
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

fn norm_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn check_sysctl(m: &BTreeMap<String, String>, ctx: &Ctx<'_>) -> Outcome {
    let st = sysctl_state(ctx);
    let mut fails = Vec::new();
    let mut ev = Vec::new();
    for (key, want) in m {
        // Explicit assignments beat globs whatever their order (systemd
        // skips glob matches that have an explicit entry); among globs the
        // last applied wins.
        let found = st.explicit.get(key).cloned().or_else(|| {
            st.globs
                .iter()
                .rev()
                .find(|(g, _)| glob_match(g, key, '.'))
                .map(|(_, a)| a.clone())
        });
        match found {
            Some(a) => {
                let got = a
                    .value
                    .clone()
                    .unwrap_or_else(|| "(unset by '-key')".into());
                let ok = a.value.as_deref().map(norm_ws) == Some(norm_ws(want));
                if !ok {
                    fails.push(format!(
                        "{key} is {got} from {}:{} (expected {want})",
                        a.file, a.line
                    ));
                }
                ev.push(Evidence {
                    path: a.file.clone(),
                    sha256: ctx.sha(&a.file),
                    value: format!("{key} = {got}"),
                    expected: format!("{key} = {want}"),
                });
            }
            None => {
                fails.push(format!("{key} is not set by any sysctl.d file (expected {want}; {SYSCTL_PATH} is missing or lacks it)"));
                ev.push(Evidence {
                    path: SYSCTL_PATH.into(),
                    sha256: ctx.sha(SYSCTL_PATH),
                    value: format!("{key} unset (kernel default)"),
                    expected: format!("{key} = {want}"),
                });
            }
        }
    }
    let n = m.len();
    outcome(
        fails,
        format!("all {n} keys have the required effective value"),
        ev,
    )
}

// ---------------------------------------------------------------- modules

const MODPROBE_DIRS: &[&str] = &[
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/lib/modprobe.d",
    "/usr/lib/modprobe.d",
];

fn check_modules(mods: &[String], ctx: &Ctx<'_>) -> Outcome {
    // (pattern, command, file, line) in the order kmod reads them.
    let mut installs: Vec<(String, String, String, usize)> = Vec::new();
    for path in ctx.conf_files(MODPROBE_DIRS) {
        let Some((_, content)) = ctx.read(&path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&content).replace("\\\n", " ");
        for (n, line) in text.lines().enumerate() {
            let l = line.trim();
            let mut words = l.split_whitespace();
            if words.next() != Some("install") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let cmd = words.collect::<Vec<_>>().join(" ");
            installs.push((
                crate::load::normalize_module(module),
                cmd,
                path.clone(),
                n + 1,
            ));
        }
    }
    let mut fails = Vec::new();
    let mut ev = Vec::new();
    for m in mods {
        let norm = crate::load::normalize_module(m);
        // kmod uses the first matching install command.
        let first = installs
            .iter()
            .find(|(pat, ..)| glob_match(pat, &norm, '\0'));
        match first {
            Some((_, cmd, file, line)) => {
                let prog = cmd.split_whitespace().next().unwrap_or("");
                let ok = matches!(
                    prog,
                    "/bin/false"
                        | "/bin/true"
                        | "/usr/bin/false"
                        | "/usr/bin/true"
                        | "false"
                        | "true"
                );
                if !ok {
                    fails.push(format!(
                        "module {m} is loadable: first install command is '{cmd}' at {file}:{line}"
                    ));
                }
                ev.push(Evidence {
                    path: file.clone(),
                    sha256: ctx.sha(file),
                    value: format!("install {m} {cmd}"),
                    expected: format!("install {m} /bin/false"),
                });
            }
            None => {
                fails.push(format!("module {m} is loadable: no install command in modprobe.d ({MODPROBE_PATH} is missing or lacks it)"));
                ev.push(Evidence {
                    path: MODPROBE_PATH.into(),
                    sha256: ctx.sha(MODPROBE_PATH),
                    value: format!("no install line for {m}"),
                    expected: format!("install {m} /bin/false"),
                });
            }
        }
    }
    outcome(
        fails,
        format!("all {} modules are blocked from loading", mods.len()),
        ev,
    )
}

// ---------------------------------------------------------------- units

/// Unit directories a `.wants` link can live in.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Whether `unit` is masked, with the reasons it is not.
fn unit_masked(unit: &str, ctx: &Ctx<'_>, fails: &mut Vec<String>, ev: &mut Vec<Evidence>) {
    let p = format!("{SYSTEMD_ETC}/{unit}");
    let (masked, value) = match ctx.ix.get(&p).map(|e| &e.kind) {
        Some(EntryKind::Symlink { target }) => {
            let real = ctx.ix.resolve(&p);
            (real.as_deref() == Some("/dev/null"), format!("-> {target}"))
        }
        Some(EntryKind::File) => {
            let empty = ctx.fs.read(&p).ok().flatten().is_some_and(|c| c.is_empty());
            (
                empty,
                if empty {
                    "empty file".into()
                } else {
                    "unit file".into()
                },
            )
        }
        Some(_) => (false, "not a file or link".into()),
        None => (false, "absent".into()),
    };
    if !masked {
        fails.push(format!("{unit} is not masked: {p} is {value}"));
    }
    ev.push(Evidence {
        path: p.clone(),
        sha256: None,
        value,
        expected: "-> /dev/null".into(),
    });
    let mut seen = BTreeSet::new();
    for d in UNIT_DIRS {
        for link in enabling_links(&ctx.ix, d, unit) {
            let real = ctx.ix.resolve(&link).unwrap_or_else(|| link.clone());
            if !seen.insert(real) {
                continue;
            }
            fails.push(format!("{unit} is enabled by {link}"));
            ev.push(Evidence {
                path: link.clone(),
                sha256: None,
                value: "enabling link present".into(),
                expected: "absent".into(),
            });
        }
    }
}

fn check_masked(units: &[String], ctx: &Ctx<'_>) -> Outcome {
    let mut fails = Vec::new();
    let mut ev = Vec::new();
    for u in units {
        unit_masked(u, ctx, &mut fails, &mut ev);
    }
    outcome(
        fails,
        format!("all {} units are masked and not enabled", units.len()),
        ev,
    )
}

// ---------------------------------------------------------------- cmdline

/// The value of the last `key=` argument, or whether a flag is present.
fn cmdline_has(args: &[String], want: &str) -> (bool, String) {
    match want.split_once('=') {
        Some((key, _)) => {
            let prefix = format!("{key}=");
            match args.iter().rev().find(|a| a.starts_with(&prefix)) {
                Some(a) => (a == want, a.clone()),
                None => (false, format!("{key} absent")),
            }
        }
        None => {
            let present = args.iter().any(|a| a == want);
            (
                present,
                if present {
                    want.to_string()
                } else {
                    format!("{want} absent")
                },
            )
        }
    }
}

fn check_cmdline(k: &KernelCmdline, ctx: &Ctx<'_>) -> Outcome {
    let mut fails = Vec::new();
    let mut ev = Vec::new();
    for want in &k.require {
        let (ok, got) = cmdline_has(&ctx.cmdline, want);
        if !ok {
            fails.push(format!("kernel argument {want} required, found {got}"));
        }
        ev.push(Evidence {
            path: "kernel-cmdline".into(),
            sha256: None,
            value: got,
            expected: want.clone(),
        });
    }
    for pat in &k.forbid {
        let hits: Vec<&String> = ctx
            .cmdline
            .iter()
            .filter(|a| cmdline_forbids(pat, a))
            .collect();
        for h in &hits {
            fails.push(format!("forbidden kernel argument {h} (matches {pat})"));
        }
        ev.push(Evidence {
            path: "kernel-cmdline".into(),
            sha256: None,
            value: if hits.is_empty() {
                format!("no {pat}")
            } else {
                hits.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            },
            expected: format!("no {pat}"),
        });
    }
    let msg = format!(
        "command line '{}' meets every requirement",
        ctx.raw_cmdline.trim()
    );
    outcome(fails, msg, ev)
}

fn check_console(c: &Console, ctx: &Ctx<'_>) -> Outcome {
    let mut fails = Vec::new();
    let mut ev = Vec::new();
    for u in c.masked_units() {
        unit_masked(&u, ctx, &mut fails, &mut ev);
    }
    if !c.getty_auto {
        let (_, got) = cmdline_has(&ctx.cmdline, GETTY_AUTO_OFF);
        let val = got.strip_prefix("systemd.getty_auto=").unwrap_or("");
        // systemd parses booleans: 0, no, false, off.
        let ok = matches!(val, "0" | "no" | "false" | "off");
        if !ok {
            fails.push(format!("kernel command line lacks {GETTY_AUTO_OFF} (found {got}): systemd-getty-generator starts a getty on every console= device"));
        }
        ev.push(Evidence {
            path: "kernel-cmdline".into(),
            sha256: None,
            value: got,
            expected: GETTY_AUTO_OFF.into(),
        });
    }
    outcome(
        fails,
        "no login prompt is started on the listed consoles".into(),
        ev,
    )
}

// ---------------------------------------------------------------- sshd

/// Keywords whose values accumulate over lines instead of first-wins.
const SSH_ACCUMULATE: &[&str] = &["allowusers", "allowgroups", "denyusers", "denygroups"];

struct SshLine {
    key: String,
    value: String,
    file: String,
    line: usize,
    in_match: Option<String>,
}

fn sshd_lines(
    ctx: &Ctx<'_>,
    path: &str,
    depth: usize,
    in_match: Option<String>,
    out: &mut Vec<SshLine>,
    errs: &mut Vec<String>,
) {
    if depth > 16 {
        errs.push(format!("Include nesting too deep at {path}"));
        return;
    }
    let Some((_, content)) = ctx.read(path) else {
        return;
    };
    let text = String::from_utf8_lossy(&content);
    let mut cur_match = in_match.clone();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let split = l
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(l.len());
        let key = l[..split].to_ascii_lowercase();
        let rest = l[split..].trim_start();
        let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
        let value = rest
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(rest)
            .to_string();
        match key.as_str() {
            "match" => {
                cur_match = Some(format!("Match {value} ({path}:{})", n + 1));
            }
            "include" => {
                for pat in value.split_whitespace() {
                    let pat = if pat.starts_with('/') {
                        pat.to_string()
                    } else {
                        format!("/etc/ssh/{pat}")
                    };
                    for f in glob_paths(&ctx.ix, &pat) {
                        sshd_lines(ctx, &f, depth + 1, cur_match.clone(), out, errs);
                    }
                }
            }
            _ => out.push(SshLine {
                key,
                value,
                file: path.to_string(),
                line: n + 1,
                in_match: cur_match.clone(),
            }),
        }
    }
}

/// Expands a glob path inside the image, sorted like glob(3); `*` does not
/// match a leading dot.
fn glob_paths(ix: &Index<'_>, pat: &str) -> Vec<String> {
    let mut cur = vec!["/".to_string()];
    for comp in pat.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for base in &cur {
            let join = |n: &str| {
                if base == "/" {
                    format!("/{n}")
                } else {
                    format!("{base}/{n}")
                }
            };
            if comp.contains(['*', '?']) {
                for name in ix.list_dir(base) {
                    if name.starts_with('.') && !comp.starts_with('.') {
                        continue;
                    }
                    if glob_match(comp, &name, '/') {
                        next.push(join(&name));
                    }
                }
            } else {
                next.push(join(comp));
            }
        }
        cur = next;
    }
    cur.retain(|p| {
        ix.resolve(p)
            .is_some_and(|r| ix.get(&r).is_some() || r == "/dev/null")
    });
    cur.sort();
    cur
}

fn check_ssh(m: &BTreeMap<String, String>, ctx: &Ctx<'_>) -> Outcome {
    let main = "/etc/ssh/sshd_config";
    if ctx.read(main).is_none() {
        let installed = ctx
            .ix
            .resolve("/usr/sbin/sshd")
            .is_some_and(|p| ctx.ix.get(&p).is_some());
        if installed {
            return Outcome {
                ok: false,
                message: format!("sshd is installed but {main} is absent"),
                evidence: vec![Evidence {
                    path: main.into(),
                    sha256: None,
                    value: "absent".into(),
                    expected: "present".into(),
                }],
            };
        }
        return Outcome {
            ok: true,
            message: "openssh-server is not installed (no /usr/sbin/sshd, no sshd_config)".into(),
            evidence: vec![Evidence {
                path: "/usr/sbin/sshd".into(),
                sha256: None,
                value: "absent".into(),
                expected: "absent, or configured as the policy says".into(),
            }],
        };
    }
    let mut lines = Vec::new();
    let mut errs = Vec::new();
    sshd_lines(ctx, main, 0, None, &mut lines, &mut errs);
    let mut fails = errs;
    let mut ev = Vec::new();
    for (kw, want) in m {
        let lk = kw.to_ascii_lowercase();
        let global: Vec<&SshLine> = lines
            .iter()
            .filter(|l| l.key == lk && l.in_match.is_none())
            .collect();
        let (got, at) = if SSH_ACCUMULATE.contains(&lk.as_str()) {
            let v: Vec<&str> = global.iter().map(|l| l.value.as_str()).collect();
            (
                if v.is_empty() {
                    None
                } else {
                    Some(v.join(" "))
                },
                global.first(),
            )
        } else {
            (global.first().map(|l| l.value.clone()), global.first())
        };
        let ok = got
            .as_deref()
            .is_some_and(|g| norm_ws(g).eq_ignore_ascii_case(&norm_ws(want)));
        match (&got, at) {
            (Some(g), Some(l)) => {
                if !ok {
                    fails.push(format!(
                        "sshd {kw} is '{g}' from {}:{} (expected '{want}')",
                        l.file, l.line
                    ));
                }
                ev.push(Evidence {
                    path: l.file.clone(),
                    sha256: ctx.sha(&l.file),
                    value: format!("{kw} {g}"),
                    expected: format!("{kw} {want}"),
                });
            }
            _ => {
                fails.push(format!("sshd {kw} is not set ({SSHD_DROPIN} is missing or not included; expected '{want}')"));
                ev.push(Evidence {
                    path: SSHD_DROPIN.into(),
                    sha256: ctx.sha(SSHD_DROPIN),
                    value: format!("{kw} unset (sshd default)"),
                    expected: format!("{kw} {want}"),
                });
            }
        }
        // A Match block overrides the global value for the connections it
        // matches; one that weakens a managed keyword defeats the rule.
        for l in lines.iter().filter(|l| l.key == lk && l.in_match.is_some()) {
            if !norm_ws(&l.value).eq_ignore_ascii_case(&norm_ws(want)) {
                fails.push(format!(
                    "sshd {kw} is '{}' at {}:{} inside {}",
                    l.value,
                    l.file,
                    l.line,
                    l.in_match.as_deref().unwrap_or("Match")
                ));
            }
        }
    }
    outcome(
        fails,
        format!(
            "all {} sshd keywords have the required effective value",
            m.len()
        ),
        ev,
    )
}

// ---------------------------------------------------------------- accounts

fn check_accounts(a: &Accounts, ctx: &Ctx<'_>) -> Outcome {
    let mut fails = Vec::new();
    let mut ev = Vec::new();
    let passwd = ctx.read("/etc/passwd");
    let shadow = ctx.read(SHADOW_PATH);
    let ptext = passwd
        .as_ref()
        .map(|(_, c)| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default();
    let stext = shadow
        .as_ref()
        .map(|(_, c)| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default();
    if passwd.is_none() {
        fails.push("/etc/passwd is absent".into());
    }
    if shadow.is_none() {
        fails.push(format!("{SHADOW_PATH} is absent"));
    }
    let fields = |t: &str| -> Vec<Vec<String>> {
        t.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_string).collect())
            .collect()
    };
    let pw = fields(&ptext);
    let sh = fields(&stext);
    let psha = ctx.sha("/etc/passwd");
    let ssha = ctx.sha(SHADOW_PATH);
    if a.root_locked {
        let root = sh.iter().find(|f| f[0] == "root");
        let field = root.and_then(|f| f.get(1)).cloned();
        let locked = field
            .as_deref()
            .is_some_and(|p| p.starts_with('!') || p.starts_with('*'));
        if !locked {
            let what = match &field {
                None => "has no /etc/shadow entry".to_string(),
                Some(p) if p.is_empty() => "has an empty password".to_string(),
                Some(_) => "has a usable password".to_string(),
            };
            fails.push(format!(
                "root {what} in {SHADOW_PATH} (expected a locked password, '!' prefix)"
            ));
        }
        ev.push(Evidence {
            path: SHADOW_PATH.into(),
            sha256: ssha.clone(),
            value: format!(
                "root password {}",
                if locked { "locked" } else { "not locked" }
            ),
            expected: "root password locked".into(),
        });
    }
    if a.no_empty_passwords {
        let mut empty: Vec<String> = sh
            .iter()
            .filter(|f| f.get(1).is_some_and(|p| p.is_empty()))
            .map(|f| format!("{} ({SHADOW_PATH})", f[0]))
            .collect();
        empty.extend(
            pw.iter()
                .filter(|f| f.get(1).is_some_and(|p| p.is_empty()))
                .map(|f| format!("{} (/etc/passwd)", f[0])),
        );
        for e in &empty {
            fails.push(format!("account {e} has an empty password field"));
        }
        ev.push(Evidence {
            path: SHADOW_PATH.into(),
            sha256: ssha.clone(),
            value: if empty.is_empty() {
                "no empty password fields".into()
            } else {
                format!("empty: {}", empty.join(", "))
            },
            expected: "no empty password fields".into(),
        });
    }
    if a.single_uid0 {
        let zero: Vec<&str> = pw
            .iter()
            .filter(|f| f.get(2).is_some_and(|u| u.trim() == "0"))
            .map(|f| f[0].as_str())
            .collect();
        for name in zero.iter().filter(|n| **n != "root") {
            fails.push(format!(
                "account {name} has UID 0 in /etc/passwd (only root may)"
            ));
        }
        ev.push(Evidence {
            path: "/etc/passwd".into(),
            sha256: psha,
            value: format!("UID 0: {}", zero.join(", ")),
            expected: "UID 0: root".into(),
        });
    }
    outcome(fails, "account database meets every requirement".into(), ev)
}

// ---------------------------------------------------------------- files

const MAX_LISTED: usize = 200;

fn check_files(f: &Files, ctx: &Ctx<'_>) -> Outcome {
    let mut fails = Vec::new();
    let mut ev = Vec::new();
    let allow: BTreeSet<&str> = f.setuid_allow.iter().map(String::as_str).collect();
    let mut suid_ok = 0usize;
    for (path, e) in &ctx.ix.map {
        let mode = e.mode;
        match e.kind {
            EntryKind::File if mode & 0o6000 != 0 => {
                let bits = if mode & 0o4000 != 0 {
                    "setuid"
                } else {
                    "setgid"
                };
                let ok = allow.contains(path.as_str());
                if ok {
                    suid_ok += 1;
                } else {
                    fails.push(format!(
                        "{path} is {bits} (mode {mode:04o}) and not on the allow-list"
                    ));
                }
                if ev.len() < MAX_LISTED {
                    ev.push(Evidence {
                        path: path.clone(),
                        sha256: ctx.fs.read(path).ok().flatten().map(|c| sha256_hex(&c)),
                        value: format!("mode {mode:04o} uid {} gid {}", e.uid, e.gid),
                        expected: if ok {
                            "on the setuid allow-list".into()
                        } else {
                            "no setuid/setgid bits".into()
                        },
                    });
                }
            }
            _ => {}
        }
        if !f.no_world_writable {
            continue;
        }
        let bad = match e.kind {
            EntryKind::File | EntryKind::Fifo => mode & 0o002 != 0,
            EntryKind::Dir => mode & 0o002 != 0 && mode & 0o1000 == 0,
            // Symlink modes mean nothing; device and socket permissions are
            // set by the kernel and udev at run time.
            _ => false,
        };
        if bad {
            let what = if e.kind == EntryKind::Dir {
                "world-writable directory without the sticky bit"
            } else {
                "world-writable"
            };
            fails.push(format!("{path} is {what} (mode {mode:04o})"));
            if ev.len() < MAX_LISTED {
                ev.push(Evidence {
                    path: path.clone(),
                    sha256: None,
                    value: format!("mode {mode:04o}"),
                    expected: "not world-writable (directories: sticky)".into(),
                });
            }
        }
    }
    if fails.len() > MAX_LISTED {
        let n = fails.len() - MAX_LISTED;
        fails.truncate(MAX_LISTED);
        fails.push(format!("and {n} more"));
    }
    outcome(
        fails,
        format!("{suid_ok} setuid/setgid files, all on the allow-list; no world-writable entries"),
        ev,
    )
}

// ---------------------------------------------------------------- firewall

fn check_firewall(fw: &Firewall, ctx: &Ctx<'_>) -> Outcome {
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

    #[test]
    fn globs() {
        assert!(glob_match(
            "net.ipv4.conf.*.rp_filter",
            "net.ipv4.conf.all.rp_filter",
            '.'
        ));
        assert!(!glob_match("net.*", "net.ipv4.x", '.'));
        assert!(glob_match("*.conf", "00-slotsmith.conf", '/'));
        assert!(glob_match("dccp", "dccp", '\0'));
        assert_eq!(
            norm_sysctl_key("net/ipv4/ip_forward"),
            "net.ipv4.ip_forward"
        );
    }

    #[test]
    fn cmdline_last_value_wins() {
        let args: Vec<String> = "init_on_free=1 quiet init_on_free=0"
            .split(' ')
            .map(String::from)
            .collect();
        assert_eq!(
            cmdline_has(&args, "init_on_free=1"),
            (false, "init_on_free=0".into())
        );
        assert!(cmdline_has(&args, "quiet").0);
    }
}
