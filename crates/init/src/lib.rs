//! slotsmith-init: the `/init` of slotsmith's own initramfs.
//!
//! It runs as PID 1 from the initramfs inside the signed UKI and does one
//! thing: open the slot's root filesystem only if it is the one the
//! release key signed, then hand over to systemd. Its security rests on a
//! few rules, each explained in the module that applies it:
//!
//! - fail closed: any error, panic included, prints one
//!   `slotsmith-init: refusing to boot: …` line and reboots ([`console`]);
//!   there is no shell, no rescue prompt and no fallback to an unverified
//!   root;
//! - trust only what is signed: the command line (UKI signature, checked by
//!   the firmware) and the manifest (Ed25519, checked here with the key in
//!   the initramfs) must agree ([`verify`]); the root is only read through
//!   dm-verity with the signed root hash, set to panic on corruption
//!   ([`dm`]);
//! - no udev and no guessing: partitions are found by GPT name in sysfs,
//!   all on one disk, and any ambiguity refuses the boot ([`discover`]);
//!   names are safe to use because verity binds the root's content and the
//!   signature binds the manifest's;
//! - bounded input: every file read has a size limit, and untrusted text
//!   is escaped before it reaches the console.
//!
//! The crate is a library of pure, tested pieces plus [`boot`], the thin
//! sequence of system calls `main.rs` runs. Unsafe code is denied
//! everywhere except the two raw calls in [`sys`].

pub mod boot;
pub mod cmdline;
pub mod console;
pub mod discover;
pub mod dm;
pub mod fat;
pub mod modules;
pub mod state;
pub mod sys;
pub mod verify;

use anyhow::{bail, Context, Result};
use std::io::Read as _;
use std::path::Path;

/// Reads at most `max` bytes of the file at `path`; a longer file is an
/// error naming it.
pub fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max as u64 + 1).read_to_end(&mut out))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if out.len() > max {
        bail!("{} is over the {max}-byte limit", path.display());
    }
    Ok(out)
}
