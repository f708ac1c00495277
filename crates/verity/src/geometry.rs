//! Shape of a format-1 hash tree: how many hash blocks each level has and
//! where each level sits in the hash area.
//!
//! Kept separate from the hashing code because partition planning needs the
//! hash-area size without touching any data, and the verifier needs the same
//! offsets to find stored blocks; one definition keeps all three in step.

use crate::{BLOCK, DIGESTS_PER_BLOCK};

/// Block counts of every hash level for a given number of data blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub data_blocks: u64,
    /// Hash blocks per level, level 0 (digests of data blocks) first. Empty
    /// for a single data block: veritysetup then writes no levels at all and
    /// the root hash is the digest of that one data block.
    pub levels: Vec<u64>,
}

impl Geometry {
    pub fn new(data_blocks: u64) -> Self {
        // Same loop as cryptsetup's VERITY_create_or_verify_hash: keep adding
        // levels while the level below has more than one entry.
        let mut levels = Vec::new();
        let mut count = data_blocks;
        while count > 1 {
            count = count.div_ceil(DIGESTS_PER_BLOCK);
            levels.push(count);
        }
        Self {
            data_blocks,
            levels,
        }
    }

    /// Number of hash blocks in all levels together.
    pub fn tree_blocks(&self) -> u64 {
        self.levels.iter().sum()
    }

    /// Bytes in the hash area: the superblock block plus every level.
    pub fn hash_size(&self) -> u64 {
        BLOCK.saturating_mul(self.tree_blocks().saturating_add(1))
    }

    /// Hash-device block index of the first block of `level`. Levels are
    /// stored top first after the superblock block, so a level starts after
    /// every level above it.
    pub fn level_start_block(&self, level: usize) -> u64 {
        1 + self.levels.iter().skip(level + 1).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_counts_match_veritysetup() {
        assert_eq!(Geometry::new(1).levels, Vec::<u64>::new());
        assert_eq!(Geometry::new(2).levels, vec![1]);
        assert_eq!(Geometry::new(128).levels, vec![1]);
        assert_eq!(Geometry::new(129).levels, vec![2, 1]);
        assert_eq!(Geometry::new(16384).levels, vec![128, 1]);
        // The reference reports 132 hash blocks and 3 levels for 16385.
        assert_eq!(Geometry::new(16385).levels, vec![129, 2, 1]);
        assert_eq!(Geometry::new(16385).tree_blocks(), 132);
    }

    #[test]
    fn sizes_and_offsets() {
        assert_eq!(Geometry::new(1).hash_size(), 4096);
        assert_eq!(Geometry::new(16384).hash_size(), 532_480);
        let g = Geometry::new(16385);
        assert_eq!(g.level_start_block(2), 1);
        assert_eq!(g.level_start_block(1), 2);
        assert_eq!(g.level_start_block(0), 4);
        // Absurd sizes must not overflow or panic.
        let huge = Geometry::new(u64::MAX);
        assert!(huge.hash_size() > 0);
    }
}
