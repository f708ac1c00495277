//! `cargo xtask bench boot`: the default image booted in QEMU (TCG) with
//! Secure Boot on, and where the time goes: firmware, loader, kernel, our
//! init, systemd; and our initramfs beside Debian's stock one.
//!
//! The split comes from the console: the wall time at which EFI Boot
//! Guard's banner and its "Starting" line first appear (polled every
//! 250 ms), the init's own line (its run time, and the kernel's uptime at
//! its end), and the kernel timestamp of the boot-complete line. Boots
//! under TCG depend on the host's load, so each figure is the median of
//! the runs.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

/// One boot's milestones, in seconds.
#[derive(Debug, Clone, Copy)]
struct Split {
    firmware: f64,
    loader: f64,
    kernel: f64,
    init: f64,
    systemd: f64,
    total: f64,
}

fn parse_init_line(console: &str) -> Option<(f64, f64)> {
    let line = console
        .lines()
        .find(|l| l.contains("slotsmith-init: slot") && l.contains("root ready in"))?;
    let num_after = |key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        n.parse().ok()
    };
    Some((
        num_after("ready in ")? / 1000.0,
        num_after("(uptime ")? / 1000.0,
    ))
}

fn parse_complete(console: &str) -> Option<f64> {
    let line = console
        .lines()
        .find(|l| l.contains("reached multi-user.target"))?;
    let open = line.find('[')?;
    let close = line[open..].find(']')? + open;
    line[open + 1..close].trim().parse().ok()
}

/// Slot A's UKI with the bench init (cargo feature
/// `bench-unverified-root`: the same init, mounting the root partition
/// without dm-verity), signed with the development db key: the same image
/// booted without verity, for the verity cost. Its initramfs is the
/// build's with a second archive appended whose `/init` replaces ours (the
/// kernel unpacks concatenated archives in order). It exists only in the
/// benchmark's scratch directory.
fn unverified_uki(
    out: &Path,
    project: &Path,
    scratch: &Path,
) -> anyhow::Result<std::path::PathBuf> {
    use slotsmith_rootfs::initramfs::{write_newc, Entry, EntryKind};
    let mut progress = slotsmith::progress::Progress::with_mode(slotsmith::progress::Mode::Quiet);
    let init = slotsmith::initbin::build(&["bench-unverified-root"], "init-bench", &mut progress)?;
    let mut initrd = std::fs::read(out.join("initrd.img"))?;
    let extra = write_newc(
        Vec::new(),
        &[Entry {
            path: "init".into(),
            mode: 0o755,
            kind: EntryKind::File(std::fs::read(&init)?),
        }],
        0,
    )?;
    initrd.extend(extra);
    let initrd_path = scratch.join("initrd-unverified.img");
    std::fs::write(&initrd_path, &initrd)?;
    let manifest = std::fs::read_to_string(out.join("boot-a.manifest"))?;
    let cmdline = manifest
        .lines()
        .find_map(|l| l.strip_prefix("cmdline "))
        .context("boot-a.manifest has no cmdline")?;
    let cmdline_path = scratch.join("cmdline");
    std::fs::write(&cmdline_path, cmdline)?;
    let osrel = scratch.join("os-release");
    std::fs::write(
        &osrel,
        "ID=slotsmith\nNAME=\"demo (unverified bench build)\"\n",
    )?;
    let unsigned = scratch.join("unverified.unsigned.efi");
    let _ = std::fs::remove_file(&unsigned);
    let section = |name: &str, file: &Path, vma: u64| {
        [
            "--add-section".to_string(),
            format!("{name}={}", file.display()),
            "--change-section-vma".to_string(),
            format!("{name}={vma:#x}"),
        ]
    };
    slotsmith::tool::Tool::new("objcopy")?
        .args(section(".osrel", &osrel, 0x20000))
        .args(section(".cmdline", &cmdline_path, 0x30000))
        .args(section(".linux", &out.join("vmlinuz"), 0x2000000))
        .args(section(".initrd", &initrd_path, 0x3000000))
        .arg(out.join("linuxx64.efi.stub"))
        .arg(&unsigned)
        .run()?;
    let keys = slotsmith::secureboot::resolve_keys(
        &slotsmith::spec::SecureBootKeySpec::development(),
        false,
        "images/demo.yaml",
        project,
        &mut progress,
    )?;
    let signed = scratch.join("unverified.efi");
    let _ = std::fs::remove_file(&signed);
    slotsmith::secureboot::sign_efi(&unsigned, &signed, &keys, 0)?;
    Ok(signed)
}

