//! SWUpdate `.swu` update packages: writing and verifying them.
//!
//! A `.swu` is a cpio "new CRC" archive whose first member is the libconfig
//! `sw-description`, the second its detached CMS signature, then the
//! payloads; SWUpdate 2022.12 rejects any other order. Both the cpio
//! `check` in a member's header and the sha256 in the signed
//! `sw-description` must be known before the member is written, so a
//! payload's [`Digests`] (size, sha256, cpio check) come first, and the
//! archive then reads each payload exactly once:
//!
//! 1. the digests: from [`PreparedPayload::from_digests`] when the caller
//!    computed them while producing the file (a [`DigestWriter`], then
//!    [`Stamp::of_file`] once it is complete; or
//!    [`Digests::of_file_stamped`] on a tool's output it had to read
//!    anyway), with no read at all; or from [`prepare_payload`], which reads
//!    (and optionally compresses) the file once;
//! 2. the caller builds and signs the [`SwDescription`], then
//!    [`write_swu_members`] copies each payload into the archive, with no
//!    temporary copies and no second hash: the file's [`Stamp`] (inode,
//!    size, mtime, ctime) must still be the one recorded with the digests,
//!    and the bytes copied must still have the recorded cpio check. A file
//!    whose stamp changed is re-hashed while it is copied and accepted
//!    only if it still has the recorded sha256; one that changes during
//!    the copy is an error.
//!
//! [`read_swu`] is the independent check of a finished archive: member
//! order, checksums, and that every payload the description names is present
//! with the signed sha256 and size. It does not verify the CMS signature
//! itself; that is the signing crate's job (and SWUpdate's on the device).

pub mod cpio;
pub mod digest;
#[doc(hidden)]
pub mod fuzz;
pub mod swdesc;

pub use cpio::{read_index, read_index_with_sha256, read_leading, CpioEntry, CpioWriter};
pub use digest::{DigestWriter, Digester, Digests, Stamp};
pub use swdesc::{
    bootenv_for, Bootloader, Collection, Compression, Fit, Payload, SwDescription, Target,
};

use anyhow::{bail, ensure, Context, Result};
use slotsmith_yaml::escape::shown;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Name of the first member.
pub const SW_DESCRIPTION: &str = "sw-description";
/// Name of the second member: DER CMS signature over `sw-description`.
pub const SW_DESCRIPTION_SIG: &str = "sw-description.sig";
/// Upper bound for reading `sw-description` and its signature into memory
/// from an untrusted archive.
const MAX_METADATA: u64 = 16 * 1024 * 1024;
/// Default zstd level: fast enough to stay near I/O speed on one core; root
/// filesystems are usually squashfs/erofs and already compressed.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// How [`prepare_payload`] stores a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadCompression {
    /// Store the file as is; the archive streams it from its own path.
    None,
    /// Compress into `output` (caller-provided, e.g. in the build's temp
    /// dir), which is what the archive then streams.
    Zstd { level: i32, output: PathBuf },
}

/// Everything the sw-description and the cpio header need for one payload,
/// describing the bytes at `path` as they were when digested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPayload {
    /// File holding the bytes to store: the source itself, or the
    /// compressed copy.
    pub path: PathBuf,
    /// Size, sha256 and cpio check of the stored (compressed, if
    /// compressed) bytes.
    pub digests: Digests,
    /// The version of `path` the digests describe.
    pub stamp: Stamp,
    pub compressed: Compression,
    /// Size of the source before compression.
    pub source_size: u64,
}

