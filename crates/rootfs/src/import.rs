//! Importing a base rootfs into the tree model.
//!
//! A base rootfs is typically root-owned (a distribution tarball, a Yocto
//! `IMAGE_ROOTFS`) while the build runs unprivileged, so nothing is ever
//! extracted onto the host: tar headers and `lstat` results become [`Meta`]
//! in the [`Tree`], and only regular-file bytes touch the disk — streamed
//! into numbered files in our content store (tarballs) or referenced in
//! place (directories).
//!
//! Security model for tarballs: the archive is hostile data. Paths go
//! through [`RelPath::parse`] (no `..`, no absolute escapes), symlink targets
//! are kept as opaque strings and never resolved, hardlink targets must be
//! files already in the archive, and [`Tree::insert`] refuses entries below
//! a symlink and anything no image could hold ([`crate::limits`]). Every
//! number in a header or an extension record is parsed with checked
//! arithmetic ([`crate::tar_fields`]). The only files this module creates are
//! `store_dir/<n>`, with names we choose, `O_CREAT|O_EXCL|O_NOFOLLOW`, mode
//! 0600. The `tar` crate is used in raw mode purely as a header splitter;
//! its unpack functions are never called, and extension headers (PAX, GNU
//! long names) are decoded here with a size cap so a crafted header cannot
//! exhaust memory. Errors name the archive and the entry, escaped.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rustix::io::Errno;
use slotsmith_yaml::escape::{shown, shown_bytes, shown_path};

use crate::limits::{shown_entry, MAX_DEPTH};
use crate::path::RelPath;
use crate::tar_fields::{
    base64_decode, header_i64, header_u32, header_u64, parse_pax, pax_time, pax_uint,
    percent_decode, shown_value,
};
use crate::tree::{Content, Kind, Meta, Node, Tree};

/// Largest PAX / GNU long-name extension header we accept. Real ones are a
/// few hundred bytes; xattr values are capped at 64 KiB by Linux.
const MAX_EXTENSION_HEADER: u64 = 1 << 20;

/// Memory the xz decoder may use. Its dictionary is sized by the stream
/// header, so a 100-byte hostile .xz could otherwise ask for 1.5 GiB;
/// `xz -9e` archives need 65 MiB.
const MAX_XZ_MEMORY: u64 = 256 << 20;

/// Linux's XATTR_LIST_MAX and XATTR_SIZE_MAX: the kernel never returns
/// more, so fixed buffers of this size always suffice.
const XATTR_BUF: usize = 64 * 1024;

/// Whose ownership a directory import records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Record the owners `lstat` reports.
    Preserve,
    /// Record uid = gid = 0 for every entry: the directory was produced by
    /// the (unprivileged) builder, e.g. a Yocto `IMAGE_ROOTFS`, so its real
    /// owners are meaningless inside the image.
    Root,
}

/// Imports a tarball (plain, gzip, xz, zstd or bzip2; detected by magic
/// bytes). Regular-file contents are streamed into `store_dir` (created if
/// missing); everything else lives only in the returned tree.
///
/// `progress(entries, bytes)` is called after every entry with the running
/// entry count and the running total of file-content bytes stored.
pub fn from_tarball(
    archive: &Path,
    store_dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Tree> {
    let name = shown_path(archive);
    // The archive path itself is the user's argument, so opening it
    // normally (following symlinks) is intended.
    let mut file =
        File::open(archive).with_context(|| format!("tarball {name}: opening the archive"))?;
    if is_plain_tar(&mut file).with_context(|| format!("tarball {name}: reading the archive"))? {
        // Uncompressed (the Debian base cache is): file bodies stay in the
        // archive and are read in place, so the import reads headers only.
        return import_plain(&name, archive, file, store_dir, progress);
    }
    from_reader(&name, file, store_dir, progress)
}

/// Whether `file` starts with no compression magic (it is then read as a
/// plain tar); leaves it at its start.
fn is_plain_tar(file: &mut File) -> io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        match file.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    file.seek(SeekFrom::Start(0))?;
    let head = &magic[..n];
    let compressed = head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(b"BZh");
    Ok(!compressed)
}

