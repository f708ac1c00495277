//! Full verification of a hash area against its data and a trusted root
//! hash, with a precise diagnosis of what differs.
//!
//! `veritysetup verify` only says "Verification failed at position N". A
//! build or update tool benefits from knowing whether the data, one hash
//! block, the superblock salt or the root hash itself is wrong. This module
//! therefore computes every parent/child link of the tree under the stored
//! salt and reads the pattern of failures:
//!
//! - the root matches the stored top block: trust flows top-down, and the
//!   highest failing link names the corrupt hash block (or data block);
//! - the root does not match and no link at all holds: the salt is wrong,
//!   because it enters every digest;
//! - the root does not match, the top block disagrees with its children:
//!   the top block is corrupt;
//! - the root does not match, but the whole stored tree is consistent:
//!   the expected root hash is simply a different one.

use crate::geometry::Geometry;
use crate::superblock::{self, Superblock, SUPERBLOCK_SIZE};
use crate::{parallel, VerityInfo, ALGORITHM, BLOCK, DIGEST_SIZE};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};

/// Recomputes the tree from `data_size` bytes of `data` and checks it, the
/// superblock, the zero padding and `expected_root` against the hash area
/// at offset 0 of `hash`. Errors name what differs: "superblock: …",
/// "hash block N at level L is corrupt", "data block N does not match the
/// hash tree", "… non-zero padding", "superblock salt … does not match" or
/// "root hash mismatch". Levels count from 0, the digests of data blocks.
pub fn verify<R: Read, H: Read + Seek>(
    data: R,
    data_size: u64,
    hash: H,
    expected_root: &[u8; 32],
) -> Result<VerityInfo> {
    verify_with(data_size, hash, expected_root, |salt, leaves, threads| {
        parallel::hash_reader(
            data,
            data_size,
            salt,
            leaves,
            threads,
            parallel::READER_CHUNK,
        )
    })
}

/// [`verify`] reading the data file with `pread` from every hashing thread.
pub fn verify_file<H: Read + Seek>(
    data: &File,
    data_size: u64,
    hash: H,
    expected_root: &[u8; 32],
) -> Result<VerityInfo> {
    verify_with(data_size, hash, expected_root, |salt, leaves, threads| {
        parallel::hash_file(data, data_size, salt, leaves, threads, parallel::FILE_PIECE)
    })
}

/// Outcome of comparing every child digest stored in one level (or the
/// freshly computed data digests) with what the children hash to.
#[derive(Debug)]
struct Links {
    total: u64,
    bad: u64,
    first_bad: Option<u64>,
}

impl Links {
    fn compare(computed: &[u8], stored: &[u8]) -> Self {
        let mut links = Links {
            total: 0,
            bad: 0,
            first_bad: None,
        };
        for (i, (c, s)) in computed
            .chunks_exact(DIGEST_SIZE)
            .zip(stored.chunks_exact(DIGEST_SIZE))
            .enumerate()
        {
            links.total += 1;
            if c != s {
                links.bad += 1;
                links.first_bad.get_or_insert(i as u64);
            }
        }
        links
    }
}

