//! cargo-fuzz target: the image loader on arbitrary bytes, with the
//! repository's layers and policies (read only). The stable twin is
//! crates/slotsmith/tests/fuzz_yaml.rs; both call `decode` then
//! `parse_image` and check the same invariants.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use slotsmith::load::parse_image;
use slotsmith_yaml::escape::needs_escape;
use slotsmith_yaml::read::decode;

fuzz_target!(|bytes: &[u8]| {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shown = "images/fuzz.yaml";
    let res = decode(Path::new(shown), bytes).and_then(|t| parse_image(&root, shown, t));
    if let Err(d) = res {
        for x in d.iter() {
            assert!(
                x.file != Path::new(shown) || x.line >= 1,
                "no position: {x}"
            );
        }
        let rendered = d.to_string();
        assert!(rendered
            .split('\n')
            .all(|l| !l.chars().any(|c| c != '\\' && needs_escape(c))));
    }
});
