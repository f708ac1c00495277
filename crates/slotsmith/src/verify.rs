//! `cargo xtask verify IMAGE.img --boot-key PUB.pem`: checks a golden image
//! from the image file alone, as a manufacturing station or an auditor
//! would, with nothing from the build but the public key.
//!
//! For each slot that has a manifest on the boot partition it checks:
//! the manifest's Ed25519 signature (`verify_strict`) and strict syntax;
//! that the GPT's root and verity partition UUIDs are the ones the
//! manifest names, which are the first and last 128 bits of the root hash
//! (Discoverable Partitions Specification); the dm-verity tree, recomputed
//! from the partition bytes; and the kernel, initrd and device tree on the
//! boot partition against their signed hashes.
//!
//! Every problem is reported with the slot and what exactly differs, and
//! all of them are collected before failing. When a signature does not
//! verify, the (untrusted) manifest is still compared with the image to
//! tell a modified manifest from a corrupt signature.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context};
use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use slotsmith_disk::{fat, gpt, window::Window};
use slotsmith_sign::{verify_manifest, Manifest};
use uuid::Uuid;

use crate::plan::{guid, ATTR_READ_ONLY, SECTOR};

/// What a successful verification saw, for `--json` and logs.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The image file.
    pub image: String,
    /// Slots verified.
    pub slots: Vec<SlotReport>,
    /// Slots without a manifest (an empty slot B).
    pub empty_slots: Vec<String>,
}

/// One verified slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotReport {
    /// `a` or `b`.
    pub slot: String,
    /// Image name and version from the manifest.
    pub image: String,
    /// Version.
    pub version: String,
    /// Anti-rollback counter.
    pub security_version: u64,
    /// The verity root hash, recomputed and signed.
    pub root_hash: String,
    /// Data blocks covered by verity.
    pub data_blocks: u64,
}

/// Makes any write fail: verification must never modify the image.
struct ReadOnly<T>(T);

impl<T: Read> Read for ReadOnly<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<T> Write for ReadOnly<T> {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "verification opens the image read-only",
        ))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<T: Seek> Seek for ReadOnly<T> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

/// Verifies `path` against the boot public key.
pub fn verify_image(path: &Path, key: &VerifyingKey) -> anyhow::Result<VerifyReport> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = &file;
    let table = gpt::read_gpt(&mut reader, SECTOR)
        .with_context(|| format!("GPT of {} is damaged", path.display()))?;
    let find = |name: &str| table.partitions.iter().find(|p| p.name == name);
    let esp = find("esp").context("the GPT has no 'esp' partition")?;
    if esp.type_guid != guid::ESP.parse::<Uuid>()? {
        bail!(
            "partition 'esp' has type {}, not the EFI System Partition type",
            esp.type_guid
        );
    }
    let esp_win = || {
        ReadOnly(Window::new(
            &file,
            esp.first_lba * SECTOR,
            (esp.last_lba + 1 - esp.first_lba) * SECTOR,
        ))
    };

    let mut problems = Vec::new();
    let mut slots = Vec::new();
    let mut empty = Vec::new();
    for slot in ["a", "b"] {
        let manifest_path = format!("/{slot}/manifest");
        let bytes = match fat::read_fat_file(esp_win(), &manifest_path) {
            Ok(b) => b,
            Err(_) if slot == "b" => {
                empty.push(slot.to_string());
                continue;
            }
            Err(e) => {
                problems.push(format!(
                    "slot {slot}: no boot manifest {manifest_path} on the boot partition: {e:#}"
                ));
                continue;
            }
        };
        let sig = match fat::read_fat_file(esp_win(), &format!("/{slot}/manifest.sig")) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!(
                    "slot {slot}: no signature /{slot}/manifest.sig on the boot partition: {e:#}"
                ));
                continue;
            }
        };
        match verify_manifest(&bytes, &sig, key) {
            Ok(m) => {
                let found = check_slot(&file, &table, slot, &m, &esp_win);
                if found.is_empty() {
                    slots.push(SlotReport {
                        slot: slot.into(),
                        image: m.image.clone(),
                        version: m.version.clone(),
                        security_version: m.security_version,
                        root_hash: hex::encode(m.verity_root_hash),
                        data_blocks: m.verity_data_blocks,
                    });
                }
                problems.extend(found.into_iter().map(|p| format!("slot {slot}: {p}")));
            }
            Err(sig_err) => {
                // The signature failed. Look at the untrusted manifest only
                // to say which of the two was modified.
                let msg = match Manifest::parse(&bytes) {
                    Err(e) => format!("slot {slot}: boot manifest is malformed ({e:#}) and its signature does not verify"),
                    Ok(m) => {
                        let found = check_slot(&file, &table, slot, &m, &esp_win);
                        if found.is_empty() {
                            format!(
                                "slot {slot}: boot manifest signature does not verify ({sig_err:#}), though the manifest matches the image: the signature is corrupt or was made by another key"
                            )
                        } else {
                            format!("slot {slot}: boot manifest was modified ({}) and its signature does not verify", found.join("; "))
                        }
                    }
                };
                problems.push(msg);
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} failed verification:\n  {}",
            path.display(),
            problems.join("\n  ")
        );
    }
    Ok(VerifyReport {
        image: path.display().to_string(),
        slots,
        empty_slots: empty,
    })
}

