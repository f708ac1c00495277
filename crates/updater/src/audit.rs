//! The device's audit trail: one JSON object per line in
//! `<state_dir>/audit.jsonl` on the data partition, appended for every
//! install attempt (installed, refused, failed, interrupted) and every
//! commit, failed health check and rollback. It survives reboots and
//! updates (the data partition is never written by an update) and is read
//! with `slotsmith-update log`.
//!
//! Durability: each record is one `write` of a whole line to a file
//! opened with `O_APPEND`, then `fsync`; the directory is synced when the
//! file is created. A power cut loses at most the record being written,
//! and a torn last line is skipped (and counted) when the trail is read.
//!
//! The data partition is not signed: whoever holds the device can edit
//! the trail. It records what the device did; it is not tamper evidence.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The trail's file name in the state directory.
pub const FILE: &str = "audit.jsonl";
/// Longest line kept when reading (a record is a few hundred bytes).
const MAX_LINE: usize = 16 << 10;
/// Largest trail read by `log` (the newest part is kept).
const MAX_TRAIL: u64 = 16 << 20;
/// Longest reason stored.
const MAX_REASON: usize = 1024;

/// One event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// UTC, RFC 3339, from the device clock.
    pub time: String,
    /// `install`, `commit`, `health-check`, `rollback`, `trial-timeout`.
    pub event: String,
    /// `installed`, `refused`, `failed`, `interrupted`, `committed`,
    /// `skipped`, `rolled-back`, `rebooting`.
    pub result: String,
    /// Why, in words (SWUpdate's or ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `usb` or `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The `.swu` (path on the stick or the device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// sha256 of the `.swu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The version the update (or the slot) declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its security version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_version: Option<u64>,
    /// Key fingerprint of the certificate the signature names (verified by
    /// SWUpdate only when the result is `installed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The slot the device ran from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_before: Option<String>,
    /// The slot it boots next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_after: Option<String>,
    /// The running release when the event happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_version: Option<String>,
    /// The device's minimum security version after the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_security_version: Option<u64>,
}

impl Record {
    /// A record of `event` with `result`, stamped now.
    pub fn new(event: &str, result: &str) -> Record {
        Record {
            time: now_rfc3339(),
            event: event.into(),
            result: result.into(),
            ..Record::default()
        }
    }

    /// Sets the reason, cut to a bounded length on a character boundary.
    pub fn because(mut self, reason: impl Into<String>) -> Record {
        let mut r: String = reason.into();
        if r.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !r.is_char_boundary(end) {
                end -= 1;
            }
            r.truncate(end);
            r.push_str("...");
        }
        self.reason = Some(r);
        self
    }
}

