//! The Debian base lock, `images/<name>.lock`: the exact packages a
//! Debian base installs (name, version, architecture, the sha256 and size
//! of the `.deb`), with the suite, variant, sources and package list it was
//! resolved for, and the keyring that authenticated the downloads.
//!
//! It is a line-based text file, one package per line, so a `git diff` of
//! an update reads as "these packages moved". Written by `cargo xtask
//! lock`, read by the loader. Parsing is strict and positioned: every
//! problem names the file, the line and the directive.
//!
//! Why hand-written: the format is ours (no crate reads it), and it is the
//! security boundary of a locked build. A locked build installs `.deb`s
//! from a local repository that apt trusts without a signature (the
//! archive signature only covered the download, at lock time); what makes
//! that safe is that every file in that repository was checked against the
//! sha256 here, and this file is reviewed and committed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::diag::{Diagnostic, Diagnostics};

/// The first line's directive and the only format version.
pub const MAGIC: &str = "slotsmith-lock";
pub const FORMAT: u32 = 1;

/// The mmdebstrap variants a lock can reproduce: they install the
/// Essential set plus the listed packages and their dependencies. The
/// others pick packages by the archive's Priority overrides, which a local
/// repository does not carry (`required`, `important`, `standard`,
/// `minbase`, `buildd`), or unpack without installing (`extract`,
/// `custom`), so the installed set could not be checked against a lock.
pub const LOCKABLE_VARIANTS: &[&str] = &["essential", "apt"];

/// One locked `.deb`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub sha256: String,
    pub size: u64,
}

impl LockedPackage {
    /// The file name the local repository gives the package
    /// (`name_version_arch.deb`, `:` of an epoch as `%3a`, as apt does).
    pub fn deb_file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.architecture
        )
    }

    /// `name version arch`, for messages.
    pub fn label(&self) -> String {
        format!("{} {} ({})", self.name, self.version, self.architecture)
    }
}

/// A keyring that authenticated the archive when the lock was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockedKeyring {
    pub path: String,
    pub sha256: String,
}

/// What a lock was resolved for; a build whose image asks for something
/// else is stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockKey {
    pub suite: String,
    pub architecture: String,
    pub variant: String,
    /// `host` (the host's apt sources) or the mirror URL.
    pub sources: String,
    /// The image's package list, sorted.
    pub include: Vec<String>,
}

/// A parsed lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lock {
    #[serde(flatten)]
    pub key: LockKey,
    pub keyrings: Vec<LockedKeyring>,
    /// Each archive index the resolution read, with its `Date:`
    /// (informational: a snapshot mirror of that date has these versions).
    pub indexes: Vec<(String, String)>,
    /// Sorted by name, one per name and architecture.
    pub packages: Vec<LockedPackage>,
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Debian package names (policy 5.6.1).
pub fn valid_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.len() <= 128
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// Debian versions (policy 5.6.12): `[epoch:]upstream[-revision]`.
pub fn valid_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+-~:".contains(&b))
}

