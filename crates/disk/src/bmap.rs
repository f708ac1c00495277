//! bmap 2.0 block maps, as `bmaptool copy` (bmap-tools 3.6) accepts them.
//!
//! A golden image is mostly holes; a bmap lets `bmaptool copy` flash only
//! the blocks that matter and verify each of them on the way. We generate
//! it ourselves instead of running `bmaptool create` because the image
//! builder knows exactly which byte ranges are meaningful (both GPT copies,
//! every block of the rootfs and verity partitions, the used part of the
//! ESP), whereas `bmaptool create` only sees filesystem holes and would
//! leave stale bytes on a reused eMMC for blocks that happen to be zero.
//! See verified-boot.md section 4.
//!
//! Format facts (re-derived from bmap-tools `BmapCreate.py`/`BmapCopy.py`):
//! block size 4096; `<Range chksum="..."> a-b </Range>` with inclusive
//! block numbers (a single block is written as `n`); each checksum is the
//! sha256 of the range's bytes, where a final partial block contributes
//! only the bytes that exist; `BmapFileChecksum` is the sha256 of the whole
//! file with that checksum's own value replaced by 64 ASCII zeros.

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};

/// bmap block size in bytes.
pub const BLOCK_SIZE: u64 = 4096;
/// Streaming buffer for range hashing: large enough to amortise syscalls,
/// small enough that a multi-GiB range never sits in memory.
const BUF_SIZE: usize = 1 << 20;
/// Placeholder the bmap checksum is computed over.
const ZERO_CHECKSUM: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Builds the bmap XML for `image` (whose first `image_size` bytes are
/// the image) marking the byte ranges `mapped` as data.
///
/// Ranges are `[start, end)` in bytes, in any order, possibly
/// overlapping; they are widened to whole 4096-byte blocks, clamped to the
/// image size and merged. Empty ranges are ignored; ranges with
/// `start > end` are an error. The image is read only inside mapped
/// blocks, streamed through a fixed 1 MiB buffer.
pub fn bmap_xml(
    image: &mut (impl Read + Seek),
    image_size: u64,
    mapped: &[(u64, u64)],
) -> Result<String> {
    let ranges = block_ranges(image_size, mapped)?;
    let mut buf = vec![0u8; BUF_SIZE];
    let mut digests = Vec::with_capacity(ranges.len());
    for &(first, last) in &ranges {
        let start = first * BLOCK_SIZE;
        let end = ((last + 1) * BLOCK_SIZE).min(image_size);
        let digest = hash_range(image, start, end, &mut buf)
            .with_context(|| format!("hash image blocks {first}-{last}"))?;
        digests.push(digest);
    }
    Ok(render(image_size, &ranges, &digests))
}

/// Like [`bmap_xml`], but reads the whole image once, front to back, and
/// also returns the sha256 of the whole image. A build needs both; one
/// sequential pass instead of two halves the hashing of a multi-GiB image.
pub fn bmap_xml_and_sha256(
    image: &mut (impl Read + Seek),
    image_size: u64,
    mapped: &[(u64, u64)],
) -> Result<(String, [u8; 32])> {
    let ranges = block_ranges(image_size, mapped)?;
    image
        .seek(SeekFrom::Start(0))
        .context("seek image to the start")?;
    let mut buf = vec![0u8; BUF_SIZE];
    let mut whole = Sha256::new();
    let mut digests = Vec::with_capacity(ranges.len());
    let mut current: Option<Sha256> = None;
    let mut next = 0usize;
    let mut pos = 0u64;
    while pos < image_size {
        let n = usize::try_from(image_size - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        image
            .read_exact(&mut buf[..n])
            .with_context(|| format!("read image bytes {pos}..{}", pos + n as u64))?;
        whole.update(&buf[..n]);
        // Feed the part of this chunk that falls inside mapped ranges.
        let chunk_end = pos + n as u64;
        let mut at = pos;
        while at < chunk_end && next < ranges.len() {
            let (first, last) = ranges[next];
            let start = first * BLOCK_SIZE;
            let end = ((last + 1) * BLOCK_SIZE).min(image_size);
            if at < start {
                if start >= chunk_end {
                    break;
                }
                at = start;
            }
            let stop = end.min(chunk_end);
            let h = current.get_or_insert_with(Sha256::new);
            h.update(&buf[(at - pos) as usize..(stop - pos) as usize]);
            at = stop;
            if stop == end {
                digests.push(
                    current
                        .take()
                        .map(|h| h.finalize().into())
                        .unwrap_or_default(),
                );
                next += 1;
            }
        }
        pos = chunk_end;
    }
    ensure!(
        digests.len() == ranges.len(),
        "mapped ranges extend past the image"
    );
    Ok((
        render(image_size, &ranges, &digests),
        whole.finalize().into(),
    ))
}

/// [`bmap_xml_and_sha256`] for an image file, on two cores: one thread
/// hashes the whole image front to back, the other hashes each mapped
/// range, both reading with `pread` from their own offsets. Holes (found
/// with `SEEK_HOLE`) are fed to the whole-image hash from a zero buffer
/// instead of being read. Same result as the single-pass function, in
/// about half the time on a multi-GiB image.
pub fn bmap_xml_and_sha256_parallel(
    image: &std::fs::File,
    image_size: u64,
    mapped: &[(u64, u64)],
) -> Result<(String, [u8; 32])> {
    let ranges = block_ranges(image_size, mapped)?;
    let (whole, digests) = std::thread::scope(|scope| {
        let whole = scope.spawn(|| sha256_sparse(image, 0, image_size));
        let digests = (|| -> Result<Vec<[u8; 32]>> {
            let mut out = Vec::with_capacity(ranges.len());
            for &(first, last) in &ranges {
                let start = first * BLOCK_SIZE;
                let end = ((last + 1) * BLOCK_SIZE).min(image_size);
                out.push(
                    sha256_sparse(image, start, end)
                        .with_context(|| format!("hash image blocks {first}-{last}"))?,
                );
            }
            Ok(out)
        })();
        let whole = whole
            .join()
            .map_err(|_| anyhow::format_err!("the image hashing thread panicked"))?;
        Ok::<_, anyhow::Error>((whole?, digests?))
    })?;
    Ok((render(image_size, &ranges, &digests), whole))
}

/// sha256 of a whole file, reading only its data and feeding its holes
/// from a zero buffer (a 2.5 GiB golden image in about 1.4 s here).
pub fn sha256_file_sparse(file: &std::fs::File) -> Result<[u8; 32]> {
    let len = file.metadata().context("stat")?.len();
    sha256_sparse(file, 0, len)
}

/// sha256 of bytes `start..size` of `file`, feeding holes from a zero
/// buffer. Reading a hole is not free: on a slot just written next to a
/// fresh rootfs, `pread` over a gigabyte of holes took seconds on ext4,
/// where `SEEK_DATA` finds the data in milliseconds.
fn sha256_sparse(file: &std::fs::File, start: u64, size: u64) -> Result<[u8; 32]> {
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; BUF_SIZE];
    let mut buf = vec![0u8; BUF_SIZE];
    let mut h = Sha256::new();
    let mut pos = start;
    while pos < size {
        // Where the next data starts (the end when there is none).
        let data = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d.min(size),
            Err(rustix::io::Errno::NXIO) => size,
            // No SEEK_DATA here: treat everything as data.
            Err(_) => pos,
        };
        let mut hole = data - pos;
        while hole > 0 {
            let n = usize::try_from(hole).unwrap_or(usize::MAX).min(zeros.len());
            h.update(&zeros[..n]);
            hole -= n as u64;
        }
        pos = data;
        if pos >= size {
            break;
        }
        let data_end = match rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(pos)) {
            Ok(e) => e.min(size),
            Err(_) => size,
        };
        while pos < data_end {
            let n = usize::try_from(data_end - pos)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            file.read_exact_at(&mut buf[..n], pos)
                .with_context(|| format!("read image bytes {pos}..{}", pos + n as u64))?;
            h.update(&buf[..n]);
            pos += n as u64;
        }
    }
    Ok(h.finalize().into())
}

