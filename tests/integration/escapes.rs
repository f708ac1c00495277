//! Malicious tarballs and layers cannot read or write outside the work
//! directory: `..` traversal, a symlinked parent, an absolute symlink
//! followed by a file under it, and hardlinks to outside paths. Each is
//! rejected with its own message, and nothing appears in out/.

use std::fs;
use std::path::Path;

use crate::support::*;

enum E {
    File(&'static str),
    Dir(&'static str),
    Symlink(&'static str, String),
    Hardlink(&'static str, String),
}

fn write_tar(path: &Path, entries: &[E]) {
    let f = fs::File::create(path).unwrap();
    let mut b = tar::Builder::new(f);
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        let (name, kind, link) = match e {
            E::File(n) => (*n, tar::EntryType::Regular, None),
            E::Dir(n) => (*n, tar::EntryType::Directory, None),
            E::Symlink(n, t) => (*n, tar::EntryType::Symlink, Some(t.clone())),
            E::Hardlink(n, t) => (*n, tar::EntryType::Link, Some(t.clone())),
        };
        h.set_entry_type(kind);
        let data: &[u8] = if kind == tar::EntryType::Regular {
            b"pwned\n"
        } else {
            b""
        };
        h.set_size(data.len() as u64);
        // Write raw names: the tar crate's setters refuse `..`, an attacker's
        // tool does not.
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name = [0; 100];
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = &link {
                gnu.linkname = [0; 100];
                gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.finish().unwrap();
}

fn build(p: &Project, name: &str) -> CliRun {
    let out = p.writable("out");
    p.dev_keys_writable();
    let work = p.writable("work");
    slotsmith(
        &[
            "build",
            p.image(name).to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--quiet",
        ],
        &[],
        true,
        None,
    )
}

#[test]
fn malicious_tarballs_are_rejected() {
    let victim_dir = tempfile::Builder::new()
        .prefix("slotsmith-victim-")
        .tempdir()
        .unwrap();
    let victim = victim_dir.path().to_str().unwrap().to_string();
    let cases: Vec<(&str, Vec<E>, String)> = vec![
        (
            "dotdot",
            vec![
                E::Dir("./"),
                E::File("../../../../../../../../tmp/slotsmith-pwned"),
            ],
            "path escapes the rootfs".into(),
        ),
        (
            "abs-dotdot",
            vec![E::File("/etc/../../tmp/slotsmith-pwned")],
            "path escapes the rootfs".into(),
        ),
        (
            "symlinked-parent",
            vec![
                E::Symlink("etc", "/".into()),
                E::File("etc/slotsmith-pwned"),
            ],
            "/etc/slotsmith-pwned is beneath symlink /etc -> /".into(),
        ),
        (
            "absolute-symlink",
            vec![E::Symlink("lib", victim.clone()), E::File("lib/pwned")],
            format!("/lib/pwned is beneath symlink /lib -> {victim}"),
        ),
        (
            "hardlink-outside",
            vec![E::Hardlink("shadow", "../../../../etc/shadow".into())],
            "hardlink target: path escapes the rootfs".into(),
        ),
        (
            "hardlink-absent",
            vec![E::Hardlink("shadow", "/etc/shadow".into())],
            "hardlink target /etc/shadow does not exist".into(),
        ),
    ];
    for (name, entries, message) in cases {
        let p = Project::new();
        write_tar(&p.path().join(format!("fixtures/{name}.tar")), &entries);
        p.write(
            &format!("images/{name}.yaml"),
            &fixture_image(
                name,
                &format!("fixtures/{name}.tar"),
                &[],
                "squashfs",
                "16MiB",
            ),
        );
        let r = build(&p, name);
        assert_eq!(r.code, 1, "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains(&message),
            "{name}: expected {message:?} in:\n{}",
            r.stderr
        );
        assert!(
            r.stderr.contains(&format!("fixtures/{name}.tar")),
            "{name}: names the archive:\n{}",
            r.stderr
        );
        assert!(
            !Path::new("/tmp/slotsmith-pwned").exists(),
            "{name} escaped"
        );
        assert!(!Path::new("/slotsmith-pwned").exists(), "{name} escaped");
        assert_eq!(
            fs::read_dir(victim_dir.path()).unwrap().count(),
            0,
            "{name} wrote into the victim directory"
        );
        assert_eq!(
            fs::read_dir(p.path().join("out")).unwrap().count(),
            0,
            "{name} left outputs"
        );
    }
}

#[test]
fn malicious_layers_are_rejected() {
    // A traversal in a declared path or a removal is a load error (exit 2).
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    layer(
        &p,
        "meta-evil",
        "evil",
        5,
        "files:\n  /../../etc/passwd:\n    mode: \"0644\"\nremove:\n  - /etc/../../root\n",
    );
    p.write(
        "images/e.yaml",
        &fixture_image(
            "e",
            "fixtures/base.tar.gz",
            &["meta-evil"],
            "squashfs",
            "16MiB",
        ),
    );
    let r = build(&p, "e");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("layers/meta-evil/conf/layer.yaml:6:3: files./../../etc/passwd: path escapes the rootfs"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("layers/meta-evil/conf/layer.yaml:9:5: remove[0]: path escapes the rootfs"),
        "{}",
        r.stderr
    );

    // A symlinked directory in files/ is data: the host directory it points
    // to is never read, and nothing can be put beneath it.
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    layer(
        &p,
        "meta-link",
        "link",
        5,
        "files:\n  /opt/evil:\n    type: directory\n",
    );
    fs::create_dir_all(p.path().join("layers/meta-link/files")).unwrap();
    std::os::unix::fs::symlink("/etc", p.path().join("layers/meta-link/files/opt")).unwrap();
    std::os::unix::fs::symlink(
        "/etc/shadow",
        p.path().join("layers/meta-link/files/shadow-link"),
    )
    .unwrap();
    p.write(
        "images/s.yaml",
        &fixture_image(
            "s",
            "fixtures/base.tar.gz",
            &["meta-link"],
            "squashfs",
            "16MiB",
        ),
    );
    let r = build(&p, "s");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("/opt/evil is beneath symlink /opt -> /etc"),
        "{}",
        r.stderr
    );

    // Without the entry beneath it, the symlinks land in the image as links,
    // and no host file content comes with them.
    layer(&p, "meta-link", "link", 5, "");
    let r = build(&p, "s");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ls = run(
        "unsquashfs",
        &[
            "-lln",
            p.path().join("out/s/rootfs.squashfs").to_str().unwrap(),
        ],
    );
    assert!(ls.contains("squashfs-root/opt -> /etc"), "{ls}");
    assert!(
        ls.contains("squashfs-root/shadow-link -> /etc/shadow"),
        "{ls}"
    );
    assert!(!ls.contains("squashfs-root/opt/"), "{ls}");
}
