//! The verity table the init loads, checked against cryptsetup's
//! `veritysetup`, the reference implementation of the on-disk format.
//!
//! `veritysetup format` builds a hash tree on plain files (no kernel, no
//! root); the init's table is built from a manifest holding what format
//! reported; then every field of the table is handed back to
//! `veritysetup verify --no-superblock`, which checks the data against the
//! hash tree in user space exactly as dm-verity would with that table. It
//! must pass on the intact data and fail after one flipped byte, so a
//! wrong offset, block count, salt or hash in the table cannot go
//! unnoticed.

use slotsmith_init::discover::BlockDev;
use slotsmith_init::dm::{load_request, verity_target, DM_IOCTL_SIZE, TARGET_SPEC_SIZE};
use slotsmith_sign::manifest::{FileRef, Manifest};
use std::fs;
use std::path::Path;

const SALT: &str = "5096ab46b6fe56d844a17082931c5559277718220157666ee9c9371131eee380";
const BLOCKS: u64 = 24;

fn veritysetup(args: &[&str]) -> (bool, String) {
    let out = duct::cmd("veritysetup", args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .expect("veritysetup (cryptsetup-bin) must be installed to run these tests");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn dev(name: &str, major: u32, minor: u32) -> BlockDev {
    BlockDev {
        name: name.into(),
        devname: name.into(),
        major,
        minor,
    }
}

fn manifest(root_hash: [u8; 32], salt: [u8; 32]) -> Manifest {
    Manifest {
        image: "demo".into(),
        version: "1.0.0".into(),
        security_version: 1,
        slot: "a".into(),
        golden_slots: Some(vec!["a".into()]),
        kernel: FileRef {
            path: "/a/vmlinuz".into(),
            sha256: [1; 32],
            size: 1,
        },
        initrd: None,
        dtb: None,
        cmdline: "ro".into(),
        verity_root_hash: root_hash,
        verity_salt: salt,
        verity_data_blocks: BLOCKS,
        verity_hash_start_block: 1,
        root_partition_uuid: uuid::Uuid::from_bytes([1; 16]),
        verity_partition_uuid: uuid::Uuid::from_bytes([2; 16]),
    }
}

/// Verifies `data` against `hash` with the parameters of `params` (the
/// table's parameter string), as dm-verity would.
fn verify_with_table(params: &str, data: &Path, hash: &Path) -> (bool, String) {
    let f: Vec<&str> = params.split(' ').collect();
    assert_eq!(f.len(), 12, "{params}");
    let hash_block_size: u64 = f[4].parse().unwrap();
    let hash_offset = (f[6].parse::<u64>().unwrap() * hash_block_size).to_string();
    veritysetup(&[
        "verify",
        "--no-superblock",
        "--format",
        f[0],
        "--data-block-size",
        f[3],
        "--hash-block-size",
        f[4],
        "--data-blocks",
        f[5],
        "--hash-offset",
        &hash_offset,
        "--hash",
        f[7],
        "--salt",
        f[9],
        s(data),
        s(hash),
        f[8],
    ])
}

#[test]
fn the_table_verifies_with_veritysetup_and_catches_one_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("root.img");
    let hash = tmp.path().join("root.verity");
    // Deterministic, non-repeating content (an xorshift stream).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..BLOCKS * 4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(&data, &bytes).unwrap();
    fs::write(&hash, b"").unwrap();
    let (ok, out) = veritysetup(&[
        "format",
        "--data-block-size",
        "4096",
        "--hash-block-size",
        "4096",
        "--salt",
        SALT,
        s(&data),
        s(&hash),
    ]);
    assert!(ok, "{out}");
    let root_hex = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(str::trim)
        .expect("veritysetup prints the root hash")
        .to_string();
    let mut root = [0u8; 32];
    hex::decode_to_slice(&root_hex, &mut root).unwrap();
    let mut salt = [0u8; 32];
    hex::decode_to_slice(SALT, &mut salt).unwrap();

    let target = verity_target(
        &manifest(root, salt),
        &dev("vda4", 254, 4),
        &dev("vda5", 254, 5),
    )
    .unwrap();
    assert_eq!(
        target.line(),
        format!(
            "0 {} verity 1 254:4 254:5 4096 4096 {BLOCKS} 1 sha256 {root_hex} {SALT} 1 panic_on_corruption",
            BLOCKS * 8
        )
    );
    // The dm-verity data device is exactly the verified blocks.
    assert_eq!(target.length * 512, bytes.len() as u64);

    let (ok, out) = verify_with_table(&target.params, &data, &hash);
    assert!(ok, "veritysetup rejected the init's table: {out}");

    let mut flipped = bytes.clone();
    flipped[5 * 4096 + 17] ^= 0x01;
    fs::write(&data, &flipped).unwrap();
    let (ok, out) = verify_with_table(&target.params, &data, &hash);
    assert!(!ok, "a flipped byte verified: {out}");
    assert!(out.contains("Verification failed"), "{out}");

    // The parameters travel to the kernel NUL-terminated after the spec.
    let req = load_request("root", &target).unwrap();
    let at = DM_IOCTL_SIZE + TARGET_SPEC_SIZE;
    assert_eq!(&req[at..at + target.params.len()], target.params.as_bytes());
    assert_eq!(req[at + target.params.len()], 0);
}

#[test]
fn block_counts_that_overflow_or_are_zero_are_refused() {
    let mut m = manifest([1; 32], [2; 32]);
    m.verity_data_blocks = u64::MAX / 4;
    let err = verity_target(&m, &dev("a", 1, 1), &dev("b", 1, 2)).unwrap_err();
    assert!(
        err.to_string().contains("overflows a sector count"),
        "{err}"
    );
    m.verity_data_blocks = 0;
    let err = verity_target(&m, &dev("a", 1, 1), &dev("b", 1, 2)).unwrap_err();
    assert_eq!(err.to_string(), "the manifest's verity-data-blocks is 0");
}
