//! dm-verity hash trees in format 1, byte-identical to `veritysetup format`
//! (cryptsetup 2.6.1) with sha256 and 4 KiB data and hash blocks.
//!
//! slotsmith builds the tree itself instead of shelling out so that image
//! builds need no cryptsetup, run faster (the leaf level is hashed on all
//! cores), and can explain a verification failure precisely. The on-disk
//! layout is the one documented in the project's verified-boot reference:
//! a 512-byte superblock zero-padded to one block, then the hash levels top
//! level first, each level's last block zero-filled. Level 0 holds the
//! digests of the data blocks; every digest is `sha256(salt || block)`.
//!
//! Only the leaf level is streamed; the upper levels (1/128 of the data and
//! shrinking) are kept in memory, so peak memory is about the tree size plus
//! two read chunks.

#[doc(hidden)]
pub mod fuzz;
mod geometry;
mod parallel;
mod superblock;
mod verify;

use anyhow::{ensure, Context, Result};
use geometry::Geometry;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

pub use superblock::{read_superblock, Superblock};
pub use verify::{verify, verify_file};

/// Data and hash block size.
pub const BLOCK: u64 = 4096;
/// Bytes per digest slot: sha256 is already a power of two.
pub(crate) const DIGEST_SIZE: usize = 32;
/// Digests per hash block.
pub(crate) const DIGESTS_PER_BLOCK: u64 = BLOCK / DIGEST_SIZE as u64;
const ALGORITHM: &str = "sha256";

/// Caller-chosen inputs of a build. Both are parameters rather than random
/// so that images are reproducible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerityParams {
    pub salt: [u8; 32],
    pub uuid: uuid::Uuid,
}

/// Everything needed to map the tree (kernel table) or sign it (manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerityInfo {
    pub root_hash: [u8; 32],
    pub salt: [u8; 32],
    pub uuid: uuid::Uuid,
    pub data_blocks: u64,
    /// Hash-device block where the tree starts: 1, because the superblock
    /// occupies block 0.
    pub hash_start_block: u64,
    /// Bytes written to the hash device: superblock block plus all levels.
    pub hash_size: u64,
}

/// Hash-area size in bytes for `data_size` bytes of data, for partition
/// planning; equal to what [`format`] writes. A partial trailing block
/// counts as a whole one, and 0 bytes give just the superblock block
/// (`format` rejects both, but planning code gets an answer, not a panic).
pub fn hash_size(data_size: u64) -> u64 {
    Geometry::new(data_size.div_ceil(BLOCK)).hash_size()
}

/// Builds the hash area for `data_size` bytes (a positive multiple of 4096)
/// read from `data`, writing it to `hash` from offset 0: superblock, zero
/// padding to 4096, then the levels top first, exactly as
/// `veritysetup format --salt <salt> --uuid <uuid>`. Bytes of `hash` past
/// [`VerityInfo::hash_size`] are left alone.
pub fn format<R: Read, W: Write + Seek>(
    data: R,
    data_size: u64,
    hash: W,
    params: &VerityParams,
) -> Result<VerityInfo> {
    let geometry = checked_geometry(data_size)?;
    let threads = parallel::default_threads();
    let mut leaves = leaf_buffer(&geometry)?;
    parallel::hash_reader(
        data,
        data_size,
        &params.salt,
        &mut leaves,
        threads,
        parallel::READER_CHUNK,
    )?;
    finish(&geometry, leaves, hash, params, threads)
}

/// [`format`] for a data file, reading it with `pread` from every hashing
/// thread at once; this is the fast path for image builds.
pub fn format_file(
    data: &File,
    data_size: u64,
    hash: &mut File,
    params: &VerityParams,
) -> Result<VerityInfo> {
    let geometry = checked_geometry(data_size)?;
    let threads = parallel::default_threads();
    let mut leaves = leaf_buffer(&geometry)?;
    parallel::hash_file(
        data,
        data_size,
        &params.salt,
        &mut leaves,
        threads,
        parallel::FILE_PIECE,
    )?;
    finish(&geometry, leaves, hash, params, threads)
}

pub(crate) fn checked_geometry(data_size: u64) -> Result<Geometry> {
    ensure!(data_size > 0, "data size must not be zero");
    ensure!(
        data_size.is_multiple_of(BLOCK),
        "data size {data_size} is not a multiple of {BLOCK}"
    );
    Ok(Geometry::new(data_size / BLOCK))
}

/// Buffer for the data-block digests: the whole of level 0 including its
/// zero tail, or one bare digest when there are no levels (1 data block).
pub(crate) fn leaf_buffer(geometry: &Geometry) -> Result<Vec<u8>> {
    let len = match geometry.levels.first() {
        Some(&blocks) => blocks
            .checked_mul(BLOCK)
            .and_then(|n| usize::try_from(n).ok())
            .context("hash tree too large for this platform")?,
        None => DIGEST_SIZE,
    };
    parallel::alloc(len)
}

