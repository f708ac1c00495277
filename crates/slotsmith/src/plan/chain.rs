//! The verified boot chain, decided in the plan: firmware (our Secure Boot
//! keys) -> EFI Boot Guard on the ESP -> one signed UKI per slot on the
//! slot's own FAT boot partition -> our initramfs's init, which verifies
//! the slot's signed manifest and opens the dm-verity root.
//!
//! Everything the build needs to assemble the chain is here: where the
//! loader and the systemd stub come from (the rootfs's own Debian
//! packages, so their versions are the image's and not the build host's),
//! the UKI sections and their addresses, the initramfs's contents, each
//! slot's boot partition (label, volume id, files) and its EFI Boot Guard
//! environment.
//!
//! Why the loader and the stub come from the rootfs: a build host's files
//! would make the image depend on whatever the host has installed, and
//! the device could not report (or update) what it booted with.

use serde::Serialize;

use crate::spec::{BootChainSpec, Loader, SecureBootKeySpec};

/// The EFI Boot Guard binary in the rootfs (Debian's `efibootguard`).
pub const EBG_LOADER: &str = "usr/lib/x86_64-linux-gnu/efibootguard/efibootguardx64.efi";
/// The systemd EFI stub in the rootfs (Debian's `systemd-boot-efi`).
pub const SYSTEMD_STUB: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// The removable-media default path the firmware boots without any
/// `Boot####` variable, so a freshly flashed disk boots as it is.
pub const ESP_LOADER_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// The UKI's name on each boot partition.
pub const UKI_NAME: &str = "linux.efi";

/// A PE section of the UKI and the virtual address it is placed at. The
/// addresses are those systemd's own tools used for the 252 stub: far
/// enough above the stub's own sections, with `.linux` and `.initrd` last
/// so the kernel can grow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UkiSection {
    /// Section name.
    pub name: String,
    /// What goes into it: `os-release`, `cmdline`, `kernel` or `initrd`.
    pub content: String,
    /// Virtual address.
    pub vma: u64,
}

/// What the initramfs holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanInitramfs {
    /// Module names the image asked for; the build adds their
    /// dependencies from the rootfs kernel's `modules.dep`.
    pub modules: Vec<String>,
    /// The list of module paths, in load order, inside the archive.
    pub modules_list: String,
    /// The boot public key inside the archive.
    pub public_key: String,
}

/// One slot's boot partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanBootPartition {
    /// `a` or `b`.
    pub slot: String,
    /// GPT partition name.
    pub partition: String,
    /// FAT volume label: EFI Boot Guard finds the UKI by it (`L:` prefix).
    pub label: String,
    /// FAT volume serial, derived.
    pub volume_id: u32,
    /// The signed UKI in out/.
    pub uki_output: String,
    /// The EFI Boot Guard environment (`BGENV.DAT`) in out/.
    pub env_output: String,
    /// `kernelfile` in the environment.
    pub kernelfile: String,
    /// The environment's revision: the loader boots the highest valid one,
    /// so slot A starts above slot B.
    pub revision: u32,
    /// Whether the golden image has a system in this slot (an empty slot's
    /// partition holds only its environment, at revision 0).
    pub filled: bool,
    /// Files on the partition: (path, output), in order.
    pub files: Vec<(String, String)>,
}

/// A file the build writes into the rootfs so the device can update
/// itself: SWUpdate's configuration, its hardware revision, the update
/// certificate it trusts, the updater and its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanDeviceFile {
    /// Path in the rootfs, without a leading `/`.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Where the bytes come from.
    pub source: DeviceFileSource,
}

/// The contents of a device file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceFileSource {
    /// This text, decided here.
    Text(String),
    /// The update signing certificate (only the build has it).
    UpdateCertificate,
    /// The static `slotsmith-update` program (`crates/updater`), which the
    /// driver builds from this checkout like the init.
    Updater,
}

