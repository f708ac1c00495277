//! The boot stage: finds the kernel, initrd and device tree, copies them
//! to the outputs, builds each slot's dm-verity tree and signs its boot
//! manifest with the boot key.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::plan::Plan;
use crate::progress::Progress;
use slotsmith_rootfs as rootfs;
use slotsmith_rootfs::path::RelPath;
use slotsmith_rootfs::tree::{Kind, Tree};

use super::cache::{Cache, Key};
use super::record::{PartRef, SlotRecord};
use super::rootfs::RootfsImage;
use super::BuildOptions;
use super::{resolve, write_new, Hashed};

/// A boot file (kernel, initrd, dtb) copied to out/ and the ESP.
pub(super) struct BootFile {
    /// `kernel`, `initrd` or `dtb`.
    pub(super) role: &'static str,
    /// File name in out/ and in each slot's ESP directory.
    pub(super) output: String,
    /// sha256.
    pub(super) sha256: [u8; 32],
    /// Size in bytes.
    pub(super) size: u64,
}

/// A signed slot.
pub(super) struct SignedSlot {
    pub(super) record: SlotRecord,
    pub(super) root_uuid: uuid::Uuid,
    pub(super) verity_uuid: uuid::Uuid,
    pub(super) manifest: Vec<u8>,
    pub(super) signature: [u8; 64],
}

/// A partition's GPT UUID: for the partitions the plan marks
/// `uuid_from_root_hash`, the half of the slot's verity root hash the
/// Discoverable Partitions Specification gives it; otherwise the plan's.
pub(super) fn partition_uuid(p: &crate::plan::PlanPartition, slots: &[SignedSlot]) -> uuid::Uuid {
    if !p.uuid_from_root_hash {
        return p.uuid;
    }
    for s in slots {
        if p.name == s.record.root_partition.name {
            return s.root_uuid;
        }
        if p.name == s.record.verity_partition.name {
            return s.verity_uuid;
        }
    }
    p.uuid
}

