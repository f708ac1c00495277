//! Interoperability with openssl 3, the independent verifier.
//!
//! Our key files, public keys and signatures are only useful if stock
//! tools agree with them byte for byte: the device side, CI checks and a
//! release engineer's manual verification all rely on openssl (see
//! verified-boot.md section 3). Ed25519 is deterministic, so signatures are
//! compared as bytes, not merely verified. Each test runs openssl through
//! duct in its own temporary directory.

use ed25519_dalek::SigningKey;
use slotsmith_sign::keys::{
    fingerprint, generate, load_signing_key, load_verifying_key, public_key_pem,
};
use slotsmith_sign::manifest::{sign_manifest, verify_manifest, FileRef, Manifest};
use slotsmith_sign::signer::{check_signature, KeySigner, Signer};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

/// Runs openssl with `args`, returning (success, stdout).
fn openssl(args: &[&str]) -> (bool, Vec<u8>) {
    let out = duct::cmd("openssl", args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .expect("openssl must be installed to run these tests");
    (out.status.success(), out.stdout)
}

fn openssl_ok(args: &[&str]) -> Vec<u8> {
    let (ok, stdout) = openssl(args);
    assert!(ok, "openssl {args:?} failed");
    stdout
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn sample_manifest() -> Manifest {
    Manifest {
        image: "demo".into(),
        version: "1.0.0".into(),
        security_version: 3,
        slot: "a".into(),
        // Format v2 (issue 8, defect 11): openssl must verify it as well.
        golden_slots: Some(vec!["a".into(), "b".into()]),
        kernel: FileRef {
            path: "/a/vmlinuz".into(),
            sha256: [0x42; 32],
            size: 9_000_000,
        },
        initrd: Some(FileRef {
            path: "/a/initrd.img".into(),
            sha256: [0x43; 32],
            size: 2_000_000,
        }),
        dtb: None,
        cmdline: "console=ttyS0 rootwait ro".into(),
        verity_root_hash: [0x44; 32],
        verity_salt: [0x45; 32],
        verity_data_blocks: 12_345,
        verity_hash_start_block: 1,
        root_partition_uuid: uuid::Uuid::from_u128(0x4f68bce3_e8cd_4db1_96e7_fbcaf984b709),
        verity_partition_uuid: uuid::Uuid::from_u128(0x2c7357ed_ebd2_46d9_aec1_23d437ec2bf5),
    }
}

#[test]
fn generated_keys_are_what_openssl_would_write() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = generate(dir.path(), "boot").unwrap();
    assert_eq!(sk, dir.path().join("boot.key.pem"));
    assert_eq!(pk, dir.path().join("boot.pub.pem"));
    assert_eq!(mode(&sk), 0o600);

    let private_text = fs::read_to_string(&sk).unwrap();
    assert!(private_text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let public_text = fs::read_to_string(&pk).unwrap();
    assert!(public_text.starts_with("-----BEGIN PUBLIC KEY-----\n"));

    // openssl accepts the private key ...
    openssl_ok(&["pkey", "-in", s(&sk), "-noout"]);
    // ... derives exactly our public key file from it ...
    assert_eq!(
        openssl_ok(&["pkey", "-in", s(&sk), "-pubout"]),
        public_text.as_bytes()
    );
    // ... and re-encodes the private key to exactly our bytes (PKCS#8 v1,
    // no embedded public key), so the file is in openssl's own form.
    assert_eq!(
        openssl_ok(&["pkey", "-in", s(&sk)]),
        private_text.as_bytes()
    );

    let loaded = load_signing_key(&sk).unwrap();
    assert_eq!(load_verifying_key(&pk).unwrap(), loaded.verifying_key());
    assert_eq!(public_key_pem(&loaded.verifying_key()), public_text);
}

#[test]
fn openssl_generated_keys_load() {
    let dir = tempfile::tempdir().unwrap();
    let sk = dir.path().join("sk.pem");
    let pk = dir.path().join("pk.pem");
    let der = dir.path().join("sk.der");
    let pk_der = dir.path().join("pk.der");
    openssl_ok(&["genpkey", "-algorithm", "ed25519", "-out", s(&sk)]);
    openssl_ok(&["pkey", "-in", s(&sk), "-pubout", "-out", s(&pk)]);
    openssl_ok(&["pkey", "-in", s(&sk), "-outform", "DER", "-out", s(&der)]);
    openssl_ok(&[
        "pkey",
        "-in",
        s(&sk),
        "-pubout",
        "-outform",
        "DER",
        "-out",
        s(&pk_der),
    ]);
    chmod(&sk, 0o600);
    chmod(&der, 0o600);

    let key = load_signing_key(&sk).unwrap();
    let openssl_pub = fs::read_to_string(&pk).unwrap();
    assert_eq!(public_key_pem(&key.verifying_key()), openssl_pub);
    assert_eq!(load_verifying_key(&pk).unwrap(), key.verifying_key());
    // DER forms are accepted too.
    assert_eq!(load_signing_key(&der).unwrap().to_bytes(), key.to_bytes());
    assert_eq!(load_verifying_key(&pk_der).unwrap(), key.verifying_key());

    // The fingerprint is sha256 of the raw key: the last 32 bytes of the
    // SPKI DER.
    let spki = fs::read(&pk_der).unwrap();
    let raw = &spki[spki.len() - 32..];
    use sha2::Digest;
    assert_eq!(
        fingerprint(&key.verifying_key()),
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(raw)))
    );
}

