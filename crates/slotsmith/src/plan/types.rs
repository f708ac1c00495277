//! The plan's types: one serialisable value holding every decision of a
//! build. `cargo xtask plan` prints it; the insta snapshot covers it; the
//! build reads nothing else.

use std::collections::BTreeMap;

use serde::Serialize;
use uuid::Uuid;

use super::{PlanBootFile, PlanPayload, PlanSlotFile, PlanTools};
use crate::spec::*;

/// The whole build, decided in advance.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// [`PLAN_SCHEMA`].
    pub schema: u32,
    /// The image's identity.
    pub image: PlanImage,
    /// Clamp for every timestamp written.
    pub source_date_epoch: u64,
    /// The base rootfs.
    pub base: PlanBase,
    /// Layers in application order.
    pub layers: Vec<PlanLayer>,
    /// The slot filesystem.
    pub rootfs: PlanRootfs,
    /// The disk layout.
    pub disk: PlanDisk,
    /// The boot partition's filesystem.
    pub esp: PlanEsp,
    /// The data partition's filesystem.
    pub data: PlanData,
    /// Verified boot: kernel, keys, and what each slot's manifest says.
    pub boot: PlanBoot,
    /// Hardening: the policies' rules, applied to the rootfs and audited on
    /// the built image.
    pub hardening: PlanHardening,
    /// The SWUpdate update built beside the golden image.
    pub update: PlanUpdate,
    /// Where the provenance signing key is (never the key itself).
    pub provenance_key: BootKeySpec,
    /// Output file names inside `out/<name>/`.
    pub outputs: PlanOutputs,
    /// Every external tool the build runs, with its arguments.
    pub tools: PlanTools,
    /// The verified boot chain (loader, UKIs, initramfs), when the image
    /// has one.
    pub chain: Option<super::chain::PlanChain>,
    /// The previous release to diff against (`build --previous`); absent
    /// without one, so such a plan (and its hash) is unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<super::previous::PlanPrevious>,
}

/// The resolved hardening policy set.
#[derive(Debug, Clone, Serialize)]
pub struct PlanHardening {
    /// `production` or `development`.
    pub profile: slotsmith_policy::Profile,
    /// Policy names.
    pub policies: Vec<String>,
    /// sha256 over the rules, as the audit report records it.
    pub policy_set_sha256: String,
    /// Every rule, as loaded.
    pub rules: Vec<slotsmith_policy::Rule>,
    /// Approved exceptions.
    pub waivers: Vec<slotsmith_policy::Waiver>,
}

/// The `.swu` update.
#[derive(Debug, Clone, Serialize)]
pub struct PlanUpdate {
    /// Output file name, `<name>-<version>.swu`.
    pub file: String,
    /// Bootloader env flavour.
    pub bootloader: Bootloader,
    /// Payload compression.
    pub compression: UpdateCompression,
    /// sw-description set name.
    pub set: String,
    /// Mode name per slot (a, b).
    pub modes: [String; 2],
    /// Where the device mounts the boot partition.
    pub boot_mount: String,
    /// Device path of every slot partition.
    pub devices: std::collections::BTreeMap<String, String>,
    /// Where the update key and certificate are.
    pub key: UpdateKeySpec,
    /// Size of each root partition: the rootfs payload must fit.
    pub root_partition_size: u64,
    /// Size of each verity partition.
    pub verity_partition_size: u64,
    /// One collection per slot, with its payloads in order.
    pub collections: Vec<PlanCollection>,
    /// The archive's payload members in order (after sw-description and
    /// its signature): each output once.
    pub members: Vec<PlanMember>,
}

/// A slot's collection in sw-description.
#[derive(Debug, Clone, Serialize)]
pub struct PlanCollection {
    /// The slot it installs.
    pub slot: String,
    /// Its payloads, in order.
    pub payloads: Vec<PlanPayload>,
}

