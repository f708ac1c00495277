//! The policy model: what a rule in `policies/*.yaml` means once loaded.
//!
//! A [`Rule`] pairs one hardening measure ([`Setting`]) with the reasons a
//! reviewer needs (title, rationale, severity) and the control identifiers a
//! regulator asks for ([`Controls`]). The same value drives three stages:
//! `apply` turns settings into files, `audit` checks the built image against
//! them, and `report` shows the result per rule and per control. Keeping one
//! model for all three is what makes "the report says X is enforced" and
//! "the image enforces X" the same claim.
//!
//! Control identifiers are checked by shape per framework here, so a typo
//! such as `SC7(5)` or `CR7.7` is a load diagnostic instead of a silently
//! unmapped control in a submission.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Which build a rule applies to. Development images keep some debug access
/// that production images must not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Engineering builds: debugging aids allowed.
    Development,
    /// Builds that ship on devices.
    Production,
}

impl Profile {
    /// Parses `development` or `production`.
    pub fn parse(s: &str) -> Option<Profile> {
        match s {
            "development" => Some(Profile::Development),
            "production" => Some(Profile::Production),
            _ => None,
        }
    }

    /// The name used in policy files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Development => "development",
            Profile::Production => "production",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a failing rule is, for triage in reports and SARIF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Defence in depth; little direct exposure.
    Low,
    /// Reduces exposure of a reachable interface.
    Medium,
    /// Closes a direct route to compromise.
    High,
    /// Failure means the device is open (no firewall, root login).
    Critical,
}

impl Severity {
    /// Parses a severity name.
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }

    /// The name used in policy files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One hardening measure with its justification and control mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Stable identifier such as `NET-SYSCTL-001`; reports, waivers and SARIF
    /// refer to it, so it never changes once shipped.
    pub id: String,
    /// One line for tables.
    pub title: String,
    /// Why the measure exists, for a reviewer who has not seen the tool.
    pub rationale: String,
    /// How bad a failure is.
    pub severity: Severity,
    /// The profiles the rule applies to.
    pub profiles: Vec<Profile>,
    /// Control identifiers per framework.
    pub controls: Controls,
    /// What is enforced and checked.
    pub setting: Setting,
    /// The policy file, as shown in diagnostics (`policies/network.yaml`).
    pub file: String,
    /// The line where the rule starts.
    pub line: usize,
}

impl Rule {
    /// Whether the rule applies to `profile`.
    pub fn applies_to(&self, profile: Profile) -> bool {
        self.profiles.contains(&profile)
    }
}

/// Control identifiers per framework. Every list may be empty; the
/// identifiers are validated by shape when loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Controls {
    /// NIST IR 8259A core baseline capability names.
    #[serde(rename = "nist-ir-8259a")]
    pub nist_ir_8259a: Vec<String>,
    /// NIST SP 800-53 rev. 5 controls (`AC-17`, `SC-7(5)`).
    #[serde(rename = "sp800-53")]
    pub sp800_53: Vec<String>,
    /// IEC 62443-4-2 requirements (`CR 7.7`, `EDR 3.14`, `CR 7.6 RE1`).
    #[serde(rename = "iec62443-4-2")]
    pub iec62443_4_2: Vec<String>,
    /// FDA premarket cybersecurity guidance Appendix 1 categories (`App1-B`).
    #[serde(rename = "fda-premarket")]
    pub fda_premarket: Vec<String>,
    /// CIS Debian Linux 12 Benchmark recommendation numbers (`3.3.7`).
    #[serde(rename = "cis-debian12")]
    pub cis_debian12: Vec<String>,
}

/// The framework keys in policy files, in report order.
pub const FRAMEWORKS: &[&str] = &[
    "nist-ir-8259a",
    "sp800-53",
    "iec62443-4-2",
    "fda-premarket",
    "cis-debian12",
];

impl Controls {
    /// `(framework, ids)` pairs in [`FRAMEWORKS`] order.
    pub fn by_framework(&self) -> Vec<(&'static str, &[String])> {
        vec![
            ("nist-ir-8259a", &self.nist_ir_8259a[..]),
            ("sp800-53", &self.sp800_53[..]),
            ("iec62443-4-2", &self.iec62443_4_2[..]),
            ("fda-premarket", &self.fda_premarket[..]),
            ("cis-debian12", &self.cis_debian12[..]),
        ]
    }

