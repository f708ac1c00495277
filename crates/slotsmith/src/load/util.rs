//! Small helpers of the load stage that the build, the plan and the CLI
//! also use: sizes as image files write them, the name rules of images,
//! layers and collections, how paths are shown, and streamed hashing.

use std::fs;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Parses `4096`, `64KiB`, `64MiB`, `1GiB`, `1TiB` (also `K`, `M`, `G`, `T`
/// with the same binary meaning, as `truncate` reads them).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Formats a byte count the way sizes are written in image files.
pub fn human(n: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20)] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    if (1 << 10..1 << 20).contains(&n) && n.is_multiple_of(1 << 10) {
        return format!("{}KiB", n >> 10);
    }
    if n >= 1 << 20 {
        return format!("{:.1}MiB ({n} bytes)", n as f64 / (1u64 << 20) as f64);
    }
    format!("{n} bytes")
}

/// An image name: it becomes a file name, a partition label prefix and a
/// SWUpdate field, so it is short and plain.
pub(super) fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// An image version: `1` to `1.2.3.4`, optionally `-suffix`.
pub(super) fn valid_version(v: &str) -> bool {
    let (core, suffix) = v.split_once('-').unwrap_or((v, ""));
    let parts: Vec<&str> = core.split('.').collect();
    (1..=4).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()))
        && suffix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && suffix.is_empty() != v.contains('-')
}

/// A directory or collection name: one path component, never `.` or `..`.
pub(super) fn valid_dir_name(n: &str) -> bool {
    !n.is_empty()
        && n != "."
        && n != ".."
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// A path relative to the project root when it is inside it, else as given.
/// Plans show these, so a plan does not depend on where the checkout lives.
pub fn display_path(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => p.to_string_lossy().into_owned(),
    }
}

/// sha256 and size of a file, streamed.
pub fn hash_file(p: &Path) -> std::io::Result<(String, u64)> {
    let mut f = fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("1GB"), None);
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999999999999TiB"), None);
        // Overflow of the multiplication, not of the number.
        assert_eq!(parse_size("16777216TiB"), None);
        assert_eq!(human(64 << 20), "64MiB");
        assert_eq!(human(4096), "4KiB");
        assert_eq!(human(1 << 46), "64TiB");
        assert_eq!(human(1536), "1536 bytes");
        assert_eq!(human((1 << 20) + 1), "1.0MiB (1048577 bytes)");
    }

    #[test]
    fn versions() {
        for ok in ["1", "1.0.0", "1.2.3.4", "2.0.0-rc1"] {
            assert!(valid_version(ok), "{ok}");
        }
        for bad in [
            "",
            "v1",
            "1..2",
            "1.2.3.4.5",
            "1.0-",
            "1.0 beta",
            "123456.1",
        ] {
            assert!(!valid_version(bad), "{bad}");
        }
    }

    #[test]
    fn names() {
        for ok in ["demo", "0x", "a-b-c"] {
            assert!(valid_name(ok), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "-a", "Demo", "a_b", long.as_str()] {
            assert!(!valid_name(bad), "{bad}");
        }
        for ok in ["meta-demo", "a.b_c"] {
            assert!(valid_dir_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(!valid_dir_name(bad), "{bad}");
        }
    }

    #[test]
    fn paths_inside_the_root_are_shown_relative() {
        let root = Path::new("/p");
        assert_eq!(display_path(root, Path::new("/p/layers/x")), "layers/x");
        assert_eq!(display_path(root, Path::new("/q/x")), "/q/x");
    }

    #[test]
    fn hashes_stream_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"abc").unwrap();
        let (sha, size) = hash_file(&p).unwrap();
        assert_eq!(size, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(hash_file(&dir.path().join("missing")).is_err());
    }
}
