//! The one rule for reaching an input file or directory: every loader
//! (images, layers, policies, base tarballs and directories, kernel files,
//! keys) resolves the paths it is given here, and nowhere else.
//!
//! **The rule.** A path is written relative to the project root, or
//! absolute.
//!
//! - A path inside the project (every relative path, and an absolute one
//!   under the root) must still be inside the project once every symlink on
//!   it is resolved. A symlink that stays inside the project is allowed (a
//!   layer directory linked to a checkout under `sources/`, say); one that
//!   leaves it is refused, whatever it points to. `..` may not climb above
//!   the root.
//! - An absolute path outside the project is the author's explicit choice
//!   (a key under `/etc/slotsmith`, a base tarball in a CI cache) and is
//!   used as written.
//! - Structural parts of a layer (`conf/`, `conf/layer.yaml`, `files/`) and
//!   a directory base are never symlinks at all ([`refuse_symlink`]): they
//!   are walked, and a link there would turn any file the builder can read
//!   (`/etc/shadow`, `keys/dev/`) into image content.
//! - Walks never follow symlinks: a symlink inside `files/` or a directory
//!   base is image content, copied as a link.
//! - What is read as a file must be a regular file: a device or FIFO
//!   (`/dev/zero` as a base tarball) would never end.
//!
//! The resolved path is what gets opened, so a symlink swapped in after
//! the check is only a race against our own process.

use std::path::{Component, Path, PathBuf};

use crate::escape::shown;

/// Resolves `written` (as the input file spelled it) against `root` under
/// the rule above. The error is a sentence for a diagnostic, with every
/// path escaped.
pub fn resolve_input(root: &Path, written: &str) -> Result<PathBuf, String> {
    if written.is_empty() {
        return Err("an empty path".to_string());
    }
    if written.contains('\0') {
        return Err(format!("'{}' contains a NUL byte", shown(written)));
    }
    let root_real = root.canonicalize().map_err(|e| {
        format!(
            "cannot resolve the project root {}: {e}",
            shown(&root.to_string_lossy())
        )
    })?;
    let p = Path::new(written);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        root_real.join(p)
    };
    let lexical = normalise(&joined).ok_or_else(|| {
        format!(
            "'{}' climbs above the filesystem root with '..'",
            shown(written)
        )
    })?;
    let inside = lexical.starts_with(&root_real) || lexical.starts_with(root);
    if !p.is_absolute() && !inside {
        return Err(format!(
            "'{}' leaves the project with '..'; give an absolute path for a file outside it",
            shown(written)
        ));
    }
    let real = lexical
        .canonicalize()
        .map_err(|e| format!("cannot read '{}': {e}", shown(written)))?;
    if inside && !real.starts_with(&root_real) {
        return Err(format!(
            "'{}' is reached through a symlink that leaves the project (it resolves to {}); \
             inputs inside the project may only link within it",
            shown(written),
            shown(&real.to_string_lossy())
        ));
    }
    Ok(real)
}

/// [`resolve_input`] for a path that is read as a file: it must resolve to
/// a regular file.
pub fn resolve_input_file(root: &Path, written: &str) -> Result<PathBuf, String> {
    let real = resolve_input(root, written)?;
    match std::fs::metadata(&real) {
        Ok(md) if md.is_file() => Ok(real),
        Ok(_) => Err(format!("'{}' is not a regular file", shown(written))),
        Err(e) => Err(format!("cannot read '{}': {e}", shown(written))),
    }
}

/// Refuses a path that is a symlink itself (not following it). Used for
/// the parts of a layer and a directory base that are walked.
pub fn refuse_symlink(path: &Path, what: &str) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_symlink() => {
            let target = std::fs::read_link(path)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            Err(format!(
                "{what} {} is a symlink (to {}); it must be a real directory or file, since links there would bring files from elsewhere into the image",
                shown(&path.to_string_lossy()),
                shown(&target)
            ))
        }
        _ => Ok(()),
    }
}

/// Removes `.` and resolves `..` lexically; None when `..` would climb
/// above `/`.
fn normalise(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("project");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("sources/meta-x")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        std::fs::write(root.join("base.tar"), "t").unwrap();
        Fixture {
            root: root.canonicalize().unwrap(),
            outside: outside.canonicalize().unwrap(),
            _tmp: tmp,
        }
    }

    #[test]
    fn plain_paths_inside_resolve() {
        let f = fixture();
        assert_eq!(
            resolve_input(&f.root, "base.tar").unwrap(),
            f.root.join("base.tar")
        );
        assert_eq!(
            resolve_input(&f.root, "./sources/../base.tar").unwrap(),
            f.root.join("base.tar")
        );
    }

    #[test]
    fn a_symlink_within_the_project_is_allowed() {
        let f = fixture();
        symlink("sources/meta-x", f.root.join("layer-link")).unwrap();
        assert_eq!(
            resolve_input(&f.root, "layer-link").unwrap(),
            f.root.join("sources/meta-x")
        );
    }

    #[test]
    fn every_way_out_through_a_symlink_is_refused() {
        let f = fixture();
        // The link itself, a link as a parent, a relative and an absolute
        // target, and a chain of two links.
        symlink(&f.outside, f.root.join("abs")).unwrap();
        symlink("../outside", f.root.join("rel")).unwrap();
        symlink("abs", f.root.join("chain")).unwrap();
        for w in ["abs", "abs/secret", "rel/secret", "chain/secret"] {
            let e = resolve_input(&f.root, w).unwrap_err();
            assert!(e.contains("leaves the project"), "{w}: {e}");
        }
    }

    #[test]
    fn dot_dot_out_of_the_project_is_refused_but_absolute_outside_paths_are_taken() {
        let f = fixture();
        let e = resolve_input(&f.root, "../outside/secret").unwrap_err();
        assert!(e.contains("leaves the project"), "{e}");
        let abs = f.outside.join("secret");
        assert_eq!(resolve_input(&f.root, abs.to_str().unwrap()).unwrap(), abs);
    }

    #[test]
    fn devices_and_directories_are_not_input_files() {
        let f = fixture();
        let e = resolve_input_file(&f.root, "/dev/zero").unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let e = resolve_input_file(&f.root, "sources").unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(resolve_input_file(&f.root, "base.tar").is_ok());
    }

    #[test]
    fn hostile_names_are_escaped_in_errors() {
        let f = fixture();
        let e = resolve_input(&f.root, "missing\x1b[2J").unwrap_err();
        assert!(!e.contains('\x1b'), "{e:?}");
        let e = resolve_input(&f.root, "a\0b").unwrap_err();
        assert!(!e.contains('\0'), "{e:?}");
    }

    #[test]
    fn refuse_symlink_names_the_link_and_target() {
        let f = fixture();
        symlink("/etc", f.root.join("files")).unwrap();
        let e = refuse_symlink(&f.root.join("files"), "layer files/").unwrap_err();
        assert!(e.contains("is a symlink (to /etc)"), "{e}");
        assert!(refuse_symlink(&f.root.join("sources"), "x").is_ok());
    }
}
