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

/// Each required key against the value systemd-sysctl would leave.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::{sha256_hex, MemRootfs};

    fn want(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(fs: &MemRootfs, pairs: &[(&str, &str)]) -> Outcome {
        check(&want(pairs), &Ctx::new(fs, ""))
    }

    #[test]
    fn the_file_that_sorts_last_wins_whatever_its_directory() {
        let mut fs = MemRootfs::new();
        fs.file("/etc/sysctl.d/10-a.conf", 0o644, "kernel.x = 1\n")
            .file("/usr/lib/sysctl.d/90-b.conf", 0o644, "kernel.x = 2\n");
        let o = run(&fs, &[("kernel.x", "2")]);
        assert!(o.ok, "{}", o.message);
        assert_eq!(o.message, "all 1 keys have the required effective value");
        assert_eq!(o.evidence[0].path, "/usr/lib/sysctl.d/90-b.conf");
        assert_eq!(o.evidence[0].value, "kernel.x = 2");
        assert_eq!(
            o.evidence[0].sha256.as_deref(),
            Some(sha256_hex(b"kernel.x = 2\n").as_str())
        );
        let o = run(&fs, &[("kernel.x", "1")]);
        assert!(!o.ok);
        assert_eq!(
            o.message,
            "kernel.x is 2 from /usr/lib/sysctl.d/90-b.conf:1 (expected 1)"
        );
        // Within one file, the last line wins too.
        fs.file(
            "/usr/lib/sysctl.d/90-b.conf",
            0o644,
            "kernel.x = 2\nkernel.x = 3\n",
        );
        let o = run(&fs, &[("kernel.x", "2")]);
        assert_eq!(
            o.message,
            "kernel.x is 3 from /usr/lib/sysctl.d/90-b.conf:2 (expected 2)"
        );
    }

    #[test]
    fn a_same_named_file_in_etc_shadows_the_vendor_one() {
        let mut fs = MemRootfs::new();
        fs.file("/usr/lib/sysctl.d/50-x.conf", 0o644, "kernel.x = 1\n")
            .file("/etc/sysctl.d/50-x.conf", 0o644, "kernel.x = 2\n");
        let o = run(&fs, &[("kernel.x", "2")]);
        assert!(o.ok, "{}", o.message);
        assert_eq!(o.evidence[0].path, "/etc/sysctl.d/50-x.conf");
        // Masked with a link to /dev/null: the key is set by nothing.
        fs.remove("/etc/sysctl.d/50-x.conf")
            .symlink("/etc/sysctl.d/50-x.conf", "/dev/null");
        let o = run(&fs, &[("kernel.x", "1")]);
        assert!(!o.ok);
        assert!(
            o.message
                .starts_with("kernel.x is not set by any sysctl.d file"),
            "{}",
            o.message
        );
        // /run shadows /usr/lib but not /etc.
        let mut fs = MemRootfs::new();
        fs.file("/usr/lib/sysctl.d/50-x.conf", 0o644, "kernel.x = 1\n")
            .file("/run/sysctl.d/50-x.conf", 0o644, "kernel.x = 3\n");
        assert_eq!(
            run(&fs, &[("kernel.x", "1")]).message,
            "kernel.x is 3 from /run/sysctl.d/50-x.conf:1 (expected 1)"
        );
    }

    #[test]
    fn a_bare_minus_key_unsets_an_earlier_assignment() {
        let mut fs = MemRootfs::new();
        fs.file("/etc/sysctl.d/10-a.conf", 0o644, "kernel.x = 1\n")
            .file("/run/sysctl.d/20-b.conf", 0o644, "-kernel.x\n");
        let o = run(&fs, &[("kernel.x", "1")]);
        assert!(!o.ok);
        assert_eq!(
            o.message,
            "kernel.x is (unset by '-key') from /run/sysctl.d/20-b.conf:1 (expected 1)"
        );
        // With a value, `-` only means "ignore a failure": it assigns.
        fs.file("/run/sysctl.d/20-b.conf", 0o644, "-kernel.x = 1\n");
        assert!(run(&fs, &[("kernel.x", "1")]).ok);
    }

    #[test]
    fn an_explicit_key_beats_every_glob_and_the_last_glob_wins() {
        let mut fs = MemRootfs::new();
        fs.file(
            "/etc/sysctl.d/10-a.conf",
            0o644,
            "net.ipv4.conf.all.rp_filter = 1\nnet.ipv4.conf.*.rp_filter = 2\n",
        )
        .file(
            "/usr/lib/sysctl.d/90-z.conf",
            0o644,
            "net.ipv4.conf.*.rp_filter = 0\n",
        );
        let o = run(
            &fs,
            &[
                ("net.ipv4.conf.all.rp_filter", "1"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ],
        );
        assert!(o.ok, "{}", o.message);
        assert_eq!(o.evidence[1].path, "/usr/lib/sysctl.d/90-z.conf");
        // `*` stands for one component, not several.
        fs.file(
            "/usr/lib/sysctl.d/95-w.conf",
            0o644,
            "net.*.rp_filter = 5\n",
        );
        assert!(run(&fs, &[("net.ipv4.conf.default.rp_filter", "0")]).ok);
    }

    #[test]
    fn slash_keys_comments_and_whitespace_read_as_systemd_reads_them() {
        assert_eq!(
            norm_sysctl_key("net/ipv4/ip_forward"),
            "net.ipv4.ip_forward"
        );
        // A dot inside a slash-separated key is part of a name (a VLAN).
        assert_eq!(
            norm_sysctl_key("net/ipv4/conf/eth0.100/rp_filter"),
            "net.ipv4.conf.eth0/100.rp_filter"
        );
        assert_eq!(norm_sysctl_key("kernel.x"), "kernel.x");
        let mut fs = MemRootfs::new();
        fs.file(
            "/etc/sysctl.d/10-a.conf",
            0o644,
            "# kernel.y = 9\n; kernel.y = 9\nnot an assignment\n\n  net/ipv4/ip_forward=0  \nnet.ipv4.tcp_rmem = 4096\t 87380   6291456\n",
        )
        // Only *.conf files count.
        .file("/etc/sysctl.d/99-late.conf.bak", 0o644, "net.ipv4.ip_forward = 1\n");
        let o = run(
            &fs,
            &[
                ("net.ipv4.ip_forward", "0"),
                ("net.ipv4.tcp_rmem", "4096 87380 6291456"),
            ],
        );
        assert!(o.ok, "{}", o.message);
        assert_eq!(o.evidence[0].value, "net.ipv4.ip_forward = 0");
        assert!(!run(&fs, &[("kernel.y", "9")]).ok);
    }

    #[test]
    fn etc_sysctl_conf_counts_through_debians_link() {
        let mut fs = MemRootfs::new();
        fs.file("/etc/sysctl.conf", 0o644, "kernel.x = 1\n")
            .symlink("/etc/sysctl.d/99-sysctl.conf", "../sysctl.conf");
        let o = run(&fs, &[("kernel.x", "1")]);
        assert!(o.ok, "{}", o.message);
        assert_eq!(o.evidence[0].path, "/etc/sysctl.d/99-sysctl.conf");
    }

    #[test]
    fn a_key_nothing_sets_fails_with_our_drop_in_as_evidence() {
        let fs = MemRootfs::new();
        let o = run(&fs, &[("kernel.x", "1"), ("kernel.y", "2")]);
        assert!(!o.ok);
        assert_eq!(
            o.message,
            format!(
                "kernel.x is not set by any sysctl.d file (expected 1; {SYSCTL_PATH} is missing or lacks it); \
                 kernel.y is not set by any sysctl.d file (expected 2; {SYSCTL_PATH} is missing or lacks it)"
            )
        );
        assert_eq!(o.evidence.len(), 2);
        assert_eq!(o.evidence[0].path, SYSCTL_PATH);
        assert_eq!(o.evidence[0].sha256, None);
        assert_eq!(o.evidence[0].value, "kernel.x unset (kernel default)");
        assert_eq!(o.evidence[0].expected, "kernel.x = 1");
    }
}
