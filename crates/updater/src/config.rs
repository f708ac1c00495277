//! The updater's settings (`/etc/slotsmith/update.json`, written by the
//! build from the plan: `plan::chain::UpdaterConfig`) and the facts of the
//! running system it reads from the kernel.
//!
//! The settings live on the verified, read-only root, so they are trusted;
//! the kernel command line is part of the signed UKI, so the running slot
//! and its security version are too.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// Where the build puts the settings.
pub const CONFIG_PATH: &str = "/etc/slotsmith/update.json";
/// Largest settings file read.
const MAX_CONFIG: u64 = 64 << 10;
/// Largest command line read.
const MAX_CMDLINE: u64 = 64 << 10;

/// The settings, as the build wrote them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Image name.
    pub image: String,
    /// This release's version.
    pub version: String,
    /// This release's security version.
    pub security_version: u64,
    /// The certificate SWUpdate verifies with.
    pub certificate: String,
    /// SWUpdate's pre-update command.
    pub preupdate: String,
    /// (running slot, `set,mode` that installs into the other slot).
    pub install_into_other: Vec<(String, String)>,
    /// (slot, GPT name of its boot partition).
    pub boot_partitions: Vec<(String, String)>,
    /// Units that must be active.
    pub healthy_units: Vec<String>,
    /// Seconds a tried slot may run unconfirmed.
    pub trial_timeout_sec: u32,
    /// The state directory on the data partition.
    pub state_dir: String,
}

impl Config {
    /// Reads the settings.
    pub fn load(path: &Path) -> Result<Config> {
        let text = crate::read_bounded(path, MAX_CONFIG)?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{} is not the updater's settings", path.display()))
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(&self.state_dir)
    }

    /// The `-e set,mode` that installs into the slot `running` is not.
    pub fn selection_from(&self, running: &str) -> Result<&str> {
        self.install_into_other
            .iter()
            .find(|(s, _)| s == running)
            .map(|(_, sel)| sel.as_str())
            .with_context(|| format!("no update collection is set for running slot {running}"))
    }

    /// The other slot.
    pub fn other_slot(&self, running: &str) -> Result<String> {
        self.boot_partitions
            .iter()
            .map(|(s, _)| s)
            .find(|s| *s != running)
            .cloned()
            .with_context(|| format!("no slot besides {running}"))
    }
}

/// What the signed kernel command line says about the running system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The slot (`slotsmith.slot=`).
    pub slot: String,
    /// Its security version (`slotsmith.svn=`).
    pub security_version: u64,
}

/// Parses the facts out of a command line.
pub fn parse_cmdline(cmdline: &str) -> Result<Running> {
    let mut slot = None;
    let mut svn = None;
    for word in cmdline.split_ascii_whitespace() {
        if let Some(v) = word.strip_prefix("slotsmith.slot=") {
            slot = Some(v);
        } else if let Some(v) = word.strip_prefix("slotsmith.svn=") {
            svn = Some(v);
        }
    }
    let Some(slot) = slot else {
        bail!("the kernel command line has no slotsmith.slot= (not booted by slotsmith's chain)");
    };
    if slot.is_empty() || slot.len() > 8 || !slot.bytes().all(|b| b.is_ascii_lowercase()) {
        bail!(
            "slotsmith.slot={} is not a slot name",
            slotsmith_yaml::escape::shown(slot)
        );
    }
    let svn = svn
        .context("the kernel command line has no slotsmith.svn=")?
        .parse::<u64>()
        .context("slotsmith.svn= is not a number")?;
    Ok(Running {
        slot: slot.to_string(),
        security_version: svn,
    })
}

/// Reads `/proc/cmdline`.
pub fn running() -> Result<Running> {
    let raw = crate::read_bounded(Path::new("/proc/cmdline"), MAX_CMDLINE)?;
    let text = String::from_utf8(raw).context("/proc/cmdline is not UTF-8")?;
    parse_cmdline(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_slot_and_security_version() {
        let r = parse_cmdline("console=ttyS0 slotsmith.slot=b slotsmith.svn=4 panic=5\n").unwrap();
        assert_eq!(
            r,
            Running {
                slot: "b".into(),
                security_version: 4
            }
        );
        for bad in [
            "slotsmith.svn=4",
            "slotsmith.slot=b",
            "slotsmith.slot=B slotsmith.svn=1",
            "slotsmith.slot=b slotsmith.svn=-1",
            "slotsmith.slot=b slotsmith.svn=99999999999999999999999",
        ] {
            assert!(parse_cmdline(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_plan_s_settings_parse_and_unknown_keys_do_not() {
        let json = r#"{"image":"demo","version":"2.0.0","security_version":2,
            "certificate":"/etc/swupdate/update.cert.pem","preupdate":"/usr/libexec/slotsmith/preupdate",
            "install_into_other":[["a","stable,copy2"],["b","stable,copy1"]],
            "boot_partitions":[["a","boot-a"],["b","boot-b"]],
            "healthy_units":["ssh.service"],"trial_timeout_sec":600,"state_dir":"/data/slotsmith"}"#;
        let c: Config = serde_json::from_str(json).unwrap();
        assert_eq!(c.selection_from("a").unwrap(), "stable,copy2");
        assert_eq!(c.other_slot("b").unwrap(), "a");
        assert!(c.selection_from("c").is_err());
        let extra = json.replace("\"image\"", "\"extra\":1,\"image\"");
        assert!(serde_json::from_str::<Config>(&extra).is_err());
    }
}
