//! Which files a build writes and where each one goes, decided in the
//! plan: the boot files and where they come from, each slot's files on
//! the boot partition, the `.swu` members in archive order with the
//! payloads of each slot's collection, and the full list of outputs.
//!
//! **The SBOM goes with the slot it describes.** `sbom.spdx.json` is a
//! member of the `.swu` like the manifest (so its sha256 is in the signed
//! sw-description and SWUpdate refuses an altered copy), installed as
//! [`SBOM_NAME`] beside the slot's manifest on the boot partition: the
//! slot's own FAT partition in the boot chain (`/sbom.spdx.json`), else
//! `<boot-mount>/<slot>/`. The rootfs cannot carry it (it is read-only,
//! and the SBOM describes the image that contains it), and the boot
//! partition is what SWUpdate already writes per slot; the golden image
//! puts it in the same place, so a device fresh from the factory and an
//! updated one look the same.
//!
//! One thing only the build can see: whether the rootfs has an initrd for
//! its kernel. Such a file is `optional` everywhere it appears, and the
//! build leaves it out of every list at once when it is absent.

use serde::Serialize;

use crate::spec::KernelSource;

/// The SBOM's file name on a slot's boot partition, beside its manifest.
pub const SBOM_NAME: &str = "sbom.spdx.json";

/// Where a boot file comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "from")]
pub enum BootSource {
    /// The one `/boot/vmlinuz-<version>` in the rootfs.
    RootfsKernel,
    /// `/boot/initrd.img-<version>` of that kernel, when present.
    RootfsInitrd,
    /// A file of the project (hashed by the load stage).
    Project {
        /// Relative to the project root.
        path: String,
    },
    /// A file of the rootfs (the boot chain's loader and UKI stub).
    Rootfs {
        /// Path in the rootfs, without a leading `/`.
        path: String,
    },
    /// Our own initramfs, assembled by the build (see `plan::chain`).
    Initramfs,
}

/// A boot file: kernel, initrd or device tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanBootFile {
    /// `kernel`, `initrd` or `dtb`.
    pub role: String,
    /// Its name in `out/` and in each slot's boot directory.
    pub output: String,
    /// Where it comes from.
    #[serde(flatten)]
    pub source: BootSource,
    /// Only the build can tell whether it exists.
    pub optional: bool,
}

/// A file in a slot's directory on the boot partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanSlotFile {
    /// Its path on the FAT filesystem (no leading `/`).
    pub path: String,
    /// The output it is a copy of.
    pub output: String,
    /// Present only when that output is.
    pub optional: bool,
}

/// Where a `.swu` payload goes on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PayloadTarget {
    /// Written raw to a partition.
    Raw {
        /// The GPT partition name.
        partition: String,
    },
    /// Copied to a file on the mounted boot partition.
    File {
        /// The path on the device.
        path: String,
    },
    /// Copied to a file on a partition SWUpdate mounts itself (a slot's
    /// FAT boot partition in the boot chain).
    PartitionFile {
        /// The GPT partition name.
        partition: String,
        /// Its filesystem type.
        filesystem: String,
        /// The path inside it.
        path: String,
    },
}

/// One payload of a slot's collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanPayload {
    /// The output it carries.
    pub output: String,
    /// Where it goes.
    pub target: PayloadTarget,
    /// Present only when that output is.
    pub optional: bool,
}

/// The boot files for a kernel source; with the boot chain, the initrd is
/// our own initramfs and the loader and UKI stub come from the rootfs.
pub fn boot_files(source: &KernelSource, chain: bool) -> Vec<PlanBootFile> {
    let mut v = kernel_files(source);
    if chain {
        v.retain(|f| f.role != "initrd");
        v.push(PlanBootFile {
            role: "initrd".into(),
            output: "initrd.img".into(),
            source: BootSource::Initramfs,
            optional: false,
        });
        for (role, output, path) in [
            ("stub", "linuxx64.efi.stub", super::chain::SYSTEMD_STUB),
            ("loader", "efibootguardx64.efi", super::chain::EBG_LOADER),
        ] {
            v.push(PlanBootFile {
                role: role.into(),
                output: output.into(),
                source: BootSource::Rootfs { path: path.into() },
                optional: false,
            });
        }
    }
    v
}

