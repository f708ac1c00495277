//! RSA public keys of Secure Boot key and certificate files, read from
//! untrusted bytes without an RSA implementation: only the modulus and the
//! exponent are needed, to compare a key with its certificate and to
//! recognise a development key by its public key.
//!
//! **The fingerprint** of an RSA key is `sha256:` over the DER
//! `SubjectPublicKeyInfo` (`rsaEncryption` with NULL parameters, the
//! `RSAPublicKey` with minimal INTEGERs), which is what `openssl pkey
//! -pubout -outform DER | sha256sum` hashes. It is re-encoded from the
//! modulus and exponent, so a PKCS#8 or PKCS#1 private key, an SPKI or
//! PKCS#1 public key, and a certificate of the same key, PEM or DER, all
//! have the same fingerprint.

use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use slotsmith_yaml::escape::shown_path;
use x509_cert::der::asn1::{AnyRef, ObjectIdentifier, OctetStringRef, UintRef};
use x509_cert::der::{Decode, Reader, SliceReader};
use x509_cert::spki::SubjectPublicKeyInfoRef;
use x509_cert::Certificate;

/// `rsaEncryption`.
const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// PEM files larger than this are not key files.
pub(crate) const MAX_KEY_FILE: u64 = 1 << 20;
/// The RSA sizes UEFI firmware verifies: 2048 is what every firmware
/// supports; some accept up to 4096.
const MIN_BITS: usize = 2048;
const MAX_BITS: usize = 4096;

/// An RSA public key: big-endian magnitudes without leading zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaPublic {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl RsaPublic {
    /// The modulus size in bits.
    pub fn bits(&self) -> usize {
        match self.n.first() {
            Some(b) => (self.n.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
            None => 0,
        }
    }

    /// The canonical DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        let rsa_public = tlv(0x30, &[integer(&self.n), integer(&self.e)].concat());
        let algorithm = tlv(
            0x30,
            &[tlv(0x06, RSA.as_bytes()), vec![0x05, 0x00]].concat(),
        );
        let bits = tlv(0x03, &[&[0u8][..], &rsa_public].concat());
        tlv(0x30, &[algorithm, bits].concat())
    }

    /// `sha256:<hex>` over [`RsaPublic::spki_der`].
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.spki_der())))
    }
}

/// A DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A non-negative DER INTEGER from a magnitude without leading zeros.
fn integer(magnitude: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(magnitude.len() + 1);
    if magnitude.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(magnitude);
    tlv(0x02, &content)
}

/// What one PEM block or DER blob holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyItem {
    /// A private key (PKCS#8 or PKCS#1) and its public half.
    Private(RsaPublic),
    /// A public key (SPKI or PKCS#1).
    Public(RsaPublic),
    /// An X.509 certificate, its DER and its key.
    Cert(RsaPublic, Vec<u8>),
    /// A key or certificate of another type, named for messages.
    Other(&'static str),
}

/// Every RSA key fingerprint in a file's bytes (PEM with any number of
/// blocks, or one DER object); none when it holds no RSA key.
pub fn fingerprints(data: &[u8]) -> Vec<String> {
    items(data)
        .into_iter()
        .filter_map(|item| match item {
            KeyItem::Private(k) | KeyItem::Public(k) | KeyItem::Cert(k, _) => Some(k.fingerprint()),
            KeyItem::Other(_) => None,
        })
        .collect()
}

/// The keys and certificates in a file's bytes: each PEM block, or the
/// whole file as DER. Unreadable blocks are left out.
pub fn items(data: &[u8]) -> Vec<KeyItem> {
    let text = std::str::from_utf8(data).unwrap_or("");
    if !text.contains("-----BEGIN ") {
        return from_der(data, None).into_iter().collect();
    }
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let Some(label_end) = block["-----BEGIN ".len()..].find("-----") else {
            break;
        };
        let label = &block["-----BEGIN ".len().."-----BEGIN ".len() + label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = block.find(&end_marker) else {
            break;
        };
        let pem = &block[..end + end_marker.len()];
        if let Ok((label, der)) = x509_cert::der::pem::decode_vec(pem.as_bytes()) {
            if let Some(item) = from_der(&der, Some(label)) {
                out.push(item);
            }
        }
        rest = &block[end + end_marker.len()..];
    }
    out
}

