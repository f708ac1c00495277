//! Comparing a published output directory with a rebuilt one, artifact by
//! artifact, in the published record's order: missing and extra files,
//! sizes, and the first byte that differs. Files are streamed in chunks,
//! so a multi-GiB image never sits in memory. Published names come from an
//! untrusted `build.json`: each is opened below its directory through no
//! symlink (`O_NOFOLLOW` on every component).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};

use anyhow::{bail, Context};
use serde::Serialize;
use slotsmith_yaml::escape::{shown, shown_path};

/// How far apart the two sides of one artifact are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Difference {
    /// Both exist; their bytes differ first at `offset` (where the shorter
    /// one ends, when one is a prefix of the other).
    Differs {
        /// The artifact (escaped).
        artifact: String,
        /// First differing byte.
        offset: u64,
        /// Published size.
        published_size: u64,
        /// Rebuilt size.
        rebuilt_size: u64,
    },
    /// Listed in the published build.json but absent from its directory.
    MissingPublished {
        /// The artifact (escaped).
        artifact: String,
    },
    /// Listed in the published build.json; the rebuild did not make it.
    MissingRebuilt {
        /// The artifact (escaped).
        artifact: String,
    },
    /// Made by the rebuild; the published build.json does not list it.
    Extra {
        /// The artifact (escaped).
        artifact: String,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Differs {
                artifact,
                offset,
                published_size,
                rebuilt_size,
            } if published_size != rebuilt_size => write!(
                f,
                "{artifact}: differs at byte {offset} (published {published_size} bytes, rebuilt {rebuilt_size})"
            ),
            Difference::Differs {
                artifact, offset, ..
            } => write!(f, "{artifact}: differs at byte {offset}"),
            Difference::MissingPublished { artifact } => write!(
                f,
                "{artifact}: listed in build.json but missing from the output directory"
            ),
            Difference::MissingRebuilt { artifact } => {
                write!(f, "{artifact}: the rebuild did not produce it")
            }
            Difference::Extra { artifact } => write!(
                f,
                "{artifact}: produced by the rebuild but not listed in the published build.json"
            ),
        }
    }
}

/// Compares each of `published` (names in record order) in `published_dir`
/// with the same name in `rebuilt_dir`, then lists the names of `rebuilt`
/// that `published` lacks. Returns the differences in that order.
pub fn compare_dirs(
    published_dir: &Path,
    published: &[String],
    rebuilt_dir: &Path,
    rebuilt: &[String],
) -> anyhow::Result<Vec<Difference>> {
    let mut out = Vec::new();
    for name in published {
        let artifact = shown(name);
        let p = open_below(published_dir, name)
            .with_context(|| format!("opening published artifact {artifact}"))?;
        let r = open_below(rebuilt_dir, name)
            .with_context(|| format!("opening rebuilt artifact {artifact}"))?;
        match (p, r) {
            (None, _) => out.push(Difference::MissingPublished { artifact }),
            (_, None) => out.push(Difference::MissingRebuilt { artifact }),
            (Some(mut p), Some(mut r)) => {
                let published_size = len(&p, published_dir, name)?;
                let rebuilt_size = len(&r, rebuilt_dir, name)?;
                if let Some(offset) = first_difference(&mut p, &mut r).with_context(|| {
                    format!(
                        "comparing {artifact} of {} with the rebuilt one",
                        shown_path(published_dir)
                    )
                })? {
                    out.push(Difference::Differs {
                        artifact,
                        offset,
                        published_size,
                        rebuilt_size,
                    });
                }
            }
        }
    }
    for name in rebuilt {
        if !published.contains(name) {
            out.push(Difference::Extra {
                artifact: shown(name),
            });
        }
    }
    Ok(out)
}

fn len(f: &File, dir: &Path, name: &str) -> anyhow::Result<u64> {
    Ok(f.metadata()
        .with_context(|| format!("reading the size of {}", shown_path(&dir.join(name))))?
        .len())
}

/// Opens `dir/name` for reading when it exists, refusing any symlink on
/// the way (each component is opened with `O_NOFOLLOW` relative to the
/// one before) and anything but a regular file at the end. `name` must be
/// plain (checked by the record parser; checked again here).
fn open_below(dir: &Path, name: &str) -> anyhow::Result<Option<File>> {
    use rustix::fs::{openat, Mode, OFlags};
    let parts: Vec<&std::ffi::OsStr> = Path::new(name)
        .components()
        .map(|c| match c {
            Component::Normal(s) => Ok(s),
            _ => Err(anyhow::format_err!(
                "'{}' is not a plain relative path",
                shown(name)
            )),
        })
        .collect::<anyhow::Result<_>>()?;
    let Some((last, parents)) = parts.split_last() else {
        bail!("an empty artifact name");
    };
    let nofollow = OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut at = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::DIRECTORY | OFlags::CLOEXEC).bits() as i32)
        .open(dir)
        .with_context(|| format!("opening {}", shown_path(dir)))?;
    let missing = |e: rustix::io::Errno| e == rustix::io::Errno::NOENT;
    for part in parents {
        match openat(
            &at,
            *part,
            nofollow | OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        ) {
            Ok(fd) => at = File::from(fd),
            Err(e) if missing(e) => return Ok(None),
            Err(e) if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR => bail!(
                "{} is reached through a symlink or a non-directory",
                shown(name)
            ),
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
    }
    match openat(&at, *last, nofollow | OFlags::RDONLY, Mode::empty()) {
        Ok(fd) => {
            let f = File::from(fd);
            if !f.metadata()?.is_file() {
                bail!("{} is not a regular file", shown(name));
            }
            Ok(Some(f))
        }
        Err(e) if missing(e) => Ok(None),
        Err(e) if e == rustix::io::Errno::LOOP => bail!("{} is a symlink", shown(name)),
        Err(e) => Err(std::io::Error::from(e).into()),
    }
}

