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
use slotsmith_disk::bgenv::{BgEnv, UState};
use slotsmith_yaml::escape::shown;

use crate::audit::{self, Record};
use crate::config::{Config, Running};
use crate::{env, inspect, say, state, tool};

/// Where SWUpdate extracts `sw-description` before the pre-update command.
const DEFAULT_TMPDIR: &str = "/tmp";
/// Where the pre-update command leaves its reason for the updater.
const PREUPDATE_REASON: &str = "/run/slotsmith/preupdate-refusal";
/// SWUpdate's TMPDIR (0700, root's only).
const PRIVATE_TMP: &str = "/run/slotsmith/swupdate-tmp";
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

/// Takes the updater's lock (installs, the health check's commit and the
/// trial timeout's reboot never interleave). Released when the file is
/// dropped, or when the process ends.
pub fn lock() -> Result<std::fs::File> {
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
/// it was installed. With `opts.reboot` the lock is held into the reboot.
pub fn install(config: &Config, running: &Running, opts: &Install<'_>) -> Result<bool> {
    let _lock = lock()?;
    install_locked(config, running, opts)
}

/// Whether an install may start, from the two environments: the running
/// slot must be committed (not on trial), and the other slot must not be
/// newer, unless that newer environment is an install a power cut
/// interrupted (`in_progress`, which SWUpdate's handler resumes). An
/// update already installed and waiting for its reboot is newer: a second
/// install would make SWUpdate overwrite the *running* slot's environment
/// (it replaces the oldest one), leaving no way back.
pub fn may_install(running: &str, own: &BgEnv, other: &BgEnv) -> Result<(), String> {
    if own.ustate == UState::Testing {
        return Err(format!(
            "slot {running} is on trial and not yet confirmed; install once it has committed"
        ));
    }
    if other.revision > own.revision && !other.in_progress {
        return Err(format!(
            "the other slot holds a newer environment ({}, revision {} above {}): an installed update waits for its reboot; reboot first",
            other.ustate.name(),
            other.revision,
            own.revision
        ));
    }
    Ok(())
}

fn install_locked(config: &Config, running: &Running, opts: &Install<'_>) -> Result<bool> {
    let state_dir = config.state_dir();
    let other = config.other_slot(&running.slot)?;
    let mut rec = Record::new("install", "refused");
    rec.source = Some(opts.source.into());
    rec.file = Some(opts.file.display().to_string());
    rec.slot_before = Some(running.slot.clone());
    rec.slot_after = Some(running.slot.clone());
    rec.running_version = Some(config.version.clone());

    let marker = state::pending(&state_dir);
    // The record, then the in-progress marker's removal, then the word to
    // the console: a power cut at any point leaves either the marker (the
    // next boot records the attempt as interrupted) or the record, and
    // never reports an outcome the trail does not hold. Every way out of
    // an attempt goes through here.
    // Only this attempt's marker: one a power cut left behind is the
    // health check's to record.
    let wrote_marker = std::cell::Cell::new(false);
    let finish = |rec: Record| -> Result<bool> {
        let installed = rec.result == "installed";
        audit::append(&state_dir, &rec)?;
        if wrote_marker.get() {
            state::remove(&marker)?;
        }
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

    // A slot on trial is not known to be good, and an update waiting for
    // its reboot must not be installed over (see `may_install`).
    let envs = env::read_all(config)?;
    let own = env::of(&envs, &running.slot)?;
    let other_env = env::of(&envs, &other)?;
    if let Err(why) = may_install(&running.slot, own, other_env) {
        return finish(rec.because(why));
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
    // A stick left in after its update rolled back would otherwise be
    // installed, tried and rolled back again on every boot.
    if opts.source == "usb" && state::rolled_back(&state_dir, &claims.sha256) {
        return finish(
            rec.because("this update was tried on this device and rolled back; remove the stick"),
        );
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
    state::write_atomically(
        &marker,
        &serde_json::to_vec(&rec).context("encoding the in-progress marker")?,
    )?;
    wrote_marker.set(true);
    state::remove(Path::new(PREUPDATE_REASON))?;
    // SWUpdate extracts sw-description (which the pre-update hook reads)
    // and file payloads into TMPDIR: a private one, not world-writable /tmp.
    let tmp = state::private_dir(Path::new(PRIVATE_TMP))?;
    let out = tool::capture_with_tmpdir(tool::SWUPDATE, &args, &tmp)?;
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
    if switched && (out.ok() || out.text.contains("SWUpdate was successful")) {
        // What the loader will try, so the boot after can tell a failed
        // try (and record the rollback once) from an old FAILED state.
        state::write_atomically(
            &state_dir.join(state::TRIAL),
            &serde_json::to_vec(&crate::boot::Trial {
                slot: other.clone(),
                version: rec.version.clone(),
                security_version: rec.security_version,
                sha256: rec.sha256.clone(),
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
    // Held until the reboot: a second stick's job must not install over
    // an update that waits for it.
    let _lock = lock()?;
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
            install_locked(
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

    fn env(revision: u32, ustate: UState, in_progress: bool) -> BgEnv {
        BgEnv {
            kernelfile: "L:BOOT0:linux.efi".into(),
            kernelparams: String::new(),
            revision,
            ustate,
            in_progress,
            watchdog_timeout_sec: 120,
            user_vars: Vec::new(),
        }
    }

    #[test]
    fn an_install_never_writes_over_a_slot_waiting_to_be_tried() {
        // The common case: running committed, the other older or failed.
        may_install("a", &env(2, UState::Ok, false), &env(1, UState::Ok, false)).unwrap();
        may_install(
            "b",
            &env(3, UState::Ok, false),
            &env(0, UState::Failed, false),
        )
        .unwrap();
        // A power cut interrupted an install: SWUpdate resumes it.
        may_install("b", &env(3, UState::Ok, false), &env(4, UState::Ok, true)).unwrap();
        // On trial: no.
        let e = may_install(
            "b",
            &env(3, UState::Testing, false),
            &env(2, UState::Ok, false),
        );
        assert!(e.unwrap_err().contains("on trial"));
        // An update installed and waiting for its reboot: no.
        let e = may_install(
            "a",
            &env(2, UState::Ok, false),
            &env(3, UState::Installed, false),
        );
        assert!(
            e.unwrap_err().contains("waits for its reboot"),
            "second install"
        );
    }

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
