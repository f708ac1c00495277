//! File modes: setuid/setgid programs and world-writable entries.
//!
//! On the device, running a setuid (setgid) regular file gives the process
//! its owner (group), so each one is a way to root; anyone may write a
//! world-writable file or fifo, and create, rename or delete entries in a
//! world-writable directory unless its sticky bit limits that to their
//! owners. The modes stored in the image are the modes the device has.
//!
//! The check walks every entry of the image: a setuid or setgid regular
//! file must be on the allow-list; with `no-world-writable`, a file or fifo
//! must not be writable by others, and a directory that is must be sticky.
//! Symlink modes mean nothing, and device and socket permissions are set at
//! run time, so those are skipped. At most `MAX_LISTED` offenders are named
//! (message and evidence), then a count, so a broken image still gives a
//! readable report.

use std::collections::BTreeSet;

use super::{outcome, Ctx, Evidence, Outcome};
use crate::model::Files;
use crate::rootfs::{sha256_hex, EntryKind};

/// How the check reads the image, for the report.
pub(super) const CHECK: &str = "modes of every entry in the image";

/// Most offenders named in a message or listed as evidence.
const MAX_LISTED: usize = 200;

pub(super) fn check(f: &Files, ctx: &Ctx<'_>) -> Outcome {
    let mut fails = Vec::new();
    let mut ev = Vec::new();
    let allow: BTreeSet<&str> = f.setuid_allow.iter().map(String::as_str).collect();
    let mut suid_ok = 0usize;
    for (path, e) in &ctx.ix.map {
        let mode = e.mode;
        match e.kind {
            EntryKind::File if mode & 0o6000 != 0 => {
                let bits = if mode & 0o4000 != 0 {
                    "setuid"
                } else {
                    "setgid"
                };
                let ok = allow.contains(path.as_str());
                if ok {
                    suid_ok += 1;
                } else {
                    fails.push(format!(
                        "{path} is {bits} (mode {mode:04o}) and not on the allow-list"
                    ));
                }
                if ev.len() < MAX_LISTED {
                    ev.push(Evidence {
                        path: path.clone(),
                        sha256: ctx.fs.read(path).ok().flatten().map(|c| sha256_hex(&c)),
                        value: format!("mode {mode:04o} uid {} gid {}", e.uid, e.gid),
                        expected: if ok {
                            "on the setuid allow-list".into()
                        } else {
                            "no setuid/setgid bits".into()
                        },
                    });
                }
            }
            _ => {}
        }
        if !f.no_world_writable {
            continue;
        }
        let bad = match e.kind {
            EntryKind::File | EntryKind::Fifo => mode & 0o002 != 0,
            EntryKind::Dir => mode & 0o002 != 0 && mode & 0o1000 == 0,
            // Symlink modes mean nothing; device and socket permissions are
            // set by the kernel and udev at run time.
            _ => false,
        };
        if bad {
            let what = if e.kind == EntryKind::Dir {
                "world-writable directory without the sticky bit"
            } else {
                "world-writable"
            };
            fails.push(format!("{path} is {what} (mode {mode:04o})"));
            if ev.len() < MAX_LISTED {
                ev.push(Evidence {
                    path: path.clone(),
                    sha256: None,
                    value: format!("mode {mode:04o}"),
                    expected: "not world-writable (directories: sticky)".into(),
                });
            }
        }
    }
    if fails.len() > MAX_LISTED {
        let n = fails.len() - MAX_LISTED;
        fails.truncate(MAX_LISTED);
        fails.push(format!("and {n} more"));
    }
    outcome(
        fails,
        format!("{suid_ok} setuid/setgid files, all on the allow-list; no world-writable entries"),
        ev,
    )
}
