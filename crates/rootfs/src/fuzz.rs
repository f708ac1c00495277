//! Entry point of the `tar_import` fuzz target and its stable twin
//! (`tests/fuzz.rs`). Beyond "no panic", it checks what must hold for every
//! archive, hostile or not:
//!
//! - every message is printable (names and values from the archive are
//!   escaped);
//! - every entry of an accepted archive passes the limits
//!   ([`crate::limits::check_tree`]);
//! - what we accept, we can write back, and what we write imports to the
//!   identical stream (export is deterministic, so equal bytes mean an
//!   equal tree);
//! - the record parsers, fed the raw bytes directly, never panic.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::limits::{self, Target};
use crate::{cleanup, export, import, tar_fields};

/// Imports `input` as a tarball (any compression) into a scratch content
/// store, checks the invariants above, and removes the store.
pub fn tar_import(input: &[u8]) {
    static N: AtomicU64 = AtomicU64::new(0);
    let scratch: PathBuf = scratch_base().join(format!(
        "slotsmith-fuzz-tar-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let res = import::from_reader("fuzz input", input, &scratch.join("a"), &mut |_, _| {});
    match res {
        Ok(tree) => {
            if let Err(e) = limits::check_tree(&tree, Target::Either) {
                panic!("an accepted archive breaks the limits: {e:#}");
            }
            // Squashfs-only limits (POSIX ACLs, `=` in xattr names) may
            // refuse the export; everything else must round trip.
            if let Ok(first) = export::write_tar(&tree, Vec::new(), &mut |_| {}) {
                let again = import::from_reader(
                    "our export",
                    &first[..],
                    &scratch.join("b"),
                    &mut |_, _| {},
                )
                .unwrap_or_else(|e| panic!("our own export does not import: {e:#}"));
                let second = export::write_tar(&again, Vec::new(), &mut |_| {})
                    .unwrap_or_else(|e| panic!("the reimported tree does not export: {e:#}"));
                assert!(
                    first == second,
                    "export -> import -> export changed the stream"
                );
            }
        }
        Err(e) => check_text(&format!("{e:#}")),
    }
    cleanup::remove_tree(&scratch).expect("removing the fuzz scratch directory");

    // The record and number parsers on the raw bytes.
    if let Err(e) = tar_fields::parse_pax(input) {
        check_text(&format!("{e:#}"));
    }
    let head = &input[..input.len().min(12)];
    if let Err(e) = tar_fields::header_number(head, "field") {
        check_text(&format!("{e:#}"));
    }
    for r in [
        tar_fields::pax_time(input, "mtime").map(|_| ()),
        tar_fields::pax_uint(input, "uid").map(|_| ()),
        tar_fields::base64_decode(input).map(|_| ()),
        tar_fields::percent_decode(&String::from_utf8_lossy(input)).map(|_| ()),
    ] {
        if let Err(e) = r {
            check_text(&format!("{e:#}"));
        }
    }
}

/// Where the scratch stores go: tmpfs when the machine has one (creating
/// and removing a directory per input costs milliseconds on a disk, which
/// would dominate a run), else the temporary directory.
fn scratch_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let writable = rustix::fs::access(shm, rustix::fs::Access::WRITE_OK).is_ok();
    if writable && shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn check_text(text: &str) {
    if let Some(c) = text
        .chars()
        .find(|&c| c != '\\' && slotsmith_yaml::escape::needs_escape(c))
    {
        panic!("unescaped {c:?} in message: {text:?}");
    }
}
