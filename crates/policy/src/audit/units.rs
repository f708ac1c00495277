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
//! The check looks up `/etc/systemd/system/<unit>` in the image: a link
//! whose final target is /dev/null, or an empty regular file, is a mask; a
//! unit file, a directory or nothing is not. It then lists the enabling
//! links under /etc, /run, /usr/local/lib, /usr/lib and /lib
//! `systemd/system`; links that resolve to the same unit file are named
//! once, by the first found (the rule fails either way).

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

/// Each unit masked, with no link left to start it.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::{Entry, MemRootfs};

    const UNIT: &str = "debug-shell.service";

    fn run(fs: &MemRootfs) -> Outcome {
        check(&[UNIT.to_string()], &Ctx::new(fs, ""))
    }

    fn with_unit() -> MemRootfs {
        let mut fs = MemRootfs::new();
        fs.file(
            "/lib/systemd/system/debug-shell.service",
            0o644,
            "[Service]\nExecStart=/bin/sh\n",
        );
        fs
    }

    #[test]
    fn a_link_to_dev_null_is_a_mask() {
        let mut fs = with_unit();
        fs.symlink("/etc/systemd/system/debug-shell.service", "/dev/null");
        let o = run(&fs);
        assert!(o.ok, "{}", o.message);
        assert_eq!(o.message, "all 1 units are masked and not enabled");
        assert_eq!(o.evidence[0].value, "-> /dev/null");
        // Through another link it is still /dev/null.
        let mut fs = with_unit();
        fs.symlink("/etc/systemd/system/debug-shell.service", "../null-alias")
            .symlink("/etc/systemd/null-alias", "/dev/null");
        assert!(run(&fs).ok);
    }

    #[test]
    fn an_empty_file_is_a_mask_and_a_unit_file_is_not() {
        let mut fs = with_unit();
        fs.file("/etc/systemd/system/debug-shell.service", 0o644, "");
        let o = run(&fs);
        assert!(o.ok, "{}", o.message);
        assert_eq!(o.evidence[0].value, "empty file");
        fs.file("/etc/systemd/system/debug-shell.service", 0o644, "[Unit]\n");
        let o = run(&fs);
        assert!(!o.ok);
        assert_eq!(
            o.message,
            "debug-shell.service is not masked: /etc/systemd/system/debug-shell.service is unit file"
        );
    }

    #[test]
    fn a_link_elsewhere_a_directory_or_nothing_is_not_a_mask() {
        let mut fs = with_unit();
        fs.symlink(
            "/etc/systemd/system/debug-shell.service",
            "/lib/systemd/system/debug-shell.service",
        );
        assert_eq!(
            run(&fs).message,
            "debug-shell.service is not masked: /etc/systemd/system/debug-shell.service \
             is -> /lib/systemd/system/debug-shell.service"
        );
        let mut fs = with_unit();
        fs.dir("/etc/systemd/system/debug-shell.service", 0o755);
        assert!(run(&fs).message.ends_with("is not a file or link"));
        let fs = with_unit();
        let o = run(&fs);
        assert!(
            o.message.ends_with("debug-shell.service is absent"),
            "{}",
            o.message
        );
        assert_eq!(o.evidence[0].expected, "-> /dev/null");
    }

    #[test]
    fn an_enabling_link_in_any_unit_directory_fails_a_masked_unit() {
        for dir in [
            "/etc/systemd/system",
            "/usr/lib/systemd/system",
            "/run/systemd/system",
        ] {
            for kind in ["wants", "requires", "upholds"] {
                let mut fs = with_unit();
                fs.symlink("/etc/systemd/system/debug-shell.service", "/dev/null");
                let link = format!("{dir}/sysinit.target.{kind}/{UNIT}");
                fs.symlink(&link, "/lib/systemd/system/debug-shell.service");
                let o = run(&fs);
                assert_eq!(o.message, format!("{UNIT} is enabled by {link}"));
                assert_eq!(o.evidence[1].path, link);
                assert_eq!(o.evidence[1].expected, "absent");
            }
        }
        // A link in a directory that is not a dependency list is harmless.
        let mut fs = with_unit();
        fs.symlink("/etc/systemd/system/debug-shell.service", "/dev/null")
            .symlink(
                "/etc/systemd/system/sysinit.target.d/debug-shell.service",
                "/lib/systemd/system/debug-shell.service",
            );
        assert!(run(&fs).ok);
    }

    #[test]
    fn links_to_the_same_unit_file_are_named_once() {
        let mut fs = with_unit();
        fs.symlink("/etc/systemd/system/debug-shell.service", "/dev/null")
            .symlink(
                "/etc/systemd/system/multi-user.target.wants/debug-shell.service",
                "/lib/systemd/system/debug-shell.service",
            )
            .symlink(
                "/usr/lib/systemd/system/sysinit.target.wants/debug-shell.service",
                "/lib/systemd/system/debug-shell.service",
            );
        let o = run(&fs);
        assert_eq!(
            o.message,
            "debug-shell.service is enabled by /etc/systemd/system/multi-user.target.wants/debug-shell.service"
        );
        // A socket or device node at the mask path is not a mask either.
        let mut fs = with_unit();
        fs.insert(
            "/etc/systemd/system/debug-shell.service",
            Entry {
                kind: EntryKind::Char,
                mode: 0o666,
                uid: 0,
                gid: 0,
                size: 0,
            },
            Vec::new(),
        );
        assert!(!run(&fs).ok);
    }
}
