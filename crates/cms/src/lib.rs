//! Update signing for slotsmith: ECDSA P-256 keys, X.509 certificates and
//! detached CMS SignedData, in the exact shape SWUpdate verifies.
//!
//! A `.swu` update is trusted by the device only through
//! `sw-description.sig`, a DER CMS SignedData over the bytes of
//! `sw-description`. The signature is made with ECDSA P-256 because
//! SWUpdate's CMS verification (OpenSSL 3.0 in Debian's 2022.12 build)
//! cannot verify Ed25519 CMS signatures; the boot chain's Ed25519 keys
//! live in `slotsmith-sign` and are unrelated to these.
//!
//! The crate is pure Rust (RustCrypto) and runs no external tools, so
//! signing works on build hosts without openssl and produces reproducible
//! bytes; its tests use openssl and swupdate as independent verifiers.
//!
//! - [`generate_update_key`] / [`generate_ca`]: key and certificate files
//!   (module `cert`), with the extensions SWUpdate's default certificate
//!   purpose needs;
//! - [`UpdateSigner`]: sign in-process; [`signed_attrs_der`] and
//!   [`assemble`]: sign with an external key (HSM) (module `sign`);
//! - [`fingerprint()`], [`file_fingerprints`]: the `sha256:` public-key
//!   fingerprint that recognises a development key wherever it lives;
//! - [`verify_detached`]: check a signature offline, as SWUpdate would
//!   (module `verify`).

mod cert;
mod files;
mod fingerprint;
pub mod fuzz;
mod oids;
mod sign;
mod verify;

pub use cert::{generate_ca, generate_update_key};
pub use files::parse_private_key;
pub use fingerprint::{cert_fingerprint, file_fingerprints, fingerprint};
pub use sign::{assemble, signed_attrs_der, UpdateSigner};
pub use verify::{claimed_signer_fingerprint, verify_detached};
