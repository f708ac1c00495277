//! The SBOM on a small fabricated rootfs: the fields of each package and
//! file, determinism, and the independent validator `pyspdxtools`.

use super::*;
use slotsmith_policy::rootfs::Index;
use slotsmith_policy::MemRootfs;

const DEP5: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
    Upstream-Name: zlib\n\nFiles: *\nCopyright: 1995-2022 Jean-loup Gailly and Mark Adler\n\
    License: Zlib\n\nFiles: debian/*\nLicense: GPL-2+ or Artistic\n";

/// A status of three installed packages (one multi-arch with an epoch and
/// a versioned source), one removed; zlib1g's copyright is DEP-5, bash's
/// is not, base-files has none.
fn rootfs() -> MemRootfs {
    let status = "Package: zlib1g\nStatus: install ok installed\nPriority: optional\n\
        Architecture: amd64\nMulti-Arch: same\nSource: zlib (1:1.2.13.dfsg-1)\n\
        Maintainer: Mark Brown <broonie@debian.org>\n\
        Version: 1:1.2.13.dfsg-1+b1\nDescription: compression library\n zlib is a library.\n\n\
        Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b7\n\n\
        Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\n\n\
        Package: old\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1.0\n";
    let mut fs = MemRootfs::new();
    fs.file("/var/lib/dpkg/status", 0o644, status)
        .file("/usr/share/doc/zlib1g/copyright", 0o644, DEP5)
        .file(
            "/usr/share/doc/bash/copyright",
            0o644,
            "This is Debian's prepackaged bash.\nIt is GPL-3+.\n",
        );
    fs
}

fn contents() -> Contents {
    let fs = rootfs();
    let debs = debian::installed(&Index::new(&fs)).unwrap();
    let zlib_deb = "a".repeat(64);
    Contents {
        image: "demo".into(),
        version: "1.2.0".into(),
        epoch: 1_700_000_000,
        suite: Some("bookworm".into()),
        debs: debs
            .into_iter()
            .map(|d| {
                let sum = (d.name == "zlib1g").then(|| zlib_deb.clone());
                (d, sum)
            })
            .collect(),
        kernel: Some(Kernel {
            file: "vmlinuz".into(),
            version: Some("6.1.0-18-amd64".into()),
            sha256: "b".repeat(64),
        }),
        files: vec![
            AddedFile {
                path: "/etc/motd".into(),
                origin: "layer meta-demo".into(),
                sha1: "c".repeat(40),
                sha256: "d".repeat(64),
            },
            AddedFile {
                path: "/etc/sysctl.d/90-hardening.conf".into(),
                origin: "the hardening policies".into(),
                sha1: "e".repeat(40),
                sha256: "f".repeat(64),
            },
        ],
        tool: Tool {
            version: "0.1.0".into(),
            crates: cargo::locked_crates(cargo::LOCK, "xtask"),
        },
        updater: Some(Updater {
            path: "/usr/sbin/slotsmith-update".into(),
            version: "0.1.0".into(),
            sha256: "9".repeat(64),
            crates: cargo::locked_crates(cargo::LOCK, "slotsmith-updater"),
        }),
    }
}

/// The package whose name is `name`.
fn package<'d>(doc: &'d Value, name: &str) -> &'d Value {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no package {name}"))
}

fn has_rel(doc: &Value, a: &str, kind: &str, b: &str) -> bool {
    doc["relationships"].as_array().unwrap().iter().any(|r| {
        r["spdxElementId"] == a && r["relationshipType"] == kind && r["relatedSpdxElement"] == b
    })
}

#[test]
fn each_debian_package_has_its_version_source_licence_purl_and_hash() {
    let doc = document(&contents());
    let zlib = package(&doc, "zlib1g");
    assert_eq!(zlib["versionInfo"], "1:1.2.13.dfsg-1+b1");
    assert_eq!(
        zlib["sourceInfo"],
        "built from the Debian source package zlib 1:1.2.13.dfsg-1"
    );
    // Every stanza, not only `Files: *`: the packaging's licence too.
    let declared = zlib["licenseDeclared"].as_str().unwrap();
    assert!(
        declared.starts_with("(GPL-2.0-or-later OR LicenseRef-Artistic-")
            && declared.ends_with(") AND Zlib"),
        "{declared}"
    );
    assert_eq!(
        zlib["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1%2Bb1?arch=amd64&distro=debian-bookworm"
    );
    assert_eq!(
        zlib["supplier"],
        "Organization: Mark Brown (broonie@debian.org)"
    );
    assert_eq!(zlib["checksums"][0]["checksumValue"], "a".repeat(64));
    assert_eq!(
        zlib["packageFileName"],
        "zlib1g_1%3a1.2.13.dfsg-1+b1_amd64.deb"
    );
    assert_eq!(zlib["comment"], "architecture amd64");
    // Not machine-readable, or no copyright file: no claim, no hash
    // without a lock.
    let bash = package(&doc, "bash");
    assert_eq!(bash["licenseDeclared"], "NOASSERTION");
    assert_eq!(
        bash["sourceInfo"],
        "built from the Debian source package bash 5.2.15-2+b7"
    );
    assert!(bash.get("checksums").is_none());
    // No `Maintainer:` in the status: Debian supplied it.
    assert_eq!(bash["supplier"], "Organization: Debian");
    assert_eq!(
        package(&doc, "base-files")["licenseDeclared"],
        "NOASSERTION"
    );
    // The removed package is not listed.
    assert!(doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["name"] != "old"));
    let image = doc["documentDescribes"][0].as_str().unwrap();
    assert!(has_rel(&doc, "SPDXRef-DOCUMENT", "DESCRIBES", image));
    for p in ["zlib1g", "bash", "base-files", "linux"] {
        let id = package(&doc, p)["SPDXID"].as_str().unwrap();
        assert!(has_rel(&doc, image, "CONTAINS", id), "{p}");
    }
}

#[test]
fn added_files_the_kernel_and_the_tool_are_listed() {
    let doc = document(&contents());
    let image = doc["documentDescribes"][0].as_str().unwrap();
    let files = doc["files"].as_array().unwrap();
    let names: Vec<&str> = files
        .iter()
        .map(|f| f["fileName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["./etc/motd", "./etc/sysctl.d/90-hardening.conf"]);
    assert_eq!(files[0]["checksums"][1]["checksumValue"], "d".repeat(64));
    assert_eq!(files[0]["comment"], "added by layer meta-demo");
    // The image does not claim its files were analysed; the added files'
    // own package does, with a verification code over exactly them.
    assert_eq!(package(&doc, "demo")["filesAnalyzed"], false);
    assert!(package(&doc, "demo")
        .get("packageVerificationCode")
        .is_none());
    let added = package(&doc, "demo-added-files");
    let added_id = added["SPDXID"].as_str().unwrap();
    assert_eq!(added["filesAnalyzed"], true);
    assert!(has_rel(&doc, image, "CONTAINS", added_id));
    let mut sha1s: Vec<&str> = Vec::new();
    for f in files {
        let id = f["SPDXID"].as_str().unwrap();
        assert!(has_rel(&doc, added_id, "CONTAINS", id));
        assert!(!has_rel(&doc, image, "CONTAINS", id));
        sha1s.push(f["checksums"][0]["checksumValue"].as_str().unwrap());
    }
    sha1s.sort_unstable();
    assert_eq!(
        added["packageVerificationCode"]["packageVerificationCodeValue"],
        hex::encode(Sha1::digest(sha1s.concat().as_bytes()))
    );
    let kernel = package(&doc, "linux");
    assert_eq!(kernel["versionInfo"], "6.1.0-18-amd64");
    assert_eq!(kernel["checksums"][0]["checksumValue"], "b".repeat(64));
    let tool = package(&doc, "slotsmith");
    let tool_id = tool["SPDXID"].as_str().unwrap();
    assert_eq!(tool["supplier"], PROJECT_SUPPLIER);
    assert!(has_rel(&doc, tool_id, "BUILD_TOOL_OF", image));
    let anyhow = package(&doc, "anyhow");
    assert!(anyhow["externalRefs"][0]["referenceLocator"]
        .as_str()
        .unwrap()
        .starts_with("pkg:cargo/anyhow@1."));
    assert!(has_rel(
        &doc,
        tool_id,
        "DEPENDS_ON",
        anyhow["SPDXID"].as_str().unwrap()
    ));
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    // Every package has a supplier (an NTIA minimum element).
    for p in doc["packages"].as_array().unwrap() {
        let s = p["supplier"].as_str().unwrap_or_default();
        assert!(s == "NOASSERTION" || s.starts_with("Organization: "), "{p}");
    }
}

#[test]
fn the_updater_is_contained_with_its_hash_and_locked_crates() {
    let doc = document(&contents());
    let image = doc["documentDescribes"][0].as_str().unwrap();
    let u = package(&doc, "slotsmith-update");
    let id = u["SPDXID"].as_str().unwrap();
    assert!(has_rel(&doc, image, "CONTAINS", id));
    assert_eq!(u["checksums"][0]["checksumValue"], "9".repeat(64));
    assert_eq!(u["packageFileName"], "./usr/sbin/slotsmith-update");
    assert_eq!(u["versionInfo"], "0.1.0");
    assert_eq!(u["supplier"], PROJECT_SUPPLIER);
    // Its crates, each listed once though the tool depends on many too.
    let clap = package(&doc, "clap")["SPDXID"].as_str().unwrap();
    assert!(has_rel(&doc, id, "DEPENDS_ON", clap));
    let names: Vec<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.iter().filter(|n| **n == "clap").count(), 1);
    // A crate only the builder uses is not the updater's.
    let backhand = package(&doc, "backhand")["SPDXID"].as_str().unwrap();
    assert!(!has_rel(&doc, id, "DEPENDS_ON", backhand));
}

#[test]
fn a_package_declares_all_its_stanzas_and_each_text_its_own_reference() {
    let mut c = contents();
    let other = |text: &str| {
        Some(debian::License {
            synopses: vec!["BSD-3-clause".into(), "GPL-3+".into(), "other".into()],
            texts: [("other".to_string(), text.to_string())].into(),
        })
    };
    c.debs[0].0.license = other("Text of base-files.");
    c.debs[1].0.license = other("Text of bash.");
    c.debs[2].0.license = other("Text of bash.");
    let doc = document(&c);
    let declared = |n: &str| {
        package(&doc, n)["licenseDeclared"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (declared("base-files"), declared("bash"));
    assert!(
        a.starts_with("BSD-3-Clause AND GPL-3.0-or-later AND LicenseRef-other-"),
        "{a}"
    );
    assert_ne!(a, b, "two texts called other are two licences");
    assert_eq!(b, declared("zlib1g"), "the same text is one licence");
    let infos = doc["hasExtractedLicensingInfos"].as_array().unwrap();
    assert_eq!(infos.len(), 2);
    let text_of = |id: &str| {
        infos
            .iter()
            .find(|i| i["licenseId"] == id)
            .map(|i| i["extractedText"].as_str().unwrap().to_string())
    };
    let ref_of = |e: &str| e.rsplit(' ').next().unwrap().to_string();
    assert_eq!(text_of(&ref_of(&a)).as_deref(), Some("Text of base-files."));
    assert_eq!(text_of(&ref_of(&b)).as_deref(), Some("Text of bash."));
    validate(&encode(&c));
}

#[test]
fn the_document_is_deterministic_and_its_namespace_follows_its_content() {
    let a = encode(&contents());
    assert_eq!(a, encode(&contents()));
    let mut c = contents();
    c.files.pop();
    let ns = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap()["documentNamespace"].clone();
    assert_ne!(ns(&a), ns(&encode(&c)));
    assert!(ns(&a)
        .as_str()
        .unwrap()
        .starts_with("https://slotsmith.invalid/spdx/demo/1.2.0/"));
}

#[test]
fn ids_are_valid_and_unique_whatever_the_names() {
    let mut c = contents();
    for path in ["/etc/a b", "/etc/a+b", "/etc/ä"] {
        c.files.push(AddedFile {
            path: path.into(),
            origin: "layer x".into(),
            sha1: "0".repeat(40),
            sha256: "0".repeat(64),
        });
    }
    let doc = document(&c);
    let mut ids = BTreeSet::new();
    for e in doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .chain(doc["files"].as_array().unwrap())
    {
        let id = e["SPDXID"].as_str().unwrap();
        let rest = id.strip_prefix("SPDXRef-").unwrap();
        assert!(
            rest.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'),
            "{id}"
        );
        assert!(ids.insert(id.to_string()), "{id} twice");
    }
}

/// Runs `pyspdxtools -i` on `bytes`; a missing validator fails.
fn validate(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(OUTPUT);
    std::fs::write(&path, bytes).unwrap();
    crate::tool::Tool::new("pyspdxtools")
        .and_then(|t| t.args(["-i", path.to_str().unwrap()]).run())
        .unwrap_or_else(|e| panic!("pyspdxtools refused the SBOM: {e:#}"));
}

#[test]
fn pyspdxtools_accepts_the_document() {
    validate(&encode(&contents()));
    // With licence references to declare, and without files or a kernel.
    let mut c = contents();
    for (d, _) in &mut c.debs {
        d.license = Some(debian::License {
            synopses: vec![
                "GPL-2+ with OpenSSL exception or Artistic".into(),
                "Zlib".into(),
                "other".into(),
            ],
            texts: [(
                "other".to_string(),
                "Steer \u{9b}2J the terminal.".to_string(),
            )]
            .into(),
        });
        d.maintainer = Some("Odd (team) <x@y> \u{9b}2J".into());
    }
    c.files.clear();
    c.kernel = None;
    c.suite = None;
    c.updater = None;
    let bytes = encode(&c);
    // The licence text's C1 CSI is escaped, the JSON means the same.
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        !text.contains('\u{9b}') && text.contains("\\u009b"),
        "{text}"
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap(),
        document(&c)
    );
    validate(&bytes);
}
