//! The project files a build read, recorded by content in `build.json`
//! (`inputs`), so `cargo xtask repro` can rebuild a release in a fresh
//! project and a reviewer can see which input an edit changed.
//!
//! Hashes the plan already holds (a base tarball, kernel files, every
//! layer file) are taken from the plan: they are what the build used,
//! checked again where the build reads them; so is the lock's. Files only
//! the load stage reads (the image file, each `conf/layer.yaml`, the
//! policies) carry no hash in the plan; they are hashed when the build starts, and
//! the plan's own hash in `build.json` covers what was parsed from them.
//!
//! A layer file also carries the mode the image gives it (`"mode":
//! "0755"`): declared in `conf/layer.yaml`, or else taken from the file's
//! executable bit by the load stage (`load/layer.rs`), so a `chmod` after
//! publishing changes the image and must be named. The mode recorded is the
//! plan's, not the one on disk: a disk mode that does not reach the image
//! (a declared mode overrides it; only the executable bit counts) is not an
//! input.
//!
//! Besides regular files, a layer's `files/` holds symlinks (systemd's
//! `.wants` links) and possibly empty directories, which are image content
//! too; they are recorded by target and by presence. A layer directory
//! that is a symlink (to a checkout under `sources/`) is recorded as one.
//! Keys are not inputs by content: they are private, and `build.json`
//! already names the boot key by its public fingerprint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::spec::{BaseSpec, KernelSource, LayerEntryKind};

/// One project file the build read, as `build.json` records it: exactly
/// one of `sha256` (a regular file), `symlink` (its target) or `directory`
/// (an empty directory of a layer's `files/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Relative to the project root; absolute for a file outside the
    /// project, which the image named by its absolute path.
    pub path: String,
    /// sha256 of the contents of a regular file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The target of a symlink (never followed by the build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink: Option<String>,
    /// An empty directory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub directory: bool,
    /// The mode a layer file has in the image, four octal digits (absent
    /// for files whose mode on disk does not matter, such as the image
    /// file or a base tarball).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl Input {
    fn file(path: &str, sha256: &str) -> Input {
        Input {
            path: path.to_string(),
            sha256: Some(sha256.to_string()),
            symlink: None,
            directory: false,
            mode: None,
        }
    }

    /// The inputs whose content the plan already holds: the lock, a base
    /// tarball, kernel files and every layer file (with its mode), each
    /// with the plan's hash, sorted by path. `repro` uses them to accept
    /// only the absolute inputs the image itself names and to see a mode
    /// that changed since the build.
    pub fn planned(plan: &Plan) -> Vec<Input> {
        let mut by_path = BTreeMap::new();
        planned_into(plan, &mut by_path);
        by_path.into_values().collect()
    }
}

/// The mode as build.json writes it.
fn octal(mode: u32) -> String {
    format!("{mode:04o}")
}

/// [`Input::planned`] into `by_path`.
fn planned_into(plan: &Plan, by_path: &mut BTreeMap<String, Input>) {
    // The lock's hash is the one the plan (and so the build) used.
    if let Some(lock) = &plan.base.lock {
        by_path.insert(lock.path.clone(), Input::file(&lock.path, &lock.sha256));
    }
    if let BaseSpec::Tarball { path, sha256, .. } = &plan.base.spec {
        by_path.insert(path.clone(), Input::file(path, sha256));
    }
    if let KernelSource::Files { image, initrd, dtb } = &plan.boot.kernel.source {
        for f in std::iter::once(image).chain(initrd).chain(dtb) {
            by_path.insert(f.path.clone(), Input::file(&f.path, &f.sha256));
        }
    }
    for layer in &plan.layers {
        for e in &layer.entries {
            if let LayerEntryKind::File { source, sha256, .. } = &e.kind {
                let mut i = Input::file(source, sha256);
                i.mode = Some(octal(e.mode));
                by_path.insert(source.clone(), i);
            }
        }
    }
}

/// What the record says about the build's inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedInputs {
    /// Every input, sorted by path.
    pub inputs: Vec<Input>,
    /// sha256 of the Debian base's lock file, when the image has one.
    pub lock_sha256: Option<String>,
    /// Inputs that cannot be recorded by content (a directory base, whose
    /// owners and modes are host state): `repro` refuses such a build.
    pub unrecorded: Vec<String>,
}

