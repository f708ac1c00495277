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
//! **One module per stage**, each taking what it needs and returning a
//! typed result, so [`build`] reads as the sequence it is: `base`, `harden`,
//! `layers` and `rootfs` make the slot image; `audit` reads it back and
//! gates the build; `boot` builds the verity trees and signs the manifests;
//! `update` writes the `.swu`; `disk` writes the golden image; `record`
//! writes the block map, `build.json`, the signed provenance and
//! `SHA256SUMS` from hashes the stages already computed; `selfcheck`
//! verifies the image and the update in the staging directory before
//! anything is published.
//!
//! **Rootless:** the base is imported into an in-memory tree (see
//! `slotsmith-rootfs`); owners, modes, device nodes and xattrs travel as
//! data into the filesystem image, never through the host filesystem.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::plan::Plan;
use crate::progress::Progress;

mod audit;
mod base;
mod boot;
mod cache;
mod chain;
pub mod debs;
mod device;
mod disk;
mod harden;
mod initramfs;
mod inputs;
mod layers;
mod provenance;
mod record;
mod release_diff;
mod rootfs;
mod sbom;
mod selfcheck;
#[cfg(test)]
mod testkit;
mod update;

pub use inputs::{Input, RecordedInputs};
pub use record::{Artifact, BuildRecord, BuiltPartition, PartRef, RootfsFacts, SlotRecord};

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
    /// The content-addressed `.deb` cache a locked Debian base installs
    /// from (`<sha256>.deb`), normally `<cache_dir>/debs`. Separate so that
    /// `repro` can rebuild with a fresh cache yet without the network.
    pub deb_cache: PathBuf,
    /// Run every stage, ignoring (and not filling) the stage cache.
    pub no_cache: bool,
    /// The static init for the boot chain's initramfs (`crates/init`,
    /// built by the driver); needed only when the plan has a chain.
    pub init_binary: Option<PathBuf>,
    /// The static updater the rootfs carries (`crates/updater`, built by
    /// the driver with the init); needed only when the plan has a chain.
    pub updater_binary: Option<PathBuf>,
}

/// What `build` returns.
pub struct BuildOutcome {
    /// The published output directory.
    pub out_dir: PathBuf,
    /// The record written as build.json.
    pub record: BuildRecord,
    /// Which stages came from the stage cache (`hit`), ran and were stored
    /// (`miss`), or ran uncached (`off`).
    pub cache: std::collections::BTreeMap<String, CacheOutcome>,
}

pub use cache::Outcome as CacheOutcome;

/// Builds `plan` into `out_root/<name>/`.
pub fn build(
    plan: &Plan,
    opts: &BuildOptions,
    progress: &mut Progress,
) -> anyhow::Result<BuildOutcome> {
    let name = &plan.image.name;
    std::fs::create_dir_all(&opts.out_root)
        .with_context(|| format!("creating {}", opts.out_root.display()))?;
    // One build of an image at a time: the work directory and the staging
    // names are per image. Stale staging directories of killed builds go
    // first, so none can belong to a running build.
    let lock = crate::publish::ImageLock::acquire(&opts.work_root, name, progress)?;
    crate::publish::clean_stale(&opts.out_root, name, progress)?;
    // Cache hits are verified (hashed) in the background while the later
    // stages run, and settled before anything is published. A corrupted
    // entry is deleted and the build runs once more, so its bytes can
    // never be published.
    let outcome = match attempt(plan, opts, progress)? {
        Attempt::Published(o) => *o,
        Attempt::CacheCorrupted => match attempt(plan, opts, progress)? {
            Attempt::Published(o) => *o,
            Attempt::CacheCorrupted => anyhow::bail!(
                "the stage cache of {name} was corrupted twice in a row; build with --no-cache"
            ),
        },
    };
    drop(lock);
    Ok(outcome)
}

/// What one pass of the build ended with.
enum Attempt {
    Published(Box<BuildOutcome>),
    /// A cache hit failed its verification; nothing was published.
    CacheCorrupted,
}

