//! Reading one published build for `xtask diff`: `build.json` through a
//! size cap into typed fields (strict types, unknown fields ignored so a
//! newer record still reads), and small files of the directory through
//! [`read_small`]. Both directories are untrusted: every file is opened
//! without following a final symlink, must be a regular file (a FIFO or a
//! device cannot hang or flood the diff), and is read through a cap.

use std::io::Read;
use std::path::{Component, Path};

use anyhow::{bail, Context};
use serde::Deserialize;
use slotsmith_yaml::escape::{shown, shown_path};

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
        self.artifacts.iter().any(|a| a.name == name)
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

/// Reads and checks `dir/build.json`.
pub fn read_record(dir: &Path) -> anyhow::Result<Record> {
    let file = dir.join("build.json");
    let bytes = read_small(&file, MAX_RECORD_BYTES)?
        .with_context(|| format!("{} is missing: not a build directory", shown_path(&file)))?;
    let r: Record = serde_json::from_slice(&bytes).map_err(|e| {
        anyhow::format_err!(
            "{} is not a build record: {}",
            shown_path(&file),
            shown(&e.to_string())
        )
    })?;
    for a in &r.artifacts {
        if !plain(&a.name) {
            bail!(
                "{}: artifact name {:?} is not a plain relative path",
                shown_path(&file),
                shown(&a.name)
            );
        }
    }
    for s in &r.slots {
        if !matches!(s.slot.as_str(), "a" | "b") {
            bail!("{}: unknown slot {:?}", shown_path(&file), shown(&s.slot));
        }
    }
    r.rootfs_file()
        .with_context(|| format!("reading {}", shown_path(&file)))?;
    Ok(r)
}

/// A relative path without `..`, `.` or a root: safe to join to the
/// directory.
pub fn plain(name: &str) -> bool {
    !name.is_empty()
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Reads `file` if it exists: a regular file, not through a final symlink,
/// at most `limit` bytes. `None` when there is no such file.
pub fn read_small(file: &Path, limit: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let f = match open_regular(file) {
        Ok(f) => f,
        Err(e)
            if e.downcast_ref::<std::io::Error>().map(|e| e.kind())
                == Some(std::io::ErrorKind::NotFound) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e.context(format!("reading {}", shown_path(file)))),
    };
    let mut bytes = Vec::new();
    f.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", shown_path(file)))?;
    if bytes.len() as u64 > limit {
        bail!("{} is larger than {limit} bytes", shown_path(file));
    }
    Ok(Some(bytes))
}

/// Opens `file` read-only if it is a regular file: `O_NOFOLLOW` (no final
/// symlink) and `O_NONBLOCK` (a FIFO returns at once, then `fstat`
/// refuses it).
pub fn open_regular(file: &Path) -> anyhow::Result<std::fs::File> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_read_strictly_and_paths_must_be_plain() {
        let dir = tempfile::tempdir().unwrap();
        let good = r#"{"schema":2,"image":"x","version":"1","plan_sha256":"p","boot_key":"sha256:k",
            "security_version":3,"slots":[{"slot":"a"}],"rootfs":{"filesystem":"ext4"},
            "artifacts":[{"name":"audit/report.json"}],"lock_sha256":null,"extra":1}"#;
        std::fs::write(dir.path().join("build.json"), good).unwrap();
        let r = read_record(dir.path()).unwrap();
        assert_eq!(r.security_version, 3);
        assert_eq!(r.rootfs_file().unwrap(), "rootfs.ext4");
        assert!(r.has("audit/report.json"));
        let bad = good.replace("audit/report.json", "../etc/passwd");
        std::fs::write(dir.path().join("build.json"), bad).unwrap();
        let e = format!("{:#}", read_record(dir.path()).unwrap_err());
        assert!(e.contains("not a plain relative path"), "{e}");
        let bad = good.replace("\"security_version\":3", "\"security_version\":\"3\"");
        std::fs::write(dir.path().join("build.json"), bad).unwrap();
        let e = format!("{:#}", read_record(dir.path()).unwrap_err());
        assert!(e.contains("is not a build record"), "{e}");
        // A FIFO is refused at once rather than waited on.
        std::fs::remove_file(dir.path().join("build.json")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            dir.path().join("build.json"),
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
