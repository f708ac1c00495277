//! Deterministic FAT formatting of the EFI system partition.
//!
//! The ESP carries the bootloader plus each slot's signed manifest, so it
//! must be byte-reproducible like the rest of the image. `fatfs` (0.3.6) is
//! used because it formats and populates a volume through any
//! Read + Write + Seek stream, which with [`crate::window::Window`] means
//! directly inside the disk image. Its sources of nondeterminism are
//! removed explicitly:
//!
//! * the volume id is passed in ([`FatSpec::volume_id`]) instead of the
//!   library default, and the label is validated and space padded;
//! * every directory entry's created/modified/accessed stamp comes from a
//!   fixed [`fatfs::TimeProvider`] built from [`FatSpec::mtime`] (the
//!   default provider reads the wall clock when `fatfs/chrono` is enabled,
//!   which it is in this workspace);
//! * files are added in sorted path order, so directory entries and
//!   cluster allocation do not depend on the caller's ordering.
//!
//! The FAT type is left to `fatfs`, which derives it from the cluster
//! count (FAT32 only with at least 65525 clusters, the rule mtools and
//! Windows enforce). With its default cluster sizes that yields FAT12
//! below 4 MiB, FAT16 below 512 MiB and FAT32 from 512 MiB. We re-check the
//! cluster count after formatting rather than trusting that silently.
//!
//! fatfs 0.3.6 also writes long-name entries in front of the "." and ".."
//! entries of every directory (and a non-zero ".." cluster for children
//! of the FAT32 root), which `fsck.fat` treats as corruption. No fixed
//! release exists, so [`format_fat`] finishes with a small raw pass that
//! rewrites those directories the way the FAT specification requires
//! (see `repair_dot_entries`).
//!
//! Formatting is a quick format: clusters that are never allocated keep
//! their previous bytes. Callers must hand in a zeroed region (a freshly
//! `set_len` sparse image is) for the result to be reproducible.

use crate::window::Window;
use anyhow::{bail, ensure, Context, Result};
use fatfs::{
    Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider,
};
use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// Where a file's contents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FatSource {
    /// Literal contents.
    Bytes(Vec<u8>),
    /// A host file, streamed into the volume.
    File(PathBuf),
}

/// One file to place on the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatFile {
    /// `/`-separated path inside the volume, e.g. `EFI/BOOT/BOOTX64.EFI`;
    /// parent directories are created as needed.
    pub path: String,
    /// Contents of the file.
    pub source: FatSource,
}

/// Everything that determines the bytes of a formatted volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatSpec {
    /// Volume label: at most 11 of `A-Z 0-9 space _ -`; empty means none.
    pub label: String,
    /// Volume serial number stored in the boot sector.
    pub volume_id: u32,
    /// Timestamp for every directory entry, in unix seconds (UTC),
    /// clamped to the FAT range 1980-01-01 to 2107-12-31.
    pub mtime: i64,
    /// Files to add; order does not matter.
    pub files: Vec<FatFile>,
}

/// Sector size used for every volume we create.
const SECTOR: u64 = 512;

/// Formats the first `size` bytes of `dev` as a FAT volume and adds the
/// files of `spec`.
///
/// Nothing outside `[0, size)` of `dev` is written. `size` must be a
/// multiple of 512.
pub fn format_fat<D: Read + Write + Seek>(dev: D, size: u64, spec: &FatSpec) -> Result<()> {
    let label = encode_label(&spec.label)?;
    ensure!(
        size.is_multiple_of(SECTOR),
        "fat volume size {size} is not a multiple of {SECTOR}"
    );
    let sectors = u32::try_from(size / SECTOR)
        .with_context(|| format!("fat volume of {size} bytes has too many sectors"))?;
    let files = sorted_files(&spec.files)?;

    // Bound every write to the volume even if fatfs misbehaves.
    let mut win = Window::new(dev, 0, size);
    let mut options = FormatVolumeOptions::new()
        .volume_id(spec.volume_id)
        .total_sectors(sectors);
    if let Some(label) = label {
        options = options.volume_label(label);
    }
    fatfs::format_volume(&mut win, options).context("format fat volume")?;

    // fatfs asserts (panics) unless the stream starts at position 0.
    win.seek(SeekFrom::Start(0)).context("rewind fat volume")?;
    let fs = FileSystem::new(&mut win, fs_options(spec.mtime)).context("mount new fat volume")?;
    let stats = fs.stats().context("read fat statistics")?;
    if fs.fat_type() == FatType::Fat32 && stats.total_clusters() < 65525 {
        bail!(
            "fatfs chose fat32 with only {} clusters, which mtools and windows reject",
            stats.total_clusters()
        );
    }
    {
        let root = fs.root_dir();
        for (path, source) in files {
            add_file(&root, &path, source).with_context(|| format!("add {path} to fat volume"))?;
        }
    }
    fs.unmount().context("unmount fat volume")?;
    repair_dot_entries(&mut win).context("repair fat directory dot entries")?;
    win.flush().context("flush fat volume")?;
    Ok(())
}

