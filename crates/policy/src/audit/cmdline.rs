//! The kernel command line: the arguments the kernel and systemd act on.
//!
//! On the device, the kernel splits its command line at whitespace and,
//! for a `key=value` parameter given more than once, ends up with the last
//! value (its handler simply runs again); systemd reads /proc/cmdline the
//! same way. A flag such as `slab_nomerge` is present or not.
//!
//! The command line is not in the rootfs: the caller passes the one the
//! image boots with. The check splits it the same way; a required
//! `key=value` is compared with the last `key=` argument, a required flag
//! must appear, and a forbidden pattern matches by name, as `name=...`, or
//! as a prefix when it ends in `=` or `*` (`crate::apply::cmdline_forbids`,
//! shared with the generator).

use super::{outcome, Ctx, Evidence, Outcome};
use crate::apply::cmdline_forbids;
use crate::model::KernelCmdline;

/// How the check reads the image, for the report.
pub(super) const CHECK: &str = "kernel command line of the image (last value of a key wins)";

/// The value of the last `key=` argument, or whether a flag is present.
pub(super) fn cmdline_has(args: &[String], want: &str) -> (bool, String) {
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

/// The required and forbidden arguments against the command line.
pub(super) fn check(k: &KernelCmdline, ctx: &Ctx<'_>) -> Outcome {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::MemRootfs;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn run(cmdline: &str, require: &[&str], forbid: &[&str]) -> Outcome {
        let k = KernelCmdline {
            require: require.iter().map(|s| s.to_string()).collect(),
            forbid: forbid.iter().map(|s| s.to_string()).collect(),
        };
        check(&k, &Ctx::new(&MemRootfs::new(), cmdline))
    }

    #[test]
    fn the_last_value_of_a_key_wins() {
        let a = args("init_on_free=1 quiet init_on_free=0");
        assert_eq!(
            cmdline_has(&a, "init_on_free=1"),
            (false, "init_on_free=0".into())
        );
        assert_eq!(
            cmdline_has(&args("init_on_free=0 init_on_free=1"), "init_on_free=1"),
            (true, "init_on_free=1".into())
        );
        assert!(cmdline_has(&a, "quiet").0);
        assert_eq!(
            cmdline_has(&a, "lockdown=integrity"),
            (false, "lockdown absent".into())
        );
        // A flag is not a key with an empty value, nor a prefix.
        assert_eq!(
            cmdline_has(&args("slab_nomerge=1"), "slab_nomerge"),
            (false, "slab_nomerge absent".into())
        );
    }

    #[test]
    fn required_arguments_pass_and_fail_with_what_was_found() {
        let o = run(
            "  root=/dev/sda2 init_on_free=1 slab_nomerge ",
            &["init_on_free=1", "slab_nomerge"],
            &[],
        );
        assert!(o.ok, "{}", o.message);
        assert_eq!(
            o.message,
            "command line 'root=/dev/sda2 init_on_free=1 slab_nomerge' meets every requirement"
        );
        assert_eq!(o.evidence[0].path, "kernel-cmdline");
        assert_eq!(o.evidence[0].value, "init_on_free=1");
        let o = run(
            "init_on_free=1 init_on_free=0",
            &["init_on_free=1", "slab_nomerge"],
            &[],
        );
        assert_eq!(
            o.message,
            "kernel argument init_on_free=1 required, found init_on_free=0; \
             kernel argument slab_nomerge required, found slab_nomerge absent"
        );
    }

    #[test]
    fn forbidden_patterns_match_names_values_and_prefixes() {
        let forbid = ["systemd.debug_shell", "init=", "rd.break*"];
        assert!(run("quiet systemd.debug_shell_x initrd=/x", &[], &forbid).ok);
        let o = run(
            "systemd.debug_shell=tty9 init=/bin/sh rd.break=pre-mount systemd.debug_shell",
            &[],
            &forbid,
        );
        assert_eq!(
            o.message,
            "forbidden kernel argument systemd.debug_shell=tty9 (matches systemd.debug_shell); \
             forbidden kernel argument systemd.debug_shell (matches systemd.debug_shell); \
             forbidden kernel argument init=/bin/sh (matches init=); \
             forbidden kernel argument rd.break=pre-mount (matches rd.break*)"
        );
        assert_eq!(
            o.evidence[0].value,
            "systemd.debug_shell=tty9 systemd.debug_shell"
        );
        assert_eq!(o.evidence[0].expected, "no systemd.debug_shell");
        // An empty command line has nothing forbidden.
        let o = run("", &[], &forbid);
        assert!(o.ok);
        assert_eq!(o.evidence[2].value, "no rd.break*");
    }
}
