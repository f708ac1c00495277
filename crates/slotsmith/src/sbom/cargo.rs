//! The crates slotsmith was built from, as its `Cargo.lock` pins them.
//!
//! The lock is compiled in (`include_str!`), so the SBOM names the
//! dependencies of the binary that ran, not of whatever checkout it runs
//! in. The list is the lock's dependency closure of `xtask` (the CLI);
//! the lock does not separate dev-dependencies of workspace members, so
//! those are included: the list errs on the side of more.
//!
//! Hand-written rather than a TOML parser: the file is Cargo's own
//! output, compiled in, and only `name`, `version`, `source`, `checksum`
//! and `dependencies` are read.

/// A locked crate from a registry or git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crate {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// sha256 of the `.crate` (registry crates).
    pub checksum: Option<String>,
}

/// The workspace's lock, as built.
pub const LOCK: &str = include_str!("../../../../Cargo.lock");

/// The crates the CLI depends on, sorted by name and version; workspace
/// members (no `source`) are slotsmith itself and are left out.
pub fn locked_crates(lock: &str, root: &str) -> Vec<Crate> {
    let packages = parse(lock);
    let mut seen = vec![false; packages.len()];
    let mut todo: Vec<usize> = packages
        .iter()
        .position(|p| p.name == root)
        .into_iter()
        .collect();
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        for dep in &packages[i].deps {
            // `name`, `name version` or `name version (source)`.
            let mut w = dep.split_whitespace();
            let name = w.next().unwrap_or_default();
            let version = w.next();
            if let Some(j) = packages
                .iter()
                .position(|p| p.name == name && version.is_none_or(|v| p.version == v))
            {
                todo.push(j);
            }
        }
    }
    let mut out: Vec<Crate> = packages
        .into_iter()
        .zip(seen)
        .filter(|(p, seen)| *seen && p.source)
        .map(|(p, _)| Crate {
            name: p.name,
            version: p.version,
            checksum: p.checksum,
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    out
}

/// The version of the workspace member `name` (a crate of this
/// checkout, such as `slotsmith-updater`), as the lock records it.
pub fn member_version(lock: &str, name: &str) -> Option<String> {
    parse(lock)
        .into_iter()
        .find(|p| p.name == name && !p.source)
        .map(|p| p.version)
}

#[derive(Default)]
struct Package {
    name: String,
    version: String,
    source: bool,
    checksum: Option<String>,
    deps: Vec<String>,
}

fn parse(lock: &str) -> Vec<Package> {
    let mut out: Vec<Package> = Vec::new();
    let mut in_deps = false;
    for line in lock.lines() {
        let line = line.trim();
        if line == "[[package]]" {
            out.push(Package::default());
            in_deps = false;
            continue;
        }
        let Some(p) = out.last_mut() else { continue };
        if in_deps {
            if line == "]" {
                in_deps = false;
            } else {
                p.deps.push(unquote(line.trim_end_matches(',')));
            }
            continue;
        }
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        match key {
            "name" => p.name = unquote(value),
            "version" => p.version = unquote(value),
            "source" => p.source = true,
            "checksum" => p.checksum = Some(unquote(value)),
            "dependencies" => in_deps = value == "[",
            _ => {}
        }
    }
    out
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches('"').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closure_of_the_cli_from_the_compiled_in_lock() {
        let crates = locked_crates(LOCK, "xtask");
        let find = |n: &str| crates.iter().find(|c| c.name == n);
        // Direct and transitive dependencies, with their registry checksums.
        for n in ["anyhow", "serde_json", "sha2", "backhand", "generic-array"] {
            let c = find(n).unwrap_or_else(|| panic!("{n} missing"));
            assert_eq!(c.checksum.as_ref().map(String::len), Some(64), "{n}");
        }
        // Workspace members are the tool itself.
        assert!(find("slotsmith").is_none() && find("xtask").is_none());
        let mut sorted = crates.clone();
        sorted.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        assert_eq!(crates, sorted);
    }

    #[test]
    fn the_updater_is_a_member_with_its_own_closure() {
        let v = member_version(LOCK, "slotsmith-updater").unwrap();
        let manifest = include_str!("../../../updater/Cargo.toml");
        assert!(manifest.contains(&format!("\nversion = \"{v}\"\n")), "{v}");
        assert_eq!(member_version(LOCK, "anyhow"), None, "a registry crate");
        let crates = locked_crates(LOCK, "slotsmith-updater");
        assert!(crates.iter().any(|c| c.name == "clap"), "{crates:?}");
        // The builder's heavy dependencies are not the device's.
        assert!(crates.iter().all(|c| c.name != "backhand"), "{crates:?}");
    }

    #[test]
    fn versioned_references_pick_the_right_crate() {
        let lock = "[[package]]\nname = \"root\"\nversion = \"0.1.0\"\ndependencies = [\n \"a 2.0.0\",\n]\n\n\
            [[package]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = \"registry+x\"\n\n\
            [[package]]\nname = \"a\"\nversion = \"2.0.0\"\nsource = \"registry+x\"\nchecksum = \"ab\"\n";
        let c = locked_crates(lock, "root");
        assert_eq!(
            c,
            [Crate {
                name: "a".into(),
                version: "2.0.0".into(),
                checksum: Some("ab".into())
            }]
        );
    }
}
