//! Secure Boot keys, signatures and enrolment files, each checked with an
//! independent tool: `sbverify` for signed EFI binaries, `sig-list-to-certs`
//! and `openssl x509` for the signature lists and certificates, `openssl
//! cms` for the signed authenticated variables, `virt-fw-vars --print` for
//! the OVMF variable store, `openssl pkey` for the RSA fingerprint. Two
//! runs with the same keys and epoch give the same bytes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::progress::Progress;
use crate::spec::{KeySource, SecureBootDbKey, SecureBootKeySpec};

/// A real, unsigned EFI binary from Debian's efibootguard.
const EFI: &str = "/usr/lib/x86_64-linux-gnu/efibootguard/efibootguardx64.efi";
const EPOCH: u64 = 1_700_000_000;

fn quiet() -> Progress {
    Progress::new(true)
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A key set generated into `dir`, as an image would name it.
fn spec_of(dir: &Path, with_private: bool) -> SecureBootKeySpec {
    let key = |n: &str| dir.join(keys::file_names(n).0);
    let cert = |n: &str| Some(s(&dir.join(keys::file_names(n).1)));
    SecureBootKeySpec {
        db_key: SecureBootDbKey::File {
            path: s(&key("db")),
        },
        db_cert: cert("db"),
        kek_cert: cert("kek"),
        pk_cert: cert("pk"),
        kek_key: with_private.then(|| KeySource::File {
            path: s(&key("kek")),
        }),
        pk_key: with_private.then(|| KeySource::File {
            path: s(&key("pk")),
        }),
    }
}

/// A project root and a key set generated in `<root>/keys/release`.
fn fixture(with_private: bool) -> (tempfile::TempDir, SecureBootKeys) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("keys/release");
    let made = generate(&dir, "slotsmith test", 30).unwrap();
    assert_eq!(made.len(), 3);
    let keys = resolve_keys(
        &spec_of(&dir, with_private),
        false,
        "images/t.yaml",
        root.path(),
        &mut quiet(),
    )
    .unwrap();
    (root, keys)
}

fn sbverify(cert: &Path, file: &Path) -> anyhow::Result<crate::tool::Output> {
    Tool::new("sbverify")?
        .arg("--cert")
        .arg(cert)
        .arg(file)
        .run()
}

