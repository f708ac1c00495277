//! A squashfs image read with `backhand`, after checking what backhand
//! would otherwise trust.
//!
//! backhand 0.25 sizes allocations from fields of the image: a file inode's
//! block list is reserved at the length its size field implies (2 GiB of
//! capacity for one inode claiming a 2 TiB file), metadata tables are read
//! until a pointer is reached (so an inconsistent pointer reads to the end
//! of the file, decompressing everything), and the directory tree is built
//! recursively with a clone of the full path per entry (a deep chain is a
//! stack overflow, which no `catch_unwind` can stop, and quadratic memory).
//! Before handing the image over, [`check`] therefore
//!
//! 1. bounds the superblock: `bytes_used` and every table inside the file,
//!    the inode count and the fragment count (limits in `super`);
//! 2. walks the metadata block headers of the inode and directory tables
//!    (each at most 8 KiB uncompressed) and requires them to end exactly
//!    where the next table starts, bounding both tables' uncompressed size;
//! 3. parses every inode's layout, exactly as backhand will, and requires
//!    each variable-length part (file block list, directory index, symlink
//!    target) to be present in the table, so no reservation can exceed the
//!    table's size;
//! 4. after backhand has read the tables (but before it builds the tree),
//!    walks the directory tree the way backhand will, iteratively, checking
//!    depth, names, path lengths and the entry count.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use backhand::kind::Kind;
use backhand::v4::inode::InodeInner;
use backhand::{FilesystemReader, InnerNode, Squashfs, SquashfsFileReader};
use slotsmith_yaml::escape::{shown, shown_path};

use super::{
    guarded, Entry, EntryKind, RootfsRead, TreeBudget, MAX_ENTRIES, MAX_FRAGMENTS, MAX_METADATA,
    MAX_READ,
};

/// Uncompressed size of a full metadata block.
const METADATA_BLOCK: u64 = 8192;
/// The superblock's "no table" marker.
const NOT_SET: u64 = u64::MAX;
/// backhand refuses file sizes from 2 TiB on.
const MAX_FILE_SIZE: u64 = 2 << 40;
/// backhand refuses symlink targets (and directory index names) from 256
/// bytes on.
const BACKHAND_MAX_NAME: u32 = 256;
/// Fragment index meaning "no fragment".
const NO_FRAGMENT: u32 = u32::MAX;
/// Superblock flag: the NFS export table exists.
const FLAG_EXPORTS: u16 = 0x0080;

/// A squashfs image file, read without mounting.
pub struct SquashfsRootfs {
    fs: FilesystemReader<'static>,
    /// path -> index into `fs.root.nodes`
    index: BTreeMap<String, usize>,
    /// The image, escaped, for errors.
    name: String,
}

impl SquashfsRootfs {
    /// Opens and indexes an image. Any of gzip, xz and zstd compression.
    pub fn open(path: &Path) -> Result<SquashfsRootfs> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open squashfs image {}", shown_path(path)))?;
        SquashfsRootfs::from_file(file, path)
    }

    /// Indexes an image from a handle the caller has already opened and
    /// checked (a regular file, opened without following symlinks), so
    /// nothing can be swapped in between the check and the read; `path`
    /// only names it in errors. The whole file is read, whatever the handle's offset.
    pub fn from_file(file: std::fs::File, path: &Path) -> Result<SquashfsRootfs> {
        let name = format!("squashfs image {}", shown_path(path));
        SquashfsRootfs::from_reader(BufReader::new(file), name)
    }

    /// Indexes an image held in memory; what the fuzz target `audit_squashfs`
    /// exercises.
    pub fn from_bytes(data: Vec<u8>) -> Result<SquashfsRootfs> {
        SquashfsRootfs::from_reader(Cursor::new(data), "squashfs image (in memory)".into())
    }

    fn from_reader<R>(mut reader: R, name: String) -> Result<SquashfsRootfs>
    where
        R: std::io::BufRead + Seek + Send + 'static,
    {
        let corrupt = || anyhow!("{name}: the image is corrupt or not a squashfs 4.0 image");
        let kind = Kind::from_target("le_v4_0").map_err(|e| anyhow!("{e}"))?;
        let len = reader
            .seek(SeekFrom::End(0))
            .with_context(|| format!("cannot read {name}"))?;
        reader
            .rewind()
            .with_context(|| format!("cannot read {name}"))?;
        let sb = guarded(&name, || {
            Squashfs::superblock_and_compression_options(&mut reader, &kind)
                .map(|(sb, _)| sb)
                .map_err(|_| corrupt())
        })?;
        check(&mut reader, &sb, &kind, len).with_context(|| format!("reading {name}"))?;
        reader
            .rewind()
            .with_context(|| format!("cannot read {name}"))?;
        let squashfs = guarded(&name, || {
            Squashfs::from_reader(reader).map_err(|_| corrupt())
        })?;
        check_tree(&squashfs, &name)?;
        let fs = guarded(&name, || {
            squashfs.into_filesystem_reader().map_err(|_| corrupt())
        })?;
        let mut index = BTreeMap::new();
        for (i, node) in fs.root.nodes.iter().enumerate() {
            let p = node.fullpath.to_string_lossy().into_owned();
            let p = if p.is_empty() { "/".to_string() } else { p };
            index.insert(p, i);
        }
        Ok(SquashfsRootfs { fs, index, name })
    }
}

