//! The in-memory rootfs model.
//!
//! Rootless builds cannot chown, mknod or set `security.*` xattrs on the
//! host, so ownership, modes, device numbers, link structure and xattrs live
//! here, in a map from [`RelPath`] to [`Node`]; only regular-file contents
//! exist on disk (in our content store or in a read-only input). Exporters
//! turn the model into a tar stream or a staging tree plus fix-up script.
//!
//! Invariants kept by [`Tree::insert`] and [`Tree::remove`]:
//! * the root `""` exists and is a directory;
//! * every ancestor of every node is a directory, so no path ever resolves
//!   through a symlink (an `etc -> /` entry followed by `etc/passwd` is an
//!   error, never a write to the host's `/etc/passwd` at export time);
//! * a [`Kind::Hardlink`] always names an existing [`Kind::File`] (never
//!   another hardlink), so exporters only need one lookup.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;

use anyhow::{bail, Result};
use slotsmith_yaml::escape::shown;

use crate::limits::{self, shown_entry, Target};
use crate::path::RelPath;

/// Inode metadata taken from the inputs, never from the building user.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`& 0o7777`, no type).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Full xattr names (`security.capability`, `user.foo`) to raw values.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Meta {
    /// Metadata without xattrs.
    pub fn new(mode: u32, uid: u32, gid: u32, mtime: i64) -> Meta {
        Meta {
            mode: mode & 0o7777,
            uid,
            gid,
            mtime,
            xattrs: BTreeMap::new(),
        }
    }
}

/// Where a regular file's bytes live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A file in our own content store (written by a tarball import).
    Store(PathBuf),
    /// A file in a read-only input (directory base, layer file).
    Source(PathBuf),
    /// Bytes inside an uncompressed tarball, read in place: importing a
    /// 700 MB Debian base then costs a walk over its headers instead of a
    /// copy of every file into the store.
    Slice {
        /// The archive.
        archive: PathBuf,
        /// Where the file's bytes start in it.
        offset: u64,
    },
}

impl Content {
    /// Where the bytes are, for messages.
    pub fn location(&self) -> String {
        match self {
            Content::Store(p) | Content::Source(p) => p.display().to_string(),
            Content::Slice { archive, offset } => {
                format!("{} at byte {offset}", archive.display())
            }
        }
    }

    /// Opens exactly the `size` bytes of this content: the file itself
    /// (without following a symlink, and only a regular file), or the
    /// archive positioned at the slice. A content whose file no longer has
    /// room for `size` bytes is an error (it changed during the build).
    pub fn open(&self, size: u64) -> anyhow::Result<std::io::Take<std::fs::File>> {
        use anyhow::Context as _;
        use std::io::{Read, Seek, SeekFrom};
        let (path, offset) = match self {
            Content::Store(p) | Content::Source(p) => (p, 0),
            Content::Slice { archive, offset } => (archive, *offset),
        };
        let mut f = crate::overlay::read_source_file(path)?;
        let len = f
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        let end = offset.checked_add(size);
        let fits = match self {
            Content::Slice { .. } => end.is_some_and(|e| e <= len),
            _ => len == size,
        };
        if !fits {
            anyhow::bail!(
                "{} changed during the build: it no longer holds the recorded {size} bytes",
                self.location()
            );
        }
        f.seek(SeekFrom::Start(offset))
            .with_context(|| format!("seeking {}", self.location()))?;
        Ok(f.take(size))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File {
        content: Content,
        size: u64,
    },
    /// The target is data: stored verbatim, never resolved or followed.
    Symlink {
        target: String,
    },
    /// Another name for the [`Kind::File`] at `target`. The link's own
    /// [`Meta`] is ignored by exporters: a hardlink shares the file's inode.
    Hardlink {
        target: RelPath,
    },
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
    Fifo,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub meta: Meta,
}

impl Node {
    pub fn new(kind: Kind, meta: Meta) -> Node {
        Node { kind, meta }
    }
}

/// A whole rootfs. See the module docs for its invariants.
#[derive(Clone, Debug)]
pub struct Tree {
    nodes: BTreeMap<RelPath, Node>,
}

impl Tree {
    /// An empty tree whose root directory has `root_meta`.
    pub fn new(mut root_meta: Meta) -> Tree {
        root_meta.mode &= 0o7777;
        let mut nodes = BTreeMap::new();
        nodes.insert(RelPath::root(), Node::new(Kind::Dir, root_meta));
        Tree { nodes }
    }