/// Hashes every level above level 0 in memory. Returns the levels bottom
/// first and the root hash.
pub(crate) fn build_upper_levels(
    geometry: &Geometry,
    leaves: Vec<u8>,
    salt: &[u8; 32],
    threads: usize,
) -> Result<(Vec<Vec<u8>>, [u8; 32])> {
    if geometry.levels.is_empty() {
        // One data block: no levels; its digest is the root (veritysetup
        // behaviour; an always-one-level builder would hash it again).
        let mut root = [0u8; 32];
        root.copy_from_slice(&leaves[..DIGEST_SIZE]);
        return Ok((Vec::new(), root));
    }
    let mut levels = vec![leaves];
    for &blocks in &geometry.levels[1..] {
        let mut next = parallel::alloc(usize::try_from(blocks * BLOCK)?)?;
        let below = levels.last().map_or(&[][..], Vec::as_slice);
        let entries = below.len() / BLOCK as usize;
        parallel::hash_blocks_parallel(salt, below, &mut next[..entries * DIGEST_SIZE], threads)?;
        levels.push(next);
    }
    let top = levels.last().map_or(&[][..], Vec::as_slice);
    let root = parallel::salted_digest(salt, top);
    Ok((levels, root))
}

fn finish<W: Write + Seek>(
    geometry: &Geometry,
    leaves: Vec<u8>,
    mut hash: W,
    params: &VerityParams,
    threads: usize,
) -> Result<VerityInfo> {
    let (levels, root_hash) = build_upper_levels(geometry, leaves, &params.salt, threads)?;
    let sb = Superblock {
        uuid: params.uuid,
        salt: params.salt.to_vec(),
        data_blocks: geometry.data_blocks,
        data_block_size: BLOCK as u32,
        hash_block_size: BLOCK as u32,
        algorithm: ALGORITHM.into(),
        hash_type: 1,
    };
    let mut first = [0u8; BLOCK as usize];
    first[..superblock::SUPERBLOCK_SIZE].copy_from_slice(&sb.encode()?);
    hash.seek(SeekFrom::Start(0))
        .context("cannot seek to the start of the hash area")?;
    hash.write_all(&first)
        .context("cannot write the verity superblock")?;
    for level in levels.iter().rev() {
        hash.write_all(level)
            .context("cannot write the hash tree")?;
    }
    hash.flush().context("cannot write the hash tree")?;
    Ok(VerityInfo {
        root_hash,
        salt: params.salt,
        uuid: params.uuid,
        data_blocks: geometry.data_blocks,
        hash_start_block: 1,
        hash_size: geometry.hash_size(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::io::Cursor;

    pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    pub(crate) fn params() -> VerityParams {
        VerityParams {
            salt: std::array::from_fn(|i| i as u8 * 3 + 1),
            uuid: uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        }
    }

    /// Straight port of the reference's Appendix A builder, kept naive on
    /// purpose so it shares no code with the real one.
    fn reference(data: &[u8], p: &VerityParams) -> ([u8; 32], Vec<u8>) {
        let h = |b: &[u8]| -> Vec<u8> {
            Sha256::new()
                .chain_update(p.salt)
                .chain_update(b)
                .finalize()
                .to_vec()
        };
        let n = data.len() / 4096;
        let mut sb = vec![0u8; 4096];
        sb[..8].copy_from_slice(b"verity\0\0");
        sb[8] = 1;
        sb[12] = 1;
        sb[16..32].copy_from_slice(p.uuid.as_bytes());
        sb[32..38].copy_from_slice(b"sha256");
        sb[64..68].copy_from_slice(&4096u32.to_le_bytes());
        sb[68..72].copy_from_slice(&4096u32.to_le_bytes());
        sb[72..80].copy_from_slice(&(n as u64).to_le_bytes());
        sb[80] = 32;
        sb[88..120].copy_from_slice(&p.salt);
        if n == 1 {
            return (h(data).try_into().unwrap(), sb);
        }
        let mut levels: Vec<Vec<u8>> = Vec::new();
        let mut cur: Vec<Vec<u8>> = data.chunks(4096).map(h).collect();
        loop {
            let nb = cur.len().div_ceil(128);
            let mut blob = cur.concat();
            blob.resize(nb * 4096, 0);
            cur = blob.chunks(4096).map(h).collect();
            levels.push(blob);
            if nb == 1 {
                break;
            }
        }
        let root = h(levels.last().unwrap()).try_into().unwrap();
        let mut out = sb;
        for l in levels.iter().rev() {
            out.extend_from_slice(l);
        }
        (root, out)
    }

    fn ours(data: &[u8], p: &VerityParams) -> (VerityInfo, Vec<u8>) {
        let mut out = Cursor::new(Vec::new());
        let info = format(data, data.len() as u64, &mut out, p).unwrap();
        (info, out.into_inner())
    }

    #[test]
    fn matches_reference_builder_and_hash_size() {
        let p = params();
        for blocks in [
            1usize, 2, 3, 127, 128, 129, 255, 256, 257, 1000, 16384, 16385,
        ] {
            let data = pattern(blocks * 4096, blocks as u64);
            let (info, image) = ours(&data, &p);
            let (root, want) = reference(&data, &p);
            assert_eq!(info.root_hash, root, "{blocks} blocks");
            assert!(image == want, "{blocks} blocks: hash area differs");
            assert_eq!(image.len() as u64, info.hash_size);
            assert_eq!(hash_size(data.len() as u64), info.hash_size);
            assert_eq!(info.data_blocks, blocks as u64);
            assert_eq!(info.hash_start_block, 1);
            // The file path must agree with the generic one.
            let mut df = tempfile::tempfile().unwrap();
            df.write_all(&data).unwrap();
            let mut hf = tempfile::tempfile().unwrap();
            let finfo = format_file(&df, data.len() as u64, &mut hf, &p).unwrap();
            assert_eq!(finfo, info);
            let mut back = Vec::new();
            hf.seek(SeekFrom::Start(0)).unwrap();
            hf.read_to_end(&mut back).unwrap();
            assert!(back == image, "{blocks} blocks: file path differs");
        }
    }

    #[test]
    fn single_block_has_no_levels() {
        let p = params();
        let data = pattern(4096, 5);
        let (info, image) = ours(&data, &p);
        assert_eq!(image.len(), 4096);
        let want: [u8; 32] = Sha256::new()
            .chain_update(p.salt)
            .chain_update(&data)
            .finalize()
            .into();
        assert_eq!(info.root_hash, want);
    }

    #[test]
    fn deterministic() {
        let p = params();
        let data = pattern(300 * 4096, 9);
        assert_eq!(ours(&data, &p), ours(&data, &p));
        let mut other = p;
        other.salt[0] ^= 1;
        assert_ne!(ours(&data, &p).0.root_hash, ours(&data, &other).0.root_hash);
    }

    #[test]
    fn hash_size_for_many_sizes() {
        let p = params();
        for blocks in (1..=600u64).chain([16383, 16384, 16385, 16512, 16513]) {
            let data = vec![0u8; blocks as usize * 4096];
            let mut out = Cursor::new(Vec::new());
            let info = format(&data[..], data.len() as u64, &mut out, &p).unwrap();
            assert_eq!(
                out.get_ref().len() as u64,
                hash_size(blocks * 4096),
                "{blocks}"
            );
            assert_eq!(info.hash_size, hash_size(blocks * 4096));
        }
        // Planning never panics, even on nonsense.
        assert_eq!(hash_size(0), 4096);
        assert_eq!(hash_size(1), 4096);
        assert!(hash_size(u64::MAX) > 0);
    }

    #[test]
    fn bad_sizes_are_errors() {
        let p = params();
        let mut out = Cursor::new(Vec::new());
        let e = format(&[][..], 0, &mut out, &p).unwrap_err();
        assert_eq!(e.to_string(), "data size must not be zero");
        let e = format(&[0u8; 5000][..], 5000, &mut out, &p).unwrap_err();
        assert_eq!(e.to_string(), "data size 5000 is not a multiple of 4096");
        let e = format(&[0u8; 4096][..], 8192, &mut out, &p).unwrap_err();
        assert!(
            e.to_string().starts_with("data ended before 8192 bytes"),
            "{e}"
        );
        // A size whose tree could never fit in memory fails cleanly.
        let e = format(&[0u8; 4096][..], u64::MAX / 4096 * 4096, &mut out, &p).unwrap_err();
        assert!(
            e.to_string().contains("cannot allocate") || e.to_string().contains("too large"),
            "{e}"
        );
    }

    #[test]
    fn writes_from_offset_zero_and_keeps_the_rest() {
        let p = params();
        let data = pattern(3 * 4096, 1);
        let mut out = Cursor::new(vec![0xAAu8; 20000]);
        out.set_position(777);
        let info = format(&data[..], data.len() as u64, &mut out, &p).unwrap();
        let buf = out.into_inner();
        assert_eq!(info.hash_size, 8192);
        assert_eq!(&buf[..8], b"verity\0\0");
        assert!(buf[8192..].iter().all(|&b| b == 0xAA));
    }
}