/// Steps 1 to 3 of the module documentation, on the raw image.
fn check<R: Read + Seek>(
    reader: &mut R,
    sb: &backhand::SuperBlock,
    kind: &Kind,
    len: u64,
) -> Result<()> {
    ensure!(
        sb.bytes_used <= len,
        "the superblock says {} bytes are used, but the file has {len}",
        sb.bytes_used
    );
    let end = sb.bytes_used;
    ensure!(
        sb.inode_count >= 1 && sb.inode_count as usize <= MAX_ENTRIES,
        "{} inodes (at most {MAX_ENTRIES} are read)",
        sb.inode_count
    );
    ensure!(
        sb.frag_count <= MAX_FRAGMENTS,
        "{} fragments (at most {MAX_FRAGMENTS} are read)",
        sb.frag_count
    );
    ensure!(
        sb.inode_table < sb.dir_table && sb.dir_table < end && sb.id_table < end,
        "the inode, directory and id tables are not in order inside the image"
    );
    for (what, at) in [
        ("fragment", sb.frag_table),
        ("export", sb.export_table),
        ("xattr", sb.xattr_table),
    ] {
        ensure!(
            at == NOT_SET || at < end,
            "the {what} table starts at {at}, past the end of the image ({end})"
        );
    }
    // Where backhand takes the directory table to end: the first metadata
    // block of the fragment, export or id table, whose location is the
    // first 8-byte entry of that table's index.
    let dir_end = if sb.frag_count != 0 && sb.frag_table != NOT_SET {
        read_u64(reader, sb.frag_table, end)?
    } else if sb.flags & FLAG_EXPORTS != 0 && sb.export_table != NOT_SET {
        read_u64(reader, sb.export_table, end)?
    } else {
        read_u64(reader, sb.id_table, end)?
    };
    walk_blocks(reader, "inode", sb.inode_table, sb.dir_table)?;
    ensure!(
        sb.dir_table <= dir_end && dir_end <= end,
        "the directory table would end at {dir_end}, outside {}..{end}",
        sb.dir_table
    );
    walk_blocks(reader, "directory", sb.dir_table, dir_end)?;

    // Decompress the inode table (bounded by walk_blocks) and check the
    // layout of every inode.
    reader.seek(SeekFrom::Start(sb.inode_table))?;
    let mut table = Vec::new();
    while reader.stream_position()? < sb.dir_table {
        let block = backhand::v4::metadata::read_block(reader, sb, kind)
            .map_err(|_| anyhow!("a metadata block of the inode table is corrupt"))?;
        table.extend_from_slice(&block);
    }
    let inodes = check_inodes(&table, sb)?;
    ensure!(
        inodes == sb.inode_count as usize,
        "the inode table holds {inodes} inodes, the superblock says {}",
        sb.inode_count
    );
    Ok(())
}

