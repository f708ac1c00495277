//! Same inputs and SOURCE_DATE_EPOCH give bit-identical outputs, whatever
//! the directory, umask, user or time of the build.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::support::*;

/// Builds the fixture (squashfs or ext4, with the repository's hardening
/// policies) in a fresh project; returns the hashes of every file under
/// out/ and the project, so a caller can build it again.
fn build_in(
    umask: &str,
    as_nobody: bool,
    key: &Path,
    filesystem: &str,
) -> (BTreeMap<String, String>, Project) {
    let p = Project::new();
    for e in fs::read_dir(repo_root().join("policies")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), p.path().join("policies").join(e.file_name())).unwrap();
    }
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
        filesystem,
        "16MiB",
    )
        + "profile: production\npolicies: [network, kernel, services, ssh, accounts, files]\n"
        + &format!(
            "signing:
  boot:
    key: {}
    public-key: {}
  update:
    key: {}
    cert: {}
  provenance:
    key: {}
    public-key: {}
",
            key.join("boot.key.pem").display(),
            key.join("boot.pub.pem").display(),
            key.join("update.key.pem").display(),
            key.join("update.cert.pem").display(),
            key.join("provenance.key.pem").display(),
            key.join("provenance.pub.pem").display()
        );
    p.write("images/rep.yaml", &image);
    let hashes = rebuild(&p, umask, as_nobody, &[]);
    (hashes, p)
}

/// Builds the project's image again (with extra flags); returns the hashes.
fn rebuild(p: &Project, umask: &str, as_nobody: bool, extra: &[&str]) -> BTreeMap<String, String> {
    let out = p.writable("out");
    p.dev_keys_writable();
    let work = p.writable("work");
    let image = p.image("rep");
    let mut args = vec![
        "build",
        image.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--work-dir",
        work.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let r = slotsmith(
        &args,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
        as_nobody,
        Some(umask),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    hashes(&out.join("rep"))
}

/// sha256 of every file under `dir`, subdirectories included (audit/).
fn hashes(dir: &Path) -> BTreeMap<String, String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().strip_prefix(dir).unwrap().display().to_string(),
                sha256(e.path()),
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
    // ... and one provenance key.
    slotsmith_sign::generate(&dir, "provenance").unwrap();
    if rustix::process::geteuid().is_root() {
        // The unprivileged build must own its private keys (mode 0600).
        for f in [
            "",
            "boot.key.pem",
            "boot.pub.pem",
            "update.key.pem",
            "update.cert.pem",
            "provenance.key.pem",
            "provenance.pub.pem",
        ] {
            rustix::fs::chown(
                dir.join(f),
                Some(rustix::process::Uid::from_raw(65534)),
                Some(rustix::process::Gid::from_raw(65534)),
            )
            .unwrap();
        }
    }
    for filesystem in ["squashfs", "ext4"] {
        let (a, _pa) = build_in("022", true, &dir, filesystem);
        let (b, pb) = build_in("077", false, &dir, filesystem);
        // 16 files, the SBOM, the provenance and its key, the reviewer's
        // index and the three audit reports.
        assert_eq!(a.len(), 23, "{filesystem}: {a:?}");
        assert!(a.contains_key("audit/report.sarif"), "{a:?}");
        assert_eq!(a, b, "{filesystem}: two fresh builds differ");
        // A rebuild from the stage cache, and one without it, give the
        // same bytes as the fresh builds.
        assert_eq!(
            rebuild(&pb, "077", false, &[]),
            a,
            "{filesystem}: the cached rebuild differs"
        );
        assert_eq!(
            rebuild(&pb, "077", false, &["--no-cache"]),
            a,
            "{filesystem}: the uncached rebuild differs"
        );
    }
}
