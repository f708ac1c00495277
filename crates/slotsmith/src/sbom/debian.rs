//! The Debian packages installed in a root filesystem, as the SBOM lists
//! them: dpkg's status database (`/var/lib/dpkg/status`) and each
//! package's copyright file when it is machine-readable (DEP-5), both read
//! from the image the build wrote.
//!
//! Both files are image content, so untrusted: the status file is read
//! through the image reader's cap (64 MiB), a copyright file only when its
//! entry says at most [`MAX_COPYRIGHT`] bytes, at most [`MAX_PACKAGES`]
//! packages are accepted, and a package name must be a Debian name before
//! it becomes part of a path (`usr/share/doc/<name>/copyright`), so a
//! hostile status cannot make the SBOM read another file. Values reach the
//! document only through serde_json.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use slotsmith_policy::rootfs::Index;

/// dpkg's database of installed packages.
pub const STATUS: &str = "/var/lib/dpkg/status";
/// Largest copyright file read; Debian's largest are a few hundred KiB.
pub const MAX_COPYRIGHT: u64 = 1 << 20;
/// Most installed packages accepted; a full desktop has about 3,000.
pub const MAX_PACKAGES: usize = 100_000;
/// Longest version accepted (Debian's longest are under 100 bytes).
const MAX_VERSION: usize = 256;
/// Longest licence text kept for the document's extracted licences.
const MAX_LICENSE_TEXT: usize = 64 << 10;
/// Longest `Maintainer:` kept (Debian's longest are under 100 bytes).
const MAX_MAINTAINER: usize = 256;

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebPackage {
    /// `Package:`.
    pub name: String,
    /// `Version:`.
    pub version: String,
    /// `Architecture:` (`all` for architecture-independent packages).
    pub architecture: String,
    /// The source package (`Source:`, or the package's own name).
    pub source: String,
    /// The source version (in parentheses after `Source:`, or the
    /// package's own version).
    pub source_version: String,
    /// `Maintainer:` (the first line, as written), the package's
    /// supplier in the SBOM.
    pub maintainer: Option<String>,
    /// The licences of a DEP-5 copyright file's `Files` stanzas.
    pub license: Option<License>,
}

/// The licences a DEP-5 copyright file states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    /// The `License:` synopsis of every `Files` stanza, as written
    /// (`GPL-2+ or Artistic`), in the file's order. A package is built
    /// from all of them, so the SBOM declares them all (not only
    /// `Files: *`, which would over-claim a permissive licence for a
    /// package with a GPL file).
    pub synopses: Vec<String>,
    /// The text the file gives for each licence name (in a `Files`
    /// stanza or a standalone `License:` paragraph; the first one given
    /// wins), bounded.
    pub texts: BTreeMap<String, String>,
}

/// Every installed package (dpkg status `installed`), sorted by name and
/// architecture, with its licence; none when the image has no dpkg
/// database (a Yocto or hand-made base).
pub fn installed(index: &Index<'_>) -> Result<Vec<DebPackage>> {
    let Some((_, status)) = index
        .read_resolved(STATUS)
        .with_context(|| format!("reading {STATUS} from the rootfs image"))?
    else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&status);
    let mut packages = parse_status(&text).with_context(|| format!("reading {STATUS}"))?;
    for p in &mut packages {
        p.license = copyright(index, &p.name)?;
    }
    Ok(packages)
}

