//! `cargo xtask diff OLD_OUT NEW_OUT`: what changed between two published
//! builds, for a reviewer (Markdown) and for tools (JSON, sorted and
//! stable). It is a report: it succeeds whether or not the builds differ,
//! and fails only on an unusable input, naming the file.
//!
//! Sections, one module each: `release` (version, security version, plan
//! and lock hashes, each slot's signed kernel command line, key and
//! certificate fingerprints), `packages` (Debian packages from the
//! rootfs's dpkg database), `files` (every rootfs entry: kind, mode, owner,
//! sha256, symlink target) and `policy` (hardening rules and waivers from
//! the audit report). `markdown` renders it.
//!
//! Both directories are untrusted input: `build.json` is read through a
//! size cap into typed fields and must match `SHA256SUMS`, artifact names
//! must be plain relative paths, every other file read must be an artifact
//! with the sha256 and size the record gives (`record::open_artifact`:
//! through no symlink, a regular file, hashed on the handle the readers
//! then get), the security version and command lines come from the
//! manifests verified with the build's boot key, the rootfs images are read
//! with the audit's checked readers (bounded entries and paths; file
//! contents streamed into sha256), and every string from an image or a
//! record is escaped before it reaches the Markdown.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use slotsmith_yaml::escape::shown_path;

pub mod files;
pub mod markdown;
pub mod packages;
pub mod policy;
pub mod record;
pub mod release;

/// Format version of the JSON report.
pub const SCHEMA: u32 = 1;

/// Largest `audit/report.json` read (real ones are a few hundred KiB).
const MAX_REPORT: u64 = 16 << 20;

/// Which build a side is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildId {
    /// Image name.
    pub image: String,
    /// Image version.
    pub version: String,
}

/// Everything the diff reads of one build.
pub struct Side {
    /// Name and version.
    pub id: BuildId,
    /// Facts and trust anchors.
    pub facts: release::Facts,
    /// Installed packages, when the image has a dpkg database.
    pub packages: Option<packages::Installed>,
    /// Every rootfs entry.
    pub files: files::Listing,
    /// The audit, when the build has policies.
    pub audit: Option<policy::Audit>,
}

/// Reads one published build directory: its record (checked against
/// `SHA256SUMS`), then everything else through [`read_side_with`].
pub fn read_side(dir: &Path) -> anyhow::Result<Side> {
    let (r, _) = record::read_record(dir)?;
    read_side_with(dir, r)
}

/// Reads the build in `dir` whose record is `r` (the build stage passes
/// the record it is about to publish). Every file read is an artifact of
/// `r`, checked against its recorded sha256 and size on the handle that is
/// then read.
pub fn read_side_with(dir: &Path, r: record::Record) -> anyhow::Result<Side> {
    let facts = release::facts(dir, &r)?;
    let image = dir.join(r.rootfs_file()?);
    let fs = files::open_image(dir, &r)?;
    let files = files::list(fs.as_ref())
        .with_context(|| format!("reading the rootfs image {}", shown_path(&image)))?;
    let packages = fs
        .read(packages::STATUS)
        .with_context(|| format!("reading {} in {}", packages::STATUS, shown_path(&image)))?
        .map(|b| packages::parse_status(&String::from_utf8_lossy(&b)));
    let audit = if r.has(policy::REPORT) {
        let file = dir.join(policy::REPORT);
        let bytes = record::read_artifact(dir, &r, policy::REPORT, MAX_REPORT)?;
        Some(policy::parse(&shown_path(&file), &bytes)?)
    } else {
        None
    };
    Ok(Side {
        id: BuildId {
            image: r.image,
            version: r.version,
        },
        facts,
        packages,
        files,
        audit,
    })
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Format version.
    pub schema: u32,
    /// The old build.
    pub old: BuildId,
    /// The new build.
    pub new: BuildId,
    /// Whether anything below differs.
    pub differs: bool,
    /// Identity, command lines and keys.
    pub release: release::ReleaseDiff,
    /// Debian packages; `null` when neither image has a dpkg database.
    pub packages: Option<packages::PackagesDiff>,
    /// Rootfs entries.
    pub files: files::FilesDiff,
    /// Hardening rules and waivers; `null` when neither build has policies.
    pub policy: Option<policy::PolicyDiff>,
}

/// Compares two builds already read.
pub fn compare(old: &Side, new: &Side) -> Diff {
    let release = release::diff(&old.facts, &new.facts);
    let packages = match (&old.packages, &new.packages) {
        (None, None) => None,
        (o, n) => Some(packages::diff(
            &o.clone().unwrap_or_default(),
            &n.clone().unwrap_or_default(),
        )),
    };
    let files = files::diff(&old.files, &new.files);
    let policy = match (&old.audit, &new.audit) {
        (None, None) => None,
        (o, n) => Some(policy::diff(o.as_ref(), n.as_ref())),
    };
    let differs = !release.is_empty()
        || packages.as_ref().is_some_and(|p| !p.is_empty())
        || !files.is_empty()
        || policy.as_ref().is_some_and(|p| !p.is_empty());
    Diff {
        schema: SCHEMA,
        old: old.id.clone(),
        new: new.id.clone(),
        differs,
        release,
        packages,
        files,
        policy,
    }
}

/// Reads both directories and compares them. Any error is about an input
/// and names its file.
pub fn diff_dirs(old: &Path, new: &Path) -> anyhow::Result<Diff> {
    let o = read_side(old).with_context(|| format!("reading the old build {}", shown_path(old)))?;
    let n = read_side(new).with_context(|| format!("reading the new build {}", shown_path(new)))?;
    Ok(compare(&o, &n))
}

/// The report as JSON for tools: every list sorted, fields in a fixed
/// order, a trailing newline.
pub fn to_json(d: &Diff) -> String {
    let mut s =
        serde_json::to_string_pretty(d).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use slotsmith_policy::MemRootfs;

    fn side(version: &str, motd: &str, sv: &str) -> Side {
        let mut fs = MemRootfs::new();
        fs.file("/etc/motd", 0o644, motd.as_bytes().to_vec());
        Side {
            id: BuildId {
                image: "x".into(),
                version: version.into(),
            },
            facts: release::Facts {
                fields: [("security_version", Some(sv.to_string()))]
                    .into_iter()
                    .collect(),
                cmdline: Default::default(),
                keys: Default::default(),
            },
            packages: None,
            files: files::list(&fs).unwrap(),
            audit: None,
        }
    }

    #[test]
    fn a_build_compared_with_itself_differs_in_nothing_and_json_is_stable() {
        let a = side("1", "hi\n", "1");
        let d = compare(&a, &a);
        assert!(!d.differs);
        assert_eq!(d.packages, None);
        assert_eq!(d.policy, None);
        let b = side("1", "hello\n", "2");
        let d = compare(&a, &b);
        assert!(d.differs);
        let json = to_json(&d);
        assert_eq!(json, to_json(&compare(&a, &b)));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["files"]["changed"][0]["path"], "/etc/motd");
        assert_eq!(v["files"]["changed"][0]["what"][0], "content");
        assert_eq!(v["release"]["fields"][0]["field"], "security_version");
        assert_eq!(v["packages"], serde_json::Value::Null);
    }
}
