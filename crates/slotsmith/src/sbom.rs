//! The software bill of materials (`sbom.spdx.json`): an SPDX 2.3 JSON
//! document of what an image contains and what built it. Pure: the build
//! stage (`build/sbom.rs`) gathers [`Contents`] from the image and the
//! plan; [`encode`] turns them into bytes, so the document is tested in
//! memory and checked by `pyspdxtools`, an implementation nobody here
//! wrote.
//!
//! The document says: the image (DESCRIBES), which CONTAINS every Debian
//! package installed (name, version, architecture, source package, the
//! DEP-5 licences of all its `Files` stanzas, its maintainer as supplier,
//! a purl, the `.deb`'s sha256 when the base is locked), the kernel, the
//! updater `slotsmith-update` (its sha256 as installed, DEPENDS_ON its
//! locked crates), and a package of the files the layers and policies add
//! (each with SHA1, which SPDX 2.3 requires of files, and sha256);
//! slotsmith is its BUILD_TOOL_OF and DEPENDS_ON each crate locked in its
//! `Cargo.lock`.
//!
//! The image package says `filesAnalyzed: false`: the document does not
//! list the rootfs's files, so a verification code over them could not be
//! recomputed from it. The added files get a package of their own whose
//! verification code covers exactly the files it CONTAINS.
//!
//! Every package has a supplier (an NTIA minimum element): a Debian
//! package's `Maintainer`, slotsmith's own programs the slotsmith
//! project, `NOASSERTION` where nothing says who supplied it.
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
    /// The updater the build installs into the rootfs, when it does.
    pub updater: Option<Updater>,
}

/// `slotsmith-update`, which the build (not a package, layer or policy)
/// puts into the rootfs.
#[derive(Debug, Clone)]
pub struct Updater {
    /// Absolute path in the rootfs.
    pub path: String,
    /// Its version (its crate's, from the lock).
    pub version: String,
    /// sha256 of the file as the image holds it.
    pub sha256: String,
    /// The crates locked for it.
    pub crates: Vec<cargo::Crate>,
}

/// The supplier of slotsmith's own programs.
pub const PROJECT_SUPPLIER: &str = "Organization: slotsmith project";

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

