//! Checking, writing and reading back the mapped ranges of an image with
//! positioned I/O on any [`ReadAt`] / [`WriteAt`], so the tests run on
//! memory buffers.
//!
//! Three passes, each shared out over one thread per core, because sha256
//! is what bounds a flash on a fast device and a range is one sha256
//! stream (the build cuts long ranges, see `slotsmith_disk::bmap`):
//! - [`check`] reads every range and compares its sha256 with the bmap's
//!   before anything is written. The ranges that fit in the memory budget
//!   are kept, as read, in aligned buffers.
//! - [`write`] writes the kept ranges from memory, so what reaches the
//!   device is exactly what was checked. The others are read again and
//!   hashed again as they are written: a range changed in the image since
//!   the check fails the write at its end.
//! - [`read_back`] reads every range from the device and compares it, byte
//!   for byte with the kept buffers, by sha256 with the bmap for the rest.
//!
//! The buffers are aligned for `O_DIRECT`, which the caller turns on where
//! the device takes it: the read-back then reads the device, not the page
//! cache, and the writes skip a copy.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::bmap::{Bmap, Range};

/// Bytes moved per read and write: long sequential requests for the
/// device, and the unit kept ranges are shared out in.
pub const CHUNK: usize = 4 << 20;
/// Alignment of every buffer: `O_DIRECT` wants the memory, offsets and
/// lengths aligned to the device's logical block (at most 4096).
pub const ALIGN: usize = 4096;
/// Most threads a pass runs on.
const MAX_THREADS: usize = 8;

/// Positioned reads: no shared seek offset, so several threads read one
/// open file at once.
pub trait ReadAt: Sync {
    /// Fills `buf` from byte `pos`, or fails (a short device is an error).
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()>;
}

/// Positioned writes, as [`ReadAt`].
pub trait WriteAt: Sync {
    /// Writes all of `buf` at byte `pos`, or fails.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> std::io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, pos)
    }
}

impl WriteAt for std::fs::File {
    fn write_all_at(&self, buf: &[u8], pos: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, pos)
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

/// A device in memory, for tests: fixed size, a write past its end fails.
impl ReadAt for Mutex<Vec<u8>> {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
        let v = self.lock().map_err(|_| std::io::ErrorKind::Other)?;
        v.as_slice().read_exact_at(buf, pos)
    }
}

impl WriteAt for Mutex<Vec<u8>> {
    fn write_all_at(&self, buf: &[u8], pos: u64) -> std::io::Result<()> {
        let mut v = self.lock().map_err(|_| std::io::ErrorKind::Other)?;
        let dst = usize::try_from(pos)
            .ok()
            .and_then(|p| v.get_mut(p..p.checked_add(buf.len())?))
            .ok_or(std::io::ErrorKind::WriteZero)?;
        dst.copy_from_slice(buf);
        Ok(())
    }
}

/// A buffer whose bytes start on an [`ALIGN`] boundary.
pub struct Aligned {
    v: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Aligned {
        let v = vec![0u8; len.saturating_add(ALIGN)];
        // For a byte pointer the offset always exists and is < ALIGN; the
        // `min` only keeps the slice in bounds if that ever changed.
        let off = v.as_ptr().align_offset(ALIGN).min(ALIGN);
        Aligned { v, off, len }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.v[self.off..self.off + self.len]
    }

    /// The bytes, to fill.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.off..self.off + self.len]
    }
}

/// What [`check`] kept: per range, its bytes in [`CHUNK`]s, or nothing
/// (read again when written).
pub struct Checked {
    kept: Vec<Option<Vec<Aligned>>>,
}

impl Checked {
    /// Bytes held in memory.
    pub fn kept_bytes(&self) -> u64 {
        self.kept
            .iter()
            .flatten()
            .flatten()
            .map(|b| b.len as u64)
            .sum()
    }
}

/// The state the threads of one pass share.
struct Pass {
    /// The earliest byte an error was found at (`u64::MAX`: none). Work
    /// past it stops at its next chunk; work before it goes on, so the
    /// error reported is always the first on the device, whichever thread
    /// found which.
    stop_at: AtomicU64,
    /// Bytes done, for progress.
    done: AtomicU64,
}

impl Pass {
    /// Whether work at byte `pos` can stop: an error at or before it is
    /// known.
    fn stopped(&self, pos: u64) -> bool {
        self.stop_at.load(Ordering::Relaxed) <= pos
    }

