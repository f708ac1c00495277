//! Boots a built image in QEMU the way a device boots it: OVMF with
//! Secure Boot on and the image's own keys enrolled, the golden disk on
//! virtio, an i6300esb watchdog (EFI Boot Guard arms it), a serial
//! console, optionally a USB stick.
//!
//! The disk is always a copy (sparse, so a 2.5 GiB image costs what it
//! holds): a boot writes to the data partition and the loader's
//! environment, and the published golden image must stay what was signed.
//! Every boot starts from a fresh copy of the variable store the build
//! wrote (`out/<name>/secureboot/`, the keys enrolled by `virt-fw-vars`).
//!
//! For tests and benchmarks, [`run_until`] runs without a terminal: the
//! console goes to a file, which is watched for patterns until one
//! appears, QEMU exits (the guest reset under `-no-reboot`), or the
//! timeout passes. Every byte of the console is returned.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::tool::Tool;

/// OVMF built with Secure Boot and SMM (Debian's `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// The empty variable store it starts from.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// One virtual machine.
#[derive(Debug, Clone)]
pub struct Vm {
    /// The disk image (a copy: it is written to).
    pub disk: PathBuf,
    /// The OVMF variable store (written to).
    pub vars: PathBuf,
    /// USB stick images to attach (each its own usb-storage device).
    pub usb: Vec<PathBuf>,
    /// Extra read-only virtio disks: (image, serial). The guest sees each
    /// as `/dev/disk/by-id/virtio-<serial>`.
    pub disks: Vec<(PathBuf, String)>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Let the guest reboot; otherwise QEMU exits when the guest resets
    /// (a watchdog reset, a panic with `panic=5`, an init that refuses).
    pub reboot: bool,
}

/// How a non-interactive run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// This pattern appeared on the console.
    Matched(String),
    /// QEMU exited by itself (the guest powered off or reset).
    Exited,
    /// The timeout passed.
    TimedOut,
}

/// The console and how the run ended.
#[derive(Debug, Clone)]
pub struct Run {
    /// How it ended.
    pub ending: Ending,
    /// Everything the guest wrote to its serial console.
    pub console: String,
    /// Seconds from start to the end.
    pub seconds: f64,
}

/// Copies `image` to `dest`, keeping holes.
pub fn copy_disk(image: &Path, dest: &Path) -> anyhow::Result<()> {
    let src = std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let len = src.metadata()?.len();
    let dst =
        std::fs::File::create_new(dest).with_context(|| format!("creating {}", dest.display()))?;
    dst.set_len(len)?;
    slotsmith_disk::sparse::copy_into(&src, len, &dst, 0)
        .with_context(|| format!("copying {} to {}", image.display(), dest.display()))?;
    dst.sync_all()?;
    Ok(())
}

/// Copies the build's OVMF variable store (the image's PK, KEK and db
/// enrolled, Secure Boot on; `secureboot/OVMF_VARS_4M.secboot.fd`) to
/// `dest`, which the firmware then writes to.
pub fn make_vars(secureboot_dir: &Path, dest: &Path) -> anyhow::Result<()> {
    let built = secureboot_dir.join(crate::secureboot::OVMF_VARS);
    if !built.is_file() {
        bail!(
            "{} is missing: the image was built without a boot chain, or by an older slotsmith",
            built.display()
        );
    }
    std::fs::copy(&built, dest)
        .with_context(|| format!("copying {} to {}", built.display(), dest.display()))?;
    Ok(())
}

/// The partition `name`'s (offset, size) in the disk image `disk`.
pub fn partition(disk: &Path, name: &str) -> anyhow::Result<(u64, u64)> {
    let mut f = std::fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let layout = slotsmith_disk::gpt::read_gpt(&mut f, crate::layout::SECTOR)
        .with_context(|| format!("reading the GPT of {}", disk.display()))?;
    let p = layout
        .partitions
        .iter()
        .find(|p| p.name == name)
        .with_context(|| format!("{} has no partition named {name}", disk.display()))?;
    let offset = p
        .first_lba
        .checked_mul(crate::layout::SECTOR)
        .context("partition offset overflows")?;
    let size = p
        .last_lba
        .checked_add(1)
        .and_then(|n| n.checked_sub(p.first_lba))
        .and_then(|n| n.checked_mul(crate::layout::SECTOR))
        .context("partition size overflows")?;
    Ok((offset, size))
}