/// A payload member of the `.swu`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanMember {
    /// The output it carries.
    pub output: String,
    /// Present only when that output is.
    pub optional: bool,
}

/// A file in `out/<name>/`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanOutput {
    /// Its path inside the output directory.
    pub name: String,
    /// Present only when the build finds it (an initrd in the rootfs).
    pub optional: bool,
}

/// Verified boot settings.
#[derive(Debug, Clone, Serialize)]
pub struct PlanBoot {
    /// A release build refuses development keys.
    pub release: bool,
    /// Anti-rollback counter written into every manifest.
    pub security_version: u64,
    /// The kernel and its command line.
    pub kernel: KernelSpec,
    /// The boot files (kernel, initrd, dtb): where each comes from and its
    /// output name.
    pub files: Vec<PlanBootFile>,
    /// Where the boot signing key is (never the key itself).
    pub key: BootKeySpec,
    /// The slots the golden image fills, each with its own verity tree and
    /// signed manifest.
    pub slots: Vec<PlanSlot>,
}

/// One filled slot.
#[derive(Debug, Clone, Serialize)]
pub struct PlanSlot {
    /// `a` or `b`.
    pub name: String,
    /// Whether the golden image writes this slot (and its boot files).
    pub filled: bool,
    /// Its root partition.
    pub root_partition: String,
    /// Its verity partition.
    pub verity_partition: String,
    /// dm-verity salt: derived from the image identity and the slot, so
    /// the two slots get different root hashes (and so different
    /// DPS partition UUIDs) for the same rootfs.
    #[serde(serialize_with = "crate::spec::hex_bytes")]
    pub verity_salt: [u8; 32],
    /// dm-verity superblock UUID, derived.
    pub verity_uuid: Uuid,
    /// The kernel command line signed into this slot's manifest: the
    /// image's arguments, then those the hardening rules add (each once),
    /// then `slotsmith.slot=<name> ro`. The initramfs finds the slot's
    /// partitions by label, since an update rewrites a slot but not the GPT.
    pub cmdline: String,
    /// Directory of this slot's files on the boot partition.
    pub esp_dir: String,
    /// The verity hash image in out/.
    pub verity_output: String,
    /// The manifest in out/.
    pub manifest_output: String,
    /// Its raw 64-byte Ed25519 signature in out/.
    pub signature_output: String,
    /// Its files on the boot partition (for a filled slot).
    pub esp_files: Vec<PlanSlotFile>,
}

/// The image's identity.
#[derive(Debug, Clone, Serialize)]
pub struct PlanImage {
    /// The image file, relative to the project root.
    pub file: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub arch: Arch,
    /// Board name.
    pub board: String,
    /// Accepted hardware revisions.
    pub hardware_compatibility: Vec<String>,
}

/// The base and, for Debian, the key of its cached tarball.
#[derive(Debug, Clone, Serialize)]
pub struct PlanBase {
    /// What the image file said, with input hashes.
    #[serde(flatten)]
    pub spec: BaseSpec,
    /// For a Debian base: the cache key (sha256 of every mmdebstrap input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    /// For a Debian base: the architecture passed to mmdebstrap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debian_arch: Option<String>,
    /// For a locked Debian base: exactly the packages the build installs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<PlanLock>,
}

/// The lock a Debian base is built from: a build installs exactly these
/// `.deb`s, each checked against its sha256, from a local repository.
#[derive(Debug, Clone, Serialize)]
pub struct PlanLock {
    /// The lock file, relative to the project root.
    pub path: String,
    /// The lock file's sha256 (also in build.json).
    pub sha256: String,
    pub packages: Vec<crate::lockfile::LockedPackage>,
}

