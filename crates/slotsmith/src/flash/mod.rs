//! `cargo xtask flash IMAGE DEVICE`: writes a golden image to a device for
//! manufacturing, and records what it did.
//!
//! The order is the safety argument. Before the device is touched: the
//! manufacturing log is opened (a station that cannot record must not
//! flash), the bmap and `SHA256SUMS` are read and the bmap checked against
//! it, the device passes every refusal in [`device`] and is opened
//! exclusively, and the image is checked on all cores at once: every
//! mapped range against the bmap's sha256, every byte outside the ranges
//! zero (so every byte the device gets is the one the bmap, listed in
//! `SHA256SUMS`, describes), and its signed manifests against the boot key
//! the operator names. Only then are the ranges written ([`write`]): those
//! kept in memory by the check as they were checked, the rest checked
//! again as they are written. Then the device is synced and every range
//! read back (with `O_DIRECT` from the device itself where it takes it)
//! and compared. Meanwhile the whole image's sha256 is computed on a core
//! the device leaves idle and must be the one `SHA256SUMS` lists: the log
//! records that computed hash, and a release directory whose two lines
//! disagree fails the flash. Each attempt, refused, failed or ok, appends
//! one JSON line to the log, fsynced.
//!
//! Last, the signed manifests are verified again on the device as
//! written: the check before writing read the image file, and a file that
//! served other bytes to another read (a hostile file server, a writer
//! racing the flash) cannot end `ok` with slots or boot files on the
//! device other than the signed ones. (The data partition is not signed;
//! the bmap and `SHA256SUMS` bind it, as they bind the whole image.)
//!
//! `SHA256SUMS` is not signed; the manifests are. The sums bind the image
//! and its bmap to the build, the manifests bind the slots and boot files
//! inside the image to the boot key, which is why that key must come from
//! the operator and never from beside the image.

pub mod bmap;
pub mod device;
mod memory;
mod meter;
pub mod write;

use std::fs::File;
use std::io::{Read, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, format_err, Context, Result};
use rustix::fs::{Mode, OFlags};
use serde::Serialize;
use slotsmith_yaml::escape::shown;

pub use device::System;
use memory::memory_budget;
use meter::Meter;

/// Largest `SHA256SUMS` read.
const MAX_SUMS: u64 = 1 << 20;

/// What to flash where.
#[derive(Debug, Clone)]
pub struct FlashOptions {
    /// The golden image (`out/<name>/<name>.img`).
    pub image: PathBuf,
    /// The device, or a file with `allow_file`.
    pub device: PathBuf,
    /// Write a regular file (created when missing, sized to the image).
    pub allow_file: bool,
    /// The manufacturing log [default: [`default_log`]].
    pub log: Option<PathBuf>,
    /// The boot public key the manifests must verify with. There is no
    /// default: a key read beside the image proves nothing, since whoever
    /// could replace the image could replace the key too.
    pub boot_key: Option<PathBuf>,
    /// Bytes of checked image kept in memory and written from there
    /// [default: half the available memory, at most 8 GiB].
    pub memory: Option<u64>,
    /// Verify the signed manifests. Only `bench flash` on a synthesized
    /// image (which has none) turns this off; the CLI never does.
    pub check_manifests: bool,
    /// No progress lines.
    pub quiet: bool,
}

/// One line of the manufacturing log.
#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    /// When the attempt started, RFC 3339 UTC.
    pub time: String,
    /// Image name (from the signed manifest once verified, else the file name).
    pub image: String,
    /// Image version from the signed manifest (`null` when not verified).
    pub version: Option<String>,
    /// The image file as given.
    pub image_file: String,
    /// sha256 of the whole image, computed while the device is written
    /// (`null` when the flash stopped before writing, or the hashing
    /// failed).
    pub image_sha256: Option<String>,
    /// The device as given.
    pub device: String,
    /// The device's serial, where the kernel or udev reports one.
    pub serial: Option<String>,
    /// Fingerprint of the boot key the manifests verified with (`null`
    /// when not verified).
    pub boot_key: Option<String>,
    /// `direct` (O_DIRECT: written past the page cache, read back from
    /// the device) or `buffered`; empty when nothing was written.
    pub io: String,
    /// Device size in bytes (`null` when not known).
    pub size: Option<u64>,
    /// Bytes written.
    pub bytes_written: u64,
    /// Seconds from start to the end of the read-back.
    pub seconds: f64,
    /// Written bytes per second over `seconds`, in MiB.
    pub mib_per_s: f64,
    /// `ok`, `refused` (nothing written) or `failed`.
    pub result: String,
    /// Why, when not ok.
    pub reason: Option<String>,
}

