//! Key and certificate files on disk: creation, permission checks, PEM.
//!
//! The update key signs every `.swu` a fleet will install, so its file is
//! handled the way OpenSSH handles private keys (and the way the boot-key
//! code in `slotsmith-sign` does): born 0600 through `open(2)`'s mode
//! argument, never overwritten, and refused on load when group or others
//! can access it. Certificates are public and only need bounded reads and a
//! strict PEM parser, because a certificate is what decides whom a device
//! trusts and must not be accepted "approximately".

use anyhow::{anyhow, bail, ensure, Context, Result};
use der::{Decode, Encode};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use p256::SecretKey;
use slotsmith_sign::algorithm::{mismatch, Algorithm};
use slotsmith_sign::keyfile::read_bounded;
pub(crate) use slotsmith_sign::keyfile::write_new;
use std::fs::{self, File};

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use x509_cert::Certificate;
use zeroize::Zeroizing;

/// Mode of a freshly generated private key: owner read/write only.
pub(crate) const PRIVATE_MODE: u32 = 0o600;
/// Mode of a freshly generated certificate: it is public.
pub(crate) const PUBLIC_MODE: u32 = 0o644;
/// Mode of an output directory we create ourselves.
const DIR_MODE: u32 = 0o700;
/// Key files are a few hundred bytes. The bound keeps a mistaken path (a
/// disk image, /dev/zero) from being read into memory.
const MAX_KEY_FILE: u64 = 16 * 1024;
/// A certificate bundle of a few dozen certificates fits comfortably.
const MAX_CERT_FILE: u64 = 1024 * 1024;

