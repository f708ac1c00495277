//! Our own initramfs: a deterministic cpio `newc` archive, and the kernel
//! module closure it carries.
//!
//! The archive is what the kernel unpacks into its root tmpfs before it
//! runs `/init`, so its format is the kernel's (`070701`, "newc"; see
//! `Documentation/driver-api/early-userspace/buffer-format.rst`): a 110-byte
//! ASCII header per entry, the NUL-terminated name, padding to 4 bytes, the
//! data, padding to 4 bytes, and a `TRAILER!!!` entry. The `.swu` writer
//! in `slotsmith-swu` is deliberately narrower (regular files with a safe
//! name alphabet, `070702`), so this is a separate writer: it stores
//! directories, files, symlinks and character devices with their modes.
//!
//! Determinism: entries are written in the order given (callers sort),
//! inode numbers are 1-based indexes, `nlink` is 1 (2 for directories),
//! owners are root, and every mtime is the build's epoch.
//!
//! Modules: only what the init needs, taken from the rootfs's own kernel
//! (Debian signs its modules, so `module.sig_enforce=1` still holds) and
//! ordered by `modules.dep` so that each module's dependencies load
//! first (the init has no `modprobe`). A module named in the image that
//! the kernel does not have is an error naming it: a missing storage
//! driver would otherwise surface as a boot that cannot find its disk.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use anyhow::{bail, ensure, Context, Result};

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file with these bytes.
    File(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
    /// A character device (major, minor).
    CharDev(u32, u32),
}

/// One archive entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path without a leading `/` (the kernel accepts both).
    pub path: String,
    /// Permission bits (the type bits come from `kind`).
    pub mode: u32,
    /// What it is.
    pub kind: EntryKind,
}

/// Largest archive member the writer accepts: the newc size field is
/// 8 hex digits.
const MAX_MEMBER: u64 = u32::MAX as u64;

/// Writes `entries` as a newc archive with every mtime at `mtime`.
pub fn write_newc<W: Write>(out: W, entries: &[Entry], mtime: u32) -> Result<W> {
    let mut out = Counting { inner: out, pos: 0 };
    let mut seen = BTreeSet::new();
    for (i, e) in entries.iter().enumerate() {
        let name = e.path.trim_start_matches('/');
        ensure!(
            !name.is_empty()
                && !name
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
                && !name.bytes().any(|b| b == 0 || b < 0x20 || b == 0x7f),
            "initramfs entry {:?}: not a plain relative path",
            e.path
        );
        ensure!(
            seen.insert(name.to_string()),
            "initramfs entry {name} appears twice"
        );
        ensure!(
            e.mode <= 0o7777,
            "initramfs entry {name}: mode {:o} has type bits",
            e.mode
        );
        let (ty, data, nlink, rdev): (u32, &[u8], u32, (u32, u32)) = match &e.kind {
            EntryKind::Dir => (0o040000, &[], 2, (0, 0)),
            EntryKind::File(d) => (0o100000, d.as_slice(), 1, (0, 0)),
            EntryKind::Symlink(t) => (0o120000, t.as_bytes(), 1, (0, 0)),
            EntryKind::CharDev(ma, mi) => (0o020000, &[], 1, (*ma, *mi)),
        };
        ensure!(
            (data.len() as u64) <= MAX_MEMBER,
            "initramfs entry {name} is larger than 4 GiB"
        );
        header(
            &mut out,
            i as u32 + 1,
            ty | e.mode,
            nlink,
            mtime,
            data.len() as u32,
            rdev,
            name,
        )?;
        out.write_all(data)?;
        pad4(&mut out, data.len())?;
    }
    header(&mut out, 0, 0, 1, 0, 0, (0, 0), "TRAILER!!!")?;
    // The kernel reads the initramfs in whole blocks of 512 bytes when it
    // is appended to other archives; pad the end so the archive can be
    // concatenated or padded further with zeros.
    let rem = (out.pos % 512) as usize;
    if rem != 0 {
        out.write_all(&vec![0u8; 512 - rem])?;
    }
    out.inner.flush()?;
    Ok(out.inner)
}

/// A writer that counts what passes through it.
struct Counting<W> {
    inner: W,
    pos: u64,
}

