//! Test fixtures for the stage tests: a tiny project in a temporary
//! directory (a base tarball written by the test, an image file, an
//! optional layer and the repository's policies), loaded and planned with
//! the real `load` and `plan`, and the stages before the one under test run
//! for real, so each test checks one stage's contract on a real input.
//!
//! Everything is small (a few dozen entries, 16 MiB slots) so the whole set
//! runs in seconds. External tools run through [`crate::tool::Tool`]; a
//! missing one is an error, so the test fails rather than skips.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest;
use slotsmith_rootfs::tree::Tree;

use super::boot::BootOut;
use super::cache::Cache;
use super::disk::DiskOut;
use super::rootfs::RootfsImage;
use super::update::SwuOut;
use super::{BuildOptions, BuildRecord};
use crate::plan::Plan;
use crate::progress::{Mode, Progress, SharedBuffer, SystemClock};
use crate::signing::{BootSigner, UpdateSigner};

/// The image's name (and so its output and work directory names).
pub(super) const NAME: &str = "tiny";

/// The stand-in kernel in the base: big enough to span several reads,
/// small enough to stay fast.
pub(super) fn kernel_bytes() -> Vec<u8> {
    (0..40_000u32)
        .flat_map(|i| (i ^ 0x5a5a_a5a5).to_le_bytes())
        .collect()
}

/// The stand-in initrd in the base.
pub(super) const INITRD: &[u8] = b"initrd stand-in\n";

/// `/etc/passwd` in the base.
pub(super) const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n";

/// A file capability (cap_net_raw+ep, v2) on `/usr/bin/ping` in the base.
pub(super) const CAP_NET_RAW_EP: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// What the tiny project holds besides the base.
#[derive(Default, Clone)]
pub(super) struct Setup {
    /// ext4 slots instead of squashfs.
    pub(super) ext4: bool,
    /// The repository's policies, in the production profile.
    pub(super) policies: bool,
    /// A layer `meta-test`.
    pub(super) layer: Option<LayerSetup>,
    /// Text appended to the image file.
    pub(super) image_yaml: String,
}

/// The layer `meta-test`.
#[derive(Default, Clone)]
pub(super) struct LayerSetup {
    /// Text appended to its `conf/layer.yaml` after the header.
    pub(super) conf: String,
    /// Its files: absolute path in the rootfs, contents.
    pub(super) files: Vec<(String, Vec<u8>)>,
}

impl Setup {
    /// With ext4 slots.
    pub(super) fn ext4(mut self) -> Setup {
        self.ext4 = true;
        self
    }

    /// With every policy of the repository, production profile.
    pub(super) fn policies(mut self) -> Setup {
        self.policies = true;
        self
    }

    /// With more keys in the image file.
    pub(super) fn image_yaml(mut self, yaml: &str) -> Setup {
        self.image_yaml.push_str(yaml);
        self
    }

    /// With the layer `meta-test`.
    pub(super) fn layer(mut self, conf: &str, files: &[(&str, &[u8])]) -> Setup {
        self.layer = Some(LayerSetup {
            conf: conf.to_string(),
            files: files
                .iter()
                .map(|(p, b)| (p.to_string(), b.to_vec()))
                .collect(),
        });
        self
    }
}

/// A planned tiny project and the directories a build uses.
pub(super) struct Fixture {
    /// The project (removed on drop).
    pub(super) dir: tempfile::TempDir,
    /// The plan of `images/tiny.yaml`.
    pub(super) plan: Plan,
    /// Project root, out/, work/ and the Debian cache.
    pub(super) opts: BuildOptions,
    /// `work/tiny/`, as `build` makes it.
    pub(super) work: PathBuf,
    /// `work/tiny/store/`, the content store of the import.
    pub(super) store: PathBuf,
    /// A staging directory for the outputs.
    pub(super) out: PathBuf,
    /// The stage cache of this project.
    pub(super) cache: Cache,
    /// Progress in plain mode, captured into `log`.
    pub(super) progress: Progress,
    /// Everything `progress` printed.
    pub(super) log: SharedBuffer,
}

