//! Signing for slotsmith: boot keys, signers and the signed boot manifest.
//!
//! Devices built by slotsmith refuse a kernel or root filesystem that the
//! release key did not sign (a regulatory requirement for the medical
//! devices this tool targets). This crate is everything on the signing
//! side of that promise, kept small and free of I/O beyond key files so
//! that it can be reviewed on its own:
//!
//! - [`algorithm`]: naming the algorithm of a wrong key ("expected an
//!   Ed25519 key, found RSA"), shared with the update-key crate;
//! - [`keys`]: Ed25519 key files in the PKCS#8/SPKI PEM forms openssl uses,
//!   with ssh-style permission checks on private keys;
//! - [`signer`]: the [`Signer`] abstraction (in-process key here; external
//!   HSM/command signers live in the crate that runs external tools) and
//!   strict signature checking;
//! - [`manifest`]: the canonical per-slot boot manifest, and signing and
//!   verifying it.
//!
//! Everything uses pure Ed25519 (RFC 8032) over exact bytes, so stock
//! `openssl pkeyutl -verify -rawin` is an independent verifier.

pub mod algorithm;
pub mod keyfile;
pub mod keys;
pub mod manifest;
pub mod signer;

pub use keys::{
    fingerprint, generate, load_signing_key, load_verifying_key, parse_signing_key,
    parse_verifying_key, public_key_pem,
};
pub use manifest::{sign_manifest, verify_manifest, FileRef, Manifest};
pub use signer::{check_signature, KeySigner, Signer};
