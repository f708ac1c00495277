//! `cargo xtask bench flash`: our `flash` against `bmaptool copy` (Debian's
//! bmap-tools) on the same image, to loop devices when run as root with
//! `losetup`, else to files.
//!
//! The image is a built one (`--image out/<name>/<name>.img`, with its
//! bmap, `SHA256SUMS` and `boot.pub.pem` beside it: the whole check,
//! signed manifests included) or, by default, a synthesized sparse image
//! laid out like a golden image (GPT, ESP, two filled slots, an empty data
//! partition) with the bmap our build writes and a `SHA256SUMS`; it has no
//! signed manifests, so that check is left out and the output says so.
//!
//! What each side does, timed from start to exit: ours checks the bmap
//! against `SHA256SUMS`, every mapped range of the image against the bmap
//! and every other byte for zero (and verifies the manifests) before it
//! writes anything, checks the device, writes the mapped ranges, fsyncs,
//! reads every range back from the device and compares, verifies the
//! manifests again on the device, and hashes the whole image meanwhile
//! against `SHA256SUMS`; bmaptool
//! checks each range's sha256 while copying and fsyncs. The best of
//! [`ROUNDS`] is reported: the machine is shared.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use slotsmith::tool::Tool;

/// Rounds of each contestant.
const ROUNDS: usize = 5;

/// A loop device attached for the bench, detached when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        if let Ok(t) = Tool::new("losetup") {
            let _ = t.args(["-d", &self.0]).run();
        }
    }
}

fn attach(backing: &Path) -> anyhow::Result<Loop> {
    let out = Tool::new("losetup")?
        .args(["-f", "--show"])
        .arg(backing)
        .run()?;
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    anyhow::ensure!(dev.starts_with("/dev/loop"), "losetup printed '{dev}'");
    Ok(Loop(dev))
}

/// Writes a sparse image of `size` bytes with data where a golden image
/// has it, its bmap and `SHA256SUMS`; returns the image path.
fn synthesize(dir: &Path, size: u64) -> anyhow::Result<PathBuf> {
    let mib = 1u64 << 20;
    let size = size.max(64 * mib) / mib * mib;
    let img = dir.join("bench.img");
    let mut f = fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&img)?;
    f.set_len(size)?;
    // GPT and the ESP's used part, slot a and slot b filled to 40% each,
    // the data partition empty but for its superblocks, the backup GPT.
    let slot = size * 2 / 5;
    let ranges = [
        (0, 2 * mib),
        (4 * mib, 4 * mib + slot * 9 / 10),
        (4 * mib + slot, 4 * mib + slot + slot * 9 / 10),
        (size - 16 * mib, size - 15 * mib),
        (size - mib, size),
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 4 << 20];
    for &(start, end) in &ranges {
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(start))?;
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(buf.len() as u64) as usize;
            for c in buf[..n].chunks_mut(8) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                c.copy_from_slice(&rng.to_le_bytes()[..c.len()]);
            }
            f.write_all(&buf[..n])?;
            pos += n as u64;
        }
    }
    f.sync_all()?;
    let (xml, sha) = slotsmith::flash::bmap::write_with_sha256(&f, size, &ranges)?;
    fs::write(dir.join("bench.img.bmap"), &xml)?;
    use sha2::Digest;
    fs::write(
        dir.join("SHA256SUMS"),
        format!(
            "{}  bench.img\n{}  bench.img.bmap\n",
            hex(&sha),
            hex(&sha2::Sha256::digest(xml.as_bytes()))
        ),
    )?;
    Ok(img)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the bench on `image` (or a synthesized one of `size` bytes).
