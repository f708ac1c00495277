//! Writing the mapped ranges of an image and reading them back, on any
//! `Read + Seek` / `Write + Seek`, so the tests run on memory buffers.
//!
//! Both passes use two threads or more, since a flash station is bound by
//! the device and sha256 must not add to it: while writing, one thread
//! reads and hashes the image and the caller's thread writes; while
//! reading back, the ranges are shared out over one thread per core, each
//! reading and hashing its own. Each range's sha256 is compared with the bmap's as its last byte
//! is read; a range is hashed as one stream (the bmap has one checksum per
//! range), so a range that changed in the image after it was checked is
//! caught at its end, with the write then failed.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::mpsc::{channel, sync_channel};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::bmap::{Bmap, Range};

/// Bytes moved per read and write: large enough that the device sees long
/// sequential writes; a few of these are in flight.
pub const CHUNK: usize = 4 << 20;
/// Chunks queued between the threads.
const QUEUE: usize = 2;

/// One chunk on its way: the byte offset, a buffer and how much of it holds
/// data.
type Chunk = (u64, Vec<u8>, usize);

/// The head of the image read and checked while the whole image is still
/// being hashed against `SHA256SUMS`: held in memory, never written until
/// that check passed, then written first. Every byte it holds was hashed
/// into its range's sha256 as it was read, so what is written is what was
/// checked.
pub struct Prefetched {
    chunks: Vec<Chunk>,
    /// The range the reading stopped in (`ranges.len()` when all were read).
    range: usize,
    /// The next byte of that range to read.
    pos: u64,
    /// That range's sha256 so far.
    hasher: Sha256,
}

impl Prefetched {
    /// Nothing read yet.
    pub fn none(bmap: &Bmap) -> Prefetched {
        Prefetched {
            chunks: Vec::new(),
            range: 0,
            pos: bmap.ranges.first().map_or(0, |r| r.start),
            hasher: Sha256::new(),
        }
    }
}

/// Bytes of the image [`prefetch`] holds at most: the check of the whole
/// image takes about as long as hashing this much on the other core.
pub const PREFETCH: u64 = 256 << 20;

/// Reads and checks the ranges from the first on, up to `limit` bytes, into
/// memory (see [`Prefetched`]); a range whose sha256 differs from the
/// bmap's is an error, as in [`write_mapped`].
pub fn prefetch<R: ReadAt + ?Sized>(image: &R, bmap: &Bmap, limit: u64) -> Result<Prefetched> {
    let mut p = Prefetched::none(bmap);
    let mut held = 0u64;
    while let Some(r) = bmap.ranges.get(p.range) {
        while p.pos < r.end {
            let n = usize::try_from(r.end - p.pos)
                .unwrap_or(usize::MAX)
                .min(CHUNK);
            if held + n as u64 > limit {
                return Ok(p);
            }
            let mut buf = vec![0u8; CHUNK];
            image
                .read_exact_at(&mut buf[..n], p.pos)
                .with_context(|| format!("image: read bytes {}..{}", p.pos, p.pos + n as u64))?;
            p.hasher.update(&buf[..n]);
            p.chunks.push((p.pos, buf, n));
            held += n as u64;
            p.pos += n as u64;
        }
        check(r, std::mem::take(&mut p.hasher).finalize().into(), "image")?;
        p.range += 1;
        p.pos = bmap.ranges.get(p.range).map_or(0, |r| r.start);
    }
    Ok(p)
}

