//! `repro`, end to end on the small fixture image (a tarball base, built
//! in seconds): an unchanged build rebuilds identical; a layer file edited
//! after publishing is named as the changed input, and the first artifact
//! that differs is named with its offset; a byte flipped in a published
//! artifact is found at its exact offset. The rebuild takes nothing from
//! the project's stage cache or base cache. `SHA256SUMS` and `build.json`
//! are compared too, and a record edited to vouch for another file is
//! named; a hostile absolute input is refused unread; a `chmod` of a
//! layer file after publishing is named as a changed mode.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::fixture::build_fixture;
use crate::support::*;

/// Runs `repro` as the build user; `extra` after the output directory.
fn repro(p: &Project, out: &Path, extra: &[&str]) -> CliRun {
    let cache = p.path().join("cache");
    let mut args = vec![
        "repro",
        out.to_str().unwrap(),
        "--project",
        p.path().to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    args.extend(extra);
    slotsmith(&args, &[], true, None)
}

/// The offset of the first byte where two files differ (they are small).
fn first_offset(a: &Path, b: &Path) -> u64 {
    let (a, b) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    let n = a.len().min(b.len());
    (0..n).find(|&i| a[i] != b[i]).unwrap_or(n) as u64
}

fn names(record: &serde_json::Value) -> Vec<(String, String)> {
    record["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn repro_is_identical_then_names_an_edited_layer_file_and_the_first_differing_artifact() {
    let (p, out, record) = build_fixture("squashfs");
    let artifacts = names(&record);
    // The record lists what the build read, by hash, sorted.
    let inputs: Vec<&str> = record["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    for want in [
        "fixtures/base.tar.gz",
        "images/fixture-squashfs.yaml",
        "layers/meta-core/conf/layer.yaml",
        "layers/meta-core/files/etc/motd",
        "layers/meta-core/files/usr/bin/tool",
    ] {
        assert!(inputs.contains(&want), "{want} not in {inputs:?}");
    }
    assert!(inputs.windows(2).all(|w| w[0] < w[1]), "{inputs:?}");
    assert_eq!(record["lock_sha256"], serde_json::Value::Null);
    // Layer files carry the mode the image gives them (declared for the
    // tool, from the executable bit for motd).
    let mode = |path: &str| {
        record["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["path"] == path)
            .map(|i| i["mode"].clone())
            .unwrap()
    };
    assert_eq!(mode("layers/meta-core/files/usr/bin/tool"), "0755");
    assert_eq!(mode("layers/meta-core/files/etc/motd"), "0644");
    assert_eq!(mode("fixtures/base.tar.gz"), serde_json::Value::Null);

    let r = repro(&p, &out, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with(&format!("identical: {} artifacts ", artifacts.len()))),
        "{}",
        r.stderr
    );

    // Edited after publishing: named, and the rebuild still runs.
    let motd = "layers/meta-core/files/etc/motd";
    let was = sha256(&p.path().join(motd));
    p.write(motd, "hello from an edited layer\n");
    let now = sha256(&p.path().join(motd));
    let r = repro(&p, &out, &["--json", "--keep"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).expect("--json prints JSON");
    let kept = PathBuf::from(report["project"].as_str().unwrap());
    assert!(
        r.stderr.contains(&format!(
            "{motd} changed since the build: sha256 was {was}, now {now}"
        )),
        "{}",
        r.stderr
    );
    assert_eq!(
        report["changed_inputs"],
        serde_json::json!([{"path": motd, "what": "sha256", "was": was, "now": now}])
    );
    assert_eq!(report["identical"], false);
    assert_eq!(report["artifacts"], artifacts.len());
    // The first differing artifact in build.json order, and where.
    let rebuilt_dir = PathBuf::from(report["rebuilt_dir"].as_str().unwrap());
    let rebuilt: serde_json::Value =
        serde_json::from_slice(&fs::read(rebuilt_dir.join("build.json")).unwrap()).unwrap();
    let rebuilt = names(&rebuilt);
    let first = artifacts
        .iter()
        .find(|(n, sha)| rebuilt.iter().any(|(m, s)| m == n && s != sha))
        .expect("an edited layer file changes some artifact");
    let first_diff = &report["first_difference"];
    assert_eq!(first_diff["kind"], "differs");
    assert_eq!(first_diff["artifact"], first.0.as_str());
    assert_eq!(
        first_diff["offset"],
        first_offset(&out.join(&first.0), &rebuilt_dir.join(&first.0))
    );
    // The rootfs carries the file, so the slot image is among them.
    let rootfs = record["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .find(|n| n.ends_with(".squashfs"))
        .expect("a squashfs artifact");
    assert!(
        report["differences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["artifact"] == rootfs),
        "{report:#}"
    );
    // Nothing came from a cache: every stage ran, in fresh directories
    // inside the temporary project, not the project's work/ and cache/.
    let stages = report["stages"].as_object().unwrap();
    assert!(!stages.is_empty());
    assert!(stages.values().all(|v| v == "off"), "{stages:?}");
    for dir in ["work_dir", "cache_dir"] {
        let d = PathBuf::from(report[dir].as_str().unwrap());
        assert!(d.starts_with(&kept), "{dir} {d:?} outside {kept:?}");
    }
    assert!(kept.join("work").is_dir());
    assert!(!kept.join("work/.stage-cache").exists());
    assert_eq!(
        report["deb_cache"].as_str().unwrap(),
        p.path().join("cache/debs").to_str().unwrap()
    );
    // The signing key was the build's.
    assert_eq!(
        report["boot_key"]["published"],
        report["boot_key"]["rebuilt"]
    );
    fs::remove_dir_all(kept.parent().unwrap()).unwrap();
}

#[test]
fn repro_names_a_tampered_published_artifact_at_its_exact_offset() {
    let (p, out, record) = build_fixture("ext4");
    let image = format!("{}.img", record["image"].as_str().unwrap());
    let path = out.join(&image);
    let offset: u64 = 1_048_576 + 12_345;
    let mut bytes = Vec::new();
    fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    bytes[offset as usize] ^= 0x20;
    fs::write(&path, &bytes).unwrap();
    let r = repro(&p, &out, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let verdict: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("first difference:") || l.starts_with("  also:"))
        .collect();
    // Where it differs from the rebuild, then that it is not the file
    // build.json vouches for.
    let recorded = names(&record)
        .into_iter()
        .find(|(n, _)| *n == image)
        .unwrap()
        .1;
    let size = bytes.len();
    assert_eq!(
        verdict,
        [
            format!("first difference: {image}: differs at byte {offset}"),
            format!(
                "  also: {image}: published file does not match build.json's sha256 \
                 (build.json records {recorded}, {size} bytes; the file has {}, {size} bytes)",
                sha256(&path)
            )
        ],
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!(
            "1 of {} artifacts differ",
            record["artifacts"].as_array().unwrap().len()
        )),
        "{}",
        r.stderr
    );
    assert!(r
        .stderr
        .contains("error: the rebuild of fixture-ext4 differs from "));
}

#[test]
fn repro_refuses_a_record_without_inputs_naming_it() {
    let p = Project::new();
    let out = p.path().join("out/old");
    fs::create_dir_all(&out).unwrap();
    fs::write(
        out.join("build.json"),
        r#"{"schema":1,"image":"old","image_file":"images/old.yaml","plan_sha256":"00",
"source_date_epoch":1,"boot_key":"sha256:00","artifacts":[]}"#,
    )
    .unwrap();
    let r = repro(&p, &out, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{} records no inputs (schema 1, a build by an older slotsmith)",
            out.join("build.json").display()
        )),
        "{}",
        r.stderr
    );
    fs::remove_file(out.join("build.json")).unwrap();
    let r = repro(&p, &out, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "reading the build record {}",
            out.join("build.json").display()
        )),
        "{}",
        r.stderr
    );
}

