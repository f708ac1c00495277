//! `flash` end to end on files: a synthesized image with the bmap our
//! build writes and its `SHA256SUMS` (no signed manifests: those are
//! checked by the integration test on a built image).

use super::*;
use sha2::{Digest, Sha256};
use std::fs;

/// out/t/: t.img (sparse, data islands), t.img.bmap, SHA256SUMS.
fn synth(dir: &Path) -> PathBuf {
    synth_sized(dir, 5 * write::CHUNK as u64 + 3 * 4096 + 512)
}

/// [`synth`] of `size` bytes (at least 3 chunks and 8 KiB).
fn synth_sized(dir: &Path, size: u64) -> PathBuf {
    let img = dir.join("t.img");
    let mut data = vec![0u8; size as usize];
    let islands = [
        (0u64, 8192u64),
        (write::CHUNK as u64 - 100, 3 * write::CHUNK as u64),
        (size - 700, size),
    ];
    for &(a, b) in &islands {
        for i in a..b {
            data[i as usize] = (i * 13 % 251) as u8 | 1;
        }
    }
    fs::write(&img, &data).unwrap();
    let xml =
        slotsmith_disk::bmap::bmap_xml(&mut std::io::Cursor::new(&data), size, &islands).unwrap();
    fs::write(dir.join("t.img.bmap"), &xml).unwrap();
    fs::write(
        dir.join("SHA256SUMS"),
        format!(
            "{}  t.img\n{}  t.img.bmap\n",
            hex::encode(Sha256::digest(&data)),
            hex::encode(Sha256::digest(xml.as_bytes()))
        ),
    )
    .unwrap();
    img
}

fn opts(img: &Path, device: &Path, allow_file: bool) -> FlashOptions {
    FlashOptions {
        image: img.to_path_buf(),
        device: device.to_path_buf(),
        allow_file,
        log: Some(img.with_file_name("flash-log.jsonl")),
        boot_key: None,
        memory: None,
        check_manifests: false,
        quiet: true,
    }
}

fn log_lines(dir: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(dir.join("flash-log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn flashes_a_file_reads_it_back_and_logs_it() {
    let t = tempfile::tempdir().unwrap();
    let img = synth(t.path());
    let dest = t.path().join("dest.img");
    let rec = flash(&opts(&img, &dest, true), &System::default(), &mut |_| true).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&img).unwrap());
    let bmap = bmap::parse(&fs::read(t.path().join("t.img.bmap")).unwrap(), "t").unwrap();
    assert_eq!(rec.bytes_written, bmap.mapped_bytes());
    let lines = log_lines(t.path());
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    assert_eq!(l["result"], "ok");
    assert_eq!(l["image"], "t");
    assert_eq!(l["device"], dest.to_str().unwrap());
    assert_eq!(
        l["image_sha256"].as_str().unwrap(),
        hex::encode(Sha256::digest(fs::read(&img).unwrap()))
    );
    assert_eq!(l["bytes_written"], bmap.mapped_bytes());
    assert_eq!(l["reason"], serde_json::Value::Null);
    let time = l["time"].as_str().unwrap();
    assert!(
        time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );
}

