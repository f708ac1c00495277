//! Import → export → tar2sqfs round trips, checked with the real squashfs
//! tools: ownership, setuid, devices, links and xattrs must come from the
//! inputs, and the output must be byte-for-byte reproducible.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use slotsmith_rootfs::import::{from_directory, Ownership};
use slotsmith_rootfs::{Kind, RelPath};

fn p(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

fn check_tree(tree: &slotsmith_rootfs::Tree) {
    let su = tree.get(&p("usr/bin/su")).unwrap();
    assert_eq!((su.meta.mode, su.meta.uid, su.meta.gid), (0o4755, 0, 0));
    assert_eq!(tree.get(&p("usr")).unwrap().kind, Kind::Dir);
    let ping = tree.get(&p("usr/bin/ping")).unwrap();
    assert_eq!(
        ping.meta.xattrs.get("security.capability").unwrap(),
        &CAP_NET_RAW
    );
    assert_eq!(
        tree.get(&p("dev/console")).unwrap().kind,
        Kind::CharDev { major: 5, minor: 1 }
    );
    assert_eq!(
        tree.get(&p("etc/mtab")).unwrap().kind,
        Kind::Symlink {
            target: "/proc/self/mounts".into()
        }
    );
    assert_eq!(
        tree.get(&p("bin/ash")).unwrap().kind,
        Kind::Hardlink {
            target: p("bin/busybox")
        }
    );
    assert_eq!(tree.get(&p("home/user/.profile")).unwrap().meta.uid, 1000);
    assert!(tree.get(&p(&long_path())).is_some());
    assert_eq!(
        tree.total_file_bytes(),
        15 + 26 + 10 + 12 + 300_000 + 16 + 5
    );
}

fn check_sqfs(sqfs: &Path) {
    let l = listing(sqfs);
    let line = |k: &str| {
        l.get(k)
            .unwrap_or_else(|| panic!("{k} missing from {l:#?}"))
    };
    assert!(line("/").starts_with("drwxr-xr-x 0/0"), "{}", line("/"));
    assert!(
        line("/usr/bin/su").starts_with("-rwsr-xr-x 0/0"),
        "{}",
        line("/usr/bin/su")
    );
    assert!(line("/etc/shadow").starts_with("-rw-r----- 0/0"));
    let console = line("/dev/console");
    assert!(console.starts_with("crw------- 0/5"), "{console}");
    assert!(console.contains(" 5,  1 "), "{console}");
    assert!(line("/dev/sda").starts_with("brw-rw---- 0/6"));
    assert!(line("/run/initctl").starts_with("prw------- 0/0"));
    assert!(line("/home/user").starts_with("drwx------ 1000/1000"));
    assert!(line("/etc/mtab").ends_with("/etc/mtab -> /proc/self/mounts"));
    assert!(line("/bin/sh").ends_with("/bin/sh -> busybox"));
    assert!(
        line("/usr/bin/su").contains("2023-11-14 22:13"),
        "mtime kept"
    );
    assert!(l.contains_key(&format!("/{}", long_path())));
    let s = sqfs.to_str().unwrap();
    assert_eq!(
        run(&["unsquashfs", "-cat", s, "bin/busybox"]),
        "busybox binary\n"
    );
    assert_eq!(
        run(&["unsquashfs", "-cat", s, "bin/ash"]),
        "busybox binary\n"
    );
    let stat = run(&["rdsquashfs", "-s", "/bin/ash", s]);
    assert!(stat.contains("Hard link count: 2"), "{stat}");
    let xattrs = run(&["rdsquashfs", "-x", "/usr/bin/ping", s]);
    assert!(xattrs.contains("security.capability"), "{xattrs}");
    let big = duct::cmd!("unsquashfs", "-cat", s, "usr/lib/big.bin")
        .stdout_capture()
        .run()
        .unwrap();
    assert!(big.stdout == big_content(), "big file content differs");
}

#[test]
fn every_compression_round_trips_through_tar2sqfs() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = fixture_tar();
    let mut exports = Vec::new();
    for ext in ["tar", "tar.gz", "tar.xz", "tar.zst", "tar.bz2"] {
        let archive = write(tmp.path(), &format!("base.{ext}"), &compress(&tar, ext));
        let store = tmp.path().join(format!("store-{ext}"));
        let mut last = (0, 0);
        let tree =
            slotsmith_rootfs::import::from_tarball(&archive, &store, &mut |e, b| last = (e, b))
                .unwrap_or_else(|e| panic!("{ext}: {e:#}"));
        assert_eq!(last.1, tree.total_file_bytes(), "{ext}: progress bytes");
        check_tree(&tree);
        // Only numbered content files are ever written.
        for f in fs::read_dir(&store).unwrap() {
            let f = f.unwrap();
            assert!(f.file_type().unwrap().is_file());
            assert!(f.file_name().to_str().unwrap().parse::<u64>().is_ok());
        }
        exports.push(export(&tree));
    }
    assert!(
        exports.windows(2).all(|w| w[0] == w[1]),
        "same tree, same bytes"
    );

    let out = write(tmp.path(), "out.tar", &exports[0]);
    // GNU tar reads our stream too, with the ./ convention.
    let gnu = run(&["tar", "--numeric-owner", "-tvf", out.to_str().unwrap()]);
    assert!(gnu.lines().next().unwrap().ends_with(" ./"), "{gnu}");
    assert!(gnu.contains("-rwsr-xr-x 0/0"), "{gnu}");
    assert!(gnu.contains("./bin/busybox link to ./bin/ash"), "{gnu}");
    let sqfs = tmp.path().join("out.sqfs");
    tar2sqfs(&out, &sqfs, &[]);
    check_sqfs(&sqfs);
}

