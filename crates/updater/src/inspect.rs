//! What an update file claims, read before SWUpdate runs: for the audit
//! trail (version, security version, signer, sha256) and as a gate.
//!
//! The gate is the container check of `slotsmith_swu::read_swu_from`:
//! valid cpio with correct checksums, `sw-description` and its signature
//! first, a description our strict parser accepts, and every payload it
//! names present with the sha256 it names. A `.swu` whose payload was
//! altered is refused here, before SWUpdate would stream the altered slot
//! image into the inactive slot (it checks a streamed payload's hash only
//! after writing it). Whether the signature is good, the hardware fits
//! and the version is not a downgrade is left to SWUpdate, which runs
//! next and decides; nothing read here is trusted before it has.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result};
use sha2::Digest as _;

/// What the file claims.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// sha256 of the whole file.
    pub sha256: String,
    /// Its version, security version, hardware revisions.
    pub version: Option<String>,
    /// Security version.
    pub security_version: Option<u64>,
    /// Key fingerprint of the certificate the signature names.
    pub signer: Option<String>,
    /// Why the container check failed, if it did.
    pub refusal: Option<String>,
}

/// A reader that hashes the file while the container check reads it: every
/// byte read at the hashed frontier extends the hash, so the check's one
/// sequential pass (it seeks back only for the small first two members)
/// also gives the file's sha256. Whatever the check did not read (bytes
/// after the trailer, or everything after a damaged member) is hashed at
/// the end.
struct Hashing {
    file: File,
    pos: u64,
    hashed: u64,
    hasher: sha2::Sha256,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        let end = self.pos + n as u64;
        if self.pos <= self.hashed && end > self.hashed {
            let from = (self.hashed - self.pos) as usize;
            self.hasher.update(&buf[from..n]);
            self.hashed = end;
        }
        self.pos = end;
        Ok(n)
    }
}

impl Seek for Hashing {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = self.file.seek(to)?;
        Ok(self.pos)
    }
}

impl Hashing {
    /// Hashes the rest of the file and returns the whole file's sha256.
    fn finish(mut self) -> std::io::Result<String> {
        self.seek(SeekFrom::Start(self.hashed))?;
        let mut buf = vec![0u8; 1 << 20];
        while self.read(&mut buf)? > 0 {}
        Ok(hex::encode(self.hasher.finalize()))
    }
}

/// Reads `path` once: the container check, and its sha256 on the way.
pub fn inspect(path: &Path) -> Result<Claims> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(meta.is_file(), "{} is not a regular file", path.display());
    let mut reader = Hashing {
        file,
        pos: 0,
        hashed: 0,
        hasher: sha2::Sha256::new(),
    };
    let mut signer = None;
    let checked = slotsmith_swu::read_swu_from(&mut reader, |_, sig| {
        signer = slotsmith_cms::claimed_signer_fingerprint(sig).ok();
        Ok(())
    });
    let mut claims = Claims {
        sha256: reader
            .finish()
            .with_context(|| format!("reading {}", path.display()))?,
        signer,
        ..Claims::default()
    };
    match checked {
        Ok(contents) => {
            claims.version = Some(contents.description.version.clone());
            claims.security_version = contents.description.security_version;
        }
        Err(e) => {
            claims.refusal = Some(format!("the update file is damaged or altered: {e:#}"));
            // The archive failed somewhere: what its head claims (who
            // signed it, which release) still goes into the record.
            if let Ok(head) = head(path) {
                claims.version = head.description.as_ref().map(|d| d.version.clone());
                claims.security_version = head.description.and_then(|d| d.security_version);
                claims.signer = claims.signer.or(head.signer);
            }
        }
    }
    Ok(claims)
}

/// Largest sw-description or signature read from an archive's head.
const MAX_HEAD_MEMBER: u64 = 1 << 20;

/// What the first two members of a `.swu` claim, read without the rest.
pub struct Head {
    /// sw-description, if it parses.
    pub description: Option<slotsmith_swu::SwDescription>,
    /// The signature's claimed signer, if it names one.
    pub signer: Option<String>,
}

/// Reads the head of a `.swu`: sw-description and its signature (each at
/// most 1 MiB), nothing after them. Unverified claims, for records and
/// for recognising a stick whose update is already running.
pub fn head(path: &Path) -> Result<Head> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let entries = slotsmith_swu::read_leading(std::io::BufReader::new(&f), 2)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut member = |name: &str| -> Option<Vec<u8>> {
        let e = entries
            .iter()
            .find(|e| e.name == name && e.size <= MAX_HEAD_MEMBER)?;
        f.seek(SeekFrom::Start(e.offset)).ok()?;
        let mut v = Vec::new();
        (&mut f).take(e.size).read_to_end(&mut v).ok()?;
        Some(v)
    };
    let description = member("sw-description")
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| slotsmith_swu::SwDescription::parse(&t).ok());
    let signer = member("sw-description.sig")
        .and_then(|sig| slotsmith_cms::claimed_signer_fingerprint(&sig).ok());
    Ok(Head {
        description,
        signer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_pass_sha256_is_the_file_s_whatever_the_check_read() {
        let d = tempfile::tempdir().unwrap();
        // A valid archive with bytes after its trailer, a truncated one,
        // and one that is not cpio at all.
        let mut w = slotsmith_swu::CpioWriter::new(Vec::new());
        w.add_bytes("sw-description", b"x").unwrap();
        w.add_bytes("payload", &vec![7u8; 3 << 20]).unwrap();
        let mut archive = w.finish().unwrap();
        archive.extend_from_slice(&[0u8; 1000]);
        let cases = [
            archive.clone(),
            archive[..archive.len() / 2].to_vec(),
            b"not an archive".to_vec(),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            let p = d.path().join(format!("{i}.swu"));
            std::fs::write(&p, bytes).unwrap();
            let c = inspect(&p).unwrap();
            assert_eq!(
                c.sha256,
                hex::encode(sha2::Sha256::digest(bytes)),
                "case {i}"
            );
            assert!(c.refusal.is_some(), "case {i}: no signature member");
        }
    }

    #[test]
    fn a_damaged_archive_still_names_its_claimed_release() {
        let d = tempfile::tempdir().unwrap();
        let desc = slotsmith_swu::SwDescription {
            name: "demo 4.0.0".into(),
            version: "4.0.0".into(),
            hardware_compatibility: vec!["1.0".into()],
            security_version: Some(3),
            collections: vec![],
        };
        let mut w = slotsmith_swu::CpioWriter::new(Vec::new());
        w.add_bytes("sw-description", desc.to_libconfig().unwrap().as_bytes())
            .unwrap();
        w.add_bytes("sw-description.sig", b"not cms").unwrap();
        w.add_bytes("payload", &vec![7u8; 100_000]).unwrap();
        let mut archive = w.finish().unwrap();
        let at = archive.len() - 50_000;
        archive[at] ^= 1;
        let p = d.path().join("x.swu");
        std::fs::write(&p, &archive).unwrap();
        let c = inspect(&p).unwrap();
        assert!(c.refusal.unwrap().contains("checksum mismatch"));
        assert_eq!(c.version.as_deref(), Some("4.0.0"));
        assert_eq!(c.security_version, Some(3));
        assert_eq!(c.signer, None, "the signature names no signer");
    }
}