/// The document as pretty JSON with a final newline. Image text (a
/// maintainer, a licence) may hold DEL, C1 or bidi controls, which
/// serde_json leaves raw: they are written as `\u` escapes (the same
/// JSON), so the document is safe on a terminal and `slotsmith-update
/// sbom` prints it byte for byte.
pub fn encode(c: &Contents) -> Vec<u8> {
    let text = serde_json::to_string_pretty(&document(c)).expect("a JSON value serialises");
    let mut bytes = slotsmith_yaml::escape::json_for_terminal(&text).into_bytes();
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

    // Not analysed: the document does not list the rootfs's files (see
    // the module comment). The image spec names no owner, so no supplier.
    packages.push(json!({
        "SPDXID": image_id,
        "name": c.image,
        "versionInfo": c.version,
        "supplier": "NOASSERTION",
        "downloadLocation": "NOASSERTION",
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "filesAnalyzed": false,
        "comment": "The rootfs of the image: its Debian packages, kernel, updater and the files its layers and policies add.",
    }));

    let added_id = (!c.files.is_empty()).then(|| ids.take("added", "files"));
    if let Some(id) = &added_id {
        // SPDX 7.9: SHA1 over the sorted SHA1s of exactly the package's
        // files, which it CONTAINS below.
        let mut sha1s: Vec<&str> = c.files.iter().map(|f| f.sha1.as_str()).collect();
        sha1s.sort_unstable();
        packages.push(json!({
            "SPDXID": id,
            "name": format!("{}-added-files", c.image),
            "versionInfo": c.version,
            "supplier": "NOASSERTION",
            "downloadLocation": "NOASSERTION",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "filesAnalyzed": true,
            "packageVerificationCode": {
                "packageVerificationCodeValue": hex::encode(Sha1::digest(sha1s.concat().as_bytes())),
            },
            "comment": "The files the image's layers and policies add to the rootfs, as the image holds them.",
        }));
        rels.push(rel(&image_id, "CONTAINS", id));
    }

    if let Some(k) = &c.kernel {
        let id = ids.take("kernel", &k.file);
        let mut p = json!({
            "SPDXID": id,
            "name": "linux",
            "packageFileName": k.file,
            "supplier": "NOASSERTION",
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

    // Locked crates, each listed once whoever depends on it.
    let mut crate_ids: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut crate_id = |k: &cargo::Crate, ids: &mut Ids, packages: &mut Vec<Value>| {
        let key = (k.name.clone(), k.version.clone());
        if let Some(id) = crate_ids.get(&key) {
            return id.clone();
        }
        let id = ids.take("crate", &format!("{}-{}", k.name, k.version));
        let mut p = json!({
            "SPDXID": id,
            "name": k.name,
            "versionInfo": k.version,
            "supplier": "NOASSERTION",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [purl(&format!("pkg:cargo/{}@{}", pct(&k.name), pct(&k.version)))],
        });
        if let Some(sum) = &k.checksum {
            p["checksums"] = json!([sha256(sum)]);
        }
        packages.push(p);
        crate_ids.insert(key, id.clone());
        id
    };

    let tool_id = ids.take("tool", "slotsmith");
    packages.push(json!({
        "SPDXID": tool_id,
        "name": "slotsmith",
        "versionInfo": c.tool.version,
        "supplier": PROJECT_SUPPLIER,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "APPLICATION",
        "comment": "The tool that built the image.",
    }));
    rels.push(rel(&tool_id, "BUILD_TOOL_OF", &image_id));
    for k in &c.tool.crates {
        let id = crate_id(k, &mut ids, &mut packages);
        rels.push(rel(&tool_id, "DEPENDS_ON", &id));
    }

    if let Some(u) = &c.updater {
        let id = ids.take("updater", "slotsmith-update");
        packages.push(json!({
            "SPDXID": id,
            "name": "slotsmith-update",
            "versionInfo": u.version,
            "packageFileName": format!(".{}", u.path),
            "supplier": PROJECT_SUPPLIER,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "APPLICATION",
            "checksums": [sha256(&u.sha256)],
            "comment": format!(
                "The device's updater, which the build installs as {} (no Debian package, layer or policy provides it).",
                u.path
            ),
        }));
        rels.push(rel(&image_id, "CONTAINS", &id));
        for k in &u.crates {
            let cid = crate_id(k, &mut ids, &mut packages);
            rels.push(rel(&id, "DEPENDS_ON", &cid));
        }
    }

    for (d, deb_sha256) in &c.debs {
        let id = ids.take("deb", &format!("{}-{}", d.name, d.architecture));
        let declared = match &d.license {
            Some(l) => {
                let e = license::declared(&l.synopses, &l.texts, &d.name);
                for r in e.refs {
                    // The id hashes the name and the text: one id, one text.
                    let entry = refs
                        .entry(r.id)
                        .or_insert_with(|| (r.name, r.text, Vec::new()));
                    if entry.2.last() != Some(&d.name) {
                        entry.2.push(d.name.clone());
                    }
                }
                e.spdx
            }
            None => "NOASSERTION".into(),
        };
        let mut p = json!({
            "SPDXID": id,
            "name": d.name,
            "versionInfo": d.version,
            "supplier": debian_supplier(d.maintainer.as_deref()),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared,
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!(
                "built from the Debian source package {} {}", d.source, d.source_version
            ),
            "externalRefs": [purl(&debian_purl(
                &d.name,
                &d.version,
                &d.architecture,
                c.suite.as_deref()
            ))],
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
            if let Some(added) = &added_id {
                rels.push(rel(added, "CONTAINS", &id));
            }
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
                format!(
                    "The licence called \"{name}\" in the package's copyright file, which gives no text for it."
                )
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
            "created": slotsmith_disk::time::rfc3339(c.epoch),
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

/// The package URL of an installed Debian package, for the SBOM and the
/// provenance alike (one encoder, so both name a package identically):
/// `pkg:deb/debian/<name>@<version>?arch=<arch>[&distro=debian-<suite>]`,
/// qualifiers in key order as the purl spec's canonical form has them.
/// The version's epoch colon stays a colon: the purl specification
/// (Character encoding) says `:` is never percent-encoded.
pub fn debian_purl(name: &str, version: &str, arch: &str, suite: Option<&str>) -> String {
    let mut s = format!(
        "pkg:deb/debian/{}@{}?arch={}",
        pct(name),
        pct(version),
        pct(arch)
    );
    if let Some(suite) = suite {
        s.push_str(&format!("&distro={}", pct(&format!("debian-{suite}"))));
    }
    s
}

/// The SPDX supplier of a Debian package: its `Maintainer` as an
/// organisation (a maintainer is often a team), `Organization: Debian`
/// when it names none. SPDX writes an e-mail address in parentheses
/// after the name, so `Name <mail>` becomes `Name (mail)`; parentheses
/// and control characters elsewhere would break that syntax and become
/// brackets and spaces.
pub fn debian_supplier(maintainer: Option<&str>) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                '(' | '<' => '[',
                ')' | '>' => ']',
                c if c.is_control() => ' ',
                c => c,
            })
            .collect::<String>()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let m = maintainer.unwrap_or_default().trim();
    let (name, mail) = match m.strip_suffix('>').and_then(|r| r.rsplit_once('<')) {
        Some((name, mail)) => (clean(name), clean(mail)),
        None => (clean(m), String::new()),
    };
    match (name.is_empty(), mail.is_empty()) {
        (true, true) => "Organization: Debian".into(),
        (true, false) => format!("Organization: Debian ({mail})"),
        (false, true) => format!("Organization: {name}"),
        (false, false) => format!("Organization: {name} ({mail})"),
    }
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

#[cfg(test)]
mod tests;