/// Hands the prefetched chunks, then every further range of `src` read in
/// chunks on its own thread (each range's sha256 checked there as its last
/// byte is read), to `consume` on this one.
fn pipeline<S: Read + Seek + Send>(
    src: &mut S,
    bmap: &Bmap,
    pre: Prefetched,
    mut consume: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let what = "image";
    let ranges = &bmap.ranges;
    let Prefetched {
        chunks,
        range: first,
        pos: first_pos,
        hasher: first_hasher,
    } = pre;
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Chunk>(QUEUE);
        let (back_tx, back_rx) = channel::<Vec<u8>>();
        let reader = scope.spawn(move || -> Result<()> {
            let mut first_hasher = Some(first_hasher);
            for (i, r) in ranges.iter().enumerate().skip(first) {
                // The range the prefetch stopped in goes on from there,
                // with the sha256 of its bytes already read.
                let (mut h, mut pos) = match (i == first, first_hasher.take()) {
                    (true, Some(h)) => (h, first_pos),
                    _ => (Sha256::new(), r.start),
                };
                src.seek(SeekFrom::Start(pos))
                    .with_context(|| format!("{what}: seek to byte {pos}"))?;
                while pos < r.end {
                    let n = usize::try_from(r.end - pos)
                        .unwrap_or(usize::MAX)
                        .min(CHUNK);
                    let mut buf = back_rx.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
                    src.read_exact(&mut buf[..n])
                        .with_context(|| format!("{what}: read bytes {pos}..{}", pos + n as u64))?;
                    h.update(&buf[..n]);
                    if tx.send((pos, buf, n)).is_err() {
                        // The consumer stopped; its error is the one to report.
                        return Ok(());
                    }
                    pos += n as u64;
                }
                check(r, h.finalize().into(), what)?;
            }
            Ok(())
        });
        let consumed = (|| -> Result<()> {
            for (pos, buf, n) in chunks {
                consume(pos, &buf[..n])?;
            }
            while let Ok((pos, buf, n)) = rx.recv() {
                consume(pos, &buf[..n])?;
                let _ = back_tx.send(buf);
            }
            Ok(())
        })();
        drop(rx);
        let read = reader
            .join()
            .map_err(|_| anyhow::format_err!("{what}: the reading thread panicked"))?;
        // A read error ends the queue early, so it comes first.
        read?;
        consumed
    })
}

fn check(r: &Range, got: [u8; 32], what: &str) -> Result<()> {
    if got != r.sha256 {
        bail!(
            "{what}: blocks {}-{} (bytes {}..{}) have sha256 {}, the bmap (line {}) says {}",
            r.first,
            r.last,
            r.start,
            r.end,
            hex::encode(got),
            r.line,
            hex::encode(r.sha256)
        );
    }
    Ok(())
}

/// Writes the bmap's ranges to `dest`: first what `pre` holds, then the
/// rest read from `image`, checking each range against its checksum as it
/// is read; `progress` gets the bytes written so
/// far, `wrote` each chunk's offset and length once written (the device
/// starts its writeback there). Returns the bytes written. Does not sync.
pub fn write_mapped<R: Read + Seek + Send, W: Write + Seek>(
    image: &mut R,
    dest: &mut W,
    bmap: &Bmap,
    pre: Prefetched,
    progress: &mut dyn FnMut(u64),
    wrote: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    let mut written = 0u64;
    let mut at: Option<u64> = None;
    pipeline(image, bmap, pre, |pos, data| {
        if at != Some(pos) {
            dest.seek(SeekFrom::Start(pos))
                .with_context(|| format!("device: seek to byte {pos}"))?;
        }
        dest.write_all(data)
            .with_context(|| format!("device: write bytes {pos}..{}", pos + data.len() as u64))?;
        at = Some(pos + data.len() as u64);
        wrote(pos, data.len() as u64);
        written += data.len() as u64;
        progress(written);
        Ok(())
    })?;
    dest.flush().context("device: flush")?;
    Ok(written)
}

/// What the read-back reads from: positioned reads that need no shared
/// seek offset, so several threads read one open device at once.
pub trait ReadAt: Sync {
    /// Fills `buf` from byte `pos`, or fails (a short device is an error).
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, pos)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
        let src = usize::try_from(pos)
            .ok()
            .and_then(|p| self.get(p..p.checked_add(buf.len())?))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Most threads the read-back hashes on: sha256 is what bounds it once the
/// device's pages were dropped, one core hashes about 500 MB/s to 2 GB/s,
/// and a range is one hash stream, so ranges are what is shared out.
const MAX_READERS: usize = 4;

