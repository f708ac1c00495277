//! End-to-end checks against the real SWUpdate agent (Debian 2022.12): our
//! `.swu` files must install on it, and it must reject tampered ones.
//!
//! Each test builds its own sandbox, following the tested harness of the
//! project's SWUpdate reference (section 5): file-backed A/B slots, a
//! directory standing in for the mounted boot partition, and a U-Boot env in
//! a file, found by libubootenv through `/etc/fw_env.config`, which only
//! exists in a private mount namespace (`unshare -m` plus an overlay on
//! `/etc`), so the host is never touched. `TMPDIR` is per test, which also
//! separates SWUpdate's IPC sockets, so the tests can run in parallel.
//!
//! The signature is made with `openssl cms` here, not by the project's CMS
//! signer, so that these tests check the container and description alone.
//! Needs root (for `unshare -m` and `mount`), swupdate, libubootenv-tool,
//! openssl and GNU cpio. A missing tool fails loudly instead of skipping,
//! because a silently skipped compatibility test proves nothing.

use slotsmith_swu::{
    prepare_payload, read_swu, write_swu_members, Bootloader, Collection, PayloadCompression,
    PreparedPayload, SwDescription, Target,
};
use std::fs;
use std::path::{Path, PathBuf};

const SLOT_SIZE: u64 = 4 << 20;
const VERITY_SLOT_SIZE: u64 = 512 << 10;
/// Env the bootloader would boot with before any update.
const INITIAL_ENV: &str = "slotsmith_slot=a\nbootcount=0\n";

/// Deterministic pseudo-random data, so failures reproduce.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs a program, returning (exit code, stdout+stderr).
fn run(program: &str, args: &[&str]) -> (i32, String) {
    let out = duct::cmd(program, args)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); see this file's header"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let (rc, out) = run(program, args);
    assert_eq!(rc, 0, "{program} {args:?} failed:\n{out}");
    out
}

/// One artifact of one slot.
struct Artifact {
    name: String,
    source: PathBuf,
    target: Target,
    prepared: PreparedPayload,
}

struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let sb = Sandbox { _dir: dir, root };
        let key = sb.p("key.pem");
        let cert = sb.p("cert.pem");
        run_ok(
            "openssl",
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                s(&key),
            ],
        );
        run_ok(
            "openssl",
            &[
                "req",
                "-new",
                "-x509",
                "-key",
                s(&key),
                "-out",
                s(&cert),
                "-days",
                "3650",
                "-subj",
                "/CN=swu-test",
            ],
        );
        for slot in ["a", "b"] {
            let f = fs::File::create(sb.p(&format!("slot{slot}.img"))).unwrap();
            f.set_len(SLOT_SIZE).unwrap();
            let f = fs::File::create(sb.p(&format!("verity{slot}.img"))).unwrap();
            f.set_len(VERITY_SLOT_SIZE).unwrap();
        }
        fs::write(sb.p("uboot.env"), vec![0u8; 0x4000]).unwrap();
        for d in ["etc-up", "etc-work", "tmp", "art", "boot"] {
            fs::create_dir(sb.p(d)).unwrap();
        }
        fs::write(
            sb.p("etc-up/fw_env.config"),
            format!("{} 0x0 0x4000\n", s(&sb.p("uboot.env"))),
        )
        .unwrap();
        // libubootenv's default env while the env's CRC is still invalid.
        fs::write(sb.p("etc-up/u-boot-initial-env"), INITIAL_ENV).unwrap();
        sb
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes the artifacts of `slot` (different content per slot) and
    /// prepares them: rootfs and verity into the slot files, kernel,
    /// manifest and its signature into `boot/<slot>/`. Sizes are not
    /// multiples of 4, to exercise the cpio padding.
    fn artifacts(&self, slot: &str, zstd: bool) -> Vec<Artifact> {
        let seed = if slot == "a" { 100 } else { 200 };
        let boot = self.p(&format!("boot/{slot}"));
        let specs: Vec<(String, Vec<u8>, Target)> = vec![
            (
                format!("rootfs-{slot}.img"),
                // Half random, half zero, so that zstd has something to do.
                [data(3 << 19, seed), vec![0u8; (3 << 19) + 5]].concat(),
                Target::Raw {
                    device: s(&self.p(&format!("slot{slot}.img"))).into(),
                },
            ),
            (
                format!("verity-{slot}.img"),
                data((256 << 10) + 3, seed + 1),
                Target::Raw {
                    device: s(&self.p(&format!("verity{slot}.img"))).into(),
                },
            ),
            (
                format!("vmlinuz-{slot}"),
                data((100 << 10) + 1, seed + 2),
                Target::File {
                    path: s(&boot.join("vmlinuz")).into(),
                },
            ),
            (
                format!("manifest-{slot}.json"),
                format!("{{\"slot\": \"{slot}\"}}\n").into_bytes(),
                Target::File {
                    path: s(&boot.join("manifest.json")).into(),
                },
            ),
            (
                format!("manifest-{slot}.json.sig"),
                data(71, seed + 3),
                Target::File {
                    path: s(&boot.join("manifest.json.sig")).into(),
                },
            ),
        ];
        specs
            .into_iter()
            .map(|(name, bytes, target)| {
                let source = self.p(&format!("art/{name}"));
                fs::write(&source, bytes).unwrap();
                let how = if zstd {
                    PayloadCompression::Zstd {
                        level: 3,
                        output: self.p(&format!("art/{name}.zst")),
                    }
                } else {
                    PayloadCompression::None
                };
                let prepared = prepare_payload(&source, &how).unwrap();
                Artifact {
                    name,
                    source,
                    target,
                    prepared,
                }
            })
            .collect()
    }

    /// Builds the A/B description for both slots' artifacts.
    fn description(&self, version: &str, slots: &[(&str, &[Artifact])]) -> SwDescription {
        SwDescription {
            name: "slotsmith test \"update\"".into(),
            version: version.into(),
            hardware_compatibility: vec!["1.0".into()],
            security_version: None,
            collections: slots
                .iter()
                .map(|(slot, arts)| {
                    let payloads = arts
                        .iter()
                        .map(|a| a.prepared.payload(&a.name, a.target.clone()))
                        .collect();
                    Collection::ab(slot, Bootloader::UBoot, payloads).unwrap()
                })
                .collect(),
        }
    }

    /// Signs `text` like a release would (detached, binary, DER, P-256).
    fn sign(&self, text: &str) -> Vec<u8> {
        let desc = self.p("sw-description");
        let sig = self.p("sw-description.sig");
        fs::write(&desc, text).unwrap();
        run_ok(
            "openssl",
            &[
                "cms",
                "-sign",
                "-in",
                s(&desc),
                "-out",
                s(&sig),
                "-signer",
                s(&self.p("cert.pem")),
                "-inkey",
                s(&self.p("key.pem")),
                "-outform",
                "DER",
                "-nosmimecap",
                "-binary",
                "-md",
                "sha256",
            ],
        );
        fs::read(sig).unwrap()
    }

    /// Builds, signs and writes `update.swu` with both slots.
    fn build(&self, version: &str, zstd: bool) -> (PathBuf, Vec<Artifact>, Vec<Artifact>) {
        let a = self.artifacts("a", zstd);
        let b = self.artifacts("b", zstd);
        let desc = self.description(version, &[("a", &a), ("b", &b)]);
        let text = desc.to_libconfig().unwrap();
        let sig = self.sign(&text);
        let swu = self.write(&text, &sig, a.iter().chain(&b));
        (swu, a, b)
    }

    fn write<'a>(
        &self,
        text: &str,
        sig: &[u8],
        arts: impl Iterator<Item = &'a Artifact>,
    ) -> PathBuf {
        let members: Vec<_> = arts.map(|a| a.prepared.archive_member(&a.name)).collect();
        let swu = self.p("update.swu");
        write_swu_members(
            fs::File::create(&swu).unwrap(),
            text.as_bytes(),
            sig,
            &members,
        )
        .unwrap();
        swu
    }

    /// Installs `swu` into slot B with the real agent, in a private mount
    /// namespace whose `/etc` carries our fw_env.config.
    fn swupdate(&self, swu: &Path, extra: &str) -> (i32, String) {
        self.swupdate_on(swu, "pump:1.0", extra)
    }

    /// [`Sandbox::swupdate`] on a device with hardware `board:revision`.
    fn swupdate_on(&self, swu: &Path, hw: &str, extra: &str) -> (i32, String) {
        self.swupdate_with("uboot", "/etc", "etc", swu, hw, extra)
    }

    /// Runs the agent with bootloader interface `bootloader`, whose env
    /// lives under `dir`, overlaid from `<upper>-up` in the sandbox.
    fn swupdate_with(
        &self,
        bootloader: &str,
        dir: &str,
        upper: &str,
        swu: &Path,
        hw: &str,
        extra: &str,
    ) -> (i32, String) {
        let script = format!(
            "mount --make-rprivate / && \
             mount -t overlay overlay -o lowerdir={dir},upperdir={up},workdir={work} {dir} && \
             TMPDIR={tmp} swupdate -v -B {bootloader} -k {cert} -H {hw} -e stable,copy2 {extra} -i {swu}",
            up = s(&self.p(&format!("{upper}-up"))),
            work = s(&self.p(&format!("{upper}-work"))),
            tmp = s(&self.p("tmp")),
            cert = s(&self.p("cert.pem")),
            swu = s(swu),
        );
        // A private PID namespace too: when the shell (its first process)
        // exits, the kernel kills any SWUpdate helper still running, which
        // could otherwise hold our output pipe open forever (seen after a
        // rejected install). `timeout` bounds a hung agent.
        run(
            "timeout",
            &[
                "--kill-after=10",
                "300",
                "unshare",
                "-m",
                "-p",
                "--fork",
                "sh",
                "-c",
                &script,
            ],
        )
    }

    /// The env as the bootloader would see it.
    fn env(&self) -> String {
        let (rc, out) = run("fw_printenv", &["-c", s(&self.p("etc-up/fw_env.config"))]);
        if rc != 0 {
            // Never written: the CRC is invalid and the host has no default.
            return String::new();
        }
        out
    }

    fn assert_zero(&self, rel: &str) {
        let d = fs::read(self.p(rel)).unwrap();
        assert!(d.iter().all(|&b| b == 0), "{rel} was written");
    }

    /// Slot A and its boot files untouched, env not switched to B.
    fn assert_not_switched(&self) {
        self.assert_zero("slota.img");
        self.assert_zero("veritya.img");
        assert!(
            !self.p("boot/a").exists(),
            "boot files of slot A were written"
        );
        let env = self.env();
        assert!(
            !env.lines().any(|l| l == "slotsmith_slot=b"),
            "env switched:\n{env}"
        );
    }
}

