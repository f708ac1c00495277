//! Reading a published `build.json` for `repro`. The file is untrusted
//! input (an output directory can come from anywhere): it is read through a
//! size cap, parsed strictly for the fields `repro` uses, and every path in
//! it must be plain: an artifact name is relative without `..`, and an
//! input is relative without `..` or absolute (a file the image named
//! outside the project; `repro` reads none the image does not name).

use std::io::Read;
use std::path::{Component, Path};

use anyhow::{bail, Context};
use serde::Deserialize;
use slotsmith_yaml::escape::{shown, shown_path};

use crate::build::Input;

/// build.json is a few hundred KiB at most (one line per partition, file
/// and input); anything near this is not a record.
const MAX_RECORD_BYTES: u64 = 64 << 20;

/// One artifact as the published record lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecordedArtifact {
    /// Its path inside the output directory (checked to be plain).
    pub name: String,
    /// sha256 the build recorded.
    pub sha256: String,
    /// Size the build recorded.
    pub size: u64,
}

/// The fields of `build.json` that `repro` reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Recorded {
    /// Format version.
    pub schema: u32,
    /// Image name.
    pub image: String,
    /// The image file, relative to the project root.
    pub image_file: String,
    /// sha256 of the plan's canonical JSON.
    pub plan_sha256: String,
    /// The timestamp clamp the build used.
    pub source_date_epoch: u64,
    /// Boot public key fingerprint.
    pub boot_key: String,
    /// Every artifact but build.json and SHA256SUMS, in record order.
    pub artifacts: Vec<RecordedArtifact>,
    /// Every project file the build read (absent before schema 2).
    #[serde(default)]
    pub inputs: Option<Vec<Input>>,
    /// sha256 of the lock file.
    #[serde(default)]
    pub lock_sha256: Option<String>,
    /// Inputs the build could not record by content.
    #[serde(default)]
    pub unrecorded_inputs: Vec<String>,
}

impl Recorded {
    /// The recorded inputs (checked to be present by [`parse`]).
    pub fn inputs(&self) -> &[Input] {
        self.inputs.as_deref().unwrap_or_default()
    }
}

/// Reads and checks `OUT_DIR/build.json`.
pub fn read(file: &Path) -> anyhow::Result<Recorded> {
    let f = open_regular(file)
        .with_context(|| format!("reading the build record {}", shown_path(file)))?;
    let mut bytes = Vec::new();
    f.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading the build record {}", shown_path(file)))?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        bail!(
            "{} is larger than {} MiB: not a build record",
            shown_path(file),
            MAX_RECORD_BYTES >> 20
        );
    }
    parse(file, &bytes)
}

/// Opens `file` for reading only if it is a regular file: not through a
/// final symlink, and without blocking (a FIFO would wait for a writer
/// forever; `O_NONBLOCK` makes the open return and the `fstat` refuse it).
pub(super) fn open_regular(file: &Path) -> anyhow::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        file,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let f = std::fs::File::from(fd);
    if !f.metadata()?.is_file() {
        bail!("{} is not a regular file", shown_path(file));
    }
    Ok(f)
}

