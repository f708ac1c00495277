//! Partition discovery on fake sysfs trees laid out like the kernel's:
//! `class/block/<name>` is a relative symlink into
//! `devices/.../block/<disk>/<part>`, and each entry has the `uevent` file
//! the kernel writes (MAJOR, MINOR, DEVNAME, DEVTYPE, PARTN, PARTNAME).
//! Covers the happy path and every ambiguity the init must refuse.

use slotsmith_init::cmdline::Slot;
use slotsmith_init::discover::{discover, BlockDev, Found};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

/// One partition: (disk, part, major, minor, PARTNAME or None).
type Part<'a> = (&'a str, &'a str, u32, u32, Option<&'a str>);

fn fake_sysfs(root: &Path, parts: &[Part]) {
    let class = root.join("class/block");
    fs::create_dir_all(&class).unwrap();
    let mut disks = Vec::new();
    for (disk, part, major, minor, name) in parts {
        let disk_dir = root.join(format!("devices/pci0000:00/virtio/block/{disk}"));
        if !disks.contains(disk) {
            disks.push(*disk);
            fs::create_dir_all(&disk_dir).unwrap();
            fs::write(
                disk_dir.join("uevent"),
                format!("MAJOR={major}\nMINOR=0\nDEVNAME={disk}\nDEVTYPE=disk\nDISKSEQ=9\n"),
            )
            .unwrap();
            symlink(
                format!("../../devices/pci0000:00/virtio/block/{disk}"),
                class.join(disk),
            )
            .unwrap();
        }
        let dir = disk_dir.join(part);
        fs::create_dir_all(&dir).unwrap();
        let mut uevent = format!(
            "MAJOR={major}\nMINOR={minor}\nDEVNAME={part}\nDEVTYPE=partition\nPARTN={minor}\n"
        );
        if let Some(name) = name {
            uevent.push_str(&format!("PARTNAME={name}\n"));
        }
        fs::write(dir.join("uevent"), uevent).unwrap();
        symlink(
            format!("../../devices/pci0000:00/virtio/block/{disk}/{part}"),
            class.join(part),
        )
        .unwrap();
    }
}

/// The full layout of the design (esp, boot-a/b, root-a/b and their
/// verity partitions, data) on `disk` with major `major`.
fn golden<'a>(disk: &'a str, parts: &'a [String; 8], major: u32) -> Vec<Part<'a>> {
    let names = [
        "esp",
        "boot-a",
        "boot-b",
        "root-a",
        "root-a-verity",
        "root-b",
        "root-b-verity",
        "data",
    ];
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (disk, parts[i].as_str(), major, i as u32 + 1, Some(*n)))
        .collect()
}

fn part_names(disk: &str) -> [String; 8] {
    std::array::from_fn(|i| format!("{disk}{}", i + 1))
}

fn dev(name: &str, major: u32, minor: u32) -> BlockDev {
    BlockDev {
        name: name.into(),
        devname: name.into(),
        major,
        minor,
    }
}

#[test]
fn finds_each_slot_on_the_golden_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let names = part_names("vda");
    let mut parts = golden("vda", &names, 254);
    // A CD-ROM style whole disk and an unnamed partition are ignored.
    parts.push(("sr0", "sr0p1", 11, 1, None));
    fake_sysfs(tmp.path(), &parts);

    let Found::Complete(a) = discover(tmp.path(), Slot::A).unwrap() else {
        panic!("slot a not found");
    };
    assert_eq!(a.disk, "vda");
    assert_eq!(a.boot, dev("vda2", 254, 2));
    assert_eq!(a.root, dev("vda4", 254, 4));
    assert_eq!(a.verity, dev("vda5", 254, 5));
    assert_eq!(a.data, dev("vda8", 254, 8));
    assert_eq!(a.root.dev_t(), "254:4");
    assert_eq!(a.boot.node(), "/dev/vda2");

    let Found::Complete(b) = discover(tmp.path(), Slot::B).unwrap() else {
        panic!("slot b not found");
    };
    assert_eq!(
        [&b.boot.name, &b.root.name, &b.verity.name, &b.data.name],
        ["vda3", "vda6", "vda7", "vda8"]
    );
}

