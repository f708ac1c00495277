//! Cross-checks against the real `veritysetup` (cryptsetup-bin): our hash
//! area must be byte-identical to what it writes, it must accept our trees,
//! and both must reject the same corruptions.
//!
//! These run on plain temp files; `veritysetup format/verify/dump` need
//! neither root nor device mapper. A missing tool fails loudly instead of
//! skipping, because a silently skipped compatibility test proves nothing.

use slotsmith_verity::{format, format_file, read_superblock, verify, verify_file, VerityParams};
use std::fs::{self, File};
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const SALT_HEX: &str = "5a17ab0c1d2e3f405162738495a6b7c8d9eafb0c1d2e3f405162738495a6b7c8";
const UUID: &str = "7e5a1c2b-93d4-4f0e-8a6b-1c2d3e4f5a6b";

fn params() -> VerityParams {
    let mut salt = [0u8; 32];
    hex::decode_to_slice(SALT_HEX, &mut salt).unwrap();
    VerityParams {
        salt,
        uuid: uuid::Uuid::parse_str(UUID).unwrap(),
    }
}

/// Runs veritysetup, returning (exit code, stdout+stderr).
fn veritysetup(args: &[&str]) -> (i32, String) {
    let out = duct::cmd("veritysetup", args)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .unwrap_or_else(|e| {
            panic!("cannot run veritysetup ({e}); install the Debian package cryptsetup-bin")
        });
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Deterministic pseudo-random data, so failures reproduce.
fn write_data(path: &Path, blocks: u64, seed: u64) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let bytes: Vec<u8> = (0..blocks * 4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    fs::write(path, bytes).unwrap();
}

struct Case {
    _dir: tempfile::TempDir,
    data: PathBuf,
    ours: PathBuf,
    theirs: PathBuf,
    root: [u8; 32],
}

/// Formats `blocks` blocks with both tools and checks they agree.
fn both(blocks: u64) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.img");
    let ours = dir.path().join("ours.img");
    let theirs = dir.path().join("theirs.img");
    write_data(&data, blocks, blocks);

    let (rc, out) = veritysetup(&[
        "format",
        "--salt",
        SALT_HEX,
        "--uuid",
        UUID,
        path_str(&data),
        path_str(&theirs),
    ]);
    assert_eq!(rc, 0, "veritysetup format failed: {out}");
    let their_root = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no root hash in: {out}"))
        .to_owned();

    let data_file = File::open(&data).unwrap();
    let mut hash_file = File::create(&ours).unwrap();
    let info = format_file(&data_file, blocks * 4096, &mut hash_file, &params()).unwrap();
    drop(hash_file);

    assert_eq!(hex::encode(info.root_hash), their_root, "{blocks} blocks");
    let a = fs::read(&ours).unwrap();
    let b = fs::read(&theirs).unwrap();
    assert_eq!(a.len(), b.len(), "{blocks} blocks: hash area sizes differ");
    if let Some(at) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!("{blocks} blocks: hash areas differ first at byte {at}");
    }
    assert_eq!(info.hash_size, a.len() as u64);
    assert_eq!(slotsmith_verity::hash_size(blocks * 4096), a.len() as u64);

    // The generic streaming path must produce the same bytes.
    let mut generic = Cursor::new(Vec::new());
    let ginfo = format(
        File::open(&data).unwrap(),
        blocks * 4096,
        &mut generic,
        &params(),
    )
    .unwrap();
    assert_eq!(ginfo, info);
    assert!(
        generic.into_inner() == a,
        "{blocks} blocks: streaming path differs"
    );

    Case {
        _dir: dir,
        data,
        ours,
        theirs,
        root: info.root_hash,
    }
}

fn flip(path: &Path, offset: u64) {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    std::io::Read::read_exact(&mut f, &mut byte).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[byte[0] ^ 0x01]).unwrap();
}

fn our_verify(case: &Case, root: &[u8; 32]) -> anyhow::Result<slotsmith_verity::VerityInfo> {
    let size = fs::metadata(&case.data).unwrap().len();
    let a = verify(File::open(&case.data)?, size, File::open(&case.ours)?, root);
    let b = verify_file(
        &File::open(&case.data)?,
        size,
        File::open(&case.ours)?,
        root,
    );
    // Both data paths must diagnose identically.
    match (&a, &b) {
        (Ok(x), Ok(y)) => assert_eq!(x, y),
        (Err(x), Err(y)) => assert_eq!(format!("{x:#}"), format!("{y:#}")),
        _ => panic!("verify and verify_file disagree: {a:?} vs {b:?}"),
    }
    a
}

