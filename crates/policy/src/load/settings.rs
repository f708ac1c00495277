//! The readers of each rule's setting (sysctl, modules, units, firewall,
//! ssh, accounts, files, kernel command line, console): each checks its
//! part of a rule and reports every problem at its key.

use std::collections::{BTreeMap, BTreeSet};

use serde_norway::Value;
use slotsmith_yaml::yaml::{describe, join_key, Reader};

use crate::model::*;

use super::*;

/// A scalar as the text written to a config file: numbers as written,
/// strings as given. Booleans are refused because `true` means nothing to
/// sysctl or sshd (they want `1` or `yes`).
pub(super) fn scalar_text(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<String> {
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
pub(super) fn config_value_ok(s: &str) -> bool {
    !s.is_empty()
        && s.trim() == s
        && !s.contains("  ")
        && s.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && !s.contains(['#', ';', '"', '\''])
}
/// `sysctl:` — kernel keys to their values.
pub(super) fn read_sysctl(
    r: &mut Reader<'_>,
    path: &str,
    v: &Value,
) -> Option<BTreeMap<String, String>> {
    read_key_values(r, path, v, "a sysctl value", "key", |key, _| {
        let key_ok = !key.is_empty()
            && key.len() <= 128
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
            && !key.starts_with(['.', '-'])
            && !key.ends_with('.')
            && !key.contains("..");
        if key_ok {
            Ok(key.to_string())
        } else {
            Err(format!(
                "'{key}' is not a sysctl key (dotted names of a-z, 0-9, '_', '-'; no globs)"
            ))
        }
    })
}

/// A mapping of setting names to configuration values, as both sysctl.d
/// and sshd_config.d files hold them: `name` checks a key and gives its
/// canonical spelling (or the message for a bad one); every value must be
/// printable text a config line can carry; at least one key is required.
fn read_key_values(
    r: &mut Reader<'_>,
    path: &str,
    v: &Value,
    value_noun: &str,
    key_noun: &str,
    name: impl Fn(&str, &BTreeMap<String, String>) -> Result<String, String>,
) -> Option<BTreeMap<String, String>> {
    let mut m = r.map(path, v, &[])?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for key in m.keys() {
        let kp = join_key(path, &key);
        let Some(val) = r.raw(&mut m, &key) else {
            continue;
        };
        let canon = match name(&key, &out) {
            Ok(c) => c,
            Err(msg) => {
                r.key_error(&kp, msg);
                ok = false;
                continue;
            }
        };
        match scalar_text(r, &kp, val) {
            Some(t) if config_value_ok(&t) => {
                out.insert(canon, t);
            }
            Some(t) => {
                r.error(
                    &kp,
                    format!("'{t}' is not {value_noun} (printable, no '#', ';' or quotes)"),
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if out.is_empty() && ok {
        r.error(path, format!("set at least one {key_noun}"));
        ok = false;
    }
    r.finish(m);
    ok.then_some(out)
}

pub(super) fn simple_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub(super) fn read_modules(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Vec<String>> {
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

pub(super) fn read_units(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Vec<String>> {
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

/// `forbidden-files`: normalised absolute paths; only the last component
/// may hold `*`.
pub(super) fn read_forbidden(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Vec<String>> {
    let list: Vec<String> = r.convert(path, v)?;
    let mut ok = !list.is_empty();
    if list.is_empty() {
        r.error(path, "list at least one path");
    }
    let mut seen = BTreeSet::new();
    for (i, p) in list.iter().enumerate() {
        let dir = p.rsplit_once('/').map_or("", |(d, _)| d);
        if !abs_path_ok(p) || dir.contains('*') {
            r.error(
                &format!("{path}[{i}]"),
                format!(
                    "'{p}' is not a normalised absolute path with '*' only in its last component"
                ),
            );
            ok = false;
        } else if !seen.insert(p.clone()) {
            r.error(&format!("{path}[{i}]"), format!("'{p}' is listed twice"));
            ok = false;
        }
    }
    ok.then_some(list)
}

pub(super) fn read_allow(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Allow> {
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

pub(super) fn read_allow_list(
    r: &mut Reader<'_>,
    path: &str,
    v: Option<&Value>,
) -> Option<Vec<Allow>> {
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

pub(super) fn read_firewall(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Firewall> {
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
/// `ssh:` — sshd keywords (spelled as sshd spells them) to their values.
pub(super) fn read_ssh(
    r: &mut Reader<'_>,
    path: &str,
    v: &Value,
) -> Option<BTreeMap<String, String>> {
    read_key_values(r, path, v, "an sshd value", "keyword", |key, seen| {
        let Some(canon) = SSH_KEYWORDS.iter().find(|k| k.eq_ignore_ascii_case(key)) else {
            return Err(format!("'{key}' is not an sshd keyword this tool manages"));
        };
        if seen.contains_key(*canon) {
            return Err(format!("'{key}' is set twice (sshd keywords ignore case)"));
        }
        Ok(canon.to_string())
    })
}

pub(super) fn read_accounts(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Accounts> {
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

pub(super) fn abs_path_ok(p: &str) -> bool {
    p.starts_with('/')
        && p.len() > 1
        && !p.ends_with('/')
        && !p
            .split('/')
            .skip(1)
            .any(|c| c.is_empty() || c == "." || c == "..")
        && p.chars().all(|c| c.is_ascii_graphic())
}

pub(super) fn read_files(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Files> {
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

pub(super) fn cmdline_arg_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.chars().all(|c| c.is_ascii_graphic())
        && !s.contains(['"', '\''])
}

pub(super) fn read_cmdline(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<KernelCmdline> {
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

pub(super) fn read_console(r: &mut Reader<'_>, path: &str, v: &Value) -> Option<Console> {
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
