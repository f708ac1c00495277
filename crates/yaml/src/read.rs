//! Reading YAML input files: bounded in size, decoded as UTF-8 with a
//! position for the first bad byte.
//!
//! **Input size limit:** an image, layer or policy file is at most
//! [`MAX_YAML_BYTES`] (1 MiB). The largest real one is a few KiB; without a
//! limit a 50 MB file of unknown keys took 92 s, 4.4 GB of memory and printed
//! 1.2 GB of errors. The file is read through a reader that stops one byte
//! past the limit, so a huge file, `/dev/zero` or a pipe that never ends is
//! refused after reading at most 1 MiB, with a message naming the file and
//! the limit.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::diag::{Diagnostic, Diagnostics};
use crate::escape::shown_bytes;

/// The size limit of one YAML input file, in bytes.
pub const MAX_YAML_BYTES: u64 = 1 << 20;

/// Reads at most `limit` bytes of `path`; a longer file (or an endless
/// device) is a diagnostic on `shown` naming the limit.
pub fn read_limited(path: &Path, shown: &Path, limit: u64) -> Result<Vec<u8>, Diagnostics> {
    let fail = |message: String| {
        let mut d = Diagnostics::default();
        d.file_error(shown, message);
        Err(d)
    };
    let too_big = || format!("is larger than the {} limit for this input", human(limit));
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot read: {e}")),
    };
    // The length of a regular file refuses it without reading; devices and
    // pipes report 0 and are caught by the bounded read below.
    if let Ok(m) = file.metadata() {
        if m.is_file() && m.len() > limit {
            return fail(too_big());
        }
    }
    let mut bytes = Vec::new();
    // Read one byte past the limit to tell "exactly at" from "over".
    if let Err(e) = file.take(limit.saturating_add(1)).read_to_end(&mut bytes) {
        return fail(format!("cannot read: {e}"));
    }
    if bytes.len() as u64 > limit {
        return fail(too_big());
    }
    Ok(bytes)
}

/// Reads a YAML input file: [`read_limited`] to [`MAX_YAML_BYTES`], then
/// [`decode`].
pub fn read_yaml(path: &Path, shown: &Path) -> Result<String, Diagnostics> {
    let bytes = read_limited(path, shown, MAX_YAML_BYTES)?;
    decode(shown, &bytes).map(str::to_string)
}

/// `bytes` as UTF-8; otherwise a diagnostic at the line and column (in
/// characters, 1-based) of the first byte that is not valid UTF-8.
pub fn decode<'a>(shown: &Path, bytes: &'a [u8]) -> Result<&'a str, Diagnostics> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let good = e.valid_up_to();
            // The prefix is valid UTF-8 by definition of valid_up_to.
            let prefix = std::str::from_utf8(&bytes[..good]).unwrap_or_default();
            let (line, col) = line_col(prefix);
            let end = good
                .saturating_add(e.error_len().unwrap_or(1))
                .min(bytes.len());
            let mut d = Diagnostics::default();
            d.push(Diagnostic {
                file: shown.to_path_buf(),
                line,
                col,
                key: String::new(),
                message: format!(
                    "not valid UTF-8 (bytes {}); YAML files must be UTF-8",
                    shown_bytes(&bytes[good..end])
                ),
            });
            Err(d)
        }
    }
}

/// The 1-based line and column of the position just after `prefix`.
pub fn line_col(prefix: &str) -> (usize, usize) {
    let line = prefix.bytes().filter(|&b| b == b'\n').count() + 1;
    let last = prefix.rfind('\n').map_or(prefix, |i| &prefix[i + 1..]);
    (line, last.chars().count() + 1)
}

/// `n` bytes in the largest binary unit that divides it.
fn human(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.trailing_zeros() >= shift {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_has_the_position_of_the_first_bad_byte() {
        let e = decode(Path::new("x.yaml"), b"a: 1\nbb: \xc3\xa9\xff\xfe\n").unwrap_err();
        let d = e.iter().next().unwrap();
        assert_eq!((d.line, d.col), (2, 6), "{d}");
        assert!(d.message.contains("\\xff"), "{d}");
        // A truncated sequence at the very end.
        let e = decode(Path::new("x.yaml"), b"\xe2\x82").unwrap_err();
        let d = e.iter().next().unwrap();
        assert_eq!((d.line, d.col), (1, 1), "{d}");
    }

    #[test]
    fn units() {
        assert_eq!(human(1 << 20), "1 MiB");
        assert_eq!(human(1536), "3 bytes".replace('3', "1536"));
        assert_eq!(human(4 << 10), "4 KiB");
    }
}
