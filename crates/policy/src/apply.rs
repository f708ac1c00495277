//! Turning rules into rootfs changes: the files, symlinks, removals and
//! mode changes that enforce a profile's settings, and the kernel command
//! line arguments it needs.
//!
//! Each setting is written where the consuming program gives it the final
//! say, because a value that loses to another file is worse than useless: a
//! report would claim a setting that the device does not have.
//! - sysctl.d: systemd-sysctl sorts every `*.conf` of /etc, /run,
//!   /usr/local/lib and /usr/lib by name and the LAST assignment wins, so
//!   ours is `99-zz-slotsmith.conf` (Debian ships `99-protect-links.conf`
//!   and `99-sysctl.conf`).
//! - sshd: the FIRST value obtained wins, and Debian's `sshd_config`
//!   includes `sshd_config.d/*.conf` near the top, so ours is
//!   `00-slotsmith.conf`.
//! - modprobe.d: kmod reads files in name order and uses the FIRST
//!   `install` command that matches a module, so ours sorts first too
//!   (`00-slotsmith-disabled.conf`).
//! - systemd: masking is `/etc/systemd/system/<unit> -> /dev/null`, which
//!   beats any vendor unit; the `.wants`/`.requires` links in /etc that
//!   would pull the unit in are removed as `systemctl disable` would.
//!
//! Output is sorted and byte-for-byte deterministic, so images are
//! reproducible and the generated files can be snapshot-reviewed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::model::*;
use crate::rootfs::{EntryKind, Index, RootfsRead};

/// Our sysctl.d file; sorts after every other name in the four directories.
pub const SYSCTL_PATH: &str = "/etc/sysctl.d/99-zz-slotsmith.conf";
/// Our modprobe.d file; sorts first, because kmod uses the first `install`.
pub const MODPROBE_PATH: &str = "/etc/modprobe.d/00-slotsmith-disabled.conf";
/// The ruleset Debian's nftables.service loads.
pub const NFT_PATH: &str = "/etc/nftables.conf";
/// The link that enables nftables.service (its `WantedBy=sysinit.target`).
pub const NFT_ENABLE_LINK: &str = "/etc/systemd/system/sysinit.target.wants/nftables.service";
/// Where the enable link points (Debian's unit path; /lib is /usr/lib on
/// merged-usr systems).
pub const NFT_UNIT: &str = "/lib/systemd/system/nftables.service";
/// Our sshd drop-in; sorts first, because sshd keeps the first value.
pub const SSHD_DROPIN: &str = "/etc/ssh/sshd_config.d/00-slotsmith.conf";
/// The shadow password file.
pub const SHADOW_PATH: &str = "/etc/shadow";
/// Where unit masks live.
pub const SYSTEMD_ETC: &str = "/etc/systemd/system";
/// The argument that stops systemd-getty-generator from starting gettys on
/// `console=` devices (systemd >= 250).
pub const GETTY_AUTO_OFF: &str = "systemd.getty_auto=0";

/// A file to write into the rootfs (replacing what is there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenFile {
    /// Absolute path in the rootfs.
    pub path: String,
    /// The full contents.
    #[serde(serialize_with = "ser_text")]
    pub content: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The rules this file implements.
    pub rule_ids: Vec<String>,
}

fn ser_text<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(v))
}

/// A symlink to create (replacing what is there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenLink {
    /// Absolute path in the rootfs.
    pub path: String,
    /// The link text.
    pub target: String,
    /// The rules this link implements.
    pub rule_ids: Vec<String>,
}

/// An entry to remove (such as a `.wants` link enabling a masked unit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenRemove {
    /// Absolute path in the rootfs.
    pub path: String,
    /// The rules that require the removal.
    pub rule_ids: Vec<String>,
}

/// A permission change on an existing entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenMode {
    /// Absolute path in the rootfs.
    pub path: String,
    /// The new permission bits.
    pub mode: u32,
    /// The rules that require it.
    pub rule_ids: Vec<String>,
}

