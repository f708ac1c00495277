//! Public-key fingerprints of update keys and certificates.
//!
//! The same form as the boot key's (`slotsmith_sign::fingerprint`):
//! `sha256:<hex>` over the raw public key, here the 65-byte uncompressed
//! SEC1 point. Hashing the point rather than a file or a certificate makes
//! the value independent of the container: a private key, its certificate,
//! a re-issued certificate for the same key and a compressed-point SPKI all
//! have one fingerprint. The build uses it to recognise a development
//! update key wherever its file lives.

use std::path::Path;

use anyhow::{Context, Result};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::PublicKey;
use sha2::{Digest, Sha256};

use crate::cert::cert_public_key;
use crate::files;

/// `sha256:<hex>` of the uncompressed point of `key`.
pub fn fingerprint(key: &PublicKey) -> String {
    let point = key.to_encoded_point(false);
    format!("sha256:{}", hex::encode(Sha256::digest(point.as_bytes())))
}

/// The fingerprint of every P-256 public key in the bytes of an update key
/// file (PKCS#8 or SEC1 PEM) or a certificate file (one or more PEM
/// certificates); `path` only names the file in errors. Certificates of
/// another key type contribute nothing: they cannot be update keys.
pub fn file_fingerprints(data: &[u8], path: &Path) -> Result<Vec<String>> {
    let text = std::str::from_utf8(data).unwrap_or("");
    let is_key = text.lines().any(|line| {
        let line = line.trim_end();
        line == "-----BEGIN PRIVATE KEY-----" || line == "-----BEGIN EC PRIVATE KEY-----"
    });
    if is_key {
        let key = files::parse_private_key(data, path)?;
        return Ok(vec![fingerprint(&key.public_key())]);
    }
    let certs = files::parse_certs(data, path)?;
    Ok(certs
        .iter()
        .filter_map(|c| cert_public_key(&c.cert).ok())
        .map(|k| fingerprint(&k))
        .collect())
}

/// The fingerprint of the public key in the certificate file `path`, which
/// must hold exactly one P-256 certificate (what `signing.update.cert`
/// names).
pub fn cert_fingerprint(path: &Path) -> Result<String> {
    let cert = files::load_single_cert(path)?;
    let key =
        cert_public_key(&cert.cert).with_context(|| format!("certificate {}", path.display()))?;
    Ok(fingerprint(&key))
}
