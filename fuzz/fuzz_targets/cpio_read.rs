//! The `.swu` container reader (cpio 070702 index, member order,
//! sw-description, payload hashes) on arbitrary bytes; see
//! `slotsmith_swu::fuzz::cpio_read` for the invariants. The stable twin is
//! crates/swu/tests/fuzz.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotsmith_swu::fuzz::cpio_read(data));
