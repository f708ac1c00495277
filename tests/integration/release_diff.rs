//! `diff` on two small fixture builds with known differences: a layer file
//! added, a layer file's mode changed, the security version raised and a
//! waiver's approver changed. Each is found in the Markdown and in the
//! JSON; the modes reported are the ones `unsquashfs -lln` (an independent
//! reader) lists; a build diffed with itself has no differences; a
//! directory that is not a build is an input error naming its file.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::*;

/// Builds image `rd` of `p` into `out`.
fn build(p: &Project, out: &Path) -> PathBuf {
    fs::create_dir_all(out).unwrap();
    let r = slotsmith(
        &[
            "build",
            p.image("rd").to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--work-dir",
            p.path().join("work").to_str().unwrap(),
            "--quiet",
        ],
        &[],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    out.join("rd")
}

/// The image file: the fixture with the `files` policy, a waiver for the
/// world-writable product.conf and a security version.
fn image(layers: &[&str], security_version: u32, approver: &str) -> String {
    fixture_image("rd", "fixtures/base.tar.gz", layers, "squashfs", "16MiB")
        + &format!(
            "security-version: {security_version}\nprofile: production\npolicies: [files]\nwaivers:\n  - rule: FILES-PERM-001\n    \
justification: The calibration tool rewrites /etc/product.conf until release 2.2.\n    approver: {approver}\n"
        )
}

fn layer_yaml(tool_mode: &str) -> String {
    format!(
        "files:\n  /etc/product.conf:\n    mode: \"0666\"\n  /usr/bin/tool:\n    mode: \"{tool_mode}\"\n"
    )
}

fn diff(old: &Path, new: &Path, json: bool) -> CliRun {
    let mut args = vec!["diff", old.to_str().unwrap(), new.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    slotsmith(&args, &[], false, None)
}

/// The mode string `unsquashfs -lln` prints for `path` in `image`.
fn unsquashfs_mode(image: &Path, path: &str) -> String {
    let listing = run("unsquashfs", &["-lln", image.to_str().unwrap()]);
    listing
        .lines()
        .find(|l| l.ends_with(&format!("squashfs-root{path}")))
        .unwrap_or_else(|| panic!("{path} not in\n{listing}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn two_builds_with_known_differences_are_reported_in_markdown_and_json() {
    require("unsquashfs", "squashfs-tools");
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    fs::copy(
        repo_root().join("policies/files.yaml"),
        p.path().join("policies/files.yaml"),
    )
    .unwrap();
    layer(&p, "meta-product", "product", 7, &layer_yaml("0755"));
    p.write("layers/meta-product/files/etc/product.conf", "x=1\n");
    p.write(
        "layers/meta-product/files/usr/bin/tool",
        "#!/bin/sh\necho tool\n",
    );
    p.write(
        "images/rd.yaml",
        &image(&["meta-product"], 1, "QA lead CR-1234"),
    );
    let old = build(&p, &p.path().join("out-old"));

    // The next release: one file more, the tool no longer world-executable,
    // the security version raised, the waiver re-approved by someone else.
    layer(&p, "meta-product", "product", 7, &layer_yaml("0700"));
    p.write("layers/meta-product/files/etc/added.conf", "new=1\n");
    p.write(
        "images/rd.yaml",
        &image(&["meta-product"], 2, "Security officer CR-5678"),
    );
    let new = build(&p, &p.path().join("out-new"));

    let md = diff(&old, &new, false);
    assert_eq!(
        md.code, 0,
        "a report exits 0 when the builds differ: {}",
        md.stderr
    );
    let md = md.stdout;
    assert!(
        md.starts_with("# Release diff: rd 2.1.0 -> rd 2.1.0"),
        "{md}"
    );
    let line = |needle: &str| {
        md.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no line starting {needle:?} in\n{md}"))
            .to_string()
    };
    assert!(
        line("| /etc/added.conf | added |").contains("file 0644 0:0, 6 bytes"),
        "{md}"
    );
    let tool = line("| /usr/bin/tool | mode |");
    assert!(
        tool.contains("file 0755 0:0") && tool.contains("file 0700 0:0"),
        "{tool}"
    );
    assert_eq!(
        line("| security\\_version |"),
        "| security\\_version | 1 | 2 |"
    );
    let waiver = line("| FILES-PERM-001 | changed |");
    assert!(
        waiver.contains("approved by QA lead CR-1234")
            && waiver.contains("approved by Security officer CR-5678"),
        "{waiver}"
    );
    assert!(
        md.contains("| Packages | no dpkg database in either image |"),
        "{md}"
    );

    let j = diff(&old, &new, true);
    assert_eq!(j.code, 0, "{}", j.stderr);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("--json prints JSON");
    assert_eq!(v["differs"], true);
    assert_eq!(v["packages"], serde_json::Value::Null);
    let added: Vec<&str> = v["files"]["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["/etc/added.conf"]);
    assert_eq!(
        v["files"]["added"][0]["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"new=1\n"))
    );
    let changed = v["files"]["changed"].as_array().unwrap();
    let tool = changed
        .iter()
        .find(|c| c["path"] == "/usr/bin/tool")
        .unwrap();
    assert_eq!(tool["what"], serde_json::json!(["mode"]));
    assert_eq!(tool["old"]["mode"], "0755");
    assert_eq!(tool["new"]["mode"], "0700");
    // The modes are what an independent reader of each image sees.
    assert_eq!(
        unsquashfs_mode(&old.join("rootfs.squashfs"), "/usr/bin/tool"),
        "-rwxr-xr-x"
    );
    assert_eq!(
        unsquashfs_mode(&new.join("rootfs.squashfs"), "/usr/bin/tool"),
        "-rwx------"
    );
    assert_eq!(
        unsquashfs_mode(&new.join("rootfs.squashfs"), "/etc/added.conf"),
        "-rw-r--r--"
    );
    let fields = v["release"]["fields"].as_array().unwrap();
    assert!(
        fields.contains(&serde_json::json!({"field": "security_version", "old": "1", "new": "2"})),
        "{fields:?}"
    );
    assert!(
        fields.iter().any(|f| f["field"] == "plan_sha256"),
        "another plan: {fields:?}"
    );
    let w = &v["policy"]["waivers_changed"];
    assert_eq!(w[0]["rule"], "FILES-PERM-001");
    assert_eq!(w[0]["old"]["approver"], "QA lead CR-1234");
    assert_eq!(w[0]["new"]["approver"], "Security officer CR-5678");
    // Same keys (the project's development keys) on both sides.
    assert_eq!(v["release"]["keys"], serde_json::json!([]));
    // Stable: the same inputs give the same bytes.
    assert_eq!(diff(&old, &new, true).stdout, j.stdout);

    // The reviewer's index links the evidence and names the boot key by
    // the fingerprint build.json records.
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(new.join("build.json")).unwrap()).unwrap();
    let readme = fs::read_to_string(new.join("README.md")).unwrap();
    assert!(
        readme.starts_with("# Reviewer's index: rd 2.1.0\n"),
        "{readme}"
    );
    let boot_key = record["boot_key"].as_str().unwrap();
    assert!(
        readme.contains("| [boot.pub.pem](boot.pub.pem) | boot key")
            && readme.contains(&format!("`{boot_key}`")),
        "{readme}"
    );
    assert!(
        readme.contains("[audit/report.md](audit/report.md)"),
        "{readme}"
    );
    assert!(
        record["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "README.md"),
        "the index is an artifact of the record"
    );

    // A build diffed with itself: no differences, in both forms.
    let same = diff(&new, &new, false);
    assert_eq!(same.code, 0, "{}", same.stderr);
    assert!(same.stdout.contains("No differences"), "{}", same.stdout);
    let same: serde_json::Value = serde_json::from_str(&diff(&new, &new, true).stdout).unwrap();
    assert_eq!(same["differs"], false);
    assert_eq!(
        same["files"],
        serde_json::json!({"added": [], "removed": [], "changed": []})
    );
    assert_eq!(same["release"]["fields"], serde_json::json!([]));

    // Not a build: an input error naming the file.
    let empty = p.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let bad = diff(&old, &empty, false);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("build.json is missing"),
        "{}",
        bad.stderr
    );
    // A tampered manifest is refused, naming it.
    let forged = p.path().join("forged");
    fs::create_dir_all(&forged).unwrap();
    for e in fs::read_dir(&new).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), forged.join(e.file_name())).unwrap();
        }
    }
    let mut m = fs::read(forged.join("boot-a.manifest")).unwrap();
    m.extend_from_slice(b"cmdline-extra init=/bin/sh\n");
    fs::write(forged.join("boot-a.manifest"), m).unwrap();
    let bad = diff(&old, &forged, false);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("boot-a.manifest"), "{}", bad.stderr);
}
