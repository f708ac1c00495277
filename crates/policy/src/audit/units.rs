//! systemd units: masked, and no link left that would start them.
//!
//! On the device, systemd refuses to load a unit whose file in
//! /etc/systemd/system is a link to /dev/null or an empty file: that is a
//! mask, and /etc wins over every vendor directory. `.wants`, `.requires`
//! and `.upholds` links in any unit directory pull a unit in at boot; with
//! a mask they only fail, but one left behind means a layer expects the
//! unit to run and starts it the moment the mask goes away, so the policy
//! wants neither.
//!
//! The check looks up /etc/systemd/system/<unit> in the image: a link
//! whose final target is /dev/null, or an empty regular file, is a mask; a
//! unit file, a directory or nothing is not. It then lists the enabling
//! links under /etc, /run, /usr/local/lib, /usr/lib and /lib
//! `systemd/system`, reporting links that resolve to the same file once
//! (with merged /usr, /lib and /usr/lib list the same links).

use std::collections::BTreeSet;

use super::{outcome, Ctx, Evidence, Outcome};
use crate::apply::{enabling_links, SYSTEMD_ETC};
use crate::rootfs::EntryKind;

/// How the check reads the image, for the report.
pub(super) const CHECK: &str = "unit linked to /dev/null in /etc/systemd/system, no enabling links";

/// Unit directories a `.wants` link can live in.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Whether `unit` is masked, with the reasons it is not.
pub(super) fn unit_masked(
    unit: &str,
    ctx: &Ctx<'_>,
    fails: &mut Vec<String>,
    ev: &mut Vec<Evidence>,
) {
    let p = format!("{SYSTEMD_ETC}/{unit}");
    let (masked, value) = match ctx.ix.get(&p).map(|e| &e.kind) {
        Some(EntryKind::Symlink { target }) => {
            let real = ctx.ix.resolve(&p);
            (real.as_deref() == Some("/dev/null"), format!("-> {target}"))
        }
        Some(EntryKind::File) => {
            let empty = ctx.fs.read(&p).ok().flatten().is_some_and(|c| c.is_empty());
            (
                empty,
                if empty {
                    "empty file".into()
                } else {
                    "unit file".into()
                },
            )
        }
        Some(_) => (false, "not a file or link".into()),
        None => (false, "absent".into()),
    };
    if !masked {
        fails.push(format!("{unit} is not masked: {p} is {value}"));
    }
    ev.push(Evidence {
        path: p.clone(),
        sha256: None,
        value,
        expected: "-> /dev/null".into(),
    });
    let mut seen = BTreeSet::new();
    for d in UNIT_DIRS {
        for link in enabling_links(&ctx.ix, d, unit) {
            let real = ctx.ix.resolve(&link).unwrap_or_else(|| link.clone());
            if !seen.insert(real) {
                continue;
            }
            fails.push(format!("{unit} is enabled by {link}"));
            ev.push(Evidence {
                path: link.clone(),
                sha256: None,
                value: "enabling link present".into(),
                expected: "absent".into(),
            });
        }
    }
}

pub(super) fn check(units: &[String], ctx: &Ctx<'_>) -> Outcome {
    let mut fails = Vec::new();
    let mut ev = Vec::new();
    for u in units {
        unit_masked(u, ctx, &mut fails, &mut ev);
    }
    outcome(
        fails,
        format!("all {} units are masked and not enabled", units.len()),
        ev,
    )
}
