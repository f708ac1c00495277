//! Every key and certificate file parser of both key roles (Ed25519 boot
//! keys in PKCS#8/SPKI PEM or DER, ECDSA P-256 update keys in PKCS#8/SEC1
//! PEM, X.509 certificates) on arbitrary bytes; see
//! `slotsmith_cms::fuzz::key_pem`. The stable twin is crates/cms/tests/fuzz.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotsmith_cms::fuzz::key_pem(data));