#[test]
fn a_changed_image_is_refused_before_any_write_wherever_the_change_is() {
    let t = tempfile::tempdir().unwrap();
    let img = synth(t.path());
    let clean = fs::read(&img).unwrap();
    let dest = t.path().join("dest.img");
    fs::write(&dest, b"untouched").unwrap();
    // A byte in a mapped range (kept in memory or not), and a byte outside
    // every range (which a flash would never write, yet it makes the image
    // another one than SHA256SUMS lists).
    let cases = [
        (write::CHUNK + 5, "image: blocks"),
        (2 * write::CHUNK + 77, "image: blocks"),
        (
            20_000,
            "byte 20000 lies outside every range of its bmap and is not zero",
        ),
        (3 * write::CHUNK + 8192, "lies outside every range"),
    ];
    let mut n = 0;
    for (at, want) in cases {
        for memory in [0, u64::MAX] {
            let mut data = clean.clone();
            data[at] ^= 0x40;
            fs::write(&img, &data).unwrap();
            let mut o = opts(&img, &dest, true);
            o.memory = Some(memory);
            let e = format!(
                "{:#}",
                flash(&o, &System::default(), &mut |_| true).unwrap_err()
            );
            assert!(
                e.starts_with(&format!("refusing to flash {}: ", dest.display())),
                "{e}"
            );
            assert!(e.contains(want), "byte {at}: {e}");
            assert_eq!(fs::read(&dest).unwrap(), b"untouched");
            let l = &log_lines(t.path())[n];
            n += 1;
            assert_eq!(l["result"], "refused");
            assert_eq!(l["bytes_written"], 0);
            assert_eq!(l["image_sha256"], serde_json::Value::Null);
        }
    }
    fs::write(&img, &clean).unwrap();
    flash(&opts(&img, &dest, true), &System::default(), &mut |_| true).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), clean);
}

#[test]
fn a_release_directory_that_disagrees_with_itself_fails_the_flash() {
    // The image changed in a mapped range, its bmap made again and only
    // the bmap's line of SHA256SUMS edited: everything the bmap says
    // holds, but the image is not the one SHA256SUMS lists. The log gets
    // the hash that was computed, never the listed one.
    let t = tempfile::tempdir().unwrap();
    let img = synth(t.path());
    let mut data = fs::read(&img).unwrap();
    let listed = hex::encode(Sha256::digest(&data));
    data[8] ^= 0x10;
    fs::write(&img, &data).unwrap();
    let old = bmap::parse(&fs::read(t.path().join("t.img.bmap")).unwrap(), "t").unwrap();
    let ranges: Vec<(u64, u64)> = old.ranges.iter().map(|r| (r.start, r.end)).collect();
    let xml = slotsmith_disk::bmap::bmap_xml(
        &mut std::io::Cursor::new(&data),
        data.len() as u64,
        &ranges,
    )
    .unwrap();
    fs::write(t.path().join("t.img.bmap"), &xml).unwrap();
    fs::write(
        t.path().join("SHA256SUMS"),
        format!(
            "{listed}  t.img\n{}  t.img.bmap\n",
            hex::encode(Sha256::digest(xml.as_bytes()))
        ),
    )
    .unwrap();
    let dest = t.path().join("dest.img");
    let e = format!(
        "{:#}",
        flash(&opts(&img, &dest, true), &System::default(), &mut |_| true).unwrap_err()
    );
    assert!(
        e.contains("the release directory disagrees with itself"),
        "{e}"
    );
    let l = &log_lines(t.path())[0];
    assert_eq!(l["result"], "failed");
    assert_eq!(
        l["image_sha256"].as_str().unwrap(),
        hex::encode(Sha256::digest(&data))
    );
    assert_ne!(l["image_sha256"].as_str().unwrap(), listed);
}

#[test]
fn the_log_and_the_release_files_are_never_the_destination() {
    let t = tempfile::tempdir().unwrap();
    let img = synth(t.path());
    let log = t.path().join("flash-log.jsonl");
    let key = t.path().join("boot.pub.pem");
    fs::write(&key, "a key").unwrap();
    for dest in [
        log.clone(),
        t.path().join("SHA256SUMS"),
        t.path().join("t.img.bmap"),
        key.clone(),
    ] {
        let before = fs::read(&dest).unwrap_or_default();
        // The key is named but not checked (a synthesized image has no
        // manifests): only its identity matters here.
        let mut o = opts(&img, &dest, true);
        o.boot_key = Some(key.clone());
        let e = format!(
            "{:#}",
            flash(&o, &System::default(), &mut |_| true).unwrap_err()
        );
        assert!(
            e.ends_with("is the flash log, the bmap, SHA256SUMS or the boot key"),
            "{e}"
        );
        let after = fs::read(&dest).unwrap();
        assert!(
            after.starts_with(&before),
            "{} was overwritten",
            dest.display()
        );
    }
    assert_eq!(log_lines(t.path()).len(), 4);
}

