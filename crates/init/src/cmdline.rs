//! The kernel command line: which slot, which root hash, which security
//! version.
//!
//! The command line the init reads is the signed `.cmdline` section of the
//! slot's UKI: with Secure Boot on, systemd-stub ignores whatever the loader
//! passes, so these values are as trustworthy as the firmware's signature
//! check. They are still parsed strictly (fail closed): a missing, repeated
//! or malformed `slotsmith.*` key refuses the boot rather than falling back
//! to a default, because a default slot or an absent root hash is exactly
//! what an attacker who found a way to edit the line would want.
//!
//! Tokenising follows the kernel's own `next_arg` (lib/cmdline.c) so that
//! the init sees the same parameters the kernel saw: whitespace separates
//! parameters except inside double quotes, a leading quote and the matching
//! closing quote are stripped, and `--` ends the kernel's parameters (what
//! follows belongs to init's argv, and is never read as a `slotsmith.*`
//! key).

use anyhow::{bail, Context, Result};
use slotsmith_yaml::escape::shown;

/// The largest /proc/cmdline accepted (x86's COMMAND_LINE_SIZE is 2048;
/// the bound only keeps a corrupt read from growing without limit).
pub const MAX_CMDLINE: usize = 64 * 1024;

/// An A/B slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    /// The slot's name as it appears on the command line, in partition
    /// names and in the manifest: `a` or `b`.
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

/// The values the init takes from the signed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    /// `slotsmith.slot=a|b`.
    pub slot: Slot,
    /// `slotsmith.roothash=<64 lowercase hex>`: the dm-verity root hash.
    pub root_hash: [u8; 32],
    /// `slotsmith.svn=<u32>`: the security version the UKI was built for.
    pub svn: u32,
}

/// One parameter as the kernel splits it: `name` and, if there was an `=`,
/// the value (quotes stripped the way the kernel strips them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: &'a str,
    pub value: Option<&'a str>,
}

/// Splits a command line into parameters as the kernel's `next_arg` does,
/// stopping at a bare `--`.
pub fn params(line: &str) -> Vec<Param<'_>> {
    let mut out = Vec::new();
    let mut rest = line.trim_start_matches(|c: char| c.is_ascii_whitespace());
    while !rest.is_empty() {
        let bytes = rest.as_bytes();
        let mut i = 0;
        let mut in_quote = false;
        let mut equals = None;
        // A quote that opens the parameter is dropped from the name.
        let quoted = bytes[0] == b'"';
        if quoted {
            i = 1;
            in_quote = true;
        }
        let start = i;
        while i < bytes.len() {
            let c = bytes[i];
            if c.is_ascii_whitespace() && !in_quote {
                break;
            }
            if equals.is_none() && c == b'=' {
                equals = Some(i);
            }
            if c == b'"' {
                in_quote = !in_quote;
            }
            i += 1;
        }
        let token = &rest[start..i];
        // The kernel drops a closing quote that matches the opening one.
        let token = if quoted {
            token.strip_suffix('"').unwrap_or(token)
        } else {
            token
        };
        let param = match equals {
            None => Param {
                name: token,
                value: None,
            },
            Some(eq) => {
                let eq = eq - start;
                let name = &token[..eq.min(token.len())];
                let mut value = token.get(eq + 1..).unwrap_or("");
                if let Some(inner) = value.strip_prefix('"') {
                    value = inner.strip_suffix('"').unwrap_or(inner);
                }
                Param {
                    name,
                    value: Some(value),
                }
            }
        };
        if param.name == "--" && param.value.is_none() {
            break;
        }
        out.push(param);
        rest = rest[i..].trim_start_matches(|c: char| c.is_ascii_whitespace());
    }
    out
}

/// Reads `slotsmith.slot`, `slotsmith.roothash` and `slotsmith.svn` from a
/// command line. Each must appear exactly once, with a valid value; any
/// other `slotsmith.` key is refused too (a typo such as `slotsmith.sot=b`
/// must not silently boot something else).
pub fn parse(line: &str) -> Result<BootArgs> {
    let mut slot = None;
    let mut root_hash = None;
    let mut svn = None;
    for p in params(line) {
        if !p.name.starts_with("slotsmith.") {
            continue;
        }
        let Some(value) = p.value else {
            bail!("kernel command line: `{}` has no value", shown(p.name));
        };
        let seen = match p.name {
            "slotsmith.slot" => slot.replace(parse_slot(value)?).is_some(),
            "slotsmith.roothash" => root_hash.replace(parse_root_hash(value)?).is_some(),
            "slotsmith.svn" => svn.replace(parse_svn(value)?).is_some(),
            other => bail!("kernel command line: unknown key `{}`", shown(other)),
        };
        if seen {
            bail!(
                "kernel command line: `{}` appears more than once",
                shown(p.name)
            );
        }
    }
    let missing = |key: &str| format!("kernel command line has no {key}=");
    Ok(BootArgs {
        slot: slot.with_context(|| missing("slotsmith.slot"))?,
        root_hash: root_hash.with_context(|| missing("slotsmith.roothash"))?,
        svn: svn.with_context(|| missing("slotsmith.svn"))?,
    })
}

