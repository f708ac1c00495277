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

const FILE_KEYS: &[&str] = &["description", "rules"];
const RULE_KEYS: &[&str] = &[
    "id",
    "title",
    "rationale",
    "severity",
    "profiles",
    "controls",
    "sysctl",
    "modules-disabled",
    "firewall",
    "masked-units",
    "ssh",
    "accounts",
    "files",
    "kernel-cmdline",
    "console",
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
    let mut m = r.map(path, v, RULE_KEYS)?;
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

/// A scalar as the text written to a config file: numbers as written,
/// strings as given. Booleans are refused because `true` means nothing to
/// sysctl or sshd (they want `1` or `yes`).
fn scalar_text(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => {
            r.check_strings(path, v);
            // Already reported; echoing it would break the message's line.
            (!s.chars().any(char::is_control)).then(|| s.clone())
        }
        Value::Bool(_) => {
            r.error(
                path,
                "write the value the program expects (1/0, yes/no), not a boolean",
            );
            None
        }
        other => {
            r.error(
                path,
                format!("must be a number or a string, found {}", describe(other)),
            );
            None
        }
    }
}

/// A value that goes into a line-based config file: printable, non-empty, no
/// comment characters, single spaces only.
fn config_value_ok(s: &str) -> bool {
    !s.is_empty()
        && s.trim() == s
        && !s.contains("  ")
        && s.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && !s.contains(['#', ';', '"', '\''])
}