fn read_u64<R: Read + Seek>(reader: &mut R, at: u64, end: u64) -> Result<u64> {
    ensure!(
        at.checked_add(8).is_some_and(|e| e <= end),
        "a table index at {at} runs past the end of the image ({end})"
    );
    reader.seek(SeekFrom::Start(at))?;
    let mut b = [0u8; 8];
    reader.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Walks the metadata block headers from `start`; they must end exactly at
/// `end`, and the table may hold at most [`MAX_METADATA`] bytes
/// uncompressed.
fn walk_blocks<R: Read + Seek>(reader: &mut R, what: &str, start: u64, end: u64) -> Result<()> {
    let mut at = start;
    let mut blocks = 0u64;
    while at < end {
        reader.seek(SeekFrom::Start(at))?;
        let mut h = [0u8; 2];
        reader
            .read_exact(&mut h)
            .with_context(|| format!("the {what} table is cut short at {at}"))?;
        let size = u64::from(u16::from_le_bytes(h) & 0x7fff);
        ensure!(
            size > 0 && size <= METADATA_BLOCK,
            "the {what} table has a metadata block of {size} bytes at {at}"
        );
        at = at + 2 + size;
        blocks += 1;
        ensure!(
            blocks * METADATA_BLOCK <= MAX_METADATA,
            "the {what} table is larger than {MAX_METADATA} bytes uncompressed"
        );
    }
    ensure!(
        at == end,
        "the {what} table's last metadata block ends at {at}, not at {end} where the next table starts"
    );
    Ok(())
}

/// A cursor over the uncompressed inode table.
struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn take(&mut self, n: u64) -> Result<&[u8]> {
        let n = usize::try_from(n).map_err(|_| anyhow!("an inode field is out of range"))?;
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                anyhow!(
                    "an inode at byte {} of the inode table runs past its end ({} bytes)",
                    self.at,
                    self.data.len()
                )
            })?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let lo = u64::from(self.u32()?);
        let hi = u64::from(self.u32()?);
        Ok(lo | (hi << 32))
    }
}

/// Parses every inode's layout as backhand's `Inode` reader will, and
/// returns the number of inodes. Each count-prefixed part must be present
/// in the table, which bounds every reservation backhand makes by the
/// table's size.
fn check_inodes(table: &[u8], sb: &backhand::SuperBlock) -> Result<usize> {
    let mut b = Bytes { data: table, at: 0 };
    let mut count = 0usize;
    let block_size = u64::from(sb.block_size);
    let block_log = u32::from(sb.block_log);
    // backhand's block_count(): whole blocks, plus the tail block when the
    // tail is not in a fragment.
    let blocks = |fragment: u32, size: u64| {
        if fragment == NO_FRAGMENT {
            (size + block_size - 1) >> block_log
        } else {
            size >> block_log
        }
    };
    while b.at < table.len() {
        let at = b.at;
        let kind = b.u16()?;
        b.take(14)?; // permissions, uid, gid, mtime, inode number
        match kind {
            1 => drop(b.take(16)?),
            2 => {
                b.take(4)?; // blocks_start
                let fragment = b.u32()?;
                b.take(4)?; // block_offset
                let size = u64::from(b.u32()?);
                b.take(4 * blocks(fragment, size))?;
            }
            3 | 10 => {
                b.take(4)?; // link_count
                let target = b.u32()?;
                ensure!(
                    target < BACKHAND_MAX_NAME,
                    "a symlink at byte {at} of the inode table has a {target}-byte target; \
                     the audit reads targets up to 255 bytes"
                );
                b.take(u64::from(target))?;
                if kind == 10 {
                    b.take(4)?; // xattr_index
                }
            }
            4 | 5 => drop(b.take(8)?),
            6 | 7 => drop(b.take(4)?),
            8 => {
                b.take(16)?; // link_count, file_size, block_index, parent_inode
                let index_count = b.u16()?;
                b.take(6)?; // block_offset, xattr_index
                for _ in 0..index_count {
                    b.take(8)?; // index, start
                    let name = b.u32()?;
                    ensure!(
                        name < BACKHAND_MAX_NAME,
                        "a directory index at byte {at} of the inode table has a {name}-byte name"
                    );
                    b.take(u64::from(name) + 1)?;
                }
            }
            9 => {
                b.take(8)?; // blocks_start
                let size = b.u64()?;
                ensure!(
                    size < MAX_FILE_SIZE,
                    "a file at byte {at} of the inode table claims {size} bytes"
                );
                b.take(12)?; // sparse, link_count
                let fragment = b.u32()?;
                b.take(8)?; // block_offset, xattr_index
                b.take(4 * blocks(fragment, size))?;
            }
            11 | 12 => drop(b.take(12)?),
            13 | 14 => drop(b.take(8)?),
            other => bail!("an inode at byte {at} of the inode table has unknown type {other}"),
        }
        count += 1;
        ensure!(
            count <= MAX_ENTRIES,
            "the inode table holds more than {MAX_ENTRIES} inodes"
        );
    }
    Ok(count)
}

