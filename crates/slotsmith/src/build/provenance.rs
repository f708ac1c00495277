//! The record stage's provenance files: the provenance public key
//! (`provenance.pub.pem`, an artifact like the boot public key, so it is a
//! subject and in `build.json`) and the signed envelope
//! (`provenance.dsse.json`, written after `build.json`, whose artifacts
//! are its subjects; it cannot name itself, so only `SHA256SUMS` covers
//! it). The document and its signature are `crate::provenance`.

use std::path::Path;

use anyhow::Context;

use super::record::BuildRecord;
use super::{write_new, Hashed};
use crate::plan::Plan;
use crate::signing::BootSigner;

/// Writes the provenance public key; its hash for the record.
pub(super) fn public_key(plan: &Plan, signer: &BootSigner, out: &Path) -> anyhow::Result<Hashed> {
    let pem = slotsmith_sign::keys::public_key_pem(&signer.public_key);
    write_new(
        &out.join(&plan.outputs.provenance_public_key),
        pem.as_bytes(),
    )?;
    Ok(Hashed::of_bytes(pem.as_bytes()))
}

/// Signs and writes the provenance of `record` (whose `build.json` has
/// sha256 `build_json_sha256`); the envelope's hex sha256 for
/// `SHA256SUMS`.
pub(super) fn envelope(
    plan: &Plan,
    record: &BuildRecord,
    build_json_sha256: &str,
    signer: &BootSigner,
    out: &Path,
) -> anyhow::Result<String> {
    let packages = plan
        .base
        .lock
        .as_ref()
        .map(|l| l.packages.as_slice())
        .unwrap_or_default();
    let statement = crate::provenance::statement(
        record,
        (&plan.outputs.build_json, build_json_sha256),
        packages,
        super::sbom::suite(plan),
    );
    let envelope = crate::provenance::sign(&statement, signer.signer.as_ref())
        .with_context(|| format!("signing {}", plan.outputs.provenance))?;
    let bytes = crate::provenance::envelope_bytes(&envelope)?;
    write_new(&out.join(&plan.outputs.provenance), &bytes)?;
    Ok(hex::encode(Hashed::of_bytes(&bytes).sha256))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Fixture, Setup};
    use std::fs;

    /// The fixture build's real provenance: our verifier and
    /// securesystemslib accept it; it names every artifact of build.json
    /// and build.json; SHA256SUMS covers the envelope; a second record
    /// stage gives the same bytes.
    #[test]
    fn the_fixture_builds_provenance_verifies_independently() {
        let mut fx = Fixture::new(Setup::default().policies());
        let (made, record) = fx.staged();
        let out = fx.out.clone();
        let path = out.join(&fx.plan.outputs.provenance);
        let key = made.provenance_signer.public_key;
        assert_ne!(key, made.boot_signer.public_key, "a role of its own");
        let report = crate::provenance::verify_dir(&path, &key).unwrap();
        assert_eq!(report.subjects, record.artifacts.len() + 1);
        assert_eq!(report.plan_sha256, fx.plan.hash());
        let names: Vec<&str> = record.artifacts.iter().map(|a| a.name.as_str()).collect();
        assert!(names.contains(&fx.plan.outputs.provenance_public_key.as_str()));
        assert!(!names.contains(&fx.plan.outputs.provenance.as_str()));
        // The published public key is the signer's.
        let published = slotsmith_sign::keys::load_verifying_key(
            &out.join(&fx.plan.outputs.provenance_public_key),
        )
        .unwrap();
        assert_eq!(published, key);
        // The inputs build.json records are its resolved dependencies.
        let st = crate::provenance::verify(&fs::read(&path).unwrap(), &key).unwrap();
        let deps: Vec<&str> = st
            .predicate
            .build_definition
            .resolved_dependencies
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        let inputs: Vec<&str> = record.inputs.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(deps, inputs);
        assert!(deps.contains(&"images/tiny.yaml"), "{deps:?}");
        let sums = fs::read_to_string(out.join(&fx.plan.outputs.sums)).unwrap();
        let sha = hex::encode(super::super::testkit::sha256_of(&path));
        assert!(
            sums.contains(&format!("{sha}  provenance.dsse.json\n")),
            "{sums}"
        );
        // Independent: securesystemslib's DSSE verifier.
        let (code, said) = crate::provenance::tests::python_verify(&path, &key);
        assert_eq!(code, 0, "{said}");
        assert_eq!(
            said.trim(),
            format!("OK https://slsa.dev/provenance/v1 {}", report.subjects)
        );
        // Deterministic: the same record and key give the same envelope.
        let json = fs::read(out.join(&fx.plan.outputs.build_json)).unwrap();
        let again = tempfile::tempdir().unwrap();
        super::envelope(
            &fx.plan,
            &record,
            &hex::encode(super::Hashed::of_bytes(&json).sha256),
            &made.provenance_signer,
            again.path(),
        )
        .unwrap();
        assert_eq!(
            fs::read(again.path().join(&fx.plan.outputs.provenance)).unwrap(),
            fs::read(&path).unwrap()
        );
        // A changed artifact is named.
        let img = out.join(&fx.plan.outputs.image);
        let mut bytes = fs::read(&img).unwrap();
        bytes[0] ^= 1;
        fs::write(&img, bytes).unwrap();
        let err = format!(
            "{:#}",
            crate::provenance::verify_dir(&path, &key).unwrap_err()
        );
        assert!(err.contains("tiny.img"), "{err}");
    }
}
