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
use std::io::Read as _;
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

/// Reads `path` twice: once whole for its sha256, once through the
/// container check.
pub fn inspect(path: &Path) -> Result<Claims> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let meta = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(meta.is_file(), "{} is not a regular file", path.display());
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let mut claims = Claims {
        sha256: hex::encode(hasher.finalize()),
        ..Claims::default()
    };
    let mut signer = None;
    let checked = slotsmith_swu::read_swu_from(&mut f, |_, sig| {
        signer = slotsmith_cms::claimed_signer_fingerprint(sig).ok();
        Ok(())
    });
    claims.signer = signer;
    match checked {
        Ok(contents) => {
            claims.version = Some(contents.description.version.clone());
            claims.security_version = contents.description.security_version;
        }
        Err(e) => claims.refusal = Some(format!("the update file is damaged or altered: {e:#}")),
    }
    Ok(claims)
}
