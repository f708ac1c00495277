//! Deterministic tar export (the input of `tar2sqfs`).
//!
//! The stream depends only on the tree: entries in sorted path order, the
//! root first as `./` (tar2sqfs then takes the root inode's metadata from
//! it and strips the `./` prefix from every path and hardlink target),
//! names as `./etc/passwd` (directories `./etc/`), numeric ids with empty
//! user/group names, and no host-dependent fields (no atime/ctime, no
//! device/inode numbers of the build host). POSIX ustar headers carry
//! everything that fits; PAX records carry the rest: paths and link targets
//! over 100 bytes, ids and times out of ustar range, and xattrs as
//! `SCHILY.xattr.<name>` (binary-safe, since PAX records are length
//! prefixed). tar wants a hardlink's target earlier in the stream, so each
//! hardlink group's body goes to its first path in sorted order.
//!
//! Contents are streamed through a fixed buffer from files opened with
//! O_NOFOLLOW, and exactly the recorded size must be read: a file that
//! grew or shrank since import is an error, because a silently short or
//! long body would corrupt the archive or the image.

use std::io::{BufWriter, Write};

use anyhow::{anyhow, bail, Context, Result};

use crate::limits::{self, Target};
use crate::overlay::stream_exact;
use crate::path::RelPath;
use crate::tree::{Content, Kind, Meta, Tree};

const BLOCK: usize = 512;
/// Largest value of an 8-byte octal ustar field (7 digits + NUL).
const MAX_OCTAL_7: u64 = 0o7777777;
/// Largest value of a 12-byte octal ustar field (11 digits + NUL).
const MAX_OCTAL_11: u64 = 0o77777777777;

/// Writes `tree` as a tar stream to `out` and returns `out` (flushed).
/// `progress(bytes)` gets the running number of bytes written after each
/// entry.
///
/// The stream is what `tar2sqfs` reads, so the tree must first pass the
/// squashfs limits ([`limits::check_tree`]): `tar2sqfs` itself drops
/// unknown xattr namespaces with a warning and truncates device numbers.
pub fn write_tar<W: Write>(tree: &Tree, out: W, progress: &mut dyn FnMut(u64)) -> Result<W> {
    limits::check_tree(tree, Target::Squashfs)
        .context("the rootfs cannot be stored in squashfs")?;
    let mut w = Counting {
        inner: BufWriter::with_capacity(256 * 1024, out),
        written: 0,
    };
    let leaders = tree.hardlink_leaders();
    let mut buf = vec![0u8; 128 * 1024];

    for (path, node) in tree.iter() {
        let entry = || format!("exporting {path}");
        // Resolve hardlink groups: (body to write, meta, or link target).
        let (kind, meta): (&Kind, &Meta) = match &node.kind {
            Kind::Hardlink { target } => {
                let file = tree
                    .get(target)
                    .filter(|n| matches!(n.kind, Kind::File { .. }))
                    .ok_or_else(|| anyhow!("hardlink target {target} is not a regular file"))
                    .with_context(entry)?;
                (&file.kind, &file.meta)
            }
            k => (k, &node.meta),
        };
        let file_id = match &node.kind {
            Kind::Hardlink { target } => Some(target),
            Kind::File { .. } => Some(path),
            _ => None,
        };
        let link_to = file_id
            .and_then(|f| leaders.get(f))
            .filter(|leader| *leader != path);

        let mut h = EntryHeader::new(path, meta);
        let mut body: Option<(&Content, u64)> = None;
        match (kind, link_to) {
            (Kind::File { .. }, Some(leader)) => {
                h.typeflag = b'1';
                h.link = Some(tar_name(leader, false));
            }
            (Kind::File { content, size }, None) => {
                h.typeflag = b'0';
                h.size = *size;
                body = Some((content, *size));
            }
            (Kind::Dir, _) => {
                h.typeflag = b'5';
                h.name = tar_name(path, true);
            }
            (Kind::Symlink { target }, _) => {
                h.typeflag = b'2';
                h.link = Some(target.clone());
            }
            (Kind::CharDev { major, minor }, _) => {
                h.typeflag = b'3';
                h.dev = (*major, *minor);
            }
            (Kind::BlockDev { major, minor }, _) => {
                h.typeflag = b'4';
                h.dev = (*major, *minor);
            }
            (Kind::Fifo, _) => h.typeflag = b'6',
            (Kind::Hardlink { .. }, _) => bail!("exporting {path}: hardlink to a hardlink"),
        }
        h.write(&mut w).with_context(entry)?;
        if let Some((content, size)) = body {
            copy_content(content, size, &mut w, &mut buf).with_context(entry)?;
        }
        progress(w.written);
    }
    w.write_all(&[0u8; 2 * BLOCK])
        .context("writing the tar trailer")?;
    w.flush().context("flushing the tar stream")?;
    let Counting { inner, .. } = w;
    inner
        .into_inner()
        .map_err(|e| anyhow!("flushing the tar stream: {}", e.error()))
}

