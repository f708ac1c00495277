//! `cargo xtask qemu`: boots a built image under OVMF with Secure Boot on
//! (see `slotsmith::qemu`), interactively or until a pattern appears.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::{input_error, load_and_plan, Failure, ImageArg};

#[derive(clap::Args)]
pub(crate) struct QemuArgs {
    #[command(flatten)]
    image: ImageArg,
    /// Output root the image was built into [default: <project>/out]
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Boot this slot: its loader environment gets the highest revision
    #[arg(long, value_parser = ["a", "b"])]
    slot: Option<String>,
    /// Boot this disk image in place instead of a fresh copy of the golden image
    #[arg(long)]
    disk: Option<PathBuf>,
    /// Attach a USB stick: a stick image, or a .swu (put on a stick image first); repeatable
    #[arg(long)]
    usb: Vec<PathBuf>,
    /// Run without a terminal until this text appears on the console (repeatable)
    #[arg(long)]
    expect: Vec<String>,
    /// Seconds to wait for --expect
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Write the console here (with --expect) [default: a temporary file]
    #[arg(long)]
    console: Option<PathBuf>,
    /// Guest memory in MiB
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Let the guest reboot (otherwise QEMU exits when the guest resets)
    #[arg(long)]
    reboot: bool,
}

/// `cargo xtask qemu`: boots a built image (see [`slotsmith::qemu`]).
pub(crate) fn run(a: QemuArgs, project: Option<&Path>) -> Result<(), Failure> {
    let (_, plan, image_root) = load_and_plan(&a.image, project)?;
    let chain = plan.chain.as_ref().ok_or_else(|| {
        input_error(
            "boot",
            &format!(
                "{} has no boot chain (boot: loader:), so it cannot boot",
                plan.image.file
            ),
        )
    })?;
    let out = a
        .out_dir
        .clone()
        .unwrap_or_else(|| image_root.join("out"))
        .join(&plan.outputs.dir);
    let scratch = tempfile::Builder::new()
        .prefix("slotsmith-qemu-")
        .tempdir()
        .context("creating a scratch directory")?;
    let disk = match &a.disk {
        Some(d) => d.clone(),
        None => {
            let image = out.join(&plan.outputs.image);
            let copy = scratch.path().join(&plan.outputs.image);
            eprintln!("==> copying {} (sparse)", image.display());
            slotsmith::qemu::copy_disk(&image, &copy)?;
            copy
        }
    };
    if let Some(slot) = &a.slot {
        slotsmith::qemu::select_slot(&disk, slot)?;
    }
    let vars = scratch.path().join("OVMF_VARS.fd");
    slotsmith::qemu::make_vars(&out.join(&chain.secureboot_dir), &vars)?;
    let mut usb = Vec::new();
    for (i, u) in a.usb.iter().enumerate() {
        if u.extension().is_some_and(|e| e.eq_ignore_ascii_case("swu")) {
            let stick = scratch.path().join(format!("stick-{i}.img"));
            slotsmith::stick::make(u, &stick, plan.source_date_epoch as i64)?;
            eprintln!("==> {} on a stick image", u.display());
            usb.push(stick);
        } else {
            usb.push(u.clone());
        }
    }
    let vm = slotsmith::qemu::Vm {
        disk,
        vars,
        usb,
        disks: Vec::new(),
        memory_mib: a.memory,
        reboot: a.reboot,
    };
    if a.expect.is_empty() {
        vm.run_attached()?;
        return Ok(());
    }
    let console = a
        .console
        .clone()
        .unwrap_or_else(|| scratch.path().join("console.log"));
    let expect: Vec<&str> = a.expect.iter().map(String::as_str).collect();
    let run = vm.run_until(&console, &expect, std::time::Duration::from_secs(a.timeout))?;
    // The serial console ends lines with CRLF; control characters in it
    // (the guest's to choose) are shown escaped, line breaks kept.
    let text = run.console.replace("\r\n", "\n");
    print!(
        "{}",
        slotsmith_yaml::escape::shown(&text).replace("\\n", "\n")
    );
    eprintln!("==> {:?} after {:.1}s", run.ending, run.seconds);
    match run.ending {
        slotsmith::qemu::Ending::Matched(_) => Ok(()),
        other => Err(anyhow::anyhow!(
            "the console never showed {:?} ({other:?} after {:.1}s)",
            a.expect,
            run.seconds
        )
        .into()),
    }
}

#[derive(clap::Args)]
pub(crate) struct StickArgs {
    /// The .swu to put on the stick
    swu: PathBuf,
    /// The stick image to write [default: the .swu's name with .stick.img]
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// `cargo xtask stick`: a USB stick image holding one `.swu`.
pub(crate) fn stick(a: StickArgs) -> Result<(), Failure> {
    let out = a
        .output
        .clone()
        .unwrap_or_else(|| a.swu.with_extension("stick.img"));
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(slotsmith::stick::DEFAULT_EPOCH);
    let size = slotsmith::stick::make(&a.swu, &out, epoch)?;
    println!(
        "{} ({} MiB): write it to a stick, or boot with `cargo xtask qemu --usb {}`",
        out.display(),
        size >> 20,
        out.display()
    );
    Ok(())
}