/// The inputs of `plan`, whose relative paths are under `root`.
pub(super) fn inputs(plan: &Plan, root: &Path) -> anyhow::Result<RecordedInputs> {
    let mut by_path: BTreeMap<String, Input> = BTreeMap::new();
    let mut unrecorded = Vec::new();
    let hashed = |by_path: &mut BTreeMap<String, Input>, rel: &str| -> anyhow::Result<String> {
        let abs = super::resolve(root, rel);
        let (sha, _) =
            crate::load::hash_file(&abs).with_context(|| format!("hashing input {rel}"))?;
        by_path.insert(rel.to_string(), Input::file(rel, &sha));
        Ok(sha)
    };
    hashed(&mut by_path, &plan.image.file)?;
    let lock_sha256 = plan.base.lock.as_ref().map(|lock| lock.sha256.clone());
    for name in &plan.hardening.policies {
        hashed(&mut by_path, &format!("policies/{name}.yaml"))?;
    }
    if let BaseSpec::Directory { path, .. } = &plan.base.spec {
        unrecorded.push(format!("the base directory {path}"));
    }
    for layer in &plan.layers {
        layer_inputs(root, &layer.name, &mut by_path)?;
    }
    // Last: a layer file's entry (with its mode) wins over none.
    planned_into(plan, &mut by_path);
    Ok(RecordedInputs {
        inputs: by_path.into_values().collect(),
        lock_sha256,
        unrecorded,
    })
}

/// A layer's `conf/layer.yaml` (hashed), the layer directory itself when
/// it is a symlink, and the symlinks and empty directories of its
/// `files/` (its regular files come from the plan).
fn layer_inputs(
    root: &Path,
    name: &str,
    by_path: &mut BTreeMap<String, Input>,
) -> anyhow::Result<()> {
    let written = format!("layers/{name}");
    let link = root.join(&written);
    if link.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
        let target = std::fs::read_link(&link)
            .with_context(|| format!("reading the layer link {}", link.display()))?;
        by_path.insert(
            written.clone(),
            Input {
                path: written.clone(),
                sha256: None,
                symlink: Some(target.to_string_lossy().into_owned()),
                directory: false,
                mode: None,
            },
        );
    }
    // The load stage resolved the layer the same way (load/layerset.rs).
    let dir = slotsmith_yaml::input::resolve_input(root, &written)
        .map_err(|e| anyhow::format_err!("layer {name}: {e}"))?;
    let shown = |p: &Path| crate::load::display_path(&canonical(root), p);
    let conf = shown(&dir.join("conf/layer.yaml"));
    let (sha, _) = crate::load::hash_file(&dir.join("conf/layer.yaml"))
        .with_context(|| format!("hashing input {conf}"))?;
    by_path.insert(conf.clone(), Input::file(&conf, &sha));
    let files = dir.join("files");
    if !files.is_dir() {
        return Ok(());
    }
    for e in walkdir::WalkDir::new(&files)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let e = e.with_context(|| format!("walking {}", files.display()))?;
        let path = shown(e.path());
        let ft = e.file_type();
        let input = if ft.is_symlink() {
            let target = std::fs::read_link(e.path())
                .with_context(|| format!("reading the link {}", e.path().display()))?;
            Some(Input {
                path: path.clone(),
                sha256: None,
                symlink: Some(target.to_string_lossy().into_owned()),
                directory: false,
                mode: None,
            })
        } else if ft.is_dir()
            && std::fs::read_dir(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?
                .next()
                .is_none()
        {
            Some(Input {
                path: path.clone(),
                sha256: None,
                symlink: None,
                directory: true,
                mode: None,
            })
        } else {
            None
        };
        if let Some(i) = input {
            by_path.insert(path, i);
        }
    }
    Ok(())
}

