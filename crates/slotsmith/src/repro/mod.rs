//! `cargo xtask repro OUT_DIR`: rebuild a published build from what its
//! `build.json` records and compare every artifact, byte for byte.
//!
//! The rebuild runs in a fresh temporary project holding only the recorded
//! inputs (copied from the real project, each hashed: an input edited
//! since the build is named, and the rebuild still runs, so a reviewer sees
//! what the edit changed) and the signing keys, with a fresh work
//! directory, a fresh base cache and the stage cache off, so no cached
//! stage or base tarball can hide a difference. Only the `.deb` cache is
//! shared: a locked Debian base then rebuilds without the network. The
//! epoch is the record's.
//!
//! Besides the artifacts, `SHA256SUMS` and `build.json` are compared byte
//! for byte, and each published artifact must match the sha256 and size
//! its `build.json` records: otherwise an edited record or sums file could
//! vouch for another image while the artifacts themselves still match.
//! `build.json` holds nothing that depends on where the project is (its
//! inputs are relative to the project root, or absolute paths the image
//! names, which the rebuild uses as they are; `tests/integration/
//! determinism.rs` builds in other directories and compares every file),
//! so it is compared whole.
//!
//! - `record.rs`: reading the untrusted `build.json`;
//! - `project.rs`: the fresh project (inputs and keys);
//! - `compare.rs`: the artifact comparison, streamed.

pub(crate) mod compare;
mod project;
mod record;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use slotsmith_yaml::escape::{shown, shown_path};

pub use compare::{compare_dirs, first_difference, Difference};
pub use project::Change;
pub use record::{parse as parse_record, plain_relative, Recorded, RecordedArtifact};

use crate::build::{BuildOptions, CacheOutcome};
use crate::progress::Progress;

/// What `repro` needs besides the output directory.
pub struct ReproOptions {
    /// The published output directory (`out/<name>`), only read.
    pub out_dir: PathBuf,
    /// The project the inputs are copied from.
    pub project: PathBuf,
    /// The `.deb` cache a locked base installs from.
    pub deb_cache: PathBuf,
    /// Keep the temporary project (and the rebuild) instead of removing it.
    pub keep: bool,
    /// The previous release's output directory, for a build made with
    /// `--previous` (its release diff is rebuilt against it).
    pub previous: Option<PathBuf>,
}

/// The published and rebuilt values of one recorded fact.
#[derive(Debug, Clone, Serialize)]
pub struct Sides {
    /// In the published build.json (escaped).
    pub published: String,
    /// In the rebuild's build.json.
    pub rebuilt: String,
}

/// What `repro` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The build record read (escaped).
    pub build_json: String,
    /// The image it records (escaped).
    pub image: String,
    /// True when every artifact is identical and as recorded, none is
    /// missing or extra, and so are `SHA256SUMS` and `build.json`.
    pub identical: bool,
    /// How many artifacts the published build.json lists.
    pub artifacts: usize,
    /// The record files compared besides them (`SHA256SUMS`, `build.json`).
    pub records: Vec<String>,
    /// The first difference, in build.json order.
    pub first_difference: Option<Difference>,
    /// Every difference, in build.json order, then the record files, then
    /// the extra artifacts.
    pub differences: Vec<Difference>,
    /// How many inputs were copied and checked.
    pub inputs: usize,
    /// Inputs whose content differs from the record.
    pub changed_inputs: Vec<Change>,
    /// The plan hashes: different when a recorded input changed what the
    /// plan decides.
    pub plan_sha256: Sides,
    /// The boot key fingerprints: different when the project's key is not
    /// the one the build signed with.
    pub boot_key: Sides,
    /// The clamp the rebuild used (the record's).
    pub source_date_epoch: u64,
    /// How many key files were copied into the temporary project.
    pub key_files: usize,
    /// The temporary project.
    pub project: PathBuf,
    /// Whether it was kept (`--keep`); otherwise it is removed.
    pub kept: bool,
    /// The rebuild's output directory (inside the temporary project).
    pub rebuilt_dir: PathBuf,
    /// The rebuild's fresh work directory (the stage cache would be here).
    pub work_dir: PathBuf,
    /// The rebuild's fresh base cache.
    pub cache_dir: PathBuf,
    /// The shared `.deb` cache.
    pub deb_cache: PathBuf,
    /// Each stage's cache outcome in the rebuild: all `off`.
    pub stages: BTreeMap<String, CacheOutcome>,
}

