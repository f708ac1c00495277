//! Builds the programs a boot-chain image carries, as static executables:
//! the initramfs's init (`crates/init`) and the updater in the rootfs
//! (`crates/updater`).
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

/// The programs a boot-chain image carries, built from this checkout.
pub struct DevicePrograms {
    /// The initramfs's `/init` (`crates/init`).
    pub init: PathBuf,
    /// `/usr/sbin/slotsmith-update` in the rootfs (`crates/updater`).
    pub updater: PathBuf,
}

/// Builds the init and the updater (one cargo run) and returns their paths.
pub fn build_device_programs(
    progress: &mut crate::progress::Progress,
) -> anyhow::Result<DevicePrograms> {
    let dir = build_packages(
        &[],
        "init",
        &["slotsmith-init", "slotsmith-updater"],
        progress,
    )?;
    let programs = DevicePrograms {
        init: dir.join("slotsmith-init"),
        updater: dir.join("slotsmith-update"),
    };
    for p in [&programs.init, &programs.updater] {
        anyhow::ensure!(p.is_file(), "cargo built no {}", p.display());
    }
    Ok(programs)
}

/// Builds the init with cargo `features` into `target/<dir>/`. Only the
/// boot benchmark asks for a feature (`bench-unverified-root`); the image
/// build never does.
pub fn build(
    features: &[&str],
    dir: &str,
    progress: &mut crate::progress::Progress,
) -> anyhow::Result<PathBuf> {
    let bin = build_packages(features, dir, &["slotsmith-init"], progress)?.join("slotsmith-init");
    anyhow::ensure!(bin.is_file(), "cargo built no {}", bin.display());
    Ok(bin)
}

/// Builds `packages` statically into `target/<dir>/` and returns the
/// directory holding their executables.
fn build_packages(
    features: &[&str],
    dir: &str,
    packages: &[&str],
    progress: &mut crate::progress::Progress,
) -> anyhow::Result<PathBuf> {
    let ws = workspace();
    let target_dir = ws.join("target").join(dir);
    progress.stage(
        "init",
        &format!("building {} (static)", packages.join(" and ")),
    );
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
        .args(["build", "--quiet", "--locked", "--release"])
        .args(packages.iter().flat_map(|p| ["-p", p]))
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
        .with_context(|| format!("building {}", packages.join(" and ")))?;
    Ok(target_dir.join(TARGET).join("release"))
}
