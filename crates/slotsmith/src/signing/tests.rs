//! The development-key rule (issue 8, defect 5): a release image refuses a
//! development key by its public key, wherever the file lives. Each way of
//! moving a key is covered for both roles: a copy, a hard link, a symlink,
//! a re-encoding, the path handed over through `key-env`, an external
//! signer's public key or certificate, and all of these after `keys/dev/`
//! was deleted. A freshly generated release key is accepted.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::*;
use crate::spec::{BootKeySpec, KeySource, UpdateKeySpec};

const IMAGE: &str = "images/rel.yaml";
const EPOCH: u64 = 1_700_000_000;

fn quiet() -> Progress {
    Progress::new(true)
}

/// The error of `r` with its chain, or a panic saying what was accepted.
fn refused<T>(r: anyhow::Result<T>, what: &str) -> String {
    match r {
        Ok(_) => panic!("a release image accepted {what}"),
        Err(err) => format!("{err:#}"),
    }
}

fn file(path: &Path) -> KeySource {
    KeySource::File {
        path: path.to_str().unwrap().to_string(),
    }
}

fn boot(root: &Path, source: KeySource, public: &Path) -> anyhow::Result<BootSigner> {
    let spec = BootKeySpec {
        source,
        public_key: Some(public.to_str().unwrap().to_string()),
    };
    boot_signer_for(&spec, true, IMAGE, root, &mut quiet())
}

fn update(root: &Path, source: KeySource, cert: &Path) -> anyhow::Result<UpdateSigner> {
    let spec = UpdateKeySpec {
        source,
        cert: Some(cert.to_str().unwrap().to_string()),
    };
    update_signer_for(&spec, true, IMAGE, EPOCH, root, &mut quiet())
}

/// A project whose development keys were made the way a first development
/// build makes them.
fn project_with_dev_keys() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let dev_boot = BootKeySpec {
        source: KeySource::Development,
        public_key: None,
    };
    boot_signer_for(&dev_boot, false, IMAGE, dir.path(), &mut quiet()).unwrap();
    let dev_update = UpdateKeySpec {
        source: KeySource::Development,
        cert: None,
    };
    update_signer_for(&dev_update, false, IMAGE, EPOCH, dir.path(), &mut quiet()).unwrap();
    dir
}

fn dev(root: &Path, name: &str) -> PathBuf {
    root.join(DEV_KEY_DIR).join(name)
}

/// The message must say what was refused, which file, and why.
fn assert_why(err: &str, file: &Path) {
    assert!(
        err.contains("a release image refuses"),
        "no reason given: {err}"
    );
    assert!(
        err.contains(file.to_str().unwrap()),
        "{} not named: {err}",
        file.display()
    );
}

fn assert_key_based(err: &str, file: &Path) {
    assert_why(err, file);
    assert!(
        err.contains("has the public key sha256:") && err.contains("still a development key"),
        "{err}"
    );
}

#[test]
fn development_builds_record_their_keys() {
    let p = project_with_dev_keys();
    let registry = fs::read_to_string(p.path().join(DEV_KEY_REGISTRY)).unwrap();
    let pk = slotsmith_sign::load_verifying_key(&dev(p.path(), "boot.pub.pem")).unwrap();
    let boot_line = format!(
        "{} boot keys/dev/boot.key.pem\n",
        slotsmith_sign::fingerprint(&pk)
    );
    assert!(registry.contains(&boot_line), "{registry}");
    let update_fp = slotsmith_cms::cert_fingerprint(&dev(p.path(), "update.cert.pem")).unwrap();
    assert!(
        registry.contains(&format!("{update_fp} update keys/dev/update.key.pem\n")),
        "{registry}"
    );
    // A second build records nothing twice.
    let before = registry.clone();
    let dev_boot = BootKeySpec {
        source: KeySource::Development,
        public_key: None,
    };
    boot_signer_for(&dev_boot, false, IMAGE, p.path(), &mut quiet()).unwrap();
    assert_eq!(
        fs::read_to_string(p.path().join(DEV_KEY_REGISTRY)).unwrap(),
        before
    );
}