fn attempt(plan: &Plan, opts: &BuildOptions, progress: &mut Progress) -> anyhow::Result<Attempt> {
    let name = &plan.image.name;
    let work = fresh_work_dir(&opts.work_root, name)?;
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
    let out = staging.path();

    // The files only the load stage read are hashed first, as close to
    // the load as the build gets (build.json records them).
    let inputs = inputs::inputs(plan, &opts.project_root)?;
    // Keys first: a missing or badly protected key fails in a second, not
    // after the base import.
    let signer = crate::signing::boot_signer(plan, &opts.project_root, progress)?;
    let update_signer = crate::signing::update_signer(plan, &opts.project_root, progress)?;
    let provenance_signer = crate::signing::provenance_signer(plan, &opts.project_root, progress)?;

    let cache = cache::Cache::new(&opts.work_root, name, !opts.no_cache);
    let public_key_pem = slotsmith_sign::keys::public_key_pem(&signer.public_key);
    // The rootfs also carries the update certificate (SWUpdate's trust
    // anchor) when the image has a boot chain.
    let mut chain_inputs = initramfs::key_parts(plan, opts, &public_key_pem)?;
    if plan.chain.is_some() {
        use sha2::Digest;
        let cert = std::fs::read(&update_signer.cert)
            .with_context(|| format!("reading {}", update_signer.cert.display()))?;
        chain_inputs["update_cert"] = hex::encode(sha2::Sha256::digest(cert)).into();
        chain_inputs["updater"] =
            hex::encode(sha2::Sha256::digest(device::updater_binary(opts)?)).into();
    }
    let rootfs_key = rootfs::key(plan, chain_inputs)?;
    let rootfs = match rootfs::cached(plan, rootfs_key.as_ref(), &cache, out, progress)? {
        Some(hit) => hit,
        None => {
            let store = work.join("store");
            let mut tree = base::stage(plan, opts, &store, progress)?;
            harden::stage(plan, &mut tree, &store, progress)?;
            device::apply(plan, &mut tree, &store, &update_signer.cert, opts)?;
            layers::stage(plan, opts, &mut tree, progress)?;
            rootfs::stage(
                plan,
                opts,
                &public_key_pem,
                &mut tree,
                rootfs_key.as_ref(),
                &cache,
                &work,
                out,
                progress,
            )?
        }
    };
    audit::stage(plan, &rootfs, out, &work, progress)?;
    let sbom = sbom::stage(plan, opts, &rootfs, out, progress)?;
    let mut boot = boot::stage(plan, &rootfs, &signer, &cache, out, progress)?;
    if let Some(c) = &plan.chain {
        let keys = crate::secureboot::resolve_keys(
            &c.secureboot_key,
            plan.boot.release,
            &plan.image.file,
            &opts.project_root,
            progress,
        )?;
        chain::stage(
            plan,
            &mut boot,
            &|i: &Path, o: &Path| crate::secureboot::sign_efi(i, o, &keys, plan.source_date_epoch),
            &work,
            out,
            progress,
        )?;
        chain::enrolment(plan, &keys, &mut boot, out, progress)?;
    }
    // The `.swu` and the boot partitions carry the SBOM written above.
    let swu = update::stage(
        plan,
        &rootfs,
        &boot,
        &sbom,
        &update_signer,
        &cache,
        &work,
        out,
        progress,
    )?;
    let disk = disk::stage(plan, &rootfs, &boot, &sbom, &cache, out, progress)?;
    let record = record::stage(
        plan,
        &rootfs,
        &boot,
        &swu,
        &disk,
        &sbom,
        &signer,
        &provenance_signer,
        &inputs,
        out,
        progress,
    )?;
    let checked = selfcheck::stage(plan, out, &signer.public_key, progress);
    // Settled even when the self-check failed: a corrupted hit explains it.
    if cache.pending() > 0 {
        progress.stage(
            "cache-check",
            &format!(
                "waiting for the hashes of {} cached file(s)",
                cache.pending()
            ),
        );
    }
    if !cache.settle(progress) {
        return Ok(Attempt::CacheCorrupted);
    }
    checked?;

    progress.stage("publish", &format!("out/{}", plan.outputs.dir));
    let out_dir = opts.out_root.join(&plan.outputs.dir);
    crate::publish::publish(staging, &out_dir)?;
    // The work directory holds the imported base (a default image's is
    // 14,000 files): timed, so a slow disk shows here and not as a gap.
    progress.stage("cleanup", &format!("removing {}", work.display()));
    slotsmith_rootfs::cleanup::remove_tree(&work)
        .with_context(|| format!("removing work directory {}", work.display()))?;
    progress.finish();
    Ok(Attempt::Published(Box::new(BuildOutcome {
        out_dir,
        record,
        cache: cache.outcomes(),
    })))
}

/// Empties `work_root/<name>` for this build. Depth-independent and bounded
/// in open files: a hostile deep tree left by a failed build must not break
/// every later build.
fn fresh_work_dir(work_root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let work = work_root.join(name);
    slotsmith_rootfs::cleanup::remove_tree(&work)
        .with_context(|| format!("removing old work directory {}", work.display()))?;
    let store = work.join("store");
    std::fs::create_dir_all(&store)
        .with_context(|| format!("creating work directory {}", store.display()))?;
    Ok(work)
}

/// Writes a new file with `bytes`, synced; refuses to overwrite.
pub(super) fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = File::create_new(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
}

/// A path from the plan: relative ones are relative to the project root.
pub(super) fn resolve(root: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

/// A sha256 and size, computed once where an artifact is written and
/// reused by every later stage (the record never re-reads a file a stage
/// already hashed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hashed {
    pub(super) sha256: [u8; 32],
    pub(super) size: u64,
}

impl Hashed {
    /// Hashes `bytes`.
    pub(super) fn of_bytes(bytes: &[u8]) -> Hashed {
        use sha2::Digest;
        Hashed {
            sha256: sha2::Sha256::digest(bytes).into(),
            size: bytes.len() as u64,
        }
    }

    /// Hashes a file in one sequential read.
    pub(super) fn of_file(path: &Path) -> anyhow::Result<Hashed> {
        let (hex_sha, size) =
            crate::load::hash_file(path).with_context(|| format!("hashing {}", path.display()))?;
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&hex_sha, &mut sha256).context("hash_file returned bad hex")?;
        Ok(Hashed { sha256, size })
    }
}