    /// Inserts or replaces `path`.
    ///
    /// The entry must be one squashfs or ext4 can hold
    /// ([`limits::check_entry`] for [`Target::Either`]): every importer and
    /// layer goes through here, so a name, link target, device number or
    /// xattr no image could store is refused with the entry's name.
    ///
    /// Missing ancestors are created as `0755 0:0` directories with the
    /// node's mtime (tarballs often omit directory entries). An ancestor that
    /// is not a directory is an error, and in particular symlinks are never
    /// followed: the archive said `etc` is a symlink, so `etc/passwd` has no
    /// meaning inside the image and would escape it if anyone resolved it.
    ///
    /// Replacing a directory by a directory only updates the metadata
    /// (children stay, as with `tar`). Replacing anything else removes the
    /// old subtree first, with the hardlink hand-over of [`Tree::remove`].
    ///
    /// A hardlink must name an existing regular file (a hardlink to a
    /// hardlink resolves to its file); a hardlink whose file would be removed
    /// by this very replacement is rejected. Validation happens before any
    /// mutation, so an error leaves the tree unchanged.
    pub fn insert(&mut self, path: RelPath, mut node: Node) -> Result<()> {
        node.meta.mode &= 0o7777;
        limits::check_entry(&path, &node, Target::Either)?;
        if path.is_root() {
            if node.kind != Kind::Dir {
                bail!("the root / must be a directory");
            }
            self.root_mut().meta = node.meta;
            return Ok(());
        }

        let mut missing = Vec::new();
        for anc in path.ancestors() {
            match self.nodes.get(&anc) {
                None => missing.push(anc),
                Some(n) => match &n.kind {
                    Kind::Dir => {}
                    Kind::Symlink { target } => bail!(
                        "{} is beneath symlink {} -> {}",
                        shown_entry(&path),
                        shown_entry(&anc),
                        shown(target)
                    ),
                    other => bail!(
                        "{} is beneath {}, which is a {}",
                        shown_entry(&path),
                        shown_entry(&anc),
                        kind_name(other)
                    ),
                },
            }
        }

        if let Kind::Hardlink { target } = &node.kind {
            let file = self.resolve_link_target(target)?;
            if file.starts_with(&path) {
                bail!(
                    "hardlink {} -> {} would replace the file it links to",
                    shown_entry(&path),
                    shown_entry(target)
                );
            }
            node.kind = Kind::Hardlink { target: file };
        }

        match self.nodes.get_mut(&path) {
            Some(old) if old.kind == Kind::Dir && node.kind == Kind::Dir => {
                old.meta = node.meta;
                return Ok(());
            }
            Some(_) => {
                self.remove(&path);
            }
            None => {}
        }
        for anc in missing {
            let meta = Meta::new(0o755, 0, 0, node.meta.mtime);
            self.nodes.insert(anc, Node::new(Kind::Dir, meta));
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    /// Resolves a hardlink target to the path of a regular file.
    fn resolve_link_target(&self, target: &RelPath) -> Result<RelPath> {
        match self.nodes.get(target).map(|n| &n.kind) {
            None => bail!("hardlink target {} does not exist", shown_entry(target)),
            Some(Kind::File { .. }) => Ok(target.clone()),
            Some(Kind::Hardlink { target: file }) => Ok(file.clone()),
            Some(other) => bail!(
                "hardlink target {} is a {}, not a regular file",
                shown_entry(target),
                kind_name(other)
            ),
        }
    }

    /// Removes `path` and everything below it; returns false if it did not
    /// exist. Removing the root empties the tree but keeps the root itself.
    ///
    /// Other names of a removed file survive, as after `unlink(2)`: the first
    /// remaining hardlink in sorted order becomes the [`Kind::File`] (taking
    /// over the content and the inode metadata) and the rest point to it.
    pub fn remove(&mut self, path: &RelPath) -> bool {
        let doomed: Vec<RelPath> = self.subtree(path).map(|(p, _)| p.clone()).collect();
        if doomed.is_empty() {
            return false;
        }
        let mut orphaned: BTreeMap<RelPath, Node> = BTreeMap::new();
        for p in doomed {
            if p.is_root() {
                continue;
            }
            if let Some(node) = self.nodes.remove(&p) {
                if matches!(node.kind, Kind::File { .. }) {
                    orphaned.insert(p, node);
                }
            }
        }
        if orphaned.is_empty() {
            return true;
        }
        // One pass over the survivors to find links into removed files.
        let mut groups: BTreeMap<RelPath, Vec<RelPath>> = BTreeMap::new();
        for (p, n) in &self.nodes {
            if let Kind::Hardlink { target } = &n.kind {
                if orphaned.contains_key(target) {
                    groups.entry(target.clone()).or_default().push(p.clone());
                }
            }
        }
        for (file, links) in groups {
            let Some(file_node) = orphaned.remove(&file) else {
                continue;
            };
            let heir = links[0].clone();
            self.nodes.insert(heir.clone(), file_node);
            for l in &links[1..] {
                if let Some(n) = self.nodes.get_mut(l) {
                    n.kind = Kind::Hardlink {
                        target: heir.clone(),
                    };
                }
            }
        }
        true
    }

    /// `path` and its descendants, in sorted order (empty if `path` does
    /// not exist).
    pub fn subtree<'a>(
        &'a self,
        path: &RelPath,
    ) -> impl Iterator<Item = (&'a RelPath, &'a Node)> + 'a {
        let this = self.nodes.get_key_value(path);
        // Descendants of `etc` are exactly the keys in ["etc/", "etc0"):
        // '0' is the byte after '/'. (`etc-old` sorts between `etc` and
        // `etc/`, so scanning forward from `etc` would stop too early.)
        let children = this.map(|_| {
            let bounds = if path.is_root() {
                (Bound::Excluded(RelPath::root()), Bound::Unbounded)
            } else {
                (
                    Bound::Included(RelPath::unchecked(format!("{}/", path.as_str()))),
                    Bound::Excluded(RelPath::unchecked(format!("{}0", path.as_str()))),
                )
            };
            self.nodes.range(bounds)
        });
        this.into_iter().chain(children.into_iter().flatten())
    }

