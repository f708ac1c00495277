//! The rootfs stage: turns the tree into the slot filesystem image
//! (squashfs through tar2sqfs, or ext4 through mke2fs and debugfs) and
//! checks that it fits its slot.

use std::fs::{self};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::load::human;
use crate::plan::tools::slot;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::spec::Filesystem;
use crate::tool::Tool;
use slotsmith_rootfs as rootfs;
use slotsmith_rootfs::tree::Tree;

use super::boot::{boot_files, BootFile};
use super::cache::{Cache, Key};
use super::layers::drop_acls;
use super::record::RootfsFacts;
use super::{BuildOptions, Hashed};

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
            let tool = Tool::from_invocation(
                &plan.tools.rootfs[0],
                &[
                    (slot::OUTPUT, vec![out.into()]),
                    (slot::JOBS, vec![jobs().into()]),
                ],
                sde,
            )?;
            let total = tree.total_file_bytes();
            let bar = progress.bytes("tar2sqfs input", Some(total));
            tool.run_with_stdin(|w| {
                rootfs::export::write_tar(tree, w, &mut |b| bar.set(b))?;
                Ok(())
            })
            .context("writing the squashfs rootfs")?;
            bar.finish();
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
            let [mke2fs, debugfs] = plan.tools.rootfs.as_slice() else {
                bail!("an ext4 plan runs mke2fs then debugfs");
            };
            Tool::from_invocation(
                mke2fs,
                &[
                    (slot::STAGING, vec![staging.clone().into()]),
                    (slot::OUTPUT, vec![out.into()]),
                ],
                sde,
            )?
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
            let out_msg = Tool::from_invocation(
                debugfs,
                &[
                    (slot::SCRIPT, vec![script_path.clone().into()]),
                    (slot::OUTPUT, vec![out.into()]),
                ],
                sde,
            )?
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
    anyhow::Error::new(crate::spec::InputError(crate::diag::Diagnostics::from(
        vec![d],
    )))
}

/// The slot filesystem image as built, with the boot files taken from it
/// (or from the project).
pub(super) struct RootfsImage {
    /// Where it is (in the staging directory).
    pub(super) path: PathBuf,
    /// Its hash and size, computed once here.
    pub(super) hashed: Hashed,
    /// What build.json says about it.
    pub(super) facts: RootfsFacts,
    /// The kernel, initrd and dtb, copied to the outputs and hashed.
    pub(super) boot_files: Vec<BootFile>,
    /// The image's size, sha256 and cpio check with the file's stamp, when
    /// this build wrote it (a cache hit re-reads it in the update stage).
    pub(super) swu_digests: Option<(slotsmith_swu::Digests, slotsmith_swu::Stamp)>,
}

/// What a cached rootfs stage keeps besides its files.
#[derive(serde::Serialize, serde::Deserialize)]
struct RootfsMeta {
    entries: u64,
    file_bytes: u64,
    /// (role, output name) of each boot file, in order.
    boot_files: Vec<(String, String)>,
}

/// The key of everything that makes the slot image: the base (by its
/// hash, or the Debian cache key), the hardening rules, the layers (their
/// files by hash), the filesystem settings, the epoch, where the kernel
/// comes from, and the versions of the tools that write the image. A
/// directory base is not hashed by the plan, so it is never cached.
pub(super) fn key(plan: &Plan, initramfs: serde_json::Value) -> anyhow::Result<Option<Key>> {
    if matches!(plan.base.spec, crate::spec::BaseSpec::Directory { .. }) {
        return Ok(None);
    }
    let tools: Vec<String> = match plan.rootfs.filesystem {
        Filesystem::Squashfs => vec![crate::tool::version("tar2sqfs")?],
        Filesystem::Ext4 => vec![
            crate::tool::version("mke2fs")?,
            crate::tool::version("debugfs")?,
        ],
    };
    Cache::key(
        "rootfs",
        &serde_json::json!({
            "base": plan.base,
            "hardening": plan.hardening,
            "layers": plan.layers,
            "rootfs": plan.rootfs,
            "source_date_epoch": plan.source_date_epoch,
            "kernel": plan.boot.kernel,
            "outputs": [plan.outputs.rootfs.clone()],
            "invocations": plan.tools.rootfs,
            "boot_files": plan.boot.files,
            "initramfs": initramfs,
            "tools": tools,
        }),
    )
    .map(Some)
}