    fn add(&self, n: usize) {
        self.done.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// An error with the byte it is at: of several threads' errors, the
/// earliest on the device is the one reported.
type At<T> = std::result::Result<T, (u64, anyhow::Error)>;

/// Does `units` on up to one thread per core, each taking the next unit
/// (give the longest first); `work` gets the unit, the pass and the
/// thread's own [`CHUNK`] buffer. Returns the results in unit order;
/// `progress` gets the bytes done, from this thread, while they work.
fn share<U: Sync, T: Send>(
    units: &[U],
    progress: &mut dyn FnMut(u64),
    work: &(dyn Fn(&U, &Pass, &mut Aligned) -> At<T> + Sync),
) -> Result<Vec<T>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
        .min(units.len().max(1));
    let pass = Pass {
        stop_at: AtomicU64::new(u64::MAX),
        done: AtomicU64::new(0),
    };
    let next = AtomicUsize::new(0);
    let (pass, next) = (&pass, &next);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || -> At<Vec<(usize, T)>> {
                    let mut buf = Aligned::new(CHUNK);
                    let mut mine = Vec::new();
                    let mut earliest: Option<(u64, anyhow::Error)> = None;
                    // Every unit is taken, even after an error, this
                    // thread's or another's: one before that error must
                    // still be looked at (those past it stop at once).
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(u) = units.get(i) else { break };
                        match work(u, pass, &mut buf) {
                            Ok(t) => mine.push((i, t)),
                            Err((at, e)) => {
                                pass.stop_at.fetch_min(at, Ordering::Relaxed);
                                if earliest.as_ref().is_none_or(|(p, _)| at < *p) {
                                    earliest = Some((at, e));
                                }
                            }
                        }
                    }
                    match earliest {
                        Some(e) => Err(e),
                        None => Ok(mine),
                    }
                })
            })
            .collect();
        while !workers.iter().all(|w| w.is_finished()) {
            progress(pass.done.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut first: Option<(u64, anyhow::Error)> = None;
        let mut all = Vec::new();
        for w in workers {
            match w.join() {
                Ok(Ok(mine)) => all.extend(mine),
                Ok(Err((at, e))) => {
                    if first.as_ref().is_none_or(|(p, _)| at < *p) {
                        first = Some((at, e));
                    }
                }
                Err(_) => {
                    first = Some((0, anyhow::format_err!("a flashing thread panicked")));
                }
            }
        }
        if let Some((_, e)) = first {
            return Err(e);
        }
        progress(pass.done.load(Ordering::Relaxed));
        all.sort_by_key(|(i, _)| *i);
        anyhow::ensure!(all.len() == units.len(), "a pass stopped early");
        Ok(all.into_iter().map(|(_, t)| t).collect())
    })
}

/// Range indices, longest first (ties in disk order).
fn longest_first(bmap: &Bmap, pick: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..bmap.ranges.len()).filter(|&i| pick(i)).collect();
    order.sort_by_key(|&i| {
        (
            std::cmp::Reverse(bmap.ranges[i].end - bmap.ranges[i].start),
            i,
        )
    });
    order
}

/// The chunks of a range: `(offset, length)`.
fn chunks(r: &Range) -> impl Iterator<Item = (u64, usize)> + '_ {
    (r.start..r.end).step_by(CHUNK).map(move |p| {
        (
            p,
            usize::try_from(r.end - p).unwrap_or(usize::MAX).min(CHUNK),
        )
    })
}