impl PreparedPayload {
    /// A payload stored as is whose digests are already known: nothing
    /// is read here. `stamp` must be the file's [`Stamp`] taken when the
    /// digests were computed: right after the last write of a
    /// [`DigestWriter`] (`Stamp::of_file` on the written file), or the one
    /// [`Digests::of_file_stamped`] returns. Taking it later, e.g. here in
    /// the update stage, would vouch for whatever the file holds by then.
    ///
    /// Anything that changes the file's ctime after the stamp (a hard link
    /// into a cache, `chmod`) makes [`write_swu_members`] re-hash it while
    /// copying; stamp after such steps to keep the single read. Fails if
    /// the stamp is not of a regular file of `digests.size` bytes.
    pub fn from_digests(path: &Path, digests: Digests, stamp: Stamp) -> Result<PreparedPayload> {
        ensure!(
            stamp.is_regular,
            "payload {} is not a regular file",
            path.display()
        );
        ensure!(
            stamp.size == digests.size,
            "payload {} had {} bytes when stamped, but its digests describe {}",
            path.display(),
            stamp.size,
            digests.size
        );
        Ok(PreparedPayload {
            path: path.to_owned(),
            digests,
            stamp,
            compressed: Compression::None,
            source_size: digests.size,
        })
    }

    /// Stored size (compressed, if compressed).
    pub fn size(&self) -> u64 {
        self.digests.size
    }

    /// This payload as archive member `name`, for [`write_swu_members`].
    pub fn archive_member(&self, name: &str) -> Member {
        Member {
            name: name.to_owned(),
            path: self.path.clone(),
            digests: self.digests,
            stamp: Some(self.stamp),
        }
    }

    /// The tuple the older [`write_swu`] takes for this payload under
    /// member `name`; prefer [`PreparedPayload::archive_member`].
    pub fn member(&self, name: &str) -> (String, PathBuf, u64, u32) {
        (
            name.to_owned(),
            self.path.clone(),
            self.digests.size,
            self.digests.cpio_sum,
        )
    }

    /// The sw-description entry for this payload.
    pub fn payload(&self, filename: &str, target: Target) -> Payload {
        Payload {
            filename: filename.to_owned(),
            sha256: self.digests.sha256,
            size: self.digests.size,
            compressed: self.compressed,
            target,
            fit: None,
        }
    }
}

/// Size, cpio check and sha256 of a payload as it will be stored, from one
/// read of the source. Use [`PreparedPayload::from_digests`] instead when
/// the digests of an uncompressed payload are already known.
///
/// For zstd the payload is compressed once into the caller-provided output
/// path, and the digests are computed over the compressed bytes as they are
/// written. We compress once instead of twice (once to hash, once to
/// stream) because compression is by far the most expensive step of a
/// build, and because the archive then copies a file whose digests and
/// stamp are known, instead of relying on the compressor giving
/// byte-identical output twice. The cost is disk space for the compressed
/// copy, at most about the size of the source.
///
/// Compression is single-threaded at a fixed level, so the output is
/// reproducible for a given zstd version; the frame records the content
/// size and an XXH64 checksum of the content, so a decompressor on the
/// device also detects a source that changed while it was being compressed.
pub fn prepare_payload(path: &Path, compression: &PayloadCompression) -> Result<PreparedPayload> {
    match compression {
        PayloadCompression::None => {
            let (digests, stamp) = Digests::of_file_stamped(path)?;
            Ok(PreparedPayload {
                path: path.to_owned(),
                digests,
                stamp,
                compressed: Compression::None,
                source_size: digests.size,
            })
        }
        PayloadCompression::Zstd { level, output } => compress(path, *level, output),
    }
}