/// How an attempt stopped: before any write, or after.
enum Stop {
    Refused(anyhow::Error),
    Failed(anyhow::Error),
}

/// A device that passed the checks, shown to the operator before writing.
#[derive(Debug, Clone)]
pub struct Target {
    /// The device as given, escaped.
    pub device: String,
    /// Kernel name and serial, for the confirmation.
    pub description: String,
    /// A block device (not a file given with `--allow-file`).
    pub block: bool,
}

/// Flashes, logs the attempt and returns the log line; an error (also
/// logged, unless the log itself failed) names the device. `confirm` is
/// asked once the device passed every check, before the image is hashed.
pub fn flash(
    opts: &FlashOptions,
    sys: &System,
    confirm: &mut dyn FnMut(&Target) -> bool,
) -> Result<LogRecord> {
    let start = Instant::now();
    let dev_shown = shown(&opts.device.to_string_lossy());
    let log_path = match &opts.log {
        Some(p) => p.clone(),
        None => default_log()?,
    };
    let mut log = open_log(&log_path)?;
    let file_name = opts
        .image
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut rec = LogRecord {
        time: slotsmith_disk::time::rfc3339(now()),
        image: file_name
            .strip_suffix(".img")
            .unwrap_or(&file_name)
            .to_string(),
        version: None,
        image_file: opts.image.to_string_lossy().into_owned(),
        image_sha256: None,
        device: opts.device.to_string_lossy().into_owned(),
        serial: None,
        boot_key: None,
        io: String::new(),
        size: None,
        bytes_written: 0,
        seconds: 0.0,
        mib_per_s: 0.0,
        result: "ok".into(),
        reason: None,
    };
    let log_id = log
        .metadata()
        .map(|m| (m.dev(), m.ino()))
        .with_context(|| format!("stat the flash log {}", shown(&log_path.to_string_lossy())))?;
    let outcome = run(opts, sys, &mut rec, confirm, start, log_id);
    rec.seconds = (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    if rec.seconds > 0.0 {
        rec.mib_per_s = (rec.bytes_written as f64 / 1048576.0 / rec.seconds * 10.0).round() / 10.0;
    }
    let err = match outcome {
        Ok(()) => None,
        Err(Stop::Refused(e)) => {
            rec.result = "refused".into();
            Some(e.context(format!("refusing to flash {dev_shown}")))
        }
        Err(Stop::Failed(e)) => {
            rec.result = "failed".into();
            Some(e.context(format!("flashing {dev_shown} failed")))
        }
    };
    if let Some(e) = &err {
        rec.reason = Some(format!("{e:#}"));
    }
    let mut line = serde_json::to_vec(&rec).context("serialising the log line")?;
    line.push(b'\n');
    // One write of the whole line on an O_APPEND file, then fsync: a
    // station that loses power keeps every line it reported.
    log.write_all(&line)
        .and_then(|()| log.sync_data())
        .with_context(|| {
            format!(
                "appending to the flash log {}",
                shown(&log_path.to_string_lossy())
            )
        })?;
    match err {
        Some(e) => Err(e),
        None => Ok(rec),
    }
}

/// The manufacturing log when none is named: in the user's state
/// directory (`$XDG_STATE_HOME/slotsmith/`, else
/// `~/.local/state/slotsmith/`), never in `out/`, which the next build
/// replaces.
pub fn default_log() -> Result<PathBuf> {
    let base =
        match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty()).context(
                "no HOME or XDG_STATE_HOME for the flash log: name one with --log FILE",
            )?)
            .join(".local/state"),
        };
    let dir = base.join("slotsmith");
    std::fs::create_dir_all(&dir).with_context(|| {
        format!(
            "creating the flash log's directory {}",
            shown(&dir.to_string_lossy())
        )
    })?;
    Ok(dir.join("flash-log.jsonl"))
}

fn open_log(path: &Path) -> Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .with_context(|| {
        format!(
            "opening the flash log {} (never through a symlink)",
            shown(&path.to_string_lossy())
        )
    })?;
    let f = File::from(fd);
    ensure!(
        f.metadata()?.is_file(),
        "the flash log {} is not a regular file",
        shown(&path.to_string_lossy())
    );
    Ok(f)
}