/// The chunk both sides are read in.
const CHUNK: usize = 1 << 20;

/// The offset of the first byte where `a` and `b` differ, where the
/// shorter ends if one is a prefix of the other, or `None` when equal.
pub fn first_difference(a: &mut impl Read, b: &mut impl Read) -> std::io::Result<Option<u64>> {
    let mut ba = vec![0u8; CHUNK];
    let mut bb = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let na = fill(a, &mut ba)?;
        let nb = fill(b, &mut bb)?;
        let n = na.min(nb);
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(offset + i as u64));
        }
        if na != nb {
            return Ok(Some(offset + n as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += n as u64;
    }
}

/// Reads until `buf` is full or the stream ends (a short read is not the
/// end), so both sides stay aligned chunk by chunk.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A reader that returns at most 7 bytes per call, to prove the
    /// comparison does not depend on read sizes.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn diff(a: &[u8], b: &[u8]) -> Option<u64> {
        let chunked = first_difference(&mut &a[..], &mut &b[..]).unwrap();
        assert_eq!(
            chunked,
            first_difference(&mut Trickle(a), &mut &b[..]).unwrap()
        );
        chunked
    }

    #[test]
    fn the_first_differing_byte_is_found_across_chunks() {
        let a: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 251) as u8).collect();
        assert_eq!(diff(&a, &a), None);
        assert_eq!(diff(b"", b""), None);
        for at in [0, 1, CHUNK - 1, CHUNK, 2 * CHUNK + 17, a.len() - 1] {
            let mut b = a.clone();
            b[at] ^= 0x01;
            // A later difference does not hide the first.
            let last = b.len() - 1;
            if at < last {
                b[last] ^= 0x80;
            }
            assert_eq!(diff(&a, &b), Some(at as u64), "flip at {at}");
        }
    }

    #[test]
    fn a_size_difference_is_where_the_shorter_ends() {
        let a: Vec<u8> = (0..CHUNK + 10).map(|i| (i % 13) as u8).collect();
        assert_eq!(diff(&a, &a[..CHUNK]), Some(CHUNK as u64));
        assert_eq!(diff(&a[..3], &a), Some(3));
        assert_eq!(diff(b"", b"x"), Some(0));
    }

    #[test]
    fn directories_are_compared_in_record_order_with_missing_and_extra() {
        let p = tempfile::tempdir().unwrap();
        let r = tempfile::tempdir().unwrap();
        fs::create_dir(p.path().join("audit")).unwrap();
        fs::create_dir(r.path().join("audit")).unwrap();
        for (name, published, rebuilt) in [
            ("z.img", &b"same"[..], &b"same"[..]),
            ("audit/report.md", b"abcdef", b"abcXef"),
            ("short", b"abc", b"abcdef"),
            ("extra.bin", b"", b"new"),
        ] {
            if name != "extra.bin" {
                fs::write(p.path().join(name), published).unwrap();
            }
            fs::write(r.path().join(name), rebuilt).unwrap();
        }
        fs::write(p.path().join("gone-from-rebuild"), b"x").unwrap();
        let published: Vec<String> = [
            "z.img",
            "audit/report.md",
            "deleted",
            "gone-from-rebuild",
            "short",
        ]
        .map(String::from)
        .to_vec();
        let rebuilt: Vec<String> = ["audit/report.md", "extra.bin", "short", "z.img"]
            .map(String::from)
            .to_vec();
        let d = compare_dirs(p.path(), &published, r.path(), &rebuilt).unwrap();
        let lines: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            lines,
            [
                "audit/report.md: differs at byte 3",
                "deleted: listed in build.json but missing from the output directory",
                "gone-from-rebuild: the rebuild did not produce it",
                "short: differs at byte 3 (published 3 bytes, rebuilt 6)",
                "extra.bin: produced by the rebuild but not listed in the published build.json",
            ]
        );
        assert_eq!(
            d[0],
            Difference::Differs {
                artifact: "audit/report.md".into(),
                offset: 3,
                published_size: 6,
                rebuilt_size: 6
            }
        );
    }

    #[test]
    fn a_published_symlink_is_refused_naming_the_artifact() {
        let p = tempfile::tempdir().unwrap();
        let r = tempfile::tempdir().unwrap();
        let secret = tempfile::tempdir().unwrap();
        fs::write(secret.path().join("key"), b"private").unwrap();
        std::os::unix::fs::symlink(secret.path().join("key"), p.path().join("a.img")).unwrap();
        std::os::unix::fs::symlink(secret.path(), p.path().join("audit")).unwrap();
        fs::write(r.path().join("a.img"), b"private").unwrap();
        let names = |n: &str| vec![n.to_string()];
        let e = compare_dirs(p.path(), &names("a.img"), r.path(), &names("a.img")).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "opening published artifact a.img: a.img is a symlink"
        );
        let e = compare_dirs(p.path(), &names("audit/key"), r.path(), &[]).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "opening published artifact audit/key: audit/key is reached through a symlink or a non-directory"
        );
        fs::remove_file(p.path().join("a.img")).unwrap();
        fs::create_dir(p.path().join("a.img")).unwrap();
        let e = compare_dirs(p.path(), &names("a.img"), r.path(), &names("a.img")).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "opening published artifact a.img: a.img is not a regular file"
        );
        let e = compare_dirs(p.path(), &names("../x"), r.path(), &[]).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "opening published artifact ../x: '../x' is not a plain relative path"
        );
    }
}