#[test]
fn an_aligned_image_is_written_with_direct_io_where_the_file_system_takes_it() {
    let t = tempfile::tempdir().unwrap();
    let img = synth_sized(t.path(), 4 * write::CHUNK as u64 + 3 * 4096);
    let dest = t.path().join("dest.img");
    // Whether this file system takes O_DIRECT for an open and an aligned
    // read, asked independently (std's own positioned read).
    let takes_direct = rustix::fs::open(
        t.path().join("probe"),
        OFlags::RDWR | OFlags::CREATE | OFlags::DIRECT,
        Mode::from_raw_mode(0o600),
    )
    .ok()
    .map(File::from)
    .is_some_and(|f| {
        f.set_len(4096).is_ok() && {
            let mut b = write::Aligned::new(4096);
            std::os::unix::fs::FileExt::read_exact_at(&f, b.bytes_mut(), 0).is_ok()
        }
    });
    for memory in [None, Some(0), Some(write::CHUNK as u64)] {
        let mut o = opts(&img, &dest, true);
        o.memory = memory;
        let rec = flash(&o, &System::default(), &mut |_| true).unwrap();
        assert_eq!(rec.io, if takes_direct { "direct" } else { "buffered" });
        assert_eq!(fs::read(&dest).unwrap(), fs::read(&img).unwrap());
    }
    // The unaligned image is never written with O_DIRECT.
    let t2 = tempfile::tempdir().unwrap();
    let img2 = synth(t2.path());
    let rec = flash(
        &opts(&img2, &t2.path().join("d"), true),
        &System::default(),
        &mut |_| true,
    )
    .unwrap();
    assert_eq!(rec.io, "buffered");
}

#[test]
fn the_boot_key_is_never_taken_from_beside_the_image() {
    let t = tempfile::tempdir().unwrap();
    let img = synth(t.path());
    let dest = t.path().join("dest.img");
    let mut o = opts(&img, &dest, true);
    o.check_manifests = true;
    let e = format!(
        "{:#}",
        flash(&o, &System::default(), &mut |_| true).unwrap_err()
    );
    assert!(
        e.contains("no boot key: name the release's boot public key"),
        "{e}"
    );
    assert!(!dest.exists());
    assert_eq!(log_lines(t.path())[0]["result"], "refused");
}

#[test]
fn a_regular_file_needs_allow_file_and_a_tampered_bmap_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let img = synth(t.path());
    let dest = t.path().join("dest.img");
    fs::write(&dest, b"x").unwrap();
    let e = format!(
        "{:#}",
        flash(&opts(&img, &dest, false), &System::default(), &mut |_| true).unwrap_err()
    );
    assert_eq!(
        e,
        format!(
            "refusing to flash {0}: {0} is a regular file, not a block device: pass --allow-file to write an image file",
            dest.display()
        )
    );
    assert_eq!(fs::read(&dest).unwrap(), b"x");

    let bmap_path = t.path().join("t.img.bmap");
    let mut b = fs::read(&bmap_path).unwrap();
    b.push(b'\n');
    fs::write(&bmap_path, b).unwrap();
    let e = format!(
        "{:#}",
        flash(&opts(&img, &dest, true), &System::default(), &mut |_| true).unwrap_err()
    );
    assert!(e.contains("is not the one SHA256SUMS lists"), "{e}");
    let results: Vec<_> = log_lines(t.path())
        .iter()
        .map(|l| l["result"].clone())
        .collect();
    assert_eq!(results, ["refused", "refused"]);

    // Not confirmed: nothing written, refused.
    let img2 = synth(t.path());
    // The image itself.
    let e = format!(
        "{:#}",
        flash(&opts(&img2, &img2, true), &System::default(), &mut |_| true).unwrap_err()
    );
    assert!(e.ends_with("is the image itself"), "{e}");

    let e = format!(
        "{:#}",
        flash(&opts(&img2, &dest, true), &System::default(), &mut |_| {
            false
        })
        .unwrap_err()
    );
    assert!(e.ends_with("not confirmed"), "{e}");
}