fn refused<T>(r: Result<T>) -> Result<T, Stop> {
    r.map_err(Stop::Refused)
}

fn run(
    opts: &FlashOptions,
    sys: &System,
    rec: &mut LogRecord,
    confirm: &mut dyn FnMut(&Target) -> bool,
    start: Instant,
    log_id: (u64, u64),
) -> Result<(), Stop> {
    let dir = opts.image.parent().unwrap_or(Path::new("."));
    let img_name = opts
        .image
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let img_shown = shown(&opts.image.to_string_lossy());

    // The image, its sums and its bmap: read and parsed, nothing hashed yet.
    let image = refused(open_regular(&opts.image, "image"))?;
    let image_size = refused(
        image
            .metadata()
            .with_context(|| format!("image {img_shown}: stat")),
    )?
    .len();
    let sums = refused(read_sums(&dir.join("SHA256SUMS")))?;
    let want = |name: &str| {
        sums.iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
            .with_context(|| {
                format!(
                    "{} lists no {}",
                    shown(&dir.join("SHA256SUMS").to_string_lossy()),
                    shown(name)
                )
            })
    };
    let image_sum = refused(want(&img_name))?;
    let bmap_name = format!("{img_name}.bmap");
    let bmap_path = dir.join(&bmap_name);
    let bmap_bytes = refused(read_capped(&bmap_path, bmap::MAX_BMAP_BYTES))?;
    let bmap_sum: [u8; 32] =
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bmap_bytes)).into();
    if bmap_sum != refused(want(&bmap_name))? {
        return Err(Stop::Refused(format_err!(
            "bmap {}: sha256 {} is not the one SHA256SUMS lists",
            shown(&bmap_path.to_string_lossy()),
            hex::encode(bmap_sum)
        )));
    }
    let bmap = refused(bmap::parse(
        &bmap_bytes,
        &shown(&bmap_path.to_string_lossy()),
    ))?;
    if bmap.image_size != image_size {
        return Err(Stop::Refused(format_err!(
            "image {img_shown} is {image_size} bytes, its bmap says {}",
            bmap.image_size
        )));
    }
    let key = if opts.check_manifests {
        let path = refused(opts.boot_key.clone().context(
            "no boot key: name the release's boot public key (--boot-key PUB); a key \
             beside the image proves nothing, whoever replaced the image could replace it too",
        ))?;
        let k = refused(
            slotsmith_sign::load_verifying_key(&path)
                .with_context(|| format!("loading boot key {}", shown(&path.to_string_lossy()))),
        )?;
        rec.boot_key = Some(slotsmith_sign::keys::fingerprint(&k));
        Some(k)
    } else {
        None
    };

    // The device: every refusal, then an exclusive open.
    let kind = refused(device::classify(&opts.device, opts.allow_file))?;
    let dev_shown = shown(&opts.device.to_string_lossy());
    let (dest, description) = match &kind {
        device::Kind::Block { path, rdev } => {
            let info = refused(device::check_block(sys, &dev_shown, *rdev))?;
            let f = refused(open_block(path, *rdev, &dev_shown))?;
            // The kernel's size of the open device, not a path's.
            let size = refused(
                rustix::fs::seek(&f, rustix::fs::SeekFrom::End(0))
                    .map_err(std::io::Error::from)
                    .with_context(|| format!("{dev_shown}: finding its size")),
            )?;
            rec.size = Some(size);
            rec.serial = info.serial.clone();
            refused(fits(&dev_shown, size, image_size))?;
            let serial = info
                .serial
                .as_deref()
                .map(|s| format!(", serial {}", shown(s)))
                .unwrap_or_default();
            (
                Some(f),
                format!(
                    "{} ({}, {}{serial})",
                    dev_shown,
                    info.name,
                    crate::load::human(size)
                ),
            )
        }
        device::Kind::File { path } => {
            // Opened (and created) only once the image checked out, so a
            // refusal leaves no trace.
            let _ = path;
            rec.size = Some(image_size);
            (None, format!("{dev_shown} (a regular file)"))
        }
    };
    if !confirm(&Target {
        device: dev_shown.clone(),
        description,
        block: matches!(kind, device::Kind::Block { .. }),
    }) {
        return Err(Stop::Refused(format_err!("not confirmed")));
    }

    // The image, before anything is written: every mapped range against
    // the bmap (whose sha256 SHA256SUMS lists) on all cores, every byte
    // outside them zero, and the signed manifests, at once. Together the
    // first two fix every byte of the image, so it is the one SHA256SUMS
    // lists without hashing it as one stream on one core.
    let mut meter = Meter::new(opts.quiet);
    meter.line(&format!(
        "checking {img_shown} against its bmap, SHA256SUMS and its signed manifests"
    ));
    let second = refused(open_regular(&opts.image, "image"))?;
    refused(same_file(&image, &second, &img_shown))?;
    let budget = opts.memory.unwrap_or_else(|| memory_budget(sys));
    let total = bmap.mapped_bytes();
    meter.start("checking", total);
    let (checked, outside, report) = std::thread::scope(|s| {
        let verify = s.spawn(|| match &key {
            Some(k) => crate::verify::verify_image_file(&second, &img_shown, k).map(Some),
            None => Ok(None),
        });
        let outside = s.spawn(|| {
            let mapped: Vec<(u64, u64)> = bmap.ranges.iter().map(|r| (r.start, r.end)).collect();
            slotsmith_disk::bmap::first_nonzero_outside(&image, image_size, &mapped)
        });
        let checked = write::check(&image, &bmap, budget, &mut |n| meter.tick(n));
        (checked, joined(outside.join()), joined(verify.join()))
    });
    let checked = refused(checked.with_context(|| {
        format!("image {img_shown} is not the one its bmap and SHA256SUMS describe")
    }))?;
    if let Some(at) = refused(outside.with_context(|| format!("reading {img_shown}")))? {
        return Err(Stop::Refused(format_err!(
            "image {img_shown}: byte {at} lies outside every range of its bmap and is not \
             zero; it is not the image SHA256SUMS lists (a built image is zero there)"
        )));
    }
    if let Some(report) =
        refused(report.with_context(|| format!("image {img_shown} does not verify")))?
    {
        if let Some(slot) = report.slots.first() {
            rec.image = slot.image.clone();
            rec.version = Some(slot.version.clone());
        }
    }

    // Write, sync, read back. A file is sized like the image, as bmaptool
    // does (unmapped ranges read as holes).
    let dest = match (dest, &kind) {
        (Some(f), _) => f,
        (None, device::Kind::File { path }) => {
            let f = open_file(path, &dev_shown).map_err(Stop::Refused)?;
            // `same_file` fails when they differ; the image itself would be
            // truncated and rewritten from itself.
            if same_file(&image, &f, &img_shown).is_ok() {
                return Err(Stop::Refused(format_err!(
                    "{dev_shown} is the image itself"
                )));
            }
            let md = f
                .metadata()
                .with_context(|| format!("{dev_shown}: stat"))
                .map_err(Stop::Refused)?;
            let same = |p: &Path| {
                std::fs::metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == (md.dev(), md.ino()))
            };
            if (md.dev(), md.ino()) == log_id
                || same(&dir.join("SHA256SUMS"))
                || same(&bmap_path)
                || opts.boot_key.as_deref().is_some_and(same)
            {
                return Err(Stop::Refused(format_err!(
                    "{dev_shown} is the flash log, the bmap, SHA256SUMS or the boot key"
                )));
            }
            f.set_len(image_size)
                .with_context(|| format!("{dev_shown}: setting its size"))
                .map_err(Stop::Failed)?;
            f
        }
        // A block device is opened when it is checked.
        (None, device::Kind::Block { .. }) => {
            return Err(Stop::Refused(format_err!("{dev_shown} was not opened")))
        }
    };
    let direct = direct_io(&dest, &bmap)
        .with_context(|| format!("{dev_shown}: turning O_DIRECT off again"))
        .map_err(Stop::Refused)?;
    rec.io = if direct { "direct" } else { "buffered" }.into();
    let write_start = Instant::now();
    let (mut write_secs, mut back_secs, mut verify_secs) = (0.0, 0.0, 0.0);
    let mut written = 0u64;
    // The whole image's sha256 is computed meanwhile, on a core the
    // device leaves idle: the log records a hash that was computed, never
    // one copied from SHA256SUMS, and a SHA256SUMS whose image line
    // disagrees with its bmap line (an edited release directory) fails
    // the flash even though the device holds what the bmap describes.
    let (body, whole) = std::thread::scope(|s| {
        let whole = s.spawn(|| slotsmith_disk::bmap::sha256_file_sparse(&image));
        let body = (|| -> Result<(), Stop> {
            meter.start("writing", total);
            let mut done = 0u64;
            let wrote = write::write(&image, &dest, &bmap, &checked, &mut |n| {
                done = n;
                meter.tick(n)
            });
            rec.bytes_written = done;
            written = wrote.map_err(Stop::Failed)?;
            rec.bytes_written = written;
            dest.sync_all()
                .with_context(|| format!("{dev_shown}: fsync"))
                .map_err(Stop::Failed)?;
            write_secs = write_start.elapsed().as_secs_f64();
            // With O_DIRECT the read-back reads the device. The cache is
            // dropped in any case: a file system may take O_DIRECT and
            // still serve reads from its cache.
            let _ = rustix::fs::fadvise(&dest, 0, None, rustix::fs::Advice::DontNeed);
            meter.start("reading back", total);
            let back_start = Instant::now();
            write::read_back(&dest, &bmap, &checked, &mut |n| meter.tick(n))
                .map_err(Stop::Failed)?;
            back_secs = back_start.elapsed().as_secs_f64();
            // The signed manifests once more, now on the device as written
            // (while the image's sha256 is still being computed): the check
            // before writing read the image file, and a file that served
            // other bytes to another read (a hostile file server, a writer
            // racing the flash) would otherwise pass signed manifests to
            // one read and other slots or boot files to the device.
            // Buffered reads, the cache dropped: the device answers.
            if let Some(k) = &key {
                let verify_start = Instant::now();
                if direct {
                    let flags = rustix::fs::fcntl_getfl(&dest)
                        .map_err(std::io::Error::from)
                        .with_context(|| format!("{dev_shown}: fcntl"))
                        .map_err(Stop::Failed)?;
                    rustix::fs::fcntl_setfl(&dest, flags - OFlags::DIRECT)
                        .map_err(std::io::Error::from)
                        .with_context(|| format!("{dev_shown}: fcntl"))
                        .map_err(Stop::Failed)?;
                }
                let _ = rustix::fs::fadvise(&dest, 0, None, rustix::fs::Advice::DontNeed);
                crate::verify::verify_image_within(&dest, Some(image_size), &dev_shown, k)
                    .with_context(|| format!("{dev_shown} as written does not verify"))
                    .map_err(Stop::Failed)?;
                verify_secs = verify_start.elapsed().as_secs_f64();
            }
            Ok(())
        })();
        // Always joined here, so a panic in the hashing thread is an
        // error in the log, never a panic out of the scope.
        (body, joined(whole.join()))
    });
    // The hash is recorded whenever it was computed, even when the flash
    // failed: the device was written from this image.
    if let Ok(h) = &whole {
        rec.image_sha256 = Some(hex::encode(h));
    }
    body?;
    let whole = whole
        .with_context(|| format!("hashing {img_shown}"))
        .map_err(Stop::Failed)?;
    if whole != image_sum {
        return Err(Stop::Failed(format_err!(
            "image {img_shown}: sha256 {} is not the one SHA256SUMS lists ({}); the device \
             holds what the bmap describes, but the release directory disagrees with itself: \
             do not ship this device",
            hex::encode(whole),
            hex::encode(image_sum)
        )));
    }
    let secs = start.elapsed().as_secs_f64();
    meter.line(&format!(
        "flashed {} of {} to {} ({} I/O): checked in {:.1}s, written and synced in {:.1}s \
         ({:.1} MiB/s), read back and compared in {:.1}s, manifests verified on it in {:.1}s; \
         {:.1}s in all",
        crate::load::human(written),
        crate::load::human(image_size),
        dev_shown,
        rec.io,
        write_start.duration_since(start).as_secs_f64(),
        write_secs,
        written as f64 / 1048576.0 / write_secs.max(1e-9),
        back_secs,
        verify_secs,
        secs
    ));
    Ok(())
}

