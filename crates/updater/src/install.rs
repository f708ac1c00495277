//! Installing an update: from a file (`install`), from a USB stick
//! (`usb`, started by udev), and the anti-rollback check SWUpdate runs
//! before it writes anything (`preupdate`).
//!
//! Every attempt ends in exactly one audit record. An install writes an
//! in-progress marker first; if the device loses power before the record
//! is written, the next boot's health check finds the marker and records
//! the attempt as interrupted. SWUpdate with `-B ebg` only switches the
//! loader environment after everything is written, so an interrupted
//! install leaves the device booting the slot it ran before.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use slotsmith_disk::bgenv::UState;
use slotsmith_yaml::escape::shown;

use crate::audit::{self, Record};
use crate::config::{Config, Running};
use crate::{env, inspect, say, state, tool};

/// Where SWUpdate extracts `sw-description` before the pre-update command.
const DEFAULT_TMPDIR: &str = "/tmp";
/// Where the pre-update command leaves its reason for the updater.
const PREUPDATE_REASON: &str = "/run/slotsmith/preupdate-refusal";
/// Serialises installs (several sticks, a stick and a service person).
const LOCK: &str = "/run/slotsmith/update.lock";
/// Where sticks are mounted.
const USB_MOUNTS: &str = "/run/slotsmith/usb";
/// Largest sw-description read by the pre-update check.
const MAX_SWDESC: u64 = 1 << 20;

/// The install options.
pub struct Install<'a> {
    /// The `.swu`.
    pub file: &'a Path,
    /// `usb` or `local`.
    pub source: &'a str,
    /// Reboot after a successful install.
    pub reboot: bool,
}

fn lock() -> Result<std::fs::File> {
    std::fs::create_dir_all("/run/slotsmith").context("creating /run/slotsmith")?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .with_context(|| format!("opening {LOCK}"))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("locking {LOCK}"))?;
    Ok(f)
}

/// The first SWUpdate error line, or the exit code.
fn swupdate_reason(out: &tool::Output) -> String {
    out.text
        .lines()
        .find(|l| l.contains("[ERROR]"))
        .map(|l| {
            let l = l.split_once("] : ").map_or(l, |(_, rest)| rest);
            format!("swupdate: {}", l.trim())
        })
        .unwrap_or_else(|| {
            format!(
                "swupdate exited with {}",
                out.code.map_or("a signal".into(), |c| format!("code {c}"))
            )
        })
}

