//! The verity superblock parser and the hash-tree verifier on a hash area
//! from the input; see `slotsmith_verity::fuzz` for the input layout and
//! the invariants. The stable twin is crates/verity/tests/fuzz.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotsmith_verity::fuzz::superblock(data));