/// Reads a file from the FAT partition `part` of `disk`.
pub fn read_boot_file(disk: &Path, part: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let (offset, size) = partition(disk, part)?;
    let mut f = std::fs::File::options().read(true).write(true).open(disk)?;
    let w = slotsmith_disk::window::Window::new(&mut f, offset, size);
    slotsmith_disk::fat::read_fat_file_max(w, path, 64 << 20)
        .with_context(|| format!("reading {path} from {part} of {}", disk.display()))
}

/// Replaces a file on the FAT partition `part` of `disk`.
pub fn write_boot_file(disk: &Path, part: &str, path: &str, data: &[u8]) -> anyhow::Result<()> {
    let (offset, size) = partition(disk, part)?;
    let mut f = std::fs::File::options().read(true).write(true).open(disk)?;
    let w = slotsmith_disk::window::Window::new(&mut f, offset, size);
    slotsmith_disk::fat::rewrite_fat_file(w, path, data)
        .with_context(|| format!("writing {path} on {part} of {}", disk.display()))?;
    f.sync_all()?;
    Ok(())
}

/// Makes `slot` the one EFI Boot Guard boots next: its environment gets
/// a revision above every other one, as an update that committed would.
pub fn select_slot(disk: &Path, slot: &str) -> anyhow::Result<()> {
    let mut highest = 0;
    for s in crate::layout::SLOTS {
        let part = crate::plan::chain::boot_partition(s);
        let env = slotsmith_disk::bgenv::decode(&read_boot_file(disk, &part, "BGENV.DAT")?)?;
        highest = highest.max(env.revision);
    }
    let part = crate::plan::chain::boot_partition(slot);
    let mut env = slotsmith_disk::bgenv::decode(&read_boot_file(disk, &part, "BGENV.DAT")?)
        .with_context(|| format!("reading the environment of slot {slot}"))?;
    if read_boot_file(disk, &part, crate::plan::chain::UKI_NAME).is_err() {
        bail!(
            "slot {slot} of {} holds no system (no UKI on {part})",
            disk.display()
        );
    }
    env.revision = highest + 1;
    env.ustate = slotsmith_disk::bgenv::UState::Ok;
    write_boot_file(
        disk,
        &part,
        "BGENV.DAT",
        &slotsmith_disk::bgenv::encode(&env)?,
    )
}