/// A plain tar on disk: entries walked with seeks over the bodies, which
/// become [`Content::Slice`]s of the archive.
fn import_plain(
    name: &str,
    archive: &Path,
    file: File,
    store_dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Tree> {
    fs::create_dir_all(store_dir)
        .with_context(|| format!("creating content store {}", shown_path(store_dir)))?;
    let len = file
        .metadata()
        .with_context(|| format!("tarball {name}: stat"))?
        .len();
    let mut ar = tar::Archive::new(BufReader::with_capacity(64 * 1024, file));
    let entries = ar
        .entries_with_seek()
        .map_err(escaped)
        .with_context(|| format!("tarball {name}: reading the archive"))?
        .raw(true);
    let in_place = InPlace {
        archive: archive.to_path_buf(),
        len,
    };
    import_entries(name, entries, store_dir, Some(&in_place), progress)
}

/// Where an in-place import's bodies are.
struct InPlace {
    archive: std::path::PathBuf,
    len: u64,
}

/// [`from_tarball`] on a stream; `name` (already escaped) names it in
/// errors. This is also the fuzzing entry point.
pub fn from_reader(
    name: &str,
    reader: impl Read,
    store_dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Tree> {
    let reader = decompressed(reader).with_context(|| format!("tarball {name}"))?;
    fs::create_dir_all(store_dir)
        .with_context(|| format!("creating content store {}", shown_path(store_dir)))?;
    let mut ar = tar::Archive::new(reader);
    // Raw mode: we see PAX and GNU extension headers ourselves, so we can cap
    // their size and parse binary PAX values correctly.
    let entries = ar
        .entries()
        .map_err(escaped)
        .with_context(|| format!("tarball {name}: reading the archive"))?
        .raw(true);
    import_entries(name, entries, store_dir, None, progress)
}

/// The entry loop of every tarball import: file bodies go to the store, or
/// stay in the archive (`in_place`).
fn import_entries<R: Read>(
    name: &str,
    entries: tar::Entries<'_, R>,
    store_dir: &Path,
    in_place: Option<&InPlace>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Tree> {
    let mut tree = Tree::new(Meta::new(0o755, 0, 0, 0));
    let mut pending = Extensions::default();
    let mut store = Store {
        dir: store_dir,
        next: 0,
    };
    let (mut count, mut bytes) = (0u64, 0u64);

    for entry in entries {
        let after = || format!("tarball {name}: reading the header {}", pending.position());
        let mut entry = entry.map_err(escaped).with_context(after)?;
        let ty = entry.header().entry_type().as_byte();
        if matches!(ty, b'L' | b'K' | b'x' | b'g') {
            let ctx = format!("tarball {name}: extension header {}", pending.position());
            let data = read_extension(&mut entry).context(ctx.clone())?;
            pending.absorb(ty, data).context(ctx)?;
            continue;
        }
        let ext = std::mem::take(&mut pending);
        let raw_path = ext.path_bytes(&entry);
        let entry_name = crate::limits::shorten(&shown_bytes(&raw_path));
        let added = import_entry(&mut tree, &mut store, &mut entry, &ext, &raw_path, in_place)
            .with_context(|| format!("tarball {name}: entry {entry_name}"))?;
        bytes = bytes.saturating_add(added);
        count += 1;
        pending.last_path = entry_name;
        progress(count, bytes);
    }
    if pending.has_any() {
        bail!("tarball {name}: archive ends with extension headers that describe no entry");
    }
    Ok(tree)
}

/// Wraps `input` in the streaming decoder its magic bytes call for.
fn decompressed<'a>(mut input: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        match input.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the archive"),
        }
    }
    let head = &magic[..n];
    let stream = io::Cursor::new(head.to_vec()).chain(input);
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(stream)))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        let decoder = liblzma::stream::Stream::new_stream_decoder(
            MAX_XZ_MEMORY,
            liblzma::stream::CONCATENATED,
        )
        .context("starting the xz decoder")?;
        Box::new(liblzma::read::XzDecoder::new_stream(stream, decoder))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(stream).context("starting the zstd decoder")?)
    } else if head.starts_with(b"BZh") {
        Box::new(bzip2::read::MultiBzDecoder::new(stream))
    } else {
        Box::new(BufReader::with_capacity(64 * 1024, stream))
    })
}

