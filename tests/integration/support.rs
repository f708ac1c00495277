//! Shared test helpers: temporary projects, fixture tarballs written at test
//! time (no binary fixtures in git), the CLI as a subprocess, and tools.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The CLI binary built from `tests/src/bin/slotsmith.rs`.
pub fn cli() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_slotsmith"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Fails unless `tool` is installed, naming the Debian package. Tests never
/// skip: CI installs everything in `.ci/packages`.
pub fn require(tool: &str, package: &str) {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d: PathBuf| d.join(tool).is_file());
    assert!(found, "{tool} is required: apt-get install {package}");
}

/// Runs a tool, panicking with its stderr on failure; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = duct::cmd(program, args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Result of a CLI run.
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the CLI. With `as_nobody`, it runs as uid/gid 65534 via setpriv
/// (when the tests run as root; otherwise the tests are already
/// unprivileged). `umask` wraps the call in `sh -c 'umask ...'`.
pub fn slotsmith(
    args: &[&str],
    env: &[(&str, &str)],
    as_nobody: bool,
    umask: Option<&str>,
) -> CliRun {
    let bin = cli();
    let mut argv: Vec<String> = Vec::new();
    let root = rustix::process::geteuid().is_root();
    if as_nobody && root {
        argv.extend(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ]
            .map(String::from),
        );
    }
    if let Some(u) = umask {
        argv.extend([
            "sh".into(),
            "-c".into(),
            format!("umask {u} && exec \"$@\""),
            "sh".into(),
        ]);
    }
    argv.push(bin.to_string_lossy().into_owned());
    argv.extend(args.iter().map(|s| s.to_string()));
    // Standard input is never a terminal: a command that would prompt
    // (flash to a block device) must refuse instead.
    let mut e = duct::cmd(&argv[0], &argv[1..])
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked();
    for (k, v) in env {
        e = e.env(k, v);
    }
    let out = e.run().unwrap();
    CliRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A temporary project directory readable by the unprivileged test user.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        let dir = tempfile::Builder::new()
            .prefix("slotsmith-test-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["images", "layers", "policies", "fixtures", "keys"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    /// A directory the unprivileged build user may write (out/, work/, keys/).
    pub fn writable(&self, rel: &str) -> PathBuf {
        let p = self.path().join(rel);
        fs::create_dir_all(&p).unwrap();
        if rustix::process::geteuid().is_root() {
            rustix::fs::chown(
                &p,
                Some(rustix::process::Uid::from_raw(65534)),
                Some(rustix::process::Gid::from_raw(65534)),
            )
            .unwrap();
        }
        p
    }

    /// Lets the unprivileged build user create the development keys.
    pub fn dev_keys_writable(&self) {
        self.writable("keys");
    }

    pub fn image(&self, name: &str) -> PathBuf {
        self.path().join("images").join(format!("{name}.yaml"))
    }
}

/// A file capability: cap_net_raw+ep, as a v2 `security.capability` value.
pub const CAP_NET_RAW_EP: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn header(path: &str, kind: tar::EntryType, mode: u32, uid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_path(path).unwrap();
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_mtime(2_000_000_000); // later than every test epoch: must be clamped
    h.set_size(size);
    h
}

