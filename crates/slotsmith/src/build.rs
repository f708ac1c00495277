//! The build stage: performs a [`Plan`], and nothing else.
//!
//! **Architecture invariant:** build reads only the plan (and the input
//! files the plan names, checking their hashes); every decision was made in
//! [`crate::plan`]. It is the only stage with side effects.
//!
//! **Atomic outputs:** everything is written into a fresh temporary
//! directory beside `out/<name>/` and published with one rename (an atomic
//! exchange when an older build exists), so a failed or interrupted build
//! never leaves a new or half-written artifact under `out/`.
//!
//! **Rootless:** the base is imported into an in-memory tree (see
//! `slotsmith-rootfs`); owners, modes, device nodes and xattrs travel as
//! data into the filesystem image, never through the host filesystem.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::load::{hash_file, human};
use crate::plan::{Content, Plan};
use crate::progress::{mib, Progress};
use crate::spec::{BaseSpec, DirOwnership, Filesystem, LayerEntryKind};
use crate::tool::Tool;
use slotsmith_disk as disk;
use slotsmith_rootfs as rootfs;
use slotsmith_rootfs::path::RelPath;
use slotsmith_rootfs::tree::{Kind, Meta, Node, Tree};

/// Where a build reads and writes.
pub struct BuildOptions {
    /// The project root: layer sources in the plan are relative to it.
    pub project_root: PathBuf,
    /// `out/`: the image's outputs go to `out/<name>/`.
    pub out_root: PathBuf,
    /// Scratch space; `<work_root>/<name>/` is wiped at the start of a build.
    pub work_root: PathBuf,
    /// Cache for Debian base tarballs.
    pub cache_dir: PathBuf,
}

/// One output file.
#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    /// File name inside the output directory.
    pub name: String,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A partition as built.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltPartition {
    /// GPT entry number.
    pub number: u32,
    /// GPT name.
    pub name: String,
    /// Type GUID.
    pub type_guid: String,
    /// Partition GUID.
    pub uuid: String,
    /// Byte offset.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// GPT attributes.
    pub attributes: u64,
    /// What it holds.
    pub content: Content,
}

/// Facts about the rootfs image.
#[derive(Debug, Clone, Serialize)]
pub struct RootfsFacts {
    /// squashfs or ext4.
    pub filesystem: Filesystem,
    /// Image size in bytes.
    pub size: u64,
    /// Slot size in bytes.
    pub slot_size: u64,
    /// Number of entries in the tree.
    pub entries: u64,
    /// Bytes of regular-file contents.
    pub file_bytes: u64,
}

/// `build.json`: what was built, deterministic for the same plan.
#[derive(Debug, Clone, Serialize)]
pub struct BuildRecord {
    /// Format version of this record.
    pub schema: u32,
    /// Image name.
    pub image: String,
    /// Image version.
    pub version: String,
    /// The image file, relative to the project root.
    pub image_file: String,
    /// sha256 of the plan's canonical JSON.
    pub plan_sha256: String,
    /// The timestamp clamp used.
    pub source_date_epoch: u64,
    /// Every artifact except build.json and SHA256SUMS.
    pub artifacts: Vec<Artifact>,
    /// The partition table.
    pub partitions: Vec<BuiltPartition>,
    /// Fingerprint of the boot public key (sha256 of the raw key).
    pub boot_key: String,
    /// Anti-rollback counter in the manifests.
    pub security_version: u64,
    /// Each filled slot's verity parameters and partitions.
    pub slots: Vec<SlotRecord>,
    /// The rootfs image.
    pub rootfs: RootfsFacts,
}

/// A filled slot in build.json.
#[derive(Debug, Clone, Serialize)]
pub struct SlotRecord {
    /// `a` or `b`.
    pub slot: String,
    /// Whether the golden image holds this slot (an update can fill either).
    pub filled: bool,
    /// dm-verity root hash.
    pub root_hash: String,
    /// dm-verity salt.
    pub salt: String,
    /// Data blocks covered.
    pub data_blocks: u64,
    /// Hash block where the tree starts.
    pub hash_start_block: u64,
    /// Root partition name, offset and size.
    pub root_partition: PartRef,
    /// Verity partition name, offset and size.
    pub verity_partition: PartRef,
    /// Root partition UUID (first half of the root hash).
    pub root_uuid: String,
    /// Verity partition UUID (second half of the root hash).
    pub verity_uuid: String,
}

