//! Tests of the provenance statement and its DSSE envelope, in memory, and
//! against an independent verifier (`securesystemslib`, PyPI; pinned in
//! `.ci/run`).

use super::*;
use crate::build::{Artifact, Input, RootfsFacts};
use ed25519_dalek::SigningKey;
use slotsmith_sign::KeySigner;

/// Verifies `envelope` with `key` through `securesystemslib`'s DSSE
/// implementation, independent of ours. Exit 0 prints `OK <predicateType>
/// <subjects>`; a refused signature exits 3. A missing package fails the
/// caller's assertion (exit 1 with an ImportError), never skips.
const PY_VERIFY: &str = r#"
import json, sys
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey
path, keyid, public = sys.argv[1:4]
with open(path) as f:
    env = Envelope.from_dict(json.load(f))
key = SSlibKey(keyid, "ed25519", "ed25519", {"public": public})
try:
    accepted = env.verify([key], 1)
except VerificationError as e:
    print("REFUSED", e)
    sys.exit(3)
assert list(accepted) == [keyid], accepted
assert env.payload_type == "application/vnd.in-toto+json"
statement = json.loads(env.payload)
print("OK", statement["predicateType"], len(statement["subject"]))
"#;

/// Runs [`PY_VERIFY`]: (exit code, stdout and stderr).
pub(crate) fn python_verify(envelope: &Path, key: &VerifyingKey) -> (i32, String) {
    let out = duct::cmd!(
        "python3",
        "-c",
        PY_VERIFY,
        envelope,
        keyid(key),
        hex::encode(key.as_bytes())
    )
    .stdout_capture()
    .stderr_capture()
    .unchecked()
    .run()
    .expect("running python3 (needed for the independent DSSE verifier)");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn signer(seed: u8) -> KeySigner {
    KeySigner::new(SigningKey::from_bytes(&[seed; 32]))
}

fn record() -> BuildRecord {
    let artifact = |name: &str, data: &[u8]| Artifact {
        name: name.into(),
        sha256: hex::encode(Sha256::digest(data)),
        size: data.len() as u64,
    };
    BuildRecord {
        schema: 2,
        image: "tiny".into(),
        version: "1.0.0".into(),
        image_file: "images/tiny.yaml".into(),
        plan_sha256: "ab".repeat(32),
        source_date_epoch: 1_735_689_600,
        artifacts: vec![
            artifact("tiny.img", b"image"),
            artifact("audit/report.md", b"report"),
        ],
        partitions: Vec::new(),
        boot_key: "sha256:00".into(),
        security_version: 1,
        slots: Vec::new(),
        rootfs: RootfsFacts {
            filesystem: crate::spec::Filesystem::Squashfs,
            size: 0,
            slot_size: 0,
            entries: 0,
            file_bytes: 0,
        },
        inputs: vec![
            Input {
                path: "images/tiny.yaml".into(),
                sha256: Some("cd".repeat(32)),
                symlink: None,
                directory: false,
                mode: None,
            },
            Input {
                path: "layers/meta-x/files/etc/link".into(),
                sha256: None,
                symlink: Some("../target".into()),
                directory: false,
                mode: None,
            },
        ],
        lock_sha256: None,
        unrecorded_inputs: Vec::new(),
    }
}

fn packages() -> Vec<LockedPackage> {
    vec![LockedPackage {
        name: "libstdc++6".into(),
        version: "1:12.2.0-14".into(),
        architecture: "amd64".into(),
        sha256: "ef".repeat(32),
        size: 1,
    }]
}

fn build_json() -> (&'static str, String) {
    ("build.json", hex::encode(Sha256::digest(b"{}")))
}

fn signed() -> (Statement, Envelope, KeySigner) {
    let (name, sha) = build_json();
    let st = statement(&record(), (name, &sha), &packages(), Some("bookworm"));
    let s = signer(7);
    let env = sign(&st, &s).unwrap();
    (st, env, s)
}

#[test]
fn pae_matches_the_dsse_specification_example() {
    // DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world").
    assert_eq!(
        pae("http://example.com/HelloWorld", b"hello world"),
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    );
    // Lengths are bytes, not characters, and an empty body is allowed.
    assert_eq!(pae("t", "é".as_bytes()), b"DSSEv1 1 t 2 \xc3\xa9");
    assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
}

#[test]
fn the_statement_is_in_toto_slsa_with_sorted_keys() {
    let (st, env, s) = signed();
    let payload = Base64::decode_vec(&env.payload).unwrap();
    assert_eq!(payload, statement_bytes(&st).unwrap());
    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    // Keys sorted at every level: re-serialising through a sorted map
    // (serde_json's default Map) gives the same bytes.
    assert_eq!(serde_json::to_vec(&v).unwrap(), payload);
    let text = String::from_utf8(payload).unwrap();
    assert!(text.starts_with(r#"{"_type":"https://in-toto.io/Statement/v1","predicate":{"buildDefinition":{"buildType":"#), "{text}");
    assert_eq!(v["predicateType"], PREDICATE_TYPE);
    // Every artifact and build.json, sorted by name.
    let names: Vec<&str> = v["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit/report.md", "build.json", "tiny.img"]);
    assert_eq!(
        v["subject"][2]["digest"]["sha256"],
        hex::encode(Sha256::digest(b"image"))
    );
    let bd = &v["predicate"]["buildDefinition"];
    assert_eq!(
        bd["externalParameters"]["image"]["file"],
        "images/tiny.yaml"
    );
    assert_eq!(bd["externalParameters"]["source_date_epoch"], 1_735_689_600);
    assert_eq!(bd["internalParameters"]["plan_sha256"], "ab".repeat(32));
    let deps = bd["resolvedDependencies"].as_array().unwrap();
    assert_eq!(deps.len(), 3);
    assert_eq!(deps[0]["name"], "images/tiny.yaml");
    assert_eq!(deps[0]["digest"]["sha256"], "cd".repeat(32));
    assert_eq!(deps[1]["annotations"]["symlink"], "../target");
    assert_eq!(deps[1]["content"], Base64::encode_string(b"../target"));
    assert_eq!(deps[2]["name"], "libstdc++6_1%3a12.2.0-14_amd64.deb");
    assert_eq!(
        deps[2]["uri"],
        "pkg:deb/debian/libstdc%2B%2B6@1:12.2.0-14?arch=amd64&distro=debian-bookworm"
    );
    let md = &v["predicate"]["runDetails"]["metadata"];
    assert_eq!(md["startedOn"], "2025-01-01T00:00:00Z");
    assert_eq!(md["finishedOn"], "2025-01-01T00:00:00Z");
    assert_eq!(
        md["invocationId"],
        format!("slotsmith-plan-sha256:{}", "ab".repeat(32))
    );
    assert_eq!(
        v["predicate"]["runDetails"]["builder"]["version"]["slotsmith"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(env.signatures[0].keyid, keyid(&s.public_key()));
    assert_eq!(
        format!("sha256:{}", env.signatures[0].keyid),
        slotsmith_sign::fingerprint(&s.public_key())
    );
}

#[test]
fn signing_round_trips_and_is_deterministic() {
    let (st, env, s) = signed();
    assert_eq!(
        verify(&envelope_bytes(&env).unwrap(), &s.public_key()).unwrap(),
        st
    );
    let (_, again, _) = signed();
    assert_eq!(
        envelope_bytes(&env).unwrap(),
        envelope_bytes(&again).unwrap(),
        "same inputs and key, same bytes"
    );
    // The signature is over the PAE of exactly the payload.
    let sig = Base64::decode_vec(&env.signatures[0].sig).unwrap();
    let payload = Base64::decode_vec(&env.payload).unwrap();
    check_signature(&s.public_key(), &pae(PAYLOAD_TYPE, &payload), &sig).unwrap();
    assert!(check_signature(&s.public_key(), &payload, &sig).is_err());
}

#[test]
fn tampering_and_other_keys_are_refused() {
    let (_, env, s) = signed();
    let key = s.public_key();
    let err = |e: &Envelope| {
        format!(
            "{:#}",
            verify(&envelope_bytes(e).unwrap(), &key).unwrap_err()
        )
    };
    // A flipped payload byte.
    let mut payload = Base64::decode_vec(&env.payload).unwrap();
    payload[40] ^= 1;
    let mut bad = env.clone();
    bad.payload = Base64::encode_string(&payload);
    assert!(err(&bad).contains("no signature of the provenance (1 given) verifies"));
    // A subject digest changed and re-encoded.
    let mut st: Statement =
        serde_json::from_slice(&Base64::decode_vec(&env.payload).unwrap()).unwrap();
    st.subject[0].digest.sha256 = "00".repeat(32);
    let mut bad = env.clone();
    bad.payload = Base64::encode_string(&statement_bytes(&st).unwrap());
    assert!(err(&bad).contains("verifies with the provenance key"));
    // Another payload type (signed over the PAE, so the type is bound).
    let mut bad = env.clone();
    bad.payload_type = "application/json".into();
    assert!(err(&bad).contains("payloadType is application/json"));
    // A flipped signature bit, a truncated one, none at all.
    for sig in [
        {
            let mut s = Base64::decode_vec(&env.signatures[0].sig).unwrap();
            s[0] ^= 1;
            Base64::encode_string(&s)
        },
        Base64::encode_string(&[0u8; 63]),
        "not base64!".to_string(),
    ] {
        let mut bad = env.clone();
        bad.signatures[0].sig = sig;
        assert!(err(&bad).contains("verifies"), "{}", err(&bad));
    }
    let mut bad = env.clone();
    bad.signatures.clear();
    assert!(err(&bad).contains("(0 given)"));
    // The right signature, checked with another key; the keyid decides nothing.
    let other = signer(8).public_key();
    assert!(verify(&envelope_bytes(&env).unwrap(), &other).is_err());
    let mut relabelled = env.clone();
    relabelled.signatures[0].keyid = keyid(&other);
    assert!(verify(&envelope_bytes(&relabelled).unwrap(), &key).is_ok());
}

#[test]
fn verify_dir_checks_every_subject_beside_the_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("tiny.img"), b"image").unwrap();
    fs::create_dir(d.join("audit")).unwrap();
    fs::write(d.join("audit/report.md"), b"report").unwrap();
    fs::write(d.join("build.json"), b"{}").unwrap();
    let (_, env, s) = signed();
    let path = d.join("provenance.dsse.json");
    fs::write(&path, envelope_bytes(&env).unwrap()).unwrap();
    let r = verify_dir(&path, &s.public_key()).unwrap();
    assert_eq!((r.subjects, r.dependencies), (3, 3));
    assert_eq!(r.image, "tiny 1.0.0");
    // A changed artifact, then a missing one, are named.
    fs::write(d.join("tiny.img"), b"imagE").unwrap();
    let e = format!("{:#}", verify_dir(&path, &s.public_key()).unwrap_err());
    assert!(
        e.contains("provenance subject tiny.img") && e.contains("the provenance says"),
        "{e}"
    );
    fs::remove_file(d.join("tiny.img")).unwrap();
    let e = format!("{:#}", verify_dir(&path, &s.public_key()).unwrap_err());
    assert!(e.contains("missing beside the provenance"), "{e}");
    // A symlink in place of an artifact is not followed, even to a file
    // with the signed bytes.
    fs::write(d.join("elsewhere"), b"image").unwrap();
    std::os::unix::fs::symlink(d.join("elsewhere"), d.join("tiny.img")).unwrap();
    let e = format!("{:#}", verify_dir(&path, &s.public_key()).unwrap_err());
    assert!(
        e.contains("tiny.img is a symlink, not a regular file"),
        "{e}"
    );
    // A FIFO is refused at once rather than read (which would block
    // forever with no writer), and so is a directory.
    fs::remove_file(d.join("tiny.img")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.join("tiny.img"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (p, key) = (path.clone(), s.public_key());
    std::thread::spawn(move || tx.send(format!("{:#}", verify_dir(&p, &key).unwrap_err())));
    let e = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("verify_dir hung on a FIFO subject");
    assert!(e.contains("tiny.img is not a regular file"), "{e}");
    fs::remove_file(d.join("tiny.img")).unwrap();
    fs::create_dir(d.join("tiny.img")).unwrap();
    let e = format!("{:#}", verify_dir(&path, &s.public_key()).unwrap_err());
    assert!(e.contains("tiny.img is not a regular file"), "{e}");
}

/// The SBOM and the provenance name every locked package with the same
/// purl: one encoder, whatever the name, epoch or suite.
#[test]
fn the_sbom_and_the_provenance_name_each_locked_package_alike() {
    let mut locked = packages();
    locked.push(LockedPackage {
        name: "zlib1g".into(),
        version: "1:1.2.13.dfsg-1+b1".into(),
        architecture: "amd64".into(),
        sha256: "ab".repeat(32),
        size: 2,
    });
    for suite in [Some("bookworm"), None] {
        let (name, sha) = build_json();
        let st = statement(&record(), (name, &sha), &locked, suite);
        let prov: Vec<String> = st
            .predicate
            .build_definition
            .resolved_dependencies
            .iter()
            .filter_map(|d| d.uri.clone())
            .collect();
        let contents = crate::sbom::Contents {
            suite: suite.map(str::to_string),
            debs: locked
                .iter()
                .map(|p| {
                    let d = crate::sbom::DebPackage {
                        name: p.name.clone(),
                        version: p.version.clone(),
                        architecture: p.architecture.clone(),
                        source: p.name.clone(),
                        source_version: p.version.clone(),
                        maintainer: None,
                        license: None,
                    };
                    (d, Some(p.sha256.clone()))
                })
                .collect(),
            ..Default::default()
        };
        let doc = crate::sbom::document(&contents);
        let sbom: Vec<String> = doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str())
            .filter(|l| l.starts_with("pkg:deb/"))
            .map(str::to_string)
            .collect();
        assert_eq!(prov.len(), 2);
        assert_eq!(sbom, prov, "suite {suite:?}");
    }
}

#[test]
fn a_signed_subject_outside_the_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = signer(7);
    let mut st = signed().0;
    st.subject = vec![Subject {
        digest: Digests {
            sha256: "00".repeat(32),
        },
        name: "../outside".into(),
    }];
    let path = dir.path().join("p.dsse.json");
    fs::write(&path, envelope_bytes(&sign(&st, &s).unwrap()).unwrap()).unwrap();
    let e = format!("{:#}", verify_dir(&path, &s.public_key()).unwrap_err());
    assert!(
        e.contains("../outside: is not a plain relative path"),
        "{e}"
    );
}

#[test]
fn securesystemslib_verifies_the_envelope_and_refuses_a_tampered_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_, env, s) = signed();
    let good = dir.path().join("good.dsse.json");
    fs::write(&good, envelope_bytes(&env).unwrap()).unwrap();
    let (code, out) = python_verify(&good, &s.public_key());
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), format!("OK {PREDICATE_TYPE} 3"));
    // One payload byte changed: securesystemslib refuses it too.
    let mut payload = Base64::decode_vec(&env.payload).unwrap();
    payload[40] ^= 1;
    let mut bad = env.clone();
    bad.payload = Base64::encode_string(&payload);
    let tampered = dir.path().join("bad.dsse.json");
    fs::write(&tampered, envelope_bytes(&bad).unwrap()).unwrap();
    let (code, out) = python_verify(&tampered, &s.public_key());
    assert_eq!(code, 3, "{out}");
    assert!(out.starts_with("REFUSED"), "{out}");
    // And another key.
    let (code, out) = python_verify(&good, &signer(8).public_key());
    assert_eq!(code, 3, "{out}");
}
