//! Loading `policies/<name>.yaml` into [`Rule`]s, and waivers from an image.
//!
//! Policy files are what security reviewers audit, so a mistake in one must
//! be reported precisely and completely: every problem in every file is
//! collected with `file:line:col: key.path: message` before failing, through
//! the shared positioned [`Reader`]. Values are validated here, once, for
//! what later stages write into line-based files (sysctl.d, sshd_config,
//! nftables, modprobe.d, the kernel command line): a stray space, `#` or
//! newline in a value would otherwise inject a second setting or comment out
//! the intended one.
//!
//! A policy file is a mapping with a `rules:` list (and an optional
//! `description:`); each rule has `id`, `title`, `rationale`, `severity`,
//! `profiles`, `controls` and exactly one setting key (see
//! [`crate::model::SETTING_KINDS`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_norway::Value;
use slotsmith_yaml::diag::Diagnostics;
use slotsmith_yaml::yaml::{describe, join_key, Doc, Reader};

use crate::model::*;

mod settings;

use settings::*;
pub use settings::{normalize_module, valid_unit};

const FILE_KEYS: &[&str] = &["description", "rules"];
/// A rule's own keys; its setting keys follow from
/// [`crate::model::SETTING_KINDS`], so a new kind of setting is accepted
/// wherever it is defined.
const RULE_HEADER_KEYS: &[&str] = &[
    "id",
    "title",
    "rationale",
    "severity",
    "profiles",
    "controls",
];
const FIREWALL_KEYS: &[&str] = &["input", "icmp", "log-drops", "output", "output-allow"];
const ALLOW_KEYS: &[&str] = &["service", "port", "protocol", "sources"];
const ACCOUNTS_KEYS: &[&str] = &["root-locked", "no-empty-passwords", "single-uid0"];
const FILES_KEYS: &[&str] = &["setuid-allow", "no-world-writable"];
const CMDLINE_KEYS: &[&str] = &["require", "forbid"];
const CONSOLE_KEYS: &[&str] = &["serial-getty", "getty-auto", "serial-ttys", "vts"];
const WAIVER_KEYS: &[&str] = &["rule", "justification", "approver"];

/// sshd keywords a policy may set, in OpenSSH's spelling. sshd matches
/// keywords case-insensitively; the policy is normalised to this spelling so
/// the generated file and the audit agree. Keywords outside this list are
/// rejected rather than passed through: an unknown keyword makes sshd refuse
/// to start, which on a device means no remote service at all.
pub const SSH_KEYWORDS: &[&str] = &[
    "AllowAgentForwarding",
    "AllowGroups",
    "AllowStreamLocalForwarding",
    "AllowTcpForwarding",
    "AllowUsers",
    "AuthenticationMethods",
    "Banner",
    "ChallengeResponseAuthentication",
    "ChannelTimeout",
    "Ciphers",
    "ClientAliveCountMax",
    "ClientAliveInterval",
    "Compression",
    "DenyGroups",
    "DenyUsers",
    "DisableForwarding",
    "GatewayPorts",
    "GSSAPIAuthentication",
    "HostbasedAuthentication",
    "HostKeyAlgorithms",
    "IgnoreRhosts",
    "KbdInteractiveAuthentication",
    "KerberosAuthentication",
    "KexAlgorithms",
    "LoginGraceTime",
    "LogLevel",
    "MACs",
    "MaxAuthTries",
    "MaxSessions",
    "MaxStartups",
    "PasswordAuthentication",
    "PermitEmptyPasswords",
    "PermitRootLogin",
    "PermitTunnel",
    "PermitUserEnvironment",
    "PermitUserRC",
    "PrintLastLog",
    "PrintMotd",
    "PubkeyAuthentication",
    "StrictModes",
    "TCPKeepAlive",
    "UnusedConnectionTimeout",
    "UseDNS",
    "UsePAM",
    "X11Forwarding",
];