/// The directory of `inode`, as (block index, listing size, offset), or
/// `None` when it is not a directory.
fn dir_location(inode: &backhand::Inode) -> Option<(u64, u32, usize)> {
    match &inode.inner {
        InodeInner::BasicDirectory(d) => Some((
            u64::from(d.block_index),
            u32::from(d.file_size),
            usize::from(d.block_offset),
        )),
        InodeInner::ExtendedDirectory(d) => Some((
            u64::from(d.block_index),
            d.file_size,
            usize::from(d.block_offset),
        )),
        _ => None,
    }
}

/// Step 4: the directory walk backhand's `extract_dir` will make, done
/// first, iteratively and with limits. It parses the directory listings the
/// way backhand does (a listing ends at the first header or entry that does
/// not parse) so that both see the same tree.
fn check_tree(sq: &Squashfs<'_>, image: &str) -> Result<()> {
    let mut budget = TreeBudget::default();
    let mut visited = HashSet::new();
    // (directory inode number, its path, its depth)
    let mut stack = vec![(sq.root_inode.header.inode_number, "/".to_string(), 0usize)];
    let (offsets, bytes) = &sq.dir_blocks;
    while let Some((number, path, depth)) = stack.pop() {
        let shown_dir = || format!("{image}: {}", shown(&path));
        ensure!(
            visited.insert(number),
            "{}: a directory appears twice in the tree (a loop)",
            shown_dir()
        );
        let inode = if depth == 0 {
            &sq.root_inode
        } else {
            sq.inodes
                .get(&number)
                .ok_or_else(|| anyhow!("{}: missing directory inode", shown_dir()))?
        };
        let (block, size, offset) = dir_location(inode)
            .ok_or_else(|| anyhow!("{}: a directory entry names a non-directory", shown_dir()))?;
        if size < 4 {
            continue;
        }
        let start = offsets
            .get(&block)
            .and_then(|&o| usize::try_from(o).ok())
            .ok_or_else(|| {
                anyhow!(
                    "{}: its listing is outside the directory table",
                    shown_dir()
                )
            })?;
        let listing = bytes
            .get(start..)
            .and_then(|b| b.get(offset..))
            .and_then(|b| b.get(..size as usize - 3))
            .ok_or_else(|| {
                anyhow!(
                    "{}: its listing is outside the directory table",
                    shown_dir()
                )
            })?;
        for (inode_number, kind, name) in parse_listing(listing) {
            let inode_number = inode_number.ok_or_else(|| {
                anyhow!("{}: an entry's inode number is out of range", shown_dir())
            })?;
            let child = sq
                .inodes
                .get(&inode_number)
                .ok_or_else(|| anyhow!("{}: an entry names a missing inode", shown_dir()))?;
            budget.enter(image, &path, path.len(), depth + 1, name)?;
            if matches!(kind, 1 | 8) {
                ensure!(
                    dir_location(child).is_some(),
                    "{}: an entry of directory type names a non-directory",
                    shown_dir()
                );
                let mut child_path = if path == "/" {
                    String::new()
                } else {
                    path.clone()
                };
                child_path.push('/');
                child_path.push_str(&String::from_utf8_lossy(name));
                stack.push((inode_number, child_path, depth + 1));
            }
        }
    }
    Ok(())
}

