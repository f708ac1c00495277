//! The base stage: imports the base rootfs (a tarball, a directory, or
//! Debian through mmdebstrap, cached by the plan's cache key) into the
//! in-memory tree.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::load::hash_file;
use crate::plan::tools::slot;
use crate::plan::Plan;
use crate::progress::{mib, Progress};
use crate::spec::{BaseSpec, DirOwnership};
use crate::tool::Tool;
use slotsmith_rootfs as rootfs;
use slotsmith_rootfs::tree::Tree;

use super::debs;
use super::resolve;
use super::BuildOptions;

/// Imports the plan's base into a fresh tree.
pub(super) fn stage(
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
            if plan.base.lock.is_none() {
                progress.warn(&format!(
                    "{} has no lock: its Debian base follows the archive, so the same definition \
                     gives other bytes next month; `cargo xtask lock` pins it",
                    plan.image.file
                ));
            }
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

/// Returns the cached mmdebstrap tarball for the plan's cache key, making it
/// first when absent. The cache entry appears by rename only when complete.
fn debian_base(
    plan: &Plan,
    opts: &BuildOptions,
    progress: &mut Progress,
) -> anyhow::Result<PathBuf> {
    if !matches!(plan.base.spec, BaseSpec::Debian { .. }) {
        bail!("not a debian base");
    }
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
    let res = match &plan.base.lock {
        Some(lock) => locked_bootstrap(plan, opts, lock, &tmp, progress),
        None => bootstrap(plan, &tmp, progress),
    };
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &cached).with_context(|| format!("caching {}", cached.display()))?;
    Ok(cached)
}

/// An unlocked base: mmdebstrap from the mirror or the host's apt sources
/// (each existing sources file is pasted into the chroot's sources).
fn bootstrap(plan: &Plan, tmp: &Path, progress: &mut Progress) -> anyhow::Result<()> {
    let host_sources = debs::host_sources();
    let inv = plan
        .tools
        .base
        .as_ref()
        .context("a debian plan without its mmdebstrap invocation")?;
    if host_sources.is_empty() && inv.args.iter().any(|a| a == slot::HOST_APT_SOURCES) {
        bail!("no host apt sources found (/etc/apt/sources.list or /etc/apt/sources.list.d/debian.sources); set base.debian.mirror");
    }
    let tool = Tool::from_invocation(
        inv,
        &[
            (slot::OUTPUT, vec![tmp.to_path_buf().into()]),
            (slot::HOST_APT_SOURCES, host_sources),
        ],
        plan.source_date_epoch,
    )?;
    progress.note(&format!("running {}", tool.argv()));
    tool.run()
        .context("building the debian base with mmdebstrap")?;
    Ok(())
}

