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
//!    and an install left it to be tried or the init left its refusal;
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

/// The slot an install left for the loader to try (`state::TRIAL`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Trial {
    /// The slot written.
    pub slot: String,
    /// The version and security version it holds.
    pub version: Option<String>,
    /// Security version.
    pub security_version: Option<u64>,
    /// sha256 of the `.swu` (remembered if it rolls back, so a stick left
    /// in is not installed again).
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Records, once, that the other slot was tried and fell back: its
/// environment is FAILED and either an install left it to be tried or the
/// init left the reason it refused it. Both markers are consumed, so an
/// old FAILED environment is not recorded again on every boot (its bytes
/// cannot tell two failures apart: the loader zeroes the revision).
fn record_rollback(config: &Config, running: &Running, envs: &[env::SlotEnv]) -> Result<()> {
    let state_dir = config.state_dir();
    let other = config.other_slot(&running.slot)?;
    let trial_path = state_dir.join(state::TRIAL);
    let trial: Option<Trial> =
        state::read_small(&trial_path)?.and_then(|b| serde_json::from_slice(&b).ok());
    if trial.as_ref().is_some_and(|t| t.slot == running.slot) {
        // The tried slot is running: its commit (or its failed health
        // check and reboot) is recorded by `health`.
        return Ok(());
    }
    let failed = env::of(envs, &other).is_ok_and(|e| e.ustate == UState::Failed);
    let refusal_path = state_dir.join(state::BOOT_REFUSAL);
    let refusal =
        state::read_small(&refusal_path)?.map(|b| String::from_utf8_lossy(&b).trim().to_string());
    let Some(reason) = rollback_reason(&other, failed, trial.is_some(), refusal.as_deref()) else {
        return Ok(());
    };
    let mut rec = Record::new("rollback", "rolled-back").because(reason);
    if let Some(t) = &trial {
        rec.version = t.version.clone();
        rec.security_version = t.security_version;
        rec.sha256 = t.sha256.clone();
        if let Some(sha) = &t.sha256 {
            state::remember_rollback(&state_dir, sha)?;
        }
    }
    rec.slot_before = Some(other.clone());
    rec.slot_after = Some(running.slot.clone());
    rec.running_version = Some(config.version.clone());
    audit::append(&state_dir, &rec)?;
    state::remove(&trial_path)?;
    state::remove(&refusal_path)?;
    say(&format!(
        "slot {other} was tried and not confirmed; the device rolled back to slot {} ({} {})",
        running.slot,
        shown(&config.image),
        shown(&config.version)
    ));
    Ok(())
}

/// Whether (and why) a rollback from `other` is to be recorded: its
/// environment is FAILED, and something says a try happened since the
/// last record (an install's trial marker, or the init's refusal).
fn rollback_reason(
    other: &str,
    failed: bool,
    tried: bool,
    refusal: Option<&str>,
) -> Option<String> {
    if !failed || (!tried && refusal.is_none()) {
        return None;
    }
    Some(match refusal {
        Some(r) => format!("slot {other} was refused at boot: {r}"),
        None => format!(
            "slot {other} was tried and not confirmed (failed health check, trial timeout, panic, hang or watchdog reset)"
        ),
    })
}

/// The boot-time check; returns whether the system is healthy.
pub fn health(config: &Config, running: &Running) -> Result<bool> {
    // No install, and no trial-timeout reboot, between the check and the
    // commit.
    let _lock = crate::install::lock()?;
    let state_dir = config.state_dir();
    // Bookkeeping never gates the commit: a full or damaged data
    // partition must not turn every good update into a rollback.
    let note = |what: &str, r: Result<()>| {
        if let Err(e) = r {
            say(&format!(
                "could not record {what}: {}",
                shown(&format!("{e:#}"))
            ));
        }
    };
    note("the state directory", state::ensure_dir(&state_dir));
    note("an interrupted install", record_interrupted(&state_dir));
    let envs = env::read_all(config)?;
    note("a rollback", record_rollback(config, running, &envs));
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
            note("the failed health check", audit::append(&state_dir, &rec));
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
        note("the commit", audit::append(&state_dir, &rec));
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
    // Not while the health check is committing.
    let _lock = crate::install::lock()?;
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

#[cfg(test)]
mod tests {
    use super::rollback_reason;

    #[test]
    fn a_rollback_is_recorded_once_per_try() {
        // A FAILED environment alone is an old rollback, already recorded.
        assert_eq!(rollback_reason("a", true, false, None), None);
        // Not FAILED: nothing to record, whatever the markers say.
        assert_eq!(rollback_reason("a", false, true, Some("x")), None);
        let tried = rollback_reason("a", true, true, None).unwrap();
        assert!(
            tried.starts_with("slot a was tried and not confirmed"),
            "{tried}"
        );
        let refused =
            rollback_reason("a", true, false, Some("security version 1 is below")).unwrap();
        assert_eq!(
            refused,
            "slot a was refused at boot: security version 1 is below"
        );
    }
}
