//! Interoperability tests: our keys, certificates and signatures checked by
//! the real tools that will consume them, openssl 3.0 and SWUpdate 2022.12.
//!
//! Unit tests can only show that this crate agrees with itself; a signature
//! SWUpdate rejects would brick every update, so the decisive checks here
//! run `openssl` and `swupdate -c` (check-only install of a hand-made
//! `.swu`) as independent verifiers, and the other way round feed
//! openssl-made signatures to `verify_detached`.

use slotsmith_cms::{
    assemble, generate_ca, generate_update_key, signed_attrs_der, verify_detached, UpdateSigner,
};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

const SW_DESCRIPTION_TEMPLATE: &str = r#"software =
{
	version = "1.2.3";
	description = "slotsmith cms test";
	hardware-compatibility = [ "1.0" ];
	files: (
		{
			filename = "hello.txt";
			type = "rawfile";
			path = "@PATH@";
			sha256 = "@SHA@";
		}
	);
}
"#;
const PAYLOAD: &[u8] = b"hello from slotsmith\n";

/// Runs a program in `dir`, returning (success, stdout+stderr).
///
/// Every run gets a fresh TMPDIR inside the test's directory: swupdate
/// puts its IPC sockets and extracted files there, and a helper process of
/// one run (it forks a chunks downloader) must not be able to touch the
/// next run's files, nor parallel tests each other's.
fn run(dir: &Path, program: &str, args: &[&str]) -> (bool, String) {
    let tmp = tempfile::tempdir_in(dir).unwrap();
    let out = duct::cmd(program, args)
        .dir(dir)
        .env("TMPDIR", tmp.path())
        .env("LC_ALL", "C")
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn run_ok(dir: &Path, program: &str, args: &[&str]) -> String {
    let (ok, out) = run(dir, program, args);
    assert!(ok, "{program} {args:?} failed:\n{out}");
    out
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Validity starting yesterday: SWUpdate checks dates against the clock.
fn yesterday() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 86_400
}

/// A temp dir holding a self-signed
/// update key, a CA, and a CA-issued update key.
struct Fixture {
    dir: TempDir,
    self_key: PathBuf,
    self_cert: PathBuf,
    ca_cert: PathBuf,
    leaf_key: PathBuf,
    leaf_cert: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let t = yesterday();
        let (self_key, self_cert) =
            generate_update_key(&keys, "update", "slotsmith update", t, 30, None).unwrap();
        let (ca_key, ca_cert) = generate_ca(&keys, "ca", "slotsmith test CA", t, 60).unwrap();
        let (leaf_key, leaf_cert) = generate_update_key(
            &keys,
            "leaf",
            "leaf-signer",
            t,
            30,
            Some((&ca_cert, &ca_key)),
        )
        .unwrap();
        Fixture {
            dir,
            self_key,
            self_cert,
            ca_cert,
            leaf_key,
            leaf_cert,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.path().join(name);
        fs::write(&path, data).unwrap();
        path
    }

    fn self_signer(&self) -> UpdateSigner {
        UpdateSigner::load(&self.self_key, &self.self_cert).unwrap()
    }

    fn leaf_signer(&self) -> UpdateSigner {
        UpdateSigner::load(&self.leaf_key, &self.leaf_cert).unwrap()
    }

    /// Runs `openssl cms -verify` the way SWUpdate calls CMS_verify
    /// (binary, detached, DER).
    fn openssl_cms_verify(&self, sig: &[u8], content: &[u8], ca_file: &Path) -> (bool, String) {
        let sig = self.write("cms.sig", sig);
        let data = self.write("cms.data", content);
        run(
            self.path(),
            "openssl",
            &[
                "cms",
                "-verify",
                "-binary",
                "-inform",
                "DER",
                "-in",
                s(&sig),
                "-content",
                s(&data),
                "-CAfile",
                s(ca_file),
                "-purpose",
                "any",
                "-out",
                "/dev/null",
            ],
        )
    }

    /// Builds `<name>.swu` (cpio crc: sw-description, its signature, one
    /// rawfile payload whose install path is `<dir>/<name>.out`).
    fn swu(&self, name: &str, sign: impl Fn(&[u8]) -> Vec<u8>, edit: Option<&str>) -> PathBuf {
        let work = self.path().join(format!("{name}.d"));
        fs::create_dir(&work).unwrap();
        let target = self.path().join(format!("{name}.out"));
        let description = SW_DESCRIPTION_TEMPLATE
            .replace("@PATH@", s(&target))
            .replace("@SHA@", &sha256_hex(PAYLOAD));
        let signature = sign(description.as_bytes());
        // An edit after signing, as an attacker would make.
        let description = match edit {
            Some(version) => description.replace("1.2.3", version),
            None => description,
        };
        fs::write(work.join("sw-description"), description).unwrap();
        fs::write(work.join("sw-description.sig"), signature).unwrap();
        fs::write(work.join("hello.txt"), PAYLOAD).unwrap();
        let swu = self.path().join(format!("{name}.swu"));
        duct::cmd!("cpio", "-o", "-H", "crc", "--quiet")
            .dir(&work)
            .stdin_bytes("sw-description\nsw-description.sig\nhello.txt\n")
            .stdout_path(&swu)
            .run()
            .unwrap();
        swu
    }

    /// Stands in for an HSM: ECDSA-SHA256 over `data` by `openssl dgst`
    /// (randomised nonces, unlike ours), DER signature out.
    fn hsm_sign(&self, key: &Path, data: &[u8]) -> Vec<u8> {
        let input = self.write("hsm.in", data);
        let out = self.path().join("hsm.sig");
        run_ok(
            self.path(),
            "openssl",
            &[
                "dgst",
                "-sha256",
                "-sign",
                s(key),
                "-out",
                s(&out),
                s(&input),
            ],
        );
        fs::read(&out).unwrap()
    }

    /// `swupdate -c` (verify signature, hashes and checksums; install
    /// nothing) with `trust` as the `-k` store and any `extra` flags.
    fn swupdate_check(&self, swu: &Path, trust: &Path, extra: &[&str]) -> (Verdict, String) {
        let mut args = vec!["-c", "-v", "-k", s(trust), "-H", "board:1.0", "-i", s(swu)];
        args.extend(extra);
        swupdate(self.path(), &args)
    }
}

/// What SWUpdate made of an update, judged from its log and exit code.
#[derive(Debug, PartialEq)]
enum Verdict {
    Accepted,
    Rejected,
}

/// Runs swupdate until it gives a conclusive answer (at most five runs)
/// and returns that answer with its log.
///
/// Neither the exit code nor the closing log line of swupdate 2022.12 is
/// reliable on its own. Measured here with updates signed by
/// `openssl cms`:
///
/// - a good update exits 1 in about one run in eight: `endupdate`
///   (`core/install_from_file.c`) turns a lost race on the post-update
///   IPC message into a failure after the install succeeded;
/// - in a few runs the client's end-of-update callback fires *before* the
///   update has even started (logging "SWUpdate was successful !" first);
///   `main` then returns while the installer thread is still verifying,
///   OpenSSL's atexit cleanup runs under it, and a perfectly good
///   signature is reported as "cannot be parsed as DER-encoded CMS
///   signature blob" (exit code 1).
///
/// So a run counts only if the installer itself concluded: accepted =
/// the signature was "Verified OK" and the installer reported "SWUPDATE
/// successful" (a lost race cannot fake those lines); rejected = the end
/// callback saw the failure ("SWUpdate *failed* !"), neither success line
/// is there, and the exit code is non-zero. Anything else is retried.
fn swupdate(dir: &Path, args: &[&str]) -> (Verdict, String) {
    let mut logs = String::new();
    // In a private PID namespace, so no helper process outlives the run and
    // holds the output pipe open; `timeout` bounds a hung agent.
    let mut wrapped = vec![
        "--kill-after=10",
        "120",
        "unshare",
        "-p",
        "--fork",
        "swupdate",
    ];
    wrapped.extend_from_slice(args);
    for _ in 0..5 {
        let (ok, out) = run(dir, "timeout", &wrapped);
        let verified = out.contains("Verified OK");
        let installed = out.contains("SWUPDATE successful");
        let failed = out.contains("SWUpdate *failed* !");
        if verified && installed && !failed {
            return (Verdict::Accepted, out);
        }
        if failed && !verified && !installed && !ok {
            return (Verdict::Rejected, out);
        }
        logs.push_str(&out);
    }
    panic!("swupdate gave no conclusive answer in five runs:\n{logs}");
}

/// Asserts that swupdate rejects the update, and (over up to five runs,
/// because the log can lose the line; see [`swupdate`]) that it says
/// `reason`.
fn assert_rejected_because(f: &Fixture, swu: &Path, trust: &Path, reason: &str) {
    let mut logs = String::new();
    for _ in 0..5 {
        let (verdict, out) = f.swupdate_check(swu, trust, &[]);
        assert_eq!(verdict, Verdict::Rejected, "{out}");
        if out.contains(reason) {
            return;
        }
        logs.push_str(&out);
    }
    panic!("swupdate never said {reason:?}:\n{logs}");
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[test]
fn openssl_reads_our_keys_and_certificates() {
    let f = Fixture::new();
    let text = run_ok(
        f.path(),
        "openssl",
        &["x509", "-in", s(&f.self_cert), "-noout", "-text"],
    );
    for want in [
        "Version: 3 (0x2)",
        "Signature Algorithm: ecdsa-with-SHA256",
        "Subject: CN = slotsmith update",
        "Issuer: CN = slotsmith update",
        "ASN1 OID: prime256v1",
        "X509v3 Key Usage: critical",
        "Digital Signature",
        "X509v3 Extended Key Usage:",
        "E-mail Protection, Code Signing",
        "X509v3 Basic Constraints: critical",
        "CA:FALSE",
        "X509v3 Subject Key Identifier:",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("Authority Key Identifier"), "{text}");

    let ca = run_ok(
        f.path(),
        "openssl",
        &["x509", "-in", s(&f.ca_cert), "-noout", "-text"],
    );
    for want in [
        "CA:TRUE",
        "Certificate Sign, CRL Sign",
        "X509v3 Key Usage: critical",
    ] {
        assert!(ca.contains(want), "missing {want:?} in:\n{ca}");
    }
    let leaf = run_ok(
        f.path(),
        "openssl",
        &["x509", "-in", s(&f.leaf_cert), "-noout", "-text"],
    );
    assert!(leaf.contains("Issuer: CN = slotsmith test CA"), "{leaf}");
    assert!(leaf.contains("X509v3 Authority Key Identifier"), "{leaf}");

    // The chain verifies, also under the purpose SWUpdate uses by default
    // (smime_sign). openssl 3.0 has no codeSigning purpose to test with;
    // the SWUpdate test covers `--cert-purpose codeSigning` instead.
    for purpose in ["any", "smimesign"] {
        let out = run_ok(
            f.path(),
            "openssl",
            &[
                "verify",
                "-purpose",
                purpose,
                "-CAfile",
                s(&f.ca_cert),
                s(&f.leaf_cert),
            ],
        );
        assert!(out.contains(": OK"), "{out}");
    }
    // A leaf is not a CA: nothing it "issues" may verify.
    let (ok, out) = run(
        f.path(),
        "openssl",
        &["verify", "-CAfile", s(&f.self_cert), s(&f.leaf_cert)],
    );
    assert!(!ok, "{out}");

    for key in [&f.self_key, &f.leaf_key] {
        run_ok(f.path(), "openssl", &["pkey", "-in", s(key), "-noout"]);
        let mode = fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    // The key in the file is the certificate's key.
    let from_key = run_ok(
        f.path(),
        "openssl",
        &["pkey", "-in", s(&f.self_key), "-pubout"],
    );
    let from_cert = run_ok(
        f.path(),
        "openssl",
        &["x509", "-in", s(&f.self_cert), "-noout", "-pubkey"],
    );
    assert_eq!(from_key, from_cert);
}

#[test]
fn generation_refuses_to_overwrite() {
    let f = Fixture::new();
    let keys = f.path().join("keys");
    let before = fs::read(&f.self_key).unwrap();
    let err = generate_update_key(&keys, "update", "again", yesterday(), 1, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(&f.self_key).unwrap(), before);

    // A stray certificate alone also blocks, and no key is left behind.
    fs::write(keys.join("lonely.cert.pem"), "x").unwrap();
    let err = generate_ca(&keys, "lonely", "x", yesterday(), 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lonely.cert.pem already exists"), "{err}");
    assert!(!keys.join("lonely.key.pem").exists());
}

#[test]
fn load_refuses_open_keys_and_foreign_certificates() {
    let f = Fixture::new();
    fs::set_permissions(&f.self_key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = UpdateSigner::load(&f.self_key, &f.self_cert)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "permissions 0644 for {} are too open: ",
            f.self_key.display()
        )),
        "{err}"
    );
    fs::set_permissions(&f.self_key, fs::Permissions::from_mode(0o600)).unwrap();
    let err = UpdateSigner::load(&f.self_key, &f.leaf_cert)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not belong to key"), "{err}");
    // Swapped arguments are named, not parsed as garbage.
    let cert_as_key = f.write("cert-as-key.pem", &fs::read(&f.self_cert).unwrap());
    fs::set_permissions(&cert_as_key, fs::Permissions::from_mode(0o600)).unwrap();
    let err = UpdateSigner::load(&cert_as_key, &f.self_key)
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("is a certificate, but a private key was expected"),
        "{err}"
    );
    let err = UpdateSigner::load(&f.self_key, &f.self_key)
        .unwrap_err()
        .to_string();
    assert!(err.contains("only certificates were expected"), "{err}");
}

#[test]
fn openssl_cms_verifies_our_signatures() {
    let f = Fixture::new();
    let content = b"software = { version = \"1.0\"; };\r\n\x00binary\xff";

    let sig = f.self_signer().sign_detached(content).unwrap();
    let (ok, out) = f.openssl_cms_verify(&sig, content, &f.self_cert);
    assert!(ok && out.contains("Verification successful"), "{out}");

    let sig_leaf = f.leaf_signer().sign_detached(content).unwrap();
    let (ok, out) = f.openssl_cms_verify(&sig_leaf, content, &f.ca_cert);
    assert!(ok && out.contains("Verification successful"), "{out}");

    let mut tampered = content.to_vec();
    tampered[3] ^= 1;
    let (ok, out) = f.openssl_cms_verify(&sig, &tampered, &f.self_cert);
    assert!(!ok, "tampered content verified:\n{out}");
    // And the wrong trust anchor is refused.
    let (ok, out) = f.openssl_cms_verify(&sig, content, &f.ca_cert);
    assert!(!ok, "untrusted signer verified:\n{out}");

    // The structure openssl reports is the one documented: detached,
    // sha256, contentType + messageDigest only, signer cert embedded.
    let sig_path = f.write("print.sig", &sig);
    let printed = run_ok(
        f.path(),
        "openssl",
        &[
            "cms",
            "-cmsout",
            "-print",
            "-inform",
            "DER",
            "-in",
            s(&sig_path),
        ],
    );
    for want in [
        "eContent: <ABSENT>",
        "algorithm: sha256",
        "contentType",
        "messageDigest",
        "ecdsa-with-SHA256",
        "d.issuerAndSerialNumber",
    ] {
        assert!(printed.contains(want), "missing {want:?} in:\n{printed}");
    }
    assert!(!printed.contains("signingTime"), "{printed}");
}

#[test]
fn swupdate_accepts_our_signatures_and_rejects_edits() {
    let f = Fixture::new();
    let self_signer = f.self_signer();
    let leaf_signer = f.leaf_signer();

    let swu = f.swu("self", |d| self_signer.sign_detached(d).unwrap(), None);
    let (verdict, out) = f.swupdate_check(&swu, &f.self_cert, &[]);
    assert_eq!(verdict, Verdict::Accepted, "self-signed:\n{out}");
    // Our certificates also satisfy the stricter optional purpose.
    let (verdict, out) = f.swupdate_check(&swu, &f.self_cert, &["--cert-purpose", "codeSigning"]);
    assert_eq!(verdict, Verdict::Accepted, "codeSigning purpose:\n{out}");
    // And the expected-signer-name pin matches our subject.
    let (verdict, out) = f.swupdate_check(
        &swu,
        &f.self_cert,
        &["--forced-signer-name", "slotsmith update"],
    );
    assert_eq!(verdict, Verdict::Accepted, "forced signer name:\n{out}");

    let swu = f.swu("leaf", |d| leaf_signer.sign_detached(d).unwrap(), None);
    let (verdict, out) = f.swupdate_check(&swu, &f.ca_cert, &[]);
    assert_eq!(verdict, Verdict::Accepted, "CA-issued, -k ca.pem:\n{out}");

    let swu = f.swu(
        "edited",
        |d| self_signer.sign_detached(d).unwrap(),
        Some("9.9.9"),
    );
    assert_rejected_because(&f, &swu, &f.self_cert, "Signature verification failed");

    let swu = f.swu("untrusted", |d| self_signer.sign_detached(d).unwrap(), None);
    assert_rejected_because(
        &f,
        &swu,
        &f.ca_cert,
        "Authentication of all signatures failed",
    );
}

#[test]
fn swupdate_installs_an_update_signed_by_us() {
    // Beyond the check-only mode: a real install writes the payload.
    let f = Fixture::new();
    let signer = f.leaf_signer();
    let swu = f.swu("install", |d| signer.sign_detached(d).unwrap(), None);
    let (verdict, out) = swupdate(
        f.path(),
        &["-v", "-k", s(&f.ca_cert), "-H", "board:1.0", "-i", s(&swu)],
    );
    assert_eq!(verdict, Verdict::Accepted, "{out}");
    assert_eq!(fs::read(f.path().join("install.out")).unwrap(), PAYLOAD);
}

#[test]
fn verify_detached_accepts_ours_and_openssls() {
    let f = Fixture::new();
    let content = b"sw-description bytes\n";
    let data = f.write("data", content);

    let ours = f.self_signer().sign_detached(content).unwrap();
    assert_eq!(
        slotsmith_cms::claimed_signer_fingerprint(&ours).unwrap(),
        f.self_signer().fingerprint()
    );
    assert!(slotsmith_cms::claimed_signer_fingerprint(b"junk").is_err());
    let subject = verify_detached(&ours, content, &f.self_cert).unwrap();
    assert_eq!(subject, "CN=slotsmith update");
    let ours_leaf = f.leaf_signer().sign_detached(content).unwrap();
    assert_eq!(
        verify_detached(&ours_leaf, content, &f.ca_cert).unwrap(),
        "CN=leaf-signer"
    );
    // The leaf certificate itself is also a valid trust anchor.
    verify_detached(&ours_leaf, content, &f.leaf_cert).unwrap();

    for (name, key, cert, extra) in [
        ("attrs", &f.self_key, &f.self_cert, None),
        ("noattr", &f.self_key, &f.self_cert, Some("-noattr")),
        ("leaf", &f.leaf_key, &f.leaf_cert, None),
    ] {
        let out = f.path().join(format!("openssl-{name}.sig"));
        let mut args = vec![
            "cms",
            "-sign",
            "-md",
            "sha256",
            "-binary",
            "-nosmimecap",
            "-outform",
            "DER",
            "-in",
            s(&data),
            "-signer",
            s(cert),
            "-inkey",
            s(key),
            "-out",
            s(&out),
        ];
        args.extend(extra);
        run_ok(f.path(), "openssl", &args);
        let sig = fs::read(&out).unwrap();
        let anchor = if name == "leaf" {
            &f.ca_cert
        } else {
            &f.self_cert
        };
        verify_detached(&sig, content, anchor).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        // The device's audit trail names the signer by its key, whoever
        // made the signature, even before (or without) verifying it.
        assert_eq!(
            slotsmith_cms::claimed_signer_fingerprint(&sig).unwrap(),
            slotsmith_cms::cert_fingerprint(cert).unwrap(),
            "{name}"
        );
        let err = verify_detached(&sig, b"other", anchor)
            .unwrap_err()
            .to_string();
        let want = if name == "noattr" {
            "cms: signature does not verify"
        } else {
            "cms: messageDigest does not match sw-description"
        };
        assert_eq!(err, want, "{name}");
    }
}

#[test]
fn verify_detached_rejects_what_swupdate_rejects() {
    let f = Fixture::new();
    let content = b"sw-description bytes\n";
    let sig = f.self_signer().sign_detached(content).unwrap();

    let err = verify_detached(&sig, b"sw-description bytes!", &f.self_cert).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cms: messageDigest does not match sw-description"
    );

    for other in [&f.ca_cert, &f.leaf_cert] {
        let err = verify_detached(&sig, content, other).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cms: signer certificate is not the given certificate nor issued by it"
        );
    }

    for garbage in [&b"garbage"[..], &[], &sig[..sig.len() - 1]] {
        let err = verify_detached(garbage, content, &f.self_cert).unwrap_err();
        assert_eq!(err.to_string(), "cms: not DER SignedData");
    }
    let mut trailing = sig.clone();
    trailing.push(0);
    let err = verify_detached(&trailing, content, &f.self_cert).unwrap_err();
    assert_eq!(err.to_string(), "cms: not DER SignedData");

    // A flipped bit in the signature value itself. The ECDSA signature is
    // the last element; its final byte is part of s.
    let mut bad = sig.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let err = verify_detached(&bad, content, &f.self_cert).unwrap_err();
    assert_eq!(err.to_string(), "cms: signature does not verify");

    // A signature under -nocerts has nothing for SWUpdate to check.
    let data = f.write("data", content);
    let out = f.path().join("nocerts.sig");
    run_ok(
        f.path(),
        "openssl",
        &[
            "cms",
            "-sign",
            "-md",
            "sha256",
            "-binary",
            "-nosmimecap",
            "-nocerts",
            "-outform",
            "DER",
            "-in",
            s(&data),
            "-signer",
            s(&f.self_cert),
            "-inkey",
            s(&f.self_key),
            "-out",
            s(&out),
        ],
    );
    let err = verify_detached(&fs::read(&out).unwrap(), content, &f.self_cert).unwrap_err();
    assert!(err.to_string().contains("not embedded"), "{err}");
}

