//! Verifying the slot's boot manifest and checking that it agrees with the
//! signed command line.
//!
//! Two signatures meet here. The firmware checked the UKI's (so the
//! command line and this initramfs are ours); the init checks the
//! manifest's Ed25519 signature with the boot key embedded in the
//! initramfs (so the verity geometry and salt are ours). Then every value
//! the two documents share must be equal: slot, root hash, security
//! version and the whole command line. A mismatch means the pieces of two
//! different releases (or slots) were combined, which is how a rollback or
//! a slot swap would look, so the boot is refused; the init never prefers
//! one document's value over the other's.

use crate::cmdline::{normalized, BootArgs};
use anyhow::{bail, Context, Result};
use slotsmith_sign::manifest::{verify_manifest, Manifest, MAX_MANIFEST_SIZE};
use slotsmith_yaml::escape::shown;
use std::path::Path;

/// Where the boot public key lives in the initramfs.
pub const KEY_PATH: &str = "/etc/slotsmith/boot.pub.pem";
/// The largest key file accepted (an Ed25519 SPKI PEM is 113 bytes).
pub const MAX_KEY_FILE: usize = 4096;
/// A manifest signature is exactly this many raw bytes.
pub const SIG_LEN: usize = 64;

/// Checks `sig` over `manifest` with the PEM public key `key_pem` (read
/// from `key_path`, named in errors) and returns the parsed manifest.
/// Sizes are checked before any cryptography runs.
pub fn verify(manifest: &[u8], sig: &[u8], key_pem: &[u8], key_path: &Path) -> Result<Manifest> {
    if key_pem.len() > MAX_KEY_FILE {
        bail!(
            "{} is {} bytes, over the {MAX_KEY_FILE}-byte limit",
            key_path.display(),
            key_pem.len()
        );
    }
    if manifest.len() > MAX_MANIFEST_SIZE {
        bail!(
            "the manifest is {} bytes, over the {MAX_MANIFEST_SIZE}-byte limit",
            manifest.len()
        );
    }
    if sig.len() != SIG_LEN {
        bail!(
            "manifest.sig is {} bytes, not the {SIG_LEN} of a raw Ed25519 signature",
            sig.len()
        );
    }
    let key = slotsmith_sign::keys::parse_verifying_key(key_pem, key_path)?;
    verify_manifest(manifest, sig, &key)
}

/// Checks that the verified manifest and the command line describe the
/// same slot of the same release. `proc_cmdline` is /proc/cmdline as read
/// (its trailing newline is ignored).
pub fn check_agreement(m: &Manifest, args: &BootArgs, proc_cmdline: &str) -> Result<()> {
    if m.slot != args.slot.name() {
        bail!(
            "the manifest is for slot {} but the command line boots slot {}",
            shown(&m.slot),
            args.slot.name()
        );
    }
    if m.verity_root_hash != args.root_hash {
        bail!(
            "the manifest's root hash {} differs from the command line's {}",
            hex::encode(m.verity_root_hash),
            hex::encode(args.root_hash)
        );
    }
    if m.security_version != u64::from(args.svn) {
        bail!(
            "the manifest's security version {} differs from the command line's {}",
            m.security_version,
            args.svn
        );
    }
    let line = normalized(proc_cmdline);
    if m.cmdline != line {
        bail!(
            "the manifest's command line differs from the kernel's: manifest `{}`, kernel `{}`",
            shown(&m.cmdline),
            shown(line)
        );
    }
    Ok(())
}

/// Anti-rollback hook (issue 11): refuses a release whose security version
/// is below the lowest one this device may still boot. `minimum` is `None`
/// until the device stores one; today every caller passes `None`, and
/// issue 11 supplies the stored value (data partition or TPM NV counter).
pub fn check_security_version(svn: u64, minimum: Option<u64>) -> Result<()> {
    if let Some(min) = minimum {
        if svn < min {
            bail!("security version {svn} is below this device's minimum {min} (a rollback)");
        }
    }
    Ok(())
}

/// Reads the boot key from `path`, bounded.
pub fn read_key(path: &Path) -> Result<Vec<u8>> {
    crate::read_bounded(path, MAX_KEY_FILE).context("cannot read the boot public key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_version_hook() {
        check_security_version(3, None).unwrap();
        check_security_version(3, Some(3)).unwrap();
        let err = check_security_version(2, Some(3)).unwrap_err().to_string();
        assert_eq!(
            err,
            "security version 2 is below this device's minimum 3 (a rollback)"
        );
    }

    #[test]
    fn bounds_come_before_crypto() {
        let p = Path::new("/etc/slotsmith/boot.pub.pem");
        let err = verify(b"m", &[0; 63], b"k", p).unwrap_err().to_string();
        assert!(err.contains("63 bytes"), "{err}");
        let big = vec![b'x'; MAX_MANIFEST_SIZE + 1];
        let err = verify(&big, &[0; 64], b"k", p).unwrap_err().to_string();
        assert!(err.contains("over the 65536-byte limit"), "{err}");
    }
}