/// One layer's operations.
#[derive(Debug, Clone, Serialize)]
pub struct PlanLayer {
    /// Directory name.
    pub name: String,
    /// Collection.
    pub collection: String,
    /// Priority.
    pub priority: i64,
    /// Removals, applied before the layer's entries.
    pub remove: Vec<String>,
    /// Where each removal was written, for the build's diagnostics.
    #[serde(skip)]
    pub remove_at: BTreeMap<String, crate::spec::Origin>,
    /// Entries put into the rootfs.
    pub entries: Vec<LayerEntry>,
}

/// The slot filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct PlanRootfs {
    /// squashfs or ext4.
    pub filesystem: Filesystem,
    /// squashfs compressor (`None` for ext4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// squashfs block size (`None` for ext4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    /// The largest image that fits a slot.
    pub max_size: u64,
    /// Where the slot size was written, for the build's diagnostics.
    #[serde(skip)]
    pub max_size_at: crate::spec::Origin,
    /// ext4 only: filesystem UUID, also used as the directory hash seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext4_uuid: Option<Uuid>,
}

/// What a partition holds in the golden image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Content {
    /// The FAT boot partition.
    Esp,
    /// The rootfs image.
    Rootfs,
    /// Reserved for the slot's dm-verity hash tree.
    VerityReserved,
    /// Left zeroed (an empty slot B).
    Empty,
    /// The ext4 data filesystem.
    Data,
    /// A slot's FAT boot partition (boot chain).
    SlotBoot,
}

/// One GPT entry.
#[derive(Debug, Clone, Serialize)]
pub struct PlanPartition {
    /// 1-based GPT entry number.
    pub number: u32,
    /// GPT partition name.
    pub name: String,
    /// Type GUID.
    pub type_guid: Uuid,
    /// Partition GUID.
    pub uuid: Uuid,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// Byte offset.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// GPT attribute bits.
    pub attributes: u64,
    /// What the golden image puts there.
    pub content: Content,
    /// True for the root and verity partitions of a filled slot: their
    /// UUIDs are the first and last 128 bits of the verity root hash
    /// (Discoverable Partitions Specification), known only at build time;
    /// `uuid` is then the fallback for an empty slot.
    pub uuid_from_root_hash: bool,
}

/// The disk.
#[derive(Debug, Clone, Serialize)]
pub struct PlanDisk {
    /// Logical sector size.
    pub sector_size: u64,
    /// Total size in bytes.
    pub size: u64,
    /// Disk GUID.
    pub guid: Uuid,
    /// Partition alignment.
    pub alignment: u64,
    /// Partitions in GPT entry order.
    pub partitions: Vec<PlanPartition>,
}

/// A file on the boot partition.
#[derive(Debug, Clone, Serialize)]
pub struct PlanEspFile {
    /// Path on the FAT filesystem.
    pub path: String,
    /// Contents.
    pub text: String,
}

/// The FAT boot filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct PlanEsp {
    /// Volume label.
    pub label: String,
    /// Volume serial number.
    pub volume_id: u32,
    /// Files written.
    pub files: Vec<PlanEspFile>,
}

/// The ext4 data filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct PlanData {
    /// Filesystem label.
    pub label: String,
    /// Filesystem UUID, also the directory hash seed.
    pub uuid: Uuid,
}

/// Output names inside `out/<name>/`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanOutputs {
    /// The directory, relative to the output root.
    pub dir: String,
    /// The golden disk image.
    pub image: String,
    /// Its block map.
    pub bmap: String,
    /// The rootfs image.
    pub rootfs: String,
    /// The software bill of materials (SPDX 2.3 JSON).
    pub sbom: String,
    /// Checksums of every other output.
    pub sums: String,
    /// The build record.
    pub build_json: String,
    /// The boot public key the manifests verify with.
    pub boot_public_key: String,
    /// The update signer certificate.
    pub update_cert: String,
    /// The signed provenance: a DSSE envelope over an in-toto statement.
    pub provenance: String,
    /// The provenance public key it verifies with.
    pub provenance_public_key: String,
    /// Every file of the output directory, sorted.
    pub files: Vec<PlanOutput>,
}