fn kernel_files(source: &KernelSource) -> Vec<PlanBootFile> {
    let file = |role: &str, output: &str, source: BootSource, optional: bool| PlanBootFile {
        role: role.into(),
        output: output.into(),
        source,
        optional,
    };
    match source {
        KernelSource::FromRootfs => vec![
            file("kernel", "vmlinuz", BootSource::RootfsKernel, false),
            file("initrd", "initrd.img", BootSource::RootfsInitrd, true),
        ],
        KernelSource::Files { image, initrd, dtb } => {
            let mut v = vec![file(
                "kernel",
                "vmlinuz",
                BootSource::Project {
                    path: image.path.clone(),
                },
                false,
            )];
            if let Some(i) = initrd {
                v.push(file(
                    "initrd",
                    "initrd.img",
                    BootSource::Project {
                        path: i.path.clone(),
                    },
                    false,
                ));
            }
            if let Some(d) = dtb {
                v.push(file(
                    "dtb",
                    "board.dtb",
                    BootSource::Project {
                        path: d.path.clone(),
                    },
                    false,
                ));
            }
            v
        }
    }
}

/// A slot's files on the boot partition: its boot files, then its signed
/// manifest and signature, then the SBOM, in `<esp_dir>/`.
pub fn slot_esp_files(
    esp_dir: &str,
    boot: &[PlanBootFile],
    manifest_output: &str,
    signature_output: &str,
    sbom_output: &str,
) -> Vec<PlanSlotFile> {
    let dir = esp_dir.trim_start_matches('/');
    let mut v: Vec<PlanSlotFile> = boot
        .iter()
        .map(|f| PlanSlotFile {
            path: format!("{dir}/{}", f.output),
            output: f.output.clone(),
            optional: f.optional,
        })
        .collect();
    v.push(PlanSlotFile {
        path: format!("{dir}/manifest"),
        output: manifest_output.into(),
        optional: false,
    });
    v.push(PlanSlotFile {
        path: format!("{dir}/manifest.sig"),
        output: signature_output.into(),
        optional: false,
    });
    v.push(PlanSlotFile {
        path: format!("{dir}/{SBOM_NAME}"),
        output: sbom_output.into(),
        optional: false,
    });
    v
}

/// The names of one slot's partitions and outputs.
pub struct SlotNames<'a> {
    /// `a` or `b`.
    pub slot: &'a str,
    /// Its root partition.
    pub root_partition: &'a str,
    /// Its verity partition.
    pub verity_partition: &'a str,
    /// Its verity tree in out/.
    pub verity_output: &'a str,
    /// Its manifest in out/.
    pub manifest_output: &'a str,
    /// The manifest's signature in out/.
    pub signature_output: &'a str,
    /// The SBOM in out/ (the same for both slots).
    pub sbom_output: &'a str,
}

/// A slot's collection: its root and verity partitions raw, then its boot
/// files, manifest, signature and SBOM into `<boot_mount>/<slot>/`.
pub fn slot_payloads(
    s: &SlotNames<'_>,
    boot_mount: &str,
    rootfs_output: &str,
    boot: &[PlanBootFile],
) -> Vec<PlanPayload> {
    let dir = format!("{}/{}", boot_mount.trim_end_matches('/'), s.slot);
    let raw = |output: &str, partition: &str| PlanPayload {
        output: output.into(),
        target: PayloadTarget::Raw {
            partition: partition.into(),
        },
        optional: false,
    };
    let file = |output: &str, name: &str, optional: bool| PlanPayload {
        output: output.into(),
        target: PayloadTarget::File {
            path: format!("{dir}/{name}"),
        },
        optional,
    };
    let mut v = vec![
        raw(rootfs_output, s.root_partition),
        raw(s.verity_output, s.verity_partition),
    ];
    for f in boot {
        v.push(file(&f.output, &f.output, f.optional));
    }
    v.push(file(s.manifest_output, "manifest", false));
    v.push(file(s.signature_output, "manifest.sig", false));
    v.push(file(s.sbom_output, SBOM_NAME, false));
    v
}

