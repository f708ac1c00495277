//! Keys of the wrong type are reported by what they are, for both key
//! roles: "expected an Ed25519 key, found RSA" for the boot key and
//! "expected an ECDSA P-256 key, found Ed25519" for the update key, with
//! the file named (issue 8, defect 13).
//!
//! The class is covered with real keys from openssl: every key type a
//! release engineer could plausibly pick up by mistake (RSA, EC P-384,
//! EC P-256, Ed25519, Ed448, X25519), as PKCS#8 private keys and SPKI public
//! keys, PEM and DER, plus the legacy PKCS#1/SEC1 encodings and
//! certificates carrying each key type. Each is offered to both roles; only
//! the matching type loads.
//!
//! The test lives in slotsmith-cms because that crate sees both roles
//! (it depends on slotsmith-sign).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use slotsmith_cms::{assemble, UpdateSigner};
use slotsmith_sign::keys::{load_signing_key, load_verifying_key};

/// An openssl key type: the `genpkey` arguments and the name our messages
/// must use for it.
struct KeyType {
    file: &'static str,
    genpkey: &'static [&'static str],
    name: &'static str,
}

const TYPES: &[KeyType] = &[
    KeyType {
        file: "rsa",
        genpkey: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
        name: "RSA",
    },
    KeyType {
        file: "p384",
        genpkey: &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        name: "ECDSA P-384",
    },
    KeyType {
        file: "p256",
        genpkey: &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        name: "ECDSA P-256",
    },
    KeyType {
        file: "ed25519",
        genpkey: &["-algorithm", "ed25519"],
        name: "Ed25519",
    },
    KeyType {
        file: "ed448",
        genpkey: &["-algorithm", "ed448"],
        name: "Ed448",
    },
    KeyType {
        file: "x25519",
        genpkey: &["-algorithm", "x25519"],
        name: "X25519",
    },
];

const BOOT: &str = "Ed25519";
const UPDATE: &str = "ECDSA P-256";