/// Writes a small root-owned base tarball like a real rootfs: directories,
/// a setuid-root `su`, a device node, symlinks, a hardlink and a file with
/// `security.capability`. Gzip-compressed, as a Yocto deploy would be.
pub fn base_tarball(path: &Path) {
    let f = fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let dir = |b: &mut tar::Builder<_>, p: &str, mode: u32| {
        let mut h = header(p, tar::EntryType::Directory, mode, 0, 0);
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    };
    let file = |b: &mut tar::Builder<_>, p: &str, mode: u32, data: &[u8]| {
        let mut h = header(p, tar::EntryType::Regular, mode, 0, data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    dir(&mut b, "./", 0o755);
    for d in [
        "bin", "dev", "etc", "tmp", "usr", "usr/bin", "usr/lib", "var", "var/lib",
    ] {
        dir(
            &mut b,
            &format!("./{d}/"),
            if d == "tmp" { 0o1777 } else { 0o755 },
        );
    }
    file(
        &mut b,
        "./etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n",
    );
    file(
        &mut b,
        "./etc/shadow",
        0o640,
        b"root:*:19000:0:99999:7:::\n",
    );
    file(&mut b, "./etc/update-motd.d-placeholder", 0o644, b"x\n");
    file(&mut b, "./usr/bin/su", 0o4755, b"#!/bin/sh\necho su\n");
    // The firewall's unit, so the hardening baseline can enable it.
    file(
        &mut b,
        "./lib/systemd/system/nftables.service",
        0o644,
        b"[Unit]\nDescription=nftables\n[Service]\nType=oneshot\nExecStart=/usr/sbin/nft -f /etc/nftables.conf\n[Install]\nWantedBy=sysinit.target\n",
    );
    // A stand-in kernel and initrd: verified boot hashes and signs them.
    let kernel: Vec<u8> = (0..150_000u32)
        .flat_map(|i| (i ^ 0x5a5a_a5a5).to_le_bytes())
        .collect();
    file(&mut b, "./boot/vmlinuz-6.1.0-test", 0o644, &kernel);
    file(
        &mut b,
        "./boot/initrd.img-6.1.0-test",
        0o644,
        b"initrd stand-in\n",
    );
    let big: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i.wrapping_mul(2654435761)).to_le_bytes())
        .collect();
    file(&mut b, "./usr/lib/libbig.so", 0o644, &big);
    // A file capability, carried as a PAX SCHILY.xattr record.
    b.append_pax_extensions([(
        "SCHILY.xattr.security.capability",
        CAP_NET_RAW_EP.as_slice(),
    )])
    .unwrap();
    file(&mut b, "./usr/bin/ping", 0o755, b"\x7fELF fake ping\n");
    // A character device node: /dev/console is 5:1.
    let mut h = header("./dev/console", tar::EntryType::Char, 0o600, 0, 0);
    h.set_device_major(5).unwrap();
    h.set_device_minor(1).unwrap();
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    // Symlinks: relative and absolute (absolute ones are data, never followed).
    let mut h = header("./bin/sh", tar::EntryType::Symlink, 0o777, 0, 0);
    h.set_link_name("../usr/bin/su").unwrap();
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    let mut h = header("./etc/mtab", tar::EntryType::Symlink, 0o777, 0, 0);
    h.set_link_name("/proc/self/mounts").unwrap();
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    // A hardlink.
    let mut h = header("./usr/bin/sudo-alias", tar::EntryType::Link, 0o4755, 0, 0);
    h.set_link_name("./usr/bin/su").unwrap();
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    // A file owned by a service account.
    let mut h = header("./var/lib/svc.db", tar::EntryType::Regular, 0o600, 107, 3);
    h.set_cksum();
    b.append(&h, &b"db\n"[..]).unwrap();
    b.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

/// A minimal layer: one file, one declared directory with an owner.
pub fn layer(project: &Project, name: &str, collection: &str, priority: i64, extra_yaml: &str) {
    project.write(
        &format!("layers/{name}/conf/layer.yaml"),
        &format!("collection: {collection}\npriority: {priority}\nversion: 1\nseries-compat: [anvil]\n{extra_yaml}"),
    );
}

/// The fixture image file text.
pub fn fixture_image(
    name: &str,
    base: &str,
    layers: &[&str],
    filesystem: &str,
    slot: &str,
) -> String {
    let layers = layers
        .iter()
        .map(|l| format!("  - {l}\n"))
        .collect::<String>();
    format!(
        "name: {name}\nversion: 2.1.0\narch: x86-64\nboard: test-board\nhardware-compatibility: [\"1.0\", \"1.1\"]\n\
source-date-epoch: 1700000000\nbase:\n  tarball: {base}\nlayers:\n{layers}rootfs:\n  filesystem: {filesystem}\n\
layout:\n  alignment: 1MiB\n  esp: 16MiB\n  slot: {slot}\n  data: 16MiB\n  fill-slot-b: true\n"
    )
}

/// sha256 of a file.
pub fn sha256(p: &Path) -> String {
    use sha2::Digest;
    let mut f = fs::File::open(p).unwrap();
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// Extracts `len` bytes at `offset` of `img` into `out`.
pub fn extract(img: &Path, offset: u64, len: u64, out: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut o = fs::File::create(out).unwrap();
    std::io::copy(&mut (&mut f).take(len), &mut o).unwrap();
}

/// SWUpdate 2022.12 has a race in its post-update IPC
/// (`core/install_from_file.c`): the installer logs success, yet the
/// client exits 1. Tests retry only this pattern; the final attempt must
/// still exit 0.
pub fn swupdate_raced(rc: i32, log: &str) -> bool {
    rc != 0 && log.contains("SWUPDATE successful") && !log.contains("ERROR")
}
