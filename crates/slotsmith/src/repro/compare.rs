//! Comparing a published output directory with a rebuilt one, artifact by
//! artifact, in the published record's order, then the record files
//! themselves (`SHA256SUMS`, `build.json`): missing and extra files, sizes,
//! and the first byte that differs. Each published artifact is also
//! checked against the sha256 and size its `build.json` records, so a
//! record edited to vouch for another file is caught even where the bytes
//! match the rebuild. Files are streamed in chunks (hashed on the same
//! pass), so a multi-GiB image never sits in memory and is read once.
//! Published names come from an untrusted `build.json`: each is opened
//! below its directory through no symlink (`O_NOFOLLOW` on every
//! component) and without blocking, and only a regular file is read.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};

use anyhow::{bail, Context};
use serde::Serialize;
use sha2::{Digest, Sha256};
use slotsmith_yaml::escape::{shown, shown_path};

use super::record::RecordedArtifact;

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
    /// The published file is not the one the published build.json
    /// vouches for (its sha256 or size differs from the record's).
    NotAsRecorded {
        /// The artifact (escaped).
        artifact: String,
        /// The sha256 build.json records (escaped).
        recorded_sha256: String,
        /// The size build.json records.
        recorded_size: u64,
        /// The sha256 of the published file.
        published_sha256: String,
        /// The size of the published file.
        published_size: u64,
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
            Difference::NotAsRecorded {
                artifact,
                recorded_sha256,
                recorded_size,
                published_sha256,
                published_size,
            } => write!(
                f,
                "{artifact}: published file does not match build.json's sha256 \
                 (build.json records {recorded_sha256}, {recorded_size} bytes; \
                 the file has {published_sha256}, {published_size} bytes)"
            ),
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

/// Compares each of `published` (the record's artifacts, in its order)
/// in `published_dir` with the same name in `rebuilt_dir`, checking each
/// published file against the sha256 and size recorded for it; then each
/// of `records` (`SHA256SUMS`, `build.json`), byte for byte; then lists the
/// names of `rebuilt` that `published` lacks. Returns the differences in
/// that order.
pub fn compare_dirs(
    published_dir: &Path,
    published: &[RecordedArtifact],
    records: &[&str],
    rebuilt_dir: &Path,
    rebuilt: &[String],
) -> anyhow::Result<Vec<Difference>> {
    let mut out = Vec::new();
    for a in published {
        compare_one(
            published_dir,
            rebuilt_dir,
            &a.name,
            Some((&a.sha256, a.size)),
            &mut out,
        )?;
    }
    for name in records {
        compare_one(published_dir, rebuilt_dir, name, None, &mut out)?;
    }
    for name in rebuilt {
        if !published.iter().any(|a| &a.name == name) {
            out.push(Difference::Extra {
                artifact: shown(name),
            });
        }
    }
    Ok(out)
}

/// One name: missing on either side, differing from the rebuild (first),
/// and not what `recorded` says (when the record lists it).
fn compare_one(
    published_dir: &Path,
    rebuilt_dir: &Path,
    name: &str,
    recorded: Option<(&str, u64)>,
    out: &mut Vec<Difference>,
) -> anyhow::Result<()> {
    let artifact = shown(name);
    let p = open_below(published_dir, name)
        .with_context(|| format!("opening published artifact {artifact}"))?;
    let r = open_below(rebuilt_dir, name)
        .with_context(|| format!("opening rebuilt artifact {artifact}"))?;
    let Some(p) = p else {
        out.push(Difference::MissingPublished { artifact });
        return Ok(());
    };
    let published_size = len(&p, published_dir, name)?;
    let mut p = Hashing {
        inner: p,
        hash: Sha256::new(),
        len: 0,
    };
    let reading = || {
        format!(
            "comparing {artifact} of {} with the rebuilt one",
            shown_path(published_dir)
        )
    };
    match r {
        None => out.push(Difference::MissingRebuilt {
            artifact: artifact.clone(),
        }),
        Some(mut r) => {
            let rebuilt_size = len(&r, rebuilt_dir, name)?;
            if let Some(offset) = first_difference(&mut p, &mut r).with_context(reading)? {
                out.push(Difference::Differs {
                    artifact: artifact.clone(),
                    offset,
                    published_size,
                    rebuilt_size,
                });
            }
        }
    }
    if let Some((sha256, size)) = recorded {
        // The comparison stops at the first differing byte (or never
        // started): the rest is read for the hash on the same handle.
        std::io::copy(&mut p, &mut std::io::sink()).with_context(reading)?;
        let got = hex::encode(p.hash.finalize());
        if got != sha256 || p.len != size {
            out.push(Difference::NotAsRecorded {
                artifact,
                recorded_sha256: shown(sha256),
                recorded_size: size,
                published_sha256: got,
                published_size: p.len,
            });
        }
    }
    Ok(())
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    len: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

fn len(f: &File, dir: &Path, name: &str) -> anyhow::Result<u64> {
    Ok(f.metadata()
        .with_context(|| format!("reading the size of {}", shown_path(&dir.join(name))))?
        .len())
}

/// Opens `dir/name` for reading when it exists, refusing any symlink on
/// the way (each component is opened with `O_NOFOLLOW` relative to the
/// one before) and anything but a regular file at the end. Every open is
/// `O_NONBLOCK`: a FIFO named like an artifact would otherwise block the
/// open itself, before the type could be checked. `name` must be plain
/// (checked by the record parser; checked again here).
pub(crate) fn open_below(dir: &Path, name: &str) -> anyhow::Result<Option<File>> {
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
    let nofollow = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
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
            // O_NONBLOCK stays set: it changes nothing for a regular file.
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

    /// The record entry of `dir/name` as the build wrote it (its hash and
    /// size; a missing file gets a made-up one).
    fn as_published(dir: &Path, name: &str) -> RecordedArtifact {
        let bytes = fs::read(dir.join(name)).unwrap_or_default();
        RecordedArtifact {
            name: name.to_string(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            size: bytes.len() as u64,
        }
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
        let published: Vec<RecordedArtifact> = [
            "z.img",
            "audit/report.md",
            "deleted",
            "gone-from-rebuild",
            "short",
        ]
        .map(|n| as_published(p.path(), n))
        .to_vec();
        let rebuilt: Vec<String> = ["audit/report.md", "extra.bin", "short", "z.img"]
            .map(String::from)
            .to_vec();
        let d = compare_dirs(p.path(), &published, &[], r.path(), &rebuilt).unwrap();
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
    fn a_published_file_unlike_its_record_and_the_record_files_are_differences() {
        let p = tempfile::tempdir().unwrap();
        let r = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..2 * CHUNK + 3).map(|i| (i % 7) as u8).collect();
        for d in [p.path(), r.path()] {
            fs::write(d.join("a.img"), &big).unwrap();
            fs::write(d.join("b.bin"), b"bbb").unwrap();
            fs::write(d.join("build.json"), b"{}\n").unwrap();
        }
        let sums = |d: &Path, s: &[u8]| fs::write(d.join("SHA256SUMS"), s).unwrap();
        sums(p.path(), b"0bc  a.img\n");
        sums(r.path(), b"abc  a.img\n");
        let mut listed = vec![
            as_published(p.path(), "a.img"),
            as_published(p.path(), "b.bin"),
        ];
        let (good_sha, good_size) = (listed[0].sha256.clone(), listed[0].size);
        // build.json vouches for another image: the same bytes as the
        // rebuild are no excuse.
        listed[0].sha256 = format!("f{}", &good_sha[1..]);
        listed[1].size = 4;
        let names = ["a.img".to_string(), "b.bin".to_string()];
        let records = ["SHA256SUMS", "build.json"];
        let d = compare_dirs(p.path(), &listed, &records, r.path(), &names).unwrap();
        let lines: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        let b_sha = hex::encode(Sha256::digest(b"bbb"));
        assert_eq!(
            lines,
            [
                format!(
                    "a.img: published file does not match build.json's sha256 (build.json records \
                     {}, {good_size} bytes; the file has {good_sha}, {good_size} bytes)",
                    listed[0].sha256
                ),
                format!(
                    "b.bin: published file does not match build.json's sha256 (build.json records \
                     {b_sha}, 4 bytes; the file has {b_sha}, 3 bytes)"
                ),
                "SHA256SUMS: differs at byte 0".to_string(),
            ]
        );
        // A published file that differs from both the rebuild and its
        // record: the offset first, the whole file still hashed.
        let mut flipped = big.clone();
        flipped[CHUNK + 1] ^= 1;
        fs::write(p.path().join("a.img"), &flipped).unwrap();
        listed[0].sha256 = good_sha.clone();
        let d = compare_dirs(p.path(), &listed[..1], &[], r.path(), &names[..1]).unwrap();
        assert_eq!(
            d,
            [
                Difference::Differs {
                    artifact: "a.img".into(),
                    offset: CHUNK as u64 + 1,
                    published_size: good_size,
                    rebuilt_size: good_size,
                },
                Difference::NotAsRecorded {
                    artifact: "a.img".into(),
                    recorded_sha256: good_sha,
                    recorded_size: good_size,
                    published_sha256: hex::encode(Sha256::digest(&flipped)),
                    published_size: good_size,
                },
            ]
        );
        // A hostile recorded sha256 is shown escaped.
        listed[1].sha256 = "\u{1b}[2J".into();
        listed[1].size = 3;
        let d = compare_dirs(p.path(), &listed[1..], &[], r.path(), &names[1..]).unwrap();
        assert!(
            d[0].to_string().contains("records \\x1b[2J, 3 bytes"),
            "{}",
            d[0]
        );
    }

    #[test]
    fn a_fifo_named_like_an_artifact_is_refused_without_blocking() {
        let p = tempfile::tempdir().unwrap();
        let r = tempfile::tempdir().unwrap();
        fs::create_dir(p.path().join("audit")).unwrap();
        for name in ["a.img", "audit/report.md"] {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                p.path().join(name),
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o644),
                0,
            )
            .unwrap();
            fs::write(r.path().join("a.img"), b"x").unwrap();
            let listed = [as_published(r.path(), name)];
            let e = compare_dirs(p.path(), &listed, &[], r.path(), &[]).unwrap_err();
            assert_eq!(
                format!("{e:#}"),
                format!("opening published artifact {name}: {name} is not a regular file")
            );
        }
        // SHA256SUMS too.
        fs::rename(p.path().join("a.img"), p.path().join("SHA256SUMS")).unwrap();
        let e = compare_dirs(p.path(), &[], &["SHA256SUMS"], r.path(), &[]).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "opening published artifact SHA256SUMS: SHA256SUMS is not a regular file"
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
        let listed = |n: &str| vec![as_published(r.path(), n)];
        let e =
            compare_dirs(p.path(), &listed("a.img"), &[], r.path(), &names("a.img")).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "opening published artifact a.img: a.img is a symlink"
        );
        let e = compare_dirs(p.path(), &listed("audit/key"), &[], r.path(), &[]).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "opening published artifact audit/key: audit/key is reached through a symlink or a non-directory"
        );
        fs::remove_file(p.path().join("a.img")).unwrap();
        fs::create_dir(p.path().join("a.img")).unwrap();
        let e =
            compare_dirs(p.path(), &listed("a.img"), &[], r.path(), &names("a.img")).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "opening published artifact a.img: a.img is not a regular file"
        );
        let e = compare_dirs(p.path(), &listed("../x"), &[], r.path(), &[]).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "opening published artifact ../x: '../x' is not a plain relative path"
        );
    }
}
