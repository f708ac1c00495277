//! slotsmith: build, harden, sign and verify A/B embedded Linux images.
//!
//! The pipeline has separate stages (see ARCHITECTURE.md):
//! [`load`] reads and validates the inputs, [`plan`] decides everything
//! purely, [`build`] performs the plan (the only stage with side effects),
//! and verification re-opens the outputs. [`tool`] is the one door to
//! external programs.

pub mod build;
pub mod diff;
pub mod flash;
pub mod harden;
pub mod initbin;
pub mod layout;
pub mod load;
pub mod lockfile;
pub mod plan;
pub mod progress;
pub mod provenance;
pub mod publish;
pub mod qemu;
pub mod readme;
pub mod repro;
pub mod sbom;
pub mod secureboot;
pub mod signing;
pub mod spec;
pub mod stick;
pub mod tool;
pub mod uki;
pub mod verify;

pub use slotsmith_yaml::{diag, yaml};