/// Debian architecture names (`amd64`, `all`, `arm64`).
pub fn valid_arch(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Parses a lock file's text; `file` is how diagnostics name it.
pub fn parse(file: &Path, text: &str) -> Result<Lock, Diagnostics> {
    let mut diags = Diagnostics::default();
    let diag = |line: usize, key: &str, message: String| Diagnostic {
        file: file.to_path_buf(),
        line,
        col: 1,
        key: key.to_string(),
        message,
    };
    let mut header = false;
    let mut single: BTreeMap<&str, (usize, Vec<&str>)> = BTreeMap::new();
    let mut keyrings = Vec::new();
    let mut indexes = Vec::new();
    let mut packages: Vec<LockedPackage> = Vec::new();
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_ascii_whitespace();
        let Some(directive) = words.next() else {
            continue;
        };
        let rest: Vec<&str> = words.collect();
        if !header {
            if directive == MAGIC && rest == [FORMAT.to_string().as_str()] {
                header = true;
                continue;
            }
            diags.push(diag(
                n,
                directive,
                format!("a lock starts with '{MAGIC} {FORMAT}'"),
            ));
            return Err(diags.sorted());
        }
        match directive {
            "suite" | "architecture" | "variant" | "sources" | "include" => {
                if let Some((first, _)) = single.get(directive) {
                    diags.push(diag(
                        n,
                        directive,
                        format!("set twice (first on line {first})"),
                    ));
                    continue;
                }
                let want_one = directive != "include";
                if want_one && rest.len() != 1 {
                    diags.push(diag(n, directive, "takes exactly one value".into()));
                    continue;
                }
                single.insert(directive, (n, rest));
            }
            "keyring" => match rest.as_slice() {
                [path, sha] if is_sha256(sha) => keyrings.push(LockedKeyring {
                    path: path.to_string(),
                    sha256: sha.to_string(),
                }),
                _ => diags.push(diag(n, "keyring", "takes a path and a sha256".into())),
            },
            "index" => match rest.split_first() {
                Some((name, date)) if !date.is_empty() => {
                    indexes.push((name.to_string(), date.join(" ")))
                }
                _ => diags.push(diag(n, "index", "takes a name and a date".into())),
            },
            "package" => {
                let [name, version, arch, sha, size] = rest.as_slice() else {
                    diags.push(diag(
                        n,
                        "package",
                        "takes a name, a version, an architecture, a sha256 and a size".into(),
                    ));
                    continue;
                };
                let mut bad = Vec::new();
                if !valid_package_name(name) {
                    bad.push("name");
                }
                if !valid_version(version) {
                    bad.push("version");
                }
                if !valid_arch(arch) {
                    bad.push("architecture");
                }
                if !is_sha256(sha) {
                    bad.push("sha256 (64 lowercase hex digits)");
                }
                let size = size.parse::<u64>().ok().filter(|s| *s > 0);
                if size.is_none() {
                    bad.push("size");
                }
                if !bad.is_empty() {
                    diags.push(diag(n, "package", format!("invalid {}", bad.join(", "))));
                    continue;
                }
                let k = (name.to_string(), arch.to_string());
                if let Some(first) = seen.get(&k) {
                    diags.push(diag(
                        n,
                        "package",
                        format!("{name} ({arch}) is locked twice (first on line {first})"),
                    ));
                    continue;
                }
                seen.insert(k, n);
                packages.push(LockedPackage {
                    name: name.to_string(),
                    version: version.to_string(),
                    architecture: arch.to_string(),
                    sha256: sha.to_string(),
                    size: size.unwrap_or(0),
                });
            }
            other => diags.push(diag(n, other, "unknown directive".into())),
        }
    }
    if !header {
        diags.push(diag(
            1,
            "",
            format!("empty: a lock starts with '{MAGIC} {FORMAT}'"),
        ));
        return Err(diags.sorted());
    }
    let mut one = |k: &str| -> String {
        match single.get(k) {
            Some((_, v)) => v.join(" "),
            None => {
                diags.push(diag(0, k, format!("'{k}' is missing")));
                String::new()
            }
        }
    };
    let suite = one("suite");
    let architecture = one("architecture");
    let variant = one("variant");
    let sources = one("sources");
    let include: Vec<String> = single
        .get("include")
        .map(|(_, v)| v.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    if packages.is_empty() {
        diags.push(diag(0, "package", "the lock has no packages".into()));
    }
    packages.sort();
    let lock = Lock {
        key: LockKey {
            suite,
            architecture,
            variant,
            sources,
            include,
        },
        keyrings,
        indexes,
        packages,
    };
    diags.into_result(lock)
}

/// Writes a lock; `image` is the image file it belongs to, named in the
/// header comment.
pub fn render(lock: &Lock, image: &str, name: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "# The exact Debian packages of {image}'s base. A build installs these\n\
         # .debs and nothing else, each checked against its sha256, from a\n\
         # content-addressed cache (no network once it is filled).\n\
         # Written by `cargo xtask lock {name}`; `cargo xtask lock --update {name}`\n\
         # refreshes it and prints what changed. Review a change like code.\n"
    ));
    s.push_str(&format!("{MAGIC} {FORMAT}\n"));
    s.push_str(&format!("suite {}\n", lock.key.suite));
    s.push_str(&format!("architecture {}\n", lock.key.architecture));
    s.push_str(&format!("variant {}\n", lock.key.variant));
    s.push_str(&format!("sources {}\n", lock.key.sources));
    s.push_str(&format!("include {}\n", lock.key.include.join(" ")));
    for k in &lock.keyrings {
        s.push_str(&format!("keyring {} {}\n", k.path, k.sha256));
    }
    for (name, date) in &lock.indexes {
        s.push_str(&format!("index {name} {date}\n"));
    }
    s.push_str("# package name version architecture sha256 size\n");
    for p in &lock.packages {
        s.push_str(&format!(
            "package {} {} {} {} {}\n",
            p.name, p.version, p.architecture, p.sha256, p.size
        ));
    }
    s
}