/// The chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanChain {
    /// Which loader.
    pub loader: Loader,
    /// The loader in the rootfs.
    pub loader_source: String,
    /// The signed loader in out/.
    pub loader_output: String,
    /// Its path on the ESP.
    pub loader_esp_path: String,
    /// The UKI stub in the rootfs.
    pub stub_source: String,
    /// UKI sections in order.
    pub uki_sections: Vec<UkiSection>,
    /// Seconds the loader arms the watchdog with (0: off).
    pub watchdog_sec: u16,
    /// The initramfs.
    pub initramfs: PlanInitramfs,
    /// Each slot's boot partition, in slot order.
    pub partitions: Vec<PlanBootPartition>,
    /// Directory in out/ with what manufacturing needs to enrol the Secure
    /// Boot keys.
    pub secureboot_dir: String,
    /// Where the Secure Boot keys are (never the keys themselves).
    pub secureboot_key: SecureBootKeySpec,
    /// SWUpdate's configuration on the device.
    pub device_files: Vec<PlanDeviceFile>,
}

/// The image facts the device's updater needs.
pub struct DeviceFacts<'a> {
    /// Image name.
    pub name: &'a str,
    /// Version (the no-downgrade floor).
    pub version: &'a str,
    /// The release's security version (the anti-rollback floor it sets
    /// once committed).
    pub security_version: u64,
    /// Board.
    pub board: &'a str,
    /// The revision this golden image declares the device to be.
    pub revision: &'a str,
    /// The sw-description set and the mode that installs into slot a, b.
    pub set: &'a str,
    /// Modes per slot, in slot order.
    pub modes: &'a [String; 2],
}

/// Where the update certificate goes on the device.
pub const UPDATE_CERT_PATH: &str = "etc/swupdate/update.cert.pem";
/// The updater program on the device.
pub const UPDATER_PATH: &str = "usr/sbin/slotsmith-update";
/// Its settings (JSON, below).
pub const UPDATER_CONFIG_PATH: &str = "etc/slotsmith/update.json";
/// SWUpdate's pre-update command (`-P`): one word, because Debian's
/// `swupdate.sh` splits `SWUPDATE_ARGS` on spaces.
pub const PREUPDATE_PATH: &str = "usr/libexec/slotsmith/preupdate";
/// The device's update state on the data partition: the anti-rollback
/// minimum, the audit trail. The init mounts the data partition there.
pub const STATE_DIR: &str = "/data/slotsmith";

/// The updater's settings, written as `/etc/slotsmith/update.json`: every
/// fact it acts on is decided here and reviewable in `cargo xtask plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdaterConfig {
    /// Image name, version and security version of this release.
    pub image: String,
    /// Version.
    pub version: String,
    /// Security version.
    pub security_version: u64,
    /// The certificate SWUpdate verifies with (`-k`).
    pub certificate: String,
    /// The pre-update command (`-P`).
    pub preupdate: String,
    /// For each slot the system runs from: the `-e set,mode` that installs
    /// into the other slot.
    pub install_into_other: Vec<(String, String)>,
    /// Each slot's boot partition (GPT name), holding its loader environment.
    pub boot_partitions: Vec<(String, String)>,
    /// Units that must be active for the system to be healthy.
    pub healthy_units: Vec<String>,
    /// Seconds a tried slot may run unconfirmed.
    pub trial_timeout_sec: u32,
    /// Where the minimum security version and the audit trail live.
    pub state_dir: String,
}

