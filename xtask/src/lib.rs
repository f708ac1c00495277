//! `cargo xtask`: the slotsmith command line.
//!
//! A thin driver in the style of rust-analyzer's xtask: it parses flags,
//! finds the project root and calls the library's stages
//! (`slotsmith::load`, `plan`, `build`). Exit codes: 0 success, 1 build
//! failure, 2 input error (bad YAML, bad layer, bad arguments).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use cache::default_cache;
use clap::{Parser, Subcommand};
use devkey::note_dev_key;

mod audit;
mod bench;
mod cache;
mod devkey;
mod diff;
mod flash;
mod lint;
mod lock;
mod previous;
mod qemu;
mod repro;

/// The checkout this binary was compiled from. Used only to notice a
/// binary from one checkout running in another (a `CARGO_TARGET_DIR` shared
/// between checkouts, common in CI caches), never to find the project.
fn built_from() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Finds the project: `--project DIR`, else the nearest ancestor of the
/// working directory holding `images/` (None when there is none). Refuses
/// when that project is a slotsmith checkout other than the one this binary
/// was built from, since it would build one checkout's inputs with another
/// checkout's code.
pub fn find_project(flag: Option<&Path>, cwd: &Path) -> anyhow::Result<Option<PathBuf>> {
    let project = match flag {
        Some(p) => {
            let p = cwd.join(p);
            if !p.join("images").is_dir() {
                anyhow::bail!(
                    "--project {}: not a slotsmith project (no images/ directory)",
                    slotsmith_yaml::escape::shown(&p.to_string_lossy())
                );
            }
            p
        }
        None => match cwd.ancestors().find(|d| d.join("images").is_dir()) {
            Some(d) => d.to_path_buf(),
            None => return Ok(None),
        },
    };
    let project = project
        .canonicalize()
        .with_context(|| format!("resolving project {}", project.display()))?;
    check_same_checkout(&project, &built_from())?;
    Ok(Some(project))
}

/// The project a command needs, or an input error saying how to name one.
fn require_project(project: Option<&Path>) -> Result<PathBuf, Failure> {
    project.map(Path::to_path_buf).ok_or_else(|| {
        let cwd = std::env::current_dir().unwrap_or_default();
        input_error(
            "--project",
            &format!(
                "no slotsmith project here: neither {} nor a parent holds images/; run inside a project or pass --project DIR",
                slotsmith_yaml::escape::shown(&cwd.to_string_lossy())
            ),
        )
    })
}