fn render(image_size: u64, ranges: &[(u64, u64)], digests: &[[u8; 32]]) -> String {
    let blocks_count = image_size.div_ceil(BLOCK_SIZE);
    let mapped_count: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();
    let mut block_map = String::new();
    for (&(first, last), digest) in ranges.iter().zip(digests) {
        let span = if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            block_map,
            "        <Range chksum=\"{}\"> {span} </Range>",
            hex::encode(digest)
        );
    }
    let render = |checksum: &str| {
        format!(
            "<?xml version=\"1.0\" ?>\n\
             <bmap version=\"2.0\">\n    \
             <ImageSize> {image_size} </ImageSize>\n    \
             <BlockSize> {BLOCK_SIZE} </BlockSize>\n    \
             <BlocksCount> {blocks_count} </BlocksCount>\n    \
             <MappedBlocksCount> {mapped_count} </MappedBlocksCount>\n    \
             <ChecksumType> sha256 </ChecksumType>\n    \
             <BmapFileChecksum> {checksum} </BmapFileChecksum>\n    \
             <BlockMap>\n\
             {block_map}    \
             </BlockMap>\n\
             </bmap>\n"
        )
    };
    let file_checksum = hex::encode(Sha256::digest(render(ZERO_CHECKSUM).as_bytes()));
    render(&file_checksum)
}