/// The zstd half of [`prepare_payload`].
fn compress(path: &Path, level: i32, output: &Path) -> Result<PreparedPayload> {
    let mut src = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let source = src
        .metadata()
        .with_context(|| format!("reading metadata of {}", path.display()))?;
    // Creating the output truncates it: never let that be the source.
    if let Ok(o) = std::fs::metadata(output) {
        ensure!(
            (o.dev(), o.ino()) != (source.dev(), source.ino()),
            "compressed output {} is the source itself",
            output.display()
        );
    }
    let source_size = source.len();
    let out = File::create(output).with_context(|| format!("creating {}", output.display()))?;
    let sink = DigestWriter::new(BufWriter::with_capacity(digest::READ_BUF, out));
    let mut enc =
        zstd::stream::Encoder::new(sink, level).context("setting up the zstd compressor")?;
    enc.include_checksum(true).context("configuring zstd")?;
    enc.include_contentsize(true).context("configuring zstd")?;
    enc.set_pledged_src_size(Some(source_size))
        .context("configuring zstd")?;
    let copied = std::io::copy(&mut src, &mut enc)
        .with_context(|| format!("compressing {} into {}", path.display(), output.display()))?;
    ensure!(
        copied == source_size,
        "{} changed size while it was being compressed",
        path.display()
    );
    let sink = enc
        .finish()
        .with_context(|| format!("compressing {}", path.display()))?;
    let (buffered, digests) = sink
        .finish()
        .with_context(|| format!("writing {}", output.display()))?;
    let out = buffered
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", output.display()))?;
    // Stamped through the descriptor that wrote it: the same inode.
    let stamp = Stamp::of_file(&out, output)?;
    ensure!(
        stamp.size == digests.size,
        "{} has {} bytes after compression, but {} were written",
        output.display(),
        stamp.size,
        digests.size
    );
    Ok(PreparedPayload {
        path: output.to_owned(),
        digests,
        stamp,
        compressed: Compression::Zstd,
        source_size,
    })
}

/// One payload member for [`write_swu_members`]: the bytes at `path`,
/// stored as `name`, which must have `digests`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub path: PathBuf,
    pub digests: Digests,
    /// The version of `path` the digests describe. If the file still has
    /// it, the writer copies the bytes checking only the cpio sum; if not,
    /// or if `None`, it also hashes them and checks the sha256.
    pub stamp: Option<Stamp>,
}

/// Writes the archive: `sw-description`, `sw-description.sig`, then each
/// member in the given order, each payload read exactly once (see the
/// crate docs for how its digests are checked). On an error the output is
/// incomplete and must be discarded.
pub fn write_swu_members<W: Write>(
    out: W,
    sw_description: &[u8],
    signature: &[u8],
    members: &[Member],
) -> Result<W> {
    ensure!(
        !signature.is_empty(),
        "the sw-description signature is empty"
    );
    let mut w = CpioWriter::new(out);
    w.add_bytes(SW_DESCRIPTION, sw_description)?;
    w.add_bytes(SW_DESCRIPTION_SIG, signature)?;
    for m in members {
        add_member(&mut w, m)
            .with_context(|| format!("adding {} as {}", m.path.display(), m.name))?;
    }
    w.finish()
}

/// Copies one member, trusting its digests by stamp when it can.
fn add_member<W: Write>(w: &mut CpioWriter<W>, m: &Member) -> Result<()> {
    let f = File::open(&m.path).with_context(|| format!("opening payload {}", m.path.display()))?;
    copy_member(w, m, &f, &f)
}

/// [`add_member`] on the open payload `f`, whose bytes come from `reader`
/// (`f` itself, or in tests a reader that changes the file mid-copy).
///
/// The copy goes through user space on purpose: `copy_file_range` was
/// measured no faster here (ext4 cannot share extents, so the kernel
/// copies page by page too), and a copy we see lets us sum the bytes
/// against the recorded cpio check at no extra read.
fn copy_member<W: Write>(
    w: &mut CpioWriter<W>,
    m: &Member,
    f: &File,
    reader: impl Read,
) -> Result<()> {
    let now = Stamp::of_file(f, &m.path)?;
    match m.stamp {
        Some(recorded) if recorded == now => {
            w.add_stream(&m.name, m.digests.size, m.digests.cpio_sum, reader)?;
            let after = Stamp::of_file(f, &m.path)?;
            ensure!(
                after == recorded,
                "payload {} changed while it was being copied ({}); the archive is incomplete",
                m.path.display(),
                after.describe_change(&recorded)
            );
            Ok(())
        }
        // Touched, or never stamped: the bytes may still be the digested
        // ones, so check them all, at the cost of one sha256 pass.
        _ => w.add_verified(&m.name, &m.digests, reader),
    }
}

