//! The signed provenance of a real (fixture) build: `xtask verify` accepts
//! it, an independent implementation (`securesystemslib`'s DSSE, PyPI,
//! pinned in `.ci/run`) verifies its signature and, with `hashlib`, every
//! subject beside it; tampering is refused by both. Its key is a role of
//! its own, with the development-key rules of the others.

use std::fs;
use std::path::Path;

use crate::support::*;

/// Verifies the envelope with securesystemslib and checks each subject's
/// sha256 with hashlib. Exit 0 prints `OK <subjects> <dependencies>`; a
/// bad signature exits 3, a bad subject 4. A missing package is exit 1
/// (ImportError), which fails the test.
const PY_VERIFY: &str = r#"
import base64, hashlib, json, os, sys
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
path, pem = sys.argv[1:3]
with open(pem, "rb") as f:
    raw = load_pem_public_key(f.read()).public_bytes(Encoding.Raw, PublicFormat.Raw)
keyid = hashlib.sha256(raw).hexdigest()
with open(path) as f:
    env = Envelope.from_dict(json.load(f))
key = SSlibKey(keyid, "ed25519", "ed25519", {"public": raw.hex()})
try:
    env.verify([key], 1)
except VerificationError as e:
    print("REFUSED", e)
    sys.exit(3)
st = json.loads(env.payload)
assert st["_type"] == "https://in-toto.io/Statement/v1"
assert st["predicateType"] == "https://slsa.dev/provenance/v1"
for s in st["subject"]:
    with open(os.path.join(os.path.dirname(path), s["name"]), "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != s["digest"]["sha256"]:
            print("SUBJECT", s["name"])
            sys.exit(4)
print("OK", len(st["subject"]), len(st["predicate"]["buildDefinition"]["resolvedDependencies"]))
"#;

pub(crate) fn py_verify(envelope: &Path, public: &Path) -> (i32, String) {
    let out = duct::cmd!("python3", "-c", PY_VERIFY, envelope, public)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn build(p: &Project, name: &str) -> CliRun {
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
        ],
        &[],
        false,
        None,
    )
}

fn verify(envelope: &Path, key: &Path, json: bool) -> CliRun {
    let mut args = vec![
        "verify",
        envelope.to_str().unwrap(),
        "--provenance-key",
        key.to_str().unwrap(),
    ];
    if json {
        args.push("--json");
    }
    slotsmith(&args, &[], false, None)
}