fn their_verify(case: &Case, root: &[u8; 32]) -> i32 {
    let root = hex::encode(root);
    veritysetup(&["verify", path_str(&case.data), path_str(&case.ours), &root]).0
}

#[test]
fn byte_identical_to_veritysetup() {
    for blocks in [1, 2, 3, 128, 129, 16384, 16385] {
        let case = both(blocks);
        assert_eq!(their_verify(&case, &case.root), 0, "{blocks} blocks");
        our_verify(&case, &case.root).unwrap();
        // And we accept theirs.
        let size = blocks * 4096;
        verify(
            File::open(&case.data).unwrap(),
            size,
            File::open(&case.theirs).unwrap(),
            &case.root,
        )
        .unwrap();
    }
}

#[test]
fn single_block_hash_area_is_only_the_superblock() {
    let case = both(1);
    assert_eq!(fs::metadata(&case.ours).unwrap().len(), 4096);
}

#[test]
fn flipped_data_byte() {
    for blocks in [2u64, 129, 16385] {
        let case = both(blocks);
        let victim = blocks / 2;
        flip(&case.data, victim * 4096 + 1234);
        assert_ne!(their_verify(&case, &case.root), 0, "{blocks} blocks");
        let e = format!("{:#}", our_verify(&case, &case.root).unwrap_err());
        assert!(
            e.starts_with(&format!("data block {victim} does not match the hash tree")),
            "{e}"
        );
    }
}

#[test]
fn flipped_hash_block_byte() {
    // 16385 blocks: top at hash block 1, level 1 at 2-3, level 0 at 4-132.
    let case = both(16385);
    flip(&case.ours, 50 * 4096 + 100);
    assert_ne!(their_verify(&case, &case.root), 0);
    let e = format!("{:#}", our_verify(&case, &case.root).unwrap_err());
    assert!(e.starts_with("hash block 46 at level 0 is corrupt"), "{e}");
    assert!(e.contains("hash device block 50,"), "{e}");

    let case = both(129);
    flip(&case.ours, 4096 + 7); // the single top block
    assert_ne!(their_verify(&case, &case.root), 0);
    let e = format!("{:#}", our_verify(&case, &case.root).unwrap_err());
    assert!(e.starts_with("hash block 0 at level 1 is corrupt"), "{e}");
}

#[test]
fn flipped_superblock_salt() {
    for blocks in [2u64, 16385] {
        let case = both(blocks);
        flip(&case.ours, 88 + 10);
        assert_ne!(their_verify(&case, &case.root), 0);
        let e = format!("{:#}", our_verify(&case, &case.root).unwrap_err());
        assert!(e.starts_with("superblock salt"), "{e}");
    }
}

#[test]
fn wrong_root_hash() {
    let case = both(129);
    let mut root = case.root;
    root[31] ^= 0x40;
    assert_ne!(their_verify(&case, &root), 0);
    let e = format!("{:#}", our_verify(&case, &root).unwrap_err());
    assert!(e.starts_with("root hash mismatch"), "{e}");
}

#[test]
fn dump_parses_our_superblock() {
    let case = both(16385);
    let (rc, out) = veritysetup(&["dump", path_str(&case.ours)]);
    assert_eq!(rc, 0, "{out}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    assert_eq!(field("UUID:"), UUID);
    assert_eq!(field("Salt:"), SALT_HEX);
    assert_eq!(field("Data blocks:"), "16385");
    assert_eq!(field("Hash type:"), "1");
    assert_eq!(field("Hash algorithm:"), "sha256");
    assert_eq!(field("Hash blocks:"), "132");

    let sb = read_superblock(File::open(&case.theirs).unwrap()).unwrap();
    assert_eq!(sb.uuid.to_string(), UUID);
    assert_eq!(hex::encode(&sb.salt), SALT_HEX);
    assert_eq!(sb.data_blocks, 16385);
    assert_eq!((sb.data_block_size, sb.hash_block_size), (4096, 4096));
    assert_eq!((sb.algorithm.as_str(), sb.hash_type), ("sha256", 1));
}

#[test]
fn deterministic() {
    let a = both(300);
    let first = fs::read(&a.ours).unwrap();
    let data_file = File::open(&a.data).unwrap();
    let mut again = tempfile::tempfile().unwrap();
    let info = format_file(&data_file, 300 * 4096, &mut again, &params()).unwrap();
    assert_eq!(info.root_hash, a.root);
    let mut second = Vec::new();
    again.seek(SeekFrom::Start(0)).unwrap();
    std::io::Read::read_to_end(&mut again, &mut second).unwrap();
    assert!(first == second);
}
