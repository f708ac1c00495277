//! The plan stage: a pure, deterministic function from the loaded inputs to
//! everything the build will do, as one serialisable value.
//!
//! **Architecture invariant:** this module reads no files, runs no tools and
//! asks no clock. Every byte offset, partition UUID, volume id, hash seed and
//! output name is decided here, derived from the image's name, version and
//! the inputs' hashes, never random. `cargo xtask plan` prints the plan and
//! `insta` snapshots it for every `images/*.yaml`; `build.json` records its
//! sha256, so two builds with the same plan hash had the same inputs.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::diag::{Diagnostic, Diagnostics};
use crate::spec::*;

pub mod chain;
pub mod files;
pub mod previous;
pub mod tools;
mod types;

pub use files::{BootSource, PayloadTarget, PlanBootFile, PlanPayload, PlanSlotFile};
pub use previous::{with_previous, PlanPrevious};
pub use tools::{Invocation, PlanTools};
pub use types::*;

/// Bump when the plan's meaning changes.
pub const PLAN_SCHEMA: u32 = 1;
/// Logical sector size of the disk image.
pub const SECTOR: u64 = crate::layout::SECTOR;
/// dm-verity data and hash block size (cryptsetup's default).
pub const VERITY_BLOCK: u64 = 4096;
/// squashfs block size.
pub const SQUASHFS_BLOCK: u64 = 128 << 10;

/// Discoverable Partitions Specification type GUIDs.
pub mod guid {
    /// EFI System Partition.
    pub const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    /// Generic Linux data.
    pub const LINUX_DATA: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
    /// Root, x86-64.
    pub const ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
    /// Root verity, x86-64.
    pub const ROOT_VERITY_X86_64: &str = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
    /// Root, arm64.
    pub const ROOT_ARM64: &str = "b921b045-1df0-41c3-af44-4c6f280d3fae";
    /// Root verity, arm64.
    pub const ROOT_VERITY_ARM64: &str = "df3300ce-d69f-4c92-978c-9bfb0f38d820";
    /// Microsoft basic data: a slot's FAT boot partition (not an ESP, so
    /// the firmware never treats it as a place to boot from).
    pub const BASIC_DATA: &str = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7";
}

/// GPT attribute bit 60: read-only (DPS: set on root and verity partitions).
pub const ATTR_READ_ONLY: u64 = 1 << 60;

impl Plan {
    /// sha256 of the plan's canonical JSON.
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }

    /// The partition with `name`.
    pub fn partition(&self, name: &str) -> Option<&PlanPartition> {
        self.disk.partitions.iter().find(|p| p.name == name)
    }
}

/// A UUID derived from the image identity and a purpose string: the first
/// 128 bits of sha256 over length-prefixed parts, marked as an RFC 9562
/// version 8 (custom) UUID. Deterministic across builds, distinct between
/// images, versions and partitions.
pub fn derive_uuid(parts: &[&str]) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"slotsmith uuid v1");
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_custom_bytes(b).into_uuid()
}

