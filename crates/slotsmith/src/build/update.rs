//! The update stage: writes the signed SWUpdate `.swu`, one collection
//! per slot, streaming each payload once.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::plan::Plan;
use crate::progress::Progress;

use sha2::Digest;

use super::boot::BootOut;
use super::cache::{Cache, Key};
use super::rootfs::RootfsImage;
use super::{write_new, Hashed};

/// Writes `<name>-<version>.swu`: sw-description (one collection per slot),
/// its CMS signature, then the payloads, streamed from out/ with no
/// temporary copies (zstd payloads are compressed once into the work
/// directory). Pass 1 hashes each payload once for both the sha256 in
/// sw-description and the cpio checksum in its header.
fn build_swu(
    plan: &Plan,
    work: &Path,
    out: &Path,
    rootfs_size: u64,
    rootfs_digests: Option<&(slotsmith_swu::Digests, slotsmith_swu::Stamp)>,
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
        // The rootfs image's digests are known from the stage that wrote
        // it: no read before the copy.
        let known = match (&compression, rootfs_digests) {
            (swu::PayloadCompression::None, Some((d, stamp))) if name == plan.outputs.rootfs => {
                Some((*d, *stamp))
            }
            _ => None,
        };
        let p = match known {
            Some((d, stamp)) => swu::PreparedPayload::from_digests(&out.join(name), d, stamp),
            None => swu::prepare_payload(&out.join(name), &compression),
        }
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
    // The plan's member order; an optional member (an initrd the rootfs
    // lacks) only when it was built.
    let built = |output: &str| out.join(output).is_file();
    for m in &u.members {
        if m.optional && !built(&m.output) {
            continue;
        }
        prepare(&m.output)?;
    }
    let bootloader = match u.bootloader {
        crate::spec::Bootloader::UBoot => swu::Bootloader::UBoot,
        crate::spec::Bootloader::Grub => swu::Bootloader::Grub,
        crate::spec::Bootloader::Ebg => swu::Bootloader::Ebg,
    };
    let mut collections = Vec::new();
    for (i, c) in u.collections.iter().enumerate() {
        let mut payloads = Vec::new();
        for pp in &c.payloads {
            if pp.optional && !prepared.contains_key(&pp.output) {
                continue;
            }
            let (member, p) = prepared
                .get(&pp.output)
                .with_context(|| format!("payload {} was not prepared", pp.output))?;
            let payload = match &pp.target {
                crate::plan::PayloadTarget::Raw { partition } => {
                    let device = u
                        .devices
                        .get(partition)
                        .cloned()
                        .with_context(|| format!("no device for {partition}"))?;
                    let capacity = plan
                        .partition(partition)
                        .map(|p| p.size)
                        .with_context(|| format!("no partition {partition} in the plan"))?;
                    let installed = if pp.output == plan.outputs.rootfs {
                        rootfs_size
                    } else {
                        fs::metadata(out.join(&pp.output))?.len()
                    };
                    let mut payload = p.payload(member, swu::Target::Raw { device });
                    payload.fit = Some(swu::Fit {
                        installed_size: installed,
                        capacity,
                    });
                    payload
                }
                crate::plan::PayloadTarget::File { path } => {
                    p.payload(member, swu::Target::File { path: path.clone() })
                }
                crate::plan::PayloadTarget::PartitionFile {
                    partition,
                    filesystem,
                    path,
                } => {
                    let device = u
                        .devices
                        .get(partition)
                        .cloned()
                        .with_context(|| format!("no device for {partition}"))?;
                    p.payload(
                        member,
                        swu::Target::PartitionFile {
                            device,
                            filesystem: filesystem.clone(),
                            path: path.clone(),
                        },
                    )
                }
            };
            payloads.push(payload);
        }
        collections.push(swu::Collection {
            set: u.set.clone(),
            mode: u.modes[i].clone(),
            slot: c.slot.clone(),
            payloads,
            bootenv: {
                let mut env = swu::bootenv_for(bootloader, &c.slot);
                // EFI Boot Guard: the new environment is a copy of the
                // running one, so it must be told which UKI to start.
                if let Some(bp) = plan
                    .chain
                    .as_ref()
                    .and_then(|ch| ch.partitions.iter().find(|p| p.slot == c.slot))
                {
                    env.push(("kernelfile".into(), bp.kernelfile.clone()));
                }
                env
            },
        });
    }
    let desc = swu::SwDescription {
        name: format!("{} {}", plan.image.name, plan.image.version),
        version: plan.image.version.clone(),
        hardware_compatibility: plan.image.hardware_compatibility.clone(),
        security_version: Some(plan.boot.security_version),
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

/// What the update stage produced.
pub(super) struct SwuOut {
    /// The hash of every output this stage wrote, by output name.
    pub(super) hashes: BTreeMap<String, Hashed>,
}

/// Everything the update reads: every payload by hash (the SBOM too),
/// the plan's update settings and the image identity, and the signer by
/// its certificate.
fn key(
    plan: &Plan,
    rootfs: &RootfsImage,
    boot: &BootOut,
    sbom: &Hashed,
    cert: &[u8],
) -> anyhow::Result<Key> {
    let mut payloads: BTreeMap<String, (String, u64)> = BTreeMap::new();
    payloads.insert(
        plan.outputs.rootfs.clone(),
        (hex::encode(rootfs.hashed.sha256), rootfs.hashed.size),
    );
    payloads.insert(
        plan.outputs.sbom.clone(),
        (hex::encode(sbom.sha256), sbom.size),
    );
    for f in &rootfs.boot_files {
        payloads.insert(f.output.clone(), (hex::encode(f.sha256), f.size));
    }
    for (n, h) in &boot.hashes {
        payloads.insert(n.clone(), (hex::encode(h.sha256), h.size));
    }
    Cache::key(
        "update",
        &serde_json::json!({
            "payloads": payloads,
            "update": plan.update,
            "image": plan.image,
            "slots": plan.boot.slots,
            "cert": hex::encode(sha2::Sha256::digest(cert)),
            "cert_output": plan.outputs.update_cert,
        }),
    )
}

/// Writes the signed `.swu` and the update certificate, or takes them from
/// the cache. `sbom` is the hash of the `sbom.spdx.json` the SBOM stage
/// wrote into `out`: the update carries it as a payload.
#[allow(clippy::too_many_arguments)]
pub(super) fn stage(
    plan: &Plan,
    rootfs: &RootfsImage,
    boot: &BootOut,
    sbom: &Hashed,
    signer: &crate::signing::UpdateSigner,
    cache: &Cache,
    work: &Path,
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<SwuOut> {
    let cert = fs::read(&signer.cert)
        .with_context(|| format!("reading update certificate {}", signer.cert.display()))?;
    let key = key(plan, rootfs, boot, sbom, &cert)?;
    if let Some(hit) = cache.get("update", &key, progress) {
        progress.stage(
            "update",
            &format!("{} for SWUpdate (cached)", plan.update.file),
        );
        for name in hit.files().keys() {
            hit.place(name, &out.join(name))?;
        }
        return Ok(SwuOut {
            hashes: hit.files().clone(),
        });
    }
    progress.stage("update", &format!("{} for SWUpdate", plan.update.file));
    build_swu(
        plan,
        work,
        out,
        rootfs.hashed.size,
        rootfs.swu_digests.as_ref(),
        signer,
    )?;
    write_new(&out.join(&plan.outputs.update_cert), &cert)?;
    let mut hashes = BTreeMap::new();
    hashes.insert(plan.outputs.update_cert.clone(), Hashed::of_bytes(&cert));
    hashes.insert(
        plan.update.file.clone(),
        Hashed::of_file(&out.join(&plan.update.file))?,
    );
    let files: Vec<(&str, PathBuf, Hashed)> = hashes
        .iter()
        .map(|(n, h)| (n.as_str(), out.join(n), *h))
        .collect();
    let refs: Vec<(&str, &Path, Hashed)> = files
        .iter()
        .map(|(n, p, h)| (*n, p.as_path(), *h))
        .collect();
    cache.put("update", &key, &refs, &serde_json::Value::Null, progress);
    Ok(SwuOut { hashes })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{run, sha256_of, Fixture, Setup};
    use super::*;
    use crate::signing::UpdateSigner;

    const CACHED: &str = "for SWUpdate (cached)";

    /// The stages before the update, into the staging directory.
    fn before(fx: &mut Fixture) -> (RootfsImage, BootOut, UpdateSigner, Hashed) {
        let boot_signer = fx.boot_signer();
        let signer = fx.update_signer();
        let rootfs = fx.rootfs();
        let out = fx.out.clone();
        let sbom =
            super::super::sbom::stage(&fx.plan, &fx.opts, &rootfs, &out, &mut fx.progress).unwrap();
        let boot = super::super::boot::stage(
            &fx.plan,
            &rootfs,
            &boot_signer,
            &fx.cache,
            &fx.out,
            &mut fx.progress,
        )
        .unwrap();
        (rootfs, boot, signer, sbom)
    }

    fn run_stage(
        fx: &mut Fixture,
        plan: &Plan,
        inputs: &(RootfsImage, BootOut, UpdateSigner, Hashed),
        out: &Path,
    ) -> SwuOut {
        let (rootfs, boot, signer, sbom) = inputs;
        stage(
            plan,
            rootfs,
            boot,
            sbom,
            signer,
            &fx.cache,
            &fx.work,
            out,
            &mut fx.progress,
        )
        .unwrap()
    }

    /// The archive's members as GNU cpio lists them.
    fn members(swu: &Path) -> Vec<String> {
        run("cpio", &["-t", "--quiet", "-F", swu.to_str().unwrap()])
            .lines()
            .map(String::from)
            .collect()
    }

    /// What the plan says the archive holds, given what the build made.
    fn planned(plan: &Plan, out: &Path) -> Vec<String> {
        let zst = plan.update.compression == crate::spec::UpdateCompression::Zstd;
        let mut want = vec![
            slotsmith_swu::SW_DESCRIPTION.to_string(),
            slotsmith_swu::SW_DESCRIPTION_SIG.to_string(),
        ];
        for m in &plan.update.members {
            if m.optional && !out.join(&m.output).is_file() {
                continue;
            }
            want.push(if zst {
                format!("{}.zst", m.output)
            } else {
                m.output.clone()
            });
        }
        want
    }

    #[test]
    fn the_swu_holds_the_plans_members_in_order_and_verifies() {
        let mut fx = Fixture::new(Setup::default());
        let inputs = before(&mut fx);
        let out = fx.out.clone();
        let plan = fx.plan.clone();
        let swu = run_stage(&mut fx, &plan, &inputs, &out);
        let path = out.join(&plan.update.file);
        let got = members(&path);
        assert_eq!(got, planned(&plan, &out));
        // The rootfs first (both slots install it), then each slot's files;
        // the initrd the base has is among them.
        assert_eq!(got[2], plan.outputs.rootfs);
        assert!(got.len() > 5, "{got:?}");
        let initrd = plan.boot.files.iter().find(|f| f.role == "initrd").unwrap();
        assert!(got.contains(&initrd.output), "{got:?}");
        crate::verify::verify_swu(&path, &out.join(&plan.outputs.update_cert)).unwrap();
        // The certificate devices trust is the signer's; both hashes are
        // the files'.
        assert_eq!(
            fs::read(out.join(&plan.outputs.update_cert)).unwrap(),
            fs::read(&inputs.2.cert).unwrap()
        );
        let names: Vec<&str> = swu.hashes.keys().map(String::as_str).collect();
        let mut want = vec![plan.outputs.update_cert.as_str(), plan.update.file.as_str()];
        want.sort();
        assert_eq!(names, want);
        for (n, h) in &swu.hashes {
            assert_eq!(h.sha256, sha256_of(&out.join(n)), "{n}");
            assert_eq!(h.size, fs::metadata(out.join(n)).unwrap().len(), "{n}");
        }
    }

    /// A copy of `swu` with one byte of member `name` flipped and its cpio
    /// checksum recomputed, so only the sha256 in sw-description can tell.
    fn flipped(swu: &Path, name: &str, at: u64) -> PathBuf {
        let entries = slotsmith_swu::read_index(File::open(swu).unwrap()).unwrap();
        let e = entries.iter().find(|e| e.name == name).unwrap();
        let mut bytes = fs::read(swu).unwrap();
        let off = usize::try_from(e.offset + at).unwrap();
        let old = bytes[off];
        bytes[off] ^= 0x01;
        // newc header: 110 bytes, the name and its NUL padded to 4; the
        // checksum is its last field (offset 102, 8 hex digits).
        let header = off - usize::try_from(at).unwrap() - (110 + name.len() + 1).div_ceil(4) * 4;
        let check = e
            .check
            .wrapping_sub(u32::from(old))
            .wrapping_add(u32::from(bytes[off]));
        bytes[header + 102..header + 110].copy_from_slice(format!("{check:08X}").as_bytes());
        let copy = swu.with_extension("flipped.swu");
        fs::write(&copy, bytes).unwrap();
        copy
    }

    #[test]
    fn the_sbom_is_a_member_whose_sha256_is_in_the_signed_sw_description() {
        let mut fx = Fixture::new(Setup::default());
        let inputs = before(&mut fx);
        let out = fx.out.clone();
        let plan = fx.plan.clone();
        run_stage(&mut fx, &plan, &inputs, &out);
        let path = out.join(&plan.update.file);
        let cert = out.join(&plan.outputs.update_cert);
        let sbom = fs::read(out.join(&plan.outputs.sbom)).unwrap();
        assert_eq!(inputs.3, Hashed::of_bytes(&sbom));
        // The signature is checked here, so the sha256 read below is the
        // signed one.
        let contents = slotsmith_swu::read_swu_authenticated(&path, |text, sig| {
            slotsmith_cms::verify_detached(sig, text, &cert).map(|_| ())
        })
        .unwrap();
        let i = contents
            .entries
            .iter()
            .position(|e| e.name == "sbom.spdx.json")
            .expect("the sbom is a member");
        assert_eq!(contents.sha256[i], sha256_of(&out.join(&plan.outputs.sbom)));
        // Every slot's collection installs it beside that slot's manifest,
        // under the sha256 the signed text states.
        let text = &contents.sw_description;
        assert!(text.contains(&hex::encode(inputs.3.sha256)), "{text}");
        assert_eq!(contents.description.collections.len(), 2);
        for c in &contents.description.collections {
            let p = c
                .payloads
                .iter()
                .find(|p| p.filename == "sbom.spdx.json")
                .unwrap_or_else(|| panic!("slot {} has no sbom payload", c.slot));
            assert_eq!(p.sha256, inputs.3.sha256);
            assert_eq!(
                p.target,
                slotsmith_swu::Target::File {
                    path: format!(
                        "{}/{}/sbom.spdx.json",
                        plan.update.boot_mount.trim_end_matches('/'),
                        c.slot
                    )
                }
            );
        }
        // One flipped SBOM byte with the cpio checksum repaired: only the
        // signed sha256 catches it, and verify does.
        let bad = flipped(&path, "sbom.spdx.json", 10);
        let err = format!(
            "{:#}",
            crate::verify::verify_swu(&bad, &cert).expect_err("a tampered sbom verified")
        );
        assert!(
            err.contains("sha256") && err.contains("sbom.spdx.json"),
            "{err}"
        );
    }

    #[test]
    fn a_changed_sbom_misses_the_update_cache() {
        let mut fx = Fixture::new(Setup::default());
        let mut inputs = before(&mut fx);
        let out = fx.out.clone();
        let plan = fx.plan.clone();
        let first = run_stage(&mut fx, &plan, &inputs, &out);
        let again = fx.fresh_out("again");
        for e in fs::read_dir(&out).unwrap() {
            let name = e.unwrap().file_name();
            if !first.hashes.contains_key(name.to_str().unwrap()) {
                fs::copy(out.join(&name), again.join(&name)).unwrap();
            }
        }
        let changed = b"{\"spdxVersion\": \"SPDX-2.3\"}\n";
        fs::write(again.join(&plan.outputs.sbom), changed).unwrap();
        inputs.3 = Hashed::of_bytes(changed);
        let second = run_stage(&mut fx, &plan, &inputs, &again);
        assert!(!fx.log.text().contains(CACHED), "a changed sbom hit");
        assert_ne!(
            second.hashes[&plan.update.file],
            first.hashes[&plan.update.file]
        );
        let contents = slotsmith_swu::read_swu(&again.join(&plan.update.file)).unwrap();
        let i = contents
            .entries
            .iter()
            .position(|e| e.name == "sbom.spdx.json")
            .unwrap();
        assert_eq!(contents.sha256[i], inputs.3.sha256);
    }

    #[test]
    fn an_initrd_the_rootfs_lacks_is_left_out_of_the_update() {
        let mut fx =
            Fixture::new(Setup::default().layer("remove:\n  - /boot/initrd.img-6.1.0-test\n", &[]));
        let inputs = before(&mut fx);
        let out = fx.out.clone();
        let plan = fx.plan.clone();
        run_stage(&mut fx, &plan, &inputs, &out);
        let path = out.join(&plan.update.file);
        let got = members(&path);
        assert_eq!(got, planned(&plan, &out));
        assert!(!got.iter().any(|m| m.contains("initrd")), "{got:?}");
        crate::verify::verify_swu(&path, &out.join(&plan.outputs.update_cert)).unwrap();
    }

    #[test]
    fn zstd_payloads_are_members_named_zst() {
        let mut fx = Fixture::new(Setup::default().image_yaml("update:\n  compression: zstd\n"));
        let inputs = before(&mut fx);
        let out = fx.out.clone();
        let plan = fx.plan.clone();
        run_stage(&mut fx, &plan, &inputs, &out);
        let path = out.join(&plan.update.file);
        let got = members(&path);
        assert_eq!(got, planned(&plan, &out));
        assert!(got[2..].iter().all(|m| m.ends_with(".zst")), "{got:?}");
        crate::verify::verify_swu(&path, &out.join(&plan.outputs.update_cert)).unwrap();
    }

    #[test]
    fn a_second_run_hits_the_cache_with_identical_bytes_and_a_plan_change_misses() {
        let mut fx = Fixture::new(Setup::default());
        let inputs = before(&mut fx);
        let out = fx.out.clone();
        let plan = fx.plan.clone();
        let first = run_stage(&mut fx, &plan, &inputs, &out);
        assert!(!fx.log.text().contains(CACHED));
        let again = fx.fresh_out("again");
        let second = run_stage(&mut fx, &plan, &inputs, &again);
        assert_eq!(fx.log.text().matches(CACHED).count(), 1, "not a hit");
        assert_eq!(second.hashes, first.hashes);
        for n in first.hashes.keys() {
            assert_eq!(
                fs::read(again.join(n)).unwrap(),
                fs::read(out.join(n)).unwrap(),
                "{n}"
            );
        }
        // Another update set name is another sw-description: a miss.
        let mut other = plan.clone();
        other.update.set = "other".into();
        let third = fx.fresh_out("third");
        // The stage reads its payloads from the output directory.
        for e in fs::read_dir(&out).unwrap() {
            let name = e.unwrap().file_name();
            if !first.hashes.contains_key(name.to_str().unwrap()) {
                fs::copy(out.join(&name), third.join(&name)).unwrap();
            }
        }
        let changed = run_stage(&mut fx, &other, &inputs, &third);
        assert_eq!(
            fx.log.text().matches(CACHED).count(),
            1,
            "a changed plan hit"
        );
        assert_ne!(
            changed.hashes[&plan.update.file],
            first.hashes[&plan.update.file]
        );
    }
}