/// Compares one slot of the image with its manifest; returns every
/// difference found.
fn check_slot<W: Read + Write + Seek>(
    file: &File,
    table: &gpt::GptLayout,
    slot: &str,
    m: &Manifest,
    esp: &dyn Fn() -> W,
) -> Vec<String> {
    let mut out = Vec::new();
    if m.slot != slot {
        out.push(format!("the manifest in /{slot}/ is for slot {}", m.slot));
    }
    let root_name = format!("root-{slot}");
    let verity_name = format!("root-{slot}-verity");
    let (Some(root), Some(verity)) = (
        table.partitions.iter().find(|p| p.name == root_name),
        table.partitions.iter().find(|p| p.name == verity_name),
    ) else {
        out.push(format!(
            "the GPT lacks partition {root_name} or {verity_name}"
        ));
        return out;
    };
    let root_types = [guid::ROOT_X86_64, guid::ROOT_ARM64];
    let verity_types = [guid::ROOT_VERITY_X86_64, guid::ROOT_VERITY_ARM64];
    if !root_types
        .iter()
        .any(|t| t.parse::<Uuid>().ok() == Some(root.type_guid))
    {
        out.push(format!(
            "partition {root_name} has type {}, not a DPS root type",
            root.type_guid
        ));
    }
    if !verity_types
        .iter()
        .any(|t| t.parse::<Uuid>().ok() == Some(verity.type_guid))
    {
        out.push(format!(
            "partition {verity_name} has type {}, not a DPS root-verity type",
            verity.type_guid
        ));
    }
    for p in [root, verity] {
        if p.attributes & ATTR_READ_ONLY == 0 {
            out.push(format!(
                "partition {} lacks the read-only attribute (bit 60)",
                p.name
            ));
        }
    }
    let want_root = Uuid::from_slice(&m.verity_root_hash[..16]).unwrap_or_default();
    let want_verity = Uuid::from_slice(&m.verity_root_hash[16..]).unwrap_or_default();
    if m.root_partition_uuid != want_root || m.verity_partition_uuid != want_verity {
        out.push("the manifest's partition UUIDs are not derived from its root hash".into());
    }
    if root.part_guid != m.root_partition_uuid {
        out.push(format!(
            "GPT partition {root_name} has UUID {}, the manifest says {}",
            root.part_guid, m.root_partition_uuid
        ));
    }
    if verity.part_guid != m.verity_partition_uuid {
        out.push(format!(
            "GPT partition {verity_name} has UUID {}, the manifest says {}",
            verity.part_guid, m.verity_partition_uuid
        ));
    }
    // The verity tree, recomputed from the partition bytes.
    let root_size = (root.last_lba + 1 - root.first_lba) * SECTOR;
    let verity_size = (verity.last_lba + 1 - verity.first_lba) * SECTOR;
    let data_size = m.verity_data_blocks.saturating_mul(slotsmith_verity::BLOCK);
    if data_size == 0 || data_size > root_size || m.verity_hash_start_block != 1 {
        out.push(format!("the manifest's verity geometry ({} data blocks, hash start {}) does not fit partition {root_name}", m.verity_data_blocks, m.verity_hash_start_block));
    } else {
        let data = Window::new(file, root.first_lba * SECTOR, data_size);
        let hash = Window::new(file, verity.first_lba * SECTOR, verity_size);
        match slotsmith_verity::verify(data, data_size, hash, &m.verity_root_hash) {
            Ok(info) => {
                if info.salt != m.verity_salt {
                    out.push("the verity superblock salt differs from the manifest's".into());
                }
            }
            Err(e) => out.push(format!(
                "dm-verity check of {root_name} against {verity_name} failed: {e:#}"
            )),
        }
    }
    // The boot files.
    let files = [
        Some(("kernel", &m.kernel)),
        m.initrd.as_ref().map(|f| ("initrd", f)),
        m.dtb.as_ref().map(|f| ("dtb", f)),
    ];
    for (what, f) in files.into_iter().flatten() {
        if !f.path.starts_with(&format!("/{slot}/")) {
            out.push(format!(
                "{what} {} is outside /{slot}/ on the boot partition",
                f.path
            ));
            continue;
        }
        match fat::hash_fat_file(esp(), &f.path) {
            Ok((sha, size)) if sha == f.sha256 && size == f.size => {}
            Ok((sha, size)) => out.push(format!(
                "{what} {} does not match the manifest (sha256 {}, {size} bytes; the manifest has {}, {} bytes)",
                f.path,
                hex::encode(sha),
                hex::encode(f.sha256),
                f.size
            )),
            Err(e) => out.push(format!("{what} {} cannot be read from the boot partition: {e:#}", f.path)),
        }
    }
    out
}