#[test]
fn generated_keys_are_private_rsa_2048_and_self_signed_with_their_role() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("k");
    let made = generate(&dir, "acme", 10).unwrap();
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for (g, label) in made.iter().zip(["PK", "KEK", "db"]) {
        assert_eq!(
            fs::metadata(&g.key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(fs::read_to_string(&g.key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let text = Tool::new("openssl")
            .unwrap()
            .args(["x509", "-noout", "-subject", "-issuer", "-text", "-in"])
            .arg(&g.cert)
            .run()
            .unwrap();
        let text = String::from_utf8(text.stdout).unwrap();
        assert!(
            text.contains(&format!("subject=CN = acme {label}\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("issuer=CN = acme {label}\n")),
            "{text}"
        );
        assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
        // openssl itself checks the self-signature.
        Tool::new("openssl")
            .unwrap()
            .args(["verify", "-partial_chain", "-CAfile"])
            .arg(&g.cert)
            .arg(&g.cert)
            .run()
            .unwrap();
    }
    // Never over an existing key; nothing half-written either.
    let err = generate(&dir, "acme", 10).unwrap_err();
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    let other = root.path().join("o");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("secureboot-db.cert.pem"), "x").unwrap();
    let err = generate(&other, "acme", 10).unwrap_err();
    assert!(format!("{err:#}").contains("secureboot-db.cert.pem already exists"));
    assert_eq!(fs::read_dir(&other).unwrap().count(), 1);
    // A subject that would reach openssl's -subj parser is refused.
    for bad in ["a/CN=b", "x\ny", "", "$HOME"] {
        assert!(
            generate(&root.path().join("bad"), bad, 10).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn the_rsa_fingerprint_is_sha256_over_the_spki_der_in_every_encoding() {
    let root = tempfile::tempdir().unwrap();
    let made = generate(&root.path().join("k"), "fp", 10).unwrap();
    let db = &made[2];
    // Independent: openssl's own SubjectPublicKeyInfo DER.
    let spki = Tool::new("openssl")
        .unwrap()
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&db.key)
        .run()
        .unwrap()
        .stdout;
    let expected = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&spki))
    );
    assert_eq!(db.fingerprint, expected);
    let convert = |args: &[&str], input: &Path| {
        Tool::new("openssl")
            .unwrap()
            .args(args)
            .arg("-in")
            .arg(input)
            .run()
            .unwrap()
            .stdout
    };
    let encodings = [
        fs::read(&db.key).unwrap(),
        fs::read(&db.cert).unwrap(),
        spki.clone(),
        convert(&["pkey", "-pubout"], &db.key),
        convert(&["pkey", "-outform", "DER"], &db.key),
        convert(&["pkey", "-traditional"], &db.key),
        convert(&["rsa", "-RSAPublicKey_out"], &db.key),
        convert(&["x509", "-outform", "DER"], &db.cert),
    ];
    for (i, data) in encodings.iter().enumerate() {
        assert_eq!(
            rsa::fingerprints(data),
            vec![expected.clone()],
            "encoding {i}"
        );
        // The development-key scan reads every encoding too.
        assert_eq!(
            crate::signing::key_fingerprints(data, Path::new("x")),
            vec![expected.clone()],
            "encoding {i}"
        );
    }
    // Two certificates in one file: both keys.
    let both = [
        fs::read(&made[0].cert).unwrap(),
        fs::read(&db.cert).unwrap(),
    ]
    .concat();
    assert_eq!(
        rsa::fingerprints(&both),
        [made[0].fingerprint.clone(), expected]
    );
    // Not keys, or keys of other types: no RSA fingerprint.
    let ed = slotsmith_sign::generate(root.path(), "boot").unwrap();
    for data in [
        b"".to_vec(),
        b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n".to_vec(),
        fs::read(&ed.0).unwrap(),
        fs::read(&ed.1).unwrap(),
    ] {
        assert!(rsa::fingerprints(&data).is_empty());
    }
    let err = rsa::load_private(&ed.0, "secure boot db key").unwrap_err();
    assert!(
        format!("{err:#}").contains("expected an RSA key, found Ed25519"),
        "{err:#}"
    );
}

#[test]
fn signing_is_deterministic_and_only_the_db_certificate_verifies() {
    let (root, keys) = fixture(true);
    let out = root.path().join("out");
    fs::create_dir(&out).unwrap();
    let (a, b) = (out.join("a.efi"), out.join("b.efi"));
    sign_efi(Path::new(EFI), &a, &keys, EPOCH).unwrap();
    sign_efi(Path::new(EFI), &b, &keys, EPOCH).unwrap();
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert_ne!(fs::read(&a).unwrap(), fs::read(EFI).unwrap());
    sbverify(&keys.db_cert, &a).unwrap();
    // Another key's certificate is refused by the independent verifier.
    for other in [&keys.kek_cert, &keys.pk_cert] {
        // "Signature verification failed" goes to stdout; the exit code
        // is what counts.
        let err = sbverify(other, &a).unwrap_err();
        assert!(
            format!("{err:#}").contains("sbverify failed with exit code 1"),
            "{err:#}"
        );
    }
    // The epoch is the signing time: another epoch, other bytes.
    let c = out.join("c.efi");
    sign_efi(Path::new(EFI), &c, &keys, EPOCH + 86400).unwrap();
    assert_ne!(fs::read(&a).unwrap(), fs::read(&c).unwrap());
    // The unsigned input is needed: a signed binary is not signed again.
    let err = sign_efi(&a, &out.join("d.efi"), &keys, EPOCH).unwrap_err();
    assert!(
        format!("{err:#}").contains("already carries 1 signature"),
        "{err:#}"
    );
    assert!(!out.join("d.efi").exists());
    // Fail closed: a db key whose certificate is another key's (possible
    // with an engine, which cannot be checked in advance) leaves nothing;
    // sbsign notices before sbverify would.
    let mut wrong = keys.clone();
    wrong.db_cert = keys.kek_cert.clone();
    let err = sign_efi(Path::new(EFI), &out.join("e.efi"), &wrong, EPOCH).unwrap_err();
    assert!(
        format!("{err:#}").contains("private key does not match certificate"),
        "{err:#}"
    );
    let mut engine = keys.clone();
    engine.db_key = DbKey::Engine {
        engine: "slotsmith-no-such-engine".into(),
        key: "pkcs11:object=db".into(),
    };
    assert!(sign_efi(Path::new(EFI), &out.join("f.efi"), &engine, EPOCH).is_err());
    let left: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(
        left,
        ["a.efi", "b.efi", "c.efi"],
        "no temporary or partial file"
    );
    // A key that does not match its certificate is refused before signing.
    let dir = root.path().join("keys/release");
    let mut spec = spec_of(&dir, true);
    spec.db_cert = spec.kek_cert.clone();
    let err = resolve_keys(&spec, false, "i", root.path(), &mut quiet()).unwrap_err();
    assert!(
        format!("{err:#}").contains("secure boot db key")
            && format!("{err:#}").contains("does not match certificate"),
        "{err:#}"
    );
    // A private key others can read is refused, as for every role.
    fs::set_permissions(
        dir.join("secureboot-db.key.pem"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err =
        resolve_keys(&spec_of(&dir, true), false, "i", root.path(), &mut quiet()).unwrap_err();
    assert!(format!("{err:#}").contains("too open"), "{err:#}");
}

/// The bytes an authenticated variable's PKCS#7 signs: name (UCS-2),
/// vendor GUID, attributes, timestamp, data.
fn signed_bytes(name: &str, auth: &[u8], esl: &[u8]) -> Vec<u8> {
    let vendor = if name == "db" {
        Uuid::from_u128(0xd719b2cb_3d3a_4596_a3bc_dad00e67656f)
    } else {
        Uuid::from_u128(0x8be4df61_93ca_11d2_aa0d_00e098032b8c)
    };
    let mut v: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    v.extend_from_slice(&vendor.to_bytes_le());
    // NV | BS | RT | TIME_BASED_AUTHENTICATED_WRITE_ACCESS.
    v.extend_from_slice(&0x27u32.to_le_bytes());
    v.extend_from_slice(&auth[..16]);
    v.extend_from_slice(esl);
    v
}

/// Verifies an authenticated variable's PKCS#7 with `openssl cms`, trusting
/// only `signer`.
fn verify_auth(dir: &Path, name: &str, signer: &str) -> anyhow::Result<()> {
    let auth = fs::read(dir.join(format!("{name}.auth"))).unwrap();
    let esl = fs::read(dir.join(format!("{name}.esl"))).unwrap();
    let len = u32::from_le_bytes(auth[16..20].try_into().unwrap()) as usize;
    let signed_data = &auth[40..16 + len];
    // The variable holds a bare SignedData; openssl wants its ContentInfo.
    let oid = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
    ];
    let wrap = |tag: u8, body: &[u8]| {
        let mut v = vec![tag, 0x82];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    };
    let info = wrap(0x30, &[&oid[..], &wrap(0xa0, signed_data)].concat());
    let scratch = tempfile::tempdir().unwrap();
    let (p7, data) = (scratch.path().join("p7.der"), scratch.path().join("data"));
    fs::write(&p7, info).unwrap();
    fs::write(&data, signed_bytes(name, &auth, &esl)).unwrap();
    Tool::new("openssl")?
        .args([
            "cms", "-verify", "-binary", "-inform", "DER", "-purpose", "any",
        ])
        .arg("-partial_chain")
        .arg("-in")
        .arg(&p7)
        .arg("-content")
        .arg(&data)
        .arg("-CAfile")
        .arg(dir.join(format!("{signer}.pem")))
        .arg("-out")
        .arg("/dev/null")
        .run()
        .map(|_| ())
}

#[test]
fn enrolment_files_are_deterministic_and_read_back_by_efitools_and_openssl() {
    let (root, keys) = fixture(true);
    let (one, two) = (root.path().join("one"), root.path().join("two"));
    fs::create_dir(&one).unwrap();
    fs::create_dir(&two).unwrap();
    let a = write_enrolment(&one, &keys, EPOCH).unwrap();
    let b = write_enrolment(&two, &keys, EPOCH).unwrap();
    let names = |v: &[PathBuf]| -> Vec<String> {
        v.iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&a),
        [
            "ENROLL.txt",
            "KEK.auth",
            "KEK.cer",
            "KEK.esl",
            "KEK.pem",
            "PK.auth",
            "PK.cer",
            "PK.esl",
            "PK.pem",
            "db.auth",
            "db.cer",
            "db.esl",
            "db.pem"
        ]
    );
    assert_eq!(names(&a), names(&b));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            fs::read(x).unwrap(),
            fs::read(y).unwrap(),
            "{}",
            x.display()
        );
    }
    // Nothing else in the directory (no temporary files left).
    assert_eq!(fs::read_dir(&one).unwrap().count(), a.len());
    for (name, der) in [
        ("PK", &keys.pk_cert_der),
        ("KEK", &keys.kek_cert_der),
        ("db", &keys.db_cert_der),
    ] {
        assert_eq!(&fs::read(one.join(format!("{name}.cer"))).unwrap(), der);
        // The PEM is the same certificate, for openssl.
        let pem_der = Tool::new("openssl")
            .unwrap()
            .args(["x509", "-outform", "DER", "-in"])
            .arg(one.join(format!("{name}.pem")))
            .run()
            .unwrap()
            .stdout;
        assert_eq!(&pem_der, der);
        // The list: one X.509 entry of the fixed owner, size 28 + 16 + DER;
        // efitools' reader gives the same DER back.
        let esl_bytes = fs::read(one.join(format!("{name}.esl"))).unwrap();
        assert_eq!(esl_bytes.len(), 28 + 16 + der.len());
        let scratch = tempfile::tempdir().unwrap();
        let out = Tool::new("sig-list-to-certs")
            .unwrap()
            .arg(one.join(format!("{name}.esl")))
            .arg(scratch.path().join("c"))
            .run()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains(&owner_guid().to_string()), "{text}");
        assert_eq!(fs::read_dir(scratch.path()).unwrap().count(), 1);
        assert_eq!(&fs::read(scratch.path().join("c-0.der")).unwrap(), der);
        // The authenticated variable: the epoch as its timestamp.
        let auth = fs::read(one.join(format!("{name}.auth"))).unwrap();
        assert_eq!(auth[..16], efi_time(EPOCH).unwrap());
        assert!(auth.ends_with(&esl_bytes));
    }
    // Each .auth is signed by the key the UEFI spec wants, and by no other.
    verify_auth(&one, "PK", "PK").unwrap();
    verify_auth(&one, "KEK", "PK").unwrap();
    verify_auth(&one, "db", "KEK").unwrap();
    assert!(verify_auth(&one, "db", "PK").is_err());
    assert!(verify_auth(&one, "KEK", "KEK").is_err());
    // The procedure names the order and the fingerprints.
    let text = fs::read_to_string(one.join(ENROLL_TXT)).unwrap();
    let order = [
        "efi-updatevar -f db.auth db",
        "efi-updatevar -f KEK.auth KEK",
        "efi-updatevar -f PK.auth PK",
    ]
    .map(|c| text.find(c).unwrap_or_else(|| panic!("{c} in {text}")));
    assert!(order[0] < order[1] && order[1] < order[2], "{text}");
    for f in &keys.fingerprints {
        assert!(text.contains(f.as_str()));
    }
    assert!(text.contains("2023-11-14 22:13:20"), "{text}");
    assert!(!text.contains("DEVELOPMENT"));
    // Another epoch: other timestamps, same lists.
    let three = root.path().join("three");
    fs::create_dir(&three).unwrap();
    write_enrolment(&three, &keys, EPOCH + 1).unwrap();
    assert_eq!(
        fs::read(three.join("db.esl")).unwrap(),
        fs::read(one.join("db.esl")).unwrap()
    );
    assert_ne!(
        fs::read(three.join("db.auth")).unwrap(),
        fs::read(one.join("db.auth")).unwrap()
    );
}

