//! The GPT reader and the whole image verifier (FAT boot partition, signed
//! manifests, verity trees) on a compact image from the input; see
//! `slotsmith::verify::fuzz_verify` for the input encoding and the
//! invariants. The stable twin is crates/slotsmith/tests/fuzz_verify.rs;
//! crates/disk/tests/fuzz.rs runs the GPT reader alone on the same corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotsmith::verify::fuzz_verify(data));
