//! `slotsmith-update`: the device side of field updates.
//!
//! ```text
//! slotsmith-update install [--reboot] FILE   install a .swu into the other slot
//! slotsmith-update usb DEVNAME               (udev) install the .swu on a stick
//! slotsmith-update log [--json]              the audit trail
//! slotsmith-update status                    slots, versions, anti-rollback floor
//! slotsmith-update sbom [--slot a|b]         the SBOM of the running (or that) slot
//! slotsmith-update health                    (boot) check, commit or fall back
//! slotsmith-update trial-timeout             (boot) reboot a trial that never commits
//! slotsmith-update preupdate                 (SWUpdate -P) anti-rollback check
//! ```
//!
//! It is built statically by the image build (like the init) and ships in
//! the verified rootfs at `/usr/sbin/slotsmith-update`, with its settings
//! in `/etc/slotsmith/update.json`. See ARCHITECTURE.md, "Field updates".

mod audit;
mod boot;
mod config;
mod env;
mod inspect;
mod install;
mod state;
mod tool;

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "slotsmith-update",
    about = "Field updates on a slotsmith device"
)]
struct Cli {
    /// The updater's settings.
    #[arg(long, default_value = config::CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Installs a .swu into the slot that is not running (SWUpdate with
    /// this device's configuration) and records the attempt.
    Install {
        /// Reboot into the new slot after a successful install.
        #[arg(long)]
        reboot: bool,
        /// Where the file came from, for the audit trail.
        #[arg(long, default_value = "local", value_parser = ["local", "usb"])]
        source: String,
        /// The .swu file.
        file: PathBuf,
    },
    /// A USB stick arrived (run by udev): installs the one .swu on it.
    Usb {
        /// The kernel name of its block device (sda1).
        devname: String,
    },
    /// Prints the audit trail.
    Log {
        /// The records as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Prints the slots, versions and the anti-rollback minimum.
    Status,
    /// Prints the SBOM (SPDX JSON) of the running slot, or of `--slot`,
    /// from that slot's boot partition, where the update installed it.
    Sbom {
        /// The slot (default: the running one).
        #[arg(long)]
        slot: Option<String>,
    },
    /// Boot-time health check: commit a tried slot, or reboot to fall back.
    Health,
    /// Reboots a tried slot that is not confirmed in time.
    TrialTimeout,
    /// SWUpdate's pre-update command: the anti-rollback check.
    Preupdate,
}

/// Prints one line for the console and the journal.
pub fn say(line: &str) {
    println!("slotsmith-update: {line}");
}

/// Reads at most `max` bytes of `path`, failing beyond.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        out.len() as u64 <= max,
        "{} is larger than {max} bytes",
        path.display()
    );
    Ok(out)
}

fn run(cli: Cli) -> Result<bool> {
    let config = config::Config::load(&cli.config)?;
    match cli.command {
        Command::Log { json } => {
            let (records, bad) = audit::read(&config.state_dir())?;
            for r in &records {
                if json {
                    let line = serde_json::to_string(r).context("encoding a record")?;
                    println!("{}", audit::json_for_terminal(&line));
                } else {
                    println!("{}", audit::human(r));
                }
            }
            if bad > 0 {
                eprintln!("slotsmith-update: {bad} line(s) of the trail are not records (torn by a power cut, or edited)");
            }
            Ok(true)
        }
        Command::Preupdate => install::preupdate(&config).map(|()| true),
        command => {
            let running = config::running()?;
            match command {
                Command::Install {
                    reboot,
                    source,
                    file,
                } => install::install(
                    &config,
                    &running,
                    &install::Install {
                        file: &file,
                        source: &source,
                        reboot,
                    },
                ),
                Command::Usb { devname } => install::usb(&config, &running, &devname),
                Command::Status => {
                    println!(
                        "running: slot {}, {} {}, security version {}",
                        running.slot,
                        slotsmith_yaml::escape::shown(&config.image),
                        slotsmith_yaml::escape::shown(&config.version),
                        running.security_version
                    );
                    println!(
                        "minimum security version: {}",
                        state::min_svn(&config.state_dir())?
                    );
                    for e in env::read_all(&config)? {
                        println!("{}", env::describe(&e));
                    }
                    Ok(true)
                }
                Command::Sbom { slot } => {
                    use std::io::Write as _;
                    let bytes = env::read_sbom(&config, slot.as_deref().unwrap_or(&running.slot))?;
                    // Image content on a terminal: no raw DEL, C1 or bidi
                    // controls, same JSON.
                    let bytes = env::printable_sbom(&bytes);
                    let mut out = std::io::stdout().lock();
                    out.write_all(&bytes)
                        .and_then(|()| out.flush())
                        .context("writing the sbom to standard output")?;
                    Ok(true)
                }
                Command::Health => boot::health(&config, &running),
                Command::TrialTimeout => boot::trial_timeout(&config, &running).map(|()| true),
                Command::Log { .. } | Command::Preupdate => unreachable!("handled above"),
            }
        }
    }
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            say(&format!(
                "error: {}",
                slotsmith_yaml::escape::shown(&format!("{e:#}"))
            ));
            std::process::exit(1);
        }
    }
}