/// Installs `opts.file` into the slot that is not running; returns whether
/// it was installed.
pub fn install(config: &Config, running: &Running, opts: &Install<'_>) -> Result<bool> {
    let _lock = lock()?;
    let state_dir = config.state_dir();
    let other = config.other_slot(&running.slot)?;
    let mut rec = Record::new("install", "refused");
    rec.source = Some(opts.source.into());
    rec.file = Some(opts.file.display().to_string());
    rec.slot_before = Some(running.slot.clone());
    rec.slot_after = Some(running.slot.clone());
    rec.running_version = Some(config.version.clone());

    let finish = |rec: Record| -> Result<bool> {
        let installed = rec.result == "installed";
        audit::append(&state_dir, &rec)?;
        say(&format!(
            "{} {} {}: {}",
            if installed {
                "installed"
            } else {
                "did not install"
            },
            shown(rec.file.as_deref().unwrap_or("")),
            rec.version.as_deref().map(shown).unwrap_or_default(),
            rec.reason.as_deref().map(shown).unwrap_or_default()
        ));
        Ok(installed)
    };

    // A slot on trial is not known to be good: an update on top of it
    // would leave no good slot to fall back to.
    let envs = env::read_all(config)?;
    let own = env::of(&envs, &running.slot)?;
    if own.ustate == UState::Testing {
        return finish(rec.because(format!(
            "slot {} is on trial and not yet confirmed; install once it has committed",
            running.slot
        )));
    }

    let claims = match inspect::inspect(opts.file) {
        Ok(c) => c,
        Err(e) => return finish(rec.because(format!("{e:#}"))),
    };
    rec.sha256 = Some(claims.sha256.clone());
    rec.version = claims.version.clone();
    rec.security_version = claims.security_version;
    rec.signer = claims.signer.clone();
    if let Some(why) = claims.refusal {
        return finish(rec.because(why));
    }

    let selection = config.selection_from(&running.slot)?;
    let file = opts
        .file
        .to_str()
        .context("the update file's path is not UTF-8")?;
    let args = [
        "-v",
        "-B",
        "ebg",
        "-k",
        &config.certificate,
        "-e",
        selection,
        "-N",
        &config.version,
        "-P",
        &config.preupdate,
        "-i",
        file,
    ];
    say(&format!(
        "installing {} into slot {other}: swupdate {}",
        shown(file),
        shown(&args.join(" "))
    ));
    let marker = state::pending(&state_dir);
    state::write_atomically(
        &marker,
        &serde_json::to_vec(&rec).context("encoding the in-progress marker")?,
    )?;
    state::remove(Path::new(PREUPDATE_REASON))?;
    let out = tool::capture(tool::SWUPDATE, &args)?;
    let log = Path::new("/run/slotsmith/swupdate.log");
    let _ = std::fs::write(log, &out.text);
    // Success is what the loader will see: the other slot's environment
    // INSTALLED with a revision above ours. SWUpdate's exit code alone is
    // not enough (2022.12 can exit non-zero after its progress IPC races
    // a finished install, and zero is not proof either).
    let after = env::read_all(config)?;
    let switched = env::of(&after, &other).is_ok_and(|e| {
        e.ustate == UState::Installed
            && env::of(&after, &running.slot).is_ok_and(|o| e.revision > o.revision)
    });
    state::remove(&marker)?;
    if switched && (out.ok() || out.text.contains("SWUpdate was successful")) {
        // What the loader will try, so the boot after can tell a failed
        // try (and record the rollback once) from an old FAILED state.
        state::write_atomically(
            &state_dir.join(state::TRIAL),
            &serde_json::to_vec(&crate::boot::Trial {
                slot: other.clone(),
                version: rec.version.clone(),
                security_version: rec.security_version,
            })
            .context("encoding the trial marker")?,
        )?;
        rec.result = "installed".into();
        rec.slot_after = Some(other.clone());
        rec.reason = Some(format!(
            "written to slot {other}; the loader tries it on the next boot"
        ));
        let installed = finish(rec)?;
        if opts.reboot {
            say("rebooting to try the new slot");
            tool::reboot()?;
        }
        return Ok(installed);
    }
    let reason = match state::read_small(Path::new(PREUPDATE_REASON)) {
        Ok(Some(b)) => String::from_utf8_lossy(&b).trim().to_string(),
        _ => swupdate_reason(&out),
    };
    rec.result = if out.ok() || switched {
        "failed"
    } else {
        "refused"
    }
    .into();
    finish(rec.because(reason))
}

/// SWUpdate's pre-update command: refuses (exit 1) a release whose
/// security version is below the device's minimum. SWUpdate has verified
/// `sw-description` (signature, hardware, version) before it runs this.
pub fn preupdate(config: &Config) -> Result<()> {
    let tmp = std::env::var_os("TMPDIR").unwrap_or_else(|| DEFAULT_TMPDIR.into());
    let path = PathBuf::from(tmp).join("sw-description");
    let text = crate::read_bounded(&path, MAX_SWDESC)?;
    let text =
        String::from_utf8(text).with_context(|| format!("{} is not UTF-8", path.display()))?;
    let desc = slotsmith_swu::SwDescription::parse(&text)
        .with_context(|| format!("reading {}", path.display()))?;
    let minimum = state::min_svn(&config.state_dir())?;
    // A release without a security version predates anti-rollback: it is
    // as old as it gets.
    let svn = desc.security_version.unwrap_or(0);
    if svn < minimum {
        // `description` is "<image> <version>" in what we build.
        let why = format!(
            "security version {svn} of {} is below this device's minimum {minimum} (anti-rollback)",
            shown(&desc.name)
        );
        let _ = std::fs::create_dir_all("/run/slotsmith");
        let _ = std::fs::write(PREUPDATE_REASON, &why);
        bail!("{why}");
    }
    say(&format!(
        "pre-update check: security version {svn} is not below the minimum {minimum}"
    ));
    Ok(())
}

/// The kernel name of a stick's block device, as udev gives it (`sda1`).
fn check_devname(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        bail!("{} is not a block device name", shown(name));
    }
    Ok(())
}

