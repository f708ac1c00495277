//! `insta` snapshots of the plan of every `images/*.yaml`, and the plan's
//! purity: the same inputs always give the same plan and plan hash.

use crate::support::repo_root;

#[test]
fn every_image_plan_is_snapshotted() {
    let mut n = 0;
    // Rooted at images/: the walk follows symlinks, and layers hold
    // absolute ones (systemd unit links) that only resolve in an image.
    insta::glob!(repo_root().join("images"), "*.yaml", |path| {
        let loaded = slotsmith::load::load_image(path).unwrap_or_else(|d| panic!("{d}"));
        // The environment's SOURCE_DATE_EPOCH must not leak into snapshots.
        let plan = slotsmith::plan::plan(&loaded, None).unwrap_or_else(|d| panic!("{d}"));
        let again =
            slotsmith::plan::plan(&slotsmith::load::load_image(path).unwrap(), None).unwrap();
        assert_eq!(plan.hash(), again.hash(), "planning is deterministic");
        insta::assert_json_snapshot!(plan);
        n += 1;
    });
    assert!(n >= 1, "no images/*.yaml found");
}

#[test]
fn cli_plan_prints_the_same_plan() {
    let r = crate::support::slotsmith(
        &["plan", "demo"],
        &[("SOURCE_DATE_EPOCH", "1735689600")],
        false,
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let printed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let loaded = slotsmith::load::load_image(&repo_root().join("images/demo.yaml")).unwrap();
    let plan = slotsmith::plan::plan(&loaded, None).unwrap();
    assert_eq!(printed, serde_json::to_value(&plan).unwrap());
    // SOURCE_DATE_EPOCH from the environment wins over the image file.
    let r = crate::support::slotsmith(
        &["plan", "demo"],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
        false,
        None,
    );
    let printed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(printed["source_date_epoch"], 1700000000);
}
