//! The stage cache, end to end: a rebuild with no change reuses every
//! stage and republishes the same bytes; a changed layer file re-runs the
//! slot image and what follows, not the base; a new signing key re-runs
//! signing and what follows, not the slot image; a corrupted entry is
//! detected and rebuilt; `--no-cache` runs everything.

use std::collections::BTreeMap;
use std::fs;

use crate::support::*;

struct Fx {
    p: Project,
}

impl Fx {
    fn new() -> Fx {
        let p = Project::new();
        base_tarball(&p.path().join("fixtures/base.tar.gz"));
        layer(&p, "meta-x", "x", 5, "");
        p.write("layers/meta-x/files/etc/product.conf", "v=1\n");
        p.write(
            "images/c.yaml",
            &fixture_image(
                "c",
                "fixtures/base.tar.gz",
                &["meta-x"],
                "squashfs",
                "16MiB",
            ),
        );
        Fx { p }
    }

    /// Builds with `--json`; returns the stage cache outcomes and the
    /// output hashes.
    fn build(&self, extra: &[&str]) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let out = self.p.path().join("out");
        fs::create_dir_all(&out).unwrap();
        let mut args = vec![
            "build".to_string(),
            self.p.image("c").to_string_lossy().into_owned(),
            "--out-dir".into(),
            out.to_string_lossy().into_owned(),
            "--work-dir".into(),
            self.p.path().join("work").to_string_lossy().into_owned(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = slotsmith(&argv, &[], false, None);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let summary: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let cache = summary["cache"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        (cache, tree_hashes(&out.join("c")))
    }
}

fn outcome(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// sha256 of every file under `dir`, by relative path.
pub fn tree_hashes(dir: &std::path::Path) -> BTreeMap<String, String> {
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
fn rebuilds_redo_only_what_changed() {
    let fx = Fx::new();
    let all_miss = outcome(&[
        ("boot", "miss"),
        ("disk", "miss"),
        ("rootfs", "miss"),
        ("update", "miss"),
    ]);
    let (c1, first) = fx.build(&[]);
    assert_eq!(c1, all_miss);
    // No change: every stage from the cache, the same bytes published.
    let (c2, second) = fx.build(&[]);
    assert_eq!(
        c2,
        outcome(&[
            ("boot", "hit"),
            ("disk", "hit"),
            ("rootfs", "hit"),
            ("update", "hit")
        ])
    );
    assert_eq!(first, second);
    // --no-cache runs everything, and still gives the same bytes.
    let (c3, third) = fx.build(&["--no-cache"]);
    assert_eq!(
        c3,
        outcome(&[
            ("boot", "off"),
            ("disk", "off"),
            ("rootfs", "off"),
            ("update", "off")
        ])
    );
    assert_eq!(first, third);

    // A changed layer file: the slot image and everything after it.
    fx.p.write("layers/meta-x/files/etc/product.conf", "v=2\n");
    let (c4, fourth) = fx.build(&[]);
    assert_eq!(c4, all_miss);
    assert_ne!(first["rootfs.squashfs"], fourth["rootfs.squashfs"]);

    // A new boot key: signing and what follows re-run, the slot image not.
    fs::remove_dir_all(fx.p.path().join("keys/dev")).unwrap();
    let (c5, fifth) = fx.build(&[]);
    assert_eq!(
        c5,
        outcome(&[
            ("boot", "miss"),
            ("disk", "miss"),
            ("rootfs", "hit"),
            ("update", "miss")
        ])
    );
    assert_eq!(fourth["rootfs.squashfs"], fifth["rootfs.squashfs"]);
    assert_ne!(fourth["boot-a.manifest.sig"], fifth["boot-a.manifest.sig"]);
}

#[test]
fn a_corrupted_cache_entry_is_rebuilt_never_used() {
    let fx = Fx::new();
    let (_, first) = fx.build(&[]);
    // Flip one byte in the middle of the cached slot image, in place (a
    // hard link of the published one, so both change).
    let cached: Vec<_> = walkdir::WalkDir::new(fx.p.path().join("work/.stage-cache/c/rootfs"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() == "rootfs.squashfs")
        .collect();
    assert_eq!(cached.len(), 1);
    let path = cached[0].path();
    let mut bytes = fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    // Write in place, keeping the inode (and so the hard link).
    use std::io::{Seek, SeekFrom, Write};
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(mid as u64)).unwrap();
    f.write_all(&bytes[mid..mid + 1]).unwrap();
    drop(f);
    let out = fx.p.path().join("out");
    let r = slotsmith(
        &[
            "build",
            fx.p.image("c").to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--work-dir",
            fx.p.path().join("work").to_str().unwrap(),
        ],
        &[("CI", "true")],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("cache entry of the rootfs stage is corrupted"),
        "{}",
        r.stderr
    );
    assert_eq!(tree_hashes(&out.join("c")), first);
}
