//! Names the target filesystems cannot hold (issue 8, defects 6 and 7):
//! refused at import (tarball and directory) and in layers, naming the
//! entry and the limit; and at the limits themselves, accepted and read
//! back by the real tools (`tar2sqfs`/`rdsquashfs`/`unsquashfs`, `mke2fs -d`
//! plus `debugfs`, `e2fsck`).

mod common;

use std::fs;
use std::path::Path;

use common::*;
use slotsmith_rootfs::import::{from_directory, Ownership};
use slotsmith_rootfs::limits::{self, Target};
use slotsmith_rootfs::overlay::{apply, Op};
use slotsmith_rootfs::{Content, Kind, Meta, Node, RelPath, Tree};

fn p(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

/// How an over-long name is shown in messages: escaped, cut in the middle.
fn cut(s: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let head: String = c[..80].iter().collect();
    let tail: String = c[c.len() - 80..].iter().collect();
    format!("{head}…{tail} ({} bytes)", s.len())
}

#[test]
fn tarball_names_paths_and_depth() {
    let name = "n".repeat(256);
    rejects(
        vec![pax(&[("path", name.as_bytes())]), file("x", b"x")],
        &cut(&name),
        "is 256 bytes long; squashfs and ext4 hold at most 255 bytes per name",
    );
    let long = vec!["p".repeat(240); 17].join("/");
    rejects(
        vec![pax(&[("path", long.as_bytes())]), file("x", b"x")],
        &cut(&long),
        "path is 4097 bytes long; at most 4095 fit PATH_MAX",
    );
    let deep = "d/".repeat(257);
    rejects(
        vec![pax(&[("path", deep.as_bytes())]), file("x", b"x")],
        &cut(&deep),
        "path is 257 levels deep; at most 256 are allowed",
    );
    // GNU long names (the tar crate writes `././@LongLink`) are checked too.
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header("x", b'0', 0o644, 0, 0, 1);
    b.append_data(&mut h, format!("ok/{name}"), &b"x"[..])
        .unwrap();
    let archive = write(tmp.path(), "gnu.tar", &b.into_inner().unwrap());
    let err = import(&archive, &tmp.path().join("s")).unwrap_err();
    assert!(format!("{err:#}").contains("256 bytes long"), "{err:#}");
}

#[test]
fn tarball_links_and_devices() {
    let target = "t".repeat(4096);
    rejects(
        vec![
            pax(&[("linkpath", target.as_bytes())]),
            link("l", b'2', "x"),
        ],
        "l",
        "/l: symlink target is 4096 bytes long; squashfs and ext4 hold at most 4095",
    );
    rejects(
        vec![(
            dev_header("dev/odd", b'3', 0o600, 0, 5000, 2_000_000),
            Vec::new(),
        )],
        "dev/odd",
        "/dev/odd: device number 5000:2000000 does not fit squashfs or ext4 \
         (major at most 4095, minor at most 1048575)",
    );
    rejects(
        vec![(dev_header("dev/b", b'4', 0o600, 0, 8, 1 << 20), Vec::new())],
        "dev/b",
        "device number 8:1048576 does not fit",
    );
}

#[test]
fn tarball_xattrs() {
    let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
        (
            b"SCHILY.xattr.user.a\x1b]0;pwned\x07b".to_vec(),
            b"1".to_vec(),
            "xattr name user.a\\x1b]0;pwned\\x07b contains a control character",
        ),
        (
            b"SCHILY.xattr.user.\xc2\x9bx".to_vec(),
            b"1".to_vec(),
            "xattr name user.\\u{9b}x contains a control character",
        ),
        (
            b"SCHILY.xattr.foo.bar".to_vec(),
            b"1".to_vec(),
            "xattr name foo.bar: squashfs and ext4 cannot store it",
        ),
        (
            b"SCHILY.xattr.system.data".to_vec(),
            b"1".to_vec(),
            "xattr name system.data: squashfs and ext4 cannot store it",
        ),
        (
            b"SCHILY.xattr.user.".to_vec(),
            b"1".to_vec(),
            "xattr name user.: squashfs and ext4 cannot store it",
        ),
        (
            b"SCHILY.xattr.".to_vec(),
            b"1".to_vec(),
            "xattr name is empty",
        ),
        (
            format!("SCHILY.xattr.user.{}", "x".repeat(251)).into_bytes(),
            b"1".to_vec(),
            "is 256 bytes long; at most 255 are allowed",
        ),
        (
            b"SCHILY.xattr.user.big".to_vec(),
            vec![b'v'; 65537],
            "xattr user.big has a 65537-byte value; at most 65536 bytes are allowed",
        ),
        (
            b"LIBARCHIVE.xattr.user.%01x".to_vec(),
            b"MQ".to_vec(),
            "xattr name user.\\x01x contains a control character",
        ),
    ];
    for (key, value, want) in cases {
        let key = String::from_utf8(key).unwrap();
        rejects(vec![pax(&[(&key, &value)]), file("f", b"x")], "f", want);
    }
}

