//! Size, sha256 and cpio checksum of a byte stream, computed in one read.
//!
//! Every payload of a `.swu` needs all three: the size and the cpio
//! `check` go into its member header, the sha256 into the signed
//! `sw-description`. The build also needs the sha256 of most artifacts
//! for `SHA256SUMS` and the build record. Computing them together, from
//! the same buffer, means each byte is read once: [`Digests::of_file`]
//! when the file already exists, [`DigestWriter`] (or [`Digester`] fed by
//! hand) when our own code produces the bytes, so the digests come for
//! free while the artifact is written.
//!
//! [`Stamp`] records which version of a file a set of digests describes
//! (device, inode, size, mtime and ctime), so the `.swu` writer can copy a
//! file digested earlier without hashing it again; see [`Stamp`] for what
//! that detects and what it cannot.

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::{File, Metadata};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::cpio::byte_sum;

/// Read size for digesting and copying payloads. Measured on the bench
/// machine (AMD EPYC, SHA-NI): 1 MiB and 4 MiB reads are equally fast and
/// 256 KiB ones about 5% slower (more syscalls); a 1 MiB buffer still sits
/// mostly in L2, so sha256 and the byte sum read it from cache.
pub const READ_BUF: usize = 1 << 20;

/// What a payload needs, all from one read of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digests {
    /// Number of bytes.
    pub size: u64,
    /// sha256 of the bytes.
    pub sha256: [u8; 32],
    /// cpio `070702` check: the sum of all bytes modulo 2^32.
    pub cpio_sum: u32,
}

impl Digests {
    /// Digests of bytes in memory.
    pub fn of_bytes(data: &[u8]) -> Digests {
        let mut d = Digester::new();
        d.update(data);
        d.finish()
    }

