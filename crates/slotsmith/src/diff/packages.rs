//! Debian packages added, removed and changed between two builds, from
//! `/var/lib/dpkg/status` as stored in each rootfs image. A build without
//! that file (a fixture base) has no packages section.
//!
//! The status file is image content, so untrusted: it is parsed leniently
//! (a paragraph without a name or version is skipped, not fatal) and
//! bounded by the image reader's read limit.

use std::collections::BTreeMap;

use serde::Serialize;

/// Where dpkg keeps its database, inside the image.
pub const STATUS: &str = "/var/lib/dpkg/status";

/// Installed packages: `name:arch` -> version.
pub type Installed = BTreeMap<String, String>;

/// One package and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    /// `name:arch`.
    pub package: String,
    /// Its version.
    pub version: String,
}

/// A package whose version changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    /// `name:arch`.
    pub package: String,
    /// Version in the old build.
    pub old: String,
    /// Version in the new build.
    pub new: String,
}

/// The packages section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PackagesDiff {
    /// Packages only the new build has.
    pub added: Vec<Package>,
    /// Packages only the old build has.
    pub removed: Vec<Package>,
    /// Packages in both, at another version.
    pub changed: Vec<Changed>,
}

impl PackagesDiff {
    /// Whether anything differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The installed packages a dpkg status file lists (`Status: ... installed`).
pub fn parse_status(text: &str) -> Installed {
    let mut out = Installed::new();
    for para in text.split("\n\n") {
        let (mut name, mut arch, mut version, mut installed) = (None, None, None, false);
        for line in para.lines() {
            // Continuation lines (descriptions, conffiles) start with a space.
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Package" => name = Some(value),
                "Architecture" => arch = Some(value),
                "Version" => version = Some(value),
                "Status" => installed = value.split_whitespace().nth(2) == Some("installed"),
                _ => {}
            }
        }
        if let (Some(n), Some(v), true) = (name, version, installed) {
            let key = match arch {
                Some(a) if !a.is_empty() => format!("{n}:{a}"),
                _ => n.to_string(),
            };
            out.insert(key, v.to_string());
        }
    }
    out
}

/// The difference between two package sets, sorted by package.
pub fn diff(old: &Installed, new: &Installed) -> PackagesDiff {
    let mut d = PackagesDiff::default();
    for (p, v) in old {
        match new.get(p) {
            None => d.removed.push(Package {
                package: p.clone(),
                version: v.clone(),
            }),
            Some(nv) if nv != v => d.changed.push(Changed {
                package: p.clone(),
                old: v.clone(),
                new: nv.clone(),
            }),
            Some(_) => {}
        }
    }
    for (p, v) in new {
        if !old.contains_key(p) {
            d.added.push(Package {
                package: p.clone(),
                version: v.clone(),
            });
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "Package: bash\nStatus: install ok installed\nArchitecture: amd64\n\
Version: 5.2.15-2\nDescription: shell\n more: text\n\nPackage: gone\nStatus: install ok installed\n\
Architecture: all\nVersion: 1\n\nPackage: half\nStatus: deinstall ok config-files\nArchitecture: amd64\n\
Version: 9\n\nPackage: same\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2\n";
    const NEW: &str = "Package: bash\nStatus: install ok installed\nArchitecture: amd64\n\
Version: 5.2.15-2+deb12u1\n\nPackage: same\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2\n\n\
Package: fresh\nStatus: install ok installed\nArchitecture: amd64\nVersion: 0.1\n";

    #[test]
    fn only_installed_packages_count_and_each_change_is_classified() {
        let old = parse_status(OLD);
        assert_eq!(
            old.keys().collect::<Vec<_>>(),
            ["bash:amd64", "gone:all", "same:amd64"],
            "config-files only is not installed"
        );
        let d = diff(&old, &parse_status(NEW));
        assert_eq!(
            d.added,
            [Package {
                package: "fresh:amd64".into(),
                version: "0.1".into()
            }]
        );
        assert_eq!(
            d.removed,
            [Package {
                package: "gone:all".into(),
                version: "1".into()
            }]
        );
        assert_eq!(
            d.changed,
            [Changed {
                package: "bash:amd64".into(),
                old: "5.2.15-2".into(),
                new: "5.2.15-2+deb12u1".into()
            }]
        );
        assert!(diff(&old, &old).is_empty());
    }
}