/// Loads `policies/<name>.yaml` for each name under `root`, in order.
/// Rules keep their file order; ids must be unique across all files.
pub fn load_policies(root: &Path, names: &[String]) -> Result<Vec<Rule>, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut rules = Vec::new();
    // id -> where it was first defined, to name both places on a duplicate.
    let mut ids: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut seen_names = BTreeSet::new();
    for name in names {
        let shown = format!("policies/{name}.yaml");
        if !valid_name(name) {
            diags.file_error(
                Path::new(&shown),
                format!("'{name}' is not a policy name (a-z, 0-9, '-', '_')"),
            );
            continue;
        }
        if !seen_names.insert(name.clone()) {
            // Listing a file twice would make every rule a duplicate of
            // itself; one mention is what was meant.
            continue;
        }
        // The one path rule (crates/yaml/src/input.rs): a policy file may
        // not be a symlink out of the project, nor a device.
        let abs =
            match slotsmith_yaml::input::resolve_input_file(root, &format!("policies/{name}.yaml"))
            {
                Ok(a) => a,
                Err(e) => {
                    diags.file_error(Path::new(&shown), e);
                    continue;
                }
            };
        // Bounded (1 MiB) and decoded as UTF-8 with a position.
        let text = match slotsmith_yaml::read::read_yaml(&abs, Path::new(&shown)) {
            Ok(t) => t,
            Err(d) => {
                diags.extend(d);
                continue;
            }
        };
        add_file(&shown, &text, &mut ids, &mut rules, &mut diags);
    }
    diags.into_result(rules)
}

/// Parses the text of one policy file shown as `shown`: all of
/// [`load_policies`] for one file but reading it, so tests and fuzzers can
/// give text directly.
pub fn parse_policy(shown: &str, text: &str) -> Result<Vec<Rule>, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut rules = Vec::new();
    add_file(shown, text, &mut BTreeMap::new(), &mut rules, &mut diags);
    diags.into_result(rules)
}

/// Parses one policy file into `rules`, reporting an id already in `ids`
/// (id -> file and line where it was first defined) at the duplicate.
fn add_file(
    shown: &str,
    text: &str,
    ids: &mut BTreeMap<String, (String, usize)>,
    rules: &mut Vec<Rule>,
    diags: &mut Diagnostics,
) {
    match parse_policy_file(shown, text) {
        Ok((file_rules, d)) => {
            diags.extend(d);
            for (rule, id_pos) in file_rules {
                if let Some((f, l)) = ids.get(&rule.id) {
                    diags.push(slotsmith_yaml::diag::Diagnostic {
                        file: shown.into(),
                        line: id_pos.0,
                        col: id_pos.1,
                        key: id_pos.2.clone(),
                        message: format!("duplicate rule id '{}' (also at {f}:{l})", rule.id),
                    });
                    continue;
                }
                ids.insert(rule.id.clone(), (rule.file.clone(), rule.line));
                rules.push(rule);
            }
        }
        Err(d) => diags.extend(d),
    }
}

type IdPos = (usize, usize, String);