impl<W: Write> Counting<W> {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        self.inner.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn header<W: Write>(
    out: &mut Counting<W>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) -> Result<()> {
    let namesize = name.len() + 1;
    let h = format!(
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{mtime:08X}{size:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
        0, 0, 0, 0, rdev.0, rdev.1, 0
    );
    debug_assert_eq!(h.len(), 110);
    out.write_all(h.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad4(out, 110 + namesize)?;
    Ok(())
}

fn pad4<W: Write>(out: &mut Counting<W>, len: usize) -> io::Result<()> {
    let rem = len % 4;
    if rem != 0 {
        out.write_all(&[0u8; 3][..4 - rem])?;
    }
    Ok(())
}

/// A kernel's `modules.dep`: each module's path (relative to
/// `/lib/modules/<version>/`) and the paths it depends on.
#[derive(Debug, Default)]
pub struct ModulesDep {
    deps: BTreeMap<String, Vec<String>>,
}

/// The module name of a path: the file name without `.ko` (and any
/// compression suffix), with `-` and `_` the same (as modprobe treats them).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split_once(".ko").map(|(s, _)| s).unwrap_or(file);
    stem.replace('-', "_")
}

impl ModulesDep {
    /// Parses `modules.dep` (`path: dep dep ...` per line). Bounded: a
    /// file of more than 16 MiB or 100,000 lines is refused.
    pub fn parse(text: &str) -> Result<ModulesDep> {
        ensure!(text.len() <= 16 << 20, "modules.dep is larger than 16 MiB");
        let mut deps = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            ensure!(n < 100_000, "modules.dep has more than 100000 lines");
            if line.trim().is_empty() {
                continue;
            }
            let Some((m, rest)) = line.split_once(':') else {
                bail!("modules.dep line {}: no ':'", n + 1);
            };
            let check = |p: &str| -> Result<String> {
                ensure!(
                    !p.is_empty()
                        && !p.starts_with('/')
                        && !p.split('/').any(|c| c == ".." || c.is_empty())
                        && p.bytes().all(|b| b.is_ascii_graphic()),
                    "modules.dep line {}: bad module path {:?}",
                    n + 1,
                    p
                );
                Ok(p.to_string())
            };
            let m = check(m.trim())?;
            let d = rest
                .split_whitespace()
                .map(check)
                .collect::<Result<Vec<_>>>()?;
            deps.insert(m, d);
        }
        Ok(ModulesDep { deps })
    }

    /// The path of the module named `name` (`dm-verity` or `dm_verity`).
    pub fn path_of(&self, name: &str) -> Option<&str> {
        let want = name.replace('-', "_");
        self.deps
            .keys()
            .find(|p| module_name(p) == want)
            .map(String::as_str)
    }

    /// The paths to load for `names`, dependencies first, each once. The
    /// order is a depth-first post-order over the names as given and each
    /// module's dependencies as `modules.dep` lists them, so it is
    /// deterministic. A name the kernel lacks is an error naming it.
    pub fn load_order(&self, names: &[String]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for name in names {
            let Some(path) = self.path_of(name) else {
                bail!("the kernel has no module named {name:?} (not in modules.dep)");
            };
            self.visit(path, &mut done, &mut BTreeSet::new(), &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        path: &str,
        done: &mut BTreeSet<String>,
        active: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if done.contains(path) {
            return Ok(());
        }
        ensure!(
            active.insert(path.to_string()),
            "modules.dep has a dependency cycle through {path}"
        );
        let deps = self.deps.get(path).with_context(|| {
            format!("modules.dep names {path} as a dependency but has no line for it")
        })?;
        for d in deps {
            self.visit(d, done, active, order)?;
        }
        active.remove(path);
        done.insert(path.to_string());
        order.push(path.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/lib/reed_solomon/reed_solomon.ko kernel/drivers/md/dm-mod.ko\n\
kernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko\n\
kernel/drivers/md/dm-mod.ko:\n\
kernel/lib/reed_solomon/reed_solomon.ko:\n\
kernel/fs/squashfs/squashfs.ko:\n";

    #[test]
    fn dependencies_load_first_and_once() {
        let d = ModulesDep::parse(DEP).unwrap();
        let order = d
            .load_order(&["dm_verity".into(), "squashfs".into(), "dm-mod".into()])
            .unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/md/dm-mod.ko",
                "kernel/drivers/md/dm-bufio.ko",
                "kernel/lib/reed_solomon/reed_solomon.ko",
                "kernel/drivers/md/dm-verity.ko",
                "kernel/fs/squashfs/squashfs.ko",
            ]
        );
    }

    #[test]
    fn a_missing_module_a_cycle_and_bad_paths_are_errors() {
        let d = ModulesDep::parse(DEP).unwrap();
        let e = d.load_order(&["virtio_blk".into()]).unwrap_err();
        assert!(e.to_string().contains("\"virtio_blk\""), "{e}");
        let c = ModulesDep::parse("a.ko: b.ko\nb.ko: a.ko\n").unwrap();
        let e = c.load_order(&["a".into()]).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
        for bad in [
            "../x.ko:\n",
            "/abs.ko:\n",
            "a.ko: ../../etc/passwd\n",
            "nocolon\n",
        ] {
            assert!(ModulesDep::parse(bad).is_err(), "{bad}");
        }
        let e = ModulesDep::parse("a.ko: gone.ko\n")
            .unwrap()
            .load_order(&["a".into()])
            .unwrap_err();
        assert!(e.to_string().contains("gone.ko"), "{e}");
    }

    fn sample() -> Vec<Entry> {
        vec![
            Entry {
                path: "dev".into(),
                mode: 0o755,
                kind: EntryKind::Dir,
            },
            Entry {
                path: "dev/console".into(),
                mode: 0o600,
                kind: EntryKind::CharDev(5, 1),
            },
            Entry {
                path: "etc".into(),
                mode: 0o755,
                kind: EntryKind::Dir,
            },
            Entry {
                path: "etc/x".into(),
                mode: 0o644,
                kind: EntryKind::File(b"hello\n".to_vec()),
            },
            Entry {
                path: "init".into(),
                mode: 0o755,
                kind: EntryKind::File(b"#!x\n12345".to_vec()),
            },
            Entry {
                path: "link".into(),
                mode: 0o777,
                kind: EntryKind::Symlink("etc/x".into()),
            },
        ]
    }

    #[test]
    fn gnu_cpio_lists_and_extracts_exactly_what_was_written() {
        let bytes = write_newc(Vec::new(), &sample(), 1735689600).unwrap();
        assert_eq!(bytes.len() % 512, 0);
        assert_eq!(
            bytes,
            write_newc(Vec::new(), &sample(), 1735689600).unwrap()
        );
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("i.cpio");
        std::fs::write(&archive, &bytes).unwrap();
        let list = duct::cmd!("cpio", "-itv", "--quiet", "-F", &archive)
            .env("TZ", "UTC")
            .read()
            .unwrap();
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 6, "{list}");
        assert!(
            lines[1].starts_with("crw-------") && lines[1].contains("5,   1"),
            "{list}"
        );
        assert!(
            lines[4].starts_with("-rwxr-xr-x") && lines[4].contains("2025"),
            "{list}"
        );
        assert!(lines[5].contains("link -> etc/x"), "{list}");
        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        duct::cmd!(
            "cpio",
            "-id",
            "--quiet",
            "--no-absolute-filenames",
            "-F",
            &archive
        )
        .dir(&x)
        .run()
        .unwrap();
        assert_eq!(std::fs::read(x.join("etc/x")).unwrap(), b"hello\n");
        assert_eq!(std::fs::read(x.join("init")).unwrap(), b"#!x\n12345");
    }

    #[test]
    fn unsafe_names_and_duplicates_are_refused() {
        for p in ["", "a/../b", "a//b", "./a", "a\nb"] {
            let e = vec![Entry {
                path: p.into(),
                mode: 0o644,
                kind: EntryKind::Dir,
            }];
            assert!(write_newc(Vec::new(), &e, 0).is_err(), "{p:?}");
        }
        let mut twice = sample();
        twice.push(sample()[0].clone());
        assert!(write_newc(Vec::new(), &twice, 0)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }
}