#[test]
fn signing_is_deterministic() {
    let f = Fixture::new();
    let signer = f.self_signer();
    let a = signer.sign_detached(b"same content").unwrap();
    let b = signer.sign_detached(b"same content").unwrap();
    assert_eq!(a, b);
    // A freshly loaded signer gives the same bytes too.
    assert_eq!(f.self_signer().sign_detached(b"same content").unwrap(), a);
    assert_ne!(signer.sign_detached(b"other content").unwrap(), a);
    // The embedded certificate is the file's, byte for byte.
    run_ok(
        f.path(),
        "openssl",
        &[
            "x509",
            "-in",
            s(&f.self_cert),
            "-outform",
            "DER",
            "-out",
            "cert.der",
        ],
    );
    assert_eq!(
        signer.cert_der(),
        &fs::read(f.path().join("cert.der")).unwrap()[..]
    );
}

#[test]
fn external_signatures_are_checked_then_assembled() {
    let f = Fixture::new();
    let content = b"sw-description for the HSM\n";
    let hsm_sig = f.hsm_sign(&f.leaf_key, &signed_attrs_der(content));
    let cms = assemble(&f.leaf_cert, content, &hsm_sig).unwrap();
    verify_detached(&cms, content, &f.ca_cert).unwrap();
    let (ok, out) = f.openssl_cms_verify(&cms, content, &f.ca_cert);
    assert!(ok, "{out}");

    // The assembled signature also passes SWUpdate itself.
    let swu = f.swu(
        "hsm",
        |d| {
            assemble(
                &f.leaf_cert,
                d,
                &f.hsm_sign(&f.leaf_key, &signed_attrs_der(d)),
            )
            .unwrap()
        },
        None,
    );
    let (verdict, out) = f.swupdate_check(&swu, &f.ca_cert, &[]);
    assert_eq!(verdict, Verdict::Accepted, "assembled signature:\n{out}");

    // A signature over anything else is refused before assembling.
    let err = assemble(&f.leaf_cert, b"different content", &hsm_sig).unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
    let err = assemble(&f.self_cert, content, &hsm_sig).unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
    let err = assemble(&f.leaf_cert, content, b"junk").unwrap_err();
    assert!(err.to_string().contains("neither a DER"), "{err}");
}

