//! The loaded, validated input: what `images/*.yaml` and each layer's
//! `conf/layer.yaml` say, after every check that needs only the inputs.
//!
//! These types are what ripgrep calls "low args": they mirror the files and
//! hold only validated values. [`crate::plan`] turns them into the plan.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

/// The layer series this version of slotsmith implements. A layer declares
/// the series it works with in `series-compat`, as Yocto layers list release
/// codenames in `LAYERSERIES_COMPAT`.
pub const SERIES: &str = "anvil";

/// Target architecture; it selects the Discoverable Partitions Specification
/// type GUIDs and Debian's architecture name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// x86-64 (`amd64` in Debian).
    X86_64,
    /// 64-bit ARM (`arm64` in Debian).
    Arm64,
}

impl Arch {
    /// Parses the image file's spelling.
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "x86-64" => Some(Arch::X86_64),
            "arm64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// Debian's name for the architecture.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// The root filesystem type written into each slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filesystem {
    /// Read-only, compressed; the default.
    Squashfs,
    /// ext4, filling the slot.
    Ext4,
}

/// The squashfs block compressor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// zstd: fast to build and to read; the default.
    Zstd,
    /// xz: smallest, slowest.
    Xz,
    /// gzip: the most widely supported.
    Gzip,
    /// lz4: fastest to read.
    Lz4,
}

impl Compression {
    /// The name `tar2sqfs` and `mksquashfs` use.
    pub fn tool_name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
        }
    }
}

/// Who owns the entries of a directory base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirOwnership {
    /// Every entry belongs to root: the directory was made by an
    /// unprivileged build (for example Yocto's IMAGE_ROOTFS outside pseudo).
    Root,
    /// Owners are taken from the directory as they are.
    Preserve,
}

/// Where the base rootfs comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum BaseSpec {
    /// A tarball such as a Yocto `*.rootfs.tar.zst` or mmdebstrap output.
    Tarball {
        /// The path as shown to users (relative to the project root when inside it).
        path: String,
        /// Absolute path, not serialised (it differs between checkouts).
        #[serde(skip)]
        abs: PathBuf,
        /// sha256 of the file, so the plan changes when the tarball does.
        sha256: String,
        /// Size in bytes.
        size: u64,
    },
    /// A directory such as Yocto's IMAGE_ROOTFS.
    Directory {
        /// The path as shown to users.
        path: String,
        /// Absolute path.
        #[serde(skip)]
        abs: PathBuf,
        /// Who owns the entries.
        ownership: DirOwnership,
    },
    /// Debian built with mmdebstrap from the host's apt sources.
    Debian {
        /// The suite, such as `bookworm`.
        suite: String,
        /// mmdebstrap's `--variant`.
        variant: String,
        /// Extra packages, sorted and without duplicates.
        packages: Vec<String>,
        /// A mirror URL; `None` means the host's apt sources.
        mirror: Option<String>,
    },
}

/// Where a value was written: file, line, column and key. Kept for
/// problems that only the build can see but the input alone causes (a
/// removal of a path the base does not have, a rootfs larger than its
/// slot), so they are still reported as input errors with a position.
/// Never serialised: a plan must not change when a comment moves a line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin(pub Option<crate::diag::Diagnostic>);

impl Origin {
    /// A diagnostic at this origin.
    pub fn diagnostic(&self, message: impl Into<String>) -> crate::diag::Diagnostic {
        let mut d = self.0.clone().unwrap_or_else(|| crate::diag::Diagnostic {
            file: std::path::PathBuf::new(),
            line: 0,
            col: 0,
            key: String::new(),
            message: String::new(),
        });
        d.message = message.into();
        d
    }
}

/// An input error that the build found: exit code 2, printed as the
/// diagnostics it holds.
#[derive(Debug)]
pub struct InputError(pub crate::diag::Diagnostics);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for InputError {}

/// Partition sizes and alignment, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayoutSpec {
    /// Partition start and size alignment.
    pub alignment: u64,
    /// The boot/ESP partition.
    pub esp: u64,
    /// Each rootfs slot.
    pub slot: u64,
    /// The data partition.
    pub data: u64,
    /// Whether the golden image also writes the rootfs into slot B.
    pub fill_slot_b: bool,
    /// Each slot's FAT boot partition (the boot chain's signed UKI, its
    /// manifest and the loader environment).
    pub boot: u64,
    /// Where `layout.slot` was written.
    #[serde(skip)]
    pub slot_at: Origin,
}

