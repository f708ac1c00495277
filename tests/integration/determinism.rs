//! Same inputs and SOURCE_DATE_EPOCH give bit-identical outputs, whatever
//! the directory, umask, user or time of the build.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::support::*;

fn build_in(umask: &str, as_nobody: bool, key: &Path) -> BTreeMap<String, String> {
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
    let image = fixture_image(
        "rep",
        "fixtures/base.tar.gz",
        &["meta-x"],
        "squashfs",
        "16MiB",
    ) + &format!(
        "signing:
  boot:
    key: {}
    public-key: {}
  update:
    key: {}
    cert: {}
",
        key.join("boot.key.pem").display(),
        key.join("boot.pub.pem").display(),
        key.join("update.key.pem").display(),
        key.join("update.cert.pem").display()
    );
    p.write("images/rep.yaml", &image);
    let out = p.writable("out");
    p.dev_keys_writable();
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
    // One boot key for both builds: a signature depends on the key.
    let keys = tempfile::Builder::new()
        .prefix("slotsmith-keys-")
        .tempdir()
        .unwrap();
    fs::set_permissions(
        keys.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = keys.path().join("k");
    slotsmith_sign::generate(&dir, "boot").unwrap();
    // ... and one update key: a certificate has a random serial.
    slotsmith_cms::generate_update_key(&dir, "update", "determinism", 1_690_000_000, 3650, None)
        .unwrap();
    if rustix::process::geteuid().is_root() {
        // The unprivileged build must own its private keys (mode 0600).
        for f in [
            "",
            "boot.key.pem",
            "boot.pub.pem",
            "update.key.pem",
            "update.cert.pem",
        ] {
            rustix::fs::chown(
                dir.join(f),
                Some(rustix::process::Uid::from_raw(65534)),
                Some(rustix::process::Gid::from_raw(65534)),
            )
            .unwrap();
        }
    }
    let a = build_in("022", true, &dir);
    let b = build_in("077", false, &dir);
    assert_eq!(a.len(), 16, "{a:?}");
    assert_eq!(a, b);
}
