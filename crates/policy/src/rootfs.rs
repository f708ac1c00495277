//! Read-only views of a root filesystem for `apply` and `audit`.
//!
//! The audit must read the BUILT image, not the staging directory it came
//! from: a rootless build (fakeroot, user namespaces) can show root-owned,
//! correctly-moded files in staging while the packed image says otherwise,
//! and a packing step can drop or rewrite files. [`SquashfsRootfs`] therefore
//! parses the squashfs image file itself (with `backhand`, no mounting, no
//! root). [`MemRootfs`] is an in-memory tree used by tests and by the build
//! for its view of the rootfs before packing.
//!
//! [`Index`] adds what both need on top: lookups that follow symlinks the
//! way the kernel would inside the image (absolute targets resolve against
//! the image root, never the build host).

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use backhand::{FilesystemReader, InnerNode, SquashfsFileReader};
use serde::Serialize;

/// The type of a filesystem entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link and its target as stored.
    Symlink {
        /// The link text.
        target: String,
    },
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
}

/// Metadata of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The entry type.
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777` mask).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes for files, 0 otherwise.
    pub size: u64,
}

/// Read access to a root filesystem. Paths are absolute and normalised
/// (`/etc/passwd`); the root itself is `/`.
pub trait RootfsRead {
    /// Every entry, sorted by path.
    fn entries(&self) -> Vec<(String, Entry)>;
    /// The contents of the regular file at exactly `path` (symlinks are not
    /// followed; see [`Index::read_resolved`]); `None` when there is no
    /// regular file there.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>>;
}

/// Files larger than this are refused by [`SquashfsRootfs::read`]: the audit
/// only reads configuration files, and a corrupt size field must not make
/// it allocate gigabytes.
pub const MAX_READ: u64 = 64 << 20;

/// An in-memory root filesystem.
#[derive(Debug, Clone, Default)]
pub struct MemRootfs {
    entries: BTreeMap<String, (Entry, Vec<u8>)>,
}

impl MemRootfs {
    /// An empty tree with only `/`.
    pub fn new() -> MemRootfs {
        let mut fs = MemRootfs::default();
        fs.entries
            .insert("/".into(), (dir_entry(0o755), Vec::new()));
        fs
    }

    /// Inserts an entry (replacing what was at `path`), creating missing
    /// parent directories as 0755 root:root.
    pub fn insert(&mut self, path: &str, entry: Entry, content: Vec<u8>) {
        self.mkparents(path);
        self.entries.insert(path.to_string(), (entry, content));
    }

    /// A regular file owned by root.
    pub fn file(&mut self, path: &str, mode: u32, content: impl Into<Vec<u8>>) -> &mut Self {
        self.file_owned(path, mode, 0, 0, content)
    }

    /// A regular file with an owner and group.
    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        content: impl Into<Vec<u8>>,
    ) -> &mut Self {
        let content = content.into();
        let e = Entry {
            kind: EntryKind::File,
            mode: mode & 0o7777,
            uid,
            gid,
            size: content.len() as u64,
        };
        self.insert(path, e, content);
        self
    }

    /// A directory owned by root.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.insert(path, dir_entry(mode), Vec::new());
        self
    }

    /// A symlink.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let e = Entry {
            kind: EntryKind::Symlink {
                target: target.to_string(),
            },
            mode: 0o777,
            uid: 0,
            gid: 0,
            size: 0,
        };
        self.insert(path, e, Vec::new());
        self
    }

    /// Removes `path` and everything below it.
    pub fn remove(&mut self, path: &str) -> &mut Self {
        let prefix = format!("{path}/");
        self.entries
            .retain(|p, _| p != path && !p.starts_with(&prefix));
        self
    }

    /// Changes the permission bits of an existing entry.
    pub fn chmod(&mut self, path: &str, mode: u32) -> &mut Self {
        if let Some((e, _)) = self.entries.get_mut(path) {
            e.mode = mode & 0o7777;
        }
        self
    }

    /// Applies generated settings the way the build does: removals first,
    /// then files (replacing whatever was there), symlinks and mode changes.
    pub fn apply(&mut self, g: &crate::apply::Generated) -> &mut Self {
        for r in &g.remove {
            self.remove(&r.path);
        }
        for f in &g.files {
            self.remove(&f.path);
            self.file_owned(&f.path, f.mode, f.uid, f.gid, f.content.clone());
        }
        for l in &g.symlinks {
            self.remove(&l.path);
            self.symlink(&l.path, &l.target);
        }
        for c in &g.chmod {
            self.chmod(&c.path, c.mode);
        }
        self
    }

    fn mkparents(&mut self, path: &str) {
        let mut p = path;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            let key = if p.is_empty() { "/" } else { p };
            if self.entries.contains_key(key) {
                break;
            }
            self.entries
                .insert(key.to_string(), (dir_entry(0o755), Vec::new()));
        }
    }
}

fn dir_entry(mode: u32) -> Entry {
    Entry {
        kind: EntryKind::Dir,
        mode: mode & 0o7777,
        uid: 0,
        gid: 0,
        size: 0,
    }
}

impl RootfsRead for MemRootfs {
    fn entries(&self) -> Vec<(String, Entry)> {
        self.entries
            .iter()
            .map(|(p, (e, _))| (p.clone(), e.clone()))
            .collect()
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        Ok(match self.entries.get(path) {
            Some((e, c)) if e.kind == EntryKind::File => Some(c.clone()),
            _ => None,
        })
    }
}

/// A squashfs image file, read without mounting.
pub struct SquashfsRootfs {
    fs: FilesystemReader<'static>,
    /// path -> index into `fs.root.nodes`
    index: BTreeMap<String, usize>,
}

impl SquashfsRootfs {
    /// Opens and indexes an image. Any of gzip, xz and zstd compression.
    pub fn open(path: &Path) -> Result<SquashfsRootfs> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open squashfs image {}", path.display()))?;
        let fs = FilesystemReader::from_reader(BufReader::new(file))
            .map_err(|e| anyhow::anyhow!("cannot read squashfs image {}: {e}", path.display()))?;
        let mut index = BTreeMap::new();
        for (i, node) in fs.root.nodes.iter().enumerate() {
            let p = node.fullpath.to_string_lossy().into_owned();
            let p = if p.is_empty() { "/".to_string() } else { p };
            index.insert(p, i);
        }
        Ok(SquashfsRootfs { fs, index })
    }
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
        read_file(&self.fs, f, path).map(Some)
    }
}

fn read_file(
    fs: &FilesystemReader<'static>,
    f: &SquashfsFileReader,
    path: &str,
) -> Result<Vec<u8>> {
    let len = f.file_len() as u64;
    if len > MAX_READ {
        bail!("{path} is {len} bytes, more than the {MAX_READ} read limit");
    }
    let mut out = Vec::with_capacity(len as usize);
    let mut reader = fs
        .file(f)
        .reader_checked()
        .map_err(|e| anyhow::anyhow!("cannot read {path} from the squashfs image: {e}"))?;
    reader
        .by_ref()
        .take(MAX_READ + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("cannot read {path} from the squashfs image"))?;
    if out.len() as u64 != len {
        bail!("{path}: read {} bytes, the inode says {len}", out.len());
    }
    Ok(out)
}

/// A built ext4 rootfs image, read with `ext4-view` (a read-only ext4
/// reader): the audit sees owners, modes and contents as stored in the
/// image, exactly as with [`SquashfsRootfs`].
pub struct Ext4Rootfs {
    fs: ext4_view::Ext4,
    entries: BTreeMap<String, Entry>,
}

impl Ext4Rootfs {
    /// Opens an ext4 image file and indexes every entry.
    pub fn open(path: &Path) -> Result<Ext4Rootfs> {
        let fs = ext4_view::Ext4::load_from_path(path)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("reading ext4 image {}", path.display()))?;
        let mut entries = BTreeMap::new();
        let root = fs
            .metadata("/")
            .map_err(|e| anyhow::anyhow!("reading /: {e}"))?;
        entries.insert("/".to_string(), ext4_entry(&fs, "/", &root)?);
        let mut dirs = vec!["/".to_string()];
        while let Some(dir) = dirs.pop() {
            let listing = fs
                .read_dir(dir.as_str())
                .map_err(|e| anyhow::anyhow!("listing {dir}: {e}"))?;
            for item in listing {
                let item = item.map_err(|e| anyhow::anyhow!("listing {dir}: {e}"))?;
                let name = item.file_name();
                let name = name
                    .as_str()
                    .map_err(|_| anyhow::anyhow!("{dir}: a name is not UTF-8"))?;
                if name == "." || name == ".." {
                    continue;
                }
                let path = if dir == "/" {
                    format!("/{name}")
                } else {
                    format!("{dir}/{name}")
                };
                let md = item
                    .metadata()
                    .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
                let entry = ext4_entry(&fs, &path, &md)?;
                if entry.kind == EntryKind::Dir {
                    dirs.push(path.clone());
                }
                entries.insert(path, entry);
            }
        }
        Ok(Ext4Rootfs { fs, entries })
    }
}

fn ext4_entry(fs: &ext4_view::Ext4, path: &str, md: &ext4_view::Metadata) -> Result<Entry> {
    use ext4_view::FileType;
    let kind = match md.file_type() {
        FileType::Directory => EntryKind::Dir,
        FileType::Regular => EntryKind::File,
        FileType::Symlink => {
            let target = fs
                .read_link(path)
                .map_err(|e| anyhow::anyhow!("reading link {path}: {e}"))?;
            let target = target
                .to_str()
                .map_err(|_| anyhow::anyhow!("{path}: link target is not UTF-8"))?;
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
                if e.size > MAX_READ {
                    bail!("{path} is {} bytes, more than the audit reads", e.size);
                }
                let data = self
                    .fs
                    .read(path)
                    .map_err(|err| anyhow::anyhow!("reading {path}: {err}"))?;
                Ok(Some(data))
            }
            _ => Ok(None),
        }
    }
}

/// Entries by path, with symlink resolution inside the image.
pub struct Index<'a> {
    fs: &'a dyn RootfsRead,
    /// Every entry by path.
    pub map: BTreeMap<String, Entry>,
}

/// Symlink hops allowed before giving up, as the kernel's limit.
const MAX_HOPS: usize = 40;

impl<'a> Index<'a> {
    /// Indexes `fs`.
    pub fn new(fs: &'a dyn RootfsRead) -> Index<'a> {
        Index {
            fs,
            map: fs.entries().into_iter().collect(),
        }
    }

    /// The entry at exactly `path` (no symlink following).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.map.get(path)
    }

    /// Resolves every symlink in `path` inside the image; `None` when the
    /// links loop. The result need not exist.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut hops = 0;
        let mut pending: Vec<String> = split(path);
        pending.reverse();
        let mut cur: Vec<String> = Vec::new();
        while let Some(comp) = pending.pop() {
            if comp == "." || comp.is_empty() {
                continue;
            }
            if comp == ".." {
                cur.pop();
                continue;
            }
            cur.push(comp);
            let p = join(&cur);
            match self.map.get(&p) {
                Some(Entry {
                    kind: EntryKind::Symlink { target },
                    ..
                }) => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return None;
                    }
                    cur.pop();
                    if target.starts_with('/') {
                        cur.clear();
                    }
                    let mut t = split(target);
                    t.reverse();
                    pending.extend(t);
                }
                Some(_) => {}
                None => {
                    // Nothing exists below a missing component, so no
                    // further link can apply: the rest is appended as
                    // written (`/dev/null` in an image with an empty /dev).
                    while let Some(c) = pending.pop() {
                        match c.as_str() {
                            "" | "." => {}
                            ".." => {
                                cur.pop();
                            }
                            _ => cur.push(c),
                        }
                    }
                }
            }
        }
        Some(join(&cur))
    }

    /// The target a symlink at `path` resolves to (absolute, inside the
    /// image), when `path` is a symlink.
    pub fn link_target(&self, path: &str) -> Option<String> {
        match self.map.get(path) {
            Some(Entry {
                kind: EntryKind::Symlink { .. },
                ..
            }) => self.resolve(path),
            _ => None,
        }
    }

    /// Reads a file, following symlinks; `/dev/null` reads as empty (the
    /// systemd and sysctl.d convention for masking a file).
    pub fn read_resolved(&self, path: &str) -> Result<Option<(String, Vec<u8>)>> {
        let Some(real) = self.resolve(path) else {
            return Ok(None);
        };
        if real == "/dev/null" {
            return Ok(Some((real, Vec::new())));
        }
        Ok(self.fs.read(&real)?.map(|c| (real, c)))
    }

    /// Whether `path` resolves to a directory.
    pub fn is_dir(&self, path: &str) -> bool {
        self.resolve(path)
            .and_then(|p| self.map.get(&p))
            .is_some_and(|e| e.kind == EntryKind::Dir)
    }

    /// Names directly inside the directory `dir` (resolved), sorted.
    pub fn list_dir(&self, dir: &str) -> Vec<String> {
        let Some(real) = self.resolve(dir) else {
            return Vec::new();
        };
        if !self.is_dir(&real) {
            return Vec::new();
        }
        let prefix = if real == "/" {
            "/".to_string()
        } else {
            format!("{real}/")
        };
        self.map
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter_map(|(p, _)| {
                let rest = &p[prefix.len()..];
                (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_string())
            })
            .collect()
    }
}

fn split(p: &str) -> Vec<String> {
    p.split('/').map(str::to_string).collect()
}

fn join(comps: &[String]) -> String {
    if comps.is_empty() {
        "/".to_string()
    } else {
        format!("/{}", comps.join("/"))
    }
}

/// The sha256 of `data` as lowercase hex, for evidence.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_links_inside_the_image() {
        let mut fs = MemRootfs::new();
        fs.symlink("/lib", "usr/lib")
            .file("/usr/lib/systemd/system/nftables.service", 0o644, "x")
            .symlink("/etc/sysctl.d/99-sysctl.conf", "../sysctl.conf")
            .file("/etc/sysctl.conf", 0o644, "a=1")
            .symlink("/etc/x", "/dev/null")
            .symlink("/loop", "/loop");
        let ix = Index::new(&fs);
        assert_eq!(
            ix.resolve("/lib/systemd/system/nftables.service")
                .as_deref(),
            Some("/usr/lib/systemd/system/nftables.service")
        );
        assert_eq!(
            ix.read_resolved("/etc/sysctl.d/99-sysctl.conf")
                .unwrap()
                .unwrap()
                .1,
            b"a=1"
        );
        assert_eq!(ix.read_resolved("/etc/x").unwrap().unwrap().1, b"");
        assert_eq!(ix.resolve("/loop"), None);
        assert_eq!(ix.resolve("/nope/x").as_deref(), Some("/nope/x"));
        assert_eq!(ix.list_dir("/lib/systemd"), vec!["system".to_string()]);
    }
}
