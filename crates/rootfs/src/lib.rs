//! Rootless, deterministic rootfs assembly.
//!
//! An unprivileged build cannot own files as root, create device nodes or
//! set `security.*` xattrs, and must never let a hostile tarball touch the
//! host. So a rootfs is modelled in memory ([`tree`]): ownership, modes,
//! devices, links and xattrs come from the inputs ([`import`], [`overlay`])
//! and only file contents live on disk. Exporters then produce either a
//! deterministic tar stream for `tar2sqfs` ([`export`]) or a staging tree
//! plus a `debugfs` fix-up script for `mke2fs -d` ([`ext4`]).
//!
//! Every entry that enters a tree must be one the images can hold
//! ([`limits`]: name and path lengths, depth, link targets, device numbers,
//! xattrs), and every number read from an archive is parsed with checked
//! arithmetic ([`tar_fields`]). [`cleanup::remove_tree`] removes work
//! directories of any depth in a bounded number of file descriptors;
//! [`fuzz`] holds the fuzzing entry point of the tar importer.

pub mod cleanup;
pub mod export;
pub mod ext4;
pub mod fuzz;
pub mod import;
pub mod initramfs;
pub mod limits;
pub mod overlay;
pub mod path;
pub mod tar_fields;
pub mod tree;

pub use path::RelPath;
pub use tree::{Content, Kind, Meta, Node, Tree};