#[test]
fn export_and_tar2sqfs_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = write(tmp.path(), "base.tar", &fixture_tar());
    let a = export(&import(&archive, &tmp.path().join("s1")).unwrap());
    let b = export(&import(&archive, &tmp.path().join("s2")).unwrap());
    assert_eq!(a, b, "independent imports export identically");
    assert_eq!(
        &a[a.len() - 1024..],
        &[0u8; 1024][..],
        "two zero blocks at the end"
    );
    let out = write(tmp.path(), "out.tar", &a);
    let mut images = Vec::new();
    for (i, jobs) in [None, None, Some("1"), Some("2")].into_iter().enumerate() {
        let sqfs = tmp.path().join(format!("{i}.sqfs"));
        let extra: Vec<&str> = jobs.map(|j| vec!["-j", j]).unwrap_or_default();
        tar2sqfs(&out, &sqfs, &extra);
        images.push(fs::read(&sqfs).unwrap());
    }
    assert!(
        images.windows(2).all(|w| w[0] == w[1]),
        "tar2sqfs output differs between runs"
    );
}

#[test]
fn clamped_mtimes_reach_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = write(tmp.path(), "base.tar", &fixture_tar());
    let mut tree = import(&archive, &tmp.path().join("s")).unwrap();
    tree.clamp_mtimes(86_400);
    let out = write(tmp.path(), "out.tar", &export(&tree));
    let sqfs = tmp.path().join("out.sqfs");
    tar2sqfs(&out, &sqfs, &[]);
    let l = listing(&sqfs);
    assert!(l.values().all(|line| line.contains("1970-01-02")), "{l:#?}");
}