#[test]
fn an_incomplete_disk_is_reported_not_guessed() {
    let tmp = tempfile::tempdir().unwrap();
    fake_sysfs(
        tmp.path(),
        &[
            ("vda", "vda1", 254, 1, Some("boot-a")),
            ("vda", "vda2", 254, 2, Some("root-a")),
            // The verity partition and data are on another disk: the set
            // must be on one disk.
            ("vdb", "vdb1", 254, 17, Some("root-a-verity")),
            ("vdb", "vdb2", 254, 18, Some("data")),
        ],
    );
    let Found::Incomplete(why) = discover(tmp.path(), Slot::A).unwrap() else {
        panic!("a split set must not be accepted");
    };
    assert_eq!(
        why,
        "no disk has all of boot-a, root-a, root-a-verity, data \
         (vda has boot-a, root-a; vdb has root-a-verity, data)"
    );

    let empty = tempfile::tempdir().unwrap();
    fake_sysfs(empty.path(), &[]);
    let Found::Incomplete(why) = discover(empty.path(), Slot::B).unwrap() else {
        panic!("nothing found must be incomplete");
    };
    assert!(
        why.ends_with("(no partition has any of these names)"),
        "{why}"
    );
}

#[test]
fn two_disks_with_a_full_set_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = part_names("vda");
    let b = part_names("sda");
    let mut parts = golden("vda", &a, 254);
    parts.extend(golden("sda", &b, 8));
    fake_sysfs(tmp.path(), &parts);
    let err = discover(tmp.path(), Slot::A).unwrap_err().to_string();
    assert_eq!(
        err,
        "disks sda and vda each carry boot-a, root-a, root-a-verity, data: refusing to guess which one to boot"
    );
}

#[test]
fn a_repeated_name_on_the_disk_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let names = part_names("vda");
    let mut parts = golden("vda", &names, 254);
    parts.push(("vda", "vda9", 254, 9, Some("root-a")));
    fake_sysfs(tmp.path(), &parts);
    let err = discover(tmp.path(), Slot::A).unwrap_err().to_string();
    assert_eq!(
        err,
        "disk vda has 2 partitions named root-a (vda4, vda9): refusing to guess"
    );
    // Slot b does not use root-a, so it is not ambiguous.
    assert!(matches!(
        discover(tmp.path(), Slot::B).unwrap(),
        Found::Complete(_)
    ));
}

#[test]
fn hostile_partition_names_and_numbers_are_refused_or_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    fake_sysfs(
        tmp.path(),
        &[("vd\u{1b}[2Ja", "vdx1", 254, 1, Some("boot-a"))],
    );
    let Found::Incomplete(why) = discover(tmp.path(), Slot::A).unwrap() else {
        panic!()
    };
    assert!(why.contains("vd\\x1b[2Ja has boot-a"), "{why}");

    let tmp = tempfile::tempdir().unwrap();
    fake_sysfs(tmp.path(), &[("vda", "vda1", 254, 1, Some("data"))]);
    let uevent = tmp.path().join("class/block/vda1/uevent");
    fs::write(
        &uevent,
        "MAJOR=254\nMINOR=x1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTNAME=data\n",
    )
    .unwrap();
    let err = format!("{:#}", discover(tmp.path(), Slot::A).unwrap_err());
    assert!(err.ends_with("MINOR=x1 is not a number"), "{err}");

    fs::write(
        &uevent,
        "MAJOR=254\nMINOR=1\nDEVNAME=../sda\nDEVTYPE=partition\nPARTNAME=data\n",
    )
    .unwrap();
    let err = format!("{:#}", discover(tmp.path(), Slot::A).unwrap_err());
    assert!(
        err.ends_with("DEVNAME=../sda is not a path below /dev"),
        "{err}"
    );

    fs::write(&uevent, "x".repeat(5000)).unwrap();
    let err = format!("{:#}", discover(tmp.path(), Slot::A).unwrap_err());
    assert!(err.ends_with("is over 4096 bytes"), "{err}");
}