/// The slot image and boot files from the cache, placed into `out`.
pub(super) fn cached(
    plan: &Plan,
    key: Option<&Key>,
    cache: &Cache,
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<Option<RootfsImage>> {
    let Some(key) = key else {
        cache.uncacheable("rootfs");
        return Ok(None);
    };
    let Some(hit) = cache.get("rootfs", key, progress) else {
        return Ok(None);
    };
    progress.stage("rootfs", "slot image and boot files (cached)");
    let meta: RootfsMeta = hit.meta()?;
    let path = out.join(&plan.outputs.rootfs);
    hit.place(&plan.outputs.rootfs, &path)?;
    let hashed = hit.hashed(&plan.outputs.rootfs)?;
    let mut boot_files = Vec::new();
    for (role, output) in meta.boot_files {
        hit.place(&output, &out.join(&output))?;
        let h = hit.hashed(&output)?;
        boot_files.push(BootFile {
            role: super::boot::boot_role(&role)?,
            output,
            sha256: h.sha256,
            size: h.size,
        });
    }
    Ok(Some(RootfsImage {
        path,
        hashed,
        facts: RootfsFacts {
            filesystem: plan.rootfs.filesystem,
            size: hashed.size,
            slot_size: plan.rootfs.max_size,
            entries: meta.entries,
            file_bytes: meta.file_bytes,
        },
        boot_files,
        swu_digests: None,
    }))
}

/// Clamps the tree's times, drops what the filesystem cannot store, writes
/// the slot image into `out` and copies the boot files; stores the result
/// in the cache under `key`.
#[allow(clippy::too_many_arguments)]
pub(super) fn stage(
    plan: &Plan,
    opts: &BuildOptions,
    public_key_pem: &str,
    tree: &mut Tree,
    key: Option<&Key>,
    cache: &Cache,
    work: &Path,
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<RootfsImage> {
    tree.clamp_mtimes(plan.source_date_epoch as i64);
    if plan.rootfs.filesystem == Filesystem::Squashfs {
        drop_acls(tree, progress);
    }
    let path = out.join(&plan.outputs.rootfs);
    build_rootfs(plan, tree, work, &path, progress)?;
    // One read gives the sha256 for the record and the cpio check the
    // update needs, so the .swu copies the image without hashing it again.
    let (digests, _) = slotsmith_swu::Digests::of_file_stamped(&path)
        .with_context(|| format!("hashing {}", path.display()))?;
    let hashed = Hashed {
        sha256: digests.sha256,
        size: digests.size,
    };
    let boot_files = boot_files(plan, opts, tree, public_key_pem, out)?;
    let image = RootfsImage {
        path,
        hashed,
        facts: RootfsFacts {
            filesystem: plan.rootfs.filesystem,
            size: hashed.size,
            slot_size: plan.rootfs.max_size,
            entries: tree.len() as u64,
            file_bytes: tree.total_file_bytes(),
        },
        boot_files,
        swu_digests: None,
    };
    if let Some(key) = key {
        let mut files: Vec<(&str, PathBuf, Hashed)> =
            vec![(plan.outputs.rootfs.as_str(), image.path.clone(), hashed)];
        for f in &image.boot_files {
            files.push((
                f.output.as_str(),
                out.join(&f.output),
                Hashed {
                    sha256: f.sha256,
                    size: f.size,
                },
            ));
        }
        let refs: Vec<(&str, &Path, Hashed)> = files
            .iter()
            .map(|(n, p, h)| (*n, p.as_path(), *h))
            .collect();
        let meta = RootfsMeta {
            entries: image.facts.entries,
            file_bytes: image.facts.file_bytes,
            boot_files: image
                .boot_files
                .iter()
                .map(|f| (f.role.to_string(), f.output.clone()))
                .collect(),
        };
        cache.put("rootfs", key, &refs, &meta, progress);
    }
    // The stamp is taken after the cache's hard link (which moves the
    // ctime) and before anything else touches the file: the digests above
    // describe exactly these bytes, since this build wrote the file and
    // nothing but the link happened since.
    let f = std::fs::File::open(&image.path)
        .with_context(|| format!("opening {}", image.path.display()))?;
    let stamp = slotsmith_swu::Stamp::of_file(&f, &image.path)?;
    Ok(RootfsImage {
        swu_digests: Some((digests, stamp)),
        ..image
    })
}

/// The job count for tar2sqfs: its output is identical for any count
/// (tested), so this is an execution detail, not a plan decision.
fn jobs() -> String {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{self, run, sha256_of, Fixture, Setup};
    use super::*;

    /// Runs the stage on the fixture's tree into `out`.
    fn run_stage(fx: &mut Fixture, out: &Path) -> anyhow::Result<(RootfsImage, u64, u64)> {
        let mut tree = fx.tree();
        let key = key(&fx.plan, serde_json::Value::Null)?;
        let img = stage(
            &fx.plan,
            &fx.opts,
            "",
            &mut tree,
            key.as_ref(),
            &fx.cache,
            &fx.work,
            out,
            &mut fx.progress,
        )?;
        Ok((img, tree.len() as u64, tree.total_file_bytes()))
    }

    /// The facts and hashes a test compares between two results.
    fn summary(img: &RootfsImage) -> serde_json::Value {
        serde_json::json!({
            "hashed": [hex::encode(img.hashed.sha256), img.hashed.size],
            "facts": img.facts,
            "boot": img.boot_files.iter()
                .map(|f| (f.role, f.output.clone(), hex::encode(f.sha256), f.size))
                .collect::<Vec<_>>(),
        })
    }

    fn assert_written(fx: &Fixture, img: &RootfsImage, entries: u64, file_bytes: u64) {
        assert_eq!(img.path, fx.out.join(&fx.plan.outputs.rootfs));
        let len = fs::metadata(&img.path).unwrap().len();
        assert_eq!(img.hashed.sha256, sha256_of(&img.path));
        assert_eq!(img.hashed.size, len);
        assert_eq!(len % 4096, 0, "verity needs whole 4 KiB blocks");
        assert!(len <= fx.plan.rootfs.max_size);
        assert_eq!(img.facts.size, len);
        assert_eq!(img.facts.slot_size, fx.plan.rootfs.max_size);
        assert_eq!(img.facts.filesystem, fx.plan.rootfs.filesystem);
        assert_eq!(
            (img.facts.entries, img.facts.file_bytes),
            (entries, file_bytes)
        );
        // The boot files come out of the rootfs, copied and hashed.
        let kernel = testkit::kernel_bytes();
        let want: Vec<(&str, &[u8])> = vec![("kernel", &kernel), ("initrd", testkit::INITRD)];
        let got: Vec<(&str, Vec<u8>)> = img
            .boot_files
            .iter()
            .map(|f| (f.role, fs::read(fx.out.join(&f.output)).unwrap()))
            .collect();
        assert_eq!(
            got.iter()
                .map(|(r, b)| (*r, b.as_slice()))
                .collect::<Vec<_>>(),
            want
        );
        for f in &img.boot_files {
            assert_eq!(f.sha256, sha256_of(&fx.out.join(&f.output)), "{}", f.output);
            let planned = fx.plan.boot.files.iter().find(|p| p.role == f.role);
            assert_eq!(planned.map(|p| &p.output), Some(&f.output));
        }
    }

    #[test]
    fn a_squashfs_image_is_written_hashed_and_counted() {
        let mut fx = Fixture::new(Setup::default());
        let out = fx.out.clone();
        let (img, entries, file_bytes) = run_stage(&mut fx, &out).unwrap();
        assert_eq!(entries as usize, testkit::BASE_PATHS.len() + 1);
        assert_written(&fx, &img, entries, file_bytes);
        // The independent reader sees the owners, modes, devices and links,
        // and every time clamped to the epoch (2023-11-14; the archive says
        // 2033).
        let ls = run("unsquashfs", &["-lln", img.path.to_str().unwrap()]);
        let line = |p: &str| -> &str {
            ls.lines()
                .find(|l| {
                    l.ends_with(&format!("squashfs-root/{p}")) || l.contains(&format!("{p} -> "))
                })
                .unwrap_or_else(|| panic!("{p} missing in:\n{ls}"))
        };
        assert!(line("usr/bin/su").starts_with("-rwsr-xr-x 0/0 "), "{ls}");
        assert!(
            line("var/lib/svc.db").starts_with("-rw------- 107/107 "),
            "{ls}"
        );
        assert!(line("dev/console").starts_with("crw------- 0/0 "), "{ls}");
        assert!(line("bin/sh").ends_with("bin/sh -> ../usr/bin/su"), "{ls}");
        for l in ls.lines().filter(|l| l.contains("squashfs-root")) {
            assert!(l.contains(" 2023-11-14 "), "not clamped: {l}");
        }
    }

    #[test]
    fn an_ext4_image_is_written_with_owners_modes_and_devices() {
        let mut fx = Fixture::new(Setup::default().ext4());
        let out = fx.out.clone();
        let (img, entries, file_bytes) = run_stage(&mut fx, &out).unwrap();
        assert_written(&fx, &img, entries, file_bytes);
        let image = img.path.to_str().unwrap();
        run("e2fsck", &["-fn", image]);
        let stat = |p: &str| run("debugfs", &["-R", &format!("stat {p}"), image]);
        let su = stat("/usr/bin/su");
        assert!(
            su.contains("Mode:  04755") && su.contains("Links: 2"),
            "{su}"
        );
        let db = stat("/var/lib/svc.db");
        assert!(db.contains("User:   107   Group:   107"), "{db}");
        let dev = stat("/dev/console");
        assert!(dev.contains("Device major/minor number: 05:01"), "{dev}");
    }

    #[test]
    fn a_cache_hit_places_the_same_bytes_and_facts() {
        let mut fx = Fixture::new(Setup::default());
        let out = fx.out.clone();
        let (built, ..) = run_stage(&mut fx, &out).unwrap();
        let key = key(&fx.plan, serde_json::Value::Null).unwrap();
        let again = fx.fresh_out("again");
        let hit = cached(&fx.plan, key.as_ref(), &fx.cache, &again, &mut fx.progress)
            .unwrap()
            .expect("a cache hit");
        assert_eq!(summary(&hit), summary(&built));
        assert_eq!(hit.path, again.join(&fx.plan.outputs.rootfs));
        assert_eq!(fs::read(&hit.path).unwrap(), fs::read(&built.path).unwrap());
        for f in &hit.boot_files {
            assert_eq!(sha256_of(&again.join(&f.output)), f.sha256, "{}", f.output);
        }
        assert!(fx.log.text().contains("(cached)"), "{}", fx.log.text());
        // A disabled cache (--no-cache) never hits.
        let off = Cache::new(&fx.opts.work_root, testkit::NAME, false);
        let third = fx.fresh_out("third");
        assert!(
            cached(&fx.plan, key.as_ref(), &off, &third, &mut fx.progress)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_key_covers_what_makes_the_image_and_nothing_after_it() {
        let fx = Fixture::new(Setup::default());
        let k = |p: &Plan| {
            key(p, serde_json::Value::Null)
                .unwrap()
                .expect("a tarball base is cached")
        };
        let base = k(&fx.plan);
        let mut changed = Vec::new();
        let mut p = fx.plan.clone();
        p.source_date_epoch += 1;
        changed.push(("epoch", k(&p)));
        let mut p = fx.plan.clone();
        p.tools.rootfs[0].args.push("-x".into());
        changed.push(("invocation", k(&p)));
        let mut p = fx.plan.clone();
        p.rootfs.max_size += 4096;
        changed.push(("slot size", k(&p)));
        let mut p = fx.plan.clone();
        p.hardening.profile = slotsmith_policy::Profile::Development;
        changed.push(("profile", k(&p)));
        let mut p = fx.plan.clone();
        if let crate::spec::BaseSpec::Tarball { sha256, .. } = &mut p.base.spec {
            *sha256 = "0".repeat(64);
        }
        changed.push(("base hash", k(&p)));
        for (what, key) in &changed {
            assert_ne!(key, &base, "{what} must change the rootfs key");
        }
        // Signing, the update and the disk come after the rootfs: changing
        // them must not rebuild it.
        let mut p = fx.plan.clone();
        p.boot.security_version += 1;
        p.boot.release = !p.boot.release;
        p.update.set = "other".into();
        p.disk.size += 1 << 20;
        assert_eq!(k(&p), base);
    }

    /// 17 MiB that no compressor can shrink (xorshift).
    fn incompressible() -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..17 << 17)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn a_rootfs_larger_than_its_slot_is_an_input_error_at_layout_slot() {
        let big = incompressible();
        for setup in [Setup::default(), Setup::default().ext4()] {
            let fs_name = if setup.ext4 { "ext4" } else { "squashfs" };
            let mut fx = Fixture::new(setup.layer("", &[("/usr/share/big.bin", &big)]));
            let out = fx.out.clone();
            let err = run_stage(&mut fx, &out)
                .err()
                .unwrap_or_else(|| panic!("{fs_name}: a 17 MiB rootfs fit a 16 MiB slot"));
            let input = err
                .downcast_ref::<crate::spec::InputError>()
                .unwrap_or_else(|| panic!("{fs_name}: not an input error: {err:#}"));
            let d: Vec<_> = input.0.iter().collect();
            assert_eq!(d.len(), 1, "{fs_name}: {err:#}");
            assert_eq!(
                (d[0].file.to_str().unwrap(), d[0].line, d[0].key.as_str()),
                ("images/tiny.yaml", 16, "layout.slot"),
                "{fs_name}: {err:#}"
            );
            assert!(
                d[0].message.contains("slot holds") && d[0].message.contains("16MiB"),
                "{fs_name}: {err:#}"
            );
        }
    }
}
