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

/// Every entry's mode against the setuid allow-list and, when required,
/// the world-writable rule.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::{Entry, MemRootfs};

    fn policy(allow: &[&str], no_world_writable: bool) -> Files {
        Files {
            setuid_allow: allow.iter().map(|s| s.to_string()).collect(),
            no_world_writable,
        }
    }

    fn node(fs: &mut MemRootfs, path: &str, kind: EntryKind, mode: u32) {
        let e = Entry {
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
        };
        fs.insert(path, e, Vec::new());
    }

    fn run(fs: &MemRootfs, f: &Files) -> Outcome {
        check(f, &Ctx::new(fs, ""))
    }

    #[test]
    fn allowed_setuid_sticky_tmp_and_links_pass() {
        let mut fs = MemRootfs::new();
        fs.file("/usr/bin/passwd", 0o4755, "ELF")
            .dir("/tmp", 0o1777)
            .symlink("/usr/bin/pw", "passwd");
        node(&mut fs, "/dev/null", EntryKind::Char, 0o666);
        node(&mut fs, "/run/sock", EntryKind::Socket, 0o777);
        let o = run(&fs, &policy(&["/usr/bin/passwd"], true));
        assert!(o.ok, "{}", o.message);
        assert_eq!(
            o.message,
            "1 setuid/setgid files, all on the allow-list; no world-writable entries"
        );
        assert_eq!(o.evidence.len(), 1);
        assert_eq!(o.evidence[0].value, "mode 4755 uid 0 gid 0");
        assert_eq!(o.evidence[0].expected, "on the setuid allow-list");
        assert_eq!(
            o.evidence[0].sha256.as_deref(),
            Some(sha256_hex(b"ELF").as_str())
        );
    }

    #[test]
    fn setuid_or_setgid_off_the_allow_list_fails() {
        let mut fs = MemRootfs::new();
        fs.file("/usr/bin/chage", 0o2755, "ELF")
            .file("/usr/local/bin/helper", 0o4711, "ELF")
            // The bits on a directory mean something else.
            .dir("/srv/shared", 0o2775);
        let o = run(&fs, &policy(&[], false));
        assert_eq!(
            o.message,
            "/usr/bin/chage is setgid (mode 2755) and not on the allow-list; \
             /usr/local/bin/helper is setuid (mode 4711) and not on the allow-list"
        );
        assert_eq!(o.evidence[1].expected, "no setuid/setgid bits");
    }

    #[test]
    fn world_writable_files_fifos_and_non_sticky_directories_fail() {
        let mut fs = MemRootfs::new();
        fs.file("/etc/app.ini", 0o666, "x=1")
            .dir("/var/drop", 0o777);
        node(&mut fs, "/run/fifo", EntryKind::Fifo, 0o622);
        let o = run(&fs, &policy(&[], true));
        assert_eq!(
            o.message,
            "/etc/app.ini is world-writable (mode 0666); \
             /run/fifo is world-writable (mode 0622); \
             /var/drop is world-writable directory without the sticky bit (mode 0777)"
        );
        assert_eq!(o.evidence.len(), 3);
        assert_eq!(o.evidence[0].sha256, None);
        // Not required: only setuid bits are looked at.
        assert!(run(&fs, &policy(&[], false)).ok);
    }

    #[test]
    fn a_long_list_of_offenders_is_capped_with_a_count() {
        let mut fs = MemRootfs::new();
        for i in 0..MAX_LISTED + 50 {
            fs.file(&format!("/w/{i:04}"), 0o666, "");
        }
        let o = run(&fs, &policy(&[], true));
        assert!(!o.ok);
        assert_eq!(o.evidence.len(), MAX_LISTED);
        assert_eq!(o.message.matches("is world-writable").count(), MAX_LISTED);
        assert!(
            o.message.ends_with("; and 50 more"),
            "{}",
            &o.message[o.message.len() - 40..]
        );
    }
}
