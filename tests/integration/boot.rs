//! Boots the default image in QEMU under OVMF with its own Secure Boot
//! keys enrolled and Secure Boot enforced: the chain firmware -> EFI Boot
//! Guard -> signed UKI -> our init -> dm-verity root -> systemd, and every
//! refusal along it (an unsigned UKI, a UKI signed with another key, one
//! flipped byte of root data, a tampered manifest).
//!
//! The images are built once per test run and shared (a boot takes 15 to
//! 40 s under TCG, a build a minute): the production default image, and a
//! test variant that adds `layers/meta-slotsmith-test`, whose unit reports
//! from inside the VM what the tests check. Each boot runs on its own
//! sparse copy of the golden image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use slotsmith::qemu::{Ending, Run, Vm};

use crate::support::*;

/// The built output directories, shared by every boot test.
struct Built {
    demo: PathBuf,
    variant: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        for (t, p) in [
            ("qemu-system-x86_64", "qemu-system-x86"),
            ("virt-fw-vars", "virt-firmware (pip)"),
            ("sbattach", "sbsigntool"),
            ("sbsign", "sbsigntool"),
            ("openssl", "openssl"),
        ] {
            require(t, p);
        }
        // A static is never dropped, so a temporary directory here would
        // outlive the run (2 GiB each time). The fixture lives at one fixed
        // place in the target directory instead, cleared when a run starts.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("boot-fixture");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        // The production default image, from the repository.
        let build = |project: &Path, image: &str, out: &Path| {
            let r = slotsmith(
                &[
                    "--project",
                    project.to_str().unwrap(),
                    "build",
                    image,
                    "--out-dir",
                    out.to_str().unwrap(),
                    "--work-dir",
                    out.join("work").to_str().unwrap(),
                    "--quiet",
                ],
                &[],
                false,
                None,
            );
            assert_eq!(r.code, 0, "{}", r.stderr);
        };
        let out = dir.join("out");
        build(&repo_root(), "demo", &out);
        // The test variant: the same definition plus the test layer, in a
        // copy of the project (so its development keys are its own).
        let project = dir.join("variant");
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
        let def = def
            .replacen("name: demo\n", "name: demo-test\n", 1)
            .replacen(
                "  - meta-demo\n",
                "  - meta-demo\n  - meta-slotsmith-test\n",
                1,
            );
        assert!(def.contains("meta-slotsmith-test"), "{def}");
        std::fs::write(project.join("images/demo-test.yaml"), def).unwrap();
        // The same locked base as the default image.
        std::fs::copy(
            repo_root().join("images/demo.lock"),
            project.join("images/demo-test.lock"),
        )
        .unwrap();
        let vout = dir.join("vout");
        build(&project, "demo-test", &vout);
        Built {
            demo: out.join("demo"),
            variant: vout.join("demo-test"),
        }
    })
}

/// A fresh copy of `out`'s golden image and a variable store with the
/// build's keys enrolled, in `scratch`.
fn machine(out: &Path, scratch: &Path) -> Vm {
    let name = out.file_name().unwrap().to_str().unwrap();
    let disk = scratch.join("disk.img");
    slotsmith::qemu::copy_disk(&out.join(format!("{name}.img")), &disk).unwrap();
    let vars = scratch.join("vars.fd");
    slotsmith::qemu::make_vars(&out.join("secureboot"), &vars).unwrap();
    Vm {
        disk,
        vars,
        usb: Vec::new(),
        disks: Vec::new(),
        memory_mib: 2048,
        reboot: false,
    }
}

/// Boots until one of `expect` appears, QEMU exits or 300 s pass.
fn boot(vm: &Vm, scratch: &Path, expect: &[&str]) -> Run {
    vm.run_until(
        &scratch.join("console.log"),
        expect,
        Duration::from_secs(300),
    )
    .unwrap()
}

const MULTI_USER: &str = "reached multi-user.target";
const REFUSED: &str = "slotsmith-init: refusing to boot";

/// What a console must never show: a login prompt or a shell.
fn assert_no_login(console: &str) {
    for bad in [
        "login:",
        "Give root password",
        "emergency mode",
        "Press Enter for maintenance",
        "sh-5",
    ] {
        assert!(
            !console.contains(bad),
            "the console offers {bad:?}:\n{console}"
        );
    }
}