/// The lines of the verdict (the first difference and the others).
fn verdict(r: &CliRun) -> Vec<&str> {
    r.stderr
        .lines()
        .filter(|l| l.starts_with("first difference:") || l.starts_with("  also:"))
        .collect()
}

#[test]
fn repro_compares_the_record_files_refuses_foreign_inputs_and_names_a_changed_mode() {
    let (p, out, record) = build_fixture("squashfs");
    let n = record["artifacts"].as_array().unwrap().len();
    let sums = out.join("SHA256SUMS");
    let json = out.join("build.json");
    let (sums_text, json_text) = (
        fs::read_to_string(&sums).unwrap(),
        fs::read_to_string(&json).unwrap(),
    );

    // One hex digit of SHA256SUMS edited: named, though every artifact
    // still matches the rebuild.
    let digit = if sums_text.starts_with('0') { "1" } else { "0" };
    fs::write(&sums, format!("{digit}{}", &sums_text[1..])).unwrap();
    let r = repro(&p, &out, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        verdict(&r),
        ["first difference: SHA256SUMS: differs at byte 0"],
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains(&format!("0 of {n} artifacts differ, and SHA256SUMS does ")),
        "{}",
        r.stderr
    );
    fs::write(&sums, &sums_text).unwrap();

    // build.json vouches for another disk image: the artifact is named.
    let image = format!("{}.img", record["image"].as_str().unwrap());
    let (_, sha) = names(&record)
        .into_iter()
        .find(|(name, _)| *name == image)
        .unwrap();
    let forged = format!(
        "{}{}",
        if sha.starts_with('f') { "e" } else { "f" },
        &sha[1..]
    );
    assert_eq!(json_text.matches(&sha).count(), 1);
    fs::write(&json, json_text.replace(&sha, &forged)).unwrap();
    let r = repro(&p, &out, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = verdict(&r);
    assert!(
        v[0].starts_with(&format!(
            "first difference: {image}: published file does not match build.json's sha256 \
             (build.json records {forged}, "
        )),
        "{}",
        r.stderr
    );
    assert!(
        v.iter()
            .any(|l| l.starts_with("  also: build.json: differs at byte ")),
        "{}",
        r.stderr
    );

    // An absolute input the image does not name: refused unread (the
    // record would otherwise make repro read /dev/zero forever).
    let zero = format!(
        r#""inputs": [
    {{
      "path": "/dev/zero",
      "sha256": "{}"
    }},"#,
        "0".repeat(64)
    );
    assert_eq!(json_text.matches(r#""inputs": ["#).count(), 1);
    fs::write(&json, json_text.replace(r#""inputs": ["#, &zero)).unwrap();
    let r = repro(&p, &out, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "input /dev/zero of the build is outside the project and the recorded image \
             does not name it: refusing to read it"
        ),
        "{}",
        r.stderr
    );
    fs::write(&json, &json_text).unwrap();

    // A chmod after publishing: the content is the same, the mode in the
    // image is not, and the mode is named.
    let motd = "layers/meta-core/files/etc/motd";
    fs::set_permissions(p.path().join(motd), fs::Permissions::from_mode(0o755)).unwrap();
    let r = repro(&p, &out, &["--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{motd} changed since the build: mode was 0644, now 0755"
        )),
        "{}",
        r.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&r.stdout).expect("--json prints JSON");
    assert_eq!(
        report["changed_inputs"],
        serde_json::json!([{"path": motd, "what": "mode", "was": "0644", "now": "0755"}])
    );
    let rootfs = names(&record)
        .into_iter()
        .map(|(n, _)| n)
        .find(|n| n.ends_with(".squashfs"))
        .expect("a squashfs artifact");
    assert!(
        report["differences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["artifact"] == rootfs.as_str() && d["kind"] == "differs"),
        "{report:#}"
    );
}
