//! The fresh project `repro` rebuilds in: every recorded input copied from
//! the real project (hashed on the way, so an edit since the build is
//! named), and the signing keys the image uses, with their modes.
//!
//! Input paths come from an untrusted `build.json`. They are plain (the
//! record parser checks), read from the project through the one path rule
//! (`slotsmith_yaml::input`: inside the project stays inside through
//! symlinks), and written below the fresh root through no symlink: a
//! recorded symlink is created as a link and never followed, so a record
//! holding `a -> /etc` and `a/passwd` fails instead of writing to `/etc`.
//!
//! An absolute input is never read on the record's word: a hostile record
//! could list `/dev/zero` (a hang) or `/etc/shadow` with a guessed sha256
//! (an oracle for its content). It is accepted only when the recorded
//! image itself names that path ([`check_against_plan`]), and then its
//! hash is the one the load stage took. Every file read is opened without
//! blocking and must be a regular file.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path};

use anyhow::{bail, Context};
use serde::Serialize;
use sha2::{Digest, Sha256};
use slotsmith_yaml::escape::{shown, shown_path};

use crate::build::Input;
use crate::plan::Plan;
use crate::spec::{KeySource, SecureBootDbKey};

/// An input whose content differs from what the build recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The input (escaped).
    pub path: String,
    /// `sha256`, `symlink target` or `mode`.
    pub what: &'static str,
    /// What build.json records (escaped).
    pub was: String,
    /// What the project holds now (escaped).
    pub now: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} changed since the build: {} was {}, now {}",
            self.path, self.what, self.was, self.now
        )
    }
}

/// Copies every relative input from `project` to `fresh`. Returns the
/// inputs that changed since the build; a missing one is an error.
/// Absolute inputs are left alone: the image names them by that path, and
/// [`check_against_plan`] checks them once the image is planned.
pub fn copy_inputs(project: &Path, fresh: &Path, inputs: &[Input]) -> anyhow::Result<Vec<Change>> {
    let mut changes = Vec::new();
    for i in inputs.iter().filter(|i| !Path::new(&i.path).is_absolute()) {
        let path = shown(&i.path);
        let missing = |e: String| {
            anyhow::format_err!(
                "input {path} of the build is missing from the project {}: {e}",
                shown_path(project)
            )
        };
        if let Some(sha) = &i.sha256 {
            let src =
                slotsmith_yaml::input::resolve_input_file(project, &i.path).map_err(missing)?;
            let now = copy_file(&src, fresh, &i.path)
                .with_context(|| format!("copying input {path} into {}", shown_path(fresh)))?;
            if &now != sha {
                changes.push(Change {
                    path,
                    what: "sha256",
                    was: sha.clone(),
                    now,
                });
            }
        } else if let Some(target) = &i.symlink {
            let src = project.join(&i.path);
            if let Some(parent) = Path::new(&i.path).parent().and_then(Path::to_str) {
                if !parent.is_empty() {
                    slotsmith_yaml::input::resolve_input(project, parent).map_err(missing)?;
                }
            }
            let md = fs::symlink_metadata(&src).map_err(|e| missing(e.to_string()))?;
            if !md.is_symlink() {
                bail!("input {path} was a symlink at the build and is not one now");
            }
            let now = fs::read_link(&src)
                .with_context(|| format!("reading the link {}", shown_path(&src)))?;
            let dst = below(fresh, &i.path)?;
            std::os::unix::fs::symlink(&now, &dst)
                .with_context(|| format!("creating the link {}", shown_path(&dst)))?;
            let now = now.to_string_lossy().into_owned();
            if &now != target {
                changes.push(Change {
                    path,
                    what: "symlink target",
                    was: shown(target),
                    now: shown(&now),
                });
            }
        } else {
            let src = project.join(&i.path);
            let md = fs::symlink_metadata(&src).map_err(|e| missing(e.to_string()))?;
            if !md.is_dir() {
                bail!("input {path} was a directory at the build and is not one now");
            }
            let dst = below(fresh, &i.path)?;
            fs::create_dir(&dst).with_context(|| format!("creating {}", shown_path(&dst)))?;
        }
    }
    Ok(changes)
}

