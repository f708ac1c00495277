//! Builds the boot chain's init (`crates/init`) as a static executable.
//!
//! The init is compiled from this checkout's sources, the same ones the
//! running slotsmith was built from, with the same toolchain and
//! `Cargo.lock`, into its own target directory (`target/init/`), so it
//! never invalidates the workspace's own build. It is linked statically
//! (`+crt-static`: the initramfs holds no C library) and paths are
//! remapped, so its bytes do not depend on where the checkout or the cargo
//! home live: the same sources give the same init, and so the same
//! initramfs and UKI.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::tool::Tool;

/// The target triple the init is built for.
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// This checkout: the workspace root this binary was compiled from.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// Builds the init and returns the path of the executable.
pub fn build_init(progress: &mut crate::progress::Progress) -> anyhow::Result<PathBuf> {
    build(&[], "init", progress)
}

/// Builds the init with cargo `features` into `target/<dir>/`. Only the
/// boot benchmark asks for a feature (`bench-unverified-root`); the image
/// build never does.
pub fn build(
    features: &[&str],
    dir: &str,
    progress: &mut crate::progress::Progress,
) -> anyhow::Result<PathBuf> {
    let ws = workspace();
    let target_dir = ws.join("target").join(dir);
    progress.stage("init", "building the initramfs init (crates/init), static");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    // CARGO_ENCODED_RUSTFLAGS wins over RUSTFLAGS and over any flags the
    // calling cargo passes down; its separator is 0x1f.
    let flags = [
        "-Ctarget-feature=+crt-static".to_string(),
        format!("--remap-path-prefix={}=/slotsmith", ws.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
    ]
    .join("\x1f");
    Tool::new(&cargo.to_string_lossy())?
        .args([
            "build",
            "--quiet",
            "--locked",
            "--release",
            "-p",
            "slotsmith-init",
        ])
        .args(["--target", TARGET])
        .args(if features.is_empty() {
            Vec::new()
        } else {
            vec!["--features".to_string(), features.join(",")]
        })
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .dir(&ws)
        .run()
        .context("building the init (crates/init)")?;
    let bin = target_dir.join(TARGET).join("release/slotsmith-init");
    anyhow::ensure!(bin.is_file(), "cargo built no {}", bin.display());
    Ok(bin)
}