/// Everything a profile's rules change. Apply in field order: `remove`,
/// `files`, `symlinks`, `chmod`; append `cmdline` to the kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Generated {
    /// Files to write, sorted by path.
    pub files: Vec<GenFile>,
    /// Symlinks to create, sorted by path.
    pub symlinks: Vec<GenLink>,
    /// Entries to remove, sorted by path.
    pub remove: Vec<GenRemove>,
    /// Mode changes, sorted by path.
    pub chmod: Vec<GenMode>,
    /// Kernel arguments to append, in rule-id order.
    pub cmdline: Vec<String>,
}

/// The rules that `generate` and `audit` enforce for a profile: in the
/// profile and not waived, sorted by id.
fn active<'r>(rules: &'r [Rule], profile: Profile, waived: &BTreeSet<String>) -> Vec<&'r Rule> {
    let mut v: Vec<&Rule> = rules
        .iter()
        .filter(|r| r.applies_to(profile) && !waived.contains(&r.id))
        .collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// Computes the rootfs changes for `profile`. Rules outside the profile or
/// in `waived` are not applied. `fs` is the rootfs as it will be packed
/// (it supplies /etc/shadow, the `.wants` links to remove and the modes to
/// fix). Fails on contradictory rules (one key, two values).
pub fn generate(
    rules: &[Rule],
    profile: Profile,
    waived: &BTreeSet<String>,
    fs: &dyn RootfsRead,
) -> Result<Generated> {
    let rules = active(rules, profile, waived);
    let ix = Index::new(fs);
    let mut g = Generated::default();

    sysctl_file(&rules, &mut g)?;
    modprobe_file(&rules, &mut g);
    firewall_files(&rules, &mut g)?;
    ssh_file(&rules, &mut g)?;
    masks(&rules, &ix, &mut g);
    shadow_file(&rules, &ix, fs, &mut g)?;
    file_modes(&rules, &ix, &mut g);
    cmdline(&rules, &mut g);

    g.files.sort_by(|a, b| a.path.cmp(&b.path));
    g.symlinks.sort_by(|a, b| a.path.cmp(&b.path));
    g.remove.sort_by(|a, b| a.path.cmp(&b.path));
    g.chmod.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(g)
}

const HEADER: &str = "# Generated by slotsmith from the hardening policies (policies/*.yaml).\n\
# Do not edit: the build rewrites this file and the audit checks the image against the policy.\n";

/// The body of a key/value configuration file (sysctl.d, sshd_config.d):
/// one commented section per rule, each key written once. Two rules
/// setting the same key to different values are a contradiction in the
/// policy set and fail; the same value twice is written once. Returns the
/// body and the ids of the rules that contributed.
fn key_value_sections(
    rules: &[&Rule],
    pick: impl Fn(&Setting) -> Option<&BTreeMap<String, String>>,
    line: impl Fn(&str, &str) -> String,
    conflict: impl Fn(&str, &str, &str, &str) -> String,
) -> Result<(String, Vec<String>)> {
    let mut seen: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    let mut body = String::new();
    let mut ids = Vec::new();
    for r in rules {
        let Some(map) = pick(&r.setting) else {
            continue;
        };
        let mut section = String::new();
        for (k, v) in map {
            if let Some((v0, id0)) = seen.get(k.as_str()) {
                if v0 != v {
                    bail!(
                        "{} in {} ({}:{}); rules must agree",
                        conflict(k, v0, id0, v),
                        r.id,
                        r.file,
                        r.line
                    );
                }
                continue;
            }
            seen.insert(k, (v, &r.id));
            let _ = writeln!(section, "{}", line(k, v));
        }
        if !section.is_empty() {
            let _ = write!(body, "\n# {}: {}\n{section}", r.id, r.title);
            ids.push(r.id.clone());
        }
    }
    Ok((body, ids))
}

