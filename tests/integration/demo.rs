//! The default image, built as the README's first command builds it
//! (Debian bookworm through mmdebstrap), checked with independent tools.

use std::fs;

use crate::support::*;

#[test]
fn default_image_builds_and_verifies() {
    for (t, p) in [
        ("mmdebstrap", "mmdebstrap"),
        ("sgdisk", "gdisk"),
        ("unsquashfs", "squashfs-tools"),
        ("bmaptool", "bmap-tools"),
    ] {
        require(t, p);
    }
    let out = tempfile::Builder::new()
        .prefix("slotsmith-demo-")
        .tempdir()
        .unwrap();
    let work = out.path().join("work");
    let r = slotsmith(
        &[
            "build",
            "--out-dir",
            out.path().to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--json",
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = out.path().join("demo");
    for f in [
        "demo.img",
        "demo.img.bmap",
        "rootfs.squashfs",
        "SHA256SUMS",
        "build.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let img = dir.join("demo.img");
    let v = run("sgdisk", &["-v", img.to_str().unwrap()]);
    assert!(v.contains("No problems found"), "{v}");
    let ls = run(
        "unsquashfs",
        &["-lln", dir.join("rootfs.squashfs").to_str().unwrap()],
    );
    for want in [
        "squashfs-root/usr/sbin/nft",
        "squashfs-root/usr/sbin/sshd",
        "squashfs-root/usr/bin/swupdate",
        "squashfs-root/usr/lib/systemd/systemd",
        "squashfs-root/etc/motd",
        "squashfs-root/data",
    ] {
        assert!(
            ls.lines().any(|l| l.contains(want)),
            "{want} missing from the demo rootfs"
        );
    }
    assert!(
        !ls.contains("update-motd.d/10-uname"),
        "meta-demo removes 10-uname"
    );
    let su = ls
        .lines()
        .find(|l| l.ends_with("squashfs-root/usr/bin/su"))
        .expect("su");
    assert!(su.starts_with("-rwsr-xr-x 0/0"), "{su}");
    let health = ls
        .lines()
        .find(|l| l.ends_with("usr/local/bin/demo-health"))
        .expect("demo-health");
    assert!(health.starts_with("-rwxr-x--- 0/0"), "{health}");
    assert!(
        ls.lines()
            .any(|l| l.starts_with('c') && l.contains("squashfs-root/dev/null")),
        "device nodes"
    );
    let copy = out.path().join("copy.img");
    run(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            dir.join("demo.img.bmap").to_str().unwrap(),
            img.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    assert_eq!(sha256(&copy), sha256(&img));
    // cargo xtask verify accepts the default image with its boot key, and
    // its kernel is Debian's real one.
    let r = slotsmith(
        &[
            "verify",
            img.to_str().unwrap(),
            "--boot-key",
            dir.join("boot.pub.pem").to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("slot a: demo 1.0.0 (security version 1)")
            && r.stderr.contains("slot b: demo 1.0.0"),
        "{}",
        r.stderr
    );
    let kernel = fs::read(dir.join("vmlinuz")).unwrap();
    assert!(
        kernel.len() > 4 << 20 && &kernel[0x202..0x206] == b"HdrS",
        "a bzImage kernel"
    );
    let manifest = fs::read_to_string(dir.join("boot-a.manifest")).unwrap();
    assert!(
        manifest.contains("\ncmdline console=ttyS0,115200 quiet slotsmith.slot=a ro\n"),
        "{manifest}"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("build.json")).unwrap()).unwrap();
    assert_eq!(record["image"], "demo");
    assert_eq!(record["partitions"].as_array().unwrap().len(), 6);
}
