//! The tar importer (decompression by magic bytes, ustar/GNU/PAX headers,
//! extension records, every number) on arbitrary bytes; see
//! `slotsmith_rootfs::fuzz::tar_import` for the invariants. The stable twin
//! is crates/rootfs/tests/fuzz.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotsmith_rootfs::fuzz::tar_import(data));