/// Checks the recorded inputs against `planned` ([`Input::planned`] of the
/// image as planned in the fresh project): an absolute input must be one
/// the image names, or it is refused unread; its hash and every layer
/// file's mode are compared with the plan's, so a `chmod` since the build
/// is named like an edit. Returns the changes.
pub fn check_against_plan(recorded: &[Input], planned: &[Input]) -> anyhow::Result<Vec<Change>> {
    let mut changes = Vec::new();
    for i in recorded {
        let path = shown(&i.path);
        let now = planned.iter().find(|p| p.path == i.path);
        if Path::new(&i.path).is_absolute() {
            let Some(now) = now else {
                bail!(
                    "input {path} of the build is outside the project and the recorded image \
                     does not name it: refusing to read it"
                );
            };
            if let (Some(was), Some(sha)) = (&i.sha256, &now.sha256) {
                if was != sha {
                    changes.push(Change {
                        path: path.clone(),
                        what: "sha256",
                        was: shown(was),
                        now: sha.clone(),
                    });
                }
            }
        }
        if let (Some(was), Some(now)) = (&i.mode, now.and_then(|p| p.mode.as_ref())) {
            if was != now {
                changes.push(Change {
                    path,
                    what: "mode",
                    was: shown(was),
                    now: now.clone(),
                });
            }
        }
    }
    Ok(changes)
}

/// Copies the keys the image signs with into `fresh`: the development
/// keys and their registry (`keys/dev/`, `keys/dev-fingerprints.txt`;
/// without them a development build would make new keys, and a release
/// build would lose its development-key check), and every key file
/// `named` inside the project ([`key_paths`]). Modes are kept (a private
/// key readable by others is refused). Returns how many files were
/// copied; their contents are never shown.
pub fn copy_keys(project: &Path, fresh: &Path, named: &[String]) -> anyhow::Result<usize> {
    let mut n = 0;
    let dev = project.join(crate::signing::DEV_KEY_DIR);
    if fs::symlink_metadata(&dev).is_ok() {
        for e in walkdir::WalkDir::new(&dev)
            .follow_links(false)
            .sort_by_file_name()
        {
            let e = e.with_context(|| format!("walking {}", shown_path(&dev)))?;
            let rel = e
                .path()
                .strip_prefix(project)
                .context("a walk left its root")?
                .to_string_lossy()
                .into_owned();
            n += copy_entry(e.path(), fresh, &rel)?;
        }
    }
    let registry = project.join(crate::signing::DEV_KEY_REGISTRY);
    if fs::symlink_metadata(&registry).is_ok() {
        n += copy_entry(&registry, fresh, crate::signing::DEV_KEY_REGISTRY)?;
    }
    for p in named {
        if Path::new(p).is_absolute() || fs::symlink_metadata(fresh.join(p)).is_ok() {
            continue;
        }
        // A key the project lacks is left to the build, which names it.
        if let Ok(src) = slotsmith_yaml::input::resolve_input_file(project, p) {
            copy_file(&src, fresh, p)
                .with_context(|| format!("copying the key file {}", shown(p)))?;
            n += 1;
        }
    }
    Ok(n)
}

/// One entry of the development key directory: directories are made,
/// files copied with their mode, symlinks recreated as they are (the
/// build's own checks then see what they saw in the project).
fn copy_entry(src: &Path, fresh: &Path, rel: &str) -> anyhow::Result<usize> {
    let md = fs::symlink_metadata(src).with_context(|| format!("reading {}", shown_path(src)))?;
    if md.is_dir() {
        let dst = below(fresh, rel)?;
        fs::create_dir(&dst).with_context(|| format!("creating {}", shown_path(&dst)))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(md.mode() & 0o7777))
            .with_context(|| format!("setting the mode of {}", shown_path(&dst)))?;
        Ok(0)
    } else if md.is_symlink() {
        let dst = below(fresh, rel)?;
        let target = fs::read_link(src)?;
        std::os::unix::fs::symlink(&target, &dst)
            .with_context(|| format!("creating the link {}", shown_path(&dst)))?;
        Ok(1)
    } else if md.is_file() {
        copy_file(src, fresh, rel)
            .with_context(|| format!("copying the key file {}", shown(rel)))?;
        Ok(1)
    } else {
        Ok(0)
    }
}

