//! End to end, unprivileged: a real FAT boot partition made by the stock
//! tools (`mkfs.vfat`, `mcopy`) holding a manifest signed with a freshly
//! generated key, read by the init's FAT reader and verified the way the
//! init verifies it at boot. Each refusal the init must make (tampered
//! manifest, wrong key, wrong slot, command line or root hash that does
//! not match, missing or oversized files, duplicate names) is checked on
//! real images, not on hand-built structs.

use slotsmith_init::boot::verify_slot;
use slotsmith_init::cmdline::{self, BootArgs};
use slotsmith_init::fat::{read_boot_files, read_boot_files_at, BootFiles};
use slotsmith_sign::keys::{generate, load_signing_key};
use slotsmith_sign::manifest::{sign_manifest, FileRef, Manifest};
use slotsmith_sign::signer::KeySigner;
use std::fs;
use std::path::{Path, PathBuf};
use uuid::Uuid;

const ROOT_HASH: &str = "caba66f5d7d5c85ea5b8b50651e0835b1e93df0b108532eb07fe0ea8c2c3d99b";

fn cmdline_for(slot: &str, svn: u32) -> String {
    format!(
        "console=ttyS0,115200 quiet module.sig_enforce=1 slotsmith.slot={slot} slotsmith.roothash={ROOT_HASH} slotsmith.svn={svn} panic=5 ro"
    )
}

fn manifest(slot: &str, svn: u32) -> Manifest {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(ROOT_HASH, &mut hash).unwrap();
    Manifest {
        image: "demo".into(),
        version: "1.0.0".into(),
        security_version: u64::from(svn),
        slot: slot.into(),
        golden_slots: Some(vec!["a".into(), "b".into()]),
        kernel: FileRef {
            path: format!("/{slot}/vmlinuz"),
            sha256: [0x42; 32],
            size: 9_000_000,
        },
        initrd: None,
        dtb: None,
        cmdline: cmdline_for(slot, svn),
        verity_root_hash: hash,
        verity_salt: [0x50; 32],
        verity_data_blocks: 54419,
        verity_hash_start_block: 1,
        root_partition_uuid: Uuid::from_bytes([0xca; 16]),
        verity_partition_uuid: Uuid::from_bytes([0x1e; 16]),
    }
}

struct Keys {
    _dir: tempfile::TempDir,
    signer: KeySigner,
    pub_pem: Vec<u8>,
    pub_path: PathBuf,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = generate(&dir.path().join("k"), "boot").unwrap();
    Keys {
        signer: KeySigner::new(load_signing_key(&private).unwrap()),
        pub_pem: fs::read(&public).unwrap(),
        pub_path: public,
        _dir: dir,
    }
}