#[test]
fn directory_import_never_follows_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), "outside\n").unwrap();
    fs::write(root.join("etc/hostname"), "box\n").unwrap();
    fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname2")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("linkdir")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("abs")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from(0o640),
        0,
    )
    .unwrap();
    let xattr_ok = match rustix::fs::lsetxattr(
        root.join("etc/hostname"),
        "user.slotsmith",
        b"\x00bin\nary",
        rustix::fs::XattrFlags::empty(),
    ) {
        Ok(()) => true,
        Err(e) if e == rustix::io::Errno::NOTSUP => {
            eprintln!(
                "NOTE: this filesystem refuses user.* xattrs ({e}); xattr import not checked"
            );
            false
        }
        Err(e) => panic!("setting a user xattr: {e}"),
    };

    let tree = from_directory(&root, Ownership::Preserve, &mut |_, _| {}).unwrap();
    assert_eq!(
        tree.get(&p("linkdir")).unwrap().kind,
        Kind::Symlink {
            target: outside.to_str().unwrap().into()
        }
    );
    assert!(
        tree.get(&p("linkdir/secret")).is_none(),
        "symlinked dir was followed"
    );
    assert_eq!(
        tree.get(&p("abs")).unwrap().kind,
        Kind::Symlink {
            target: "/etc/passwd".into()
        }
    );
    assert_eq!(tree.get(&p("fifo")).unwrap().kind, Kind::Fifo);
    assert_eq!(
        tree.get(&p("etc/hostname2")).unwrap().kind,
        Kind::Hardlink {
            target: p("etc/hostname")
        }
    );
    let uid = rustix::process::getuid().as_raw();
    assert_eq!(tree.get(&p("etc/hostname")).unwrap().meta.uid, uid);
    if xattr_ok {
        assert_eq!(
            tree.get(&p("etc/hostname"))
                .unwrap()
                .meta
                .xattrs
                .get("user.slotsmith")
                .unwrap(),
            b"\x00bin\nary"
        );
    }
    let rooted = from_directory(&root, Ownership::Root, &mut |_, _| {}).unwrap();
    assert!(rooted
        .iter()
        .all(|(_, n)| n.meta.uid == 0 && n.meta.gid == 0));
    assert!(from_directory(&root.join("linkdir"), Ownership::Root, &mut |_, _| {}).is_err());

    let out = write(tmp.path(), "out.tar", &export(&rooted));
    let sqfs = tmp.path().join("out.sqfs");
    tar2sqfs(&out, &sqfs, &[]);
    let l = listing(&sqfs);
    assert!(l["/linkdir"].ends_with(&format!("-> {}", outside.display())));
    assert!(!l.contains_key("/linkdir/secret"));
    assert!(l["/fifo"].starts_with("p"));
    let s = sqfs.to_str().unwrap();
    assert!(run(&["rdsquashfs", "-s", "/etc/hostname2", s]).contains("Hard link count: 2"));
    if xattr_ok {
        assert!(run(&["rdsquashfs", "-x", "/etc/hostname", s]).contains("user.slotsmith"));
    }

    // A source that changed after import is caught at export time.
    fs::write(root.join("etc/hostname"), "a much longer hostname\n").unwrap();
    let err = slotsmith_rootfs::export::write_tar(&rooted, Vec::new(), &mut |_| {}).unwrap_err();
    assert!(
        format!("{err:#}").contains("changed during the build"),
        "{err:#}"
    );
}

#[test]
fn our_own_export_reimports_identically() {
    // Exercises the PAX side of the importer: long paths come back as PAX
    // `path` records, xattrs as binary SCHILY.xattr values (this one has a
    // newline and a NUL in it), and the hardlink group body moved to the
    // first path in sorted order.
    let tmp = tempfile::tempdir().unwrap();
    let archive = write(tmp.path(), "base.tar", &fixture_tar());
    let mut tree = import(&archive, &tmp.path().join("s1")).unwrap();
    let long_name = format!("{LONG_DIR}/{}", "c".repeat(150));
    let node = tree.get(&p("etc/shadow")).unwrap().clone();
    tree.insert(p(&long_name), node).unwrap();
    let meta = &mut tree.get_mut(&p("etc/shadow")).unwrap().meta;
    meta.xattrs.insert("user.bin".into(), b"a\nb\0c".to_vec());
    meta.uid = 3_000_000; // beyond ustar's octal range → PAX uid
    meta.mtime = -1; // before the epoch → PAX mtime
    let first = export(&tree);
    let again = import(
        &write(tmp.path(), "again.tar", &first),
        &tmp.path().join("s2"),
    )
    .unwrap();
    assert_eq!(export(&again), first);
    let shadow = again.get(&p("etc/shadow")).unwrap();
    assert_eq!(shadow.meta.xattrs["user.bin"], b"a\nb\0c");
    assert_eq!((shadow.meta.uid, shadow.meta.mtime), (3_000_000, -1));
    assert!(again.get(&p(&long_name)).is_some());
    assert_eq!(
        again.get(&p("bin/busybox")).unwrap().kind,
        Kind::Hardlink {
            target: p("bin/ash")
        }
    );
    let gnu = run(&[
        "tar",
        "--numeric-owner",
        "-tvf",
        tmp.path().join("again.tar").to_str().unwrap(),
    ]);
    assert!(
        gnu.contains(&long_name),
        "GNU tar reads our PAX path records"
    );
}