/// An error from the tar crate or a decompressor, whose message may quote
/// header bytes (the tar crate names the entry in checksum and number
/// errors): escaped like any other archive data.
fn escaped(e: io::Error) -> anyhow::Error {
    anyhow!("{}", shown(&e.to_string()))
}

/// Reads an extension header's body, refusing oversized ones before
/// buffering them.
fn read_extension(entry: &mut impl Read) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    entry
        .take(MAX_EXTENSION_HEADER + 1)
        .read_to_end(&mut data)
        .map_err(escaped)
        .context("reading the extension data")?;
    if data.len() as u64 > MAX_EXTENSION_HEADER {
        bail!("extension header is larger than {MAX_EXTENSION_HEADER} bytes");
    }
    Ok(data)
}

/// Extension data that applies to the next real entry.
#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<(String, Vec<u8>)>>,
    /// For error messages only: the previous real entry's path, escaped.
    last_path: String,
}

impl Extensions {
    /// Where in the archive we are, for messages.
    fn position(&self) -> String {
        if self.last_path.is_empty() {
            "before the first entry".to_string()
        } else {
            format!("after entry {}", self.last_path)
        }
    }

    fn has_any(&self) -> bool {
        self.long_name.is_some() || self.long_link.is_some() || self.pax.is_some()
    }

    fn absorb(&mut self, ty: u8, data: Vec<u8>) -> Result<()> {
        match ty {
            b'L' | b'K' => {
                let slot = if ty == b'L' {
                    &mut self.long_name
                } else {
                    &mut self.long_link
                };
                if slot.is_some() {
                    bail!("two GNU long-name headers describe the same entry");
                }
                *slot = Some(trim_nul(&data).to_vec());
            }
            b'x' => {
                if self.pax.is_some() {
                    bail!("two PAX headers describe the same entry");
                }
                self.pax = Some(parse_pax(&data)?);
            }
            _ => {
                // Global headers would change the meaning of every later
                // entry; rather than half-support them, accept only the
                // informational keys `git archive` and others write.
                for (key, _) in parse_pax(&data)? {
                    if !matches!(key.as_str(), "comment" | "charset" | "hdrcharset") {
                        bail!("PAX global header key \"{}\" is not supported", shown(&key));
                    }
                }
            }
        }
        Ok(())
    }

    fn pax(&self, key: &str) -> Option<&[u8]> {
        self.pax
            .as_ref()?
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// PAX `path`, else GNU long name, else the (ustar prefix +) name field.
    fn path_bytes(&self, entry: &tar::Entry<'_, impl Read>) -> Vec<u8> {
        if let Some(p) = self.pax("path") {
            return p.to_vec();
        }
        if let Some(p) = &self.long_name {
            return p.clone();
        }
        entry.header().path_bytes().into_owned()
    }

    fn link_bytes(&self, entry: &tar::Entry<'_, impl Read>) -> Option<Vec<u8>> {
        if let Some(p) = self.pax("linkpath") {
            return Some(p.to_vec());
        }
        if let Some(p) = &self.long_link {
            return Some(p.clone());
        }
        entry.header().link_name_bytes().map(|c| c.into_owned())
    }
}

fn trim_nul(data: &[u8]) -> &[u8] {
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    &data[..end]
}

struct Store<'a> {
    dir: &'a Path,
    next: u64,
}

impl Store<'_> {
    /// Creates the next free `store_dir/<n>`. `create_new` (O_EXCL) plus
    /// O_NOFOLLOW means an existing file or a planted symlink is never
    /// written through; taken names are skipped so one store can serve
    /// several imports.
    fn create(&mut self) -> Result<(PathBuf, File)> {
        loop {
            let path = self.dir.join(self.next.to_string());
            self.next += 1;
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)
            {
                Ok(f) => return Ok((path, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("creating store file {}", shown_path(&path)))
                }
            }
        }
    }
}