    /// The list for a framework key, for the loader.
    pub fn list_mut(&mut self, framework: &str) -> Option<&mut Vec<String>> {
        match framework {
            "nist-ir-8259a" => Some(&mut self.nist_ir_8259a),
            "sp800-53" => Some(&mut self.sp800_53),
            "iec62443-4-2" => Some(&mut self.iec62443_4_2),
            "fda-premarket" => Some(&mut self.fda_premarket),
            "cis-debian12" => Some(&mut self.cis_debian12),
            _ => None,
        }
    }
}

/// The NIST IR 8259A (2020) core baseline capabilities, spelled as in the
/// document.
pub const NIST_IR_8259A: &[&str] = &[
    "Device Identification",
    "Device Configuration",
    "Data Protection",
    "Logical Access to Interfaces",
    "Software Update",
    "Cybersecurity State Awareness",
];

/// SP 800-53 rev. 5 control families.
const SP800_53_FAMILIES: &[&str] = &[
    "AC", "AT", "AU", "CA", "CM", "CP", "IA", "IR", "MA", "MP", "PE", "PL", "PM", "PS", "PT", "RA",
    "SA", "SC", "SI", "SR",
];

/// Checks a control identifier's shape for a framework; `Err` says what the
/// shape should be.
pub fn check_control(framework: &str, id: &str) -> Result<(), String> {
    let ok = match framework {
        "nist-ir-8259a" => NIST_IR_8259A.contains(&id),
        "sp800-53" => valid_sp800_53(id),
        "iec62443-4-2" => valid_iec62443(id),
        "fda-premarket" => {
            id.len() == 6 && id.starts_with("App1-") && matches!(id.as_bytes()[5], b'A'..=b'H')
        }
        "cis-debian12" => valid_cis(id),
        _ => return Err(format!("unknown framework '{framework}'")),
    };
    if ok {
        return Ok(());
    }
    let expected = match framework {
        "nist-ir-8259a" => format!("one of: {}", NIST_IR_8259A.join(", ")),
        "sp800-53" => "a control such as AC-17, SC-7(5) or CM-7(a)".to_string(),
        "iec62443-4-2" => "a requirement such as CR 7.7, EDR 3.14 or CR 7.6 RE1".to_string(),
        "fda-premarket" => "an Appendix 1 category App1-A to App1-H".to_string(),
        _ => "a recommendation number such as 3.3.7".to_string(),
    };
    Err(format!(
        "unknown {framework} control '{id}' (expected {expected})"
    ))
}

