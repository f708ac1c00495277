//! Sparse-aware copying and scanning of image files on Linux.
//!
//! Partition payloads (squashfs/erofs roots, verity trees) are built as
//! separate files and then placed into the disk image. Copying them byte
//! for byte would fill the image's holes with explicit zeros, making the
//! image occupy its full size on disk and making every later pass (bmap
//! hashing, compression) slower. So:
//!
//! * [`data_extents`] asks the filesystem where the data is
//!   (`lseek(SEEK_DATA/SEEK_HOLE)`), falling back to "everything is data"
//!   where that is unsupported, which is always correct, just slower;
//! * [`copy_into`] copies only those extents, with `copy_file_range` so
//!   the kernel can reflink or copy in-kernel, and a plain pread/pwrite
//!   loop where that syscall is unavailable (old kernels, cross-device
//!   copies on some filesystems);
//! * [`nonzero_extents`] finds 4 KiB blocks that actually hold non-zero
//!   bytes, for bmap generation on streams whose holes are not known.
//!
//! Positioned I/O (`pread`/`pwrite`, `copy_file_range` with explicit
//! offsets) is used throughout, so callers' file offsets are left alone.

use anyhow::{ensure, Context, Result};
use rustix::fs::SeekFrom as RawSeekFrom;
use rustix::io::Errno;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

/// Granule of [`nonzero_extents`], equal to the bmap block size.
const GRANULE: u64 = 4096;
/// Buffer size of the read/write fallback and of the zero scan.
const BUF_SIZE: usize = 1 << 20;
/// Upper bound per `copy_file_range` call, so progress is made in
/// bounded steps and the length always fits `usize`.
const MAX_CHUNK: u64 = 1 << 30;

/// Returns the `[start, end)` byte extents of the first `len` bytes of
/// `file` that hold data, in ascending order.
///
/// Uses `SEEK_DATA`/`SEEK_HOLE`; if the filesystem does not support them
/// the whole range is reported as one extent. Bytes past the end of the
/// file are holes. The file offset is restored afterwards.
pub fn data_extents(file: &File, len: u64) -> Result<Vec<(u64, u64)>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let saved = rustix::fs::tell(file).context("read file offset")?;
    let result = scan_extents(file, len);
    rustix::fs::seek(file, RawSeekFrom::Start(saved)).context("restore file offset")?;
    result
}

fn scan_extents(file: &File, len: u64) -> Result<Vec<(u64, u64)>> {
    let whole = vec![(0, len)];
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let data = match rustix::fs::seek(file, RawSeekFrom::Data(pos)) {
            Ok(d) => d,
            // ENXIO: no data at or after `pos`.
            Err(Errno::NXIO) => break,
            Err(e) if unsupported(e) => return Ok(whole),
            Err(e) => return Err(e).with_context(|| format!("seek to data after byte {pos}")),
        };
        if data >= len {
            break;
        }
        let hole = match rustix::fs::seek(file, RawSeekFrom::Hole(data)) {
            Ok(h) => h,
            // The file shrank under us; treat the rest as data to be safe.
            Err(Errno::NXIO) => len,
            Err(e) if unsupported(e) => return Ok(whole),
            Err(e) => return Err(e).with_context(|| format!("seek to hole after byte {data}")),
        };
        let end = hole.clamp(data + 1, len);
        out.push((data, end));
        pos = end;
    }
    Ok(out)
}

/// Errors meaning "this file or filesystem cannot do that", after which a
/// slower generic path is still correct.
fn unsupported(e: Errno) -> bool {
    [
        Errno::INVAL,
        Errno::NOSYS,
        Errno::OPNOTSUPP,
        Errno::NOTSUP,
        Errno::XDEV,
        Errno::SPIPE,
    ]
    .contains(&e)
}

