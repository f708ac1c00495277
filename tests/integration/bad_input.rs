//! Bad input gets `file:line:col: key: message` diagnostics, all at once,
//! with exit code 2; build failures exit 1; nothing half-written in out/.

use std::fs;

use crate::support::*;

fn plan(p: &Project, image: &str) -> CliRun {
    slotsmith(
        &["plan", p.image(image).to_str().unwrap()],
        &[],
        false,
        None,
    )
}

#[test]
fn every_diagnostic_at_once_with_positions() {
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    p.write(
        "images/bad.yaml",
        "name: Bad_Name\nversion: 1.0\narch: sparc\nboard: b\nhardware-compatibility: [\"1.0\"]\n\
base:\n  tarball: fixtures/base.tar.gz\nlayout:\n  esp: 16MiB\n  slot: lots\n  data: 16MiB\n  slott: 1GiB\n",
    );
    let r = plan(&p, "bad");
    assert_eq!(r.code, 2, "{}", r.stderr);
    let want = [
        "images/bad.yaml:1:7: name: must be 1 to 63 characters",
        "images/bad.yaml:2:10: version: invalid type: floating point `1.0`, expected a string",
        "images/bad.yaml:3:7: arch: unknown architecture 'sparc' (expected x86-64 or arm64)",
        "images/bad.yaml:10:9: layout.slot: 'lots' is not a size",
        "images/bad.yaml:12:3: layout.slott: unknown key 'slott'",
    ];
    for w in want {
        assert!(
            r.stderr.lines().any(|l| l.starts_with(w)),
            "missing {w:?} in:\n{}",
            r.stderr
        );
    }
    assert!(
        r.stderr.contains("error: 5 problem(s) in the inputs"),
        "{}",
        r.stderr
    );
}

#[test]
fn malformed_yaml_has_a_position() {
    let p = Project::new();
    p.write("images/broken.yaml", "name: x\nlayers: [a, b\nversion: 1\n");
    let r = plan(&p, "broken");
    assert_eq!(r.code, 2);
    let first = r.stderr.lines().next().unwrap();
    assert!(
        first.starts_with("images/broken.yaml:") && first.contains("invalid yaml"),
        "{}",
        r.stderr
    );
    let pos: Vec<&str> = first.splitn(4, ':').collect();
    assert!(
        pos[1].parse::<usize>().unwrap() >= 2,
        "line number in {first}"
    );
}

#[test]
fn control_characters_are_rejected() {
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    let text = fixture_image("ctl", "fixtures/base.tar.gz", &[], "squashfs", "16MiB")
        .replace("board: test-board", "board: \"test\\nboard=evil\"");
    p.write("images/ctl.yaml", &text);
    let r = plan(&p, "ctl");
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("images/ctl.yaml:4:8: board: control character '\\n' is not allowed"),
        "{}",
        r.stderr
    );
}

#[test]
fn layer_rules_are_load_errors() {
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    layer(&p, "meta-a", "a", 5, "depends: [\"missing\"]\n");
    p.write("layers/meta-a/files/etc/motd", "a\n");
    layer(&p, "meta-b", "b", 5, "");
    p.write("layers/meta-b/files/etc/motd", "b\n");
    p.write(
        "layers/meta-old/conf/layer.yaml",
        "collection: old\npriority: 1\nseries-compat: [sumo]\n",
    );
    p.write(
        "images/l.yaml",
        &fixture_image(
            "l",
            "fixtures/base.tar.gz",
            &["meta-a", "meta-b", "meta-old", "meta-none"],
            "squashfs",
            "16MiB",
        ),
    );
    let r = plan(&p, "l");
    assert_eq!(r.code, 2);
    for w in [
        "layers/meta-a/conf/layer.yaml:5:10: depends: layer meta-a depends on collection 'missing'",
        "layers/meta-b/conf/layer.yaml:2:11: priority: layers meta-a and meta-b both write /etc/motd with the same priority 5",
        "layers/meta-old/conf/layer.yaml:3:16: series-compat: layer is compatible with series [sumo], but this slotsmith is series 'anvil'",
        "images/l.yaml:13:5: layers[3]: no layer at layers/meta-none",
    ] {
        assert!(r.stderr.contains(w), "missing {w:?} in:\n{}", r.stderr);
    }
}

#[test]
fn oversize_rootfs_names_both_sizes_and_leaves_out_untouched() {
    let p = Project::new();
    // 6 MiB of incompressible data cannot fit a 4 MiB slot.
    let mut data = vec![0u8; 6 << 20];
    let mut x = 0x1234_5678_9abc_def1u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    {
        let f = fs::File::create(p.path().join("fixtures/big.tar")).unwrap();
        let mut b = tar::Builder::new(f);
        let mut h = tar::Header::new_ustar();
        h.set_path("blob").unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
        b.finish().unwrap();
    }
    p.write(
        "images/big.yaml",
        &fixture_image("big", "fixtures/big.tar", &[], "squashfs", "4MiB"),
    );
    let out = p.path().join("out");
    let r = slotsmith(
        &[
            "build",
            p.image("big").to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--work-dir",
            p.path().join("work").to_str().unwrap(),
        ],
        &[],
        false,
        None,
    );
    // The input alone decides it: an input error at layout.slot (exit 2).
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("images/big.yaml:15:9: layout.slot: "),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("but its slot holds only 4MiB (layout.slot in images/big.yaml)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("the rootfs image is 6.0MiB"),
        "{}",
        r.stderr
    );
    // Nothing new or half-written under out/.
    let left: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in out/: {left:?}");
}

#[test]
fn missing_tool_names_its_package() {
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    p.write(
        "images/t.yaml",
        &fixture_image("t", "fixtures/base.tar.gz", &[], "squashfs", "16MiB"),
    );
    let out = p.path().join("out");
    let r = slotsmith(
        &[
            "build",
            p.image("t").to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--work-dir",
            p.path().join("work").to_str().unwrap(),
        ],
        &[("PATH", "/nonexistent")],
        false,
        None,
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("tar2sqfs not found: install the Debian package squashfs-tools-ng"),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
}
