//! Ed25519 boot keys on disk, in the formats openssl reads and writes.
//!
//! The release key signs every boot manifest; devices refuse a kernel or
//! rootfs it did not sign. Keys are therefore stored in the most boring,
//! interoperable form there is, so that a release engineer can inspect,
//! back up or replace them with stock tools (verified-boot.md section 3):
//!
//! - private key: PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`), the DER
//!   being `302e020100300506032b657004220420 || seed32`, byte for byte what
//!   `openssl genpkey -algorithm ed25519` writes;
//! - public key: SPKI PEM (`-----BEGIN PUBLIC KEY-----`), the DER being
//!   `302a300506032b6570032100 || pk32`, byte for byte what
//!   `openssl pkey -pubout` writes.
//!
//! Private keys get the same treatment OpenSSH gives them: files are born
//! 0600 (the mode is passed to `open(2)`, so there is never a moment where
//! the key is readable by others), an existing key is never overwritten,
//! and loading refuses a key that group or others can access. Buffers that
//! held key material are zeroized when dropped (best effort: Rust may have
//! made copies on the stack that we cannot reach).

use anyhow::{anyhow, bail, ensure, Context, Result};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, Document, EncodePrivateKey, KeypairBytes, SecretDocument,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::OsRng;
use sha2::{Digest, Sha256};
use std::fs::{self, File};

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

use crate::algorithm::{mismatch, Algorithm};

/// Mode of a freshly generated private key: owner read/write only.
const PRIVATE_MODE: u32 = 0o600;
/// Mode of a freshly generated public key: world-readable, it is public.
const PUBLIC_MODE: u32 = 0o644;
/// Mode of a key directory we create ourselves.
const KEY_DIR_MODE: u32 = 0o700;
/// Key files are a few hundred bytes; anything larger is not a key, and
/// the bound keeps a mistaken path (a disk image, /dev/zero) from being
/// read into memory.
const MAX_KEY_FILE: u64 = 16 * 1024;
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the raw
/// 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Generates a new Ed25519 key pair from the OS RNG and writes
/// `<out_dir>/<name>.key.pem` (PKCS#8, mode 0600) and
/// `<out_dir>/<name>.pub.pem` (SPKI, mode 0644 before umask).
///
/// `out_dir` is created with mode 0700 if it does not exist. Fails without
/// touching anything if either file already exists: overwriting a release
/// key would silently brick every device that trusts the old one.
pub fn generate(out_dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    check_key_name(name)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(KEY_DIR_MODE)
        .create(out_dir)
        .with_context(|| format!("cannot create key directory {}", out_dir.display()))?;
    let private_path = out_dir.join(format!("{name}.key.pem"));
    let public_path = out_dir.join(format!("{name}.pub.pem"));
    // Check both up front so that an existing public key is reported
    // before a private key is written next to it. `create_new` below is
    // the authoritative check (this one is only for a clean error).
    for path in [&private_path, &public_path] {
        if path.symlink_metadata().is_ok() {
            bail!(
                "{} already exists: refusing to overwrite a key (move it away first)",
                path.display()
            );
        }
    }

    let key = SigningKey::generate(&mut OsRng);
    let private_pem = private_key_pem(&key)?;
    let public_pem = public_key_pem(&key.verifying_key());

    crate::keyfile::write_new(&private_path, PRIVATE_MODE, private_pem.as_bytes())?;
    if let Err(err) = crate::keyfile::write_new(&public_path, PUBLIC_MODE, public_pem.as_bytes()) {
        // Do not leave half a key pair behind: a private key without its
        // public half invites someone to regenerate the public half from
        // the wrong key. `write_new` created the private file exclusively,
        // so the file we remove is the one we just wrote.
        let _ = fs::remove_file(&private_path);
        return Err(err);
    }
    // Make the new directory entries durable: losing a release key to a
    // power cut right after "generated" was printed would be bad.
    File::open(out_dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot sync key directory {}", out_dir.display()))?;
    Ok((private_path, public_path))
}

/// Loads an Ed25519 private key from a PKCS#8 file (PEM, or DER as written
/// by `openssl pkey -outform DER`).
///
/// Before parsing anything it checks the file's permissions the way ssh
/// does: if group or others have any access (`mode & 0o077 != 0`) the key
/// is refused. Symlinks are followed, as ssh does, because secret stores
/// (Kubernetes secret volumes, systemd credentials) commonly expose keys
/// through symlinks; the mode that is checked is the mode of the file the
/// link points to, taken from the open file descriptor, so the check and
/// the read see the same inode. Unlike ssh, the owner is not compared with
/// the current user: a 0600 key owned by someone else is unreadable anyway
/// unless we are root, and root reading a properly protected key is fine.
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let data = read_private_file(path)?;
    parse_signing_key(&data, path)
}