/// The `.swu` files at the top of a mounted stick (regular files only,
/// never through a symlink).
fn updates_on(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().to_lowercase();
        if name.ends_with(".swu") && e.file_type().is_ok_and(|t| t.is_file()) {
            found.push(e.path());
        }
    }
    found.sort();
    Ok(found)
}

/// A stick arrived: mount it read-only, install the one `.swu` on it,
/// unmount it, and reboot into the new slot if it installed.
pub fn usb(config: &Config, running: &Running, devname: &str) -> Result<bool> {
    check_devname(devname)?;
    let dev = format!("/dev/{devname}");
    let mnt = Path::new(USB_MOUNTS).join(devname);
    std::fs::create_dir_all(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
    let mnt_s = mnt.to_str().context("mount point")?;
    tool::run(
        tool::MOUNT,
        // FAT only: every other filesystem driver stays out of reach of
        // whatever is on a stick.
        &[
            "-t",
            "vfat",
            "-o",
            "ro,nodev,nosuid,noexec",
            "--",
            &dev,
            mnt_s,
        ],
    )?;
    say(&format!("stick {dev} mounted read-only"));
    let result = usb_mounted(config, running, &mnt);
    // Unmount whatever happened, so the stick can be pulled.
    let unmounted = tool::run(tool::UMOUNT, &["--", mnt_s]);
    match &unmounted {
        Ok(_) => say(&format!("stick {dev} unmounted; it can be removed")),
        Err(e) => say(&format!("could not unmount {dev}: {e:#}")),
    }
    let installed = result?;
    if installed {
        say("rebooting to try the new slot");
        tool::reboot()?;
    }
    Ok(installed)
}

fn usb_mounted(config: &Config, running: &Running, mnt: &Path) -> Result<bool> {
    let files = updates_on(mnt)?;
    match files.as_slice() {
        [] => {
            say("no .swu file on the stick; nothing to do");
            Ok(false)
        }
        [one] => {
            // A stick left in after its update must not install it again
            // on every boot: the same version is already running.
            if let Ok(claims) = quick_version(one) {
                if claims == config.version {
                    say(&format!(
                        "{} is version {}, which is running; remove the stick",
                        shown(&one.display().to_string()),
                        shown(&claims)
                    ));
                    return Ok(false);
                }
            }
            install(
                config,
                running,
                &Install {
                    file: one,
                    source: "usb",
                    reboot: false,
                },
            )
        }
        many => {
            let mut rec = Record::new("install", "refused").because(format!(
                "the stick holds {} .swu files; leave exactly one",
                many.len()
            ));
            rec.source = Some("usb".into());
            rec.slot_before = Some(running.slot.clone());
            rec.slot_after = Some(running.slot.clone());
            audit::append(&config.state_dir(), &rec)?;
            say(&audit::human(&rec));
            Ok(false)
        }
    }
}

/// The version a `.swu`'s sw-description states (unverified, read from
/// its head only; used to skip a stick whose update is already running).
fn quick_version(path: &Path) -> Result<String> {
    inspect::head(path)?
        .description
        .map(|d| d.version)
        .context("no readable sw-description")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stick_device_names_are_plain() {
        check_devname("sda1").unwrap();
        for bad in ["", "../sda", "sda 1", "sda;reboot", "SDA", &"a".repeat(40)] {
            assert!(check_devname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_regular_swu_files_on_the_top_level_count() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("b.SWU"), "x").unwrap();
        std::fs::write(d.path().join("notes.txt"), "x").unwrap();
        std::fs::create_dir(d.path().join("dir.swu")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link.swu")).unwrap();
        let got = updates_on(d.path()).unwrap();
        assert_eq!(got, vec![d.path().join("b.SWU")]);
    }

    #[test]
    fn swupdate_s_first_error_is_the_reason() {
        let out = tool::Output {
            code: Some(1),
            text: "[TRACE] : x\n[ERROR] : SWUpdate *failed* !\n[ERROR] : later\n".into(),
        };
        assert_eq!(swupdate_reason(&out), "swupdate: SWUpdate *failed* !");
        let out = tool::Output {
            code: Some(3),
            text: String::new(),
        };
        assert_eq!(swupdate_reason(&out), "swupdate exited with code 3");
    }
}