fn openssl(dir: &Path, args: &[&str]) {
    let out = duct::cmd("openssl", args)
        .dir(dir)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .expect("openssl must be installed (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn chmod600(p: &Path) {
    fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap();
}

/// Every file made for one key type.
struct Files {
    /// PKCS#8 private key, PEM and DER.
    pkcs8: [PathBuf; 2],
    /// SPKI public key, PEM and DER.
    spki: [PathBuf; 2],
    /// The legacy per-algorithm encoding (`-traditional`), where the type
    /// has one: PKCS#1 for RSA, SEC1 for EC.
    traditional: Option<PathBuf>,
    /// A certificate carrying the key (issued by a CA key, so that types
    /// that cannot sign, X25519, get one too).
    cert: PathBuf,
}

fn make(dir: &Path, t: &KeyType, ca_key: &Path) -> Files {
    let pem = dir.join(format!("{}.key.pem", t.file));
    let mut args = vec!["genpkey"];
    args.extend_from_slice(t.genpkey);
    args.extend_from_slice(&["-out", s(&pem)]);
    openssl(dir, &args);
    let der = dir.join(format!("{}.key.der", t.file));
    openssl(
        dir,
        &["pkey", "-in", s(&pem), "-outform", "DER", "-out", s(&der)],
    );
    let pub_pem = dir.join(format!("{}.pub.pem", t.file));
    openssl(
        dir,
        &["pkey", "-in", s(&pem), "-pubout", "-out", s(&pub_pem)],
    );
    let pub_der = dir.join(format!("{}.pub.der", t.file));
    openssl(
        dir,
        &[
            "pkey",
            "-in",
            s(&pem),
            "-pubout",
            "-outform",
            "DER",
            "-out",
            s(&pub_der),
        ],
    );
    let traditional = matches!(t.file, "rsa" | "p384" | "p256").then(|| {
        let p = dir.join(format!("{}.trad.pem", t.file));
        openssl(
            dir,
            &["pkey", "-in", s(&pem), "-traditional", "-out", s(&p)],
        );
        chmod600(&p);
        p
    });
    let cert = dir.join(format!("{}.cert.pem", t.file));
    openssl(
        dir,
        &[
            "x509",
            "-new",
            "-subj",
            &format!("/CN={}", t.file),
            "-key",
            s(ca_key),
            "-force_pubkey",
            s(&pub_pem),
            "-days",
            "2",
            "-out",
            s(&cert),
        ],
    );
    for p in [&pem, &der] {
        chmod600(p);
    }
    Files {
        pkcs8: [pem, der],
        spki: [pub_pem, pub_der],
        traditional,
        cert,
    }
}

/// Asserts that `result` is the wrong-type error for `file`.
fn assert_mismatch<T>(result: anyhow::Result<T>, file: &Path, expected: &str, found: &str) {
    let err = match result {
        Ok(_) => panic!("{} ({found}) was accepted as {expected}", file.display()),
        Err(err) => format!("{err:#}"),
    };
    let want = format!("expected an {expected} key, found {found}");
    assert!(
        err.contains(&want),
        "{}: want {want:?} in {err:?}",
        file.display()
    );
    assert!(
        err.contains(&file.display().to_string()),
        "the error does not name {}: {err}",
        file.display()
    );
    assert!(!err.contains("unsupported"), "{err}");
}

#[test]
fn wrong_key_types_are_named_for_both_roles() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca_key = d.join("ca.key.pem");
    openssl(d, &["genpkey", "-algorithm", "ed25519", "-out", s(&ca_key)]);
    // A valid update key and certificate, to reach the certificate checks.
    let good = make(d, &TYPES[2], &ca_key);
    let good_cert = d.join("good.cert.pem");
    openssl(
        d,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            s(&good.pkcs8[0]),
            "-subj",
            "/CN=good",
            "-days",
            "2",
            "-out",
            s(&good_cert),
        ],
    );

    for t in TYPES {
        let f = make(d, t, &ca_key);

        // Boot role: PKCS#8 private keys and SPKI public keys, PEM and DER.
        for key in &f.pkcs8 {
            let r = load_signing_key(key);
            if t.name == BOOT {
                r.unwrap_or_else(|e| panic!("{}: {e:#}", key.display()));
            } else {
                assert_mismatch(r, key, BOOT, t.name);
            }
        }
        for key in &f.spki {
            let r = load_verifying_key(key);
            if t.name == BOOT {
                r.unwrap_or_else(|e| panic!("{}: {e:#}", key.display()));
            } else {
                assert_mismatch(r, key, BOOT, t.name);
            }
        }
        if let Some(trad) = &f.traditional {
            assert_mismatch(load_signing_key(trad), trad, BOOT, t.name);
            assert_mismatch(load_verifying_key(trad), trad, BOOT, t.name);
        }

        // Update role: private keys (PEM: PKCS#8, and SEC1/PKCS#1), and
        // certificates carrying each key type.
        let r = UpdateSigner::load(&f.pkcs8[0], &f.cert);
        if t.name == UPDATE {
            r.unwrap_or_else(|e| panic!("{}: {e:#}", f.pkcs8[0].display()));
        } else {
            assert_mismatch(r, &f.pkcs8[0], UPDATE, t.name);
        }
        if let Some(trad) = &f.traditional {
            let r = UpdateSigner::load(trad, &f.cert);
            if t.name == UPDATE {
                r.unwrap_or_else(|e| panic!("{}: {e:#}", trad.display()));
            } else {
                assert_mismatch(r, trad, UPDATE, t.name);
            }
        }
        if t.name != UPDATE {
            assert_mismatch(
                UpdateSigner::load(&good.pkcs8[0], &f.cert),
                &f.cert,
                UPDATE,
                t.name,
            );
            assert_mismatch(assemble(&f.cert, b"x", &[0; 64]), &f.cert, UPDATE, t.name);
        }
        // An SPKI public key where the update role wants a certificate is
        // named as a public key of its type.
        let err = format!(
            "{:#}",
            UpdateSigner::load(&good.pkcs8[0], &f.spki[0]).unwrap_err()
        );
        let want = format!(
            "is a public key ({}), but an X.509 certificate was expected",
            t.name
        );
        assert!(err.contains(&want), "{err}");
        assert!(err.contains(s(&f.spki[0])), "{err}");
    }
}

#[test]
fn the_key_parsers_never_panic_on_truncations() {
    // The fuzz target `key_pem` covers this at scale; here every prefix of
    // a real key of each form must give an error, not a panic.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca_key = d.join("ca.key.pem");
    openssl(d, &["genpkey", "-algorithm", "ed25519", "-out", s(&ca_key)]);
    let path = Path::new("fuzz.pem");
    for t in [&TYPES[2], &TYPES[3]] {
        let f = make(d, t, &ca_key);
        for file in f.pkcs8.iter().chain(&f.spki).chain([&f.cert]) {
            let data = fs::read(file).unwrap();
            // Everything short of the final newline is incomplete.
            for n in 0..data.len() - 1 {
                let cut = &data[..n];
                assert!(slotsmith_sign::parse_signing_key(cut, path).is_err());
                assert!(slotsmith_sign::parse_verifying_key(cut, path).is_err());
                assert!(slotsmith_cms::parse_private_key(cut, path).is_err());
                let _ = slotsmith_cms::file_fingerprints(cut, path);
            }
        }
    }
}
