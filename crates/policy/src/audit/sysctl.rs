//! sysctl: the value each kernel parameter has once the device has booted.
//!
//! On the device, systemd-sysctl reads every `*.conf` in /etc, /run,
//! /usr/local/lib and /usr/lib `sysctl.d` (and /lib on split-usr images).
//! A file name in an earlier directory shadows the same name in a later
//! one (a link to /dev/null masks it); the files left are applied in
//! file-name order whatever their directory, and the last line for a key
//! wins. A bare `-key` line replaces earlier assignments with none, so the
//! kernel keeps its default. An explicit key beats a glob line
//! (`net.ipv4.conf.*.rp_filter`) wherever each stands; among globs the
//! last wins. Debian's /etc/sysctl.conf counts through its `99-sysctl.conf`
//! link.
//!
//! The check builds the same table from the image: `Ctx::conf_files` gives
//! the shadowed, sorted file list (links followed inside the image), each
//! line is read in that order with its key normalised (a key whose first
//! separator is a slash swaps slashes and dots), and each required key is
//! compared with what the table ends up holding, whitespace runs folded.
//! The evidence names the file that set the value, or our drop-in when
//! nothing did.

use std::collections::BTreeMap;

use super::{glob_match, norm_ws, outcome, Ctx, Evidence, Outcome};
use crate::apply::SYSCTL_PATH;

/// How the check reads the image, for the report.
pub(super) const CHECK: &str = "effective sysctl.d value per key (systemd-sysctl order)";

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

pub(super) fn check(m: &BTreeMap<String, String>, ctx: &Ctx<'_>) -> Outcome {
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