/// Where the kernel (and optional initrd and device tree) come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "source")]
pub enum KernelSource {
    /// `/boot/vmlinuz-*` in the base rootfs, with the matching
    /// `/boot/initrd.img-*` when present.
    FromRootfs,
    /// Files named by the image, relative to the project root.
    Files {
        /// The kernel image.
        image: FileInput,
        /// The initrd.
        #[serde(skip_serializing_if = "Option::is_none")]
        initrd: Option<FileInput>,
        /// The device tree blob.
        #[serde(skip_serializing_if = "Option::is_none")]
        dtb: Option<FileInput>,
    },
}

/// An input file with its hash, so plans change when it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInput {
    /// Path as shown (relative to the project root when inside it).
    pub path: String,
    /// sha256 of the contents.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// The kernel and its command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelSpec {
    /// Where it comes from.
    #[serde(flatten)]
    pub source: KernelSource,
    /// The kernel command line recorded in the signed boot manifest.
    pub cmdline: String,
}

/// The loader of the verified boot chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loader {
    /// EFI Boot Guard: A/B with boot counting, a watchdog and SWUpdate's
    /// `ebg` handler.
    Efibootguard,
}

/// `boot:`: the chain firmware -> signed loader -> signed UKI (our
/// initramfs) -> dm-verity root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootChainSpec {
    /// The loader on the ESP.
    pub loader: Loader,
    /// Seconds the loader arms the hardware watchdog with (0: off).
    pub watchdog_sec: u16,
    /// Kernel modules the init loads, by name, before it looks for disks
    /// (their dependencies are added from `modules.dep`).
    pub initramfs_modules: Vec<String>,
    /// Units that must be active before a tried slot is confirmed (besides
    /// multi-user.target, the watchdog and no failed units).
    pub healthy_units: Vec<String>,
    /// Seconds a tried slot may run unconfirmed before it reboots (and the
    /// loader falls back).
    pub trial_timeout_sec: u32,
}

/// How a signing key is reached. Key material never enters the spec or
/// the plan: only where to find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum KeySource {
    /// The development key under `keys/dev/`, generated on first use.
    /// Never allowed for a release image.
    Development,
    /// A PKCS#8 PEM private key file.
    File {
        /// The path as written in the image.
        path: String,
    },
    /// An environment variable holding the private key file's path.
    Env {
        /// The variable's name.
        var: String,
    },
    /// A command (HSM, offline signing) that gets the bytes to sign in the
    /// file `{in}` and writes the raw signature to `{out}`.
    External {
        /// The argv, with `{in}` and `{out}` placeholders.
        argv: Vec<String>,
    },
}

/// The boot signing key of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootKeySpec {
    /// Where the private key (or signer) is.
    pub source: KeySource,
    /// The public key (SPKI PEM); `None` for the development key, whose
    /// public half sits next to it.
    pub public_key: Option<String>,
}