fn read_sysctl(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<BTreeMap<String, String>> {
    let m = r.map(path, v, &[])?;
    let mut m = m;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for key in m.keys() {
        let kp = join_key(path, &key);
        let Some(val) = r.raw(&mut m, &key) else {
            continue;
        };
        let key_ok = !key.is_empty()
            && key.len() <= 128
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
            && !key.starts_with(['.', '-'])
            && !key.ends_with('.')
            && !key.contains("..");
        if !key_ok {
            r.key_error(
                &kp,
                format!(
                    "'{key}' is not a sysctl key (dotted names of a-z, 0-9, '_', '-'; no globs)"
                ),
            );
            ok = false;
            continue;
        }
        match scalar_text(r, &kp, val) {
            Some(t) if config_value_ok(&t) => {
                out.insert(key, t);
            }
            Some(t) => {
                r.error(
                    &kp,
                    format!("'{t}' is not a sysctl value (printable, no '#', ';' or quotes)"),
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if out.is_empty() && ok {
        r.error(path, "set at least one key");
        ok = false;
    }
    r.finish(m);
    ok.then_some(out)
}

fn simple_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn read_modules(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Vec<String>> {
    let list: Vec<String> = r.convert(path, v)?;
    let mut ok = !list.is_empty();
    if list.is_empty() {
        r.error(path, "list at least one module");
    }
    let mut seen = BTreeSet::new();
    for (i, m) in list.iter().enumerate() {
        if !simple_name_ok(m) {
            r.error(
                &format!("{path}[{i}]"),
                format!("'{m}' is not a kernel module name (a-z, 0-9, '_', '-')"),
            );
            ok = false;
        } else if !seen.insert(normalize_module(m)) {
            r.error(
                &format!("{path}[{i}]"),
                format!("module '{m}' is listed twice"),
            );
            ok = false;
        }
    }
    ok.then_some(list)
}

/// kmod treats '-' and '_' in module names as the same character.
pub fn normalize_module(m: &str) -> String {
    m.replace('-', "_")
}

/// Whether `s` is a systemd unit name we can mask: a name with a known
/// suffix, no path separators, optionally a template instance.
pub fn valid_unit(s: &str) -> bool {
    let Some((name, suffix)) = s.rsplit_once('.') else {
        return false;
    };
    let suffix_ok = matches!(
        suffix,
        "service" | "socket" | "target" | "path" | "timer" | "mount" | "automount" | "swap"
    );
    suffix_ok
        && !name.is_empty()
        && s.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.@-\\".contains(&b))
        && !name.starts_with(['.', '-'])
}

fn read_units(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Vec<String>> {
    let list: Vec<String> = r.convert(path, v)?;
    let mut ok = !list.is_empty();
    if list.is_empty() {
        r.error(path, "list at least one unit");
    }
    let mut seen = BTreeSet::new();
    for (i, u) in list.iter().enumerate() {
        if !valid_unit(u) {
            r.error(
                &format!("{path}[{i}]"),
                format!("'{u}' is not a systemd unit name (such as avahi-daemon.service or cups.socket)"),
            );
            ok = false;
        } else if !seen.insert(u.clone()) {
            r.error(
                &format!("{path}[{i}]"),
                format!("unit '{u}' is listed twice"),
            );
            ok = false;
        }
    }
    ok.then_some(list)
}

fn read_allow(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Allow> {
    let mut m = r.map(path, v, ALLOW_KEYS)?;
    let service: Option<String> = r.req(&mut m, "service");
    if let Some(s) = &service {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":_.@-".contains(&b));
        if !ok {
            r.error(
                &join_key(path, "service"),
                format!("'{s}' is not a unit or program name"),
            );
        }
    }
    let port: Option<u16> = r.req(&mut m, "port");
    if port == Some(0) {
        r.error(&join_key(path, "port"), "port 0 is not a port");
    }
    let protocol = r
        .req::<String>(&mut m, "protocol")
        .and_then(|p| match p.as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => {
                r.error(
                    &join_key(path, "protocol"),
                    format!("unknown protocol '{p}' (expected tcp or udp)"),
                );
                None
            }
        });
    let sources: Vec<String> = r.opt(&mut m, "sources").unwrap_or_default();
    let mut ok = true;
    for (i, s) in sources.iter().enumerate() {
        if !valid_cidr(s) {
            r.error(
                &format!("{}[{i}]", join_key(path, "sources")),
                format!("'{s}' is not an IPv4 or IPv6 network (such as 10.20.0.0/16 or fd00::/8)"),
            );
            ok = false;
        }
    }
    r.finish(m);
    let port = port.filter(|p| *p != 0)?;
    ok.then_some(Allow {
        service: service?,
        port,
        protocol: protocol?,
        sources,
    })
}

fn read_allow_list(r: &mut Reader<'_>, path: &str, v: Option<&Value>) -> Option<Vec<Allow>> {
    let Some(v) = v else { return Some(Vec::new()) };
    let Value::Sequence(items) = v else {
        r.error(path, format!("must be a list, found {}", describe(v)));
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let ip = format!("{path}[{i}]");
        match read_allow(r, &ip, item) {
            Some(a) => {
                if !seen.insert((a.port, a.protocol)) {
                    r.error(
                        &ip,
                        format!(
                            "{}/{} is allowed twice; list every source in one entry",
                            a.port,
                            a.protocol.as_str()
                        ),
                    );
                    ok = false;
                }
                out.push(a);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn read_firewall(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Firewall> {
    let mut m = r.map(path, v, FIREWALL_KEYS)?;
    let input_v = r.raw(&mut m, "input");
    let input = read_allow_list(r, &join_key(path, "input"), input_v);
    let icmp: Option<bool> = r.req(&mut m, "icmp");
    let log_drops: Option<bool> = r.req(&mut m, "log-drops");
    let output = r
        .req::<String>(&mut m, "output")
        .and_then(|o| match o.as_str() {
            "accept" => Some(OutputPolicy::Accept),
            "drop" => Some(OutputPolicy::Drop),
            _ => {
                r.error(
                    &join_key(path, "output"),
                    format!("unknown output policy '{o}' (expected accept or drop)"),
                );
                None
            }
        });
    let oa_v = r.raw(&mut m, "output-allow");
    let output_allow = read_allow_list(r, &join_key(path, "output-allow"), oa_v);
    if output == Some(OutputPolicy::Accept) && output_allow.as_ref().is_some_and(|l| !l.is_empty())
    {
        r.error(
            &join_key(path, "output-allow"),
            "output-allow only applies with output: drop",
        );
    }
    r.finish(m);
    Some(Firewall {
        input: input?,
        icmp: icmp?,
        log_drops: log_drops?,
        output: output?,
        output_allow: output_allow?,
    })
}

fn read_ssh(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<BTreeMap<String, String>> {
    let mut m = r.map(path, v, &[])?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for key in m.keys() {
        let kp = join_key(path, &key);
        let Some(val) = r.raw(&mut m, &key) else {
            continue;
        };
        let Some(canon) = SSH_KEYWORDS.iter().find(|k| k.eq_ignore_ascii_case(&key)) else {
            r.key_error(
                &kp,
                format!("'{key}' is not an sshd keyword this tool manages"),
            );
            ok = false;
            continue;
        };
        if out.contains_key(*canon) {
            r.key_error(
                &kp,
                format!("'{key}' is set twice (sshd keywords ignore case)"),
            );
            ok = false;
            continue;
        }
        match scalar_text(r, &kp, val) {
            Some(t) if config_value_ok(&t) => {
                out.insert(canon.to_string(), t);
            }
            Some(t) => {
                r.error(
                    &kp,
                    format!("'{t}' is not an sshd value (printable, no '#', ';' or quotes)"),
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if out.is_empty() && ok {
        r.error(path, "set at least one keyword");
        ok = false;
    }
    r.finish(m);
    ok.then_some(out)
}

fn read_accounts(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Accounts> {
    let mut m = r.map(path, v, ACCOUNTS_KEYS)?;
    let root_locked: Option<bool> = r.req(&mut m, "root-locked");
    let no_empty: Option<bool> = r.req(&mut m, "no-empty-passwords");
    let single: Option<bool> = r.req(&mut m, "single-uid0");
    r.finish(m);
    Some(Accounts {
        root_locked: root_locked?,
        no_empty_passwords: no_empty?,
        single_uid0: single?,
    })
}

fn abs_path_ok(p: &str) -> bool {
    p.starts_with('/')
        && p.len() > 1
        && !p.ends_with('/')
        && !p
            .split('/')
            .skip(1)
            .any(|c| c.is_empty() || c == "." || c == "..")
        && p.chars().all(|c| c.is_ascii_graphic())
}

fn read_files(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Files> {
    let mut m = r.map(path, v, FILES_KEYS)?;
    let allow: Option<Vec<String>> = r.req(&mut m, "setuid-allow");
    let mut ok = true;
    if let Some(list) = &allow {
        for (i, p) in list.iter().enumerate() {
            if !abs_path_ok(p) {
                r.error(
                    &format!("{}[{i}]", join_key(path, "setuid-allow")),
                    format!("'{p}' is not a normalised absolute path"),
                );
                ok = false;
            }
        }
    }
    let nww: Option<bool> = r.req(&mut m, "no-world-writable");
    r.finish(m);
    let mut allow = allow?;
    allow.sort();
    allow.dedup();
    ok.then_some(Files {
        setuid_allow: allow,
        no_world_writable: nww?,
    })
}

fn cmdline_arg_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.chars().all(|c| c.is_ascii_graphic())
        && !s.contains(['"', '\''])
}

fn read_cmdline(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<KernelCmdline> {
    let mut m = r.map(path, v, CMDLINE_KEYS)?;
    let require: Option<Vec<String>> = r.opt(&mut m, "require");
    let forbid: Option<Vec<String>> = r.opt(&mut m, "forbid");
    let mut ok = true;
    for (key, list) in [("require", &require), ("forbid", &forbid)] {
        for (i, a) in list.iter().flatten().enumerate() {
            if !cmdline_arg_ok(a) {
                r.error(
                    &format!("{}[{i}]", join_key(path, key)),
                    format!("'{a}' is not one kernel argument (no spaces or quotes)"),
                );
                ok = false;
            }
        }
    }
    let require = require.unwrap_or_default();
    let forbid = forbid.unwrap_or_default();
    if require.is_empty() && forbid.is_empty() {
        r.error(path, "set require or forbid");
        ok = false;
    }
    for (i, a) in require.iter().enumerate() {
        if forbid.iter().any(|f| crate::apply::cmdline_forbids(f, a)) {
            r.error(
                &format!("{}[{i}]", join_key(path, "require")),
                format!("'{a}' is both required and forbidden"),
            );
            ok = false;
        }
    }
    r.finish(m);
    ok.then_some(KernelCmdline { require, forbid })
}

fn read_console(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Console> {
    let mut m = r.map(path, v, CONSOLE_KEYS)?;
    let sg = r
        .req::<String>(&mut m, "serial-getty")
        .and_then(|s| match s.as_str() {
            "masked" => Some(GettyPolicy::Masked),
            "allowed" => Some(GettyPolicy::Allowed),
            _ => {
                r.error(
                    &join_key(path, "serial-getty"),
                    format!("unknown value '{s}' (expected masked or allowed)"),
                );
                None
            }
        });
    let getty_auto: Option<bool> = r.req(&mut m, "getty-auto");
    let serial: Vec<String> = r
        .opt(&mut m, "serial-ttys")
        .unwrap_or_else(|| vec!["ttyS0".to_string()]);
    let vts: Vec<String> = r.opt(&mut m, "vts").unwrap_or_default();
    let mut ok = true;
    for (key, list) in [("serial-ttys", &serial), ("vts", &vts)] {
        for (i, t) in list.iter().enumerate() {
            let good = !t.is_empty()
                && t.len() <= 32
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !good {
                r.error(
                    &format!("{}[{i}]", join_key(path, key)),
                    format!("'{t}' is not a tty name (such as ttyS0 or tty1)"),
                );
                ok = false;
            }
        }
    }
    r.finish(m);
    ok.then_some(Console {
        serial_getty: sg?,
        getty_auto: getty_auto?,
        serial_ttys: serial,
        vts,
    })
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