/// A slotsmith checkout (it holds the xtask sources) must be the one the
/// running binary came from; any other project (images/, layers/ and
/// policies/ without our sources) may be built by any slotsmith.
fn check_same_checkout(project: &Path, built_from: &Path) -> anyhow::Result<()> {
    if !project.join("xtask/Cargo.toml").is_file() {
        return Ok(());
    }
    let built = built_from
        .canonicalize()
        .unwrap_or_else(|_| built_from.to_path_buf());
    if built != project {
        anyhow::bail!(
            "this slotsmith binary was built from {} but the project is the slotsmith checkout {}: \
             a CARGO_TARGET_DIR shared between checkouts? Run `cargo xtask` again in {} so cargo rebuilds it, \
             or give a separate CARGO_TARGET_DIR",
            slotsmith_yaml::escape::shown(&built.to_string_lossy()),
            slotsmith_yaml::escape::shown(&project.to_string_lossy()),
            slotsmith_yaml::escape::shown(&project.to_string_lossy()),
        );
    }
    Ok(())
}

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    about = "slotsmith: build hardened, verified A/B images for embedded Linux devices",
    long_about = "slotsmith builds a golden GPT disk image with A/B rootfs slots from a declarative \
image definition (images/*.yaml), Yocto-style layers (layers/meta-*/) and hardening policies \
(policies/*.yaml).\n\nIMAGE is a name under images/ (demo) or a path to an image file.",
    after_help = "Examples:\n  cargo xtask build                  # build the default image, images/demo.yaml\n  cargo xtask plan demo              # print the resolved plan as JSON\n  cargo xtask build images/demo.yaml --json\n  cargo xtask bench rootfs --size 2GiB\n\nExit codes: 0 success, 1 build failure, 2 input error."
)]
struct Cli {
    /// Project directory holding images/, layers/ and policies/ [default: the nearest one above the working directory]
    #[arg(long, global = true)]
    project: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the resolved build plan of an image as JSON
    #[command(
        after_help = "The plan is pure and deterministic: the same inputs and SOURCE_DATE_EPOCH \
always give the same plan. Nothing is built.\n\nExamples:\n  cargo xtask plan\n  cargo xtask plan demo | jq .disk.partitions\n  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) cargo xtask plan images/demo.yaml"
    )]
    Plan(PlanArgs),
    /// Build an image into out/<name>/
    #[command(
        after_help = "Outputs in out/<name>/: <name>.img (golden GPT disk image), <name>.img.bmap, \
the rootfs image, SHA256SUMS and build.json. The build needs no root. A failed build leaves out/ as it was.\n\n\
SOURCE_DATE_EPOCH (or source-date-epoch in the image) clamps every timestamp: the same inputs give \
bit-identical outputs.\n\nExamples:\n  cargo xtask build\n  cargo xtask build demo --json > summary.json\n  \
cargo xtask build images/demo.yaml --out-dir /srv/images"
    )]
    Build(BuildArgs),
    /// Boot a built image in QEMU under OVMF with Secure Boot on
    #[command(
        after_help = "Boots a copy of out/<name>/<name>.img (the golden image itself is never \
written) under OVMF with the image's own PK, KEK and db enrolled and Secure Boot enforced, an \
i6300esb watchdog (EFI Boot Guard arms it) and a serial console. Interactive by default (quit with \
Ctrl-A X); with --expect it runs without a terminal until a pattern appears on the console (exit 0), \
or QEMU exits or the timeout passes (exit 1), and prints the console.\n\nExamples:\n  \
cargo xtask qemu\n  cargo xtask qemu demo --slot b\n  \
cargo xtask qemu --expect 'verified root ready' --timeout 300\n  \
cargo xtask qemu --usb stick.img"
    )]
    Qemu(qemu::QemuArgs),
    /// Make a USB stick image holding a .swu, for a device (or `qemu --usb`)
    #[command(
        after_help = "Writes a disk image with an MBR partition table and one FAT partition holding the .swu, as a service person would carry it. Write it to a real stick with `bmaptool` or `dd`; on the device, plugging it in installs the update into the inactive slot (see the README's update flow). The image is deterministic (SOURCE_DATE_EPOCH sets its timestamps).\n\nExamples:\n  \
cargo xtask stick out/demo/demo-1.0.0.swu\n  cargo xtask stick out/demo/demo-1.0.0.swu -o /tmp/stick.img"
    )]
    Stick(qemu::StickArgs),
    /// Verify a built image, update or provenance from the file alone
    #[command(
        after_help = "Checks the GPT against the signed boot manifests, recomputes each slot's \
dm-verity root hash from the partition bytes, and checks each manifest's Ed25519 signature and the \
kernel, initrd and device tree hashes on the boot partition. Exits 1 with one precise reason per \
problem. A provenance (*.dsse.json) is checked with --provenance-key: its DSSE signature, then \
every subject against the file of that name beside it.\n\nExamples:\n  \
cargo xtask verify out/demo/demo.img --boot-key out/demo/boot.pub.pem\n  \
cargo xtask verify golden.img --boot-key keys/release/boot.pub.pem --json\n  \
cargo xtask verify out/demo/provenance.dsse.json --provenance-key keys/release/provenance.pub.pem"
    )]
    Verify(VerifyArgs),
    /// Audit a built image's rootfs against its hardening policies
    #[command(
        after_help = "Reads the rootfs image in out/<name>/ back (not the staging tree), \
evaluates every rule of the image's policies as pass, fail or waived with evidence (path, sha256, \
effective value), and writes out/<name>/audit/report.md, report.json and report.sarif (SARIF 2.1.0). \
Exits 1 when a production rule fails without a waiver.\n\nExamples:\n  cargo xtask audit out/demo\n  \
cargo xtask audit out/demo --json | jq .summary"
    )]
    Audit(AuditArgs),
    /// Check policies/, layers/ and images/ for errors and conflicts
    #[command(
        after_help = "Loads every image with its layers and policies (schema errors, duplicate \
rule ids, unknown control ids), then looks for conflicts: a firewall port for a masked service, one \
sysctl set to two values, a layer file overriding a file a policy manages. Each finding names the file \
and line; exit code 2 when there is any.\n\nExamples:\n  cargo xtask lint"
    )]
    Lint(LintArgs),
    /// Manage signing keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Lock an image's Debian base to exact packages (images/<name>.lock)
    #[command(
        after_help = "Examples:\n  cargo xtask lock demo                    # write images/demo.lock\n  cargo xtask lock --update demo           # refresh it, print what changed\n  cargo xtask lock --export /media/room demo  # lock + .debs for a build without network\n  cargo xtask build demo --deb-cache /media/room/debs"
    )]
    Lock(lock::LockArgs),
    /// Rebuild a published build from its recorded inputs and compare every artifact
    #[command(
        after_help = "Reads OUT_DIR/build.json, copies every input it records (image file, layers, \
policies, base tarball, lock) from the project into a fresh temporary project with the signing keys, \
rebuilds there with the recorded SOURCE_DATE_EPOCH, a fresh work directory and base cache and the stage \
cache off (only the .deb cache is shared, so a locked base needs no network), and compares every \
artifact with the published one. An input edited since the build is named, and the rebuild still runs. \
Exit 0 when every artifact is identical; 1 when one differs, naming the first (in build.json order) \
and the offset of its first differing byte.\n\nExamples:\n  cargo xtask repro out/demo\n  \
cargo xtask repro out/demo --json | jq .first_difference\n  cargo xtask repro /srv/releases/demo-1.0.0 --cache-dir /media/room"
    )]
    Repro(repro::ReproArgs),
    /// Write a golden image to a device: verified first, only mapped blocks, read back, logged
    #[command(
        after_help = "Before writing anything: checks the bmap against SHA256SUMS and the image \
against the bmap (every mapped range's sha256, every other byte zero) on all cores, verifies the \
signed manifests with the release's boot key (--boot-key, required), and refuses the disk the running \
system lives on, a device with a mounted, swapped or held partition, a device smaller than the image, \
a symlink out of /dev, and a regular file unless --allow-file. Then writes only the bmap's ranges \
(O_DIRECT where the device takes it), syncs, and reads every range back from the device and compares \
it. Appends one JSON line per attempt (image, version, sha256, boot key, device, serial, bytes, \
seconds, MiB/s, result) to --log FILE, by default ~/.local/state/slotsmith/flash-log.jsonl.\n\n\
Examples:\n  \
cargo xtask flash out/demo/demo.img /dev/disk/by-id/usb-Example_SN1234 --boot-key release/boot.pub.pem\n  \
cargo xtask flash out/demo/demo.img /dev/sdb --boot-key release/boot.pub.pem --yes --log /srv/station/flash-log.jsonl\n  \
cargo xtask flash out/demo/demo.img /tmp/copy.img --allow-file --boot-key release/boot.pub.pem"
    )]
    Flash(flash::FlashArgs),
    /// Compare two published builds: packages, rootfs files, policy, command line, keys
    #[command(
        after_help = "Reads both output directories (they are only read, and treated as untrusted): \
build.json, each slot's signed boot manifest (verified with that build's boot key), the published keys and \
certificates, audit/report.json, and the rootfs image with the audit's own squashfs and ext4 readers. \
Reports Debian packages added, removed and changed (from the image's dpkg database; none for a base \
without one), every rootfs entry added, removed or changed (kind, mode, owner, sha256, symlink target), \
hardening rules and waivers changed, each slot's kernel command line, key and certificate fingerprints, \
security version, image version, plan and lock hashes. Markdown on stdout, or JSON with --json (sorted, \
stable). Exit 0 whether or not the builds differ; 2 when a directory is unusable, naming the file.\n\n\
Examples:\n  cargo xtask diff /srv/releases/demo-1.0.0 out/demo\n  \
cargo xtask diff old/demo out/demo --json | jq .files.changed\n  cargo xtask diff old/demo out/demo -o release-diff.md"
    )]
    Diff(diff::DiffArgs),
    /// Measure slotsmith's stages against peer tools
    #[command(
        after_help = "Examples:\n  cargo xtask bench              # rootfs stage vs mksquashfs, 512MiB tree\n  cargo xtask bench rootfs --size 2GiB\n  cargo xtask bench swu          # the .swu against one sha256 pass and peers\n  cargo xtask bench build        # full, no-op, one-layer and new-key rebuilds of the default image\n  cargo xtask bench flash        # flash (verification included) against bmaptool copy"
    )]
    Bench(bench::BenchArgs),
}