/// Most directory entries a reader visits in one call, over all the
/// directories it looks at. A hostile volume can chain a directory's
/// clusters into a loop (an endless listing) or make a directory its own
/// subdirectory (endless recursion); fatfs follows both, so every reader
/// here walks directories itself, within this bound and [`MAX_DEPTH`].
/// Our boot partitions hold a few dozen entries.
pub const MAX_ENTRIES: usize = 65_536;
/// Deepest directory nesting a reader follows.
pub const MAX_DEPTH: usize = 32;

/// Counts directory entries visited against [`MAX_ENTRIES`].
struct Budget(usize);

impl Budget {
    fn spend(&mut self, dir: &str) -> Result<()> {
        self.0 += 1;
        ensure!(
            self.0 <= MAX_ENTRIES,
            "fat directory /{dir}: more than {MAX_ENTRIES} directory entries visited (a looped \
             directory?)"
        );
        Ok(())
    }
}

/// Finds `path` (`/`-separated, case-insensitive as FAT is) by walking
/// the directories with a bounded iteration, instead of fatfs' unbounded
/// lookup.
fn lookup<'a, T: fatfs::ReadWriteSeek>(
    root: fatfs::Dir<'a, T>,
    path: &str,
) -> Result<fatfs::DirEntry<'a, T>> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    ensure!(
        !parts.is_empty() && parts.len() <= MAX_DEPTH,
        "fat path {path} is empty or nested too deeply"
    );
    let mut budget = Budget(0);
    let mut dir = root;
    let mut prefix = String::new();
    for (i, part) in parts.iter().enumerate() {
        let want: String = part.chars().flat_map(char::to_uppercase).collect();
        let mut found = None;
        for entry in dir.iter() {
            budget.spend(&prefix)?;
            let entry = entry.with_context(|| format!("read fat directory /{prefix}"))?;
            let same = |n: String| n.chars().flat_map(char::to_uppercase).eq(want.chars());
            if same(entry.file_name()) || same(entry.short_file_name()) {
                found = Some(entry);
                break;
            }
        }
        let Some(entry) = found else {
            bail!("{path} is not in the fat volume");
        };
        if i + 1 == parts.len() {
            ensure!(entry.is_file(), "{path} in the fat volume is not a file");
            return Ok(entry);
        }
        ensure!(
            entry.is_dir(),
            "/{prefix}{part} in the fat volume is not a directory"
        );
        prefix.push_str(part);
        prefix.push('/');
        dir = entry.to_dir();
    }
    bail!("{path} is not in the fat volume")
}

/// Reads the whole file at `path` (`/`-separated, case-insensitive as FAT
/// is) from the FAT volume on `dev`.
pub fn read_fat_file<D: Read + Write + Seek>(dev: D, path: &str) -> Result<Vec<u8>> {
    read_fat_file_max(dev, path, u64::MAX - 1)
}

/// [`read_fat_file`] for a file whose size an untrusted volume decides (a
/// manifest on an image under verification): at most `max` bytes are read
/// into memory, and a larger file is an error naming its path.
pub fn read_fat_file_max<D: Read + Write + Seek>(dev: D, path: &str, max: u64) -> Result<Vec<u8>> {
    let fs = mount(dev)?;
    let mut out = Vec::new();
    {
        let file = lookup(fs.root_dir(), path)?.to_file();
        file.take(max.saturating_add(1))
            .read_to_end(&mut out)
            .with_context(|| format!("read {path} from fat volume"))?;
    }
    ensure!(
        out.len() as u64 <= max,
        "{path} in the fat volume is over the {max}-byte limit"
    );
    fs.unmount().context("unmount fat volume")?;
    Ok(out)
}

/// Replaces the contents of the existing file at `path` on the FAT volume
/// on `dev` with `data` (a boot environment switched for a test or a
/// `cargo xtask qemu --slot b` boot; a manifest tampered with in a test).
pub fn rewrite_fat_file<D: Read + Write + Seek>(dev: D, path: &str, data: &[u8]) -> Result<()> {
    let fs = mount(dev)?;
    {
        let mut file = lookup(fs.root_dir(), path)?.to_file();
        file.truncate()
            .with_context(|| format!("truncate {path} in fat volume"))?;
        file.write_all(data)
            .with_context(|| format!("write {path} in fat volume"))?;
        file.flush()
            .with_context(|| format!("flush {path} in fat volume"))?;
    }
    fs.unmount().context("unmount fat volume")?;
    Ok(())
}