/// The root as the load stage shows paths against it (it resolves layer
/// directories through symlinks).
fn canonical(root: &Path) -> PathBuf {
    root.canonicalize().unwrap_or_else(|_| root.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Fixture, Setup};
    use super::*;
    use std::fs;

    #[test]
    fn every_input_is_recorded_by_hash_sorted_with_links_and_empty_directories() {
        let mut fx = Fixture::new(
            Setup::default()
                .policies()
                .layer("", &[("/etc/motd", b"hello\n"), ("/usr/bin/x", b"x\n")]),
        );
        let files = fx.root().join("layers/meta-test/files");
        std::os::unix::fs::symlink("../motd", files.join("etc/motd.link")).unwrap();
        fs::create_dir_all(files.join("var/empty")).unwrap();
        fx.replan();
        let r = inputs(&fx.plan, fx.root()).unwrap();
        let paths: Vec<&str> = r.inputs.iter().map(|i| i.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        let by: BTreeMap<&str, &Input> = r.inputs.iter().map(|i| (i.path.as_str(), i)).collect();
        let sha = |p: &str| crate::load::hash_file(&fx.root().join(p)).unwrap().0;
        for p in [
            "images/tiny.yaml",
            "fixtures/base.tar",
            "layers/meta-test/conf/layer.yaml",
            "layers/meta-test/files/etc/motd",
            "layers/meta-test/files/usr/bin/x",
            "policies/ssh.yaml",
            "policies/files.yaml",
        ] {
            assert_eq!(by[p].sha256.as_deref(), Some(sha(p).as_str()), "{p}");
        }
        assert_eq!(
            by["layers/meta-test/files/etc/motd.link"]
                .symlink
                .as_deref(),
            Some("../motd")
        );
        assert!(by["layers/meta-test/files/var/empty"].directory);
        // Directories with files are implied by their files.
        assert!(!by.contains_key("layers/meta-test/files/etc"));
        assert_eq!(r.lock_sha256, None);
        assert!(r.unrecorded.is_empty());
        // Keys are never inputs.
        assert!(!paths.iter().any(|p| p.starts_with("keys/")), "{paths:?}");
        // The plan's lock is recorded with the plan's hash.
        let lock_sha = "ab".repeat(32);
        fx.plan.base.lock = Some(crate::plan::PlanLock {
            path: "images/tiny.lock".into(),
            sha256: lock_sha.clone(),
            packages: vec![],
        });
        let r = inputs(&fx.plan, fx.root()).unwrap();
        assert_eq!(r.lock_sha256.as_deref(), Some(lock_sha.as_str()));
        let lock = r.inputs.iter().find(|i| i.path == "images/tiny.lock");
        assert_eq!(lock.unwrap().sha256.as_deref(), Some(lock_sha.as_str()));
    }

    #[test]
    fn layer_file_hashes_come_from_the_plan() {
        let mut fx = Fixture::new(Setup::default().layer("", &[("/etc/motd", b"planned\n")]));
        let planned = crate::load::hash_file(&fx.root().join("layers/meta-test/files/etc/motd"))
            .unwrap()
            .0;
        // Edited after planning: the record says what the plan (and so the
        // build, which checks it) used.
        fs::write(
            fx.root().join("layers/meta-test/files/etc/motd"),
            "edited\n",
        )
        .unwrap();
        let r = inputs(&fx.plan, fx.root()).unwrap();
        let motd = r
            .inputs
            .iter()
            .find(|i| i.path == "layers/meta-test/files/etc/motd")
            .unwrap();
        assert_eq!(motd.sha256.as_deref(), Some(planned.as_str()));
        fx.replan();
    }

    #[test]
    fn a_layer_file_records_the_mode_the_image_gives_it() {
        use std::os::unix::fs::PermissionsExt;
        let mut fx = Fixture::new(Setup::default().layer(
            "files:\n  /usr/bin/suid:\n    mode: \"4750\"\n",
            &[
                ("/etc/motd", b"m\n"),
                ("/usr/bin/x", b"x\n"),
                ("/usr/bin/suid", b"s\n"),
            ],
        ));
        let files = fx.root().join("layers/meta-test/files");
        let chmod = |p: &str, m: u32| {
            fs::set_permissions(files.join(p), fs::Permissions::from_mode(m)).unwrap()
        };
        // Group-writable on disk, but only the executable bit reaches the
        // image; a declared mode wins over the disk's.
        chmod("etc/motd", 0o664);
        chmod("usr/bin/x", 0o700);
        chmod("usr/bin/suid", 0o600);
        fx.replan();
        let mode = |fx: &Fixture, p: &str| {
            let r = inputs(&fx.plan, fx.root()).unwrap();
            let i = r.inputs.into_iter().find(|i| i.path == p).unwrap();
            assert_eq!(
                Input::planned(&fx.plan).iter().find(|j| j.path == p),
                Some(&i)
            );
            i.mode
        };
        let f = |n: &str| format!("layers/meta-test/files/{n}");
        assert_eq!(mode(&fx, &f("etc/motd")).as_deref(), Some("0644"));
        assert_eq!(mode(&fx, &f("usr/bin/x")).as_deref(), Some("0755"));
        assert_eq!(mode(&fx, &f("usr/bin/suid")).as_deref(), Some("4750"));
        // A chmod after publishing is seen.
        chmod("usr/bin/x", 0o644);
        fx.replan();
        assert_eq!(mode(&fx, &f("usr/bin/x")).as_deref(), Some("0644"));
        // Files whose disk mode does not matter carry none, and it is not
        // written at all for them.
        let r = inputs(&fx.plan, fx.root()).unwrap();
        let image = r
            .inputs
            .iter()
            .find(|i| i.path == "images/tiny.yaml")
            .unwrap();
        assert_eq!(image.mode, None);
        assert!(!serde_json::to_string(image).unwrap().contains("mode"));
        let json = serde_json::to_string(
            r.inputs
                .iter()
                .find(|i| i.path == f("usr/bin/suid"))
                .unwrap(),
        )
        .unwrap();
        assert!(json.ends_with(r#","mode":"4750"}"#), "{json}");
    }
}