/// Reads every range back from `dest` and compares its sha256 with the
/// bmap's; `progress` gets the bytes read so far. The ranges are shared
/// out over up to [`MAX_READERS`] threads (one per core), each reading its
/// own ranges with positioned reads and hashing them; the first mismatch
/// or read error stops them all and is the one reported.
pub fn read_back<D: ReadAt + ?Sized>(
    dest: &D,
    bmap: &Bmap,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_READERS)
        .min(bmap.ranges.len().max(1));
    // Longest range first to the least loaded thread: the slots, which are
    // most of an image, land on different cores.
    let mut order: Vec<&Range> = bmap.ranges.iter().collect();
    order.sort_by_key(|r| std::cmp::Reverse(r.end - r.start));
    let mut shares: Vec<(u64, Vec<&Range>)> = vec![(0, Vec::new()); threads];
    for r in order {
        if let Some(s) = shares.iter_mut().min_by_key(|s| s.0) {
            s.0 += r.end - r.start;
            s.1.push(r);
        }
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stop = &stop;
    std::thread::scope(|scope| {
        let (tx, rx) = channel::<u64>();
        let workers: Vec<_> = shares
            .into_iter()
            .map(|(_, mut mine)| {
                // Each thread reads its ranges in disk order.
                mine.sort_by_key(|r| r.start);
                let tx = tx.clone();
                scope.spawn(move || -> Result<(), (u64, anyhow::Error)> {
                    let r = read_ranges(dest, &mine, stop, &tx);
                    if r.is_err() {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        drop(tx);
        let mut read = 0u64;
        while let Ok(n) = rx.recv() {
            read += n;
            progress(read);
        }
        let mut first: Option<(u64, anyhow::Error)> = None;
        for w in workers {
            let r = w.join().unwrap_or_else(|_| {
                Err((
                    0,
                    anyhow::format_err!("read-back: a reading thread panicked"),
                ))
            });
            if let Err((at, e)) = r {
                // A thread stopped by another's error reports nothing; of
                // real ones, the earliest on the device is reported.
                if first.as_ref().is_none_or(|(p, _)| at < *p) {
                    first = Some((at, e));
                }
            }
        }
        match first {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    })
}

/// One thread's share of the read-back: each range read in chunks, hashed
/// and compared at its end; the bytes of each chunk go to `tx`. An error
/// comes with the byte it is at.
fn read_ranges<D: ReadAt + ?Sized>(
    dest: &D,
    ranges: &[&Range],
    stop: &std::sync::atomic::AtomicBool,
    tx: &std::sync::mpsc::Sender<u64>,
) -> Result<(), (u64, anyhow::Error)> {
    let mut buf = vec![0u8; CHUNK];
    for r in ranges {
        let mut h = Sha256::new();
        let mut pos = r.start;
        while pos < r.end {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(());
            }
            let n = usize::try_from(r.end - pos)
                .unwrap_or(usize::MAX)
                .min(CHUNK);
            dest.read_exact_at(&mut buf[..n], pos)
                .with_context(|| format!("read-back: read bytes {pos}..{}", pos + n as u64))
                .map_err(|e| (pos, e))?;
            h.update(&buf[..n]);
            let _ = tx.send(n as u64);
            pos += n as u64;
        }
        check(r, h.finalize().into(), "read-back").map_err(|e| (r.start, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn setup(size: usize, mapped: &[(u64, u64)]) -> (Vec<u8>, Bmap) {
        let img: Vec<u8> = (0..size).map(|i| (i * 7 % 253) as u8 | 1).collect();
        let xml =
            slotsmith_disk::bmap::bmap_xml(&mut Cursor::new(&img), size as u64, mapped).unwrap();
        (img, super::super::bmap::parse(xml.as_bytes(), "t").unwrap())
    }

    #[test]
    fn writes_only_mapped_ranges_and_reads_them_back() {
        // A range larger than a chunk, one crossing chunk boundaries, the
        // partial last block.
        let size = 3 * CHUNK + 4096 * 5 + 77;
        let (img, bmap) = setup(
            size,
            &[
                (0, 4096),
                (8192, CHUNK as u64 + 9000),
                (2 * CHUNK as u64, size as u64),
            ],
        );
        let mut dest = Cursor::new(vec![0u8; size]);
        let mut last = 0;
        let n = write_mapped(
            &mut Cursor::new(&img),
            &mut dest,
            &bmap,
            Prefetched::none(&bmap),
            &mut |b| last = b,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(n, bmap.mapped_bytes());
        assert_eq!(last, n);
        let out = dest.get_ref();
        for (i, (a, b)) in img.iter().zip(out.iter()).enumerate() {
            let mapped = bmap
                .ranges
                .iter()
                .any(|r| (r.start..r.end).contains(&(i as u64)));
            assert_eq!(*b, if mapped { *a } else { 0 }, "byte {i}");
        }
        read_back(dest.get_ref().as_slice(), &bmap, &mut |_| {}).unwrap();

        // A flipped byte on the device is named by its range.
        dest.get_mut()[CHUNK + 5] ^= 0xff;
        let e = format!(
            "{:#}",
            read_back(dest.get_ref().as_slice(), &bmap, &mut |_| {}).unwrap_err()
        );
        assert!(e.starts_with("read-back: blocks 2-"), "{e}");
    }

    #[test]
    fn a_changed_image_range_fails_the_write_and_a_short_device_errors() {
        let (mut img, bmap) = setup(10 * 4096, &[(0, 4096), (5 * 4096, 6 * 4096)]);
        img[5 * 4096 + 3] ^= 1;
        let mut dest = Cursor::new(vec![0u8; img.len()]);
        let e = format!(
            "{:#}",
            write_mapped(
                &mut Cursor::new(&img),
                &mut dest,
                &bmap,
                Prefetched::none(&bmap),
                &mut |_| {},
                &mut |_, _| {}
            )
            .unwrap_err()
        );
        assert!(
            e.starts_with("image: blocks 5-5 (bytes 20480..24576) have sha256"),
            "{e}"
        );
        assert!(e.contains("the bmap (line 11) says"), "{e}");

        // A file to write to works as well as memory.
        let mut f = tempfile::tempfile().unwrap();
        img[5 * 4096 + 3] ^= 1;
        write_mapped(
            &mut Cursor::new(&img),
            &mut f,
            &bmap,
            Prefetched::none(&bmap),
            &mut |_| {},
            &mut |_, _| {},
        )
        .unwrap();
        read_back(&f, &bmap, &mut |_| {}).unwrap();
        f.set_len(4096).unwrap();
        let e = format!("{:#}", read_back(&f, &bmap, &mut |_| {}).unwrap_err());
        assert!(e.contains("read-back: read bytes 20480..24576"), "{e}");
    }

    #[test]
    fn a_prefetched_head_is_written_first_and_the_rest_goes_on_from_it() {
        let size = 3 * CHUNK + 4096 * 5 + 77;
        let (mut img, bmap) = setup(
            size,
            &[
                (0, 4096),
                (8192, 2 * CHUNK as u64 + 9000),
                (2 * CHUNK as u64 + 3 * 4096, size as u64),
            ],
        );
        // Stops inside the second range, after its first chunk; then
        // nothing, then everything.
        for limit in [CHUNK as u64 + 4096, 0, u64::MAX] {
            let pre = prefetch(img.as_slice(), &bmap, limit).unwrap();
            let held: u64 = pre.chunks.iter().map(|c| c.2 as u64).sum();
            assert!(held <= limit);
            let mut dest = Cursor::new(vec![0u8; size]);
            let n = write_mapped(
                &mut Cursor::new(&img),
                &mut dest,
                &bmap,
                pre,
                &mut |_| {},
                &mut |_, _| {},
            )
            .unwrap();
            assert_eq!(n, bmap.mapped_bytes(), "limit {limit}");
            read_back(dest.get_ref().as_slice(), &bmap, &mut |_| {}).unwrap();
        }

        // A range that changed after its prefetched part was read fails the
        // write at its end; one that differs in its prefetched part fails
        // the prefetch.
        let pre = prefetch(img.as_slice(), &bmap, CHUNK as u64 + 4096).unwrap();
        img[CHUNK + 8192 + 10] ^= 1;
        let e = format!(
            "{:#}",
            write_mapped(
                &mut Cursor::new(&img),
                &mut Cursor::new(vec![0u8; size]),
                &bmap,
                pre,
                &mut |_| {},
                &mut |_, _| {}
            )
            .unwrap_err()
        );
        assert!(e.starts_with("image: blocks 2-"), "{e}");
        let e = format!(
            "{:#}",
            prefetch(img.as_slice(), &bmap, u64::MAX).err().unwrap()
        );
        assert!(e.starts_with("image: blocks 2-"), "{e}");
    }
}