fn sysctl_file(rules: &[&Rule], g: &mut Generated) -> Result<()> {
    let (body, ids) = key_value_sections(
        rules,
        |s| match s {
            Setting::Sysctl(m) => Some(m),
            _ => None,
        },
        |k, v| format!("{k} = {v}"),
        |k, v0, id0, v| format!("sysctl {k} is {v0} in {id0} and {v}"),
    )?;
    if ids.is_empty() {
        return Ok(());
    }
    let content = format!(
        "{HEADER}# Named 99-zz-* so that it sorts after every other sysctl.d file in /etc, /run,\n\
         # /usr/local/lib and /usr/lib: systemd-sysctl applies the last assignment of a key.\n{body}"
    );
    g.files.push(GenFile {
        path: SYSCTL_PATH.into(),
        content: content.into_bytes(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        rule_ids: ids,
    });
    Ok(())
}

fn modprobe_file(rules: &[&Rule], g: &mut Generated) {
    let mut body = String::new();
    let mut ids = Vec::new();
    let mut seen = BTreeSet::new();
    for r in rules {
        let Setting::ModulesDisabled(mods) = &r.setting else {
            continue;
        };
        let mut section = String::new();
        for m in mods {
            if !seen.insert(crate::load::normalize_module(m)) {
                continue;
            }
            let _ = writeln!(section, "install {m} /bin/false\nblacklist {m}");
        }
        if !section.is_empty() {
            let _ = write!(body, "\n# {}: {}\n{section}", r.id, r.title);
            ids.push(r.id.clone());
        }
    }
    if ids.is_empty() {
        return;
    }
    let content = format!(
        "{HEADER}# 'install <module> /bin/false' makes every load attempt fail, including automatic\n\
         # loading when a socket of that protocol is opened; 'blacklist' alone only stops\n\
         # loading by alias. Named 00-* because kmod uses the first matching install line.\n{body}"
    );
    g.files.push(GenFile {
        path: MODPROBE_PATH.into(),
        content: content.into_bytes(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        rule_ids: ids,
    });
}

fn firewall_files(rules: &[&Rule], g: &mut Generated) -> Result<()> {
    let fws: Vec<(&Rule, &Firewall)> = rules
        .iter()
        .filter_map(|r| match &r.setting {
            Setting::Firewall(f) => Some((*r, f)),
            _ => None,
        })
        .collect();
    let Some((rule, fw)) = fws.first() else {
        return Ok(());
    };
    if let Some((r2, _)) = fws.get(1) {
        bail!(
            "two firewall rules apply: {} ({}:{}) and {} ({}:{}); a profile has one ruleset",
            rule.id,
            rule.file,
            rule.line,
            r2.id,
            r2.file,
            r2.line
        );
    }
    g.files.push(GenFile {
        path: NFT_PATH.into(),
        content: nft_ruleset(&rule.id, fw).into_bytes(),
        // Debian ships /etc/nftables.conf executable, with a shebang.
        mode: 0o755,
        uid: 0,
        gid: 0,
        rule_ids: vec![rule.id.clone()],
    });
    g.symlinks.push(GenLink {
        path: NFT_ENABLE_LINK.into(),
        target: NFT_UNIT.into(),
        rule_ids: vec![rule.id.clone()],
    });
    Ok(())
}

/// The nftables ruleset text for a firewall setting.
pub fn nft_ruleset(rule_id: &str, fw: &Firewall) -> String {
    let mut s = String::new();
    s.push_str("#!/usr/sbin/nft -f\n");
    s.push_str(HEADER);
    let _ = writeln!(
        s,
        "# Rule {rule_id}: default deny inbound and forwarded traffic; only the services"
    );
    s.push_str("# listed below accept new connections.\n\nflush ruleset\n\ntable inet filter {\n");
    s.push_str("\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n");
    s.push_str("\t\tct state invalid drop\n\t\tct state { established, related } accept\n");
    s.push_str("\t\tiif \"lo\" accept\n");
    s.push_str("\t\t# Loopback addresses arriving on a real interface are spoofed.\n");
    s.push_str("\t\tip saddr 127.0.0.0/8 counter drop\n\t\tip6 saddr ::1 counter drop\n");
    if fw.icmp {
        s.push_str("\t\t# IPv6 needs neighbour discovery (only from on-link: hop limit 255) and\n");
        s.push_str("\t\t# packet-too-big for path MTU discovery; errors keep TCP from hanging.\n");
        s.push_str("\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } ip6 hoplimit 255 accept\n");
        s.push_str("\t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept\n");
        s.push_str(
            "\t\ticmp type { destination-unreachable, time-exceeded, parameter-problem } accept\n",
        );
        s.push_str("\t\ticmp type echo-request limit rate 5/second burst 10 packets accept\n");
        s.push_str("\t\ticmpv6 type echo-request limit rate 5/second burst 10 packets accept\n");
    }
    let mut input = fw.input.clone();
    input.sort_by_key(|a| (a.port, a.protocol));
    for a in &input {
        allow_lines(&mut s, a, "saddr");
    }
    if fw.log_drops {
        s.push_str(
            "\t\tlimit rate 10/minute burst 20 packets log prefix \"nft-drop-in: \" level info\n",
        );
    }
    s.push_str("\t\tcounter drop\n\t}\n\n");
    s.push_str(
        "\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n\n",
    );
    match fw.output {
        OutputPolicy::Accept => {
            s.push_str("\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\t}\n");
        }
        OutputPolicy::Drop => {
            s.push_str(
                "\tchain output {\n\t\ttype filter hook output priority filter; policy drop;\n",
            );
            s.push_str("\t\tct state invalid drop\n\t\tct state { established, related } accept\n");
            s.push_str("\t\toif \"lo\" accept\n");
            if fw.icmp {
                s.push_str("\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, mld2-listener-report } accept\n");
                s.push_str("\t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept\n");
                s.push_str("\t\ticmp type { destination-unreachable, time-exceeded, parameter-problem } accept\n");
            }
            let mut out = fw.output_allow.clone();
            out.sort_by_key(|a| (a.port, a.protocol));
            for a in &out {
                allow_lines(&mut s, a, "daddr");
            }
            if fw.log_drops {
                s.push_str("\t\tlimit rate 10/minute burst 20 packets log prefix \"nft-drop-out: \" level info\n");
            }
            s.push_str("\t\tcounter drop\n\t}\n");
        }
    }
    s.push_str("}\n");
    s
}

fn allow_lines(s: &mut String, a: &Allow, dir: &str) {
    let _ = writeln!(s, "\t\t# {}", a.service);
    let proto = a.protocol.as_str();
    if a.sources.is_empty() {
        let _ = writeln!(s, "\t\t{proto} dport {} ct state new accept", a.port);
        return;
    }
    let (v6, v4): (Vec<&String>, Vec<&String>) = a.sources.iter().partition(|c| cidr_is_v6(c));
    for (fam, nets) in [("ip", v4), ("ip6", v6)] {
        if nets.is_empty() {
            continue;
        }
        let list: Vec<&str> = nets.iter().map(|n| n.as_str()).collect();
        let _ = writeln!(
            s,
            "\t\t{fam} {dir} {{ {} }} {proto} dport {} ct state new accept",
            list.join(", "),
            a.port
        );
    }
}

fn ssh_file(rules: &[&Rule], g: &mut Generated) -> Result<()> {
    let (body, ids) = key_value_sections(
        rules,
        |s| match s {
            Setting::Ssh(m) => Some(m),
            _ => None,
        },
        |k, v| format!("{k} {v}"),
        |k, v0, id0, v| format!("sshd {k} is '{v0}' in {id0} and '{v}'"),
    )?;
    if ids.is_empty() {
        return Ok(());
    }
    let content = format!(
        "{HEADER}# Named 00-* so that sshd reads it first: sshd keeps the first value it obtains for\n\
         # a keyword, and Debian's sshd_config includes sshd_config.d/*.conf before its own settings.\n{body}"
    );
    g.files.push(GenFile {
        path: SSHD_DROPIN.into(),
        content: content.into_bytes(),
        // sshd configuration is root-only (CIS Debian 12 5.1.1).
        mode: 0o600,
        uid: 0,
        gid: 0,
        rule_ids: ids,
    });
    Ok(())
}

/// Units each rule masks, merged: unit -> rule ids.
pub(crate) fn masked_units(rules: &[&Rule]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rules {
        let units = match &r.setting {
            Setting::MaskedUnits(u) => u.clone(),
            Setting::Console(c) => c.masked_units(),
            _ => continue,
        };
        for u in units {
            let ids = out.entry(u).or_default();
            if !ids.contains(&r.id) {
                ids.push(r.id.clone());
            }
        }
    }
    out
}

/// The `.wants`/`.requires` links for `unit` under a systemd unit
/// directory, as full paths.
pub(crate) fn enabling_links(ix: &Index<'_>, dir: &str, unit: &str) -> Vec<String> {
    let mut out = Vec::new();
    for name in ix.list_dir(dir) {
        if !(name.ends_with(".wants") || name.ends_with(".requires") || name.ends_with(".upholds"))
        {
            continue;
        }
        let p = format!("{dir}/{name}/{unit}");
        if ix.get(&p).is_some() {
            out.push(p);
        }
    }
    out
}

fn masks(rules: &[&Rule], ix: &Index<'_>, g: &mut Generated) {
    for (unit, ids) in masked_units(rules) {
        g.symlinks.push(GenLink {
            path: format!("{SYSTEMD_ETC}/{unit}"),
            target: "/dev/null".into(),
            rule_ids: ids.clone(),
        });
        // A mask already stops the unit; removing the /etc links as well
        // keeps `systemctl is-enabled` and the audit unambiguous. Vendor
        // links under /usr/lib are left for the audit to report.
        for p in enabling_links(ix, SYSTEMD_ETC, &unit) {
            g.remove.push(GenRemove {
                path: p,
                rule_ids: ids.clone(),
            });
        }
    }
}

fn shadow_file(
    rules: &[&Rule],
    ix: &Index<'_>,
    fs: &dyn RootfsRead,
    g: &mut Generated,
) -> Result<()> {
    let mut lock_root = false;
    let mut lock_empty = false;
    let mut ids = Vec::new();
    for r in rules {
        let Setting::Accounts(a) = &r.setting else {
            continue;
        };
        if a.root_locked || a.no_empty_passwords {
            ids.push(r.id.clone());
        }
        lock_root |= a.root_locked;
        lock_empty |= a.no_empty_passwords;
    }
    if ids.is_empty() {
        return Ok(());
    }
    let Some(entry) = ix.get(SHADOW_PATH).filter(|e| e.kind == EntryKind::File) else {
        bail!(
            "{} needs {SHADOW_PATH}, which is not a regular file in the rootfs",
            ids.join(", ")
        );
    };
    let Some(old) = fs.read(SHADOW_PATH)? else {
        bail!("cannot read {SHADOW_PATH} from the rootfs");
    };
    let Ok(text) = String::from_utf8(old) else {
        bail!("{SHADOW_PATH} is not valid utf-8");
    };
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let mut fields: Vec<&str> = body.split(':').collect();
        if fields.len() < 2 || body.starts_with('#') {
            out.push_str(line);
            continue;
        }
        let pw = fields[1];
        let new_pw = if fields[0] == "root" && lock_root && !pw.starts_with('!') {
            // A leading '!' locks the password and keeps the hash (or '*'),
            // which is what `passwd -l` does.
            format!("!{pw}")
        } else if lock_empty && pw.is_empty() {
            // An empty field lets anyone log in without a password.
            "!".to_string()
        } else {
            pw.to_string()
        };
        fields[1] = &new_pw;
        out.push_str(&fields.join(":"));
        out.push_str(nl);
    }
    g.files.push(GenFile {
        path: SHADOW_PATH.into(),
        content: out.into_bytes(),
        // Keep the image's owner and mode (0640 root:shadow on Debian):
        // pam_unix's helper reads it through the shadow group.
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        rule_ids: ids,
    });
    Ok(())
}

fn file_modes(rules: &[&Rule], ix: &Index<'_>, g: &mut Generated) {
    let mut allow: Option<BTreeSet<&str>> = None;
    let mut suid_ids = Vec::new();
    let mut ww_ids = Vec::new();
    for r in rules {
        let Setting::Files(f) = &r.setting else {
            continue;
        };
        // Several rules: a path must be allowed by all of them.
        let set: BTreeSet<&str> = f.setuid_allow.iter().map(String::as_str).collect();
        allow = Some(match allow {
            None => set,
            Some(a) => a.intersection(&set).copied().collect(),
        });
        suid_ids.push(r.id.clone());
        if f.no_world_writable {
            ww_ids.push(r.id.clone());
        }
    }
    let Some(allow) = allow else { return };
    for (path, e) in &ix.map {
        let mut mode = e.mode;
        let mut ids = Vec::new();
        match e.kind {
            EntryKind::File => {
                if mode & 0o6000 != 0 && !allow.contains(path.as_str()) {
                    mode &= !0o6000;
                    ids.extend(suid_ids.iter().cloned());
                }
                if !ww_ids.is_empty() && mode & 0o002 != 0 {
                    mode &= !0o002;
                    ids.extend(ww_ids.iter().cloned());
                }
            }
            EntryKind::Fifo if !ww_ids.is_empty() && mode & 0o002 != 0 => {
                mode &= !0o002;
                ids.extend(ww_ids.iter().cloned());
            }
            EntryKind::Dir if !ww_ids.is_empty() && mode & 0o002 != 0 && mode & 0o1000 == 0 => {
                // CIS 7.1.11: a world-writable directory gets the sticky
                // bit, so users cannot delete or replace each other's files.
                mode |= 0o1000;
                ids.extend(ww_ids.iter().cloned());
            }
            _ => {}
        }
        if mode != e.mode {
            ids.sort();
            ids.dedup();
            g.chmod.push(GenMode {
                path: path.clone(),
                mode,
                rule_ids: ids,
            });
        }
    }
}

/// The kernel arguments `profile`'s rules add, in rule-id order, each
/// once. A pure function of the rules: the plan computes every slot's
/// final command line with it, before anything is built.
pub fn kernel_args(rules: &[Rule], profile: Profile, waived: &BTreeSet<String>) -> Vec<String> {
    let mut g = Generated::default();
    cmdline(&active(rules, profile, waived), &mut g);
    g.cmdline
}

fn cmdline(rules: &[&Rule], g: &mut Generated) {
    let mut out: Vec<String> = Vec::new();
    for r in rules {
        match &r.setting {
            Setting::KernelCmdline(k) => {
                for a in &k.require {
                    if !out.contains(a) {
                        out.push(a.clone());
                    }
                }
            }
            Setting::Console(c) if !c.getty_auto && !out.iter().any(|a| a == GETTY_AUTO_OFF) => {
                out.push(GETTY_AUTO_OFF.into());
            }
            _ => {}
        }
    }
    g.cmdline = out;
}

/// Whether a `forbid` pattern matches a kernel argument: `name` matches
/// `name` and `name=...`; a pattern ending in `=` or `*` matches by prefix.
pub fn cmdline_forbids(pattern: &str, arg: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        return arg.starts_with(prefix);
    }
    if pattern.ends_with('=') {
        return arg.starts_with(pattern);
    }
    arg == pattern
        || arg
            .strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with('=') && !pattern.contains('='))
}