/// Parses one policy file's text. Returns the rules that read cleanly (with
/// the position of their id, for duplicate reports) and the diagnostics.
fn parse_policy_file(
    shown: &str,
    text: &str,
) -> Result<(Vec<(Rule, IdPos)>, Diagnostics), Diagnostics> {
    let doc = Doc::parse(Path::new(shown), text)?;
    let mut r = Reader::new(&doc);
    let mut out = Vec::new();
    if let Some(mut m) = r.map("", &doc.value, FILE_KEYS) {
        let _: Option<String> = r.opt(&mut m, "description");
        match r.raw(&mut m, "rules") {
            None => r.error("rules", "missing required key 'rules'"),
            Some(Value::Sequence(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("rules[{i}]");
                    if let Some(rule) = read_rule(&mut r, shown, &path, item) {
                        let id_path = join_key(&path, "id");
                        let (l, c) = doc.position(&id_path);
                        out.push((rule, (l, c, id_path)));
                    }
                }
            }
            Some(other) => r.error(
                "rules",
                format!("must be a list, found {}", describe(other)),
            ),
        }
        r.finish(m);
    }
    Ok((out, r.diags))
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A rule id: upper-case words joined by '-', ending in a number
/// (`NET-SYSCTL-001`). Ids appear in reports, SARIF and waivers, so they
/// must be plain and stable.
pub fn valid_rule_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    id.len() <= 64
        && parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
        && parts[0].as_bytes()[0].is_ascii_uppercase()
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

fn read_rule(r: &mut Reader<'_>, file: &str, path: &str, v: &Value) -> Option<Rule> {
    let doc = r.doc;
    static RULE_KEYS: std::sync::LazyLock<Vec<&'static str>> =
        std::sync::LazyLock::new(|| [RULE_HEADER_KEYS, crate::model::SETTING_KINDS].concat());
    let mut m = r.map(path, v, &RULE_KEYS)?;
    let line = doc.position(path).0;
    let p = |k: &str| join_key(path, k);

    let id: Option<String> = r.req(&mut m, "id");
    if let Some(id) = &id {
        if !valid_rule_id(id) {
            r.error(
                &p("id"),
                format!("'{id}' is not a rule id (upper-case words and '-', ending in a number, such as NET-SYSCTL-001)"),
            );
        }
    }
    let title: Option<String> = r.req(&mut m, "title");
    if let Some(t) = &title {
        if t.trim().is_empty() || t.len() > 120 {
            r.error(&p("title"), "must be 1 to 120 characters");
        }
    }
    // Rationales are prose for reports (often a folded `>` block ending in
    // a newline) and never reach a config file, so line breaks are fine;
    // other control characters are still refused.
    let rationale = match r.raw(&mut m, "rationale") {
        None => {
            r.error(&p("rationale"), "missing required key 'rationale'");
            None
        }
        Some(Value::String(t)) => {
            if let Some(c) = t.chars().find(|c| c.is_control() && *c != '\n') {
                r.error(
                    &p("rationale"),
                    format!("control character {c:?} is not allowed in values"),
                );
                None
            } else if t.trim().is_empty() {
                r.error(&p("rationale"), "must not be empty: reviewers read it");
                None
            } else {
                Some(t.split_whitespace().collect::<Vec<_>>().join(" "))
            }
        }
        Some(other) => {
            r.error(
                &p("rationale"),
                format!("must be a string, found {}", describe(other)),
            );
            None
        }
    };
    let severity = r.req::<String>(&mut m, "severity").and_then(|s| {
        let sev = Severity::parse(&s);
        if sev.is_none() {
            r.error(
                &p("severity"),
                format!("unknown severity '{s}' (expected low, medium, high or critical)"),
            );
        }
        sev
    });
    let profiles = r.req::<Vec<String>>(&mut m, "profiles").and_then(|list| {
        let mut out = Vec::new();
        let mut ok = true;
        if list.is_empty() {
            r.error(&p("profiles"), "list at least one profile");
            ok = false;
        }
        for (i, s) in list.iter().enumerate() {
            match Profile::parse(s) {
                Some(pr) if !out.contains(&pr) => out.push(pr),
                Some(_) => {
                    r.error(
                        &format!("{}[{i}]", p("profiles")),
                        format!("profile '{s}' is listed twice"),
                    );
                    ok = false;
                }
                None => {
                    r.error(
                        &format!("{}[{i}]", p("profiles")),
                        format!("unknown profile '{s}' (expected development or production)"),
                    );
                    ok = false;
                }
            }
        }
        out.sort();
        ok.then_some(out)
    });
    let controls = match r.raw(&mut m, "controls") {
        Some(cv) => read_controls(r, &p("controls"), cv),
        None => {
            r.error(&p("controls"), "missing required key 'controls'");
            None
        }
    };

    let present: Vec<&str> = crate::model::SETTING_KINDS
        .iter()
        .copied()
        .filter(|k| m.has(k))
        .collect();
    let setting = if present.len() != 1 {
        let found = if present.is_empty() {
            "none".to_string()
        } else {
            present.join(" and ")
        };
        r.error(
            path,
            format!(
                "set exactly one of {} (found {found})",
                crate::model::SETTING_KINDS.join(", ")
            ),
        );
        for k in crate::model::SETTING_KINDS {
            r.raw(&mut m, k);
        }
        None
    } else {
        let kind = present[0];
        let sv = r.raw(&mut m, kind)?;
        let sp = p(kind);
        match kind {
            "sysctl" => read_sysctl(r, &sp, sv).map(Setting::Sysctl),
            "modules-disabled" => read_modules(r, &sp, sv).map(Setting::ModulesDisabled),
            "firewall" => read_firewall(r, &sp, sv).map(Setting::Firewall),
            "masked-units" => read_units(r, &sp, sv).map(Setting::MaskedUnits),
            "ssh" => read_ssh(r, &sp, sv).map(Setting::Ssh),
            "accounts" => read_accounts(r, &sp, sv).map(Setting::Accounts),
            "files" => read_files(r, &sp, sv).map(Setting::Files),
            "kernel-cmdline" => read_cmdline(r, &sp, sv).map(Setting::KernelCmdline),
            "forbidden-files" => read_forbidden(r, &sp, sv).map(Setting::ForbiddenFiles),
            _ => read_console(r, &sp, sv).map(Setting::Console),
        }
    };
    r.finish(m);
    Some(Rule {
        id: id?,
        title: title?,
        rationale: rationale?,
        severity: severity?,
        profiles: profiles?,
        controls: controls?,
        setting: setting?,
        file: file.to_string(),
        line,
    })
}

fn read_controls(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Controls> {
    let mut m = r.map(path, v, FRAMEWORKS)?;
    let mut c = Controls::default();
    let mut ok = true;
    for fw in FRAMEWORKS {
        let Some(list) = r.opt::<Vec<String>>(&mut m, fw) else {
            continue;
        };
        let fpath = join_key(path, fw);
        for (i, id) in list.iter().enumerate() {
            if let Err(e) = check_control(fw, id) {
                r.error(&format!("{fpath}[{i}]"), e);
                ok = false;
            }
        }
        let mut list = list;
        list.dedup();
        if let Some(dst) = c.list_mut(fw) {
            *dst = list;
        }
    }
    if ok && c.by_framework().iter().all(|(_, l)| l.is_empty()) {
        r.error(path, "map the rule to at least one control");
        ok = false;
    }
    r.finish(m);
    ok.then_some(c)
}

/// Reads an image's `waivers:` list. Every waiver needs a non-empty
/// justification and approver: a waiver is a recorded risk acceptance, and
/// one without a reason or an owner is not evidence of anything.
/// Problems are recorded in `r`; the waivers that read cleanly are returned.
pub fn read_waivers(r: &mut Reader<'_>, v: &Value) -> Vec<Waiver> {
    let path = "waivers";
    let Value::Sequence(items) = v else {
        if !v.is_null() {
            r.error(path, format!("must be a list, found {}", describe(v)));
        }
        return Vec::new();
    };
    let mut out: Vec<Waiver> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ip = format!("{path}[{i}]");
        let Some(mut m) = r.map(&ip, item, WAIVER_KEYS) else {
            continue;
        };
        let rule: Option<String> = r.req(&mut m, "rule");
        let just: Option<String> = r.req(&mut m, "justification");
        let appr: Option<String> = r.req(&mut m, "approver");
        r.finish(m);
        let mut ok = true;
        if let Some(id) = &rule {
            if !valid_rule_id(id) {
                r.error(&join_key(&ip, "rule"), format!("'{id}' is not a rule id"));
                ok = false;
            } else if out.iter().any(|w| &w.rule == id) {
                r.error(
                    &join_key(&ip, "rule"),
                    format!("rule '{id}' is waived twice"),
                );
                ok = false;
            }
        }
        for (key, val) in [("justification", &just), ("approver", &appr)] {
            if val.as_ref().is_some_and(|s| s.trim().is_empty()) {
                r.error(&join_key(&ip, key), format!("{key} must not be empty"));
                ok = false;
            }
        }
        if let (Some(rule), Some(j), Some(a), true) = (rule, just, appr, ok) {
            out.push(Waiver {
                rule,
                justification: j.trim().to_string(),
                approver: a.trim().to_string(),
            });
        }
    }
    out
}

/// Waivers that name no loaded rule: the caller reports them (a waiver for a
/// renamed or removed rule would otherwise silently waive nothing).
pub fn unknown_waivers<'w>(rules: &[Rule], waivers: &'w [Waiver]) -> Vec<&'w Waiver> {
    waivers
        .iter()
        .filter(|w| !rules.iter().any(|r| r.id == w.rule))
        .collect()
}