/// Copies the data extents of the first `src_len` bytes of `src` into
/// `dst` at `dst_offset`, leaving the holes of `src` as untouched (hole)
/// bytes of `dst`. Returns the number of bytes copied.
///
/// `dst` must already be at least `dst_offset + src_len` bytes long
/// (pre-size it with `set_len`): copying never extends it, which catches
/// layout mistakes instead of silently growing the image.
pub fn copy_into(src: &File, src_len: u64, dst: &File, dst_offset: u64) -> Result<u64> {
    let dst_len = dst.metadata().context("stat destination")?.len();
    let dst_end = dst_offset
        .checked_add(src_len)
        .context("destination offset overflows")?;
    ensure!(
        dst_end <= dst_len,
        "copying {src_len} bytes to offset {dst_offset} needs {dst_end} bytes but the destination has {dst_len}"
    );
    let mut copied = 0;
    for (start, end) in data_extents(src, src_len).context("find data extents of source")? {
        copy_range(src, start, dst, dst_offset + start, end - start)
            .with_context(|| format!("copy source bytes {start}..{end}"))?;
        copied += end - start;
    }
    Ok(copied)
}

fn copy_range(src: &File, mut off_in: u64, dst: &File, mut off_out: u64, len: u64) -> Result<()> {
    let mut left = len;
    while left > 0 {
        let chunk = left.min(MAX_CHUNK) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), chunk) {
            // copy_file_range advances both offsets itself.
            Ok(n) if n > 0 => left -= n as u64,
            // 0 before the end (some pseudo filesystems) or an unsupported
            // combination of files: finish with plain reads and writes.
            Ok(_) => return copy_range_rw(src, off_in, dst, off_out, left),
            Err(e) if unsupported(e) || e == Errno::BADF || e == Errno::PERM => {
                return copy_range_rw(src, off_in, dst, off_out, left)
            }
            Err(e) => return Err(e).context("copy_file_range"),
        }
    }
    Ok(())
}

fn copy_range_rw(src: &File, off_in: u64, dst: &File, off_out: u64, len: u64) -> Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(BUF_SIZE as u64) as usize;
        src.read_exact_at(&mut buf[..n], off_in + done)
            .with_context(|| format!("read source at byte {}", off_in + done))?;
        dst.write_all_at(&buf[..n], off_out + done)
            .with_context(|| format!("write destination at byte {}", off_out + done))?;
        done += n as u64;
    }
    Ok(())
}

