//! The init's parsers of untrusted bytes under stable `cargo test`, with
//! slotsmith-fuzzing's deterministic mutations: the FAT reader (a boot
//! partition is unauthenticated until its manifest's signature is
//! checked, so a crafted filesystem must end in an error, never a panic,
//! a hang or an unbounded allocation), and the command-line and uevent
//! parsers (errors printable, no panic).

use slotsmith_init::{cmdline, discover, fat};
use std::fs;
use std::io::Cursor;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: slotsmith_fuzzing::CountingAlloc = slotsmith_fuzzing::CountingAlloc;

fn run(program: &str, args: &[&str]) {
    let out = duct::cmd(program, args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap_or_else(|e| panic!("{program} must be installed to run these tests: {e}"));
    assert!(out.status.success(), "{program} {args:?} failed");
}

/// A 64 KiB FAT12 image with a manifest and a 64-byte signature.
fn small_fat() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("boot.img");
    let img_s = img.to_str().unwrap();
    run("mkfs.vfat", &["-C", img_s, "64"]);
    for (name, bytes) in [
        ("manifest", &b"slotsmith-boot-manifest v2\nimage demo\n"[..]),
        ("manifest.sig", &[7u8; 64][..]),
    ] {
        let src = tmp.path().join("src");
        fs::write(&src, bytes).unwrap();
        run(
            "mcopy",
            &[
                "-i",
                img_s,
                "-o",
                src.to_str().unwrap(),
                &format!("::/{name}"),
            ],
        );
    }
    fs::read(&img).unwrap()
}

#[test]
fn fat_reader_survives_mutated_filesystems() {
    let seed = small_fat();
    let files = fat::read_boot_files(Cursor::new(seed.clone())).unwrap();
    assert_eq!(files.sig, [7u8; 64]);
    // Mutations anywhere in 64 KiB mostly hit free space; a seed of the
    // metadata alone (boot sector, FATs, root directory) focuses them, and
    // is padded back to a whole image before reading.
    let head = seed[..8192].to_vec();
    slotsmith_fuzzing::exercise("init_fat", &[seed.clone(), head], 3000, |input| {
        let mut image = seed.clone();
        let n = input.len().min(image.len());
        image[..n].copy_from_slice(&input[..n]);
        let started = Instant::now();
        if let Err(err) = fat::read_boot_files(Cursor::new(image)) {
            let text = format!("{err:#}");
            assert!(!text.is_empty());
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "reading one 64 KiB image took {:?}",
            started.elapsed()
        );
    });
}

#[test]
fn cmdline_and_uevent_parsers_survive_mutations() {
    let line = "console=ttyS0 \"q=a b\" slotsmith.slot=a slotsmith.roothash=caba66f5d7d5c85ea5b8b50651e0835b1e93df0b108532eb07fe0ea8c2c3d99b slotsmith.svn=3 ro -- x";
    slotsmith_fuzzing::exercise("init_cmdline", &[line.as_bytes().to_vec()], 3000, |input| {
        let text = String::from_utf8_lossy(input);
        let _ = cmdline::params(&text);
        if let Err(err) = cmdline::parse(&text) {
            let msg = format!("{err:#}");
            assert!(!msg.chars().any(char::is_control), "{msg:?}");
        }
    });
    let uevent = "MAJOR=254\nMINOR=4\nDEVNAME=vda4\nDEVTYPE=partition\nPARTN=4\nPARTNAME=root-a\n";
    slotsmith_fuzzing::exercise(
        "init_uevent",
        &[uevent.as_bytes().to_vec()],
        2000,
        |input| {
            let text = String::from_utf8_lossy(input);
            if let Err(err) = discover::parse_uevent(&text) {
                let msg = format!("{err:#}");
                assert!(!msg.chars().any(char::is_control), "{msg:?}");
            }
        },
    );
}