/// Parses the bytes of an Ed25519 private key file (PKCS#8 PEM or DER);
/// `path` only names the file in errors. This is the parser
/// [`load_signing_key`] uses, without the file-system checks, so it can be
/// fuzzed on its own (target `key_pem`).
///
/// A key of another type is reported by its algorithm ("expected an
/// Ed25519 key, found RSA"), from the identifier inside the key.
pub fn parse_signing_key(data: &[u8], path: &Path) -> Result<SigningKey> {
    const HINT: &str = "create one with `openssl genpkey -algorithm ed25519`";
    let der = if data.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(data)
            .map_err(|_| anyhow!("{} is not a valid PEM file (not UTF-8)", path.display()))?;
        legacy_pem(path, text, HINT)?;
        check_pem_label(path, text, "PRIVATE KEY")?;
        let (_, doc) = SecretDocument::from_pem(text)
            .map_err(|err| anyhow!("cannot load {}: invalid PEM ({err})", path.display()))?;
        doc
    } else {
        SecretDocument::try_from(data).map_err(|err| {
            anyhow!(
                "cannot load {}: neither PEM nor a DER PKCS#8 private key ({err}); {HINT}",
                path.display()
            )
        })?
    };
    let found = Algorithm::of_private_der(der.as_bytes())
        .with_context(|| format!("cannot load {}", path.display()))?;
    if found != Algorithm::Ed25519 {
        return Err(mismatch(path, &Algorithm::Ed25519, &found, HINT));
    }
    // The pkcs8 error is terse ("ASN.1 error"); say what we expected.
    SigningKey::from_pkcs8_der(der.as_bytes()).map_err(|err| {
        anyhow!(
            "cannot load {}: not a valid Ed25519 PKCS#8 private key ({err}); {HINT}",
            path.display()
        )
    })
}

/// Loads an Ed25519 public key from an SPKI file (PEM, or DER as written by
/// `openssl pkey -pubout -outform DER`).
///
/// Small-order ("weak") points are refused: any signature verifies against
/// them under lax verification, so such a key can only be a mistake or an
/// attack.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey> {
    let data = crate::keyfile::read_bounded(path, MAX_KEY_FILE, false)?;
    parse_verifying_key(&data, path)
}

/// Parses the bytes of an Ed25519 public key file (SPKI PEM or DER); `path`
/// only names the file in errors. The parser behind [`load_verifying_key`],
/// fuzzed on its own (target `key_pem`).
pub fn parse_verifying_key(data: &[u8], path: &Path) -> Result<VerifyingKey> {
    const HINT: &str = "derive one with `openssl pkey -in KEY -pubout`";
    let der = if data.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(data)
            .map_err(|_| anyhow!("{} is not a valid PEM file (not UTF-8)", path.display()))?;
        legacy_pem(path, text, HINT)?;
        check_pem_label(path, text, "PUBLIC KEY")?;
        let (_, doc) = Document::from_pem(text)
            .map_err(|err| anyhow!("cannot load {}: invalid PEM ({err})", path.display()))?;
        doc
    } else {
        Document::try_from(data).map_err(|err| {
            anyhow!(
                "cannot load {}: neither PEM nor a DER SPKI public key ({err}); {HINT}",
                path.display()
            )
        })?
    };
    let found = Algorithm::of_public_der(der.as_bytes())
        .with_context(|| format!("cannot load {}", path.display()))?;
    if found != Algorithm::Ed25519 {
        return Err(mismatch(path, &Algorithm::Ed25519, &found, HINT));
    }
    let key = VerifyingKey::from_public_key_der(der.as_bytes()).map_err(|err| {
        anyhow!(
            "cannot load {}: not a valid Ed25519 SPKI public key ({err}); {HINT}",
            path.display()
        )
    })?;
    ensure!(
        !key.is_weak(),
        "{} holds a small-order (weak) Ed25519 point, which no real key has: refusing it",
        path.display()
    );
    Ok(key)
}

/// The SPKI PEM encoding of `key`, byte for byte what
/// `openssl pkey -pubout` writes: a 60-character base64 line between the
/// armor lines, LF line endings, trailing newline.
pub fn public_key_pem(key: &VerifyingKey) -> String {
    // Built by hand rather than through `to_public_key_pem` because the
    // encoding is fixed (12-byte prefix plus 32 key bytes) and this way
    // the function cannot fail, so it can return a plain String.
    let mut der = [0u8; 44];
    der[..12].copy_from_slice(&SPKI_PREFIX);
    der[12..].copy_from_slice(key.as_bytes());
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64(&der)
    )
}

/// A short, stable identifier of a public key for logs and error messages:
/// `sha256:<hex of sha256(raw 32-byte key)>`.
///
/// It hashes the raw key rather than the SPKI DER so that the value does
/// not depend on the container format the key came in.
pub fn fingerprint(key: &VerifyingKey) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// PKCS#8 v1 PEM of `key`: the seed only, without the optional embedded
/// public key of PKCS#8 v2, because that is what openssl writes and what
/// every consumer understands.
fn private_key_pem(key: &SigningKey) -> Result<Zeroizing<String>> {
    // KeypairBytes zeroizes its secret on drop.
    let pair = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    pair.to_pkcs8_pem(LineEnding::LF)
        .map_err(|err| anyhow!("cannot encode the private key as PKCS#8: {err}"))
}

