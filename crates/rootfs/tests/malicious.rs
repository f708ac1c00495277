//! Hostile tarballs: each must be rejected with an error naming the
//! archive, the entry and the reason, and nothing may be written anywhere
//! except numbered files in the content store.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;

/// Every path below `dir`, relative, without following symlinks.
fn snapshot(dir: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Imports `entries` (written in order) from a tarball nested deep in a
/// temp dir, and checks that the import fails with `expected` in the
/// message and that the only new files are store files.
fn rejects(entries: Vec<(tar::Header, Vec<u8>)>, bad_entry: &str, expected: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("a/b/c");
    std::fs::create_dir_all(&work).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (h, data) in &entries {
        b.append(h, &data[..]).unwrap();
    }
    let archive = write(&work, "evil.tar", &b.into_inner().unwrap());
    let store = work.join("store");
    let before = snapshot(tmp.path());

    let err = import(&archive, &store).expect_err("hostile archive accepted");
    let msg = format!("{err:#}");
    let want_prefix = format!("tarball {}: entry {bad_entry}: ", archive.display());
    assert!(
        msg.starts_with(&want_prefix),
        "{msg:?} lacks {want_prefix:?}"
    );
    assert!(msg.contains(expected), "{msg:?} lacks {expected:?}");

    let after = snapshot(tmp.path());
    for new in after.difference(&before) {
        let rel = Path::new(new).strip_prefix("a/b/c/store");
        let ok =
            new == "a/b/c/store" || rel.is_ok_and(|r| r.to_str().unwrap().parse::<u64>().is_ok());
        assert!(ok, "unexpected file {new} after rejecting {bad_entry}");
    }
    assert!(!tmp.path().join("outside").exists());
    assert!(!Path::new("/slotsmith-evil").exists());
}

fn file(name: &str, data: &[u8]) -> (tar::Header, Vec<u8>) {
    (
        header(name, b'0', 0o644, 0, 0, data.len() as u64),
        data.to_vec(),
    )
}

fn link(name: &str, ty: u8, target: &str) -> (tar::Header, Vec<u8>) {
    (link_header(name, ty, target), Vec::new())
}

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
        "bad\nname",
        "control character",
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
