//! Field updates end to end, in one QEMU sequence on one device (one disk
//! image and one OVMF variable store, booted again and again; `-no-reboot`
//! makes every guest reset end a run, so each boot is checked on its own):
//!
//! 1. golden v1 boots from slot A and commits; a USB stick with v2 is in:
//!    it installs into slot B and the device reboots;
//! 2. v2 is tried from B, passes its health check and commits;
//! 3. v3 is installed locally (`slotsmith-update install`);
//! 4. v3 is tried from A and fails its health check (its image declares a
//!    unit that does not exist): it reboots;
//! 5. the loader falls back to v2 by itself; the rollback is recorded;
//! 6. six sticks, each refused and nothing written: a tampered .swu, one
//!    signed with another key, one for other hardware, a downgrade (v1),
//!    v5 whose security version is below the committed minimum, and v3,
//!    which already rolled back here;
//! 7. v5 written into slot A by force and tried: the init refuses it (its
//!    security version) and the device falls back to B;
//! 8. a local install of v3 is cut off by killing QEMU mid-write; the
//!    device boots B, records the interrupted install, and the next
//!    install succeeds;
//! 9. the audit trail on the data partition, read with debugfs, lists
//!    every attempt above with its outcome.
//!
//! The versions are built by the test from the default image definition
//! (with the test layer, which reports on the console and drives the local
//! installs) into one project, so they share its development keys.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use slotsmith::qemu::{Ending, Run, Vm};
use slotsmith_disk::bgenv::{self, BgEnv, UState};

use crate::support::*;

const REFUSED: &str = "slotsmith-init: refusing to boot";
const DONE: &str = "SLOTSMITH-TEST done";

/// The project and the four versions' output directories.
struct Versions {
    dir: tempfile::TempDir,
    project: PathBuf,
    out: [PathBuf; 4],
}

impl Versions {
    fn v(&self, n: usize) -> &Path {
        &self.out[n]
    }
}

/// Builds v1 (1.0.0, security version 1), v2 (2.0.0, 2), v3 (3.0.0, 2,
/// declares a missing unit healthy) and v5 (5.0.0, 1) of the default
/// image with the test layer.
fn build_versions() -> Versions {
    for (t, p) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("virt-fw-vars", "virt-firmware (pip)"),
        ("openssl", "openssl"),
        ("debugfs", "e2fsprogs"),
        ("bg_printenv", "efibootguard"),
    ] {
        require(t, p);
    }
    let dir = tempfile::Builder::new()
        .prefix("slotsmith-updates-")
        .tempdir()
        .unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("images")).unwrap();
    for d in ["layers", "policies"] {
        run(
            "cp",
            &[
                "-a",
                repo_root().join(d).to_str().unwrap(),
                project.to_str().unwrap(),
            ],
        );
    }
    let def = std::fs::read_to_string(repo_root().join("images/demo.yaml")).unwrap();
    let def = def.replacen(
        "  - meta-demo\n",
        "  - meta-demo\n  - meta-slotsmith-test\n",
        1,
    );
    let version = |v: &str, svn: u64| {
        let d = def
            .replacen("version: 1.0.0\n", &format!("version: {v}\n"), 1)
            .replacen(
                "security-version: 1\n",
                &format!("security-version: {svn}\n"),
                1,
            );
        assert!(d.contains(&format!("version: {v}\n")) && d.contains("meta-slotsmith-test"));
        d
    };
    let v3 = version("3.0.0", 2).replacen(
        "healthy-units: [",
        "healthy-units: [slotsmith-test-missing.service, ",
        1,
    );
    assert!(v3.contains("slotsmith-test-missing.service"));
    let files = [
        ("demo-v1", version("1.0.0", 1)),
        ("demo-v2", version("2.0.0", 2)),
        ("demo-v3", v3),
        ("demo-v5", version("5.0.0", 1)),
    ];
    let mut out = Vec::new();
    for (file, text) in files {
        std::fs::write(project.join(format!("images/{file}.yaml")), text).unwrap();
        // The same locked base as the default image.
        std::fs::copy(
            repo_root().join("images/demo.lock"),
            project.join(format!("images/{file}.lock")),
        )
        .unwrap();
        let o = dir.path().join(format!("out-{file}"));
        let r = slotsmith(
            &[
                "--project",
                project.to_str().unwrap(),
                "build",
                file,
                "--out-dir",
                o.to_str().unwrap(),
                "--work-dir",
                dir.path().join("work").to_str().unwrap(),
                "--quiet",
            ],
            &[],
            false,
            None,
        );
        assert_eq!(r.code, 0, "{file}: {}", r.stderr);
        out.push(o.join("demo"));
    }
    Versions {
        project,
        out: out.try_into().unwrap(),
        dir,
    }
}

