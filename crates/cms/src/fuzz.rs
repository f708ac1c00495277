//! The entry point of the fuzz target `key_pem`: every parser of key and
//! certificate files, both roles, and the claimed signer of a detached
//! CMS signature, on the same bytes. Shared by the
//! cargo-fuzz target (fuzz/fuzz_targets/key_pem.rs) and its stable twin
//! (crates/cms/tests/fuzz.rs). Invariants: no panic (the harness catches
//! one), errors free of raw control and format characters, and what parses
//! is consistent: a private key's fingerprint is `sha256:` and 64 hex
//! digits.

use std::path::Path;

/// Runs the boot-key parsers (Ed25519 PKCS#8 and SPKI, PEM or DER), the
/// update-key parser (P-256 PKCS#8 or SEC1 PEM) and the certificate and
/// fingerprint reader on `data`.
pub fn key_pem(data: &[u8]) {
    let path = Path::new("keys/fuzz.pem");
    match slotsmith_sign::parse_signing_key(data, path) {
        Ok(key) => check_fingerprint(&slotsmith_sign::fingerprint(&key.verifying_key())),
        Err(err) => assert_escaped(&err),
    }
    match slotsmith_sign::parse_verifying_key(data, path) {
        Ok(key) => check_fingerprint(&slotsmith_sign::fingerprint(&key)),
        Err(err) => assert_escaped(&err),
    }
    match crate::parse_private_key(data, path) {
        Ok(key) => check_fingerprint(&crate::fingerprint(&key.public_key())),
        Err(err) => assert_escaped(&err),
    }
    match crate::file_fingerprints(data, path) {
        Ok(fps) => fps.iter().for_each(|f| check_fingerprint(f)),
        Err(err) => assert_escaped(&err),
    }
    // The claimed signer of a detached signature (the device's audit
    // trail reads it from every .swu it is given).
    match crate::claimed_signer_fingerprint(data) {
        Ok(fp) => check_fingerprint(&fp),
        Err(err) => assert_escaped(&err),
    }
}

fn check_fingerprint(fp: &str) {
    let hex = fp.strip_prefix("sha256:").expect("a sha256: fingerprint");
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{fp}"
    );
}

fn assert_escaped(err: &anyhow::Error) {
    let text = format!("{err:#}");
    assert!(
        !text
            .chars()
            .any(|c| c != '\\' && slotsmith_yaml::escape::needs_escape(c)),
        "unescaped error: {text:?}"
    );
}