    /// Reads `reader` to its end once.
    pub fn of_reader(mut reader: impl Read) -> io::Result<Digests> {
        let mut buf = vec![0u8; READ_BUF];
        let mut d = Digester::new();
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(d.finish()),
                Ok(n) => d.update(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the file at `path` once.
    pub fn of_file(path: &Path) -> Result<Digests> {
        Ok(Self::of_file_stamped(path)?.0)
    }

    /// [`Digests::of_file`], also returning the [`Stamp`] of the version
    /// that was read. Fails if the file changed while it was being read
    /// (its stamp before and after differ, or its size disagrees with what
    /// was read), since the digests would then describe no version at all.
    pub fn of_file_stamped(path: &Path) -> Result<(Digests, Stamp)> {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let before = Stamp::of_file(&f, path)?;
        ensure!(
            before.is_regular,
            "{} is not a regular file",
            path.display()
        );
        let d = Digests::of_reader(&f).with_context(|| format!("reading {}", path.display()))?;
        let after = Stamp::of_file(&f, path)?;
        ensure!(
            before == after && d.size == after.size,
            "{} changed while it was being hashed ({} bytes read, {} before, {} after)",
            path.display(),
            d.size,
            before.size,
            after.size
        );
        Ok((d, after))
    }

    /// The sha256 as lowercase hex, as `SHA256SUMS` and `sw-description`
    /// spell it.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Incremental [`Digests`]: feed it every byte in order with
/// [`Digester::update`]. For code that already holds the bytes in a
/// buffer for another reason (a verity tree, a compressor), so one read
/// serves both.
#[derive(Clone, Default)]
pub struct Digester {
    sha: Sha256,
    sum: u32,
    size: u64,
}

impl Digester {
    pub fn new() -> Digester {
        Digester::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.sum = self.sum.wrapping_add(byte_sum(data));
        self.size += data.len() as u64;
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(self) -> Digests {
        Digests {
            size: self.size,
            sha256: self.sha.finalize().into(),
            cpio_sum: self.sum,
        }
    }
}

/// A writer that digests exactly the bytes its inner writer accepted.
///
/// Wrap the file an artifact is written to (under any buffering: put the
/// `BufWriter` inside, so the digest sees the bytes once, in order), then
/// [`DigestWriter::finish`] returns the writer and the digests.
pub struct DigestWriter<W> {
    inner: W,
    digester: Digester,
}

impl<W: Write> DigestWriter<W> {
    pub fn new(inner: W) -> DigestWriter<W> {
        DigestWriter {
            inner,
            digester: Digester::new(),
        }
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.digester.size()
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Flushes and returns the inner writer with the digests of everything
    /// written through this one.
    pub fn finish(mut self) -> io::Result<(W, Digests)> {
        self.inner.flush()?;
        Ok((self.inner, self.digester.finish()))
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Only what the inner writer took: a short write is retried by
        // the caller with the rest, which is digested then.
        self.digester.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Which version of a file a set of [`Digests`] describes: device, inode,
/// size, and modification and change times to the nanosecond.
///
/// Comparing stamps is how the `.swu` writer trusts digests computed
/// earlier without reading the file twice. Any write through the file
/// system updates mtime and ctime, and ctime cannot be set back from user
/// space, so a rewrite, truncation, append, `touch`, `chmod`, or a
/// replacement by another file (new inode) changes the stamp. What a stamp
/// cannot see: on file systems without fine-grained ("multigrain", Linux
/// 6.13+ on ext4, xfs, btrfs, tmpfs) timestamps, a second write within the
/// same clock tick (a few milliseconds) as the write that preceded the
/// stamp leaves mtime and ctime unchanged, and writes through a shared
/// `mmap` update them late. The writer therefore also sums the bytes it
/// copies (the cpio check costs about 5% of a sha256 pass) and errors if
/// they disagree with the recorded check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub is_regular: bool,
}

impl Stamp {
    pub fn of_metadata(m: &Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            is_regular: m.file_type().is_file(),
        }
    }

    /// The stamp of the file at `path` now (following symlinks, as opening
    /// it would).
    pub fn of_path(path: &Path) -> Result<Stamp> {
        let m = std::fs::metadata(path)
            .with_context(|| format!("reading metadata of {}", path.display()))?;
        Ok(Stamp::of_metadata(&m))
    }

    /// The stamp of an open file (`path` only names it in errors).
    pub fn of_file(f: &File, path: &Path) -> Result<Stamp> {
        let m = f
            .metadata()
            .with_context(|| format!("reading metadata of {}", path.display()))?;
        Ok(Stamp::of_metadata(&m))
    }

    /// What differs from `earlier`, for error messages.
    pub fn describe_change(&self, earlier: &Stamp) -> String {
        let mut what = Vec::new();
        if (self.dev, self.ino) != (earlier.dev, earlier.ino) {
            what.push("replaced by another file".to_string());
        }
        if self.size != earlier.size {
            what.push(format!("size {} -> {}", earlier.size, self.size));
        }
        if self.mtime != earlier.mtime {
            what.push("modification time".to_string());
        }
        if self.ctime != earlier.ctime {
            what.push("change time".to_string());
        }
        if what.is_empty() {
            "nothing".into()
        } else {
            what.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn naive(d: &[u8]) -> Digests {
        Digests {
            size: d.len() as u64,
            sha256: Sha256::digest(d).into(),
            cpio_sum: d.iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b))),
        }
    }

    /// A reader that hands out at most `step` bytes per call and is
    /// interrupted every other call, like a pipe under signals.
    struct Dribble<'a> {
        data: &'a [u8],
        step: usize,
        calls: usize,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(ErrorKind::Interrupted.into());
            }
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// A writer that accepts at most 7 bytes per call.
    struct Short(Vec<u8>);

    impl Write for Short {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_way_in_agrees_with_sha2_and_the_naive_sum() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0,
            1,
            4095,
            READ_BUF - 1,
            READ_BUF,
            READ_BUF + 1,
            3 * READ_BUF + 17,
        ] {
            let d = data(len, len as u64 + 1);
            let want = naive(&d);
            assert_eq!(Digests::of_bytes(&d), want, "of_bytes {len}");
            let r = Digests::of_reader(Dribble {
                data: &d,
                step: 4093,
                calls: 0,
            })
            .unwrap();
            assert_eq!(r, want, "of_reader {len}");
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &d).unwrap();
            let (f, stamp) = Digests::of_file_stamped(&path).unwrap();
            assert_eq!(f, want, "of_file {len}");
            assert_eq!(stamp, Stamp::of_path(&path).unwrap());
            let mut w = DigestWriter::new(Short(Vec::new()));
            for piece in d.chunks(1000) {
                w.write_all(piece).unwrap();
            }
            let (inner, got) = w.finish().unwrap();
            assert_eq!(inner.0, d);
            assert_eq!(got, want, "DigestWriter {len}");
        }
        // Wrapping of the 32-bit sum: 17 MiB of 0xff sums past 2^32.
        let ff = vec![0xffu8; 17 << 20];
        assert_eq!(Digests::of_bytes(&ff), naive(&ff));
        assert_eq!(
            Digests::of_bytes(b"abc").sha256_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn of_file_refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = Digests::of_file(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("is not a regular file"), "{e:#}");
        let e = Digests::of_file(&dir.path().join("missing")).unwrap_err();
        assert!(format!("{e:#}").contains("opening "), "{e:#}");
    }

    #[test]
    fn stamps_see_rewrites_touches_and_replacements() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"one").unwrap();
        let s0 = Stamp::of_path(&p).unwrap();
        assert_eq!(s0.describe_change(&s0), "nothing");
        // Past one coarse clock tick, so this holds without fine-grained
        // timestamps too (see the type's docs for the window below it).
        let tick = || std::thread::sleep(std::time::Duration::from_millis(20));
        tick();
        // Same length, new bytes: only the times tell.
        std::fs::write(&p, b"two").unwrap();
        let s1 = Stamp::of_path(&p).unwrap();
        assert_eq!(
            s1.describe_change(&s0),
            "modification time, change time",
            "a rewrite must change the stamp"
        );
        tick();
        let perm = std::fs::metadata(&p).unwrap().permissions();
        std::fs::set_permissions(&p, perm).unwrap();
        let s2 = Stamp::of_path(&p).unwrap();
        assert_eq!(s2.describe_change(&s1), "change time");
        std::fs::write(dir.path().join("g"), b"three").unwrap();
        std::fs::rename(dir.path().join("g"), &p).unwrap();
        let s3 = Stamp::of_path(&p).unwrap();
        assert!(
            s3.describe_change(&s2)
                .starts_with("replaced by another file, size 3 -> 5"),
            "{}",
            s3.describe_change(&s2)
        );
    }
}
