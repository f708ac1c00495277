//! `cargo xtask flash` on a built fixture image: to a file and to a loop
//! device, each read back and compared with `cmp` against the image, and
//! `bmaptool copy` of the same image giving the same bytes; the refusals
//! (a regular file without --allow-file, a mounted ext4 loop device, a
//! loop device smaller than the image, the disk / lives on) and the
//! manufacturing log's lines.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::*;

/// A loop device on a sparse file, detached when dropped.
struct Loop(String);

impl Loop {
    fn new(backing: &Path, size: u64) -> Loop {
        fs::File::create(backing).unwrap().set_len(size).unwrap();
        Loop(
            run("losetup", &["-f", "--show", backing.to_str().unwrap()])
                .trim()
                .to_string(),
        )
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = duct::cmd("losetup", ["-d", &self.0]).unchecked().run();
    }
}

/// A mount, unmounted when dropped (before its loop device is detached).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = duct::cmd("umount", [&self.0]).unchecked().run();
    }
}

/// The CLI's `flash`, with standard input not a terminal (so a block
/// device without --yes is refused, never prompted for) and the state
/// directory (where the default log goes) in `state`.
fn flash_in(state: &Path, args: &[&str]) -> CliRun {
    let mut all = vec!["flash"];
    all.extend_from_slice(args);
    slotsmith(
        &all,
        &[("XDG_STATE_HOME", state.to_str().unwrap())],
        false,
        None,
    )
}

fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .collect()
}

