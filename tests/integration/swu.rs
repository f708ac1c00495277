//! The `.swu` update, installed by the real SWUpdate agent (Debian
//! 2022.12) into file-backed A/B slots with a U-Boot env through
//! libubootenv, in a private mount namespace, as in the SWUpdate
//! reference's sandbox harness. The host's /etc is never touched: an
//! overlay carries fw_env.config inside `unshare -m`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::*;

const SLOT: u64 = 16 << 20;

struct Sandbox {
    p: Project,
    sb: PathBuf,
    out: PathBuf,
    name: String,
}

impl Sandbox {
    /// Builds a fixture image whose update writes into sandbox files.
    fn build(name: &str, compression: &str) -> Sandbox {
        for (t, pkg) in [
            ("swupdate", "swupdate"),
            ("fw_printenv", "libubootenv-tool"),
            ("unshare", "util-linux"),
        ] {
            require(t, pkg);
        }
        let p = Project::new();
        let sb = p.path().join("sandbox");
        for d in ["etc-up", "etc-work", "tmp", "boot"] {
            fs::create_dir_all(sb.join(d)).unwrap();
        }
        base_tarball(&p.path().join("fixtures/base.tar.gz"));
        let dev = |n: &str| sb.join(n).display().to_string();
        let image = fixture_image(name, "fixtures/base.tar.gz", &[], "squashfs", "16MiB")
            + &format!(
                "update:\n  bootloader: u-boot\n  compression: {compression}\n  boot-mount: {}\n  devices:\n    root-a: {}\n    root-a-verity: {}\n    root-b: {}\n    root-b-verity: {}\n",
                dev("boot"),
                dev("slot-a.img"),
                dev("verity-a.img"),
                dev("slot-b.img"),
                dev("verity-b.img")
            );
        p.write(&format!("images/{name}.yaml"), &image);
        let out = p.path().join("out");
        let r = slotsmith(
            &[
                "build",
                p.image(name).to_str().unwrap(),
                "--out-dir",
                out.to_str().unwrap(),
                "--work-dir",
                p.path().join("work").to_str().unwrap(),
                "--quiet",
            ],
            &[],
            false,
            None,
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        let s = Sandbox {
            p,
            sb,
            out: out.join(name),
            name: name.to_string(),
        };
        s.reset();
        s
    }

    /// Fresh zeroed slots, a blank env and an empty boot directory.
    fn reset(&self) {
        for f in ["slot-a.img", "slot-b.img", "verity-a.img", "verity-b.img"] {
            let _ = fs::remove_file(self.sb.join(f));
            fs::File::create(self.sb.join(f))
                .unwrap()
                .set_len(SLOT)
                .unwrap();
        }
        let _ = fs::remove_dir_all(self.sb.join("boot"));
        fs::create_dir(self.sb.join("boot")).unwrap();
        fs::write(self.sb.join("uboot.env"), vec![0u8; 0x4000]).unwrap();
        fs::write(
            self.sb.join("etc-up/fw_env.config"),
            format!("{} 0x0 0x4000\n", self.sb.join("uboot.env").display()),
        )
        .unwrap();
        fs::write(
            self.sb.join("etc-up/u-boot-initial-env"),
            "slotsmith_slot=a\nbootcount=0\n",
        )
        .unwrap();
    }

    fn swu(&self) -> PathBuf {
        self.out.join(format!("{}-2.1.0.swu", self.name))
    }

    /// Runs swupdate in a private mount namespace; returns (rc, log).
    fn install(&self, swu: &Path, cert: &Path, hw: &str, extra: &str) -> (i32, String) {
        let script = format!(
            "mount --make-rprivate / && mount -t overlay overlay -o lowerdir=/etc,upperdir={up},workdir={work} /etc && \
             TMPDIR={tmp} swupdate -v -B uboot -k {cert} -H {hw} -e stable,copy2 {extra} -i {swu}",
            up = self.sb.join("etc-up").display(),
            work = self.sb.join("etc-work").display(),
            tmp = self.sb.join("tmp").display(),
            cert = cert.display(),
            swu = swu.display(),
        );
        // A private PID namespace as well: when its first process exits,
        // the kernel kills every SWUpdate helper process still running, so
        // none can hold the output pipe open (a rejected -N install once
        // left one behind). `timeout` bounds a hung agent.
        let out = duct::cmd(
            "timeout",
            [
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
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// The env as written; an env that was never written (invalid CRC)
    /// reads as empty, which is "not switched".
    /// Installs an update that must succeed. SWUpdate 2022.12 has a known
    /// race in its post-update IPC (`core/install_from_file.c`): the
    /// installer reports success, yet the client exits 1. Only that
    /// pattern is retried, from fresh slots, at most three times; the final
    /// attempt must still exit 0.
    fn install_ok(&self, swu: &Path) -> (i32, String) {
        let mut last = (0, String::new());
        for _ in 0..3 {
            self.reset();
            last = self.install(swu, &self.cert(), "test-board:1.0", "");
            let raced = swupdate_raced(last.0, &last.1);
            if !raced {
                break;
            }
        }
        last
    }

    fn env(&self) -> String {
        let out = duct::cmd(
            "fw_printenv",
            ["-c", self.sb.join("etc-up/fw_env.config").to_str().unwrap()],
        )
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn cert(&self) -> PathBuf {
        self.out.join("update.cert.pem")
    }

    fn assert_untouched(&self, log: &str) {
        for f in ["slot-a.img", "verity-a.img"] {
            assert!(
                fs::read(self.sb.join(f)).unwrap().iter().all(|&b| b == 0),
                "{f} was written:\n{log}"
            );
        }
        let env = self.env();
        assert!(
            !env.contains("slotsmith_slot=b"),
            "env switched:\n{env}\n{log}"
        );
        assert!(
            !self.sb.join("boot/b/manifest").exists() || !log.contains("successful"),
            "{log}"
        );
    }
}

fn assert_prefix(slot: &Path, image: &Path) {
    let slot = fs::read(slot).unwrap();
    let image = fs::read(image).unwrap();
    assert_eq!(
        &slot[..image.len()],
        &image[..],
        "slot does not hold the image"
    );
    assert!(slot[image.len()..].iter().all(|&b| b == 0));
}

fn assert_installed(s: &Sandbox, rc: i32, log: &str) {
    assert_eq!(rc, 0, "{log}");
    assert!(log.contains("SWUpdate was successful"), "{log}");
    assert_prefix(&s.sb.join("slot-b.img"), &s.out.join("rootfs.squashfs"));
    assert_prefix(&s.sb.join("verity-b.img"), &s.out.join("root-b.verity"));
    for (installed, built) in [
        ("vmlinuz", "vmlinuz"),
        ("initrd.img", "initrd.img"),
        ("manifest", "boot-b.manifest"),
        ("manifest.sig", "boot-b.manifest.sig"),
        ("sbom.spdx.json", "sbom.spdx.json"),
    ] {
        assert_eq!(
            fs::read(s.sb.join("boot/b").join(installed)).unwrap(),
            fs::read(s.out.join(built)).unwrap(),
            "{installed}"
        );
    }
    for f in ["slot-a.img", "verity-a.img"] {
        assert!(
            fs::read(s.sb.join(f)).unwrap().iter().all(|&b| b == 0),
            "{f} touched"
        );
    }
    assert!(!s.sb.join("boot/a").exists(), "slot a's boot files touched");
    let env = s.env();
    assert!(
        env.contains("slotsmith_slot=b") && env.contains("upgrade_available=1"),
        "{env}"
    );
}

/// Flips a byte inside member `name` and, with `fix_check`, repairs the
/// cpio checksum so only the content check (sha256 or signature) can
/// catch it.
fn tamper(swu: &Path, name: &str, at: u64, fix_check: bool) -> PathBuf {
    let copy = swu.with_extension(format!("{name}.{at}.{fix_check}.tampered.swu"));
    fs::copy(swu, &copy).unwrap();
    let entries = slotsmith_swu::read_index(fs::File::open(&copy).unwrap()).unwrap();
    let e = entries.iter().find(|e| e.name == name).unwrap();
    let mut bytes = fs::read(&copy).unwrap();
    let off = (e.offset + at) as usize;
    let old = bytes[off];
    bytes[off] ^= 0x01;
    if fix_check {
        // The header starts 110 + name + NUL (padded to 4) before the data;
        // its last field (offset 102) is the 8-hex-digit checksum.
        let header = off - at as usize - (110 + name.len() + 1).div_ceil(4) * 4;
        let check = e
            .check
            .wrapping_sub(old as u32)
            .wrapping_add(bytes[off] as u32);
        bytes[header + 102..header + 110].copy_from_slice(format!("{check:08X}").as_bytes());
    }
    fs::write(&copy, bytes).unwrap();
    copy
}

#[test]
fn swupdate_installs_into_the_inactive_slot_and_rejects_tampering() {
    let s = Sandbox::build("upd", "none");
    let swu = s.swu();
    // cargo xtask verify accepts the update.
    let r = slotsmith(
        &[
            "verify",
            swu.to_str().unwrap(),
            "--update-cert",
            s.cert().to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);

    let (rc, log) = s.install_ok(&swu);
    assert_installed(&s, rc, &log);

    // Each of these must be rejected, with slot A untouched and the env
    // not switched.
    let other = s.p.path().join("other");
    let r = slotsmith(
        &[
            "keys",
            "generate",
            "--role",
            "update",
            "--out",
            other.to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cases: Vec<(&str, PathBuf, PathBuf, &str, &str, &str)> = vec![
        (
            "flipped payload byte",
            tamper(&swu, "rootfs.squashfs", 5000, true),
            s.cert(),
            "test-board:1.0",
            "",
            "HASH mismatch",
        ),
        (
            "edited sw-description",
            tamper(&swu, "sw-description", 40, true),
            s.cert(),
            "test-board:1.0",
            "",
            "ignature",
        ),
        (
            "different certificate",
            swu.clone(),
            other.join("update.cert.pem"),
            "test-board:1.0",
            "",
            "ignature",
        ),
        (
            "wrong hardware revision",
            swu.clone(),
            s.cert(),
            "test-board:9.9",
            "",
            "not compatible",
        ),
        (
            "downgrade under -N",
            swu.clone(),
            s.cert(),
            "test-board:1.0",
            "-N 3.0.0",
            "No downgrading allowed",
        ),
    ];
    for (what, file, cert, hw, extra, message) in cases {
        s.reset();
        let (rc, log) = s.install(&file, &cert, hw, extra);
        assert_ne!(rc, 0, "{what}: swupdate accepted it:\n{log}");
        assert!(
            log.contains(message),
            "{what}: expected {message:?} in:\n{log}"
        );
        assert!(!log.contains("SWUpdate was successful"), "{what}:\n{log}");
        s.assert_untouched(&log);
    }

    // Our own verifier names each problem.
    let checks: Vec<(PathBuf, PathBuf, &str)> = vec![
        (
            tamper(&swu, "rootfs.squashfs", 5000, true),
            s.cert(),
            "sha256",
        ),
        (
            tamper(&swu, "rootfs.squashfs", 5000, false),
            s.cert(),
            "checksum",
        ),
        (
            tamper(&swu, "sw-description", 40, true),
            s.cert(),
            "messageDigest does not match",
        ),
        (
            swu.clone(),
            other.join("update.cert.pem"),
            "signer certificate is not the given certificate",
        ),
    ];
    for (file, cert, message) in checks {
        let r = slotsmith(
            &[
                "verify",
                file.to_str().unwrap(),
                "--update-cert",
                cert.to_str().unwrap(),
            ],
            &[],
            false,
            None,
        );
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr.contains(message),
            "expected {message:?} in:\n{}",
            r.stderr
        );
    }
}

/// Copies `path` from the golden image's boot partition (the `esp`
/// partition of build.json) with mtools, an independent FAT reader.
fn from_golden_esp(s: &Sandbox, path: &str) -> Vec<u8> {
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(s.out.join("build.json")).unwrap()).unwrap();
    let esp = record["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "esp")
        .unwrap();
    let img = format!(
        "{}@@{}",
        s.out.join(format!("{}.img", s.name)).display(),
        esp["offset"]
    );
    let copy =
        s.p.path()
            .join(format!("golden-{}", path.replace('/', "-")));
    let _ = fs::remove_file(&copy);
    run(
        "mcopy",
        &[
            "-n",
            "-i",
            &img,
            &format!("::/{path}"),
            copy.to_str().unwrap(),
        ],
    );
    fs::read(copy).unwrap()
}

#[test]
fn the_sbom_travels_signed_in_the_update_and_lands_beside_the_slot_manifest() {
    require("mcopy", "mtools");
    let s = Sandbox::build("upds", "none");
    let swu = s.swu();
    let sbom = fs::read(s.out.join("sbom.spdx.json")).unwrap();
    let sbom_sha = sha256(&s.out.join("sbom.spdx.json"));
    // The golden image's slots carry it where an update puts it: a device
    // fresh from the factory and an updated one look the same.
    for slot in ["a", "b"] {
        assert_eq!(
            from_golden_esp(&s, &format!("{slot}/sbom.spdx.json")),
            sbom,
            "slot {slot}"
        );
    }
    // A member of the .swu whose sha256 the signed sw-description states,
    // for both slots' collections.
    let contents = slotsmith_swu::read_swu(&swu).unwrap();
    assert!(
        contents.entries.iter().any(|e| e.name == "sbom.spdx.json"),
        "{:?}",
        contents.entries
    );
    let desc = &contents.sw_description;
    assert_eq!(
        desc.matches(&format!("sha256 = \"{sbom_sha}\"")).count(),
        2,
        "{desc}"
    );
    for slot in ["a", "b"] {
        let path = s.sb.join(format!("boot/{slot}/sbom.spdx.json"));
        assert!(
            desc.contains(&format!("path = \"{}\"", path.display())),
            "{desc}"
        );
    }

    // SWUpdate installs it beside the new slot's manifest.
    let (rc, log) = s.install_ok(&swu);
    assert_installed(&s, rc, &log);
    assert_eq!(fs::read(s.sb.join("boot/b/sbom.spdx.json")).unwrap(), sbom);

    // One SBOM byte changed after signing is refused by SWUpdate, with
    // the cpio checksum repaired (only the signed sha256 can tell) or not;
    // nothing is installed beside the manifest and the env stays.
    for fix_check in [true, false] {
        let bad = tamper(&swu, "sbom.spdx.json", 10, fix_check);
        s.reset();
        let (rc, log) = s.install(&bad, &s.cert(), "test-board:1.0", "");
        assert_ne!(rc, 0, "fix_check {fix_check}: swupdate accepted it:\n{log}");
        assert!(!log.contains("SWUpdate was successful"), "{log}");
        // SWUpdate compares the sha256 before the cpio checksum, so both
        // are refused by the signed hash.
        assert!(
            log.contains("HASH mismatch") && log.contains("Not installing"),
            "fix_check {fix_check}: expected a hash mismatch in:\n{log}"
        );
        assert!(
            !s.sb.join("boot/b/sbom.spdx.json").exists(),
            "fix_check {fix_check}: a tampered sbom was installed:\n{log}"
        );
        s.assert_untouched(&log);
        // Our verifier refuses it too, naming the member.
        let r = slotsmith(
            &[
                "verify",
                bad.to_str().unwrap(),
                "--update-cert",
                s.cert().to_str().unwrap(),
            ],
            &[],
            false,
            None,
        );
        assert_eq!(r.code, 1, "{}", r.stderr);
        let message = if fix_check { "sha256" } else { "checksum" };
        assert!(
            r.stderr.contains(message) && r.stderr.contains("sbom.spdx.json"),
            "expected {message:?} in:\n{}",
            r.stderr
        );
    }
}

#[test]
fn zstd_update_installs() {
    let s = Sandbox::build("updz", "zstd");
    let swu = s.swu();
    let members = slotsmith_swu::read_index(fs::File::open(&swu).unwrap()).unwrap();
    assert!(
        members.iter().any(|e| e.name == "rootfs.squashfs.zst"),
        "{members:?}"
    );
    let (rc, log) = s.install_ok(&swu);
    assert_installed(&s, rc, &log);
}

#[test]
fn external_update_signer_and_ca_issued_certificate() {
    // A release-style setup: a private CA, an update key issued by it, and
    // an external signer (standing in for an HSM) that signs the CMS signed
    // attributes with openssl. Devices trust the CA.
    let s = Sandbox::build("upde", "none");
    let keys = s.p.path().join("release");
    let ca = s.p.path().join("ca");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    slotsmith_cms::generate_ca(&ca, "ca", "Product update CA", now - 86400, 3650).unwrap();
    let r = slotsmith(
        &[
            "keys",
            "generate",
            "--role",
            "update",
            "--out",
            keys.to_str().unwrap(),
            "--ca-cert",
            ca.join("ca.cert.pem").to_str().unwrap(),
            "--ca-key",
            ca.join("ca.key.pem").to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            ca.join("ca.cert.pem").to_str().unwrap(),
            keys.join("update.cert.pem").to_str().unwrap(),
        ],
    );
    let hook = s.p.path().join("hsm-sign");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\nopenssl dgst -sha256 -sign {} -out \"$2\" \"$1\"\n",
            keys.join("update.key.pem").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let yaml = fs::read_to_string(s.p.image("upde")).unwrap()
        + &format!(
            "signing:\n  update:\n    external-signer: [\"{}\", \"{{in}}\", \"{{out}}\"]\n    cert: {}\n",
            hook.display(),
            keys.join("update.cert.pem").display()
        );
    s.p.write("images/upde.yaml", &yaml);
    let out = s.p.path().join("out");
    let r = slotsmith(
        &[
            "build",
            s.p.image("upde").to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--work-dir",
            s.p.path().join("work").to_str().unwrap(),
            "--quiet",
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let swu = s.swu();
    let ca_cert = ca.join("ca.cert.pem");
    let r = slotsmith(
        &[
            "verify",
            swu.to_str().unwrap(),
            "--update-cert",
            ca_cert.to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The real agent trusts the CA and installs the update.
    let mut attempt = (0, String::new());
    for _ in 0..3 {
        s.reset();
        attempt = s.install(&swu, &ca_cert, "test-board:1.0", "");
        if !swupdate_raced(attempt.0, &attempt.1) {
            break;
        }
    }
    assert_installed(&s, attempt.0, &attempt.1);
}