#[derive(clap::Args)]
struct LintArgs {
    /// Project directory holding images/, layers/ and policies/ [default: this repository]
    #[arg(long)]
    root: Option<PathBuf>,
}

#[derive(clap::Args)]
pub(crate) struct AuditArgs {
    /// The output directory of a build (out/<name>); it is only read
    out: PathBuf,
    /// The image file [default: the one build.json names, in this project]
    #[arg(long)]
    image: Option<PathBuf>,
    /// Write report.md, report.json and report.sarif into this directory [default: print only]
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// The boot public key the manifest must verify with [default: OUT/boot.pub.pem]
    #[arg(long)]
    boot_key: Option<PathBuf>,
    /// Print the report as JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The image (out/<name>/<name>.img), update (out/<name>/<name>-<version>.swu) or
    /// provenance (out/<name>/provenance.dsse.json)
    path: PathBuf,
    /// For a provenance: the provenance public key (SPKI PEM) it must verify with
    #[arg(long)]
    provenance_key: Option<PathBuf>,
    /// For an image: the boot public key (SPKI PEM) the manifests must verify with
    #[arg(long)]
    boot_key: Option<PathBuf>,
    /// For an update: the certificate (PEM) the signature must chain to: the signer's own or its CA
    #[arg(long)]
    update_cert: Option<PathBuf>,
    /// Print the report as JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a key pair: <role>.key.pem (PKCS#8, mode 0600) and <role>.pub.pem (SPKI),
    /// or for secureboot the PK, KEK and db keys and certificates
    #[command(
        after_help = "Refuses to overwrite an existing key. Both files work with openssl.\n\n\
Examples:\n  cargo xtask keys generate --role boot --out keys/release\n  \
openssl pkey -in keys/release/boot.key.pem -noout"
    )]
    Generate(KeysGenerateArgs),
}