/// The numbers of one entry, each from its PAX record when there is one,
/// else from the header field; every one parsed with checked arithmetic.
struct Numbers {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

fn numbers(header: &tar::Header, ext: &Extensions) -> Result<Numbers> {
    let old = header.as_old();
    let id = |key: &str, field: &[u8]| -> Result<u32> {
        match ext.pax(key) {
            Some(v) => {
                let n = pax_uint(v, key)?;
                u32::try_from(n).map_err(|_| anyhow!("PAX {key} {n} is out of range"))
            }
            None => header_u32(field, key),
        }
    };
    Ok(Numbers {
        mode: header_u32(&old.mode, "mode")? & 0o7777,
        uid: id("uid", &old.uid)?,
        gid: id("gid", &old.gid)?,
        mtime: match ext.pax("mtime") {
            Some(v) => pax_time(v, "mtime")?,
            None => header_i64(&old.mtime, "mtime")?,
        },
    })
}

/// Device numbers: `SCHILY.devmajor`/`devminor` PAX records (star writes
/// them), else the ustar/GNU header fields, which v7 headers lack.
fn device(header: &tar::Header, ext: &Extensions, what: &str) -> Result<(u32, u32)> {
    let fields = match (header.as_ustar(), header.as_gnu()) {
        (Some(u), _) => Some((u.dev_major, u.dev_minor)),
        (None, Some(g)) => Some((g.dev_major, g.dev_minor)),
        (None, None) => None,
    };
    let one = |key: &str, field: Option<&[u8; 8]>, name: &str| -> Result<Option<u32>> {
        if let Some(v) = ext.pax(key) {
            let n = pax_uint(v, key)?;
            return u32::try_from(n)
                .map(Some)
                .map_err(|_| anyhow!("PAX {key} {n} is out of range"));
        }
        field.map(|f| header_u32(f, name)).transpose()
    };
    let major = one(
        "SCHILY.devmajor",
        fields.as_ref().map(|f| &f.0),
        "device major",
    )?;
    let minor = one(
        "SCHILY.devminor",
        fields.as_ref().map(|f| &f.1),
        "device minor",
    )?;
    match (major, minor) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("{what} entry without device numbers"),
    }
}

/// Turns one real tar entry into a tree node; returns the content bytes
/// stored.
fn import_entry<R: Read>(
    tree: &mut Tree,
    store: &mut Store<'_>,
    entry: &mut tar::Entry<'_, R>,
    ext: &Extensions,
    raw_path: &[u8],
    in_place: Option<&InPlace>,
) -> Result<u64> {
    let path_str = std::str::from_utf8(raw_path).map_err(|_| anyhow!("path is not valid UTF-8"))?;
    let path = RelPath::parse(path_str)?;
    let header = entry.header().clone();

    if let Some(pax) = &ext.pax {
        if let Some((k, _)) = pax.iter().find(|(k, _)| k.starts_with("GNU.sparse.")) {
            bail!(
                "PAX sparse files ({}) are not supported; re-create the archive without --sparse",
                shown(k)
            );
        }
    }
    // The tar crate positions the stream by its own reading of the size
    // field, which silently drops the high bytes of a wide base-256 value;
    // ours must agree, or the body we store is not the one described.
    let size = header_u64(&header.as_old().size, "size")?;
    if size != entry.size() {
        bail!("the size field cannot be represented (it reads as {size})");
    }
    if let Some(v) = ext.pax("size") {
        // Raw mode positions the stream by the header's size field, so a
        // differing PAX size (files over 8 GiB) cannot be honoured.
        if pax_uint(v, "size")? != size {
            bail!(
                "PAX size record {} differs from the header size {size}, which is not supported",
                shown_value(v)
            );
        }
    }

    let n = numbers(&header, ext)?;
    let mut meta = Meta::new(n.mode, n.uid, n.gid, n.mtime);
    for (k, v) in ext.pax.iter().flatten() {
        if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
            meta.xattrs.insert(name.to_string(), v.clone());
        } else if let Some(name) = k.strip_prefix("LIBARCHIVE.xattr.") {
            meta.xattrs.insert(percent_decode(name)?, base64_decode(v)?);
        }
    }

    let link_bytes = ext.link_bytes(entry);
    let link = || -> Result<Vec<u8>> {
        link_bytes
            .clone()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| anyhow!("link entry without a target"))
    };

    let mut stored = 0;
    let kind = match header.entry_type().as_byte() {
        // Old (v7) archives mark directories with a trailing slash only.
        b'0' | 0 | b'7' if raw_path.ends_with(b"/") => Kind::Dir,
        b'0' | 0 | b'7' if in_place.is_some() => {
            let ip = in_place.ok_or_else(|| anyhow!("no archive"))?;
            let offset = entry.raw_file_position();
            let end = offset.checked_add(size);
            if end.is_none_or(|e| e > ip.len) {
                bail!(
                    "archive is truncated: the contents end past its {} bytes",
                    ip.len
                );
            }
            stored = size;
            Kind::File {
                content: Content::Slice {
                    archive: ip.archive.clone(),
                    offset,
                },
                size,
            }
        }
        b'0' | 0 | b'7' => {
            let (store_path, mut file) = store.create()?;
            let copied = io::copy(entry, &mut file)
                .map_err(escaped)
                .context("storing the file contents")?;
            if copied != size {
                bail!("archive is truncated: got {copied} of {size} content bytes");
            }
            stored = copied;
            Kind::File {
                content: Content::Store(store_path),
                size: copied,
            }
        }
        b'1' => {
            let target = link()?;
            let target = std::str::from_utf8(&target).map_err(|_| {
                anyhow!(
                    "hardlink target {} is not valid UTF-8",
                    shown_value(&target)
                )
            })?;
            // Hardlink names are archive paths, so they are parsed exactly
            // like entry paths: `/etc/shadow` means the image's /etc/shadow
            // and must already be in the archive; `..` is an escape.
            let target = RelPath::parse(target).context("hardlink target")?;
            Kind::Hardlink { target }
        }
        b'2' => {
            let target = link()?;
            let target = String::from_utf8(target).map_err(|e| {
                anyhow!(
                    "symlink target {} is not valid UTF-8",
                    shown_value(e.as_bytes())
                )
            })?;
            // Stored verbatim and never followed: absolute targets are
            // normal inside a rootfs and mean the image's root, not ours.
            // Length and NUL bytes are checked by Tree::insert (limits).
            Kind::Symlink { target }
        }
        b'3' => {
            let (major, minor) = device(&header, ext, "character device")?;
            Kind::CharDev { major, minor }
        }
        b'4' => {
            let (major, minor) = device(&header, ext, "block device")?;
            Kind::BlockDev { major, minor }
        }
        b'5' => Kind::Dir,
        b'6' => Kind::Fifo,
        b'S' => {
            bail!("GNU sparse entries are not supported; re-create the archive without --sparse")
        }
        b'V' => return Ok(0), // GNU volume label: not a file
        t => bail!("unsupported tar entry type {}", shown_value(&[t])),
    };
    tree.insert(path, Node::new(kind, meta))?;
    Ok(stored)
}