/// Names become file names; keep them to a conservative alphabet so a name
/// can never escape `out_dir` or hide as a dotfile.
pub(crate) fn check_file_name(name: &str) -> Result<()> {
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

/// Creates `dir` (mode 0700 if new, including parents).
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

/// Fails if anything (even a dangling symlink) exists at `path`. Only for a
/// clean early error; `write_new`'s O_EXCL is the authoritative check.
pub(crate) fn refuse_existing(path: &Path) -> Result<()> {
    if path.symlink_metadata().is_ok() {
        bail!(
            "{} already exists: refusing to overwrite a key or certificate (move it away first)",
            path.display()
        );
    }
    Ok(())
}

/// Makes new directory entries durable: losing a freshly generated update
/// key to a power cut right after it was reported would be bad.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

/// PKCS#8 PEM of a P-256 key (what `openssl genpkey -algorithm EC
/// -pkeyopt ec_paramgen_curve:P-256` writes), in a zeroizing buffer.
pub(crate) fn private_key_pem(key: &SecretKey) -> Result<Zeroizing<String>> {
    key.to_pkcs8_pem(LineEnding::LF)
        .map_err(|err| anyhow!("cannot encode the private key as PKCS#8: {err}"))
}

/// Loads a P-256 private key from a PEM file after the ssh-style permission
/// check.
///
/// PKCS#8 (`BEGIN PRIVATE KEY`) is the format we write; SEC1 (`BEGIN EC
/// PRIVATE KEY`) is accepted as well because that is what
/// `openssl ecparam -genkey`, the command in SWUpdate's own documentation,
/// writes.
pub(crate) fn load_private_key(path: &Path) -> Result<SecretKey> {
    let data = read_bounded(path, MAX_KEY_FILE, true)?;
    parse_private_key(&data, path)
}

/// Parses the bytes of an update key file; `path` only names it in errors.
/// Both PKCS#8 and SEC1 carry the curve, so a P-384, Ed25519 or RSA key is
/// refused by what it is ("expected an ECDSA P-256 key, found Ed25519"),
/// read from the key's own algorithm identifier.
pub fn parse_private_key(data: &[u8], path: &Path) -> Result<SecretKey> {
    const HINT: &str =
        "create one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`";
    let p = path.display();
    let text =
        std::str::from_utf8(data).map_err(|_| anyhow!("{p} is not a PEM file (not UTF-8)"))?;
    let label = first_pem_label(text);
    if let Some(found) = Algorithm::of_legacy_label(label) {
        return Err(mismatch(path, &Algorithm::EcdsaP256, &found, HINT));
    }
    let sec1 = match label {
        "PRIVATE KEY" => false,
        "EC PRIVATE KEY" => true,
        "ENCRYPTED PRIVATE KEY" => bail!(
            "{p} is an encrypted private key, which is not supported: keep the key \
             unencrypted with mode 0600, or sign with an external signer (HSM)"
        ),
        "CERTIFICATE" => bail!("{p} is a certificate, but a private key was expected"),
        "PUBLIC KEY" => bail!("{p} is a public key, but a private key was expected"),
        "" => bail!("{p} is not a PEM file: expected a \"PRIVATE KEY\" block"),
        other => bail!(
            "{p}: expected a PEM \"PRIVATE KEY\" block, found \"{}\"",
            slotsmith_yaml::escape::shown(other)
        ),
    };
    let (_, der) = der::SecretDocument::from_pem(text)
        .map_err(|err| anyhow!("cannot load {p}: invalid PEM ({err})"))?;
    let found = if sec1 {
        Algorithm::of_sec1(der.as_bytes())
    } else {
        Algorithm::of_pkcs8(der.as_bytes())
    }
    .with_context(|| format!("cannot load {p}"))?;
    if found != Algorithm::EcdsaP256 {
        return Err(mismatch(path, &Algorithm::EcdsaP256, &found, HINT));
    }
    let key = if sec1 {
        SecretKey::from_sec1_der(der.as_bytes()).map_err(|e| e.to_string())
    } else {
        SecretKey::from_pkcs8_der(der.as_bytes()).map_err(|e| e.to_string())
    };
    key.map_err(|err| {
        anyhow!("cannot load {p}: not a valid ECDSA P-256 private key ({err}); {HINT}")
    })
}

/// One certificate with the exact DER bytes it was read from.
pub(crate) struct LoadedCert {
    pub(crate) cert: Certificate,
    pub(crate) der: Vec<u8>,
}

/// Parses one DER certificate and insists that it re-encodes to the same
/// bytes.
///
/// Security point: the signature on a certificate covers its encoding, and
/// we embed and compare certificates by their bytes. A lenient (BER) input
/// that the parser normalised would be a different certificate from the
/// one the signature covers, so such input is refused rather than guessed.
pub(crate) fn parse_cert_der(der: &[u8]) -> Result<LoadedCert> {
    let cert = Certificate::from_der(der).map_err(|err| anyhow!("{err}"))?;
    let again = cert.to_der().map_err(|err| anyhow!("{err}"))?;
    ensure!(again == der, "the certificate is not in canonical DER");
    Ok(LoadedCert {
        cert,
        der: der.to_vec(),
    })
}

/// Loads every `CERTIFICATE` block of a PEM file, in order. Other blocks
/// (a private key pasted into the same file, say) are an error: a file that
/// decides trust should contain exactly what it claims to.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<LoadedCert>> {
    let data = read_bounded(path, MAX_CERT_FILE, false)?;
    parse_certs(&data, path)
}

/// The parser behind [`load_certs`], on the file's bytes; `path` only names
/// the file in errors.
pub(crate) fn parse_certs(data: &[u8], path: &Path) -> Result<Vec<LoadedCert>> {
    let p = path.display();
    let text =
        std::str::from_utf8(data).map_err(|_| anyhow!("{p} is not a PEM file (not UTF-8)"))?;
    let blocks = pem_blocks(text).with_context(|| format!("{p} is not a valid PEM file"))?;
    ensure!(!blocks.is_empty(), "{p} contains no PEM certificate");
    let mut certs = Vec::with_capacity(blocks.len());
    for (index, (label, der)) in blocks.into_iter().enumerate() {
        let n = index + 1;
        if label == "PUBLIC KEY" {
            // Name what the key is, so "I gave it the public key of the
            // right key" and "I gave it the wrong key" read differently.
            let found = Algorithm::of_spki(&der)
                .map(|alg| alg.to_string())
                .unwrap_or_else(|_| "unreadable".into());
            bail!(
                "{p}: PEM block {n} is a public key ({found}), but an X.509 certificate \
                 was expected (make one with `cargo xtask keys generate --role update`)"
            );
        }
        ensure!(
            label == "CERTIFICATE",
            "{p}: PEM block {n} is \"{}\", but only certificates were expected",
            slotsmith_yaml::escape::shown(&label)
        );
        let cert = parse_cert_der(&der)
            .with_context(|| format!("{p}: PEM block {n} is not an X.509 certificate"))?;
        certs.push(cert);
    }
    Ok(certs)
}

