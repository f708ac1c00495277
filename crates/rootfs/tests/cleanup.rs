//! `remove_tree` against the trees that broke `remove_dir_all` (issue 8,
//! defect 7): deeper than 2000 levels, under a descriptor limit of 64, with
//! unreadable and read-only directories on the way, and symlinks to a
//! directory outside that must survive.
//!
//! Alone in its own test binary: the descriptor limit is per process. When
//! run as root the walk runs in a thread that has dropped to an
//! unprivileged uid (credentials are per thread on Linux), so mode 0 really
//! denies access and the chmod path is exercised.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::process::{Resource, Rlimit};
use slotsmith_rootfs::cleanup::remove_tree;

const DEPTH: usize = 2100;
const NOBODY: u32 = 65534;

/// Runs `f` as an unprivileged user: in a thread that drops to `nobody`
/// when we are root, directly otherwise.
fn unprivileged<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            if rustix::process::geteuid().is_root() {
                rustix::thread::set_thread_groups(&[]).unwrap();
                let gid = rustix::fs::Gid::from_raw(NOBODY);
                rustix::thread::set_thread_res_gid(gid, gid, gid).unwrap();
                let uid = rustix::fs::Uid::from_raw(NOBODY);
                rustix::thread::set_thread_res_uid(uid, uid, uid).unwrap();
                assert!(!rustix::process::geteuid().is_root());
            }
            f()
        })
        .join()
        .unwrap()
    })
}

fn open_dir(parent: impl AsFd, name: &str) -> OwnedFd {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

fn write_file(dir: impl AsFd, name: &str) {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o444),
    )
    .unwrap();
    rustix::io::write(&fd, b"x").unwrap();
}

/// `root/d/d/.../d`, `DEPTH` levels, built through descriptors (the path
/// is longer than PATH_MAX). Every level has a file; every 100th a symlink
/// to `outside`; level 700 an unreadable side directory with a file in it;
/// levels 1000 and 1500 of the chain itself are made mode 0 and read-only.
fn build_deep(root: &Path, outside: &Path) {
    fs::create_dir(root).unwrap();
    let mut cur =
        rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    let mut locked: Vec<(OwnedFd, u32)> = Vec::new();
    for level in 0..DEPTH {
        rustix::fs::mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).unwrap();
        write_file(&cur, "f");
        if level % 100 == 0 {
            rustix::fs::symlinkat(outside, &cur, "out").unwrap();
        }
        if level == 700 {
            rustix::fs::mkdirat(&cur, "side", Mode::from_raw_mode(0o755)).unwrap();
            write_file(open_dir(&cur, "side"), "g");
            rustix::fs::chmodat(&cur, "side", Mode::empty(), AtFlags::empty()).unwrap();
        }
        let next = open_dir(&cur, "d");
        if level == 1000 || level == 1500 {
            let fd = open_dir(&cur, "d");
            locked.push((fd, if level == 1000 { 0 } else { 0o500 }));
        }
        cur = next;
    }
    // Lock the chain only now: we needed to walk through it.
    for (fd, mode) in locked {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).unwrap();
    }
}

fn canary(base: &Path) -> PathBuf {
    let outside = base.join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), "canary").unwrap();
    outside
}

#[test]
fn deeper_than_2000_levels_under_64_descriptors() {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let base = tmp.path().to_path_buf();
    unprivileged(move || {
        let outside = canary(&base);
        let std_tree = base.join("for-std");
        let ours = base.join("for-us");
        build_deep(&std_tree, &outside);
        build_deep(&ours, &outside);

        let old = rustix::process::getrlimit(Resource::Nofile);
        rustix::process::setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(64),
                maximum: old.maximum,
            },
        )
        .unwrap();
        // The defect: one descriptor per level.
        let std_result = fs::remove_dir_all(&std_tree);
        let result = remove_tree(&ours);
        let cleanup = remove_tree(&std_tree);
        rustix::process::setrlimit(Resource::Nofile, old).unwrap();

        let err = std_result.expect_err("remove_dir_all managed 2100 levels in 64 descriptors");
        assert_eq!(err.raw_os_error(), Some(24), "EMFILE expected: {err}");
        result.unwrap();
        cleanup.unwrap();
        assert!(!ours.exists() && !std_tree.exists());
        assert_eq!(fs::read_to_string(outside.join("keep")).unwrap(), "canary");
    });
}

#[test]
fn wide_directories_links_and_odd_tops() {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let base = tmp.path().to_path_buf();
    unprivileged(move || {
        let outside = canary(&base);
        // Wide: each subdirectory is listed once, not once per sibling.
        let wide = base.join("wide");
        fs::create_dir(&wide).unwrap();
        for i in 0..300 {
            fs::create_dir(wide.join(format!("d{i}"))).unwrap();
            fs::write(wide.join(format!("d{i}/f")), "x").unwrap();
            fs::write(wide.join(format!("f{i}")), "x").unwrap();
        }
        std::os::unix::fs::symlink(&outside, wide.join("d7/out")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", wide.join("dangling")).unwrap();
        fs::set_permissions(wide.join("d9"), fs::Permissions::from_mode(0o300)).unwrap();
        fs::set_permissions(&wide, fs::Permissions::from_mode(0o000)).unwrap();
        remove_tree(&wide).unwrap();
        assert!(fs::symlink_metadata(&wide).is_err());

        // The top itself: missing, a file, a symlink to a directory.
        remove_tree(&base.join("missing")).unwrap();
        fs::write(base.join("file"), "x").unwrap();
        remove_tree(&base.join("file")).unwrap();
        let link = base.join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        remove_tree(&link).unwrap();
        assert!(fs::symlink_metadata(&link).is_err());
        assert_eq!(fs::read_to_string(outside.join("keep")).unwrap(), "canary");
    });
    // A directory of another user is not ours to open up: as root, make
    // one and let the unprivileged walk fail on it, naming it.
    if rustix::process::geteuid().is_root() {
        let theirs = tmp.path().join("theirs");
        fs::create_dir_all(theirs.join("inner")).unwrap();
        fs::write(theirs.join("inner/f"), "x").unwrap();
        let t = theirs.clone();
        let err = unprivileged(move || remove_tree(&t)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("removing {}", theirs.display())),
            "{msg}"
        );
        assert!(theirs.join("inner/f").exists());
    }
}
