//! The `cpio_read` and `swdesc_parse` fuzz targets under stable
//! `cargo test` (their corpus, generated seeds and mutations: no panic,
//! bounded allocation, escaped messages, see `slotsmith_swu::fuzz`), and
//! the cpio writer against GNU cpio on random archives: what we write,
//! GNU cpio lists and extracts with every checksum verified, and what GNU
//! cpio writes in the same format, we read.

use sha2::{Digest, Sha256};
use slotsmith_swu::{
    fuzz, read_index, read_swu_from, Bootloader, Collection, Compression, CpioWriter, Fit, Payload,
    SwDescription, Target,
};
use std::fs;
use std::io::Cursor;

#[global_allocator]
static ALLOC: slotsmith_fuzzing::CountingAlloc = slotsmith_fuzzing::CountingAlloc;

/// xorshift64: deterministic, so every failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn payload(name: &str, data: &[u8], target: Target, compressed: Compression) -> Payload {
    Payload {
        filename: name.into(),
        sha256: Sha256::digest(data).into(),
        size: data.len() as u64,
        compressed,
        target,
        fit: None,
    }
}

/// A small but complete `.swu` in the shape the build writes, and its
/// sw-description text.
fn small_swu() -> (Vec<u8>, String) {
    let rootfs = b"rootfs bytes".repeat(20);
    let kernel = b"kernel".to_vec();
    let mut root = payload(
        "rootfs-b.img",
        &rootfs,
        Target::Raw {
            device: "/dev/mmcblk0p4".into(),
        },
        Compression::Zstd,
    );
    root.fit = Some(Fit {
        installed_size: 4096,
        capacity: 1 << 20,
    });
    let kern = payload(
        "kernel-b",
        &kernel,
        Target::File {
            path: "/boot/b/vmlinuz".into(),
        },
        Compression::None,
    );
    let desc = SwDescription {
        name: "mini".into(),
        version: "1.0".into(),
        hardware_compatibility: vec!["1.0".into()],
        security_version: None,
        collections: vec![Collection::ab("b", Bootloader::UBoot, vec![root, kern]).unwrap()],
    };
    let text = desc.to_libconfig().unwrap();
    let mut w = CpioWriter::new(Vec::new());
    w.add_bytes("sw-description", text.as_bytes()).unwrap();
    w.add_bytes("sw-description.sig", b"not checked by the fuzz target")
        .unwrap();
    w.add_bytes("rootfs-b.img", &rootfs).unwrap();
    w.add_bytes("kernel-b", &kernel).unwrap();
    (w.finish().unwrap(), text)
}

#[test]
fn the_seeds_are_valid() {
    let (swu, text) = small_swu();
    let c = read_swu_from(Cursor::new(&swu), |_, _| Ok(())).unwrap();
    assert_eq!(c.entries.len(), 4);
    assert_eq!(SwDescription::parse(&text).unwrap(), c.description);
    // `SLOTSMITH_WRITE_CORPUS=1 cargo test` refreshes the committed seeds
    // after a format change.
    if std::env::var_os("SLOTSMITH_WRITE_CORPUS").is_some() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        for (target, name, bytes) in [
            ("swdesc_parse", "small.swdesc", text.as_bytes()),
            ("cpio_read", "small.swu", &swu[..]),
        ] {
            fs::create_dir_all(root.join(target)).unwrap();
            fs::write(root.join(target).join(name), bytes).unwrap();
        }
    }
    assert!(
        slotsmith_fuzzing::corpus("cpio_read").contains(&swu),
        "fuzz/corpus/cpio_read/ lacks the current small .swu"
    );
    let committed = slotsmith_fuzzing::corpus("swdesc_parse");
    assert!(
        committed.iter().any(|c| c == text.as_bytes()),
        "fuzz/corpus/swdesc_parse/ lacks the current rendering:\n{text}"
    );
}

#[test]
fn fuzz_cpio_read() {
    let (swu, _) = small_swu();
    let mut w = CpioWriter::new(Vec::new());
    w.add_bytes("a", b"").unwrap();
    w.add_bytes("b.img", &[0xff; 999]).unwrap();
    let plain = w.finish().unwrap();
    slotsmith_fuzzing::exercise("cpio_read", &[swu, plain], 5000, fuzz::cpio_read);
}

