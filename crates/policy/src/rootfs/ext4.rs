//! An ext4 image read with `ext4-view`, after checking what it would
//! otherwise trust.
//!
//! ext4-view is written for untrusted input (no panics, no endless loops),
//! but at load it reserves one descriptor per block group, and the group
//! count comes from superblock fields: a 2 KiB file can claim four billion
//! groups. [`check_superblock`] requires the blocks the superblock claims to
//! be in the file and caps the group count before ext4-view sees it. The
//! tree walk is ours, with the limits of `super` (depth, which also ends
//! directory loops, names, paths, entry count), and every call into
//! ext4-view still runs under `guarded`.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use ext4_view::{Ext4, Ext4Read};
use slotsmith_yaml::escape::{shown, shown_path};

use super::{guarded, Entry, EntryKind, RootfsRead, TreeBudget, MAX_BLOCK_GROUPS, MAX_READ};

/// Where the superblock is, and the part of it we read.
const SUPERBLOCK_AT: u64 = 1024;
const SUPERBLOCK_LEN: usize = 1024;
const MAGIC: u16 = 0xef53;
/// `s_log_block_size` up to 6: 64 KiB blocks, the largest Linux mounts.
const MAX_LOG_BLOCK_SIZE: u32 = 6;
/// Longest symlink target read (`PATH_MAX` without the NUL).
const MAX_LINK: u64 = 4095;

/// A built ext4 rootfs image, read with `ext4-view` (a read-only ext4
/// reader): the audit sees owners, modes and contents as stored in the
/// image, exactly as with [`super::SquashfsRootfs`].
pub struct Ext4Rootfs {
    fs: Ext4,
    entries: BTreeMap<String, Entry>,
    /// The image, escaped, for errors.
    name: String,
}

