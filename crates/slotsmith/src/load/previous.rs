//! `build --previous OLD_OUT`: the previous release's output directory,
//! checked when the build is planned, so a wrong path is an input error
//! (exit 2, naming the flag) before any stage runs: it must exist, be a
//! directory, hold a readable build record (matching its `SHA256SUMS`),
//! and lie outside the new build's output directory, which publishing
//! replaces (and outside its staging directories, which the next build
//! removes). The build stage (`build/release_diff.rs`) reads it again
//! and refuses a record whose sha256 is no longer the one checked here.

use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Diagnostics};
use slotsmith_yaml::escape::shown_path;

/// The flag, as diagnostics name it.
pub const FLAG: &str = "--previous";

/// The previous release, as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousRelease {
    /// Its output directory, with every symlink resolved.
    pub dir: PathBuf,
    /// Its image name.
    pub image: String,
    /// Its image version.
    pub version: String,
    /// sha256 of its `build.json`.
    pub build_json_sha256: String,
}

fn refused(message: String) -> Diagnostics {
    Diagnostics::from(vec![Diagnostic {
        file: "command line".into(),
        line: 0,
        col: 0,
        key: FLAG.to_string(),
        message,
    }])
}

/// Checks `dir` as the previous release of a build whose output directory
/// will be `new_out` (`<out root>/<name>`; it need not exist yet).
pub fn previous_release(dir: &Path, new_out: &Path) -> Result<PreviousRelease, Diagnostics> {
    let canon = std::fs::canonicalize(dir).map_err(|e| {
        refused(format!(
            "the previous release {} cannot be read: {e}",
            shown_path(dir)
        ))
    })?;
    if !canon.is_dir() {
        return Err(refused(format!(
            "the previous release {} is not a directory (give the output directory of a build, out/<name>)",
            shown_path(dir)
        )));
    }
    // The new output directory, resolved as far as it exists.
    let out_root = new_out.parent().unwrap_or(Path::new("."));
    let root = std::fs::canonicalize(out_root).unwrap_or_else(|_| out_root.to_path_buf());
    let name = new_out.file_name().unwrap_or_default();
    let new = root.join(name);
    let staging = canon.parent() == Some(root.as_path())
        && canon.file_name().is_some_and(|f| {
            f.to_string_lossy()
                .starts_with(&crate::publish::staging_prefix(&name.to_string_lossy()))
        });
    if canon.starts_with(&new) || staging {
        return Err(refused(format!(
            "the previous release {} is the new build's output directory {} or inside it; \
publishing replaces that directory, so copy the previous release elsewhere first",
            shown_path(dir),
            shown_path(&new)
        )));
    }
    let (record, sha) = crate::diff::record::read_record(&canon).map_err(|e| {
        refused(format!(
            "the previous release {} is not a readable build: {e:#}",
            shown_path(dir)
        ))
    })?;
    Ok(PreviousRelease {
        dir: canon,
        image: record.image,
        version: record.version,
        build_json_sha256: sha,
    })
}