/// Every key, public key and certificate path the plan names (absolute
/// ones are used in place; relative ones are copied).
pub fn key_paths(plan: &Plan) -> Vec<String> {
    let mut v = Vec::new();
    let source = |s: &KeySource, v: &mut Vec<String>| {
        if let KeySource::File { path } = s {
            v.push(path.clone());
        }
    };
    source(&plan.boot.key.source, &mut v);
    v.extend(plan.boot.key.public_key.clone());
    source(&plan.update.key.source, &mut v);
    v.extend(plan.update.key.cert.clone());
    source(&plan.provenance_key.source, &mut v);
    v.extend(plan.provenance_key.public_key.clone());
    if let Some(c) = &plan.chain {
        let k = &c.secureboot_key;
        if let SecureBootDbKey::File { path } = &k.db_key {
            v.push(path.clone());
        }
        v.extend(
            k.db_cert
                .iter()
                .chain(&k.kek_cert)
                .chain(&k.pk_cert)
                .cloned(),
        );
        for s in k.kek_key.iter().chain(&k.pk_key) {
            source(s, &mut v);
        }
    }
    v
}

/// `fresh/rel`, with the directories above it created; refuses any
/// existing symlink or non-directory on the way, so nothing is ever
/// written outside `fresh`. `rel` is plain (the record parser checks).
fn below(fresh: &Path, rel: &str) -> anyhow::Result<std::path::PathBuf> {
    let p = Path::new(rel);
    let mut at = fresh.to_path_buf();
    let parts: Vec<Component> = p.components().collect();
    let Some((last, parents)) = parts.split_last() else {
        bail!("an empty path");
    };
    for c in parents {
        let Component::Normal(s) = c else {
            bail!("'{}' is not a plain relative path", shown(rel));
        };
        at.push(s);
        match fs::symlink_metadata(&at) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => bail!(
                "{} is reached through a symlink or a file in the fresh project",
                shown(rel)
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&at).with_context(|| format!("creating {}", shown_path(&at)))?
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", shown_path(&at))),
        }
    }
    let Component::Normal(s) = last else {
        bail!("'{}' is not a plain relative path", shown(rel));
    };
    at.push(s);
    Ok(at)
}

/// Copies `src` to `fresh/rel` with its permission bits, hashing on the
/// way; returns the sha256 of what was copied. `src` is resolved (no
/// symlink left in it) and was a regular file when resolved; it is opened
/// without following or blocking and checked again, so a FIFO or device
/// swapped in meanwhile is refused rather than read.
fn copy_file(src: &Path, fresh: &Path, rel: &str) -> anyhow::Result<String> {
    let mut from =
        super::record::open_regular(src).with_context(|| format!("opening {}", shown_path(src)))?;
    let dst = below(fresh, rel)?;
    let mode = from.metadata()?.mode() & 0o7777;
    // Created owner-only and widened after: a private key is never
    // readable by others, not even for a moment.
    let to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&dst)
        .with_context(|| format!("creating {}", shown_path(&dst)))?;
    let mut w = Hashing {
        file: to,
        hash: Sha256::new(),
    };
    std::io::copy(&mut from, &mut w)
        .with_context(|| format!("copying {} to {}", shown_path(src), shown_path(&dst)))?;
    w.file
        .set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", shown_path(&dst)))?;
    Ok(hex::encode(w.hash.finalize()))
}