/// Key names become file names; keep them to a conservative alphabet so a
/// name can never escape `out_dir` or hide as a dotfile.
fn check_key_name(name: &str) -> Result<()> {
    ensure!(!name.is_empty(), "key name is empty");
    ensure!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
        "invalid key name {name:?}: use only letters, digits, '-', '_' and '.'"
    );
    ensure!(
        !name.starts_with('.'),
        "invalid key name {name:?}: it must not start with '.'"
    );
    Ok(())
}

fn read_private_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    crate::keyfile::read_bounded(path, MAX_KEY_FILE, true)
}

/// Refuses the legacy, algorithm-specific PEM encodings (PKCS#1 `RSA
/// PRIVATE KEY`, SEC1 `EC PRIVATE KEY`, ...) by the algorithm they hold:
/// none of them can be an Ed25519 key.
fn legacy_pem(path: &Path, text: &str, hint: &str) -> Result<()> {
    let label = pem_label(text);
    if let Some(found) = Algorithm::of_legacy_label(label) {
        return Err(mismatch(path, &Algorithm::Ed25519, &found, hint));
    }
    if label == "EC PRIVATE KEY" {
        let (_, doc) = SecretDocument::from_pem(text)
            .map_err(|err| anyhow!("cannot load {}: invalid PEM ({err})", path.display()))?;
        let found = Algorithm::of_sec1(doc.as_bytes())
            .with_context(|| format!("cannot load {}", path.display()))?;
        return Err(mismatch(path, &Algorithm::Ed25519, &found, hint));
    }
    Ok(())
}

/// The label of the first line's PEM armor, or "" if it is not one.
fn pem_label(text: &str) -> &str {
    text.lines()
        .next()
        .and_then(|first| first.trim_end().strip_prefix("-----BEGIN "))
        .and_then(|rest| rest.strip_suffix("-----"))
        .unwrap_or("")
}

/// Turns the most common wrong-file mistakes into specific errors before
/// the PKCS#8 parser reports a generic one.
fn check_pem_label(path: &Path, text: &str, expected: &str) -> Result<()> {
    let first = text.lines().next().unwrap_or("");
    let label = pem_label(text);
    if label == expected {
        return Ok(());
    }
    let p = path.display();
    match label {
        "PUBLIC KEY" => bail!("{p} is a public key, but a private key was expected"),
        "PRIVATE KEY" => bail!(
            "{p} is a private key, but a public key was expected \
             (never ship the private key; use the .pub.pem file)"
        ),
        "ENCRYPTED PRIVATE KEY" => bail!(
            "{p} is an encrypted private key, which is not supported: keep the key \
             unencrypted with mode 0600, or sign with an external signer"
        ),
        "OPENSSH PRIVATE KEY" => bail!(
            "{p} is an OpenSSH private key; convert it to PKCS#8 with \
             `ssh-keygen -p -m PKCS8 -f {p}`"
        ),
        "CERTIFICATE" => bail!(
            "{p} is an X.509 certificate, but an Ed25519 {} key was expected",
            if expected == "PUBLIC KEY" {
                "public"
            } else {
                "private"
            }
        ),
        _ => bail!(
            "{p}: expected a PEM \"{expected}\" block, found \"{}\"",
            // The line is untrusted and must not reach a terminal raw.
            slotsmith_yaml::escape::shown(&first.chars().take(80).collect::<String>())
        ),
    }
}

/// Standard base64 with padding (RFC 4648), as PEM uses. Only ever applied
/// to public data here.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::spki::EncodePublicKey;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "input {input:?}");
        }
    }

    #[test]
    fn public_key_pem_matches_the_spki_encoder() {
        let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
        let want = key.to_public_key_pem(LineEnding::LF).unwrap();
        assert_eq!(public_key_pem(&key), want);
    }

    #[test]
    fn private_pem_is_pkcs8_v1_with_the_openssl_prefix() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let pem = private_key_pem(&key).unwrap();
        let (label, doc) = ed25519_dalek::pkcs8::SecretDocument::from_pem(&pem).unwrap();
        assert_eq!(label, "PRIVATE KEY");
        let mut want = hex::decode("302e020100300506032b657004220420").unwrap();
        want.extend_from_slice(&[9; 32]);
        assert_eq!(doc.as_bytes(), &want[..]);
    }

    #[test]
    fn fingerprint_hashes_the_raw_key() {
        let key = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let fp = fingerprint(&key);
        assert_eq!(
            fp,
            format!("sha256:{}", hex::encode(Sha256::digest(key.to_bytes())))
        );
        assert_eq!(fp.len(), "sha256:".len() + 64);
    }

    #[test]
    fn key_names_are_restricted() {
        for bad in ["", "../boot", "a/b", ".hidden", "boot key", "bööt"] {
            assert!(check_key_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["boot", "release-2025.1", "dev_key"] {
            check_key_name(good).unwrap();
        }
    }
}