/// The device files: SWUpdate's configuration (the certificate every
/// `.swu` must be signed with, the hardware revision it must list, EFI
/// Boot Guard as the bootloader (`-B ebg`), the collection for the slot
/// that is not running, no downgrade below the running version, and the
/// anti-rollback check as its pre-update command), the updater and its
/// settings. Debian's `/usr/lib/swupdate/swupdate.sh` sources
/// `/etc/swupdate/conf.d/*`.
pub fn device_files(f: &DeviceFacts<'_>, chain: &BootChainSpec) -> Vec<PlanDeviceFile> {
    let [mode_a, mode_b] = f.modes;
    let conf = format!(
        "# Generated by slotsmith for {name} {version}: how this device installs updates.\n\
         # The .swu must be signed with update.cert.pem (CMS), list this board and\n\
         # revision (/etc/hwrevision), not be older than the running version, and\n\
         # pass the pre-update check (its security version is not below the\n\
         # device's minimum). It installs into the slot that is not running; EFI\n\
         # Boot Guard then tries it. `slotsmith-update install FILE` runs the same\n\
         # command and records it in the audit trail.\n\
         slot=$(sed -n 's/.*slotsmith\\.slot=\\([ab]\\).*/\\1/p' /proc/cmdline)\n\
         case \"$slot\" in a) target={mode_b} ;; b) target={mode_a} ;; *) target=none ;; esac\n\
         SWUPDATE_ARGS=\"-v -B ebg -k /{UPDATE_CERT_PATH} -e {set},$target -N {version} -P /{PREUPDATE_PATH}\"\n",
        name = f.name,
        version = f.version,
        set = f.set,
    );
    let preupdate = format!(
        "#!/bin/sh\n\
         # Generated by slotsmith. SWUpdate runs this (-P) after it has verified\n\
         # sw-description (signature, hardware, version) and before it writes\n\
         # anything: a release whose security version is below this device's\n\
         # minimum is refused here.\n\
         exec /{UPDATER_PATH} preupdate\n"
    );
    let config = UpdaterConfig {
        image: f.name.to_string(),
        version: f.version.to_string(),
        security_version: f.security_version,
        certificate: format!("/{UPDATE_CERT_PATH}"),
        preupdate: format!("/{PREUPDATE_PATH}"),
        install_into_other: vec![
            ("a".into(), format!("{},{mode_b}", f.set)),
            ("b".into(), format!("{},{mode_a}", f.set)),
        ],
        boot_partitions: crate::layout::SLOTS
            .iter()
            .map(|s| (s.to_string(), boot_partition(s)))
            .collect(),
        healthy_units: chain.healthy_units.clone(),
        trial_timeout_sec: chain.trial_timeout_sec,
        state_dir: STATE_DIR.into(),
    };
    let mut json = serde_json::to_string_pretty(&config).unwrap_or_default();
    json.push('\n');
    let text = |path: &str, mode: u32, t: String| PlanDeviceFile {
        path: path.into(),
        mode,
        source: DeviceFileSource::Text(t),
    };
    vec![
        text(
            "etc/hwrevision",
            0o644,
            format!("{} {}\n", f.board, f.revision),
        ),
        text("etc/swupdate/conf.d/10-slotsmith", 0o644, conf),
        PlanDeviceFile {
            path: UPDATE_CERT_PATH.into(),
            mode: 0o644,
            source: DeviceFileSource::UpdateCertificate,
        },
        text(UPDATER_CONFIG_PATH, 0o644, json),
        text(PREUPDATE_PATH, 0o755, preupdate),
        PlanDeviceFile {
            path: UPDATER_PATH.into(),
            mode: 0o755,
            source: DeviceFileSource::Updater,
        },
    ]
}

/// The enrolment files in the Secure Boot directory: (name, optional).
/// The signed `.auth` variables exist only when the PK and KEK private
/// keys are at hand (always for development keys).
pub fn enrolment_files() -> Vec<(String, bool)> {
    let mut v = Vec::new();
    for var in ["PK", "KEK", "db"] {
        for ext in ["pem", "cer", "esl"] {
            v.push((format!("{var}.{ext}"), false));
        }
        v.push((format!("{var}.auth"), true));
    }
    v.push((crate::secureboot::ENROLL_TXT.to_string(), false));
    // For tests and `cargo xtask qemu`: OVMF's variable store with the
    // keys enrolled and Secure Boot on.
    v.push((crate::secureboot::OVMF_VARS.to_string(), false));
    v
}

/// A slot's boot partition GPT name.
pub fn boot_partition(slot: &str) -> String {
    format!("boot-{slot}")
}

