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