#[test]
fn moved_development_boot_keys_are_refused() {
    let p = project_with_dev_keys();
    let root = p.path();
    let away = root.join("elsewhere");
    fs::create_dir(&away).unwrap();
    let (key, public) = (dev(root, "boot.key.pem"), dev(root, "boot.pub.pem"));

    // A copy.
    let (ck, cp) = (away.join("copy.key.pem"), away.join("copy.pub.pem"));
    fs::copy(&key, &ck).unwrap();
    fs::copy(&public, &cp).unwrap();
    let err = refused(boot(root, file(&ck), &cp), "a copied dev boot key");
    assert_key_based(&err, &ck);
    assert!(err.contains("the key of keys/dev/boot."), "{err}");

    // A hard link.
    let (hk, hp) = (away.join("hard.key.pem"), away.join("hard.pub.pem"));
    fs::hard_link(&key, &hk).unwrap();
    fs::hard_link(&public, &hp).unwrap();
    assert_key_based(&refused(boot(root, file(&hk), &hp), "a hard link"), &hk);

    // A symlink (refused by the path check already, which says so).
    let (sk, sp) = (away.join("sym.key.pem"), away.join("sym.pub.pem"));
    symlink(&key, &sk).unwrap();
    symlink(&public, &sp).unwrap();
    // The path rule resolves the link, so the refusal names where it leads.
    let err = refused(boot(root, file(&sk), &sp), "a symlink");
    assert!(
        err.contains("a release image refuses keys from keys/dev")
            && err.contains("keys/dev/boot."),
        "{err}"
    );

    // The path of a copy handed over through key-env.
    let var = "SLOTSMITH_TEST_DEV_BOOT_KEY_ENV";
    std::env::set_var(var, &ck);
    let err = refused(
        boot(root, KeySource::Env { var: var.into() }, &cp),
        "a dev boot key through key-env",
    );
    assert_key_based(&err, &ck);
    assert!(err.contains(&format!("(from ${var})")), "{err}");

    // A re-encoding: the same key as DER, which no path or byte check sees.
    let pem = fs::read_to_string(&key).unwrap();
    let (_, der) = ed25519_dalek::pkcs8::SecretDocument::from_pem(&pem).unwrap();
    let dk = away.join("reencoded.key.der");
    write_private(&dk, der.as_bytes());
    assert_key_based(
        &refused(boot(root, file(&dk), &cp), "a DER re-encoding"),
        &dk,
    );

    // An external signer whose public key is the development key's: refused
    // before the signer runs.
    let external = KeySource::External {
        argv: vec!["false".into(), "{in}".into(), "{out}".into()],
    };
    let err = refused(boot(root, external.clone(), &cp), "an external dev signer");
    assert_key_based(&err, &cp);

    // keys/dev deleted: the committed registry still knows the key.
    fs::remove_dir_all(root.join(DEV_KEY_DIR)).unwrap();
    for (k, pubk) in [(&ck, &cp), (&dk, &cp)] {
        let err = refused(
            boot(root, file(k), pubk),
            "a dev key after keys/dev was deleted",
        );
        assert_key_based(&err, k);
        assert!(
            err.contains("a development boot key listed in keys/dev-fingerprints.txt line"),
            "{err}"
        );
    }
    assert_key_based(
        &refused(boot(root, external, &cp), "an external dev signer"),
        &cp,
    );
}

