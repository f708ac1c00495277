//! DEP-5 licence synopses as SPDX licence expressions.
//!
//! Debian's short names are close to SPDX identifiers but not the same
//! (`GPL-2+`, `Expat`, `BSD-3-clause`). A name maps to an SPDX identifier
//! only when the correspondence is exact; anything else, and any synopsis
//! the mapping cannot read with certainty (exceptions, commas, bare words),
//! becomes a `LicenseRef-` the document declares with the text the
//! copyright file gives. Under-claiming is the safe side for a reviewer.

use sha2::{Digest, Sha256};

/// An SPDX expression and the `LicenseRef-` names it uses, as (id, name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    /// The expression (`GPL-2.0-or-later OR LicenseRef-Artistic`).
    pub spdx: String,
    /// Each `LicenseRef-` id with the Debian name it stands for.
    pub refs: Vec<(String, String)>,
}

/// The SPDX expression for a DEP-5 synopsis.
pub fn expression(synopsis: &str) -> Expression {
    let words: Vec<&str> = synopsis.split_whitespace().collect();
    // `name (op name)*` with `and`/`or`; DEP-5 gives `and` the higher
    // precedence without commas, as SPDX does. Anything else is one name.
    let simple = words.len() % 2 == 1
        && !synopsis.contains([',', '(', ')'])
        && words.iter().enumerate().all(|(i, w)| {
            let op = w.eq_ignore_ascii_case("and") || w.eq_ignore_ascii_case("or");
            op == (i % 2 == 1) && !w.eq_ignore_ascii_case("with")
        });
    let mut refs = Vec::new();
    let mut term = |name: &str| match spdx_id(name) {
        Some(id) => id,
        None => {
            let id = license_ref(name);
            if !refs.iter().any(|(i, _)| i == &id) {
                refs.push((id.clone(), name.to_string()));
            }
            id
        }
    };
    let spdx = if simple {
        words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i % 2 == 1 {
                    w.to_ascii_uppercase()
                } else {
                    term(w)
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        term(&words.join(" "))
    };
    Expression { spdx, refs }
}

/// `LicenseRef-<name>`, sanitised to `[A-Za-z0-9.-]`; a name that needed
/// sanitising carries a hash of itself, so two names never share an id.
pub fn license_ref(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean == name && !name.is_empty() {
        format!("LicenseRef-{clean}")
    } else {
        let h = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
        format!("LicenseRef-{clean}-{h}")
    }
}

/// The SPDX identifier a Debian short name stands for exactly, if any.
pub fn spdx_id(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    // The GNU families: `GPL-2`, `GPL-2.0+`, `LGPL-2.1+`.
    for (family, versions) in [
        ("gpl", &["1.0", "2.0", "3.0"][..]),
        ("lgpl", &["2.0", "2.1", "3.0"][..]),
        ("agpl", &["1.0", "3.0"][..]),
        ("gfdl", &["1.1", "1.2", "1.3"][..]),
    ] {
        let Some(v) = lower.strip_prefix(family).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        let (v, later) = match v.strip_suffix('+') {
            Some(v) => (v, true),
            None => (v, false),
        };
        let v = if v.contains('.') {
            v.to_string()
        } else {
            format!("{v}.0")
        };
        if !versions.contains(&v.as_str()) {
            return None;
        }
        let suffix = if later { "or-later" } else { "only" };
        return Some(format!("{}-{v}-{suffix}", family.to_ascii_uppercase()));
    }
    const EXACT: &[(&str, &str)] = &[
        ("apache-2.0", "Apache-2.0"),
        ("artistic-2.0", "Artistic-2.0"),
        ("bsd-2-clause", "BSD-2-Clause"),
        ("bsd-3-clause", "BSD-3-Clause"),
        ("bsd-4-clause", "BSD-4-Clause"),
        ("bsl-1.0", "BSL-1.0"),
        ("cc0-1.0", "CC0-1.0"),
        ("epl-1.0", "EPL-1.0"),
        ("epl-2.0", "EPL-2.0"),
        ("expat", "MIT"),
        ("isc", "ISC"),
        ("mit", "MIT"),
        ("mpl-1.1", "MPL-1.1"),
        ("mpl-2.0", "MPL-2.0"),
        ("ofl-1.1", "OFL-1.1"),
        ("openssl", "OpenSSL"),
        ("unlicense", "Unlicense"),
        ("zlib", "Zlib"),
        ("0bsd", "0BSD"),
    ];
    EXACT
        .iter()
        .find(|(d, _)| *d == lower)
        .map(|(_, s)| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_names_map_to_spdx_only_when_exact() {
        let e = expression("GPL-2+ or Artistic");
        assert_eq!(e.spdx, "GPL-2.0-or-later OR LicenseRef-Artistic");
        assert_eq!(e.refs, [("LicenseRef-Artistic".into(), "Artistic".into())]);
        assert_eq!(
            expression("LGPL-2.1+ and BSD-3-clause").spdx,
            "LGPL-2.1-or-later AND BSD-3-Clause"
        );
        assert_eq!(expression("Expat").spdx, "MIT");
        assert_eq!(expression("GPL-3").spdx, "GPL-3.0-only");
        assert_eq!(expression("GPL-4").refs.len(), 1);
        // An exception or a comma is not read: one reference, hashed
        // because it had to be sanitised.
        let e = expression("GPL-2+ with OpenSSL exception");
        assert!(e
            .spdx
            .starts_with("LicenseRef-GPL-2--with-OpenSSL-exception-"));
        assert_eq!(e.refs[0].1, "GPL-2+ with OpenSSL exception");
        assert_ne!(license_ref("a b"), license_ref("a-b"));
        assert_eq!(expression("public domain").refs.len(), 1);
    }
}