fn verify_with<H: Read + Seek>(
    data_size: u64,
    mut hash: H,
    expected_root: &[u8; 32],
    hash_data: impl FnOnce(&[u8; 32], &mut [u8], usize) -> Result<()>,
) -> Result<VerityInfo> {
    let geometry = crate::checked_geometry(data_size)?;
    let threads = parallel::default_threads();
    let n = geometry.data_blocks;

    // Cheap checks first, so a wrong hash device fails before the data
    // is read.
    let raw = superblock::read_raw(&mut hash)?;
    let sb = Superblock::decode(&raw)?;
    let salt = check_superblock(&sb, &raw, &geometry)?;

    // The size comes from the caller's data size, which may come from an
    // untrusted manifest: check the hash device really holds that much
    // before allocating a buffer for it.
    let hash_len = hash
        .seek(SeekFrom::End(0))
        .context("cannot seek to the end of the hash area")?;
    if hash_len < geometry.hash_size() {
        bail!(
            "hash area is truncated: {} bytes are needed for {n} data blocks, the hash device \
             has {hash_len}",
            geometry.hash_size()
        );
    }
    hash.seek(SeekFrom::Start(SUPERBLOCK_SIZE as u64))
        .context("cannot seek past the verity superblock")?;
    let area_len =
        usize::try_from(geometry.hash_size()).context("hash tree too large for this platform")?;
    let mut area = parallel::alloc(area_len - SUPERBLOCK_SIZE)?;
    hash.read_exact(&mut area).map_err(|e| {
        if e.kind() == ErrorKind::UnexpectedEof {
            anyhow::anyhow!(
                "hash area is truncated: {} bytes are needed for {n} data blocks",
                geometry.hash_size()
            )
        } else {
            anyhow::Error::new(e).context("cannot read the hash area")
        }
    })?;
    let block = BLOCK as usize;
    if let Some(at) = area[..block - SUPERBLOCK_SIZE].iter().position(|&b| b != 0) {
        bail!(
            "superblock block has non-zero padding at byte {}",
            at + SUPERBLOCK_SIZE
        );
    }
    let stored = split_levels(&geometry, &area[block - SUPERBLOCK_SIZE..]);
    check_level_padding(&geometry, &stored)?;

    let mut leaves = crate::leaf_buffer(&geometry)?;
    let n_usize = usize::try_from(n).context("data too large for this platform")?;
    hash_data(&salt, &mut leaves[..n_usize * DIGEST_SIZE], threads)?;

    let info = VerityInfo {
        root_hash: *expected_root,
        salt,
        uuid: sb.uuid,
        data_blocks: n,
        hash_start_block: 1,
        hash_size: geometry.hash_size(),
    };

    let Some(&top_block) = stored.last() else {
        // One data block: the root is its digest, with nothing in between,
        // so data, salt and root cannot be told apart.
        if leaves[..DIGEST_SIZE] != expected_root[..] {
            bail!(
                "root hash mismatch: expected {}, data block 0 with the superblock salt gives {} \
                 (a single-block tree has no hash levels, so a changed data block, salt or root \
                 hash look the same)",
                hex::encode(expected_root),
                hex::encode(&leaves[..DIGEST_SIZE])
            );
        }
        return Ok(info);
    };
    let top = stored.len() - 1;

    // links[l]: the digests stored in level l against what their children
    // (data blocks for level 0, level l-1 blocks otherwise) hash to.
    let mut links = Vec::with_capacity(stored.len());
    links.push(Links::compare(&leaves[..n_usize * DIGEST_SIZE], stored[0]));
    for level in 1..stored.len() {
        let children = stored[level - 1];
        let mut computed = parallel::alloc(children.len() / block * DIGEST_SIZE)?;
        parallel::hash_blocks_parallel(&salt, children, &mut computed, threads)?;
        links.push(Links::compare(&computed, stored[level]));
    }

    let root = parallel::salted_digest(&salt, top_block);
    if root != *expected_root {
        if links.iter().all(|l| l.bad == l.total) {
            bail!(
                "superblock salt {} does not match the hash tree: no data or hash block \
                 verifies with it (corrupt salt, or a superblock from another tree)",
                hex::encode(salt)
            );
        }
        if links[top].bad > 0 {
            bail!(
                "hash block 0 at level {top} is corrupt (hash device block 1): it matches \
                 neither the root hash nor {} of its {} children",
                links[top].bad,
                links[top].total
            );
        }
        let note = if links[0].bad > 0 {
            format!(
                "; {} of {n} data blocks also differ from the hash area, which may belong to \
                 other data",
                links[0].bad
            )
        } else {
            String::new()
        };
        bail!(
            "root hash mismatch: expected {}, the hash area and data give {}{note}",
            hex::encode(expected_root),
            hex::encode(root)
        );
    }

    // The top block is trusted now; walk down, trusting each level once
    // every digest in the level above it has been checked.
    for level in (1..stored.len()).rev() {
        if let Some(index) = links[level].first_bad {
            let child = level - 1;
            let device_block = geometry.level_start_block(child) + index;
            bail!(
                "hash block {index} at level {child} is corrupt (hash device block \
                 {device_block}, byte offset {})",
                device_block * BLOCK
            );
        }
    }
    if let Some(index) = links[0].first_bad {
        bail!(
            "data block {index} does not match the hash tree (byte offset {}; {} of {n} data \
             blocks differ)",
            index * BLOCK,
            links[0].bad
        );
    }
    Ok(info)
}

/// Enforces what this crate writes: format 1, sha256, 4 KiB blocks, a
/// 32-byte salt, the right block count and zeroed reserved fields.
fn check_superblock(
    sb: &Superblock,
    raw: &[u8; SUPERBLOCK_SIZE],
    geometry: &Geometry,
) -> Result<[u8; 32]> {
    if sb.hash_type != 1 {
        bail!(
            "superblock: hash type {} is not supported (only format 1)",
            sb.hash_type
        );
    }
    if sb.algorithm != ALGORITHM {
        bail!(
            "superblock: hash algorithm {:?} is not supported (only sha256)",
            sb.algorithm
        );
    }
    if u64::from(sb.data_block_size) != BLOCK || u64::from(sb.hash_block_size) != BLOCK {
        bail!(
            "superblock: block sizes are {} (data) and {} (hash), expected {BLOCK}",
            sb.data_block_size,
            sb.hash_block_size
        );
    }
    if sb.data_blocks != geometry.data_blocks {
        bail!(
            "superblock: data_blocks is {} but the data is {} blocks",
            sb.data_blocks,
            geometry.data_blocks
        );
    }
    let Ok(salt) = <[u8; 32]>::try_from(sb.salt.as_slice()) else {
        bail!("superblock: salt is {} bytes, expected 32", sb.salt.len());
    };
    if let Some(at) = Superblock::nonzero_padding(raw) {
        bail!("superblock: non-zero padding at byte {at}");
    }
    Ok(salt)
}

