//! Reading one published build for `xtask diff`: `build.json` through a
//! size cap into typed fields (strict types, unknown fields ignored so a
//! newer record still reads), and every other file the diff reads through
//! [`open_artifact`] or [`read_artifact`], the one checked way in.
//!
//! Both directories are untrusted. Every file is opened below its
//! directory with `O_NOFOLLOW|O_NONBLOCK` on every component
//! (`repro::compare::open_below`) and must be a regular file, so a symlink,
//! a FIFO or a device cannot redirect, hang or flood the diff; and every
//! file but `build.json` must be an artifact the record lists, with the
//! sha256 and size it records. The check hashes the very handle the readers
//! then get, so what is shown is what the build recorded: a tampered
//! rootfs image or audit report cannot hide or invent a change.
//! `build.json` itself must match its line in `SHA256SUMS`.

use std::io::{Read, Seek};
use std::path::{Component, Path};

use anyhow::{bail, Context};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use slotsmith_yaml::escape::{shown, shown_path};

use crate::repro::compare::open_below;

/// build.json is a few hundred KiB at most; anything near this is not a
/// record.
const MAX_RECORD_BYTES: u64 = 64 << 20;

/// The rootfs facts the diff needs.
#[derive(Debug, Clone, Deserialize)]
pub struct RecordedRootfs {
    /// `squashfs` or `ext4`.
    pub filesystem: String,
}

/// One filled slot.
#[derive(Debug, Clone, Deserialize)]
pub struct RecordedSlot {
    /// `a` or `b`.
    pub slot: String,
}

/// One artifact.
#[derive(Debug, Clone, Deserialize)]
pub struct RecordedArtifact {
    /// Its path inside the output directory.
    pub name: String,
    /// sha256 of its bytes, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// The fields of `build.json` the diff reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    /// Image name.
    pub image: String,
    /// Image version.
    pub version: String,
    /// sha256 of the plan.
    pub plan_sha256: String,
    /// Boot public key fingerprint.
    pub boot_key: String,
    /// Anti-rollback counter.
    pub security_version: u64,
    /// The filled slots.
    pub slots: Vec<RecordedSlot>,
    /// The rootfs image.
    pub rootfs: RecordedRootfs,
    /// Every artifact but build.json and SHA256SUMS.
    pub artifacts: Vec<RecordedArtifact>,
    /// sha256 of the lock (absent before schema 2, `null` without a lock).
    #[serde(default)]
    pub lock_sha256: Option<String>,
}

impl Record {
    /// Whether the build published `name`.
    pub fn has(&self, name: &str) -> bool {
        self.artifact(name).is_some()
    }

    /// The record of artifact `name`.
    pub fn artifact(&self, name: &str) -> Option<&RecordedArtifact> {
        self.artifacts.iter().find(|a| a.name == name)
    }

    /// The rootfs image's file name.
    pub fn rootfs_file(&self) -> anyhow::Result<&'static str> {
        match self.rootfs.filesystem.as_str() {
            "squashfs" => Ok("rootfs.squashfs"),
            "ext4" => Ok("rootfs.ext4"),
            other => bail!("unknown rootfs filesystem {:?}", shown(other)),
        }
    }
}

/// The name of the record in a build directory.
pub const RECORD: &str = "build.json";

/// The checksum list of a build directory.
pub const SUMS: &str = "SHA256SUMS";

/// Reads and checks `dir/build.json`, which must match its line in
/// `dir/SHA256SUMS`; the record and the sha256 of its bytes.
pub fn read_record(dir: &Path) -> anyhow::Result<(Record, String)> {
    let file = dir.join(RECORD);
    let bytes = read_below(dir, RECORD, MAX_RECORD_BYTES)?
        .with_context(|| format!("{} is missing: not a build directory", shown_path(&file)))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let sums_file = dir.join(SUMS);
    let sums = read_below(dir, SUMS, MAX_RECORD_BYTES)?
        .with_context(|| format!("{} is missing", shown_path(&sums_file)))?;
    let listed = String::from_utf8_lossy(&sums)
        .lines()
        .find_map(|l| l.strip_suffix(&format!("  {RECORD}")).map(str::to_string));
    match listed {
        Some(s) if s == sha256 => {}
        Some(s) => bail!(
            "{} has sha256 {sha256}, but {} records {}",
            shown_path(&file),
            shown_path(&sums_file),
            shown(&s)
        ),
        None => bail!("{} does not list {RECORD}", shown_path(&sums_file)),
    }
    Ok((parse_record(&file, &bytes)?, sha256))
}

