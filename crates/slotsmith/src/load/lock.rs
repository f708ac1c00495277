//! Reads the Debian base's lock, `images/<name>.lock` next to the image
//! file, and checks that it was resolved for what the image now asks
//! (suite, architecture, variant, sources, package list). A stale lock is
//! an input error naming the lock's line: the build would otherwise
//! install packages nobody locked, or silently drop locked ones.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::diag::{Diagnostic, Diagnostics};
use crate::lockfile::{self, LockKey};
use crate::spec::{BaseSpec, ImageSpec, LoadedLock};
use slotsmith_yaml::input::resolve_input_file;

/// The lock's path relative to the project root: the image file's with
/// `.lock` for `.yaml`.
pub fn lock_path(image_file: &str) -> String {
    match image_file.strip_suffix(".yaml") {
        Some(stem) => format!("{stem}.lock"),
        None => format!("{image_file}.lock"),
    }
}

/// What an image's Debian base asks a lock to have been resolved for;
/// None for another base.
pub fn wanted(image: &ImageSpec) -> Option<LockKey> {
    match &image.base {
        BaseSpec::Debian {
            suite,
            variant,
            packages,
            mirror,
        } => Some(LockKey {
            suite: suite.clone(),
            architecture: image.arch.debian().to_string(),
            variant: variant.clone(),
            sources: mirror.clone().unwrap_or_else(|| "host".to_string()),
            include: packages.clone(),
        }),
        _ => None,
    }
}