#[derive(clap::Args)]
struct KeysGenerateArgs {
    /// What the key signs
    #[arg(long, value_enum)]
    role: KeyRole,
    /// Directory for the key files (created with mode 0700 if absent)
    #[arg(long)]
    out: PathBuf,
    /// Update role: issue the certificate from this CA certificate (PEM) instead of self-signing
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Update role: the CA's private key (PEM)
    #[arg(long)]
    ca_key: Option<PathBuf>,
    /// Update role: the certificate's common name; secureboot role: its
    /// prefix ("<name> PK", "<name> KEK", "<name> db")
    #[arg(long)]
    common_name: Option<String>,
    /// Update and secureboot roles: certificate validity in days
    #[arg(long, default_value_t = 3650)]
    days: u32,
    /// A development key: record its public-key fingerprint in the project's
    /// keys/dev-fingerprints.txt so release images refuse it wherever it is
    /// copied (implied when --out is inside keys/dev)
    #[arg(long)]
    dev: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KeyRole {
    /// Ed25519 key for the boot manifests: boot.key.pem, boot.pub.pem
    Boot,
    /// Ed25519 key for the signed provenance: provenance.key.pem, provenance.pub.pem
    Provenance,
    /// ECDSA P-256 key and X.509 certificate for .swu signatures: update.key.pem, update.cert.pem
    Update,
    /// UEFI Secure Boot PK, KEK and db: RSA-2048 keys and self-signed certificates,
    /// secureboot-{pk,kek,db}.key.pem and secureboot-{pk,kek,db}.cert.pem
    Secureboot,
}

#[derive(clap::Args)]
struct ImageArg {
    /// Image name under images/ or path to an image file [default: demo]
    image: Option<String>,
}

#[derive(clap::Args)]
struct PlanArgs {
    #[command(flatten)]
    image: ImageArg,
}

#[derive(clap::Args)]
struct BuildArgs {
    #[command(flatten)]
    image: ImageArg,
    /// Output root; the image goes to <OUT_DIR>/<name>/ [default: <project>/out]
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Scratch directory [default: <project>/work]
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Cache for Debian base tarballs [default: $SLOTSMITH_CACHE or ~/.cache/slotsmith]
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// The .deb cache a locked Debian base installs from, such as the debs/
    /// of `lock --export`; it is only read unless a locked .deb is missing
    /// [default: <CACHE_DIR>/debs]
    #[arg(long)]
    deb_cache: Option<PathBuf>,
    /// Print the build summary as JSON on stdout (standard output is then
    /// JSON only; progress stays on standard error, as plain lines, never
    /// bars); its "warnings" lists every warning, also under --quiet
    #[arg(long)]
    json: bool,
    /// Print nothing but errors: no progress, no summary and no warnings,
    /// not even "signing with the DEVELOPMENT key" (use --json to keep
    /// them). Without it, standard error shows live bars on a terminal and
    /// plain lines elsewhere or when CI is set
    #[arg(long, short)]
    quiet: bool,
    /// Run every stage, ignoring the stage cache (work/.stage-cache)
    #[arg(long)]
    no_cache: bool,
    /// The previous release's output directory: publish release-diff.md
    /// and release-diff.json (as `diff PREVIOUS <new out>`) with the build
    #[arg(long, value_name = "OLD_OUT")]
    previous: Option<PathBuf>,
}

/// Runs the CLI with the process arguments and returns the exit code.
pub fn main() -> i32 {
    let mut args: Vec<String> = std::env::args().collect();
    // `cargo xtask build` reaches us as `xtask build`, and the standalone
    // binary as `slotsmith build`; both parse the same.
    if args.get(1).map(String::as_str) == Some("xtask") {
        args.remove(1);
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match run(cli) {
        Ok(()) => 0,
        Err(Failure::Input(d)) if d.is_empty() => 2,
        Err(Failure::Input(d)) => {
            eprintln!("{d}");
            eprintln!("error: {} problem(s) in the inputs", d.len());
            2
        }
        Err(Failure::Build(e)) => {
            // Problems the input alone causes but only the build can see
            // (a rootfs larger than its slot, a removal of a missing path)
            // are input errors: exit 2, with file, line and key.
            if let Some(d) = e
                .chain()
                .find_map(|c| c.downcast_ref::<slotsmith::spec::InputError>())
            {
                eprintln!("{}", d.0);
                eprintln!("error: {} problem(s) in the inputs", d.0.len());
                return 2;
            }
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Keeps `ExitCode` out of the library API but documents the mapping.
pub fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(code as u8)
}

enum Failure {
    Input(slotsmith::diag::Diagnostics),
    Build(anyhow::Error),
}

impl From<slotsmith::diag::Diagnostics> for Failure {
    fn from(d: slotsmith::diag::Diagnostics) -> Self {
        Failure::Input(d)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Build(e)
    }
}

fn input_error(key: &str, message: &str) -> Failure {
    Failure::Input(slotsmith::diag::Diagnostics::from(vec![
        slotsmith::diag::Diagnostic {
            file: "command line".into(),
            line: 0,
            col: 0,
            key: key.to_string(),
            message: message.to_string(),
        },
    ]))
}

fn env_epoch() -> Result<Option<u64>, Failure> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|t| *t <= slotsmith::load::MAX_SOURCE_DATE_EPOCH)
            .map(Some)
            .ok_or_else(|| {
                Failure::Input(slotsmith::diag::Diagnostics::from(vec![
                    slotsmith::diag::Diagnostic {
                        file: "SOURCE_DATE_EPOCH".into(),
                        line: 0,
                        col: 0,
                        key: String::new(),
                        message: format!(
                            "'{}' is not a number of seconds since 1970 up to {} (2106-02-07)",
                            slotsmith_yaml::escape::shown(&v),
                            slotsmith::load::MAX_SOURCE_DATE_EPOCH
                        ),
                    },
                ]))
            }),
        _ => Ok(None),
    }
}

/// The image file IMAGE names: a name under the project's images/, or a path.
fn image_path(image: &ImageArg, project: Option<&Path>) -> Result<PathBuf, Failure> {
    let arg = image.image.clone().unwrap_or_else(|| "demo".to_string());
    Ok(if slotsmith::load::is_image_name(&arg) {
        let root = require_project(project)?;
        slotsmith::load::resolve_image_arg(&root, &arg)
    } else {
        slotsmith::load::resolve_image_arg(Path::new("/"), &arg)
    })
}

fn load_and_plan(
    image: &ImageArg,
    project: Option<&Path>,
) -> Result<(PathBuf, slotsmith::plan::Plan, PathBuf), Failure> {
    let path = image_path(image, project)?;
    let loaded = slotsmith::load::load_image(&path)?;
    let plan = slotsmith::plan::plan(&loaded, env_epoch()?)?;
    Ok((path, plan, loaded.image.root.clone()))
}

fn run(cli: Cli) -> Result<(), Failure> {
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let project = find_project(cli.project.as_deref(), &cwd)
        .map_err(|e| input_error("--project", &format!("{e:#}")))?;
    let project = project.as_deref();
    match cli.command {
        Command::Plan(a) => {
            let (_, plan, _) = load_and_plan(&a.image, project)?;
            let json = serde_json::to_string_pretty(&plan).map_err(anyhow::Error::from)?;
            println!("{json}");
            Ok(())
        }
        Command::Build(a) => {
            let (_, plan, image_root) = load_and_plan(&a.image, project)?;
            let cache_dir = a
                .cache_dir
                .clone()
                .unwrap_or_else(|| default_cache(&image_root));
            let opts = slotsmith::build::BuildOptions {
                project_root: image_root.clone(),
                out_root: a.out_dir.clone().unwrap_or_else(|| image_root.join("out")),
                work_root: a
                    .work_dir
                    .clone()
                    .unwrap_or_else(|| image_root.join("work")),
                deb_cache: a
                    .deb_cache
                    .clone()
                    .unwrap_or_else(|| cache_dir.join("debs")),
                cache_dir,
                no_cache: a.no_cache,
                init_binary: None,
                updater_binary: None,
            };
            let plan = previous::apply(plan, a.previous.as_deref(), &opts.out_root)?;
            let mut progress = slotsmith::progress::Progress::with_mode(
                slotsmith::progress::Mode::detect(a.quiet, a.json),
            );
            let mut opts = opts;
            if plan.chain.is_some() {
                let programs = slotsmith::initbin::build_device_programs(&mut progress)?;
                opts.init_binary = Some(programs.init);
                opts.updater_binary = Some(programs.updater);
            }
            let outcome = slotsmith::build::build(&plan, &opts, &mut progress)?;
            if a.json {
                let summary = serde_json::json!({
                    "out_dir": outcome.out_dir,
                    "build": outcome.record,
                    "stages": progress.stages,
                    "cache": outcome.cache,
                    "warnings": progress.warnings,
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).map_err(anyhow::Error::from)?
                );
            } else if !a.quiet {
                let total: f64 = progress.stages.iter().map(|s| s.seconds).sum();
                eprintln!(
                    "built {} {} in {total:.1}s:",
                    plan.image.name, plan.image.version
                );
                for art in &outcome.record.artifacts {
                    eprintln!(
                        "  {}/{}  {}  sha256:{}",
                        outcome.out_dir.display(),
                        art.name,
                        slotsmith::load::human(art.size),
                        &art.sha256[..16]
                    );
                }
            }
            Ok(())
        }
        Command::Verify(a) if a.path.to_string_lossy().ends_with(".dsse.json") => {
            let key = a.provenance_key.as_ref().ok_or_else(|| {
                input_error(
                    "--provenance-key",
                    "verifying a provenance (.dsse.json) needs --provenance-key PUB.pem",
                )
            })?;
            let key = slotsmith_sign::load_verifying_key(key)
                .with_context(|| format!("loading provenance key {}", key.display()))?;
            let report = slotsmith::provenance::verify_dir(&a.path, &key)?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
                );
            } else {
                eprintln!(
                    "{}: {} (plan {}): signature OK, {} subjects match the files beside it, {} inputs listed",
                    report.envelope, report.image, report.plan_sha256, report.subjects, report.dependencies
                );
                eprintln!(
                    "{}: verified with provenance key {}",
                    report.envelope, report.key
                );
            }
            Ok(())
        }
        Command::Verify(a) if a.path.extension().is_some_and(|e| e == "swu") => {
            let cert = a.update_cert.as_ref().ok_or_else(|| {
                input_error(
                    "--update-cert",
                    "verifying an update (.swu) needs --update-cert CERT.pem",
                )
            })?;
            let report = slotsmith::verify::verify_swu(&a.path, cert)?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
                );
            } else {
                eprintln!(
                    "{}: version {} for hardware {}",
                    report.update,
                    report.version,
                    report.hardware_compatibility.join(", ")
                );
                for c in &report.collections {
                    eprintln!("  {c}");
                }
                eprintln!("  members: {}", report.members.join(", "));
                eprintln!("{}: verified: signed by {}", report.update, report.signer);
            }
            Ok(())
        }
        Command::Verify(a) => {
            let boot_key = a.boot_key.as_ref().ok_or_else(|| {
                input_error("--boot-key", "verifying an image needs --boot-key PUB.pem")
            })?;
            let key = slotsmith_sign::load_verifying_key(boot_key)
                .with_context(|| format!("loading boot key {}", boot_key.display()))?;
            let report = slotsmith::verify::verify_image(&a.path, &key)?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
                );
            } else {
                for s in &report.slots {
                    eprintln!(
                        "slot {}: {} {} (security version {}), verity root {} over {} blocks: OK",
                        s.slot, s.image, s.version, s.security_version, s.root_hash, s.data_blocks
                    );
                }
                // Each line names the slot, that it is empty, and the
                // signed record that says so.
                for why in &report.empty_slot_evidence {
                    eprintln!("{why}");
                }
                eprintln!(
                    "{}: verified with boot key {}",
                    report.image,
                    slotsmith_sign::fingerprint(&key)
                );
            }
            Ok(())
        }
        Command::Keys(KeysCommand::Generate(a)) => match a.role {
            KeyRole::Boot | KeyRole::Provenance => {
                let role = match a.role {
                    KeyRole::Provenance => "provenance",
                    _ => "boot",
                };
                let (private, public) = slotsmith_sign::generate(&a.out, role)?;
                let key = slotsmith_sign::load_verifying_key(&public)?;
                eprintln!(
                    "wrote {} (private, mode 0600) and {}",
                    private.display(),
                    public.display()
                );
                let fingerprint = slotsmith_sign::fingerprint(&key);
                eprintln!("fingerprint {fingerprint}");
                note_dev_key(project, &a, role, &fingerprint, &private)
            }
            KeyRole::Update => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let issuer = match (&a.ca_cert, &a.ca_key) {
                    (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                    (None, None) => None,
                    _ => {
                        return Err(input_error(
                            "--ca-cert",
                            "give both --ca-cert and --ca-key, or neither",
                        ))
                    }
                };
                let cn = a
                    .common_name
                    .clone()
                    .unwrap_or_else(|| "slotsmith update signer".to_string());
                let (private, cert) = slotsmith_cms::generate_update_key(
                    &a.out,
                    "update",
                    &cn,
                    now.saturating_sub(3600),
                    a.days,
                    issuer,
                )?;
                eprintln!(
                    "wrote {} (private, mode 0600) and {}",
                    private.display(),
                    cert.display()
                );
                eprintln!(
                    "the certificate is {}; devices trust {} (swupdate -k)",
                    if issuer.is_some() {
                        "issued by the given CA"
                    } else {
                        "self-signed"
                    },
                    if issuer.is_some() {
                        "the CA certificate"
                    } else {
                        "this certificate"
                    }
                );
                let fingerprint = slotsmith_cms::cert_fingerprint(&cert)?;
                eprintln!("fingerprint {fingerprint}");
                note_dev_key(project, &a, "update", &fingerprint, &private)
            }
            KeyRole::Secureboot => {
                if a.ca_cert.is_some() || a.ca_key.is_some() {
                    return Err(input_error(
                        "--ca-cert",
                        "the secureboot role makes self-signed PK, KEK and db certificates; \
                         --ca-cert and --ca-key are for the update role",
                    ));
                }
                let prefix = a.common_name.as_deref().unwrap_or("slotsmith");
                let made = slotsmith::secureboot::generate(&a.out, prefix, a.days)?;
                for key in &made {
                    eprintln!(
                        "wrote {} (private, mode 0600) and {}",
                        key.key.display(),
                        key.cert.display()
                    );
                    eprintln!("{} fingerprint {}", key.name, key.fingerprint);
                }
                eprintln!(
                    "db signs the EFI binaries, KEK signs db updates, PK signs KEK and itself; \
                     keep the PK and KEK private keys offline (the build needs them only for \
                     the signed .auth variables)"
                );
                for key in &made {
                    note_dev_key(
                        project,
                        &a,
                        slotsmith::secureboot::keys::ROLE,
                        &key.fingerprint,
                        &key.key,
                    )?;
                }
                Ok(())
            }
        },
        Command::Audit(a) => audit::run(a, project),
        Command::Qemu(a) => qemu::run(a, project),
        Command::Stick(a) => qemu::stick(a),
        Command::Lint(a) => lint::lint(match a.root {
            Some(r) => r,
            None => require_project(project)?,
        }),
        Command::Bench(a) => bench::run(a, project).map_err(Failure::Build),
        Command::Repro(a) => repro::run(a, project),
        Command::Flash(a) => flash::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Lock(a) => lock::run(a, project),
    }
}
