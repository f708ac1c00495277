//! `cargo xtask diff OLD_OUT NEW_OUT`: what changed between two published
//! builds, as Markdown for people or JSON for tools (`slotsmith::diff` does
//! the work). A report: exit 0 whether or not they differ; exit 2 when a
//! directory is unusable, naming the file.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Failure;

#[derive(clap::Args)]
pub(crate) struct DiffArgs {
    /// The older build's output directory (out/<name> of the previous release)
    old: PathBuf,
    /// The newer build's output directory
    new: PathBuf,
    /// Print JSON for tools (stable: sorted, fixed field order) instead of Markdown
    #[arg(long)]
    json: bool,
    /// Write the report to FILE instead of stdout
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

/// An unusable build directory is an input error (exit 2) naming it; the
/// message names the file inside it.
fn unusable(dir: &Path, e: anyhow::Error) -> Failure {
    Failure::Input(slotsmith::diag::Diagnostics::from(vec![
        slotsmith::diag::Diagnostic {
            file: dir.to_path_buf(),
            line: 0,
            col: 0,
            key: String::new(),
            message: format!("{e:#}"),
        },
    ]))
}

pub(crate) fn run(a: DiffArgs) -> Result<(), Failure> {
    let old = slotsmith::diff::read_side(&a.old).map_err(|e| unusable(&a.old, e))?;
    let new = slotsmith::diff::read_side(&a.new).map_err(|e| unusable(&a.new, e))?;
    let d = slotsmith::diff::compare(&old, &new);
    let text = if a.json {
        slotsmith::diff::to_json(&d)
    } else {
        slotsmith::diff::markdown::to_markdown(&d)
    };
    match &a.output {
        Some(file) => std::fs::write(file, &text)
            .with_context(|| format!("writing the release diff {}", file.display()))?,
        None => print!("{text}"),
    }
    eprintln!(
        "{} -> {}: {}",
        slotsmith_yaml::escape::shown(&a.old.to_string_lossy()),
        slotsmith_yaml::escape::shown(&a.new.to_string_lossy()),
        if d.differs {
            "differ"
        } else {
            "no differences"
        }
    );
    Ok(())
}
