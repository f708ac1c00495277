//! The policy loader under stable `cargo test` fuzzing (issue 8): the
//! `yaml_policy` corpus, the repository's `policies/*.yaml` as seeds, and
//! deterministic mutations of them. Invariants: no panic, bounded
//! allocation, every diagnostic has a line, and every rendered diagnostic
//! is free of control and format characters. The cargo-fuzz twin is
//! fuzz/fuzz_targets/yaml_policy.rs.

use std::path::{Path, PathBuf};

use slotsmith_policy::load::parse_policy;
use slotsmith_yaml::escape::needs_escape;
use slotsmith_yaml::read::decode;

#[global_allocator]
static ALLOC: slotsmith_fuzzing::CountingAlloc = slotsmith_fuzzing::CountingAlloc;

fn seeds() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 3, "{paths:?}");
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn yaml_policy() {
    let shown = "policies/fuzz.yaml";
    let seeds = seeds();
    for s in &seeds {
        // The seeds are good policies, so mutations start from valid input.
        let text = std::str::from_utf8(s).unwrap();
        if let Err(d) = parse_policy(shown, text) {
            panic!("a shipped policy does not load:\n{d}");
        }
    }
    slotsmith_fuzzing::exercise("yaml_policy", &seeds, 4000, |bytes| {
        let Err(d) = decode(Path::new(shown), bytes).and_then(|t| parse_policy(shown, t)) else {
            return;
        };
        assert!(!d.is_empty(), "an error without a diagnostic");
        for x in d.iter() {
            assert!(x.line >= 1 && x.col >= 1, "no position: {x}");
        }
        for line in d.to_string().split('\n') {
            assert!(
                !line.chars().any(|c| c != '\\' && needs_escape(c)),
                "raw control or format character in {line:?}"
            );
        }
    });
}