/// What a successful `.swu` verification saw.
#[derive(Debug, Clone, Serialize)]
pub struct SwuReport {
    /// The update file.
    pub update: String,
    /// The version it installs.
    pub version: String,
    /// Accepted hardware revisions.
    pub hardware_compatibility: Vec<String>,
    /// The CMS signer's subject.
    pub signer: String,
    /// Collections as `set,mode -> slot`.
    pub collections: Vec<String>,
    /// Members in archive order.
    pub members: Vec<String>,
}

/// Verifies a `.swu` from the file alone: the member order and every cpio
/// checksum, the CMS signature over sw-description against the trusted
/// certificate (the signer itself or a CA that issued it), every sha256
/// that sw-description lists, and that each slot payload fits its target.
pub fn verify_swu(path: &Path, cert: &Path) -> anyhow::Result<SwuReport> {
    // Container structure and checksums, then the signature, then (only
    // once authenticated) sw-description and the sha256 of every member.
    let mut signer = String::new();
    let contents = slotsmith_swu::read_swu_authenticated(path, |text, sig| {
        signer =
            slotsmith_cms::verify_detached(sig, text, cert).context("sw-description signature")?;
        Ok(())
    })
    .with_context(|| format!("{} is not a valid update", path.display()))?;
    let mut problems = Vec::new();
    let mut collections = Vec::new();
    for c in &contents.description.collections {
        collections.push(format!("{},{} -> slot {}", c.set, c.mode, c.slot));
        for p in &c.payloads {
            match (&p.target, p.fit) {
                (slotsmith_swu::Target::Raw { device }, Some(fit)) if fit.installed_size > fit.capacity => problems.push(format!(
                    "slot {}: payload {} needs {} bytes but {device} holds {}",
                    c.slot, p.filename, fit.installed_size, fit.capacity
                )),
                (slotsmith_swu::Target::Raw { device }, None) => problems.push(format!(
                    "slot {}: payload {} for {device} carries no size information, so it cannot be checked against the slot",
                    c.slot, p.filename
                )),
                _ => {}
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} failed verification:\n  {}",
            path.display(),
            problems.join("\n  ")
        );
    }
    Ok(SwuReport {
        update: path.display().to_string(),
        version: contents.description.version.clone(),
        hardware_compatibility: contents.description.hardware_compatibility.clone(),
        signer,
        collections,
        members: contents.entries.iter().map(|e| e.name.clone()).collect(),
    })
}
