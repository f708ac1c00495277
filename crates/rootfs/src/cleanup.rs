//! Removing a directory tree of any depth with a bounded number of open
//! file descriptors.
//!
//! `std::fs::remove_dir_all` keeps one descriptor open per level, so a
//! hostile tree 2000 levels deep (a tarball can make one) fails with "Too
//! many open files" under `ulimit -n 1024`, and then every later build of
//! that image fails while removing the old work directory. This walk holds
//! no descriptor across levels: it goes down by path, removes what it
//! finds at the deepest level, and climbs back. It never follows a
//! symlink (a link is removed, not its target), and it makes a directory
//! of ours writable and searchable when a build or a tarball left it
//! read-only (mode 0 included).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Removes `path` and everything below it. A missing path is not an
/// error; a symlink at `path` is removed itself.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !md.is_dir() {
        return fs::remove_file(path);
    }
    // `stack` holds paths, not descriptors: its length is the depth, and
    // each step opens one directory listing at most.
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(dir) = stack.last().cloned() {
        make_accessible(&dir)?;
        let mut descended = false;
        // One listing at a time, closed before going down or up.
        let mut subdir = None;
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                subdir = Some(e.path());
                break;
            }
            match fs::remove_file(e.path()) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        if let Some(s) = subdir {
            stack.push(s);
            descended = true;
        }
        if !descended {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
            stack.pop();
        }
    }
    Ok(())
}

/// Gives the owner rwx on `dir` when it lacks them, so its entries can be
/// listed and removed. A directory of another user stays as it is, and the
/// removal then fails with that directory's error.
fn make_accessible(dir: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(dir)?;
    let mode = md.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn removes_files_links_and_read_only_directories_but_not_link_targets() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "k").unwrap();
        let t = tmp.path().join("t");
        fs::create_dir_all(t.join("a/b/c")).unwrap();
        fs::write(t.join("a/b/c/f"), "x").unwrap();
        fs::write(t.join("a/g"), "y").unwrap();
        symlink(&outside, t.join("a/link-to-outside")).unwrap();
        symlink("/nonexistent", t.join("a/b/dangling")).unwrap();
        fs::set_permissions(t.join("a/b/c"), fs::Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(t.join("a/b"), fs::Permissions::from_mode(0o000)).unwrap();
        remove_tree(&t).unwrap();
        assert!(!t.exists());
        assert_eq!(fs::read_to_string(outside.join("keep")).unwrap(), "k");
        // Missing: fine. A symlink given directly: removed, target kept.
        remove_tree(&t).unwrap();
        let l = tmp.path().join("l");
        symlink(&outside, &l).unwrap();
        remove_tree(&l).unwrap();
        assert!(outside.join("keep").exists());
    }
}