/// Imports a directory tree without following any symlink and without
/// copying contents: files become [`Content::Source`] references.
///
/// Hardlinks are recognised by (device, inode); the first path in sorted
/// order becomes the file and the others link to it. `trusted.*` xattrs are
/// never imported: they are host-private (overlayfs, for one, keeps its
/// bookkeeping there) and only root can read them, which would make the
/// image depend on who built it.
pub fn from_directory(
    dir: &Path,
    ownership: Ownership,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Tree> {
    let name = shown_path(dir);
    let md = fs::symlink_metadata(dir).with_context(|| format!("directory {name}"))?;
    if !md.is_dir() {
        bail!("directory {name}: not a directory (symlinks are not followed)");
    }

    // Collect first, then sort by RelPath: walkdir's depth-first order
    // differs from byte order (`etc-old` vs `etc/x`), and "first path in
    // sorted order" must mean the same as in the exporters. walkdir keeps
    // at most a few directories open whatever the depth; it stops one
    // level below the depth limit, and that level's entries are refused by
    // Tree::insert, so a deeper tree is an error, never silently cut.
    let mut found: Vec<(RelPath, PathBuf, fs::Metadata)> = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .follow_root_links(false)
        .max_depth(MAX_DEPTH + 1)
    {
        let entry = entry.with_context(|| format!("directory {name}: walking"))?;
        let rel = entry
            .path()
            .strip_prefix(dir)
            .with_context(|| format!("directory {name}: entry {}", shown_path(entry.path())))?;
        let rel_str = rel.to_str().ok_or_else(|| {
            anyhow!(
                "directory {name}: entry {}: path is not valid UTF-8",
                shown_path(rel)
            )
        })?;
        let entry_name = || crate::limits::shorten(&shown(rel_str));
        let rel = RelPath::parse(rel_str)
            .with_context(|| format!("directory {name}: entry {}", entry_name()))?;
        // lstat: with follow_links(false) walkdir never stats through links.
        let md = entry
            .metadata()
            .with_context(|| format!("directory {name}: entry {}", entry_name()))?;
        found.push((rel, entry.into_path(), md));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));

    let mut tree = Tree::new(Meta::new(0o755, 0, 0, 0));
    let mut inodes: HashMap<(u64, u64), RelPath> = HashMap::new();
    let mut bufs = XattrBufs::new();
    let (mut count, mut bytes) = (0u64, 0u64);
    for (rel, abs, md) in found {
        let ctx = || format!("directory {name}: entry {}", shown_entry(&rel));
        let node =
            dir_node(&rel, &abs, &md, ownership, &mut inodes, &mut bufs).with_context(ctx)?;
        if let Kind::File { size, .. } = node.kind {
            bytes = bytes.saturating_add(size);
        }
        tree.insert(rel.clone(), node).with_context(ctx)?;
        count += 1;
        progress(count, bytes);
    }
    Ok(tree)
}

