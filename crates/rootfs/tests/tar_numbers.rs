//! Every number a tar archive carries is untrusted (issue 8, defect 4): a
//! PAX `mtime` of `-9223372036854775808.5` used to panic the importer with
//! an overflow, and base-256 header fields wider than 8 bytes were silently
//! truncated. Each malformed or out-of-range number must be an error that
//! names the archive, the entry and the field, never a panic or a wrong
//! value.

mod common;

use common::*;

#[test]
fn pax_mtimes_out_of_range_or_malformed() {
    for v in [
        "-9223372036854775808.5",
        "-9223372036854775809",
        "9223372036854775808",
        "99999999999999999999999999999999999999999",
        "1e9",
        "1E9",
        "",
        "-",
        ".5",
        "+5",
        " 5",
        "5.5.5",
        "5.x",
        "0x10",
        "NaN",
        "inf",
        "\u{1b}[2J",
    ] {
        let msg = refused(&[pax(&[("mtime", v.as_bytes())]), file("f", b"x")]);
        assert!(msg.contains(": entry f: "), "{msg}");
        assert!(msg.contains("PAX mtime value"), "{v:?}: {msg}");
    }
    // The edges themselves are fine and exact.
    for (v, want) in [
        ("-9223372036854775808", i64::MIN),
        ("-9223372036854775807.5", i64::MIN),
        ("9223372036854775807.999999999", i64::MAX),
        ("-0.5", -1),
        ("1700000000.", 1_700_000_000),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let tar = tar_of(&[pax(&[("mtime", v.as_bytes())]), file("f", b"x")]);
        let tree = import(&write(tmp.path(), "t.tar", &tar), &tmp.path().join("s")).unwrap();
        let f = tree.get(&slotsmith_rootfs::RelPath::parse("f").unwrap());
        assert_eq!(f.unwrap().meta.mtime, want, "{v}");
    }
}

#[test]
fn pax_ids_sizes_and_device_numbers() {
    let cases: &[(&str, &str, &str)] = &[
        ("uid", "4294967296", "PAX uid 4294967296 is out of range"),
        ("uid", "-1", "invalid PAX uid value \"-1\""),
        ("gid", "+0", "invalid PAX gid value \"+0\""),
        ("gid", "18446744073709551616", "invalid PAX gid value"),
        ("size", "abc", "invalid PAX size value \"abc\""),
        (
            "size",
            "18446744073709551615",
            "differs from the header size",
        ),
        ("size", "", "invalid PAX size value \"\""),
    ];
    for (key, v, want) in cases {
        let msg = refused(&[pax(&[(key, v.as_bytes())]), file("f", b"x")]);
        assert!(msg.contains(want), "{key}={v:?}: {msg}");
    }
    let dev = dev_header("dev/x", b'3', 0o600, 0, 1, 1);
    for (key, v, want) in [
        (
            "SCHILY.devmajor",
            "4294967296",
            "PAX SCHILY.devmajor 4294967296 is out of range",
        ),
        (
            "SCHILY.devminor",
            "1x",
            "invalid PAX SCHILY.devminor value \"1x\"",
        ),
        (
            "SCHILY.devmajor",
            "5000",
            "device number 5000:1 does not fit",
        ),
    ] {
        let msg = refused(&[pax(&[(key, v.as_bytes())]), (dev.clone(), Vec::new())]);
        assert!(msg.contains(": entry dev/x: "), "{msg}");
        assert!(msg.contains(want), "{key}={v:?}: {msg}");
    }
}

#[test]
fn header_fields_base256_and_garbage() {
    let f = || header("f", b'0', 0o644, 0, 0, 1);
    let cases: Vec<(tar::Header, &str)> = vec![
        (
            with_field(f(), "uid", &base256(1 << 40, 8)),
            "the uid field (1099511627776) is out of range",
        ),
        (
            with_field(f(), "gid", &base256(-1, 8)),
            "the gid field (-1) is out of range",
        ),
        (
            with_field(f(), "mtime", &base256(1 << 90, 12)),
            "the mtime field (1237940039285380274899124224) is out of range",
        ),
        (
            with_field(f(), "mode", &base256(1 << 40, 8)),
            "the mode field (1099511627776) is out of range",
        ),
        (
            with_field(f(), "mode", b"0644x\0"),
            "the mode field \"0644x\" is not an octal number",
        ),
        (
            with_field(f(), "uid", b"+17\0"),
            "the uid field \"+17\" is not an octal number",
        ),
        (
            with_field(f(), "gid", b"   \0"),
            "the gid field \"   \" holds no number",
        ),
    ];
    for (h, want) in cases {
        let msg = refused(&[(h, b"x".to_vec())]);
        assert!(msg.contains(": entry f: "), "{msg}");
        assert!(msg.contains(want), "{want}: {msg}");
    }
    // A size the tar crate reads as 1 (it keeps only the low 8 bytes of a
    // 12-byte base-256 field) but which really is 2^64 + 1: refused, never
    // stored as a 1-byte file.
    let msg = refused(&[(
        with_field(f(), "size", &base256((1 << 64) + 1, 12)),
        b"x".to_vec(),
    )]);
    assert!(
        msg.contains("the size field (18446744073709551617) is out of range"),
        "{msg}"
    );
    // A negative base-256 mtime is a valid time before the epoch.
    let tmp = tempfile::tempdir().unwrap();
    let tar = tar_of(&[(
        with_field(f(), "mtime", &base256(-86400, 12)),
        b"x".to_vec(),
    )]);
    let tree = import(&write(tmp.path(), "t.tar", &tar), &tmp.path().join("s")).unwrap();
    let node = tree
        .get(&slotsmith_rootfs::RelPath::parse("f").unwrap())
        .unwrap();
    assert_eq!(node.meta.mtime, -86400);
}

#[test]
fn device_fields() {
    let dev = || dev_header("dev/x", b'4', 0o600, 0, 8, 0);
    for (field, bytes, want) in [
        (
            "devmajor",
            base256(1 << 40, 8),
            "the device major field (1099511627776) is out of range",
        ),
        (
            "devminor",
            base256(-1, 8),
            "the device minor field (-1) is out of range",
        ),
        (
            "devminor",
            b"9\0".to_vec(),
            "the device minor field \"9\" is not an octal number",
        ),
        (
            "devmajor",
            b"7777777\0".to_vec(),
            "device number 2097151:0 does not fit squashfs or ext4",
        ),
    ] {
        let msg = refused(&[(with_field(dev(), field, &bytes), Vec::new())]);
        assert!(msg.contains(": entry dev/x: "), "{msg}");
        assert!(msg.contains(want), "{field}: {msg}");
    }
}

#[test]
fn pax_record_lengths() {
    for (data, want) in [
        (&b"+9 path=x\n"[..], "malformed PAX record length \"+9\""),
        (
            b"99999999999999999999999 a=b\n",
            "malformed PAX record (no length)",
        ),
        (b"18446744073709551616 a=b\n", "malformed PAX record length"),
        (b"999 path=x\n", "bad length 999"),
        (b"3 a\n", "bad length 3"),
        (b"7 =abc\n", "empty key"),
        (b"8 pathx\n", "no `=`"),
        (b"pathx\n", "no length"),
    ] {
        let msg = refused(&[pax_raw(data), file("f", b"x")]);
        assert!(
            msg.contains("extension header before the first entry"),
            "{msg}"
        );
        assert!(
            msg.contains(want),
            "{}: {msg}",
            String::from_utf8_lossy(data)
        );
    }
}
