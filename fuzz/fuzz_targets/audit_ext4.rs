//! The audit's ext4 reader (`Ext4Rootfs`, ext4-view behind our bounds) on
//! arbitrary bytes: open, list, read every file, resolve links; see
//! `slotsmith_policy::rootfs::fuzz`. The stable twin is
//! crates/policy/tests/fuzz_images.rs, which also writes real images made
//! by `mke2fs -d` (64 KiB each, too large to commit) to
//! target/fuzz-seeds/audit_ext4/:
//! `cargo +nightly fuzz run audit_ext4 corpus/audit_ext4 ../target/fuzz-seeds/audit_ext4`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotsmith_policy::rootfs::fuzz::ext4(data));