fn dir_node(
    rel: &RelPath,
    abs: &Path,
    md: &fs::Metadata,
    ownership: Ownership,
    inodes: &mut HashMap<(u64, u64), RelPath>,
    bufs: &mut XattrBufs,
) -> Result<Node> {
    let (uid, gid) = match ownership {
        Ownership::Preserve => (md.uid(), md.gid()),
        Ownership::Root => (0, 0),
    };
    let mut meta = Meta::new(md.mode() & 0o7777, uid, gid, md.mtime());
    meta.xattrs = bufs.read(abs)?;
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        let target = fs::read_link(abs).context("reading the symlink")?;
        let target = target
            .into_os_string()
            .into_string()
            .map_err(|_| anyhow!("symlink target is not valid UTF-8"))?;
        Kind::Symlink { target }
    } else if ft.is_file() {
        let key = (md.dev(), md.ino());
        match inodes.get(&key) {
            Some(first) if md.nlink() > 1 => Kind::Hardlink {
                target: first.clone(),
            },
            _ => {
                if md.nlink() > 1 {
                    inodes.insert(key, rel.clone());
                }
                Kind::File {
                    content: Content::Source(abs.to_path_buf()),
                    size: md.len(),
                }
            }
        }
    } else if ft.is_char_device() || ft.is_block_device() {
        let (major, minor) = (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev()));
        if ft.is_char_device() {
            Kind::CharDev { major, minor }
        } else {
            Kind::BlockDev { major, minor }
        }
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        bail!("sockets cannot be stored in an image");
    };
    Ok(Node::new(kind, meta))
}

/// Reusable fixed-size buffers for xattr names and values.
struct XattrBufs {
    names: Vec<u8>,
    value: Vec<u8>,
}

impl XattrBufs {
    fn new() -> XattrBufs {
        XattrBufs {
            names: vec![0; XATTR_BUF],
            value: vec![0; XATTR_BUF],
        }
    }

    /// Reads every xattr of `path` itself (l*xattr: never through a
    /// symlink). Filesystems without xattr support yield none; attributes in
    /// namespaces we may not read are skipped rather than failing the build.
    fn read(&mut self, path: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut out = BTreeMap::new();
        let n = match rustix::fs::llistxattr(path, &mut self.names[..]) {
            Ok(n) => n,
            Err(Errno::NOTSUP) => return Ok(out),
            Err(e) => return Err(io::Error::from(e)).context("listing xattrs"),
        };
        for raw in self.names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
            let key = std::str::from_utf8(raw)
                .map_err(|_| anyhow!("xattr name {} is not UTF-8", shown_value(raw)))?;
            if key.starts_with("trusted.") {
                continue;
            }
            match rustix::fs::lgetxattr(path, raw, &mut self.value[..]) {
                Ok(len) => {
                    out.insert(key.to_string(), self.value[..len].to_vec());
                }
                // Removed since listing, or not readable by us.
                Err(Errno::NODATA | Errno::PERM | Errno::ACCESS | Errno::NOTSUP) => {}
                Err(e) => {
                    return Err(io::Error::from(e))
                        .with_context(|| format!("reading xattr {}", shown(key)))
                }
            }
        }
        Ok(out)
    }
}
