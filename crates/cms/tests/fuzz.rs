//! The key and certificate parsers of both roles under stable `cargo test`
//! fuzzing (issue 8): the `key_pem` corpus, keys of every form generated
//! here (ours and openssl's, PEM and DER, PKCS#8, SPKI, SEC1, PKCS#1,
//! certificates), and deterministic mutations of them, through
//! `slotsmith_cms::fuzz::key_pem`, the function the cargo-fuzz target
//! fuzz/fuzz_targets/key_pem.rs calls. Invariants: no panic, bounded
//! allocation, escaped errors.

use std::fs;
use std::path::Path;

#[global_allocator]
static ALLOC: slotsmith_fuzzing::CountingAlloc = slotsmith_fuzzing::CountingAlloc;

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
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn seeds(dir: &Path) -> Vec<Vec<u8>> {
    let (boot_key, boot_pub) = slotsmith_sign::generate(dir, "boot").unwrap();
    let (update_key, update_cert) =
        slotsmith_cms::generate_update_key(dir, "update", "fuzz", 1_700_000_000, 30, None).unwrap();
    let mut files = vec![boot_key.clone(), boot_pub, update_key.clone(), update_cert];
    let mut add = |name: &str, args: &[&str]| {
        openssl(dir, args);
        files.push(dir.join(name));
    };
    let (bk, uk) = (boot_key.to_str().unwrap(), update_key.to_str().unwrap());
    add(
        "boot.key.der",
        &["pkey", "-in", bk, "-outform", "DER", "-out", "boot.key.der"],
    );
    add(
        "boot.pub.der",
        &[
            "pkey",
            "-in",
            bk,
            "-pubout",
            "-outform",
            "DER",
            "-out",
            "boot.pub.der",
        ],
    );
    add(
        "update.sec1.pem",
        &["pkey", "-in", uk, "-traditional", "-out", "update.sec1.pem"],
    );
    add(
        "rsa.pem",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            "rsa.pem",
        ],
    );
    add(
        "rsa.pkcs1.pem",
        &[
            "pkey",
            "-in",
            "rsa.pem",
            "-traditional",
            "-out",
            "rsa.pkcs1.pem",
        ],
    );
    add(
        "p384.pem",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            "p384.pem",
        ],
    );
    add(
        "ed448.pub.pem",
        &["genpkey", "-algorithm", "ed448", "-out", "ed448.pub.pem"],
    );
    let mut seeds: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    // A bundle of two certificates, and a key pasted after a certificate.
    let cert = fs::read(dir.join("update.cert.pem")).unwrap();
    seeds.push([cert.clone(), cert.clone()].concat());
    seeds.push([cert, fs::read(&update_key).unwrap()].concat());
    // A detached CMS signature (what a device reads the claimed signer
    // from, before SWUpdate verifies it).
    let signer =
        slotsmith_cms::UpdateSigner::load(&update_key, &dir.join("update.cert.pem")).unwrap();
    seeds.push(signer.sign_detached(b"sw-description").unwrap());
    seeds
}

#[test]
fn key_pem() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = seeds(dir.path());
    // The seeds themselves parse where they should.
    let path = Path::new("seed.pem");
    assert!(slotsmith_sign::parse_signing_key(&seeds[0], path).is_ok());
    assert!(slotsmith_sign::parse_verifying_key(&seeds[1], path).is_ok());
    assert!(slotsmith_cms::parse_private_key(&seeds[2], path).is_ok());
    assert_eq!(
        slotsmith_cms::file_fingerprints(&seeds[3], path)
            .unwrap()
            .len(),
        1
    );
    assert!(slotsmith_sign::parse_signing_key(&seeds[4], path).is_ok());
    assert!(slotsmith_sign::parse_verifying_key(&seeds[5], path).is_ok());
    assert!(slotsmith_cms::parse_private_key(&seeds[6], path).is_ok());
    assert!(slotsmith_cms::claimed_signer_fingerprint(seeds.last().unwrap()).is_ok());
    slotsmith_fuzzing::exercise("key_pem", &seeds, 5000, slotsmith_cms::fuzz::key_pem);
}
