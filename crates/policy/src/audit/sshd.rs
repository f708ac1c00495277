//! sshd: the value each managed keyword takes for a connection.
//!
//! On the device, sshd reads /etc/ssh/sshd_config top to bottom and reads
//! an `Include`d file where the directive stands (relative paths under
//! /etc/ssh, globs expanded in sorted order). For most keywords the first
//! value wins and later lines are ignored, which is why our drop-in sorts
//! first; `AllowUsers`, `AllowGroups`, `DenyUsers` and `DenyGroups`
//! accumulate instead. A `Match` block re-applies its lines for the
//! connections it matches, up to the next `Match` or the end of its file.
//! Keywords are case-insensitive and may be written `Keyword=value`.
//!
//! The check walks the configuration the same way inside the image
//! (Include depth-limited, so a file including itself is reported, not
//! followed for ever), keeping each line's file, line number and enclosing
//! Match block. A managed keyword's value is its first line outside any
//! Match block (all of them joined, for the accumulating ones), compared
//! case-insensitively with whitespace runs folded; a line inside a Match
//! block that sets it to anything else fails the rule, since it weakens it
//! for some connections. An image without sshd passes: there is nothing to
//! harden. One with /usr/sbin/sshd but no sshd_config fails.

use std::collections::BTreeMap;

use super::{glob_match, norm_ws, outcome, Ctx, Evidence, Outcome};
use crate::apply::SSHD_DROPIN;
use crate::rootfs::Index;

/// How the check reads the image, for the report.
pub(super) const CHECK: &str =
    "effective sshd_config value (first match, Include resolved in the image)";

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