#[test]
fn moved_development_update_keys_are_refused() {
    let p = project_with_dev_keys();
    let root = p.path();
    let away = root.join("elsewhere");
    fs::create_dir(&away).unwrap();
    let (key, cert) = (dev(root, "update.key.pem"), dev(root, "update.cert.pem"));

    let (ck, cc) = (away.join("copy.key.pem"), away.join("copy.cert.pem"));
    fs::copy(&key, &ck).unwrap();
    fs::copy(&cert, &cc).unwrap();
    let err = refused(update(root, file(&ck), &cc), "a copied dev update key");
    assert_key_based(&err, &cc);
    assert!(err.contains("the key of keys/dev/update."), "{err}");

    let (hk, hc) = (away.join("hard.key.pem"), away.join("hard.cert.pem"));
    fs::hard_link(&key, &hk).unwrap();
    fs::hard_link(&cert, &hc).unwrap();
    assert_key_based(&refused(update(root, file(&hk), &hc), "a hard link"), &hc);

    let (sk, sc) = (away.join("sym.key.pem"), away.join("sym.cert.pem"));
    symlink(&key, &sk).unwrap();
    symlink(&cert, &sc).unwrap();
    let err = refused(update(root, file(&sk), &sc), "a symlink");
    assert!(
        err.contains("a release image refuses keys from keys/dev")
            && err.contains("keys/dev/update."),
        "{err}"
    );

    let var = "SLOTSMITH_TEST_DEV_UPDATE_KEY_ENV";
    std::env::set_var(var, &ck);
    assert_key_based(
        &refused(
            update(root, KeySource::Env { var: var.into() }, &cc),
            "a dev update key through key-env",
        ),
        &cc,
    );

    // A new certificate for the development key (openssl req -x509): a
    // different file with different bytes, but the same key.
    let reissued = away.join("reissued.cert.pem");
    let out = duct::cmd(
        "openssl",
        [
            "req",
            "-new",
            "-x509",
            "-key",
            ck.to_str().unwrap(),
            "-subj",
            "/CN=innocent",
            "-days",
            "30",
            "-out",
            reissued.to_str().unwrap(),
        ],
    )
    .stderr_capture()
    .unchecked()
    .run()
    .expect("openssl must be installed (Debian package openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_key_based(
        &refused(
            update(root, file(&ck), &reissued),
            "a re-issued dev certificate",
        ),
        &reissued,
    );

    let external = KeySource::External {
        argv: vec!["false".into(), "{in}".into(), "{out}".into()],
    };
    assert_key_based(
        &refused(
            update(root, external.clone(), &cc),
            "an external dev signer",
        ),
        &cc,
    );

    fs::remove_dir_all(root.join(DEV_KEY_DIR)).unwrap();
    for c in [&cc, &reissued] {
        let err = refused(
            update(root, file(&ck), c),
            "a dev key after keys/dev was deleted",
        );
        assert_key_based(&err, c);
        assert!(
            err.contains("a development update key listed in keys/dev-fingerprints.txt line"),
            "{err}"
        );
    }
    assert_key_based(
        &refused(update(root, external, &cc), "an external dev signer"),
        &cc,
    );
}

#[test]
fn fresh_release_keys_are_accepted() {
    let p = project_with_dev_keys();
    let root = p.path();
    // What `cargo xtask keys generate --role boot --out keys/release` does.
    let (key, public) = slotsmith_sign::generate(&root.join("keys/release"), "boot").unwrap();
    assert!(note_generated_key(
        Some(root),
        &root.join("keys/release"),
        false,
        "boot",
        &slotsmith_sign::fingerprint(&slotsmith_sign::load_verifying_key(&public).unwrap()),
        &key,
    )
    .unwrap()
    .is_none());
    let signer = boot(root, file(&key), &public).unwrap();
    assert_eq!(
        signer.public_key,
        slotsmith_sign::load_verifying_key(&public).unwrap()
    );
    let (ukey, ucert) = slotsmith_cms::generate_update_key(
        &root.join("keys/release"),
        "update",
        "release",
        EPOCH,
        30,
        None,
    )
    .unwrap();
    update(root, file(&ukey), &ucert).unwrap();
}

