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
use std::sync::{mpsc, Mutex};
use std::thread;

const BLOCK_BYTES: usize = BLOCK as usize;

/// Below this many blocks per thread, thread start-up costs more than the
/// hashing it saves (256 blocks = 1 MiB, roughly 0.6 ms of SHA-NI work).
const MIN_BLOCKS_PER_THREAD: usize = 256;

/// Bytes read per step by each pread worker. Small enough that the copy out
/// of the page cache is still in L2 when the hasher reads it back.
pub(crate) const FILE_PIECE: usize = 256 * 1024;

/// Bytes per read from a generic reader and per queued hashing job: large
/// enough that queueing costs nothing, small enough that a chunk is still
/// cache-warm when a worker hashes it.
pub(crate) const READER_CHUNK: usize = 1024 * 1024;

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
/// `R` need not be `Send`: the calling thread does all the reading and
/// feeds chunks through a bounded queue to long-lived scoped workers, each
/// job carrying its own disjoint slice of `out`. Reading thus overlaps
/// hashing, idle workers pick up the next chunk (no per-chunk barrier), and
/// only `2 × workers` chunks are ever resident.
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
    let workers = workers_for(total, threads);
    let out = &mut out[..total * DIGEST_SIZE];
    if workers == 1 {
        // Not worth a thread: read and hash in turn.
        let mut buf = alloc(chunk_blocks.min(total) * BLOCK_BYTES)?;
        for (index, slots) in out.chunks_mut(chunk_blocks * DIGEST_SIZE).enumerate() {
            let bytes = &mut buf[..slots.len() / DIGEST_SIZE * BLOCK_BYTES];
            read_data(
                &mut data,
                bytes,
                (index * chunk_blocks * BLOCK_BYTES) as u64,
                data_size,
            )?;
            hash_blocks(salt, bytes, slots);
        }
        return Ok(());
    }

    struct Job<'a> {
        buf: Vec<u8>,
        slots: &'a mut [u8],
    }
    let (job_tx, job_rx) = mpsc::sync_channel::<Job<'_>>(workers);
    let job_rx = Mutex::new(job_rx);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let job_rx = &job_rx;
            let free_tx = free_tx.clone();
            let work = move || loop {
                // The lock is held only while waiting for the next job; a
                // closed (or poisoned) queue means the reader is done.
                let job = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                let count = job.slots.len() / DIGEST_SIZE;
                hash_blocks(salt, &job.buf[..count * BLOCK_BYTES], job.slots);
                // The reader may already have given up after an error.
                let _ = free_tx.send(job.buf);
            };
            let handle = thread::Builder::new()
                .name("verity-hash".into())
                .spawn_scoped(scope, work)
                .context("cannot start a hashing thread")?;
            handles.push(handle);
        }
        // The reader owns the queue's sender, so returning (done or failed)
        // closes the queue and lets the workers drain it and exit.
        let read = (move || -> Result<()> {
            // Rebinding consumes the captures (FnOnce), so the output slices
            // keep their full lifetime instead of a borrow of the closure.
            let (out, job_tx) = (out, job_tx);
            let mut spare = 2 * workers;
            for (index, slots) in out.chunks_mut(chunk_blocks * DIGEST_SIZE).enumerate() {
                let mut buf = if spare > 0 {
                    spare -= 1;
                    alloc(chunk_blocks * BLOCK_BYTES)?
                } else {
                    free_rx
                        .recv()
                        .map_err(|_| anyhow!("hashing threads stopped early"))?
                };
                let bytes = &mut buf[..slots.len() / DIGEST_SIZE * BLOCK_BYTES];
                read_data(
                    &mut data,
                    bytes,
                    (index * chunk_blocks * BLOCK_BYTES) as u64,
                    data_size,
                )?;
                job_tx
                    .send(Job { buf, slots })
                    .map_err(|_| anyhow!("hashing threads stopped early"))?;
            }
            Ok(())
        })();
        let joined = join_all(handles);
        read?;
        joined.map(drop)
    })
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

    /// Fails with an I/O error after `left` bytes.
    struct Broken {
        left: usize,
    }
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.left);
            buf[..n].fill(0);
            self.left -= n;
            Ok(n)
        }
    }

    #[test]
    fn failing_reader_stops_the_workers() {
        // Enough blocks for several workers and many queued chunks, so the
        // error path has to shut a busy pipeline down without hanging.
        let salt = [0u8; 32];
        let blocks = 4000usize;
        let mut out = vec![0u8; blocks * DIGEST_SIZE];
        let size = (blocks * BLOCK_BYTES) as u64;
        for threads in [2, 4] {
            let short = pattern(3000 * BLOCK_BYTES);
            let e = hash_reader(&short[..], size, &salt, &mut out, threads, 8 * BLOCK_BYTES)
                .unwrap_err();
            assert!(e.to_string().starts_with("data ended before"), "{e}");
            let broken = Broken {
                left: 1234 * BLOCK_BYTES + 5,
            };
            let e =
                hash_reader(broken, size, &salt, &mut out, threads, 8 * BLOCK_BYTES).unwrap_err();
            assert_eq!(
                format!("{e:#}"),
                "cannot read data at byte 5046272: disk on fire"
            );
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
