//! Who signs, and how a signature is checked.
//!
//! Signing is behind the [`Signer`] trait so that the release key does not
//! have to live on the build machine: besides the in-process [`KeySigner`]
//! here, the crate that owns external tools implements a signer that runs
//! an HSM or signing-service command. Whatever produced a signature, it is
//! checked with [`check_signature`] against the expected public key before
//! it is accepted, so a misconfigured or faulty signer can never put a
//! signature on a device image that the device would then refuse (or, for
//! the wrong key, accept from the wrong party).
//!
//! Signatures are pure Ed25519 (RFC 8032, no prehash) over the exact
//! message bytes, so `openssl pkeyutl -verify -rawin` checks them without
//! glue (verified-boot.md section 3).

use crate::keys::fingerprint;
use anyhow::{anyhow, ensure, Context, Result};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey, SIGNATURE_LENGTH};

/// Something that can produce Ed25519 signatures for one key.
pub trait Signer {
    /// The public half of the key this signer signs with.
    fn public_key(&self) -> VerifyingKey;
    /// A pure Ed25519 signature (R || S, 64 bytes) over exactly `msg`.
    fn sign(&self, msg: &[u8]) -> Result<[u8; 64]>;
    /// A human-readable description for logs, e.g. which key or command.
    /// Must not contain secrets.
    fn describe(&self) -> String;
}

/// Signs in-process with a private key held in memory (zeroized on drop by
/// ed25519-dalek).
pub struct KeySigner {
    key: SigningKey,
}

impl KeySigner {
    /// Wraps a signing key, typically from [`crate::keys::load_signing_key`].
    pub fn new(key: SigningKey) -> Self {
        KeySigner { key }
    }
}

impl std::fmt::Debug for KeySigner {
    // Written by hand so that no future field can leak key material into a
    // log line; only the public fingerprint is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySigner")
            .field("public_key", &fingerprint(&self.key.verifying_key()))
            .finish_non_exhaustive()
    }
}

impl Signer for KeySigner {
    fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    fn sign(&self, msg: &[u8]) -> Result<[u8; 64]> {
        let sig = ed25519_dalek::Signer::sign(&self.key, msg).to_bytes();
        // Verify before releasing. Deterministic Ed25519 leaks the private
        // key if a fault (bit flip in RAM or CPU) corrupts a signature and
        // the faulty signature is published next to a good one over the
        // same message; checking our own output stops that, for the cost of
        // one verification per release.
        check_signature(&self.key.verifying_key(), msg, &sig)
            .context("in-process signature failed its self-check: refusing to release it")?;
        Ok(sig)
    }

    fn describe(&self) -> String {
        format!(
            "in-process Ed25519 key {}",
            fingerprint(&self.key.verifying_key())
        )
    }
}

/// Checks that `sig` is a valid pure Ed25519 signature over `msg` by
/// `pubkey`.
///
/// Uses `verify_strict`: besides the RFC 8032 checks (canonical S), it
/// rejects small-order public keys and small-order R, which lax
/// verification accepts and which would let one signature verify for
/// several keys or messages. `sig` must be exactly 64 bytes; a truncated
/// or padded signature is an error, never silently trimmed.
pub fn check_signature(pubkey: &VerifyingKey, msg: &[u8], sig: &[u8]) -> Result<()> {
    let sig: &[u8; SIGNATURE_LENGTH] = sig.try_into().map_err(|_| {
        anyhow!(
            "signature is {} bytes, but an Ed25519 signature is exactly {SIGNATURE_LENGTH}",
            sig.len()
        )
    })?;
    ensure!(
        !pubkey.is_weak(),
        "public key {} is a small-order (weak) point: refusing to verify against it",
        fingerprint(pubkey)
    );
    let sig = Signature::from_bytes(sig);
    pubkey.verify_strict(msg, &sig).map_err(|_| {
        anyhow!(
            "signature does not verify against public key {}",
            fingerprint(pubkey)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier as _;

    /// RFC 8032 section 7.1, TEST 2.
    const SEED: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
    const PUBLIC: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
    const SIG: &str = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                       085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";

    fn rfc_signer() -> KeySigner {
        let seed: [u8; 32] = hex::decode(SEED).unwrap().try_into().unwrap();
        KeySigner::new(SigningKey::from_bytes(&seed))
    }

    #[test]
    fn key_signer_reproduces_rfc8032_test2() {
        let signer = rfc_signer();
        assert_eq!(hex::encode(signer.public_key().as_bytes()), PUBLIC);
        let sig = signer.sign(&[0x72]).unwrap();
        assert_eq!(hex::encode(sig), SIG);
        check_signature(&signer.public_key(), &[0x72], &sig).unwrap();
    }

    #[test]
    fn tampered_signature_and_message_are_rejected() {
        let signer = rfc_signer();
        let key = signer.public_key();
        let sig = signer.sign(b"boot manifest").unwrap();
        for i in [0, 31, 32, 63] {
            let mut bad = sig;
            bad[i] ^= 0x01;
            let err = check_signature(&key, b"boot manifest", &bad).unwrap_err();
            assert!(err.to_string().contains("does not verify"), "{err}");
        }
        let err = check_signature(&key, b"boot manifesT", &sig).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        let other = KeySigner::new(SigningKey::from_bytes(&[3; 32])).public_key();
        assert!(check_signature(&other, b"boot manifest", &sig).is_err());
    }

    #[test]
    fn signature_length_must_be_exactly_64() {
        let signer = rfc_signer();
        let sig = signer.sign(b"m").unwrap();
        let err = check_signature(&signer.public_key(), b"m", &sig[..63]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "signature is 63 bytes, but an Ed25519 signature is exactly 64"
        );
        let mut long = sig.to_vec();
        long.push(0);
        assert!(check_signature(&signer.public_key(), b"m", &long).is_err());
        assert!(check_signature(&signer.public_key(), b"m", &[]).is_err());
    }

    #[test]
    fn small_order_key_forgery_is_rejected_by_strict_verification() {
        // Public key = identity point, R = identity, S = 0: lax
        // verification accepts this for *every* message, which is exactly
        // what verify_strict exists to stop.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = VerifyingKey::from_bytes(&identity).unwrap();
        let mut forged = [0u8; 64];
        forged[0] = 1;
        let msg = b"any rootfs at all";
        assert!(weak.verify(msg, &Signature::from_bytes(&forged)).is_ok());
        let err = check_signature(&weak, msg, &forged).unwrap_err();
        assert!(err.to_string().contains("small-order"), "{err}");
    }

    #[test]
    fn non_canonical_s_is_rejected() {
        // S + L (the group order) is the same scalar mod L but a different
        // encoding; accepting it would make signatures malleable.
        let signer = rfc_signer();
        let sig = signer.sign(&[0x72]).unwrap();
        let l: [u8; 32] =
            hex::decode("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
                .unwrap()
                .try_into()
                .unwrap();
        let mut s_plus_l = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(sig[32 + i]) + u16::from(l[i]) + carry;
            s_plus_l[i] = v as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0, "S + L overflowed 256 bits");
        let mut bad = sig;
        bad[32..].copy_from_slice(&s_plus_l);
        assert!(check_signature(&signer.public_key(), &[0x72], &bad).is_err());
    }

    #[test]
    fn debug_and_describe_do_not_leak_the_seed() {
        let signer = rfc_signer();
        let shown = format!("{signer:?} {}", signer.describe());
        assert!(!shown.contains(SEED), "{shown}");
        assert!(
            shown.contains(&fingerprint(&signer.public_key())),
            "{shown}"
        );
    }
}
