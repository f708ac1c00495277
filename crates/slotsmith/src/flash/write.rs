//! Writing the mapped ranges of an image and reading them back, on any
//! `Read + Seek` / `Write + Seek`, so the tests run on memory buffers.
//!
//! Both passes are pipelined on two threads, since a flash station is
//! bound by the device and sha256 must not add to it: while writing, one
//! thread reads and hashes the image and the caller's thread writes; while
//! reading back, one thread reads the device and the caller's thread
//! hashes. Each range's sha256 is compared with the bmap's as its last byte
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

/// Reads every range of `src` in chunks on its own thread and hands them to
/// `consume` on this one; `hash_here` says whether this thread (`false`:
/// the reading thread) checks each range's sha256. `what` names the source
/// in messages.
fn pipeline<S: Read + Seek + Send>(
    src: &mut S,
    bmap: &Bmap,
    hash_in_reader: bool,
    what: &str,
    mut consume: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let ranges = &bmap.ranges;
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Chunk>(QUEUE);
        let (back_tx, back_rx) = channel::<Vec<u8>>();
        let reader = scope.spawn(move || -> Result<()> {
            for r in ranges {
                src.seek(SeekFrom::Start(r.start))
                    .with_context(|| format!("{what}: seek to byte {}", r.start))?;
                let mut h = Sha256::new();
                let mut pos = r.start;
                while pos < r.end {
                    let n = usize::try_from(r.end - pos)
                        .unwrap_or(usize::MAX)
                        .min(CHUNK);
                    let mut buf = back_rx.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
                    src.read_exact(&mut buf[..n])
                        .with_context(|| format!("{what}: read bytes {pos}..{}", pos + n as u64))?;
                    if hash_in_reader {
                        h.update(&buf[..n]);
                    }
                    if tx.send((pos, buf, n)).is_err() {
                        // The consumer stopped; its error is the one to report.
                        return Ok(());
                    }
                    pos += n as u64;
                }
                if hash_in_reader {
                    check(r, h.finalize().into(), what)?;
                }
            }
            Ok(())
        });
        let consumed = (|| -> Result<()> {
            let mut h = Sha256::new();
            let mut next = 0usize;
            while let Ok((pos, buf, n)) = rx.recv() {
                consume(pos, &buf[..n])?;
                if !hash_in_reader {
                    h.update(&buf[..n]);
                    let end = pos + n as u64;
                    // Chunks arrive in range order; a range ends exactly at a
                    // chunk's end.
                    while next < ranges.len() && ranges[next].end == end {
                        check(
                            &ranges[next],
                            std::mem::take(&mut h).finalize().into(),
                            what,
                        )?;
                        next += 1;
                    }
                }
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

/// Writes the bmap's ranges from `image` to `dest`, checking each range
/// against its checksum as it is read; `progress` gets the bytes written so
/// far, `wrote` each chunk's offset and length once written (the device
/// starts its writeback there). Returns the bytes written. Does not sync.
pub fn write_mapped<R: Read + Seek + Send, W: Write + Seek>(
    image: &mut R,
    dest: &mut W,
    bmap: &Bmap,
    progress: &mut dyn FnMut(u64),
    wrote: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    let mut written = 0u64;
    let mut at: Option<u64> = None;
    pipeline(image, bmap, true, "image", |pos, data| {
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

/// Reads every range back from `dest` and compares its sha256 with the
/// bmap's; `progress` gets the bytes read so far.
pub fn read_back<D: Read + Seek + Send>(
    dest: &mut D,
    bmap: &Bmap,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut read = 0u64;
    pipeline(dest, bmap, false, "read-back", |_, data| {
        read += data.len() as u64;
        progress(read);
        Ok(())
    })
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
        read_back(&mut dest, &bmap, &mut |_| {}).unwrap();

        // A flipped byte on the device is named by its range.
        dest.get_mut()[CHUNK + 5] ^= 0xff;
        let e = format!(
            "{:#}",
            read_back(&mut dest, &bmap, &mut |_| {}).unwrap_err()
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
            &mut |_| {},
            &mut |_, _| {},
        )
        .unwrap();
        read_back(&mut f, &bmap, &mut |_| {}).unwrap();
        f.set_len(4096).unwrap();
        let e = format!("{:#}", read_back(&mut f, &bmap, &mut |_| {}).unwrap_err());
        assert!(e.contains("read-back: read bytes 20480..24576"), "{e}");
    }
}
