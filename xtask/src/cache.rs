//! Where a build keeps what it can reuse across projects: the Debian base
//! tarballs and the `.deb` cache (`debs/`).

use std::path::{Path, PathBuf};

/// `$SLOTSMITH_CACHE`, else `$XDG_CACHE_HOME/slotsmith`, else
/// `~/.cache/slotsmith`, else `<project>/work/cache`.
pub(crate) fn default_cache(project: &Path) -> PathBuf {
    if let Some(c) = std::env::var_os("SLOTSMITH_CACHE") {
        return PathBuf::from(c);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("slotsmith");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/slotsmith"),
        None => project.join("work/cache"),
    }
}
