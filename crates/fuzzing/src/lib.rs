//! Fuzzing that runs on every `cargo test`, on stable Rust.
//!
//! `cargo fuzz` (nightly, libFuzzer) explores for hours; CI cannot. Each
//! parser of untrusted bytes therefore has, beside its `fuzz/fuzz_targets/`
//! target, a stable test that calls [`exercise`]: it replays the target's
//! committed corpus (`fuzz/corpus/<target>/`, where `cargo fuzz` also saves
//! what it finds), the seeds the test generates, and a fixed number of
//! deterministic mutations of them. The invariants checked for every input:
//!
//! - no panic (caught, reported with the input in hex and saved under
//!   `target/fuzz-failures/<target>/` so it can be replayed and committed to
//!   the corpus);
//! - no allocation beyond a bound (256 MiB by default), when the test binary
//!   installs [`CountingAlloc`] as its global allocator. A parser that sizes
//!   a buffer from a header field is the classic way a 100-byte input asks
//!   for 64 GiB.
//!
//! The mutations are seeded, so a failure reproduces on every run.

mod alloc;
mod mutate;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

pub use alloc::CountingAlloc;

/// The default bound on the bytes one input may have allocated at once.
pub const DEFAULT_ALLOC_LIMIT: usize = 256 << 20;

/// Runs `f` on the corpus of `target`, on `seeds` and on `iterations`
/// mutations of them, with the default allocation bound.
pub fn exercise(target: &str, seeds: &[Vec<u8>], iterations: u32, f: impl Fn(&[u8])) {
    exercise_with_limit(target, seeds, iterations, DEFAULT_ALLOC_LIMIT, f)
}

/// [`exercise`] with an explicit allocation bound in bytes.
pub fn exercise_with_limit(
    target: &str,
    seeds: &[Vec<u8>],
    iterations: u32,
    alloc_limit: usize,
    f: impl Fn(&[u8]),
) {
    let mut inputs = corpus(target);
    inputs.extend(seeds.iter().cloned());
    if inputs.is_empty() {
        inputs.push(Vec::new());
    }
    let n_corpus = inputs.len();
    let mut rng = mutate::Rng::new(fnv(target.as_bytes()));
    let run = |input: &[u8], what: &str| {
        alloc::reset_peak();
        let res = catch_unwind(AssertUnwindSafe(|| f(input)));
        let peak = alloc::peak();
        if let Err(e) = res {
            let msg = e
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| e.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            let saved = save_failure(target, input);
            panic!(
                "fuzz target {target}: {what} panicked: {msg}\ninput ({} bytes, saved to {}): {}",
                input.len(),
                saved.display(),
                preview(input)
            );
        }
        if peak > alloc_limit {
            let saved = save_failure(target, input);
            panic!(
                "fuzz target {target}: {what} allocated {peak} bytes at once (limit {alloc_limit})\ninput ({} bytes, saved to {}): {}",
                input.len(),
                saved.display(),
                preview(input)
            );
        }
    };
    for (i, input) in inputs.iter().enumerate() {
        run(input, &format!("corpus/seed input {i}"));
    }
    for i in 0..iterations {
        let base = &inputs[rng.below(n_corpus)];
        let other = &inputs[rng.below(n_corpus)];
        let m = mutate::mutate(&mut rng, base, other);
        run(&m, &format!("mutation {i}"));
    }
    eprintln!(
        "fuzz target {target}: {n_corpus} corpus/seed inputs and {iterations} mutations, no panic, peak allocation bounded by {alloc_limit} bytes"
    );
}

/// The committed corpus of `target`, sorted by file name.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = repo_root().join("fuzz/corpus").join(target);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn save_failure(target: &str, input: &[u8]) -> PathBuf {
    let dir = repo_root().join("target/fuzz-failures").join(target);
    let path = dir.join(format!("{:016x}", fnv(input)));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(&path, input);
    path
}

fn preview(input: &[u8]) -> String {
    const MAX: usize = 512;
    if input.len() <= MAX {
        hex::encode(input)
    } else {
        format!(
            "{}... ({} more bytes)",
            hex::encode(&input[..MAX]),
            input.len() - MAX
        )
    }
}

fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_target_is_reported_with_its_input() {
        let res = catch_unwind(|| {
            exercise("selftest", &[b"abc".to_vec()], 200, |b| {
                if b.len() > 3 {
                    panic!("too long");
                }
            })
        });
        let err = res.expect_err("a panic must fail the exercise");
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.contains("fuzz target selftest"), "{msg}");
        assert!(msg.contains("too long"), "{msg}");
    }

    #[test]
    fn mutations_are_deterministic() {
        let mut a = mutate::Rng::new(7);
        let mut b = mutate::Rng::new(7);
        let seed = b"hello world".to_vec();
        for _ in 0..100 {
            assert_eq!(
                mutate::mutate(&mut a, &seed, &seed),
                mutate::mutate(&mut b, &seed, &seed)
            );
        }
    }
}
