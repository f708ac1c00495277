//! The harden stage: applies the image's hardening policies to the tree,
//! after the base and before the layers, so a product layer can still
//! override a hardened file (and the audit then names the rule it broke).

use std::path::Path;

use slotsmith_rootfs::tree::Tree;

use crate::plan::Plan;
use crate::progress::Progress;

/// Applies the rules to the tree. Their kernel arguments are already in
/// the plan's command lines.
pub(super) fn stage(
    plan: &Plan,
    tree: &mut Tree,
    store: &Path,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    if plan.hardening.rules.is_empty() {
        return Ok(());
    }
    progress.stage(
        "harden",
        &format!(
            "{} rule(s) from {}, {} profile",
            plan.hardening.rules.len(),
            plan.hardening.policies.join(", "),
            profile_name(plan)
        ),
    );
    crate::harden::apply(plan, tree, store)
}

fn profile_name(plan: &Plan) -> &'static str {
    match plan.hardening.profile {
        slotsmith_policy::Profile::Production => "production",
        slotsmith_policy::Profile::Development => "development",
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{self, contents, node, Fixture, Setup};
    use super::*;
    use slotsmith_rootfs::path::RelPath;
    use slotsmith_rootfs::tree::Kind;

    fn text(tree: &Tree, p: &str) -> String {
        String::from_utf8(contents(tree, p)).unwrap()
    }

    fn base(fx: &mut Fixture) -> Tree {
        super::super::base::stage(&fx.plan, &fx.opts, &fx.store, &mut fx.progress).unwrap()
    }

    /// A line of `text` that sets `key` to `value` (whatever the separator).
    fn sets(text: &str, key: &str, value: &str) -> bool {
        text.lines()
            .any(|l| l.starts_with(key) && l.trim_end().ends_with(value))
    }

    #[test]
    fn the_policies_write_their_settings_into_the_tree() {
        let mut fx = Fixture::new(Setup::default().policies());
        let mut tree = base(&mut fx);
        assert!(tree
            .get(&RelPath::parse(slotsmith_policy::apply::SYSCTL_PATH).unwrap())
            .is_none());
        stage(&fx.plan, &mut tree, &fx.store, &mut fx.progress).unwrap();
        let sysctl = text(&tree, slotsmith_policy::apply::SYSCTL_PATH);
        assert!(sets(&sysctl, "net.ipv4.ip_forward", "0"), "{sysctl}");
        let sshd = text(&tree, slotsmith_policy::apply::SSHD_DROPIN);
        assert!(sets(&sshd, "PermitRootLogin", "no"), "{sshd}");
        // Generated files are root's, dated at the epoch, and stored in the
        // work directory's store like imported ones.
        for p in [
            slotsmith_policy::apply::SYSCTL_PATH,
            slotsmith_policy::apply::SSHD_DROPIN,
        ] {
            let n = node(&tree, p);
            assert_eq!((n.meta.uid, n.meta.gid), (0, 0), "{p}");
            assert_eq!(n.meta.mtime, fx.plan.source_date_epoch as i64, "{p}");
            let Kind::File { content, .. } = &n.kind else {
                panic!("{p} is not a file")
            };
            assert!(
                matches!(content, slotsmith_rootfs::tree::Content::Store(s) if s.starts_with(&fx.store)),
                "{p}: {content:?}"
            );
        }
        // FILES-PERM-001 clears the setuid bit the base gave su.
        assert_eq!(node(&tree, "usr/bin/su").meta.mode, 0o755);
        // The base's own files are still there.
        assert_eq!(text(&tree, "etc/passwd").as_bytes(), testkit::PASSWD);
        let log = fx.log.text();
        assert!(
            log.contains("==> harden:") && log.contains("production"),
            "{log}"
        );
    }

    #[test]
    fn without_policies_the_tree_is_unchanged() {
        let mut fx = Fixture::new(Setup::default());
        let mut tree = base(&mut fx);
        let before = tree.clone();
        let stored = std::fs::read_dir(&fx.store).unwrap().count();
        stage(&fx.plan, &mut tree, &fx.store, &mut fx.progress).unwrap();
        assert!(before.iter().eq(tree.iter()), "the tree changed");
        assert_eq!(std::fs::read_dir(&fx.store).unwrap().count(), stored);
        assert!(!fx.log.text().contains("harden"), "{}", fx.log.text());
    }
}