/// Every file of the output directory, sorted by name.
fn output_files(
    o: &PlanOutputs,
    update: &PlanUpdate,
    boot: &[PlanBootFile],
    slots: &[PlanSlot],
    audited: bool,
    chain: Option<&chain::PlanChain>,
) -> Vec<PlanOutput> {
    let mut v: Vec<PlanOutput> = [
        &o.image,
        &o.bmap,
        &o.rootfs,
        &o.sbom,
        &o.sums,
        &o.build_json,
        &o.boot_public_key,
        &o.update_cert,
        &o.provenance,
        &o.provenance_public_key,
        &update.file,
    ]
    .into_iter()
    .map(|n| PlanOutput {
        name: n.clone(),
        optional: false,
    })
    .collect();
    // The reviewer's index (`readme.rs`), written by the record stage.
    v.push(PlanOutput {
        name: crate::readme::OUTPUT.into(),
        optional: false,
    });
    v.extend(boot.iter().map(|f| PlanOutput {
        name: f.output.clone(),
        optional: f.optional,
    }));
    for s in slots {
        for n in [&s.verity_output, &s.manifest_output, &s.signature_output] {
            v.push(PlanOutput {
                name: n.clone(),
                optional: false,
            });
        }
    }
    if let Some(c) = chain {
        v.push(PlanOutput {
            name: c.loader_output.clone(),
            optional: false,
        });
        for (f, optional) in chain::enrolment_files() {
            v.push(PlanOutput {
                name: format!("{}/{f}", c.secureboot_dir),
                optional,
            });
        }
        for p in &c.partitions {
            for n in [&p.uki_output, &p.env_output] {
                v.push(PlanOutput {
                    name: n.clone(),
                    optional: false,
                });
            }
        }
    }
    if audited {
        for r in ["audit/report.md", "audit/report.json", "audit/report.sarif"] {
            v.push(PlanOutput {
                name: r.into(),
                optional: false,
            });
        }
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// A slot's kernel command line: the image's arguments, the hardening
/// arguments not already there, then the slot and `ro`.
pub fn slot_cmdline(image_args: &str, hardening_args: &[String], slot: &str) -> String {
    let mut parts: Vec<String> = image_args.split_whitespace().map(str::to_string).collect();
    for a in hardening_args {
        if !parts.contains(a) {
            parts.push(a.clone());
        }
    }
    parts.push(format!("slotsmith.slot={slot}"));
    parts.push("ro".into());
    parts.join(" ")
}

/// The placeholder in a chain slot's command line that the build replaces
/// with the slot's verity root hash (known only once the tree is built).
pub const ROOT_HASH_PLACEHOLDER: &str = "{root-hash}";

/// A chain slot's command line, signed into its UKI: the slot's command
/// line, then the root hash and security version the init checks against
/// the signed manifest, and `panic=5` so a verity failure
/// (`panic_on_corruption`) or an init that refuses becomes a reboot the
/// boot counter sees, not a hang.
pub fn chain_cmdline(slot_cmdline: &str, security_version: u64) -> String {
    format!(
        "{slot_cmdline} slotsmith.roothash={ROOT_HASH_PLACEHOLDER} slotsmith.svn={security_version} panic=5"
    )
}

fn align_up(n: u64, a: u64) -> Option<u64> {
    n.checked_add(a - 1).map(|x| x / a * a)
}

/// Plans a build. `env_epoch` is `SOURCE_DATE_EPOCH` from the environment,
/// which wins over the image file's `source-date-epoch`.
pub fn plan(loaded: &Loaded, env_epoch: Option<u64>) -> Result<Plan, Diagnostics> {
    let img = &loaded.image;
    let mut diags = Diagnostics::default();
    let diag = |key: &str, message: String| Diagnostic {
        file: img.file.clone().into(),
        line: 0,
        col: 0,
        key: key.to_string(),
        message,
    };
    let Some(sde) = env_epoch.or(img.source_date_epoch) else {
        diags.push(diag(
            "source-date-epoch",
            "no SOURCE_DATE_EPOCH: set it in the environment (e.g. to the last commit time) or set source-date-epoch in the image".into(),
        ));
        return Err(diags);
    };
    let ident = |purpose: &str| derive_uuid(&[&img.name, &img.version, purpose]);

    let l = &img.layout;
    let a = l.alignment;
    let (root_type, verity_type) = match img.arch {
        Arch::X86_64 => (guid::ROOT_X86_64, guid::ROOT_VERITY_X86_64),
        Arch::Arm64 => (guid::ROOT_ARM64, guid::ROOT_VERITY_ARM64),
    };
    let slot = align_up(l.slot, a);
    let esp = align_up(l.esp, a);
    let data = align_up(l.data, a);
    let verity = slot.and_then(|s| align_up(slotsmith_verity::hash_size(s), a));
    let (Some(slot), Some(esp), Some(data), Some(verity)) = (slot, esp, data, verity) else {
        diags.push(diag("layout", "sizes overflow".into()));
        return Err(diags);
    };
    let b_content = if l.fill_slot_b {
        Content::Rootfs
    } else {
        Content::Empty
    };
    use crate::layout::{root_partition, verity_partition, DATA, ESP, SLOTS};
    let (ra, rav, rb, rbv) = (
        root_partition(SLOTS[0]),
        verity_partition(SLOTS[0]),
        root_partition(SLOTS[1]),
        verity_partition(SLOTS[1]),
    );
    let boot_size = align_up(l.boot, a).unwrap_or(u64::MAX);
    let (ba, bb) = (
        chain::boot_partition(SLOTS[0]),
        chain::boot_partition(SLOTS[1]),
    );
    let mut parts: Vec<(&str, &str, u64, u64, Content)> =
        vec![(ESP, guid::ESP, esp, 0, Content::Esp)];
    if img.chain.is_some() {
        parts.push((
            ba.as_str(),
            guid::BASIC_DATA,
            boot_size,
            0,
            Content::SlotBoot,
        ));
        parts.push((
            bb.as_str(),
            guid::BASIC_DATA,
            boot_size,
            0,
            Content::SlotBoot,
        ));
    }
    parts.extend([
        (
            ra.as_str(),
            root_type,
            slot,
            ATTR_READ_ONLY,
            Content::Rootfs,
        ),
        (
            rav.as_str(),
            verity_type,
            verity,
            ATTR_READ_ONLY,
            Content::VerityReserved,
        ),
        (rb.as_str(), root_type, slot, ATTR_READ_ONLY, b_content),
        (
            rbv.as_str(),
            verity_type,
            verity,
            ATTR_READ_ONLY,
            Content::VerityReserved,
        ),
        (DATA, guid::LINUX_DATA, data, 0, Content::Data),
    ]);
    // The first partition starts at the first aligned offset after the
    // primary GPT (LBA 34); each next one at the next aligned offset.
    let mut offset = align_up(crate::layout::GPT_PRIMARY_SECTORS * SECTOR, a).unwrap_or(a);
    let mut partitions = Vec::new();
    for (i, (name, ty, size, attributes, content)) in parts.into_iter().enumerate() {
        // The loader bounds every size; the sums are still checked, so a
        // layout from any other source fails as a diagnostic, not a panic.
        let Some(end) = offset.checked_add(size) else {
            diags.push(diag(
                "layout",
                format!("partition {name} ends beyond 2^64 bytes"),
            ));
            return Err(diags);
        };
        partitions.push(PlanPartition {
            number: i as u32 + 1,
            name: name.to_string(),
            type_guid: ty.parse().expect("constant GUIDs parse"),
            uuid: ident(&format!("partition {name}")),
            first_lba: offset / SECTOR,
            last_lba: end / SECTOR - 1,
            offset,
            size,
            attributes,
            content,
            uuid_from_root_hash: matches!(content, Content::Rootfs)
                || (matches!(content, Content::VerityReserved) && (*name == rav || l.fill_slot_b)),
        });
        offset = end;
    }
    // Room for the backup GPT (33 sectors), rounded to the alignment.
    let Some(disk_size) = offset
        .checked_add(crate::layout::GPT_BACKUP_SECTORS * SECTOR)
        .and_then(|n| align_up(n, a))
    else {
        diags.push(diag("layout", "sizes overflow".into()));
        return Err(diags);
    };

    let (cache_key, debian_arch) = match &img.base {
        BaseSpec::Debian {
            suite,
            variant,
            packages,
            mirror,
        } => {
            let key = serde_json::json!({
                "tool": "mmdebstrap",
                "suite": suite,
                "variant": variant,
                "packages": packages,
                "mirror": mirror,
                "arch": img.arch.debian(),
                "source_date_epoch": sde,
                "lock": loaded.lock.as_ref().map(|l| &l.sha256),
            });
            (
                Some(hex::encode(Sha256::digest(key.to_string()))),
                Some(img.arch.debian().to_string()),
            )
        }
        _ => (None, None),
    };

    let layers = loaded
        .layers
        .iter()
        .map(|l| PlanLayer {
            name: l.name.clone(),
            collection: l.collection.clone(),
            priority: l.priority,
            remove: l.remove.clone(),
            remove_at: l.remove_at.clone(),
            entries: l.entries.clone(),
        })
        .collect();

    let rootfs_name = match img.filesystem {
        Filesystem::Squashfs => "rootfs.squashfs",
        Filesystem::Ext4 => "rootfs.ext4",
    };
    let release = format!(
        "NAME={}\nVERSION={}\nBOARD={}\nHARDWARE_COMPATIBILITY={}\n",
        img.name,
        img.version,
        img.board,
        img.hardware_compatibility.join(" ")
    );
    let volume_id = {
        let d = Sha256::digest(format!("{}\0{}\0esp volume id", img.name, img.version));
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    };

    // Both slots always get a verity tree and a signed manifest: the update
    // needs them for either slot. `filled` says whether the golden image
    // writes the slot.
    // The hardening rules' kernel arguments are a pure function of the rules
    // and the profile, so every slot's final command line is decided here.
    let hardening_args = slotsmith_policy::kernel_args(
        &img.rules,
        img.profile,
        &slotsmith_policy::audit::waived_ids(&img.waivers),
    );
    let boot_files = files::boot_files(&img.kernel.source, img.chain.is_some());
    let slots: Vec<PlanSlot> = crate::layout::SLOTS
        .iter()
        .map(|slot| {
            let salt = Sha256::digest(format!(
                "slotsmith verity salt v1\0{}\0{}\0{slot}",
                img.name, img.version
            ));
            PlanSlot {
                name: slot.to_string(),
                filled: *slot == "a" || l.fill_slot_b,
                root_partition: crate::layout::root_partition(slot),
                verity_partition: crate::layout::verity_partition(slot),
                verity_salt: salt.into(),
                verity_uuid: ident(&format!("verity superblock {slot}")),
                cmdline: {
                    let c = slot_cmdline(&img.kernel.cmdline, &hardening_args, slot);
                    if img.chain.is_some() {
                        chain_cmdline(&c, img.security_version)
                    } else {
                        c
                    }
                },
                esp_dir: crate::layout::esp_dir(slot),
                verity_output: crate::layout::verity_output(slot),
                manifest_output: crate::layout::manifest_output(slot),
                signature_output: crate::layout::signature_output(slot),
                esp_files: if img.chain.is_some() {
                    // The chain keeps each slot's files on its own boot
                    // partition.
                    Vec::new()
                } else {
                    files::slot_esp_files(
                        &crate::layout::esp_dir(slot),
                        &boot_files,
                        &crate::layout::manifest_output(slot),
                        &crate::layout::signature_output(slot),
                        crate::sbom::OUTPUT,
                    )
                },
            }
        })
        .collect();
    let chain = img.chain.as_ref().map(|c| {
        chain::plan_chain(
            c,
            &img.secureboot_key,
            &chain::DeviceFacts {
                name: &img.name,
                version: &img.version,
                security_version: img.security_version,
                board: &img.board,
                revision: img
                    .hardware_compatibility
                    .first()
                    .map_or("", String::as_str),
                set: &img.update.set,
                modes: &img.update.modes,
            },
            &slots
                .iter()
                .map(|s| (s.name.clone(), s.filled))
                .collect::<Vec<_>>(),
            |slot| {
                let d = Sha256::digest(format!(
                    "{}\0{}\0boot volume id {slot}",
                    img.name, img.version
                ));
                u32::from_le_bytes([d[0], d[1], d[2], d[3]])
            },
        )
    });

    let mut update_partitions = crate::layout::slot_partitions();
    if let Some(c) = &chain {
        update_partitions.extend(c.partitions.iter().map(|p| p.partition.clone()));
    }
    let mut devices = std::collections::BTreeMap::new();
    for p in update_partitions {
        let d = img
            .update
            .devices
            .get(&p)
            .cloned()
            .unwrap_or_else(|| format!("/dev/disk/by-partlabel/{p}"));
        devices.insert(p, d);
    }
    let collections: Vec<PlanCollection> = slots
        .iter()
        .map(|s: &PlanSlot| PlanCollection {
            slot: s.name.clone(),
            payloads: {
                let names = files::SlotNames {
                    slot: &s.name,
                    root_partition: &s.root_partition,
                    verity_partition: &s.verity_partition,
                    verity_output: &s.verity_output,
                    manifest_output: &s.manifest_output,
                    signature_output: &s.signature_output,
                    sbom_output: crate::sbom::OUTPUT,
                };
                match chain
                    .as_ref()
                    .and_then(|c| c.partitions.iter().find(|p| p.slot == s.name))
                {
                    Some(bp) => files::chain_slot_payloads(&names, rootfs_name, bp),
                    None => files::slot_payloads(
                        &names,
                        &img.update.boot_mount,
                        rootfs_name,
                        &boot_files,
                    ),
                }
            },
        })
        .collect();
    let members = files::members(
        &collections
            .iter()
            .map(|c| c.payloads.clone())
            .collect::<Vec<_>>(),
    )
    .into_iter()
    .map(|(output, optional)| PlanMember { output, optional })
    .collect();
    let update = PlanUpdate {
        file: format!("{}-{}.swu", img.name, img.version),
        // The chain's loader decides how an update switches slots.
        bootloader: if chain.is_some() {
            Bootloader::Ebg
        } else {
            img.update.bootloader
        },
        compression: img.update.compression,
        set: img.update.set.clone(),
        modes: img.update.modes.clone(),
        boot_mount: img.update.boot_mount.clone(),
        devices,
        key: img.update_key.clone(),
        root_partition_size: slot,
        verity_partition_size: verity,
        collections,
        members,
    };

    let data_part = partitions
        .iter()
        .find(|p| p.content == Content::Data)
        .map(|p| (p.offset, p.size))
        .unwrap_or_default();
    let rootfs_ext4_uuid = (img.filesystem == Filesystem::Ext4).then(|| ident("rootfs ext4"));
    let data_uuid = ident("data ext4");
    let tools = tools::plan_tools(&tools::ToolInputs {
        base: &img.base,
        locked: loaded.lock.is_some(),
        debian_arch: debian_arch.as_deref(),
        filesystem: img.filesystem,
        compression: (img.filesystem == Filesystem::Squashfs).then_some(img.compression),
        block_size: SQUASHFS_BLOCK,
        slot_size: slot,
        ext4_uuid: rootfs_ext4_uuid.map(|u| u.to_string()),
        data_label: crate::layout::DATA,
        data_uuid: data_uuid.to_string(),
        data_offset: data_part.0,
        data_size: data_part.1,
        epoch: sde,
    });
    // The base's cache key also covers how mmdebstrap is run (flags,
    // hooks): a changed invocation must not reuse a tarball made by the
    // old one.
    let cache_key = cache_key.map(|k| {
        let inv = serde_json::to_string(&tools.base).unwrap_or_default();
        hex::encode(Sha256::digest(format!("{k}\0{inv}")))
    });
    let mut outputs = PlanOutputs {
        dir: img.name.clone(),
        image: format!("{}.img", img.name),
        bmap: format!("{}.img.bmap", img.name),
        rootfs: rootfs_name.into(),
        sbom: crate::sbom::OUTPUT.into(),
        sums: "SHA256SUMS".into(),
        build_json: "build.json".into(),
        boot_public_key: "boot.pub.pem".into(),
        update_cert: "update.cert.pem".into(),
        provenance: "provenance.dsse.json".into(),
        provenance_public_key: "provenance.pub.pem".into(),
        files: Vec::new(),
    };
    outputs.files = output_files(
        &outputs,
        &update,
        &boot_files,
        &slots,
        !img.rules.is_empty(),
        chain.as_ref(),
    );
    let plan = Plan {
        schema: PLAN_SCHEMA,
        image: PlanImage {
            file: img.file.clone(),
            name: img.name.clone(),
            version: img.version.clone(),
            arch: img.arch,
            board: img.board.clone(),
            hardware_compatibility: img.hardware_compatibility.clone(),
        },
        source_date_epoch: sde,
        base: PlanBase {
            spec: img.base.clone(),
            cache_key,
            debian_arch,
            lock: loaded.lock.as_ref().map(|l| PlanLock {
                path: l.path.clone(),
                sha256: l.sha256.clone(),
                packages: l.lock.packages.clone(),
            }),
        },
        layers,
        rootfs: PlanRootfs {
            filesystem: img.filesystem,
            compression: (img.filesystem == Filesystem::Squashfs).then_some(img.compression),
            block_size: (img.filesystem == Filesystem::Squashfs).then_some(SQUASHFS_BLOCK),
            max_size: slot,
            max_size_at: l.slot_at.clone(),
            ext4_uuid: rootfs_ext4_uuid,
        },
        disk: PlanDisk {
            sector_size: SECTOR,
            size: disk_size,
            guid: ident("disk"),
            alignment: a,
            partitions,
        },
        esp: PlanEsp {
            label: "ESP".into(),
            volume_id,
            files: vec![PlanEspFile {
                path: "slotsmith/release".into(),
                text: release,
            }],
        },
        data: PlanData {
            label: crate::layout::DATA.into(),
            uuid: data_uuid,
        },
        boot: PlanBoot {
            release: img.release,
            security_version: img.security_version,
            kernel: img.kernel.clone(),
            files: boot_files,
            key: img.boot_key.clone(),
            slots,
        },
        hardening: PlanHardening {
            profile: img.profile,
            policies: img.policies.clone(),
            policy_set_sha256: slotsmith_policy::audit::policy_set_sha256(&img.rules),
            rules: img.rules.clone(),
            waivers: img.waivers.clone(),
        },
        update,
        provenance_key: img.provenance_key.clone(),
        outputs,
        tools,
        chain,
        previous: None,
    };
    diags.into_result(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_cmdlines_add_hardening_arguments_once_then_the_slot() {
        let args = vec!["lockdown=integrity".to_string(), "quiet".to_string()];
        assert_eq!(
            slot_cmdline("console=ttyS0 quiet", &args, "b"),
            "console=ttyS0 quiet lockdown=integrity slotsmith.slot=b ro"
        );
        assert_eq!(slot_cmdline("", &[], "a"), "slotsmith.slot=a ro");
    }

    #[test]
    fn derived_uuids_are_stable_and_distinct() {
        let a = derive_uuid(&["demo", "1.0.0", "disk"]);
        assert_eq!(a, derive_uuid(&["demo", "1.0.0", "disk"]));
        assert_ne!(a, derive_uuid(&["demo", "1.0.1", "disk"]));
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        assert_ne!(derive_uuid(&["ab", "c"]), derive_uuid(&["a", "bc"]));
        assert_eq!(a.get_version_num(), 8);
    }
}
