//! EFI Boot Guard environment files (`BGENV.DAT`): a deterministic encoder
//! and a strict decoder.
//!
//! Each slot's FAT boot partition carries one `BGENV.DAT`; the loader boots
//! the valid environment with the highest revision and counts boots through
//! its `ustate`: INSTALLED becomes TESTING on the first boot, an unconfirmed
//! TESTING becomes FAILED with revision 0 on the next, and the loader falls
//! back to the other environment (EFI Boot Guard docs/UPDATE.md).
//! The format is EFI Boot Guard 0.13's packed `struct _BG_ENVDATA`
//! (include/envdata.h), as built by Debian 12 with the default
//! `ENV_MEM_USERVARS` of 128 KiB, so the file is always 132104 bytes:
//!
//! | offset | size   | field                                            |
//! |--------|--------|--------------------------------------------------|
//! | 0      | 510    | `kernelfile`: 255 UTF-16LE units, NUL-terminated |
//! | 510    | 510    | `kernelparams`: likewise                         |
//! | 1020   | 1      | `in_progress` (0 or 1)                           |
//! | 1021   | 1      | `ustate` (0 OK, 1 INSTALLED, 2 TESTING, 3 FAILED) |
//! | 1022   | 2      | `watchdog_timeout_sec`, little endian            |
//! | 1024   | 4      | `revision`, little endian                        |
//! | 1028   | 131072 | user variables                                   |
//! | 132100 | 4      | CRC-32 (zlib) of bytes 0..132100, little endian  |
//!
//! A user variable is `KEY\0`, a u32 payload size (4 + 8 + data length), a
//! u64 type and the data; records follow each other and a NUL where the
//! next key would start ends the list. Only what `bg_setenv -x` and
//! SWUpdate write is supported: type 32 (`USERVAR_TYPE_STRING_ASCII`, no
//! flags) with a NUL-terminated ASCII value.
//!
//! Why own the encoding: the only writer shipped with Debian, `bg_setenv`,
//! checks string lengths against 255 where only 254 characters fit with
//! their terminator, and widens bytes as signed `char`, so a non-ASCII byte
//! becomes garbage in the UTF-16 string. Encoding here refuses both, and a
//! golden image gets the same bytes on every build.
//!
//! [`decode`] is strict on purpose (canonical form only: zeros after each
//! terminator and after the variable list, known `ustate` and
//! `in_progress` values). It verifies our own output; an environment that
//! `libebgenv` rewrote on a device may carry stale bytes after a shortened
//! string and is rejected rather than guessed at.

use anyhow::{bail, ensure, Result};
use slotsmith_yaml::escape::{shown, shown_bytes};

/// UTF-16 units reserved for `kernelfile` and for `kernelparams`
/// (`ENV_STRING_LENGTH`), terminator included.
pub const ENV_STRING_LENGTH: usize = 255;
/// The longest string that fits with its NUL terminator. The loader forces
/// unit 254 to NUL, so a 255th character would be cut off at boot.
pub const MAX_STRING_CHARS: usize = ENV_STRING_LENGTH - 1;
/// Bytes reserved for user variables (`ENV_MEM_USERVARS`, Debian default).
pub const ENV_MEM_USERVARS: usize = 131_072;
/// Size of `BGENV.DAT` in bytes.
pub const ENV_SIZE: usize = CRC_OFFSET + 4;

const KERNELFILE_OFFSET: usize = 0;
const KERNELPARAMS_OFFSET: usize = KERNELFILE_OFFSET + 2 * ENV_STRING_LENGTH;
const IN_PROGRESS_OFFSET: usize = KERNELPARAMS_OFFSET + 2 * ENV_STRING_LENGTH;
const USTATE_OFFSET: usize = IN_PROGRESS_OFFSET + 1;
const WATCHDOG_OFFSET: usize = USTATE_OFFSET + 1;
const REVISION_OFFSET: usize = WATCHDOG_OFFSET + 2;
const USERDATA_OFFSET: usize = REVISION_OFFSET + 4;
const CRC_OFFSET: usize = USERDATA_OFFSET + ENV_MEM_USERVARS;

/// `USERVAR_TYPE_STRING_ASCII` with no user or internal flag bits.
const USERVAR_TYPE_STRING_ASCII: u64 = 32;
/// Payload bytes before the data: the u32 size itself and the u64 type.
const USERVAR_HEADER: usize = 4 + 8;