impl Fixture {
    /// Writes, loads and plans the project.
    pub(super) fn new(setup: Setup) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("slotsmith-stage-")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        for d in ["images", "layers", "policies", "fixtures", "keys"] {
            fs::create_dir(root.join(d)).unwrap();
        }
        fs::write(root.join("fixtures/base.tar"), base_tarball()).unwrap();
        let mut layers = String::new();
        if let Some(LayerSetup { conf, files }) = &setup.layer {
            let l = root.join("layers/meta-test");
            fs::create_dir_all(l.join("conf")).unwrap();
            fs::write(
                l.join("conf/layer.yaml"),
                format!(
                    "collection: test\npriority: 7\nversion: 1\nseries-compat: [anvil]\n{conf}"
                ),
            )
            .unwrap();
            for (p, bytes) in files {
                let f = l.join("files").join(p.trim_start_matches('/'));
                fs::create_dir_all(f.parent().unwrap()).unwrap();
                fs::write(f, bytes).unwrap();
            }
            layers.push_str("  - meta-test\n");
        }
        let mut image = format!(
            "name: {NAME}\nversion: 2.1.0\narch: x86-64\nboard: test-board\n\
             hardware-compatibility: [\"1.0\"]\nsource-date-epoch: 1700000000\n\
             base:\n  tarball: fixtures/base.tar\nlayers:\n{layers}rootfs:\n  filesystem: {}\n\
             layout:\n  alignment: 1MiB\n  esp: 16MiB\n  slot: 16MiB\n  data: 16MiB\n  fill-slot-b: true\n",
            if setup.ext4 { "ext4" } else { "squashfs" }
        );
        if setup.policies {
            let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
            for e in fs::read_dir(&repo).unwrap() {
                let e = e.unwrap();
                fs::copy(e.path(), root.join("policies").join(e.file_name())).unwrap();
            }
            image.push_str(
                "profile: production\npolicies: [network, kernel, services, ssh, accounts, files]\n",
            );
        }
        image.push_str(&setup.image_yaml);
        fs::write(root.join(format!("images/{NAME}.yaml")), image).unwrap();
        let plan = plan_of(&root);
        let opts = BuildOptions {
            project_root: root.clone(),
            out_root: root.join("out"),
            work_root: root.join("work"),
            cache_dir: root.join("cache"),
            deb_cache: root.join("cache/debs"),
            no_cache: false,
            init_binary: None,
            updater_binary: None,
        };
        let work = opts.work_root.join(NAME);
        let store = work.join("store");
        fs::create_dir_all(&store).unwrap();
        let out = root.join("staging");
        fs::create_dir(&out).unwrap();
        let cache = Cache::new(&opts.work_root, NAME, true);
        let log = SharedBuffer::new();
        let progress = Progress::capture(Mode::Plain, log.clone(), Arc::new(SystemClock));
        Fixture {
            dir,
            plan,
            opts,
            work,
            store,
            out,
            cache,
            progress,
            log,
        }
    }

    /// The project root.
    pub(super) fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Loads and plans the project again (after a test changed an input).
    pub(super) fn replan(&mut self) {
        self.plan = plan_of(self.dir.path());
    }

    /// A fresh, empty output directory beside the staging one.
    pub(super) fn fresh_out(&self, name: &str) -> PathBuf {
        let p = self.root().join(name);
        fs::create_dir(&p).unwrap();
        p
    }

    /// The tree after the base, harden and layers stages.
    pub(super) fn tree(&mut self) -> Tree {
        let mut tree =
            super::base::stage(&self.plan, &self.opts, &self.store, &mut self.progress).unwrap();
        super::harden::stage(&self.plan, &mut tree, &self.store, &mut self.progress).unwrap();
        super::layers::stage(&self.plan, &self.opts, &mut tree, &mut self.progress).unwrap();
        tree
    }

    /// The slot image in `out`, made from [`Fixture::tree`] (and cached).
    pub(super) fn rootfs_in(&mut self, out: &Path) -> RootfsImage {
        let mut tree = self.tree();
        let key = super::rootfs::key(&self.plan, serde_json::Value::Null).unwrap();
        super::rootfs::stage(
            &self.plan,
            &self.opts,
            "",
            &mut tree,
            key.as_ref(),
            &self.cache,
            &self.work,
            out,
            &mut self.progress,
        )
        .unwrap()
    }

    /// The slot image in the staging directory.
    pub(super) fn rootfs(&mut self) -> RootfsImage {
        let out = self.out.clone();
        self.rootfs_in(&out)
    }

    /// The development boot signer of the project (generated on first use).
    pub(super) fn boot_signer(&mut self) -> BootSigner {
        crate::signing::boot_signer(&self.plan, self.dir.path(), &mut self.progress).unwrap()
    }

    /// The development update signer of the project (generated on first use).
    pub(super) fn update_signer(&mut self) -> UpdateSigner {
        crate::signing::update_signer(&self.plan, self.dir.path(), &mut self.progress).unwrap()
    }

    /// Every stage after the rootfs up to `record` (audit, boot, update,
    /// disk), into the staging directory.
    pub(super) fn made(&mut self) -> Made {
        let boot_signer = self.boot_signer();
        let update_signer = self.update_signer();
        let out = self.out.clone();
        let rootfs = self.rootfs();
        let p = &mut self.progress;
        super::audit::stage(&self.plan, &rootfs, &out, &self.work, p).unwrap();
        let sbom = super::sbom::stage(&self.plan, &self.opts, &rootfs, &out, p).unwrap();
        let boot =
            super::boot::stage(&self.plan, &rootfs, &boot_signer, &self.cache, &out, p).unwrap();
        let swu = super::update::stage(
            &self.plan,
            &rootfs,
            &boot,
            &sbom,
            &update_signer,
            &self.cache,
            &self.work,
            &out,
            p,
        )
        .unwrap();
        let disk =
            super::disk::stage(&self.plan, &rootfs, &boot, &sbom, &self.cache, &out, p).unwrap();
        Made {
            rootfs,
            boot,
            swu,
            disk,
            sbom,
            boot_signer,
            provenance_signer: crate::signing::provenance_signer(
                &self.plan,
                self.dir.path(),
                &mut self.progress,
            )
            .unwrap(),
        }
    }

    /// Every stage up to and including `record`, into the staging directory.
    pub(super) fn staged(&mut self) -> (Made, BuildRecord) {
        let made = self.made();
        let record = super::record::stage(
            &self.plan,
            &made.rootfs,
            &made.boot,
            &made.swu,
            &made.disk,
            &made.sbom,
            &made.boot_signer,
            &made.provenance_signer,
            &super::inputs::inputs(&self.plan, self.dir.path()).unwrap(),
            &self.out,
            &mut self.progress,
        )
        .unwrap();
        (made, record)
    }
}

