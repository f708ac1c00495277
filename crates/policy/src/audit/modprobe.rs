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

/// Each module against the first `install` line kmod would use.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::MemRootfs;

    fn run(fs: &MemRootfs, mods: &[&str]) -> Outcome {
        let mods: Vec<String> = mods.iter().map(|m| m.to_string()).collect();
        check(&mods, &Ctx::new(fs, ""))
    }

    #[test]
    fn false_or_true_as_the_install_command_blocks_the_module() {
        let mut fs = MemRootfs::new();
        fs.file(
            "/etc/modprobe.d/00-x.conf",
            0o644,
            "blacklist dccp\ninstall dccp /bin/false\ninstall sctp /usr/bin/true\ninstall rds false\n",
        );
        let o = run(&fs, &["dccp", "sctp", "rds"]);
        assert!(o.ok, "{}", o.message);
        assert_eq!(o.message, "all 3 modules are blocked from loading");
        assert_eq!(o.evidence[0].path, "/etc/modprobe.d/00-x.conf");
        assert_eq!(o.evidence[0].value, "install dccp /bin/false");
    }

    #[test]
    fn the_first_install_line_in_name_order_wins() {
        let mut fs = MemRootfs::new();
        fs.file(
            "/usr/lib/modprobe.d/50-ours.conf",
            0o644,
            "install dccp /bin/false\n",
        )
        .file(
            "/etc/modprobe.d/00-aaa.conf",
            0o644,
            "# load it anyway\ninstall dccp /sbin/modprobe --ignore-install dccp\n",
        );
        let o = run(&fs, &["dccp"]);
        assert!(!o.ok);
        assert_eq!(
            o.message,
            "module dccp is loadable: first install command is \
             '/sbin/modprobe --ignore-install dccp' at /etc/modprobe.d/00-aaa.conf:2"
        );
        // The same name in /etc shadows ours in /usr/lib.
        let mut fs = MemRootfs::new();
        fs.file(
            "/usr/lib/modprobe.d/50-ours.conf",
            0o644,
            "install dccp /bin/false\n",
        )
        .file("/etc/modprobe.d/50-ours.conf", 0o644, "");
        assert!(run(&fs, &["dccp"])
            .message
            .starts_with("module dccp is loadable: no install command"));
    }

    #[test]
    fn blacklist_alone_does_not_block_and_the_drop_in_is_the_evidence() {
        let mut fs = MemRootfs::new();
        fs.file("/etc/modprobe.d/x.conf", 0o644, "blacklist dccp\n");
        let o = run(&fs, &["dccp"]);
        assert!(!o.ok);
        assert_eq!(
            o.message,
            format!("module dccp is loadable: no install command in modprobe.d ({MODPROBE_PATH} is missing or lacks it)")
        );
        assert_eq!(o.evidence[0].path, MODPROBE_PATH);
        assert_eq!(o.evidence[0].value, "no install line for dccp");
    }

    #[test]
    fn dashes_globs_and_continued_lines_match_as_kmod_matches() {
        let mut fs = MemRootfs::new();
        fs.file(
            "/etc/modprobe.d/x.conf",
            0o644,
            "install nf-conntrack-ftp /bin/false\ninstall usb_stor* /bin/true\ninstall cramfs \\\n  /bin/false\n",
        );
        let o = run(&fs, &["nf_conntrack_ftp", "usb-storage", "cramfs"]);
        assert!(o.ok, "{}", o.message);
        // A pattern matches the whole name, not a prefix.
        assert!(!run(&fs, &["cramfs_ext"]).ok);
    }
}