#[test]
fn a_device_smaller_than_the_image_is_refused() {
    let e = format!(
        "{:#}",
        fits("/dev/loop7", 1 << 20, (1 << 20) + 1).unwrap_err()
    );
    assert_eq!(
        e,
        "/dev/loop7 is smaller than the image: 1048576 bytes < 1048577 bytes"
    );
    fits("/dev/loop7", 1 << 20, 1 << 20).unwrap();
}

#[test]
fn the_log_is_never_a_symlink_and_times_are_rfc3339() {
    let t = tempfile::tempdir().unwrap();
    let img = synth(t.path());
    std::os::unix::fs::symlink("/dev/null", t.path().join("flash-log.jsonl")).unwrap();
    let e = format!(
        "{:#}",
        flash(
            &opts(&img, &t.path().join("d"), true),
            &System::default(),
            &mut |_| true
        )
        .unwrap_err()
    );
    assert!(e.contains("never through a symlink"), "{e}");
    assert!(!t.path().join("d").exists());
    // The log's time is RFC 3339 UTC, to the second.
    let t2 = tempfile::tempdir().unwrap();
    let img = synth(t2.path());
    let rec = flash(
        &opts(&img, &t2.path().join("d"), true),
        &System::default(),
        &mut |_| true,
    )
    .unwrap();
    let (date, time) = rec.time.split_once('T').unwrap();
    assert!(
        date.len() == 10 && time.len() == 9 && time.ends_with('Z'),
        "{}",
        rec.time
    );
}

#[test]
fn the_memory_budget_is_half_of_what_is_available_and_the_cgroup_binds() {
    let t = tempfile::tempdir().unwrap();
    let sys = System {
        sys: t.path().to_path_buf(),
        meminfo: t.path().join("meminfo"),
        cgroup: t.path().join("proc-cgroup"),
        ..System::default()
    };
    assert_eq!(memory_budget(&sys), 256 << 20, "nothing said");
    fs::write(
        &sys.meminfo,
        "MemTotal: 9000 kB\nMemAvailable:    4096 kB\n",
    )
    .unwrap();
    assert_eq!(memory_budget(&sys), 2048 * 1024);
    // The process runs in a service under a slice; the slice has the
    // limit, and its page cache does not count as used.
    fs::write(&sys.cgroup, "0::/station.slice/flash.service\n").unwrap();
    let slice = t.path().join("fs/cgroup/station.slice");
    fs::create_dir_all(slice.join("flash.service")).unwrap();
    fs::write(slice.join("flash.service/memory.max"), "max\n").unwrap();
    fs::write(slice.join("flash.service/memory.current"), "1000\n").unwrap();
    fs::write(slice.join("memory.max"), "3145728\n").unwrap();
    fs::write(slice.join("memory.current"), "3145728\n").unwrap();
    fs::write(
        slice.join("memory.stat"),
        "anon 2097152\ninactive_file 1048576\n",
    )
    .unwrap();
    assert_eq!(memory_budget(&sys), 512 * 1024, "the slice has 1 MiB left");
    fs::write(slice.join("memory.max"), "max\n").unwrap();
    assert_eq!(memory_budget(&sys), 2048 * 1024, "no limit anywhere");
    // A path that climbs out of the cgroup tree is not followed.
    fs::write(&sys.cgroup, "0::/../../etc\n").unwrap();
    assert_eq!(memory_budget(&sys), 2048 * 1024);
    fs::write(&sys.meminfo, "MemAvailable: 99999999999 kB\n").unwrap();
    assert_eq!(memory_budget(&sys), memory::MAX_KEPT);
}