/// A boot signer with a fresh key of its own, generated in `dir`.
pub(super) fn other_boot_signer(dir: &Path) -> BootSigner {
    let (private, _) = slotsmith_sign::keys::generate(dir, "other").unwrap();
    let sk = slotsmith_sign::keys::load_signing_key(&private).unwrap();
    let public_key = sk.verifying_key();
    BootSigner {
        signer: Box::new(slotsmith_sign::KeySigner::new(sk)),
        public_key,
    }
}

/// What the stages before `record` made.
pub(super) struct Made {
    pub(super) rootfs: RootfsImage,
    pub(super) boot: BootOut,
    pub(super) swu: SwuOut,
    pub(super) disk: DiskOut,
    /// The SBOM's hash.
    pub(super) sbom: super::Hashed,
    pub(super) boot_signer: BootSigner,
    pub(super) provenance_signer: BootSigner,
}

fn plan_of(root: &Path) -> Plan {
    let loaded = crate::load::load_image(&root.join(format!("images/{NAME}.yaml")))
        .unwrap_or_else(|d| panic!("the fixture does not load:\n{d}"));
    crate::plan::plan(&loaded, None).unwrap_or_else(|d| panic!("the fixture does not plan:\n{d}"))
}

/// sha256 of a file, read here (not through the code under test).
pub(super) fn sha256_of(path: &Path) -> [u8; 32] {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().into()
}

