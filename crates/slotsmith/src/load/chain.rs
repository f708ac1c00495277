//! The `boot:` section of an image: the verified boot chain (the loader,
//! its watchdog, and the kernel modules our initramfs loads). Module names
//! are checked here, by their form; whether the kernel has them is the
//! build's to see (`modules.dep`).

use serde_norway::Value;

use crate::spec::{BootChainSpec, Loader};
use crate::yaml::Reader;

const BOOT_KEYS: &[&str] = &[
    "loader",
    "watchdog",
    "initramfs-modules",
    "healthy-units",
    "trial-timeout",
];
/// Seconds a tried slot has to pass its health check when the image does
/// not say: long enough for a slow first boot (SSH host keys, TCG).
pub const DEFAULT_TRIAL_TIMEOUT: u32 = 600;
/// Unit types a health check can ask systemd about.
const UNIT_SUFFIXES: &[&str] = &[
    ".service", ".socket", ".target", ".mount", ".timer", ".path", ".device",
];
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
    let healthy_units: Vec<String> = r.opt(&mut m, "healthy-units").unwrap_or_default();
    for (i, unit) in healthy_units.iter().enumerate() {
        if !is_unit_name(unit) {
            r.error(
                &format!("boot.healthy-units[{i}]"),
                format!(
                    "'{}' is not a systemd unit name (letters, digits, ':', '_', '.', '@', '\\' and '-', at most 128, ending in {})",
                    slotsmith_yaml::escape::shown(unit),
                    UNIT_SUFFIXES.join(", ")
                ),
            );
        }
    }
    let trial: u64 = r
        .opt(&mut m, "trial-timeout")
        .unwrap_or(u64::from(DEFAULT_TRIAL_TIMEOUT));
    if !(60..=86_400).contains(&trial) {
        r.error(
            "boot.trial-timeout",
            format!("{trial} seconds is outside 60..=86400: a tried slot needs time to boot, and must not run unconfirmed for more than a day"),
        );
    }
    r.finish(m);
    Some(BootChainSpec {
        loader: loader?,
        watchdog_sec: u16::try_from(watchdog.min(3600)).unwrap_or(3600),
        initramfs_modules: modules,
        healthy_units,
        trial_timeout_sec: u32::try_from(trial.clamp(60, 86_400)).unwrap_or(DEFAULT_TRIAL_TIMEOUT),
    })
}

/// A unit name systemd accepts and a shell never splits: `[A-Za-z0-9:_.@\\-]`,
/// a known type suffix, at most 128 bytes, not starting with `-` (it is
/// passed to `systemctl` as an argument).
fn is_unit_name(name: &str) -> bool {
    name.len() <= 128
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.@\\-".contains(&b))
        && UNIT_SUFFIXES
            .iter()
            .any(|s| name.len() > s.len() && name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::is_unit_name;

    #[test]
    fn unit_names_are_checked_by_form() {
        for ok in [
            "ssh.service",
            "getty@tty1.service",
            "multi-user.target",
            "dev-vda.device",
        ] {
            assert!(is_unit_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".service",
            "ssh",
            "-x.service",
            "a b.service",
            "a;reboot.service",
            "a\nb.service",
            "x.exe",
        ] {
            assert!(!is_unit_name(bad), "{bad:?}");
        }
        assert!(!is_unit_name(&format!("{}.service", "a".repeat(130))));
    }
}
