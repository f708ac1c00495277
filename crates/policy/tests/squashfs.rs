//! Reading real squashfs images (made by mksquashfs and by tar2sqfs) the way
//! the audit reads a built image: modes, owners, symlink targets and
//! contents must come back exactly, and the baseline audit must pass on an
//! image packed from a hardened tree.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::Path;

use slotsmith_policy::audit::{audit, Status};
use slotsmith_policy::model::Profile;
use slotsmith_policy::rootfs::{EntryKind, Index, MemRootfs};
use slotsmith_policy::{generate, RootfsRead, SquashfsRootfs};

/// Writes a MemRootfs out as a directory tree (modes and owners included).
fn materialize(fs: &MemRootfs, dir: &Path) {
    let entries = fs.entries();
    for (p, e) in &entries {
        let dst = dir.join(p.trim_start_matches('/'));
        match &e.kind {
            EntryKind::Dir => std::fs::create_dir_all(&dst).unwrap(),
            EntryKind::File => {
                std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                std::fs::write(&dst, fs.read(p).unwrap().unwrap()).unwrap();
            }
            EntryKind::Symlink { target } => {
                std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                symlink(target, &dst).unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Modes and owners last: a 0555 directory must not block its children.
    for (p, e) in entries.iter().rev() {
        if matches!(e.kind, EntryKind::Symlink { .. }) {
            continue;
        }
        let dst = dir.join(p.trim_start_matches('/'));
        chown(&dst, Some(e.uid), Some(e.gid)).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(e.mode)).unwrap();
    }
}

fn sample_tree() -> MemRootfs {
    let mut fs = MemRootfs::new();
    fs.file("/etc/hostname", 0o644, "device\n")
        .file_owned("/etc/shadow", 0o640, 0, 42, "root:!*:1::::::\n")
        .file("/usr/bin/su", 0o4755, vec![0x7f, b'E', b'L', b'F', 0, 1, 2])
        .file_owned("/usr/sbin/unix_chkpwd", 0o2755, 0, 42, "x")
        .file("/etc/big", 0o600, vec![b'a'; 300_000])
        .dir("/tmp", 0o1777)
        .symlink("/lib", "usr/lib")
        .file("/usr/lib/x.conf", 0o644, "x")
        .symlink("/etc/systemd/system/debug-shell.service", "/dev/null");
    fs
}

fn check_sample(img: &SquashfsRootfs, expect_owner: bool) {
    let ix = Index::new(img);
    let e = |p: &str| ix.get(p).unwrap_or_else(|| panic!("{p} missing")).clone();
    assert_eq!(e("/usr/bin/su").mode, 0o4755);
    assert_eq!(e("/usr/sbin/unix_chkpwd").mode, 0o2755);
    assert_eq!(e("/tmp").mode, 0o1777);
    assert_eq!(e("/tmp").kind, EntryKind::Dir);
    assert_eq!(e("/etc/shadow").mode, 0o640);
    if expect_owner {
        assert_eq!((e("/etc/shadow").uid, e("/etc/shadow").gid), (0, 42));
    }
    assert_eq!(
        e("/lib").kind,
        EntryKind::Symlink {
            target: "usr/lib".into()
        }
    );
    assert_eq!(
        e("/etc/systemd/system/debug-shell.service").kind,
        EntryKind::Symlink {
            target: "/dev/null".into()
        }
    );
    assert_eq!(img.read("/etc/hostname").unwrap().unwrap(), b"device\n");
    assert_eq!(
        img.read("/usr/bin/su").unwrap().unwrap(),
        [0x7f, b'E', b'L', b'F', 0, 1, 2]
    );
    assert_eq!(img.read("/etc/big").unwrap().unwrap(), vec![b'a'; 300_000]);
    assert_eq!(e("/etc/big").size, 300_000);
    assert_eq!(img.read("/lib").unwrap(), None);
    assert_eq!(img.read("/nope").unwrap(), None);
    assert_eq!(ix.read_resolved("/lib/x.conf").unwrap().unwrap().1, b"x");
}

#[test]
fn mksquashfs_image_reads_back_exactly() {
    let mksquashfs = common::need("mksquashfs", "squashfs-tools");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("root");
    materialize(&sample_tree(), &dir);
    for comp in ["gzip", "xz", "zstd"] {
        let img = tmp.path().join(format!("img-{comp}.sqfs"));
        duct::cmd!(
            &mksquashfs,
            &dir,
            &img,
            "-all-root",
            "-noappend",
            "-comp",
            comp,
            "-quiet",
            "-no-progress"
        )
        .stdout_null()
        .run()
        .unwrap();
        let fs = SquashfsRootfs::open(&img).unwrap();
        check_sample(&fs, false);
        // -all-root: everything is owned by root.
        assert!(fs.entries().iter().all(|(_, e)| e.uid == 0 && e.gid == 0));
    }
}

#[test]
fn tar2sqfs_image_reads_back_with_owners() {
    let tar2sqfs = common::need("tar2sqfs", "squashfs-tools-ng");
    let tar = common::need("tar", "tar");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("root");
    materialize(&sample_tree(), &dir);
    let img = tmp.path().join("img.sqfs");
    let tarball = duct::cmd!(&tar, "--numeric-owner", "-C", &dir, "-cf", "-", ".")
        .stdout_capture()
        .run()
        .unwrap()
        .stdout;
    duct::cmd!(
        &tar2sqfs,
        "--quiet",
        "--no-skip",
        "--compressor",
        "zstd",
        &img
    )
    .stdin_bytes(tarball)
    .stdout_null()
    .run()
    .unwrap();
    let fs = SquashfsRootfs::open(&img).unwrap();
    check_sample(&fs, true);
}

#[test]
fn baseline_audit_passes_on_a_real_image_and_catches_a_packing_problem() {
    let mksquashfs = common::need("mksquashfs", "squashfs-tools");
    let rules = common::baseline();
    let mut fs = common::debian_like();
    let g = generate(&rules, Profile::Production, &BTreeSet::new(), &fs).unwrap();
    fs.apply(&g);
    let cmdline = common::good_cmdline(&g.cmdline);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("root");
    materialize(&fs, &dir);
    let img = tmp.path().join("rootfs.sqfs");
    duct::cmd!(
        &mksquashfs,
        &dir,
        &img,
        "-noappend",
        "-comp",
        "zstd",
        "-quiet",
        "-no-progress"
    )
    .stdout_null()
    .run()
    .unwrap();
    let image = SquashfsRootfs::open(&img).unwrap();
    let r = audit(&rules, Profile::Production, &[], &image, &cmdline);
    let fails: Vec<&str> = r
        .results
        .iter()
        .filter(|x| x.status == Status::Fail)
        .map(|x| x.message.as_str())
        .collect();
    assert!(fails.is_empty(), "{fails:#?}");
    // Same tree, but the packer is told to make everything world-writable
    // (as a broken pseudo-file definition would): the audit of the image,
    // not of the staging tree, catches it.
    let bad = tmp.path().join("bad.sqfs");
    duct::cmd!(
        &mksquashfs,
        &dir,
        &bad,
        "-noappend",
        "-quiet",
        "-no-progress",
        "-p",
        "/etc/passwd m 666 0 0"
    )
    .stdout_null()
    .run()
    .unwrap();
    let image = SquashfsRootfs::open(&bad).unwrap();
    let r = audit(&rules, Profile::Production, &[], &image, &cmdline);
    let res = r.results.iter().find(|x| x.id == "FILES-PERM-001").unwrap();
    assert_eq!(res.status, Status::Fail);
    assert!(
        res.message
            .contains("/etc/passwd is world-writable (mode 0666)"),
        "{}",
        res.message
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("junk.sqfs");
    std::fs::write(&p, vec![0u8; 8192]).unwrap();
    assert!(SquashfsRootfs::open(&p).is_err());
    assert!(SquashfsRootfs::open(&tmp.path().join("absent")).is_err());
}
