//! The `verity_superblock` fuzz target under stable `cargo test`: its
//! corpus, real hash areas of zero-, one- and two-level trees as seeds,
//! and their mutations. No panic, bounded allocation, escaped messages,
//! and no hash area but the real one verifies.

use slotsmith_verity::fuzz;

#[global_allocator]
static ALLOC: slotsmith_fuzzing::CountingAlloc = slotsmith_fuzzing::CountingAlloc;

#[test]
fn fuzz_verity_superblock() {
    // 1 block (no levels), 2 and 128 (one level), 129 (two levels).
    let seeds: Vec<Vec<u8>> = [0u8, 1, 127, 128].into_iter().map(fuzz::seed).collect();
    for s in &seeds {
        assert!(s.len() > 4096, "seed of {} bytes", s.len());
        fuzz::superblock(s);
    }
    // The committed corpus seed is the real one-block tree.
    assert_eq!(
        slotsmith_fuzzing::corpus("verity_superblock"),
        [seeds[0].clone()]
    );
    slotsmith_fuzzing::exercise("verity_superblock", &seeds, 5000, fuzz::superblock);
}