/// Parses and checks the bytes of a record; `file` names it in errors.
pub fn parse_record(file: &Path, bytes: &[u8]) -> anyhow::Result<Record> {
    let r: Record = serde_json::from_slice(bytes).map_err(|e| {
        anyhow::format_err!(
            "{} is not a build record: {}",
            shown_path(file),
            shown(&e.to_string())
        )
    })?;
    for a in &r.artifacts {
        if !plain(&a.name) {
            bail!(
                "{}: artifact name {:?} is not a plain relative path",
                shown_path(file),
                shown(&a.name)
            );
        }
    }
    for s in &r.slots {
        if !matches!(s.slot.as_str(), "a" | "b") {
            bail!("{}: unknown slot {:?}", shown_path(file), shown(&s.slot));
        }
    }
    r.rootfs_file()
        .with_context(|| format!("reading {}", shown_path(file)))?;
    Ok(r)
}

/// Opens artifact `name` of the build in `dir` whose record is `r`, after
/// checking it: listed in the record, present, a regular file reached
/// through no symlink, and of the recorded size and sha256 (hashed through
/// this handle, which is returned rewound; the readers get it, never the
/// path). A mismatch names the file and both hashes.
pub fn open_artifact(dir: &Path, r: &Record, name: &str) -> anyhow::Result<std::fs::File> {
    let file = dir.join(name);
    let a = r.artifact(name).with_context(|| {
        format!(
            "{} is not an artifact of {}",
            shown_path(&file),
            shown_path(&dir.join(RECORD))
        )
    })?;
    let mut f = open_below(dir, name)
        .with_context(|| format!("opening {}", shown_path(&file)))?
        .with_context(|| format!("{} is missing", shown_path(&file)))?;
    let size = f
        .metadata()
        .with_context(|| format!("reading {}", shown_path(&file)))?
        .len();
    if size != a.size {
        bail!(
            "{} has {size} bytes, but {} records {}",
            shown_path(&file),
            shown_path(&dir.join(RECORD)),
            a.size
        );
    }
    // Read at most the recorded size (and one byte more, to see growth).
    let mut h = Sha256::new();
    let n = std::io::copy(&mut (&mut f).take(a.size.saturating_add(1)), &mut h)
        .with_context(|| format!("reading {}", shown_path(&file)))?;
    let sha256 = hex::encode(h.finalize());
    if n != a.size || sha256 != a.sha256 {
        bail!(
            "{} has sha256 {sha256}, but {} records {}: it was changed after the build",
            shown_path(&file),
            shown_path(&dir.join(RECORD)),
            shown(&a.sha256)
        );
    }
    f.rewind()
        .with_context(|| format!("reading {}", shown_path(&file)))?;
    Ok(f)
}

/// Reads artifact `name` (checked as [`open_artifact`] does), refusing one
/// larger than `limit` before reading it.
pub fn read_artifact(dir: &Path, r: &Record, name: &str, limit: u64) -> anyhow::Result<Vec<u8>> {
    let file = dir.join(name);
    if let Some(a) = r.artifact(name) {
        if a.size > limit {
            bail!(
                "{} is recorded as {} bytes, more than the {limit} read",
                shown_path(&file),
                a.size
            );
        }
    }
    let mut bytes = Vec::new();
    open_artifact(dir, r, name)?
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", shown_path(&file)))?;
    Ok(bytes)
}

/// Reads `dir/name` if it exists, through [`open_below`], at most `limit`
/// bytes: for the record and the checksums, which no record covers, and
/// the key files the reviewer's index fingerprints in the build's own
/// staging directory.
pub fn read_below(dir: &Path, name: &str, limit: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let file = dir.join(name);
    let Some(f) =
        open_below(dir, name).with_context(|| format!("opening {}", shown_path(&file)))?
    else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    f.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", shown_path(&file)))?;
    if bytes.len() as u64 > limit {
        bail!("{} is larger than {limit} bytes", shown_path(&file));
    }
    Ok(Some(bytes))
}