#[test]
fn fuzz_swdesc_parse() {
    let (_, text) = small_swu();
    let mut grub = SwDescription::parse(&text).unwrap();
    grub.collections[0].bootenv = slotsmith_swu::bootenv_for(Bootloader::Grub, "b");
    grub.collections
        .push(Collection::ab("a", Bootloader::Grub, vec![]).unwrap());
    let seeds = vec![text.into_bytes(), grub.to_libconfig().unwrap().into_bytes()];
    slotsmith_fuzzing::exercise("swdesc_parse", &seeds, 5000, fuzz::swdesc_parse);
}

fn cpio_tool(args: &[&str], dir: &std::path::Path, stdin: &[u8]) -> Vec<u8> {
    let out = duct::cmd("cpio", args)
        .dir(dir)
        .stdin_bytes(stdin)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .expect("GNU cpio must be installed (Debian package cpio)");
    // GNU cpio reports a checksum error on stderr but still exits 0.
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "cpio {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Random member names (the writer's alphabet, 1 to 100 bytes), sizes
/// (0, odd, across the padding boundaries) and contents: GNU cpio lists
/// the members in order and extracts them byte for byte, verifying each
/// `070702` checksum as it goes, and our reader agrees.
#[test]
fn random_archives_round_trip_through_gnu_cpio() {
    const ALPHABET: &[u8] = b"ABCXYZabcxyz0189._-";
    let mut rng = Rng(0x5eed_1234_5678_9abc);
    for round in 0..30 {
        let mut members: Vec<(String, Vec<u8>)> = Vec::new();
        for _ in 0..rng.below(6) {
            let len = 1 + rng.below(100) as usize;
            let name: String = (0..len)
                .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char)
                .collect();
            if name == "." || name == ".." || members.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let size = match rng.below(4) {
                0 => 0,
                1 => rng.below(8) as usize,
                _ => rng.below(5000) as usize,
            };
            members.push((name, rng.bytes(size)));
        }
        let mut w = CpioWriter::new(Vec::new());
        for (n, d) in &members {
            w.add_bytes(n, d).unwrap();
        }
        let archive = w.finish().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let listing = String::from_utf8(cpio_tool(
            &["-it", "-H", "crc", "--quiet"],
            dir.path(),
            &archive,
        ))
        .unwrap();
        let names: Vec<&str> = listing.lines().collect();
        let want: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, want, "round {round}");
        cpio_tool(&["-i", "-H", "crc", "--quiet"], dir.path(), &archive);
        for (n, d) in &members {
            assert_eq!(
                &fs::read(dir.path().join(n)).unwrap(),
                d,
                "round {round}: {n}"
            );
        }
        let ours = read_index(Cursor::new(&archive)).unwrap();
        assert_eq!(ours.len(), members.len());
        for (e, (n, d)) in ours.iter().zip(&members) {
            assert_eq!((&e.name, e.size), (n, d.len() as u64));
            assert_eq!(&archive[e.offset as usize..][..d.len()], &d[..]);
        }
    }
}

/// The reverse direction: archives GNU cpio writes in the same format
/// (`-o -H crc`) are accepted by our reader with the right sizes,
/// checksums and data offsets.
#[test]
fn gnu_cpio_archives_are_read_by_ours() {
    let mut rng = Rng(0xfeed_f00d);
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for (i, size) in [0usize, 1, 3, 4, 511, 512, 513, 4099]
        .into_iter()
        .enumerate()
    {
        let name = format!("member-{i}.bin");
        fs::write(dir.path().join(&name), rng.bytes(size)).unwrap();
        names.push(name);
    }
    let list = names.join("\n") + "\n";
    let archive = cpio_tool(&["-o", "-H", "crc", "--quiet"], dir.path(), list.as_bytes());
    let entries = read_index(Cursor::new(&archive)).unwrap();
    assert_eq!(
        entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        names
    );
    for e in &entries {
        let want = fs::read(dir.path().join(&e.name)).unwrap();
        assert_eq!(&archive[e.offset as usize..][..want.len()], &want[..]);
        let sum = want.iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
        assert_eq!(e.check, sum, "{}", e.name);
    }
}