/// The image's lock, if it has one. With `check_fresh`, a lock resolved
/// for something else than the image now asks is an error.
pub fn read_lock(image: &ImageSpec, check_fresh: bool) -> Result<Option<LoadedLock>, Diagnostics> {
    let rel = lock_path(&image.file);
    let abs = image.root.join(&rel);
    let mut diags = Diagnostics::default();
    let at = |line: usize, key: &str, message: String| Diagnostic {
        file: rel.clone().into(),
        line,
        col: if line == 0 { 0 } else { 1 },
        key: key.to_string(),
        message,
    };
    match std::fs::symlink_metadata(&abs) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // Anything else (a permission problem, an I/O error) must not
        // quietly turn a locked image into an unlocked build.
        Err(e) => {
            diags.push(at(0, "", format!("cannot read the lock: {e}")));
            return Err(diags);
        }
        Ok(_) => {}
    }
    // Under the project, through no symlink out of it, a regular file.
    let real = match resolve_input_file(&image.root, &rel) {
        Ok(p) => p,
        Err(e) => {
            diags.push(at(0, "", e));
            return Err(diags);
        }
    };
    let Some(want) = wanted(image) else {
        diags.push(at(
            0,
            "",
            "a lock applies only to a Debian base (base.debian); remove it or lock a Debian image"
                .into(),
        ));
        return Err(diags);
    };
    let text = slotsmith_yaml::read::read_yaml(&real, Path::new(&rel))?;
    let lock = lockfile::parse(Path::new(&rel), &text)?;
    if !lockfile::LOCKABLE_VARIANTS.contains(&lock.key.variant.as_str()) {
        let line = text
            .lines()
            .position(|l| l.split_ascii_whitespace().next() == Some("variant"))
            .map(|i| i + 1)
            .unwrap_or(0);
        diags.push(at(
            line,
            "variant",
            format!(
                "variant '{}' cannot be locked (only {})",
                lock.key.variant,
                lockfile::LOCKABLE_VARIANTS.join(", ")
            ),
        ));
        return Err(diags);
    }
    if check_fresh {
        let problems = lockfile::staleness(&lock.key, &want);
        if !problems.is_empty() {
            let name = Path::new(&image.file)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Point at the first directive that differs.
            let key = ["include", "suite", "architecture", "variant", "sources"]
                .into_iter()
                .find(|k| {
                    problems
                        .iter()
                        .any(|p| p.starts_with(k) || (*k == "include" && p.starts_with("packages")))
                })
                .unwrap_or("include");
            let line = text
                .lines()
                .position(|l| l.split_ascii_whitespace().next() == Some(key))
                .map(|i| i + 1)
                .unwrap_or(0);
            diags.push(at(
                line,
                key,
                format!(
                    "the lock is older than {}: {}; run `cargo xtask lock --update {name}`",
                    image.file,
                    problems.join("; ")
                ),
            ));
            return Err(diags);
        }
    }
    Ok(Some(LoadedLock {
        path: rel,
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        lock,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{image_at, MINIMAL};
    use super::*;
    use crate::lockfile::{Lock, LockedPackage};

    fn lock_for(include: &[&str]) -> String {
        let l = Lock {
            key: LockKey {
                suite: "bookworm".into(),
                architecture: "amd64".into(),
                variant: "apt".into(),
                sources: "host".into(),
                include: include.iter().map(|s| s.to_string()).collect(),
            },
            keyrings: vec![],
            indexes: vec![],
            packages: vec![LockedPackage {
                name: "libc6".into(),
                version: "2.36-9".into(),
                architecture: "amd64".into(),
                sha256: "a".repeat(64),
                size: 1,
            }],
        };
        lockfile::render(&l, "images/t.yaml", "t")
    }

    fn setup(text: &str) -> (tempfile::TempDir, ImageSpec) {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("images")).unwrap();
        let (img, _, diags) = image_at(root.path(), text);
        assert!(diags.is_empty(), "{diags:#?}");
        (root, img.unwrap())
    }

    #[test]
    fn a_fresh_lock_is_read_and_hashed_and_none_is_fine() {
        let (root, img) = setup(MINIMAL);
        assert!(read_lock(&img, true).unwrap().is_none());
        let text = lock_for(&[]);
        std::fs::write(root.path().join("images/t.lock"), &text).unwrap();
        let l = read_lock(&img, true).unwrap().unwrap();
        assert_eq!(l.path, "images/t.lock");
        assert_eq!(l.sha256, hex::encode(Sha256::digest(text.as_bytes())));
        assert_eq!(l.lock.packages.len(), 1);
    }

    #[test]
    fn a_lock_older_than_the_image_names_its_line_and_the_way_out() {
        let (root, img) = setup(&MINIMAL.replacen(
            "    suite: bookworm\n",
            "    suite: bookworm\n    packages: [curl, nftables]\n",
            1,
        ));
        let text = lock_for(&["nftables"]);
        std::fs::write(root.path().join("images/t.lock"), &text).unwrap();
        let e = read_lock(&img, true).unwrap_err();
        let d = e.iter().next().unwrap();
        let line = text
            .lines()
            .position(|l| l.starts_with("include "))
            .unwrap()
            + 1;
        assert_eq!(
            (d.file.to_str().unwrap(), d.line, d.key.as_str()),
            ("images/t.lock", line, "include")
        );
        assert!(d.message.contains("packages not locked: curl"), "{d}");
        assert!(d.message.contains("cargo xtask lock --update t"), "{d}");
        // `lock --update` itself reads it without the check.
        assert!(read_lock(&img, false).unwrap().is_some());
    }

    #[test]
    fn a_lock_for_a_variant_that_cannot_be_locked_is_refused_at_its_line() {
        let (root, img) = setup(&MINIMAL.replacen(
            "    suite: bookworm\n",
            "    suite: bookworm\n    variant: minbase\n",
            1,
        ));
        let text = lock_for(&[]).replacen("variant apt", "variant minbase", 1);
        std::fs::write(root.path().join("images/t.lock"), &text).unwrap();
        let e = read_lock(&img, true).unwrap_err();
        let d = e.iter().next().unwrap();
        assert_eq!(d.key, "variant");
        assert!(d.line > 0 && text.lines().nth(d.line - 1).unwrap().starts_with("variant"));
        assert!(d.message.contains("cannot be locked"), "{d}");
    }

    #[test]
    fn an_unreadable_lock_is_an_error_not_an_unlocked_build() {
        let (root, img) = setup(MINIMAL);
        // A directory where the lock should be: present, not readable as one.
        std::fs::create_dir(root.path().join("images/t.lock")).unwrap();
        assert!(read_lock(&img, true).is_err());
    }

    #[test]
    fn a_lock_through_a_symlink_out_of_the_project_is_refused() {
        let (root, img) = setup(MINIMAL);
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x.lock"), lock_for(&[])).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("x.lock"),
            root.path().join("images/t.lock"),
        )
        .unwrap();
        let e = read_lock(&img, true).unwrap_err();
        let d = e.iter().next().unwrap().to_string();
        assert!(d.starts_with("images/t.lock"), "{d}");
        assert!(
            d.contains("outside") || d.contains("symlink") || d.contains("leaves"),
            "{d}"
        );
    }

    #[test]
    fn a_lock_beside_a_base_that_is_not_debian_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("images")).unwrap();
        std::fs::write(root.path().join("b.tar"), b"").unwrap();
        let text = MINIMAL.replacen("  debian:\n    suite: bookworm\n", "  tarball: b.tar\n", 1);
        let (img, _, diags) = image_at(root.path(), &text);
        assert!(diags.is_empty(), "{diags:#?}");
        std::fs::write(root.path().join("images/t.lock"), lock_for(&[])).unwrap();
        let e = read_lock(&img.unwrap(), true).unwrap_err();
        assert!(e
            .iter()
            .next()
            .unwrap()
            .message
            .contains("only to a Debian base"));
    }
}