#[test]
fn flashes_a_fixture_to_a_file_and_a_loop_device_and_refuses_the_unsafe() {
    for (t, p) in [
        ("bmaptool", "bmap-tools"),
        ("cmp", "diffutils"),
        ("losetup", "mount"),
        ("mount", "mount"),
        ("findmnt", "util-linux"),
        ("mkfs.ext4", "e2fsprogs"),
        ("openssl", "openssl"),
        ("sgdisk", "gdisk"),
    ] {
        require(t, p);
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "flashing loop devices needs root (CI runs as root)"
    );
    let (_p, dir, record) = crate::fixture::build_fixture("squashfs");
    let name = record["image"].as_str().unwrap();
    let version = record["version"].as_str().unwrap();
    let img = dir.join(format!("{name}.img"));
    let bmap = dir.join(format!("{name}.img.bmap"));
    let img_s = img.to_str().unwrap();
    let size = fs::metadata(&img).unwrap().len();
    let image_sha = sha256(&img);
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    // The operator names the release's boot key; here the build's own.
    let key = dir.join("boot.pub.pem");
    let key_s = key.to_str().unwrap();
    let fingerprint =
        slotsmith_sign::fingerprint(&slotsmith_sign::load_verifying_key(&key).unwrap());
    let flash = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--boot-key", key_s]);
        flash_in(&state, &all)
    };

    // 0. Without a boot key nothing happens: a key beside the image would
    // prove nothing.
    let never = t.path().join("never.img");
    let r = flash_in(&state, &[img_s, never.to_str().unwrap(), "--allow-file"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--boot-key"), "{}", r.stderr);
    assert!(!never.exists());

    // 1. A file, with the default log in the state directory (never in
    // out/, which the next build replaces).
    let ours = t.path().join("ours.img");
    let r = flash(&[img_s, ours.to_str().unwrap(), "--allow-file", "--json"]);
    assert_eq!(r.code, 0, "flash to a file failed:\n{}", r.stderr);
    assert!(r.stderr.contains("read back and compared"), "{}", r.stderr);
    run("cmp", &[img_s, ours.to_str().unwrap()]);
    // bmaptool copy of the same image and bmap: the same bytes.
    let theirs = t.path().join("theirs.img");
    run(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            bmap.to_str().unwrap(),
            img_s,
            theirs.to_str().unwrap(),
        ],
    );
    run("cmp", &[ours.to_str().unwrap(), theirs.to_str().unwrap()]);
    let printed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(!dir.join("flash-log.jsonl").exists());
    let lines = log_lines(&state.join("slotsmith/flash-log.jsonl"));
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    assert_eq!(l, &printed, "--json prints the log line");
    assert_eq!(l["result"], "ok");
    assert_eq!(l["image"], name);
    assert_eq!(
        l["version"], version,
        "the version comes from the signed manifest"
    );
    assert_eq!(l["image_sha256"], image_sha);
    assert_eq!(l["boot_key"], fingerprint.as_str());
    assert!(l["io"] == "direct" || l["io"] == "buffered", "{l}");
    assert_eq!(l["device"], ours.to_str().unwrap());
    assert_eq!(l["size"], size);
    assert!(
        l["bytes_written"].as_u64().unwrap() > 0 && l["bytes_written"].as_u64().unwrap() <= size
    );
    assert!(l["mib_per_s"].as_f64().unwrap() > 0.0);
    assert!(l["time"].as_str().unwrap().ends_with('Z'));

    // 2. A loop device, with --log; read back with cmp over the image's
    // length.
    let log = t.path().join("station.jsonl");
    let log_s = log.to_str().unwrap();
    let dev = Loop::new(&t.path().join("loop.backing"), size + (1 << 20));
    let r = flash(&[img_s, &dev.0, "--yes", "--log", log_s]);
    assert_eq!(r.code, 0, "flash to {} failed:\n{}", dev.0, r.stderr);
    run("cmp", &["-n", &size.to_string(), img_s, &dev.0]);
    let l = &log_lines(&log)[0];
    assert_eq!(l["result"], "ok");
    assert_eq!(l["device"], dev.0.as_str());
    assert_eq!(
        l["io"], "direct",
        "a loop device takes O_DIRECT: the read-back read the device"
    );
    assert_eq!(l["size"], size + (1 << 20), "the device's own size");
    assert_eq!(
        l["serial"],
        serde_json::Value::Null,
        "loop devices report no serial"
    );

    // A block device without --yes and without a terminal is not written.
    let r = flash(&[img_s, &dev.0, "--log", log_s]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("pass --yes"), "{}", r.stderr);

    // 3. Refusals, each naming the device, each logged, nothing written.
    let file = t.path().join("plain.img");
    fs::write(&file, b"keep").unwrap();
    let r = flash(&[img_s, file.to_str().unwrap(), "--yes", "--log", log_s]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&format!(
            "refusing to flash {0}: {0} is a regular file, not a block device: pass --allow-file",
            file.display()
        )),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read(&file).unwrap(), b"keep");

    let small = Loop::new(&t.path().join("small.backing"), size - (1 << 20));
    let r = flash(&[img_s, &small.0, "--yes", "--log", log_s]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains(&format!("{} is smaller than the image", small.0)),
        "{}",
        r.stderr
    );

    let ext4 = Loop::new(&t.path().join("ext4.backing"), 8 << 20);
    run("mkfs.ext4", &["-q", &ext4.0]);
    let mnt = t.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    run("mount", &[&ext4.0, mnt.to_str().unwrap()]);
    let mounted = Mounted(mnt.clone());
    let r = flash(&[img_s, &ext4.0, "--yes", "--log", log_s]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&format!(
            "refusing to flash {0}: {0} has a mounted filesystem: {0}",
            ext4.0
        )) && r
            .stderr
            .contains(&format!("is mounted on {} (ext4)", mnt.display())),
        "{}",
        r.stderr
    );
    drop(mounted);

    // The disk / lives on, when / is on a block device (no --yes: even a
    // broken check would stop at the confirmation, and O_EXCL refuses a
    // mounted device).
    let source = run("findmnt", &["-n", "-o", "SOURCE", "/"])
        .trim()
        .to_string();
    let is_block = fs::metadata(&source).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_block_device()
    });
    if is_block {
        let r = flash(&[img_s, &source, "--log", log_s]);
        assert_eq!(r.code, 1);
        assert!(
            r.stderr
                .contains(&format!("{source} is the disk the running system lives on")),
            "{}",
            r.stderr
        );
    }

    let results: Vec<String> = log_lines(&log)
        .iter()
        .map(|l| l["result"].as_str().unwrap().to_string())
        .collect();
    let mut want = vec!["ok", "refused", "refused", "refused", "refused"];
    if is_block {
        want.push("refused");
    }
    assert_eq!(results, want);
    let last = log_lines(&log).pop().unwrap();
    assert!(last["reason"]
        .as_str()
        .unwrap()
        .starts_with("refusing to flash "));

    // The device as written is verified again with the boot key, on the
    // image's size: a device larger than the image (its GPT's backup at
    // the image's end) verifies, and one whose slot changed after the
    // check does not.
    let bigger = t.path().join("bigger.img");
    fs::copy(&img, &bigger).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&bigger)
        .unwrap();
    f.set_len(size + (1 << 20)).unwrap();
    let k = slotsmith_sign::load_verifying_key(&key).unwrap();
    slotsmith::verify::verify_image_within(&f, Some(size), "bigger", &k).unwrap();
    assert!(slotsmith::verify::verify_image_file(&f, "bigger", &k).is_err());
    let gpt = run("sgdisk", &["-i", "4", img_s]);
    let first = gpt
        .lines()
        .find_map(|l| l.strip_prefix("First sector: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse::<u64>()
        .unwrap();
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 1];
    let at = first * 512 + 4096;
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 1], at).unwrap();
    let e = format!(
        "{:#}",
        slotsmith::verify::verify_image_within(&f, Some(size), "bigger", &k).unwrap_err()
    );
    assert!(
        e.contains("failed verification") && e.contains("does not match the hash tree"),
        "{e}"
    );

    // 4. A corrupted image, and an image signed with another key, are
    // refused before anything is written.
    let copy = t.path().join("copy");
    fs::create_dir(&copy).unwrap();
    fs::copy(dir.join("SHA256SUMS"), copy.join("SHA256SUMS")).unwrap();
    fs::copy(&bmap, copy.join(format!("{name}.img.bmap"))).unwrap();
    let bad = copy.join(format!("{name}.img"));
    let mut bytes = fs::read(&img).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    fs::write(&bad, &bytes).unwrap();
    let target = t.path().join("never.img");
    let log2 = copy.join("station.jsonl");
    let r = flash(&[
        bad.to_str().unwrap(),
        target.to_str().unwrap(),
        "--allow-file",
        "--log",
        log2.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("refusing to flash") && r.stderr.contains("SHA256SUMS"),
        "{}",
        r.stderr
    );
    assert!(!target.exists(), "a refused flash creates nothing");
    assert_eq!(log_lines(&log2)[0]["result"], "refused");

    let other = t.path().join("other.pem");
    run(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            other.to_str().unwrap(),
        ],
    );
    let other_pub = t.path().join("other.pub.pem");
    run(
        "openssl",
        &[
            "pkey",
            "-in",
            other.to_str().unwrap(),
            "-pubout",
            "-out",
            other_pub.to_str().unwrap(),
        ],
    );
    let r = flash_in(
        &state,
        &[
            img_s,
            target.to_str().unwrap(),
            "--allow-file",
            "--log",
            log2.to_str().unwrap(),
            "--boot-key",
            other_pub.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("does not verify"), "{}", r.stderr);
    assert!(!target.exists(), "a refused flash creates nothing");
    let l = &log_lines(&log2)[1];
    assert_eq!(l["result"], "refused");
    assert_eq!(l["bytes_written"], 0);
}