/// A chain slot's collection: its root and verity partitions raw, then
/// its signed UKI, manifest and signature onto its own boot partition, at
/// the paths the loader and the init read them from, and the SBOM beside
/// them.
pub fn chain_slot_payloads(
    s: &SlotNames<'_>,
    rootfs_output: &str,
    boot: &super::chain::PlanBootPartition,
) -> Vec<PlanPayload> {
    let raw = |output: &str, partition: &str| PlanPayload {
        output: output.into(),
        target: PayloadTarget::Raw {
            partition: partition.into(),
        },
        optional: false,
    };
    let mut v = vec![
        raw(rootfs_output, s.root_partition),
        raw(s.verity_output, s.verity_partition),
    ];
    for (path, output) in [
        (super::chain::UKI_NAME, boot.uki_output.as_str()),
        ("manifest", s.manifest_output),
        ("manifest.sig", s.signature_output),
        (SBOM_NAME, s.sbom_output),
    ] {
        v.push(PlanPayload {
            output: output.into(),
            target: PayloadTarget::PartitionFile {
                partition: boot.partition.clone(),
                filesystem: "vfat".into(),
                path: format!("/{path}"),
            },
            optional: false,
        });
    }
    v
}

/// The archive's members in order: every payload once, the first time a
/// collection names it (the rootfs first: both slots install the same
/// bytes).
pub fn members(collections: &[Vec<PlanPayload>]) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    for c in collections {
        for p in c {
            if !out.iter().any(|(o, _)| *o == p.output) {
                out.push((p.output.clone(), p.optional));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rootfs_kernel_has_an_optional_initrd_everywhere() {
        let boot = boot_files(&KernelSource::FromRootfs, false);
        assert_eq!(boot.len(), 2);
        assert!(!boot[0].optional && boot[1].optional);
        let esp = slot_esp_files(
            "/b",
            &boot,
            "boot-b.manifest",
            "boot-b.manifest.sig",
            "sbom.spdx.json",
        );
        let paths: Vec<&str> = esp.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "b/vmlinuz",
                "b/initrd.img",
                "b/manifest",
                "b/manifest.sig",
                "b/sbom.spdx.json"
            ]
        );
        assert!(esp[1].optional);
    }

    #[test]
    fn members_are_in_first_use_order_without_repeats() {
        let boot = boot_files(&KernelSource::FromRootfs, false);
        let c: Vec<Vec<PlanPayload>> = ["a", "b"]
            .iter()
            .map(|s| {
                let (rp, vp, vo, mo, so) = (
                    format!("root-{s}"),
                    format!("root-{s}-verity"),
                    format!("root-{s}.verity"),
                    format!("boot-{s}.manifest"),
                    format!("boot-{s}.manifest.sig"),
                );
                slot_payloads(
                    &SlotNames {
                        slot: s,
                        root_partition: &rp,
                        verity_partition: &vp,
                        verity_output: &vo,
                        manifest_output: &mo,
                        signature_output: &so,
                        sbom_output: "sbom.spdx.json",
                    },
                    "/boot/",
                    "rootfs.squashfs",
                    &boot,
                )
            })
            .collect();
        assert_eq!(
            c[1][2].target,
            PayloadTarget::File {
                path: "/boot/b/vmlinuz".into()
            }
        );
        // Each slot's SBOM beside its manifest; one member for both.
        assert_eq!(
            c[1].last().unwrap(),
            &PlanPayload {
                output: "sbom.spdx.json".into(),
                target: PayloadTarget::File {
                    path: "/boot/b/sbom.spdx.json".into()
                },
                optional: false,
            }
        );
        let m: Vec<String> = members(&c).into_iter().map(|(o, _)| o).collect();
        assert_eq!(
            m,
            [
                "rootfs.squashfs",
                "root-a.verity",
                "vmlinuz",
                "initrd.img",
                "boot-a.manifest",
                "boot-a.manifest.sig",
                "sbom.spdx.json",
                "root-b.verity",
                "boot-b.manifest",
                "boot-b.manifest.sig"
            ]
        );
    }
}
