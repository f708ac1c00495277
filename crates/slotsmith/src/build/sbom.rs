//! The SBOM stage: gathers what `sbom.spdx.json` lists and writes it (the
//! document itself is [`crate::sbom`]).
//!
//! Like the audit, it reads the slot image the build wrote (squashfs or
//! ext4, read back from the file), never the staging tree: so a rootfs
//! stage taken from the cache gives the same document, and the SBOM
//! declares what ships. The Debian packages come from the image's dpkg
//! database; the `.deb` hashes from the lock; the files the policies add
//! are those `generate` names, hashed as the image holds them; the layer
//! files are read from the project and checked against the plan's sha256
//! (the image reader stops at 64 MiB, a layer file need not); the kernel's
//! hash comes from the rootfs stage.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use slotsmith_policy::rootfs::Index;
use slotsmith_policy::RootfsRead;

use super::rootfs::RootfsImage;
use super::{resolve, write_new, BuildOptions, Hashed};
use crate::plan::chain::DeviceFileSource;
use crate::plan::files::BootSource;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::sbom::{AddedFile, Contents, Kernel, Tool, Updater};
use crate::spec::{BaseSpec, LayerEntryKind};

/// Writes `sbom.spdx.json` into `out`; its hash for the record.
pub(super) fn stage(
    plan: &Plan,
    opts: &BuildOptions,
    rootfs: &RootfsImage,
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<Hashed> {
    progress.stage("sbom", "packages, added files and the build tool");
    let image = &rootfs.path;
    let contents = match plan.rootfs.filesystem {
        crate::spec::Filesystem::Squashfs => {
            let fs = slotsmith_policy::SquashfsRootfs::open(image)
                .with_context(|| format!("reading the rootfs image {} back", image.display()))?;
            contents(plan, opts, rootfs, &fs)?
        }
        crate::spec::Filesystem::Ext4 => {
            let fs = slotsmith_policy::Ext4Rootfs::open(image)
                .with_context(|| format!("reading the rootfs image {} back", image.display()))?;
            contents(plan, opts, rootfs, &fs)?
        }
    };
    progress.note(&format!(
        "{} Debian package(s), {} added file(s), {} crate(s)",
        contents.debs.len(),
        contents.files.len(),
        contents.tool.crates.len()
    ));
    let bytes = crate::sbom::encode(&contents);
    write_new(&out.join(&plan.outputs.sbom), &bytes)
        .with_context(|| format!("writing the sbom {}", plan.outputs.sbom))?;
    Ok(Hashed::of_bytes(&bytes))
}

/// What the document lists, from the image `fs` and the plan.
fn contents(
    plan: &Plan,
    opts: &BuildOptions,
    rootfs: &RootfsImage,
    fs: &dyn RootfsRead,
) -> anyhow::Result<Contents> {
    let index = Index::new(fs);
    let locked: BTreeMap<(&str, &str, &str), &str> = plan
        .base
        .lock
        .iter()
        .flat_map(|l| &l.packages)
        .map(|p| {
            (
                (p.name.as_str(), p.version.as_str(), p.architecture.as_str()),
                p.sha256.as_str(),
            )
        })
        .collect();
    let debs = crate::sbom::debian::installed(&index)
        .context("reading the installed Debian packages from the rootfs image")?
        .into_iter()
        .map(|d| {
            let sum = locked
                .get(&(d.name.as_str(), d.version.as_str(), d.architecture.as_str()))
                .map(|s| s.to_string());
            (d, sum)
        })
        .collect();
    // In the order the build writes them: policies, device files, layers
    // (a later writer's file replaces an earlier one at the same path).
    let mut files = policy_files(plan, fs)?;
    let (device, updater) = device_files(plan, opts, fs)?;
    files.extend(device);
    for f in layer_files(plan, opts)? {
        files.insert(f.path.clone(), f);
    }
    Ok(Contents {
        image: plan.image.name.clone(),
        version: plan.image.version.clone(),
        epoch: plan.source_date_epoch,
        suite: suite(plan).map(str::to_string),
        debs,
        kernel: kernel(plan, rootfs, &index),
        files: files.into_values().collect(),
        tool: Tool {
            version: env!("CARGO_PKG_VERSION").into(),
            crates: crate::sbom::cargo::locked_crates(crate::sbom::cargo::LOCK, "xtask"),
        },
        updater,
    })
}

/// The Debian suite of the base (`bookworm`), the purls' `distro` in the
/// SBOM and the provenance alike.
pub(super) fn suite(plan: &Plan) -> Option<&str> {
    match &plan.base.spec {
        BaseSpec::Debian { suite, .. } => Some(suite),
        _ => None,
    }
}

/// The kernel from the rootfs stage; its version from its name in the
/// rootfs (`/boot/vmlinuz-<version>`) when it came from there.
fn kernel(plan: &Plan, rootfs: &RootfsImage, index: &Index<'_>) -> Option<Kernel> {
    let f = rootfs.boot_files.iter().find(|f| f.role == "kernel")?;
    let from_rootfs = plan
        .boot
        .files
        .iter()
        .any(|p| p.role == "kernel" && p.source == BootSource::RootfsKernel);
    let versions: Vec<&str> = index
        .map
        .range("/boot/vmlinuz-".to_string()..)
        .take_while(|(p, _)| p.starts_with("/boot/vmlinuz-"))
        .filter(|(p, e)| e.kind == slotsmith_policy::EntryKind::File && !p[6..].contains('/'))
        .map(|(p, _)| &p["/boot/vmlinuz-".len()..])
        .collect();
    Some(Kernel {
        file: f.output.clone(),
        version: match versions.as_slice() {
            [v] if from_rootfs => Some(v.to_string()),
            _ => None,
        },
        sha256: hex::encode(f.sha256),
    })
}

/// The files the policies write, as the image holds them (a later layer
/// may have replaced or removed one; the layers' list then has it).
fn policy_files(plan: &Plan, fs: &dyn RootfsRead) -> anyhow::Result<BTreeMap<String, AddedFile>> {
    let h = &plan.hardening;
    let mut out = BTreeMap::new();
    if h.rules.is_empty() {
        return Ok(out);
    }
    let waived = slotsmith_policy::audit::waived_ids(&h.waivers);
    let generated = slotsmith_policy::generate(&h.rules, h.profile, &waived, fs)
        .context("listing the files the hardening policies write")?;
    for g in &generated.files {
        let path = format!("/{}", g.path.trim_start_matches('/'));
        let Some(bytes) = fs
            .read(&path)
            .with_context(|| format!("reading {path} from the rootfs image"))?
        else {
            continue;
        };
        out.insert(
            path.clone(),
            AddedFile {
                path,
                origin: "the hardening policies".into(),
                sha1: hex::encode(Sha1::digest(&bytes)),
                sha256: hex::encode(Sha256::digest(&bytes)),
            },
        );
    }
    Ok(out)
}

/// The files the boot chain's device setup writes (SWUpdate's settings,
/// the hardware revision, the update certificate) as the image holds
/// them, and the updater when the image holds the very binary the build
/// installed (a layer that replaced or removed it is listed as a layer
/// file instead). The updater is a package, not an added file: it is a
/// program with a version and locked dependencies. Its version and
/// crates come from the lock compiled into this binary, the checkout
/// `cargo xtask` built the updater from.
fn device_files(
    plan: &Plan,
    opts: &BuildOptions,
    fs: &dyn RootfsRead,
) -> anyhow::Result<(BTreeMap<String, AddedFile>, Option<Updater>)> {
    let Some(chain) = &plan.chain else {
        return Ok((BTreeMap::new(), None));
    };
    let built = if chain
        .device_files
        .iter()
        .any(|f| f.source == DeviceFileSource::Updater)
    {
        Some(hex::encode(Sha256::digest(super::device::updater_binary(
            opts,
        )?)))
    } else {
        None
    };
    listed_device_files(&chain.device_files, built.as_deref(), fs)
}

/// [`device_files`] for the plan's `listed` files, `built` being the
/// sha256 of the updater the build installed.
fn listed_device_files(
    listed: &[crate::plan::chain::PlanDeviceFile],
    built: Option<&str>,
    fs: &dyn RootfsRead,
) -> anyhow::Result<(BTreeMap<String, AddedFile>, Option<Updater>)> {
    let mut files = BTreeMap::new();
    let mut updater = None;
    for f in listed {
        let path = format!("/{}", f.path.trim_start_matches('/'));
        if f.source == DeviceFileSource::Updater {
            let Some(built) = built else { continue };
            let held = fs
                .sha256(&path)
                .with_context(|| format!("hashing the updater {path} in the rootfs image"))?;
            if held.is_some_and(|(sum, _)| hex::encode(sum) == built) {
                let lock = crate::sbom::cargo::LOCK;
                updater = Some(Updater {
                    path,
                    version: crate::sbom::cargo::member_version(lock, "slotsmith-updater")
                        .unwrap_or_else(|| "NOASSERTION".into()),
                    sha256: built.to_string(),
                    crates: crate::sbom::cargo::locked_crates(lock, "slotsmith-updater"),
                });
            }
            continue;
        }
        let Some(bytes) = fs
            .read(&path)
            .with_context(|| format!("reading {path} from the rootfs image"))?
        else {
            continue;
        };
        files.insert(
            path.clone(),
            AddedFile {
                path,
                origin: "the boot chain's device files".into(),
                sha1: hex::encode(Sha1::digest(&bytes)),
                sha256: hex::encode(Sha256::digest(&bytes)),
            },
        );
    }
    Ok((files, updater))
}

/// The layers' files that survive the later layers' removals, each read
/// from the project (never through a symlink) and checked against the
/// plan's sha256.
fn layer_files(plan: &Plan, opts: &BuildOptions) -> anyhow::Result<Vec<AddedFile>> {
    let mut files: BTreeMap<String, (&str, &str, &str)> = BTreeMap::new();
    for layer in &plan.layers {
        for r in &layer.remove {
            let dir = format!("{}/", r.trim_end_matches('/'));
            files.retain(|p, _| p != r && !p.starts_with(&dir));
        }
        for e in &layer.entries {
            match &e.kind {
                LayerEntryKind::File { source, sha256, .. } => {
                    files.insert(e.path.clone(), (&layer.name, source, sha256));
                }
                _ => {
                    files.remove(&e.path);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (path, (layer, source, want)) in files {
        let src = resolve(&opts.project_root, source);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&src)
            .with_context(|| format!("sbom: opening the layer file {}", src.display()))?;
        let (mut s1, mut s256) = (Sha1::new(), Sha256::new());
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("sbom: reading the layer file {}", src.display()))?;
            if n == 0 {
                break;
            }
            s1.update(&buf[..n]);
            s256.update(&buf[..n]);
        }
        let sha256 = hex::encode(s256.finalize());
        if sha256 != want {
            bail!(
                "sbom: the layer file {} changed during the build (sha256 {sha256}, planned {want})",
                src.display()
            );
        }
        out.push(AddedFile {
            path,
            origin: format!("layer {layer}"),
            sha1: hex::encode(s1.finalize()),
            sha256,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Fixture, Setup};
    use super::*;

    const STATUS: &[u8] = b"Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\n\
        Source: zlib (1:1.2.13.dfsg-1)\nVersion: 1:1.2.13.dfsg-1\n";
    const DEP5: &[u8] =
        b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
        Files: *\nLicense: Zlib\n";

    #[test]
    fn the_installed_updater_is_a_package_and_device_files_are_added_files() {
        use crate::plan::chain::PlanDeviceFile;
        let listed = [
            PlanDeviceFile {
                path: "etc/hwrevision".into(),
                mode: 0o644,
                source: DeviceFileSource::Text("board 1.0\n".into()),
            },
            PlanDeviceFile {
                path: "usr/sbin/slotsmith-update".into(),
                mode: 0o755,
                source: DeviceFileSource::Updater,
            },
        ];
        let updater = b"\x7fELF the updater";
        let built = hex::encode(Sha256::digest(updater));
        let mut fs = slotsmith_policy::MemRootfs::new();
        fs.file("/etc/hwrevision", 0o644, "board 1.0\n").file(
            "/usr/sbin/slotsmith-update",
            0o755,
            updater.as_slice(),
        );
        let (files, u) = listed_device_files(&listed, Some(&built), &fs).unwrap();
        let u = u.expect("the updater is declared");
        assert_eq!(
            (u.path.as_str(), u.sha256.as_str()),
            ("/usr/sbin/slotsmith-update", built.as_str())
        );
        assert_eq!(
            Some(u.version),
            crate::sbom::cargo::member_version(crate::sbom::cargo::LOCK, "slotsmith-updater")
        );
        assert!(u.crates.iter().any(|c| c.name == "clap"));
        let hw = &files["/etc/hwrevision"];
        assert_eq!(hw.sha256, hex::encode(Sha256::digest(b"board 1.0\n")));
        assert_eq!(hw.origin, "the boot chain's device files");
        assert!(!files.contains_key("/usr/sbin/slotsmith-update"));
        // A layer replaced the updater: it is not the build's updater (the
        // layer's file is listed as such), and a removed one is absent.
        let mut replaced = slotsmith_policy::MemRootfs::new();
        replaced.file("/usr/sbin/slotsmith-update", 0o755, "#!/bin/sh\n");
        let (_, u) = listed_device_files(&listed, Some(&built), &replaced).unwrap();
        assert!(u.is_none());
        let empty = slotsmith_policy::MemRootfs::new();
        let (files, u) = listed_device_files(&listed, Some(&built), &empty).unwrap();
        assert!(u.is_none() && files.is_empty());
    }

    #[test]
    fn the_sbom_of_a_built_image_lists_packages_files_kernel_and_passes_pyspdxtools() {
        let mut fx = Fixture::new(Setup::default().policies().layer(
            "",
            &[
                ("/var/lib/dpkg/status", STATUS),
                ("/usr/share/doc/zlib1g/copyright", DEP5),
                ("/etc/product.conf", b"x=1\n"),
            ],
        ));
        let rootfs = fx.rootfs();
        let out = fx.out.clone();
        let hashed = stage(&fx.plan, &fx.opts, &rootfs, &out, &mut fx.progress).unwrap();
        let path = out.join(&fx.plan.outputs.sbom);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(hashed, Hashed::of_bytes(&bytes));
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let zlib = doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "zlib1g")
            .expect("zlib1g listed");
        assert_eq!(zlib["licenseDeclared"], "Zlib");
        assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        let files: Vec<(&str, &str)> = doc["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["fileName"].as_str().unwrap(),
                    f["comment"].as_str().unwrap(),
                )
            })
            .collect();
        assert!(
            files.contains(&("./etc/product.conf", "added by layer meta-test")),
            "{files:?}"
        );
        assert!(
            files
                .iter()
                .any(|(_, c)| *c == "added by the hardening policies"),
            "{files:?}"
        );
        let kernel = doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "linux")
            .expect("the kernel");
        let k = rootfs
            .boot_files
            .iter()
            .find(|f| f.role == "kernel")
            .unwrap();
        assert_eq!(
            kernel["checksums"][0]["checksumValue"],
            hex::encode(k.sha256)
        );
        crate::tool::Tool::new("pyspdxtools")
            .and_then(|t| t.args(["-i", path.to_str().unwrap()]).run())
            .unwrap_or_else(|e| panic!("pyspdxtools refused the SBOM: {e:#}"));
        // The same image gives the same bytes.
        let again = fx.fresh_out("again");
        stage(&fx.plan, &fx.opts, &rootfs, &again, &mut fx.progress).unwrap();
        assert_eq!(
            std::fs::read(again.join(&fx.plan.outputs.sbom)).unwrap(),
            bytes
        );
    }
}