/// How a lock differs from what the image now asks for; empty when fresh.
pub fn staleness(lock: &LockKey, want: &LockKey) -> Vec<String> {
    let mut out = Vec::new();
    for (what, have, want) in [
        ("suite", &lock.suite, &want.suite),
        ("architecture", &lock.architecture, &want.architecture),
        ("variant", &lock.variant, &want.variant),
        ("sources", &lock.sources, &want.sources),
    ] {
        if have != want {
            out.push(format!(
                "{what} is '{have}' in the lock but '{want}' in the image"
            ));
        }
    }
    let have: BTreeSet<&String> = lock.include.iter().collect();
    let wanted: BTreeSet<&String> = want.include.iter().collect();
    let added: Vec<&str> = wanted.difference(&have).map(|s| s.as_str()).collect();
    let removed: Vec<&str> = have.difference(&wanted).map(|s| s.as_str()).collect();
    if !added.is_empty() {
        out.push(format!("packages not locked: {}", added.join(", ")));
    }
    if !removed.is_empty() {
        out.push(format!(
            "packages locked but no longer in the image: {}",
            removed.join(", ")
        ));
    }
    out
}

/// The lines above the packages that changed (suite, sources, package
/// list, keyring, index dates): they change the lock's hash too.
pub fn header_changes(old: &Lock, new: &Lock) -> Vec<String> {
    let mut v = Vec::new();
    for (what, o, n) in [
        ("suite", &old.key.suite, &new.key.suite),
        ("architecture", &old.key.architecture, &new.key.architecture),
        ("variant", &old.key.variant, &new.key.variant),
        ("sources", &old.key.sources, &new.key.sources),
    ] {
        if o != n {
            v.push(format!("{what} {o} -> {n}"));
        }
    }
    if old.key.include != new.key.include {
        v.push(format!(
            "include [{}] -> [{}]",
            old.key.include.join(" "),
            new.key.include.join(" ")
        ));
    }
    if old.keyrings != new.keyrings {
        v.push("keyring changed".to_string());
    }
    for (name, date) in &new.indexes {
        match old.indexes.iter().find(|(n, _)| n == name) {
            Some((_, d)) if d == date => {}
            Some((_, d)) => v.push(format!("index {name}: {d} -> {date}")),
            None => v.push(format!("index {name}: new, {date}")),
        }
    }
    v
}

/// What `lock --update` changed.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct LockChanges {
    pub added: Vec<LockedPackage>,
    pub removed: Vec<LockedPackage>,
    /// (old, new) for a package whose version moved.
    pub upgraded: Vec<(LockedPackage, LockedPackage)>,
    /// Same name and version, another `.deb` (a rebuilt package).
    pub rehashed: Vec<(LockedPackage, LockedPackage)>,
}