/// Runs an external tool; its standard output, or the error (a missing
/// tool is one: tests never skip).
pub(super) fn try_run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = crate::tool::Tool::new(program)?.args(args).run()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs an external tool that must succeed; its standard output.
pub(super) fn run(program: &str, args: &[&str]) -> String {
    try_run(program, args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Flips every bit of the byte at `offset` of `path`, in place.
pub(super) fn flip(path: &Path, offset: u64) {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[!b[0]]).unwrap();
}

/// The paths of the fixture base, as the tree names them.
pub(super) const BASE_PATHS: &[&str] = &[
    "bin",
    "bin/sh",
    "boot",
    "boot/initrd.img-6.1.0-test",
    "boot/vmlinuz-6.1.0-test",
    "dev",
    "dev/console",
    "etc",
    "etc/mtab",
    "etc/passwd",
    "etc/shadow",
    "lib",
    "lib/systemd",
    "lib/systemd/system",
    "lib/systemd/system/nftables.service",
    "tmp",
    "usr",
    "usr/bin",
    "usr/bin/ping",
    "usr/bin/su",
    "usr/bin/sudo-alias",
    "usr/lib",
    "var",
    "var/lib",
    "var/lib/svc.db",
];

/// A small root-owned base like a real rootfs, as an uncompressed ustar
/// archive written here byte by byte (so the importer is checked against
/// an independent writer): directories, a setuid-root `su`, a device node,
/// symlinks, a hardlink, a file with `security.capability` (a PAX record),
/// a service account's file, a kernel and an initrd. Every mtime is later
/// than the image's epoch, so the build must clamp it.
pub(super) fn base_tarball() -> Vec<u8> {
    let mut t = Ustar::default();
    t.entry("./", b'5', 0o755, 0, &[], "", (0, 0));
    for d in [
        "bin",
        "boot",
        "dev",
        "etc",
        "lib",
        "lib/systemd",
        "lib/systemd/system",
        "tmp",
        "usr",
        "usr/bin",
        "usr/lib",
        "var",
        "var/lib",
    ] {
        let mode = if d == "tmp" { 0o1777 } else { 0o755 };
        t.entry(&format!("./{d}/"), b'5', mode, 0, &[], "", (0, 0));
    }
    let file = |t: &mut Ustar, p: &str, mode: u32, uid: u32, data: &[u8]| {
        t.entry(p, b'0', mode, uid, data, "", (0, 0))
    };
    file(&mut t, "./etc/passwd", 0o644, 0, PASSWD);
    file(
        &mut t,
        "./etc/shadow",
        0o640,
        0,
        b"root:*:19000:0:99999:7:::\n",
    );
    file(&mut t, "./usr/bin/su", 0o4755, 0, b"#!/bin/sh\necho su\n");
    // The firewall's unit, so the hardening baseline can enable it.
    file(
        &mut t,
        "./lib/systemd/system/nftables.service",
        0o644,
        0,
        b"[Unit]\nDescription=nftables\n[Service]\nType=oneshot\nExecStart=/usr/sbin/nft -f /etc/nftables.conf\n[Install]\nWantedBy=sysinit.target\n",
    );
    file(
        &mut t,
        "./boot/vmlinuz-6.1.0-test",
        0o644,
        0,
        &kernel_bytes(),
    );
    file(&mut t, "./boot/initrd.img-6.1.0-test", 0o644, 0, INITRD);
    t.pax(&[("SCHILY.xattr.security.capability", &CAP_NET_RAW_EP)]);
    file(&mut t, "./usr/bin/ping", 0o755, 0, b"\x7fELF fake ping\n");
    t.entry("./dev/console", b'3', 0o600, 0, &[], "", (5, 1));
    t.entry("./bin/sh", b'2', 0o777, 0, &[], "../usr/bin/su", (0, 0));
    t.entry(
        "./etc/mtab",
        b'2',
        0o777,
        0,
        &[],
        "/proc/self/mounts",
        (0, 0),
    );
    t.entry(
        "./usr/bin/sudo-alias",
        b'1',
        0o4755,
        0,
        &[],
        "./usr/bin/su",
        (0, 0),
    );
    file(&mut t, "./var/lib/svc.db", 0o600, 107, b"db\n");
    t.finish()
}

/// A minimal ustar writer (POSIX.1-1988 headers, PAX `x` records).
#[derive(Default)]
struct Ustar {
    bytes: Vec<u8>,
}

impl Ustar {
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        name: &str,
        kind: u8,
        mode: u32,
        uid: u32,
        data: &[u8],
        link: &str,
        dev: (u32, u32),
    ) {
        let mut h = [0u8; 512];
        let put = |h: &mut [u8; 512], at: usize, s: &[u8]| h[at..at + s.len()].copy_from_slice(s);
        let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        assert!(name.len() < 100 && link.len() < 100);
        put(&mut h, 0, name.as_bytes());
        octal(&mut h, 100, 8, mode.into());
        octal(&mut h, 108, 8, uid.into());
        octal(&mut h, 116, 8, uid.into());
        octal(&mut h, 124, 12, data.len() as u64);
        octal(&mut h, 136, 12, 2_000_000_000);
        h[156] = kind;
        put(&mut h, 157, link.as_bytes());
        put(&mut h, 257, b"ustar\x0000");
        octal(&mut h, 329, 8, dev.0.into());
        octal(&mut h, 337, 8, dev.1.into());
        // The checksum is over the header with its own field as spaces.
        put(&mut h, 148, b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
        self.bytes.extend_from_slice(&h);
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    /// A PAX extended header for the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) {
        let mut body = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n", where <len> counts its own digits.
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.entry("./PaxHeaders/next", b'x', 0o644, 0, &body, "", (0, 0));
    }

    fn pad(&mut self) {
        let n = self.bytes.len().next_multiple_of(512);
        self.bytes.resize(n, 0);
    }

    fn finish(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0u8; 1024]);
        self.bytes
    }
}

/// The node at `p` in `tree` (a test failure when it is missing).
pub(super) fn node<'a>(tree: &'a Tree, p: &str) -> &'a slotsmith_rootfs::tree::Node {
    tree.get(&slotsmith_rootfs::path::RelPath::parse(p).unwrap())
        .unwrap_or_else(|| panic!("{p} is not in the tree"))
}

/// The bytes of the regular file at `p`, read as the build reads them.
pub(super) fn contents(tree: &Tree, p: &str) -> Vec<u8> {
    match &node(tree, p).kind {
        slotsmith_rootfs::tree::Kind::File { content, size } => {
            let mut v = Vec::new();
            content.open(*size).unwrap().read_to_end(&mut v).unwrap();
            v
        }
        other => panic!("{p} is a {other:?}, not a file"),
    }
}
