//! A fixture image built by an unprivileged user from a root-owned base
//! tarball, checked with independent tools: the partition table with
//! sgdisk and sfdisk, the ESP with fsck.fat and mtools, the rootfs with
//! unsquashfs (and debugfs for ext4), the block map with bmaptool.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::support::*;

/// Builds the fixture project and returns (project, out dir, build.json).
pub fn build_fixture(filesystem: &str) -> (Project, PathBuf, serde_json::Value) {
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    layer(
        &p,
        "meta-core",
        "core",
        5,
        "files:\n  /var/lib/app:\n    type: directory\n    mode: \"0750\"\n    owner: 1000\n    group: 1000\n  \
/usr/bin/tool:\n    mode: \"0755\"\n    xattrs:\n      security.capability: \"0x0100000200200000000000000000000000000000\"\n\
remove:\n  - /etc/update-motd.d-placeholder\n",
    );
    p.write(
        "layers/meta-core/files/etc/motd",
        "hello from the core layer\n",
    );
    p.write(
        "layers/meta-core/files/usr/bin/tool",
        "#!/bin/sh\necho tool\n",
    );
    let name = format!("fixture-{filesystem}");
    p.write(
        &format!("images/{name}.yaml"),
        &fixture_image(
            &name,
            "fixtures/base.tar.gz",
            &["meta-core"],
            filesystem,
            "16MiB",
        ),
    );
    let out = p.writable("out");
    p.dev_keys_writable();
    let work = p.writable("work");
    let cache = p.writable("cache");
    let image = p.image(&name);
    let r = slotsmith(
        &[
            "build",
            image.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--json",
        ],
        &[],
        true,
        None,
    );
    assert_eq!(r.code, 0, "build failed:\n{}", r.stderr);
    let summary: serde_json::Value = serde_json::from_str(&r.stdout).expect("--json prints JSON");
    let dir = out.join(&name);
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("build.json")).unwrap()).unwrap();
    assert_eq!(summary["build"], record, "--json carries build.json");
    (p, dir, record)
}

fn img_of(dir: &Path, record: &serde_json::Value) -> PathBuf {
    dir.join(format!("{}.img", record["image"].as_str().unwrap()))
}

fn partition<'a>(record: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    record["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()
}