/// A checking thread's result; a panic is an error.
fn joined<T>(r: std::thread::Result<Result<T>>) -> Result<T> {
    r.map_err(|_| format_err!("a checking thread panicked"))
        .and_then(|r| r)
}

/// Turns on `O_DIRECT` for `dest` when every range is aligned for it and
/// the device or file system takes it: the writes skip the page cache and
/// the read-back then reads the device itself. Otherwise buffered I/O,
/// with the cache dropped before the read-back.
fn direct_io(dest: &File, bmap: &bmap::Bmap) -> Result<bool> {
    let align = write::ALIGN as u64;
    if !bmap
        .ranges
        .iter()
        .all(|r| r.start % align == 0 && r.end % align == 0)
    {
        return Ok(false);
    }
    let Ok(flags) = rustix::fs::fcntl_getfl(dest) else {
        return Ok(false);
    };
    if rustix::fs::fcntl_setfl(dest, flags | OFlags::DIRECT).is_err() {
        return Ok(false);
    }
    // Some file systems take the flag and fail the I/O: one aligned read
    // decides, and buffered I/O it is when that fails. (One that reads
    // but does not write with O_DIRECT fails the write, clearly.)
    let mut probe = write::Aligned::new(write::ALIGN);
    if write::ReadAt::read_exact_at(dest, probe.bytes_mut(), 0).is_ok() {
        return Ok(true);
    }
    // The flags must come back: a descriptor left in O_DIRECT would be
    // logged and treated as buffered.
    rustix::fs::fcntl_setfl(dest, flags).map_err(std::io::Error::from)?;
    Ok(false)
}