/// `./` for the root, `./etc/` for directories, `./etc/passwd` otherwise.
fn tar_name(path: &RelPath, dir: bool) -> String {
    if path.is_root() {
        "./".to_string()
    } else if dir {
        format!("./{}/", path.as_str())
    } else {
        format!("./{}", path.as_str())
    }
}

struct EntryHeader {
    name: String,
    typeflag: u8,
    link: Option<String>,
    size: u64,
    dev: (u32, u32),
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl EntryHeader {
    fn new(path: &RelPath, meta: &Meta) -> EntryHeader {
        EntryHeader {
            name: tar_name(path, false),
            typeflag: b'0',
            link: None,
            size: 0,
            dev: (0, 0),
            mode: meta.mode & 0o7777,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            xattrs: meta
                .xattrs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Writes an optional PAX header followed by the ustar header.
    fn write(&self, w: &mut impl Write) -> Result<()> {
        let mut pax = Vec::new();
        if self.name.len() > 100 {
            pax_record(&mut pax, "path", self.name.as_bytes());
        }
        if let Some(link) = &self.link {
            if link.len() > 100 {
                pax_record(&mut pax, "linkpath", link.as_bytes());
            }
        }
        if u64::from(self.uid) > MAX_OCTAL_7 {
            pax_record(&mut pax, "uid", self.uid.to_string().as_bytes());
        }
        if u64::from(self.gid) > MAX_OCTAL_7 {
            pax_record(&mut pax, "gid", self.gid.to_string().as_bytes());
        }
        let mtime_fits = u64::try_from(self.mtime).is_ok_and(|t| t <= MAX_OCTAL_11);
        if !mtime_fits {
            pax_record(&mut pax, "mtime", self.mtime.to_string().as_bytes());
        }
        if self.size > MAX_OCTAL_11 {
            pax_record(&mut pax, "size", self.size.to_string().as_bytes());
        }
        if u64::from(self.dev.0) > MAX_OCTAL_7 || u64::from(self.dev.1) > MAX_OCTAL_7 {
            bail!(
                "device numbers {}:{} do not fit in a tar header",
                self.dev.0,
                self.dev.1
            );
        }
        for (k, v) in &self.xattrs {
            if k.contains('=') || k.contains('\0') {
                bail!("xattr name {k:?} cannot be stored in a PAX record");
            }
            pax_record(&mut pax, &format!("SCHILY.xattr.{k}"), v);
        }

        if !pax.is_empty() {
            let mut ph = ustar();
            put_str(&mut ph.as_old_mut().name, "././@PaxHeader");
            ph.set_mode(0o644);
            ph.set_uid(0);
            ph.set_gid(0);
            ph.set_mtime(0);
            ph.set_size(pax.len() as u64);
            ph.set_entry_type(tar::EntryType::XHeader);
            ph.set_cksum();
            w.write_all(ph.as_bytes())?;
            w.write_all(&pax)?;
            pad(w, pax.len() as u64)?;
        }

        let mut h = ustar();
        put_str(&mut h.as_old_mut().name, &self.name);
        if let Some(link) = &self.link {
            put_str(&mut h.as_old_mut().linkname, link);
        }
        h.set_mode(self.mode);
        h.set_uid(if u64::from(self.uid) > MAX_OCTAL_7 {
            0
        } else {
            u64::from(self.uid)
        });
        h.set_gid(if u64::from(self.gid) > MAX_OCTAL_7 {
            0
        } else {
            u64::from(self.gid)
        });
        h.set_mtime(if mtime_fits { self.mtime as u64 } else { 0 });
        h.set_size(if self.size > MAX_OCTAL_11 {
            0
        } else {
            self.size
        });
        h.set_entry_type(tar::EntryType::new(self.typeflag));
        if matches!(self.typeflag, b'3' | b'4') {
            h.set_device_major(self.dev.0)?;
            h.set_device_minor(self.dev.1)?;
        }
        h.set_cksum();
        w.write_all(h.as_bytes())?;
        Ok(())
    }
}

/// A POSIX ustar header with every field zeroed except magic/version and
/// zero device numbers, so no field ever carries leftover or host data.
fn ustar() -> tar::Header {
    let mut h = tar::Header::new_ustar();
    // Devices are written as 0 for non-device entries, like GNU tar.
    let _ = h.set_device_major(0);
    let _ = h.set_device_minor(0);
    h
}

/// Copies `s` into a fixed-size header field, truncating at a character
/// boundary (only used when a PAX record carries the full value).
fn put_str(field: &mut [u8], s: &str) {
    let mut end = s.len().min(field.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    field.fill(0);
    field[..end].copy_from_slice(&s.as_bytes()[..end]);
}

/// Appends one PAX record `"<len> <key>=<value>\n"`, where `<len>` counts
/// the whole record including its own digits.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn pad(w: &mut impl Write, len: u64) -> std::io::Result<()> {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        w.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

/// Streams exactly `size` bytes of `content` and pads to a block.
fn copy_content(content: &Content, size: u64, w: &mut impl Write, buf: &mut [u8]) -> Result<()> {
    stream_exact(content, size, w, buf)?;
    pad(w, size).context("writing the tar stream")?;
    Ok(())
}

/// A writer that counts bytes for progress reports.
struct Counting<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
