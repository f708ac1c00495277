//! The account database: locked root, no empty passwords, one UID 0.
//!
//! On the device, login, su and sshd authenticate through PAM's pam_unix
//! against /etc/shadow: a password field starting with `!` or `*` can
//! never match, and an empty one lets anyone in without a password where
//! `nullok` is set; an empty password field in /etc/passwd (no `x`) means
//! the same. The third /etc/passwd field is the UID an account runs with,
//! and any account with UID 0 is root whatever its name.
//!
//! The check reads both files from the image (links followed), splits
//! each non-comment line at `:`, and looks at root's shadow field, every
//! account's password field in both files, and who has UID 0. A file that
//! is missing or cannot be read fails the rule: the audit never passes on
//! data it could not see.

use super::{outcome, Ctx, Evidence, Outcome};
use crate::apply::SHADOW_PATH;
use crate::model::Accounts;

/// How the check reads the image, for the report.
pub(super) const CHECK: &str = "/etc/passwd and /etc/shadow in the image";

/// The requirements switched on, against /etc/passwd and /etc/shadow.
pub(super) fn check(a: &Accounts, ctx: &Ctx<'_>) -> Outcome {
    let mut fails = Vec::new();
    let mut ev = Vec::new();
    let passwd = ctx.read("/etc/passwd");
    let shadow = ctx.read(SHADOW_PATH);
    let ptext = passwd
        .as_ref()
        .map(|(_, c)| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default();
    let stext = shadow
        .as_ref()
        .map(|(_, c)| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default();
    if passwd.is_none() {
        fails.push("/etc/passwd is absent".into());
    }
    if shadow.is_none() {
        fails.push(format!("{SHADOW_PATH} is absent"));
    }
    let fields = |t: &str| -> Vec<Vec<String>> {
        t.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_string).collect())
            .collect()
    };
    let pw = fields(&ptext);
    let sh = fields(&stext);
    let psha = ctx.sha("/etc/passwd");
    let ssha = ctx.sha(SHADOW_PATH);
    if a.root_locked {
        let root = sh.iter().find(|f| f[0] == "root");
        let field = root.and_then(|f| f.get(1)).cloned();
        let locked = field
            .as_deref()
            .is_some_and(|p| p.starts_with('!') || p.starts_with('*'));
        if !locked {
            let what = match &field {
                None => "has no /etc/shadow entry".to_string(),
                Some(p) if p.is_empty() => "has an empty password".to_string(),
                Some(_) => "has a usable password".to_string(),
            };
            fails.push(format!(
                "root {what} in {SHADOW_PATH} (expected a locked password, '!' prefix)"
            ));
        }
        ev.push(Evidence {
            path: SHADOW_PATH.into(),
            sha256: ssha.clone(),
            value: format!(
                "root password {}",
                if locked { "locked" } else { "not locked" }
            ),
            expected: "root password locked".into(),
        });
    }
    if a.no_empty_passwords {
        let mut empty: Vec<String> = sh
            .iter()
            .filter(|f| f.get(1).is_some_and(|p| p.is_empty()))
            .map(|f| format!("{} ({SHADOW_PATH})", f[0]))
            .collect();
        empty.extend(
            pw.iter()
                .filter(|f| f.get(1).is_some_and(|p| p.is_empty()))
                .map(|f| format!("{} (/etc/passwd)", f[0])),
        );
        for e in &empty {
            fails.push(format!("account {e} has an empty password field"));
        }
        ev.push(Evidence {
            path: SHADOW_PATH.into(),
            sha256: ssha.clone(),
            value: if empty.is_empty() {
                "no empty password fields".into()
            } else {
                format!("empty: {}", empty.join(", "))
            },
            expected: "no empty password fields".into(),
        });
    }
    if a.single_uid0 {
        let zero: Vec<&str> = pw
            .iter()
            .filter(|f| f.get(2).is_some_and(|u| u.trim() == "0"))
            .map(|f| f[0].as_str())
            .collect();
        for name in zero.iter().filter(|n| **n != "root") {
            fails.push(format!(
                "account {name} has UID 0 in /etc/passwd (only root may)"
            ));
        }
        ev.push(Evidence {
            path: "/etc/passwd".into(),
            sha256: psha,
            value: format!("UID 0: {}", zero.join(", ")),
            expected: "UID 0: root".into(),
        });
    }
    outcome(fails, "account database meets every requirement".into(), ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::MemRootfs;

    const ALL: Accounts = Accounts {
        root_locked: true,
        no_empty_passwords: true,
        single_uid0: true,
    };

    const PASSWD: &str =
        "# local\nroot:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1::/:/usr/sbin/nologin\n\n";

    fn image(passwd: &str, shadow: &str) -> MemRootfs {
        let mut fs = MemRootfs::new();
        fs.file("/etc/passwd", 0o644, passwd)
            .file_owned(SHADOW_PATH, 0o640, 0, 42, shadow);
        fs
    }

    fn run(fs: &MemRootfs, a: &Accounts) -> Outcome {
        check(a, &Ctx::new(fs, ""))
    }

    #[test]
    fn a_locked_root_and_no_empty_fields_pass() {
        for lock in ["!", "*", "!$6$salt$hash"] {
            let fs = image(
                PASSWD,
                &format!("root:{lock}:19000::::::\ndaemon:*:19000::::::\n"),
            );
            let o = run(&fs, &ALL);
            assert!(o.ok, "{lock}: {}", o.message);
            assert_eq!(o.message, "account database meets every requirement");
            assert_eq!(o.evidence[0].value, "root password locked");
            assert_eq!(o.evidence[2].value, "UID 0: root");
        }
    }

    #[test]
    fn root_with_a_usable_empty_or_missing_password_fails() {
        let only_root = Accounts {
            root_locked: true,
            no_empty_passwords: false,
            single_uid0: false,
        };
        let o = run(
            &image(PASSWD, "root:$6$salt$hash:19000::::::\n"),
            &only_root,
        );
        assert_eq!(
            o.message,
            "root has a usable password in /etc/shadow (expected a locked password, '!' prefix)"
        );
        assert_eq!(o.evidence.len(), 1);
        let o = run(&image(PASSWD, "root::19000::::::\n"), &only_root);
        assert!(
            o.message.starts_with("root has an empty password"),
            "{}",
            o.message
        );
        let o = run(&image(PASSWD, "daemon:*:19000::::::\n"), &only_root);
        assert!(
            o.message.starts_with("root has no /etc/shadow entry"),
            "{}",
            o.message
        );
    }

    #[test]
    fn an_empty_password_field_in_either_file_fails() {
        let passwd = format!("{PASSWD}guest::1000:1000::/home/guest:/bin/sh\n");
        let fs = image(&passwd, "root:!:19000::::::\nops::19000::::::\n");
        let o = run(&fs, &ALL);
        assert_eq!(
            o.message,
            "account ops (/etc/shadow) has an empty password field; \
             account guest (/etc/passwd) has an empty password field"
        );
        assert_eq!(
            o.evidence[1].value,
            "empty: ops (/etc/shadow), guest (/etc/passwd)"
        );
        // Not required: not checked.
        let lax = Accounts {
            no_empty_passwords: false,
            ..ALL
        };
        assert!(run(&fs, &lax).ok);
    }

    #[test]
    fn a_second_uid_0_fails_whatever_its_name() {
        let passwd = format!("{PASSWD}toor:x:0:0::/root:/bin/sh\nbackup:x: 0 :0::/:/bin/sh\n");
        let o = run(&image(&passwd, "root:!:19000::::::\n"), &ALL);
        assert_eq!(
            o.message,
            "account toor has UID 0 in /etc/passwd (only root may); \
             account backup has UID 0 in /etc/passwd (only root may)"
        );
        assert_eq!(o.evidence[2].value, "UID 0: root, toor, backup");
    }

    #[test]
    fn missing_files_fail_the_rule() {
        let o = run(&MemRootfs::new(), &ALL);
        assert!(!o.ok);
        assert!(
            o.message.starts_with(
                "/etc/passwd is absent; /etc/shadow is absent; root has no /etc/shadow entry"
            ),
            "{}",
            o.message
        );
        // Even with no requirement switched on, a missing database fails.
        let none = Accounts {
            root_locked: false,
            no_empty_passwords: false,
            single_uid0: false,
        };
        let mut fs = MemRootfs::new();
        fs.file("/etc/passwd", 0o644, PASSWD);
        assert_eq!(run(&fs, &none).message, "/etc/shadow is absent");
    }
}
