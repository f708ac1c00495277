//! Checked parsing of every number and record a tar archive carries: the
//! numeric header fields (octal or GNU base-256) and PAX / GNU extension
//! records.
//!
//! All of it is hostile data. Each parser accepts one documented syntax,
//! computes with checked arithmetic and turns garbage, overflow and values
//! out of range into an error naming the field and showing the (escaped,
//! shortened) value, never a panic or a silently truncated number. The
//! `tar` crate's own field accessors are not used for values we keep: they
//! accept a leading `+`, truncate base-256 fields wider than 8 bytes and
//! cast with `as`.

use anyhow::{anyhow, bail, Result};
use slotsmith_yaml::escape::shown_bytes;

/// `value` escaped for a message, cut after 64 bytes.
pub fn shown_value(value: &[u8]) -> String {
    const KEEP: usize = 64;
    if value.len() <= KEEP {
        format!("\"{}\"", shown_bytes(value))
    } else {
        format!(
            "\"{}…\" ({} bytes)",
            shown_bytes(&value[..KEEP]),
            value.len()
        )
    }
}

/// A numeric header field as a signed number.
///
/// Octal: optional leading and trailing spaces, at least one digit `0-7`,
/// ended by the field's end, a space or a NUL. Base-256 (GNU, for values
/// octal cannot hold): the first byte has its top bit set, and the field's
/// remaining bits are a big-endian two's-complement number whose sign is the
/// first byte's bit 6. A 12-byte field has 95 such bits, so an `i128`
/// always holds it; wider fields are refused.
pub fn header_number(field: &[u8], what: &str) -> Result<i128> {
    let Some(&first) = field.first() else {
        bail!("the {what} field is empty");
    };
    if first & 0x80 != 0 {
        if field.len() > 12 {
            bail!("the {what} field is too wide for a base-256 number");
        }
        // Bits 0-6 of the first byte, sign-extended from bit 6.
        let mut v = i128::from(first & 0x7f);
        if first & 0x40 != 0 {
            v -= 0x80;
        }
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(i128::from(b)))
                .ok_or_else(|| anyhow!("the {what} field overflows"))?;
        }
        return Ok(v);
    }
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    let text = trim_spaces(&field[..end]);
    if text.is_empty() {
        bail!(
            "the {what} field {} holds no number",
            shown_value(&field[..end])
        );
    }
    let mut v: i128 = 0;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            bail!(
                "the {what} field {} is not an octal number",
                shown_value(&field[..end])
            );
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(i128::from(b - b'0')))
            .ok_or_else(|| anyhow!("the {what} field overflows"))?;
    }
    Ok(v)
}

fn trim_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' '] = s {
        s = rest;
    }
    s
}

/// A header field that must be a non-negative `u64`.
pub fn header_u64(field: &[u8], what: &str) -> Result<u64> {
    let v = header_number(field, what)?;
    u64::try_from(v).map_err(|_| anyhow!("the {what} field ({v}) is out of range"))
}

/// A header field that must fit a `u32` (ids, modes, device numbers).
pub fn header_u32(field: &[u8], what: &str) -> Result<u32> {
    let v = header_number(field, what)?;
    u32::try_from(v).map_err(|_| anyhow!("the {what} field ({v}) is out of range"))
}

/// A header field that must fit an `i64` (times; base-256 may be negative).
pub fn header_i64(field: &[u8], what: &str) -> Result<i64> {
    let v = header_number(field, what)?;
    i64::try_from(v).map_err(|_| anyhow!("the {what} field ({v}) is out of range"))
}

