//! Verified boot: dm-verity trees checked by veritysetup, boot manifests
//! signed with Ed25519 and checked by openssl, `cargo xtask verify` on the
//! image alone with one precise message per tamper, and the key rules.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::fixture::build_fixture;
use crate::support::*;

fn img_of(dir: &Path, record: &serde_json::Value) -> PathBuf {
    dir.join(format!("{}.img", record["image"].as_str().unwrap()))
}

fn slot<'a>(record: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    record["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot"] == name)
        .unwrap()
}

fn flip(path: &Path, offset: u64) {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x01;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
}

fn verify(img: &Path, key: &Path) -> CliRun {
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
}

/// Byte offset of a file's contents inside the FAT at `esp_offset`, found
/// with mtools (an independent FAT reader): the file's first cluster.
fn fat_file_offset(img: &Path, esp_offset: u64, path: &str) -> u64 {
    // minfo gives the geometry; mshowfat the file's clusters.
    let spec = format!("{}@@{esp_offset}", img.display());
    let info = run("minfo", &["-i", &spec, "::"]);
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} in {info}"))
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let sector = field("sector size");
    let per_cluster = field("cluster size");
    let reserved = field("reserved (boot) sectors");
    let fats = field("fats");
    let fat_len = match field("sectors per fat") {
        0 => field("big sectors per fat"),
        n => n,
    };
    let root_entries = field("max available root directory slots");
    let chain = run("mshowfat", &["-i", &spec, &format!("::{path}")]);
    let first: u64 = chain
        .split('<')
        .nth(1)
        .unwrap()
        .split(['-', '>'])
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let data_start = reserved + fats * fat_len + (root_entries * 32).div_ceil(sector);
    esp_offset + (data_start + (first - 2) * per_cluster) * sector
}

