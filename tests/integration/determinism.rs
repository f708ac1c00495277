//! Same inputs and SOURCE_DATE_EPOCH give bit-identical outputs, whatever
//! the directory, umask, user or time of the build.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::support::*;

fn build_in(umask: &str, as_nobody: bool) -> BTreeMap<String, String> {
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    layer(
        &p,
        "meta-x",
        "x",
        5,
        "files:\n  /etc/secret:\n    mode: \"0600\"\n",
    );
    p.write("layers/meta-x/files/etc/secret", "s3cret\n");
    p.write("layers/meta-x/files/usr/share/x/readme", "x\n");
    p.write(
        "images/rep.yaml",
        &fixture_image(
            "rep",
            "fixtures/base.tar.gz",
            &["meta-x"],
            "squashfs",
            "16MiB",
        ),
    );
    let out = p.writable("out");
    let work = p.writable("work");
    let r = slotsmith(
        &[
            "build",
            p.image("rep").to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--quiet",
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
        as_nobody,
        Some(umask),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    hashes(&out.join("rep"))
}

fn hashes(dir: &Path) -> BTreeMap<String, String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                sha256(&e.path()),
            )
        })
        .collect()
}

#[test]
fn two_builds_are_bit_identical() {
    let a = build_in("022", true);
    let b = build_in("077", false);
    assert_eq!(a.len(), 5, "{a:?}");
    assert_eq!(a, b);
}
