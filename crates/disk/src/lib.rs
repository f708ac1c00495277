//! Disk-level encoders for slotsmith: GPT, FAT, bmap and sparse copies.
//!
//! Everything an A/B golden image needs below the filesystem-image level
//! lives here, so that the image assembler in the main crate only deals
//! with layout decisions. Every encoder is byte-deterministic (no random
//! GUIDs, no wall-clock timestamps) because reproducible images are the
//! point of the project: two builds of the same inputs must hash the same.
//!
//! The modules are independent of each other except that [`window`] is the
//! glue used to format a FAT filesystem in place inside a disk image.
//! [`time`] is the workspace's one calendar conversion (FAT timestamps
//! here, RFC 3339 in the SBOM, the provenance and the updater's trail).
//! [`fuzzimage`] is a compact encoding of whole images for the fuzz targets
//! of the image readers.

pub mod bgenv;
pub mod bmap;
pub mod fat;
pub mod fuzzimage;
pub mod gpt;
pub mod sparse;
pub mod time;
pub mod window;