#[test]
fn verity_and_signatures_pass_independent_verifiers() {
    for (t, p) in [
        ("veritysetup", "cryptsetup-bin"),
        ("openssl", "openssl"),
        ("mtype", "mtools"),
    ] {
        require(t, p);
    }
    let (p, dir, record) = build_fixture("squashfs");
    let img = img_of(&dir, &record);
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = dir.join("rootfs.squashfs");
    for s in ["a", "b"] {
        let sl = slot(&record, s);
        let root_hash = sl["root_hash"].as_str().unwrap();
        // veritysetup verify: our slot data against our hash partition.
        let data = tmp.path().join(format!("data-{s}"));
        let hash = tmp.path().join(format!("hash-{s}"));
        let blocks = sl["data_blocks"].as_u64().unwrap();
        extract(
            &img,
            sl["root_partition"]["offset"].as_u64().unwrap(),
            blocks * 4096,
            &data,
        );
        extract(
            &img,
            sl["verity_partition"]["offset"].as_u64().unwrap(),
            sl["verity_partition"]["size"].as_u64().unwrap(),
            &hash,
        );
        run(
            "veritysetup",
            &[
                "verify",
                data.to_str().unwrap(),
                hash.to_str().unwrap(),
                root_hash,
            ],
        );
        // veritysetup format with the same salt and UUID writes our bytes.
        let theirs = tmp.path().join(format!("theirs-{s}"));
        let dump = run(
            "veritysetup",
            &[
                "dump",
                dir.join(format!("root-{s}.verity")).to_str().unwrap(),
            ],
        );
        let uuid = dump
            .lines()
            .find_map(|l| l.strip_prefix("UUID:"))
            .unwrap()
            .trim()
            .to_string();
        let out = run(
            "veritysetup",
            &[
                "format",
                "--salt",
                sl["salt"].as_str().unwrap(),
                "--uuid",
                &uuid,
                rootfs.to_str().unwrap(),
                theirs.to_str().unwrap(),
            ],
        );
        assert!(
            out.contains(&format!("Root hash:      \t{root_hash}")),
            "{out}"
        );
        assert_eq!(
            fs::read(&theirs).unwrap(),
            fs::read(dir.join(format!("root-{s}.verity"))).unwrap(),
            "slot {s} hash area"
        );
        // DPS: partition UUIDs are the two halves of the root hash.
        let u = |h: &str| {
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        };
        assert_eq!(sl["root_uuid"].as_str().unwrap(), u(&root_hash[..32]));
        assert_eq!(sl["verity_uuid"].as_str().unwrap(), u(&root_hash[32..]));
        // One flipped data byte: veritysetup refuses.
        flip(&data, 4096 * (blocks / 2) + 17);
        let bad = duct::cmd(
            "veritysetup",
            [
                "verify",
                data.to_str().unwrap(),
                hash.to_str().unwrap(),
                root_hash,
            ],
        )
        .stderr_capture()
        .stdout_capture()
        .unchecked()
        .run()
        .unwrap();
        assert!(
            !bad.status.success(),
            "veritysetup accepted a tampered slot {s}"
        );

        // openssl verifies our manifest signature with the public PEM ...
        let manifest = dir.join(format!("boot-{s}.manifest"));
        let sig = dir.join(format!("boot-{s}.manifest.sig"));
        let pubkey = dir.join("boot.pub.pem");
        run(
            "openssl",
            &[
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                pubkey.to_str().unwrap(),
                "-rawin",
                "-in",
                manifest.to_str().unwrap(),
                "-sigfile",
                sig.to_str().unwrap(),
            ],
        );
        // ... and rejects a tampered manifest.
        let tampered = tmp.path().join("tampered");
        fs::copy(&manifest, &tampered).unwrap();
        flip(&tampered, 40);
        let bad = duct::cmd(
            "openssl",
            [
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                pubkey.to_str().unwrap(),
                "-rawin",
                "-in",
                tampered.to_str().unwrap(),
                "-sigfile",
                sig.to_str().unwrap(),
            ],
        )
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
        assert!(!bad.status.success());
        // Ed25519 is deterministic: openssl's signature equals ours.
        let theirs = tmp.path().join("openssl.sig");
        let key = p.path().join("keys/dev/boot.key.pem");
        run(
            "openssl",
            &[
                "pkeyutl",
                "-sign",
                "-inkey",
                key.to_str().unwrap(),
                "-rawin",
                "-in",
                manifest.to_str().unwrap(),
                "-out",
                theirs.to_str().unwrap(),
            ],
        );
        assert_eq!(fs::read(&theirs).unwrap(), fs::read(&sig).unwrap());
        // The manifest sits on the ESP, as mtools reads it.
        let esp = record["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "esp")
            .unwrap();
        let on_esp = run(
            "mtype",
            &[
                "-i",
                &format!("{}@@{}", img.display(), esp["offset"]),
                &format!("::/{s}/manifest"),
            ],
        );
        assert_eq!(on_esp.as_bytes(), &fs::read(&manifest).unwrap()[..]);
    }
    let text = fs::read_to_string(dir.join("boot-a.manifest")).unwrap();
    assert!(
        text.starts_with("slotsmith-boot-manifest v2\nimage fixture-squashfs\nversion 2.1.0\n"),
        "{text}"
    );

    // Private key bytes never appear under out/.
    let pem = fs::read_to_string(p.path().join("keys/dev/boot.key.pem")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64_decode(&b64);
    let seed = &der[der.len() - 32..];
    for e in walkdir::WalkDir::new(&dir) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let bytes = fs::read(e.path()).unwrap();
            assert!(
                !bytes.windows(32).any(|w| w == seed),
                "private key seed in {}",
                e.path().display()
            );
            assert!(
                !bytes
                    .windows(b64.len().min(40))
                    .any(|w| w == &b64.as_bytes()[..40]),
                "private PEM in {}",
                e.path().display()
            );
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let out = duct::cmd("base64", ["-d"])
        .stdin_bytes(s.as_bytes().to_vec())
        .stdout_capture()
        .run()
        .unwrap();
    out.stdout
}

#[test]
fn verify_accepts_the_image_and_names_every_tamper() {
    require("mshowfat", "mtools");
    let (_p, dir, record) = build_fixture("squashfs");
    let img = img_of(&dir, &record);
    let key = dir.join("boot.pub.pem");
    let ok = verify(&img, &key);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(
        ok.stderr
            .contains("slot a: fixture-squashfs 2.1.0 (security version 0)"),
        "{}",
        ok.stderr
    );
    assert!(
        ok.stderr.contains("slot b: fixture-squashfs 2.1.0"),
        "{}",
        ok.stderr
    );

    let a = slot(&record, "a");
    let esp = record["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "esp")
        .unwrap()["offset"]
        .as_u64()
        .unwrap();
    let root_a = a["root_partition"]["offset"].as_u64().unwrap();
    let verity_a = a["verity_partition"]["offset"].as_u64().unwrap();
    let manifest = fs::read_to_string(dir.join("boot-a.manifest")).unwrap();
    // A digit of the root hash: flipping its low bit keeps it a hex digit,
    // so the manifest still parses and only its meaning changes.
    let hash_at = manifest.find("verity-root-hash ").unwrap() + "verity-root-hash ".len();
    let root_line = (hash_at
        + manifest[hash_at..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap()) as u64;
    type Offset = Box<dyn Fn(&Path) -> u64>;
    let cases: Vec<(&str, Offset, &str)> = vec![
        ("rootfs data", Box::new(move |_| root_a + 3 * 4096 + 5), "slot a: dm-verity check of root-a against root-a-verity failed: data block 3 does not match the hash tree"),
        ("verity tree", Box::new(move |_| verity_a + 4096 + 33), "slot a: dm-verity check of root-a against root-a-verity failed: hash block"),
        ("manifest", Box::new(move |i| fat_file_offset(i, esp, "/a/manifest") + root_line), "slot a: boot manifest was modified ("),
        ("signature", Box::new(move |i| fat_file_offset(i, esp, "/a/manifest.sig") + 10), "slot a: boot manifest signature does not verify"),
        ("kernel", Box::new(move |i| fat_file_offset(i, esp, "/a/vmlinuz") + 1000), "slot a: kernel /a/vmlinuz does not match the manifest"),
        ("GPT entry", Box::new(|_| 2 * 512 + 128 + 56 + 2), "GPT of"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (what, offset, message) in cases {
        let copy = tmp.path().join("t.img");
        let _ = fs::remove_file(&copy);
        run(
            "cp",
            &[
                "--sparse=always",
                img.to_str().unwrap(),
                copy.to_str().unwrap(),
            ],
        );
        let off = offset(&copy);
        flip(&copy, off);
        let r = verify(&copy, &key);
        assert_eq!(r.code, 1, "{what}: {}", r.stderr);
        assert!(
            r.stderr.contains(message),
            "{what}: expected {message:?} in:\n{}",
            r.stderr
        );
        if what == "manifest" {
            assert!(
                r.stderr.contains("and its signature does not verify"),
                "{}",
                r.stderr
            );
        }
        if what == "signature" {
            assert!(
                r.stderr.contains("though the manifest matches the image"),
                "{}",
                r.stderr
            );
        }
        if what == "GPT entry" {
            assert!(
                r.stderr.contains("partition entry array crc mismatch"),
                "{}",
                r.stderr
            );
        }
    }

    // Another key: every slot's signature fails.
    let other = tmp.path().join("other");
    slotsmith_sign::generate(&other, "boot").unwrap();
    let r = verify(&img, &other.join("boot.pub.pem"));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("slot a: boot manifest signature does not verify")
            && r.stderr
                .contains("slot b: boot manifest signature does not verify"),
        "{}",
        r.stderr
    );
}

#[test]
fn keys_generate_release_rules_and_permissions() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("release");
    let r = slotsmith(
        &[
            "keys",
            "generate",
            "--role",
            "boot",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let key = out.join("boot.key.pem");
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    run("openssl", &["pkey", "-in", key.to_str().unwrap(), "-noout"]);
    let pubout = run(
        "openssl",
        &["pkey", "-in", key.to_str().unwrap(), "-pubout"],
    );
    assert_eq!(
        pubout,
        fs::read_to_string(out.join("boot.pub.pem")).unwrap()
    );
    // Never overwrites a key.
    let before = fs::read(&key).unwrap();
    let r = slotsmith(
        &[
            "keys",
            "generate",
            "--role",
            "boot",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("exists"), "{}", r.stderr);
    assert_eq!(fs::read(&key).unwrap(), before);

    // Release images also need a release update key and certificate.
    let r = slotsmith(
        &[
            "keys",
            "generate",
            "--role",
            "update",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // ... and a release provenance key.
    let r = slotsmith(
        &[
            "keys",
            "generate",
            "--role",
            "provenance",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let upd = format!(
        "  update:\n    key: {}\n    cert: {}\n  provenance:\n    key: {}\n    public-key: {}\n",
        out.join("update.key.pem").display(),
        out.join("update.cert.pem").display(),
        out.join("provenance.key.pem").display(),
        out.join("provenance.pub.pem").display()
    );
    // A release image refuses to generate development keys.
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    let base = fixture_image("rel", "fixtures/base.tar.gz", &[], "squashfs", "16MiB");
    p.write("images/rel.yaml", &format!("{base}release: true\n"));
    let r = slotsmith(
        &["plan", p.image("rel").to_str().unwrap()],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("signing.boot: a release image must name its boot key"),
        "{}",
        r.stderr
    );
    assert!(!p.path().join("keys/dev").exists());
    // ... and refuses a key under keys/dev/, even through a symlink.
    slotsmith_sign::generate(&p.path().join("keys/dev"), "boot").unwrap();
    p.write("images/rel.yaml", &format!("{base}release: true\nsigning:\n{upd}  boot:\n    key: keys/dev/boot.key.pem\n    public-key: keys/dev/boot.pub.pem\n"));
    let r = slotsmith(
        &["plan", p.image("rel").to_str().unwrap()],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("signing.boot.key: a release image refuses keys from keys/dev/"),
        "{}",
        r.stderr
    );
    std::os::unix::fs::symlink(p.path().join("keys/dev"), p.path().join("keys/innocent")).unwrap();
    p.write("images/rel.yaml", &format!("{base}release: true\nsigning:\n{upd}  boot:\n    key: keys/innocent/boot.key.pem\n    public-key: keys/innocent/boot.pub.pem\n"));
    let r = build_project(&p, "rel");
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("a release image refuses keys from keys/dev"),
        "{}",
        r.stderr
    );

    // A private key readable by others is refused, as ssh does.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    p.write(
        "images/rel.yaml",
        &format!(
            "{base}release: true\nsigning:\n{upd}  boot:\n    key: {}\n    public-key: {}\n",
            key.display(),
            out.join("boot.pub.pem").display()
        ),
    );
    let r = build_project(&p, "rel");
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("permissions 0644 for") && r.stderr.contains("are too open"),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read_dir(p.path().join("out")).unwrap().count(), 0);

    // The external signer hook: a script wrapping openssl gets the exact
    // bytes and returns the signature; the image verifies.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let script = tmp.path().join("hsm-sign");
    fs::write(&script, format!("#!/bin/sh\nset -e\nopenssl pkeyutl -sign -inkey {} -rawin -in \"$1\" -out \"$2\"\necho signed >> {}\n", key.display(), tmp.path().join("log").display())).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    p.write("images/rel.yaml", &format!("{base}release: true\nsigning:\n{upd}  boot:\n    external-signer: [\"{}\", \"{{in}}\", \"{{out}}\"]\n    public-key: {}\n", script.display(), out.join("boot.pub.pem").display()));
    let r = build_project(&p, "rel");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        fs::read_to_string(tmp.path().join("log")).unwrap(),
        "signed\nsigned\n",
        "one signature per slot"
    );
    let r = verify(&p.path().join("out/rel/rel.img"), &out.join("boot.pub.pem"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A signer that signs with another key is caught before anything ships.
    let other = tmp.path().join("other");
    slotsmith_sign::generate(&other, "boot").unwrap();
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nopenssl pkeyutl -sign -inkey {} -rawin -in \"$1\" -out \"$2\"\n",
            other.join("boot.key.pem").display()
        ),
    )
    .unwrap();
    // The same manifests signed by the same public key are a stage-cache
    // hit, and the signer would not run at all: drop the cache so it does.
    fs::remove_dir_all(p.path().join("work/.stage-cache")).unwrap();
    let r = build_project(&p, "rel");
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("the external signer returned a signature that does not verify"),
        "{}",
        r.stderr
    );
}

fn build_project(p: &Project, name: &str) -> CliRun {
    let out = p.path().join("out");
    fs::create_dir_all(&out).unwrap();
    slotsmith(
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
    )
}

#[test]
fn an_empty_slot_b_is_zeroed_and_reported_empty() {
    // fill-slot-b: false: slot B and its verity partition stay zeroed
    // (and mapped in the bmap, so flashing clears a reused device), its
    // boot files are absent, and verify reports the slot as empty. The
    // update still carries slot B's verity tree and manifest.
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    let image = fixture_image("half", "fixtures/base.tar.gz", &[], "squashfs", "16MiB")
        .replace("fill-slot-b: true", "fill-slot-b: false");
    p.write("images/half.yaml", &image);
    let r = build_project(&p, "half");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = p.path().join("out/half");
    let img = dir.join("half.img");
    let r = verify(&img, &dir.join("boot.pub.pem"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("slot b: empty"), "{}", r.stderr);
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("build.json")).unwrap()).unwrap();
    for name in ["root-b", "root-b-verity"] {
        let part = record["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap();
        let out = p.path().join(name);
        extract(
            &img,
            part["offset"].as_u64().unwrap(),
            part["size"].as_u64().unwrap(),
            &out,
        );
        assert!(
            fs::read(&out).unwrap().iter().all(|&b| b == 0),
            "{name} is not zeroed"
        );
    }
    let esp = record["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "esp")
        .unwrap();
    let listing = run(
        "mdir",
        &[
            "-/",
            "-b",
            "-i",
            &format!("{}@@{}", img.display(), esp["offset"]),
            "::/",
        ],
    );
    assert!(
        listing.contains("::/a/manifest") && !listing.contains("::/b/"),
        "{listing}"
    );
    let swu = slotsmith_swu::read_swu(&dir.join("half-2.1.0.swu")).unwrap();
    assert!(
        swu.entries.iter().any(|e| e.name == "root-b.verity"),
        "the update can still fill slot B"
    );
    let copy = p.path().join("copy.img");
    run(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            dir.join("half.img.bmap").to_str().unwrap(),
            img.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    assert_eq!(sha256(&copy), sha256(&img));
}