/// A validated `images/<name>.yaml`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSpec {
    /// The image file, relative to the project root.
    pub file: String,
    /// Absolute project root (the image directory's parent).
    #[serde(skip)]
    pub root: PathBuf,
    /// Image name: also the output directory name.
    pub name: String,
    /// Image version.
    pub version: String,
    /// Target architecture.
    pub arch: Arch,
    /// Board name, the first half of SWUpdate's hardware check.
    pub board: String,
    /// Accepted hardware revisions.
    pub hardware_compatibility: Vec<String>,
    /// The image file's fallback for `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<u64>,
    /// The base rootfs.
    pub base: BaseSpec,
    /// Layer directory names under `layers/`, in the listed order.
    pub layers: Vec<String>,
    /// Policy names under `policies/`.
    pub policies: Vec<String>,
    /// The slot filesystem.
    pub filesystem: Filesystem,
    /// The squashfs compressor.
    pub compression: Compression,
    /// The partition layout.
    pub layout: LayoutSpec,
    /// Release images refuse development keys.
    pub release: bool,
    /// Monotonic anti-rollback counter recorded in the boot manifests.
    pub security_version: u64,
    /// The kernel.
    pub kernel: KernelSpec,
    /// The verified boot chain, when the image has one.
    pub chain: Option<BootChainSpec>,
    /// The boot signing key.
    pub boot_key: BootKeySpec,
    /// The update (CMS) signing key and certificate.
    pub update_key: UpdateKeySpec,
    /// The UEFI Secure Boot keys: db signs every EFI binary; PK, KEK and
    /// db are what manufacturing enrols in the firmware.
    pub secureboot_key: SecureBootKeySpec,
    /// The provenance signing key (Ed25519, the same shape as the boot
    /// key): signs `provenance.dsse.json`.
    pub provenance_key: BootKeySpec,
    /// How the SWUpdate `.swu` installs.
    pub update: UpdateSpec,
    /// Which hardening profile applies.
    pub profile: slotsmith_policy::Profile,
    /// The rules of the image's policies.
    pub rules: Vec<slotsmith_policy::Rule>,
    /// Approved exceptions, each shown in the audit report.
    pub waivers: Vec<slotsmith_policy::Waiver>,
}

/// The update signing key: ECDSA P-256 with an X.509 certificate, because
/// SWUpdate verifies CMS and cannot verify Ed25519 CMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateKeySpec {
    /// Where the private key (or signer) is.
    pub source: KeySource,
    /// The signer certificate (PEM) embedded in every signature; `None` for
    /// the development key, whose certificate sits next to it.
    pub cert: Option<String>,
}

/// The UEFI Secure Boot keys of an image (`signing.secureboot`). RSA, as
/// UEFI firmware requires: the db key signs every EFI binary through
/// `sbsign`; the PK and KEK private keys are needed only to sign the
/// authenticated variables (`PK.auth`, `KEK.auth`, `db.auth`) that
/// manufacturing writes into firmware in setup mode. Key material never
/// enters the spec: only where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecureBootKeySpec {
    /// Where the db private key is.
    pub db_key: SecureBootDbKey,
    /// The db certificate (PEM), which the firmware trusts to run EFI
    /// binaries; `None` for the development keys, whose files sit in
    /// `keys/dev/`.
    pub db_cert: Option<String>,
    /// The KEK certificate (PEM); `None` for the development keys.
    pub kek_cert: Option<String>,
    /// The PK (platform key) certificate (PEM); `None` for the development
    /// keys.
    pub pk_cert: Option<String>,
    /// Where the KEK private key is, when available (it signs `db.auth`);
    /// `Development`, `File` or `Env`, never `External`.
    pub kek_key: Option<KeySource>,
    /// Where the PK private key is, when available (it signs `PK.auth`
    /// and `KEK.auth`); `Development`, `File` or `Env`.
    pub pk_key: Option<KeySource>,
}

impl SecureBootKeySpec {
    /// The development keys under `keys/dev/` (all three private keys).
    pub fn development() -> SecureBootKeySpec {
        SecureBootKeySpec {
            db_key: SecureBootDbKey::Development,
            db_cert: None,
            kek_cert: None,
            pk_cert: None,
            kek_key: Some(KeySource::Development),
            pk_key: Some(KeySource::Development),
        }
    }
}

/// Where the Secure Boot db private key is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum SecureBootDbKey {
    /// `keys/dev/secureboot-db.key.pem`, generated on first use; never
    /// allowed for a release image.
    Development,
    /// A PKCS#8 PEM RSA private key file.
    File {
        /// The path as written in the image.
        path: String,
    },
    /// An environment variable holding the private key file's path.
    Env {
        /// The variable's name.
        var: String,
    },
    /// An OpenSSL engine (an HSM through `pkcs11`): `sbsign --engine
    /// ENGINE --key KEY`, where KEY is the engine's key identifier (a
    /// PKCS#11 URI), not a file.
    Engine {
        /// The engine name, e.g. `pkcs11`.
        engine: String,
        /// The key identifier the engine understands.
        key: String,
    },
}