#[test]
fn private_keys_readable_by_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, _) = generate(dir.path(), "boot").unwrap();

    chmod(&sk, 0o644);
    let err = load_signing_key(&sk).unwrap_err().to_string();
    let p = sk.display();
    assert_eq!(
        err,
        format!(
            "permissions 0644 for {p} are too open: a private key must not be \
             accessible by group or others (chmod 600 {p})"
        )
    );
    for bad in [0o640, 0o604, 0o601, 0o610, 0o660] {
        chmod(&sk, bad);
        let err = load_signing_key(&sk).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("permissions {bad:04o} for ")),
            "{bad:o}: {err}"
        );
    }
    for good in [0o600, 0o400] {
        chmod(&sk, good);
        load_signing_key(&sk).unwrap();
    }
}

#[test]
fn symlinks_are_followed_and_the_target_mode_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, _) = generate(dir.path(), "boot").unwrap();
    let link = dir.path().join("current.key.pem");
    symlink(&sk, &link).unwrap();
    load_signing_key(&link).unwrap();
    chmod(&sk, 0o644);
    let err = load_signing_key(&link).unwrap_err().to_string();
    assert!(err.starts_with("permissions 0644 for "), "{err}");
}

#[test]
fn generate_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = generate(dir.path(), "boot").unwrap();
    let before = (fs::read(&sk).unwrap(), fs::read(&pk).unwrap());
    let err = generate(dir.path(), "boot").unwrap_err().to_string();
    assert!(
        err.contains("already exists: refusing to overwrite a key"),
        "{err}"
    );
    assert_eq!((fs::read(&sk).unwrap(), fs::read(&pk).unwrap()), before);

    // Only the public half present: still refused, and no private key is
    // left behind.
    let other = tempfile::tempdir().unwrap();
    fs::write(other.path().join("boot.pub.pem"), "x").unwrap();
    assert!(generate(other.path(), "boot").is_err());
    assert!(!other.path().join("boot.key.pem").exists());

    // A dangling symlink where the key would go is not written through.
    let target = other.path().join("elsewhere");
    symlink(&target, other.path().join("rel.key.pem")).unwrap();
    assert!(generate(other.path(), "rel").is_err());
    assert!(!target.exists());

    // Names cannot escape the directory.
    assert!(generate(dir.path(), "../boot").is_err());
}

#[test]
fn generate_creates_a_private_key_directory() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys/release");
    generate(&keys, "boot").unwrap();
    assert_eq!(mode(&keys), 0o700);
}

#[test]
fn wrong_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = generate(dir.path(), "boot").unwrap();
    let pub_as_private = dir.path().join("pub-copy.pem");
    fs::copy(&pk, &pub_as_private).unwrap();
    chmod(&pub_as_private, 0o600);
    let err = load_signing_key(&pub_as_private).unwrap_err().to_string();
    assert!(
        err.contains("is a public key, but a private key was expected"),
        "{err}"
    );

    let err = load_verifying_key(&sk).unwrap_err().to_string();
    assert!(
        err.contains("is a private key, but a public key was expected"),
        "{err}"
    );

    let rsa = dir.path().join("rsa.pem");
    openssl_ok(&[
        "genpkey",
        "-algorithm",
        "rsa",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        s(&rsa),
    ]);
    chmod(&rsa, 0o600);
    let err = load_signing_key(&rsa).unwrap_err().to_string();
    assert!(err.contains("expected an Ed25519 key, found RSA"), "{err}");

    let garbage = dir.path().join("garbage");
    fs::write(&garbage, [0xffu8; 100]).unwrap();
    chmod(&garbage, 0o600);
    assert!(load_signing_key(&garbage).is_err());
    assert!(load_verifying_key(&garbage).is_err());
    assert!(load_verifying_key(&dir.path().join("missing.pem")).is_err());
    assert!(load_signing_key(dir.path()).is_err());
}

