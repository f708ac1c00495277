//! `out/<name>/README.md`: the reviewer's index. A security reviewer (an
//! FDA premarket submission, an IEC 62443 assessment) opens one file and
//! finds every piece of evidence the directory holds, linked: the SBOM, the
//! signed provenance, the hardening audit with its control map, the build
//! record, the checksums, the fingerprints and roles of every public key
//! and certificate, and the diff against the previous release (linked when
//! the build was given one with `--previous`, otherwise how to make it).
//!
//! Written by the record stage from the plan's output list (so it links
//! exactly what the build publishes) and the published key files, before
//! `build.json`: it is itself an artifact, listed there and in
//! `SHA256SUMS`, and deterministic (no date, no host path).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use crate::diff::markdown::cell;
use crate::diff::release::{pem_fingerprint, KEY_FILES};

/// Its name in the output directory.
pub const OUTPUT: &str = "README.md";

/// The release diff, when a build is given the previous release.
pub const RELEASE_DIFF: &str = crate::plan::previous::MARKDOWN;
/// Its JSON form.
pub const RELEASE_DIFF_JSON: &str = crate::plan::previous::JSON;

/// Largest key or certificate file read.
const MAX_KEY_FILE: u64 = 1 << 20;

/// What the index says about the build.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Image name.
    pub image: String,
    /// Image version.
    pub version: String,
    /// Anti-rollback counter.
    pub security_version: u64,
    /// Every file of the output directory (the plan's list).
    pub outputs: BTreeSet<String>,
    /// The golden disk image.
    pub disk_image: String,
    /// Its block map.
    pub bmap: String,
    /// The `.swu`.
    pub swu: String,
    /// The rootfs image.
    pub rootfs: String,
    /// The previous release the build was compared with (`build
    /// --previous`): image, version and the sha256 of its `build.json`.
    pub previous: Option<(String, String, String)>,
}

/// One public key or certificate with its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrint {
    /// Its file in the output directory.
    pub file: String,
    /// What it is for.
    pub role: String,
    /// `sha256:<hex>`.
    pub fingerprint: String,
}

/// The fingerprints of the key files among `outputs`: the boot key as
/// `build.json` records it (sha256 of the raw Ed25519 key), every other
/// one as the sha256 of its DER (`openssl x509 -fingerprint -sha256`
/// without colons). A file listed but not yet written is left out.
pub fn key_prints(
    out: &Path,
    outputs: &BTreeSet<String>,
    boot_fingerprint: &str,
) -> anyhow::Result<Vec<KeyPrint>> {
    let mut v = Vec::new();
    for (file, role) in KEY_FILES {
        if !outputs.contains(*file) {
            continue;
        }
        let fingerprint = if *file == "boot.pub.pem" {
            boot_fingerprint.to_string()
        } else {
            match crate::diff::record::read_below(out, file, MAX_KEY_FILE)? {
                Some(bytes) => pem_fingerprint(&bytes),
                None => continue,
            }
        };
        v.push(KeyPrint {
            file: file.to_string(),
            role: role.to_string(),
            fingerprint,
        });
    }
    Ok(v)
}

/// The index of the build `plan` describes, whose outputs are in `out`
/// (the key files already written); `boot_fingerprint` as `build.json`
/// records it.
pub fn index(
    plan: &crate::plan::Plan,
    out: &Path,
    boot_fingerprint: &str,
) -> anyhow::Result<String> {
    let f = Facts {
        image: plan.image.name.clone(),
        version: plan.image.version.clone(),
        security_version: plan.boot.security_version,
        outputs: plan.outputs.files.iter().map(|o| o.name.clone()).collect(),
        disk_image: plan.outputs.image.clone(),
        bmap: plan.outputs.bmap.clone(),
        swu: plan.update.file.clone(),
        rootfs: plan.outputs.rootfs.clone(),
        previous: plan.previous.as_ref().map(|p| {
            (
                p.image.clone(),
                p.version.clone(),
                p.build_json_sha256.clone(),
            )
        }),
    };
    let keys = key_prints(out, &f.outputs, boot_fingerprint)?;
    Ok(render(&f, &keys))
}

/// A Markdown link to `file`, or its name alone when the build does not
/// publish it.
fn link(f: &Facts, file: &str) -> Option<String> {
    f.outputs
        .contains(file)
        .then(|| format!("[{}]({})", cell(file), file))
}

