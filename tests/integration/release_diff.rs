//! `diff` on two small fixture builds with known differences: a layer file
//! added, a layer file's mode changed, the security version raised and a
//! waiver's approver changed. Each is found in the Markdown and in the
//! JSON; the modes reported are the ones `unsquashfs -lln` (an independent
//! reader) lists; a build diffed with itself has no differences; a
//! directory that is not a build is an input error naming its file.
//!
//! The second build is given the first with `build --previous`: it
//! publishes the same reports as `xtask diff`, covered by `SHA256SUMS`
//! (checked by `sha256sum -c`) and `build.json`, linked by the index. A
//! tampered rootfs image or audit report, and a symlink or FIFO in place of
//! the rootfs image, are refused naming the file; a `--previous` that is no
//! directory or is the new output directory is an input error naming the
//! flag; `repro` rebuilds such a build given the same previous release.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::*;

/// Builds image `rd` of `p` into `out`, diffed against `previous` if given.
fn build_with(p: &Project, out: &Path, previous: Option<&Path>) -> CliRun {
    fs::create_dir_all(out).unwrap();
    let mut args = vec![
        "build",
        p.image("rd").to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--work-dir",
        p.path().join("work").to_str().unwrap(),
        "--quiet",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    if let Some(prev) = previous {
        args.extend(["--previous".into(), prev.to_string_lossy().into_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    slotsmith(&args, &[], false, None)
}

/// Builds image `rd` of `p` into `out`; the output directory.
fn build(p: &Project, out: &Path, previous: Option<&Path>) -> PathBuf {
    let r = build_with(p, out, previous);
    assert_eq!(r.code, 0, "{}", r.stderr);
    out.join("rd")
}

/// A copy of the build directory `from` (files and subdirectories).
fn copy_build(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            copy_build(&e.path(), &to.join(e.file_name()));
        } else if t.is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Flips one byte of `file` in the middle.
fn flip_byte(file: &Path) {
    let mut b = fs::read(file).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x01;
    fs::write(file, b).unwrap();
}

/// `diff old new`, which must finish within `secs` (killed and failed
/// otherwise: a FIFO must be refused, not waited on).
fn diff_within(old: &Path, new: &Path, secs: u64) -> CliRun {
    let h = duct::cmd(
        cli(),
        [
            std::ffi::OsStr::new("diff"),
            old.as_os_str(),
            new.as_os_str(),
        ],
    )
    .stdout_capture()
    .stderr_capture()
    .unchecked()
    .start()
    .unwrap();
    let start = Instant::now();
    loop {
        if let Some(out) = h.try_wait().unwrap() {
            return CliRun {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            };
        }
        if start.elapsed() > Duration::from_secs(secs) {
            h.kill().unwrap();
            panic!(
                "diff {} {} did not finish within {secs}s",
                old.display(),
                new.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let old = build(&p, &p.path().join("out-old"), None);

    // The next release: one file more, the tool no longer world-executable,
    // the security version raised, the waiver re-approved by someone else.
    layer(&p, "meta-product", "product", 7, &layer_yaml("0700"));
    p.write("layers/meta-product/files/etc/added.conf", "new=1\n");
    p.write(
        "images/rd.yaml",
        &image(&["meta-product"], 2, "Security officer CR-5678"),
    );
    let new = build(&p, &p.path().join("out-new"), Some(&old));

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

    published_release_diff(&p, &old, &new);
    tampered_files_are_refused(&p, &old, &new);
}

/// What `build --previous` published in `new`.
fn published_release_diff(p: &Project, old: &Path, new: &Path) {
    // The same bytes as `xtask diff` on the published directories.
    let md = fs::read_to_string(new.join("release-diff.md")).unwrap();
    let json = fs::read_to_string(new.join("release-diff.json")).unwrap();
    assert_eq!(md, diff(old, new, false).stdout);
    assert_eq!(json, diff(old, new, true).stdout);
    assert!(md.contains("| security\\_version | 1 | 2 |"), "{md}");
    // In SHA256SUMS, which the independent checker accepts, and in the
    // record.
    let sums = fs::read_to_string(new.join("SHA256SUMS")).unwrap();
    for f in ["release-diff.md", "release-diff.json"] {
        assert!(sums.contains(&format!("  {f}\n")), "{f} not in\n{sums}");
    }
    let checked = duct::cmd!("sha256sum", "-c", "--strict", "SHA256SUMS")
        .dir(new)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
    let out = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        out.contains("release-diff.md: OK") && out.contains("release-diff.json: OK"),
        "{out}"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(new.join("build.json")).unwrap()).unwrap();
    let names: Vec<&str> = record["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"release-diff.md") && names.contains(&"release-diff.json"),
        "{names:?}"
    );
    // The index links both and names the previous release by its record.
    let readme = fs::read_to_string(new.join("README.md")).unwrap();
    let old_record = sha256(&old.join("build.json"));
    assert!(
        readme.contains(&format!(
            "| Changes since the previous release | [release-diff.md](release-diff.md), \
[release-diff.json](release-diff.json) | Compared with the previous release, rd 2.1.0 (its `build.json` \
has sha256 `{old_record}`)"
        )),
        "{readme}"
    );
    // Without --previous: no reports, and the index says how to make one.
    assert!(!old.join("release-diff.md").exists());
    assert!(!old.join("release-diff.json").exists());
    let readme = fs::read_to_string(old.join("README.md")).unwrap();
    assert!(
        readme.contains("`cargo xtask diff PREVIOUS_OUT THIS_OUT`"),
        "{readme}"
    );

    // --previous must be a build directory outside the new one: an input
    // error naming the flag, before anything is built or published.
    let before = sha256(&new.join("build.json"));
    for (prev, why) in [
        (old.join("build.json"), "is not a directory"),
        (new.to_path_buf(), "is the new build's output directory"),
        (new.join("audit"), "is the new build's output directory"),
        (p.path().join("nowhere"), "cannot be read"),
    ] {
        let r = build_with(p, &p.path().join("out-new"), Some(&prev));
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr.contains("--previous") && r.stderr.contains(why),
            "{why}: {}",
            r.stderr
        );
    }
    assert_eq!(sha256(&new.join("build.json")), before, "out/ untouched");

    // `repro` rebuilds the release diff against the same previous release,
    // and asks for it when not given.
    let repro = |extra: &[&str]| {
        let cache = p.path().join("cache");
        let mut args = vec![
            "repro",
            new.to_str().unwrap(),
            "--project",
            p.path().to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        args.extend(extra);
        slotsmith(&args, &[], false, None)
    };
    let r = repro(&["--previous", old.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("identical"), "{}", r.stderr);
    let r = repro(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("release-diff.md") && r.stderr.contains("--previous"),
        "{}",
        r.stderr
    );
}

/// Files of a build that differ from its record, or are not regular
/// files, are refused naming the file.
fn tampered_files_are_refused(p: &Project, old: &Path, new: &Path) {
    let copy = |name: &str| {
        let d = p.path().join(name);
        copy_build(new, &d);
        d
    };
    // One byte of the rootfs image: named, with both hashes.
    let t = copy("tampered-rootfs");
    let recorded = sha256(&t.join("rootfs.squashfs"));
    flip_byte(&t.join("rootfs.squashfs"));
    let bad = diff(old, &t, false);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("rootfs.squashfs has sha256")
            && bad.stderr.contains(&recorded)
            && bad.stderr.contains(&sha256(&t.join("rootfs.squashfs"))),
        "{}",
        bad.stderr
    );
    // One byte of the audit report.
    let t = copy("tampered-audit");
    flip_byte(&t.join("audit/report.json"));
    let bad = diff(&t, old, false);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("audit/report.json has sha256"),
        "{}",
        bad.stderr
    );
    // A tampered previous release fails the build naming the file, and
    // leaves the published build as it was.
    let before = sha256(&new.join("build.json"));
    let r = build_with(p, &p.path().join("out-new"), Some(&t));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("audit/report.json has sha256"),
        "{}",
        r.stderr
    );
    assert_eq!(sha256(&new.join("build.json")), before);
    // A symlink to the other build's image, and a FIFO: refused at once.
    let t = copy("symlinked");
    fs::remove_file(t.join("rootfs.squashfs")).unwrap();
    std::os::unix::fs::symlink(new.join("rootfs.squashfs"), t.join("rootfs.squashfs")).unwrap();
    let bad = diff_within(old, &t, 30);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("rootfs.squashfs is a symlink"),
        "{}",
        bad.stderr
    );
    fs::remove_file(t.join("rootfs.squashfs")).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        t.join("rootfs.squashfs"),
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let bad = diff_within(old, &t, 30);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("rootfs.squashfs is not a regular file"),
        "{}",
        bad.stderr
    );
}
