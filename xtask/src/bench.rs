//! `cargo xtask bench`: our stages measured beside peer tools in one run.
//!
//! Performance is measured here, never asserted in timed tests. Each bench
//! builds its own synthetic input, runs slotsmith's stage and the peer tool
//! on the same input in the same run, and prints times, the ratio and peak
//! resident memory (ours from VmHWM, the tools' sampled from /proc).

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use slotsmith::tool::{vm_hwm_kib, Tool};

#[path = "bench_boot.rs"]
mod boot;
#[path = "bench_build.rs"]
mod build;
#[path = "bench_flash.rs"]
mod flash;

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Which bench to run
    #[arg(value_enum, default_value = "rootfs")]
    which: Which,
    /// Size of the synthetic input [default: 512MiB for rootfs, 1GiB for verity; not used by build]
    #[arg(long)]
    size: Option<String>,
    /// flash: a built image (out/<name>/<name>.img) [default: a synthesized 1GiB one]
    #[arg(long)]
    image: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Which {
    /// The rootfs filesystem stage against a plain mksquashfs of the same tree
    Rootfs,
    /// Our dm-verity tree against `veritysetup format` and one sha256 pass
    Verity,
    /// Our .swu writer against swugenerator and a sha256sum/openssl/cpio pipeline
    Swu,
    /// The default image built four times (full, no-op, one layer file changed, new boot key) against issue 9's goals
    Build,
    /// out/demo booted in QEMU with Secure Boot: time to multi-user and its split, initramfs size
    Boot,
    /// `flash` (verification included) against `bmaptool copy`, to loop devices or files
    Flash,
}

/// Runs the chosen bench.
pub fn run(args: BenchArgs, project: Option<&std::path::Path>) -> anyhow::Result<()> {
    let default = match args.which {
        Which::Rootfs => "512MiB",
        Which::Verity => "1GiB",
        Which::Swu => "512MiB",
        Which::Build | Which::Boot => "0",
        Which::Flash => "1GiB",
    };
    let text = args.size.unwrap_or_else(|| default.to_string());
    let size =
        slotsmith::load::parse_size(&text).with_context(|| format!("'{text}' is not a size"))?;
    match args.which {
        Which::Rootfs => rootfs(size),
        Which::Verity => verity(size),
        Which::Swu => swu(size),
        Which::Build => build::run(project),
        Which::Boot => boot::run(project, 3),
        Which::Flash => flash::run(args.image, size),
    }
}

/// A small deterministic generator (xorshift64*), so every run benches the
/// same tree.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Writes a tree of about `size` bytes that looks like a rootfs: many small
/// files, some large ones, text-like (compressible) and binary-like
/// (incompressible) contents, nested directories.
fn make_tree(dir: &Path, size: u64) -> anyhow::Result<(u64, u64)> {
    let mut rng = Rng(0x5107_5317_0000_0001);
    let words: Vec<&[u8]> = [
        b"config".as_slice(),
        b"kernel",
        b"device",
        b"update",
        b"slot",
        b"verity",
        b"\n",
        b" = ",
        b"true",
        b"0x1f",
    ]
    .to_vec();
    let mut written = 0u64;
    let mut files = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while written < size {
        let d = dir.join(format!(
            "usr/lib/pkg{:03}/sub{:02}",
            files / 97 % 400,
            files % 13
        ));
        fs::create_dir_all(&d)?;
        let len = match rng.next() % 100 {
            0..=69 => 512 + rng.next() % 16384,
            70..=97 => 16384 + rng.next() % (512 << 10),
            _ => (1 << 20) + rng.next() % (8 << 20),
        }
        .min(size - written + 1);
        let text = rng.next() % 10 < 6;
        let mut f = fs::File::create(d.join(format!("f{files}")))?;
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            if text {
                let mut i = 0;
                while i < n {
                    let w = words[(rng.next() % words.len() as u64) as usize];
                    let k = w.len().min(n - i);
                    buf[i..i + k].copy_from_slice(&w[..k]);
                    i += k;
                }
            } else {
                for chunk in buf[..n].chunks_mut(8) {
                    let v = rng.next().to_le_bytes();
                    chunk.copy_from_slice(&v[..chunk.len()]);
                }
            }
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        written += len;
        files += 1;
    }
    Ok((files, written))
}