/// sha256 and size of the file at `path` on the FAT volume, streamed
/// through a fixed buffer (kernels and initrds are tens of MiB). At most
/// `max + 1` bytes are read: a larger file reports that size and the hash
/// of its first `max + 1` bytes, which a caller expecting at most `max`
/// bytes rejects either way (a looped cluster chain is otherwise read up
/// to the 4 GiB the directory entry may claim).
pub fn hash_fat_file<D: Read + Write + Seek>(
    dev: D,
    path: &str,
    max: u64,
) -> Result<([u8; 32], u64)> {
    use sha2::Digest;
    let fs = mount(dev)?;
    let res = {
        let file = lookup(fs.root_dir(), path)?.to_file();
        let mut h = sha2::Sha256::new();
        let n = std::io::copy(&mut file.take(max.saturating_add(1)), &mut h)
            .with_context(|| format!("read {path} from fat volume"))?;
        (h.finalize().into(), n)
    };
    fs.unmount().context("unmount fat volume")?;
    Ok(res)
}

/// Lists every regular file of the FAT volume on `dev` recursively as
/// (`/`-separated path, size in bytes), sorted by path. Directories
/// themselves are not listed. Bounded by [`MAX_ENTRIES`] and [`MAX_DEPTH`].
pub fn list_fat<D: Read + Write + Seek>(dev: D) -> Result<Vec<(String, u64)>> {
    let fs = mount(dev)?;
    let mut out = Vec::new();
    walk(&fs.root_dir(), "", 0, &mut Budget(0), &mut out)?;
    fs.unmount().context("unmount fat volume")?;
    out.sort();
    Ok(out)
}

/// Mounts the volume starting at byte 0 of `dev` for reading.
fn mount<D: Read + Write + Seek>(mut dev: D) -> Result<FileSystem<D>> {
    // fatfs asserts (panics) unless the stream starts at position 0.
    dev.seek(SeekFrom::Start(0)).context("rewind fat volume")?;
    FileSystem::new(dev, fs_options(0)).context("mount fat volume")
}

fn walk<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<'_, T>,
    prefix: &str,
    depth: usize,
    budget: &mut Budget,
    out: &mut Vec<(String, u64)>,
) -> Result<()> {
    ensure!(
        depth < MAX_DEPTH,
        "fat directory /{prefix} is nested more than {MAX_DEPTH} levels deep (a directory \
         that contains itself?)"
    );
    for entry in dir.iter() {
        budget.spend(prefix)?;
        let entry = entry.with_context(|| format!("read fat directory /{prefix}"))?;
        let name = entry.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let path = format!("{prefix}{name}");
        if entry.is_dir() {
            walk(&entry.to_dir(), &format!("{path}/"), depth + 1, budget, out)?;
        } else {
            out.push((path, entry.len()));
        }
    }
    Ok(())
}

fn add_file<T: fatfs::ReadWriteSeek>(
    root: &fatfs::Dir<'_, T>,
    path: &str,
    source: &FatSource,
) -> Result<()> {
    let (parents, name) = path.rsplit_once('/').unwrap_or(("", path));
    // fatfs' create_dir only creates the last component of a path, so walk
    // down creating (or opening) one level at a time.
    let mut dir = root.clone();
    for comp in parents.split('/').filter(|c| !c.is_empty()) {
        dir = dir
            .create_dir(comp)
            .with_context(|| format!("create directory {comp}"))?;
    }
    let mut file = dir.create_file(name).context("create file")?;
    match source {
        FatSource::Bytes(bytes) => file.write_all(bytes).context("write contents")?,
        FatSource::File(host) => {
            let mut src =
                std::fs::File::open(host).with_context(|| format!("open {}", host.display()))?;
            io::copy(&mut src, &mut file).with_context(|| format!("copy {}", host.display()))?;
        }
    }
    file.flush().context("flush file")?;
    Ok(())
}