#[test]
fn without_the_pk_and_kek_keys_only_certificates_and_lists_are_written() {
    let (root, keys) = fixture(false);
    assert_eq!(
        keys.missing_auth(),
        [
            ("PK.auth", "pk-key"),
            ("KEK.auth", "pk-key"),
            ("db.auth", "kek-key")
        ]
    );
    let note = keys.enrolment_note().unwrap();
    assert!(
        note.contains("not PK.auth (needs signing.secureboot.pk-key)"),
        "{note}"
    );
    let dir = root.path().join("e");
    fs::create_dir(&dir).unwrap();
    let files = write_enrolment(&dir, &keys, EPOCH).unwrap();
    assert_eq!(files.len(), 10);
    assert!(files.iter().all(|f| f.extension().unwrap() != "auth"));
    let text = fs::read_to_string(dir.join(ENROLL_TXT)).unwrap();
    assert!(
        text.contains("PK.auth, KEK.auth, db.auth were not written"),
        "{text}"
    );
    assert!(text.contains("efi-updatevar -e -f db.esl db"), "{text}");
    // With all keys there is nothing to say.
    let (_root, all) = fixture(true);
    assert_eq!(all.enrolment_note(), None);
}

#[test]
fn the_ovmf_variable_store_enrols_the_keys_with_secure_boot_on_deterministically() {
    let (root, keys) = fixture(false);
    let (one, two) = (root.path().join("one"), root.path().join("two"));
    fs::create_dir(&one).unwrap();
    fs::create_dir(&two).unwrap();
    let template = Path::new(OVMF_VARS_TEMPLATE);
    let before = fs::read(template).unwrap();
    let a = ovmf_vars(&one, &keys, template, EPOCH).unwrap();
    let b = ovmf_vars(&two, &keys, template, EPOCH + 12345).unwrap();
    assert_eq!(a, one.join(OVMF_VARS));
    let (va, vb) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert_eq!(va.len(), before.len());
    // virt-fw-vars takes the variables' timestamps from the certificates,
    // never from the clock: even another epoch gives the same store.
    assert_eq!(va, vb);
    assert_eq!(
        fs::read(template).unwrap(),
        before,
        "the template is only read"
    );
    assert_eq!(
        print_vars(&a).unwrap(),
        PrintedVars {
            pk: true,
            kek: true,
            db: true,
            secure_boot: true
        }
    );
    assert_eq!(print_vars(template).unwrap(), PrintedVars::default());
    // The enrolled certificates are exactly ours.
    let scratch = tempfile::tempdir().unwrap();
    Tool::new("virt-fw-vars")
        .unwrap()
        .arg("-i")
        .arg(&a)
        .arg("--extract-certs")
        .dir(scratch.path())
        .run()
        .unwrap();
    let mut extracted: Vec<Vec<u8>> = fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let pem = fs::read(&p).unwrap();
            match rsa::items(&pem).pop() {
                Some(rsa::KeyItem::Cert(_, der)) => der,
                other => panic!("{}: {other:?}", p.display()),
            }
        })
        .collect();
    extracted.sort();
    let mut ours = vec![
        keys.pk_cert_der.clone(),
        keys.kek_cert_der.clone(),
        keys.db_cert_der.clone(),
    ];
    ours.sort();
    assert_eq!(extracted, ours);
}

