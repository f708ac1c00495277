//! The build record (`build.json`) and its parts: what was built, with
//! every artifact's sha256, the partition table as written, and each
//! slot's verity parameters. Deterministic for the same plan and keys.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::plan::{Content, Plan};
use crate::progress::Progress;
use crate::spec::Filesystem;

use std::collections::BTreeMap;

use super::boot::{partition_uuid, BootOut};
use super::disk::DiskOut;
use super::inputs::{Input, RecordedInputs};
use super::rootfs::RootfsImage;
use super::update::SwuOut;
use super::{write_new, Hashed};

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
    /// Every project file the build read, by content, sorted by path
    /// (`build/inputs.rs`): what `cargo xtask repro` rebuilds from.
    pub inputs: Vec<Input>,
    /// sha256 of the Debian base's lock file (`null` without one).
    pub lock_sha256: Option<String>,
    /// Inputs that cannot be recorded by content (a directory base).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unrecorded_inputs: Vec<String>,
}

/// A filled slot in build.json.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PartRef {
    /// GPT name.
    pub name: String,
    /// Byte offset.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Writes `build.json` and `SHA256SUMS`. Every artifact's hash comes from
/// the stage that wrote it (or from the cache, which stored it); only the
/// small audit reports are read here.
#[allow(clippy::too_many_arguments)]
pub(super) fn stage(
    plan: &Plan,
    rootfs: &RootfsImage,
    boot: &BootOut,
    swu: &SwuOut,
    disk: &DiskOut,
    sbom: &Hashed,
    signer: &crate::signing::BootSigner,
    provenance: &crate::signing::BootSigner,
    inputs: &RecordedInputs,
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<BuildRecord> {
    progress.stage("record", "build.json and SHA256SUMS");
    let mut hashes: BTreeMap<String, Hashed> = BTreeMap::new();
    hashes.insert(plan.outputs.rootfs.clone(), rootfs.hashed);
    for f in &rootfs.boot_files {
        hashes.insert(
            f.output.clone(),
            Hashed {
                sha256: f.sha256,
                size: f.size,
            },
        );
    }
    hashes.extend(boot.hashes.iter().map(|(k, v)| (k.clone(), *v)));
    hashes.extend(swu.hashes.iter().map(|(k, v)| (k.clone(), *v)));
    hashes.insert(plan.outputs.image.clone(), disk.image);
    hashes.insert(plan.outputs.bmap.clone(), disk.bmap);
    hashes.insert(plan.outputs.sbom.clone(), *sbom);
    if !plan.hardening.rules.is_empty() {
        for r in ["audit/report.md", "audit/report.json", "audit/report.sarif"] {
            hashes.insert(r.to_string(), Hashed::of_file(&out.join(r))?);
        }
    }
    check_outputs(plan, &hashes)?;
    // After the check, which must fail before anything is written.
    hashes.insert(
        plan.outputs.provenance_public_key.clone(),
        super::provenance::public_key(plan, provenance, out)?,
    );
    let record_of = |hashes: &BTreeMap<String, Hashed>| -> BuildRecord {
        let artifacts: Vec<Artifact> = hashes
            .iter()
            .map(|(name, h)| Artifact {
                name: name.clone(),
                sha256: hex::encode(h.sha256),
                size: h.size,
            })
            .collect();
        BuildRecord {
            // 2: `inputs` and `lock_sha256`.
            schema: 2,
            image: plan.image.name.clone(),
            version: plan.image.version.clone(),
            image_file: plan.image.file.clone(),
            plan_sha256: plan.hash(),
            source_date_epoch: plan.source_date_epoch,
            artifacts,
            partitions: plan
                .disk
                .partitions
                .iter()
                .map(|p| BuiltPartition {
                    number: p.number,
                    name: p.name.clone(),
                    type_guid: p.type_guid.to_string(),
                    uuid: partition_uuid(p, &boot.slots).to_string(),
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
            slots: boot.slots.iter().map(|s| s.record.clone()).collect(),
            rootfs: rootfs.facts.clone(),
            inputs: inputs.inputs.clone(),
            lock_sha256: inputs.lock_sha256.clone(),
            unrecorded_inputs: inputs.unrecorded.clone(),
        }
    };
    // The release diff reads the staged artifacts with the record as it
    // stands: it reads none of the files added after it.
    if let Some(previous) = &plan.previous {
        let written =
            super::release_diff::stage(plan, previous, &record_of(&hashes), out, progress)?;
        hashes.extend(written);
    }
    // The reviewer's index, once every key file it fingerprints is written;
    // an artifact itself, so build.json and SHA256SUMS cover it.
    let readme = crate::readme::index(plan, out, &slotsmith_sign::fingerprint(&signer.public_key))?;
    write_new(&out.join(crate::readme::OUTPUT), readme.as_bytes())?;
    hashes.insert(
        crate::readme::OUTPUT.to_string(),
        Hashed::of_bytes(readme.as_bytes()),
    );
    let record = record_of(&hashes);
    let mut json = serde_json::to_vec_pretty(&record).context("serialising build.json")?;
    json.push(b'\n');
    write_new(&out.join(&plan.outputs.build_json), &json)?;
    let mut all: Vec<(String, String)> = record
        .artifacts
        .iter()
        .map(|a| (a.name.clone(), a.sha256.clone()))
        .collect();
    let build_json_sha256 = hex::encode(Sha256::digest(&json));
    // The provenance's subjects are build.json's artifacts and build.json.
    let provenance_sha256 =
        super::provenance::envelope(plan, &record, &build_json_sha256, provenance, out)?;
    all.push((plan.outputs.build_json.clone(), build_json_sha256));
    all.push((plan.outputs.provenance.clone(), provenance_sha256));
    all.sort();
    let sums: String = all
        .iter()
        .map(|(file, sha)| format!("{sha}  {file}\n"))
        .collect();
    write_new(&out.join(&plan.outputs.sums), sums.as_bytes())?;
    Ok(record)
}

/// The build wrote exactly the plan's outputs: every non-optional one, and
/// nothing the plan does not list (the record, the provenance and
/// SHA256SUMS come next).
fn check_outputs(plan: &Plan, hashes: &BTreeMap<String, Hashed>) -> anyhow::Result<()> {
    let later = [
        &plan.outputs.build_json,
        &plan.outputs.sums,
        &plan.outputs.provenance,
        &plan.outputs.provenance_public_key,
    ];
    for o in &plan.outputs.files {
        if !o.optional
            && !later.contains(&&o.name)
            && o.name != crate::readme::OUTPUT
            && !plan
                .previous
                .as_ref()
                .is_some_and(|p| o.name == p.markdown || o.name == p.json)
            && !hashes.contains_key(&o.name)
        {
            anyhow::bail!("the build did not produce {}, which the plan lists", o.name);
        }
    }
    for name in hashes.keys() {
        if !plan.outputs.files.iter().any(|o| &o.name == name) {
            anyhow::bail!("the build produced {name}, which the plan does not list");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{sha256_of, Fixture, Setup};
    use super::*;
    use std::collections::BTreeSet;
    use std::fs;

    /// Every file under `dir`, as a path relative to it.
    fn files_under(dir: &Path) -> BTreeSet<String> {
        walkdir::WalkDir::new(dir)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                e.path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    #[test]
    fn build_json_lists_exactly_the_plans_outputs_and_sha256sums_checks() {
        let mut fx = Fixture::new(Setup::default().policies());
        let (made, record) = fx.staged();
        let out = fx.out.clone();
        // The directory holds exactly the plan's outputs (the fixture has
        // every optional one), and build.json lists each but itself and
        // SHA256SUMS.
        let planned: BTreeSet<String> = fx
            .plan
            .outputs
            .files
            .iter()
            .map(|o| o.name.clone())
            .collect();
        assert_eq!(files_under(&out), planned);
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join(&fx.plan.outputs.build_json)).unwrap())
                .unwrap();
        let listed: BTreeSet<String> = json["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect();
        let mut expected = planned.clone();
        expected.remove(&fx.plan.outputs.build_json);
        expected.remove(&fx.plan.outputs.sums);
        expected.remove(&fx.plan.outputs.provenance);
        assert_eq!(listed, expected);
        assert!(listed.contains("audit/report.md"), "{listed:?}");
        for a in &record.artifacts {
            let p = out.join(&a.name);
            assert_eq!(a.sha256, hex::encode(sha256_of(&p)), "{}", a.name);
            assert_eq!(a.size, fs::metadata(&p).unwrap().len(), "{}", a.name);
        }
        // What the stage returns is what it wrote.
        assert_eq!(json, serde_json::to_value(&record).unwrap());
        assert_eq!(record.plan_sha256, fx.plan.hash());
        // The inputs, by hash (build/inputs.rs has the details).
        assert_eq!(json["schema"], 2);
        assert_eq!(json["lock_sha256"], serde_json::Value::Null);
        let inputs: Vec<&str> = json["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["path"].as_str().unwrap())
            .collect();
        assert!(inputs.contains(&"images/tiny.yaml"), "{inputs:?}");
        assert!(inputs.contains(&"policies/ssh.yaml"), "{inputs:?}");
        assert_eq!(
            record.boot_key,
            slotsmith_sign::fingerprint(&made.boot_signer.public_key)
        );
        assert_eq!(record.slots.len(), made.boot.slots.len());
        assert_eq!(record.partitions.len(), fx.plan.disk.partitions.len());
        // The independent checker accepts SHA256SUMS, which names every
        // other file of the directory, build.json included.
        let sums = crate::tool::Tool::new("sha256sum")
            .unwrap()
            .dir(&out)
            .args(["-c", "--strict", &fx.plan.outputs.sums])
            .run()
            .unwrap_or_else(|e| panic!("{e:#}"));
        let ok = String::from_utf8_lossy(&sums.stdout).lines().count();
        assert_eq!(ok, planned.len() - 1);
        let named: BTreeSet<String> = fs::read_to_string(out.join(&fx.plan.outputs.sums))
            .unwrap()
            .lines()
            .map(|l| l.split_once("  ").unwrap().1.to_string())
            .collect();
        let mut others = planned;
        others.remove(&fx.plan.outputs.sums);
        assert_eq!(named, others);
    }

    #[test]
    fn a_missing_or_unplanned_output_fails_before_anything_is_written() {
        let mut fx = Fixture::new(Setup::default());
        let made = fx.made();
        let out = fx.out.clone();
        let record = |fx: &mut Fixture, swu: &SwuOut| {
            stage(
                &fx.plan,
                &made.rootfs,
                &made.boot,
                swu,
                &made.disk,
                &made.sbom,
                &made.boot_signer,
                &made.provenance_signer,
                &RecordedInputs::default(),
                &out,
                &mut fx.progress,
            )
        };
        let swu_file = fx.plan.update.file.clone();
        let mut missing = made.swu.hashes.clone();
        missing.remove(&swu_file);
        let err = record(&mut fx, &SwuOut { hashes: missing }).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("the build did not produce {swu_file}, which the plan lists")
        );
        let mut stray = made.swu.hashes.clone();
        stray.insert("stray.bin".into(), Hashed::of_bytes(b"x"));
        let err = record(&mut fx, &SwuOut { hashes: stray }).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "the build produced stray.bin, which the plan does not list"
        );
        assert!(!out.join(&fx.plan.outputs.build_json).exists());
        assert!(!out.join(&fx.plan.outputs.sums).exists());
        // The real outputs pass, without audit reports (no policies).
        let hashes = made.swu.hashes.clone();
        let r = record(&mut fx, &SwuOut { hashes }).unwrap();
        assert!(!r.artifacts.iter().any(|a| a.name.starts_with("audit/")));
    }
}