impl LockChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.upgraded.is_empty()
            && self.rehashed.is_empty()
    }

    /// One line per change, for people.
    pub fn lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        for p in &self.added {
            v.push(format!("added     {} {}", p.name, p.version));
        }
        for p in &self.removed {
            v.push(format!("removed   {} {}", p.name, p.version));
        }
        for (o, n) in &self.upgraded {
            v.push(format!(
                "upgraded  {} {} -> {}",
                n.name, o.version, n.version
            ));
        }
        for (o, n) in &self.rehashed {
            v.push(format!(
                "rehashed  {} {} ({} -> {})",
                n.name,
                n.version,
                &o.sha256[..12],
                &n.sha256[..12]
            ));
        }
        v
    }
}

/// Compares two package lists by name and architecture.
pub fn changes(old: &[LockedPackage], new: &[LockedPackage]) -> LockChanges {
    let key = |p: &LockedPackage| (p.name.clone(), p.architecture.clone());
    let olds: BTreeMap<_, _> = old.iter().map(|p| (key(p), p)).collect();
    let news: BTreeMap<_, _> = new.iter().map(|p| (key(p), p)).collect();
    let mut c = LockChanges::default();
    for (k, n) in &news {
        match olds.get(k) {
            None => c.added.push((*n).clone()),
            Some(o) if o.version != n.version => c.upgraded.push(((*o).clone(), (*n).clone())),
            Some(o) if o.sha256 != n.sha256 => c.rehashed.push(((*o).clone(), (*n).clone())),
            Some(_) => {}
        }
    }
    for (k, o) in &olds {
        if !news.contains_key(k) {
            c.removed.push((*o).clone());
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str, sha: char) -> LockedPackage {
        LockedPackage {
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
            sha256: sha.to_string().repeat(64),
            size: 10,
        }
    }

    fn sample() -> Lock {
        Lock {
            key: LockKey {
                suite: "bookworm".into(),
                architecture: "amd64".into(),
                variant: "apt".into(),
                sources: "host".into(),
                include: vec!["nftables".into(), "systemd".into()],
            },
            keyrings: vec![LockedKeyring {
                path: "/usr/share/keyrings/debian-archive-keyring.gpg".into(),
                sha256: "e".repeat(64),
            }],
            indexes: vec![(
                "deb.debian.org/debian/bookworm".into(),
                "Sat, 08 Nov 2025 10:00:00 UTC".into(),
            )],
            packages: vec![
                pkg("libc6", "2.36-9+deb12u13", 'a'),
                pkg("systemd", "1:252.39-1~deb12u1", 'b'),
            ],
        }
    }

    #[test]
    fn a_rendered_lock_parses_back_to_itself() {
        let l = sample();
        let text = render(&l, "images/demo.yaml", "demo");
        assert_eq!(parse(Path::new("images/demo.lock"), &text).unwrap(), l);
        assert_eq!(
            l.packages[1].deb_file_name(),
            "systemd_1%3a252.39-1~deb12u1_amd64.deb"
        );
    }

    fn errors(text: &str) -> Vec<String> {
        parse(Path::new("images/x.lock"), text)
            .unwrap_err()
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn every_malformed_line_is_named_with_its_line_and_directive() {
        let good = render(&sample(), "images/x.yaml", "x");
        // Each hostile line, appended, is reported at its own line.
        for (line, want) in [
            (
                "package ../../etc 1.0 amd64 ".to_string() + &"a".repeat(64) + " 1",
                "invalid name",
            ),
            (
                "package x1 1.0 amd64 ".to_string() + &"A".repeat(64) + " 1",
                "sha256",
            ),
            (
                "package x1 1.0;rm amd64 ".to_string() + &"a".repeat(64) + " 1",
                "invalid version",
            ),
            (
                "package x1 1.0 amd64 ".to_string() + &"a".repeat(64) + " 0",
                "invalid size",
            ),
            (
                "package x1 1.0 amd64 ".to_string() + &"a".repeat(64) + " 99999999999999999999999",
                "invalid size",
            ),
            ("package x1 1.0 amd64".to_string(), "takes a name"),
            (
                "package libc6 2.0 amd64 ".to_string() + &"c".repeat(64) + " 1",
                "locked twice",
            ),
            ("suite trixie".to_string(), "set twice"),
            ("frobnicate yes".to_string(), "unknown directive"),
            ("keyring /k.gpg nothex".to_string(), "a path and a sha256"),
        ] {
            let text = format!("{good}{line}\n");
            let n = text.lines().count();
            let e = errors(&text);
            assert_eq!(e.len(), 1, "{line}: {e:?}");
            assert!(
                e[0].starts_with(&format!("images/x.lock:{n}:")),
                "{line}: {e:?}"
            );
            assert!(e[0].contains(want), "{line}: {e:?}");
        }
        let e = errors("");
        assert!(e[0].contains("slotsmith-lock 1"), "{e:?}");
        let e = errors("slotsmith-lock 2\n");
        assert!(e[0].contains("starts with"), "{e:?}");
        let e = errors("slotsmith-lock 1\nsuite bookworm\n");
        for k in ["architecture", "variant", "sources", "no packages"] {
            assert!(e.iter().any(|d| d.contains(k)), "{k}: {e:?}");
        }
    }

    #[test]
    fn staleness_names_what_the_image_changed() {
        let l = sample().key;
        assert!(staleness(&l, &l).is_empty());
        let mut want = l.clone();
        want.include.push("curl".into());
        want.include.retain(|p| p != "nftables");
        want.suite = "trixie".into();
        let s = staleness(&l, &want).join("\n");
        assert!(s.contains("packages not locked: curl"), "{s}");
        assert!(s.contains("no longer in the image: nftables"), "{s}");
        assert!(
            s.contains("suite is 'bookworm' in the lock but 'trixie'"),
            "{s}"
        );
    }

    #[test]
    fn header_changes_name_what_moved_above_the_packages() {
        let old = sample();
        assert!(header_changes(&old, &old).is_empty());
        let mut new = sample();
        new.key.include.push("curl".into());
        new.indexes[0].1 = "Sun, 09 Nov 2025 10:00:00 UTC".into();
        new.indexes.push(("x".into(), "d".into()));
        let h = header_changes(&old, &new).join("\n");
        assert!(
            h.contains("include [nftables systemd] -> [nftables systemd curl]"),
            "{h}"
        );
        assert!(
            h.contains("Sat, 08 Nov 2025 10:00:00 UTC -> Sun, 09 Nov"),
            "{h}"
        );
        assert!(h.contains("index x: new, d"), "{h}");
    }

    #[test]
    fn changes_sort_packages_into_added_removed_upgraded_and_rehashed() {
        let old = vec![
            pkg("a1", "1", 'a'),
            pkg("b1", "1", 'b'),
            pkg("c1", "1", 'c'),
        ];
        let new = vec![
            pkg("b1", "2", 'd'),
            pkg("c1", "1", 'e'),
            pkg("d1", "1", 'f'),
        ];
        let c = changes(&old, &new);
        assert_eq!(c.added, vec![pkg("d1", "1", 'f')]);
        assert_eq!(c.removed, vec![pkg("a1", "1", 'a')]);
        assert_eq!(c.upgraded, vec![(pkg("b1", "1", 'b'), pkg("b1", "2", 'd'))]);
        assert_eq!(c.rehashed.len(), 1);
        let lines = c.lines().join("\n");
        assert!(lines.contains("upgraded  b1 1 -> 2"), "{lines}");
        assert!(changes(&old, &old).is_empty());
    }
}
