//! Files that must not be in the image at all: private keys every device
//! would share if the image carried them (SSH host keys are the classic
//! case: one extracted key impersonates the whole fleet), so each device
//! must make its own on first boot.
//!
//! A pattern is an absolute path whose last component may hold `*` (any
//! run of characters, none of them `/`). It is matched against the paths
//! as the image stores them; a directory reached through a symlink is not
//! followed, so patterns name canonical directories (`/etc/ssh`, not a
//! link to it). Any entry kind matches: a symlink named like a host key is
//! as wrong as the key.

use super::{outcome, Ctx, Evidence, Outcome};
use crate::rootfs::EntryKind;

/// How the check reads the image, for the report.
pub(super) const CHECK: &str = "paths of every entry in the image against the forbidden patterns";

/// Whether `name` matches `pattern`, where `*` stands for any run of
/// characters.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Every entry whose path matches a forbidden pattern fails the rule.
pub(super) fn check(patterns: &[String], ctx: &Ctx<'_>) -> Outcome {
    let mut fails = Vec::new();
    let mut ev = Vec::new();
    for pattern in patterns {
        let Some((dir, name_pattern)) = pattern.rsplit_once('/') else {
            continue;
        };
        let prefix = format!("{dir}/");
        for (path, e) in ctx.ix.map.range(prefix.clone()..) {
            let Some(name) = path.strip_prefix(&prefix) else {
                break;
            };
            if name.contains('/') || !glob(name_pattern, name) {
                continue;
            }
            let what = match e.kind {
                EntryKind::File => "file",
                EntryKind::Dir => "directory",
                EntryKind::Symlink { .. } => "symlink",
                _ => "entry",
            };
            fails.push(format!("{path} ({what}) matches the forbidden {pattern}"));
            ev.push(Evidence {
                path: path.clone(),
                sha256: None,
                value: format!("{what}, mode {:04o}", e.mode),
                expected: format!("absent ({pattern})"),
            });
        }
    }
    outcome(
        fails,
        format!("no entry matches {}", patterns.join(", ")),
        ev,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::MemRootfs;

    fn patterns() -> Vec<String> {
        vec![
            "/etc/ssh/ssh_host_*_key".to_string(),
            "/etc/ssh/ssh_host_*_key.pub".to_string(),
        ]
    }

    #[test]
    fn a_baked_host_key_fails_and_names_the_file_while_a_config_passes() {
        let mut fs = MemRootfs::new();
        fs.dir("/etc", 0o755)
            .dir("/etc/ssh", 0o755)
            .file("/etc/ssh/sshd_config", 0o644, "Port 22\n")
            .file("/etc/ssh/ssh_host_ed25519_key", 0o600, "PRIVATE")
            .symlink("/etc/ssh/ssh_host_rsa_key.pub", "elsewhere")
            .file("/etc/ssh/ssh_host_ed25519_key.bak/x", 0o600, "");
        let o = check(&patterns(), &Ctx::new(&fs, ""));
        assert!(!o.ok);
        assert!(
            o.message.contains("/etc/ssh/ssh_host_ed25519_key (file)"),
            "{}",
            o.message
        );
        assert!(
            o.message
                .contains("/etc/ssh/ssh_host_rsa_key.pub (symlink)"),
            "{}",
            o.message
        );
        assert!(!o.message.contains("sshd_config"), "{}", o.message);
        assert_eq!(o.evidence.len(), 2);
        let mut clean = MemRootfs::new();
        clean
            .dir("/etc", 0o755)
            .dir("/etc/ssh", 0o755)
            .file("/etc/ssh/sshd_config", 0o644, "");
        let o = check(&patterns(), &Ctx::new(&clean, ""));
        assert!(o.ok, "{}", o.message);
    }

    #[test]
    fn globs_match_like_the_shell_within_one_component() {
        assert!(glob("ssh_host_*_key", "ssh_host_ed25519_key"));
        assert!(!glob("ssh_host_*_key", "ssh_host_ed25519_key.pub"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXcYYb"));
        assert!(glob("exact", "exact") && !glob("exact", "exactly"));
        assert!(!glob("ab*ba", "aba"));
    }
}