fn valid_sp800_53(id: &str) -> bool {
    // FAMILY-N, then optional "(N)" enhancement, then optional "(a)" parts.
    let Some((fam, rest)) = id.split_once('-') else {
        return false;
    };
    if !SP800_53_FAMILIES.contains(&fam) {
        return false;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 2 || rest.starts_with('0') {
        return false;
    }
    let mut tail = &rest[digits..];
    let mut first = true;
    while !tail.is_empty() {
        let Some(inner_end) = tail.find(')') else {
            return false;
        };
        if !tail.starts_with('(') {
            return false;
        }
        let inner = &tail[1..inner_end];
        let num = !inner.is_empty()
            && inner.len() <= 2
            && inner.bytes().all(|b| b.is_ascii_digit())
            && !inner.starts_with('0');
        let letter = inner.len() == 1 && inner.as_bytes()[0].is_ascii_lowercase();
        // A numbered enhancement may only come first: SC-7(5)(a), not SC-7(a)(5).
        if !(letter || (num && first)) {
            return false;
        }
        first = false;
        tail = &tail[inner_end + 1..];
    }
    true
}

fn valid_iec62443(id: &str) -> bool {
    let mut parts = id.split(' ');
    let (Some(kind), Some(num)) = (parts.next(), parts.next()) else {
        return false;
    };
    if !matches!(kind, "CR" | "SAR" | "EDR" | "HDR" | "NDR") {
        return false;
    }
    let Some((fr, n)) = num.split_once('.') else {
        return false;
    };
    let fr_ok = matches!(fr, "1" | "2" | "3" | "4" | "5" | "6" | "7");
    let n_ok = !n.is_empty()
        && n.len() <= 2
        && n.bytes().all(|b| b.is_ascii_digit())
        && !n.starts_with('0');
    let re_ok = match parts.next() {
        None => true,
        Some(re) => {
            let d = re.strip_prefix("RE").map(|d| {
                d.strip_prefix('(')
                    .and_then(|d| d.strip_suffix(')'))
                    .unwrap_or(d)
            });
            matches!(d, Some(d) if !d.is_empty() && d.len() <= 2
                && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0'))
        }
    };
    fr_ok && n_ok && re_ok && parts.next().is_none()
}

fn valid_cis(id: &str) -> bool {
    let parts: Vec<&str> = id.split('.').collect();
    (2..=5).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// What a rule enforces. Each variant is generated by `apply` and checked by
/// `audit` the way the running system would read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setting {
    /// Kernel parameters written to the sysctl.d file that sorts last.
    Sysctl(BTreeMap<String, String>),
    /// Kernel modules that must never load (`install <m> /bin/false`).
    ModulesDisabled(Vec<String>),
    /// The nftables ruleset.
    Firewall(Firewall),
    /// systemd units masked (`/etc/systemd/system/<unit> -> /dev/null`).
    MaskedUnits(Vec<String>),
    /// sshd keywords and values (canonical keyword spelling).
    Ssh(BTreeMap<String, String>),
    /// Account database properties.
    Accounts(Accounts),
    /// File permission properties.
    Files(Files),
    /// Kernel command line arguments required or forbidden.
    KernelCmdline(KernelCmdline),
    /// Login prompts on consoles.
    Console(Console),
    /// Paths that must not exist in the image: absolute patterns whose last
    /// component may hold `*` (private keys a device must make itself).
    ForbiddenFiles(Vec<String>),
}

impl Setting {
    /// The policy-file key that introduces this kind of setting.
    pub fn kind(&self) -> &'static str {
        match self {
            Setting::Sysctl(_) => "sysctl",
            Setting::ModulesDisabled(_) => "modules-disabled",
            Setting::Firewall(_) => "firewall",
            Setting::MaskedUnits(_) => "masked-units",
            Setting::Ssh(_) => "ssh",
            Setting::Accounts(_) => "accounts",
            Setting::Files(_) => "files",
            Setting::KernelCmdline(_) => "kernel-cmdline",
            Setting::Console(_) => "console",
            Setting::ForbiddenFiles(_) => "forbidden-files",
        }
    }
}

/// Every setting key, in the order documented.
pub const SETTING_KINDS: &[&str] = &[
    "sysctl",
    "modules-disabled",
    "firewall",
    "masked-units",
    "ssh",
    "accounts",
    "files",
    "kernel-cmdline",
    "console",
    "forbidden-files",
];

/// The host firewall: default deny with an explicit allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Firewall {
    /// Inbound services allowed (new connections); everything else is dropped.
    pub input: Vec<Allow>,
    /// Accept the ICMP/ICMPv6 messages IP needs (neighbour discovery,
    /// packet-too-big, errors) and rate-limited echo.
    pub icmp: bool,
    /// Log dropped inbound packets, rate-limited.
    pub log_drops: bool,
    /// Outbound policy.
    pub output: OutputPolicy,
    /// With `output: drop`, the outbound destinations allowed; `sources` are
    /// then destination networks.
    pub output_allow: Vec<Allow>,
}

/// One allowed port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Allow {
    /// The systemd unit (or program name) that listens, for reviewers and for
    /// the lint that catches a port opened for a masked service.
    pub service: String,
    /// Destination port.
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Peer networks (CIDR); empty means any.
    pub sources: Vec<String>,
}

impl Allow {
    /// The systemd unit name of `service` (`ssh` → `ssh.service`).
    pub fn unit(&self) -> String {
        unit_name(&self.service)
    }
}

/// A unit name with the `.service` suffix added when no suffix is given.
pub fn unit_name(s: &str) -> String {
    const SUFFIXES: &[&str] = &[
        ".service",
        ".socket",
        ".target",
        ".path",
        ".timer",
        ".mount",
        ".device",
        ".swap",
        ".automount",
        ".slice",
        ".scope",
    ];
    if SUFFIXES.iter().any(|x| s.ends_with(x)) {
        s.to_string()
    } else {
        format!("{s}.service")
    }
}

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The nftables keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// The outbound chain policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputPolicy {
    /// Anything may leave.
    Accept,
    /// Only `output_allow` may leave.
    Drop,
}

/// Account database requirements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accounts {
    /// root's password is locked (`!` or `*` in /etc/shadow).
    pub root_locked: bool,
    /// No account has an empty password field.
    pub no_empty_passwords: bool,
    /// root is the only account with UID 0.
    pub single_uid0: bool,
}

/// File permission requirements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Files {
    /// The only regular files allowed to be setuid or setgid.
    pub setuid_allow: Vec<String>,
    /// No world-writable files, and no world-writable directories without
    /// the sticky bit.
    pub no_world_writable: bool,
}