/// A locked base: exactly the locked `.deb`s, each verified, from a local
/// repository; then the installed set is read back and compared with the
/// lock. Needs no network once the cache holds every locked package.
fn locked_bootstrap(
    plan: &Plan,
    opts: &BuildOptions,
    lock: &crate::plan::PlanLock,
    tmp: &Path,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    debs::ensure_cached(plan, lock, &opts.deb_cache, &opts.work_root, progress)?;
    let repo = tempfile::Builder::new()
        .prefix("debian-repo-")
        .tempdir_in(&opts.work_root)
        .with_context(|| format!("creating a directory in {}", opts.work_root.display()))?;
    let repo_path = repo.path().to_path_buf();
    let repo_str = repo_path
        .to_str()
        .filter(|s| !s.contains(|c: char| c.is_whitespace() || c == ']'))
        .with_context(|| {
            format!(
                "the work directory {} cannot be named in an apt source (spaces or non-UTF-8); use --work-dir",
                opts.work_root.display()
            )
        })?
        .to_string();
    progress.note(&format!(
        "installing the {} packages of {} from a local repository",
        lock.packages.len(),
        lock.path
    ));
    debs::make_repo(plan, lock, &opts.deb_cache, &repo_path)?;
    let inv = plan
        .tools
        .base
        .as_ref()
        .context("a debian plan without its mmdebstrap invocation")?;
    // trusted=yes: the repository has no signature; every file in it was
    // just checked against the committed lock (debs.rs).
    let source = format!("deb [trusted=yes] copy://{repo_str} ./");
    let tool = Tool::from_invocation(
        inv,
        &[
            (slot::OUTPUT, vec![tmp.to_path_buf().into()]),
            (slot::LOCAL_REPO_SOURCE, vec![source.into()]),
        ],
        plan.source_date_epoch,
    )?;
    progress.note(&format!("running {}", tool.argv()));
    tool.run().with_context(|| {
        format!(
            "building the locked debian base ({}) with mmdebstrap",
            lock.path
        )
    })?;
    let read_status = plan
        .tools
        .lock
        .get(1)
        .context("a locked plan without its status check")?;
    let status = Tool::from_invocation(
        read_status,
        &[(slot::OUTPUT, vec![tmp.to_path_buf().into()])],
        plan.source_date_epoch,
    )?
    .run()
    .with_context(|| format!("reading the installed packages from {}", tmp.display()))?;
    debs::check_installed(&String::from_utf8_lossy(&status.stdout), lock)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{self, contents, node, Fixture, Setup};
    use super::*;
    use slotsmith_rootfs::path::RelPath;
    use slotsmith_rootfs::tree::Kind;

    #[test]
    fn a_tarball_base_imports_every_entry_with_its_metadata() {
        let mut fx = Fixture::new(Setup::default());
        let tree = stage(&fx.plan, &fx.opts, &fx.store, &mut fx.progress).unwrap();
        let mut paths: Vec<&str> = tree
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| !p.is_empty())
            .collect();
        paths.sort();
        let mut want = testkit::BASE_PATHS.to_vec();
        want.sort();
        assert_eq!(paths, want);
        // A plain tarball's contents are read in place, from the archive
        // the plan names (a compressed one's go to the store).
        match &node(&tree, "etc/passwd").kind {
            Kind::File { content, size } => {
                assert!(
                    matches!(content, slotsmith_rootfs::tree::Content::Slice { .. }),
                    "{content:?}"
                );
                assert_eq!(*size, testkit::PASSWD.len() as u64);
            }
            other => panic!("etc/passwd is a {other:?}"),
        }
        assert_eq!(contents(&tree, "etc/passwd"), testkit::PASSWD);
        assert_eq!(
            contents(&tree, "boot/vmlinuz-6.1.0-test"),
            testkit::kernel_bytes()
        );
        // Owners, modes, devices, links and xattrs come from the archive,
        // whoever runs the build.
        let su = node(&tree, "usr/bin/su");
        assert_eq!((su.meta.mode, su.meta.uid, su.meta.gid), (0o4755, 0, 0));
        assert_eq!(node(&tree, "tmp").meta.mode, 0o1777);
        let db = node(&tree, "var/lib/svc.db");
        assert_eq!((db.meta.mode, db.meta.uid, db.meta.gid), (0o600, 107, 107));
        let console = node(&tree, "dev/console");
        assert_eq!(
            console.kind,
            Kind::CharDev { major: 5, minor: 1 },
            "dev/console"
        );
        assert_eq!(console.meta.mode, 0o600);
        assert_eq!(
            node(&tree, "bin/sh").kind,
            Kind::Symlink {
                target: "../usr/bin/su".into()
            }
        );
        assert_eq!(
            node(&tree, "etc/mtab").kind,
            Kind::Symlink {
                target: "/proc/self/mounts".into()
            }
        );
        assert_eq!(
            node(&tree, "usr/bin/sudo-alias").kind,
            Kind::Hardlink {
                target: RelPath::parse("usr/bin/su").unwrap()
            }
        );
        assert_eq!(
            node(&tree, "usr/bin/ping")
                .meta
                .xattrs
                .get("security.capability")
                .map(Vec::as_slice),
            Some(testkit::CAP_NET_RAW_EP.as_slice())
        );
        assert!(
            fx.log
                .text()
                .contains("importing tarball fixtures/base.tar"),
            "{}",
            fx.log.text()
        );
    }

    #[test]
    fn a_tarball_changed_since_the_plan_is_refused_before_anything_is_imported() {
        let mut fx = Fixture::new(Setup::default());
        let tar = fx.root().join("fixtures/base.tar");
        let mut bytes = fs::read(&tar).unwrap();
        // Same size, one entry's contents changed: only the hash can tell.
        let at = bytes
            .windows(testkit::PASSWD.len())
            .position(|w| w == testkit::PASSWD)
            .unwrap();
        bytes[at..at + 4].copy_from_slice(b"ROOT");
        fs::write(&tar, &bytes).unwrap();
        let BaseSpec::Tarball { sha256, .. } = &fx.plan.base.spec else {
            panic!("the fixture has a tarball base");
        };
        let planned = sha256.clone();
        let err = stage(&fx.plan, &fx.opts, &fx.store, &mut fx.progress).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("changed since it was planned"), "{msg}");
        assert!(msg.contains(&planned), "{msg}");
        assert!(msg.contains(&tar.display().to_string()), "{msg}");
        assert_eq!(
            fs::read_dir(&fx.store).unwrap().count(),
            0,
            "the store was written before the hash was checked"
        );
        // Planned again, the new tarball is the input.
        fx.replan();
        let tree = stage(&fx.plan, &fx.opts, &fx.store, &mut fx.progress).unwrap();
        assert!(contents(&tree, "etc/passwd").starts_with(b"ROOT:"));
    }

    #[test]
    fn a_missing_tarball_is_an_error_naming_it() {
        let mut fx = Fixture::new(Setup::default());
        let tar = fx.root().join("fixtures/base.tar");
        fs::remove_file(&tar).unwrap();
        let err = stage(&fx.plan, &fx.opts, &fx.store, &mut fx.progress).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("reading base tarball {}", tar.display())),
            "{msg}"
        );
    }
}