pub fn run(image: Option<PathBuf>, size: u64) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("slotsmith-bench-flash-")
        .tempdir()
        .context("creating a temporary directory")?;
    let dir = tmp.path();
    let (image, real) = match image {
        Some(p) => (p, true),
        None => {
            eprintln!(
                "synthesizing a {} golden-like image ...",
                slotsmith::load::human(size)
            );
            (synthesize(dir, size)?, false)
        }
    };
    let bmap_path = PathBuf::from(format!("{}.bmap", image.display()));
    let img_size = fs::metadata(&image)
        .with_context(|| format!("stat {}", image.display()))?
        .len();
    let bmap = slotsmith::flash::bmap::parse(
        &fs::read(&bmap_path).with_context(|| format!("reading {}", bmap_path.display()))?,
        &bmap_path.display().to_string(),
    )?;
    let bmaptool =
        Tool::new("bmaptool").context("bmaptool is needed: apt-get install bmap-tools")?;
    drop(bmaptool);

    // Two destinations of the image's size: loop devices as root.
    let root = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    };
    let use_loop = root && Tool::new("losetup").is_ok();
    let backing = [dir.join("ours.dest"), dir.join("theirs.dest")];
    let mut loops = Vec::new();
    for b in &backing {
        fs::File::create(b)?.set_len(img_size)?;
        if use_loop {
            loops.push(attach(b)?);
        }
    }
    let dest = |i: usize| -> PathBuf {
        match loops.get(i) {
            Some(l) => PathBuf::from(&l.0),
            None => backing[i].clone(),
        }
    };
    // Warm the page cache with the image for both alike.
    std::io::copy(&mut fs::File::open(&image)?, &mut std::io::sink())?;

    let (mut ours, mut theirs) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        let opts = slotsmith::flash::FlashOptions {
            image: image.clone(),
            device: dest(0),
            allow_file: !use_loop,
            log: Some(dir.join("flash-log.jsonl")),
            boot_key: real.then(|| image.with_file_name("boot.pub.pem")),
            memory: None,
            check_manifests: real,
            quiet: true,
        };
        let start = Instant::now();
        slotsmith::flash::flash(&opts, &slotsmith::flash::System::default(), &mut |_| true)?;
        ours = ours.min(start.elapsed().as_secs_f64());

        let start = Instant::now();
        Tool::new("bmaptool")?
            .args(["--quiet", "copy", "--bmap"])
            .arg(&bmap_path)
            .arg(&image)
            .arg(dest(1))
            .run()?;
        theirs = theirs.min(start.elapsed().as_secs_f64());
    }

    // Both wrote the same bytes in every mapped range.
    let mut a = fs::File::open(dest(0))?;
    let mut b = fs::File::open(dest(1))?;
    let same = bmap.ranges.iter().all(|r| {
        let read = |f: &mut fs::File| -> Option<Vec<u8>> {
            use std::io::{Read, Seek, SeekFrom};
            f.seek(SeekFrom::Start(r.start)).ok()?;
            let mut v = vec![0u8; (r.end - r.start) as usize];
            f.read_exact(&mut v).ok()?;
            Some(v)
        };
        let (x, y) = (read(&mut a), read(&mut b));
        x.is_some() && x == y
    });
    let mapped = bmap.mapped_bytes();
    let m = |n: u64| format!("{:.1} MiB", n as f64 / 1048576.0);
    let rate = |s: f64| mapped as f64 / 1048576.0 / s;
    println!(
        "bench flash: {} image, {} mapped in {} ranges, to {}",
        m(img_size),
        m(mapped),
        bmap.ranges.len(),
        if use_loop { "loop devices" } else { "files" }
    );
    println!(
        "  slotsmith flash (whole image checked{} before writing, write, fsync, read-back): {ours:6.2} s  {:7.1} MiB/s",
        if real {
            " with its signed manifests"
        } else {
            " (synthesized: no manifests to verify)"
        },
        rate(ours)
    );
    println!(
        "  bmaptool copy (per-range sha256, write, fsync):                                     {theirs:6.2} s  {:7.1} MiB/s",
        rate(theirs)
    );
    println!(
        "  ratio: bmaptool/slotsmith {:.2}x (goal: at least 1.00x, verification included); mapped ranges identical: {}",
        theirs / ours,
        if same { "yes" } else { "NO" }
    );
    anyhow::ensure!(same, "our flash and bmaptool copy wrote different bytes");
    drop(loops);
    Ok(())
}