/// The older form of [`write_swu_members`]: each `(member name, file,
/// size, check)` is copied checking size and cpio sum only, with no stamp
/// and no sha256. Kept while callers move to [`Member`].
pub fn write_swu<W: Write>(
    out: W,
    sw_description: &[u8],
    signature: &[u8],
    payloads: &[(String, PathBuf, u64, u32)],
) -> Result<W> {
    ensure!(
        !signature.is_empty(),
        "the sw-description signature is empty"
    );
    let mut w = CpioWriter::new(out);
    w.add_bytes(SW_DESCRIPTION, sw_description)?;
    w.add_bytes(SW_DESCRIPTION_SIG, signature)?;
    for (name, path, size, check) in payloads {
        let f = File::open(path).with_context(|| format!("opening payload {}", path.display()))?;
        w.add_stream(name, *size, *check, f)
            .with_context(|| format!("adding {} as {name}", path.display()))?;
    }
    w.finish()
}

/// What [`read_swu`] found in a verified archive.
#[derive(Debug, Clone)]
pub struct SwuContents {
    /// All members in archive order, `sw-description` and its signature
    /// included.
    pub entries: Vec<CpioEntry>,
    /// sha256 of each member, parallel to `entries`.
    pub sha256: Vec<[u8; 32]>,
    pub sw_description: String,
    pub description: SwDescription,
    pub signature: Vec<u8>,
}

/// Reads and verifies a `.swu` written by [`write_swu`]: valid cpio with
/// correct checksums, `sw-description` first and `sw-description.sig`
/// second, a description our parser accepts, every payload it names present
/// with the same sha256 and size, and no member it does not name.
pub fn read_swu(path: &Path) -> Result<SwuContents> {
    read_swu_authenticated(path, |_, _| Ok(()))
}

/// [`read_swu`] that calls `authenticate(sw_description, signature)` after
/// the container checks and BEFORE sw-description is parsed: untrusted
/// text is not interpreted until its signature has been checked, as
/// SWUpdate itself does.
pub fn read_swu_authenticated(
    path: &Path,
    authenticate: impl FnOnce(&[u8], &[u8]) -> Result<()>,
) -> Result<SwuContents> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    read_swu_from(f, authenticate).with_context(|| format!("reading {}", path.display()))
}

/// [`read_swu_authenticated`] on an open archive (a file or a buffer),
/// from its start. Everything in it is untrusted: names and text reach
/// the error messages escaped. This is also what the `cpio_read` fuzz
/// target drives.
pub fn read_swu_from<R: Read + Seek>(
    mut f: R,
    authenticate: impl FnOnce(&[u8], &[u8]) -> Result<()>,
) -> Result<SwuContents> {
    f.seek(SeekFrom::Start(0))
        .context("seeking to the start of the archive")?;
    let hashed = read_index_with_sha256(&mut f).context("reading the archive as cpio")?;
    let (entries, sha256): (Vec<CpioEntry>, Vec<[u8; 32]>) = hashed.into_iter().unzip();
    let name_at = |i: usize| entries.get(i).map(|e| shown(&e.name));
    ensure!(
        name_at(0).as_deref() == Some(SW_DESCRIPTION),
        "first member must be {SW_DESCRIPTION}, found {}",
        name_at(0).unwrap_or_else(|| "nothing".into())
    );
    ensure!(
        name_at(1).as_deref() == Some(SW_DESCRIPTION_SIG),
        "second member must be {SW_DESCRIPTION_SIG}, found {}",
        name_at(1).unwrap_or_else(|| "nothing".into())
    );
    let text = read_member(&mut f, &entries[0])?;
    let sw_description = String::from_utf8(text).context("sw-description is not UTF-8")?;
    let signature = read_member(&mut f, &entries[1])?;
    ensure!(!signature.is_empty(), "{SW_DESCRIPTION_SIG} is empty");
    authenticate(sw_description.as_bytes(), &signature)?;
    let description = SwDescription::parse(&sw_description)?;

    let index: HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    let mut referenced = vec![false; entries.len()];
    for c in &description.collections {
        for p in &c.payloads {
            // Validated by the parser (cpio name rules), so printable.
            let Some(&i) = index.get(p.filename.as_str()) else {
                bail!(
                    "collection {}.{}: payload {} is not in the archive",
                    c.set,
                    c.mode,
                    p.filename
                );
            };
            ensure!(i >= 2, "payload {} cannot be a metadata member", p.filename);
            ensure!(
                sha256[i] == p.sha256,
                "entry {} ({}): sha256 mismatch: sw-description says {}, data hashes to {}",
                i + 1,
                p.filename,
                hex::encode(p.sha256),
                hex::encode(sha256[i])
            );
            ensure!(
                entries[i].size == p.size,
                "entry {} ({}): size mismatch: sw-description says {}, archive has {}",
                i + 1,
                p.filename,
                p.size,
                entries[i].size
            );
            referenced[i] = true;
        }
    }
    if let Some(i) = (2..entries.len()).find(|&i| !referenced[i]) {
        bail!(
            "entry {} ({}) is not referenced by sw-description",
            i + 1,
            shown(&entries[i].name)
        );
    }
    Ok(SwuContents {
        entries,
        sha256,
        sw_description,
        description,
        signature,
    })
}

