//! Normalized rootfs-relative paths.
//!
//! Every path that enters the tree model (from a tarball header, a directory
//! walk or a layer file) goes through [`RelPath::parse`] first. That single
//! choke point is what makes the rest of the crate safe to reason about: a
//! `RelPath` never contains `..`, never starts with `/`, and never contains
//! NUL or control characters, so it cannot name anything outside the image
//! and it can be embedded in a tar header or a `debugfs` script line without
//! ambiguity. Symlinked parents are a property of the tree, not of the path
//! string, and are rejected by [`crate::tree::Tree::insert`].

use std::fmt;

use anyhow::{bail, Result};

/// A normalized path relative to the image root: no leading `/`, no `.` or
/// empty components, no `..`. The empty string is the root directory.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct RelPath(String);

impl RelPath {
    /// The image root (`/`).
    pub fn root() -> RelPath {
        RelPath(String::new())
    }

    /// Parses an archive- or layer-supplied path.
    ///
    /// Leading `/` and `./` are stripped (tarballs commonly use both forms),
    /// repeated slashes and `.` components are dropped. Any `..` component is
    /// rejected outright rather than resolved: resolving it lexically would
    /// silently reinterpret a hostile or broken archive, and resolving it
    /// against the tree would make the meaning depend on symlinks.
    pub fn parse(raw: &str) -> Result<RelPath> {
        if let Some(c) = raw.chars().find(|c| c.is_ascii_control()) {
            if c == '\0' {
                bail!("path contains a NUL byte");
            }
            bail!("path contains the control character {c:?}");
        }
        let mut out = String::with_capacity(raw.len());
        for comp in raw.split('/') {
            match comp {
                "" | "." => continue,
                ".." => bail!("path escapes the rootfs (it contains a `..` component)"),
                c => {
                    if !out.is_empty() {
                        out.push('/');
                    }
                    out.push_str(c);
                }
            }
        }
        Ok(RelPath(out))
    }

    /// Builds a range bound for map scans; never exposed, never a real path.
    pub(crate) fn unchecked(s: String) -> RelPath {
        RelPath(s)
    }

    /// The path as stored: `etc/passwd`, or `""` for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the image root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent directory, or `None` for the root.
    pub fn parent(&self) -> Option<RelPath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => RelPath(self.0[..i].to_string()),
            None => RelPath::root(),
        })
    }

    /// The last component, or `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        })
    }

    /// Appends one component. `name` must be a single plain component: a
    /// slash, `.`, `..`, an empty name or a control character is an error,
    /// so `join` cannot be used to smuggle a traversal past `parse`.
    pub fn join(&self, name: &str) -> Result<RelPath> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            bail!("invalid path component {name:?}");
        }
        if name.chars().any(|c| c.is_ascii_control()) {
            bail!("path component {name:?} contains a control character");
        }
        if self.is_root() {
            Ok(RelPath(name.to_string()))
        } else {
            Ok(RelPath(format!("{}/{}", self.0, name)))
        }
    }

    /// The components from the root down (empty for the root).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// Every proper ancestor, from the first component down to the parent
    /// (the root itself is not included).
    pub fn ancestors(&self) -> impl Iterator<Item = RelPath> + '_ {
        self.0
            .match_indices('/')
            .map(|(i, _)| RelPath(self.0[..i].to_string()))
    }

    /// Component-wise prefix test: `etc` is a prefix of `etc/passwd` and of
    /// `etc` itself, but not of `etc-old`. Every path starts with the root.
    pub fn starts_with(&self, base: &RelPath) -> bool {
        base.is_root()
            || self.0 == base.0
            || (self.0.starts_with(&base.0) && self.0.as_bytes().get(base.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

/// Serialized in the absolute display form (`/etc/passwd`, `/` for the
/// root), which is what humans expect in manifests and reports.
impl serde::Serialize for RelPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalizes() {
        assert_eq!(
            RelPath::parse("./etc/passwd").unwrap().as_str(),
            "etc/passwd"
        );
        assert_eq!(
            RelPath::parse("/etc//passwd/").unwrap().as_str(),
            "etc/passwd"
        );
        assert_eq!(RelPath::parse("a/./b").unwrap().as_str(), "a/b");
        assert!(RelPath::parse("./").unwrap().is_root());
        assert!(RelPath::parse("/").unwrap().is_root());
        assert!(RelPath::parse("").unwrap().is_root());
        assert_eq!(
            RelPath::parse("with space/q\"x").unwrap().as_str(),
            "with space/q\"x"
        );
    }

    #[test]
    fn parse_rejects() {
        for bad in [
            "..",
            "../x",
            "a/../b",
            "/abs/../../x",
            "a/..",
            "a\nb",
            "a\0b",
            "a\tb",
            "x\u{7f}",
        ] {
            let err = RelPath::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("escapes") || err.contains("control") || err.contains("NUL"),
                "{bad:?}: {err}"
            );
        }
        assert!(RelPath::parse("a/...").is_ok(), "`...` is an ordinary name");
    }

    #[test]
    fn navigation() {
        let p = RelPath::parse("usr/bin/su").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "usr/bin");
        assert_eq!(p.file_name(), Some("su"));
        assert_eq!(p.components().collect::<Vec<_>>(), ["usr", "bin", "su"]);
        assert_eq!(
            p.ancestors().map(|a| a.0).collect::<Vec<_>>(),
            ["usr", "usr/bin"]
        );
        assert_eq!(p.to_string(), "/usr/bin/su");
        assert_eq!(RelPath::root().to_string(), "/");
        assert_eq!(RelPath::parse("a").unwrap().parent(), Some(RelPath::root()));
        assert_eq!(RelPath::root().parent(), None);
        assert_eq!(RelPath::root().join("etc").unwrap().as_str(), "etc");
        assert!(p.join("..").is_err());
        assert!(p.join("a/b").is_err());
        assert!(p.starts_with(&RelPath::parse("usr").unwrap()));
        assert!(!RelPath::parse("usr-old")
            .unwrap()
            .starts_with(&RelPath::parse("usr").unwrap()));
    }
}