/// Parses PAX records (`<len> <key>=<value>\n`) by their length prefix.
/// Values are binary (xattrs may contain newlines), so splitting on `\n`
/// would be wrong. `<len>` is decimal digits only and counts the whole
/// record; trailing NUL padding after the last record is allowed.
pub fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && !rest.iter().all(|b| *b == 0) {
        let sp = rest
            .iter()
            .take(21)
            .position(|b| *b == b' ')
            .ok_or_else(|| anyhow!("malformed PAX record (no length)"))?;
        let len = decimal_u64(&rest[..sp])
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| anyhow!("malformed PAX record length {}", shown_value(&rest[..sp])))?;
        // Shortest record: "<len> k=\n".
        if len < sp + 4 || len > rest.len() || rest[len - 1] != b'\n' {
            bail!("malformed PAX record (bad length {len})");
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| anyhow!("malformed PAX record (no `=`)"))?;
        if eq == 0 {
            bail!("malformed PAX record (empty key)");
        }
        let key = std::str::from_utf8(&record[..eq])
            .map_err(|_| anyhow!("PAX record key {} is not UTF-8", shown_value(&record[..eq])))?;
        out.push((key.to_string(), record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

/// ASCII decimal digits only (no sign, no spaces), checked.
fn decimal_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// A PAX integer record (`size`, `uid`, `gid`, `SCHILY.devmajor`, ...):
/// decimal digits only.
pub fn pax_uint(value: &[u8], key: &str) -> Result<u64> {
    decimal_u64(value).ok_or_else(|| anyhow!("invalid PAX {key} value {}", shown_value(value)))
}

/// A PAX time: `-?digits(.digits*)?`, decimal seconds. We keep whole
/// seconds, rounding toward negative infinity like `tar`; a value outside
/// `i64` seconds (after rounding) is an error.
pub fn pax_time(value: &[u8], key: &str) -> Result<i64> {
    let bad = || anyhow!("invalid PAX {key} value {}", shown_value(value));
    let (negative, digits) = match value {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, value),
    };
    let (int, frac) = match digits.iter().position(|b| *b == b'.') {
        Some(i) => (&digits[..i], &digits[i + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    if !frac.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let magnitude = i128::from(decimal_u64(int).ok_or_else(bad)?);
    let has_frac = frac.iter().any(|b| *b != b'0');
    let secs = if negative {
        -magnitude - i128::from(has_frac)
    } else {
        magnitude
    };
    i64::try_from(secs)
        .map_err(|_| anyhow!("PAX {key} value {} is out of range", shown_value(value)))
}

/// Percent-decoding for libarchive's xattr names (`%XX`, two hex digits).
pub fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
            match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => {
                    // Two hex digits: at most 255.
                    out.push(u8::try_from(h * 16 + l).unwrap_or(u8::MAX));
                    i += 3;
                }
                _ => bail!("bad %-escape in xattr name {}", shown_value(b)),
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|e| anyhow!("xattr name {} is not UTF-8", shown_value(&e.into_bytes())))
}

/// Standard base64 (libarchive writes it without padding).
pub fn base64_decode(s: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => bail!("invalid base64 in a LIBARCHIVE.xattr value"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, v: &[u8]) -> Vec<u8> {
        let body_len = k.len() + v.len() + 3;
        let mut len = body_len + 1;
        while len != body_len + len.to_string().len() {
            len = body_len + len.to_string().len();
        }
        let mut r = format!("{len} {k}=").into_bytes();
        r.extend_from_slice(v);
        r.push(b'\n');
        r
    }

    #[test]
    fn pax_records_are_length_delimited() {
        let mut data = rec("path", b"a/b");
        data.extend(rec("SCHILY.xattr.user.x", b"1\n2 =3"));
        let recs = parse_pax(&data).unwrap();
        assert_eq!(recs[0], ("path".to_string(), b"a/b".to_vec()));
        assert_eq!(
            recs[1],
            ("SCHILY.xattr.user.x".to_string(), b"1\n2 =3".to_vec())
        );
        for bad in [
            &b"99 path=x\n"[..],
            b"+9 path=x\n",
            b"-9 path=x\n",
            b"99999999999999999999999 path=x\n",
            b"18446744073709551617 a=b\n",
            b"5 =x\n",
            b"6 a=b\n\n",
            b"0 \n",
            b"3 a\n",
            b" 9 path=x\n",
        ] {
            assert!(parse_pax(bad).is_err(), "{}", shown_value(bad));
        }
    }

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(b"1700000000.5", "mtime").unwrap(), 1700000000);
        assert_eq!(pax_time(b"-1.5", "mtime").unwrap(), -2);
        assert_eq!(pax_time(b"-1", "mtime").unwrap(), -1);
        assert_eq!(pax_time(b"5.", "mtime").unwrap(), 5);
        assert_eq!(pax_time(b"-0.0", "mtime").unwrap(), 0);
        assert_eq!(
            pax_time(b"-9223372036854775808", "mtime").unwrap(),
            i64::MIN
        );
        assert_eq!(
            pax_time(b"9223372036854775807.999", "mtime").unwrap(),
            i64::MAX
        );
        for bad in [
            &b"-9223372036854775808.5"[..],
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999999999",
            b"1e9",
            b"",
            b"-",
            b".5",
            b"+5",
            b" 5",
            b"5 ",
            b"5.x",
            b"5.5.5",
            b"0x10",
            b"\xff",
        ] {
            let err = pax_time(bad, "mtime").unwrap_err().to_string();
            assert!(err.contains("PAX mtime"), "{err}");
        }
    }

    #[test]
    fn header_numbers() {
        assert_eq!(header_number(b"0000644\0", "mode").unwrap(), 0o644);
        assert_eq!(header_number(b"  644 \0", "mode").unwrap(), 0o644);
        assert_eq!(header_number(b"644", "mode").unwrap(), 0o644);
        for bad in [
            &b"\0\0\0\0"[..],
            b"    ",
            b"+644\0",
            b"0o644\0",
            b"64 4\0",
            b"8\0",
            b"",
        ] {
            assert!(header_number(bad, "mode").is_err(), "{}", shown_value(bad));
        }
        // Base-256, positive and negative, 8 and 12 bytes.
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 5;
        assert_eq!(header_number(&f, "size").unwrap(), 5);
        f[1] = 1; // 2^80 + 5: far beyond u64, an error, not a truncation
        assert!(header_u64(&f, "size").is_err());
        assert_eq!(header_number(&[0xff; 8], "mtime").unwrap(), -1);
        assert_eq!(header_i64(&[0xff; 12], "mtime").unwrap(), -1);
        assert!(header_u64(&[0xff; 12], "size").is_err(), "negative size");
        assert!(header_u32(&[0x80, 0, 0, 1, 0, 0, 0, 0], "uid").is_err());
        let mut big = [0u8; 12];
        big[0] = 0xbf;
        big[1..].fill(0xff);
        assert!(header_i64(&big, "mtime").is_err());
        assert!(header_number(&[0x80; 13], "x").is_err());
    }

    #[test]
    fn libarchive_encodings() {
        assert_eq!(base64_decode(b"AQAAAg").unwrap(), [1, 0, 0, 2]);
        assert_eq!(base64_decode(b"aGk=").unwrap(), b"hi");
        assert!(base64_decode(b"a b").is_err());
        assert_eq!(percent_decode("user.a%3Db").unwrap(), "user.a=b");
        assert!(percent_decode("user.%+f").is_err());
        assert!(percent_decode("user.%4").is_err());
        assert!(percent_decode("user.%ff").is_err(), "not UTF-8");
        assert!(pax_uint(b"+5", "uid").is_err());
        assert!(pax_uint(b"18446744073709551616", "uid").is_err());
        assert_eq!(pax_uint(b"18446744073709551615", "size").unwrap(), u64::MAX);
    }
}