/// Validates the paths and returns them normalised and sorted.
fn sorted_files(files: &[FatFile]) -> Result<Vec<(String, &FatSource)>> {
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let path = f.path.trim_start_matches('/');
        for comp in path.split('/') {
            ensure!(
                !comp.is_empty() && comp != "." && comp != "..",
                "fat path {:?} has an empty, '.' or '..' component",
                f.path
            );
            ensure!(
                !comp
                    .chars()
                    .any(|c| c < ' ' || "\\\"*:<>?|\u{7f}".contains(c)),
                "fat path {:?} contains a character fat does not allow",
                f.path
            );
            ensure!(
                comp.encode_utf16().count() <= 255,
                "fat path {:?} has a component longer than 255 characters",
                f.path
            );
            ensure!(
                !comp.ends_with(' ') && !comp.ends_with('.'),
                "fat path {:?} has a component ending in a space or dot",
                f.path
            );
        }
        out.push((path.to_string(), &f.source));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    // FAT names are case-insensitive: "a/x" and "A/X" are the same file, and
    // a file cannot also be a directory.
    let folded: Vec<String> = out.iter().map(|(p, _)| p.to_uppercase()).collect();
    let mut seen = BTreeMap::new();
    for (p, fold) in out.iter().map(|(p, _)| p).zip(&folded) {
        if let Some(prev) = seen.insert(fold.as_str(), p) {
            bail!("fat paths {prev:?} and {p:?} name the same file");
        }
    }
    for (p, fold) in out.iter().map(|(p, _)| p).zip(&folded) {
        let dir_prefix = format!("{fold}/");
        if let Some((_, q)) = seen.range(dir_prefix.as_str()..).next() {
            if q.to_uppercase().starts_with(&dir_prefix) {
                bail!("fat path {p:?} is a file but {q:?} needs it to be a directory");
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------
// Post-format repair of fatfs 0.3.6 directory output.
//
// fatfs 0.3.6 writes a long-file-name entry before *every* short entry,
// including the "." and ".." entries of each new directory, and points the
// ".." of a directory in the FAT32 root at the root cluster instead of 0.
// The FAT specification requires "." and ".." to be the first two slots
// and ".." to be 0 for the root; fsck.fat 4.2 "repairs" such directories
// by renaming and deleting the dot entries. No newer fatfs is published,
// so after fatfs is done we walk the directory tree at the raw level and
// rewrite each subdirectory: the LFN entries attached to "." and ".." are
// dropped, the rest is shifted up (nothing on disk refers to directory
// slot positions), and the freed slots at the end become end-of-directory
// zeros. The result is what a conforming formatter would have written.
// ---------------------------------------------------------------------

/// Size of one directory entry.
const DIR_ENTRY: usize = 32;
/// Attribute value marking a long-file-name entry.
const ATTR_LFN: u8 = 0x0F;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

/// The on-disk geometry needed to walk directories, from the boot sector.
struct Geometry {
    fat_bits: u32,
    cluster_size: u64,
    fat_offset: u64,
    root_dir: Option<(u64, u64)>, // FAT12/16 fixed root: (offset, length)
    root_cluster: u32,            // FAT32 root cluster
    data_offset: u64,
    clusters: u32,
}

impl Geometry {
    fn read<D: Read + Seek>(dev: &mut D) -> Result<Self> {
        let mut bs = [0u8; 512];
        dev.seek(SeekFrom::Start(0))?;
        dev.read_exact(&mut bs).context("read boot sector")?;
        let u16_at = |o: usize| u64::from(u16::from_le_bytes([bs[o], bs[o + 1]]));
        let u32_at = |o: usize| u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]);
        let bytes_per_sector = u16_at(11);
        let sectors_per_cluster = u64::from(bs[13]);
        let reserved = u16_at(14);
        let fats = u64::from(bs[16]);
        let root_entries = u16_at(17);
        let fat_size = match u16_at(22) {
            0 => u64::from(u32_at(36)),
            n => n,
        };
        let total = match u16_at(19) {
            0 => u64::from(u32_at(32)),
            n => n,
        };
        ensure!(
            bytes_per_sector >= 512 && sectors_per_cluster > 0 && fats > 0,
            "boot sector has an invalid geometry"
        );
        let root_dir_sectors = (root_entries * DIR_ENTRY as u64).div_ceil(bytes_per_sector);
        let first_data_sector = reserved + fats * fat_size + root_dir_sectors;
        ensure!(
            total > first_data_sector,
            "boot sector describes no data area"
        );
        let clusters = (total - first_data_sector) / sectors_per_cluster;
        // The FAT type is defined by the cluster count alone.
        let fat_bits = match clusters {
            0..4085 => 12,
            4085..65525 => 16,
            _ => 32,
        };
        let root_dir = (fat_bits != 32).then(|| {
            (
                (reserved + fats * fat_size) * bytes_per_sector,
                root_dir_sectors * bytes_per_sector,
            )
        });
        Ok(Geometry {
            fat_bits,
            cluster_size: sectors_per_cluster * bytes_per_sector,
            fat_offset: reserved * bytes_per_sector,
            root_dir,
            root_cluster: u32_at(44),
            data_offset: first_data_sector * bytes_per_sector,
            clusters: u32::try_from(clusters).context("too many clusters")?,
        })
    }

    fn cluster_offset(&self, cluster: u32) -> Result<u64> {
        ensure!(
            (2..self.clusters + 2).contains(&cluster),
            "cluster {cluster} is outside the data area"
        );
        Ok(self.data_offset + u64::from(cluster - 2) * self.cluster_size)
    }

    /// Next cluster of a chain, or None at its end.
    fn next<D: Read + Seek>(&self, dev: &mut D, cluster: u32) -> Result<Option<u32>> {
        let c = u64::from(cluster);
        let (offset, width) = match self.fat_bits {
            12 => (c + c / 2, 2),
            16 => (c * 2, 2),
            _ => (c * 4, 4),
        };
        let mut raw = [0u8; 4];
        dev.seek(SeekFrom::Start(self.fat_offset + offset))?;
        dev.read_exact(&mut raw[..width])
            .context("read fat entry")?;
        let value = u32::from_le_bytes(raw);
        let (value, end) = match self.fat_bits {
            12 if cluster % 2 == 1 => (value >> 4, 0xFF8),
            12 => (value & 0xFFF, 0xFF8),
            16 => (value, 0xFFF8),
            _ => (value & 0x0FFF_FFFF, 0x0FFF_FFF8),
        };
        Ok((value < end).then_some(value))
    }

    /// All clusters of the chain starting at `first`, guarding against loops.
    fn chain<D: Read + Seek>(&self, dev: &mut D, first: u32) -> Result<Vec<u32>> {
        let mut out = vec![first];
        let mut cur = first;
        while let Some(next) = self.next(dev, cur)? {
            ensure!(
                out.len() <= self.clusters as usize,
                "cluster chain from {first} loops"
            );
            out.push(next);
            cur = next;
        }
        Ok(out)
    }
}

/// A directory's raw bytes and the (offset, length) pieces of the volume
/// they came from, so it can be written back in place.
struct RawDir {
    bytes: Vec<u8>,
    pieces: Vec<(u64, u64)>,
}

/// Reads the directory starting at `first_cluster`, or the root for None.
fn read_dir<D: Read + Seek>(
    dev: &mut D,
    geo: &Geometry,
    first_cluster: Option<u32>,
) -> Result<RawDir> {
    // The FAT32 root is an ordinary cluster chain; FAT12/16 have a fixed region.
    let chain_start = match (first_cluster, geo.root_dir) {
        (Some(c), _) => Some(c),
        (None, None) => Some(geo.root_cluster),
        (None, Some(_)) => None,
    };
    let pieces = match (chain_start, geo.root_dir) {
        (Some(c), _) => geo
            .chain(dev, c)?
            .into_iter()
            .map(|c| Ok((geo.cluster_offset(c)?, geo.cluster_size)))
            .collect::<Result<Vec<_>>>()?,
        (None, Some(root)) => vec![root],
        (None, None) => Vec::new(),
    };
    let mut bytes = Vec::new();
    for &(offset, len) in &pieces {
        let start = bytes.len();
        bytes.resize(
            start + usize::try_from(len).context("directory too large")?,
            0,
        );
        dev.seek(SeekFrom::Start(offset))?;
        dev.read_exact(&mut bytes[start..])
            .context("read directory")?;
    }
    Ok(RawDir { bytes, pieces })
}

fn first_cluster_of(entry: &[u8]) -> u32 {
    u32::from(u16::from_le_bytes([entry[20], entry[21]])) << 16
        | u32::from(u16::from_le_bytes([entry[26], entry[27]]))
}

/// Walks every directory and fixes the dot entries of subdirectories.
fn repair_dot_entries<D: Read + Write + Seek>(dev: &mut D) -> Result<()> {
    let geo = Geometry::read(dev)?;
    // (directory first cluster or None for the root, parent is the root)
    let mut stack: Vec<(Option<u32>, bool)> = vec![(None, false)];
    let mut visited = std::collections::BTreeSet::new();
    while let Some((dir, parent_is_root)) = stack.pop() {
        let RawDir { mut bytes, pieces } = read_dir(dev, &geo, dir)?;
        for entry in bytes.chunks_exact(DIR_ENTRY) {
            match entry[0] {
                0x00 => break,
                0xE5 => continue,
                _ => {}
            }
            let attr = entry[11];
            if attr == ATTR_LFN || attr & ATTR_VOLUME != 0 || attr & ATTR_DIR == 0 {
                continue;
            }
            if &entry[..11] == DOT || &entry[..11] == DOTDOT {
                continue;
            }
            let cluster = first_cluster_of(entry);
            ensure!(
                visited.insert(cluster),
                "directory cluster {cluster} is reachable twice"
            );
            stack.push((Some(cluster), dir.is_none()));
        }
        if dir.is_some() && compact_dot_entries(&mut bytes, parent_is_root) {
            let mut start = 0usize;
            for (offset, len) in pieces {
                let end = start + len as usize;
                dev.seek(SeekFrom::Start(offset))?;
                dev.write_all(&bytes[start..end])
                    .context("write directory")?;
                start = end;
            }
        }
    }
    Ok(())
}

/// Drops LFN entries that precede "." or "..", shifts the rest up, and
/// zeroes ".." when the parent is the root. Returns whether anything changed.
fn compact_dot_entries(bytes: &mut [u8], parent_is_root: bool) -> bool {
    let entries: Vec<&[u8]> = bytes.chunks_exact(DIR_ENTRY).collect();
    let mut keep = vec![true; entries.len()];
    for (i, e) in entries.iter().enumerate() {
        if e[0] == 0 {
            break;
        }
        if e[11] != ATTR_LFN && (&e[..11] == DOT || &e[..11] == DOTDOT) {
            let mut j = i;
            while j > 0 && entries[j - 1][11] == ATTR_LFN && entries[j - 1][0] != 0xE5 {
                j -= 1;
                keep[j] = false;
            }
        }
    }
    let mut out: Vec<u8> = entries
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .flat_map(|(e, _)| e.iter().copied())
        .collect();
    out.resize(bytes.len(), 0);
    if parent_is_root {
        for e in out.chunks_exact_mut(DIR_ENTRY) {
            if e[0] == 0 {
                break;
            }
            if e[11] != ATTR_LFN && &e[..11] == DOTDOT {
                e[20..22].fill(0);
                e[26..28].fill(0);
            }
        }
    }
    let changed = out != bytes;
    bytes.copy_from_slice(&out);
    changed
}

/// Checks the label and pads it to the 11 bytes FAT stores.
fn encode_label(label: &str) -> Result<Option<[u8; 11]>> {
    if label.is_empty() {
        return Ok(None);
    }
    ensure!(
        label.len() <= 11,
        "fat label {label:?} is longer than 11 characters"
    );
    ensure!(
        label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b" _-".contains(&b)),
        "fat label {label:?} may only contain A-Z, 0-9, space, '_' and '-'"
    );
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(Some(out))
}

fn fs_options(mtime: i64) -> FsOptions {
    FsOptions::new()
        .update_accessed_date(false)
        .time_provider(fixed_time(mtime))
}

/// A time provider that always answers the same instant.
#[derive(Debug)]
struct FixedTime(DateTime);

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        self.0.date
    }

    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