#[test]
fn a_release_refuses_the_development_secure_boot_keys_wherever_they_are() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // A development image generates them on first use and registers them.
    let dev = resolve_keys(
        &SecureBootKeySpec::development(),
        false,
        "i",
        r,
        &mut quiet(),
    )
    .unwrap();
    assert!(dev.development);
    let dev_dir = r.join(crate::signing::DEV_KEY_DIR);
    for name in keys::KEYS {
        let (k, c) = keys::file_names(name);
        assert!(dev_dir.join(k).is_file() && dev_dir.join(c).is_file());
    }
    let registry = fs::read_to_string(r.join(crate::signing::DEV_KEY_REGISTRY)).unwrap();
    for f in &dev.fingerprints {
        assert!(
            registry.contains(&format!("{f} secureboot keys/dev/")),
            "{registry}"
        );
    }
    // The second build uses the same keys.
    let again = resolve_keys(
        &SecureBootKeySpec::development(),
        false,
        "i",
        r,
        &mut quiet(),
    )
    .unwrap();
    assert_eq!(again.fingerprints, dev.fingerprints);
    // A release image may not name the development set at all.
    let err = resolve_keys(
        &SecureBootKeySpec::development(),
        true,
        "images/rel.yaml",
        r,
        &mut quiet(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("set signing.secureboot in images/rel.yaml"));
    // Copies outside keys/dev/, re-encoded: the db key as PKCS#1, the db
    // certificate as DER; plus release PK and KEK.
    let copies = r.join("elsewhere");
    generate(&copies, "release", 30).unwrap();
    for f in ["secureboot-db.key.pem", "secureboot-db.cert.pem"] {
        fs::remove_file(copies.join(f)).unwrap();
    }
    let pkcs1 = Tool::new("openssl")
        .unwrap()
        .args(["pkey", "-traditional", "-in"])
        .arg(dev_dir.join("secureboot-db.key.pem"))
        .run()
        .unwrap()
        .stdout;
    slotsmith_sign::keyfile::write_new(&copies.join("secureboot-db.key.pem"), 0o600, &pkcs1)
        .unwrap();
    let der = Tool::new("openssl")
        .unwrap()
        .args(["x509", "-outform", "DER", "-in"])
        .arg(dev_dir.join("secureboot-db.cert.pem"))
        .run()
        .unwrap()
        .stdout;
    fs::write(copies.join("secureboot-db.cert.pem"), der).unwrap();
    let spec = spec_of(&copies, true);
    let err = resolve_keys(&spec, true, "i", r, &mut quiet()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("a release image refuses development keys")
            && msg.contains(&dev.fingerprints[0])
            && msg.contains("--role secureboot"),
        "{msg}"
    );
    // The key alone (with an engine, only the certificates are files) and
    // the certificate alone are each refused; and after keys/dev/ is gone,
    // the registry still knows them.
    fs::remove_dir_all(&dev_dir).unwrap();
    let err = resolve_keys(&spec, true, "i", r, &mut quiet()).unwrap_err();
    assert!(
        format!("{err:#}").contains("listed in keys/dev-fingerprints.txt"),
        "{err:#}"
    );
    let mut engine = spec.clone();
    engine.db_key = SecureBootDbKey::Engine {
        engine: "pkcs11".into(),
        key: "pkcs11:object=db".into(),
    };
    assert!(resolve_keys(&engine, true, "i", r, &mut quiet()).is_err());
    // A fresh release set is accepted.
    let release = r.join("keys/release");
    generate(&release, "release", 30).unwrap();
    let ok = resolve_keys(&spec_of(&release, true), true, "i", r, &mut quiet()).unwrap();
    assert!(!ok.development);
}

