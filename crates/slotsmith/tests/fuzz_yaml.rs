//! The image and layer loaders under stable `cargo test` fuzzing (issue 8):
//! the `yaml_image` and `yaml_layer` corpora, the repository's own
//! `images/*.yaml` and `layers/*/conf/layer.yaml` as seeds, and
//! deterministic mutations of them. Invariants: no panic, bounded
//! allocation, every diagnostic about the fuzzed file has a line, and every
//! rendered diagnostic is free of control and format characters.
//!
//! The loaders read the layers, policies and layer files an image names
//! under the repository root; they only read, so the checkout is safe.

use std::path::{Path, PathBuf};

use slotsmith::diag::Diagnostics;
use slotsmith::load::{parse_image, parse_layer};
use slotsmith_yaml::escape::needs_escape;
use slotsmith_yaml::read::decode;

#[global_allocator]
static ALLOC: slotsmith_fuzzing::CountingAlloc = slotsmith_fuzzing::CountingAlloc;

/// Mutations per target: a few seconds in the dev profile.
const ITERATIONS: u32 = 3000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The files matching `dir/*/suffix` (or `dir/*suffix` when `nested` is
/// false) in the repository, sorted.
fn seeds(dir: &str, nested: bool, suffix: &str) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| if nested { p.join(suffix) } else { p })
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seeds under {dir}");
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// The invariants every failed load must keep.
fn check(shown: &str, diags: &Diagnostics) {
    assert!(!diags.is_empty(), "an error without a diagnostic");
    for d in diags.iter() {
        if d.file == Path::new(shown) {
            assert!(d.line >= 1 && d.col >= 1, "no position: {d}");
        }
    }
    let rendered = diags.to_string();
    for line in rendered.split('\n') {
        assert!(
            !line.chars().any(|c| c != '\\' && needs_escape(c)),
            "raw control or format character in {line:?}"
        );
    }
}

#[test]
fn yaml_image() {
    let root = repo();
    let shown = "images/fuzz.yaml";
    slotsmith_fuzzing::exercise(
        "yaml_image",
        &seeds("images", false, ".yaml"),
        ITERATIONS,
        |bytes| {
            let res = decode(Path::new(shown), bytes).and_then(|t| parse_image(&root, shown, t));
            if let Err(d) = res {
                check(shown, &d);
            }
        },
    );
}

#[test]
fn yaml_layer() {
    let root = repo();
    // The conf is fuzzed; the files/ tree is meta-demo's real one.
    let dir = root.join("layers/meta-demo");
    let shown = "layers/meta-demo/conf/layer.yaml";
    slotsmith_fuzzing::exercise(
        "yaml_layer",
        &seeds("layers", true, "conf/layer.yaml"),
        ITERATIONS,
        |bytes| {
            let res = decode(Path::new(shown), bytes)
                .and_then(|t| parse_layer(&root, "meta-demo", &dir, shown, t));
            if let Err(d) = res {
                check(shown, &d);
            }
        },
    );
}

#[test]
fn the_seeds_themselves_load() {
    // Mutations of broken seeds would explore little: the seeds must be
    // good inputs.
    let root = repo();
    for (i, s) in seeds("images", false, ".yaml").iter().enumerate() {
        let text = std::str::from_utf8(s).unwrap();
        if let Err(d) = parse_image(&root, "images/seed.yaml", text) {
            panic!("image seed {i}:\n{d}");
        }
    }
}