/// Converts byte ranges to sorted, merged, inclusive block ranges.
fn block_ranges(image_size: u64, mapped: &[(u64, u64)]) -> Result<Vec<(u64, u64)>> {
    let mut blocks = Vec::with_capacity(mapped.len());
    for &(start, end) in mapped {
        ensure!(
            start <= end,
            "mapped range {start}..{end} ends before it starts"
        );
        let end = end.min(image_size);
        if start >= end {
            continue;
        }
        // Exclusive end block; end <= image_size so this cannot overflow
        // meaningfully (div_ceil of a u64 fits).
        blocks.push((start / BLOCK_SIZE, end.div_ceil(BLOCK_SIZE)));
    }
    blocks.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(blocks.len());
    for (a, b) in blocks {
        match merged.last_mut() {
            // Adjacent ranges merge too, as bmaptool create would emit.
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    // Long ranges are cut into pieces of at most MAX_RANGE_BLOCKS, each
    // with its own checksum: a range is one sha256 stream, so a slot
    // mapped as one range would be hashed on one core by every reader
    // (flash checks, writes and reads back on all of them). bmaptool
    // copy takes adjacent ranges as they come.
    let mut out = Vec::with_capacity(merged.len());
    for (a, b) in merged {
        let mut first = a;
        while first < b {
            let last = first.saturating_add(MAX_RANGE_BLOCKS).min(b);
            out.push((first, last - 1));
            first = last;
        }
    }
    Ok(out)
}

/// Longest range written, in blocks (64 MiB).
pub const MAX_RANGE_BLOCKS: u64 = (64 << 20) / BLOCK_SIZE;

/// The first byte of `file`'s first `size` bytes that lies outside every
/// `mapped` byte range (`[start, end)`, any order) and is not zero, or
/// `None`. Only the file's data is read (`SEEK_DATA`); holes are zeros.
///
/// A bmap flash leaves unmapped blocks unwritten, so an image is only
/// what its bmap says when every byte outside the ranges is zero: then the
/// bmap's checksums and the image size fix every byte of the image. The
/// build checks this of each image it writes, and `flash` of each image
/// it flashes, instead of hashing the whole image as one stream.
pub fn first_nonzero_outside(
    file: &std::fs::File,
    size: u64,
    mapped: &[(u64, u64)],
) -> Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let mut sorted: Vec<(u64, u64)> = mapped.to_vec();
    sorted.sort_unstable();
    let mut gaps = Vec::with_capacity(sorted.len() + 1);
    let mut at = 0u64;
    for (a, b) in sorted {
        if a > at {
            gaps.push((at, a.min(size)));
        }
        at = at.max(b);
    }
    if at < size {
        gaps.push((at, size));
    }
    let mut buf = vec![0u8; BUF_SIZE];
    for (start, end) in gaps {
        let mut pos = start;
        while pos < end {
            pos = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(pos)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => break,
                // No SEEK_DATA here: read everything.
                Err(_) => pos,
            };
            if pos >= end {
                break;
            }
            let data_end = match rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(pos)) {
                Ok(e) => e.clamp(pos + 1, end),
                Err(_) => end,
            };
            while pos < data_end {
                let n = usize::try_from(data_end - pos)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                file.read_exact_at(&mut buf[..n], pos)
                    .with_context(|| format!("read image bytes {pos}..{}", pos + n as u64))?;
                if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
                    return Ok(Some(pos + i as u64));
                }
                pos += n as u64;
            }
        }
    }
    Ok(None)
}