/// Rebuilds `opts.out_dir` from its record and compares.
pub fn run(opts: &ReproOptions, progress: &mut Progress) -> anyhow::Result<Report> {
    let record_path = opts.out_dir.join("build.json");
    let rec = record::read(&record_path)?;
    let temp = tempfile::Builder::new()
        .prefix("slotsmith-repro-")
        .tempdir()
        .context("creating the temporary project")?;
    // Kept from the start with --keep, so a failed rebuild can be looked at
    // too; otherwise removed when this returns, on success or error.
    let (_guard, base) = if opts.keep {
        (None, temp.keep())
    } else {
        let base = temp.path().to_path_buf();
        (Some(temp), base)
    };
    let root = base.join("project");
    std::fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
    progress.stage(
        "repro",
        &format!(
            "copying {} recorded input(s) into {}",
            rec.inputs().len(),
            root.display()
        ),
    );
    let mut changed = project::copy_inputs(&opts.project, &root, rec.inputs())?;
    for c in &changed {
        progress.warn(&c.to_string());
    }
    let image = root.join(&rec.image_file);
    let loaded = crate::load::load_image(&image)
        .map_err(|d| anyhow::Error::new(crate::spec::InputError(d)))
        .with_context(|| format!("loading the recorded image {}", shown(&rec.image_file)))?;
    let plan = crate::plan::plan(&loaded, Some(rec.source_date_epoch))
        .map_err(|d| anyhow::Error::new(crate::spec::InputError(d)))
        .with_context(|| format!("planning the recorded image {}", shown(&rec.image_file)))?;
    let plan = with_previous(plan, &rec, opts, &root)?;
    let planned = crate::build::Input::planned(&plan);
    let against_plan = project::check_against_plan(rec.inputs(), &planned)?;
    for c in &against_plan {
        progress.warn(&c.to_string());
    }
    changed.extend(against_plan);
    // In the record's (path) order; stable, so a path's content change
    // comes before its mode change.
    changed.sort_by(|a, b| a.path.cmp(&b.path));
    let key_files = project::copy_keys(&opts.project, &root, &project::key_paths(&plan))?;
    let mut build = BuildOptions {
        project_root: root.clone(),
        out_root: root.join("out"),
        work_root: root.join("work"),
        cache_dir: root.join("cache"),
        deb_cache: opts.deb_cache.clone(),
        // No stage comes from a cache, and none is stored.
        no_cache: true,
        init_binary: None,
        updater_binary: None,
    };
    if plan.chain.is_some() {
        let programs = crate::initbin::build_device_programs(progress)?;
        build.init_binary = Some(programs.init);
        build.updater_binary = Some(programs.updater);
    }
    let outcome = crate::build::build(&plan, &build, progress)
        .with_context(|| format!("rebuilding {} in {}", shown(&rec.image), root.display()))?;
    let rebuilt: Vec<String> = outcome
        .record
        .artifacts
        .iter()
        .map(|a| a.name.clone())
        .collect();
    let records = [plan.outputs.sums.clone(), plan.outputs.build_json.clone()];
    let differences = compare_dirs(
        &opts.out_dir,
        &rec.artifacts,
        &records.iter().map(String::as_str).collect::<Vec<_>>(),
        &outcome.out_dir,
        &rebuilt,
    )?;
    let report = Report {
        build_json: shown_path(&record_path),
        image: shown(&rec.image),
        identical: differences.is_empty(),
        artifacts: rec.artifacts.len(),
        records: records.to_vec(),
        first_difference: differences.first().cloned(),
        differences,
        inputs: rec.inputs().len(),
        changed_inputs: changed,
        plan_sha256: Sides {
            published: shown(&rec.plan_sha256),
            rebuilt: outcome.record.plan_sha256.clone(),
        },
        boot_key: Sides {
            published: shown(&rec.boot_key),
            rebuilt: outcome.record.boot_key.clone(),
        },
        source_date_epoch: rec.source_date_epoch,
        key_files,
        project: root.clone(),
        kept: opts.keep,
        rebuilt_dir: outcome.out_dir.clone(),
        work_dir: build.work_root.clone(),
        cache_dir: build.cache_dir.clone(),
        deb_cache: build.deb_cache.clone(),
        stages: outcome.cache,
    };
    if !opts.keep {
        slotsmith_rootfs::cleanup::remove_tree(&base)
            .with_context(|| format!("removing the temporary project {}", root.display()))?;
    }
    Ok(report)
}

