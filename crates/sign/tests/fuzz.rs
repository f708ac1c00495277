//! The `manifest_parse` fuzz target under stable `cargo test`: its corpus,
//! real v1 and v2 manifests as seeds, and their mutations. No panic,
//! bounded allocation, canonical re-encoding, printable errors, and the
//! signature check agreeing with the parser (see
//! `slotsmith_sign::manifest::fuzz_parse`). The openssl round trip of a
//! signed manifest is in tests/openssl.rs.

use slotsmith_sign::manifest::{fuzz_parse, FileRef, Manifest};
use uuid::Uuid;

#[global_allocator]
static ALLOC: slotsmith_fuzzing::CountingAlloc = slotsmith_fuzzing::CountingAlloc;

fn file(path: &str, fill: u8, size: u64) -> FileRef {
    FileRef {
        path: path.into(),
        sha256: [fill; 32],
        size,
    }
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let base = Manifest {
        image: "demo".into(),
        version: "1.0.0".into(),
        security_version: 7,
        slot: "b".into(),
        golden_slots: Some(vec!["a".into(), "b".into()]),
        kernel: file("/b/vmlinuz", 0x11, 8_000_000),
        initrd: Some(file("/b/initrd.img", 0x22, 1_000_000)),
        dtb: Some(file("/b/board.dtb", 0x33, 0)),
        cmdline: "console=ttyS0 ro slotsmith.slot=b".into(),
        verity_root_hash: [0x44; 32],
        verity_salt: [0x55; 32],
        verity_data_blocks: 4096,
        verity_hash_start_block: 1,
        root_partition_uuid: Uuid::from_bytes([0x44; 16]),
        verity_partition_uuid: Uuid::from_bytes([0x44; 16]),
    };
    let v1 = Manifest {
        golden_slots: None,
        initrd: None,
        dtb: None,
        ..base.clone()
    };
    let only_a = Manifest {
        golden_slots: Some(vec!["a".into()]),
        ..base.clone()
    };
    [("v2", base), ("v1", v1), ("v2-golden-a", only_a)]
        .into_iter()
        .map(|(name, m)| (name, m.to_bytes().unwrap()))
        .collect()
}

#[test]
fn fuzz_manifest_parse() {
    let seeds = seeds();
    // `SLOTSMITH_WRITE_CORPUS=1 cargo test` refreshes the committed seeds
    // after a format change.
    if std::env::var_os("SLOTSMITH_WRITE_CORPUS").is_some() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/manifest_parse");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let corpus = slotsmith_fuzzing::corpus("manifest_parse");
    for (name, bytes) in &seeds {
        assert!(Manifest::parse(bytes).is_ok(), "{name}");
        assert!(
            corpus.contains(bytes),
            "fuzz/corpus/manifest_parse/{name} is not the current encoding"
        );
    }
    let seeds: Vec<Vec<u8>> = seeds.into_iter().map(|(_, b)| b).collect();
    slotsmith_fuzzing::exercise("manifest_parse", &seeds, 5000, fuzz_parse);
}