#[test]
fn dates_are_utc_and_efi_time_matches_sign_efi_sig_list() {
    assert_eq!(utc_date(0).unwrap(), "1970-01-01 00:00:00");
    assert_eq!(utc_date(EPOCH).unwrap(), "2023-11-14 22:13:20");
    assert_eq!(utc_date(951_782_400).unwrap(), "2000-02-29 00:00:00");
    assert_eq!(utc_date(4_107_542_399).unwrap(), "2100-02-28 23:59:59");
    assert_eq!(utc_date(253_402_300_799).unwrap(), "9999-12-31 23:59:59");
    assert!(utc_date(253_402_300_800).is_err());
    assert_eq!(
        efi_time(EPOCH).unwrap(),
        [0xe7, 0x07, 11, 14, 22, 13, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    // The owner GUID is fixed by the derivation, so enrolment files never
    // change with the machine or the image.
    assert_eq!(
        owner_guid(),
        crate::plan::derive_uuid(&["secureboot", "signature owner"])
    );
    assert_eq!(owner_guid().get_version_num(), 8);
}

#[test]
fn the_rsa_reader_survives_mutated_keys_and_certificates() {
    // Untrusted bytes (any file under keys/dev/, any configured key): the
    // reader must never panic, whatever the PEM or DER damage. Seeds are
    // every encoding of a real key set; `exercise` adds deterministic
    // mutations (bit flips, truncations, splices, interesting integers).
    let root = tempfile::tempdir().unwrap();
    let made = generate(&root.path().join("k"), "fuzz", 10).unwrap();
    let db = &made[2];
    let der = |args: &[&str], input: &Path| {
        Tool::new("openssl")
            .unwrap()
            .args(args)
            .arg("-in")
            .arg(input)
            .run()
            .unwrap()
            .stdout
    };
    let seeds = vec![
        fs::read(&db.key).unwrap(),
        fs::read(&db.cert).unwrap(),
        der(&["pkey", "-outform", "DER"], &db.key),
        der(&["x509", "-outform", "DER"], &db.cert),
        der(&["pkey", "-traditional"], &db.key),
        der(&["rsa", "-RSAPublicKey_out"], &db.key),
        [fs::read(&made[0].cert).unwrap(), fs::read(&db.key).unwrap()].concat(),
    ];
    slotsmith_fuzzing::exercise("secureboot_rsa", &seeds, 3000, |data| {
        for item in rsa::items(data) {
            if let rsa::KeyItem::Cert(k, _) | rsa::KeyItem::Private(k) | rsa::KeyItem::Public(k) =
                item
            {
                // The canonical form is always well-formed DER.
                let _ = k.fingerprint();
            }
        }
    });
}
