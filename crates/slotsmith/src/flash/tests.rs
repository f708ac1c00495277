//! `flash` end to end on files: a synthesized image with the bmap our
//! build writes and its `SHA256SUMS` (no signed manifests: those are
//! checked by the integration test on a built image).

use super::*;
use sha2::{Digest, Sha256};
use std::fs;

/// out/t/: t.img (sparse, data islands), t.img.bmap, SHA256SUMS.
fn synth(dir: &Path) -> PathBuf {
    let img = dir.join("t.img");
    let size = 5 * write::CHUNK as u64 + 3 * 4096 + 512;
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
        log: None,
        boot_key: None,
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
fn a_corrupted_image_range_is_refused_before_any_write() {
    let t = tempfile::tempdir().unwrap();
    let img = synth(t.path());
    let mut data = fs::read(&img).unwrap();
    data[write::CHUNK + 5] ^= 0x40;
    fs::write(&img, &data).unwrap();
    let dest = t.path().join("dest.img");
    fs::write(&dest, b"untouched").unwrap();
    let e = format!(
        "{:#}",
        flash(&opts(&img, &dest, true), &System::default(), &mut |_| true).unwrap_err()
    );
    assert!(
        e.starts_with(&format!("refusing to flash {}: image ", dest.display())),
        "{e}"
    );
    assert!(e.contains("is not the one SHA256SUMS lists"), "{e}");
    assert_eq!(fs::read(&dest).unwrap(), b"untouched");
    let l = &log_lines(t.path())[0];
    assert_eq!(l["result"], "refused");
    assert_eq!(l["bytes_written"], 0);
    assert!(l["reason"].as_str().unwrap().contains("SHA256SUMS"));

    // SHA256SUMS rewritten to match: the bmap's checksum for that range
    // still fails, before any write (the image's head is read and checked
    // range by range while the whole image is hashed; a range further on
    // fails during the write, see `write::tests`).
    let sums = fs::read_to_string(t.path().join("SHA256SUMS")).unwrap();
    let (_, rest) = sums.split_once("  t.img\n").unwrap();
    fs::write(
        t.path().join("SHA256SUMS"),
        format!("{}  t.img\n{rest}", hex::encode(Sha256::digest(&data))),
    )
    .unwrap();
    let e = format!(
        "{:#}",
        flash(&opts(&img, &dest, true), &System::default(), &mut |_| true).unwrap_err()
    );
    assert!(
        e.starts_with(&format!(
            "refusing to flash {}: image {}: image: blocks",
            dest.display(),
            img.display()
        )),
        "{e}"
    );
    assert_eq!(fs::read(&dest).unwrap(), b"untouched");
    assert_eq!(log_lines(t.path())[1]["result"], "refused");
    assert_eq!(log_lines(t.path())[1]["bytes_written"], 0);
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
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
}
