//! The software bill of materials (`sbom.spdx.json`): an SPDX 2.3 JSON
//! document of what an image contains and what built it. Pure: the build
//! stage (`build/sbom.rs`) gathers [`Contents`] from the image and the
//! plan; [`encode`] turns them into bytes, so the document is tested in
//! memory and checked by `pyspdxtools`, an implementation nobody here
//! wrote.
//!
//! The document says: the image (DESCRIBES), which CONTAINS every Debian
//! package installed (name, version, architecture, source package, the
//! DEP-5 licence, a purl, the `.deb`'s sha256 when the base is locked),
//! the kernel, and every file the layers and policies add (SHA1, which
//! SPDX 2.3 requires of files, and sha256); slotsmith is its BUILD_TOOL_OF
//! and DEPENDS_ON each crate locked in its `Cargo.lock`.
//!
//! Deterministic: the creation time is `SOURCE_DATE_EPOCH`, the namespace
//! is derived from a hash of the rest of the document (no random UUID),
//! and every list is sorted. Every value goes through serde_json; SPDX ids
//! are sanitised to `SPDXRef-[A-Za-z0-9.-]+` and made unique.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256};

pub mod cargo;
pub mod debian;
pub mod license;

pub use debian::DebPackage;

/// The output's name in `out/<name>/`.
pub const OUTPUT: &str = "sbom.spdx.json";

/// Everything the document lists.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    /// The image's name.
    pub image: String,
    /// Its version.
    pub version: String,
    /// `SOURCE_DATE_EPOCH`: the document's creation time.
    pub epoch: u64,
    /// The Debian suite (`bookworm`), for the purls' `distro`.
    pub suite: Option<String>,
    /// Installed Debian packages, each with its `.deb`'s sha256 when known.
    pub debs: Vec<(DebPackage, Option<String>)>,
    /// The kernel, when the image has one.
    pub kernel: Option<Kernel>,
    /// Files the layers and policies add.
    pub files: Vec<AddedFile>,
    /// The build tool.
    pub tool: Tool,
}

/// The kernel the image boots.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Its file name among the outputs (`vmlinuz`).
    pub file: String,
    /// Its version, when the rootfs names it (`/boot/vmlinuz-<version>`).
    pub version: Option<String>,
    /// sha256 of the file.
    pub sha256: String,
}

/// A file a layer or a policy adds to the rootfs.
#[derive(Debug, Clone)]
pub struct AddedFile {
    /// Absolute path in the rootfs.
    pub path: String,
    /// Who added it (`layer meta-demo`, `hardening policies`).
    pub origin: String,
    /// SHA1 of the contents (hex).
    pub sha1: String,
    /// sha256 of the contents (hex).
    pub sha256: String,
}

/// The build tool and the crates it was built from.
#[derive(Debug, Clone, Default)]
pub struct Tool {
    /// slotsmith's version.
    pub version: String,
    /// The crates locked in its `Cargo.lock`.
    pub crates: Vec<cargo::Crate>,
}

/// The document as pretty JSON with a final newline.
pub fn encode(c: &Contents) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(&document(c)).expect("a JSON value serialises");
    bytes.push(b'\n');
    bytes
}

