//! The GPT reader under stable `cargo test` on the `gpt_verify` corpus
//! (compact images, see `slotsmith_disk::fuzzimage`), valid tables from our
//! encoder as seeds, and their mutations with the CRCs resealed, so that
//! mutated fields reach the checks behind the CRCs (issue 8, defect 4).
//! Invariants: no panic, bounded allocation, and every table the reader
//! accepts is safe to use: each partition inside the usable range and the
//! disk, byte offsets that do not overflow, no two partitions overlapping.
//! The whole verifier runs on the same corpus in
//! crates/slotsmith/tests/fuzz_verify.rs.

use slotsmith_disk::fuzzimage;
use slotsmith_disk::gpt::{read_gpt, reseal, write_gpt, GptLayout, PartitionEntry};
use std::io::Cursor;
use uuid::Uuid;

#[global_allocator]
static ALLOC: slotsmith_fuzzing::CountingAlloc = slotsmith_fuzzing::CountingAlloc;

fn read(input: &[u8]) {
    let Some((mut img, flags)) = fuzzimage::decode(input) else {
        return;
    };
    if flags & fuzzimage::RESEAL_GPT != 0 {
        reseal(&mut img, 512);
    }
    let len = img.len() as u64;
    match read_gpt(&mut Cursor::new(img), 512) {
        Ok(t) => {
            let mut spans: Vec<(u64, u64)> = Vec::new();
            for p in &t.partitions {
                assert!(p.first_lba <= p.last_lba, "{p:?}");
                let end = (p.last_lba + 1).checked_mul(512);
                assert!(end.is_some_and(|e| e <= len), "{p:?} leaves the disk");
                spans.push((p.first_lba, p.last_lba));
            }
            spans.sort();
            assert!(
                spans.windows(2).all(|w| w[0].1 < w[1].0),
                "overlap in {t:?}"
            );
        }
        Err(e) => {
            let text = format!("{e:#}");
            assert!(
                !text.chars().any(|c| c.is_control()),
                "unescaped text in {text:?}"
            );
        }
    }
}

fn layout(parts: &[(u64, u64)]) -> GptLayout {
    GptLayout {
        sector_size: 512,
        disk_size: 200 * 512,
        disk_guid: Uuid::from_u128(9),
        partitions: parts
            .iter()
            .enumerate()
            .map(|(i, &(first, last))| PartitionEntry {
                name: format!("p{i}"),
                type_guid: Uuid::from_u128(0x1000 + i as u128),
                part_guid: Uuid::from_u128(0x2000 + i as u128),
                first_lba: first,
                last_lba: last,
                attributes: 1 << 60,
            })
            .collect(),
    }
}

#[test]
fn fuzz_gpt_read() {
    let mut seeds = Vec::new();
    for parts in [
        vec![],
        vec![(34, 100)],
        vec![(34, 40), (41, 41), (100, 166)],
    ] {
        let l = layout(&parts);
        let mut dev = Cursor::new(vec![0u8; l.disk_size as usize]);
        write_gpt(&mut dev, &l).unwrap();
        let img = dev.into_inner();
        assert_eq!(read_gpt(&mut Cursor::new(img.clone()), 512).unwrap(), l);
        seeds.push(fuzzimage::encode(&img, fuzzimage::RESEAL_GPT));
        seeds.push(fuzzimage::encode(&img, 0));
    }
    slotsmith_fuzzing::exercise("gpt_verify", &seeds, 5000, read);
}
