//! A bounded byte window over a larger seekable stream.
//!
//! The ESP is formatted directly inside the disk image file rather than in
//! a temporary file that is copied afterwards: that saves a copy and keeps
//! the image sparse. `fatfs` assumes it owns the whole stream starting at
//! offset 0, so [`Window`] re-bases offsets onto the partition and, just as
//! importantly, refuses any write that would cross the end of the range.
//! A bug in a filesystem encoder must never silently overwrite the next
//! partition (for example a verity hash tree), so overruns are hard errors
//! instead of short writes that a careless caller might ignore.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Read + Write + Seek view of the byte range `[offset, offset + len)` of
/// an inner stream.
///
/// Positions seen through the window are relative to `offset`. Reads stop
/// at the end of the window (returning 0, i.e. end of file); writes that
/// would extend past it fail with [`io::ErrorKind::WriteZero`] and write
/// nothing.
#[derive(Debug)]
pub struct Window<F> {
    inner: F,
    offset: u64,
    len: u64,
    pos: u64,
}

impl<F> Window<F> {
    /// Wraps `inner`, exposing `len` bytes starting at byte `offset`.
    ///
    /// Nothing is read or checked here: the inner stream may be shorter
    /// than `offset + len` (reads then end early, writes extend it, as for
    /// any file), which lets callers window a not-yet-sized image.
    pub fn new(inner: F, offset: u64, len: u64) -> Self {
        Window {
            inner,
            offset,
            len,
            pos: 0,
        }
    }

    /// Length of the window in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if the window covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Returns the inner stream; its position is unspecified.
    pub fn into_inner(self) -> F {
        self.inner
    }

    /// Bytes left between the current position and the end of the window.
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    /// Absolute position in the inner stream for the current position.
    fn absolute(&self) -> io::Result<u64> {
        self.offset.checked_add(self.pos).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "window position overflows u64")
        })
    }
}

impl<F: Read + Seek> Read for Window<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.remaining())
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        // Seek on every call: the inner stream may be shared conceptually
        // with other windows of the same image, and an lseek is cheap.
        let abs = self.absolute()?;
        self.inner.seek(SeekFrom::Start(abs))?;
        let n = self.inner.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<F: Write + Seek> Write for Window<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if buf.len() as u64 > self.remaining() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "write of {} bytes at window offset {} would pass the window end {}",
                    buf.len(),
                    self.pos,
                    self.len
                ),
            ));
        }
        let abs = self.absolute()?;
        self.inner.seek(SeekFrom::Start(abs))?;
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<F> Seek for Window<F> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        // Seeking past the end is allowed, as for files; only I/O there is
        // refused (reads see EOF, writes fail).
        let new = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing window position",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn backing() -> Cursor<Vec<u8>> {
        Cursor::new((0u8..32).collect())
    }

    #[test]
    fn reads_only_inside_the_window() {
        let mut w = Window::new(backing(), 8, 4);
        let mut out = Vec::new();
        w.read_to_end(&mut out).unwrap();
        assert_eq!(out, vec![8, 9, 10, 11]);
        assert_eq!(w.seek(SeekFrom::End(-1)).unwrap(), 3);
        let mut one = [0u8; 4];
        assert_eq!(w.read(&mut one).unwrap(), 1);
        assert_eq!(one[0], 11);
        assert_eq!(w.read(&mut one).unwrap(), 0);
    }

    #[test]
    fn writes_stay_inside_the_window() {
        let mut w = Window::new(backing(), 8, 4);
        w.write_all(&[0xAA, 0xBB]).unwrap();
        w.seek(SeekFrom::Current(1)).unwrap();
        // One byte fits, two do not: the whole write is refused.
        let err = w.write(&[1, 2]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        w.write_all(&[0xCC]).unwrap();
        assert!(w.write_all(&[0xDD]).is_err());
        w.seek(SeekFrom::Start(100)).unwrap();
        assert!(w.write(&[1]).is_err());
        let inner = w.into_inner().into_inner();
        assert_eq!(&inner[6..14], &[6, 7, 0xAA, 0xBB, 10, 0xCC, 12, 13]);
        assert_eq!(inner.len(), 32);
    }

    #[test]
    fn negative_seek_is_an_error() {
        let mut w = Window::new(backing(), 8, 4);
        assert!(w.seek(SeekFrom::Current(-1)).is_err());
        assert!(w.seek(SeekFrom::End(-5)).is_err());
        assert_eq!(w.seek(SeekFrom::End(0)).unwrap(), 4);
    }
}
