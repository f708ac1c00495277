//! Hardening policies for slotsmith images: load them, enforce them in the
//! rootfs, audit the built image against them, and report per rule and per
//! control.
//!
//! Security reviewers read `policies/*.yaml`; regulators want each measure
//! mapped to controls (NIST IR 8259A, SP 800-53, IEC 62443-4-2, FDA
//! premarket guidance, CIS Debian 12) with evidence read back from the
//! image that ships. The crate is split along that flow:
//! - [`model`]: rules, settings and control identifiers;
//! - [`load`]: `policies/<name>.yaml` with positioned diagnostics, waivers;
//! - [`rootfs`]: read-only views of a rootfs (a squashfs image file, or memory);
//! - [`apply`]: the files, links and modes that enforce a profile;
//! - [`audit`]: each rule's status and evidence from the built image;
//! - [`report`]: Markdown, JSON and SARIF renderings;
//! - [`lint`]: conflicts between rules and with layer files;
//! - [`nft`]: the small nftables reader the audit uses.

pub mod apply;
pub mod audit;
pub mod lint;
pub mod load;
pub mod model;
pub mod nft;
pub mod report;
pub mod rootfs;

pub use apply::{generate, kernel_args, GenFile, GenLink, GenMode, GenRemove, Generated};
pub use audit::{audit, Evidence, Report, RuleResult, Status, Summary};
pub use lint::{lint, LintDiag};
pub use load::{load_policies, read_waivers};
pub use model::{Profile, Rule, Setting, Waiver};
pub use report::{to_json, to_markdown, to_sarif};
pub use rootfs::{Entry, EntryKind, Ext4Rootfs, MemRootfs, RootfsRead, SquashfsRootfs};
