//! Repository rules checked as tests, as rust-analyzer's tidy does: every
//! Rust file starts with a `//!` header saying what it is and why, and no
//! code outside the tool module starts programs with std::process.

use std::fs;

use crate::support::repo_root;

fn rust_files() -> Vec<std::path::PathBuf> {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests"] {
        for e in walkdir::WalkDir::new(root.join(dir))
            .into_iter()
            .filter_entry(|e| e.file_name() != "target")
        {
            let e = e.unwrap();
            if e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "rs") {
                files.push(e.into_path());
            }
        }
    }
    assert!(files.len() > 40, "found only {} Rust files", files.len());
    files
}

#[test]
fn every_rust_file_has_a_module_header() {
    let missing: Vec<String> = rust_files()
        .into_iter()
        .filter(|p| !fs::read_to_string(p).unwrap().starts_with("//!"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! header: {missing:?}"
    );
}

#[test]
fn only_the_tool_module_runs_programs() {
    // Spelled in pieces so this file does not match itself.
    let needle = ["std::process::", "Command", "::new"].concat();
    let offenders: Vec<String> = rust_files()
        .into_iter()
        .filter(|p| !p.ends_with("crates/slotsmith/src/tool.rs"))
        .filter(|p| fs::read_to_string(p).unwrap().contains(&needle))
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "programs started outside tool.rs: {offenders:?}"
    );
}
