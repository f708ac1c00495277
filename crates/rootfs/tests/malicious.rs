//! Hostile tarballs: each must be rejected with an error naming the
//! archive, the entry and the reason, and nothing may be written anywhere
//! except numbered files in the content store.

mod common;

use common::*;

#[test]
fn dotdot_path() {
    rejects(
        vec![file("../escape", b"x")],
        "../escape",
        "path escapes the rootfs",
    );
    rejects(
        vec![file("../../etc/passwd", b"x")],
        "../../etc/passwd",
        "path escapes the rootfs",
    );
}

#[test]
fn absolute_path_with_dotdot() {
    rejects(
        vec![file("/abs/../../x", b"x")],
        "/abs/../../x",
        "path escapes the rootfs",
    );
}

#[test]
fn symlink_to_root_then_file_beneath() {
    rejects(
        vec![link("etc", b'2', "/"), file("etc/slotsmith-evil", b"pwned")],
        "etc/slotsmith-evil",
        "/etc/slotsmith-evil is beneath symlink /etc -> /",
    );
}

#[test]
fn absolute_symlink_then_file_beneath() {
    let outside = std::env::temp_dir().join("outside");
    rejects(
        vec![
            link("lib", b'2', outside.to_str().unwrap()),
            file("lib/x", b"pwned"),
        ],
        "lib/x",
        &format!("/lib/x is beneath symlink /lib -> {}", outside.display()),
    );
    // Relative symlinks climbing out are just as inert.
    rejects(
        vec![
            link("up", b'2', "../../../.."),
            file("up/outside", b"pwned"),
        ],
        "up/outside",
        "beneath symlink /up -> ../../../..",
    );
}

#[test]
fn hardlink_escaping_the_rootfs() {
    rejects(
        vec![link("passwd", b'1', "../../etc/passwd")],
        "passwd",
        "hardlink target: path escapes the rootfs",
    );
}

#[test]
fn hardlink_to_a_path_absent_from_the_archive() {
    rejects(
        vec![
            file("etc/passwd", b"root\n"),
            link("shadow", b'1', "/etc/shadow"),
        ],
        "shadow",
        "hardlink target /etc/shadow does not exist",
    );
}

#[test]
fn hardlink_through_a_symlinked_parent() {
    rejects(
        vec![
            link("etc", b'2', "/etc"),
            link("shadow", b'1', "etc/shadow"),
        ],
        "shadow",
        "hardlink target /etc/shadow does not exist",
    );
}

#[test]
fn control_characters_in_names() {
    rejects(
        vec![file("bad\nname", b"x")],
        "bad\\nname",
        "control character",
    );
    rejects(
        vec![file("x\x1b[2Jy", b"x")],
        "x\\x1b[2Jy",
        "control character",
    );
}

#[test]
fn names_in_errors_are_escaped() {
    // A bidi override is no ASCII control, so the path parses; the error
    // about what lies beneath it must still show it escaped.
    rejects(
        vec![
            link("\u{202e}etc", b'2', "/\u{9b}31m"),
            file("\u{202e}etc/x", b"x"),
        ],
        "\\u{202e}etc/x",
        "/\\u{202e}etc/x is beneath symlink /\\u{202e}etc -> /\\u{9b}31m",
    );
}

#[test]
fn oversized_pax_header_is_refused_without_buffering_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut raw = Vec::new();
    let size = 64u64 << 20; // 64 MiB of PAX "records"
    let mut h = header("././@PaxHeader", b'x', 0o644, 0, 0, size);
    h.set_cksum();
    raw.extend_from_slice(h.as_bytes());
    raw.resize(raw.len() + size as usize, b'9');
    raw.extend_from_slice(&[0u8; 1024]);
    let archive = write(tmp.path(), "big.tar.zst", &compress(&raw, "tar.zst"));
    let err = import(&archive, &tmp.path().join("store")).unwrap_err();
    assert!(format!("{err:#}").contains("larger than"), "{err:#}");
}

#[test]
fn truncated_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tar = fixture_tar();
    tar.truncate(tar.len() / 2);
    let archive = write(tmp.path(), "cut.tar", &tar);
    let err = import(&archive, &tmp.path().join("store")).unwrap_err();
    assert!(format!("{err:#}").starts_with("tarball "), "{err:#}");
}
