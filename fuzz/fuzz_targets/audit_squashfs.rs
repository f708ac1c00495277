//! The audit's squashfs reader (`SquashfsRootfs`, backhand behind our
//! bounds) on arbitrary bytes: open, list, read every file, resolve links;
//! see `slotsmith_policy::rootfs::fuzz`. The stable twin is
//! crates/policy/tests/fuzz_images.rs, which also writes real images made
//! by mksquashfs and tar2sqfs to target/fuzz-seeds/audit_squashfs/:
//! `cargo +nightly fuzz run audit_squashfs corpus/audit_squashfs ../target/fuzz-seeds/audit_squashfs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotsmith_policy::rootfs::fuzz::squashfs(data));
