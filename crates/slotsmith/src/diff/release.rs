//! The release's identity and trust anchors, compared: image, version,
//! plan and lock hashes (from `build.json`), the security version and each
//! slot's kernel command line (from its signed boot manifest, verified with
//! the build's own boot key, so what is shown is what the device checks),
//! and the fingerprints of the keys and certificates the build publishes.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::Serialize;
use sha2::{Digest, Sha256};
use slotsmith_yaml::escape::shown_path;

use super::record::{read_artifact, Record};

/// The public keys and certificates a build may publish, with their role,
/// in the order a reviewer reads them. Also the reviewer's index's list.
pub const KEY_FILES: &[(&str, &str)] = &[
    (
        "boot.pub.pem",
        "boot key (Ed25519): verifies each slot's signed boot manifest",
    ),
    (
        "update.cert.pem",
        "update signing certificate: SWUpdate verifies every .swu with it",
    ),
    (
        "secureboot/PK.pem",
        "Secure Boot platform key (PK) certificate",
    ),
    (
        "secureboot/KEK.pem",
        "Secure Boot key exchange key (KEK) certificate",
    ),
    (
        "secureboot/db.pem",
        "Secure Boot signature database (db) certificate: signs the loader and the UKIs",
    ),
    (
        "provenance.pub.pem",
        "provenance key: verifies the signed provenance (DSSE)",
    ),
];

/// Largest key, certificate or manifest file read.
const MAX_SMALL: u64 = 1 << 20;

/// What one build says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Scalar facts by name (`version`, `security_version`, ...).
    pub fields: BTreeMap<&'static str, Option<String>>,
    /// Slot -> kernel command line, as signed.
    pub cmdline: BTreeMap<String, String>,
    /// Key file -> fingerprint.
    pub keys: BTreeMap<String, String>,
}

/// The sha256 of each PEM block's DER in `text` (`sha256:<hex>`, space
/// separated for a chain), or of the bytes when they are not PEM.
pub fn pem_fingerprint(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut prints = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            body = Some(String::new());
        } else if line.starts_with("-----END ") {
            if let Some(b64) = body.take() {
                use base64ct::Encoding;
                if let Ok(der) = base64ct::Base64::decode_vec(&b64) {
                    prints.push(format!("sha256:{}", hex::encode(Sha256::digest(der))));
                }
            }
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    if prints.is_empty() {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    } else {
        prints.join(" ")
    }
}

/// Reads the facts of the build in `dir` whose record is `r`. Every file
/// is an artifact checked against the record (`read_artifact`); the
/// security version and each command line are the signed manifests', each
/// verified with the build's boot key (which must be the one the record
/// names), and every manifest must carry the recorded security version.
pub fn facts(dir: &Path, r: &Record) -> anyhow::Result<Facts> {
    let key_bytes = read_artifact(dir, r, "boot.pub.pem", MAX_SMALL)?;
    let key_file = dir.join("boot.pub.pem");
    let key = slotsmith_sign::parse_verifying_key(&key_bytes, &key_file)?;
    if slotsmith_sign::fingerprint(&key) != r.boot_key {
        bail!(
            "{} is not the boot key build.json names ({})",
            shown_path(&key_file),
            slotsmith_yaml::escape::shown(&r.boot_key)
        );
    }
    let mut keys = BTreeMap::new();
    keys.insert("boot.pub.pem".to_string(), r.boot_key.clone());
    for (file, _) in KEY_FILES.iter().skip(1) {
        if r.has(file) {
            let bytes = read_artifact(dir, r, file, MAX_SMALL)?;
            keys.insert(file.to_string(), pem_fingerprint(&bytes));
        }
    }

    let mut cmdline = BTreeMap::new();
    let mut security_version = None;
    for s in &r.slots {
        let name = crate::layout::manifest_output(&s.slot);
        if !r.has(&name) {
            continue;
        }
        let m = dir.join(&name);
        let bytes = read_artifact(dir, r, &name, MAX_SMALL)?;
        let sig_bytes = read_artifact(dir, r, &crate::layout::signature_output(&s.slot), 4 << 10)?;
        let manifest = slotsmith_sign::verify_manifest(&bytes, &sig_bytes, &key)
            .with_context(|| format!("verifying {}", shown_path(&m)))?;
        if manifest.security_version != r.security_version {
            bail!(
                "{} carries security version {}, but build.json records {}",
                shown_path(&m),
                manifest.security_version,
                r.security_version
            );
        }
        security_version = Some(manifest.security_version);
        cmdline.insert(s.slot.clone(), manifest.cmdline);
    }
    // Shown only as signed: a build without a manifest has none to show.
    let security_version = security_version.with_context(|| {
        format!(
            "{} lists no signed boot manifest to take the security version from",
            shown_path(&dir.join("build.json"))
        )
    })?;
    let mut fields = BTreeMap::new();
    fields.insert("image", Some(r.image.clone()));
    fields.insert("version", Some(r.version.clone()));
    fields.insert("security_version", Some(security_version.to_string()));
    fields.insert("plan_sha256", Some(r.plan_sha256.clone()));
    fields.insert("lock_sha256", r.lock_sha256.clone());
    fields.insert("boot_key", Some(r.boot_key.clone()));
    Ok(Facts {
        fields,
        cmdline,
        keys,
    })
}

