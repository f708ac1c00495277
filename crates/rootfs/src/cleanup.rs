//! Removing a directory tree of any depth with a bounded number of open
//! file descriptors.
//!
//! `std::fs::remove_dir_all` keeps one descriptor open per level, so a
//! hostile tree 2000 levels deep (a tarball can make one) fails with "Too
//! many open files" under `ulimit -n 1024`, and then every later build of
//! that image fails while removing the old work directory. Walking by path
//! instead fails once the path passes `PATH_MAX` (4096 bytes: about 2000
//! levels of one-letter names).
//!
//! So [`remove_tree`] walks by descriptor but keeps only one directory open
//! across steps: it opens a child relative to the current directory, closes
//! the parent, and climbs back through `..`, checking that `..` is the
//! directory it came from (device and inode recorded on the way down). At
//! most four descriptors are open at any time, whatever the depth, and no
//! path longer than one name is ever passed to the kernel.
//!
//! It never follows a symlink: entries are removed with `unlinkat`, and
//! directories are opened `O_NOFOLLOW | O_DIRECTORY`, so a symlink (to a
//! directory outside, say) is removed as a link. A directory of ours that a
//! build or a tarball left read-only, or mode 0, is given `u+rwx` first. A
//! directory of another user is left as it is and its error is returned.
//!
//! The walk assumes nobody else renames directories inside the tree while
//! it runs (it is our own work directory); if one is moved, the check on
//! `..` stops the walk with an error rather than removing elsewhere.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Removes `path` and everything below it. A missing path is not an
/// error; a symlink or file at `path` is removed itself (a symlink's target
/// is never touched).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !md.is_dir() {
        return std::fs::remove_file(path).or_else(ignore_missing);
    }
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a removable directory name", path.display()),
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The caller chose `path`, so its parent is opened as given (following
    // symlinks there is the caller's intent); nothing below it is.
    let parent_fd = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| annotate(e.into(), parent))?;
    let mut walk = Walk {
        root: path,
        stack: Vec::new(),
    };
    walk.run(parent_fd.as_fd(), cstring(name)?)
}

/// One directory on the way down: its name in its parent, its identity,
/// and the subdirectories still to remove.
struct Frame {
    name: CString,
    id: (u64, u64),
    pending: Vec<CString>,
}

struct Walk<'a> {
    root: &'a Path,
    stack: Vec<Frame>,
}