#[test]
fn signatures_match_openssl_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = generate(dir.path(), "boot").unwrap();
    let msg_path = dir.path().join("msg");
    let sig_path = dir.path().join("sig");
    let msg = b"slotsmith signs exact bytes\n\x00\xff";
    fs::write(&msg_path, msg).unwrap();

    openssl_ok(&[
        "pkeyutl",
        "-sign",
        "-inkey",
        s(&sk),
        "-rawin",
        "-in",
        s(&msg_path),
        "-out",
        s(&sig_path),
    ]);
    let openssl_sig = fs::read(&sig_path).unwrap();

    let signer = KeySigner::new(load_signing_key(&sk).unwrap());
    let ours = signer.sign(msg).unwrap();
    assert_eq!(openssl_sig, ours);

    // openssl accepts ours, and refuses it after one flipped message byte.
    let verify = |msg_file: &Path| {
        openssl(&[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            s(&pk),
            "-rawin",
            "-in",
            s(msg_file),
            "-sigfile",
            s(&sig_path),
        ])
        .0
    };
    fs::write(&sig_path, ours).unwrap();
    assert!(verify(&msg_path));
    let mut tampered = msg.to_vec();
    tampered[3] ^= 0x20;
    let tampered_path = dir.path().join("tampered");
    fs::write(&tampered_path, &tampered).unwrap();
    assert!(!verify(&tampered_path));

    check_signature(&signer.public_key(), msg, &ours).unwrap();
    let mut bad = ours;
    bad[10] ^= 0x04;
    assert!(check_signature(&signer.public_key(), msg, &bad).is_err());
    assert!(check_signature(&signer.public_key(), msg, &ours[..63]).is_err());
}

#[test]
fn openssl_verifies_signed_manifests_and_rejects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = generate(dir.path(), "boot").unwrap();
    let signer = KeySigner::new(load_signing_key(&sk).unwrap());
    let (bytes, sig) = sign_manifest(&sample_manifest(), &signer).unwrap();

    let manifest_path = dir.path().join("manifest");
    let sig_path = dir.path().join("manifest.sig");
    fs::write(&manifest_path, &bytes).unwrap();
    fs::write(&sig_path, sig).unwrap();
    let verify = || {
        openssl(&[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            s(&pk),
            "-rawin",
            "-in",
            s(&manifest_path),
            "-sigfile",
            s(&sig_path),
        ])
        .0
    };
    assert!(verify());
    let key = load_verifying_key(&pk).unwrap();
    assert_eq!(
        verify_manifest(&bytes, &sig, &key).unwrap(),
        sample_manifest()
    );

    // Same signature as openssl would make over the same file.
    let openssl_sig_path = dir.path().join("openssl.sig");
    openssl_ok(&[
        "pkeyutl",
        "-sign",
        "-inkey",
        s(&sk),
        "-rawin",
        "-in",
        s(&manifest_path),
        "-out",
        s(&openssl_sig_path),
    ]);
    assert_eq!(fs::read(&openssl_sig_path).unwrap(), sig);

    // A one-byte tamper (security-version 3 -> 4, a rollback-relevant
    // field) fails both verifiers.
    let text = String::from_utf8(bytes).unwrap();
    let tampered = text.replacen("security-version 3\n", "security-version 4\n", 1);
    assert_eq!(tampered.len(), text.len());
    assert_ne!(tampered, text);
    fs::write(&manifest_path, &tampered).unwrap();
    assert!(!verify());
    let err = verify_manifest(tampered.as_bytes(), &sig, &key).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("manifest signature does not verify"),
        "{err:#}"
    );
}

#[test]
fn manifests_signed_by_another_key_are_refused() {
    let signer = KeySigner::new(SigningKey::from_bytes(&[8; 32]));
    let (bytes, sig) = sign_manifest(&sample_manifest(), &signer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, pk) = generate(dir.path(), "boot").unwrap();
    let key = load_verifying_key(&pk).unwrap();
    let err = verify_manifest(&bytes, &sig, &key).unwrap_err();
    assert!(format!("{err:#}").contains(&fingerprint(&key)), "{err:#}");
}