#[test]
fn openssl_generated_sec1_keys_sign_too() {
    // SWUpdate's documentation makes keys with `openssl ecparam -genkey`
    // (SEC1 PEM); such a key and an `openssl req -x509` certificate work.
    let f = Fixture::new();
    let key = f.path().join("sec1.key.pem");
    let cert = f.path().join("sec1.cert.pem");
    run_ok(
        f.path(),
        "openssl",
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            s(&key),
        ],
    );
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    run_ok(
        f.path(),
        "openssl",
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            s(&key),
            "-out",
            s(&cert),
            "-days",
            "3",
            "-subj",
            "/CN=swu-test",
        ],
    );
    let signer = UpdateSigner::load(&key, &cert).unwrap();
    let swu = f.swu("sec1", |d| signer.sign_detached(d).unwrap(), None);
    let (verdict, out) = f.swupdate_check(&swu, &cert, &[]);
    assert_eq!(verdict, Verdict::Accepted, "{out}");
    let sig = signer.sign_detached(b"x").unwrap();
    assert_eq!(verify_detached(&sig, b"x", &cert).unwrap(), "CN=swu-test");

    // A P-384 key is refused with a message that says what is expected.
    let p384 = f.path().join("p384.key.pem");
    run_ok(
        f.path(),
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            s(&p384),
        ],
    );
    fs::set_permissions(&p384, fs::Permissions::from_mode(0o600)).unwrap();
    let err = UpdateSigner::load(&p384, &cert).unwrap_err().to_string();
    assert!(
        err.contains("expected an ECDSA P-256 key, found ECDSA P-384"),
        "{err}"
    );
}