/// The update state of one environment (`ustate`).
///
/// `USTATE_UNKNOWN` (4) exists only as a display name in the tools; no
/// writer stores it, so it is not representable here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UState {
    /// Booted and confirmed, or never updated.
    Ok = 0,
    /// Written by an update, not booted yet; the loader turns it into
    /// `Testing` on its first boot.
    Installed = 1,
    /// Booted once and not confirmed; the loader marks it `Failed` (and
    /// its revision 0) on the next boot and falls back.
    Testing = 2,
    /// Rolled back; revision 0.
    Failed = 3,
}

impl UState {
    /// The name `bg_printenv` prints for this state.
    pub fn name(self) -> &'static str {
        match self {
            UState::Ok => "OK",
            UState::Installed => "INSTALLED",
            UState::Testing => "TESTING",
            UState::Failed => "FAILED",
        }
    }

    fn from_byte(b: u8) -> Result<UState> {
        Ok(match b {
            0 => UState::Ok,
            1 => UState::Installed,
            2 => UState::Testing,
            3 => UState::Failed,
            other => bail!("BGENV.DAT: ustate {other} is not one of 0 (OK) to 3 (FAILED)"),
        })
    }
}

/// One EFI Boot Guard environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgEnv {
    /// What the loader starts, e.g. `L:BOOT-A:linux.efi` (FAT volume label)
    /// or `C:BOOT0:linux.efi` (label from an `EFILABEL` file); printable
    /// ASCII, at most [`MAX_STRING_CHARS`].
    pub kernelfile: String,
    /// Load options passed to it (a UKI under Secure Boot ignores them);
    /// printable ASCII, at most [`MAX_STRING_CHARS`].
    pub kernelparams: String,
    /// Higher boots first; 0 marks a failed environment.
    pub revision: u32,
    pub ustate: UState,
    /// An update is being written: the loader skips this environment.
    pub in_progress: bool,
    /// Seconds the loader arms the watchdog for; 0 disables it.
    pub watchdog_timeout_sec: u16,
    /// String user variables in file order; keys unique, printable ASCII
    /// without `=`; values printable ASCII.
    pub user_vars: Vec<(String, String)>,
}

