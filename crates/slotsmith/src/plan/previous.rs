//! The release diff as part of the plan: a build given the previous
//! release (`build --previous`) publishes `release-diff.md` and
//! `release-diff.json` beside its other artifacts, so they are in the
//! plan's output list (and therefore in `build.json`, `SHA256SUMS` and the
//! provenance's subjects) and linked by the reviewer's index. Pure: the
//! previous release was checked by `load::previous`.

use std::path::PathBuf;

use serde::Serialize;

use super::{Plan, PlanOutput};
use crate::load::previous::PreviousRelease;

/// The release diff for people.
pub const MARKDOWN: &str = "release-diff.md";
/// The release diff for tools.
pub const JSON: &str = "release-diff.json";

/// The previous release a build is compared with.
#[derive(Debug, Clone, Serialize)]
pub struct PlanPrevious {
    /// Where its output directory is. Host state, like `--out-dir`: not
    /// part of the plan's identity (its record's sha256 is), so moving the
    /// previous release does not change the new build's bytes.
    #[serde(skip)]
    pub dir: PathBuf,
    /// Its image name.
    pub image: String,
    /// Its image version.
    pub version: String,
    /// sha256 of its `build.json`; the build refuses any other record.
    pub build_json_sha256: String,
    /// The Markdown report in the new output directory.
    pub markdown: String,
    /// The JSON report.
    pub json: String,
}

/// `plan`, also comparing the build with `previous`.
pub fn with_previous(mut plan: Plan, previous: PreviousRelease) -> Plan {
    for name in [MARKDOWN, JSON] {
        if !plan.outputs.files.iter().any(|o| o.name == name) {
            plan.outputs.files.push(PlanOutput {
                name: name.into(),
                optional: false,
            });
        }
    }
    plan.outputs.files.sort_by(|a, b| a.name.cmp(&b.name));
    plan.previous = Some(PlanPrevious {
        dir: previous.dir,
        image: previous.image,
        version: previous.version,
        build_json_sha256: previous.build_json_sha256,
        markdown: MARKDOWN.into(),
        json: JSON.into(),
    });
    plan
}