#[test]
fn squashfs_fixture_passes_independent_verifiers() {
    for (t, p) in [
        ("sgdisk", "gdisk"),
        ("sfdisk", "fdisk"),
        ("fsck.fat", "dosfstools"),
        ("mtype", "mtools"),
        ("unsquashfs", "squashfs-tools"),
        ("bmaptool", "bmap-tools"),
        ("getfattr", "attr"),
        ("setpriv", "util-linux"),
    ] {
        require(t, p);
    }
    let (_p, dir, record) = build_fixture("squashfs");
    let img = img_of(&dir, &record);

    // The build really ran unprivileged: its outputs belong to uid 65534.
    if rustix::process::geteuid().is_root() {
        assert_eq!(fs::metadata(&img).unwrap().uid(), 65534);
    }

    // sgdisk's own consistency check.
    let v = run("sgdisk", &["-v", img.to_str().unwrap()]);
    assert!(v.contains("No problems found"), "sgdisk -v:\n{v}");

    // sfdisk's view matches build.json: type, name, uuid, start, attributes.
    let j: serde_json::Value =
        serde_json::from_str(&run("sfdisk", &["--json", img.to_str().unwrap()])).unwrap();
    let table = &j["partitiontable"];
    assert_eq!(table["label"], "gpt");
    let parts = table["partitions"].as_array().unwrap();
    let expected = record["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 6);
    for (got, want) in parts.iter().zip(expected) {
        assert_eq!(got["name"], want["name"]);
        assert_eq!(
            got["type"].as_str().unwrap().to_lowercase(),
            want["type_guid"].as_str().unwrap()
        );
        assert_eq!(
            got["uuid"].as_str().unwrap().to_lowercase(),
            want["uuid"].as_str().unwrap()
        );
        assert_eq!(
            got["start"].as_u64().unwrap(),
            want["first_lba"].as_u64().unwrap()
        );
        assert_eq!(
            got["size"].as_u64().unwrap(),
            want["last_lba"].as_u64().unwrap() - want["first_lba"].as_u64().unwrap() + 1
        );
        let attrs = got["attrs"].as_str().unwrap_or("");
        if want["attributes"].as_u64().unwrap() == 1 << 60 {
            assert_eq!(attrs, "GUID:60", "{}", want["name"]);
        } else {
            assert_eq!(attrs, "", "{}", want["name"]);
        }
    }
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "esp",
            "root-a",
            "root-a-verity",
            "root-b",
            "root-b-verity",
            "data"
        ]
    );
    assert_eq!(
        parts[1]["type"].as_str().unwrap().to_lowercase(),
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
    );
    assert_eq!(
        parts[2]["type"].as_str().unwrap().to_lowercase(),
        "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5"
    );

    // The ESP passes fsck.fat and holds the release file.
    let tmp = tempfile::tempdir().unwrap();
    let esp = partition(&record, "esp");
    let esp_img = tmp.path().join("esp.img");
    extract(
        &img,
        esp["offset"].as_u64().unwrap(),
        esp["size"].as_u64().unwrap(),
        &esp_img,
    );
    run("fsck.fat", &["-n", esp_img.to_str().unwrap()]);
    let release = run(
        "mtype",
        &["-i", esp_img.to_str().unwrap(), "::/slotsmith/release"],
    );
    assert!(
        release.contains("NAME=fixture-squashfs\nVERSION=2.1.0\nBOARD=test-board\n"),
        "{release}"
    );

    // The data partition is an ext4 filesystem with its label.
    let data = partition(&record, "data");
    let data_img = tmp.path().join("data.img");
    extract(
        &img,
        data["offset"].as_u64().unwrap(),
        data["size"].as_u64().unwrap(),
        &data_img,
    );
    run("e2fsck", &["-fn", data_img.to_str().unwrap()]);
    let dump = run("dumpe2fs", &["-h", data_img.to_str().unwrap()]);
    assert!(dump.contains("Filesystem volume name:   data"), "{dump}");

    // The rootfs keeps owners, modes, devices, links, while built by nobody.
    let rootfs = dir.join("rootfs.squashfs");
    let ls = run("unsquashfs", &["-lln", rootfs.to_str().unwrap()]);
    let line = |path: &str| -> String {
        ls.lines()
            .find(|l| l.ends_with(path) || l.contains(&format!("{path} -> ")))
            .unwrap_or_else(|| panic!("{path} missing in:\n{ls}"))
            .to_string()
    };
    assert!(
        line("squashfs-root/usr/bin/su").starts_with("-rwsr-xr-x 0/0 "),
        "{}",
        line("usr/bin/su")
    );
    assert!(line("squashfs-root/etc/shadow").starts_with("-rw-r----- 0/0 "));
    assert!(
        line("squashfs-root/dev/console").starts_with("crw------- 0/0 "),
        "{}",
        line("dev/console")
    );
    assert!(
        line("squashfs-root/dev/console").contains(" 5,  1 ")
            || line("squashfs-root/dev/console").contains(" 5, 1 "),
        "{}",
        line("dev/console")
    );
    assert!(
        line("squashfs-root/bin/sh").starts_with("lrwxrwxrwx 0/0 ")
            && line("squashfs-root/bin/sh").ends_with("-> ../usr/bin/su")
    );
    assert!(line("squashfs-root/etc/mtab").ends_with("-> /proc/self/mounts"));
    assert!(line("squashfs-root/tmp").starts_with("drwxrwxrwt 0/0 "));
    assert!(line("squashfs-root/var/lib/svc.db").starts_with("-rw------- 107/107 "));
    assert!(line("squashfs-root/var/lib/app").starts_with("drwxr-x--- 1000/1000 "));
    assert!(line("squashfs-root/etc/motd").starts_with("-rw-r--r-- 0/0 "));
    assert!(
        !ls.contains("update-motd.d-placeholder"),
        "the layer's removal applies"
    );
    // Every mtime was clamped to the epoch (2023-11-14 22:13 UTC).
    for l in ls.lines().filter(|l| l.contains("squashfs-root")) {
        assert!(l.contains("2023-11-14 22:13"), "mtime not clamped: {l}");
    }

    // The capability and the hardlink survive, seen by extracting as root
    // (security.* xattrs can only be set by root).
    if rustix::process::geteuid().is_root() {
        let x = tmp.path().join("x");
        run(
            "unsquashfs",
            &[
                "-q",
                "-n",
                "-d",
                x.to_str().unwrap(),
                rootfs.to_str().unwrap(),
            ],
        );
        let cap = run(
            "getfattr",
            &[
                "-e",
                "hex",
                "-n",
                "security.capability",
                x.join("usr/bin/ping").to_str().unwrap(),
            ],
        );
        assert!(
            cap.contains("security.capability=0x0100000200200000"),
            "{cap}"
        );
        let cap = run(
            "getfattr",
            &[
                "-e",
                "hex",
                "-n",
                "security.capability",
                x.join("usr/bin/tool").to_str().unwrap(),
            ],
        );
        assert!(
            cap.contains("security.capability=0x0100000200200000"),
            "layer xattr: {cap}"
        );
        let a = fs::metadata(x.join("usr/bin/su")).unwrap();
        let b = fs::metadata(x.join("usr/bin/sudo-alias")).unwrap();
        assert_eq!(a.ino(), b.ino(), "hardlink preserved");
        assert_eq!(a.nlink(), 2);
    } else {
        panic!("run the tests as root: checking security.capability needs a root extraction");
    }

    // Both slots hold the rootfs image byte for byte; the rest is zero.
    let rootfs_bytes = fs::read(&rootfs).unwrap();
    for slot in ["root-a", "root-b"] {
        let s = partition(&record, slot);
        let out = tmp.path().join(slot);
        extract(
            &img,
            s["offset"].as_u64().unwrap(),
            s["size"].as_u64().unwrap(),
            &out,
        );
        let bytes = fs::read(&out).unwrap();
        assert_eq!(&bytes[..rootfs_bytes.len()], &rootfs_bytes[..], "{slot}");
        assert!(
            bytes[rootfs_bytes.len()..].iter().all(|&b| b == 0),
            "{slot} tail"
        );
    }

    // bmaptool copies the image byte for byte.
    let copy = tmp.path().join("copy.img");
    let bmap = dir.join(format!("{}.img.bmap", record["image"].as_str().unwrap()));
    run(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            bmap.to_str().unwrap(),
            img.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    assert_eq!(sha256(&copy), sha256(&img));

    // The image is sparse: allocated blocks stay close to the data written
    // (rootfs twice, FAT and ext4 metadata), far below the image size.
    let md = fs::metadata(&img).unwrap();
    let allocated = md.blocks() * 512;
    let budget = 2 * rootfs_bytes.len() as u64 + 8 * 1048576;
    assert!(
        allocated <= budget,
        "image allocates {allocated} bytes, budget {budget}, size {}",
        md.len()
    );

    // SHA256SUMS agrees with sha256sum.
    let check = duct::cmd("sha256sum", ["-c", "SHA256SUMS"])
        .dir(&dir)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let sums = fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    // Every published file but SHA256SUMS itself, the release evidence
    // (reviewer's index, SBOM, provenance and its key) included.
    for f in [
        "README.md",
        "sbom.spdx.json",
        "provenance.dsse.json",
        "provenance.pub.pem",
        "build.json",
    ] {
        assert!(
            sums.lines().any(|l| l.ends_with(&format!("  {f}"))),
            "{f} is not in SHA256SUMS: {sums}"
        );
    }
    assert_eq!(sums.lines().count(), 19, "{sums}");
}

