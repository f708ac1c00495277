//! End-to-end tests: build images with the real CLI and check every
//! artifact with an independent tool that nobody here wrote (sgdisk,
//! sfdisk, fsck.fat, unsquashfs, debugfs, bmaptool).
//!
//! One integration binary with a module per area, as ripgrep does. Tools
//! are never optional: a missing one fails the test and names its package.

mod support;

mod bad_input;
mod boot;
mod cache;
mod demo;
mod determinism;
mod escapes;
mod fixture;
mod flash;
mod hardening;
mod hostile;
mod lock;
mod plans;
mod provenance;
mod release_diff;
mod repro;
mod swu;
mod tidy;
mod updates;
mod verified_boot;