/// A fact that differs (a side without it is `null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The fact.
    pub field: String,
    /// Old value.
    pub old: Option<String>,
    /// New value.
    pub new: Option<String>,
}

/// A slot's command line that differs, with the arguments it gained and
/// lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CmdlineChange {
    /// `a` or `b`.
    pub slot: String,
    /// Old command line.
    pub old: Option<String>,
    /// New command line.
    pub new: Option<String>,
    /// Arguments only the new line has.
    pub added: Vec<String>,
    /// Arguments only the old line had.
    pub removed: Vec<String>,
}

/// A key or certificate that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyChange {
    /// Its file in the output directory.
    pub file: String,
    /// What it is for.
    pub role: String,
    /// Old fingerprint.
    pub old: Option<String>,
    /// New fingerprint.
    pub new: Option<String>,
}

/// The release section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReleaseDiff {
    /// Facts that differ.
    pub fields: Vec<FieldChange>,
    /// Command lines that differ.
    pub cmdline: Vec<CmdlineChange>,
    /// Keys and certificates that differ.
    pub keys: Vec<KeyChange>,
}

impl ReleaseDiff {
    /// Whether anything differs.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.cmdline.is_empty() && self.keys.is_empty()
    }
}

fn union<'a, V>(a: &'a BTreeMap<String, V>, b: &'a BTreeMap<String, V>) -> Vec<&'a String> {
    let mut k: Vec<&String> = a.keys().chain(b.keys()).collect();
    k.sort();
    k.dedup();
    k
}

/// Compares two builds' facts.
pub fn diff(old: &Facts, new: &Facts) -> ReleaseDiff {
    let mut d = ReleaseDiff::default();
    for (field, o) in &old.fields {
        let n = new.fields.get(field).cloned().flatten();
        if *o != n {
            d.fields.push(FieldChange {
                field: field.to_string(),
                old: o.clone(),
                new: n,
            });
        }
    }
    for slot in union(&old.cmdline, &new.cmdline) {
        let (o, n) = (old.cmdline.get(slot), new.cmdline.get(slot));
        if o != n {
            let args = |l: Option<&String>| -> Vec<String> {
                l.map(|l| l.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default()
            };
            let (oa, na) = (args(o), args(n));
            d.cmdline.push(CmdlineChange {
                slot: slot.clone(),
                old: o.cloned(),
                new: n.cloned(),
                added: na.iter().filter(|a| !oa.contains(a)).cloned().collect(),
                removed: oa.iter().filter(|a| !na.contains(a)).cloned().collect(),
            });
        }
    }
    for (file, role) in KEY_FILES {
        let (o, n) = (old.keys.get(*file), new.keys.get(*file));
        if o != n {
            d.keys.push(KeyChange {
                file: file.to_string(),
                role: role.to_string(),
                old: o.cloned(),
                new: n.cloned(),
            });
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(sv: &str, cmd: &str, cert: &str) -> Facts {
        Facts {
            fields: [
                ("version", Some("1.0".to_string())),
                ("security_version", Some(sv.to_string())),
                ("lock_sha256", None),
            ]
            .into_iter()
            .collect(),
            cmdline: [("a".to_string(), cmd.to_string())].into_iter().collect(),
            keys: [("update.cert.pem".to_string(), cert.to_string())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn security_version_cmdline_arguments_and_certificates_are_compared() {
        let old = facts("1", "console=ttyS0 quiet slotsmith.slot=a ro", "sha256:aa");
        let new = facts(
            "2",
            "console=ttyS0 lockdown=integrity slotsmith.slot=a ro",
            "sha256:bb",
        );
        let d = diff(&old, &new);
        assert_eq!(
            d.fields,
            [FieldChange {
                field: "security_version".into(),
                old: Some("1".into()),
                new: Some("2".into())
            }]
        );
        assert_eq!(d.cmdline.len(), 1);
        assert_eq!(d.cmdline[0].added, ["lockdown=integrity"]);
        assert_eq!(d.cmdline[0].removed, ["quiet"]);
        assert_eq!(d.keys.len(), 1);
        assert_eq!(d.keys[0].file, "update.cert.pem");
        assert!(d.keys[0].role.contains("SWUpdate"));
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn a_pem_fingerprint_is_the_sha256_of_its_der() {
        let der = b"\x30\x03\x02\x01\x05";
        use base64ct::Encoding;
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64ct::Base64::encode_string(der)
        );
        let want = format!("sha256:{}", hex::encode(Sha256::digest(der)));
        assert_eq!(pem_fingerprint(pem.as_bytes()), want);
        assert_eq!(
            pem_fingerprint(format!("{pem}{pem}").as_bytes()),
            format!("{want} {want}")
        );
    }
}