/// A file writer that hashes what passes through it.
struct Hashing {
    file: File,
    hash: Sha256,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, bytes: &[u8]) -> Input {
        Input {
            path: path.into(),
            sha256: Some(hex::encode(Sha256::digest(bytes))),
            symlink: None,
            directory: false,
            mode: None,
        }
    }

    #[test]
    fn inputs_are_copied_with_modes_links_and_changes_named() {
        let project = tempfile::tempdir().unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let p = project.path();
        fs::create_dir_all(p.join("layers/m/files/etc")).unwrap();
        fs::create_dir_all(p.join("layers/m/files/var/empty")).unwrap();
        fs::write(p.join("layers/m/files/etc/motd"), b"edited\n").unwrap();
        fs::write(p.join("layers/m/files/etc/tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(
            p.join("layers/m/files/etc/tool"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("motd", p.join("layers/m/files/etc/link")).unwrap();
        let inputs = vec![
            Input {
                path: "layers/m/files/etc/link".into(),
                sha256: None,
                symlink: Some("old".into()),
                directory: false,
                mode: None,
            },
            file("layers/m/files/etc/motd", b"built\n"),
            file("layers/m/files/etc/tool", b"#!/bin/sh\n"),
            Input {
                path: "layers/m/files/var/empty".into(),
                sha256: None,
                symlink: None,
                directory: true,
                mode: None,
            },
        ];
        let changes = copy_inputs(p, fresh.path(), &inputs).unwrap();
        let lines: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            lines,
            [
                "layers/m/files/etc/link changed since the build: symlink target was old, now motd"
                    .to_string(),
                format!(
                    "layers/m/files/etc/motd changed since the build: sha256 was {}, now {}",
                    hex::encode(Sha256::digest(b"built\n")),
                    hex::encode(Sha256::digest(b"edited\n"))
                ),
            ]
        );
        let f = fresh.path().join("layers/m/files");
        assert_eq!(fs::read(f.join("etc/motd")).unwrap(), b"edited\n");
        assert_eq!(
            fs::metadata(f.join("etc/tool")).unwrap().mode() & 0o7777,
            0o755
        );
        assert_eq!(
            fs::read_link(f.join("etc/link")).unwrap(),
            Path::new("motd")
        );
        assert!(f.join("var/empty").is_dir());
    }

    #[test]
    fn a_missing_input_is_an_error_naming_it() {
        let project = tempfile::tempdir().unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let e = copy_inputs(
            project.path(),
            fresh.path(),
            &[file("layers/m/conf/layer.yaml", b"x")],
        )
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.starts_with(
                "input layers/m/conf/layer.yaml of the build is missing from the project "
            ),
            "{e}"
        );
    }

    #[test]
    fn a_recorded_symlink_is_never_written_through() {
        let project = tempfile::tempdir().unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let p = project.path();
        fs::write(outside.path().join("passwd"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), p.join("l")).unwrap();
        // The project has l -> outside; the record lists l, then l/passwd.
        let inputs = vec![
            Input {
                path: "l".into(),
                sha256: None,
                symlink: Some(outside.path().to_string_lossy().into_owned()),
                directory: false,
                mode: None,
            },
            file("l/passwd", b"x"),
        ];
        let e = copy_inputs(p, fresh.path(), &inputs).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("l/passwd") && e.contains("leaves the project"),
            "{e}"
        );
        assert_eq!(fs::read(outside.path().join("passwd")).unwrap(), b"x");
        // Even when the project side resolves, the fresh side refuses.
        assert!(below(fresh.path(), "l/passwd").is_err());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
    }

    #[test]
    fn development_keys_are_copied_with_their_modes() {
        let project = tempfile::tempdir().unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let p = project.path();
        let (private, public) =
            slotsmith_sign::keys::generate(&p.join("keys/dev"), "boot").unwrap();
        fs::write(p.join("keys/dev-fingerprints.txt"), b"boot sha256:00\n").unwrap();
        fs::create_dir_all(p.join("secrets")).unwrap();
        fs::write(p.join("secrets/update.cert.pem"), b"cert").unwrap();
        let named = [
            "secrets/update.cert.pem".to_string(),
            "absent.pem".to_string(),
        ];
        let n = copy_keys(p, fresh.path(), &named).unwrap();
        assert_eq!(n, 4);
        assert!(fresh.path().join("secrets/update.cert.pem").is_file());
        let copied = fresh.path().join("keys/dev/boot.key.pem");
        assert_eq!(fs::read(&copied).unwrap(), fs::read(&private).unwrap());
        assert_eq!(fs::metadata(&copied).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            fs::read(fresh.path().join("keys/dev/boot.pub.pem")).unwrap(),
            fs::read(public).unwrap()
        );
        assert!(fresh.path().join("keys/dev-fingerprints.txt").is_file());
    }

    fn fifo(p: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
    }

    #[test]
    fn an_absolute_input_the_image_does_not_name_is_refused_unread() {
        let project = tempfile::tempdir().unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let pipe = outside.path().join("pipe");
        fifo(&pipe);
        let pipe = pipe.to_str().unwrap();
        let hostile = [
            file("/dev/zero", b""),
            file(pipe, b""),
            file("/etc/shadow", b"root:guess"),
        ];
        // Copying does not touch them (neither hangs on /dev/zero nor
        // blocks on the FIFO)...
        assert_eq!(
            copy_inputs(project.path(), fresh.path(), &hostile).unwrap(),
            []
        );
        assert_eq!(fs::read_dir(fresh.path()).unwrap().count(), 0);
        // ...and the plan, which names none of them, refuses each by name.
        let base = file("/srv/base.tar", b"planned");
        for i in &hostile {
            let e = check_against_plan(std::slice::from_ref(i), std::slice::from_ref(&base))
                .unwrap_err();
            assert_eq!(
                format!("{e:#}"),
                format!(
                    "input {} of the build is outside the project and the recorded image \
                     does not name it: refusing to read it",
                    i.path
                )
            );
        }
        // One the image names is taken with the plan's hash.
        let was = file("/srv/base.tar", b"built");
        let changes =
            check_against_plan(std::slice::from_ref(&was), std::slice::from_ref(&base)).unwrap();
        assert_eq!(
            changes,
            [Change {
                path: "/srv/base.tar".into(),
                what: "sha256",
                was: was.sha256.clone().unwrap(),
                now: base.sha256.clone().unwrap(),
            }]
        );
        assert_eq!(
            check_against_plan(std::slice::from_ref(&base), std::slice::from_ref(&base)).unwrap(),
            []
        );
    }

    #[test]
    fn a_fifo_in_the_project_is_refused_without_blocking() {
        let project = tempfile::tempdir().unwrap();
        let fresh = tempfile::tempdir().unwrap();
        fs::create_dir_all(project.path().join("layers/m/files/etc")).unwrap();
        fifo(&project.path().join("layers/m/files/etc/motd"));
        let e = copy_inputs(
            project.path(),
            fresh.path(),
            &[file("layers/m/files/etc/motd", b"x")],
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("is not a regular file"), "{e:#}");
        // Even when it is swapped in after the path was resolved.
        let e = copy_file(
            &project.path().join("layers/m/files/etc/motd"),
            fresh.path(),
            "motd",
        )
        .unwrap_err();
        assert!(format!("{e:#}").ends_with("is not a regular file"), "{e:#}");
        let e = copy_file(Path::new("/dev/zero"), fresh.path(), "zero").unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "opening /dev/zero: /dev/zero is not a regular file"
        );
        assert!(!fresh.path().join("zero").exists());
    }

    #[test]
    fn a_mode_changed_since_the_build_is_named() {
        let with_mode = |m: Option<&str>| {
            let mut i = file("layers/m/files/usr/bin/tool", b"#!/bin/sh\n");
            i.mode = m.map(String::from);
            i
        };
        let was = with_mode(Some("0755"));
        let changes =
            check_against_plan(std::slice::from_ref(&was), &[with_mode(Some("0644"))]).unwrap();
        assert_eq!(
            changes.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            ["layers/m/files/usr/bin/tool changed since the build: mode was 0755, now 0644"]
        );
        assert_eq!(
            check_against_plan(std::slice::from_ref(&was), std::slice::from_ref(&was)).unwrap(),
            []
        );
        // A record from before modes were recorded names none.
        assert_eq!(
            check_against_plan(&[with_mode(None)], &[with_mode(Some("0644"))]).unwrap(),
            []
        );
    }
}