/// The seconds stamp of the first kernel-log line holding `needle`.
fn stamp(console: &str, needle: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.contains(needle))?;
    let open = line.find('[')?;
    let close = line[open..].find(']')? + open;
    line[open + 1..close].trim().parse().ok()
}

/// Both slots' environments (a, b), raw and decoded.
fn envs(disk: &Path) -> [(Vec<u8>, BgEnv); 2] {
    ["boot-a", "boot-b"].map(|p| {
        let raw = slotsmith::qemu::read_boot_file(disk, p, "BGENV.DAT").unwrap();
        let env = bgenv::decode(&raw).unwrap();
        (raw, env)
    })
}

/// sha256 of a partition's bytes.
fn part_sha(disk: &Path, name: &str) -> String {
    use sha2::Digest;
    use std::io::{Read, Seek, SeekFrom};
    let (offset, len) = slotsmith::qemu::partition(disk, name).unwrap();
    let mut f = std::fs::File::open(disk).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let cap = buf.len() as u64;
    let mut left = len;
    while left > 0 {
        let n = f.read(&mut buf[..left.min(cap) as usize]).unwrap();
        assert!(n > 0);
        h.update(&buf[..n]);
        left -= n as u64;
    }
    hex::encode(h.finalize())
}

/// Writes `data` over the start of a partition (a forced write).
fn write_part(disk: &Path, name: &str, data: &Path) {
    use std::io::{Seek, SeekFrom};
    let (offset, len) = slotsmith::qemu::partition(disk, name).unwrap();
    let mut src = std::fs::File::open(data).unwrap();
    assert!(src.metadata().unwrap().len() <= len);
    let mut dst = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    dst.seek(SeekFrom::Start(offset)).unwrap();
    std::io::copy(&mut src, &mut dst).unwrap();
}

/// A .swu made from `swu` with a new sw-description (`edit` applied) and
/// signature (`openssl cms -sign` with `key`/`cert`), other members copied.
fn resigned(swu: &Path, out: &Path, key: &Path, cert: &Path, edit: impl Fn(&str) -> String) {
    use std::io::{Read, Seek, SeekFrom};
    let entries = slotsmith_swu::read_index(std::fs::File::open(swu).unwrap()).unwrap();
    let mut f = std::fs::File::open(swu).unwrap();
    let member = |f: &mut std::fs::File, i: usize| {
        let e = &entries[i];
        f.seek(SeekFrom::Start(e.offset)).unwrap();
        let mut v = Vec::new();
        f.take(e.size).read_to_end(&mut v).unwrap();
        v
    };
    let desc = edit(&String::from_utf8(member(&mut f, 0)).unwrap());
    let scratch = tempfile::tempdir().unwrap();
    let d = scratch.path().join("sw-description");
    let sig = scratch.path().join("sig");
    std::fs::write(&d, &desc).unwrap();
    run(
        "openssl",
        &[
            "cms",
            "-sign",
            "-md",
            "sha256",
            "-binary",
            "-nosmimecap",
            "-outform",
            "DER",
            "-in",
            d.to_str().unwrap(),
            "-signer",
            cert.to_str().unwrap(),
            "-inkey",
            key.to_str().unwrap(),
            "-out",
            sig.to_str().unwrap(),
        ],
    );
    let mut w = slotsmith_swu::CpioWriter::new(std::fs::File::create(out).unwrap());
    w.add_bytes("sw-description", desc.as_bytes()).unwrap();
    w.add_bytes("sw-description.sig", &std::fs::read(&sig).unwrap())
        .unwrap();
    for (i, e) in entries.iter().enumerate().skip(2) {
        w.add_bytes(&e.name, &member(&mut f, i)).unwrap();
    }
    w.finish().unwrap();
}

/// A stick image holding `swu`.
fn stick(swu: &Path, out: &Path) -> PathBuf {
    slotsmith::stick::make(swu, out, 1_735_689_600).unwrap();
    out.to_path_buf()
}

