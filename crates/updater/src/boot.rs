//! What happens on every boot once systemd reached multi-user (`health`)
//! and while a tried slot runs unconfirmed (`trial-timeout`).
//!
//! EFI Boot Guard gives an updated slot one try: INSTALLED becomes TESTING
//! when the loader starts it, and a TESTING slot that boots again without
//! having been confirmed becomes FAILED (revision 0) and the previous slot
//! boots. So the device only has to confirm a good slot; every way of
//! failing (a refused manifest, a verity error, a panic, a hang the
//! watchdog ends, a failed health check, a trial that runs out of time)
//! ends in a reset, and the reset is the rollback.
//!
//! `health` then:
//! 1. records an install the power cut interrupted (its marker is left);
//! 2. records a rollback once, when the other slot's environment is FAILED
//!    (with the init's refusal, if it left one);
//! 3. checks health: multi-user.target active, each unit the image
//!    declares healthy active, the hardware watchdog served by systemd,
//!    no failed unit;
//! 4. on a tried slot: healthy -> `bg_setenv -c`, the minimum security
//!    version raised to the slot's, a commit record; unhealthy -> a record
//!    and a reboot, so the loader falls back. On a committed slot a good
//!    check raises the minimum (the golden image's first boot commits it).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use slotsmith_disk::bgenv::UState;
use slotsmith_yaml::escape::shown;

use crate::audit::{self, Record};
use crate::config::{Config, Running};
use crate::{env, say, state, tool};

/// How long a declared unit may still be starting.
const SETTLE: Duration = Duration::from_secs(60);
/// How many rollbacks are remembered as recorded.
const MAX_REMEMBERED: usize = 64;