#[test]
fn a_builds_provenance_verifies_with_xtask_and_securesystemslib() {
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    p.write(
        "images/prov.yaml",
        &fixture_image("prov", "fixtures/base.tar.gz", &[], "squashfs", "16MiB"),
    );
    let r = build(&p, "prov");
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The development key: generated with a loud warning, recorded.
    assert!(
        r.stderr.contains("generated a DEVELOPMENT provenance key"),
        "{}",
        r.stderr
    );
    let dev_pub = p.path().join("keys/dev/provenance.pub.pem");
    let registry = fs::read_to_string(p.path().join("keys/dev-fingerprints.txt")).unwrap();
    assert!(registry.contains(" provenance "), "{registry}");
    let out = p.path().join("out/prov");
    let envelope = out.join("provenance.dsse.json");
    let public = out.join("provenance.pub.pem");
    assert_eq!(fs::read(&public).unwrap(), fs::read(&dev_pub).unwrap());
    assert_ne!(
        fs::read(&public).unwrap(),
        fs::read(out.join("boot.pub.pem")).unwrap(),
        "a key of its own"
    );

    // Our verifier: every artifact of build.json and build.json itself.
    let r = verify(&envelope, &public, true);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("build.json")).unwrap()).unwrap();
    let artifacts = record["artifacts"].as_array().unwrap().len();
    assert_eq!(report["subjects"], artifacts + 1);
    assert_eq!(report["plan_sha256"], record["plan_sha256"]);
    assert_eq!(
        report["dependencies"],
        record["inputs"].as_array().unwrap().len()
    );
    // SHA256SUMS covers the envelope (it cannot name itself).
    let sums = run(
        "sh",
        &[
            "-c",
            &format!("cd {} && sha256sum -c --strict SHA256SUMS", out.display()),
        ],
    );
    assert!(sums.contains("provenance.dsse.json: OK"), "{sums}");

    // The independent implementation agrees.
    let (code, said) = py_verify(&envelope, &public);
    assert_eq!(code, 0, "{said}");
    assert_eq!(
        said.trim(),
        format!("OK {} {}", artifacts + 1, report["dependencies"])
    );

    // Without the key: an input error.
    let r = slotsmith(&["verify", envelope.to_str().unwrap()], &[], false, None);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--provenance-key"), "{}", r.stderr);
    // With the boot key: refused by both.
    let r = verify(&envelope, &out.join("boot.pub.pem"), false);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("verifies with the provenance key"),
        "{}",
        r.stderr
    );
    assert_eq!(py_verify(&envelope, &out.join("boot.pub.pem")).0, 3);

    // A payload byte changed: refused by both.
    let text = fs::read_to_string(&envelope).unwrap();
    let mut env: serde_json::Value = serde_json::from_str(&text).unwrap();
    let payload = env["payload"].as_str().unwrap().to_string();
    let decoded = base64_decode(&payload);
    let tampered = String::from_utf8(decoded)
        .unwrap()
        .replacen("\"prov\"", "\"prow\"", 1);
    env["payload"] = base64_encode(tampered.as_bytes()).into();
    let bad = out.join("tampered.dsse.json");
    fs::write(&bad, serde_json::to_vec(&env).unwrap()).unwrap();
    let r = verify(&bad, &public, false);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("no signature of the provenance"),
        "{}",
        r.stderr
    );
    let (code, said) = py_verify(&bad, &public);
    assert_eq!(code, 3, "{said}");

    // An artifact changed after signing: named by both.
    let img = out.join("prov.img.bmap");
    let mut bytes = fs::read(&img).unwrap();
    bytes.push(b'\n');
    fs::write(&img, bytes).unwrap();
    let r = verify(&envelope, &public, false);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("provenance subject prov.img.bmap"),
        "{}",
        r.stderr
    );
    let (code, said) = py_verify(&envelope, &public);
    assert_eq!((code, said.trim()), (4, "SUBJECT prov.img.bmap"));
}

#[test]
fn a_release_refuses_the_development_provenance_key_wherever_it_is() {
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    let keys = p.path().join("keys/release");
    for role in ["boot", "update", "provenance"] {
        let r = slotsmith(
            &[
                "keys",
                "generate",
                "--role",
                role,
                "--out",
                keys.to_str().unwrap(),
            ],
            &[],
            false,
            None,
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let base = fixture_image("rel", "fixtures/base.tar.gz", &[], "squashfs", "16MiB")
        + "release: true\nsigning:\n  boot:\n    key: keys/release/boot.key.pem\n    public-key: keys/release/boot.pub.pem\n  update:\n    key: keys/release/update.key.pem\n    cert: keys/release/update.cert.pem\n";
    // No provenance key named: refused at load, on the section's line.
    p.write("images/rel.yaml", &base);
    let r = slotsmith(
        &["plan", p.image("rel").to_str().unwrap()],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("signing.provenance: a release image must name its provenance key"),
        "{}",
        r.stderr
    );
    // A development key's copy outside keys/dev: refused by its public key.
    let dev = p.path().join("keys/dev");
    let r = slotsmith(
        &[
            "keys",
            "generate",
            "--role",
            "provenance",
            "--out",
            dev.to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    fs::create_dir(p.path().join("keys/copy")).unwrap();
    for f in ["provenance.key.pem", "provenance.pub.pem"] {
        fs::copy(dev.join(f), p.path().join("keys/copy").join(f)).unwrap();
    }
    p.write(
        "images/rel.yaml",
        &format!("{base}  provenance:\n    key: keys/copy/provenance.key.pem\n    public-key: keys/copy/provenance.pub.pem\n"),
    );
    let r = build(&p, "rel");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("a release image refuses development keys: the provenance private key"),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read_dir(p.path().join("out")).unwrap().count(), 0);
}

fn base64_decode(s: &str) -> Vec<u8> {
    let out = duct::cmd!("base64", "-d")
        .stdin_bytes(s.as_bytes())
        .stdout_capture()
        .run()
        .unwrap();
    out.stdout
}

fn base64_encode(b: &[u8]) -> String {
    let out = duct::cmd!("base64", "-w0")
        .stdin_bytes(b)
        .stdout_capture()
        .run()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}
