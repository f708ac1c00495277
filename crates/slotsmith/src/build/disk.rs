//! The disk stage: writes the golden GPT image (the boot partition with
//! its files, the slots, their verity trees, the data partition) and
//! returns the ranges the bmap must map.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::Context;

use crate::load::human;
use crate::plan::tools::slot;
use crate::plan::{Content, Plan};
use crate::progress::Progress;
use crate::tool::Tool;
use slotsmith_disk as disk;

use std::collections::BTreeMap;

use super::boot::{partition_uuid, BootFile, BootOut, SignedSlot};
use super::cache::{Cache, Key};
use super::rootfs::RootfsImage;
use super::Hashed;

/// The boot partition's files: the release note, then per filled slot its
/// kernel, initrd and dtb, manifest and signature in `/<slot>/`.
fn esp_files(plan: &Plan, boot: &[BootFile], out: &Path) -> Vec<disk::fat::FatFile> {
    let mut files: Vec<disk::fat::FatFile> = plan
        .esp
        .files
        .iter()
        .map(|f| disk::fat::FatFile {
            path: f.path.clone(),
            source: disk::fat::FatSource::Bytes(f.text.clone().into_bytes()),
        })
        .collect();
    // The boot chain's signed loader, at the path the firmware boots
    // without any boot variable.
    if let Some(c) = &plan.chain {
        files.push(disk::fat::FatFile {
            path: c.loader_esp_path.clone(),
            source: disk::fat::FatSource::File(out.join(&c.loader_output)),
        });
    }
    // Each filled slot's files, as the plan lists them; an optional one
    // (an initrd the rootfs lacks) only when it was built.
    let built = |output: &str| boot.iter().any(|f| f.output == output);
    for ps in plan.boot.slots.iter().filter(|ps| ps.filled) {
        for f in &ps.esp_files {
            if f.optional && !built(&f.output) {
                continue;
            }
            files.push(disk::fat::FatFile {
                path: f.path.clone(),
                source: disk::fat::FatSource::File(out.join(&f.output)),
            });
        }
    }
    files
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
        (0, crate::layout::GPT_PRIMARY_SECTORS * d.sector_size),
        (
            d.size - crate::layout::GPT_BACKUP_SECTORS * d.sector_size,
            d.size,
        ),
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
                    files: esp_files(plan, boot, out),
                };
                let window = disk::window::Window::new(&mut img, p.offset, p.size);
                disk::fat::format_fat(window, p.size, &spec)
                    .context("formatting the boot partition")?;
                mapped.extend(disk::sparse::nonzero_extents(&mut img, p.offset, p.size)?);
            }
            Content::SlotBoot => {
                let bp = plan
                    .chain
                    .as_ref()
                    .and_then(|c| c.partitions.iter().find(|b| b.partition == p.name))
                    .with_context(|| format!("the plan has no boot chain entry for {}", p.name))?;
                let spec = disk::fat::FatSpec {
                    label: bp.label.clone(),
                    volume_id: bp.volume_id,
                    mtime: plan.source_date_epoch as i64,
                    files: bp
                        .files
                        .iter()
                        .map(|(path, output)| disk::fat::FatFile {
                            path: path.clone(),
                            source: disk::fat::FatSource::File(out.join(output)),
                        })
                        .collect(),
                };
                let window = disk::window::Window::new(&mut img, p.offset, p.size);
                disk::fat::format_fat(window, p.size, &spec)
                    .with_context(|| format!("formatting the boot partition {}", p.name))?;
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
                Tool::from_invocation(
                    &plan.tools.data,
                    &[(slot::IMAGE, vec![img_path.into()])],
                    plan.source_date_epoch,
                )?
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

/// What the disk stage produced.
pub(super) struct DiskOut {
    /// The image's hash, from the same pass that made its block map.
    pub(super) image: Hashed,
    /// The block map's hash.
    pub(super) bmap: Hashed,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct DiskMeta {
    mapped: Vec<(u64, u64)>,
}

/// Everything the disk image is made of: the layout, the boot and data
/// filesystems' settings, the epoch, the partition UUIDs the slots give,
/// every file written into it by hash (the SBOM on the boot partitions
/// too), and mke2fs's version.
fn key(plan: &Plan, rootfs: &RootfsImage, boot: &BootOut, sbom: &Hashed) -> anyhow::Result<Key> {
    let mut files: BTreeMap<String, (String, u64)> = BTreeMap::new();
    files.insert(
        plan.outputs.rootfs.clone(),
        (hex::encode(rootfs.hashed.sha256), rootfs.hashed.size),
    );
    files.insert(
        plan.outputs.sbom.clone(),
        (hex::encode(sbom.sha256), sbom.size),
    );
    for f in &rootfs.boot_files {
        files.insert(f.output.clone(), (hex::encode(f.sha256), f.size));
    }
    for (n, h) in &boot.hashes {
        files.insert(n.clone(), (hex::encode(h.sha256), h.size));
    }
    let uuids: Vec<String> = plan
        .disk
        .partitions
        .iter()
        .map(|p| partition_uuid(p, &boot.slots).to_string())
        .collect();
    Cache::key(
        "disk",
        &serde_json::json!({
            "disk": plan.disk,
            "esp": plan.esp,
            "data": plan.data,
            "slots": plan.boot.slots,
            "chain": plan.chain,
            "source_date_epoch": plan.source_date_epoch,
            "uuids": uuids,
            "files": files,
            "outputs": [plan.outputs.image.clone(), plan.outputs.bmap.clone()],
            "invocation": plan.tools.data,
            "mke2fs": crate::tool::version("mke2fs")?,
            // How the bmap is cut into ranges; a cached bmap of another
            // cut is rebuilt.
            "bmap_max_range_blocks": disk::bmap::MAX_RANGE_BLOCKS,
        }),
    )
}

/// Writes the golden disk image and its block map (one read gives both
/// the map and the image's sha256), or takes them from the cache. `sbom`
/// is the hash of the `sbom.spdx.json` in `out` the boot partitions carry.
pub(super) fn stage(
    plan: &Plan,
    rootfs: &RootfsImage,
    boot: &BootOut,
    sbom: &Hashed,
    cache: &Cache,
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<DiskOut> {
    let key = key(plan, rootfs, boot, sbom)?;
    let path = out.join(&plan.outputs.image);
    let bmap_path = out.join(&plan.outputs.bmap);
    if let Some(hit) = cache.get("disk", &key, progress) {
        progress.stage(
            "disk",
            &format!("{} and its block map (cached)", plan.outputs.image),
        );
        hit.place(&plan.outputs.image, &path)?;
        hit.place(&plan.outputs.bmap, &bmap_path)?;
        return Ok(DiskOut {
            image: hit.hashed(&plan.outputs.image)?,
            bmap: hit.hashed(&plan.outputs.bmap)?,
        });
    }
    progress.stage(
        "disk",
        &format!("writing {} ({})", plan.outputs.image, human(plan.disk.size)),
    );
    let mapped = write_disk(
        plan,
        &path,
        &rootfs.path,
        rootfs.hashed.size,
        &rootfs.boot_files,
        &boot.slots,
        out,
    )?;
    progress.stage("bmap", "block map and the image's sha256, on two cores");
    let img = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let (xml, sha) = disk::bmap::bmap_xml_and_sha256_parallel(&img, plan.disk.size, &mapped)
        .with_context(|| format!("computing the block map of {}", path.display()))?;
    // A flash writes only the mapped blocks and checks the image by its
    // bmap alone; a byte the bmap leaves out must therefore be zero, or
    // the flashed device would not hold this image.
    if let Some(at) = disk::bmap::first_nonzero_outside(&img, plan.disk.size, &mapped)
        .with_context(|| format!("reading {}", path.display()))?
    {
        anyhow::bail!(
            "disk image {}: byte {at} is not zero but outside every mapped range; \
             the bmap would leave it unwritten",
            path.display()
        );
    }
    super::write_new(&bmap_path, xml.as_bytes())?;
    let result = DiskOut {
        image: Hashed {
            sha256: sha,
            size: plan.disk.size,
        },
        bmap: Hashed::of_bytes(xml.as_bytes()),
    };
    cache.put(
        "disk",
        &key,
        &[
            (plan.outputs.image.as_str(), &path, result.image),
            (plan.outputs.bmap.as_str(), &bmap_path, result.bmap),
        ],
        &DiskMeta { mapped },
        progress,
    );
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{run, sha256_of, Fixture, Setup};
    use super::*;
    use std::io::Read;

    const CACHED: &str = "and its block map (cached)";

    /// The stages before the disk, into the staging directory.
    fn before(fx: &mut Fixture) -> (RootfsImage, BootOut, Hashed) {
        let signer = fx.boot_signer();
        let rootfs = fx.rootfs();
        let out = fx.out.clone();
        let sbom =
            super::super::sbom::stage(&fx.plan, &fx.opts, &rootfs, &out, &mut fx.progress).unwrap();
        let boot = super::super::boot::stage(
            &fx.plan,
            &rootfs,
            &signer,
            &fx.cache,
            &fx.out,
            &mut fx.progress,
        )
        .unwrap();
        (rootfs, boot, sbom)
    }

    fn read_at(path: &Path, offset: u64, len: u64) -> Vec<u8> {
        let mut f = File::open(path).unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        let mut buf = vec![0u8; usize::try_from(len).unwrap()];
        f.read_exact(&mut buf).unwrap();
        buf
    }

    fn fs_len(p: &Path) -> u64 {
        std::fs::metadata(p).unwrap().len()
    }

    /// `(first block, last block, sha256)` of every range in a bmap.
    fn ranges(xml: &str) -> Vec<(u64, u64, String)> {
        xml.lines()
            .filter_map(|l| l.trim().strip_prefix("<Range chksum=\""))
            .map(|l| {
                let (sum, rest) = l.split_once("\">").unwrap();
                let span = rest.trim_end_matches("</Range>").trim();
                let (a, b) = span.split_once('-').unwrap_or((span, span));
                (a.parse().unwrap(), b.parse().unwrap(), sum.to_string())
            })
            .collect()
    }

    #[test]
    fn the_image_passes_sgdisk_and_its_bmap_and_hash_match_the_bytes() {
        let mut fx = Fixture::new(Setup::default());
        let (rootfs, boot, sbom) = before(&mut fx);
        let out = fx.out.clone();
        let disk = stage(
            &fx.plan,
            &rootfs,
            &boot,
            &sbom,
            &fx.cache,
            &out,
            &mut fx.progress,
        )
        .unwrap();
        let img = out.join(&fx.plan.outputs.image);
        let v = run("sgdisk", &["-v", img.to_str().unwrap()]);
        assert!(v.contains("No problems found"), "sgdisk -v:\n{v}");
        // The hash handed to the record is the image's, from the same read
        // that made the block map.
        assert_eq!(disk.image.sha256, sha256_of(&img));
        assert_eq!(disk.image.size, fs_len(&img));
        assert_eq!(disk.image.size, fx.plan.disk.size);
        let bmap = out.join(&fx.plan.outputs.bmap);
        assert_eq!(disk.bmap.sha256, sha256_of(&bmap));
        let xml = std::fs::read_to_string(&bmap).unwrap();
        assert!(
            xml.contains(&format!("<ImageSize> {} </ImageSize>", fx.plan.disk.size)),
            "{xml}"
        );
        let rs = ranges(&xml);
        assert!(!rs.is_empty(), "{xml}");
        for (first, last, sum) in &rs {
            let bytes = read_at(&img, first * 4096, (last - first + 1) * 4096);
            assert_eq!(
                &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
                sum,
                "range {first}-{last}"
            );
        }
        // Every block of each slot is mapped (a reused device keeps no
        // stale bytes), and each filled slot holds the rootfs and its tree.
        let mapped = |a: u64, b: u64| {
            rs.iter()
                .any(|(f, l, _)| *f <= a / 4096 && (b - 1) / 4096 <= *l)
        };
        for s in fx.plan.boot.slots.iter().filter(|s| s.filled) {
            let root = fx.plan.partition(&s.root_partition).unwrap();
            let verity = fx.plan.partition(&s.verity_partition).unwrap();
            assert!(
                mapped(root.offset, root.offset + root.size),
                "{}",
                root.name
            );
            assert!(
                mapped(verity.offset, verity.offset + verity.size),
                "{}",
                verity.name
            );
            assert_eq!(
                read_at(&img, root.offset, rootfs.hashed.size),
                std::fs::read(&rootfs.path).unwrap(),
                "{}",
                root.name
            );
            let tree = std::fs::read(out.join(&s.verity_output)).unwrap();
            assert_eq!(
                read_at(&img, verity.offset, tree.len() as u64),
                tree,
                "{}",
                verity.name
            );
            // sgdisk reads the DPS UUIDs the root hash gives.
            let info = run(
                "sgdisk",
                &["-i", &root.number.to_string(), img.to_str().unwrap()],
            );
            let uuid = partition_uuid(root, &boot.slots).to_string().to_uppercase();
            assert!(
                info.contains(&format!("Partition unique GUID: {uuid}")),
                "{info}"
            );
        }
    }

    #[test]
    fn the_boot_and_data_filesystems_check_clean_and_hold_the_slot_files() {
        let mut fx = Fixture::new(Setup::default());
        let (rootfs, boot, sbom) = before(&mut fx);
        let out = fx.out.clone();
        stage(
            &fx.plan,
            &rootfs,
            &boot,
            &sbom,
            &fx.cache,
            &out,
            &mut fx.progress,
        )
        .unwrap();
        let img = out.join(&fx.plan.outputs.image);
        let scratch = fx.fresh_out("scratch");
        let part = |c: Content| {
            let p = fx.plan.disk.partitions.iter().find(|p| p.content == c);
            p.unwrap()
        };
        let esp = scratch.join("esp.img");
        let p = part(Content::Esp);
        std::fs::write(&esp, read_at(&img, p.offset, p.size)).unwrap();
        run("fsck.fat", &["-n", esp.to_str().unwrap()]);
        for s in fx.plan.boot.slots.iter().filter(|s| s.filled) {
            // Each slot's SBOM beside its manifest, as an update installs it.
            assert!(
                s.esp_files
                    .iter()
                    .any(|f| f.path == format!("{}/sbom.spdx.json", s.name)
                        && f.output == fx.plan.outputs.sbom),
                "{:?}",
                s.esp_files
            );
            for f in &s.esp_files {
                if f.optional && !out.join(&f.output).is_file() {
                    continue;
                }
                let copy = scratch.join(format!("{}-{}", s.name, f.output));
                crate::tool::Tool::new("mcopy")
                    .unwrap()
                    .env("MTOOLS_SKIP_CHECK", "1")
                    .args([
                        "-i",
                        esp.to_str().unwrap(),
                        &format!("::{}", f.path),
                        copy.to_str().unwrap(),
                    ])
                    .run()
                    .unwrap_or_else(|e| panic!("{e:#}"));
                assert_eq!(
                    std::fs::read(&copy).unwrap(),
                    std::fs::read(out.join(&f.output)).unwrap(),
                    "{} on the boot partition",
                    f.path
                );
            }
        }
        let data = scratch.join("data.img");
        let p = part(Content::Data);
        std::fs::write(&data, read_at(&img, p.offset, p.size)).unwrap();
        run("e2fsck", &["-fn", data.to_str().unwrap()]);
        let sb = run("dumpe2fs", &["-h", data.to_str().unwrap()]);
        assert!(
            sb.contains(&format!("Filesystem UUID:          {}", fx.plan.data.uuid)),
            "{sb}"
        );
    }

    #[test]
    fn a_second_run_hits_the_cache_with_identical_bytes() {
        let mut fx = Fixture::new(Setup::default());
        let (rootfs, boot, sbom) = before(&mut fx);
        let out = fx.out.clone();
        let first = stage(
            &fx.plan,
            &rootfs,
            &boot,
            &sbom,
            &fx.cache,
            &out,
            &mut fx.progress,
        )
        .unwrap();
        assert!(!fx.log.text().contains(CACHED));
        let again = fx.fresh_out("again");
        let second = stage(
            &fx.plan,
            &rootfs,
            &boot,
            &sbom,
            &fx.cache,
            &again,
            &mut fx.progress,
        )
        .unwrap();
        assert_eq!(fx.log.text().matches(CACHED).count(), 1, "not a hit");
        assert_eq!((second.image, second.bmap), (first.image, first.bmap));
        for n in [&fx.plan.outputs.image, &fx.plan.outputs.bmap] {
            assert_eq!(sha256_of(&again.join(n)), sha256_of(&out.join(n)), "{n}");
        }
    }
}
