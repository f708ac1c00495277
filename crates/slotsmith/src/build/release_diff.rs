//! The release diff stage (`build --previous`): `release-diff.md` and
//! `release-diff.json`, what changed since the previous release, written
//! into the staging directory before `build.json` so both are artifacts
//! (in the record, `SHA256SUMS` and the provenance) and the reviewer's
//! index links them.
//!
//! The new side is read from the staged artifacts with the record about
//! to be published, through the same checked readers `xtask diff` uses, so
//! the files equal `xtask diff OLD_OUT <published out>` byte for byte (the
//! diff reads no artifact the record stage adds later). The previous
//! release is read again here: its `build.json` must still be the one the
//! plan checked (by sha256), and every file read must match that record.
//! Any failure fails the build before anything is published.

use std::path::Path;

use anyhow::Context;
use slotsmith_yaml::escape::shown_path;

use super::record::BuildRecord;
use super::{write_new, Hashed};
use crate::plan::{Plan, PlanPrevious};
use crate::progress::Progress;

/// Writes both reports into `out`; their names and hashes for the record.
pub(super) fn stage(
    plan: &Plan,
    previous: &PlanPrevious,
    record: &BuildRecord,
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<Vec<(String, Hashed)>> {
    progress.stage(
        "release-diff",
        &format!(
            "against {} {}",
            slotsmith_yaml::escape::shown(&previous.image),
            slotsmith_yaml::escape::shown(&previous.version)
        ),
    );
    let dir = &previous.dir;
    let context = || format!("diffing against the previous release {}", shown_path(dir));
    let (old_record, sha256) = crate::diff::record::read_record(dir).with_context(context)?;
    if sha256 != previous.build_json_sha256 {
        anyhow::bail!(
            "{}: {} has sha256 {sha256}, but when the build was planned it had {}",
            context(),
            shown_path(&dir.join(crate::diff::record::RECORD)),
            previous.build_json_sha256
        );
    }
    let old = crate::diff::read_side_with(dir, old_record).with_context(context)?;
    let json = serde_json::to_vec(record).context("serialising the record for the release diff")?;
    let new_record = crate::diff::record::parse_record(&out.join(&plan.outputs.build_json), &json)?;
    let new = crate::diff::read_side_with(out, new_record).with_context(|| {
        format!(
            "reading the new build {} for the release diff",
            shown_path(out)
        )
    })?;
    let d = crate::diff::compare(&old, &new);
    let mut written = Vec::new();
    for (name, text) in [
        (&previous.markdown, crate::diff::markdown::to_markdown(&d)),
        (&previous.json, crate::diff::to_json(&d)),
    ] {
        write_new(&out.join(name), text.as_bytes())?;
        written.push((name.clone(), Hashed::of_bytes(text.as_bytes())));
    }
    Ok(written)
}