/// A tree at every limit at once.
fn at_the_limits(tmp: &Path, ext4: bool) -> Tree {
    let content = write(tmp, "content", b"data\n");
    let mut t = Tree::new(Meta::new(0o755, 0, 0, 0));
    let f = || {
        Node::new(
            Kind::File {
                content: Content::Source(content.clone()),
                size: 5,
            },
            Meta::new(0o644, 0, 0, 0),
        )
    };
    t.insert(p(&"n".repeat(255)), f()).unwrap();
    t.insert(p(&format!("{}leaf", "d/".repeat(255))), f())
        .unwrap();
    let link = Node::new(
        Kind::Symlink {
            target: "t".repeat(4095),
        },
        Meta::new(0o777, 0, 0, 0),
    );
    t.insert(p("longlink"), link).unwrap();
    let dev = Kind::CharDev {
        major: 4095,
        minor: if ext4 { 65535 } else { 1_048_575 },
    };
    t.insert(p("dev/max"), Node::new(dev, Meta::new(0o600, 0, 0, 0)))
        .unwrap();
    let mut meta = Meta::new(0o644, 0, 0, 0);
    meta.xattrs
        .insert(format!("user.{}", "x".repeat(250)), b"v".to_vec());
    meta.xattrs.insert("user.big".into(), vec![7; 3000]);
    t.insert(p("xattrs"), Node::new(f().kind, meta)).unwrap();
    if ext4 {
        // `/` + 20 x (99 bytes + `/`) + 38 bytes: 2039 bytes, the most
        // mke2fs -d survives.
        let long = format!(
            "{}{}",
            format!("{}/", "e".repeat(99)).repeat(20),
            "e".repeat(38)
        );
        t.insert(p(&long), f()).unwrap();
    }
    t
}

#[test]
fn squashfs_holds_what_the_limits_allow() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = at_the_limits(tmp.path(), false);
    limits::check_tree(&tree, Target::Squashfs).unwrap();
    let tar = write(tmp.path(), "out.tar", &export(&tree));
    let sqfs = tmp.path().join("out.sqfs");
    tar2sqfs(&tar, &sqfs, &[]);
    let l = listing(&sqfs);
    assert!(l.contains_key(&format!("/{}", "n".repeat(255))));
    assert!(l.contains_key(&format!("/{}leaf", "d/".repeat(255))));
    let s = sqfs.to_str().unwrap();
    let dev = run(&["rdsquashfs", "-s", "/dev/max", s]);
    assert!(dev.contains("Device number: 4095:1048575"), "{dev}");
    let link = run(&["rdsquashfs", "-s", "/longlink", s]);
    assert!(link.contains(&"t".repeat(4095)), "{link}");
    let x = run(&["rdsquashfs", "-x", "/xattrs", s]);
    assert!(x.contains(&format!("user.{}", "x".repeat(250))), "{x}");

    // What squashfs cannot store is refused before tar2sqfs drops it.
    let mut acl = tree.clone();
    let node = acl.get_mut(&p("xattrs")).unwrap();
    node.meta
        .xattrs
        .insert("system.posix_acl_access".into(), vec![2, 0, 0, 0]);
    let err = slotsmith_rootfs::export::write_tar(&acl, Vec::new(), &mut |_| {}).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("/xattrs: xattr name system.posix_acl_access: squashfs cannot store it"),
        "{msg}"
    );
}