/// Every failed criterion, in words; empty when healthy.
pub fn check(config: &Config) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let target = tool::unit_state("multi-user.target")?;
    if target != "active" {
        problems.push(format!("multi-user.target is {}", shown(&target)));
    }
    for unit in &config.healthy_units {
        let begun = std::time::Instant::now();
        let state = loop {
            let s = tool::unit_state(unit)?;
            if !matches!(s.as_str(), "activating" | "reloading") || begun.elapsed() > SETTLE {
                break s;
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        if state != "active" {
            problems.push(format!("{} is {}", shown(unit), shown(&state)));
        }
    }
    let watchdog = tool::manager_property("RuntimeWatchdogUSec")?;
    let has_device = Path::new("/sys/class/watchdog/watchdog0").exists();
    if matches!(watchdog.as_str(), "" | "0" | "infinity") || !has_device {
        problems.push(format!(
            "the hardware watchdog is not served (RuntimeWatchdogUSec={}, {})",
            shown(&watchdog),
            if has_device {
                "watchdog0 present"
            } else {
                "no watchdog device"
            }
        ));
    }
    let failed = tool::failed_units()?;
    if !failed.is_empty() {
        problems.push(format!(
            "failed units: {}",
            failed
                .iter()
                .map(|u| shown(u))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(problems)
}

/// Records an install that never finished (power cut, reset).
fn record_interrupted(state_dir: &Path) -> Result<()> {
    let marker = state::pending(state_dir);
    let Some(bytes) = state::read_small(&marker)? else {
        return Ok(());
    };
    let mut rec: Record =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Record::new("install", ""));
    rec.time = audit::now_rfc3339();
    rec.event = "install".into();
    rec.result = "interrupted".into();
    rec.slot_after = rec.slot_before.clone();
    let rec = rec.because(
        "the install did not finish (power loss or reset); the loader kept the slot that was running",
    );
    audit::append(state_dir, &rec)?;
    state::remove(&marker)?;
    say(&audit::human(&rec));
    Ok(())
}

/// Records, once, that the other slot was tried and fell back.
fn record_rollback(config: &Config, running: &Running, envs: &[env::SlotEnv]) -> Result<()> {
    let state_dir = config.state_dir();
    let other = config.other_slot(&running.slot)?;
    let Some(e) = envs.iter().find(|e| e.slot == other) else {
        return Ok(());
    };
    let (Ok(env), Some(sha)) = (&e.env, &e.sha256) else {
        return Ok(());
    };
    if env.ustate != UState::Failed {
        return Ok(());
    }
    let seen_path = state_dir.join(state::ROLLBACKS);
    let seen = state::read_small(&seen_path)?.unwrap_or_default();
    let seen = String::from_utf8_lossy(&seen).into_owned();
    if seen.lines().any(|l| l == sha) {
        return Ok(());
    }
    let refusal_path = state_dir.join(state::BOOT_REFUSAL);
    let refusal =
        state::read_small(&refusal_path)?.map(|b| String::from_utf8_lossy(&b).trim().to_string());
    let mut rec = Record::new("rollback", "rolled-back").because(match &refusal {
        Some(r) => format!("slot {other} was refused at boot: {r}"),
        None => format!(
            "slot {other} was tried and not confirmed (failed health check, trial timeout, panic, hang or watchdog reset)"
        ),
    });
    rec.slot_before = Some(other.clone());
    rec.slot_after = Some(running.slot.clone());
    rec.running_version = Some(config.version.clone());
    audit::append(&state_dir, &rec)?;
    let mut lines: Vec<&str> = seen.lines().collect();
    lines.push(sha);
    let keep = lines.len().saturating_sub(MAX_REMEMBERED);
    state::write_atomically(
        &seen_path,
        format!("{}\n", lines[keep..].join("\n")).as_bytes(),
    )?;
    state::remove(&refusal_path)?;
    say(&format!(
        "slot {other} was tried and not confirmed; the device rolled back to slot {} ({} {})",
        running.slot,
        shown(&config.image),
        shown(&config.version)
    ));
    Ok(())
}

/// The boot-time check; returns whether the system is healthy.
pub fn health(config: &Config, running: &Running) -> Result<bool> {
    let state_dir = config.state_dir();
    state::ensure_dir(&state_dir)?;
    record_interrupted(&state_dir)?;
    let envs = env::read_all(config)?;
    record_rollback(config, running, &envs)?;
    let own = env::of(&envs, &running.slot)?;
    let on_trial = own.ustate == UState::Testing;
    let problems = check(config)?;
    let version = format!("{} {}", shown(&config.image), shown(&config.version));
    if !problems.is_empty() {
        let why = problems.join("; ");
        if on_trial {
            let mut rec = Record::new("health-check", "failed").because(why.clone());
            rec.version = Some(config.version.clone());
            rec.security_version = Some(running.security_version);
            rec.slot_before = Some(running.slot.clone());
            rec.running_version = Some(config.version.clone());
            audit::append(&state_dir, &rec)?;
            say(&format!(
                "slot {} ({version}) failed its health check: {}; rebooting so the loader falls back",
                running.slot,
                shown(&why)
            ));
            tool::reboot()?;
        } else {
            say(&format!(
                "slot {} ({version}) is unhealthy: {}; it is the committed slot, so it keeps running",
                running.slot,
                shown(&why)
            ));
        }
        return Ok(false);
    }
    if on_trial {
        tool::run(tool::BG_SETENV, &["-c"]).context("confirming the slot to EFI Boot Guard")?;
        let after = env::read_all(config)?;
        let confirmed = env::of(&after, &running.slot)?;
        anyhow::ensure!(
            confirmed.ustate == UState::Ok,
            "bg_setenv -c left slot {} in state {}",
            running.slot,
            confirmed.ustate.name()
        );
        say(&format!(
            "slot {} confirmed to EFI Boot Guard",
            running.slot
        ));
    }
    let before = state::min_svn(&state_dir)?;
    let minimum = state::raise_min_svn(&state_dir, running.security_version)?;
    if on_trial || minimum != before {
        let mut rec = Record::new("commit", "committed").because(if on_trial {
            "the tried slot passed its health check"
        } else {
            "the running slot passed its health check"
        });
        rec.version = Some(config.version.clone());
        rec.security_version = Some(running.security_version);
        rec.slot_before = Some(running.slot.clone());
        rec.slot_after = Some(running.slot.clone());
        rec.running_version = Some(config.version.clone());
        rec.minimum_security_version = Some(minimum);
        audit::append(&state_dir, &rec)?;
    }
    say(&format!(
        "slot {} ({version}, security version {}) is healthy and committed; minimum security version {minimum}",
        running.slot, running.security_version
    ));
    Ok(true)
}

/// Waits out the trial; a slot still unconfirmed then reboots (and falls
/// back).
pub fn trial_timeout(config: &Config, running: &Running) -> Result<()> {
    let envs = env::read_all(config)?;
    if env::of(&envs, &running.slot)?.ustate != UState::Testing {
        return Ok(());
    }
    say(&format!(
        "slot {} is on trial: it must pass its health check within {} s",
        running.slot, config.trial_timeout_sec
    ));
    std::thread::sleep(Duration::from_secs(u64::from(config.trial_timeout_sec)));
    let envs = env::read_all(config)?;
    if env::of(&envs, &running.slot)?.ustate != UState::Testing {
        return Ok(());
    }
    let mut rec = Record::new("trial-timeout", "rebooting").because(format!(
        "slot {} was not confirmed within {} s",
        running.slot, config.trial_timeout_sec
    ));
    rec.version = Some(config.version.clone());
    rec.slot_before = Some(running.slot.clone());
    audit::append(&config.state_dir(), &rec)?;
    say(&audit::human(&rec));
    tool::reboot()
}