/// Encodes `env` as the 132104 bytes of a `BGENV.DAT`.
pub fn encode(env: &BgEnv) -> Result<Vec<u8>> {
    let mut out = vec![0u8; ENV_SIZE];
    put_string(&mut out, KERNELFILE_OFFSET, "kernelfile", &env.kernelfile)?;
    put_string(
        &mut out,
        KERNELPARAMS_OFFSET,
        "kernelparams",
        &env.kernelparams,
    )?;
    out[IN_PROGRESS_OFFSET] = u8::from(env.in_progress);
    out[USTATE_OFFSET] = env.ustate as u8;
    out[WATCHDOG_OFFSET..WATCHDOG_OFFSET + 2]
        .copy_from_slice(&env.watchdog_timeout_sec.to_le_bytes());
    out[REVISION_OFFSET..REVISION_OFFSET + 4].copy_from_slice(&env.revision.to_le_bytes());
    put_user_vars(&mut out[USERDATA_OFFSET..CRC_OFFSET], &env.user_vars)?;
    let crc = crc32fast::hash(&out[..CRC_OFFSET]);
    out[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes a `BGENV.DAT`, accepting only the canonical form [`encode`]
/// writes (see the module documentation).
pub fn decode(bytes: &[u8]) -> Result<BgEnv> {
    ensure!(
        bytes.len() == ENV_SIZE,
        "BGENV.DAT: {} bytes, expected {ENV_SIZE}",
        bytes.len()
    );
    let stored = u32::from_le_bytes(le4(&bytes[CRC_OFFSET..]));
    let computed = crc32fast::hash(&bytes[..CRC_OFFSET]);
    ensure!(
        stored == computed,
        "BGENV.DAT: CRC32 {stored:#010x} stored, {computed:#010x} computed"
    );
    let kernelfile = get_string(bytes, KERNELFILE_OFFSET, "kernelfile")?;
    let kernelparams = get_string(bytes, KERNELPARAMS_OFFSET, "kernelparams")?;
    let in_progress = match bytes[IN_PROGRESS_OFFSET] {
        0 => false,
        1 => true,
        other => bail!("BGENV.DAT: in_progress {other} is neither 0 nor 1"),
    };
    let ustate = UState::from_byte(bytes[USTATE_OFFSET])?;
    let watchdog_timeout_sec =
        u16::from_le_bytes([bytes[WATCHDOG_OFFSET], bytes[WATCHDOG_OFFSET + 1]]);
    let revision = u32::from_le_bytes(le4(&bytes[REVISION_OFFSET..]));
    let user_vars = get_user_vars(&bytes[USERDATA_OFFSET..CRC_OFFSET])?;
    Ok(BgEnv {
        kernelfile,
        kernelparams,
        revision,
        ustate,
        in_progress,
        watchdog_timeout_sec,
        user_vars,
    })
}

fn le4(b: &[u8]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}

/// Printable ASCII: what the loader's UTF-16 widening, the tools' output
/// and a kernel command line all agree on.
fn check_text(what: &str, value: &str, allow_equals: bool) -> Result<()> {
    if let Some(bad) = value
        .chars()
        .find(|c| !(' '..='~').contains(c) || (!allow_equals && *c == '='))
    {
        bail!(
            "BGENV.DAT: {what} \"{}\" contains {:?}; only printable ASCII is allowed{}",
            shown(value),
            bad,
            if allow_equals { "" } else { " (and no '=')" }
        );
    }
    Ok(())
}

fn put_string(out: &mut [u8], offset: usize, what: &str, value: &str) -> Result<()> {
    check_text(what, value, true)?;
    ensure!(
        value.len() <= MAX_STRING_CHARS,
        "BGENV.DAT: {what} is {} characters long, at most {MAX_STRING_CHARS} fit",
        value.len()
    );
    for (i, b) in value.bytes().enumerate() {
        out[offset + 2 * i] = b;
    }
    Ok(())
}

fn get_string(bytes: &[u8], offset: usize, what: &str) -> Result<String> {
    let units: Vec<u16> = bytes[offset..offset + 2 * ENV_STRING_LENGTH]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let Some(len) = units.iter().position(|&u| u == 0) else {
        bail!("BGENV.DAT: {what} has no NUL terminator in its {ENV_STRING_LENGTH} units");
    };
    ensure!(
        units[len..].iter().all(|&u| u == 0),
        "BGENV.DAT: {what} has stale data after its terminator at unit {len}"
    );
    let mut s = String::with_capacity(len);
    for (i, &u) in units[..len].iter().enumerate() {
        match u8::try_from(u) {
            Ok(b @ 0x20..=0x7e) => s.push(char::from(b)),
            _ => bail!("BGENV.DAT: {what} unit {i} is {u:#06x}, not printable ASCII"),
        }
    }
    Ok(s)
}

fn put_user_vars(area: &mut [u8], vars: &[(String, String)]) -> Result<()> {
    let mut pos = 0usize;
    for (i, (key, value)) in vars.iter().enumerate() {
        ensure!(
            !key.is_empty(),
            "BGENV.DAT: user variable {i} has an empty key"
        );
        check_text("user variable key", key, false)?;
        check_text(&format!("user variable {}", shown(key)), value, true)?;
        ensure!(
            !vars[..i].iter().any(|(k, _)| k == key),
            "BGENV.DAT: user variable \"{}\" is set twice",
            shown(key)
        );
        let payload = USERVAR_HEADER + value.len() + 1;
        let record = key.len() + 1 + payload;
        // One NUL must remain after the last record: it ends the list.
        let end = pos
            .checked_add(record)
            .filter(|&e| e < area.len())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "BGENV.DAT: user variables do not fit in {ENV_MEM_USERVARS} bytes (at \"{}\")",
                    shown(key)
                )
            })?;
        let size = u32::try_from(payload).expect("payload is below ENV_MEM_USERVARS");
        let mut p = pos;
        area[p..p + key.len()].copy_from_slice(key.as_bytes());
        p += key.len() + 1;
        area[p..p + 4].copy_from_slice(&size.to_le_bytes());
        p += 4;
        area[p..p + 8].copy_from_slice(&USERVAR_TYPE_STRING_ASCII.to_le_bytes());
        p += 8;
        area[p..p + value.len()].copy_from_slice(value.as_bytes());
        pos = end;
    }
    Ok(())
}