/// Loads a PEM file that must hold exactly one certificate.
pub(crate) fn load_single_cert(path: &Path) -> Result<LoadedCert> {
    let mut certs = load_certs(path)?;
    ensure!(
        certs.len() == 1,
        "{} holds {} certificates; expected exactly one (the signer's)",
        path.display(),
        certs.len()
    );
    certs
        .pop()
        .ok_or_else(|| anyhow!("{} contains no PEM certificate", path.display()))
}

/// Splits PEM text into (label, DER) blocks. Text outside the armor (as
/// `openssl x509 -text` leaves before a certificate) is ignored, as openssl
/// does.
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>> {
    const BEGIN: &str = "-----BEGIN ";
    const END: &str = "-----END ";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let block_and_more = &rest[start..];
        let end = block_and_more
            .find(END)
            .ok_or_else(|| anyhow!("a BEGIN line has no END line"))?;
        // The END line runs to the next "-----" after its label.
        let after_end = &block_and_more[end + END.len()..];
        let close = after_end
            .find("-----")
            .ok_or_else(|| anyhow!("an END line is not terminated"))?;
        let block_len = end + END.len() + close + "-----".len();
        let block = &block_and_more[..block_len];
        let (label, der) =
            der::pem::decode_vec(block.as_bytes()).map_err(|err| anyhow!("{err}"))?;
        blocks.push((label.to_string(), der));
        rest = &block_and_more[block_len..];
    }
    Ok(blocks)
}

/// The label of the first PEM block, or "" if there is none.
fn first_pem_label(text: &str) -> &str {
    text.lines()
        .find_map(|line| {
            line.trim_end()
                .strip_prefix("-----BEGIN ")
                .and_then(|rest| rest.strip_suffix("-----"))
        })
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use slotsmith_sign::keyfile::check_private_mode;

    #[test]
    fn pem_blocks_skips_text_and_splits_bundles() {
        let text = "Certificate:\n  junk\n-----BEGIN A-----\nAAEC\n-----END A-----\n\
                    between\n-----BEGIN B-----\nAw==\n-----END B-----\n";
        let blocks = pem_blocks(text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0], ("A".to_string(), vec![0, 1, 2]));
        assert_eq!(blocks[1], ("B".to_string(), vec![3]));
    }

    #[test]
    fn pem_blocks_rejects_truncated_input() {
        assert!(pem_blocks("-----BEGIN A-----\nAAEC\n").is_err());
        assert!(pem_blocks("-----BEGIN A-----\nAAEC\n-----END A").is_err());
        assert!(pem_blocks("-----BEGIN A-----\n!!!!\n-----END A-----\n").is_err());
        assert!(pem_blocks("").unwrap().is_empty());
    }

    #[test]
    fn first_label_finds_the_armor() {
        assert_eq!(
            first_pem_label("x\n-----BEGIN EC PRIVATE KEY-----\n"),
            "EC PRIVATE KEY"
        );
        assert_eq!(first_pem_label("no pem here"), "");
    }

    #[test]
    fn mode_check_matches_ssh() {
        let p = Path::new("update.key.pem");
        assert!(check_private_mode(p, 0o100600).is_ok());
        assert!(check_private_mode(p, 0o100400).is_ok());
        let err = check_private_mode(p, 0o100644).unwrap_err().to_string();
        assert!(
            err.starts_with("permissions 0644 for update.key.pem are too open: "),
            "{err}"
        );
        assert!(check_private_mode(p, 0o100601).is_err());
    }

    #[test]
    fn file_names_are_conservative() {
        assert!(check_file_name("update-2025_a.b").is_ok());
        for bad in ["", ".hidden", "../x", "a/b", "a b", "é"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }
}