/// The trail's path.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Appends `record` durably.
pub fn append(state_dir: &Path, record: &Record) -> Result<()> {
    let mut line = serde_json::to_vec(record).context("encoding an audit record")?;
    line.push(b'\n');
    let p = path(state_dir);
    let created = !p.exists();
    let mut f = crate::state::open_append(&p)?;
    f.write_all(&line)
        .with_context(|| format!("appending to {}", p.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", p.display()))?;
    if created {
        crate::state::sync_dir(state_dir)?;
    }
    Ok(())
}

/// The trail's records, oldest first, and the number of lines that were
/// not records (a torn last line after a power cut, or an edit).
pub fn read(state_dir: &Path) -> Result<(Vec<Record>, usize)> {
    let p = path(state_dir);
    let bytes = match crate::state::read_tail(&p, MAX_TRAIL)? {
        Some(b) => b,
        None => return Ok((Vec::new(), 0)),
    };
    Ok(parse(&bytes))
}

/// Parses trail bytes.
pub fn parse(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut bad = 0;
    for line in bytes.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match (line.len() <= MAX_LINE)
            .then(|| serde_json::from_slice::<Record>(line).ok())
            .flatten()
        {
            Some(r) => records.push(r),
            None => bad += 1,
        }
    }
    (records, bad)
}

/// One line for a person: every untrusted field escaped.
pub fn human(r: &Record) -> String {
    use slotsmith_yaml::escape::shown;
    let mut s = format!(
        "{}  {:<13} {:<11}",
        shown(&r.time),
        shown(&r.event),
        shown(&r.result)
    );
    if let Some(v) = &r.version {
        s.push_str(&format!(" version {}", shown(v)));
    }
    if let Some(n) = r.security_version {
        s.push_str(&format!(" (svn {n})"));
    }
    match (&r.slot_before, &r.slot_after) {
        (Some(a), Some(b)) => s.push_str(&format!(" slot {}->{}", shown(a), shown(b))),
        (Some(a), None) => s.push_str(&format!(" slot {}", shown(a))),
        _ => {}
    }
    if let Some(src) = &r.source {
        s.push_str(&format!(" from {}", shown(src)));
    }
    if let Some(f) = &r.file {
        s.push_str(&format!(" {}", shown(f)));
    }
    if let Some(h) = &r.sha256 {
        s.push_str(&format!(" sha256 {}", shown(h)));
    }
    if let Some(k) = &r.signer {
        s.push_str(&format!(" signer {}", shown(k)));
    }
    if let Some(m) = r.minimum_security_version {
        s.push_str(&format!(" min-svn {m}"));
    }
    if let Some(why) = &r.reason {
        s.push_str(&format!(": {}", shown(why)));
    }
    s
}

/// A JSON line with every character a terminal would act on escaped as
/// `\uXXXX` (serde_json escapes C0 controls; bidi overrides, C1 controls
/// and DEL it leaves raw). Still valid JSON, with the same value.
pub fn json_for_terminal(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        let u = c as u32;
        let risky = u == 0x7f
            || (0x80..=0x9f).contains(&u)
            || (0x200e..=0x200f).contains(&u)
            || (0x202a..=0x202e).contains(&u)
            || (0x2066..=0x2069).contains(&u);
        if risky {
            out.push_str(&format!("\\u{u:04x}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ` (the workspace's one calendar
/// conversion, `slotsmith_disk::time`).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    slotsmith_disk::time::rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_append_durably_and_a_torn_line_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Record::new("install", "refused").because("bad \u{1b}[31m signature\n");
        r.file = Some("evil\u{202e}.swu".into());
        append(dir.path(), &r).unwrap();
        append(dir.path(), &Record::new("commit", "committed")).unwrap();
        let (got, bad) = read(dir.path()).unwrap();
        assert_eq!((got.len(), bad), (2, 0));
        assert_eq!(got[0], r);
        // Each record is exactly one line, whatever its strings hold.
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert_eq!(text.lines().count(), 2);
        let shown = human(&got[0]);
        assert!(!shown.contains('\u{1b}') && !shown.contains('\u{202e}') && !shown.contains('\n'));
        // A power cut mid-write leaves a torn last line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path(dir.path()))
            .unwrap();
        f.write_all(b"{\"time\":\"2026").unwrap();
        let (got, bad) = read(dir.path()).unwrap();
        assert_eq!((got.len(), bad), (2, 1));
    }

    #[test]
    fn json_lines_shown_on_a_terminal_keep_their_value() {
        let mut r = Record::new("install", "refused");
        r.file = Some("a\u{202e}b\u{7f}c\u{9b}d".into());
        let line = serde_json::to_string(&r).unwrap();
        let shown = json_for_terminal(&line);
        assert!(shown.is_ascii() || !shown.contains('\u{202e}'));
        assert!(
            shown.contains("\\u202e") && shown.contains("\\u007f") && shown.contains("\\u009b")
        );
        let back: Record = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn reasons_are_bounded() {
        let r = Record::new("install", "failed").because("é".repeat(2000));
        assert!(r.reason.unwrap().len() <= MAX_REASON + 3);
    }
}