/// The plan, also diffing against `opts.previous` when the build
/// published a release diff (`build --previous`). The record keeps only the
/// previous release's effect: the plan's hash covers its `build.json`
/// sha256 and the diff is an artifact, so another previous release shows
/// as a plan and artifact difference.
fn with_previous(
    plan: crate::plan::Plan,
    rec: &Recorded,
    opts: &ReproOptions,
    root: &std::path::Path,
) -> anyhow::Result<crate::plan::Plan> {
    let flag = crate::load::previous::FLAG;
    let diffed = rec
        .artifacts
        .iter()
        .any(|a| a.name == crate::plan::previous::MARKDOWN);
    match (diffed, &opts.previous) {
        (false, None) => Ok(plan),
        (false, Some(_)) => anyhow::bail!(
            "{flag}: the build published no release diff, so it was made without a previous release"
        ),
        (true, None) => anyhow::bail!(
            "the build published a release diff ({}), so it was made with {flag}: give the same \
previous release's output directory with {flag}",
            crate::plan::previous::MARKDOWN
        ),
        (true, Some(dir)) => {
            let new_out = root.join("out").join(&plan.outputs.dir);
            let release = crate::load::previous::previous_release(dir, &new_out)
                .map_err(|d| anyhow::Error::new(crate::spec::InputError(d)))?;
            Ok(crate::plan::with_previous(plan, release))
        }
    }
}