/// The entries of a directory listing: (inode number, `None` when it is
/// out of range, type, name). Stops, as backhand does, at the first header
/// or entry that does not parse.
fn parse_listing(listing: &[u8]) -> Vec<(Option<u32>, u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let u16_at = |at: usize| {
        listing
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        listing
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    'headers: while let (Some(count), Some(base)) = (u32_at(at), u32_at(at + 8)) {
        if count > 256 {
            break;
        }
        let mut p = at + 12;
        let mut entries = Vec::new();
        for _ in 0..=count {
            let (Some(delta), Some(kind), Some(name_size)) =
                (u16_at(p + 2), u16_at(p + 4), u16_at(p + 6))
            else {
                break 'headers;
            };
            if !(1..=14).contains(&kind) {
                break 'headers;
            }
            let name_end = p + 8 + usize::from(name_size) + 1;
            let Some(name) = listing.get(p + 8..name_end) else {
                break 'headers;
            };
            // backhand adds the signed 16-bit delta to the base as i32
            // (and fails on what does not fit; so does this walk).
            let number = (base as i32)
                .checked_add(i32::from(delta as i16))
                .and_then(|n| u32::try_from(n).ok());
            entries.push((number, kind, name));
            p = name_end;
        }
        out.extend(entries);
        at = p;
    }
    out
}

impl RootfsRead for SquashfsRootfs {
    fn entries(&self) -> Vec<(String, Entry)> {
        self.index
            .iter()
            .map(|(p, &i)| {
                let node = &self.fs.root.nodes[i];
                let (kind, size) = match &node.inner {
                    InnerNode::File(f) => (EntryKind::File, f.file_len() as u64),
                    InnerNode::Dir(_) => (EntryKind::Dir, 0),
                    InnerNode::Symlink(s) => (
                        EntryKind::Symlink {
                            target: s.link.to_string_lossy().into_owned(),
                        },
                        0,
                    ),
                    InnerNode::CharacterDevice(_) => (EntryKind::Char, 0),
                    InnerNode::BlockDevice(_) => (EntryKind::Block, 0),
                    InnerNode::NamedPipe => (EntryKind::Fifo, 0),
                    InnerNode::Socket => (EntryKind::Socket, 0),
                };
                let e = Entry {
                    kind,
                    mode: u32::from(node.header.permissions) & 0o7777,
                    uid: node.header.uid,
                    gid: node.header.gid,
                    size,
                };
                (p.clone(), e)
            })
            .collect()
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let Some(&i) = self.index.get(path) else {
            return Ok(None);
        };
        let InnerNode::File(f) = &self.fs.root.nodes[i].inner else {
            return Ok(None);
        };
        guarded(&self.name, || read_file(&self.fs, f, path, &self.name)).map(Some)
    }

    fn sha256(&self, path: &str) -> Result<Option<([u8; 32], u64)>> {
        let Some(&i) = self.index.get(path) else {
            return Ok(None);
        };
        let InnerNode::File(f) = &self.fs.root.nodes[i].inner else {
            return Ok(None);
        };
        let image = &self.name;
        guarded(image, || {
            let p = shown(path);
            let len = f.file_len() as u64;
            let reader = self
                .fs
                .file(f)
                .reader_checked()
                .map_err(|_| anyhow!("{image}: cannot read {p}: its fragment is missing"))?;
            // Streamed: memory stays one block whatever the inode claims,
            // and the count read must match it.
            let (sum, n) = super::hash_reader(reader.take(len.saturating_add(1)))
                .map_err(|_| anyhow!("{image}: cannot read {p}: its data is corrupt"))?;
            ensure!(
                n == len,
                "{image}: {p}: read {n} bytes, the inode says {len}"
            );
            Ok(Some((sum, n)))
        })
    }
}

fn read_file(
    fs: &FilesystemReader<'static>,
    f: &SquashfsFileReader,
    path: &str,
    image: &str,
) -> Result<Vec<u8>> {
    let p = shown(path);
    let len = f.file_len() as u64;
    if len > MAX_READ {
        bail!("{image}: {p} is {len} bytes, more than the {MAX_READ}-byte read limit");
    }
    let mut out = Vec::with_capacity(len as usize);
    let mut reader = fs
        .file(f)
        .reader_checked()
        .map_err(|_| anyhow!("{image}: cannot read {p}: its fragment is missing"))?;
    reader
        .by_ref()
        .take(MAX_READ + 1)
        .read_to_end(&mut out)
        .map_err(|_| anyhow!("{image}: cannot read {p}: its data is corrupt"))?;
    if out.len() as u64 != len {
        bail!(
            "{image}: {p}: read {} bytes, the inode says {len}",
            out.len()
        );
    }
    Ok(out)
}
