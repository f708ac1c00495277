//! The `boot:` section of an image: the verified boot chain (the loader,
//! its watchdog, and the kernel modules our initramfs loads). Module names
//! are checked here, by their form; whether the kernel has them is the
//! build's to see (`modules.dep`).

use serde_norway::Value;

use crate::spec::{BootChainSpec, Loader};
use crate::yaml::Reader;

const BOOT_KEYS: &[&str] = &["loader", "watchdog", "initramfs-modules"];
/// Modules a QEMU/virtio board's init needs when the image names none.
pub const DEFAULT_INITRAMFS_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "dm-verity",
    "squashfs",
    "overlay",
    "ext4",
    // ext4 asks the crypto API for crc32c at mount time; modules.dep does
    // not name it, and without modprobe it must be loaded up front.
    "crc32c_generic",
];

/// Reads `boot:`, the verified boot chain.
pub(super) fn read_boot(r: &mut Reader<'_>, v: &Value) -> Option<BootChainSpec> {
    let mut m = r.map("boot", v, BOOT_KEYS)?;
    let loader: Option<String> = r.opt(&mut m, "loader");
    let loader = match loader.as_deref() {
        Some("efibootguard") => Some(Loader::Efibootguard),
        Some(other) => {
            r.error(
                "boot.loader",
                format!(
                    "unknown loader '{}' (supported: efibootguard)",
                    slotsmith_yaml::escape::shown(other)
                ),
            );
            None
        }
        None => {
            r.error("boot.loader", "missing required key 'loader'");
            None
        }
    };
    let watchdog: u64 = r.opt(&mut m, "watchdog").unwrap_or(0);
    if watchdog > 3600 {
        r.error(
            "boot.watchdog",
            format!("{watchdog} seconds is more than an hour; use at most 3600 (0 turns it off)"),
        );
    }
    let modules: Vec<String> = r.opt(&mut m, "initramfs-modules").unwrap_or_else(|| {
        DEFAULT_INITRAMFS_MODULES
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    for (i, name) in modules.iter().enumerate() {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            r.error(
                &format!("boot.initramfs-modules[{i}]"),
                format!(
                    "'{}' is not a module name (letters, digits, '_' and '-', at most 64)",
                    slotsmith_yaml::escape::shown(name)
                ),
            );
        }
    }
    r.finish(m);
    Some(BootChainSpec {
        loader: loader?,
        watchdog_sec: u16::try_from(watchdog.min(3600)).unwrap_or(3600),
        initramfs_modules: modules,
    })
}