/// Returns a `'static` provider for `mtime`.
///
/// fatfs 0.3 only accepts `&'static dyn TimeProvider`. Leaking one small
/// provider per distinct timestamp (interned, so repeated builds with the
/// same `SOURCE_DATE_EPOCH` leak nothing more) is simpler and safer than
/// a global mutable "current time" shared between threads.
fn fixed_time(mtime: i64) -> &'static FixedTime {
    static CACHE: OnceLock<Mutex<BTreeMap<i64, &'static FixedTime>>> = OnceLock::new();
    let secs = clamp_fat_time(mtime);
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .entry(secs)
        .or_insert_with(|| Box::leak(Box::new(FixedTime(dos_date_time(secs)))))
}

/// Unix seconds of 1980-01-01T00:00:00Z, the first FAT timestamp.
const FAT_MIN: i64 = 315_532_800;
/// Unix seconds of 2107-12-31T23:59:58Z, the last FAT timestamp (FAT
/// stores seconds in 2-second steps).
const FAT_MAX: i64 = 4_354_819_198;

fn clamp_fat_time(secs: i64) -> i64 {
    secs.clamp(FAT_MIN, FAT_MAX)
}

/// Converts clamped unix seconds to a FAT date and time (UTC).
fn dos_date_time(secs: i64) -> DateTime {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = crate::time::civil_from_days(days);
    // The clamp keeps every field well inside u16.
    DateTime {
        date: Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: Time {
            hour: (rem / 3600) as u16,
            min: (rem / 60 % 60) as u16,
            sec: (rem % 60) as u16,
            millis: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const MIB: u64 = 1 << 20;

    fn spec() -> FatSpec {
        FatSpec {
            label: "ESP".into(),
            volume_id: 0x1234_abcd,
            mtime: 1_700_000_000,
            files: vec![
                FatFile {
                    path: "slotsmith/b/manifest".into(),
                    source: FatSource::Bytes(b"slot b\n".to_vec()),
                },
                FatFile {
                    path: "EFI/BOOT/BOOTX64.EFI".into(),
                    source: FatSource::Bytes(vec![0x4d; 70_000]),
                },
                FatFile {
                    path: "slotsmith/a/manifest".into(),
                    source: FatSource::Bytes(b"slot a\n".to_vec()),
                },
            ],
        }
    }

    fn formatted(spec: &FatSpec, size: u64) -> Vec<u8> {
        let mut dev = Cursor::new(vec![0u8; size as usize]);
        format_fat(&mut dev, size, spec).unwrap();
        dev.into_inner()
    }

    #[test]
    fn format_is_deterministic_and_order_independent() {
        let a = formatted(&spec(), 16 * MIB);
        let b = formatted(&spec(), 16 * MIB);
        assert!(a == b, "two formats differ");
        let mut reversed = spec();
        reversed.files.reverse();
        assert!(
            a == formatted(&reversed, 16 * MIB),
            "file order changed the bytes"
        );
        let mut later = spec();
        later.mtime += 3600;
        assert!(a != formatted(&later, 16 * MIB), "mtime had no effect");
    }

    /// A hostile volume whose directory contains itself: listing and
    /// lookups end with an error naming the loop, not a stack overflow
    /// (found by the gpt_verify fuzz target).
    #[test]
    fn a_directory_that_contains_itself_is_an_error() {
        let spec = FatSpec {
            files: vec![FatFile {
                path: "dira/dirb/file".into(),
                source: FatSource::Bytes(b"x".to_vec()),
            }],
            ..spec()
        };
        let mut img = formatted(&spec, MIB);
        let entry = |img: &[u8], name: &[u8; 11]| {
            (0..img.len() - 32)
                .step_by(32)
                .find(|&i| &img[i..i + 11] == name && img[i + 11] & ATTR_DIR != 0)
                .unwrap()
        };
        let a = entry(&img, b"DIRA       ");
        let b = entry(&img, b"DIRB       ");
        let cluster = [img[a + 26], img[a + 27]];
        img[b + 26..b + 28].copy_from_slice(&cluster);
        let err = format!("{:#}", list_fat(Cursor::new(&mut img)).unwrap_err());
        assert!(err.contains("nested more than 32 levels deep"), "{err}");
        let deep = "dira/".repeat(31) + "file";
        let err = format!(
            "{:#}",
            read_fat_file(Cursor::new(&mut img), &deep).unwrap_err()
        );
        assert!(err.contains("is not in the fat volume"), "{err}");
        let deeper = "dira/dirb/".repeat(20) + "file";
        let err = format!(
            "{:#}",
            read_fat_file(Cursor::new(&mut img), &deeper).unwrap_err()
        );
        assert!(err.contains("is empty or nested too deeply"), "{err}");
    }

    /// A file whose size the volume decides is read only up to a bound.
    #[test]
    fn bounded_read_refuses_large_files() {
        let mut img = Cursor::new(formatted(&spec(), 4 * MIB));
        let path = "/EFI/BOOT/BOOTX64.EFI";
        assert_eq!(
            read_fat_file_max(&mut img, path, 70_000).unwrap().len(),
            70_000
        );
        let err = format!(
            "{:#}",
            read_fat_file_max(&mut img, path, 69_999).unwrap_err()
        );
        assert_eq!(
            err,
            format!("{path} in the fat volume is over the 69999-byte limit")
        );
    }

    #[test]
    fn files_read_back_and_list() {
        let mut img = Cursor::new(formatted(&spec(), 16 * MIB));
        assert_eq!(
            read_fat_file(&mut img, "slotsmith/a/manifest").unwrap(),
            b"slot a\n"
        );
        assert_eq!(
            read_fat_file(&mut img, "/efi/boot/bootx64.efi")
                .unwrap()
                .len(),
            70_000
        );
        assert!(read_fat_file(&mut img, "missing").is_err());
        assert_eq!(
            list_fat(&mut img).unwrap(),
            vec![
                ("EFI/BOOT/BOOTX64.EFI".to_string(), 70_000),
                ("slotsmith/a/manifest".to_string(), 7),
                ("slotsmith/b/manifest".to_string(), 7),
            ]
        );
        img.set_position(0);
        let fs = FileSystem::new(&mut img, FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), FatType::Fat16);
        assert_eq!(fs.volume_id(), 0x1234_abcd);
        assert_eq!(fs.volume_label(), "ESP");
        let e = fs.root_dir().iter().next().unwrap().unwrap();
        let m = e.modified();
        assert_eq!((m.date.year, m.date.month, m.date.day), (2023, 11, 14));
        assert_eq!((m.time.hour, m.time.min, m.time.sec), (22, 13, 20));
        assert_eq!(e.created(), m);
    }

    #[test]
    fn stays_inside_its_window() {
        let mut disk = Cursor::new(vec![0xA5u8; (10 * MIB) as usize]);
        let win = Window::new(&mut disk, MIB, 8 * MIB);
        format_fat(win, 8 * MIB, &spec()).unwrap();
        let disk = disk.into_inner();
        assert!(disk[..MIB as usize].iter().all(|&b| b == 0xA5));
        assert!(disk[(9 * MIB) as usize..].iter().all(|&b| b == 0xA5));
    }

    #[test]
    fn rejects_bad_specs() {
        let mut s = spec();
        s.label = "esp".into();
        let mut dev = Cursor::new(vec![0u8; (8 * MIB) as usize]);
        assert!(format!("{:#}", format_fat(&mut dev, 8 * MIB, &s).unwrap_err()).contains("label"));
        s.label = "TWELVE CHARS".into();
        assert!(format_fat(&mut dev, 8 * MIB, &s).is_err());

        let mut s = spec();
        s.files.push(FatFile {
            path: "EFI/boot/bootx64.efi".into(),
            source: FatSource::Bytes(vec![]),
        });
        let err = format!("{:#}", format_fat(&mut dev, 8 * MIB, &s).unwrap_err());
        assert!(err.contains("name the same file"), "{err}");

        let mut s = spec();
        s.files.push(FatFile {
            path: "slotsmith".into(),
            source: FatSource::Bytes(vec![]),
        });
        let err = format!("{:#}", format_fat(&mut dev, 8 * MIB, &s).unwrap_err());
        assert!(err.contains("needs it to be a directory"), "{err}");

        for bad in ["a//b", "../x", "a/./b", "a:b", ""] {
            let mut s = spec();
            s.files[0].path = bad.into();
            assert!(
                format_fat(&mut dev, 8 * MIB, &s).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(format_fat(&mut dev, 8 * MIB + 1, &spec()).is_err());
    }

    /// The first two slots of `dir` as (name, first cluster, attribute).
    fn dot_slots<D: Read + Seek>(img: &mut D, path: &[&str]) -> Vec<(Vec<u8>, u32, u8)> {
        let geo = Geometry::read(img).unwrap();
        let mut cluster = None;
        for name in path {
            let dir = read_dir(img, &geo, cluster).unwrap();
            let entry = dir
                .bytes
                .chunks_exact(DIR_ENTRY)
                .find(|e| {
                    e[11] & ATTR_DIR != 0
                        && e[11] != ATTR_LFN
                        && e[..11].starts_with(name.as_bytes())
                })
                .unwrap();
            cluster = Some(first_cluster_of(entry));
        }
        let dir = read_dir(img, &geo, cluster).unwrap();
        dir.bytes
            .chunks_exact(DIR_ENTRY)
            .take(2)
            .map(|e| (e[..11].to_vec(), first_cluster_of(e), e[11]))
            .collect()
    }

    #[test]
    fn dot_entries_are_conforming() {
        // 2 MiB is FAT12, 16 MiB FAT16, 600 MiB FAT32 (a sparse temp file
        // rather than 600 MiB of RAM).
        for size in [2 * MIB, 16 * MIB, 600 * MIB] {
            let mut img = tempfile::tempfile().unwrap();
            img.set_len(size).unwrap();
            format_fat(&mut img, size, &spec()).unwrap();
            let top = dot_slots(&mut img, &["EFI"]);
            let efi_cluster = top[0].1;
            assert_eq!(top[0].0, DOT.to_vec(), "size {size}");
            assert_eq!(
                top[1],
                (DOTDOT.to_vec(), 0, ATTR_DIR),
                "size {size}: '..' of a root child is 0"
            );
            let boot = dot_slots(&mut img, &["EFI", "BOOT"]);
            assert_eq!(boot[0].0, DOT.to_vec());
            assert_eq!(boot[1], (DOTDOT.to_vec(), efi_cluster, ATTR_DIR));
            assert_eq!(list_fat(&mut img).unwrap().len(), 3);
        }
    }

    #[test]
    fn tiny_volumes_fail_cleanly() {
        for size in [0, 512, 8192, 64 * 1024, 200 * 1024, MIB] {
            let mut dev = Cursor::new(vec![0u8; size as usize]);
            // Either outcome is fine; panicking is not.
            let _ = format_fat(&mut dev, size, &spec());
        }
        let mut dev = Cursor::new(vec![0u8; 4096]);
        assert!(read_fat_file(&mut dev, "x").is_err());
        assert!(list_fat(&mut dev).is_err());
    }

    #[test]
    fn fat_time_conversion_and_clamp() {
        let d = dos_date_time(clamp_fat_time(0));
        assert_eq!((d.date.year, d.date.month, d.date.day), (1980, 1, 1));
        let d = dos_date_time(clamp_fat_time(i64::MAX));
        assert_eq!((d.date.year, d.date.month, d.date.day), (2107, 12, 31));
        assert_eq!((d.time.hour, d.time.min, d.time.sec), (23, 59, 58));
        let d = dos_date_time(951_782_400); // 2000-02-29
        assert_eq!((d.date.year, d.date.month, d.date.day), (2000, 2, 29));
        assert!(
            std::ptr::eq(fixed_time(5), fixed_time(7)),
            "clamped times share a provider"
        );
    }
}