fn run(program: &str, args: &[&str]) {
    let out = duct::cmd(program, args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap_or_else(|e| panic!("{program} must be installed to run these tests: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 4 MiB FAT image at `<dir>/boot.img` holding `files` (name, bytes) in
/// its root directory, made by mkfs.vfat and mcopy.
fn fat_image(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    let img = dir.join("boot.img");
    fs::write(&img, vec![0u8; 4 << 20]).unwrap();
    let img_s = img.to_str().unwrap();
    run("mkfs.vfat", &["-n", "BOOT0", img_s]);
    for (name, bytes) in files {
        let src = dir.join(format!("src-{name}"));
        fs::write(&src, bytes).unwrap();
        run(
            "mcopy",
            &[
                "-i",
                img_s,
                "-o",
                src.to_str().unwrap(),
                &format!("::/{name}"),
            ],
        );
    }
    img
}

fn signed(k: &Keys, m: &Manifest) -> (Vec<u8>, Vec<u8>) {
    let (bytes, sig) = sign_manifest(m, &k.signer).unwrap();
    (bytes, sig.to_vec())
}

fn check(k: &Keys, files: &BootFiles, line: &str) -> anyhow::Result<Manifest> {
    let args: BootArgs = cmdline::parse(line)?;
    verify_slot(
        files,
        &k.pub_pem,
        &k.pub_path,
        &args,
        &format!("{line}\n"),
        None,
    )
}

#[test]
fn a_signed_slot_on_a_real_fat_image_verifies() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let m = manifest("b", 7);
    let (bytes, sig) = signed(&k, &m);
    let img = fat_image(
        dir.path(),
        &[
            ("manifest", &bytes),
            ("manifest.sig", &sig),
            ("linux.efi", b"MZ"),
        ],
    );
    let files = read_boot_files_at(&img).unwrap();
    assert_eq!(files.manifest, bytes);
    assert_eq!(files.sig, sig);
    let got = check(&k, &files, &cmdline_for("b", 7)).unwrap();
    assert_eq!(got, m);
    // The image was opened read-only and nothing was written.
    let before = fs::read(&img).unwrap();
    read_boot_files_at(&img).unwrap();
    assert_eq!(fs::read(&img).unwrap(), before);
}

#[test]
fn the_init_refuses_every_mismatch() {
    let k = keys();
    let other = keys();
    let m = manifest("a", 3);
    let (bytes, sig) = signed(&k, &m);
    let good = BootFiles {
        manifest: bytes.clone(),
        sig: sig.clone(),
    };
    let line = cmdline_for("a", 3);
    check(&k, &good, &line).unwrap();
    // Anti-rollback: the device's stored minimum. Equal boots; above the
    // signed security version refuses, after the signature checked out.
    let args: BootArgs = cmdline::parse(&line).unwrap();
    let at = |min| {
        verify_slot(
            &good,
            &k.pub_pem,
            &k.pub_path,
            &args,
            &format!("{line}\n"),
            Some(min),
        )
    };
    let svn = at(0).unwrap().security_version;
    at(svn).unwrap();
    let err = format!("{:#}", at(svn + 1).unwrap_err());
    assert!(err.contains("below this device's minimum"), "{err}");

    let mut tampered = good.clone();
    let at = tampered.manifest.len() - 5;
    tampered.manifest[at] ^= 1;
    let mut bad_sig = good.clone();
    bad_sig.sig[10] ^= 0x80;
    let (other_bytes, other_sig) = signed(&other, &m);
    let foreign = BootFiles {
        manifest: other_bytes,
        sig: other_sig,
    };
    let (b_bytes, b_sig) = signed(&k, &manifest("b", 3));
    let slot_b = BootFiles {
        manifest: b_bytes,
        sig: b_sig,
    };
    let mut hash_line = line.replace(ROOT_HASH, &"0".repeat(64));
    let mut old = manifest("a", 3);
    old.cmdline = hash_line.clone();
    old.verity_root_hash = [0; 32];
    let (old_bytes, old_sig) = signed(&k, &old);
    let other_hash = BootFiles {
        manifest: old_bytes,
        sig: old_sig,
    };

    let cases: Vec<(&BootFiles, String, &str)> = vec![
        (
            &tampered,
            line.clone(),
            "manifest signature does not verify",
        ),
        (&bad_sig, line.clone(), "manifest signature does not verify"),
        (&foreign, line.clone(), "manifest signature does not verify"),
        (
            &slot_b,
            line.clone(),
            "the manifest is for slot b but the command line boots slot a",
        ),
        (
            &good,
            cmdline_for("a", 4),
            "security version 3 differs from the command line's 4",
        ),
        (
            &good,
            format!("{line} init=/bin/sh"),
            "the manifest's command line differs from the kernel's",
        ),
        (&other_hash, line.clone(), "the manifest's root hash 0000"),
        (&good, std::mem::take(&mut hash_line), "root hash caba66f5"),
    ];
    for (files, line, want) in cases {
        let err = format!("{:#}", check(&k, files, &line).unwrap_err());
        assert!(err.contains(want), "want {want:?} in {err}");
    }
}

#[test]
fn the_fat_reader_refuses_missing_oversized_and_duplicate_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let img = fat_image(&d.join("a").tap_mkdir(), &[("manifest", b"m")]);
    let err = format!("{:#}", read_boot_files_at(&img).unwrap_err());
    assert!(err.contains("there is no /manifest.sig"), "{err}");

    let img = fat_image(
        &d.join("b").tap_mkdir(),
        &[("manifest", b"m"), ("manifest.sig", &[0; 65])],
    );
    let err = format!("{:#}", read_boot_files_at(&img).unwrap_err());
    assert!(err.contains("/manifest.sig is 65 bytes"), "{err}");

    let big = vec![b'x'; 64 * 1024 + 1];
    let img = fat_image(
        &d.join("c").tap_mkdir(),
        &[("manifest", &big), ("manifest.sig", &[0; 64])],
    );
    let err = format!("{:#}", read_boot_files_at(&img).unwrap_err());
    assert!(
        err.contains("/manifest is 65537 bytes, over the 65536-byte limit"),
        "{err}"
    );

    // FAT names compare without case: MANIFEST and manifest are one name
    // to the kernel's vfat, so two such entries are ambiguous. mcopy
    // refuses to create the clash, so the second entry is renamed in the
    // raw directory: "MANIFEST" -> a second short entry with the same name.
    let img = fat_image(
        &d.join("e").tap_mkdir(),
        &[
            ("MANIFEST", b"one"),
            ("MANIFESX", b"two"),
            ("manifest.sig", &[0; 64]),
        ],
    );
    let mut raw = fs::read(&img).unwrap();
    let at = find(&raw, b"MANIFESX").expect("short name of the second file");
    raw[at + 7] = b'T';
    fs::write(&img, &raw).unwrap();
    let err = format!(
        "{:#}",
        read_boot_files(fs::File::open(&img).unwrap()).unwrap_err()
    );
    assert!(err.contains("two entries named"), "{err}");
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

trait TapMkdir {
    fn tap_mkdir(self) -> PathBuf;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        fs::create_dir_all(&self).unwrap();
        self
    }
}