fn parse_slot(value: &str) -> Result<Slot> {
    match value {
        "a" => Ok(Slot::A),
        "b" => Ok(Slot::B),
        other => bail!(
            "kernel command line: slotsmith.slot=`{}` is not `a` or `b`",
            shown(other)
        ),
    }
}

fn parse_root_hash(value: &str) -> Result<[u8; 32]> {
    // Lowercase only: the manifest writes lowercase, and one spelling per
    // value leaves no room for two readers to disagree.
    let ok = value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !ok {
        bail!(
            "kernel command line: slotsmith.roothash=`{}` is not 64 lowercase hex digits",
            shown(value)
        );
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(value, &mut out).with_context(|| {
        format!(
            "kernel command line: slotsmith.roothash=`{}` is not hex",
            shown(value)
        )
    })?;
    Ok(out)
}

fn parse_svn(value: &str) -> Result<u32> {
    // Decimal without sign or leading zeros, like the manifest's numbers.
    let canonical = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    let parsed = if canonical {
        value.parse::<u32>().ok()
    } else {
        None
    };
    parsed.with_context(|| {
        format!(
            "kernel command line: slotsmith.svn=`{}` is not a decimal number from 0 to {}",
            shown(value),
            u32::MAX
        )
    })
}

/// The command line as the manifest records it: /proc/cmdline without its
/// trailing newline (and any other trailing whitespace).
pub fn normalized(proc_cmdline: &str) -> &str {
    proc_cmdline.trim_end_matches(|c: char| c.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "caba66f5d7d5c85ea5b8b50651e0835b1e93df0b108532eb07fe0ea8c2c3d99b";

    fn line(extra: &str) -> String {
        format!("console=ttyS0,115200 quiet {extra} panic=5 ro\n")
    }

    #[test]
    fn reads_the_three_keys() {
        let args = parse(&line(&format!(
            "slotsmith.slot=b slotsmith.roothash={HASH} slotsmith.svn=4294967295"
        )))
        .unwrap();
        assert_eq!(args.slot, Slot::B);
        assert_eq!(hex::encode(args.root_hash), HASH);
        assert_eq!(args.svn, u32::MAX);
    }

    #[test]
    fn splits_like_the_kernel() {
        let got = params("  a=1 \"b=x y\" c=\"p q\" flag d= --  slotsmith.slot=b");
        let want = [
            ("a", Some("1")),
            ("b", Some("x y")),
            ("c", Some("p q")),
            ("flag", None),
            ("d", Some("")),
        ];
        let got: Vec<_> = got.iter().map(|p| (p.name, p.value)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_key_inside_quotes_or_after_dashes_is_not_a_key() {
        let err = parse(&format!(
            "x=\"slotsmith.slot=a\" slotsmith.roothash={HASH} slotsmith.svn=1 -- slotsmith.slot=a"
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel command line has no slotsmith.slot="
        );
    }

    #[test]
    fn refuses_every_bad_form() {
        let ok_hash = format!("slotsmith.roothash={HASH}");
        let cases = [
            (
                format!("slotsmith.slot=c {ok_hash} slotsmith.svn=1"),
                "slotsmith.slot=`c` is not `a` or `b`",
            ),
            (
                format!("slotsmith.slot=a slotsmith.slot=a {ok_hash} slotsmith.svn=1"),
                "`slotsmith.slot` appears more than once",
            ),
            (
                format!("slotsmith.slot=a {ok_hash} slotsmith.svn=01"),
                "slotsmith.svn=`01` is not a decimal number",
            ),
            (
                format!("slotsmith.slot=a {ok_hash} slotsmith.svn=4294967296"),
                "slotsmith.svn=`4294967296` is not a decimal number",
            ),
            (
                format!("slotsmith.slot=a {ok_hash} slotsmith.svn=+1"),
                "is not a decimal number",
            ),
            (
                format!(
                    "slotsmith.slot=a slotsmith.roothash={} slotsmith.svn=1",
                    HASH.to_uppercase()
                ),
                "is not 64 lowercase hex digits",
            ),
            (
                format!(
                    "slotsmith.slot=a slotsmith.roothash={} slotsmith.svn=1",
                    &HASH[1..]
                ),
                "is not 64 lowercase hex digits",
            ),
            (
                format!("slotsmith.slot=a {ok_hash} slotsmith.svn"),
                "`slotsmith.svn` has no value",
            ),
            (
                format!("slotsmith.sot=b slotsmith.slot=a {ok_hash} slotsmith.svn=1"),
                "unknown key `slotsmith.sot`",
            ),
            (
                "slotsmith.slot=a slotsmith.svn=1".to_string(),
                "has no slotsmith.roothash=",
            ),
            (
                format!("slotsmith.slot=\u{1b}[2J {ok_hash} slotsmith.svn=1"),
                "slotsmith.slot=`\\x1b[2J` is not",
            ),
        ];
        for (input, want) in cases {
            let err = format!("{:#}", parse(&input).unwrap_err());
            assert!(err.contains(want), "{input:?}: {err}");
            assert!(!err.chars().any(char::is_control), "{err:?}");
        }
    }

    #[test]
    fn normalized_drops_only_the_trailing_newline_and_spaces() {
        assert_eq!(normalized(" a b \n"), " a b");
        assert_eq!(normalized("a\n\n"), "a");
    }
}