fn get_user_vars(area: &[u8]) -> Result<Vec<(String, String)>> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut pos = 0usize;
    while area[pos] != 0 {
        let n = vars.len();
        let rest = &area[pos..];
        let Some(key_len) = rest.iter().position(|&b| b == 0) else {
            bail!("BGENV.DAT: user variable {n} at byte {pos} has an unterminated key");
        };
        let key = ascii(&rest[..key_len], "user variable key", pos)?;
        check_text("user variable key", &key, false)?;
        let at = |what: &str| format!("BGENV.DAT: user variable \"{}\": {what}", shown(&key));
        let hdr = key_len + 1;
        ensure!(rest.len() >= hdr + USERVAR_HEADER, at("truncated header"));
        let payload = u32::from_le_bytes(le4(&rest[hdr..])) as usize;
        let ty = u64::from_le_bytes(
            rest[hdr + 4..hdr + 12]
                .try_into()
                .expect("slice of 8 bytes"),
        );
        ensure!(
            ty == USERVAR_TYPE_STRING_ASCII,
            at(&format!(
                "type {ty:#x} is not a plain ASCII string ({USERVAR_TYPE_STRING_ASCII:#x})"
            ))
        );
        // The record must leave at least one byte for the list terminator.
        ensure!(
            payload > USERVAR_HEADER && hdr + payload < rest.len(),
            at(&format!(
                "payload size {payload} does not fit the variable area"
            ))
        );
        let data = &rest[hdr + USERVAR_HEADER..hdr + payload];
        let (last, value) = data
            .split_last()
            .expect("payload is longer than the header");
        ensure!(*last == 0, at("value is not NUL-terminated"));
        let value = ascii(value, &format!("user variable {}", shown(&key)), pos)?;
        check_text(&format!("user variable {}", shown(&key)), &value, true)?;
        ensure!(!vars.iter().any(|(k, _)| *k == key), at("set twice"));
        vars.push((key, value));
        pos += hdr + payload;
    }
    ensure!(
        area[pos..].iter().all(|&b| b == 0),
        "BGENV.DAT: stale data after the user variable list, which ends at byte {pos}"
    );
    Ok(vars)
}