fn one_boot(out: &Path, image: &str, scratch: &Path, uki: Option<&Path>) -> anyhow::Result<Split> {
    let disk = scratch.join("disk.img");
    let _ = std::fs::remove_file(&disk);
    slotsmith::qemu::copy_disk(&out.join(image), &disk)?;
    if let Some(uki) = uki {
        slotsmith::qemu::write_boot_file(&disk, "boot-a", "linux.efi", &std::fs::read(uki)?)?;
    }
    let vars = scratch.join("vars.fd");
    let _ = std::fs::remove_file(&vars);
    slotsmith::qemu::make_vars(&out.join("secureboot"), &vars)?;
    let vm = slotsmith::qemu::Vm {
        disk,
        vars,
        usb: Vec::new(),
        disks: Vec::new(),
        memory_mib: 2048,
        reboot: false,
    };
    let console = scratch.join("console.log");
    let _ = std::fs::remove_file(&console);
    let (run, marks) = vm.run_marked(
        &console,
        &["EFI Boot Guard", "Starting L:"],
        "reached multi-user.target",
        Duration::from_secs(600),
    )?;
    if run.ending != slotsmith::qemu::Ending::Matched("reached multi-user.target".into()) {
        bail!(
            "the boot did not reach multi-user ({:?}):\n{}",
            run.ending,
            run.console
        );
    }
    let (ebg, start) = (
        marks[0].context("no EFI Boot Guard banner")?,
        marks[1].context("no Starting line")?,
    );
    let (init_s, uptime) = parse_init_line(&run.console).context("no init line")?;
    let complete = parse_complete(&run.console).context("no boot-complete line")?;
    Ok(Split {
        firmware: ebg,
        loader: start - ebg,
        kernel: uptime - init_s,
        init: init_s,
        systemd: complete - uptime,
        total: run.seconds,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the bench on `out/<name>/` of the default image.
pub fn run(project: Option<&Path>, runs: usize) -> anyhow::Result<()> {
    let root = match project {
        Some(p) => p.to_path_buf(),
        None => std::env::current_dir()?,
    };
    let out = root.join("out/demo");
    if !out.join("demo.img").is_file() {
        bail!(
            "{} has no demo.img: run cargo xtask build first",
            out.display()
        );
    }
    let scratch = tempfile::Builder::new()
        .prefix("slotsmith-bench-boot-")
        .tempdir()?;
    let unverified = unverified_uki(&out, &root, scratch.path())?;
    let mut splits = Vec::new();
    let mut plain = Vec::new();
    // Alternate the two, so a change in the host's load hits both alike.
    for i in 0..runs {
        let s = one_boot(&out, "demo.img", scratch.path(), None)?;
        eprintln!("boot {} (verity): {:.1}s to multi-user", i + 1, s.total);
        splits.push(s);
        let u = one_boot(&out, "demo.img", scratch.path(), Some(&unverified))?;
        eprintln!("boot {} (no verity): {:.1}s to multi-user", i + 1, u.total);
        plain.push(u);
    }
    let m = |f: fn(&Split) -> f64| median(splits.iter().map(f).collect());
    println!("boot of out/demo/demo.img under QEMU TCG (2 vCPUs), OVMF Secure Boot on, median of {runs}:");
    println!(
        "  firmware (power-on to EFI Boot Guard)   {:6.1} s",
        m(|s| s.firmware)
    );
    println!(
        "  loader (EFI Boot Guard to the UKI)      {:6.1} s",
        m(|s| s.loader)
    );
    println!(
        "  kernel (UKI start to /init)             {:6.1} s",
        m(|s| s.kernel)
    );
    println!(
        "  init (/init to switch_root, verity on)  {:6.2} s",
        m(|s| s.init)
    );
    println!(
        "  systemd (to multi-user.target)          {:6.1} s",
        m(|s| s.systemd)
    );
    println!(
        "  total to multi-user (wall clock)        {:6.1} s",
        m(|s| s.total)
    );
    let pm = |f: fn(&Split) -> f64| median(plain.iter().map(f).collect());
    println!(
        "  the same image without verity (bench-only init): init {:.2} s, total {:.1} s",
        pm(|s| s.init),
        pm(|s| s.total)
    );
    println!(
        "  verity / no verity, time to multi-user: {:.3} (goal at most 1.05)",
        m(|s| s.total) / pm(|s| s.total)
    );
    let ours = std::fs::metadata(out.join("initrd.img"))?.len();
    let listing = slotsmith::tool::Tool::new("unsquashfs")?
        .args(["-lls", "-d", ""])
        .arg(out.join("rootfs.squashfs"))
        .arg("boot")
        .run()?;
    let text = String::from_utf8_lossy(&listing.stdout).into_owned();
    let stock = text
        .lines()
        .find(|l| l.contains("/boot/initrd.img-"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse::<u64>().ok());
    match stock {
        Some(stock) => println!(
            "  initramfs: ours {:.1} MB, Debian's stock initramfs-tools {:.1} MB ({:.2}x the size)",
            ours as f64 / 1e6,
            stock as f64 / 1e6,
            ours as f64 / stock as f64
        ),
        None => println!(
            "  initramfs: ours {:.1} MB (no stock initrd in the rootfs)",
            ours as f64 / 1e6
        ),
    }
    Ok(())
}
