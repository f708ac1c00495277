//! cargo-fuzz target: one policy file on arbitrary bytes. The stable twin
//! is crates/policy/tests/fuzz.rs; both call `decode` then `parse_policy`
//! and check the same invariants.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use slotsmith_policy::load::parse_policy;
use slotsmith_yaml::escape::needs_escape;
use slotsmith_yaml::read::decode;

fuzz_target!(|bytes: &[u8]| {
    let shown = "policies/fuzz.yaml";
    let res = decode(Path::new(shown), bytes).and_then(|t| parse_policy(shown, t));
    if let Err(d) = res {
        for x in d.iter() {
            assert!(x.line >= 1, "no position: {x}");
        }
        let rendered = d.to_string();
        assert!(rendered
            .split('\n')
            .all(|l| !l.chars().any(|c| c != '\\' && needs_escape(c))));
    }
});