/// Parses a dpkg status file: the installed packages, sorted, without
/// their licences.
pub fn parse_status(text: &str) -> Result<Vec<DebPackage>> {
    let mut out = Vec::new();
    for para in paragraphs(text) {
        let get = |f: &str| field(&para, f).map(|(first, _)| first.trim());
        // `install ok installed`, `hold ok installed`: the last word is the
        // state; half-installed or config-files packages are not shipped.
        let installed = get("Status")
            .and_then(|s| s.split_whitespace().nth(2))
            .is_some_and(|s| s == "installed");
        if !installed {
            continue;
        }
        let name = get("Package").unwrap_or_default();
        check_name(name, "package name")?;
        let version = get("Version").unwrap_or_default();
        check_version(name, version)?;
        let architecture = get("Architecture").unwrap_or_default();
        if architecture.is_empty()
            || architecture.len() > 32
            || !architecture
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!(
                "package {name}: not a Debian architecture: {}",
                slotsmith_yaml::escape::shown(architecture)
            );
        }
        let (source, source_version) = match get("Source") {
            None | Some("") => (name.to_string(), version.to_string()),
            Some(s) => match s.split_once('(') {
                Some((src, v)) => {
                    let v = v.trim().strip_suffix(')').unwrap_or(v).trim();
                    (src.trim().to_string(), v.to_string())
                }
                None => (s.to_string(), version.to_string()),
            },
        };
        check_name(&source, "source package name")?;
        check_version(name, &source_version)?;
        // Free text from the image: it reaches the document only through
        // serde_json, and the SBOM's supplier syntax is made in `sbom.rs`.
        let maintainer = get("Maintainer")
            .filter(|m| !m.is_empty())
            .map(|m| bounded(m, MAX_MAINTAINER));
        out.push(DebPackage {
            name: name.to_string(),
            version: version.to_string(),
            architecture: architecture.to_string(),
            source,
            source_version,
            maintainer,
            license: None,
        });
        if out.len() > MAX_PACKAGES {
            bail!("more than {MAX_PACKAGES} installed packages");
        }
    }
    out.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    // Multi-arch packages share their doc directory; a name and
    // architecture twice is a damaged database.
    if let Some(w) = out
        .windows(2)
        .find(|w| (&w[0].name, &w[0].architecture) == (&w[1].name, &w[1].architecture))
    {
        bail!(
            "package {}:{} is installed twice",
            w[0].name,
            w[0].architecture
        );
    }
    Ok(out)
}

/// Debian policy 5.6.1: lowercase letters, digits, `+ - .`, at least two
/// characters, starting with a letter or digit. Checked before the name
/// becomes part of a path.
fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
        });
    if !ok {
        bail!(
            "not a Debian {what}: {}",
            slotsmith_yaml::escape::shown(name)
        );
    }
    Ok(())
}

/// Debian policy 5.6.12: `[epoch:]upstream[-revision]` from letters,
/// digits and `. + ~ - :`.
fn check_version(package: &str, version: &str) -> Result<()> {
    let ok = !version.is_empty()
        && version.len() <= MAX_VERSION
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'~' | b'-' | b':'));
    if !ok {
        bail!(
            "package {package}: not a Debian version: {}",
            slotsmith_yaml::escape::shown(version)
        );
    }
    Ok(())
}

/// The licence of `/usr/share/doc/<name>/copyright` when it is DEP-5 and
/// at most [`MAX_COPYRIGHT`] bytes; symlinks (a doc directory shared with
/// another package of the same source) resolve inside the image.
fn copyright(index: &Index<'_>, name: &str) -> Result<Option<License>> {
    let path = format!("/usr/share/doc/{name}/copyright");
    let Some(real) = index.resolve(&path) else {
        return Ok(None);
    };
    let Some(entry) = index.get(&real) else {
        return Ok(None);
    };
    if entry.kind != slotsmith_policy::EntryKind::File || entry.size > MAX_COPYRIGHT {
        return Ok(None);
    }
    let Some((_, bytes)) = index
        .read_resolved(&path)
        .with_context(|| format!("reading {path} from the rootfs image"))?
    else {
        return Ok(None);
    };
    Ok(dep5_license(&String::from_utf8_lossy(&bytes)))
}

/// The licences of every `Files` stanza of a DEP-5 copyright file;
/// `None` when the file is not DEP-5 1.0, has no `Files` stanza, or has
/// one without a licence (no claim beats a partial one).
pub fn dep5_license(text: &str) -> Option<License> {
    let paras = paragraphs(text);
    let header = paras.first()?;
    let (format, _) = field(header, "Format")?;
    if !format.contains("copyright-format/1.0") {
        return None;
    }
    let mut synopses = Vec::new();
    let mut texts = BTreeMap::new();
    for p in &paras[1..] {
        let license = field(p, "License").map(|(s, body)| (s.trim(), body));
        match (field(p, "Files"), license) {
            (Some(_), Some((synopsis, body))) if !synopsis.is_empty() => {
                synopses.push(synopsis.to_string());
                if !body.trim().is_empty() {
                    texts
                        .entry(synopsis.to_string())
                        .or_insert_with(|| bounded(body, MAX_LICENSE_TEXT));
                }
            }
            // A `Files` stanza whose licence is missing or empty: the
            // package's licence cannot be stated.
            (Some(_), _) => return None,
            // A standalone licence paragraph: the text of one name.
            (None, Some((synopsis, body))) if !body.trim().is_empty() => {
                texts
                    .entry(synopsis.to_string())
                    .or_insert_with(|| bounded(body, MAX_LICENSE_TEXT));
            }
            (None, _) => {}
        }
    }
    if synopses.is_empty() {
        return None;
    }
    Some(License { synopses, texts })
}

