//! Kernel modules: whether `modprobe <module>` would load it.
//!
//! On the device, kmod reads every `*.conf` in /etc, /run, /usr/local/lib,
//! /lib and /usr/lib `modprobe.d`, a name in an earlier directory
//! shadowing the same name in a later one, in file-name order. When an
//! `install` line matches the module, kmod runs the first such command
//! instead of inserting the module, so `install dccp /bin/false` makes
//! every load request fail. Module names treat `-` and `_` alike.
//!
//! The check collects the `install` lines of the image in that order
//! (backslash-continued lines joined, names normalised as kmod does,
//! patterns matched like fnmatch) and takes each module's first match:
//! the module is blocked when that command runs `false` or `true`, under
//! /bin, /usr/bin or the bare name.

use super::{glob_match, outcome, Ctx, Evidence, Outcome};
use crate::apply::MODPROBE_PATH;

/// How the check reads the image, for the report.
pub(super) const CHECK: &str = "first matching modprobe.d install command per module";

const MODPROBE_DIRS: &[&str] = &[
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/lib/modprobe.d",
    "/usr/lib/modprobe.d",
];

pub(super) fn check(mods: &[String], ctx: &Ctx<'_>) -> Outcome {
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