/// Plans the chain for `slots` (name, filled).
pub fn plan_chain(
    spec: &BootChainSpec,
    secureboot_key: &SecureBootKeySpec,
    device: &DeviceFacts<'_>,
    slots: &[(String, bool)],
    volume_id: impl Fn(&str) -> u32,
) -> PlanChain {
    let n = slots.len() as u32;
    let partitions = slots
        .iter()
        .enumerate()
        .map(|(i, (slot, filled))| {
            let label = format!("BOOT{i}");
            let uki_output = format!("linux-{slot}.efi");
            let env_output = format!("boot-{slot}.bgenv");
            let mut files = vec![("BGENV.DAT".to_string(), env_output.clone())];
            if *filled {
                files.push((UKI_NAME.to_string(), uki_output.clone()));
                files.push(("manifest".into(), crate::layout::manifest_output(slot)));
                files.push(("manifest.sig".into(), crate::layout::signature_output(slot)));
                // The SBOM where an update puts it (see `plan::files`).
                files.push((super::files::SBOM_NAME.into(), crate::sbom::OUTPUT.into()));
            }
            PlanBootPartition {
                slot: slot.clone(),
                partition: boot_partition(slot),
                kernelfile: format!("L:{label}:{UKI_NAME}"),
                label,
                volume_id: volume_id(slot),
                uki_output,
                env_output,
                // A filled slot earlier in the list gets the higher
                // revision: slot A boots first.
                revision: if *filled { n - i as u32 } else { 0 },
                filled: *filled,
                files,
            }
        })
        .collect();
    let section = |name: &str, content: &str, vma: u64| UkiSection {
        name: name.into(),
        content: content.into(),
        vma,
    };
    PlanChain {
        loader: spec.loader,
        loader_source: EBG_LOADER.into(),
        loader_output: "bootx64.efi".into(),
        loader_esp_path: ESP_LOADER_PATH.into(),
        stub_source: SYSTEMD_STUB.into(),
        uki_sections: vec![
            section(".osrel", "os-release", 0x20000),
            section(".cmdline", "cmdline", 0x30000),
            section(".linux", "kernel", 0x2000000),
            section(".initrd", "initrd", 0x3000000),
        ],
        watchdog_sec: spec.watchdog_sec,
        initramfs: PlanInitramfs {
            modules: spec.initramfs_modules.clone(),
            modules_list: "etc/slotsmith/modules".into(),
            public_key: "etc/slotsmith/boot.pub.pem".into(),
        },
        partitions,
        secureboot_dir: "secureboot".into(),
        secureboot_key: secureboot_key.clone(),
        device_files: device_files(device, spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_a_boots_first_and_an_empty_slot_holds_only_its_environment() {
        let spec = BootChainSpec {
            loader: Loader::Efibootguard,
            watchdog_sec: 60,
            initramfs_modules: vec!["dm-verity".into()],
            healthy_units: vec!["ssh.service".into()],
            trial_timeout_sec: 600,
        };
        let modes = ["copy1".to_string(), "copy2".to_string()];
        let facts = DeviceFacts {
            name: "demo",
            version: "1.0.0",
            security_version: 3,
            board: "board",
            revision: "1.0",
            set: "stable",
            modes: &modes,
        };
        let c = plan_chain(
            &spec,
            &SecureBootKeySpec::development(),
            &facts,
            &[("a".into(), true), ("b".into(), false)],
            |_| 7,
        );
        assert_eq!(c.partitions[0].revision, 2);
        assert_eq!(c.partitions[0].kernelfile, "L:BOOT0:linux.efi");
        assert_eq!(c.partitions[1].revision, 0);
        assert_eq!(c.partitions[1].files.len(), 1);
        let full = plan_chain(
            &spec,
            &SecureBootKeySpec::development(),
            &facts,
            &[("a".into(), true), ("b".into(), true)],
            |_| 7,
        );
        assert_eq!(full.partitions[1].revision, 1);
        // SWUpdate installs into the other slot, trusts the update
        // certificate, uses EFI Boot Guard and refuses a downgrade.
        let text = |i: usize| match &c.device_files[i].source {
            DeviceFileSource::Text(t) => t.clone(),
            other => panic!("{other:?}"),
        };
        let conf = text(1);
        assert!(
            conf.contains("-B ebg -k /etc/swupdate/update.cert.pem -e stable,$target -N 1.0.0 -P /usr/libexec/slotsmith/preupdate"),
            "{conf}"
        );
        assert!(
            conf.contains("a) target=copy2 ;; b) target=copy1"),
            "{conf}"
        );
        assert_eq!(text(0), "board 1.0\n");
        let config: serde_json::Value = serde_json::from_str(&text(3)).unwrap();
        assert_eq!(config["security_version"], 3);
        assert_eq!(
            config["install_into_other"][0],
            serde_json::json!(["a", "stable,copy2"])
        );
        assert_eq!(config["healthy_units"], serde_json::json!(["ssh.service"]));
        assert_eq!(c.device_files[5].source, DeviceFileSource::Updater);
        assert_eq!(
            full.partitions[1].files[1],
            ("linux.efi".into(), "linux-b.efi".into())
        );
        // The golden image's slot carries its SBOM where an update puts it.
        assert_eq!(
            full.partitions[1].files.last().unwrap(),
            &("sbom.spdx.json".into(), "sbom.spdx.json".into())
        );
    }
}