/// The document as a JSON value.
pub fn document(c: &Contents) -> Value {
    let mut ids = Ids::default();
    let image_id = ids.take("image", &c.image);
    let mut packages = Vec::new();
    let mut rels = vec![rel("SPDXRef-DOCUMENT", "DESCRIBES", &image_id)];
    let mut refs: BTreeMap<String, (String, Option<String>, Vec<String>)> = BTreeMap::new();

    let mut image = json!({
        "SPDXID": image_id,
        "name": c.image,
        "versionInfo": c.version,
        "downloadLocation": "NOASSERTION",
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "filesAnalyzed": !c.files.is_empty(),
        "comment": "The rootfs of the image: its Debian packages, kernel and the files its layers and policies add.",
    });
    if !c.files.is_empty() {
        // SPDX 7.9: SHA1 over the sorted SHA1s of the package's files.
        let mut sha1s: Vec<&str> = c.files.iter().map(|f| f.sha1.as_str()).collect();
        sha1s.sort_unstable();
        image["packageVerificationCode"] = json!({
            "packageVerificationCodeValue": hex::encode(Sha1::digest(sha1s.concat().as_bytes())),
        });
    }
    packages.push(image);

    if let Some(k) = &c.kernel {
        let id = ids.take("kernel", &k.file);
        let mut p = json!({
            "SPDXID": id,
            "name": "linux",
            "packageFileName": k.file,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "checksums": [sha256(&k.sha256)],
            "comment": "The kernel the image boots.",
        });
        if let Some(v) = &k.version {
            p["versionInfo"] = json!(v);
        }
        packages.push(p);
        rels.push(rel(&image_id, "CONTAINS", &id));
    }

    let tool_id = ids.take("tool", "slotsmith");
    packages.push(json!({
        "SPDXID": tool_id,
        "name": "slotsmith",
        "versionInfo": c.tool.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "APPLICATION",
        "comment": "The tool that built the image.",
    }));
    rels.push(rel(&tool_id, "BUILD_TOOL_OF", &image_id));
    for k in &c.tool.crates {
        let id = ids.take("crate", &format!("{}-{}", k.name, k.version));
        let mut p = json!({
            "SPDXID": id,
            "name": k.name,
            "versionInfo": k.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [purl(&format!("pkg:cargo/{}@{}", pct(&k.name), pct(&k.version)))],
        });
        if let Some(sum) = &k.checksum {
            p["checksums"] = json!([sha256(sum)]);
        }
        packages.push(p);
        rels.push(rel(&tool_id, "DEPENDS_ON", &id));
    }

    for (d, deb_sha256) in &c.debs {
        let id = ids.take("deb", &format!("{}-{}", d.name, d.architecture));
        let mut purl_s = format!(
            "pkg:deb/debian/{}@{}?arch={}",
            pct(&d.name),
            pct(&d.version),
            pct(&d.architecture)
        );
        if let Some(s) = &c.suite {
            purl_s.push_str(&format!("&distro={}", pct(&format!("debian-{s}"))));
        }
        let declared = match &d.license {
            Some(l) => {
                let e = license::expression(&l.synopsis);
                for (rid, name) in e.refs {
                    let entry = refs
                        .entry(rid)
                        .or_insert_with(|| (name.clone(), None, Vec::new()));
                    if entry.1.is_none() {
                        entry.1 = l.texts.get(&name).cloned();
                    }
                    entry.2.push(d.name.clone());
                }
                e.spdx
            }
            None => "NOASSERTION".into(),
        };
        let mut p = json!({
            "SPDXID": id,
            "name": d.name,
            "versionInfo": d.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared,
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!(
                "built from the Debian source package {} {}", d.source, d.source_version
            ),
            "externalRefs": [purl(&purl_s)],
            "comment": format!("architecture {}", d.architecture),
        });
        if let Some(sum) = deb_sha256 {
            p["packageFileName"] = json!(locked_file_name(d));
            p["checksums"] = json!([sha256(sum)]);
        }
        packages.push(p);
        rels.push(rel(&image_id, "CONTAINS", &id));
    }

    let mut files: Vec<&AddedFile> = c.files.iter().collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let files: Vec<Value> = files
        .into_iter()
        .map(|f| {
            let id = ids.take("file", f.path.trim_start_matches('/'));
            rels.push(rel(&image_id, "CONTAINS", &id));
            json!({
                "SPDXID": id,
                "fileName": format!(".{}", f.path),
                "checksums": [
                    {"algorithm": "SHA1", "checksumValue": f.sha1},
                    sha256(&f.sha256),
                ],
                "licenseConcluded": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "comment": format!("added by {}", f.origin),
            })
        })
        .collect();

    let extracted: Vec<Value> = refs
        .into_iter()
        .map(|(id, (name, text, users))| {
            let text = text.unwrap_or_else(|| {
                format!("The licence called \"{name}\" in the package's copyright file.")
            });
            json!({
                "licenseId": id,
                "name": name,
                "extractedText": text,
                "comment": format!(
                    "named by the machine-readable copyright files of {}",
                    users.join(", ")
                ),
            })
        })
        .collect();

    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", c.image, c.version),
        "documentNamespace": "",
        "creationInfo": {
            "created": rfc3339(c.epoch),
            "creators": [format!("Tool: slotsmith-{}", c.tool.version)],
        },
        "documentDescribes": [image_id],
        "packages": packages,
        "files": files,
        "hasExtractedLicensingInfos": extracted,
        "relationships": rels,
    });
    if doc["files"].as_array().is_some_and(Vec::is_empty) {
        doc.as_object_mut().map(|o| o.remove("files"));
    }
    if doc["hasExtractedLicensingInfos"]
        .as_array()
        .is_some_and(Vec::is_empty)
    {
        doc.as_object_mut()
            .map(|o| o.remove("hasExtractedLicensingInfos"));
    }
    // The namespace must be unique per document, and the same for the same
    // contents: a hash of everything else.
    let body = serde_json::to_vec(&doc).expect("a JSON value serialises");
    doc["documentNamespace"] = json!(format!(
        "https://slotsmith.invalid/spdx/{}/{}/{}",
        pct(&c.image),
        pct(&c.version),
        hex::encode(Sha256::digest(&body))
    ));
    doc
}

/// The `.deb`'s file name as a locked base's repository has it.
fn locked_file_name(d: &DebPackage) -> String {
    crate::lockfile::LockedPackage {
        name: d.name.clone(),
        version: d.version.clone(),
        architecture: d.architecture.clone(),
        sha256: String::new(),
        size: 0,
    }
    .deb_file_name()
}

fn rel(a: &str, kind: &str, b: &str) -> Value {
    json!({"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b})
}

fn sha256(hex: &str) -> Value {
    json!({"algorithm": "SHA256", "checksumValue": hex})
}

fn purl(locator: &str) -> Value {
    json!({
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": locator,
    })
}

/// Percent-encoding for purl components: everything but ASCII letters,
/// digits, `. - _ ~` and `:` (which the purl spec leaves unencoded, as in
/// the epoch of `1:2.4-1`) is encoded, `+` included.
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Unique SPDX ids from arbitrary names: `SPDXRef-<kind>-<name>` with
/// every other character as `-`, and `-<n>` on a clash.
#[derive(Default)]
struct Ids(BTreeSet<String>);

impl Ids {
    fn take(&mut self, kind: &str, name: &str) -> String {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let base = format!("SPDXRef-{kind}-{clean}");
        let mut id = base.clone();
        let mut n = 2u64;
        while !self.0.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` for seconds since the epoch (UTC).
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
