//! The strict sw-description parser on arbitrary text; see
//! `slotsmith_swu::fuzz::swdesc_parse` for the invariants. The stable twin
//! is crates/swu/tests/fuzz.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotsmith_swu::fuzz::swdesc_parse(data));