impl Vm {
    /// The QEMU command line; `serial` is QEMU's `-serial` argument.
    fn tool(&self, serial: &str) -> anyhow::Result<Tool> {
        // QEMU splits -drive options at commas: a path with one could add
        // options of its own.
        let mut paths = vec![&self.disk, &self.vars];
        paths.extend(self.usb.iter());
        paths.extend(self.disks.iter().map(|(p, _)| p));
        if let Some(p) = paths.iter().find(|p| p.to_string_lossy().contains(',')) {
            bail!(
                "{} contains a comma, which QEMU would read as an option separator",
                p.display()
            );
        }
        if let Some((_, s)) = self
            .disks
            .iter()
            .find(|(_, s)| !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            bail!("disk serial {s:?} must be letters, digits and '-'");
        }
        let mut t = Tool::new("qemu-system-x86_64")?
            .args(["-machine", "q35,smm=on", "-accel", "tcg", "-cpu", "max"])
            .args(["-smp", "2", "-m", &self.memory_mib.to_string()])
            .args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                self.vars.display()
            ))
            .arg("-drive")
            .arg(format!(
                "if=none,id=disk0,format=raw,file={}",
                self.disk.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=disk0"])
            .args(["-device", "i6300esb", "-action", "watchdog=reset"])
            .args(["-display", "none", "-nic", "none", "-serial", serial]);
        for (i, (image, serial)) in self.disks.iter().enumerate() {
            t = t
                .arg("-drive")
                .arg(format!(
                    "if=none,id=extra{i},format=raw,readonly=on,file={}",
                    image.display()
                ))
                .arg("-device")
                .arg(format!("virtio-blk-pci,drive=extra{i},serial={serial}"));
        }
        if !self.usb.is_empty() {
            t = t.args(["-device", "qemu-xhci"]);
        }
        for (i, usb) in self.usb.iter().enumerate() {
            t = t
                .arg("-drive")
                .arg(format!(
                    "if=none,id=usb{i},format=raw,file={}",
                    usb.display()
                ))
                .arg("-device")
                .arg(format!("usb-storage,drive=usb{i},removable=on"));
        }
        if !self.reboot {
            t = t.arg("-no-reboot");
        }
        for p in [OVMF_CODE, OVMF_VARS] {
            if !Path::new(p).is_file() {
                bail!("{p} is missing: install Debian's ovmf package");
            }
        }
        Ok(t)
    }

    /// Runs attached to this terminal, the console on standard I/O.
    pub fn run_attached(&self) -> anyhow::Result<()> {
        self.tool("mon:stdio")?.run_attached()
    }

    /// Runs until `end` appears on the console (or QEMU exits, or the
    /// timeout passes), noting the seconds from start at which each of
    /// `marks` first appeared (to a 250 ms resolution): the boot benchmark.
    pub fn run_marked(
        &self,
        console: &Path,
        marks: &[&str],
        end: &str,
        timeout: Duration,
    ) -> anyhow::Result<(Run, Vec<Option<f64>>)> {
        self.watch(console, marks, &[end], timeout)
    }

    /// Runs until a pattern of `expect` appears on the console, QEMU
    /// exits, or `timeout` passes; QEMU is stopped in every case.
    pub fn run_until(
        &self,
        console: &Path,
        expect: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Run> {
        Ok(self.watch(console, &[], expect, timeout)?.0)
    }

    /// Runs until `done` (called with the whole console so far, every
    /// 250 ms) says the run has seen what it waits for, QEMU exits, or
    /// `timeout` passes; QEMU is stopped in every case (a test's power
    /// cut). The ending is `Matched("done")` when `done` said so.
    pub fn run_while(
        &self,
        console: &Path,
        mut done: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Run> {
        let mut end = |text: &str| done(text).then(|| "done".to_string());
        Ok(self.watch_with(console, &[], &mut end, timeout)?.0)
    }

    /// Starts QEMU with the console in `console` and polls it every 250 ms
    /// for `marks` (noted when first seen) and `ends` (the first one seen
    /// ends the run).
    fn watch(
        &self,
        console: &Path,
        marks: &[&str],
        ends: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<(Run, Vec<Option<f64>>)> {
        let mut end = |text: &str| {
            ends.iter()
                .find(|p| text.contains(**p))
                .map(|p| p.to_string())
        };
        self.watch_with(console, marks, &mut end, timeout)
    }

    /// [`Vm::watch`] with the end decided by `end`.
    fn watch_with(
        &self,
        console: &Path,
        marks: &[&str],
        end: &mut dyn FnMut(&str) -> Option<String>,
        timeout: Duration,
    ) -> anyhow::Result<(Run, Vec<Option<f64>>)> {
        let start = Instant::now();
        let handle = self.tool(&format!("file:{}", console.display()))?.spawn()?;
        let mut seen = vec![None; marks.len()];
        let read = || std::fs::read(console).map(|b| String::from_utf8_lossy(&b).into_owned());
        let ending = loop {
            std::thread::sleep(Duration::from_millis(250));
            let text = read().unwrap_or_default();
            for (i, m) in marks.iter().enumerate() {
                if seen[i].is_none() && text.contains(m) {
                    seen[i] = Some(start.elapsed().as_secs_f64());
                }
            }
            if let Some(p) = end(&text) {
                break Ending::Matched(p);
            }
            if handle.try_wait().context("waiting for qemu")?.is_some() {
                break Ending::Exited;
            }
            if start.elapsed() > timeout {
                break Ending::TimedOut;
            }
        };
        let seconds = start.elapsed().as_secs_f64();
        let _ = handle.kill();
        if let Ok(out) = handle.wait() {
            // A QEMU that exits by itself with an error (a bad argument, a
            // missing file) is not a guest that rebooted.
            if ending == Ending::Exited && !out.status.success() && !out.stderr.is_empty() {
                bail!("qemu failed: {}", crate::tool::tail(&out.stderr));
            }
        }
        Ok((
            Run {
                ending,
                console: read().context("reading the console log")?,
                seconds,
            },
            seen,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_has_secure_boot_firmware_a_watchdog_and_no_network() {
        let vm = Vm {
            disk: "/d.img".into(),
            vars: "/v.fd".into(),
            usb: vec!["/u.img".into()],
            disks: vec![("/s.swu".into(), "swu-image".into())],
            memory_mib: 1024,
            reboot: false,
        };
        let argv = vm.tool("file:/c.log").unwrap().argv();
        for want in [
            "OVMF_CODE_4M.secboot.fd",
            "smm=on",
            "property=secure,value=on",
            "i6300esb",
            "-nic none",
            "usb-storage",
            "-no-reboot",
            "file=/d.img",
            "readonly=on,file=/s.swu",
            "serial=swu-image",
        ] {
            assert!(argv.contains(want), "{want} missing from {argv}");
        }
    }
}