    pub fn get(&self, path: &RelPath) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Mutable access for metadata edits. Changing a node's [`Kind`] here
    /// bypasses the invariants; use [`Tree::insert`] for that.
    pub fn get_mut(&mut self, path: &RelPath) -> Option<&mut Node> {
        self.nodes.get_mut(path)
    }

    /// All nodes in sorted path order; the root comes first and every
    /// directory precedes its contents.
    pub fn iter(&self) -> impl Iterator<Item = (&RelPath, &Node)> {
        self.nodes.iter()
    }

    /// Number of nodes including the root.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: the root exists. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `mtime = min(mtime, source_date_epoch)` for every node, so nothing
    /// built "now" leaks the build time into the image.
    pub fn clamp_mtimes(&mut self, source_date_epoch: i64) {
        for n in self.nodes.values_mut() {
            n.meta.mtime = n.meta.mtime.min(source_date_epoch);
        }
    }

    /// Sum of regular-file sizes, counting each hardlinked file once.
    pub fn total_file_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match n.kind {
                Kind::File { size, .. } => size,
                _ => 0,
            })
            .fold(0u64, u64::saturating_add)
    }

    /// For every regular file, the path that comes first in sorted order
    /// among the file and its hardlinks. Formats that need the body before
    /// any link to it (tar) or a concrete first name (staging trees) emit
    /// the body there and links everywhere else.
    pub fn hardlink_leaders(&self) -> BTreeMap<RelPath, RelPath> {
        let mut leaders: BTreeMap<RelPath, RelPath> = BTreeMap::new();
        for (p, n) in &self.nodes {
            match &n.kind {
                Kind::File { .. } => {
                    leaders.entry(p.clone()).or_insert_with(|| p.clone());
                }
                Kind::Hardlink { target } => {
                    // Paths arrive sorted, so the first one seen wins unless
                    // the file itself sorts earlier (handled by min).
                    let e = leaders.entry(target.clone()).or_insert_with(|| p.clone());
                    if p < e {
                        *e = p.clone();
                    }
                    if target < e {
                        *e = target.clone();
                    }
                }
                _ => {}
            }
        }
        leaders
    }

    fn root_mut(&mut self) -> &mut Node {
        self.nodes
            .entry(RelPath::root())
            .or_insert_with(|| Node::new(Kind::Dir, Meta::new(0o755, 0, 0, 0)))
    }
}

