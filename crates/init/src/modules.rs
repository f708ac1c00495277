//! The list of kernel modules the init loads, and how each is loaded.
//!
//! The list (`/etc/slotsmith/modules`) and the module files are inside the
//! initramfs, which is inside the signed UKI: they are trusted as much as
//! the init binary itself. The parser is still strict, so that a build bug
//! (an absolute path, a `..`, a stray character) fails the boot with a
//! line naming the entry instead of loading something unexpected. The
//! kernel checks each module's own signature as well when
//! `module.sig_enforce=1` is on the command line.
//!
//! The list is already in load order (dependencies first, from
//! `modules.dep` at build time): the init has no dependency resolver, so
//! nothing at boot depends on parsing `modules.dep`.

use anyhow::{bail, Result};
use slotsmith_yaml::escape::shown;
use std::path::{Component, Path, PathBuf};

/// Where the list lives in the initramfs.
pub const LIST_PATH: &str = "/etc/slotsmith/modules";
/// The largest list accepted.
pub const MAX_LIST: usize = 64 * 1024;
/// The most entries accepted (a real list has about a dozen).
pub const MAX_ENTRIES: usize = 1024;

/// `finit_module` flag: the file is compressed and the kernel decompresses
/// it (linux/module.h, since 5.17; the kernel answers EOPNOTSUPP when it
/// was built without CONFIG_MODULE_DECOMPRESS).
pub const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

/// Parses the module list: one path per line, relative to
/// `/lib/modules/<kver>/`; blank lines and lines starting with `#` are
/// skipped. Errors name the line.
pub fn parse_list(text: &[u8]) -> Result<Vec<PathBuf>> {
    if text.len() > MAX_LIST {
        bail!(
            "{LIST_PATH} is {} bytes, over the {MAX_LIST}-byte limit",
            text.len()
        );
    }
    let Ok(text) = std::str::from_utf8(text) else {
        bail!("{LIST_PATH} is not UTF-8");
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let lineno = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let ok_chars = line
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,".contains(&b));
        let path = Path::new(line);
        let ok_shape = path.components().all(|c| matches!(c, Component::Normal(_)));
        if !ok_chars || !ok_shape || compression(path).is_none() {
            bail!(
                "{LIST_PATH} line {lineno}: `{}` is not a relative path to a .ko, .ko.xz, .ko.zst or .ko.gz file",
                shown(line)
            );
        }
        if out.len() == MAX_ENTRIES {
            bail!("{LIST_PATH} line {lineno}: more than {MAX_ENTRIES} modules");
        }
        out.push(path.to_path_buf());
    }
    Ok(out)
}

/// `Some(false)` for a plain `.ko`, `Some(true)` for a compressed module
/// the kernel decompresses itself, `None` for anything else.
pub fn compression(path: &Path) -> Option<bool> {
    let name = path.file_name()?.to_str()?;
    if name.len() > 3 && name.ends_with(".ko") {
        Some(false)
    } else if [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|ext| name.len() > ext.len() && name.ends_with(ext))
    {
        Some(true)
    } else {
        None
    }
}

/// The `finit_module` flags for `path`.
pub fn load_flags(path: &Path) -> i32 {
    match compression(path) {
        Some(true) => MODULE_INIT_COMPRESSED_FILE,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_skips_comments() {
        let list = b"# dm first\nkernel/drivers/md/dm-mod.ko\n\n  kernel/lib/reed_solomon/reed_solomon.ko.xz  \nkernel/fs/squashfs/squashfs.ko.zst\n";
        let got = parse_list(list).unwrap();
        assert_eq!(
            got,
            [
                PathBuf::from("kernel/drivers/md/dm-mod.ko"),
                PathBuf::from("kernel/lib/reed_solomon/reed_solomon.ko.xz"),
                PathBuf::from("kernel/fs/squashfs/squashfs.ko.zst"),
            ]
        );
        assert_eq!(load_flags(&got[0]), 0);
        assert_eq!(load_flags(&got[1]), MODULE_INIT_COMPRESSED_FILE);
        assert_eq!(load_flags(&got[2]), MODULE_INIT_COMPRESSED_FILE);
    }

    #[test]
    fn refuses_paths_that_leave_the_module_tree() {
        for (bad, line) in [
            ("/lib/modules/x/a.ko", 2),
            ("kernel/../../../etc/shadow.ko", 2),
            ("./a.ko", 2),
            ("kernel/a.txt", 2),
            (".ko", 2),
            ("kernel/a b.ko", 2),
            ("kernel/\u{1b}]0;x.ko", 2),
        ] {
            let text = format!("kernel/ok.ko\n{bad}\n");
            let err = parse_list(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(&format!("line {line}:")), "{bad:?}: {err}");
            assert!(!err.chars().any(char::is_control), "{err:?}");
        }
    }

    #[test]
    fn bounds_size_and_count() {
        let big = vec![b'#'; MAX_LIST + 1];
        assert!(parse_list(&big).unwrap_err().to_string().contains("limit"));
        let many = "a.ko\n".repeat(MAX_ENTRIES + 1);
        let err = parse_list(many.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("more than 1024 modules"), "{err}");
        assert!(parse_list(b"\xff.ko\n").is_err());
    }
}
