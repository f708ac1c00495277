//! The default image, built as the README's first command builds it
//! (Debian bookworm through mmdebstrap), checked with independent tools.

use std::fs;

use crate::support::*;

#[test]
fn default_image_builds_and_verifies() {
    for (t, p) in [
        ("mmdebstrap", "mmdebstrap"),
        ("sgdisk", "gdisk"),
        ("unsquashfs", "squashfs-tools"),
        ("bmaptool", "bmap-tools"),
    ] {
        require(t, p);
    }
    let out = tempfile::Builder::new()
        .prefix("slotsmith-demo-")
        .tempdir()
        .unwrap();
    let work = out.path().join("work");
    let r = slotsmith(
        &[
            "build",
            "--out-dir",
            out.path().to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--json",
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = out.path().join("demo");
    for f in [
        "demo.img",
        "demo.img.bmap",
        "rootfs.squashfs",
        "SHA256SUMS",
        "build.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let img = dir.join("demo.img");
    let v = run("sgdisk", &["-v", img.to_str().unwrap()]);
    assert!(v.contains("No problems found"), "{v}");
    let ls = run(
        "unsquashfs",
        &["-lln", dir.join("rootfs.squashfs").to_str().unwrap()],
    );
    for want in [
        "squashfs-root/usr/sbin/nft",
        "squashfs-root/usr/sbin/sshd",
        "squashfs-root/usr/bin/swupdate",
        "squashfs-root/usr/lib/systemd/systemd",
        "squashfs-root/etc/motd",
        "squashfs-root/data",
    ] {
        assert!(
            ls.lines().any(|l| l.contains(want)),
            "{want} missing from the demo rootfs"
        );
    }
    assert!(
        !ls.contains("update-motd.d/10-uname"),
        "meta-demo removes 10-uname"
    );
    // Owners and special bits from the root-owned base survive a rootless
    // build: PAM's checker stays setgid shadow (on the hardening
    // allow-list), while su lost its setuid bit to FILES-PERM-001.
    let chkpwd = ls
        .lines()
        .find(|l| l.ends_with("squashfs-root/usr/sbin/unix_chkpwd"))
        .expect("unix_chkpwd");
    assert!(chkpwd.starts_with("-rwxr-sr-x 0/42"), "{chkpwd}");
    let su = ls
        .lines()
        .find(|l| l.ends_with("squashfs-root/usr/bin/su"))
        .expect("su");
    assert!(su.starts_with("-rwxr-xr-x 0/0"), "{su}");
    let health = ls
        .lines()
        .find(|l| l.ends_with("usr/local/bin/demo-health"))
        .expect("demo-health");
    assert!(health.starts_with("-rwxr-x--- 0/0"), "{health}");
    assert!(
        ls.lines()
            .any(|l| l.starts_with('c') && l.contains("squashfs-root/dev/null")),
        "device nodes"
    );
    let copy = out.path().join("copy.img");
    run(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            dir.join("demo.img.bmap").to_str().unwrap(),
            img.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    assert_eq!(sha256(&copy), sha256(&img));
    // The release evidence of the real default image, checked by tools
    // nobody here wrote: the SBOM by pyspdxtools (with every locked Debian
    // package, its .deb hash from the lock), the provenance by
    // securesystemslib.
    let sbom = dir.join("sbom.spdx.json");
    run("pyspdxtools", &["-i", sbom.to_str().unwrap()]);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sbom).unwrap()).unwrap();
    let lock = std::fs::read_to_string(repo_root().join("images/demo.lock")).unwrap();
    let locked: Vec<(&str, &str)> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("package "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0], f[3])
        })
        .collect();
    let text = doc.to_string();
    for (name, sha) in &locked {
        assert!(
            text.contains(&format!("pkg:deb/debian/{}@", slotsmith::sbom::pct(name))),
            "{name} is not in the SBOM"
        );
        assert!(
            text.contains(sha),
            "the .deb sha256 of {name} is not in the SBOM"
        );
    }
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    // The updater the build installs (from no package, layer or policy)
    // is declared with its sha256 as the image holds it.
    let updater = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "slotsmith-update")
        .expect("the updater is in the SBOM");
    assert_eq!(
        updater["checksums"][0]["checksumValue"]
            .as_str()
            .map(str::len),
        Some(64),
        "{updater}"
    );
    assert_eq!(updater["packageFileName"], "./usr/sbin/slotsmith-update");
    let (code, out_text) = crate::provenance::py_verify(
        &dir.join("provenance.dsse.json"),
        &dir.join("provenance.pub.pem"),
    );
    assert_eq!(code, 0, "{out_text}");
    assert!(out_text.starts_with("OK "), "{out_text}");
    // cargo xtask verify accepts the default image with its boot key, and
    // its kernel is Debian's real one.
    let r = slotsmith(
        &[
            "verify",
            img.to_str().unwrap(),
            "--boot-key",
            dir.join("boot.pub.pem").to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("slot a: demo 1.0.0 (security version 1)")
            && r.stderr.contains("slot b: demo 1.0.0"),
        "{}",
        r.stderr
    );
    let kernel = fs::read(dir.join("vmlinuz")).unwrap();
    assert!(
        kernel.len() > 4 << 20 && &kernel[0x202..0x206] == b"HdrS",
        "a bzImage kernel"
    );
    let manifest = fs::read_to_string(dir.join("boot-a.manifest")).unwrap();
    // The image's arguments, then those the hardening rules add, then the slot.
    assert!(
        manifest.contains("\ncmdline console=ttyS0,115200 quiet slab_nomerge ")
            && manifest.contains(" lockdown=integrity ")
            && manifest.contains(" systemd.getty_auto=0 slotsmith.slot=a ro slotsmith.roothash=")
            && manifest.contains(" slotsmith.svn=1 panic=5\n"),
        "{manifest}"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("build.json")).unwrap()).unwrap();
    assert_eq!(record["image"], "demo");
    // ESP, two boot partitions, two slots with their verity partitions, data.
    assert_eq!(record["partitions"].as_array().unwrap().len(), 8);
}