/// `text` cut to at most `max` bytes on a character boundary.
fn bounded(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// One deb822 paragraph: (field name, first line, continuation text).
type Paragraph<'a> = Vec<(&'a str, &'a str, String)>;

/// Splits deb822 text into paragraphs of fields. Continuation lines start
/// with a space or tab; ` .` stands for an empty line.
fn paragraphs(text: &str) -> Vec<Paragraph<'_>> {
    let mut out = Vec::new();
    let mut cur: Paragraph<'_> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, _, body)) = cur.last_mut() {
                let l = &line[1..];
                body.push_str(if l.trim() == "." { "" } else { l });
                body.push('\n');
            }
        } else if let Some((name, value)) = line.split_once(':') {
            cur.push((name.trim(), value, String::new()));
        }
        // A line that is neither is not deb822; it is skipped, as dpkg
        // would refuse the file long before.
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The first line and continuation of field `name` (case-insensitive, as
/// deb822 field names are).
fn field<'p>(p: &'p Paragraph<'_>, name: &str) -> Option<(&'p str, &'p str)> {
    p.iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, first, body)| (*first, body.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_installed_packages_with_their_source_and_version() {
        let status = "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13.dfsg-1\n\
            Architecture: amd64\nSource: zlib (1:1.2.13.dfsg-1)\nDescription: x\n more\n .\n\n\
            Package: gone\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: all\n\n\
            Package: base-files\nStatus: hold ok installed\nVersion: 12.4+deb12u5\nArchitecture: amd64\n";
        let p = parse_status(status).unwrap();
        let got: Vec<_> = p
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.source.as_str(),
                    p.source_version.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("base-files", "12.4+deb12u5", "base-files", "12.4+deb12u5"),
                ("zlib1g", "1:1.2.13.dfsg-1", "zlib", "1:1.2.13.dfsg-1"),
            ]
        );
    }

    #[test]
    fn a_name_that_could_climb_out_of_the_doc_directory_is_refused() {
        for bad in ["../../etc", "a/b", "X", "evil\u{1b}[2J"] {
            let s = format!(
                "Package: {bad}\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n"
            );
            let err = format!("{:#}", parse_status(&s).unwrap_err());
            assert!(err.contains("not a Debian package name"), "{err}");
            assert!(!err.contains('\u{1b}'), "{err}");
        }
        let s = "Package: ok\nStatus: install ok installed\nVersion: 1 2\nArchitecture: all\n";
        assert!(parse_status(s).is_err());
    }

    #[test]
    fn every_files_stanza_gives_a_licence_with_its_texts() {
        let dep5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
            Upstream-Name: x\n\nFiles: *\nCopyright: someone\nLicense: BSD-3-clause or Beer\n\n\
            Files: src/x.c\nLicense: GPL-3+\n\nFiles: debian/*\nLicense: GPL-2+\n\n\
            License: Beer\n Buy them a beer.\n .\n Cheers.\n";
        let l = dep5_license(dep5).unwrap();
        assert_eq!(l.synopses, ["BSD-3-clause or Beer", "GPL-3+", "GPL-2+"]);
        assert_eq!(l.texts["Beer"], "Buy them a beer.\n\nCheers.\n");
        // Not DEP-5, no `Files` stanza, or one without a licence: no claim.
        assert_eq!(dep5_license("This is free software.\n"), None);
        let head = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n";
        assert_eq!(dep5_license(&format!("{head}License: MIT\n text\n")), None);
        let unlicensed = format!("{head}Files: *\nLicense: MIT\n\nFiles: src/*\nCopyright: x\n");
        assert_eq!(dep5_license(&unlicensed), None);
        let empty = format!("{head}Files: *\nLicense: MIT\n\nFiles: src/*\nLicense:\n");
        assert_eq!(dep5_license(&empty), None);
    }

    #[test]
    fn the_maintainer_is_kept_bounded() {
        let s = format!(
            "Package: ok\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\
             Maintainer: Debian Bash Maintainers <bash@packages.debian.org>\n\n\
             Package: long\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\
             Maintainer: {}\n\n\
             Package: none\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n",
            "é".repeat(200)
        );
        let p = parse_status(&s).unwrap();
        // Sorted by name: long, none, ok.
        assert_eq!(p[0].maintainer.as_ref().unwrap().len(), MAX_MAINTAINER);
        assert_eq!(p[1].maintainer, None);
        assert_eq!(
            p[2].maintainer.as_deref(),
            Some("Debian Bash Maintainers <bash@packages.debian.org>")
        );
    }
}