/// The audit trail, read from the data partition with debugfs.
fn audit_trail(disk: &Path, scratch: &Path) -> Vec<serde_json::Value> {
    let (offset, len) = slotsmith::qemu::partition(disk, "data").unwrap();
    let data = scratch.join("data.img");
    extract(disk, offset, len, &data);
    let out = duct::cmd(
        "debugfs",
        ["-R", "cat /slotsmith/audit.jsonl", data.to_str().unwrap()],
    )
    .stdout_capture()
    .stderr_null()
    .read()
    .unwrap();
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

struct Device {
    vm: Vm,
    scratch: PathBuf,
    n: usize,
    phases: Vec<(String, f64)>,
}

impl Device {
    /// One boot, until `done` says so or QEMU exits (a reset); at most
    /// 600 s. The console is kept as `<n>-<name>.log`.
    fn boot(&mut self, name: &str, done: impl FnMut(&str) -> bool) -> Run {
        self.n += 1;
        let log = self.scratch.join(format!("{}-{name}.log", self.n));
        let run = self
            .vm
            .run_while(&log, done, Duration::from_secs(600))
            .unwrap();
        assert_ne!(run.ending, Ending::TimedOut, "{name}: {}", run.console);
        assert!(!run.console.contains("login:"), "{name}: {}", run.console);
        self.phases
            .push((format!("boot {}: {name}", self.n), run.seconds));
        run
    }
}

#[test]
fn updates_commit_roll_back_refuse_and_survive_a_power_cut_with_an_audit_trail() {
    let v = build_versions();
    let scratch = v.dir.path().join("device");
    std::fs::create_dir_all(&scratch).unwrap();
    let disk = scratch.join("disk.img");
    slotsmith::qemu::copy_disk(&v.v(0).join("demo.img"), &disk).unwrap();
    let vars = scratch.join("vars.fd");
    slotsmith::qemu::make_vars(&v.v(0).join("secureboot"), &vars).unwrap();
    let swu = |i: usize, ver: &str| v.v(i).join(format!("demo-{ver}.swu"));
    let mut dev = Device {
        vm: Vm {
            disk: disk.clone(),
            vars,
            usb: Vec::new(),
            disks: Vec::new(),
            memory_mib: 2048,
            reboot: false,
        },
        scratch: scratch.clone(),
        n: 0,
        phases: Vec::new(),
    };
    let golden = envs(&disk);

    // 1. Golden v1 on slot A, a stick with v2: install into B, reboot.
    dev.vm.usb = vec![stick(&swu(1, "2.0.0"), &scratch.join("v2.stick"))];
    let r = dev.boot("v1 with a v2 stick", |c| c.contains(REFUSED));
    let c = &r.console;
    assert_eq!(r.ending, Ending::Exited, "{c}");
    assert!(
        c.contains("slot a (demo 1.0.0, security version 1) is healthy and committed"),
        "{c}"
    );
    assert!(
        c.contains("-e stable,copy2 -N 1.0.0 -P /usr/libexec/slotsmith/preupdate"),
        "{c}"
    );
    assert!(
        c.contains("installed /run/slotsmith/usb/sda1/demo-2.0.0.swu 2.0.0"),
        "{c}"
    );
    assert!(
        c.contains("stick /dev/sda1 unmounted; it can be removed"),
        "{c}"
    );
    let install_s = stamp(c, "installed /run").unwrap() - stamp(c, "mounted read-only").unwrap();
    dev.phases.push((
        "install v2 from the stick (verify + write)".into(),
        install_s,
    ));
    let [a, b] = envs(&disk);
    assert_eq!(a.0, golden[0].0, "slot A's environment is untouched");
    assert_eq!(b.1.ustate, UState::Installed);
    assert!(b.1.revision > a.1.revision);

    // 2. The stick is pulled; v2 is tried from B and commits.
    dev.vm.usb.clear();
    let r = dev.boot("v2 tried", |c| c.contains(DONE) || c.contains(REFUSED));
    let c = &r.console;
    assert_eq!(r.ending, Ending::Matched("done".into()), "{c}");
    assert!(c.contains("Starting L:BOOT1:linux.efi"), "{c}");
    assert!(
        c.contains("SLOTSMITH-TEST root-dm-slaves=vda6,vda7,"),
        "{c}"
    );
    assert!(c.contains("slot b confirmed to EFI Boot Guard"), "{c}");
    assert!(c.contains("minimum security version 2"), "{c}");
    assert!(
        c.contains("SLOTSMITH-TEST failed-units=\r")
            || c.contains("SLOTSMITH-TEST failed-units=\n"),
        "{c}"
    );
    let commit_s = stamp(c, "confirmed to EFI Boot Guard").unwrap();
    dev.phases.push((
        "reboot into v2 until committed (kernel clock)".into(),
        commit_s,
    ));
    let [_, b] = envs(&disk);
    assert_eq!(b.1.ustate, UState::Ok);

    // 3. A local install of v3 (the test layer runs slotsmith-update).
    let v3_stick = stick(&swu(2, "3.0.0"), &scratch.join("v3.stick"));
    dev.vm.disks = vec![(v3_stick.clone(), "swu-image".into())];
    let r = dev.boot("v2 installs v3 locally", |c| c.contains(REFUSED));
    let c = &r.console;
    assert_eq!(r.ending, Ending::Exited, "{c}");
    assert!(c.contains("SLOTSMITH-TEST install-rc=0"), "{c}");
    assert!(c.contains("-e stable,copy1 -N 2.0.0"), "{c}");
    let [a, _] = envs(&disk);
    assert_eq!(a.1.ustate, UState::Installed);

    // 4. v3 is tried from A and fails its health check: it reboots.
    dev.vm.disks.clear();
    let r = dev.boot("v3 tried", |c| c.contains(REFUSED));
    let c = &r.console;
    assert_eq!(r.ending, Ending::Exited, "{c}");
    assert!(c.contains("Starting L:BOOT0:linux.efi"), "{c}");
    assert!(
        c.contains("failed its health check: slotsmith-test-missing.service is inactive"),
        "{c}"
    );
    let verdict_s = stamp(c, "failed its health check").unwrap();
    dev.phases.push((
        "v3 boot until its failed health check (kernel clock)".into(),
        verdict_s,
    ));

    // 5. By itself, the device is back on v2.
    let r = dev.boot("fallback to v2", |c| {
        c.contains(DONE) || c.contains(REFUSED)
    });
    let c = &r.console;
    assert_eq!(r.ending, Ending::Matched("done".into()), "{c}");
    assert!(c.contains("Starting L:BOOT1:linux.efi"), "{c}");
    assert!(
        c.contains(
            "slot a was tried and not confirmed; the device rolled back to slot b (demo 2.0.0)"
        ),
        "{c}"
    );
    dev.phases
        .push(("rollback boot (power-on to report)".into(), r.seconds));
    let [a, b] = envs(&disk);
    assert_eq!((a.1.ustate, a.1.revision), (UState::Failed, 0));
    assert_eq!(b.1.ustate, UState::Ok);

    // 6. Six sticks, each refused; nothing changes.
    let keys = v.project.join("keys/dev");
    let other = scratch.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (okey, ocert) = (other.join("key.pem"), other.join("cert.pem"));
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=someone else",
            "-days",
            "30",
            "-keyout",
            okey.to_str().unwrap(),
            "-out",
            ocert.to_str().unwrap(),
        ],
    );
    let v4 = |d: &str| d.replacen("version = \"2.0.0\";", "version = \"4.0.0\";", 1);
    let other_key = other.join("demo-4.0.0-other-key.swu");
    resigned(&swu(1, "2.0.0"), &other_key, &okey, &ocert, v4);
    let other_hw = other.join("demo-4.0.0-other-hw.swu");
    resigned(
        &swu(1, "2.0.0"),
        &other_hw,
        &keys.join("update.key.pem"),
        &keys.join("update.cert.pem"),
        |d| {
            v4(d).replacen(
                "hardware-compatibility = [ \"1.0\" ];",
                "hardware-compatibility = [ \"9.9\" ];",
                1,
            )
        },
    );
    let tampered = other.join("demo-4.0.0-tampered.swu");
    resigned(
        &swu(1, "2.0.0"),
        &tampered,
        &keys.join("update.key.pem"),
        &keys.join("update.cert.pem"),
        v4,
    );
    {
        // One flipped byte in the middle of the root image, after signing.
        use std::io::{Read, Seek, SeekFrom, Write};
        let entries = slotsmith_swu::read_index(std::fs::File::open(&tampered).unwrap()).unwrap();
        let big = entries.iter().max_by_key(|e| e.size).unwrap();
        let at = big.offset + big.size / 2;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&tampered)
            .unwrap();
        let mut byte = [0u8];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut byte).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[byte[0] ^ 0x01]).unwrap();
    }
    let refusals = [
        (tampered.clone(), "the update file is damaged or altered"),
        (other_key.clone(), "swupdate: "),
        (other_hw.clone(), "swupdate: "),
        (swu(0, "1.0.0"), "swupdate: "),
        (
            swu(3, "5.0.0"),
            "security version 1 of demo 5.0.0 is below this device's minimum 2",
        ),
        // v3 rolled back on this device: a stick left in is not retried.
        (
            swu(2, "3.0.0"),
            "this update was tried on this device and rolled back; remove the stick",
        ),
    ];
    dev.vm.usb = refusals
        .iter()
        .enumerate()
        .map(|(i, (f, _))| stick(f, &scratch.join(format!("refused-{i}.stick"))))
        .collect();
    let before = envs(&disk);
    let root_a = part_sha(&disk, "root-a");
    let verity_a = part_sha(&disk, "root-a-verity");
    let r = dev.boot("six refused sticks", |c| {
        // Each stick's job ends by unmounting it, after its record.
        c.matches("unmounted; it can be removed").count() >= refusals.len() || c.contains(REFUSED)
    });
    let c = &r.console;
    assert_eq!(r.ending, Ending::Matched("done".into()), "{c}");
    for (_, why) in &refusals {
        assert!(c.contains(why), "{why}: {c}");
    }
    assert!(!c.contains("installed /run"), "{c}");
    assert!(!c.contains("rebooting to try"), "{c}");
    let after = envs(&disk);
    assert_eq!(after[0].0, before[0].0, "slot A's environment changed");
    assert_eq!(after[1].0, before[1].0, "slot B's environment changed");
    assert_eq!(
        part_sha(&disk, "root-a-verity"),
        verity_a,
        "slot A's verity data was written"
    );
    assert_eq!(
        part_sha(&disk, "root-a"),
        root_a,
        "slot A's root was written"
    );
    dev.vm.usb.clear();

    // 7. v5 (security version 1) forced into slot A and tried: the init
    // refuses it, and the device comes back on B.
    let v5 = v.v(3);
    write_part(&disk, "root-a", &v5.join("rootfs.squashfs"));
    write_part(&disk, "root-a-verity", &v5.join("root-a.verity"));
    for (file, out) in [
        ("linux.efi", "linux-a.efi"),
        ("manifest", "boot-a.manifest"),
        ("manifest.sig", "boot-a.manifest.sig"),
    ] {
        slotsmith::qemu::write_boot_file(
            &disk,
            "boot-a",
            file,
            &std::fs::read(v5.join(out)).unwrap(),
        )
        .unwrap();
    }
    let [mut a, b] = envs(&disk).map(|(_, e)| e);
    a.revision = b.revision + 1;
    a.ustate = UState::Installed;
    a.in_progress = false;
    a.kernelfile = "L:BOOT0:linux.efi".into();
    slotsmith::qemu::write_boot_file(&disk, "boot-a", "BGENV.DAT", &bgenv::encode(&a).unwrap())
        .unwrap();
    let r = dev.boot("v5 forced into A", |_| false);
    let c = &r.console;
    assert_eq!(r.ending, Ending::Exited, "{c}");
    assert!(c.contains("Starting L:BOOT0:linux.efi"), "{c}");
    assert!(
        c.contains("refusing to boot: boot partition /dev/vda2: security version 1 is below this device's minimum 2 (a rollback)"),
        "{c}"
    );

    // 8. Back on B; an install of v3 is cut off by a power cut.
    dev.vm.disks = vec![(v3_stick.clone(), "swu-image".into())];
    let mut seen: Option<Instant> = None;
    let r = dev.boot("power cut during an install", |c| {
        if c.contains(REFUSED) {
            return true;
        }
        if seen.is_none() && c.contains("installing /run/slotsmith-test") {
            seen = Some(Instant::now());
        }
        seen.is_some_and(|t| t.elapsed() > Duration::from_secs(3))
    });
    let c = &r.console;
    assert_eq!(r.ending, Ending::Matched("done".into()), "{c}");
    assert!(c.contains("Starting L:BOOT1:linux.efi"), "{c}");
    assert!(
        c.contains("slot a was tried and not confirmed; the device rolled back to slot b"),
        "{c}"
    );
    assert!(
        !c.contains("SLOTSMITH-TEST install-rc"),
        "the install was cut off: {c}"
    );
    // The cut came before SWUpdate switched the loader: A is not
    // INSTALLED, so the loader keeps booting B. (What SWUpdate had written
    // was still in the guest's page cache: a cut loses it, as a real one
    // would; the in-progress marker proves the install had started.)
    let [a, _] = envs(&disk);
    assert_ne!(a.1.ustate, UState::Installed, "{:?}", a.1);

    let r = dev.boot("after the power cut", |c| c.contains(REFUSED));
    let c = &r.console;
    assert_eq!(r.ending, Ending::Exited, "{c}");
    assert!(c.contains("Starting L:BOOT1:linux.efi"), "{c}");
    assert!(c.contains("slot b verified root ready"), "{c}");
    assert!(c.contains("interrupted"), "{c}");
    assert!(c.contains("SLOTSMITH-TEST install-rc=0"), "{c}");
    let [a, b] = envs(&disk);
    assert_eq!(a.1.ustate, UState::Installed);
    assert!(a.1.revision > b.1.revision);

    // 9. The audit trail.
    let trail = audit_trail(&disk, &scratch);
    let mut summary: Vec<String> = trail
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r["event"].as_str().unwrap_or(""),
                r["result"].as_str().unwrap_or(""),
                r["version"].as_str().unwrap_or("-"),
                r["source"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    let want = [
        "commit committed 1.0.0 -",
        "install installed 2.0.0 usb",
        "commit committed 2.0.0 -",
        "install installed 3.0.0 local",
        "health-check failed 3.0.0 -",
        "rollback rolled-back 3.0.0 -",
        "install refused 4.0.0 usb",
        "install refused 4.0.0 usb",
        "install refused 4.0.0 usb",
        "install refused 1.0.0 usb",
        "install refused 5.0.0 usb",
        "install refused 3.0.0 usb",
        "rollback rolled-back - -",
        "install interrupted 3.0.0 local",
        "install installed 3.0.0 local",
    ];
    // The six sticks are handled one at a time, in whichever order udev
    // saw them.
    summary[6..12].sort();
    let mut want = want.map(String::from);
    want[6..12].sort();
    assert_eq!(summary, want, "{trail:#?}");
    let sha_v2 = sha256(&swu(1, "2.0.0"));
    assert_eq!(trail[1]["sha256"], sha_v2.as_str());
    assert_eq!(
        (
            trail[1]["slot_before"].as_str(),
            trail[1]["slot_after"].as_str()
        ),
        (Some("a"), Some("b"))
    );
    let dev_fp = slotsmith_cms::cert_fingerprint(&keys.join("update.cert.pem")).unwrap();
    assert_eq!(trail[1]["signer"], dev_fp.as_str());
    assert_eq!(trail[2]["minimum_security_version"], 2);
    for (file, why) in &refusals {
        let sha = sha256(file);
        let r = trail[6..12]
            .iter()
            .find(|r| r["sha256"] == sha.as_str())
            .unwrap_or_else(|| panic!("no record of {}: {trail:#?}", file.display()));
        let signer = if *file == other_key {
            slotsmith_cms::cert_fingerprint(&ocert).unwrap()
        } else {
            dev_fp.clone()
        };
        assert_eq!(r["signer"], signer.as_str(), "{r}");
        assert!(r["reason"].as_str().unwrap().contains(why), "{r}");
        assert_eq!(
            (r["slot_before"].as_str(), r["slot_after"].as_str()),
            (Some("b"), Some("b"))
        );
    }
    assert!(
        trail[12]["reason"]
            .as_str()
            .unwrap()
            .contains("security version 1 is below this device's minimum 2"),
        "{}",
        trail[12]
    );
    for r in &trail {
        assert!(
            r["time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 20),
            "{r}"
        );
    }

    eprintln!("field update phases (QEMU TCG):");
    for (what, s) in &dev.phases {
        eprintln!("  {what:<55} {s:>6.1} s");
    }
}