/// A relative path without `..`, `.` or a root: safe to join to the
/// directory.
pub fn plain(name: &str) -> bool {
    !name.is_empty()
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `record` as dir/build.json and a SHA256SUMS naming it.
    fn publish(dir: &Path, record: &str) {
        std::fs::write(dir.join(RECORD), record).unwrap();
        let sha = hex::encode(Sha256::digest(record.as_bytes()));
        std::fs::write(dir.join(SUMS), format!("{sha}  {RECORD}\n")).unwrap();
    }

    #[test]
    fn a_record_is_read_strictly_and_paths_must_be_plain() {
        let dir = tempfile::tempdir().unwrap();
        let report = b"{}\n";
        let good = format!(
            r#"{{"schema":2,"image":"x","version":"1","plan_sha256":"p","boot_key":"sha256:k",
            "security_version":3,"slots":[{{"slot":"a"}}],"rootfs":{{"filesystem":"ext4"}},
            "artifacts":[{{"name":"audit/report.json","sha256":"{}","size":3}}],"lock_sha256":null,"extra":1}}"#,
            hex::encode(Sha256::digest(report))
        );
        publish(dir.path(), &good);
        let (r, sha) = read_record(dir.path()).unwrap();
        assert_eq!(sha, hex::encode(Sha256::digest(good.as_bytes())));
        assert_eq!(r.security_version, 3);
        assert_eq!(r.rootfs_file().unwrap(), "rootfs.ext4");
        assert!(r.has("audit/report.json"));
        // An artifact is read only as recorded.
        std::fs::create_dir(dir.path().join("audit")).unwrap();
        std::fs::write(dir.path().join("audit/report.json"), report).unwrap();
        assert_eq!(
            read_artifact(dir.path(), &r, "audit/report.json", 10).unwrap(),
            report
        );
        let e = format!(
            "{:#}",
            read_artifact(dir.path(), &r, "audit/report.json", 2).unwrap_err()
        );
        assert!(e.contains("more than the 2 read"), "{e}");
        std::fs::write(dir.path().join("audit/report.json"), b"[]\n").unwrap();
        let e = format!(
            "{:#}",
            read_artifact(dir.path(), &r, "audit/report.json", 10).unwrap_err()
        );
        assert!(
            e.contains("audit/report.json has sha256 ")
                && e.contains(&hex::encode(Sha256::digest(b"[]\n")))
                && e.contains(&hex::encode(Sha256::digest(report))),
            "{e}"
        );
        let e = format!(
            "{:#}",
            read_artifact(dir.path(), &r, "x.pem", 10).unwrap_err()
        );
        assert!(e.contains("x.pem is not an artifact of"), "{e}");
        // The record must be the one SHA256SUMS names.
        std::fs::write(dir.path().join(RECORD), good.replace("\"x\"", "\"y\"")).unwrap();
        let e = format!("{:#}", read_record(dir.path()).unwrap_err());
        assert!(e.contains("SHA256SUMS records"), "{e}");
        let bad = good.replace("audit/report.json", "../etc/passwd");
        publish(dir.path(), &bad);
        let e = format!("{:#}", read_record(dir.path()).unwrap_err());
        assert!(e.contains("not a plain relative path"), "{e}");
        let bad = good.replace("\"security_version\":3", "\"security_version\":\"3\"");
        publish(dir.path(), &bad);
        let e = format!("{:#}", read_record(dir.path()).unwrap_err());
        assert!(e.contains("is not a build record"), "{e}");
        // A FIFO is refused at once rather than waited on.
        std::fs::remove_file(dir.path().join(RECORD)).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            dir.path().join(RECORD),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let e = format!("{:#}", read_record(dir.path()).unwrap_err());
        assert!(e.contains("not a regular file"), "{e}");
        // Missing: named.
        let empty = tempfile::tempdir().unwrap();
        let e = format!("{:#}", read_record(empty.path()).unwrap_err());
        assert!(e.contains("is missing"), "{e}");
    }
}
