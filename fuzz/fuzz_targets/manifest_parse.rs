//! The boot manifest parser and its signature check on arbitrary bytes;
//! see `slotsmith_sign::manifest::fuzz_parse` for the invariants. The
//! stable twin is crates/sign/tests/fuzz.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotsmith_sign::manifest::fuzz_parse(data));