/// Slices the tree part of the hash area (after the superblock block) into
/// levels, level 0 first; on disk they are stored top first.
fn split_levels<'a>(geometry: &Geometry, tree: &'a [u8]) -> Vec<&'a [u8]> {
    (0..geometry.levels.len())
        .map(|level| {
            // Both values are bounded by the hash-area length, which was
            // allocated, so they fit in usize.
            let start = ((geometry.level_start_block(level) - 1) * BLOCK) as usize;
            let len = (geometry.levels[level] * BLOCK) as usize;
            &tree[start..start + len]
        })
        .collect()
}

/// The unused tail of each level's last block must be zero, as
/// `veritysetup verify` demands.
fn check_level_padding(geometry: &Geometry, stored: &[&[u8]]) -> Result<()> {
    for (level, bytes) in stored.iter().enumerate() {
        let entries = if level == 0 {
            geometry.data_blocks
        } else {
            geometry.levels[level - 1]
        };
        let used = entries as usize * DIGEST_SIZE;
        if let Some(at) = bytes[used..].iter().position(|&b| b != 0) {
            let index = geometry.levels[level] - 1;
            let device_block = geometry.level_start_block(level) + index;
            bail!(
                "hash block {index} at level {level} has non-zero padding after its last digest \
                 (hash device block {device_block}, byte offset {})",
                device_block * BLOCK + (used + at) as u64 % BLOCK
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{params, pattern};
    use crate::{format, VerityParams};
    use std::io::Cursor;

    fn build(blocks: usize, p: &VerityParams) -> (Vec<u8>, Vec<u8>, [u8; 32]) {
        let data = pattern(blocks * 4096, 42 + blocks as u64);
        let mut out = Cursor::new(Vec::new());
        let info = format(&data[..], data.len() as u64, &mut out, p).unwrap();
        (data, out.into_inner(), info.root_hash)
    }

    fn check(data: &[u8], hash: &[u8], root: &[u8; 32]) -> Result<VerityInfo> {
        verify(data, data.len() as u64, Cursor::new(hash), root)
    }

    fn err(data: &[u8], hash: &[u8], root: &[u8; 32]) -> String {
        format!("{:#}", check(data, hash, root).unwrap_err())
    }

    #[test]
    fn accepts_good_trees() {
        let p = params();
        for blocks in [1, 2, 128, 129, 16385] {
            let (data, hash, root) = build(blocks, &p);
            let info = check(&data, &hash, &root).unwrap();
            assert_eq!(info.root_hash, root);
            assert_eq!(info.salt, p.salt);
            assert_eq!(info.uuid, p.uuid);
            assert_eq!(info.hash_size, hash.len() as u64);
            // Extra bytes after the hash area (a larger partition) are fine.
            let mut longer = hash.clone();
            longer.extend_from_slice(&[0xFF; 5000]);
            check(&data, &longer, &root).unwrap();
            let mut file = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut file, &data).unwrap();
            verify_file(&file, data.len() as u64, Cursor::new(&hash), &root).unwrap();
        }
    }

    #[test]
    fn names_the_corrupt_data_block() {
        let p = params();
        for blocks in [2, 129, 16385] {
            let (mut data, hash, root) = build(blocks, &p);
            let victim = blocks - 1;
            data[victim * 4096 + 77] ^= 1;
            let e = err(&data, &hash, &root);
            assert!(
                e.starts_with(&format!("data block {victim} does not match the hash tree")),
                "{e}"
            );
            assert!(e.contains("1 of"), "{e}");
        }
    }

    #[test]
    fn names_the_corrupt_hash_block() {
        let p = params();
        // 16385 blocks: levels of 129, 2 and 1 blocks; disk blocks 1 (top),
        // 2-3 (level 1), 4-132 (level 0).
        let (data, hash, root) = build(16385, &p);
        for (device_block, level, index) in [(4u64, 0, 0), (100, 0, 96), (132, 0, 128), (3, 1, 1)] {
            let mut bad = hash.clone();
            bad[device_block as usize * 4096 + 5] ^= 0x80;
            let e = err(&data, &bad, &root);
            assert!(
                e.starts_with(&format!("hash block {index} at level {level} is corrupt")),
                "{e}"
            );
            assert!(
                e.contains(&format!("hash device block {device_block},")),
                "{e}"
            );
        }
        let mut bad = hash.clone();
        bad[4096 + 40] ^= 1;
        let e = err(&data, &bad, &root);
        assert!(e.starts_with("hash block 0 at level 2 is corrupt"), "{e}");
    }

    #[test]
    fn names_non_zero_padding() {
        let p = params();
        let (data, hash, root) = build(129, &p);
        // Level 0 has 2 blocks; the second holds one digest.
        let mut bad = hash.clone();
        bad[3 * 4096 + 32] = 1;
        let e = err(&data, &bad, &root);
        assert!(
            e.starts_with("hash block 1 at level 0 has non-zero padding"),
            "{e}"
        );
        let mut bad = hash.clone();
        bad[4095] = 1;
        let e = err(&data, &bad, &root);
        assert!(
            e.contains("superblock block has non-zero padding at byte 4095"),
            "{e}"
        );
        let mut bad = hash.clone();
        bad[300] = 1;
        let e = err(&data, &bad, &root);
        assert_eq!(e, "superblock: non-zero padding at byte 300");
    }

    #[test]
    fn names_the_salt() {
        let p = params();
        for blocks in [2, 129, 16385] {
            let (data, mut hash, root) = build(blocks, &p);
            hash[88 + 3] ^= 1;
            let e = err(&data, &hash, &root);
            assert!(e.starts_with("superblock salt"), "{blocks}: {e}");
        }
    }

    #[test]
    fn names_a_wrong_root() {
        let p = params();
        for blocks in [1, 2, 129] {
            let (data, hash, mut root) = build(blocks, &p);
            root[0] ^= 1;
            let e = err(&data, &hash, &root);
            assert!(e.starts_with("root hash mismatch: expected"), "{e}");
        }
    }

    #[test]
    fn names_superblock_problems() {
        let p = params();
        let (data, hash, root) = build(129, &p);
        let cases: [(usize, u8, &str); 6] = [
            (0, b'X', "superblock: bad magic"),
            (8, 2, "superblock: unsupported version 2"),
            (12, 0, "superblock: hash type 0 is not supported"),
            (
                32,
                b'S',
                "superblock: hash algorithm \"Sha256\" is not supported",
            ),
            (
                72,
                130,
                "superblock: data_blocks is 130 but the data is 129 blocks",
            ),
            (80, 16, "superblock: salt is 16 bytes, expected 32"),
        ];
        for (at, value, want) in cases {
            let mut bad = hash.clone();
            bad[at] = value;
            let e = err(&data, &bad, &root);
            assert!(e.starts_with(want), "{e}");
        }
        let mut bad = hash.clone();
        bad[65] = 2; // data block size 4096 -> 4096 + 512
        assert!(err(&data, &bad, &root).starts_with("superblock: block sizes"));
        let e = err(&data, &hash[..8000], &root);
        assert!(e.starts_with("hash area is truncated"), "{e}");
        let e = err(&data, &hash[..100], &root);
        assert!(e.contains("cannot read the verity superblock"), "{e}");
    }

    /// A data size from an untrusted manifest must not size an allocation
    /// before the hash device is known to hold that much.
    #[test]
    fn a_huge_claimed_size_is_refused_before_allocating() {
        let p = params();
        let (_, hash, root) = build(2, &p);
        let blocks: u64 = 1 << 38; // 1 PiB of data, an 8 TiB tree
        let mut bad = hash[..4096].to_vec();
        bad[72..80].copy_from_slice(&blocks.to_le_bytes());
        let e = format!(
            "{:#}",
            verify(&[][..], blocks * 4096, Cursor::new(&bad), &root).unwrap_err()
        );
        assert!(
            e.starts_with("hash area is truncated: 8865353605120 bytes are needed"),
            "{e}"
        );
        assert!(e.ends_with("the hash device has 4096"), "{e}");
    }

    #[test]
    fn wrong_data_length_is_reported() {
        let p = params();
        let (data, hash, root) = build(129, &p);
        let e = format!(
            "{:#}",
            verify(&data[..4096], 129 * 4096, Cursor::new(&hash), &root).unwrap_err()
        );
        assert!(e.starts_with("data ended before"), "{e}");
        let e = format!(
            "{:#}",
            verify(&data[..], 128 * 4096, Cursor::new(&hash), &root).unwrap_err()
        );
        assert!(e.starts_with("superblock: data_blocks is 129"), "{e}");
    }
}