fn read_member<R: Read + Seek>(f: &mut R, e: &CpioEntry) -> Result<Vec<u8>> {
    // Only sw-description and its signature come here, whose names were
    // checked by the caller.
    ensure!(
        e.size <= MAX_METADATA,
        "{} is {} bytes, over the {MAX_METADATA}-byte limit",
        e.name,
        e.size
    );
    f.seek(SeekFrom::Start(e.offset))
        .with_context(|| format!("seeking to {}", e.name))?;
    // MAX_METADATA bounds the size, so it fits a usize.
    let mut data = Vec::with_capacity(usize::try_from(e.size).unwrap_or(0));
    f.take(e.size)
        .read_to_end(&mut data)
        .with_context(|| format!("reading {}", e.name))?;
    ensure!(data.len() as u64 == e.size, "{} is truncated", e.name);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    struct Fixture {
        dir: tempfile::TempDir,
        prepared: Vec<(String, PreparedPayload)>,
        desc: SwDescription,
    }

    fn fixture(compression: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut prepared = Vec::new();
        for (i, name) in ["rootfs-b.img", "kernel-b"].iter().enumerate() {
            let src = dir.path().join(format!("{name}.src"));
            let data: Vec<u8> = (0..100_000u32)
                .map(|x| (x * (i as u32 + 3) / 7) as u8)
                .collect();
            fs::write(&src, data).unwrap();
            let how = if compression {
                PayloadCompression::Zstd {
                    level: DEFAULT_ZSTD_LEVEL,
                    output: dir.path().join(format!("{name}.zst")),
                }
            } else {
                PayloadCompression::None
            };
            prepared.push((name.to_string(), prepare_payload(&src, &how).unwrap()));
        }
        let payloads = vec![
            prepared[0].1.payload(
                "rootfs-b.img",
                Target::Raw {
                    device: "/dev/sda3".into(),
                },
            ),
            prepared[1].1.payload(
                "kernel-b",
                Target::File {
                    path: "/boot/b/vmlinuz".into(),
                },
            ),
        ];
        let desc = SwDescription {
            name: "t".into(),
            version: "1.0.0".into(),
            hardware_compatibility: vec!["1.0".into()],
            security_version: None,
            collections: vec![Collection::ab("b", Bootloader::UBoot, payloads).unwrap()],
        };
        Fixture {
            dir,
            prepared,
            desc,
        }
    }

    impl Fixture {
        fn members(&self) -> Vec<Member> {
            self.prepared
                .iter()
                .map(|(n, p)| p.archive_member(n))
                .collect()
        }

        fn write(&self, desc: &str, members: &[Member]) -> PathBuf {
            let path = self.dir.path().join("out.swu");
            let f = File::create(&path).unwrap();
            write_swu_members(f, desc.as_bytes(), b"signature", members).unwrap();
            path
        }

        fn err(&self, path: &Path) -> String {
            format!("{:#}", read_swu(path).unwrap_err())
        }
    }

    #[test]
    fn write_then_read() {
        for zstd in [false, true] {
            let fx = fixture(zstd);
            let text = fx.desc.to_libconfig().unwrap();
            let path = fx.write(&text, &fx.members());
            let c = read_swu(&path).unwrap();
            let names: Vec<_> = c.entries.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "sw-description",
                    "sw-description.sig",
                    "rootfs-b.img",
                    "kernel-b"
                ]
            );
            assert_eq!(c.sw_description, text);
            assert_eq!(c.description, fx.desc);
            assert_eq!(c.signature, b"signature");
            let p = &fx.prepared[0].1;
            assert_eq!(c.sha256[2], p.digests.sha256);
            if zstd {
                assert_eq!(p.compressed, Compression::Zstd);
                let raw = zstd::decode_all(File::open(&p.path).unwrap()).unwrap();
                assert_eq!(
                    raw,
                    fs::read(fx.dir.path().join("rootfs-b.img.src")).unwrap()
                );
                assert!(p.size() < p.source_size);
            }
        }
    }

    #[test]
    fn zstd_refuses_to_overwrite_its_source() {
        let fx = fixture(false);
        let src = fx.dir.path().join("kernel-b.src");
        let how = PayloadCompression::Zstd {
            level: 3,
            output: src.clone(),
        };
        let e = prepare_payload(&src, &how).unwrap_err();
        assert!(e.to_string().contains("is the source itself"), "{e}");
        assert_eq!(fs::metadata(&src).unwrap().len(), 100_000);
    }

    #[test]
    fn zstd_is_reproducible() {
        let a = fixture(true);
        let b = fixture(true);
        assert_eq!(a.prepared[0].1.digests, b.prepared[0].1.digests);
    }

    #[test]
    fn reader_rejects_wrong_order() {
        let fx = fixture(false);
        let path = fx.dir.path().join("order.swu");
        let mut w = CpioWriter::new(File::create(&path).unwrap());
        w.add_bytes("sw-description.sig", b"sig").unwrap();
        w.add_bytes("sw-description", fx.desc.to_libconfig().unwrap().as_bytes())
            .unwrap();
        w.finish().unwrap();
        assert!(fx
            .err(&path)
            .contains("first member must be sw-description, found sw-description.sig"));
    }

    #[test]
    fn reader_rejects_bad_checksum() {
        let fx = fixture(false);
        let path = fx.write(&fx.desc.to_libconfig().unwrap(), &fx.members());
        let c = read_swu(&path).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[c.entries[3].offset as usize + 10] ^= 0x01;
        fs::write(&path, bytes).unwrap();
        let e = fx.err(&path);
        assert!(
            e.contains("entry 4 (kernel-b): cpio checksum mismatch: header says 0x"),
            "{e}"
        );
    }

    #[test]
    fn reader_rejects_sha256_and_size_mismatch() {
        let fx = fixture(false);
        let mut d = fx.desc.clone();
        d.collections[0].payloads[0].sha256[0] ^= 0xff;
        let path = fx.write(&d.to_libconfig().unwrap(), &fx.members());
        let e = fx.err(&path);
        assert!(
            e.contains("entry 3 (rootfs-b.img): sha256 mismatch: sw-description says "),
            "{e}"
        );

        let mut d = fx.desc.clone();
        d.collections[0].payloads[1].size += 1;
        let path = fx.write(&d.to_libconfig().unwrap(), &fx.members());
        assert!(fx.err(&path).contains("size mismatch"));
    }

    #[test]
    fn reader_rejects_missing_and_unreferenced_payloads() {
        let fx = fixture(false);
        let text = fx.desc.to_libconfig().unwrap();
        let path = fx.write(&text, &fx.members()[..1]);
        let e = fx.err(&path);
        assert!(
            e.contains("collection stable.copy2: payload kernel-b is not in the archive"),
            "{e}"
        );

        let mut members = fx.members();
        let mut extra = members[1].clone();
        extra.name = "stray".into();
        members.push(extra);
        let path = fx.write(&text, &members);
        assert!(fx
            .err(&path)
            .contains("entry 5 (stray) is not referenced by sw-description"));
    }

    /// The older tuple form still writes the same archive.
    #[test]
    fn tuple_members_write_the_same_bytes() {
        let fx = fixture(false);
        let text = fx.desc.to_libconfig().unwrap();
        let tuples: Vec<_> = fx.prepared.iter().map(|(n, p)| p.member(n)).collect();
        let old = write_swu(Vec::new(), text.as_bytes(), b"signature", &tuples).unwrap();
        let new = fs::read(fx.write(&text, &fx.members())).unwrap();
        assert_eq!(old, new);
    }

    /// Digests computed while the file was written: the payload is read
    /// only by the archive writer, and the archive is the one
    /// `prepare_payload` would have given.
    #[test]
    fn known_digests_give_the_same_archive() {
        let fx = fixture(false);
        let text = fx.desc.to_libconfig().unwrap();
        let members: Vec<Member> = fx
            .prepared
            .iter()
            .map(|(n, p)| {
                let mut w = DigestWriter::new(Vec::new());
                w.write_all(&fs::read(&p.path).unwrap()).unwrap();
                let (bytes, d) = w.finish().unwrap();
                let copy = fx.dir.path().join(format!("{n}.written"));
                fs::write(&copy, bytes).unwrap();
                let stamp = Stamp::of_path(&copy).unwrap();
                let known = PreparedPayload::from_digests(&copy, d, stamp).unwrap();
                assert_eq!(known.digests, p.digests);
                known.archive_member(n)
            })
            .collect();
        let a = write_swu_members(Vec::new(), text.as_bytes(), b"signature", &members).unwrap();
        assert_eq!(a, fs::read(fx.write(&text, &fx.members())).unwrap());

        let stamp = members[0].stamp.unwrap();
        let e = PreparedPayload::from_digests(&members[0].path, Digests::of_bytes(b"x"), stamp)
            .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("had 100000 bytes when stamped, but its digests describe 1"),
            "{e}"
        );
        let dir = Stamp::of_path(fx.dir.path()).unwrap();
        let e = PreparedPayload::from_digests(fx.dir.path(), members[0].digests, dir).unwrap_err();
        assert!(e.to_string().ends_with("is not a regular file"), "{e}");
    }

    /// Every way a payload can differ from its digests at write time is an
    /// error naming the member, and the writer refuses to finish: new
    /// bytes of the same length and the same byte sum (two bytes swapped,
    /// caught by the stamp and then the sha256), a different length, a
    /// replaced file, and digests given without a stamp. A file whose stamp
    /// changed but whose bytes did not (`touch`) is still accepted, after a
    /// full check.
    #[test]
    fn writer_rejects_a_changed_payload() {
        let tick = || std::thread::sleep(std::time::Duration::from_millis(20));
        /// What is done to the payload, how, and the error it must give.
        type Case = (&'static str, fn(&Path), &'static str);
        let cases: [Case; 4] = [
            (
                "swap",
                |p| {
                    let mut d = fs::read(p).unwrap();
                    d.swap(1, 2);
                    fs::write(p, d).unwrap();
                },
                "data hashes to sha256 ",
            ),
            (
                "append",
                |p| {
                    let mut d = fs::read(p).unwrap();
                    d.push(0);
                    fs::write(p, d).unwrap();
                },
                "source is longer than the 100000 bytes",
            ),
            (
                "replace",
                |p| {
                    let mut d = fs::read(p).unwrap();
                    d[0] = d[0].wrapping_add(1);
                    let tmp = p.with_extension("new");
                    fs::write(&tmp, d).unwrap();
                    fs::rename(tmp, p).unwrap();
                },
                "data sums to ",
            ),
            (
                "touch",
                |p| {
                    let f = File::options().append(true).open(p).unwrap();
                    f.set_modified(std::time::SystemTime::now()).unwrap();
                },
                "",
            ),
        ];
        for (what, change, msg) in cases {
            let fx = fixture(false);
            let text = fx.desc.to_libconfig().unwrap();
            let (_, p) = &fx.prepared[1];
            assert_ne!(fs::read(&p.path).unwrap()[1], fs::read(&p.path).unwrap()[2]);
            tick();
            change(&p.path);
            let r = write_swu_members(Vec::new(), text.as_bytes(), b"signature", &fx.members());
            if msg.is_empty() {
                let a = r.unwrap();
                let stamp = Stamp::of_path(&p.path).unwrap();
                assert_ne!(stamp, p.stamp, "{what} must change the stamp");
                assert!(
                    a == fs::read(fx.write(&text, &fx.members())).unwrap(),
                    "{what}"
                );
                continue;
            }
            let e = format!("{:#}", r.unwrap_err());
            assert!(e.starts_with("adding "), "{what}: {e}");
            assert!(
                e.contains(" as kernel-b: cpio entry kernel-b: "),
                "{what}: {e}"
            );
            assert!(e.contains(msg), "{what}: {e}");
            assert!(
                e.contains("the source changed since it was hashed")
                    || e.contains("than the 100000 bytes it had when it was hashed"),
                "{what}: {e}"
            );
        }
        // No stamp: always the full check, which sees the swap too.
        let fx = fixture(false);
        let mut members = fx.members();
        members[1].stamp = None;
        let mut d = fs::read(&members[1].path).unwrap();
        d.swap(1, 2);
        fs::write(&members[1].path, d).unwrap();
        let e = write_swu_members(Vec::new(), b"d", b"s", &members).unwrap_err();
        assert!(format!("{e:#}").contains("data hashes to sha256 "), "{e:#}");
    }

    /// Digests and stamp recorded when the file was written, then the file
    /// changes before the update stage prepares it: the stamp from digest
    /// time, not one taken at preparation, is what the writer compares,
    /// so the change is caught (here by the sha256, as the sum is equal).
    #[test]
    fn a_change_before_preparation_is_caught() {
        let fx = fixture(false);
        let path = fx.dir.path().join("artifact");
        let mut w = DigestWriter::new(File::create(&path).unwrap());
        w.write_all(b"0123456789").unwrap();
        let (f, d) = w.finish().unwrap();
        let stamp = Stamp::of_file(&f, &path).unwrap();
        drop(f);
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&path, b"1023456789").unwrap();
        let p = PreparedPayload::from_digests(&path, d, stamp).unwrap();
        let e = write_swu_members(Vec::new(), b"d", b"s", &[p.archive_member("a")]).unwrap_err();
        assert!(format!("{e:#}").contains("data hashes to sha256 "), "{e:#}");
    }

    /// A payload rewritten with the same bytes while it is being copied:
    /// the byte sum still matches, the stamp taken after the copy does not.
    #[test]
    fn writer_rejects_a_payload_changed_during_the_copy() {
        struct RewriteFirst<'a> {
            f: &'a File,
            path: &'a Path,
            done: bool,
        }
        impl Read for RewriteFirst<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if !self.done {
                    self.done = true;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    fs::write(self.path, fs::read(self.path)?)?;
                }
                (&mut self.f).read(buf)
            }
        }
        let fx = fixture(false);
        let m = &fx.members()[1];
        let f = File::open(&m.path).unwrap();
        let mut w = CpioWriter::new(Vec::new());
        let reader = RewriteFirst {
            f: &f,
            path: &m.path,
            done: false,
        };
        let e = copy_member(&mut w, m, &f, reader).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "changed while it was being copied (modification time, change time); the archive is incomplete"
            ),
            "{e}"
        );
    }

    /// The older tuple form checks size and sum only, as before.
    #[test]
    fn tuple_writer_rejects_a_changed_payload() {
        let fx = fixture(false);
        let (_, p) = &fx.prepared[1];
        let mut data = fs::read(&p.path).unwrap();
        data[0] = data[0].wrapping_add(1);
        fs::write(&p.path, &data).unwrap();
        let tuples: Vec<_> = fx.prepared.iter().map(|(n, p)| p.member(n)).collect();
        let e = write_swu(Vec::new(), b"d", b"s", &tuples).unwrap_err();
        assert!(
            format!("{e:#}").contains("the source changed since it was hashed"),
            "{e:#}"
        );
    }
}