/// Decodes one DER object; `label` is the PEM label when there was one.
fn from_der(der: &[u8], label: Option<&str>) -> Option<KeyItem> {
    let try_all = label.is_none();
    let is = |l: &str| try_all || label == Some(l);
    if is("CERTIFICATE") {
        if let Ok(cert) = Certificate::from_der(der) {
            let spki = &cert.tbs_certificate.subject_public_key_info;
            let key = spki.subject_public_key.as_bytes().unwrap_or(&[]);
            return Some(match public_of(&spki.algorithm.oid, key) {
                Some(k) => KeyItem::Cert(k, der.to_vec()),
                None => KeyItem::Other(type_name(&spki.algorithm.oid)),
            });
        }
    }
    if is("PRIVATE KEY") {
        if let Some(item) = pkcs8(der) {
            return Some(item);
        }
    }
    if is("RSA PRIVATE KEY") {
        if let Some(k) = pkcs1_private(der) {
            return Some(KeyItem::Private(k));
        }
    }
    if is("PUBLIC KEY") {
        if let Ok(spki) = SubjectPublicKeyInfoRef::from_der(der) {
            let key = spki.subject_public_key.as_bytes().unwrap_or(&[]);
            return Some(match public_of(&spki.algorithm.oid, key) {
                Some(k) => KeyItem::Public(k),
                None => KeyItem::Other(type_name(&spki.algorithm.oid)),
            });
        }
    }
    if is("RSA PUBLIC KEY") {
        if let Some(k) = pkcs1_public(der) {
            return Some(KeyItem::Public(k));
        }
    }
    match label {
        Some("EC PRIVATE KEY") => Some(KeyItem::Other("EC")),
        Some("ENCRYPTED PRIVATE KEY") => Some(KeyItem::Other("encrypted")),
        _ => None,
    }
}

/// The key type of an algorithm, for "expected an RSA key, found ...".
fn type_name(oid: &ObjectIdentifier) -> &'static str {
    match oid.to_string().as_str() {
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        "1.2.840.10045.2.1" => "EC",
        "1.2.840.113549.1.1.10" => "RSA-PSS",
        _ => "a non-RSA",
    }
}

/// An RSA public key from an algorithm and its key bytes (PKCS#1).
fn public_of(oid: &ObjectIdentifier, key: &[u8]) -> Option<RsaPublic> {
    if *oid != RSA {
        return None;
    }
    pkcs1_public(key)
}

/// PKCS#8 `PrivateKeyInfo`: version, algorithm, privateKey OCTET STRING.
fn pkcs8(der: &[u8]) -> Option<KeyItem> {
    let mut r = SliceReader::new(der).ok()?;
    let (oid, private) = r
        .sequence(|r| {
            let _version: UintRef<'_> = r.decode()?;
            let (oid, _params) = r.sequence(|r| {
                let oid: ObjectIdentifier = r.decode()?;
                let params: Option<AnyRef<'_>> = r.decode()?;
                Ok((oid, params.is_some()))
            })?;
            let private: OctetStringRef<'_> = r.decode()?;
            // Attributes and the public key (PKCS#8 v2) may follow.
            let rest = r.remaining_len();
            r.read_slice(rest)?;
            Ok((oid, private.as_bytes()))
        })
        .ok()?;
    if oid != RSA {
        return Some(KeyItem::Other(type_name(&oid)));
    }
    pkcs1_private(private).map(KeyItem::Private)
}

