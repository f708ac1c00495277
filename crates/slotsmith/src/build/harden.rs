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
