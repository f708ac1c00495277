//! Shared fixtures for the integration tests: tarballs built at test time
//! with the `tar` crate (as data, so they can claim root ownership, device
//! nodes and capabilities that the test user could never create), the
//! compressors, and small wrappers around the host tools.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use slotsmith_rootfs::Tree;

pub const MTIME: u64 = 1_700_000_000;
/// cap_net_raw+ep, VFS_CAP_REVISION_2.
pub const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];
pub const LONG_DIR: &str = "usr/share/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

pub fn long_path() -> String {
    format!("{LONG_DIR}/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb/long-file.txt")
}

/// Deterministic pseudo-random bytes, big enough to cross buffer sizes.
pub fn big_content() -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A header with every field set explicitly. The name is written raw, so
/// hostile names (`../x`, absolute paths) can be expressed.
pub fn header(name: &str, ty: u8, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    let n = &mut h.as_old_mut().name;
    n[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(tar::EntryType::new(ty));
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(MTIME);
    h.set_size(size);
    h.set_cksum();
    h
}

pub fn link_header(name: &str, ty: u8, target: &str) -> tar::Header {
    let mut h = header(name, ty, 0o777, 0, 0, 0);
    let l = &mut h.as_old_mut().linkname;
    l[..target.len()].copy_from_slice(target.as_bytes());
    h.set_cksum();
    h
}

pub fn dev_header(name: &str, ty: u8, mode: u32, gid: u64, major: u32, minor: u32) -> tar::Header {
    let mut h = header(name, ty, mode, 0, gid, 0);
    h.set_device_major(major).unwrap();
    h.set_device_minor(minor).unwrap();
    h.set_cksum();
    h
}

/// The root-owned fixture rootfs as an uncompressed tar stream.
pub fn fixture_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, name: &str, mode: u32, id: u64| {
        b.append(&header(name, b'5', mode, id, id, 0), &[][..])
            .unwrap();
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, name: &str, mode: u32, id: u64, data: &[u8]| {
        b.append(&header(name, b'0', mode, id, id, data.len() as u64), data)
            .unwrap();
    };
    dir(&mut b, "./", 0o755, 0);
    dir(&mut b, "./bin/", 0o755, 0);
    file(&mut b, "./bin/busybox", 0o755, 0, b"busybox binary\n");
    b.append(&link_header("./bin/sh", b'2', "busybox"), &[][..])
        .unwrap();
    b.append(&link_header("./bin/dotsh", b'2', "./busybox"), &[][..])
        .unwrap();
    b.append(&link_header("./bin/ash", b'1', "./bin/busybox"), &[][..])
        .unwrap();
    dir(&mut b, "./etc/", 0o755, 0);
    b.append(
        &link_header("./etc/mtab", b'2', "/proc/self/mounts"),
        &[][..],
    )
    .unwrap();
    file(
        &mut b,
        "./etc/shadow",
        0o640,
        0,
        b"root:*:19000:0:99999:7:::\n",
    );
    // No ./usr/ entries: missing parents must be created.
    file(&mut b, "./usr/bin/su", 0o4755, 0, b"su binary\n");
    b.append_pax_extensions([("SCHILY.xattr.security.capability", &CAP_NET_RAW[..])])
        .unwrap();
    file(&mut b, "./usr/bin/ping", 0o755, 0, b"ping binary\n");
    file(&mut b, "./usr/lib/big.bin", 0o644, 0, &big_content());
    b.append(&dev_header("./dev/console", b'3', 0o600, 5, 5, 1), &[][..])
        .unwrap();
    b.append(&dev_header("./dev/sda", b'4', 0o660, 6, 8, 0), &[][..])
        .unwrap();
    b.append(&header("./run/initctl", b'6', 0o600, 0, 0, 0), &[][..])
        .unwrap();
    dir(&mut b, "./home/user/", 0o700, 1000);
    file(
        &mut b,
        "./home/user/.profile",
        0o644,
        1000,
        b"export PS1='$ '\n",
    );
    // > 100 bytes: the tar crate writes a GNU long-name header.
    let long = long_path();
    let mut h = header("placeholder", b'0', 0o644, 0, 0, 5);
    b.append_data(&mut h, &long, &b"long\n"[..]).unwrap();
    b.into_inner().unwrap()
}

pub fn compress(tar: &[u8], ext: &str) -> Vec<u8> {
    match ext {
        "tar" => tar.to_vec(),
        "tar.gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        "tar.xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        "tar.zst" => zstd::stream::encode_all(tar, 3).unwrap(),
        "tar.bz2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        other => panic!("unknown extension {other}"),
    }
}

pub fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

pub fn import(archive: &Path, store: &Path) -> anyhow::Result<Tree> {
    slotsmith_rootfs::import::from_tarball(archive, store, &mut |_, _| {})
}

pub fn export(tree: &Tree) -> Vec<u8> {
    slotsmith_rootfs::export::write_tar(tree, Vec::new(), &mut |_| {}).unwrap()
}

/// Runs a host tool, returning stdout; panics with stderr on failure.
pub fn run(args: &[&str]) -> String {
    let out = duct::cmd(args[0], &args[1..])
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tar2sqfs` with the tar file on stdin.
pub fn tar2sqfs(tar: &Path, sqfs: &Path, extra: &[&str]) {
    let mut args = vec!["-q", "-f", "-c", "gzip"];
    args.extend_from_slice(extra);
    let sqfs = sqfs.to_str().unwrap();
    args.push(sqfs);
    let out = duct::cmd("tar2sqfs", &args)
        .env("LC_ALL", "C")
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin_path(tar)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
    assert!(
        out.status.success(),
        "tar2sqfs failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `unsquashfs -lln` as (path, line) pairs keyed by the image path.
pub fn listing(sqfs: &Path) -> std::collections::BTreeMap<String, String> {
    run(&["unsquashfs", "-lln", sqfs.to_str().unwrap()])
        .lines()
        .filter_map(|l| {
            let i = l.find("squashfs-root")?;
            let path = l[i + "squashfs-root".len()..]
                .split(" -> ")
                .next()?
                .to_string();
            let path = if path.is_empty() {
                "/".to_string()
            } else {
                path
            };
            Some((path, l.to_string()))
        })
        .collect()
}

/// Every path below `dir`, relative, without following symlinks.
pub fn snapshot(dir: &Path) -> BTreeSet<String> {
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
pub fn rejects(entries: Vec<(tar::Header, Vec<u8>)>, bad_entry: &str, expected: &str) {
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
    assert_escaped(&msg);

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

pub fn file(name: &str, data: &[u8]) -> (tar::Header, Vec<u8>) {
    (
        header(name, b'0', 0o644, 0, 0, data.len() as u64),
        data.to_vec(),
    )
}

pub fn link(name: &str, ty: u8, target: &str) -> (tar::Header, Vec<u8>) {
    (link_header(name, ty, target), Vec::new())
}

/// No byte that could drive a terminal reaches an error message.
pub fn assert_escaped(msg: &str) {
    let bad = msg
        .chars()
        .find(|c| {
            c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
        });
    assert!(bad.is_none(), "raw {bad:?} in {msg:?}");
}

/// One PAX record, `"<len> <key>=<value>\n"`, with its self-counting length.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// A PAX extension header (type `x`) with `data` as its body, verbatim.
pub fn pax_raw(data: &[u8]) -> (tar::Header, Vec<u8>) {
    (
        header("././@PaxHeader", b'x', 0o644, 0, 0, data.len() as u64),
        data.to_vec(),
    )
}

/// A PAX extension header holding `records`.
pub fn pax(records: &[(&str, &[u8])]) -> (tar::Header, Vec<u8>) {
    pax_raw(
        &records
            .iter()
            .flat_map(|(k, v)| pax_record(k, v))
            .collect::<Vec<_>>(),
    )
}

/// `entries` as a tar stream.
pub fn tar_of(entries: &[(tar::Header, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (h, data) in entries {
        b.append(h, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// Imports `entries` and returns the (escaped, checked) error message of an
/// archive that must be refused, whatever part of it is blamed.
pub fn refused(entries: &[(tar::Header, Vec<u8>)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let archive = write(tmp.path(), "evil.tar", &tar_of(entries));
    let err = import(&archive, &tmp.path().join("store")).expect_err("hostile archive accepted");
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(&format!("tarball {}: ", archive.display())),
        "{msg}"
    );
    assert_escaped(&msg);
    msg
}

/// `h` with the raw bytes of one of its numeric fields replaced (and the
/// checksum fixed), for values the `tar` crate's setters cannot write.
pub fn with_field(mut h: tar::Header, field: &str, bytes: &[u8]) -> tar::Header {
    let f: &mut [u8] = match field {
        "mode" => &mut h.as_old_mut().mode,
        "uid" => &mut h.as_old_mut().uid,
        "gid" => &mut h.as_old_mut().gid,
        "size" => &mut h.as_old_mut().size,
        "mtime" => &mut h.as_old_mut().mtime,
        "devmajor" => &mut h.as_ustar_mut().unwrap().dev_major,
        "devminor" => &mut h.as_ustar_mut().unwrap().dev_minor,
        other => panic!("unknown field {other}"),
    };
    f.fill(0);
    f[..bytes.len()].copy_from_slice(bytes);
    h.set_cksum();
    h
}

/// A GNU base-256 field of `len` bytes holding `v` (two's complement).
pub fn base256(v: i128, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut x = v;
    for b in out.iter_mut().rev() {
        *b = (x & 0xff) as u8;
        x >>= 8;
    }
    out[0] = (out[0] & 0x7f) | 0x80;
    out
}