/// A partition reference in build.json.
#[derive(Debug, Clone, Serialize)]
pub struct PartRef {
    /// GPT name.
    pub name: String,
    /// Byte offset.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A boot file (kernel, initrd, dtb) copied to out/ and the ESP.
struct BootFile {
    /// `kernel`, `initrd` or `dtb`.
    role: &'static str,
    /// File name in out/ and in each slot's ESP directory.
    output: String,
    /// sha256.
    sha256: [u8; 32],
    /// Size in bytes.
    size: u64,
}

/// A signed slot.
struct SignedSlot {
    filled: bool,
    record: SlotRecord,
    root_uuid: uuid::Uuid,
    verity_uuid: uuid::Uuid,
    manifest: Vec<u8>,
    signature: [u8; 64],
}

fn partition_uuid(p: &crate::plan::PlanPartition, slots: &[SignedSlot]) -> uuid::Uuid {
    for s in slots.iter().filter(|s| s.filled) {
        if p.name == s.record.root_partition.name {
            return s.root_uuid;
        }
        if p.name == s.record.verity_partition.name {
            return s.verity_uuid;
        }
    }
    p.uuid
}

/// Finds the kernel, initrd and dtb, copies them to out/ and hashes them.
fn boot_files(
    plan: &Plan,
    opts: &BuildOptions,
    tree: &Tree,
    out: &Path,
) -> anyhow::Result<Vec<BootFile>> {
    use crate::spec::KernelSource;
    let mut sources: Vec<(&'static str, String, PathBuf)> = Vec::new();
    match &plan.boot.kernel.source {
        KernelSource::FromRootfs => {
            let kernels: Vec<&RelPath> = tree
                .iter()
                .filter(|(p, n)| {
                    p.as_str().starts_with("boot/vmlinuz-")
                        && !matches!(n.kind, Kind::Symlink { .. } | Kind::Dir)
                })
                .map(|(p, _)| p)
                .collect();
            let kernel = match kernels.as_slice() {
                [k] => *k,
                [] => bail!("no kernel in the rootfs (/boot/vmlinuz-*): install one (e.g. linux-image-amd64) or set kernel.image in {}", plan.image.file),
                many => bail!(
                    "several kernels in the rootfs ({}): set kernel.image in {}",
                    many.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "),
                    plan.image.file
                ),
            };
            let version = kernel
                .as_str()
                .trim_start_matches("boot/vmlinuz-")
                .to_string();
            sources.push(("kernel", "vmlinuz".into(), tree_content(tree, kernel)?));
            let initrd = RelPath::parse(&format!("boot/initrd.img-{version}"))?;
            if tree.get(&initrd).is_some() {
                sources.push(("initrd", "initrd.img".into(), tree_content(tree, &initrd)?));
            }
        }
        KernelSource::Files { image, initrd, dtb } => {
            sources.push((
                "kernel",
                "vmlinuz".into(),
                resolve(&opts.project_root, &image.path),
            ));
            if let Some(i) = initrd {
                sources.push((
                    "initrd",
                    "initrd.img".into(),
                    resolve(&opts.project_root, &i.path),
                ));
            }
            if let Some(d) = dtb {
                sources.push((
                    "dtb",
                    "board.dtb".into(),
                    resolve(&opts.project_root, &d.path),
                ));
            }
        }
    }
    let mut files = Vec::new();
    for (role, output, src) in sources {
        let mut input = rootfs::overlay::read_source_file(&src)
            .with_context(|| format!("opening {role} {}", src.display()))?;
        let dest = out.join(&output);
        let mut f =
            File::create_new(&dest).with_context(|| format!("creating {}", dest.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = std::io::Read::read(&mut input, &mut buf)
                .with_context(|| format!("reading {role} {}", src.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            f.write_all(&buf[..n])
                .with_context(|| format!("writing {}", dest.display()))?;
            size += n as u64;
        }
        if size == 0 {
            bail!("{role} {} is empty", src.display());
        }
        files.push(BootFile {
            role,
            output,
            sha256: h.finalize().into(),
            size,
        });
    }
    Ok(files)
}

/// The on-disk contents of a regular file (or hardlink) in the tree.
fn tree_content(tree: &Tree, p: &RelPath) -> anyhow::Result<PathBuf> {
    let mut node = tree
        .get(p)
        .with_context(|| format!("{p} is not in the rootfs"))?;
    if let Kind::Hardlink { target } = &node.kind {
        node = tree
            .get(target)
            .with_context(|| format!("{p} links to missing {target}"))?;
    }
    match &node.kind {
        Kind::File { content, .. } => Ok(content.path().to_path_buf()),
        _ => bail!("{p} is not a regular file"),
    }
}

/// Builds each filled slot's verity tree and signs its manifest.
fn sign_slots(
    plan: &Plan,
    rootfs: &Path,
    rootfs_size: u64,
    boot: &[BootFile],
    out: &Path,
    signer: &crate::signing::BootSigner,
    cmdline: &str,
) -> anyhow::Result<Vec<SignedSlot>> {
    if rootfs_size == 0 || !rootfs_size.is_multiple_of(slotsmith_verity::BLOCK) {
        bail!("the rootfs image is {rootfs_size} bytes, not a whole number of 4096-byte blocks");
    }
    let data = File::open(rootfs).with_context(|| format!("opening {}", rootfs.display()))?;
    let mut signed = Vec::new();
    for s in &plan.boot.slots {
        let mut salt = [0u8; 32];
        hex::decode_to_slice(&s.verity_salt, &mut salt)
            .context("plan has a malformed verity salt")?;
        let hash_path = out.join(&s.verity_output);
        let mut hash = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&hash_path)
            .with_context(|| format!("creating {}", hash_path.display()))?;
        let params = slotsmith_verity::VerityParams {
            salt,
            uuid: s.verity_uuid,
        };
        let info = slotsmith_verity::format_file(&data, rootfs_size, &mut hash, &params)
            .with_context(|| format!("building the verity tree of slot {}", s.name))?;
        let part = |name: &str| -> anyhow::Result<PartRef> {
            let p = plan
                .partition(name)
                .with_context(|| format!("plan lacks partition {name}"))?;
            Ok(PartRef {
                name: name.to_string(),
                offset: p.offset,
                size: p.size,
            })
        };
        let (root_part, verity_part) = (part(&s.root_partition)?, part(&s.verity_partition)?);
        if info.hash_size > verity_part.size {
            bail!(
                "the verity tree of slot {} ({} bytes) does not fit {} ({} bytes)",
                s.name,
                info.hash_size,
                verity_part.name,
                verity_part.size
            );
        }
        // Discoverable Partitions Specification: the root partition's UUID
        // is the first 128 bits of the root hash, the verity partition's the
        // last 128 bits, so a booting system can find the pair from the
        // signed root hash alone.
        let root_uuid = uuid::Uuid::from_slice(&info.root_hash[..16])?;
        let verity_uuid = uuid::Uuid::from_slice(&info.root_hash[16..])?;
        let file_ref = |f: &BootFile| slotsmith_sign::FileRef {
            path: format!("{}/{}", s.esp_dir, f.output),
            sha256: f.sha256,
            size: f.size,
        };
        let find = |role: &str| boot.iter().find(|f| f.role == role).map(file_ref);
        let manifest = slotsmith_sign::Manifest {
            image: plan.image.name.clone(),
            version: plan.image.version.clone(),
            security_version: plan.boot.security_version,
            slot: s.name.clone(),
            // Signed record of the slots this golden image fills (manifest
            // v2), so verify tells a slot built empty from a deleted
            // manifest. Plan order is a, b: ascending, as the format wants.
            golden_slots: Some(
                plan.boot
                    .slots
                    .iter()
                    .filter(|p| p.filled)
                    .map(|p| p.name.clone())
                    .collect(),
            ),
            kernel: find("kernel").context("no kernel")?,
            initrd: find("initrd"),
            dtb: find("dtb"),
            cmdline: manifest_cmdline(cmdline, s),
            verity_root_hash: info.root_hash,
            verity_salt: info.salt,
            verity_data_blocks: info.data_blocks,
            verity_hash_start_block: info.hash_start_block,
            root_partition_uuid: root_uuid,
            verity_partition_uuid: verity_uuid,
        };
        let (bytes, signature) =
            slotsmith_sign::sign_manifest(&manifest, signer.signer.as_ref())
                .with_context(|| format!("signing the boot manifest of slot {}", s.name))?;
        write_new(&out.join(&s.manifest_output), &bytes)?;
        write_new(&out.join(&s.signature_output), &signature)?;
        signed.push(SignedSlot {
            filled: s.filled,
            record: SlotRecord {
                slot: s.name.clone(),
                filled: s.filled,
                root_hash: hex::encode(info.root_hash),
                salt: hex::encode(info.salt),
                data_blocks: info.data_blocks,
                hash_start_block: info.hash_start_block,
                root_partition: root_part,
                verity_partition: verity_part,
                root_uuid: root_uuid.to_string(),
                verity_uuid: verity_uuid.to_string(),
            },
            root_uuid,
            verity_uuid,
            manifest: bytes,
            signature,
        });
    }
    Ok(signed)
}

/// The kernel command line signed into a slot's manifest: the image's own
/// arguments, then the slot. The initramfs finds the root partitions by
/// label (`root-<slot>`, `root-<slot>-verity`): an update rewrites a slot's
/// contents but not the GPT, so UUIDs would go stale.
fn manifest_cmdline(base: &str, s: &crate::plan::PlanSlot) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !base.is_empty() {
        parts.push(base.to_string());
    }
    parts.push(format!("slotsmith.slot={}", s.name));
    parts.push("ro".into());
    parts.join(" ")
}

/// The image's kernel arguments followed by those the hardening rules add
/// (each added only once).
fn base_cmdline(plan: &Plan, hardening: &[String]) -> String {
    let mut parts: Vec<String> = plan
        .boot
        .kernel
        .cmdline
        .split_whitespace()
        .map(str::to_string)
        .collect();
    for a in hardening {
        if !parts.contains(a) {
            parts.push(a.clone());
        }
    }
    parts.join(" ")
}

fn profile_name(plan: &Plan) -> &'static str {
    match plan.hardening.profile {
        slotsmith_policy::Profile::Production => "production",
        slotsmith_policy::Profile::Development => "development",
    }
}

/// The boot partition's files: the release note, then per filled slot its
/// kernel, initrd and dtb, manifest and signature in `/<slot>/`.
fn esp_files(
    plan: &Plan,
    boot: &[BootFile],
    slots: &[SignedSlot],
    out: &Path,
) -> Vec<disk::fat::FatFile> {
    let mut files: Vec<disk::fat::FatFile> = plan
        .esp
        .files
        .iter()
        .map(|f| disk::fat::FatFile {
            path: f.path.clone(),
            source: disk::fat::FatSource::Bytes(f.text.clone().into_bytes()),
        })
        .collect();
    for (ps, signed) in plan
        .boot
        .slots
        .iter()
        .zip(slots)
        .filter(|(ps, _)| ps.filled)
    {
        let dir = ps.esp_dir.trim_start_matches('/');
        for f in boot {
            files.push(disk::fat::FatFile {
                path: format!("{dir}/{}", f.output),
                source: disk::fat::FatSource::File(out.join(&f.output)),
            });
        }
        files.push(disk::fat::FatFile {
            path: format!("{dir}/manifest"),
            source: disk::fat::FatSource::Bytes(signed.manifest.clone()),
        });
        files.push(disk::fat::FatFile {
            path: format!("{dir}/manifest.sig"),
            source: disk::fat::FatSource::Bytes(signed.signature.to_vec()),
        });
    }
    files
}

/// What `build` returns.
pub struct BuildOutcome {
    /// The published output directory.
    pub out_dir: PathBuf,
    /// The record written as build.json.
    pub record: BuildRecord,
}

/// Builds `plan` into `out_root/<name>/`.
pub fn build(
    plan: &Plan,
    opts: &BuildOptions,
    progress: &mut Progress,
) -> anyhow::Result<BuildOutcome> {
    let name = &plan.image.name;
    let sde = plan.source_date_epoch;
    fs::create_dir_all(&opts.out_root)
        .with_context(|| format!("creating {}", opts.out_root.display()))?;
    // One build of an image at a time: the work directory and the staging
    // names are per image. Stale staging directories of killed builds go
    // first, under the lock, so none can belong to a running build.
    let lock = crate::publish::ImageLock::acquire(&opts.work_root, name, progress)?;
    crate::publish::clean_stale(&opts.out_root, name, progress)?;
    let work = opts.work_root.join(name);
    if fs::symlink_metadata(&work).is_ok() {
        // Depth-independent and bounded in open files: a hostile deep tree
        // left by a failed build must not break every later build.
        slotsmith_rootfs::cleanup::remove_tree(&work)
            .with_context(|| format!("removing old work directory {}", work.display()))?;
    }
    let store = work.join("store");
    fs::create_dir_all(&store)
        .with_context(|| format!("creating work directory {}", store.display()))?;
    // The staging directory lives beside the final one so the publishing
    // rename never crosses filesystems. It is removed on any error.
    let staging = tempfile::Builder::new()
        .prefix(&crate::publish::staging_prefix(name))
        .tempdir_in(&opts.out_root)
        .with_context(|| {
            format!(
                "creating a staging directory in {}",
                opts.out_root.display()
            )
        })?;
    let _staging_lock = crate::publish::StagingLock::acquire(staging.path())?;

    // Keys first: a missing or badly protected key fails in a second, not
    // after the base import.
    let signer = crate::signing::boot_signer(plan, &opts.project_root, progress)?;
    let update_signer = crate::signing::update_signer(plan, &opts.project_root, progress)?;
    let mut tree = import_base(plan, opts, &store, progress)?;
    let hardening_args = if plan.hardening.rules.is_empty() {
        Vec::new()
    } else {
        progress.stage(
            "harden",
            &format!(
                "{} rule(s) from {}, {} profile",
                plan.hardening.rules.len(),
                plan.hardening.policies.join(", "),
                profile_name(plan)
            ),
        );
        crate::harden::apply(plan, &mut tree, &store)?
    };
    let cmdline = base_cmdline(plan, &hardening_args);
    apply_layers(plan, opts, &mut tree, progress)?;
    tree.clamp_mtimes(sde as i64);
    if plan.rootfs.filesystem == Filesystem::Squashfs {
        drop_acls(&mut tree, progress);
    }

    let rootfs_path = staging.path().join(&plan.outputs.rootfs);
    build_rootfs(plan, &tree, &work, &rootfs_path, progress)?;
    let rootfs_size = fs::metadata(&rootfs_path)
        .with_context(|| format!("reading {}", rootfs_path.display()))?
        .len();

    if !plan.hardening.rules.is_empty() {
        progress.stage("audit", "evaluating every rule on the built rootfs image");
        let report = crate::harden::audit(plan, &rootfs_path, &cmdline)?;
        let s = &report.summary;
        progress.note(&format!(
            "{} pass, {} fail, {} waived, {} not applicable",
            s.pass, s.fail, s.waived, s.not_applicable
        ));
        // Written to staging for publication, and kept in the work
        // directory so a failed build's report can still be read.
        crate::harden::write_reports(&report, &staging.path().join("audit"))?;
        let kept = work.join("audit-report");
        crate::harden::write_reports(&report, &kept)?;
        crate::harden::gate(plan, &report, &kept.join("report.md"))?;
    }

    progress.stage(
        "verity",
        &format!(
            "dm-verity trees and signed boot manifests ({})",
            signer.signer.describe()
        ),
    );
    let boot_files = boot_files(plan, opts, &tree, staging.path())?;
    let slots = sign_slots(
        plan,
        &rootfs_path,
        rootfs_size,
        &boot_files,
        staging.path(),
        &signer,
        &cmdline,
    )?;
    write_new(
        &staging.path().join(&plan.outputs.boot_public_key),
        slotsmith_sign::public_key_pem(&signer.public_key).as_bytes(),
    )?;

    progress.stage("update", &format!("{} for SWUpdate", plan.update.file));
    build_swu(
        plan,
        &work,
        staging.path(),
        &boot_files,
        rootfs_size,
        &update_signer,
    )?;
    let cert = fs::read(&update_signer.cert).with_context(|| {
        format!(
            "reading update certificate {}",
            update_signer.cert.display()
        )
    })?;
    write_new(&staging.path().join(&plan.outputs.update_cert), &cert)?;

    let img_path = staging.path().join(&plan.outputs.image);
    progress.stage(
        "disk",
        &format!("writing {} ({})", plan.outputs.image, human(plan.disk.size)),
    );
    let mapped = write_disk(
        plan,
        &img_path,
        &rootfs_path,
        rootfs_size,
        &boot_files,
        &slots,
        staging.path(),
    )?;

    progress.stage("checksums", "bmap, SHA256SUMS and build.json");
    let bmap_path = staging.path().join(&plan.outputs.bmap);
    let mut artifacts = Vec::new();
    {
        // One sequential pass gives both the bmap and the image's sha256.
        let mut img = std::io::BufReader::with_capacity(
            1 << 20,
            File::open(&img_path).with_context(|| format!("opening {}", img_path.display()))?,
        );
        let (xml, sha) = disk::bmap::bmap_xml_and_sha256(&mut img, plan.disk.size, &mapped)
            .with_context(|| format!("computing the block map of {}", img_path.display()))?;
        write_new(&bmap_path, xml.as_bytes())?;
        artifacts.push(Artifact {
            name: plan.outputs.image.clone(),
            sha256: hex::encode(sha),
            size: plan.disk.size,
        });
    }
    let mut others = vec![
        plan.update.file.clone(),
        plan.outputs.update_cert.clone(),
        plan.outputs.bmap.clone(),
        plan.outputs.rootfs.clone(),
        plan.outputs.boot_public_key.clone(),
    ];
    others.extend(boot_files.iter().map(|f| f.output.clone()));
    for s in &plan.boot.slots {
        others.extend([
            s.verity_output.clone(),
            s.manifest_output.clone(),
            s.signature_output.clone(),
        ]);
    }
    if staging.path().join("audit").is_dir() {
        others.extend(
            ["audit/report.md", "audit/report.json", "audit/report.sarif"].map(String::from),
        );
    }
    for file in &others {
        let (sha256, size) =
            hash_file(&staging.path().join(file)).with_context(|| format!("hashing {file}"))?;
        artifacts.push(Artifact {
            name: file.clone(),
            sha256,
            size,
        });
    }
    artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    let uuid_of =
        |p: &crate::plan::PlanPartition| -> String { partition_uuid(p, &slots).to_string() };
    let record = BuildRecord {
        schema: 1,
        image: name.clone(),
        version: plan.image.version.clone(),
        image_file: plan.image.file.clone(),
        plan_sha256: plan.hash(),
        source_date_epoch: sde,
        artifacts,
        partitions: plan
            .disk
            .partitions
            .iter()
            .map(|p| BuiltPartition {
                number: p.number,
                name: p.name.clone(),
                type_guid: p.type_guid.to_string(),
                uuid: uuid_of(p),
                offset: p.offset,
                size: p.size,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                attributes: p.attributes,
                content: p.content,
            })
            .collect(),
        boot_key: slotsmith_sign::fingerprint(&signer.public_key),
        security_version: plan.boot.security_version,
        slots: slots.iter().map(|s| s.record.clone()).collect(),
        rootfs: RootfsFacts {
            filesystem: plan.rootfs.filesystem,
            size: rootfs_size,
            slot_size: plan.rootfs.max_size,
            entries: tree.len() as u64,
            file_bytes: tree.total_file_bytes(),
        },
    };
    let mut json = serde_json::to_vec_pretty(&record).context("serialising build.json")?;
    json.push(b'\n');
    write_new(&staging.path().join(&plan.outputs.build_json), &json)?;
    let mut sums = String::new();
    let mut all: Vec<(String, String)> = record
        .artifacts
        .iter()
        .map(|a| (a.name.clone(), a.sha256.clone()))
        .collect();
    all.push((
        plan.outputs.build_json.clone(),
        hex::encode(Sha256::digest(&json)),
    ));
    all.sort();
    for (file, sha) in all {
        sums.push_str(&format!("{sha}  {file}\n"));
    }
    write_new(&staging.path().join(&plan.outputs.sums), sums.as_bytes())?;

    progress.stage("publish", &format!("out/{}", plan.outputs.dir));
    let out_dir = opts.out_root.join(&plan.outputs.dir);
    crate::publish::publish(staging, &out_dir)?;
    progress.finish();
    slotsmith_rootfs::cleanup::remove_tree(&work)
        .with_context(|| format!("removing work directory {}", work.display()))?;
    drop(lock);
    Ok(BuildOutcome { out_dir, record })
}

/// squashfs has no place for POSIX ACLs (`system.posix_acl_*` xattrs; a
/// Debian base has them on /var/log/journal). They are dropped, and the
/// paths are named, rather than failing the build.
fn drop_acls(tree: &mut Tree, progress: &mut Progress) {
    let with_acl: Vec<RelPath> = tree
        .iter()
        .filter(|(_, n)| {
            n.meta
                .xattrs
                .keys()
                .any(|k| k.starts_with("system.posix_acl_"))
        })
        .map(|(p, _)| p.clone())
        .collect();
    for p in &with_acl {
        if let Some(n) = tree.get_mut(p) {
            n.meta
                .xattrs
                .retain(|k, _| !k.starts_with("system.posix_acl_"));
        }
    }
    if !with_acl.is_empty() {
        let names: Vec<String> = with_acl.iter().map(|p| p.to_string()).collect();
        progress.note(&format!(
            "squashfs cannot store POSIX ACLs; dropped them on {}",
            names.join(", ")
        ));
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = File::create_new(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
}

fn import_base(
    plan: &Plan,
    opts: &BuildOptions,
    store: &Path,
    progress: &mut Progress,
) -> anyhow::Result<Tree> {
    let tarball = match &plan.base.spec {
        BaseSpec::Tarball { path, sha256, .. } => {
            let abs = resolve(&opts.project_root, path);
            progress.stage("base", &format!("importing tarball {path}"));
            let (actual, _) = hash_file(&abs)
                .with_context(|| format!("reading base tarball {}", abs.display()))?;
            if &actual != sha256 {
                bail!("base tarball {} changed since it was planned (sha256 {actual}, plan has {sha256})", abs.display());
            }
            abs
        }
        BaseSpec::Directory {
            path, ownership, ..
        } => {
            let abs = resolve(&opts.project_root, path);
            progress.stage("base", &format!("importing directory {path}"));
            let own = match ownership {
                DirOwnership::Root => rootfs::import::Ownership::Root,
                DirOwnership::Preserve => rootfs::import::Ownership::Preserve,
            };
            let tree = rootfs::import::from_directory(&abs, own, &mut |n, b| {
                progress.tick(|| format!("{n} entries, {}", mib(b)))
            })
            .with_context(|| format!("importing base directory {}", abs.display()))?;
            progress.note(&format!(
                "{} entries, {} of file data",
                tree.len(),
                mib(tree.total_file_bytes())
            ));
            return Ok(tree);
        }
        BaseSpec::Debian { .. } => {
            progress.stage("base", "debian via mmdebstrap (cached by input hash)");
            debian_base(plan, opts, progress)?
        }
    };
    let tree = rootfs::import::from_tarball(&tarball, store, &mut |n, b| {
        progress.tick(|| format!("{n} entries, {}", mib(b)))
    })
    .with_context(|| format!("importing base tarball {}", tarball.display()))?;
    progress.note(&format!(
        "{} entries, {} of file data",
        tree.len(),
        mib(tree.total_file_bytes())
    ));
    Ok(tree)
}

fn resolve(root: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

/// Returns the cached mmdebstrap tarball for the plan's cache key, making it
/// first when absent. The cache entry appears by rename only when complete.
fn debian_base(
    plan: &Plan,
    opts: &BuildOptions,
    progress: &mut Progress,
) -> anyhow::Result<PathBuf> {
    let BaseSpec::Debian {
        suite,
        variant,
        packages,
        mirror,
    } = &plan.base.spec
    else {
        bail!("not a debian base");
    };
    let key = plan
        .base
        .cache_key
        .as_deref()
        .context("debian base without a cache key")?;
    let dir = opts.cache_dir.join("debian");
    let cached = dir.join(format!("{key}.tar"));
    if cached.is_file() {
        progress.note(&format!("using cached base {}", cached.display()));
        return Ok(cached);
    }
    fs::create_dir_all(&dir)
        .with_context(|| format!("creating cache directory {}", dir.display()))?;
    // One mmdebstrap per cache key at a time: concurrent builds (parallel
    // CI jobs, tests) wait for the first and then reuse its tarball.
    let lock_path = dir.join(format!("{key}.lock"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if cached.is_file() {
        progress.note(&format!(
            "using cached base {} (built by a concurrent build)",
            cached.display()
        ));
        return Ok(cached);
    }
    let tmp = dir.join(format!("{key}.tar.partial-{}", std::process::id()));
    let arch = plan.base.debian_arch.as_deref().unwrap_or("amd64");
    let mut tool = Tool::new("mmdebstrap")?
        .arg(format!("--variant={variant}"))
        .arg(format!("--architectures={arch}"))
        .arg("--format=tar")
        .arg("--aptopt=Acquire::Languages \"none\"")
        .epoch(plan.source_date_epoch);
    if !packages.is_empty() {
        tool = tool.arg(format!("--include={}", packages.join(",")));
    }
    tool = tool.arg(suite).arg(&tmp);
    match mirror {
        Some(m) => tool = tool.arg(m),
        None => {
            // The host's apt sources, as the image definition promises: each
            // existing sources file is pasted into the chroot's sources.
            let mut any = false;
            for f in [
                "/etc/apt/sources.list",
                "/etc/apt/sources.list.d/debian.sources",
            ] {
                if Path::new(f).is_file() && fs::metadata(f).map(|m| m.len() > 0).unwrap_or(false) {
                    tool = tool.arg(f);
                    any = true;
                }
            }
            if !any {
                bail!("no host apt sources found (/etc/apt/sources.list or /etc/apt/sources.list.d/debian.sources); set base.debian.mirror");
            }
        }
    }
    progress.note(&format!("running {}", tool.argv()));
    let res = tool.run();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e).context("building the debian base with mmdebstrap");
    }
    fs::rename(&tmp, &cached).with_context(|| format!("caching {}", cached.display()))?;
    Ok(cached)
}

fn apply_layers(
    plan: &Plan,
    opts: &BuildOptions,
    tree: &mut Tree,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    if plan.layers.is_empty() {
        return Ok(());
    }
    progress.stage(
        "layers",
        &format!("applying {} layer(s)", plan.layers.len()),
    );
    let sde = plan.source_date_epoch as i64;
    for layer in &plan.layers {
        let mut ops = Vec::new();
        // A removal of a path that neither the base nor a lower layer has
        // is the layer's mistake: an input error at its `remove[i]`, every
        // one of them at once.
        let mut missing = Vec::new();
        for p in &layer.remove {
            let path = RelPath::parse(p)?;
            if tree.get(&path).is_none() {
                let at = layer.remove_at.get(p).cloned().unwrap_or_default();
                missing.push(at.diagnostic(format!(
                    "cannot remove {}: no such path in the base or a lower-priority layer",
                    slotsmith_yaml::escape::shown(p)
                )));
            }
            ops.push(rootfs::overlay::Op::Remove { path });
        }
        if !missing.is_empty() {
            return Err(anyhow::Error::new(crate::spec::InputError(
                crate::diag::Diagnostics::from(missing),
            )));
        }
        for e in &layer.entries {
            let kind = match &e.kind {
                LayerEntryKind::File { source, size, .. } => Kind::File {
                    content: rootfs::tree::Content::Source(resolve(&opts.project_root, source)),
                    size: *size,
                },
                LayerEntryKind::Directory => Kind::Dir,
                LayerEntryKind::Symlink { target } => Kind::Symlink {
                    target: target.clone(),
                },
                LayerEntryKind::Char { major, minor } => Kind::CharDev {
                    major: *major,
                    minor: *minor,
                },
                LayerEntryKind::Block { major, minor } => Kind::BlockDev {
                    major: *major,
                    minor: *minor,
                },
                LayerEntryKind::Fifo => Kind::Fifo,
            };
            let mut xattrs = std::collections::BTreeMap::new();
            for (k, v) in &e.xattrs {
                xattrs.insert(
                    k.clone(),
                    hex::decode(v).with_context(|| format!("xattr {k} of {}", e.path))?,
                );
            }
            // Layer files take the epoch as mtime: git checkouts give
            // arbitrary mtimes, which must not reach the image.
            let meta = Meta {
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                mtime: sde,
                xattrs,
            };
            let path = RelPath::parse(&e.path)?;
            // A layer directory that already exists keeps the base's
            // attributes unless the layer declares its own.
            if kind_is_dir(&kind) {
                if let Some(existing) = tree.get(&path) {
                    if matches!(existing.kind, Kind::Dir) && !e_declares_attrs(e) {
                        continue;
                    }
                }
            }
            ops.push(rootfs::overlay::Op::Put {
                path,
                node: Node { kind, meta },
            });
        }
        rootfs::overlay::apply(tree, &ops)
            .with_context(|| format!("applying layer {}", layer.name))?;
        progress.note(&format!(
            "{}: {} entries, {} removals",
            layer.name,
            layer.entries.len(),
            layer.remove.len()
        ));
    }
    Ok(())
}

fn kind_is_dir(k: &Kind) -> bool {
    matches!(k, Kind::Dir)
}

fn e_declares_attrs(e: &crate::spec::LayerEntry) -> bool {
    e.mode != 0o755 || e.uid != 0 || e.gid != 0 || !e.xattrs.is_empty()
}

fn build_rootfs(
    plan: &Plan,
    tree: &Tree,
    work: &Path,
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let sde = plan.source_date_epoch;
    let max = plan.rootfs.max_size;
    match plan.rootfs.filesystem {
        Filesystem::Squashfs => {
            let comp = plan
                .rootfs
                .compression
                .map(|c| c.tool_name())
                .unwrap_or("zstd");
            progress.stage(
                "rootfs",
                &format!("squashfs ({comp}) from {} entries", tree.len()),
            );
            let block = plan
                .rootfs
                .block_size
                .unwrap_or(crate::plan::SQUASHFS_BLOCK);
            let tool = Tool::new("tar2sqfs")?
                .arg("--quiet")
                .arg("--no-skip")
                .args(["--compressor", comp])
                .args(["--block-size", &block.to_string()])
                // Output is identical for any job count (tested), so use
                // every core.
                .args(["--num-jobs", &jobs()])
                .args(["--defaults", &format!("uid=0,gid=0,mode=0755,mtime={sde}")])
                .arg(out)
                .epoch(sde);
            let total = tree.total_file_bytes();
            let mut last = std::time::Instant::now();
            tool.run_with_stdin(|w| {
                rootfs::export::write_tar(tree, w, &mut |b| {
                    if last.elapsed().as_secs() >= 5 {
                        last = std::time::Instant::now();
                        eprintln!("    ... {} of {}", mib(b), mib(total));
                    }
                })?;
                Ok(())
            })
            .context("writing the squashfs rootfs")?;
        }
        Filesystem::Ext4 => {
            // Data plus one 4 KiB block per entry (inodes, directory blocks)
            // is a floor for what mke2fs needs; fail early with both sizes.
            let need = tree.total_file_bytes() + tree.len() as u64 * 4096;
            if need > max {
                return Err(slot_too_small(
                    plan,
                    format!(
                        "the rootfs needs at least {} but its slot holds {} (layout.slot in {})",
                        human(need),
                        human(max),
                        plan.image.file
                    ),
                ));
            }
            progress.stage("rootfs", &format!("ext4 from {} entries", tree.len()));
            let staging = work.join("ext4-staging");
            fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
            rootfs::ext4::materialize(tree, &staging).context("staging the ext4 rootfs tree")?;
            let uuid = plan
                .rootfs
                .ext4_uuid
                .context("ext4 plan without a uuid")?
                .to_string();
            Tool::new("mke2fs")?
                .args([
                    "-q", "-F", "-t", "ext4", "-b", "4096", "-L", "rootfs", "-U", &uuid,
                ])
                // No journal: the slot is read-only under dm-verity.
                .args(["-O", "^has_journal"])
                .arg("-E")
                .arg(format!(
                    "hash_seed={uuid},root_owner=0:0,nodiscard,lazy_itable_init=0"
                ))
                .arg("-d")
                .arg(&staging)
                .arg(out)
                .arg(format!("{}k", max / 1024))
                .env("E2FSPROGS_FAKE_TIME", sde.to_string())
                .epoch(sde)
                .run()
                .context("writing the ext4 rootfs (is the slot large enough?)")?;
            let xattr_dir = work.join("ext4-xattrs");
            fs::create_dir(&xattr_dir)
                .with_context(|| format!("creating {}", xattr_dir.display()))?;
            let fixup = rootfs::ext4::debugfs_script(tree, &xattr_dir)?;
            let script = fixup.script;
            for (p, v) in fixup.xattr_files {
                fs::write(&p, v).with_context(|| format!("writing {}", p.display()))?;
            }
            let script_path = work.join("ext4-fixup.debugfs");
            fs::write(&script_path, script)
                .with_context(|| format!("writing {}", script_path.display()))?;
            let out_msg = Tool::new("debugfs")?
                .arg("-w")
                .arg("-f")
                .arg(&script_path)
                .arg(out)
                .env("E2FSPROGS_FAKE_TIME", sde.to_string())
                .epoch(sde)
                .run()
                .context("setting owners, modes, devices and xattrs in the ext4 rootfs")?;
            // debugfs reports per-command errors on stderr but exits 0.
            let err = String::from_utf8_lossy(&out_msg.stderr);
            let real: Vec<&str> = err
                .lines()
                .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
                .collect();
            if !real.is_empty() {
                bail!(
                    "debugfs reported errors while fixing the ext4 rootfs:\n  {}",
                    real.join("\n  ")
                );
            }
        }
    }
    let size = fs::metadata(out)
        .with_context(|| format!("reading {}", out.display()))?
        .len();
    progress.note(&format!(
        "rootfs image: {} (slot {})",
        human(size),
        human(max)
    ));
    if size > max {
        return Err(slot_too_small(
            plan,
            format!(
                "the rootfs image is {} but its slot holds only {} (layout.slot in {})",
                human(size),
                human(max),
                plan.image.file
            ),
        ));
    }
    Ok(())
}

/// A rootfs that does not fit its slot is the image definition's doing:
/// an input error (exit 2) at `layout.slot`, though only the build can see
/// it.
fn slot_too_small(plan: &Plan, message: String) -> anyhow::Error {
    let d = plan.rootfs.max_size_at.diagnostic(message);
    anyhow::Error::new(crate::spec::InputError(crate::diag::Diagnostics::from(vec![d])))
}

/// Writes `<name>-<version>.swu`: sw-description (one collection per slot),
/// its CMS signature, then the payloads, streamed from out/ with no
/// temporary copies (zstd payloads are compressed once into the work
/// directory). Pass 1 hashes each payload once for both the sha256 in
/// sw-description and the cpio checksum in its header.
fn build_swu(
    plan: &Plan,
    work: &Path,
    out: &Path,
    boot: &[BootFile],
    rootfs_size: u64,
    signer: &crate::signing::UpdateSigner,
) -> anyhow::Result<()> {
    use slotsmith_swu as swu;
    let u = &plan.update;
    let zstd = u.compression == crate::spec::UpdateCompression::Zstd;
    let zdir = work.join("swu");
    fs::create_dir_all(&zdir).with_context(|| format!("creating {}", zdir.display()))?;
    // Every member once, in archive order: the rootfs first (both slots
    // install the same bytes), then per slot its verity tree and boot files.
    let mut prepared: std::collections::BTreeMap<String, (String, swu::PreparedPayload)> =
        Default::default();
    let mut order: Vec<String> = Vec::new();
    let mut prepare = |name: &str| -> anyhow::Result<()> {
        if prepared.contains_key(name) {
            return Ok(());
        }
        let compression = if zstd {
            swu::PayloadCompression::Zstd {
                level: swu::DEFAULT_ZSTD_LEVEL,
                output: zdir.join(format!("{name}.zst")),
            }
        } else {
            swu::PayloadCompression::None
        };
        let p = swu::prepare_payload(&out.join(name), &compression)
            .with_context(|| format!("preparing payload {name}"))?;
        let member = if zstd {
            format!("{name}.zst")
        } else {
            name.to_string()
        };
        prepared.insert(name.to_string(), (member.clone(), p));
        order.push(name.to_string());
        Ok(())
    };
    prepare(&plan.outputs.rootfs)?;
    for s in &plan.boot.slots {
        prepare(&s.verity_output)?;
        for f in boot {
            prepare(&f.output)?;
        }
        prepare(&s.manifest_output)?;
        prepare(&s.signature_output)?;
    }
    let bootloader = match u.bootloader {
        crate::spec::Bootloader::UBoot => swu::Bootloader::UBoot,
        crate::spec::Bootloader::Grub => swu::Bootloader::Grub,
    };
    let mut collections = Vec::new();
    for (i, s) in plan.boot.slots.iter().enumerate() {
        let device = |part: &str| -> anyhow::Result<String> {
            u.devices
                .get(part)
                .cloned()
                .with_context(|| format!("no device for {part}"))
        };
        let raw = |name: &str,
                   part: &str,
                   installed: u64,
                   capacity: u64|
         -> anyhow::Result<swu::Payload> {
            let (member, p) = &prepared[name];
            let mut payload = p.payload(
                member,
                swu::Target::Raw {
                    device: device(part)?,
                },
            );
            payload.fit = Some(swu::Fit {
                installed_size: installed,
                capacity,
            });
            Ok(payload)
        };
        let verity_size = fs::metadata(out.join(&s.verity_output))?.len();
        let boot_dir = format!("{}/{}", u.boot_mount.trim_end_matches('/'), s.name);
        let file = |name: &str, dest: &str| -> swu::Payload {
            let (member, p) = &prepared[name];
            p.payload(
                member,
                swu::Target::File {
                    path: format!("{boot_dir}/{dest}"),
                },
            )
        };
        let mut payloads = vec![
            raw(
                &plan.outputs.rootfs,
                &s.root_partition,
                rootfs_size,
                u.root_partition_size,
            )?,
            raw(
                &s.verity_output,
                &s.verity_partition,
                verity_size,
                u.verity_partition_size,
            )?,
        ];
        for f in boot {
            payloads.push(file(&f.output, &f.output));
        }
        payloads.push(file(&s.manifest_output, "manifest"));
        payloads.push(file(&s.signature_output, "manifest.sig"));
        collections.push(swu::Collection {
            set: u.set.clone(),
            mode: u.modes[i].clone(),
            slot: s.name.clone(),
            payloads,
            bootenv: swu::bootenv_for(bootloader, &s.name),
        });
    }
    let desc = swu::SwDescription {
        name: format!("{} {}", plan.image.name, plan.image.version),
        version: plan.image.version.clone(),
        hardware_compatibility: plan.image.hardware_compatibility.clone(),
        collections,
    };
    let text = desc.to_libconfig().context("writing sw-description")?;
    let signature = signer
        .sign(text.as_bytes())
        .context("signing sw-description")?;
    let members: Vec<(String, PathBuf, u64, u32)> = order
        .iter()
        .map(|n| {
            let (member, p) = &prepared[n];
            p.member(member)
        })
        .collect();
    let path = out.join(&u.file);
    let f = File::create_new(&path).with_context(|| format!("creating {}", path.display()))?;
    let w = swu::write_swu(
        std::io::BufWriter::with_capacity(1 << 20, f),
        text.as_bytes(),
        &signature,
        &members,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    let f = w
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("flushing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

fn jobs() -> String {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .to_string()
}

/// Writes the disk image; returns the byte ranges the bmap must map.
fn write_disk(
    plan: &Plan,
    img_path: &Path,
    rootfs_path: &Path,
    rootfs_size: u64,
    boot: &[BootFile],
    slots: &[SignedSlot],
    out: &Path,
) -> anyhow::Result<Vec<(u64, u64)>> {
    let d = &plan.disk;
    let mut img = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(img_path)
        .with_context(|| format!("creating {}", img_path.display()))?;
    // A sparse file: only written extents take space.
    img.set_len(d.size)
        .with_context(|| format!("sizing {}", img_path.display()))?;
    let layout = disk::gpt::GptLayout {
        sector_size: d.sector_size,
        disk_size: d.size,
        disk_guid: d.guid,
        partitions: d
            .partitions
            .iter()
            .map(|p| disk::gpt::PartitionEntry {
                name: p.name.clone(),
                type_guid: p.type_guid,
                part_guid: partition_uuid(p, slots),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                attributes: p.attributes,
            })
            .collect(),
    };
    disk::gpt::write_gpt(&mut img, &layout)
        .with_context(|| format!("writing the GPT of {}", img_path.display()))?;
    // GPT primary and backup areas are always mapped.
    let mut mapped = vec![
        (0, 34 * d.sector_size),
        (d.size - 33 * d.sector_size, d.size),
    ];
    let rootfs_file =
        File::open(rootfs_path).with_context(|| format!("opening {}", rootfs_path.display()))?;
    for p in &d.partitions {
        match p.content {
            Content::Esp => {
                let spec = disk::fat::FatSpec {
                    label: plan.esp.label.clone(),
                    volume_id: plan.esp.volume_id,
                    mtime: plan.source_date_epoch as i64,
                    files: esp_files(plan, boot, slots, out),
                };
                let window = disk::window::Window::new(&mut img, p.offset, p.size);
                disk::fat::format_fat(window, p.size, &spec)
                    .context("formatting the boot partition")?;
                mapped.extend(disk::sparse::nonzero_extents(&mut img, p.offset, p.size)?);
            }
            Content::Rootfs => {
                disk::sparse::copy_into(&rootfs_file, rootfs_size, &img, p.offset)
                    .with_context(|| format!("copying the rootfs into {}", p.name))?;
                // Every block of a slot is mapped, so flashing a reused
                // device leaves no stale bytes from an older image in it.
                mapped.push((p.offset, p.offset + p.size));
            }
            Content::VerityReserved => {
                if let Some(slot) = plan
                    .boot
                    .slots
                    .iter()
                    .find(|s| s.verity_partition == p.name && s.filled)
                {
                    let path = out.join(&slot.verity_output);
                    let f =
                        File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                    let len = f.metadata()?.len();
                    disk::sparse::copy_into(&f, len, &img, p.offset)
                        .with_context(|| format!("copying the verity tree into {}", p.name))?;
                }
                mapped.push((p.offset, p.offset + p.size));
            }
            Content::Empty => mapped.push((p.offset, p.offset + p.size)),
            Content::Data => {
                img.flush().context("flushing the image")?;
                Tool::new("mke2fs")?
                    .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", &plan.data.label])
                    .args(["-U", &plan.data.uuid.to_string()])
                    .arg("-E")
                    .arg(format!(
                        "offset={},hash_seed={},root_owner=0:0,nodiscard,lazy_itable_init=0,lazy_journal_init=0",
                        p.offset, plan.data.uuid
                    ))
                    .arg(img_path)
                    .arg(format!("{}k", p.size / 1024))
                    .env("E2FSPROGS_FAKE_TIME", plan.source_date_epoch.to_string())
                    .epoch(plan.source_date_epoch)
                    .run()
                    .context("formatting the data partition")?;
                img.seek(SeekFrom::Start(0)).context("seeking the image")?;
                mapped.extend(disk::sparse::nonzero_extents(&mut img, p.offset, p.size)?);
            }
        }
    }
    img.sync_all()
        .with_context(|| format!("syncing {}", img_path.display()))?;
    Ok(mapped)
}