#[test]
fn ext4_fixture_keeps_owners_modes_devices_and_caps() {
    require("debugfs", "e2fsprogs");
    let (_p, dir, record) = build_fixture("ext4");
    let rootfs = dir.join("rootfs.ext4");
    run("e2fsck", &["-fn", rootfs.to_str().unwrap()]);
    let stat = |path: &str| {
        run(
            "debugfs",
            &["-R", &format!("stat {path}"), rootfs.to_str().unwrap()],
        )
    };
    let su = stat("/usr/bin/su");
    assert!(
        su.contains("Mode:  04755") && su.contains("User:     0   Group:     0"),
        "{su}"
    );
    let dev = stat("/dev/console");
    assert!(
        dev.contains("Type: character special") && dev.contains("Device major/minor number: 05:01"),
        "{dev}"
    );
    let db = stat("/var/lib/svc.db");
    assert!(
        db.contains("User:   107   Group:   107") && db.contains("Mode:  0600"),
        "{db}"
    );
    let cap = run(
        "debugfs",
        &[
            "-R",
            "ea_get -x /usr/bin/ping security.capability",
            rootfs.to_str().unwrap(),
        ],
    );
    assert!(
        cap.replace(' ', "")
            .to_lowercase()
            .contains("0100000200200000"),
        "{cap}"
    );
    let link = run("debugfs", &["-R", "stat /bin/sh", rootfs.to_str().unwrap()]);
    assert!(link.contains("Fast link dest: \"../usr/bin/su\""), "{link}");
    let a = stat("/usr/bin/su");
    assert!(a.contains("Links: 2"), "hardlink count: {a}");
    // The ext4 image fills its slot and sits in both.
    assert_eq!(record["rootfs"]["size"], record["rootfs"]["slot_size"]);
    run("sgdisk", &["-v", img_of(&dir, &record).to_str().unwrap()]);
}
