//! `build --previous OLD_OUT`: checks the previous release's output
//! directory against the new one (`slotsmith::load::previous`, an input
//! error naming the flag) and adds the release diff to the plan.

use std::path::Path;

use super::Failure;

/// `plan`, comparing the build with `previous` when one is given; the new
/// build goes to `out_root/<plan's dir>`.
pub(crate) fn apply(
    plan: slotsmith::plan::Plan,
    previous: Option<&Path>,
    out_root: &Path,
) -> Result<slotsmith::plan::Plan, Failure> {
    let Some(dir) = previous else {
        return Ok(plan);
    };
    let release =
        slotsmith::load::previous::previous_release(dir, &out_root.join(&plan.outputs.dir))?;
    Ok(slotsmith::plan::with_previous(plan, release))
}