/// Parses and checks a build record's bytes; `file` names it in errors.
pub fn parse(file: &Path, bytes: &[u8]) -> anyhow::Result<Recorded> {
    let r: Recorded = serde_json::from_slice(bytes).map_err(|e| {
        anyhow::format_err!(
            "{} is not a build record: {}",
            shown_path(file),
            shown(&e.to_string())
        )
    })?;
    let Some(inputs) = &r.inputs else {
        bail!(
            "{} records no inputs (schema {}, a build by an older slotsmith): \
             build it again with this slotsmith to be able to reproduce it",
            shown_path(file),
            r.schema
        );
    };
    if !r.unrecorded_inputs.is_empty() {
        bail!(
            "{} says the build read inputs it could not record by content ({}); \
             repro rebuilds only from recorded inputs",
            shown_path(file),
            r.unrecorded_inputs
                .iter()
                .map(|s| shown(s))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !plain_relative(&r.image_file) {
        bail!(
            "{}: image_file '{}' is not a plain relative path",
            shown_path(file),
            shown(&r.image_file)
        );
    }
    let mut names = std::collections::BTreeSet::new();
    for a in &r.artifacts {
        if !plain_relative(&a.name) {
            bail!(
                "{}: artifact '{}' is not a plain relative path inside the output directory",
                shown_path(file),
                shown(&a.name)
            );
        }
        if !names.insert(a.name.as_str()) {
            bail!(
                "{}: artifact '{}' is listed twice",
                shown_path(file),
                shown(&a.name)
            );
        }
    }
    let mut paths = std::collections::BTreeSet::new();
    for i in inputs {
        let absolute = Path::new(&i.path).is_absolute();
        if !(plain_relative(&i.path) || absolute && plain_absolute(&i.path)) {
            bail!(
                "{}: input '{}' is neither a plain relative path nor an absolute one without '..'",
                shown_path(file),
                shown(&i.path)
            );
        }
        let kinds = [i.sha256.is_some(), i.symlink.is_some(), i.directory];
        if kinds.iter().filter(|k| **k).count() != 1 {
            bail!(
                "{}: input '{}' must have exactly one of sha256, symlink and directory",
                shown_path(file),
                shown(&i.path)
            );
        }
        if absolute && i.sha256.is_none() {
            bail!(
                "{}: input '{}' outside the project must be a file with a sha256",
                shown_path(file),
                shown(&i.path)
            );
        }
        if let Some(sha) = &i.sha256 {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!(
                    "{}: input '{}' has a malformed sha256 '{}'",
                    shown_path(file),
                    shown(&i.path),
                    shown(sha)
                );
            }
        }
        if let Some(mode) = &i.mode {
            if i.sha256.is_none()
                || mode.len() != 4
                || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b))
            {
                bail!(
                    "{}: input '{}' has a mode '{}' that is not four octal digits of a file",
                    shown_path(file),
                    shown(&i.path),
                    shown(mode)
                );
            }
        }
        if i.symlink
            .as_deref()
            .is_some_and(|t| t.is_empty() || t.contains('\0'))
        {
            bail!(
                "{}: input '{}' has an empty or NUL-carrying symlink target",
                shown_path(file),
                shown(&i.path)
            );
        }
        if !paths.insert(i.path.as_str()) {
            bail!(
                "{}: input '{}' is listed twice",
                shown_path(file),
                shown(&i.path)
            );
        }
    }
    if !paths.contains(r.image_file.as_str()) {
        bail!(
            "{}: the image file {} is not among the recorded inputs",
            shown_path(file),
            shown(&r.image_file)
        );
    }
    Ok(r)
}

/// A non-empty relative path of normal components only (no `..`, `.`,
/// root, empty component or NUL): it stays below the directory it is
/// joined to, lexically. Symlinks are checked where it is opened.
pub fn plain_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\0')
        && !p.ends_with('/')
        && !p.contains("//")
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !p.starts_with("./")
}