/// Copies the plan's boot files to `out`, hashing each as it is copied.
/// An optional file the rootfs lacks is left out.
pub(super) fn boot_files(
    plan: &Plan,
    opts: &BuildOptions,
    tree: &Tree,
    public_key_pem: &str,
    out: &Path,
) -> anyhow::Result<Vec<BootFile>> {
    use crate::plan::BootSource;
    // The rootfs kernel: exactly one /boot/vmlinuz-<version>.
    let rootfs_kernel = || -> anyhow::Result<(RelPath, String)> {
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
        Ok((kernel.clone(), version))
    };
    // A boot file's bytes: in the tree (a file of the store, of the base
    // archive, or of a layer), or a project file the plan names.
    let mut generated = Vec::new();
    let mut sources: Vec<(
        &'static str,
        String,
        slotsmith_rootfs::tree::Content,
        Option<u64>,
    )> = Vec::new();
    for f in &plan.boot.files {
        let role = boot_role(&f.role)?;
        let src = match &f.source {
            BootSource::RootfsKernel => {
                let (c, size) = tree_content(tree, &rootfs_kernel()?.0)?;
                (c, Some(size))
            }
            BootSource::RootfsInitrd => {
                let (_, version) = rootfs_kernel()?;
                let initrd = RelPath::parse(&format!("boot/initrd.img-{version}"))?;
                if tree.get(&initrd).is_none() && f.optional {
                    continue;
                }
                let (c, size) = tree_content(tree, &initrd)?;
                (c, Some(size))
            }
            BootSource::Project { path } => (
                slotsmith_rootfs::tree::Content::Source(resolve(&opts.project_root, path)),
                None,
            ),
            BootSource::Rootfs { path } => {
                let p = RelPath::parse(path)?;
                let (c, size) = tree_content(tree, &p).with_context(|| {
                    format!("the boot chain's {role} (install its Debian package in the image)")
                })?;
                (c, Some(size))
            }
            BootSource::Initramfs => {
                let bytes = super::initramfs::build(plan, opts, tree, public_key_pem)?;
                let dest = out.join(&f.output);
                write_new(&dest, &bytes)?;
                let h = Hashed::of_bytes(&bytes);
                generated.push(BootFile {
                    role,
                    output: f.output.clone(),
                    sha256: h.sha256,
                    size: h.size,
                });
                continue;
            }
        };
        sources.push((role, f.output.clone(), src.0, src.1));
    }
    let mut files = generated;
    for (role, output, src, size) in sources {
        // A project file's size is whatever it is now; a tree file's is
        // the recorded one.
        let mut input: Box<dyn std::io::Read> = match size {
            Some(size) => Box::new(
                src.open(size)
                    .with_context(|| format!("opening {role} {}", src.location()))?,
            ),
            None => {
                let slotsmith_rootfs::tree::Content::Source(p) = &src else {
                    bail!("{role}: a project file must be a source file");
                };
                Box::new(
                    rootfs::overlay::read_source_file(p)
                        .with_context(|| format!("opening {role} {}", src.location()))?,
                )
            }
        };
        let dest = out.join(&output);
        let mut f =
            File::create_new(&dest).with_context(|| format!("creating {}", dest.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = std::io::Read::read(&mut input, &mut buf)
                .with_context(|| format!("reading {role} {}", src.location()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            f.write_all(&buf[..n])
                .with_context(|| format!("writing {}", dest.display()))?;
            size += n as u64;
        }
        if size == 0 {
            bail!("{role} {} is empty", src.location());
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

/// A boot file role the plan may name.
pub(super) fn boot_role(role: &str) -> anyhow::Result<&'static str> {
    Ok(match role {
        "kernel" => "kernel",
        "initrd" => "initrd",
        "dtb" => "dtb",
        "stub" => "stub",
        "loader" => "loader",
        other => bail!("unknown boot file role '{other}'"),
    })
}

/// The on-disk contents of a regular file (or hardlink) in the tree.
fn tree_content(
    tree: &Tree,
    p: &RelPath,
) -> anyhow::Result<(slotsmith_rootfs::tree::Content, u64)> {
    let mut node = tree
        .get(p)
        .with_context(|| format!("{p} is not in the rootfs"))?;
    if let Kind::Hardlink { target } = &node.kind {
        node = tree
            .get(target)
            .with_context(|| format!("{p} links to missing {target}"))?;
    }
    match &node.kind {
        Kind::File { content, size } => Ok((content.clone(), *size)),
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
) -> anyhow::Result<Vec<SignedSlot>> {
    if rootfs_size == 0 || !rootfs_size.is_multiple_of(slotsmith_verity::BLOCK) {
        bail!("the rootfs image is {rootfs_size} bytes, not a whole number of 4096-byte blocks");
    }
    let data = File::open(rootfs).with_context(|| format!("opening {}", rootfs.display()))?;
    let mut signed = Vec::new();
    for s in &plan.boot.slots {
        let salt = s.verity_salt;
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
        // With the boot chain, the kernel and initramfs travel inside the
        // slot's UKI: the manifest names the section ("/linux.efi:.linux").
        let file_ref = |f: &BootFile| slotsmith_sign::FileRef {
            path: match &plan.chain {
                Some(c) => {
                    let section = c
                        .uki_sections
                        .iter()
                        .find(|u| u.content == f.role)
                        .map_or("", |u| u.name.as_str());
                    format!("/{}:{section}", crate::plan::chain::UKI_NAME)
                }
                None => format!("{}/{}", s.esp_dir, f.output),
            },
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
            // The chain's command line names the root hash, which only
            // exists now; the UKI is built from this signed line.
            cmdline: s.cmdline.replace(
                crate::plan::ROOT_HASH_PLACEHOLDER,
                &hex::encode(info.root_hash),
            ),
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

/// What the boot stage produced.
pub(super) struct BootOut {
    /// Each slot's verity tree and signed manifest.
    pub(super) slots: Vec<SignedSlot>,
    /// The hash of every output this stage wrote, by output name.
    pub(super) hashes: BTreeMap<String, Hashed>,
}

/// What a cached boot stage keeps besides its files.
#[derive(serde::Serialize, serde::Deserialize)]
struct BootMeta {
    slots: Vec<SlotMeta>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SlotMeta {
    record: SlotRecord,
    root_uuid: uuid::Uuid,
    verity_uuid: uuid::Uuid,
}

/// Everything the boot stage reads: the rootfs and boot files by hash, the
/// plan's slots (salts, command lines, outputs), the image's identity and
/// security version, and the boot key by its public fingerprint.
fn key(plan: &Plan, rootfs: &RootfsImage, public_key: &str) -> anyhow::Result<Key> {
    let files: Vec<(&str, String, u64)> = rootfs
        .boot_files
        .iter()
        .map(|f| (f.output.as_str(), hex::encode(f.sha256), f.size))
        .collect();
    Cache::key(
        "boot",
        &serde_json::json!({
            "rootfs": hex::encode(rootfs.hashed.sha256),
            "rootfs_size": rootfs.hashed.size,
            "boot_files": files,
            "image": plan.image,
            "boot": plan.boot,
            "partitions": plan.disk.partitions,
            "public_key": public_key,
            "public_key_output": plan.outputs.boot_public_key,
            // The manifests name the kernel and initramfs as UKI sections.
            "chain": plan.chain,
        }),
    )
}

/// Builds each slot's verity tree and signs its manifest, and writes the
/// boot public key; or takes all of it from the cache.
pub(super) fn stage(
    plan: &Plan,
    rootfs: &RootfsImage,
    signer: &crate::signing::BootSigner,
    cache: &Cache,
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<BootOut> {
    let fingerprint = slotsmith_sign::fingerprint(&signer.public_key);
    let key = key(plan, rootfs, &fingerprint)?;
    if let Some(hit) = cache.get("boot", &key, progress) {
        progress.stage(
            "verity",
            "dm-verity trees and signed boot manifests (cached)",
        );
        let meta: BootMeta = hit.meta()?;
        for name in hit.files().keys() {
            hit.place(name, &out.join(name))?;
        }
        let mut slots = Vec::new();
        for (ps, m) in plan.boot.slots.iter().zip(meta.slots) {
            let manifest = fs::read(out.join(&ps.manifest_output))
                .with_context(|| format!("reading {}", ps.manifest_output))?;
            let sig = fs::read(out.join(&ps.signature_output))
                .with_context(|| format!("reading {}", ps.signature_output))?;
            slots.push(SignedSlot {
                record: m.record,
                root_uuid: m.root_uuid,
                verity_uuid: m.verity_uuid,
                manifest,
                signature: sig
                    .try_into()
                    .map_err(|_| anyhow::format_err!("cached signature is not 64 bytes"))?,
            });
        }
        return Ok(BootOut {
            slots,
            hashes: hit.files().clone(),
        });
    }
    progress.stage(
        "verity",
        &format!(
            "dm-verity trees and signed boot manifests ({})",
            signer.signer.describe()
        ),
    );
    let slots = sign_slots(
        plan,
        &rootfs.path,
        rootfs.hashed.size,
        &rootfs.boot_files,
        out,
        signer,
    )?;
    let mut hashes = BTreeMap::new();
    for (ps, signed) in plan.boot.slots.iter().zip(&slots) {
        hashes.insert(
            ps.manifest_output.clone(),
            Hashed::of_bytes(&signed.manifest),
        );
        hashes.insert(
            ps.signature_output.clone(),
            Hashed::of_bytes(&signed.signature),
        );
        // The tree is small (1/128 of the data) and was just written.
        hashes.insert(
            ps.verity_output.clone(),
            Hashed::of_file(&out.join(&ps.verity_output))?,
        );
    }
    let pem = slotsmith_sign::public_key_pem(&signer.public_key);
    write_new(&out.join(&plan.outputs.boot_public_key), pem.as_bytes())?;
    hashes.insert(
        plan.outputs.boot_public_key.clone(),
        Hashed::of_bytes(pem.as_bytes()),
    );
    let files: Vec<(&str, PathBuf, Hashed)> = hashes
        .iter()
        .map(|(n, h)| (n.as_str(), out.join(n), *h))
        .collect();
    let refs: Vec<(&str, &Path, Hashed)> = files
        .iter()
        .map(|(n, p, h)| (*n, p.as_path(), *h))
        .collect();
    let meta = BootMeta {
        slots: slots
            .iter()
            .map(|s| SlotMeta {
                record: s.record.clone(),
                root_uuid: s.root_uuid,
                verity_uuid: s.verity_uuid,
            })
            .collect(),
    };
    cache.put("boot", &key, &refs, &meta, progress);
    Ok(BootOut { slots, hashes })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{self, flip, run, sha256_of, try_run, Fixture, Setup};
    use super::*;

    const CACHED: &str = "dm-verity trees and signed boot manifests (cached)";

    fn run_stage(
        fx: &mut Fixture,
        rootfs: &RootfsImage,
        signer: &crate::signing::BootSigner,
        out: &Path,
    ) -> BootOut {
        stage(&fx.plan, rootfs, signer, &fx.cache, out, &mut fx.progress).unwrap()
    }

    /// Every file the stage wrote, by name, with its bytes.
    fn written(boot: &BootOut, out: &Path) -> BTreeMap<String, Vec<u8>> {
        boot.hashes
            .keys()
            .map(|n| (n.clone(), fs::read(out.join(n)).unwrap()))
            .collect()
    }

    #[test]
    fn verity_trees_verify_and_manifests_verify_with_the_key() {
        let mut fx = Fixture::new(Setup::default());
        let signer = fx.boot_signer();
        let rootfs = fx.rootfs();
        let out = fx.out.clone();
        let boot = run_stage(&mut fx, &rootfs, &signer, &out);
        assert_eq!(boot.slots.len(), 2, "fill-slot-b fills both slots");
        let data = rootfs.path.to_str().unwrap();
        let scratch = fx.fresh_out("scratch");
        for (ps, s) in fx.plan.boot.slots.iter().zip(&boot.slots) {
            assert_eq!(s.record.slot, ps.name);
            let tree = out.join(&ps.verity_output);
            // The independent verifier accepts the tree with the recorded
            // root hash, and refuses one flipped data byte.
            run(
                "veritysetup",
                &["verify", data, tree.to_str().unwrap(), &s.record.root_hash],
            );
            let bad = scratch.join(format!("data-{}", ps.name));
            fs::copy(&rootfs.path, &bad).unwrap();
            flip(&bad, rootfs.hashed.size / 2 + 17);
            assert!(
                try_run(
                    "veritysetup",
                    &[
                        "verify",
                        bad.to_str().unwrap(),
                        tree.to_str().unwrap(),
                        &s.record.root_hash
                    ],
                )
                .is_err(),
                "veritysetup accepted a tampered slot {}",
                ps.name
            );
            // The manifest verifies with the key and says what the plan and
            // the rootfs say.
            let bytes = fs::read(out.join(&ps.manifest_output)).unwrap();
            let sig = fs::read(out.join(&ps.signature_output)).unwrap();
            assert_eq!((&bytes, sig.as_slice()), (&s.manifest, &s.signature[..]));
            let m = slotsmith_sign::verify_manifest(&bytes, &sig, &signer.public_key).unwrap();
            assert_eq!(m.slot, ps.name);
            assert_eq!(m.cmdline, ps.cmdline);
            assert_eq!(hex::encode(m.verity_root_hash), s.record.root_hash);
            assert_eq!(m.verity_salt, ps.verity_salt);
            assert_eq!(m.verity_data_blocks, rootfs.hashed.size / 4096);
            assert_eq!(m.golden_slots, Some(vec!["a".into(), "b".into()]));
            assert_eq!(m.security_version, fx.plan.boot.security_version);
            let kernel = rootfs.boot_files.iter().find(|f| f.role == "kernel");
            let kernel = kernel.unwrap();
            assert_eq!(
                (m.kernel.path, m.kernel.sha256, m.kernel.size),
                (
                    format!("{}/{}", ps.esp_dir, kernel.output),
                    kernel.sha256,
                    kernel.size
                )
            );
            assert!(m.initrd.is_some() && m.dtb.is_none());
            // Discoverable Partitions: the UUIDs are the root hash's halves.
            let rh = m.verity_root_hash;
            assert_eq!(m.root_partition_uuid.as_bytes()[..], rh[..16]);
            assert_eq!(m.verity_partition_uuid.as_bytes()[..], rh[16..]);
            assert_eq!(s.root_uuid, m.root_partition_uuid);
            // openssl agrees with the signature, over the published key.
            run(
                "openssl",
                &[
                    "pkeyutl",
                    "-verify",
                    "-pubin",
                    "-inkey",
                    out.join(&fx.plan.outputs.boot_public_key).to_str().unwrap(),
                    "-rawin",
                    "-in",
                    out.join(&ps.manifest_output).to_str().unwrap(),
                    "-sigfile",
                    out.join(&ps.signature_output).to_str().unwrap(),
                ],
            );
        }
        // Per-slot salts give per-slot root hashes (and so UUIDs).
        assert_ne!(
            boot.slots[0].record.root_hash,
            boot.slots[1].record.root_hash
        );
        // Every hash the stage hands on is the file's.
        for (name, h) in &boot.hashes {
            assert_eq!(h.sha256, sha256_of(&out.join(name)), "{name}");
        }
        let mut names: Vec<&str> = boot.hashes.keys().map(String::as_str).collect();
        names.sort();
        let mut want = vec![fx.plan.outputs.boot_public_key.as_str()];
        for ps in &fx.plan.boot.slots {
            want.extend([
                ps.verity_output.as_str(),
                ps.manifest_output.as_str(),
                ps.signature_output.as_str(),
            ]);
        }
        want.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn the_same_inputs_hit_the_cache_with_identical_bytes_and_a_new_key_misses() {
        let mut fx = Fixture::new(Setup::default());
        let signer = fx.boot_signer();
        let rootfs = fx.rootfs();
        let out = fx.out.clone();
        let first = run_stage(&mut fx, &rootfs, &signer, &out);
        assert!(!fx.log.text().contains(CACHED));
        let again = fx.fresh_out("again");
        let second = run_stage(&mut fx, &rootfs, &signer, &again);
        assert_eq!(fx.log.text().matches(CACHED).count(), 1, "not a hit");
        assert_eq!(written(&second, &again), written(&first, &out));
        assert_eq!(second.hashes, first.hashes);
        for (a, b) in first.slots.iter().zip(&second.slots) {
            assert_eq!((&a.manifest, &a.signature), (&b.manifest, &b.signature));
            assert_eq!((a.root_uuid, a.verity_uuid), (b.root_uuid, b.verity_uuid));
            assert_eq!(
                serde_json::to_value(&a.record).unwrap(),
                serde_json::to_value(&b.record).unwrap()
            );
        }
        // Another key: signed again (a miss), same trees, new signatures.
        let other = testkit::other_boot_signer(&fx.root().join("other-key"));
        let third_out = fx.fresh_out("third");
        let third = run_stage(&mut fx, &rootfs, &other, &third_out);
        assert_eq!(fx.log.text().matches(CACHED).count(), 1, "a new key hit");
        for ps in &fx.plan.boot.slots {
            assert_eq!(
                fs::read(third_out.join(&ps.verity_output)).unwrap(),
                fs::read(out.join(&ps.verity_output)).unwrap()
            );
        }
        for (ps, s) in fx.plan.boot.slots.iter().zip(&third.slots) {
            slotsmith_sign::verify_manifest(&s.manifest, &s.signature, &other.public_key).unwrap();
            assert!(
                slotsmith_sign::verify_manifest(&s.manifest, &s.signature, &signer.public_key)
                    .is_err(),
                "slot {} verifies with the old key",
                ps.name
            );
        }
        assert_ne!(
            third.hashes[&fx.plan.outputs.boot_public_key],
            first.hashes[&fx.plan.outputs.boot_public_key]
        );
    }

    #[test]
    fn root_and_verity_partitions_take_their_uuids_from_the_root_hash() {
        let mut fx = Fixture::new(Setup::default());
        let signer = fx.boot_signer();
        let rootfs = fx.rootfs();
        let out = fx.out.clone();
        let boot = run_stage(&mut fx, &rootfs, &signer, &out);
        let mut from_hash = 0;
        for p in &fx.plan.disk.partitions {
            let got = partition_uuid(p, &boot.slots);
            let slot = boot.slots.iter().find(|s| {
                s.record.root_partition.name == p.name || s.record.verity_partition.name == p.name
            });
            match (p.uuid_from_root_hash, slot) {
                (true, Some(s)) if s.record.root_partition.name == p.name => {
                    from_hash += 1;
                    assert_eq!(got, s.root_uuid, "{}", p.name);
                }
                (true, Some(s)) => {
                    from_hash += 1;
                    assert_eq!(got, s.verity_uuid, "{}", p.name);
                }
                _ => assert_eq!(got, p.uuid, "{}", p.name),
            }
        }
        assert_eq!(from_hash, 4, "two filled slots, root and verity each");
    }

    #[test]
    fn boot_files_come_from_the_one_kernel_in_the_rootfs() {
        // Without an initrd, the optional file is left out.
        let mut fx =
            Fixture::new(Setup::default().layer("remove:\n  - /boot/initrd.img-6.1.0-test\n", &[]));
        let tree = fx.tree();
        let out = fx.out.clone();
        let files = boot_files(&fx.plan, &fx.opts, &tree, "", &out).unwrap();
        let roles: Vec<&str> = files.iter().map(|f| f.role).collect();
        assert_eq!(roles, ["kernel"]);
        // No kernel, or two: an error that says what to set.
        for (conf, files, want) in [
            (
                "remove:\n  - /boot/vmlinuz-6.1.0-test\n",
                vec![],
                "no kernel in the rootfs (/boot/vmlinuz-*)",
            ),
            (
                "",
                vec![("/boot/vmlinuz-6.2.0-test", b"k2".as_slice())],
                "several kernels in the rootfs (/boot/vmlinuz-6.1.0-test, /boot/vmlinuz-6.2.0-test)",
            ),
        ] {
            let mut fx = Fixture::new(Setup::default().layer(conf, &files));
            let tree = fx.tree();
            let out = fx.out.clone();
            let err = boot_files(&fx.plan, &fx.opts, &tree, "", &out)
                .err()
                .unwrap_or_else(|| panic!("{want}: no error"));
            let msg = format!("{err:#}");
            assert!(msg.contains(want), "{msg}");
            assert!(msg.contains("kernel.image in images/tiny.yaml"), "{msg}");
        }
    }

    #[test]
    fn a_rootfs_of_partial_blocks_is_refused() {
        let mut fx = Fixture::new(Setup::default());
        let signer = fx.boot_signer();
        let rootfs = fx.rootfs();
        let out = fx.fresh_out("partial");
        let err = sign_slots(
            &fx.plan,
            &rootfs.path,
            rootfs.hashed.size - 1,
            &rootfs.boot_files,
            &out,
            &signer,
        )
        .err()
        .expect("a partial block was signed");
        assert!(
            format!("{err:#}").contains("not a whole number of 4096-byte blocks"),
            "{err:#}"
        );
    }
}
