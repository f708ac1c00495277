//! DEP-5 licence synopses as SPDX licence expressions.
//!
//! Debian's short names are close to SPDX identifiers but not the same
//! (`GPL-2+`, `Expat`, `BSD-3-clause`). A name maps to an SPDX identifier
//! only when the correspondence is exact; anything else, and any synopsis
//! the mapping cannot read with certainty (exceptions, commas, bare words),
//! becomes a `LicenseRef-` the document declares with the text the
//! copyright file gives. Under-claiming is the safe side for a reviewer:
//! a package's declared licence is every `Files` stanza's licence joined
//! with `AND`, never the `Files: *` stanza's alone.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

/// An SPDX expression and the `LicenseRef-`s it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    /// The expression (`GPL-2.0-or-later OR LicenseRef-Artistic-…`).
    pub spdx: String,
    /// Each `LicenseRef-` it uses, once.
    pub refs: Vec<Ref>,
}

/// A licence SPDX has no identifier for, declared by the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// `LicenseRef-<name>-<hash>`.
    pub id: String,
    /// The Debian name (`other`, `public-domain`).
    pub name: String,
    /// The text the copyright file gives for it, if any.
    pub text: Option<String>,
}

/// The declared licence of a package whose copyright file's `Files`
/// stanzas say `synopses`: every stanza's expression, deduplicated and
/// sorted, joined with `AND` (the package is built from all those files).
/// `texts` are the file's licence texts by name; `package` keys the
/// references of names the file gives no text for.
pub fn declared(
    synopses: &[String],
    texts: &BTreeMap<String, String>,
    package: &str,
) -> Expression {
    let mut refs: Vec<Ref> = Vec::new();
    let mut terms = BTreeSet::new();
    for synopsis in synopses {
        let e = expression(synopsis, texts, package);
        for r in e.refs {
            if !refs.iter().any(|x| x.id == r.id) {
                refs.push(r);
            }
        }
        terms.insert(e.spdx);
    }
    let spdx = if terms.len() == 1 {
        terms.into_iter().next().unwrap_or_default()
    } else {
        terms
            .into_iter()
            .map(|t| if t.contains(' ') { format!("({t})") } else { t })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    refs.sort_by(|a, b| a.id.cmp(&b.id));
    Expression { spdx, refs }
}

/// The SPDX expression for one DEP-5 synopsis; see [`declared`] for
/// `texts` and `package`.
pub fn expression(synopsis: &str, texts: &BTreeMap<String, String>, package: &str) -> Expression {
    let words: Vec<&str> = synopsis.split_whitespace().collect();
    // `name (op name)*` with `and`/`or`; DEP-5 gives `and` the higher
    // precedence without commas, as SPDX does. Anything else is one name.
    let simple = words.len() % 2 == 1
        && !synopsis.contains([',', '(', ')'])
        && words.iter().enumerate().all(|(i, w)| {
            let op = w.eq_ignore_ascii_case("and") || w.eq_ignore_ascii_case("or");
            op == (i % 2 == 1) && !w.eq_ignore_ascii_case("with")
        });
    let mut refs: Vec<Ref> = Vec::new();
    let mut term = |name: &str| match spdx_id(name) {
        Some(id) => id,
        None => {
            let text = texts.get(name).cloned();
            let id = license_ref(name, text.as_deref(), package);
            if !refs.iter().any(|r| r.id == id) {
                refs.push(Ref {
                    id: id.clone(),
                    name: name.to_string(),
                    text,
                });
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

/// `LicenseRef-<name>-<hash>`: the name sanitised to `[A-Za-z0-9.-]`,
/// and 16 hex digits of a sha256 over the name and the licence's text.
/// Debian names such as `other` or `public-domain` stand for a different
/// licence in every package, so the name alone must not be the key: two
/// texts give two references, the same text one. A name the file gives
/// no text for is keyed by the package instead (nothing shows two such
/// are the same licence).
pub fn license_ref(name: &str, text: Option<&str>, package: &str) -> String {
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
    let mut h = Sha256::new();
    // Length-prefixed parts: no two (name, text) pairs share an input.
    for part in [
        name,
        text.map_or("package", |_| "text"),
        text.unwrap_or(package),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    format!("LicenseRef-{clean}-{}", hex::encode(&h.finalize()[..8]))
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

    fn texts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn debian_names_map_to_spdx_only_when_exact() {
        let none = BTreeMap::new();
        let e = expression("GPL-2+ or Artistic", &none, "perl");
        let artistic = license_ref("Artistic", None, "perl");
        assert!(artistic.starts_with("LicenseRef-Artistic-"), "{artistic}");
        assert_eq!(e.spdx, format!("GPL-2.0-or-later OR {artistic}"));
        assert_eq!(e.refs.len(), 1);
        assert_eq!(
            (e.refs[0].id.as_str(), e.refs[0].name.as_str()),
            (artistic.as_str(), "Artistic")
        );
        assert_eq!(
            expression("LGPL-2.1+ and BSD-3-clause", &none, "p").spdx,
            "LGPL-2.1-or-later AND BSD-3-Clause"
        );
        assert_eq!(expression("Expat", &none, "p").spdx, "MIT");
        assert_eq!(expression("GPL-3", &none, "p").spdx, "GPL-3.0-only");
        assert_eq!(expression("GPL-4", &none, "p").refs.len(), 1);
        // An exception or a comma is not read: one reference.
        let e = expression("GPL-2+ with OpenSSL exception", &none, "p");
        assert!(e
            .spdx
            .starts_with("LicenseRef-GPL-2--with-OpenSSL-exception-"));
        assert_eq!(e.refs[0].name, "GPL-2+ with OpenSSL exception");
        assert_ne!(license_ref("a b", None, "p"), license_ref("a-b", None, "p"));
        assert_eq!(expression("public domain", &none, "p").refs.len(), 1);
    }

    #[test]
    fn a_reference_is_keyed_by_its_text_not_its_name_alone() {
        let a = texts(&[("other", "You may do anything.")]);
        let b = texts(&[("other", "Only on Tuesdays.")]);
        let ra = expression("other", &a, "pkg-a");
        let rb = expression("other", &b, "pkg-b");
        assert_ne!(ra.spdx, rb.spdx);
        assert_eq!(ra.refs[0].text.as_deref(), Some("You may do anything."));
        // The same text in two packages is one licence; deterministic.
        assert_eq!(ra.spdx, expression("other", &a, "pkg-c").spdx);
        // No text: each package its own reference.
        let none = BTreeMap::new();
        assert_ne!(
            expression("other", &none, "pkg-a").spdx,
            expression("other", &none, "pkg-b").spdx
        );
        assert_eq!(
            expression("other", &none, "pkg-a").spdx,
            expression("other", &none, "pkg-a").spdx
        );
    }

    #[test]
    fn every_stanza_is_declared_with_and() {
        let none = BTreeMap::new();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // `Files: *` BSD with a GPL file: both, never BSD alone.
        let e = declared(&s(&["BSD-3-clause", "GPL-3+", "BSD-3-clause"]), &none, "p");
        assert_eq!(e.spdx, "BSD-3-Clause AND GPL-3.0-or-later");
        // Compound stanzas are parenthesised; the order is sorted, so the
        // file's stanza order does not change the bytes.
        let e = declared(&s(&["Zlib", "GPL-2+ or LGPL-2.1+"]), &none, "p");
        assert_eq!(e.spdx, "(GPL-2.0-or-later OR LGPL-2.1-or-later) AND Zlib");
        assert_eq!(
            declared(&s(&["GPL-2+ or LGPL-2.1+", "Zlib"]), &none, "p"),
            e
        );
        assert_eq!(declared(&s(&["MIT"]), &none, "p").spdx, "MIT");
        let e = declared(&s(&["other", "MIT or other"]), &none, "p");
        assert_eq!(e.refs.len(), 1);
    }
}