#[test]
fn ext4_holds_what_the_limits_allow_and_refuses_a_2040_byte_path() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = at_the_limits(tmp.path(), true);
    let staging = tmp.path().join("staging");
    fs::create_dir(&staging).unwrap();
    slotsmith_rootfs::ext4::materialize(&tree, &staging).unwrap();
    let xattr_dir = tmp.path().join("xattrs");
    fs::create_dir(&xattr_dir).unwrap();
    let fix = slotsmith_rootfs::ext4::debugfs_script(&tree, &xattr_dir).unwrap();
    for (path, value) in &fix.xattr_files {
        fs::write(path, value).unwrap();
    }
    let script = write(tmp.path(), "fix.debugfs", fix.script.as_bytes());
    let img = tmp.path().join("root.ext4");
    let img_s = img.to_str().unwrap();
    let staging_s = staging.to_str().unwrap();
    run(&[
        "mke2fs",
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        "4096",
        "-O",
        "^has_journal",
        "-d",
        staging_s,
        img_s,
        "64M",
    ]);
    let out = duct::cmd!("debugfs", "-w", "-f", &script, img_s)
        .stdout_null()
        .stderr_capture()
        .run()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs "))
        .collect();
    assert!(errors.is_empty(), "debugfs: {errors:?}");
    run(&["e2fsck", "-fn", img_s]);
    let dev = run(&["debugfs", "-R", "stat /dev/max", img_s]);
    assert!(dev.contains("4095:65535"), "{dev}");
    let x = run(&["debugfs", "-R", "ea_list /xattrs", img_s]);
    assert!(x.contains(&format!("user.{}", "x".repeat(250))), "{x}");

    // One byte more and mke2fs -d would abort with a corrupted heap.
    let mut longer = tree.clone();
    let long = format!(
        "{}{}",
        format!("{}/", "e".repeat(99)).repeat(20),
        "e".repeat(39)
    );
    longer
        .insert(p(&long), tree.get(&p("xattrs")).unwrap().clone())
        .unwrap();
    let staging2 = tmp.path().join("staging2");
    fs::create_dir(&staging2).unwrap();
    let err = slotsmith_rootfs::ext4::materialize(&longer, &staging2).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with("the rootfs cannot be stored in ext4: /eeee"),
        "{msg}"
    );
    assert!(
        msg.contains("path is 2040 bytes long; ext4 images hold at most 2039"),
        "{msg}"
    );
    assert!(
        fs::read_dir(&staging2).unwrap().next().is_none(),
        "nothing staged"
    );
    assert!(slotsmith_rootfs::ext4::debugfs_script(&longer, &xattr_dir).is_err());

    // debugfs mknod, which makes the device nodes, takes 16-bit minors.
    let mut minor = tree.clone();
    let dev = Kind::BlockDev {
        major: 8,
        minor: 65536,
    };
    minor
        .insert(p("dev/big"), Node::new(dev, Meta::new(0o600, 0, 0, 0)))
        .unwrap();
    let err = slotsmith_rootfs::ext4::debugfs_script(&minor, &xattr_dir).unwrap_err();
    assert!(
        format!("{err:#}")
            .contains("/dev/big: device number 8:65536: ext4 images take minors up to 65535"),
        "{err:#}"
    );

    // ext4 keeps all xattrs of an inode in one block.
    let mut fat = tree.clone();
    fat.get_mut(&p("xattrs"))
        .unwrap()
        .meta
        .xattrs
        .insert("user.more".into(), vec![0; 2000]);
    let err = slotsmith_rootfs::ext4::debugfs_script(&fat, &xattr_dir).unwrap_err();
    assert!(
        format!("{err:#}").contains("/xattrs: xattrs need"),
        "{err:#}"
    );
}

#[test]
fn directory_import_depth() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let mut d = root.clone();
    for _ in 0..256 {
        d.push("d");
    }
    fs::create_dir_all(&d).unwrap();
    let tree = from_directory(&root, Ownership::Root, &mut |_, _| {}).unwrap();
    assert!(tree.get(&p(&["d"; 256].join("/"))).is_some());
    fs::create_dir(d.join("d")).unwrap();
    fs::write(d.join("d/f"), "x").unwrap();
    let err = from_directory(&root, Ownership::Root, &mut |_, _| {}).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(&format!("directory {}: entry /d/d/", root.display())),
        "{msg}"
    );
    assert!(
        msg.contains("path is 257 levels deep; at most 256 are allowed"),
        "{msg}"
    );
}

#[test]
fn layer_entries() {
    let mut t = Tree::new(Meta::new(0o755, 0, 0, 0));
    let put = |path: &str, kind: Kind| Op::Put {
        path: p(path),
        node: Node::new(kind, Meta::new(0o644, 0, 0, 0)),
    };
    let cases = [
        (
            put(&"x".repeat(300), Kind::Dir),
            "is 300 bytes long; squashfs and ext4 hold at most 255 bytes per name",
        ),
        (put(&"d/".repeat(300), Kind::Dir), "path is 300 levels deep"),
        (
            put(
                "l",
                Kind::Symlink {
                    target: String::new(),
                },
            ),
            "/l: symlink target is empty",
        ),
        (
            put(
                "dev/x",
                Kind::BlockDev {
                    major: 5000,
                    minor: 2_000_000,
                },
            ),
            "/dev/x: device number 5000:2000000 does not fit",
        ),
    ];
    for (op, want) in cases {
        let err = apply(&mut t, std::slice::from_ref(&op)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("layer: put /"), "{msg}");
        assert!(msg.contains(want), "{msg}");
    }
    assert_eq!(t.len(), 1, "nothing was inserted");
}