/// Each keyword's global value, and every Match block that sets it.
pub(super) fn check(m: &BTreeMap<String, String>, ctx: &Ctx<'_>) -> Outcome {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::MemRootfs;

    const MAIN: &str = "/etc/ssh/sshd_config";

    fn want(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(fs: &MemRootfs, pairs: &[(&str, &str)]) -> Outcome {
        check(&want(pairs), &Ctx::new(fs, ""))
    }

    /// Debian's layout: the main file includes the drop-ins first.
    fn debian(main_rest: &str) -> MemRootfs {
        let mut fs = MemRootfs::new();
        fs.file("/usr/sbin/sshd", 0o755, "ELF").file(
            MAIN,
            0o644,
            format!("Include /etc/ssh/sshd_config.d/*.conf\n{main_rest}"),
        );
        fs
    }

    #[test]
    fn the_first_value_wins_across_include_and_main_file() {
        let mut fs = debian("PermitRootLogin yes\n");
        fs.file(SSHD_DROPIN, 0o644, "PermitRootLogin no\n");
        let o = run(&fs, &[("PermitRootLogin", "no")]);
        assert!(o.ok, "{}", o.message);
        assert_eq!(
            o.message,
            "all 1 sshd keywords have the required effective value"
        );
        assert_eq!(o.evidence[0].path, SSHD_DROPIN);
        assert_eq!(o.evidence[0].value, "PermitRootLogin no");
        // A drop-in sorting before ours wins.
        fs.file(
            "/etc/ssh/sshd_config.d/00-aaa.conf",
            0o644,
            "PermitRootLogin yes\n",
        );
        assert_eq!(
            run(&fs, &[("PermitRootLogin", "no")]).message,
            "sshd PermitRootLogin is 'yes' from /etc/ssh/sshd_config.d/00-aaa.conf:1 (expected 'no')"
        );
        // A line before the Include wins over everything included.
        let mut fs = MemRootfs::new();
        fs.file(
            MAIN,
            0o644,
            "PermitRootLogin yes\nInclude sshd_config.d/*.conf\n",
        )
        .file(SSHD_DROPIN, 0o644, "PermitRootLogin no\n");
        assert_eq!(
            run(&fs, &[("PermitRootLogin", "no")]).message,
            "sshd PermitRootLogin is 'yes' from /etc/ssh/sshd_config:1 (expected 'no')"
        );
    }

    #[test]
    fn a_match_block_that_weakens_a_keyword_fails() {
        let mut fs =
            debian("Match User backup\n  PermitRootLogin yes\nMatch all\n  X11Forwarding no\n");
        fs.file(SSHD_DROPIN, 0o644, "PermitRootLogin no\nX11Forwarding no\n");
        let o = run(&fs, &[("PermitRootLogin", "no"), ("X11Forwarding", "no")]);
        assert!(!o.ok);
        assert_eq!(
            o.message,
            "sshd PermitRootLogin is 'yes' at /etc/ssh/sshd_config:3 inside Match User backup (/etc/ssh/sshd_config:2)"
        );
        // The same value inside a Match block is fine.
        let mut fs = debian("Match User backup\n  PermitRootLogin no\n");
        fs.file(SSHD_DROPIN, 0o644, "PermitRootLogin no\n");
        assert!(run(&fs, &[("PermitRootLogin", "no")]).ok);
    }

    #[test]
    fn a_match_block_ends_with_its_file_and_covers_what_it_includes() {
        // A Match in an included file does not swallow the main file's
        // later lines.
        let mut fs = MemRootfs::new();
        fs.file(MAIN, 0o644, "Include /etc/ssh/a.conf\nPermitRootLogin no\n")
            .file("/etc/ssh/a.conf", 0o644, "Match User x\nX11Forwarding no\n");
        let o = run(&fs, &[("PermitRootLogin", "no")]);
        assert!(o.ok, "{}", o.message);
        assert_eq!(o.evidence[0].path, MAIN);
        // An Include inside a Match block is conditional: its lines do not
        // set the global value, and a weaker one fails.
        let mut fs = MemRootfs::new();
        fs.file(
            MAIN,
            0o644,
            "PermitRootLogin no\nMatch User x\nInclude /etc/ssh/b.conf\n",
        )
        .file("/etc/ssh/b.conf", 0o644, "PermitRootLogin yes\n");
        assert_eq!(
            run(&fs, &[("PermitRootLogin", "no")]).message,
            "sshd PermitRootLogin is 'yes' at /etc/ssh/b.conf:1 inside Match User x (/etc/ssh/sshd_config:2)"
        );
    }

    #[test]
    fn keywords_are_case_insensitive_with_equals_quotes_and_accumulation() {
        let mut fs = MemRootfs::new();
        fs.file(
            MAIN,
            0o644,
            "# PermitRootLogin yes\n\npermitrootlogin=No\nCiphers \"aes256-gcm@openssh.com\"\nAllowUsers alice\nALLOWUSERS bob   carol\n",
        );
        let o = run(
            &fs,
            &[
                ("PermitRootLogin", "no"),
                ("Ciphers", "aes256-gcm@openssh.com"),
                ("AllowUsers", "alice bob carol"),
            ],
        );
        assert!(o.ok, "{}", o.message);
        // Accumulated values name the first line that contributed.
        assert_eq!(o.evidence[0].value, "AllowUsers alice bob   carol");
        assert!(!run(&fs, &[("AllowUsers", "alice")]).ok);
    }

    #[test]
    fn an_unset_keyword_fails_naming_our_drop_in() {
        let fs = debian("");
        let o = run(&fs, &[("PermitRootLogin", "no")]);
        assert_eq!(
            o.message,
            format!("sshd PermitRootLogin is not set ({SSHD_DROPIN} is missing or not included; expected 'no')")
        );
        assert_eq!(o.evidence[0].path, SSHD_DROPIN);
        assert_eq!(o.evidence[0].value, "PermitRootLogin unset (sshd default)");
        // Hidden files and directories a glob does not reach are not read.
        let mut fs = debian("");
        fs.file(
            "/etc/ssh/sshd_config.d/.00.conf",
            0o644,
            "PermitRootLogin no\n",
        )
        .file("/etc/ssh/other/00.conf", 0o644, "PermitRootLogin no\n");
        assert!(!run(&fs, &[("PermitRootLogin", "no")]).ok);
    }

    #[test]
    fn no_sshd_passes_and_sshd_without_a_config_fails() {
        let o = run(&MemRootfs::new(), &[("PermitRootLogin", "no")]);
        assert!(o.ok);
        assert_eq!(
            o.message,
            "openssh-server is not installed (no /usr/sbin/sshd, no sshd_config)"
        );
        let mut fs = MemRootfs::new();
        fs.file("/usr/sbin/sshd", 0o755, "ELF");
        let o = run(&fs, &[("PermitRootLogin", "no")]);
        assert!(!o.ok);
        assert_eq!(
            o.message,
            "sshd is installed but /etc/ssh/sshd_config is absent"
        );
    }

    #[test]
    fn a_file_including_itself_is_reported_not_followed_for_ever() {
        let mut fs = MemRootfs::new();
        fs.file(MAIN, 0o644, "PermitRootLogin no\nInclude sshd_config\n");
        let o = run(&fs, &[("PermitRootLogin", "no")]);
        assert!(!o.ok);
        assert_eq!(
            o.message,
            "Include nesting too deep at /etc/ssh/sshd_config"
        );
    }
}
