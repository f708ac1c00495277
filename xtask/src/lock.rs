//! `cargo xtask lock`: resolves an image's Debian base to exact packages
//! and writes `images/<name>.lock` (with `--update`, refreshes it and
//! prints what changed); `--export DIR` copies the lock and every locked
//! `.deb`, verified, into a directory that is a complete `--cache-dir`
//! for a build room without network.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use slotsmith::build::debs;
use slotsmith::lockfile::{self, Lock, LockedKeyring};

use super::{default_cache, env_epoch, image_path, input_error, Failure, ImageArg};

/// The keyring Debian's apt (and so mmdebstrap) authenticates the archive
/// with; recorded with its hash so a reviewer can tell which keys vouched
/// for the downloads.
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

#[derive(clap::Args)]
pub(crate) struct LockArgs {
    #[command(flatten)]
    image: ImageArg,
    /// Refresh an existing lock and print the packages added, removed and upgraded
    #[arg(long)]
    update: bool,
    /// Copy the lock and every locked .deb (each checked) into DIR: a
    /// complete cache for `build --cache-dir DIR` on a machine without network
    #[arg(long, value_name = "DIR", conflicts_with = "update")]
    export: Option<PathBuf>,
    /// Cache holding debs/<sha256>.deb [default: $SLOTSMITH_CACHE or ~/.cache/slotsmith]
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Scratch directory [default: <project>/work]
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

pub(crate) fn run(a: LockArgs, project: Option<&Path>) -> Result<(), Failure> {
    let path = image_path(&a.image, project)?;
    let loaded = slotsmith::load::load_image_unlocked(&path)?;
    let image = &loaded.image;
    let root = image.root.clone();
    let cache = a.cache_dir.clone().unwrap_or_else(|| default_cache(&root));
    let deb_cache = cache.join("debs");
    let work = a.work_dir.clone().unwrap_or_else(|| root.join("work"));
    let Some(want) = slotsmith::load::lock::wanted(image) else {
        return Err(input_error(
            "IMAGE",
            &format!(
                "{} has no Debian base (base.debian); only a Debian base can be locked",
                image.file
            ),
        ));
    };
    let rel = slotsmith::load::lock::lock_path(&image.file);
    let name = Path::new(&image.file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut progress =
        slotsmith::progress::Progress::with_mode(slotsmith::progress::Mode::detect(false, false));
    if let Some(dir) = &a.export {
        // The lock must be current: exporting a stale one would carry a
        // package set no build of this image uses.
        let loaded = slotsmith::load::load_image(&path)?;
        let plan = slotsmith::plan::plan(&loaded, env_epoch()?)?;
        let Some(lock) = &plan.base.lock else {
            return Err(input_error(
                "--export",
                &format!("{rel} does not exist; run `cargo xtask lock {name}` first"),
            ));
        };
        debs::ensure_cached(&plan, lock, &deb_cache, &work, &mut progress)?;
        let out = dir.join("debs");
        fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        for p in &lock.packages {
            let dest = debs::cache_path(&out, p);
            if dest.is_file()
                && slotsmith::load::hash_file(&dest)
                    .map(|(h, _)| h == p.sha256)
                    .unwrap_or(false)
            {
                continue;
            }
            let tmp = out.join(format!(".{}.partial", p.sha256));
            debs::copy_verified(&deb_cache, p, &lock.path, &tmp)?;
            fs::rename(&tmp, &dest).with_context(|| format!("writing {}", dest.display()))?;
        }
        let lock_copy = dir.join(format!("{name}.lock"));
        fs::copy(root.join(&rel), &lock_copy)
            .with_context(|| format!("copying {rel} to {}", lock_copy.display()))?;
        fs::write(
            dir.join("README.txt"),
            format!(
                "The Debian packages of {file}, as {rel} locks them ({n} .debs, each named by its sha256).\n\
                 On a machine without network, with the project checked out at the release:\n\n  \
                 cargo xtask build {name} --cache-dir {shown}\n\n\
                 Every .deb is checked against the lock again when it is used; {name}.lock here is a copy\n\
                 for comparison (its sha256 is {sha}).\n",
                file = image.file,
                n = lock.packages.len(),
                shown = dir.display(),
                sha = lock.sha256,
            ),
        )
        .with_context(|| format!("writing {}", dir.join("README.txt").display()))?;
        println!(
            "exported {} locked packages and {rel} to {}",
            lock.packages.len(),
            dir.display()
        );
        return Ok(());
    }
    let existing = slotsmith::load::lock::read_lock(image, false)?;
    if existing.is_some() && !a.update {
        return Err(input_error(
            "--update",
            &format!("{rel} exists; `cargo xtask lock --update {name}` refreshes it and prints what changed"),
        ));
    }
    let plan = slotsmith::plan::plan(&loaded, env_epoch()?)?;
    progress.stage(
        "lock",
        &format!("resolving {} against the archive", image.file),
    );
    let resolved = debs::resolve(&plan, &deb_cache, &work, &mut progress)?;
    let keyrings = match slotsmith::load::hash_file(Path::new(DEBIAN_KEYRING)) {
        Ok((sha256, _)) => vec![LockedKeyring {
            path: DEBIAN_KEYRING.to_string(),
            sha256,
        }],
        Err(_) => Vec::new(),
    };
    let lock = Lock {
        key: want,
        keyrings,
        indexes: resolved.indexes,
        packages: resolved.packages,
    };
    let text = lockfile::render(&lock, &image.file, &name);
    // Written whole or not at all: a half-written lock would fail every
    // build, or worse, lock fewer packages.
    let dest = root.join(&rel);
    let tmp = root.join(format!("{rel}.partial-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &dest)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Failure::Build(
            anyhow::Error::from(e).context(format!("writing {}", dest.display())),
        ));
    }
    match existing {
        Some(old) => {
            let c = lockfile::changes(&old.lock.packages, &lock.packages);
            if c.is_empty() {
                println!("{rel}: unchanged ({} packages)", lock.packages.len());
            } else {
                println!(
                    "{rel}: {} added, {} removed, {} upgraded, {} rebuilt ({} packages)",
                    c.added.len(),
                    c.removed.len(),
                    c.upgraded.len(),
                    c.rehashed.len(),
                    lock.packages.len()
                );
                for l in c.lines() {
                    println!("  {l}");
                }
            }
        }
        None => println!("{rel}: locked {} packages", lock.packages.len()),
    }
    Ok(())
}