/// Returns the ranges of `[start, start + len)` of `file` whose bytes are
/// not all zero, at 4 KiB granularity.
///
/// Granules are aligned to absolute multiples of 4096 (matching bmap
/// blocks); returned ranges are merged and clamped to the requested
/// range. The region is streamed through a 1 MiB buffer and must exist:
/// reading past the end of `file` is an error.
pub fn nonzero_extents(
    file: &mut (impl Read + Seek),
    start: u64,
    len: u64,
) -> Result<Vec<(u64, u64)>> {
    let end = start.checked_add(len).context("scan range overflows u64")?;
    file.seek(SeekFrom::Start(start))
        .with_context(|| format!("seek to byte {start}"))?;
    let mut buf = vec![0u8; BUF_SIZE];
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut pos = start;
    while pos < end {
        // Chunks end on granule boundaries so no granule spans two reads.
        let chunk_end = (pos / GRANULE * GRANULE)
            .saturating_add(BUF_SIZE as u64)
            .min(end);
        let n = (chunk_end - pos) as usize;
        file.read_exact(&mut buf[..n])
            .with_context(|| format!("read bytes {pos}..{chunk_end}"))?;
        let mut off = 0usize;
        while off < n {
            let g_start = pos + off as u64;
            let g_end = ((g_start / GRANULE + 1) * GRANULE).min(chunk_end);
            let piece_len = (g_end - g_start) as usize;
            if buf[off..off + piece_len].iter().any(|&b| b != 0) {
                match out.last_mut() {
                    Some(last) if last.1 == g_start => last.1 = g_end,
                    _ => out.push((g_start, g_end)),
                }
            }
            off += piece_len;
        }
        pos = chunk_end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    const MIB: u64 = 1 << 20;

    #[test]
    fn nonzero_extents_are_granular_and_merged() {
        let mut img = vec![0u8; (3 * MIB) as usize];
        img[10] = 1; // granule 0
        img[4096 + 4095] = 1; // granule 1, merges with 0
        img[MIB as usize - 1] = 1; // last granule of the first chunk
        img[MIB as usize] = 1; // first granule of the second chunk, merges
        img[(3 * MIB) as usize - 1] = 1;
        let r = nonzero_extents(&mut Cursor::new(&img), 0, 3 * MIB).unwrap();
        assert_eq!(
            r,
            vec![
                (0, 8192),
                (MIB - 4096, MIB + 4096),
                (3 * MIB - 4096, 3 * MIB)
            ]
        );
        // Unaligned start: first granule is clamped, alignment stays absolute.
        let r = nonzero_extents(&mut Cursor::new(&img), 5, 4096 * 2 + 10).unwrap();
        assert_eq!(r, vec![(5, 8192)]);
        let r = nonzero_extents(&mut Cursor::new(&img), 11, 4000).unwrap();
        assert_eq!(r, vec![]);
        assert!(nonzero_extents(&mut Cursor::new(&img), 3 * MIB - 1, 2).is_err());
    }

    fn sparse_file(dir: &tempfile::TempDir) -> (File, u64) {
        let path = dir.path().join("src");
        let mut f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .unwrap();
        let len = 8 * MIB + 123;
        f.set_len(len).unwrap();
        f.write_all_at(&[7u8; 5000], 2 * MIB).unwrap();
        f.write_all_at(&[9u8; 100], len - 100).unwrap();
        f.seek(SeekFrom::Start(17)).unwrap();
        f.flush().unwrap();
        (f, len)
    }

    #[test]
    fn data_extents_find_the_data_and_keep_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, len) = sparse_file(&dir);
        let ext = data_extents(&f, len).unwrap();
        assert_eq!(f.stream_position().unwrap(), 17);
        // Whatever the filesystem granularity, both written ranges must be
        // covered and, if holes are supported, most of the file is not.
        let covers = |a: u64, b: u64| ext.iter().any(|&(s, e)| s <= a && b <= e);
        assert!(covers(2 * MIB, 2 * MIB + 5000), "{ext:?}");
        assert!(covers(len - 100, len), "{ext:?}");
        assert!(ext.windows(2).all(|w| w[0].1 <= w[1].0), "{ext:?}");
        assert!(ext.iter().all(|&(s, e)| s < e && e <= len));
        assert_eq!(data_extents(&f, 0).unwrap(), vec![]);
    }

    #[test]
    fn copy_into_copies_data_and_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (src, len) = sparse_file(&dir);
        let dst = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("dst"))
            .unwrap();
        dst.set_len(MIB + len).unwrap();
        let copied = copy_into(&src, len, &dst, MIB).unwrap();
        assert!(copied >= 5100 && copied <= len);
        let mut a = vec![0u8; len as usize];
        src.read_exact_at(&mut a, 0).unwrap();
        let mut b = vec![0u8; len as usize];
        dst.read_exact_at(&mut b, MIB).unwrap();
        assert!(a == b, "copy differs");
        // Too small a destination is refused before anything is written.
        let err = copy_into(&src, len, &dst, MIB + 1).unwrap_err();
        assert!(format!("{err:#}").contains("destination has"), "{err:#}");
    }

    #[test]
    fn read_write_fallback_copies() {
        let dir = tempfile::tempdir().unwrap();
        let (src, len) = sparse_file(&dir);
        let dst = tempfile::tempfile().unwrap();
        dst.set_len(len).unwrap();
        copy_range_rw(&src, 0, &dst, 0, len).unwrap();
        let mut a = vec![0u8; len as usize];
        src.read_exact_at(&mut a, 0).unwrap();
        let mut b = vec![0u8; len as usize];
        dst.read_exact_at(&mut b, 0).unwrap();
        assert!(a == b);
    }
}
