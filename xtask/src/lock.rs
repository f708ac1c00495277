//! `cargo xtask lock`: resolves an image's Debian base to exact packages
//! and writes `images/<name>.lock` (with `--update`, refreshes it and
//! prints what changed); `--export DIR` copies the lock and every locked
//! `.deb`, verified, into a directory that is the `--deb-cache` (its `debs/`)
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
    /// Copy the lock and every locked .deb (each checked) into DIR:
    /// the `.deb` cache for `build --deb-cache DIR/debs` on a machine without network
    #[arg(long, value_name = "DIR", conflicts_with = "update")]
    export: Option<PathBuf>,
    /// Cache holding debs/<sha256>.deb [default: $SLOTSMITH_CACHE or ~/.cache/slotsmith]
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Scratch directory [default: <project>/work]
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// Writes `path` whole, replacing what is there without following a
/// symlink at that name (the export directory may be a carried medium).
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("partial-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
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
    if !lockfile::LOCKABLE_VARIANTS.contains(&want.variant.as_str()) {
        return Err(input_error(
            "IMAGE",
            &format!(
                "{}: variant '{}' cannot be locked (only {}): the others pick packages by archive priority or do not install them",
                image.file,
                want.variant,
                lockfile::LOCKABLE_VARIANTS.join(", ")
            ),
        ));
    }
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
            // An entry already there counts only if it is a regular file
            // (not a link) with the locked hash; anything else goes.
            if debs::is_intact(&dest, &p.sha256, p.size) {
                continue;
            }
            let tmp = out.join(format!(".{}.partial-{}", p.sha256, std::process::id()));
            let _ = fs::remove_file(&tmp);
            debs::copy_verified(&deb_cache, p, &lock.path, &tmp)?;
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", tmp.display()))?;
            fs::rename(&tmp, &dest).with_context(|| format!("writing {}", dest.display()))?;
        }
        let lock_text = fs::read(root.join(&rel))
            .with_context(|| format!("reading {}", root.join(&rel).display()))?;
        write_new(&dir.join(format!("{name}.lock")), &lock_text)?;
        let readme = format!(
            "The Debian packages of {file}, as {rel} locks them ({n} .debs in debs/, each named by\n\
             its sha256). On a machine without network, with the project checked out at the release\n\
             (and its Rust crates fetched, `cargo fetch`):\n\n  \
             cargo xtask build {name} --deb-cache {shown}/debs\n\n\
             This directory is only read. Every .deb is checked against the lock when a base is\n\
             bootstrapped from it; {name}.lock here is a copy for comparison (sha256 {sha}).\n",
            file = image.file,
            n = lock.packages.len(),
            shown = dir.display(),
            sha = lock.sha256,
        );
        write_new(&dir.join("README.txt"), readme.as_bytes())?;
        println!(
            "exported {} locked packages and {rel} to {}",
            lock.packages.len(),
            dir.display()
        );
        return Ok(());
    }
    let existing = match slotsmith::load::lock::read_lock(image, false) {
        Ok(l) => l,
        // `--update` rewrites a lock it cannot read (a merge conflict, a
        // hand edit); without it, the problems are the answer.
        Err(d) if a.update => {
            eprintln!("{d}");
            eprintln!("warning: {rel} could not be read; --update writes a new one");
            None
        }
        Err(d) => return Err(d.into()),
    };
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
    // What `lock` writes, the loader must read back: a package the
    // archive offers twice, or a field our parser refuses, stops here and
    // not in every later build.
    lockfile::parse(Path::new(&rel), &text).map_err(|d| {
        Failure::Build(anyhow::anyhow!(
            "the resolution gave a lock that does not read back:\n{d}"
        ))
    })?;
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
            for l in lockfile::header_changes(&old.lock, &lock) {
                println!("{rel}: {l}");
            }
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
