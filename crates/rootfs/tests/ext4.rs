//! ext4 path: materialize the fixture as the current user, build an image
//! with `mke2fs -d`, apply the debugfs script, and read the inodes back.

mod common;

use std::fs;

use common::*;
use slotsmith_rootfs::ext4::{debugfs_script, materialize};

#[test]
fn staging_plus_debugfs_reproduces_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = write(
        tmp.path(),
        "base.tar.gz",
        &compress(&fixture_tar(), "tar.gz"),
    );
    let tree = import(&archive, &tmp.path().join("store")).unwrap();

    let staging = tmp.path().join("staging");
    fs::create_dir(&staging).unwrap();
    materialize(&tree, &staging).unwrap();
    assert!(fs::symlink_metadata(staging.join("etc/mtab"))
        .unwrap()
        .is_symlink());
    assert_eq!(
        fs::read_link(staging.join("etc/mtab")).unwrap().to_str(),
        Some("/proc/self/mounts")
    );
    let console = fs::symlink_metadata(staging.join("dev/console")).unwrap();
    assert!(
        console.is_file() && console.len() == 0,
        "device placeholder"
    );
    assert_eq!(
        fs::read(staging.join("usr/lib/big.bin")).unwrap(),
        big_content()
    );
    assert!(materialize(&tree, &staging)
        .unwrap_err()
        .to_string()
        .contains("not empty"));

    let xattr_dir = tmp.path().join("xattrs");
    fs::create_dir(&xattr_dir).unwrap();
    let slotsmith_rootfs::ext4::DebugfsScript {
        script,
        xattr_files: values,
    } = debugfs_script(&tree, &xattr_dir).unwrap();
    for (path, value) in &values {
        fs::write(path, value).unwrap();
    }
    let script_path = write(tmp.path(), "fixup.debugfs", script.as_bytes());

    let img = tmp.path().join("root.ext4");
    let img_s = img.to_str().unwrap();
    run(&[
        "mke2fs",
        "-q",
        "-F",
        "-t",
        "ext4",
        "-d",
        staging.to_str().unwrap(),
        "-E",
        "root_owner=0:0",
        img_s,
        "64M",
    ]);
    let out = duct::cmd!("debugfs", "-w", "-f", &script_path, img_s)
        .stdout_null()
        .stderr_capture()
        .run()
        .unwrap();
    // debugfs -f exits 0 even when a command fails and reports failures
    // only on stderr, so anything there besides the banner is an error.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs 1."))
        .collect();
    assert!(errors.is_empty(), "debugfs reported errors: {errors:#?}");
    run(&["e2fsck", "-fn", img_s]);

    let stat = |p: &str| run(&["debugfs", "-R", &format!("stat {p}"), img_s]);
    let su = stat("/usr/bin/su");
    assert!(
        su.contains("Mode:  04755") && su.contains("User:     0   Group:     0"),
        "{su}"
    );
    assert!(su.contains("mtime: 0x6553f100:00000000"), "{su}");
    let ping = stat("/usr/bin/ping");
    assert!(
        ping.contains("security.capability (20) = 01 00 00 02 00 20 00 00"),
        "{ping}"
    );
    let cap = run(&[
        "debugfs",
        "-R",
        "ea_get /usr/bin/ping security.capability",
        img_s,
    ]);
    assert!(cap.contains("01 00 00 02 00 20"), "{cap}");
    let console = stat("/dev/console");
    assert!(
        console.contains("Type: character special") && console.contains("Mode:  0600"),
        "{console}"
    );
    assert!(
        console.contains("Device major/minor number: 05:01"),
        "{console}"
    );
    assert!(console.contains("Group:     5"), "{console}");
    assert!(stat("/dev/sda").contains("Type: block special"));
    assert!(stat("/run/initctl").contains("Type: FIFO"));
    let home = stat("/home/user");
    assert!(
        home.contains("Mode:  0700") && home.contains("User:  1000   Group:  1000"),
        "{home}"
    );
    let ash = stat("/bin/ash");
    assert!(ash.contains("Links: 2"), "{ash}");
    assert!(stat("/etc/mtab").contains("Fast link dest: \"/proc/self/mounts\""));
    let root = stat("/");
    assert!(root.contains("mtime: 0x6553f100:00000000"), "{root}");
    let ls = run(&["debugfs", "-R", "ls -l /usr/bin", img_s]);
    assert!(ls.contains("104755 (1)      0      0"), "{ls}");
    let long = stat(&format!("/{}", long_path()));
    assert!(long.contains("Size: 5"), "{long}");
    let cat = run(&["debugfs", "-R", "cat /bin/busybox", img_s]);
    assert_eq!(cat, "busybox binary\n");
}