fn ascii(bytes: &[u8], what: &str, pos: usize) -> Result<String> {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.is_ascii() => Ok(s.to_owned()),
        _ => bail!(
            "BGENV.DAT: {what} at byte {pos} is not ASCII: \"{}\"",
            shown_bytes(bytes)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BgEnv {
        BgEnv {
            kernelfile: "L:BOOT-A:linux.efi".into(),
            kernelparams: "console=ttyS0".into(),
            revision: 2,
            ustate: UState::Installed,
            in_progress: false,
            watchdog_timeout_sec: 60,
            user_vars: vec![("slot".into(), "a".into()), ("empty".into(), String::new())],
        }
    }

    #[test]
    fn layout_offsets_match_the_packed_struct() {
        assert_eq!(
            (IN_PROGRESS_OFFSET, USTATE_OFFSET, WATCHDOG_OFFSET),
            (1020, 1021, 1022)
        );
        assert_eq!((REVISION_OFFSET, USERDATA_OFFSET), (1024, 1028));
        assert_eq!((CRC_OFFSET, ENV_SIZE), (132_100, 132_104));
        let bytes = encode(&sample()).unwrap();
        assert_eq!(&bytes[..4], b"L\0:\0");
        assert_eq!(&bytes[510..514], b"c\0o\0");
        assert_eq!(&bytes[1020..1028], &[0, 1, 60, 0, 2, 0, 0, 0]);
        // "slot\0", size 4 + 8 + 2, type 32, "a\0"
        assert_eq!(&bytes[1028..1047], b"slot\0\x0e\0\0\0\x20\0\0\0\0\0\0\0a\0");
    }

    #[test]
    fn round_trip_and_determinism() {
        let env = sample();
        let a = encode(&env).unwrap();
        assert_eq!(a, encode(&env).unwrap());
        assert_eq!(decode(&a).unwrap(), env);
    }

    #[test]
    fn encode_rejects_every_string_that_would_not_survive() {
        let long = "x".repeat(MAX_STRING_CHARS + 1);
        let cases: Vec<(BgEnv, &str)> = vec![
            (
                BgEnv {
                    kernelfile: long.clone(),
                    ..sample()
                },
                "at most 254",
            ),
            (
                BgEnv {
                    kernelparams: long,
                    ..sample()
                },
                "at most 254",
            ),
            (
                BgEnv {
                    kernelfile: "linüx.efi".into(),
                    ..sample()
                },
                "printable ASCII",
            ),
            (
                BgEnv {
                    kernelparams: "a\nb".into(),
                    ..sample()
                },
                "printable ASCII",
            ),
            (
                BgEnv {
                    user_vars: vec![("a=b".into(), "v".into())],
                    ..sample()
                },
                "no '='",
            ),
            (
                BgEnv {
                    user_vars: vec![(String::new(), "v".into())],
                    ..sample()
                },
                "empty key",
            ),
            (
                BgEnv {
                    user_vars: vec![("k".into(), "\u{7f}".into())],
                    ..sample()
                },
                "printable ASCII",
            ),
            (
                BgEnv {
                    user_vars: vec![("k".into(), "1".into()), ("k".into(), "2".into())],
                    ..sample()
                },
                "set twice",
            ),
            (
                BgEnv {
                    user_vars: vec![("k".into(), "v".repeat(ENV_MEM_USERVARS))],
                    ..sample()
                },
                "do not fit",
            ),
        ];
        for (env, want) in cases {
            let err = format!("{:#}", encode(&env).unwrap_err());
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
        let fits = BgEnv {
            kernelfile: "y".repeat(MAX_STRING_CHARS),
            ..sample()
        };
        assert_eq!(decode(&encode(&fits).unwrap()).unwrap(), fits);
    }

    #[test]
    fn user_vars_fill_the_area_up_to_the_terminator() {
        // One record of exactly ENV_MEM_USERVARS - 1 bytes fits, one byte
        // more does not: the list needs its terminating NUL.
        let fixed = 1 + 1 + USERVAR_HEADER + 1;
        let max = BgEnv {
            user_vars: vec![("k".into(), "v".repeat(ENV_MEM_USERVARS - 1 - fixed))],
            ..sample()
        };
        assert_eq!(decode(&encode(&max).unwrap()).unwrap(), max);
        let over = BgEnv {
            user_vars: vec![("k".into(), "v".repeat(ENV_MEM_USERVARS - fixed))],
            ..sample()
        };
        assert!(encode(&over).is_err());
    }

    fn resealed(mut b: Vec<u8>) -> Vec<u8> {
        let crc = crc32fast::hash(&b[..CRC_OFFSET]);
        b[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn decode_rejects_non_canonical_files() {
        let good = encode(&sample()).unwrap();
        let mut cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..ENV_SIZE - 1].to_vec(), "132103 bytes"),
            ([good.clone(), vec![0]].concat(), "132105 bytes"),
        ];
        let mut bad_crc = good.clone();
        bad_crc[5000] = 1;
        cases.push((bad_crc, "CRC32"));
        let edit = |at: usize, v: &[u8]| {
            let mut b = good.clone();
            b[at..at + v.len()].copy_from_slice(v);
            resealed(b)
        };
        cases.push((edit(IN_PROGRESS_OFFSET, &[2]), "in_progress 2"));
        cases.push((edit(USTATE_OFFSET, &[4]), "ustate 4"));
        cases.push((edit(0, &[0xfc, 0]), "not printable ASCII"));
        cases.push((edit(0, &[b'a', 1]), "not printable ASCII"));
        cases.push((
            edit(KERNELPARAMS_OFFSET + 2 * 45, b"x"),
            "stale data after its terminator",
        ));
        cases.push((
            resealed(
                good.iter()
                    .enumerate()
                    .map(|(i, &b)| if i < 510 && i % 2 == 0 { b'x' } else { b })
                    .collect(),
            ),
            "no NUL terminator",
        ));
        // user variable area: wrong type, oversized payload, stale tail
        cases.push((edit(USERDATA_OFFSET + 9, &[0x21]), "type 0x21"));
        cases.push((
            edit(USERDATA_OFFSET + 5, &[0xff, 0xff, 0xff, 0x7f]),
            "does not fit",
        ));
        cases.push((edit(USERDATA_OFFSET + 5, &[0x0c]), "does not fit"));
        cases.push((edit(USERDATA_OFFSET + 5, &[0x0d]), "not NUL-terminated"));
        cases.push((
            edit(CRC_OFFSET - 1, &[7]),
            "stale data after the user variable list",
        ));
        for (bytes, want) in cases {
            let err = format!("{:#}", decode(&bytes).unwrap_err());
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }
}