impl Sandbox {
    /// SWUpdate's transaction marker after a failure in mid-stream: the
    /// bootloader can see that an update was interrupted.
    fn assert_interrupted(&self) {
        let env = self.env();
        for line in [
            "slotsmith_slot=a",
            "recovery_status=in_progress",
            "ustate=7",
        ] {
            assert!(
                env.lines().any(|l| l == line),
                "{line} missing from env:\n{env}"
            );
        }
    }
}

fn assert_slot_holds(slot: &Path, image: &Path) {
    let slot = fs::read(slot).unwrap();
    let image = fs::read(image).unwrap();
    assert_eq!(&slot[..image.len()], &image[..], "slot content differs");
    assert!(slot[image.len()..].iter().all(|&b| b == 0));
}

fn assert_installed_b(sb: &Sandbox, rc: i32, log: &str, b: &[Artifact]) {
    assert_eq!(rc, 0, "swupdate failed:\n{log}");
    assert!(log.contains("SWUpdate was successful"), "{log}");
    for art in b {
        match &art.target {
            Target::Raw { device } => assert_slot_holds(Path::new(device), &art.source),
            Target::File { path } => assert_eq!(
                fs::read(path).unwrap(),
                fs::read(&art.source).unwrap(),
                "{path}"
            ),
            Target::PartitionFile { .. } => {
                panic!("the sandbox has no block devices to mount: covered by the QEMU boot tests")
            }
        }
    }
    sb.assert_zero("slota.img");
    sb.assert_zero("veritya.img");
    assert!(!sb.p("boot/a").exists());
    // atomic-install leaves no temporary behind.
    let mut names: Vec<_> = fs::read_dir(sb.p("boot/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["manifest.json", "manifest.json.sig", "vmlinuz"]);
    let env = sb.env();
    for line in [
        "slotsmith_slot=b",
        "upgrade_available=1",
        "bootcount=0",
        "ustate=1",
    ] {
        assert!(
            env.lines().any(|l| l == line),
            "{line} missing from env:\n{env}"
        );
    }
    assert!(!env.contains("recovery_status"), "{env}");
}

#[test]
fn installs_ab_update_into_slot_b() {
    let sb = Sandbox::new();
    let (swu, _a, b) = sb.build("1.2.3", false);
    read_swu(&swu).unwrap();
    let (rc, log) = sb.swupdate(&swu, "");
    assert_installed_b(&sb, rc, &log, &b);
    // The rawfile targets are extracted to TMPDIR and hash-checked first.
    assert!(log.contains("Installing file"), "{log}");
}

#[test]
fn installs_zstd_payloads() {
    let sb = Sandbox::new();
    let (swu, _a, b) = sb.build("1.2.3", true);
    let c = read_swu(&swu).unwrap();
    assert!(c.sw_description.contains("compressed = \"zstd\";"));
    let rootfs = &b[0].prepared;
    assert!(
        rootfs.size() < rootfs.source_size / 2 + 4096,
        "zstd did not compress"
    );
    let (rc, log) = sb.swupdate(&swu, "");
    assert_installed_b(&sb, rc, &log, &b);
}

#[test]
fn gnu_cpio_reads_our_archive() {
    let sb = Sandbox::new();
    let (swu, a, b) = sb.build("1.2.3", false);
    let listing = duct::cmd("cpio", ["-itv", "-H", "crc"])
        .stdin_path(&swu)
        .stderr_to_stdout()
        .read()
        .expect("GNU cpio -itv failed");
    // Entry lines; GNU cpio adds "N blocks" at the end.
    let entries: Vec<&str> = listing
        .lines()
        .filter(|l| !l.ends_with(" blocks"))
        .collect();
    let names: Vec<&str> = entries
        .iter()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let mut expected = vec!["sw-description", "sw-description.sig"];
    expected.extend(a.iter().chain(&b).map(|x| x.name.as_str()));
    assert_eq!(names, expected, "{listing}");
    assert!(
        entries.iter().all(|l| l.starts_with("-rw-r--r--")),
        "{listing}"
    );

    let out = sb.p("extract");
    fs::create_dir(&out).unwrap();
    duct::cmd("cpio", ["-i", "-H", "crc", "--quiet"])
        .dir(&out)
        .stdin_path(&swu)
        .run()
        .expect("GNU cpio -i failed");
    for art in a.iter().chain(&b) {
        assert_eq!(
            fs::read(out.join(&art.name)).unwrap(),
            fs::read(&art.prepared.path).unwrap(),
            "{}",
            art.name
        );
    }
    assert_eq!(
        fs::read(out.join("sw-description")).unwrap(),
        fs::read(sb.p("sw-description")).unwrap()
    );
}

/// Offset of member `name`'s data in the archive.
fn member_offset(swu: &Path, name: &str) -> usize {
    let c = read_swu(swu).unwrap();
    c.entries.iter().find(|e| e.name == name).unwrap().offset as usize
}

/// Flips one byte of member `name` and, if `fix_check`, also repairs the
/// cpio checksum in its header, so that only the signed sha256 can catch it
/// (as an attacker who knows the format would do).
fn tamper(swu: &Path, name: &str, at: usize, fix_check: bool) {
    let off = member_offset(swu, name);
    let mut bytes = fs::read(swu).unwrap();
    let old = bytes[off + at];
    bytes[off + at] = old ^ 0x5a;
    if fix_check {
        // The check field is the last 8 hex digits of the header, which
        // ends before the name and its padding.
        let header = (off - name.len() - 1 - 3..off)
            .rev()
            .find(|&h| bytes[h - 110..h - 104] == *b"070702")
            .map(|h| h - 110)
            .expect("header not found");
        let field = header + 6 + 12 * 8;
        let check = u32::from_str_radix(std::str::from_utf8(&bytes[field..field + 8]).unwrap(), 16)
            .unwrap();
        let fixed = check
            .wrapping_sub(u32::from(old))
            .wrapping_add(u32::from(old ^ 0x5a));
        bytes[field..field + 8].copy_from_slice(format!("{fixed:08x}").as_bytes());
    }
    fs::write(swu, bytes).unwrap();
}

#[test]
fn rejects_flipped_payload_byte() {
    for fix_check in [false, true] {
        let sb = Sandbox::new();
        let (swu, _a, _b) = sb.build("1.2.3", false);
        tamper(&swu, "rootfs-b.img", 1000, fix_check);
        let ours = format!("{:#}", read_swu(&swu).unwrap_err());
        let expected = if fix_check {
            "sha256 mismatch"
        } else {
            "cpio checksum mismatch"
        };
        assert!(ours.contains(expected), "{ours}");
        let (rc, log) = sb.swupdate(&swu, "");
        assert_ne!(rc, 0, "tampered update installed:\n{log}");
        // SWUpdate compares the sha256 before the cpio check, so it reports
        // the hash either way.
        assert!(log.contains("HASH mismatch"), "{log}");
        sb.assert_not_switched();
        sb.assert_interrupted();
    }
}

#[test]
fn rejects_flipped_boot_file_before_writing_it() {
    let sb = Sandbox::new();
    let (swu, _a, _b) = sb.build("1.2.3", false);
    tamper(&swu, "vmlinuz-b", 7, true);
    let (rc, log) = sb.swupdate(&swu, "");
    assert_ne!(rc, 0, "tampered update installed:\n{log}");
    assert!(log.contains("HASH mismatch"), "{log}");
    // Not installed-directly: verified in TMPDIR before any file is touched.
    assert!(!sb.p("boot/b").exists(), "a boot file was written");
    sb.assert_not_switched();
    sb.assert_interrupted();
}

#[test]
fn rejects_edited_sw_description() {
    let sb = Sandbox::new();
    let a = sb.artifacts("a", false);
    let b = sb.artifacts("b", false);
    let text = sb
        .description("1.2.3", &[("a", &a), ("b", &b)])
        .to_libconfig()
        .unwrap();
    let sig = sb.sign(&text);
    let edited = text.replace("1.2.3", "1.2.4");
    let swu = sb.write(&edited, &sig, a.iter().chain(&b));
    let (rc, log) = sb.swupdate(&swu, "");
    assert_ne!(rc, 0, "{log}");
    assert!(log.contains("Signature verification failed"), "{log}");
    sb.assert_zero("slotb.img");
    sb.assert_not_switched();
}

#[test]
fn rejects_wrong_hardware_revision() {
    let sb = Sandbox::new();
    let (swu, _a, _b) = sb.build("1.2.3", false);
    let (rc, log) = sb.swupdate_on(&swu, "board:9.9", "");
    assert_ne!(rc, 0, "{log}");
    assert!(log.contains("SW not compatible with hardware"), "{log}");
    sb.assert_zero("slotb.img");
    sb.assert_not_switched();
}

#[test]
fn rejects_downgrade() {
    let sb = Sandbox::new();
    let (swu, _a, _b) = sb.build("1.2.3", false);
    let (rc, log) = sb.swupdate(&swu, "-N 2.0.0");
    assert_ne!(rc, 0, "{log}");
    assert!(log.contains("No downgrading allowed"), "{log}");
    sb.assert_zero("slotb.img");
    sb.assert_not_switched();
}

#[test]
fn rejects_env_injection_before_it_reaches_the_agent() {
    let sb = Sandbox::new();
    let b = sb.artifacts("b", false);
    let mut desc = sb.description("1.2.3", &[("b", &b)]);
    desc.collections[0]
        .bootenv
        .push(("v4".into(), "x\ninjected=1".into()));
    let err = format!("{:#}", desc.to_libconfig().unwrap_err());
    assert!(err.contains("control character"), "{err}");
}

#[test]
fn installs_with_grub_env() {
    let sb = Sandbox::new();
    // GRUB's env block: fixed 1024 bytes, padded with '#'.
    let mut block = b"# GRUB Environment Block\nslotsmith_slot=a\n".to_vec();
    block.resize(1024, b'#');
    fs::create_dir_all(sb.p("boot-up/grub")).unwrap();
    fs::create_dir(sb.p("boot-work")).unwrap();
    fs::write(sb.p("boot-up/grub/grubenv"), &block).unwrap();

    let b = sb.artifacts("b", false);
    let payloads = b
        .iter()
        .map(|a| a.prepared.payload(&a.name, a.target.clone()))
        .collect();
    let desc = SwDescription {
        name: "grub".into(),
        version: "1.0.0".into(),
        hardware_compatibility: vec!["1.0".into()],
        security_version: None,
        collections: vec![Collection::ab("b", Bootloader::Grub, payloads).unwrap()],
    };
    let text = desc.to_libconfig().unwrap();
    let sig = sb.sign(&text);
    let swu = sb.write(&text, &sig, b.iter());
    let (rc, log) = sb.swupdate_with("grub", "/boot", "boot", &swu, "pump:1.0", "");
    assert_eq!(rc, 0, "{log}");
    assert!(log.contains("SWUpdate was successful"), "{log}");
    let env = fs::read(sb.p("boot-up/grub/grubenv")).unwrap();
    assert_eq!(env.len(), 1024, "grubenv must stay one 1 KiB block");
    let text = String::from_utf8_lossy(&env);
    for line in ["slotsmith_slot=b", "slotsmith_try=1", "ustate=1"] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from grubenv:\n{text}"
        );
    }
    assert_slot_holds(&sb.p("slotb.img"), &b[0].source);
}