/// The device's bootloader, which decides the env variable names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    /// U-Boot, through libubootenv.
    UBoot,
    /// GRUB, through grubenv.
    Grub,
    /// EFI Boot Guard, through libebgenv (images with `boot: loader:
    /// efibootguard`, where the plan sets it).
    Ebg,
}

/// Payload compression inside the `.swu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateCompression {
    /// Stored as built.
    None,
    /// zstd (SWUpdate decompresses while writing).
    Zstd,
}

/// The SWUpdate update's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateSpec {
    /// Bootloader env flavour.
    pub bootloader: Bootloader,
    /// Payload compression.
    pub compression: UpdateCompression,
    /// The sw-description set name (`swupdate -e <set>,<mode>`).
    pub set: String,
    /// Mode names for slot a and slot b.
    pub modes: [String; 2],
    /// Where the boot partition is mounted on the device.
    pub boot_mount: String,
    /// Device paths per partition; default `/dev/disk/by-partlabel/<name>`.
    pub devices: BTreeMap<String, String>,
}

/// The kind of a layer entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum LayerEntryKind {
    /// A regular file from the layer's `files/` tree.
    File {
        /// Source, relative to the project root.
        source: String,
        /// sha256 of the contents.
        sha256: String,
        /// Size in bytes.
        size: u64,
    },
    /// A directory.
    Directory,
    /// A symbolic link; the target is data, never followed at build time.
    Symlink {
        /// Link target.
        target: String,
    },
    /// A character device.
    Char {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    Block {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// One entry a layer puts into the rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerEntry {
    /// Absolute path in the rootfs, such as `/etc/motd`.
    pub path: String,
    /// What it is.
    #[serde(flatten)]
    pub kind: LayerEntryKind,
    /// Permission bits (with setuid, setgid and sticky), shown in octal.
    #[serde(serialize_with = "octal")]
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Extended attributes: values are bytes, shown as lowercase hex.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "hex_values"
    )]
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// A validated `layers/<dir>/conf/layer.yaml` with its file tree.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSpec {
    /// Directory name under `layers/`.
    pub name: String,
    /// The layer directory, relative to the project root.
    pub dir: String,
    /// Yocto's BBFILE_COLLECTIONS: the name other layers depend on.
    pub collection: String,
    /// Yocto's BBFILE_PRIORITY: the higher wins when layers write the same path.
    pub priority: i64,
    /// Yocto's LAYERVERSION: bumped on incompatible change.
    pub version: Option<u32>,
    /// Yocto's LAYERDEPENDS: collections, optionally with a required version.
    pub depends: Vec<(String, Option<u32>)>,
    /// Yocto's LAYERSERIES_COMPAT.
    pub series_compat: Vec<String>,
    /// What the layer adds, sorted by path.
    pub entries: Vec<LayerEntry>,
    /// Paths the layer removes, sorted.
    pub remove: Vec<String>,
    /// Where each removed path was written.
    #[serde(skip)]
    pub remove_at: BTreeMap<String, Origin>,
    /// The parsed `conf/layer.yaml`, kept for positioned diagnostics.
    #[serde(skip)]
    pub conf: std::sync::Arc<crate::yaml::Doc>,
}

/// Everything the load stage produced.
#[derive(Debug, Clone, Serialize)]
pub struct Loaded {
    /// The image.
    pub image: ImageSpec,
    /// Its layers in application order: ascending priority, then listed order.
    pub layers: Vec<LayerSpec>,
    /// The Debian base's lock (`images/<name>.lock`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<LoadedLock>,
}

/// A lock file as loaded: where it is, its hash (recorded in the plan and
/// build.json) and its contents.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedLock {
    /// Relative to the project root (`images/demo.lock`).
    pub path: String,
    pub sha256: String,
    pub lock: crate::lockfile::Lock,
}

/// Serialises a mode as the octal string a reviewer expects ("0755").
fn octal<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// Serialises byte values as lowercase hex: bytes in the model, hex only
/// where a person reads them.
fn hex_values<S: serde::Serializer>(
    m: &BTreeMap<String, Vec<u8>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        map.serialize_entry(k, &hex::encode(v))?;
    }
    map.end()
}

/// Serialises bytes as lowercase hex.
pub fn hex_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}
