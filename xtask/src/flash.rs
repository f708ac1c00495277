//! `cargo xtask flash IMAGE DEVICE`: writes a golden image to a device for
//! manufacturing (`slotsmith::flash` does the checks, the writing, the
//! read-back and the log line).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use super::{input_error, Failure};

#[derive(clap::Args)]
pub(crate) struct FlashArgs {
    /// The golden image (out/<name>/<name>.img); SHA256SUMS and <name>.img.bmap are read beside it
    image: PathBuf,
    /// The block device to write (/dev/sdX, /dev/disk/by-id/...), or a file with --allow-file
    device: PathBuf,
    /// Write a regular file (created when missing) instead of a block device
    #[arg(long)]
    allow_file: bool,
    /// The manufacturing log to append a JSON line to [default: $XDG_STATE_HOME/slotsmith/flash-log.jsonl, else ~/.local/state/slotsmith/flash-log.jsonl]
    #[arg(long)]
    log: Option<PathBuf>,
    /// The release's boot public key the image's signed manifests must verify with (required: a key beside the image proves nothing)
    #[arg(long, required = true)]
    boot_key: Option<PathBuf>,
    /// Write a block device without asking (needed without a terminal)
    #[arg(long, short)]
    yes: bool,
    /// No progress lines; errors only
    #[arg(long, short)]
    quiet: bool,
    /// Print the log line as JSON on stdout
    #[arg(long)]
    json: bool,
}

/// Flashes; exit 0 when the device was written and read back identical, 1
/// when refused or failed (the log has a line either way).
pub(crate) fn run(a: FlashArgs) -> Result<(), Failure> {
    if a.image.extension().is_none_or(|e| e != "img") {
        return Err(input_error(
            "IMAGE",
            "give the golden image, out/<name>/<name>.img",
        ));
    }
    let opts = slotsmith::flash::FlashOptions {
        image: a.image.clone(),
        device: a.device.clone(),
        allow_file: a.allow_file,
        log: a.log.clone(),
        boot_key: a.boot_key.clone(),
        memory: None,
        check_manifests: true,
        quiet: a.quiet,
    };
    let (yes, allow_file) = (a.yes, a.allow_file);
    let mut confirm = |t: &slotsmith::flash::Target| -> bool {
        // A file named with --allow-file was asked for explicitly.
        if yes || (allow_file && !t.block) {
            return true;
        }
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "error: {} is a block device: pass --yes to write it without a terminal",
                t.device
            );
            return false;
        }
        eprint!(
            "write {} to {}? [y/N] ",
            slotsmith_yaml::escape::shown(&a.image.to_string_lossy()),
            t.description
        );
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        matches!(line.trim(), "y" | "Y" | "yes")
    };
    let rec = slotsmith::flash::flash(&opts, &slotsmith::flash::System::default(), &mut confirm)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&rec).map_err(anyhow::Error::from)?
        );
    }
    Ok(())
}