#[test]
fn the_production_image_boots_verified_with_secure_boot_and_offers_no_login() {
    let b = built();
    // Through the CLI, as the README boots it: a copy of the golden image,
    // the build's keys enrolled, Secure Boot on.
    let r = slotsmith(
        &[
            "--project",
            repo_root().to_str().unwrap(),
            "qemu",
            "demo",
            "--out-dir",
            b.demo.parent().unwrap().to_str().unwrap(),
            "--expect",
            MULTI_USER,
            "--expect",
            REFUSED,
            "--timeout",
            "300",
        ],
        &[],
        false,
        None,
    );
    let c = &r.stdout;
    assert_eq!(r.code, 0, "{}\n{c}", r.stderr);
    assert!(
        r.stderr.contains("Matched(\"reached multi-user.target\")"),
        "{}",
        r.stderr
    );
    for want in [
        "EFI Boot Guard",
        "Starting L:BOOT0:linux.efi",
        // The kernel's own report, repeated by the init (with `quiet`,
        // neither the EFI stub nor the kernel print it on the console).
        "kernel: secure boot enabled",
        "slotsmith-init: slot a verified root ready",
        "slot a reached multi-user.target",
    ] {
        assert!(c.contains(want), "{want:?} missing:\n{c}");
    }
    assert!(!c.contains(REFUSED), "{c}");
    assert_no_login(c);
    // The golden image itself was not written by the boot.
    assert_eq!(
        sha256(&b.demo.join("demo.img")),
        std::fs::read_to_string(b.demo.join("SHA256SUMS"))
            .unwrap()
            .lines()
            .find(|l| l.ends_with("  demo.img"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
    );
}

#[test]
fn the_boot_chain_is_reproducible_bit_for_bit() {
    // A second build of the same inputs, in other directories and without
    // the first one's stage cache, gives the same UKIs, signatures,
    // environments, initramfs, enrolment files and disk image.
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let r = slotsmith(
        &[
            "--project",
            repo_root().to_str().unwrap(),
            "build",
            "demo",
            "--out-dir",
            dir.path().join("out").to_str().unwrap(),
            "--work-dir",
            dir.path().join("work").to_str().unwrap(),
            "--no-cache",
            "--quiet",
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sums = |d: &Path| std::fs::read_to_string(d.join("SHA256SUMS")).unwrap();
    let (first, second) = (sums(&b.demo), sums(&dir.path().join("out/demo")));
    for name in [
        "linux-a.efi",
        "linux-b.efi",
        "bootx64.efi",
        "initrd.img",
        "boot-a.bgenv",
        "secureboot/db.auth",
        "demo.img",
    ] {
        assert!(
            first.contains(&format!("  {name}\n")),
            "{name} not in SHA256SUMS:\n{first}"
        );
    }
    assert_eq!(first, second);
}

/// The report lines of the test variant: key -> value.
fn report(console: &str) -> BTreeMap<String, String> {
    console
        .lines()
        .filter_map(|l| l.split_once("SLOTSMITH-TEST ").map(|(_, r)| r.trim_end()))
        .filter_map(|r| r.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_test_variant_reports_a_hardened_read_only_system_with_unique_keys() {
    let b = built();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let scratch = tempfile::tempdir().unwrap();
        let vm = machine(&b.variant, scratch.path());
        let run = boot(&vm, scratch.path(), &["SLOTSMITH-TEST done", REFUSED]);
        assert_eq!(
            run.ending,
            Ending::Matched("SLOTSMITH-TEST done".into()),
            "{}",
            run.console
        );
        let r = report(&run.console);
        let get = |k: &str| r.get(k).map(String::as_str).unwrap_or("<missing>");
        let c = &run.console;
        // Root: squashfs, read-only, on the dm-verity device the init made
        // from root-a (vda4) and its hash partition (vda5).
        assert_eq!(get("root-source"), "/dev/dm-0", "{c}");
        assert_eq!(get("root-dm-name"), "root", "{c}");
        assert_eq!(get("root-dm-slaves"), "vda4,vda5,", "{c}");
        assert_eq!(get("root-fstype"), "squashfs", "{c}");
        assert!(get("root-options").starts_with("ro,"), "{c}");
        assert_eq!(get("root-writable"), "no", "{c}");
        assert_eq!(get("var-fstype"), "overlay", "{c}");
        assert_eq!(get("tmp-fstype"), "tmpfs", "{c}");
        assert!(get("data-options").contains("noexec"), "{c}");
        assert_eq!(get("secureboot"), "1", "{c}");
        assert_eq!(get("kernel-secureboot"), "1", "{c}");
        // Firewall: default drop on input (and forward).
        assert_eq!(get("nft-input-policy"), "drop", "{c}");
        assert!(get("nft-drop-policies").parse::<u32>().unwrap() >= 2, "{c}");
        // Every masked unit is inactive, and the policies' masks are there.
        assert_eq!(get("masked-active"), "none", "{c}");
        assert!(get("masked-count").parse::<u32>().unwrap() >= 20, "{c}");
        // The hardened sysctls at their values, as the policies set them.
        let loaded = slotsmith::load::load_image(&repo_root().join("images/demo.yaml")).unwrap();
        let mut checked = 0;
        for rule in &loaded.image.rules {
            if let slotsmith_policy::Setting::Sysctl(map) = &rule.setting {
                for (k, v) in map {
                    let got = r
                        .get(&format!("sysctl {k}"))
                        .unwrap_or_else(|| panic!("{} {k} not reported:\n{c}", rule.id));
                    assert_eq!(got.trim(), v.trim(), "{} {k}", rule.id);
                    checked += 1;
                }
            }
        }
        assert!(checked >= 10, "only {checked} sysctls checked");
        // No host key in the image; one generated on the data partition.
        assert_eq!(get("etc-host-keys"), "0", "{c}");
        assert!(get("host-key").starts_with("SHA256:"), "{c}");
        assert_eq!(get("machine-id").len(), 32, "{c}");
        assert_eq!(get("swupdate"), "active", "{c}");
        // The device declares what it runs: `slotsmith-update sbom` prints
        // the build's SBOM byte for byte from slot A's boot partition.
        // The golden image carries the same SBOM for slot B; a slot that
        // does not exist is an error.
        let sbom = sha256(&b.variant.join("sbom.spdx.json"));
        assert_eq!(get("sbom-sha256"), sbom, "{c}");
        assert_eq!(get("sbom-slot-b-sha256"), sbom, "{c}");
        assert_eq!(get("sbom-slot-c"), "no", "{c}");
        assert_eq!(get("failed-units"), "", "{c}");
        assert_no_login(c);
        seen.push((get("host-key").to_string(), get("machine-id").to_string()));
    }
    assert_ne!(seen[0].0, seen[1].0, "two devices share an SSH host key");
    assert_ne!(seen[0].1, seen[1].1, "two devices share a machine id");
}

/// Replaces slot A's UKI on the copy with `uki`.
fn put_uki(vm: &Vm, uki: &Path) {
    slotsmith::qemu::write_boot_file(
        &vm.disk,
        "boot-a",
        "linux.efi",
        &std::fs::read(uki).unwrap(),
    )
    .unwrap();
}

#[test]
fn the_firmware_refuses_an_unsigned_uki_and_one_signed_with_another_key() {
    let b = built();
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let unsigned = s.join("unsigned.efi");
    std::fs::copy(b.demo.join("linux-a.efi"), &unsigned).unwrap();
    run("sbattach", &["--remove", unsigned.to_str().unwrap()]);
    let key = s.join("other.key");
    let cert = s.join("other.crt");
    run(
        "openssl",
        &[
            "req",
            "-new",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=not ours",
            "-days",
            "30",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    let other = s.join("other.efi");
    run(
        "sbsign",
        &[
            "--key",
            key.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--output",
            other.to_str().unwrap(),
            unsigned.to_str().unwrap(),
        ],
    );
    for uki in [&unsigned, &other] {
        let dir = tempfile::tempdir().unwrap();
        let vm = machine(&b.demo, dir.path());
        put_uki(&vm, uki);
        let run = boot(
            &vm,
            dir.path(),
            &["Access Denied", "slotsmith-init", REFUSED],
        );
        assert_eq!(
            run.ending,
            Ending::Matched("Access Denied".into()),
            "{}: {}",
            uki.display(),
            run.console
        );
        assert!(
            run.console.contains("Cannot load specified kernel image"),
            "{}",
            run.console
        );
        assert!(!run.console.contains("slotsmith-init"), "{}", run.console);
        assert_no_login(&run.console);
    }
}

#[test]
fn one_flipped_byte_of_root_data_fails_the_boot() {
    let b = built();
    let scratch = tempfile::tempdir().unwrap();
    let vm = machine(&b.demo, scratch.path());
    // The squashfs superblock, the first block the kernel reads.
    let (offset, _) = slotsmith::qemu::partition(&vm.disk, "root-a").unwrap();
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::File::options()
            .read(true)
            .write(true)
            .open(&vm.disk)
            .unwrap();
        let mut byte = [0u8];
        f.seek(SeekFrom::Start(offset + 40)).unwrap();
        f.read_exact(&mut byte).unwrap();
        f.seek(SeekFrom::Start(offset + 40)).unwrap();
        f.write_all(&[byte[0] ^ 1]).unwrap();
    }
    let run = boot(&vm, scratch.path(), &[MULTI_USER]);
    assert_eq!(run.ending, Ending::Exited, "{}", run.console);
    assert!(run.console.contains("is corrupted"), "{}", run.console);
    assert!(
        !run.console.contains("verified root ready"),
        "{}",
        run.console
    );
    assert_no_login(&run.console);
}

#[test]
fn the_init_refuses_a_tampered_manifest_and_slot_b_boots_when_selected() {
    let b = built();
    // A manifest edited after signing (its version): the init refuses.
    let scratch = tempfile::tempdir().unwrap();
    let vm = machine(&b.demo, scratch.path());
    let m = slotsmith::qemu::read_boot_file(&vm.disk, "boot-a", "manifest").unwrap();
    let tampered = String::from_utf8(m)
        .unwrap()
        .replacen("version 1.0.0", "version 1.0.9", 1);
    slotsmith::qemu::write_boot_file(&vm.disk, "boot-a", "manifest", tampered.as_bytes()).unwrap();
    let run = boot(&vm, scratch.path(), &[MULTI_USER, "verified root ready"]);
    assert_eq!(run.ending, Ending::Exited, "{}", run.console);
    let refusal: Vec<&str> = run
        .console
        .lines()
        .filter(|l| l.contains(REFUSED))
        .collect();
    assert_eq!(
        refusal.len(),
        1,
        "exactly one refusal line:\n{}",
        run.console
    );
    assert!(refusal[0].contains("signature"), "{}", refusal[0]);
    assert_no_login(&run.console);

    // Slot B, selected as an update that committed would select it.
    let scratch = tempfile::tempdir().unwrap();
    let vm = machine(&b.demo, scratch.path());
    slotsmith::qemu::select_slot(&vm.disk, "b").unwrap();
    let run = boot(&vm, scratch.path(), &[MULTI_USER, REFUSED]);
    assert_eq!(
        run.ending,
        Ending::Matched(MULTI_USER.into()),
        "{}",
        run.console
    );
    assert!(
        run.console.contains("Starting L:BOOT1:linux.efi"),
        "{}",
        run.console
    );
    assert!(
        run.console
            .contains("slotsmith-init: slot b verified root ready"),
        "{}",
        run.console
    );
    assert!(
        run.console.contains("slot b reached multi-user.target"),
        "{}",
        run.console
    );
}

#[test]
fn verify_names_a_uki_whose_command_line_or_kernel_differs_from_the_manifest() {
    let b = built();
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let key = b.demo.join("boot.pub.pem");
    let verify = |img: &Path| {
        slotsmith(
            &[
                "verify",
                img.to_str().unwrap(),
                "--boot-key",
                key.to_str().unwrap(),
            ],
            &[],
            false,
            None,
        )
    };
    // The golden image verifies, UKIs included.
    let img = s.join("disk.img");
    slotsmith::qemu::copy_disk(&b.demo.join("demo.img"), &img).unwrap();
    let r = verify(&img);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A UKI whose command line was changed (root hash and all), and one
    // with another kernel: verify names each, without booting.
    let cmdline = s.join("cmdline");
    std::fs::write(&cmdline, "console=ttyS0 init=/bin/sh").unwrap();
    let kernel = s.join("vmlinuz");
    std::fs::write(&kernel, b"not the signed kernel").unwrap();
    for (section, file, want) in [
        (
            ".cmdline",
            &cmdline,
            "the UKI's command line differs from the manifest's",
        ),
        (
            ".linux",
            &kernel,
            // A shorter kernel is caught either by its hash or, first, by its
            // section being zero-extended in memory: both name the kernel.
            "kernel /linux.efi:.linux",
        ),
    ] {
        let uki = s.join("changed.efi");
        let _ = std::fs::remove_file(&uki);
        run(
            "objcopy",
            &[
                "--update-section",
                &format!("{section}={}", file.display()),
                b.demo.join("linux-a.efi").to_str().unwrap(),
                uki.to_str().unwrap(),
            ],
        );
        let img = s.join("tampered.img");
        let _ = std::fs::remove_file(&img);
        slotsmith::qemu::copy_disk(&b.demo.join("demo.img"), &img).unwrap();
        slotsmith::qemu::write_boot_file(
            &img,
            "boot-a",
            "linux.efi",
            &std::fs::read(&uki).unwrap(),
        )
        .unwrap();
        let r = verify(&img);
        assert_eq!(r.code, 1, "{section}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{section}: {}", r.stderr);
        assert!(r.stderr.contains("slot a"), "{}", r.stderr);
    }
}