/// The default image's hardening, checked on its real Debian rootfs with
/// tools that read it as the device would: nft loads the ruleset,
/// systemctl sees every masked unit as masked, systemd-analyze orders the
/// sysctl.d files so ours wins; and its `.swu` verifies and names the
/// slot B partitions and EFI Boot Guard's kernel file (the boot tests
/// install it with the real SWUpdate on a booted device).
#[test]
fn default_image_hardening_and_update() {
    for (t, p) in [
        ("nft", "nftables"),
        ("systemctl", "systemd"),
        ("systemd-analyze", "systemd"),
        ("swupdate", "swupdate"),
        ("unsquashfs", "squashfs-tools"),
    ] {
        require(t, p);
    }
    let out = tempfile::Builder::new()
        .prefix("slotsmith-demo-")
        .tempdir()
        .unwrap();
    let r = slotsmith(
        &[
            "build",
            "--out-dir",
            out.path().to_str().unwrap(),
            "--work-dir",
            out.path().join("work").to_str().unwrap(),
            "--quiet",
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = out.path().join("demo");
    let md = fs::read_to_string(dir.join("audit/report.md")).unwrap();
    assert!(
        md.contains("Result: **PASSED**") && md.contains("| Profile | production |"),
        "the baseline passes in production"
    );

    let root = out.path().join("root");
    run(
        "unsquashfs",
        &[
            "-q",
            "-n",
            "-d",
            root.to_str().unwrap(),
            dir.join("rootfs.squashfs").to_str().unwrap(),
        ],
    );

    // nftables: syntax check and a real load in a throwaway network namespace.
    let conf = root.join("etc/nftables.conf");
    run(
        "unshare",
        &["-rn", "nft", "-c", "-f", conf.to_str().unwrap()],
    );
    let listed = run(
        "unshare",
        &[
            "-rn",
            "sh",
            "-c",
            &format!("nft -f {} && nft list ruleset", conf.display()),
        ],
    );
    for chain in ["input", "forward"] {
        let at = listed
            .find(&format!("chain {chain} {{"))
            .unwrap_or_else(|| panic!("no {chain} chain:\n{listed}"));
        let body = &listed[at..];
        let end = body.find('}').unwrap();
        assert!(
            body[..end].contains("policy drop;"),
            "{chain} does not drop by default:\n{listed}"
        );
    }

    // systemctl --root: every unit the policies mask reports "masked".
    let loaded = slotsmith::load::load_image(&repo_root().join("images/demo.yaml")).unwrap();
    let mut units = Vec::new();
    for rule in &loaded.image.rules {
        match &rule.setting {
            slotsmith_policy::Setting::MaskedUnits(u) => units.extend(u.iter().cloned()),
            slotsmith_policy::Setting::Console(c) => units.extend(c.masked_units()),
            _ => {}
        }
    }
    assert!(units.len() > 20, "{units:?}");
    for unit in &units {
        let out = duct::cmd(
            "systemctl",
            [
                &format!("--root={}", root.display()),
                "is-enabled",
                unit.as_str(),
            ],
        )
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "masked",
            "{unit}"
        );
    }
    let nft_state = duct::cmd(
        "systemctl",
        [
            &format!("--root={}", root.display()),
            "is-enabled",
            "nftables.service",
        ],
    )
    .stdout_capture()
    .unchecked()
    .run()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&nft_state.stdout).trim(), "enabled");

    // systemd-analyze: our sysctl.d file is read last, after Debian's own
    // 99-protect-links.conf and 99-sysctl.conf, so its values win.
    let cat = run(
        "systemd-analyze",
        &[
            "cat-config",
            &format!("--root={}", root.display()),
            "sysctl.d",
        ],
    );
    // Each file starts with a "# <root>/<path>" header line.
    let prefix = format!("# {}/", root.display());
    let headers: Vec<&str> = cat
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect();
    assert_eq!(
        headers.last().copied(),
        Some("etc/sysctl.d/99-zz-slotsmith.conf"),
        "{headers:?}"
    );
    assert!(
        headers.iter().any(|h| h.ends_with("99-protect-links.conf")),
        "Debian's file is there to be overridden: {headers:?}"
    );
    let ours = &cat[cat
        .find(&format!("{prefix}etc/sysctl.d/99-zz-slotsmith.conf"))
        .unwrap()..];
    assert!(
        ours.contains("fs.protected_fifos = 2") && ours.contains("kernel.kptr_restrict = 2"),
        "{ours}"
    );

    // The update verifies, and the real SWUpdate installs it into slot B.
    let swu = dir.join("demo-1.0.0.swu");
    let cert = dir.join("update.cert.pem");
    let r = slotsmith(
        &[
            "verify",
            swu.to_str().unwrap(),
            "--update-cert",
            cert.to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The real SWUpdate installs it on a booted device, through EFI Boot
    // Guard's handler, in updates::updates_commit_roll_back_refuse_and_survive_a_power_cut_with_an_audit_trail.
    let desc = run(
        "sh",
        &[
            "-c",
            &format!("cpio -i --to-stdout sw-description < {}", swu.display()),
        ],
    );
    for want in [
        "device = \"/dev/disk/by-partlabel/root-b\";",
        "device = \"/dev/disk/by-partlabel/boot-b\";",
        "filesystem = \"vfat\";",
        "path = \"/linux.efi\";",
        "{ name = \"kernelfile\"; value = \"L:BOOT1:linux.efi\"; }",
        "slotsmith-security-version = 1;",
    ] {
        assert!(desc.contains(want), "{want} missing:\n{desc}");
    }

    // Field updates on the device: the updater is a static executable,
    // its settings come from the plan, and systemd enables the health
    // check and the trial timeout; SWUpdate runs the anti-rollback check.
    let updater = fs::read(root.join("usr/sbin/slotsmith-update")).unwrap();
    assert!(updater.starts_with(b"\x7fELF"));
    let headers = run(
        "readelf",
        &[
            "-lW",
            root.join("usr/sbin/slotsmith-update").to_str().unwrap(),
        ],
    );
    assert!(
        !headers.contains("INTERP"),
        "the updater must be static: {headers}"
    );
    let settings: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(root.join("etc/slotsmith/update.json")).unwrap())
            .unwrap();
    assert_eq!(settings["security_version"], 1);
    assert_eq!(settings["state_dir"], "/data/slotsmith");
    assert!(settings["healthy_units"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u == "ssh.service"));
    for (unit, want) in [
        ("slotsmith-health.service", "enabled"),
        ("slotsmith-trial-timeout.service", "enabled"),
        ("slotsmith-usb-update@.service", "static"),
    ] {
        let out = duct::cmd(
            "systemctl",
            [&format!("--root={}", root.display()), "is-enabled", unit],
        )
        .stdout_capture()
        .unchecked()
        .run()
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want, "{unit}");
    }
    let conf = fs::read_to_string(root.join("etc/swupdate/conf.d/10-slotsmith")).unwrap();
    assert!(
        conf.contains("-P /usr/libexec/slotsmith/preupdate"),
        "{conf}"
    );
    // USB mass storage is allowed only through the image's waiver, which
    // the audit report shows with its approver.
    assert!(
        md.contains("KERNEL-MOD-002") && md.contains("slotsmith maintainers (demo image)"),
        "{md}"
    );
    let modprobe =
        fs::read_to_string(root.join("etc/modprobe.d/00-slotsmith-disabled.conf")).unwrap();
    assert!(
        !modprobe.contains("usb-storage") && !modprobe.contains("usb_storage"),
        "{modprobe}"
    );
    assert!(
        modprobe.contains("install cramfs /bin/false") || modprobe.contains("cramfs"),
        "{modprobe}"
    );
}