/// Kernel command line requirements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelCmdline {
    /// Arguments that must be present (for `key=value`, the last occurrence
    /// of the key must have this value, as the kernel keeps the last).
    pub require: Vec<String>,
    /// Arguments that must be absent: `name` matches `name` and `name=...`;
    /// a trailing `=` or `*` matches any argument with that prefix.
    pub forbid: Vec<String>,
}

/// Serial and virtual-terminal login prompts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Console {
    /// Whether `serial-getty@<tty>.service` instances are masked.
    pub serial_getty: GettyPolicy,
    /// Whether systemd-getty-generator may start gettys on its own (it
    /// starts one on every `console=` device); false adds
    /// `systemd.getty_auto=0` to the command line.
    pub getty_auto: bool,
    /// Serial devices whose getty instance is masked.
    pub serial_ttys: Vec<String>,
    /// Virtual terminals whose `getty@`/`autovt@` instances are masked.
    pub vts: Vec<String>,
}

impl Console {
    /// The units this setting masks.
    pub fn masked_units(&self) -> Vec<String> {
        let mut units = Vec::new();
        if self.serial_getty == GettyPolicy::Masked {
            for t in &self.serial_ttys {
                units.push(format!("serial-getty@{t}.service"));
            }
        }
        for t in &self.vts {
            units.push(format!("getty@{t}.service"));
            // logind starts autovt@ttyN on a VT switch; it is an alias of
            // getty@, but the instance name is what systemd looks up.
            units.push(format!("autovt@{t}.service"));
        }
        units.sort();
        units.dedup();
        units
    }
}

/// What to do with serial getty instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GettyPolicy {
    /// Masked: no login prompt on the serial port.
    Masked,
    /// Left as the image has them.
    Allowed,
}

/// A recorded, approved exception to a rule for one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiver {
    /// The rule id waived.
    pub rule: String,
    /// Why the risk is accepted.
    pub justification: String,
    /// Who accepted it.
    pub approver: String,
}

/// Whether `s` is an IPv4 or IPv6 network in CIDR notation (a bare address
/// counts as a host network).
pub fn valid_cidr(s: &str) -> bool {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match len {
        None => true,
        Some(l) => {
            !l.is_empty()
                && l.len() <= 3
                && l.bytes().all(|b| b.is_ascii_digit())
                && l.parse::<u32>().is_ok_and(|n| n <= max)
        }
    }
}

/// Whether a CIDR string is IPv6.
pub fn cidr_is_v6(s: &str) -> bool {
    s.contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_shapes() {
        for ok in [
            "AC-17", "SC-7(5)", "CM-7(a)", "SC-7(10)", "SI-7(15)", "CM-6(a)",
        ] {
            assert!(check_control("sp800-53", ok).is_ok(), "{ok}");
        }
        for bad in [
            "SC7",
            "XX-1",
            "SC-7(",
            "SC-07",
            "sc-7",
            "SC-7(a)(5)",
            "SC-7 (5)",
        ] {
            assert!(check_control("sp800-53", bad).is_err(), "{bad}");
        }
        for ok in ["CR 7.7", "EDR 3.14", "CR 7.6 RE1", "CR 2.1 RE(2)"] {
            assert!(check_control("iec62443-4-2", ok).is_ok(), "{ok}");
        }
        for bad in [
            "CR7.7",
            "CR 8.1",
            "CR 7.07",
            "XR 1.1",
            "CR 7.6 RE",
            "CR 1.1 x",
        ] {
            assert!(check_control("iec62443-4-2", bad).is_err(), "{bad}");
        }
        assert!(check_control("fda-premarket", "App1-H").is_ok());
        assert!(check_control("fda-premarket", "App1-I").is_err());
        assert!(check_control("cis-debian12", "3.3.7").is_ok());
        assert!(check_control("cis-debian12", "3").is_err());
        assert!(check_control("nist-ir-8259a", "Data Protection").is_ok());
        assert!(check_control("nist-ir-8259a", "data protection").is_err());
    }

    #[test]
    fn cidrs() {
        for ok in ["10.20.0.0/16", "192.0.2.1", "fd00::/8", "::1/128"] {
            assert!(valid_cidr(ok), "{ok}");
        }
        for bad in [
            "10.20.0.0/33",
            "10.20.0/16",
            "fd00::/129",
            "x",
            "1.2.3.4/",
            "1.2.3.4/+1",
        ] {
            assert!(!valid_cidr(bad), "{bad}");
        }
    }
}
