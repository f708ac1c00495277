//! `cargo xtask repro OUT_DIR`: rebuilds a published build from the
//! inputs its `build.json` records, in a fresh temporary project, and
//! compares every artifact, `SHA256SUMS` and `build.json`, checking each
//! published artifact against its recorded sha256 (`slotsmith::repro` does
//! the work).

use std::path::{Path, PathBuf};

use super::{default_cache, require_project, Failure};

#[derive(clap::Args)]
pub(crate) struct ReproArgs {
    /// The output directory of a build (out/<name>); it is only read
    out: PathBuf,
    /// Cache whose debs/ a locked Debian base installs from (the base
    /// tarball cache itself is always fresh) [default: $SLOTSMITH_CACHE or ~/.cache/slotsmith]
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Keep the temporary project and the rebuild (they hold copies of the signing keys)
    #[arg(long)]
    keep: bool,
    /// Print the report as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Print no progress; only the verdict (or errors)
    #[arg(long, short)]
    quiet: bool,
    /// The previous release's output directory, for a build made with
    /// `build --previous` (the same release, by its build.json sha256)
    #[arg(long, value_name = "OLD_OUT")]
    previous: Option<PathBuf>,
}

/// Runs the rebuild and prints the verdict: exit 0 when every artifact,
/// `SHA256SUMS` and `build.json` are identical and each artifact is what
/// build.json records, 1 otherwise (the first difference is named, with
/// its offset where the bytes differ).
pub(crate) fn run(a: ReproArgs, project: Option<&Path>) -> Result<(), Failure> {
    let project = require_project(project)?;
    let cache = a
        .cache_dir
        .clone()
        .unwrap_or_else(|| default_cache(&project));
    let opts = slotsmith::repro::ReproOptions {
        out_dir: a.out.clone(),
        project,
        deb_cache: cache.join("debs"),
        keep: a.keep,
        previous: a.previous.clone(),
    };
    let mut progress = slotsmith::progress::Progress::with_mode(slotsmith::progress::Mode::detect(
        a.quiet, a.json,
    ));
    let report = slotsmith::repro::run(&opts, &mut progress)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
        );
    } else {
        for line in slotsmith::repro::render(&report) {
            eprintln!("{line}");
        }
    }
    if report.identical {
        Ok(())
    } else {
        Err(Failure::Build(anyhow::format_err!(
            "the rebuild of {} differs from {}",
            report.image,
            report.build_json
        )))
    }
}
