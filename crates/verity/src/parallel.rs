//! Salted SHA-256 over 4 KiB blocks, spread across all cores.
//!
//! Hashing the data blocks (the leaf level) is the only expensive pass of a
//! verity build: every other level is 1/128 the size of the one below it.
//! This module therefore owns all the throughput work: a per-block hasher,
//! an in-memory parallel hasher (also used for the small upper levels), a
//! pipelined reader for any `Read` source, and a pread-based path for files
//! where each thread reads and hashes its own range with no coordination.

use crate::{BLOCK, DIGEST_SIZE};
use anyhow::{anyhow, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::thread;

const BLOCK_BYTES: usize = BLOCK as usize;

/// Below this many blocks per thread, thread start-up costs more than the
/// hashing it saves (256 blocks = 1 MiB, roughly 0.6 ms of SHA-NI work).
const MIN_BLOCKS_PER_THREAD: usize = 256;

/// Bytes read per step by each pread worker. Small enough that the copy out
/// of the page cache is still in L2 when the hasher reads it back.
pub(crate) const FILE_PIECE: usize = 256 * 1024;

/// Bytes read per step from a generic reader; big enough that the per-chunk
/// thread start-up is noise, small enough to keep two chunks cheap.
pub(crate) const READER_CHUNK: usize = 8 * 1024 * 1024;

/// Threads to hash with: one per available core.
pub(crate) fn default_threads() -> usize {
    thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Writes `sha256(salt || block)` for each 4 KiB block of `blocks` into the
/// matching 32-byte slot of `out` (format 1: the salt is prepended).
pub(crate) fn hash_blocks(salt: &[u8; 32], blocks: &[u8], out: &mut [u8]) {
    // Absorbing the salt once and cloning the state saves re-buffering it for
    // every block; sha2 then compresses the block body in one SHA-NI call.
    let seeded = Sha256::new_with_prefix(salt);
    for (block, slot) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(DIGEST_SIZE))
    {
        let mut hasher = seeded.clone();
        hasher.update(block);
        slot.copy_from_slice(&hasher.finalize());
    }
}

/// Digest of one arbitrary buffer with the salt prepended (the root hash).
pub(crate) fn salted_digest(salt: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
    Sha256::new_with_prefix(salt)
        .chain_update(bytes)
        .finalize()
        .into()
}

/// How many workers to use for `blocks` blocks given `threads` cores.
fn workers_for(blocks: usize, threads: usize) -> usize {
    threads.min(blocks.div_ceil(MIN_BLOCKS_PER_THREAD)).max(1)
}

/// In-memory version of [`hash_blocks`] split evenly across `threads`.
pub(crate) fn hash_blocks_parallel(
    salt: &[u8; 32],
    blocks: &[u8],
    out: &mut [u8],
    threads: usize,
) -> Result<()> {
    let count = blocks.len() / BLOCK_BYTES;
    let workers = workers_for(count, threads);
    if workers == 1 {
        hash_blocks(salt, blocks, out);
        return Ok(());
    }
    let per = count.div_ceil(workers);
    thread::scope(|scope| {
        let mut handles = Vec::with_capacity(workers);
        for (part, slots) in blocks
            .chunks(per * BLOCK_BYTES)
            .zip(out.chunks_mut(per * DIGEST_SIZE))
        {
            let handle = thread::Builder::new()
                .name("verity-hash".into())
                .spawn_scoped(scope, move || hash_blocks(salt, part, slots))
                .context("cannot start a hashing thread")?;
            handles.push(handle);
        }
        join_all(handles).map(drop)
    })
}

fn join_all<T>(handles: Vec<thread::ScopedJoinHandle<'_, T>>) -> Result<Vec<T>> {
    handles
        .into_iter()
        .map(|h| h.join().map_err(|_| anyhow!("hashing thread panicked")))
        .collect()
}

/// Fills `out` (32 bytes per data block, `data_size / 4096` blocks) with the
/// data-block digests read from `data`, `chunk` bytes at a time.
///
/// `R` need not be `Send`: the calling thread does all the reading, and
/// while it reads chunk k+1 into one buffer, scoped workers hash chunk k
/// from the other, so I/O overlaps hashing with only two chunks resident.
pub(crate) fn hash_reader<R: Read>(
    mut data: R,
    data_size: u64,
    salt: &[u8; 32],
    out: &mut [u8],
    threads: usize,
    chunk: usize,
) -> Result<()> {
    let total = usize::try_from(data_size / BLOCK).context("data too large for this platform")?;
    let chunk_blocks = (chunk / BLOCK_BYTES).max(1);
    let first = chunk_blocks.min(total);
    let mut current = alloc(first * BLOCK_BYTES)?;
    let mut next = alloc(chunk_blocks.min(total - first) * BLOCK_BYTES)?;
    read_data(&mut data, &mut current, 0, data_size)?;
    let mut done = 0usize;
    let mut in_current = first;
    while in_current > 0 {
        let after = done + in_current;
        let in_next = chunk_blocks.min(total - after);
        let slots = &mut out[done * DIGEST_SIZE..after * DIGEST_SIZE];
        let blocks = &current[..in_current * BLOCK_BYTES];
        let next_buf = &mut next[..in_next * BLOCK_BYTES];
        let data_ref = &mut data;
        thread::scope(|scope| -> Result<()> {
            let workers = workers_for(in_current, threads);
            let per = in_current.div_ceil(workers);
            let mut handles = Vec::with_capacity(workers);
            for (part, part_slots) in blocks
                .chunks(per * BLOCK_BYTES)
                .zip(slots.chunks_mut(per * DIGEST_SIZE))
            {
                let handle = thread::Builder::new()
                    .name("verity-hash".into())
                    .spawn_scoped(scope, move || hash_blocks(salt, part, part_slots))
                    .context("cannot start a hashing thread")?;
                handles.push(handle);
            }
            let read = read_data(data_ref, next_buf, after as u64 * BLOCK, data_size);
            join_all(handles)?;
            read
        })?;
        std::mem::swap(&mut current, &mut next);
        done = after;
        in_current = in_next;
    }
    Ok(())
}

fn read_data<R: Read>(data: &mut R, buf: &mut [u8], offset: u64, data_size: u64) -> Result<()> {
    data.read_exact(buf).map_err(|e| {
        if e.kind() == ErrorKind::UnexpectedEof {
            anyhow!("data ended before {data_size} bytes (short read at or after byte {offset})")
        } else {
            anyhow::Error::new(e).context(format!("cannot read data at byte {offset}"))
        }
    })
}

/// Like [`hash_reader`] for a file: each worker preads and hashes its own
/// contiguous range of blocks, so reading is as parallel as hashing and no
/// thread ever waits for another.
pub(crate) fn hash_file(
    data: &File,
    data_size: u64,
    salt: &[u8; 32],
    out: &mut [u8],
    threads: usize,
    piece: usize,
) -> Result<()> {
    let total = usize::try_from(data_size / BLOCK).context("data too large for this platform")?;
    let workers = workers_for(total, threads);
    let per = total.div_ceil(workers).max(1);
    let piece_blocks = (piece / BLOCK_BYTES).max(1);
    let out = &mut out[..total * DIGEST_SIZE];
    thread::scope(|scope| {
        let mut handles = Vec::with_capacity(workers);
        for (index, slots) in out.chunks_mut(per * DIGEST_SIZE).enumerate() {
            let first_block = (index * per) as u64;
            let work = move || -> Result<()> {
                let mut buf = alloc(piece_blocks.min(slots.len() / DIGEST_SIZE) * BLOCK_BYTES)?;
                let mut block = first_block;
                for piece_slots in slots.chunks_mut(piece_blocks * DIGEST_SIZE) {
                    let count = piece_slots.len() / DIGEST_SIZE;
                    let bytes = &mut buf[..count * BLOCK_BYTES];
                    let offset = block * BLOCK;
                    data.read_exact_at(bytes, offset).map_err(|e| {
                        if e.kind() == ErrorKind::UnexpectedEof {
                            anyhow!("data ended before {data_size} bytes (short read at or after byte {offset})")
                        } else {
                            anyhow::Error::new(e).context(format!("cannot read data at byte {offset}"))
                        }
                    })?;
                    hash_blocks(salt, bytes, piece_slots);
                    block += count as u64;
                }
                Ok(())
            };
            let handle = thread::Builder::new()
                .name("verity-hash".into())
                .spawn_scoped(scope, work)
                .context("cannot start a hashing thread")?;
            handles.push(handle);
        }
        // Report the lowest-offset failure so errors are deterministic.
        join_all(handles)?.into_iter().collect::<Result<()>>()
    })
}

/// Zeroed buffer that reports allocation failure instead of aborting, so an
/// absurd `data_size` becomes an error rather than a crash.
pub(crate) fn alloc(len: usize) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| anyhow!("cannot allocate {len} bytes for hashing"))?;
    v.resize(len, 0);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pattern(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn serial(salt: &[u8; 32], data: &[u8]) -> Vec<u8> {
        data.chunks(BLOCK_BYTES)
            .flat_map(|b| salted_digest(salt, b))
            .collect()
    }

    /// Hands out at most 1000 bytes per call, like a pipe would.
    struct Dribble<'a>(&'a [u8]);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(1000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn all_paths_agree_with_serial_hashing() {
        let salt = [7u8; 32];
        let data = pattern(1500 * BLOCK_BYTES);
        let want = serial(&salt, &data);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        for threads in [1, 2, 3, 8] {
            let mut got = vec![0u8; want.len()];
            hash_blocks_parallel(&salt, &data, &mut got, threads).unwrap();
            assert_eq!(got, want, "in-memory, {threads} threads");
            // Chunks smaller than, equal to and not dividing the data.
            for chunk in [
                BLOCK_BYTES,
                7 * BLOCK_BYTES,
                1500 * BLOCK_BYTES,
                READER_CHUNK,
            ] {
                let mut got = vec![0u8; want.len()];
                hash_reader(
                    Dribble(&data),
                    data.len() as u64,
                    &salt,
                    &mut got,
                    threads,
                    chunk,
                )
                .unwrap();
                assert_eq!(got, want, "reader, {threads} threads, chunk {chunk}");
            }
            for piece in [BLOCK_BYTES, 5 * BLOCK_BYTES, FILE_PIECE] {
                let mut got = vec![0u8; want.len()];
                hash_file(&file, data.len() as u64, &salt, &mut got, threads, piece).unwrap();
                assert_eq!(got, want, "file, {threads} threads, piece {piece}");
            }
        }
    }

    #[test]
    fn short_data_is_an_error() {
        let salt = [0u8; 32];
        let data = pattern(10 * BLOCK_BYTES);
        let mut out = vec![0u8; 11 * DIGEST_SIZE];
        let err = hash_reader(&data[..], 11 * BLOCK, &salt, &mut out, 2, BLOCK_BYTES).unwrap_err();
        assert!(
            err.to_string().contains("data ended before 45056 bytes"),
            "{err}"
        );
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let err = hash_file(&file, 11 * BLOCK, &salt, &mut out, 2, BLOCK_BYTES).unwrap_err();
        assert!(err.to_string().contains("data ended before"), "{err}");
    }
}