/// A short human name for a node kind, for error messages.
pub fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Dir => "directory",
        Kind::File { .. } => "regular file",
        Kind::Symlink { .. } => "symlink",
        Kind::Hardlink { .. } => "hardlink",
        Kind::CharDev { .. } => "character device",
        Kind::BlockDev { .. } => "block device",
        Kind::Fifo => "fifo",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }
    fn file(name: &str) -> Node {
        Node::new(
            Kind::File {
                content: Content::Store(PathBuf::from(name)),
                size: 1,
            },
            Meta::new(0o644, 0, 0, 9),
        )
    }
    fn link(target: &str) -> Node {
        Node::new(
            Kind::Hardlink { target: p(target) },
            Meta::new(0o644, 0, 0, 9),
        )
    }
    fn dir(mode: u32) -> Node {
        Node::new(Kind::Dir, Meta::new(mode, 1, 1, 3))
    }

    #[test]
    fn insert_creates_parents_and_refuses_symlinked_parents() {
        let mut t = Tree::new(Meta::new(0o755, 0, 0, 0));
        t.insert(p("usr/bin/su"), file("s")).unwrap();
        let usr = t.get(&p("usr")).unwrap();
        assert_eq!(
            (usr.kind.clone(), usr.meta.mode, usr.meta.mtime),
            (Kind::Dir, 0o755, 9)
        );
        let sym = Node::new(
            Kind::Symlink { target: "/".into() },
            Meta::new(0o777, 0, 0, 0),
        );
        t.insert(p("etc"), sym).unwrap();
        let err = t
            .insert(p("etc/passwd"), file("x"))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "/etc/passwd is beneath symlink /etc -> /");
        let err = t
            .insert(p("usr/bin/su/x"), file("x"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("beneath /usr/bin/su, which is a regular file"),
            "{err}"
        );
        assert!(t.insert(RelPath::root(), file("x")).is_err());
    }

    #[test]
    fn dir_over_dir_keeps_children_and_nondir_replaces_subtree() {
        let mut t = Tree::new(Meta::new(0o755, 0, 0, 0));
        t.insert(p("etc/a"), file("a")).unwrap();
        t.insert(p("etc-old"), file("o")).unwrap();
        t.insert(p("etc"), dir(0o700)).unwrap();
        assert_eq!(t.get(&p("etc")).unwrap().meta.mode, 0o700);
        assert!(t.get(&p("etc/a")).is_some());
        t.insert(p("etc"), file("e")).unwrap();
        assert!(t.get(&p("etc/a")).is_none());
        assert!(
            t.get(&p("etc-old")).is_some(),
            "sibling with a common prefix survives"
        );
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn hardlinks_resolve_and_survive_removal() {
        let mut t = Tree::new(Meta::new(0o755, 0, 0, 0));
        t.insert(p("z/file"), file("body")).unwrap();
        t.insert(p("b"), link("z/file")).unwrap();
        t.insert(p("a"), link("b")).unwrap(); // link to a link → the file
        assert_eq!(
            t.get(&p("a")).unwrap().kind,
            Kind::Hardlink {
                target: p("z/file")
            }
        );
        assert_eq!(t.hardlink_leaders().get(&p("z/file")), Some(&p("a")));
        assert!(t.insert(p("c"), link("missing")).is_err());
        assert!(
            t.insert(p("c"), link("z")).is_err(),
            "a directory is not a file"
        );
        assert!(
            t.insert(p("z"), link("z/file")).is_err(),
            "would remove its own target"
        );
        assert!(t.remove(&p("z")));
        assert!(matches!(t.get(&p("a")).unwrap().kind, Kind::File { .. }));
        assert_eq!(
            t.get(&p("b")).unwrap().kind,
            Kind::Hardlink { target: p("a") }
        );
        assert_eq!(t.total_file_bytes(), 1);
        assert!(!t.remove(&p("z")));
    }

    #[test]
    fn clamp_and_subtree() {
        let mut t = Tree::new(Meta::new(0o755, 0, 0, 100));
        t.insert(p("a/b"), file("x")).unwrap();
        t.insert(p("a-c"), file("y")).unwrap();
        t.clamp_mtimes(5);
        assert!(t.iter().all(|(_, n)| n.meta.mtime <= 5));
        let sub: Vec<_> = t
            .subtree(&p("a"))
            .map(|(k, _)| k.as_str().to_string())
            .collect();
        assert_eq!(sub, ["a", "a/b"]);
        assert_eq!(t.subtree(&RelPath::root()).count(), 4);
    }
}