/// The report as lines for a person: the changed inputs, then the verdict
/// (`identical: N artifacts`, or the first differing artifact with its
/// offset, then the others).
pub fn render(r: &Report) -> Vec<String> {
    let mut lines: Vec<String> = r.changed_inputs.iter().map(|c| c.to_string()).collect();
    if r.plan_sha256.published != r.plan_sha256.rebuilt {
        lines.push(format!(
            "the plan differs from the build's (plan sha256 was {}, now {})",
            r.plan_sha256.published, r.plan_sha256.rebuilt
        ));
    }
    if r.boot_key.published != r.boot_key.rebuilt {
        lines.push(format!(
            "the rebuild signed with boot key {}, the build with {}: the project's keys are not the build's",
            r.boot_key.rebuilt, r.boot_key.published
        ));
    }
    match &r.first_difference {
        None => lines.push(format!(
            "identical: {} artifacts plus {} (rebuilt from {} inputs, epoch {}, stage cache off, fresh cache {})",
            r.artifacts,
            r.records.join(" and "),
            r.inputs,
            r.source_date_epoch,
            shown_path(&r.cache_dir)
        )),
        Some(first) => {
            lines.push(format!("first difference: {first}"));
            for d in r.differences.iter().skip(1) {
                lines.push(format!("  also: {d}"));
            }
            // An artifact can differ from the rebuild and from its record:
            // counted once.
            let mut differing: Vec<&str> = r
                .differences
                .iter()
                .filter_map(|d| match d {
                    Difference::Extra { .. } => None,
                    Difference::Differs { artifact, .. }
                    | Difference::NotAsRecorded { artifact, .. }
                    | Difference::MissingPublished { artifact }
                    | Difference::MissingRebuilt { artifact } => Some(artifact.as_str()),
                })
                .collect();
            differing.dedup();
            let (records, artifacts): (Vec<&str>, Vec<&str>) = differing
                .into_iter()
                .partition(|a| r.records.iter().any(|n| n == a));
            let also = match records.as_slice() {
                [] => String::new(),
                [one] => format!(", and {one} does"),
                many => format!(", and {} do", many.join(" and ")),
            };
            lines.push(format!(
                "{} of {} artifacts differ{also} (stage cache off, fresh cache {})",
                artifacts.len(),
                r.artifacts,
                shown_path(&r.cache_dir)
            ));
        }
    }
    if r.kept {
        lines.push(format!(
            "kept the temporary project {} (it holds copies of the signing keys; remove it when done)",
            shown_path(&r.project)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(differences: Vec<Difference>) -> Report {
        Report {
            build_json: "out/x/build.json".into(),
            image: "x".into(),
            identical: differences.is_empty(),
            artifacts: 7,
            records: vec!["SHA256SUMS".into(), "build.json".into()],
            first_difference: differences.first().cloned(),
            differences,
            inputs: 5,
            changed_inputs: vec![],
            plan_sha256: Sides {
                published: "p".into(),
                rebuilt: "p".into(),
            },
            boot_key: Sides {
                published: "k".into(),
                rebuilt: "k".into(),
            },
            source_date_epoch: 1,
            key_files: 2,
            project: "/tmp/r/project".into(),
            kept: false,
            rebuilt_dir: "/tmp/r/project/out/x".into(),
            work_dir: "/tmp/r/project/work".into(),
            cache_dir: "/tmp/r/project/cache".into(),
            deb_cache: "/c/debs".into(),
            stages: BTreeMap::new(),
        }
    }

    #[test]
    fn the_verdict_names_the_first_difference_then_the_others() {
        assert_eq!(
            render(&report(vec![])),
            ["identical: 7 artifacts plus SHA256SUMS and build.json (rebuilt from 5 inputs, epoch 1, stage cache off, fresh cache /tmp/r/project/cache)"]
        );
        let mut r = report(vec![
            Difference::Differs {
                artifact: "a.img".into(),
                offset: 4096,
                published_size: 10,
                rebuilt_size: 10,
            },
            Difference::Extra {
                artifact: "new".into(),
            },
        ]);
        r.plan_sha256.rebuilt = "q".into();
        assert_eq!(
            render(&r),
            [
                "the plan differs from the build's (plan sha256 was p, now q)",
                "first difference: a.img: differs at byte 4096",
                "  also: new: produced by the rebuild but not listed in the published build.json",
                "1 of 7 artifacts differ (stage cache off, fresh cache /tmp/r/project/cache)",
            ]
        );
    }

    #[test]
    fn an_artifact_unlike_its_record_and_the_record_files_are_counted_and_named() {
        let r = report(vec![
            Difference::Differs {
                artifact: "a.img".into(),
                offset: 1,
                published_size: 10,
                rebuilt_size: 10,
            },
            Difference::NotAsRecorded {
                artifact: "a.img".into(),
                recorded_sha256: "aa".into(),
                recorded_size: 10,
                published_sha256: "bb".into(),
                published_size: 10,
            },
            Difference::Differs {
                artifact: "SHA256SUMS".into(),
                offset: 0,
                published_size: 5,
                rebuilt_size: 5,
            },
        ]);
        assert_eq!(
            render(&r),
            [
                "first difference: a.img: differs at byte 1",
                "  also: a.img: published file does not match build.json's sha256 \
                 (build.json records aa, 10 bytes; the file has bb, 10 bytes)",
                "  also: SHA256SUMS: differs at byte 0",
                "1 of 7 artifacts differ, and SHA256SUMS does (stage cache off, fresh cache /tmp/r/project/cache)",
            ]
        );
        let sums = |n: &str| Difference::Differs {
            artifact: n.into(),
            offset: 0,
            published_size: 5,
            rebuilt_size: 5,
        };
        let r = report(vec![sums("SHA256SUMS"), sums("build.json")]);
        assert_eq!(
            render(&r).last().unwrap(),
            "0 of 7 artifacts differ, and SHA256SUMS and build.json do (stage cache off, fresh cache /tmp/r/project/cache)"
        );
    }
}