#[test]
fn keys_generated_into_keys_dev_or_with_dev_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let registry = root.join(DEV_KEY_REGISTRY);
    // Into keys/dev/ without --dev: a development key by location.
    let out = root.join("keys/dev");
    let (key, public) = slotsmith_sign::generate(&out, "boot").unwrap();
    let fp = slotsmith_sign::fingerprint(&slotsmith_sign::load_verifying_key(&public).unwrap());
    let recorded = note_generated_key(Some(root), &out, false, "boot", &fp, &key).unwrap();
    assert_eq!(recorded.as_deref(), Some(registry.as_path()));
    // Elsewhere with --dev.
    let out = root.join("scratch");
    let (ukey, ucert) =
        slotsmith_cms::generate_update_key(&out, "update", "dev", EPOCH, 30, None).unwrap();
    let ufp = slotsmith_cms::cert_fingerprint(&ucert).unwrap();
    assert!(
        note_generated_key(Some(root), &out, true, "update", &ufp, &ukey)
            .unwrap()
            .is_some()
    );
    let text = fs::read_to_string(&registry).unwrap();
    assert!(text.starts_with("# Public keys of this project's slotsmith DEVELOPMENT keys."));
    assert!(
        text.contains(&format!("{fp} boot keys/dev/boot.key.pem\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{ufp} update scratch/update.key.pem\n")),
        "{text}"
    );
    // Both are refused once moved, with keys/dev/ gone.
    fs::remove_dir_all(root.join("keys/dev")).unwrap();
    let dev = DevKeys::load(root).unwrap();
    assert!(dev.contains(&fp) && dev.contains(&ufp));
    // --dev without a project is an error, not a silently unrecorded key.
    let err = note_generated_key(None, &out, true, "boot", &fp, &key).unwrap_err();
    assert!(err.to_string().contains("no project was found"), "{err}");
}

#[test]
fn a_malformed_registry_fails_closed_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("keys")).unwrap();
    let good = format!("sha256:{} boot note\n", "ab".repeat(32));
    for bad in [
        "sha256:XYZ boot\n",
        "sha256:abcd boot\n",
        &format!("sha256:{} root\n", "ab".repeat(32)),
        &format!("{}\n", "ab".repeat(32)),
        "\u{1b}[2J boot\n",
    ] {
        fs::write(
            root.join(DEV_KEY_REGISTRY),
            format!("# header\n{good}{bad}"),
        )
        .unwrap();
        let err = DevKeys::load(root).unwrap_err().to_string();
        assert!(
            err.contains("keys/dev-fingerprints.txt line 3: expected"),
            "{err}"
        );
        assert!(!err.contains('\u{1b}'), "raw escape in {err:?}");
    }
    // A symlinked registry is refused too.
    fs::remove_file(root.join(DEV_KEY_REGISTRY)).unwrap();
    let elsewhere = root.join("other.txt");
    fs::write(&elsewhere, "").unwrap();
    symlink(&elsewhere, root.join(DEV_KEY_REGISTRY)).unwrap();
    let err = DevKeys::load(root).unwrap_err().to_string();
    assert!(err.contains("must be a regular file"), "{err}");
}

/// Writes a private key file with mode 0600.
fn write_private(path: &Path, data: &[u8]) {
    slotsmith_sign::keyfile::write_new(path, 0o600, data).unwrap();
}

#[test]
fn the_load_time_path_check_normalises_lexically() {
    use crate::load::is_dev_key_path;
    for dev in [
        "keys/dev/boot.key.pem",
        "./keys/dev/boot.key.pem",
        "keys//dev/boot.key.pem",
        "keys/./dev/boot.key.pem",
        "other/../keys/dev/boot.key.pem",
        "/srv/project/keys/dev/update.cert.pem",
        "keys/dev/old/boot.key.pem",
    ] {
        assert!(is_dev_key_path(dev), "{dev} not recognised");
    }
    for other in [
        "keys/release/boot.key.pem",
        "keys/dev/../release/boot.key.pem",
        "keys/devices/boot.key.pem",
        "mykeys/dev/boot.key.pem",
        "keys/dev",
    ] {
        assert!(!is_dev_key_path(other), "{other} taken for a dev key");
    }
}