impl Walk<'_> {
    fn run(&mut self, parent: BorrowedFd<'_>, name: CString) -> io::Result<()> {
        let top = open_dir(parent, &name).map_err(|e| self.err(e, Some(&name)))?;
        let mut cur = self.enter(top, name)?;
        loop {
            let frame = self
                .stack
                .last_mut()
                .expect("the walk is inside a directory");
            if let Some(child) = frame.pending.pop() {
                match open_dir(cur.as_fd(), &child) {
                    Ok(fd) => cur = self.enter(fd, child)?,
                    // Gone, or replaced by a non-directory since listing.
                    Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {}
                    Err(e)
                        if e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error())
                            || e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) =>
                    {
                        unlink(cur.as_fd(), &child, AtFlags::empty())
                            .map_err(|e| self.err(e, Some(&child)))?;
                    }
                    Err(e) => return Err(self.err(e, Some(&child))),
                }
                continue;
            }
            // Everything below is gone: climb and remove this directory.
            let done = self.stack.pop().expect("the walk is inside a directory");
            let Some(above) = self.stack.last() else {
                drop(cur);
                return unlink(parent, &done.name, AtFlags::REMOVEDIR)
                    .map_err(|e| self.err(e, Some(&done.name)));
            };
            let up = rustix::fs::openat(cur.as_fd(), c"..", dir_flags(), Mode::empty())
                .map_err(|e| self.err(e.into(), None))?;
            if identity(up.as_fd()).map_err(|e| self.err(e, None))? != above.id {
                return Err(self.err(
                    io::Error::other("the directory was moved while being removed"),
                    None,
                ));
            }
            cur = up;
            unlink(cur.as_fd(), &done.name, AtFlags::REMOVEDIR)
                .map_err(|e| self.err(e, Some(&done.name)))?;
        }
    }

    /// Lists the directory `fd` (named `name`), removes every entry that is
    /// not a directory, and pushes it with its subdirectories still to do.
    fn enter(&mut self, fd: OwnedFd, name: CString) -> io::Result<OwnedFd> {
        let id = identity(fd.as_fd()).map_err(|e| self.err(e, Some(&name)))?;
        self.stack.push(Frame {
            name,
            id,
            pending: Vec::new(),
        });
        let (files, dirs) = list(fd.as_fd()).map_err(|e| self.err(e, None))?;
        for f in &files {
            unlink(fd.as_fd(), f, AtFlags::empty()).map_err(|e| self.err(e, Some(f)))?;
        }
        if let Some(top) = self.stack.last_mut() {
            top.pending = dirs;
        }
        Ok(fd)
    }

    /// `e` with the path it concerns: the root, the names on the stack and
    /// `last`.
    fn err(&self, e: io::Error, last: Option<&CStr>) -> io::Error {
        let mut p: PathBuf = self.root.parent().unwrap_or(Path::new("")).to_path_buf();
        for f in &self.stack {
            p.push(OsStr::from_bytes(f.name.to_bytes()));
        }
        if let Some(l) = last {
            p.push(OsStr::from_bytes(l.to_bytes()));
        }
        annotate(e, &p)
    }
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    let shown = slotsmith_yaml::escape::shown_path(path);
    io::Error::new(e.kind(), format!("removing {shown}: {e}"))
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn cstring(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

fn unlink(dir: BorrowedFd<'_>, name: &CStr, flags: AtFlags) -> io::Result<()> {
    rustix::fs::unlinkat(dir, name, flags)
        .map_err(io::Error::from)
        .or_else(ignore_missing)
}

fn identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// Opens the directory `name` in `parent` without following a symlink,
/// and makes sure its owner (us) may list it and remove its entries.
fn open_dir(parent: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    let euid = rustix::process::geteuid().as_raw();
    match rustix::fs::openat(parent, name, dir_flags(), Mode::empty()) {
        Ok(fd) => {
            let st = rustix::fs::fstat(&fd)?;
            if st.st_mode & 0o700 != 0o700 && st.st_uid == euid {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode((st.st_mode & 0o7777) | 0o700))?;
            }
            Ok(fd)
        }
        Err(Errno::ACCESS) => {
            // Not readable (mode 0, or -wx): look at it without reading it,
            // and only if it is our own directory, open it up. chmod by
            // name could follow a symlink swapped in meanwhile, so the
            // directory opened afterwards must be the one looked at.
            let probe = rustix::fs::openat(
                parent,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let st = rustix::fs::fstat(&probe)?;
            if st.st_uid != euid {
                return Err(Errno::ACCESS.into());
            }
            rustix::fs::chmodat(
                parent,
                name,
                Mode::from_raw_mode((st.st_mode & 0o7777) | 0o700),
                AtFlags::empty(),
            )?;
            let fd = rustix::fs::openat(parent, name, dir_flags(), Mode::empty())?;
            if identity(fd.as_fd())? != (st.st_dev, st.st_ino) {
                return Err(io::Error::other(
                    "the directory changed while being removed",
                ));
            }
            Ok(fd)
        }
        Err(e) => Err(e.into()),
    }
}

/// The entries of the directory `fd`, split into non-directories and
/// directories, without `.` and `..`. Listing everything before removing
/// anything keeps the listing independent of the removals.
fn list(fd: BorrowedFd<'_>) -> io::Result<(Vec<CString>, Vec<CString>)> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    // A second descriptor for the listing, closed when this returns.
    let mut dir = Dir::read_from(fd)?;
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode) == FileType::Directory,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            },
            _ => false,
        };
        if is_dir {
            dirs.push(name.to_owned());
        } else {
            files.push(name.to_owned());
        }
    }
    Ok((files, dirs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

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
        // `..` names no entry that could be removed.
        assert!(remove_tree(Path::new("..")).is_err());
    }
}