/// An absolute path without `..`, `.` or NUL.
fn plain_absolute(p: &str) -> bool {
    !p.contains('\0')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn record(artifacts: &str, inputs: &str) -> String {
        format!(
            r#"{{"schema":2,"image":"x","version":"1","image_file":"images/x.yaml",
"plan_sha256":"{SHA}","source_date_epoch":1,"boot_key":"sha256:00",
"artifacts":[{artifacts}],"inputs":[{inputs}],"lock_sha256":null}}"#
        )
    }

    fn image_input() -> String {
        format!(r#"{{"path":"images/x.yaml","sha256":"{SHA}"}}"#)
    }

    fn err(text: &str) -> String {
        format!(
            "{:#}",
            parse(Path::new("out/x/build.json"), text.as_bytes()).unwrap_err()
        )
    }

    #[test]
    fn a_good_record_parses_in_order() {
        let text = record(
            &format!(
                r#"{{"name":"b.img","sha256":"{SHA}","size":3}},{{"name":"audit/report.md","sha256":"{SHA}","size":1}}"#
            ),
            &format!(
                r#"{},{{"path":"layers/m/files/etc/l","symlink":"../x"}},{{"path":"layers/m/files/var/e","directory":true}},{{"path":"/srv/base.tar","sha256":"{SHA}"}},{{"path":"layers/m/files/bin/t","sha256":"{SHA}","mode":"4755"}}"#,
                image_input()
            ),
        );
        let r = parse(Path::new("build.json"), text.as_bytes()).unwrap();
        let names: Vec<&str> = r.artifacts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["b.img", "audit/report.md"]);
        assert_eq!(r.inputs().len(), 5);
        assert_eq!(r.inputs()[4].mode.as_deref(), Some("4755"));
        assert_eq!(r.lock_sha256, None);
    }

    #[test]
    fn hostile_artifact_names_are_refused_and_escaped() {
        for (name, shown_as) in [
            ("../../etc/passwd", "../../etc/passwd"),
            ("/etc/passwd", "/etc/passwd"),
            ("a/../../b", "a/../../b"),
            ("./a", "./a"),
            ("", ""),
            ("a//b", "a//b"),
            ("dir/", "dir/"),
            ("a\u{1b}[31m/..", "a\\x1b[31m/.."),
        ] {
            let j = serde_json::to_string(name).unwrap();
            let e = err(&record(
                &format!(r#"{{"name":{j},"sha256":"{SHA}","size":1}}"#),
                &image_input(),
            ));
            assert_eq!(
                e,
                format!(
                    "out/x/build.json: artifact '{shown_as}' is not a plain relative path inside the output directory"
                ),
                "{name:?}"
            );
        }
        let twice = format!(r#"{{"name":"a","sha256":"{SHA}","size":1}}"#);
        assert_eq!(
            err(&record(&format!("{twice},{twice}"), &image_input())),
            "out/x/build.json: artifact 'a' is listed twice"
        );
    }

    #[test]
    fn hostile_inputs_are_refused() {
        let bad = |input: &str| err(&record("", &format!("{},{input}", image_input())));
        assert_eq!(
            bad(&format!(r#"{{"path":"../secret","sha256":"{SHA}"}}"#)),
            "out/x/build.json: input '../secret' is neither a plain relative path nor an absolute one without '..'"
        );
        assert_eq!(
            bad(&format!(r#"{{"path":"/a/../b","sha256":"{SHA}"}}"#)),
            "out/x/build.json: input '/a/../b' is neither a plain relative path nor an absolute one without '..'"
        );
        assert_eq!(
            bad(r#"{"path":"a","sha256":"zz"}"#),
            "out/x/build.json: input 'a' has a malformed sha256 'zz'"
        );
        assert_eq!(
            bad(&format!(r#"{{"path":"a","sha256":"{SHA}","symlink":"b"}}"#)),
            "out/x/build.json: input 'a' must have exactly one of sha256, symlink and directory"
        );
        assert_eq!(
            bad(r#"{"path":"/etc","directory":true}"#),
            "out/x/build.json: input '/etc' outside the project must be a file with a sha256"
        );
        assert!(bad(r#"{"path":"a","sha256":"x","owner":0}"#).contains("unknown field"));
        for mode in ["755", "0855", "07555", "\\u001b"] {
            assert_eq!(
                bad(&format!(r#"{{"path":"a","sha256":"{SHA}","mode":"{mode}"}}"#)),
                format!(
                    "out/x/build.json: input 'a' has a mode '{}' that is not four octal digits of a file",
                    mode.replace("\\u001b", "\\x1b")
                )
            );
        }
        assert_eq!(
            bad(r#"{"path":"a","symlink":"b","mode":"0755"}"#),
            "out/x/build.json: input 'a' has a mode '0755' that is not four octal digits of a file"
        );
    }

    #[test]
    fn an_old_malformed_or_incomplete_record_is_refused_naming_the_file() {
        assert!(
            err("{not json").starts_with("out/x/build.json is not a build record: "),
            "{}",
            err("{not json")
        );
        let old = record("", "").replace(r#""inputs":[],"#, "");
        assert_eq!(
            err(&old),
            "out/x/build.json records no inputs (schema 2, a build by an older slotsmith): \
             build it again with this slotsmith to be able to reproduce it"
        );
        assert_eq!(
            err(&record("", "")),
            "out/x/build.json: the image file images/x.yaml is not among the recorded inputs"
        );
        let dir = record("", &image_input()).replace(
            r#""lock_sha256":null"#,
            r#""lock_sha256":null,"unrecorded_inputs":["the base directory rootfs"]"#,
        );
        assert_eq!(
            err(&dir),
            "out/x/build.json says the build read inputs it could not record by content \
             (the base directory rootfs); repro rebuilds only from recorded inputs"
        );
        let missing = tempfile::tempdir().unwrap();
        let e = format!(
            "{:#}",
            read(&missing.path().join("build.json")).unwrap_err()
        );
        assert!(e.starts_with("reading the build record "), "{e}");
        assert!(e.contains("build.json"), "{e}");
    }

    #[test]
    fn a_build_json_that_is_a_fifo_or_a_device_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("build.json");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = format!("{:#}", read(&fifo).unwrap_err());
        assert_eq!(
            e,
            format!(
                "reading the build record {0}: {0} is not a regular file",
                fifo.display()
            )
        );
        let e = format!("{:#}", read(Path::new("/dev/zero")).unwrap_err());
        assert_eq!(
            e,
            "reading the build record /dev/zero: /dev/zero is not a regular file"
        );
    }
}