/// Reads every range of `image`, compares its sha256 with the bmap's and
/// keeps, in disk order, the ranges that fit in `budget` bytes; `progress`
/// gets the bytes read so far.
pub fn check<R: ReadAt + ?Sized>(
    image: &R,
    bmap: &Bmap,
    budget: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<Checked> {
    let mut left = budget;
    let keep: Vec<bool> = bmap
        .ranges
        .iter()
        .map(|r| {
            // What keeping costs: every chunk's bytes and its alignment
            // slack, so a bmap of a million one-sector ranges cannot
            // allocate many times the budget.
            let chunks = (r.end - r.start).div_ceil(CHUNK as u64);
            let n = (r.end - r.start).saturating_add(chunks.saturating_mul(ALIGN as u64));
            let fits = n <= left;
            if fits {
                left -= n;
            }
            fits
        })
        .collect();
    let order = longest_first(bmap, |_| true);
    let keep = &keep;
    let got = share(&order, progress, &|&i, pass, scratch| {
        let r = &bmap.ranges[i];
        let mut h = Sha256::new();
        let mut kept = Vec::new();
        for (pos, n) in chunks(r) {
            if pass.stopped(pos) {
                return Ok((i, None));
            }
            let mut own = keep[i].then(|| Aligned::new(n));
            let buf = match own.as_mut() {
                Some(b) => b.bytes_mut(),
                None => &mut scratch.bytes_mut()[..n],
            };
            image
                .read_exact_at(buf, pos)
                .with_context(|| format!("image: read bytes {pos}..{}", pos + n as u64))
                .map_err(|e| (pos, e))?;
            h.update(&*buf);
            pass.add(n);
            kept.extend(own);
        }
        verify(r, h.finalize().into(), "image").map_err(|e| (r.start, e))?;
        Ok((i, keep[i].then_some(kept)))
    })?;
    let mut kept: Vec<Option<Vec<Aligned>>> = (0..bmap.ranges.len()).map(|_| None).collect();
    for (i, k) in got {
        kept[i] = k;
    }
    Ok(Checked { kept })
}

/// One unit of [`write`] or [`read_back`].
enum Unit {
    /// Chunk `.1` of kept range `.0`.
    Kept(usize, usize),
    /// A range not kept, as one sha256 stream.
    Stream(usize),
}

/// Ranges not kept (longest first), then every kept chunk in disk order.
fn units(bmap: &Bmap, checked: &Checked) -> Vec<Unit> {
    let kept = |i: usize| checked.kept.get(i).is_some_and(|k| k.is_some());
    let mut out: Vec<Unit> = longest_first(bmap, |i| !kept(i))
        .into_iter()
        .map(Unit::Stream)
        .collect();
    for (i, k) in checked.kept.iter().enumerate() {
        for c in 0..k.as_ref().map_or(0, |k| k.len()) {
            out.push(Unit::Kept(i, c));
        }
    }
    out
}

/// Writes every range to `dest`: kept ones from memory, the others read
/// from `image` again and checked against the bmap again as they are
/// written. `progress` gets the bytes written so far. Returns the bytes
/// written. Does not sync.
pub fn write<R: ReadAt + ?Sized, W: WriteAt + ?Sized>(
    image: &R,
    dest: &W,
    bmap: &Bmap,
    checked: &Checked,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let put = |buf: &[u8], pos: u64| {
        dest.write_all_at(buf, pos)
            .with_context(|| format!("device: write bytes {pos}..{}", pos + buf.len() as u64))
            .map_err(|e| (pos, e))
    };
    share(&units(bmap, checked), progress, &|u, pass, scratch| {
        match *u {
            Unit::Kept(i, c) => {
                let (r, buf) = (&bmap.ranges[i], kept_chunk(checked, i, c)?);
                let pos = r.start + (c * CHUNK) as u64;
                if pass.stopped(pos) {
                    return Ok(());
                }
                put(buf.bytes(), pos)?;
                pass.add(buf.len);
            }
            Unit::Stream(i) => stream(image, &bmap.ranges[i], "image", pass, scratch, put)?,
        }
        Ok(())
    })?;
    Ok(bmap.mapped_bytes())
}

/// Reads range `r` of `src` chunk by chunk, hashing it and handing each
/// chunk to `each`, and compares the sha256 with the bmap's at the end
/// (`what` names the side in messages). Stops quietly once an error
/// before it is known.
fn stream<S: ReadAt + ?Sized>(
    src: &S,
    r: &Range,
    what: &str,
    pass: &Pass,
    scratch: &mut Aligned,
    each: impl Fn(&[u8], u64) -> At<()>,
) -> At<()> {
    let mut h = Sha256::new();
    for (pos, n) in chunks(r) {
        if pass.stopped(pos) {
            return Ok(());
        }
        let buf = &mut scratch.bytes_mut()[..n];
        src.read_exact_at(buf, pos)
            .with_context(|| format!("{what}: read bytes {pos}..{}", pos + n as u64))
            .map_err(|e| (pos, e))?;
        h.update(&*buf);
        each(buf, pos)?;
        pass.add(n);
    }
    verify(r, h.finalize().into(), what).map_err(|e| (r.start, e))
}

fn kept_chunk(checked: &Checked, i: usize, c: usize) -> At<&Aligned> {
    checked
        .kept
        .get(i)
        .and_then(|k| k.as_ref()?.get(c))
        .ok_or_else(|| {
            (
                0,
                anyhow::format_err!("kept chunk {c} of range {i} is missing"),
            )
        })
}

/// Reads every range back from `dest` and compares it: a kept range byte
/// for byte with what was checked and written, the others by sha256 with
/// the bmap. `progress` gets the bytes read so far. The first difference
/// on the device is the one reported.
pub fn read_back<D: ReadAt + ?Sized>(
    dest: &D,
    bmap: &Bmap,
    checked: &Checked,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let get = |buf: &mut [u8], pos: u64| {
        dest.read_exact_at(buf, pos)
            .with_context(|| format!("read-back: read bytes {pos}..{}", pos + buf.len() as u64))
            .map_err(|e| (pos, e))
    };
    share(&units(bmap, checked), progress, &|u, pass, scratch| {
        match *u {
            Unit::Kept(i, c) => {
                let (r, want) = (&bmap.ranges[i], kept_chunk(checked, i, c)?);
                let pos = r.start + (c * CHUNK) as u64;
                if pass.stopped(pos) {
                    return Ok(());
                }
                let got = &mut scratch.bytes_mut()[..want.len];
                get(got, pos)?;
                // Slice equality is one memcmp; the byte is looked for
                // only when there is a difference to name.
                if got[..] != want.bytes()[..] {
                    let k = got
                        .iter()
                        .zip(want.bytes())
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    let at = pos + k as u64;
                    return Err((
                        at,
                        anyhow::format_err!(
                            "read-back: blocks {}-{} (bmap line {}): byte {at} reads {:#04x}, \
                             {:#04x} was written",
                            r.first,
                            r.last,
                            r.line,
                            got[k],
                            want.bytes()[k]
                        ),
                    ));
                }
                pass.add(want.len);
            }
            Unit::Stream(i) => {
                stream(dest, &bmap.ranges[i], "read-back", pass, scratch, |_, _| {
                    Ok(())
                })?
            }
        }
        Ok(())
    })?;
    Ok(())
}

fn verify(r: &Range, got: [u8; 32], what: &str) -> Result<()> {
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

    fn err<T>(r: Result<T>) -> String {
        format!("{:#}", r.err().unwrap())
    }

    /// A range larger than a chunk, one crossing chunk boundaries, the
    /// partial last block.
    fn three_ranges() -> (Vec<u8>, Bmap) {
        let size = 3 * CHUNK + 4096 * 5 + 77;
        setup(
            size,
            &[
                (0, 4096),
                (8192, CHUNK as u64 + 9000),
                (2 * CHUNK as u64, size as u64),
            ],
        )
    }

    #[test]
    fn writes_only_mapped_ranges_and_reads_them_back_whatever_is_kept() {
        let (img, bmap) = three_ranges();
        // Nothing kept, the first two ranges kept, everything kept.
        for budget in [0, 2 * CHUNK as u64, u64::MAX] {
            let mut last = 0;
            let checked = check(img.as_slice(), &bmap, budget, &mut |n| last = n).unwrap();
            assert_eq!(last, bmap.mapped_bytes());
            let kept = checked.kept_bytes();
            let len = |i: usize| bmap.ranges[i].end - bmap.ranges[i].start;
            let want = match budget {
                0 => 0,
                u64::MAX => bmap.mapped_bytes(),
                _ => len(0) + len(1),
            };
            assert_eq!(kept, want, "budget {budget}");
            let dest = Mutex::new(vec![0u8; img.len()]);
            let n = write(img.as_slice(), &dest, &bmap, &checked, &mut |b| last = b).unwrap();
            assert_eq!((n, last), (bmap.mapped_bytes(), n));
            let out = dest.lock().unwrap().clone();
            for (i, (a, b)) in img.iter().zip(out.iter()).enumerate() {
                let mapped = bmap
                    .ranges
                    .iter()
                    .any(|r| (r.start..r.end).contains(&(i as u64)));
                assert_eq!(*b, if mapped { *a } else { 0 }, "byte {i}");
            }
            read_back(&dest, &bmap, &checked, &mut |_| {}).unwrap();

            // A flipped byte on the device is named by its range: byte for
            // byte where the range was kept, by sha256 where it was not.
            dest.lock().unwrap()[CHUNK + 5] ^= 0xff;
            let e = err(read_back(&dest, &bmap, &checked, &mut |_| {}));
            if budget == 0 {
                assert!(e.starts_with("read-back: blocks 2-"), "{e}");
                assert!(e.contains("have sha256"), "{e}");
            } else {
                let want = format!(
                    "read-back: blocks 2-{} (bmap line 11): byte {} reads",
                    (CHUNK as u64 + 9000).div_ceil(4096) - 1,
                    CHUNK + 5
                );
                assert!(e.starts_with(&want), "{e}");
            }
        }
    }

    #[test]
    fn what_is_written_is_what_was_checked_and_a_later_change_fails_the_write() {
        let (mut img, bmap) = three_ranges();
        let clean = img.clone();
        // Kept: range 1 and 2; range 3 is read again when written.
        let checked = check(img.as_slice(), &bmap, 2 * CHUNK as u64, &mut |_| {}).unwrap();
        assert_eq!(
            checked.kept_bytes(),
            bmap.ranges[0].end - bmap.ranges[0].start + bmap.ranges[1].end - bmap.ranges[1].start
        );
        // The image changes after the check, in a kept range: the device
        // still gets the checked bytes.
        img[8192 + 3] ^= 1;
        let dest = Mutex::new(vec![0u8; img.len()]);
        write(img.as_slice(), &dest, &bmap, &checked, &mut |_| {}).unwrap();
        assert_eq!(dest.lock().unwrap()[8192 + 3], clean[8192 + 3]);
        read_back(&dest, &bmap, &checked, &mut |_| {}).unwrap();
        // In a range read again: the write fails at that range's end.
        img[2 * CHUNK + 10] ^= 1;
        let e = err(write(img.as_slice(), &dest, &bmap, &checked, &mut |_| {}));
        assert!(
            e.starts_with(&format!("image: blocks {}-", 2 * CHUNK / 4096)),
            "{e}"
        );
        // And the check itself names a changed range.
        img[8192 + 3] ^= 1;
        let e = err(check(img.as_slice(), &bmap, u64::MAX, &mut |_| {}));
        assert!(
            e.starts_with(&format!("image: blocks {}-", 2 * CHUNK / 4096)),
            "{e}"
        );
        assert!(e.contains("the bmap (line 12) says"), "{e}");
    }

    #[test]
    fn of_several_errors_the_first_on_the_device_is_reported_and_short_devices_fail() {
        let (mut img, bmap) = setup(10 * 4096, &[(0, 4096), (5 * 4096, 6 * 4096)]);
        img[5 * 4096 + 3] ^= 1;
        img[3] ^= 1;
        let e = err(check(img.as_slice(), &bmap, 0, &mut |_| {}));
        assert!(e.starts_with("image: blocks 0-0 (bytes 0..4096)"), "{e}");
        img[3] ^= 1;
        let e = err(check(img.as_slice(), &bmap, 0, &mut |_| {}));
        assert!(
            e.starts_with("image: blocks 5-5 (bytes 20480..24576) have sha256"),
            "{e}"
        );
        assert!(e.contains("the bmap (line 11) says"), "{e}");

        // A file works as well as memory; a device cut short fails.
        img[5 * 4096 + 3] ^= 1;
        let f = tempfile::tempfile().unwrap();
        let checked = check(img.as_slice(), &bmap, 4096, &mut |_| {}).unwrap();
        f.set_len(img.len() as u64).unwrap();
        write(img.as_slice(), &f, &bmap, &checked, &mut |_| {}).unwrap();
        read_back(&f, &bmap, &checked, &mut |_| {}).unwrap();
        f.set_len(4096).unwrap();
        let e = err(read_back(&f, &bmap, &checked, &mut |_| {}));
        assert!(e.contains("read-back: read bytes 20480..24576"), "{e}");
        // A device too small for a write.
        let small = Mutex::new(vec![0u8; 8192]);
        let e = err(write(img.as_slice(), &small, &bmap, &checked, &mut |_| {}));
        assert!(e.contains("device: write bytes 20480..24576"), "{e}");
    }

    #[test]
    fn keeping_is_charged_with_its_alignment_slack() {
        // Ten one-block ranges; each kept block costs itself and ALIGN.
        let mapped: Vec<(u64, u64)> = (0..10).map(|i| (i * 8192, i * 8192 + 4096)).collect();
        let (img, bmap) = setup(20 * 4096, &mapped);
        let checked = check(
            img.as_slice(),
            &bmap,
            5 * (4096 + ALIGN as u64),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(checked.kept_bytes(), 5 * 4096);
    }

    #[test]
    fn aligned_buffers_are_aligned() {
        for n in [0, 1, 4095, 4096, CHUNK] {
            let mut b = Aligned::new(n);
            assert_eq!(b.bytes().len(), n);
            assert_eq!(b.bytes_mut().as_ptr() as usize % ALIGN, 0);
        }
    }
}