/// The index.
pub fn render(f: &Facts, keys: &[KeyPrint]) -> String {
    let mut s = String::new();
    let (image, version) = (cell(&f.image), cell(&f.version));
    let _ = writeln!(s, "# Reviewer's index: {image} {version}\n");
    let _ = writeln!(
        s,
        "This directory is one build of the image {image}, version {version}, security version {}. \
Every file in it is listed with its sha256 in `SHA256SUMS`, and every file but `SHA256SUMS` and \
`build.json` also in `build.json`; this index is one of them. The table links each piece of evidence \
present here.\n",
        f.security_version
    );
    s.push_str("## Evidence\n\n| Evidence | Files | What it shows |\n|---|---|---|\n");
    if let Some(l) = link(f, "sbom.spdx.json") {
        let _ = writeln!(
            s,
            "| Software bill of materials | {l} | SPDX 2.3: every Debian package of the rootfs (version, \
source package, supplier, licence, purl), every file the layers and policies add (sha256), the kernel, \
the updater the build installs and the build tool. The same document travels inside the signed `.swu`. Validate with `pyspdxtools -i sbom.spdx.json`. |"
        );
    }
    if let (Some(env), Some(key)) = (
        link(f, "provenance.dsse.json"),
        link(f, "provenance.pub.pem"),
    ) {
        let _ = writeln!(
            s,
            "| Signed provenance | {env}, {key} | An in-toto statement with a SLSA provenance predicate in a \
DSSE envelope: the inputs (image file, layers, policies, base) with hashes, the build parameters, and every \
output with its sha256, signed with the provenance key. |"
        );
    }
    if let Some(l) = link(f, "audit/report.md") {
        let others: Vec<String> = ["audit/report.json", "audit/report.sarif"]
            .iter()
            .filter_map(|r| link(f, r))
            .collect();
        let _ = writeln!(
            s,
            "| Hardening audit | {l} (control map: [Controls](audit/report.md#controls)), {} | Every \
hardening rule checked against the rootfs image as shipped: status, evidence (path, sha256, effective and \
expected value), waivers with justification and approver, and the rules per control (NIST IR 8259A, \
SP 800-53, IEC 62443-4-2, FDA premarket, CIS). JSON for tools, SARIF for CI. |",
            others.join(", ")
        );
    } else {
        s.push_str("| Hardening audit | (none) | The image names no policies, so the build ran no audit. |\n");
    }
    let _ = writeln!(
        s,
        "| Build record | [build.json](build.json) | Image, version, plan hash, source date epoch, every \
artifact with sha256 and size, the partition table, each slot's dm-verity parameters, the boot key \
fingerprint, the security version, every input file by hash and the lock hash. |"
    );
    let _ = writeln!(
        s,
        "| Checksums | [SHA256SUMS](SHA256SUMS) | The sha256 of every other file here: \
`sha256sum -c --strict SHA256SUMS`. |"
    );
    match (
        link(f, RELEASE_DIFF),
        link(f, RELEASE_DIFF_JSON),
        &f.previous,
    ) {
        (Some(md), Some(json), Some((image, version, sha256))) => {
            let _ = writeln!(
                s,
                "| Changes since the previous release | {md}, {json} | Compared with the previous release, {} {} (its `build.json` has sha256 `{}`): packages, rootfs files (mode, owner, sha256), policy rules and waivers, kernel command line, keys and security version. Each file read from either build was checked against that build's record first. |",
                cell(image),
                cell(version),
                cell(sha256)
            );
        }
        _ => {
            let _ = writeln!(
                s,
                "| Changes since the previous release | (run it) | `cargo xtask diff PREVIOUS_OUT THIS_OUT` \
compares this directory with the previous release's: packages, rootfs files (mode, owner, sha256), policy \
rules and waivers, kernel command line, keys and security version; `--json` for tools. \
`cargo xtask build --previous PREVIOUS_OUT` publishes it here. |"
            );
        }
    }

    s.push_str("\n## Keys and certificates\n\nOnly public keys and certificates are published; private keys never reach this directory.\n\n| File | Role | Fingerprint |\n|---|---|---|\n");
    for k in keys {
        let _ = writeln!(
            s,
            "| [{}]({}) | {} | `{}` |",
            cell(&k.file),
            k.file,
            cell(&k.role),
            cell(&k.fingerprint)
        );
    }
    s.push_str(
        "\nThe boot key's fingerprint is the sha256 of the raw 32-byte Ed25519 key, as `build.json` records it \
(`boot_key`); every other fingerprint is the sha256 of the DER encoding, as \
`openssl x509 -noout -fingerprint -sha256` prints for a certificate.\n",
    );

    s.push_str("\n## Artifacts\n\n| Artifact | File |\n|---|---|\n");
    for (what, file) in [
        ("Golden disk image (manufacturing)", &f.disk_image),
        ("Its block map (bmap 2.0)", &f.bmap),
        ("Signed update (SWUpdate)", &f.swu),
        ("Root filesystem image", &f.rootfs),
    ] {
        if let Some(l) = link(f, file) {
            let _ = writeln!(s, "| {what} | {l} |");
        }
    }
    let _ = writeln!(
        s,
        "\n## Checking this release\n\n```\nsha256sum -c --strict SHA256SUMS\n\
cargo xtask verify {} --boot-key boot.pub.pem\ncargo xtask audit .\n```",
        f.disk_image
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(outputs: &[&str]) -> Facts {
        Facts {
            image: "demo".into(),
            version: "1.0.0".into(),
            security_version: 3,
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            disk_image: "demo.img".into(),
            bmap: "demo.img.bmap".into(),
            swu: "demo-1.0.0.swu".into(),
            rootfs: "rootfs.squashfs".into(),
            previous: None,
        }
    }

    #[test]
    fn the_index_links_exactly_the_evidence_present_with_key_roles() {
        let dir = tempfile::tempdir().unwrap();
        let der = b"\x30\x03\x02\x01\x07";
        use base64ct::Encoding;
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64ct::Base64::encode_string(der)
        );
        std::fs::write(dir.path().join("update.cert.pem"), &pem).unwrap();
        let all = [
            "SHA256SUMS",
            "build.json",
            "boot.pub.pem",
            "update.cert.pem",
            "sbom.spdx.json",
            "provenance.dsse.json",
            "provenance.pub.pem",
            "audit/report.md",
            "audit/report.json",
            "audit/report.sarif",
            "demo.img",
            "demo.img.bmap",
            "demo-1.0.0.swu",
            "rootfs.squashfs",
            "README.md",
        ];
        let f = facts(&all);
        let keys = key_prints(dir.path(), &f.outputs, "sha256:bootprint").unwrap();
        // provenance.pub.pem is listed but not written: left out, not invented.
        assert_eq!(
            keys.iter().map(|k| k.file.as_str()).collect::<Vec<_>>(),
            ["boot.pub.pem", "update.cert.pem"]
        );
        use sha2::Digest;
        assert_eq!(
            keys[1].fingerprint,
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(der)))
        );
        let md = render(&f, &keys);
        assert!(md.starts_with("# Reviewer's index: demo 1.0.0\n"), "{md}");
        for l in [
            "[sbom.spdx.json](sbom.spdx.json)",
            "[provenance.dsse.json](provenance.dsse.json), [provenance.pub.pem](provenance.pub.pem)",
            "[audit/report.md](audit/report.md) (control map: [Controls](audit/report.md#controls))",
            "[build.json](build.json)",
            "[SHA256SUMS](SHA256SUMS)",
            "| [boot.pub.pem](boot.pub.pem) | boot key",
            "`sha256:bootprint`",
            "| Golden disk image (manufacturing) | [demo.img](demo.img) |",
            "`cargo xtask diff PREVIOUS_OUT THIS_OUT`",
        ] {
            assert!(md.contains(l), "{l} missing from\n{md}");
        }
        assert!(md.contains(&keys[1].fingerprint));
        assert!(md.contains("security version 3"));
        // Deterministic.
        assert_eq!(md, render(&f, &keys));

        // A build without policies, SBOM or provenance: no dead links.
        let f = facts(&["SHA256SUMS", "build.json", "boot.pub.pem", "demo.img"]);
        let md = render(&f, &key_prints(dir.path(), &f.outputs, "sha256:b").unwrap());
        for absent in [
            "sbom.spdx.json",
            "provenance",
            "(audit/report.md)",
            "demo.img.bmap",
        ] {
            assert!(!md.contains(absent), "{absent} in\n{md}");
        }
        assert!(md.contains("| Hardening audit | (none) |"), "{md}");
        // With the previous release's diff published, both forms are
        // linked and the previous release is named.
        let mut f = facts(&["SHA256SUMS", "build.json", RELEASE_DIFF, RELEASE_DIFF_JSON]);
        f.previous = Some(("demo".into(), "0.9.0".into(), "ab12".into()));
        let md = render(&f, &[]);
        assert!(
            md.contains(
                "| Changes since the previous release | [release-diff.md](release-diff.md), \
[release-diff.json](release-diff.json) | Compared with the previous release, demo 0.9.0 (its `build.json` \
has sha256 `ab12`)"
            ),
            "{md}"
        );
        assert!(!md.contains("PREVIOUS_OUT"), "{md}");
    }
}