impl Ext4Rootfs {
    /// Opens an ext4 image file and indexes every entry.
    pub fn open(path: &Path) -> Result<Ext4Rootfs> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open ext4 image {}", shown_path(path)))?;
        Ext4Rootfs::from_file(file, path)
    }

    /// Indexes an image from a handle the caller has already opened and
    /// checked (a regular file, opened without following symlinks), so
    /// nothing can be swapped in between the check and the read; `path`
    /// only names it in errors.
    pub fn from_file(mut file: std::fs::File, path: &Path) -> Result<Ext4Rootfs> {
        let name = format!("ext4 image {}", shown_path(path));
        let len = file
            .seek(SeekFrom::End(0))
            .with_context(|| format!("cannot read {name}"))?;
        let mut sb = vec![0u8; SUPERBLOCK_LEN];
        file.seek(SeekFrom::Start(SUPERBLOCK_AT))
            .and_then(|_| file.read_exact(&mut sb))
            .map_err(|_| anyhow!("{name}: too short for an ext4 superblock"))?;
        Ext4Rootfs::load(Box::new(file), &sb, len, name)
    }

    /// Indexes an image held in memory; what the fuzz target `audit_ext4`
    /// exercises.
    pub fn from_bytes(data: Vec<u8>) -> Result<Ext4Rootfs> {
        let name = "ext4 image (in memory)".to_string();
        let sb = data
            .get(SUPERBLOCK_AT as usize..SUPERBLOCK_AT as usize + SUPERBLOCK_LEN)
            .ok_or_else(|| anyhow!("{name}: too short for an ext4 superblock"))?
            .to_vec();
        let len = data.len() as u64;
        Ext4Rootfs::load(Box::new(data), &sb, len, name)
    }

    fn load(source: Box<dyn Ext4Read>, sb: &[u8], len: u64, name: String) -> Result<Ext4Rootfs> {
        check_superblock(sb, len).with_context(|| format!("reading {name}"))?;
        let fs = guarded(&name, || {
            Ext4::load(source).map_err(|e| anyhow!("{name}: {}", shown(&e.to_string())))
        })?;
        let entries = guarded(&name, || index(&fs, &name))?;
        Ok(Ext4Rootfs { fs, entries, name })
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The superblock fields ext4-view sizes allocations from, checked against
/// the file: every block claimed must be in the file, and the block group
/// count is capped.
fn check_superblock(sb: &[u8], len: u64) -> Result<()> {
    ensure!(
        sb.len() >= SUPERBLOCK_LEN,
        "too short for an ext4 superblock"
    );
    let magic = u16::from_le_bytes([sb[0x38], sb[0x39]]);
    ensure!(magic == MAGIC, "not an ext4 image (no superblock magic)");
    let log = u32_at(sb, 0x18);
    ensure!(
        log <= MAX_LOG_BLOCK_SIZE,
        "the block size field ({log}) is out of range"
    );
    let block_size = 1024u64 << log;
    // The high half counts whether or not the 64bit feature is set: that
    // is how ext4-view computes the group count it reserves for.
    let blocks = u64::from(u32_at(sb, 0x04)) | (u64::from(u32_at(sb, 0x150)) << 32);
    let bytes = blocks
        .checked_mul(block_size)
        .ok_or_else(|| anyhow!("the superblock claims {blocks} blocks, too many"))?;
    ensure!(
        bytes <= len,
        "the superblock claims {blocks} blocks of {block_size} bytes ({bytes} bytes), but the \
         image has {len}"
    );
    let per_group = u64::from(u32_at(sb, 0x20));
    ensure!(per_group > 0, "the superblock says 0 blocks per group");
    let first = u64::from(u32_at(sb, 0x14));
    let groups = blocks.saturating_sub(first).div_ceil(per_group);
    ensure!(
        groups <= MAX_BLOCK_GROUPS,
        "{groups} block groups (at most {MAX_BLOCK_GROUPS} are read)"
    );
    Ok(())
}

/// Every entry by path, walked breadth-first with the tree limits.
fn index(fs: &Ext4, image: &str) -> Result<BTreeMap<String, Entry>> {
    let mut budget = TreeBudget::default();
    let mut entries = BTreeMap::new();
    let root = fs
        .metadata("/")
        .map_err(|e| anyhow!("{image}: reading /: {}", shown(&e.to_string())))?;
    entries.insert("/".to_string(), ext4_entry(fs, "/", &root, image)?);
    // (directory path, depth)
    let mut dirs = vec![("/".to_string(), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        let d = shown(&dir);
        let listing = fs
            .read_dir(dir.as_str())
            .map_err(|e| anyhow!("{image}: listing {d}: {}", shown(&e.to_string())))?;
        for item in listing {
            let item =
                item.map_err(|e| anyhow!("{image}: listing {d}: {}", shown(&e.to_string())))?;
            let name = item.file_name();
            let raw: &[u8] = name.as_ref();
            if raw == b"." || raw == b".." {
                continue;
            }
            budget.enter(image, &dir, dir.len(), depth + 1, raw)?;
            let name = name.as_str().map_err(|_| {
                anyhow!(
                    "{image}: {d}: the name {} is not UTF-8",
                    slotsmith_yaml::escape::shown_bytes(raw)
                )
            })?;
            let path = if dir == "/" {
                format!("/{name}")
            } else {
                format!("{dir}/{name}")
            };
            let md = item
                .metadata()
                .map_err(|e| anyhow!("{image}: {}: {}", shown(&path), shown(&e.to_string())))?;
            let entry = ext4_entry(fs, &path, &md, image)?;
            if entry.kind == EntryKind::Dir {
                dirs.push((path.clone(), depth + 1));
            }
            entries.insert(path, entry);
        }
    }
    Ok(entries)
}

fn ext4_entry(fs: &Ext4, path: &str, md: &ext4_view::Metadata, image: &str) -> Result<Entry> {
    use ext4_view::FileType;
    let p = || shown(path);
    let kind = match md.file_type() {
        FileType::Directory => EntryKind::Dir,
        FileType::Regular => EntryKind::File,
        FileType::Symlink => {
            ensure!(
                md.len() <= MAX_LINK,
                "{image}: {}: a {}-byte symlink target, more than {MAX_LINK}",
                p(),
                md.len()
            );
            let target = fs
                .read_link(path)
                .map_err(|e| anyhow!("{image}: reading link {}: {}", p(), shown(&e.to_string())))?;
            let target = target
                .to_str()
                .map_err(|_| anyhow!("{image}: {}: the link target is not UTF-8", p()))?;
            EntryKind::Symlink {
                target: target.to_string(),
            }
        }
        FileType::CharacterDevice => EntryKind::Char,
        FileType::BlockDevice => EntryKind::Block,
        FileType::Fifo => EntryKind::Fifo,
        FileType::Socket => EntryKind::Socket,
    };
    let size = if kind == EntryKind::File { md.len() } else { 0 };
    Ok(Entry {
        kind,
        mode: u32::from(md.mode()) & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size,
    })
}

impl RootfsRead for Ext4Rootfs {
    fn entries(&self) -> Vec<(String, Entry)> {
        self.entries
            .iter()
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect()
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.entries.get(path) {
            Some(e) if e.kind == EntryKind::File => {
                let image = &self.name;
                if e.size > MAX_READ {
                    bail!(
                        "{image}: {} is {} bytes, more than the {MAX_READ}-byte read limit",
                        shown(path),
                        e.size
                    );
                }
                let failed = |err: ext4_view::Ext4Error| {
                    anyhow!(
                        "{image}: reading {}: {}",
                        shown(path),
                        shown(&err.to_string())
                    )
                };
                let data = guarded(image, || {
                    // ext4-view reads by path, resolving it again, and
                    // allocates the size of the inode it finds; a directory
                    // holding one name twice makes that another inode than
                    // the one indexed. Check the size of the inode it will
                    // read, not only of the indexed one.
                    let md = self.fs.metadata(path).map_err(failed)?;
                    ensure!(
                        md.file_type() == ext4_view::FileType::Regular && md.len() <= MAX_READ,
                        "{image}: {} resolves to a {}-byte {:?}, not a file the audit reads",
                        shown(path),
                        md.len(),
                        md.file_type()
                    );
                    self.fs.read(path).map_err(failed)
                })?;
                Ok(Some(data))
            }
            _ => Ok(None),
        }
    }

    fn sha256(&self, path: &str) -> Result<Option<([u8; 32], u64)>> {
        match self.entries.get(path) {
            Some(e) if e.kind == EntryKind::File => {
                let image = &self.name;
                let failed = |err: ext4_view::Ext4Error| {
                    anyhow!(
                        "{image}: reading {}: {}",
                        shown(path),
                        shown(&err.to_string())
                    )
                };
                guarded(image, || {
                    // As in `read`: ext4-view resolves the path again, so
                    // the inode it opens is checked, not the indexed one.
                    let md = self.fs.metadata(path).map_err(failed)?;
                    ensure!(
                        md.file_type() == ext4_view::FileType::Regular,
                        "{image}: {} resolves to a {:?}, not a regular file",
                        shown(path),
                        md.file_type()
                    );
                    let len = md.len();
                    let file = self.fs.open(path).map_err(failed)?;
                    let (sum, n) =
                        super::hash_reader(file.take(len.saturating_add(1))).map_err(|err| {
                            anyhow!(
                                "{image}: reading {}: {}",
                                shown(path),
                                shown(&err.to_string())
                            )
                        })?;
                    ensure!(
                        n == len,
                        "{image}: {}: read {n} bytes, the inode says {len}",
                        shown(path)
                    );
                    Ok(Some((sum, n)))
                })
            }
            _ => Ok(None),
        }
    }
}