fn rootfs(size: u64) -> anyhow::Result<()> {
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .to_string();
    let tmp = tempfile::Builder::new()
        .prefix("slotsmith-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let tree_dir = tmp.path().join("tree");
    eprintln!(
        "generating a {} synthetic tree ...",
        slotsmith::load::human(size)
    );
    let (files, bytes) = make_tree(&tree_dir, size)?;
    // Warm the page cache for both contestants alike.
    let _ = Tool::new("tar")?
        .arg("-cf")
        .arg("/dev/null")
        .arg("-C")
        .arg(&tree_dir)
        .arg(".")
        .run();

    let ours_out = tmp.path().join("ours.squashfs");
    let start = Instant::now();
    let tree = slotsmith_rootfs_import(&tree_dir)?;
    let tool = planned_tar2sqfs(&tree_dir, &ours_out, &jobs)?;
    let out = tool.run_with_stdin(|w| {
        slotsmith_rootfs::export::write_tar(&tree, w, &mut |_| {})?;
        Ok(())
    })?;
    let ours_time = start.elapsed().as_secs_f64();
    let ours_tool_peak = out.peak_rss_kib;
    let ours_peak = vm_hwm_kib("/proc/self/status").unwrap_or(0);
    let ours_size = fs::metadata(&ours_out)?.len();

    let peer_out = tmp.path().join("peer.squashfs");
    let start = Instant::now();
    let out = Tool::new("mksquashfs")?
        .arg(&tree_dir)
        .arg(&peer_out)
        .args([
            "-comp",
            "zstd",
            "-noappend",
            "-quiet",
            "-no-progress",
            "-all-root",
            "-processors",
            &jobs,
        ])
        .run()?;
    let peer_time = start.elapsed().as_secs_f64();
    let peer_size = fs::metadata(&peer_out)?.len();

    let m = |n: u64| format!("{:.1} MiB", n as f64 / 1048576.0);
    println!(
        "bench rootfs: {} tree, {files} files, zstd, {jobs} jobs",
        m(bytes)
    );
    println!(
        "  slotsmith (import, tar stream, tar2sqfs): {ours_time:7.2} s  image {:>10}  peak RSS: slotsmith {}, tar2sqfs {}",
        m(ours_size),
        m(ours_peak * 1024),
        m(ours_tool_peak * 1024)
    );
    println!(
        "  mksquashfs (plain, same tree):            {peer_time:7.2} s  image {:>10}  peak RSS: {}",
        m(peer_size),
        m(out.peak_rss_kib * 1024)
    );
    println!(
        "  ratio slotsmith/mksquashfs: time {:.2}x, size {:.3}x",
        ours_time / peer_time,
        ours_size as f64 / peer_size as f64
    );
    Ok(())
}

/// Our tar2sqfs run exactly as the build's rootfs stage makes it: the
/// plan's invocation (`plan_tools`, the same function `plan` calls) for a
/// zstd squashfs, filled by `Tool::from_invocation`.
fn planned_tar2sqfs(tree: &Path, out: &Path, jobs: &str) -> anyhow::Result<Tool> {
    use slotsmith::plan::tools::{plan_tools, slot, ToolInputs};
    use slotsmith::spec::{BaseSpec, Compression, DirOwnership, Filesystem};
    let base = BaseSpec::Directory {
        path: tree.display().to_string(),
        abs: tree.to_path_buf(),
        ownership: DirOwnership::Root,
    };
    let tools = plan_tools(&ToolInputs {
        locked: false,
        base: &base,
        debian_arch: None,
        filesystem: Filesystem::Squashfs,
        compression: Some(Compression::Zstd),
        block_size: slotsmith::plan::SQUASHFS_BLOCK,
        slot_size: 0,
        ext4_uuid: None,
        data_label: slotsmith::layout::DATA,
        data_uuid: String::new(),
        data_offset: 0,
        data_size: 0,
        epoch: 0,
    });
    let inv = tools
        .rootfs
        .first()
        .context("the plan has no rootfs tool for squashfs")?;
    Tool::from_invocation(
        inv,
        &[
            (slot::OUTPUT, vec![out.into()]),
            (slot::JOBS, vec![jobs.into()]),
        ],
        0,
    )
}

fn slotsmith_rootfs_import(dir: &Path) -> anyhow::Result<slotsmith_rootfs::tree::Tree> {
    slotsmith_rootfs::import::from_directory(
        dir,
        slotsmith_rootfs::import::Ownership::Root,
        &mut |_, _| {},
    )
}

fn verity(size: u64) -> anyhow::Result<()> {
    use sha2::Digest;
    let size = size / 4096 * 4096;
    let tmp = tempfile::Builder::new()
        .prefix("slotsmith-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let data_path = tmp.path().join("data.img");
    eprintln!(
        "generating {} of pseudo-random data ...",
        slotsmith::load::human(size)
    );
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&data_path)?);
        let mut rng = Rng(0x7e51_7e51_0000_0003);
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            for chunk in buf.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            let n = left.min(buf.len() as u64) as usize;
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        f.flush()?;
    }
    let salt_hex = "5a".repeat(32);
    let uuid = "12345678-1234-8234-9234-123456789abc";
    let data = fs::File::open(&data_path)?;
    // Warm the page cache, and time one plain sha256 pass as the floor.
    let start = Instant::now();
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut &data, &mut h)?;
    let _ = h.finalize();
    let sha_time = start.elapsed().as_secs_f64();

    let ours_path = tmp.path().join("ours.verity");
    let params = slotsmith_verity::VerityParams {
        salt: [0x5a; 32],
        uuid: uuid.parse()?,
    };
    let before = vm_hwm_kib("/proc/self/status").unwrap_or(0);
    let start = Instant::now();
    let mut out = fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&ours_path)?;
    let info = slotsmith_verity::format_file(&data, size, &mut out, &params)?;
    let ours_time = start.elapsed().as_secs_f64();
    let peak = vm_hwm_kib("/proc/self/status").unwrap_or(0);

    let theirs_path = tmp.path().join("theirs.verity");
    let start = Instant::now();
    let run = Tool::new("veritysetup")?
        .args(["format", "--salt", &salt_hex, "--uuid", uuid])
        .arg(&data_path)
        .arg(&theirs_path)
        .run()?;
    let theirs_time = start.elapsed().as_secs_f64();
    let same = fs::read(&ours_path)? == fs::read(&theirs_path)?;
    let m = |n: u64| format!("{:.1} MiB", n as f64 / 1048576.0);
    println!(
        "bench verity: {} of data, {} data blocks, hash area {}",
        m(size),
        info.data_blocks,
        m(info.hash_size)
    );
    println!(
        "  slotsmith verity (parallel leaves): {ours_time:6.2} s  peak RSS {} (before: {})",
        m(peak * 1024),
        m(before * 1024)
    );
    println!(
        "  veritysetup format:                {theirs_time:6.2} s  peak RSS {}",
        m(run.peak_rss_kib * 1024)
    );
    println!("  one sha256 pass over the data:      {sha_time:6.2} s");
    println!(
        "  ratio: veritysetup/slotsmith {:.2}x faster; slotsmith/sha256 pass {:.2}x; hash areas identical: {}",
        theirs_time / ours_time,
        ours_time / sha_time,
        if same { "yes" } else { "NO" }
    );
    if !same {
        anyhow::bail!("our hash area differs from veritysetup's");
    }
    Ok(())
}

