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
    assert_eq!(zlib["licenseDeclared"], "Zlib");
    assert_eq!(
        zlib["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1%2Bb1?arch=amd64&distro=debian-bookworm"
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
    for f in files {
        assert!(has_rel(
            &doc,
            image,
            "CONTAINS",
            f["SPDXID"].as_str().unwrap()
        ));
    }
    let kernel = package(&doc, "linux");
    assert_eq!(kernel["versionInfo"], "6.1.0-18-amd64");
    assert_eq!(kernel["checksums"][0]["checksumValue"], "b".repeat(64));
    let tool = package(&doc, "slotsmith");
    let tool_id = tool["SPDXID"].as_str().unwrap();
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

#[test]
fn a_date_is_utc_rfc3339() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_825_599), "2000-02-29T11:59:59Z");
    assert_eq!(rfc3339(4_294_967_295), "2106-02-07T06:28:15Z");
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
            synopsis: "GPL-2+ with OpenSSL exception or Artistic".into(),
            texts: Default::default(),
        });
    }
    c.files.clear();
    c.kernel = None;
    c.suite = None;
    validate(&encode(&c));
}