fn hash_range(
    image: &mut (impl Read + Seek),
    start: u64,
    end: u64,
    buf: &mut [u8],
) -> Result<[u8; 32]> {
    image
        .seek(SeekFrom::Start(start))
        .with_context(|| format!("seek image to byte {start}"))?;
    let mut hasher = Sha256::new();
    let mut left = end - start;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        image
            .read_exact(&mut buf[..n])
            .with_context(|| format!("read image bytes {}..{end}", end - left))?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn long_ranges_are_cut_into_pieces_that_cover_them_exactly() {
        let m = MAX_RANGE_BLOCKS;
        let size = (3 * m + 10) * BLOCK_SIZE + 100;
        let got = block_ranges(size, &[(0, size), (5, 6)]).unwrap();
        // Every piece at most MAX_RANGE_BLOCKS long, adjacent to the next,
        // together exactly the merged range (the partial block included).
        assert_eq!(
            got,
            vec![
                (0, m - 1),
                (m, 2 * m - 1),
                (2 * m, 3 * m - 1),
                (3 * m, 3 * m + 10)
            ]
        );
        assert_eq!(
            block_ranges(size, &[(0, m * BLOCK_SIZE)]).unwrap(),
            vec![(0, m - 1)]
        );
        assert_eq!(
            block_ranges(size, &[(BLOCK_SIZE, (m + 2) * BLOCK_SIZE)]).unwrap(),
            vec![(1, m), (m + 1, m + 1)]
        );
    }

    #[test]
    fn a_nonzero_byte_outside_the_mapped_ranges_is_found_in_data_not_holes() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        let size = 6 * BUF_SIZE as u64 + 513;
        f.set_len(size).unwrap();
        let mapped = [(2 * BUF_SIZE as u64, 3 * BUF_SIZE as u64), (0, 4096)];
        for (at, len) in [(0u64, 4096usize), (2 * BUF_SIZE as u64, BUF_SIZE)] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&vec![0xa5; len]).unwrap();
        }
        // Zero bytes written as data outside the ranges are fine.
        f.seek(SeekFrom::Start(5 * BUF_SIZE as u64)).unwrap();
        f.write_all(&vec![0; 3 * 4096]).unwrap();
        assert_eq!(first_nonzero_outside(&f, size, &mapped).unwrap(), None);
        // One byte just past a range, one in the last partial block.
        for at in [3 * BUF_SIZE as u64, size - 1, 4096] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&[1]).unwrap();
            assert_eq!(
                first_nonzero_outside(&f, size, &mapped).unwrap(),
                Some(at),
                "byte {at}"
            );
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&[0]).unwrap();
        }
        // Past `size` is not looked at.
        f.seek(SeekFrom::Start(size - 1)).unwrap();
        f.write_all(&[1]).unwrap();
        assert_eq!(first_nonzero_outside(&f, size - 1, &mapped).unwrap(), None);
    }

    #[test]
    fn the_parallel_sparse_pass_equals_the_sequential_one() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        let size = 9 * BUF_SIZE as u64 + 777;
        f.set_len(size).unwrap();
        // Data islands between holes, one crossing a buffer boundary.
        for (at, len) in [
            (0u64, 5000usize),
            (3 * BUF_SIZE as u64 - 100, 300),
            (size - 700, 700),
        ] {
            f.seek(SeekFrom::Start(at)).unwrap();
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + at as usize) as u8).collect();
            f.write_all(&bytes).unwrap();
        }
        let mapped = [
            (0, 8192),
            (3 * BUF_SIZE as u64 - 4096, 3 * BUF_SIZE as u64 + 4096),
            (size - 10, size),
        ];
        let seq = bmap_xml_and_sha256(&mut f, size, &mapped).unwrap();
        let par = bmap_xml_and_sha256_parallel(&f, size, &mapped).unwrap();
        assert_eq!(seq, par);
    }

    #[test]
    fn one_pass_matches_two_passes() {
        let size = 40 * 4096 + 123;
        let img: Vec<u8> = (0..size).map(|i| (i * 7 % 253) as u8).collect();
        let mapped = [(0, 1), (5 * 4096, 9 * 4096 + 5), (30 * 4096, size as u64)];
        let a = bmap_xml(&mut Cursor::new(&img), size as u64, &mapped).unwrap();
        let (b, whole) = bmap_xml_and_sha256(&mut Cursor::new(&img), size as u64, &mapped).unwrap();
        assert_eq!(a, b);
        assert_eq!(whole, <[u8; 32]>::from(Sha256::digest(&img)));
    }

    #[test]
    fn widens_clamps_and_merges() {
        let r = block_ranges(
            10 * 4096 + 100,
            &[
                (5000, 5001),
                (0, 1),
                (4096, 4097),
                (9 * 4096, u64::MAX),
                (20, 20),
                (1 << 40, 1 << 41),
            ],
        )
        .unwrap();
        assert_eq!(r, vec![(0, 1), (9, 10)]);
        assert!(block_ranges(100, &[(5, 4)]).is_err());
    }

    #[test]
    fn xml_matches_the_bmap_rules() {
        let size = 8 * 4096 + 100;
        let mut img = vec![0u8; size];
        img[0] = 1;
        img[3 * 4096 + 7] = 2;
        img[size - 1] = 3;
        let xml = bmap_xml(
            &mut Cursor::new(&img),
            size as u64,
            &[(0, 1), (3 * 4096, 4 * 4096), (size as u64 - 1, size as u64)],
        )
        .unwrap();
        assert!(xml.contains("<ImageSize> 32868 </ImageSize>"), "{xml}");
        assert!(xml.contains("<BlocksCount> 9 </BlocksCount>"));
        assert!(xml.contains("<MappedBlocksCount> 3 </MappedBlocksCount>"));
        let first = hex::encode(Sha256::digest(&img[..4096]));
        let last = hex::encode(Sha256::digest(&img[8 * 4096..]));
        assert!(xml.contains(&format!("<Range chksum=\"{first}\"> 0 </Range>")));
        assert!(
            xml.contains(&format!("<Range chksum=\"{last}\"> 8 </Range>")),
            "{xml}"
        );

        // The file checksum is over the text with itself zeroed.
        let start = xml.find("<BmapFileChecksum> ").unwrap() + 19;
        let sum = &xml[start..start + 64];
        let zeroed = xml.replace(sum, ZERO_CHECKSUM);
        assert_eq!(hex::encode(Sha256::digest(zeroed.as_bytes())), sum);
    }

    #[test]
    fn multi_block_range_and_determinism() {
        let img: Vec<u8> = (0..5 * 4096u32).map(|i| (i % 251) as u8).collect();
        let a = bmap_xml(
            &mut Cursor::new(&img),
            img.len() as u64,
            &[(4096, 3 * 4096 + 1)],
        )
        .unwrap();
        let b = bmap_xml(
            &mut Cursor::new(&img),
            img.len() as u64,
            &[(4096, 3 * 4096 + 1)],
        )
        .unwrap();
        assert_eq!(a, b);
        let sum = hex::encode(Sha256::digest(&img[4096..4 * 4096]));
        assert!(
            a.contains(&format!("<Range chksum=\"{sum}\"> 1-3 </Range>")),
            "{a}"
        );
    }

    #[test]
    fn short_image_is_an_error() {
        let img = vec![0u8; 4096];
        let err = bmap_xml(&mut Cursor::new(&img), 3 * 4096, &[(0, 3 * 4096)]).unwrap_err();
        assert!(format!("{err:#}").contains("read image bytes"), "{err:#}");
    }
}
