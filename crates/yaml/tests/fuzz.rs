//! The YAML reader (`Doc` and `Reader`) under stable `cargo test` fuzzing
//! (issue 8): every YAML file of the repository as a seed, plus hostile
//! seeds (aliases, deep nesting, duplicate keys, a byte-order mark, control
//! characters), and deterministic mutations of them. Invariants: no panic,
//! bounded allocation, every diagnostic has a line and column, and every
//! rendered diagnostic is free of control and format characters.

use std::path::{Path, PathBuf};

use serde_norway::Value;
use slotsmith_yaml::escape::needs_escape;
use slotsmith_yaml::yaml::{Doc, Reader};

#[global_allocator]
static ALLOC: slotsmith_fuzzing::CountingAlloc = slotsmith_fuzzing::CountingAlloc;

fn repo_yaml() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut paths: Vec<PathBuf> = Vec::new();
    for dir in ["images", "policies"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            paths.push(e.unwrap().path());
        }
    }
    for e in std::fs::read_dir(root.join("layers")).unwrap() {
        paths.push(e.unwrap().path().join("conf/layer.yaml"));
    }
    paths.retain(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml"));
    paths.sort();
    assert!(paths.len() >= 5, "{paths:?}");
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn hostile() -> Vec<Vec<u8>> {
    [
        "a: &x [1, 2]\nb: *x\n",
        "a:\n  b:\n    c: [[[[{d: 1}]]]]\n",
        "a: 1\nb: 2\na: 3\n",
        "\u{feff}name: x\n",
        "k: \"\\e[2J\\u202E\\x9b\"\n\"\\e]0;x\\a\": 1\n",
        "? [a, b]\n: 1\n",
        "a: !tag 1\nb: !!binary aGk=\n",
        "--- 1\n--- 2\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// Reads `v` the way loaders do: every mapping with a short list of known
/// keys, every value converted to a string and a number.
fn walk(r: &mut Reader<'_>, path: &str, v: &Value, depth: usize) {
    if depth > 80 {
        return;
    }
    match v {
        Value::Mapping(_) => {
            if let Some(mut m) = r.map(path, v, &["name", "rules", "files"]) {
                for k in m.keys() {
                    let child = slotsmith_yaml::yaml::join_key(path, &k);
                    if let Some(c) = r.raw(&mut m, &k) {
                        walk(r, &child, c, depth + 1);
                    }
                }
                r.finish(m);
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(r, &format!("{path}[{i}]"), item, depth + 1);
            }
        }
        other => {
            let _: Option<String> = r.convert(path, other);
            let _: Option<u64> = r.convert(path, other);
        }
    }
}

#[test]
fn yaml_doc() {
    let mut seeds = repo_yaml();
    seeds.extend(hostile());
    slotsmith_fuzzing::exercise("yaml_doc", &seeds, 5000, |bytes| {
        let file = Path::new("x.yaml");
        let diags = match Doc::parse_bytes(file, bytes) {
            Ok(doc) => {
                let mut r = Reader::new(&doc);
                walk(&mut r, "", &doc.value, 0);
                r.diags
            }
            Err(d) => {
                assert!(!d.is_empty(), "an error without a diagnostic");
                d
            }
        };
        for d in diags.iter() {
            assert!(d.line >= 1 && d.col >= 1, "no position: {d}");
        }
        for line in diags.to_string().split('\n') {
            assert!(
                !line.chars().any(|c| c != '\\' && needs_escape(c)),
                "raw control or format character in {line:?}"
            );
        }
    });
}
