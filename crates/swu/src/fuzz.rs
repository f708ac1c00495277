//! Entry points of the `cpio_read` and `swdesc_parse` fuzz targets and
//! their stable twins (`tests/fuzz.rs`). Beyond "no panic", each checks
//! the invariants a reader of hostile bytes must keep: every message is
//! printable (untrusted bytes escaped), what the cpio reader accepts lies
//! inside the input, and what the sw-description parser accepts renders
//! back to text that parses to the same description.

use crate::{read_index, read_swu_from, SwDescription};
use std::collections::HashSet;
use std::io::Cursor;

/// The `.swu` container reader: the cpio index, then the whole `.swu`
/// check (member order, sw-description, payload hashes) with the
/// signature check stubbed out, so mutations reach the parser.
pub fn cpio_read(input: &[u8]) {
    match read_index(Cursor::new(input)) {
        Ok(entries) => {
            let mut names = HashSet::new();
            for e in &entries {
                let end = e.offset.checked_add(e.size);
                assert!(
                    end.is_some_and(|end| end <= input.len() as u64),
                    "entry {e:?} lies outside the {}-byte input",
                    input.len()
                );
                assert!(names.insert(&e.name), "duplicate entry {e:?} accepted");
            }
        }
        Err(e) => check_text(&format!("{e:#}")),
    }
    if let Err(e) = read_swu_from(Cursor::new(input), |_, _| Ok(())) {
        check_text(&format!("{e:#}"));
    }
}

/// The strict sw-description parser on arbitrary text.
pub fn swdesc_parse(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    match SwDescription::parse(text) {
        Ok(d) => {
            let again = d
                .to_libconfig()
                .expect("a parsed description renders (parse validates by rendering)");
            let back = SwDescription::parse(&again).expect("a rendered description parses");
            assert_eq!(back, d, "render and parse do not round trip");
        }
        Err(e) => check_text(&format!("{e:#}")),
    }
}

fn check_text(text: &str) {
    if let Some(c) = text
        .chars()
        .find(|&c| c != '\\' && slotsmith_yaml::escape::needs_escape(c))
    {
        panic!("unescaped {c:?} in message: {text:?}");
    }
}