/// PKCS#1 `RSAPrivateKey`: version, n, e, then the private values.
fn pkcs1_private(der: &[u8]) -> Option<RsaPublic> {
    let mut r = SliceReader::new(der).ok()?;
    let (n, e) = r
        .sequence(|r| {
            let _version: UintRef<'_> = r.decode()?;
            let n: UintRef<'_> = r.decode()?;
            let e: UintRef<'_> = r.decode()?;
            let rest = r.remaining_len();
            r.read_slice(rest)?;
            Ok((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
        })
        .ok()?;
    r.is_finished().then_some(RsaPublic { n, e })
}

/// PKCS#1 `RSAPublicKey`: n, e.
fn pkcs1_public(der: &[u8]) -> Option<RsaPublic> {
    let mut r = SliceReader::new(der).ok()?;
    let (n, e) = r
        .sequence(|r| {
            let n: UintRef<'_> = r.decode()?;
            let e: UintRef<'_> = r.decode()?;
            Ok((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
        })
        .ok()?;
    r.is_finished().then_some(RsaPublic { n, e })
}

/// Reads the one RSA private key in `path` (PKCS#8 or PKCS#1 PEM),
/// refusing a file group or others can read, and returns its public half.
/// `what` names the key in errors ("secure boot db key").
pub fn load_private(path: &Path, what: &str) -> Result<RsaPublic> {
    let data = slotsmith_sign::keyfile::read_bounded(path, MAX_KEY_FILE, true)
        .with_context(|| format!("loading {what} {}", shown_path(path)))?;
    let mut found = Vec::new();
    for item in items(&data) {
        match item {
            KeyItem::Private(k) => found.push(k),
            KeyItem::Other("encrypted") => bail!(
                "{what} {} is encrypted: sbsign cannot prompt for a passphrase in a build; \
                 use an unencrypted 0600 key or an HSM through db-engine",
                shown_path(path)
            ),
            KeyItem::Other(other) => bail!(
                "{what} {}: expected an RSA key, found {other}",
                shown_path(path)
            ),
            KeyItem::Public(_) | KeyItem::Cert(..) => {}
        }
    }
    let key = one(found, path, what, "RSA private key")?;
    check_size(&key, path, what)?;
    Ok(key)
}

/// Reads the one RSA certificate in `path` (PEM or DER): its key and DER.
pub fn load_cert(path: &Path, what: &str) -> Result<(RsaPublic, Vec<u8>)> {
    let data = slotsmith_sign::keyfile::read_bounded(path, MAX_KEY_FILE, false)
        .with_context(|| format!("loading {what} {}", shown_path(path)))?;
    let mut found = Vec::new();
    for item in items(&data) {
        match item {
            KeyItem::Cert(k, der) => found.push((k, der)),
            KeyItem::Other(other) => bail!(
                "{what} {}: expected an RSA certificate, found a certificate or key of type {other}",
                shown_path(path)
            ),
            KeyItem::Private(_) => bail!(
                "{what} {} holds a private key: give the certificate",
                shown_path(path)
            ),
            KeyItem::Public(_) => {}
        }
    }
    let (key, der) = one(found, path, what, "X.509 certificate")?;
    check_size(&key, path, what)?;
    Ok((key, der))
}

fn one<T>(mut found: Vec<T>, path: &Path, what: &str, kind: &str) -> Result<T> {
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("{what} {}: no {kind} found", shown_path(path)),
        n => bail!(
            "{what} {}: expected one {kind}, found {n}",
            shown_path(path)
        ),
    }
}

fn check_size(key: &RsaPublic, path: &Path, what: &str) -> Result<()> {
    let bits = key.bits();
    if !(MIN_BITS..=MAX_BITS).contains(&bits) {
        bail!(
            "{what} {}: an RSA key of {bits} bits; UEFI firmware needs {MIN_BITS} to {MAX_BITS} \
             bits (2048 is the size every firmware supports)",
            shown_path(path)
        );
    }
    Ok(())
}

/// Encodes a certificate's DER as PEM (64-column lines, LF), the one
/// canonical text form the build writes.
pub fn cert_pem(der: &[u8]) -> Result<String> {
    x509_cert::der::pem::encode_string("CERTIFICATE", x509_cert::der::pem::LineEnding::LF, der)
        .map_err(|e| anyhow::anyhow!("encoding a certificate as PEM: {e}"))
}