/// The device must hold the whole image.
fn fits(dev: &str, size: u64, image_size: u64) -> Result<()> {
    ensure!(
        size >= image_size,
        "{dev} is smaller than the image: {size} bytes < {image_size} bytes"
    );
    Ok(())
}

fn open_regular(path: &Path, what: &str) -> Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("opening {what} {}", shown(&path.to_string_lossy())))?;
    let f = File::from(fd);
    ensure!(
        f.metadata()?.is_file(),
        "{what} {} is not a regular file",
        shown(&path.to_string_lossy())
    );
    Ok(f)
}

fn same_file(a: &File, b: &File, name: &str) -> Result<()> {
    let (x, y) = (a.metadata()?, b.metadata()?);
    ensure!(
        x.dev() == y.dev() && x.ino() == y.ino(),
        "image {name} was replaced while it was opened"
    );
    Ok(())
}

fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let f = open_regular(path, "file")?;
    let mut out = Vec::new();
    f.take(cap + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("reading {}", shown(&path.to_string_lossy())))?;
    ensure!(
        out.len() as u64 <= cap,
        "{} is larger than {cap} bytes",
        shown(&path.to_string_lossy())
    );
    Ok(out)
}

/// `SHA256SUMS` lines: `<64 hex>  <name>` (sha256sum's text mode, as the
/// build writes it). Any other line is an error naming it.
fn read_sums(path: &Path) -> Result<Vec<(String, [u8; 32])>> {
    let text = String::from_utf8(read_capped(path, MAX_SUMS)?)
        .with_context(|| format!("{} is not UTF-8", shown(&path.to_string_lossy())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut sum = [0u8; 32];
        match line.split_once("  ") {
            Some((h, name))
                if h.len() == 64
                    && hex::decode_to_slice(h, &mut sum).is_ok()
                    && !name.is_empty() =>
            {
                out.push((name.to_string(), sum))
            }
            _ => bail!(
                "{} line {}: not '<sha256>  <file>': '{}'",
                shown(&path.to_string_lossy()),
                i + 1,
                shown(line)
            ),
        }
    }
    Ok(out)
}

/// Opens a block device for writing and reading back: `O_EXCL` makes the
/// kernel refuse it while mounted or claimed; `O_NOFOLLOW` refuses a
/// symlink swapped in since it was checked; and it must still be the
/// device number the checks saw.
fn open_block(path: &Path, rdev: (u32, u32), dev: &str) -> Result<File> {
    let fd = match rustix::fs::open(path, OFlags::RDWR | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::BUSY) => bail!(
            "{dev} is in use: the kernel refused to open it exclusively (mounted, or held by another program)"
        ),
        Err(e) => return Err(std::io::Error::from(e)).with_context(|| format!("opening {dev}")),
    };
    let f = File::from(fd);
    let md = f.metadata()?;
    use std::os::unix::fs::FileTypeExt;
    ensure!(
        md.file_type().is_block_device()
            && (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev())) == rdev,
        "{dev} changed while it was checked"
    );
    Ok(f)
}

fn open_file(path: &Path, dev: &str) -> Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::from_raw_mode(0o644),
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("opening {dev}"))?;
    let f = File::from(fd);
    ensure!(f.metadata()?.is_file(), "{dev} is not a regular file");
    Ok(f)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