fn random_file(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    let mut rng = Rng(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Rounds of each of our timings in `bench swu`; the best is reported,
/// because the bench machine is shared and a single run can be several
/// times slower than the code.
const SWU_ROUNDS: usize = 3;

/// One sha256 pass over `path` with the buffer size our digests use: the
/// yardstick of `bench swu`.
fn sha256_pass(path: &Path) -> anyhow::Result<[u8; 32]> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; slotsmith_swu::digest::READ_BUF];
    let mut sha = sha2::Sha256::new();
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(sha.finalize().into()),
            n => sha.update(&buf[..n]),
        }
    }
}

fn swu(size: u64) -> anyhow::Result<()> {
    use slotsmith_swu as s;
    let tmp = tempfile::Builder::new()
        .prefix("slotsmith-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let dir = tmp.path();
    eprintln!(
        "generating a {} rootfs image and an update key ...",
        slotsmith::load::human(size)
    );
    let image = dir.join("rootfs.img");
    random_file(&image, size, 0x5755_0000_0000_0005)?;
    let keys = dir.join("keys");
    let (key, cert) = slotsmith_cms::generate_update_key(&keys, "update", "bench", 0, 3650, None)?;
    let signer = slotsmith_cms::UpdateSigner::load(&key, &cert)?;
    // Warm the page cache for every contestant alike.
    std::io::copy(&mut fs::File::open(&image)?, &mut std::io::sink())?;

    // Ours, from a prepared payload: describe, sign, copy the payload once.
    let write = |p: &s::PreparedPayload, stamped: bool, out: &Path| -> anyhow::Result<()> {
        let payload = p.payload(
            "rootfs.img",
            s::Target::Raw {
                device: "/dev/disk/by-partlabel/root-b".into(),
            },
        );
        let desc = s::SwDescription {
            name: "bench".into(),
            security_version: None,
            version: "1.0.0".into(),
            hardware_compatibility: vec!["1.0".into()],
            collections: vec![s::Collection::ab("b", s::Bootloader::UBoot, vec![payload])?],
        };
        let text = desc.to_libconfig()?;
        let sig = signer.sign_detached(text.as_bytes())?;
        let f = fs::File::create(out)?;
        let w = s::write_swu_members(
            std::io::BufWriter::with_capacity(1 << 20, f),
            text.as_bytes(),
            &sig,
            &[s::Member {
                // Without a stamp the writer re-hashes while copying.
                stamp: stamped.then_some(p.stamp),
                ..p.archive_member("rootfs.img")
            }],
        )?;
        w.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    };
    let before = vm_hwm_kib("/proc/self/status").unwrap_or(0);
    let ours_swu = dir.join("ours.swu");
    let (mut sha_time, mut digest_time, mut full_time, mut known_time, mut rehash_time) =
        (f64::MAX, f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..SWU_ROUNDS {
        // 1. The yardstick: one sha256 pass, nothing else.
        let start = Instant::now();
        let sha = sha256_pass(&image)?;
        sha_time = sha_time.min(start.elapsed().as_secs_f64());

        // 2. Ours with no digests known: one read for size, sha256 and
        // cpio check, sign, one copy. Deleting the previous round's
        // output (freeing its page cache) is not part of the time.
        let _ = fs::remove_file(&ours_swu);
        let start = Instant::now();
        let p = s::prepare_payload(&image, &s::PayloadCompression::None)?;
        digest_time = digest_time.min(start.elapsed().as_secs_f64());
        write(&p, true, &ours_swu)?;
        full_time = full_time.min(start.elapsed().as_secs_f64());
        anyhow::ensure!(p.digests.sha256 == sha, "our sha256 differs from sha2's");

        // 3. Ours with the digests known, as when a build stage computed
        // them while writing the image: no read but the copy.
        let _ = fs::remove_file(&ours_swu);
        let start = Instant::now();
        let known = s::PreparedPayload::from_digests(&image, p.digests, p.stamp)?;
        write(&known, true, &ours_swu)?;
        known_time = known_time.min(start.elapsed().as_secs_f64());

        // 4. The same without trusting the stamp: sha256 while copying,
        // what a payload touched since its digests costs.
        let _ = fs::remove_file(&ours_swu);
        let start = Instant::now();
        write(&known, false, &ours_swu)?;
        rehash_time = rehash_time.min(start.elapsed().as_secs_f64());
    }
    let peak = vm_hwm_kib("/proc/self/status").unwrap_or(0);
    let ours = full_time;

    // 2. swugenerator (PyPI), same image, same signing scheme.
    let art = dir.join("art");
    fs::create_dir(&art)?;
    fs::hard_link(dir.join("rootfs.img"), art.join("rootfs.img"))?;
    fs::write(
        dir.join("sw-description.in"),
        "software = { version = \"1.0.0\"; hardware-compatibility = [ \"1.0\" ]; stable = { copy2 = { images = ( { filename = \"rootfs.img\"; type = \"raw\"; device = \"/dev/disk/by-partlabel/root-b\"; installed-directly = true; } ); }; }; };\n",
    )?;
    let start = Instant::now();
    let swugen = Tool::new("swugenerator")
        .context("swugenerator is needed for this bench: pip install swugenerator")?
        .args(["-s"])
        .arg(dir.join("sw-description.in"))
        .arg("-a")
        .arg(&art)
        .arg("-k")
        .arg(format!("CMS,{},{}", key.display(), cert.display()))
        .arg("-o")
        .arg(dir.join("swugen.swu"))
        .arg("create")
        .run()?;
    let swugen_time = start.elapsed().as_secs_f64();

    // 3. The shell pipeline: sha256sum, openssl cms, cpio -H crc.
    let script = format!(
        "set -e; cd {d}; sum=$(sha256sum rootfs.img | cut -d' ' -f1); \
         printf 'software = {{ version = \"1.0.0\"; hardware-compatibility = [ \"1.0\" ]; stable = {{ copy2 = {{ images = ( {{ filename = \"rootfs.img\"; type = \"raw\"; device = \"/dev/disk/by-partlabel/root-b\"; installed-directly = true; sha256 = \"%s\"; }} ); }}; }}; }};\\n' \"$sum\" > sw-description; \
         openssl cms -sign -in sw-description -out sw-description.sig -signer {cert} -inkey {key} -outform DER -nosmimecap -binary -md sha256; \
         printf '%s\\n' sw-description sw-description.sig rootfs.img | cpio -o -H crc --quiet > shell.swu",
        d = dir.display(),
        cert = cert.display(),
        key = key.display()
    );
    let start = Instant::now();
    let shell = Tool::new("sh")?.arg("-c").arg(&script).run()?;
    let shell_time = start.elapsed().as_secs_f64();

    let m = |n: u64| format!("{:.1} MiB", n as f64 / 1048576.0);
    println!(
        "bench swu: one {} raw payload, CMS (ECDSA P-256) signed, no compression",
        m(size)
    );
    println!("  ours, best of {SWU_ROUNDS} (goal: a full build at most 1.3x one sha256 pass):");
    println!("    one sha256 pass (sha2, same buffer):   {sha_time:6.2} s  1.00x");
    println!(
        "    digests only (size, sha256, cpio):     {digest_time:6.2} s  {:.2}x",
        digest_time / sha_time
    );
    println!(
        "    .swu, no digests known (digest+write): {full_time:6.2} s  {:.2}x",
        full_time / sha_time
    );
    println!(
        "    .swu, digests known (write only):      {known_time:6.2} s  {:.2}x",
        known_time / sha_time
    );
    println!(
        "    .swu, digests known, re-hashed:        {rehash_time:6.2} s  {:.2}x",
        rehash_time / sha_time
    );
    println!(
        "  slotsmith (no digests known):           {ours:6.2} s  peak RSS {} (before: {})",
        m(peak * 1024),
        m(before * 1024)
    );
    println!(
        "  swugenerator (PyPI):                    {swugen_time:6.2} s  peak RSS {}",
        m(swugen.peak_rss_kib * 1024)
    );
    println!("  sha256sum + openssl cms + cpio -H crc:  {shell_time:6.2} s  peak RSS {} (largest single tool)", m(shell.peak_rss_kib * 1024));
    println!(
        "  ratio: {:.1}x faster than swugenerator, {:.1}x faster than the shell pipeline",
        swugen_time / ours,
        shell_time / ours
    );
    // Every output must be a valid update: check ours with our reader.
    s::read_swu(&dir.join("ours.swu"))?;
    Ok(())
}
