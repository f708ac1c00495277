//! The YAML reader against hostile input (issue 8, defects 8, 9 and 10):
//! untrusted bytes reach a terminal only escaped, diagnostics and memory
//! stay bounded whatever the input, and positions are right for duplicate
//! keys, a byte-order mark and invalid UTF-8.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use slotsmith_yaml::diag::{Diagnostics, MAX_SHOWN};
use slotsmith_yaml::escape::needs_escape;
use slotsmith_yaml::read::{read_yaml, MAX_YAML_BYTES};
use slotsmith_yaml::yaml::{Doc, Reader};

#[global_allocator]
static ALLOC: slotsmith_fuzzing::CountingAlloc = slotsmith_fuzzing::CountingAlloc;

/// An erase-screen, a right-to-left override and a C1 CSI (the 8-bit form of
/// ESC [), as YAML double-quoted escapes.
const HOSTILE_YAML: &str = r#"\e[2J\u202E\x9b31m"#;

/// Asserts that `rendered` holds no control or format character other
/// than the newlines between diagnostics.
fn assert_clean(rendered: &str) {
    for line in rendered.split('\n') {
        let bad: Vec<char> = line
            .chars()
            .filter(|&c| c != '\\' && needs_escape(c))
            .collect();
        assert!(bad.is_empty(), "raw {bad:?} in rendered line {line:?}");
    }
}

/// Runs `f` with the allocation bound `limit`, through the fuzzing
/// harness's counting allocator (0 mutations: only this one input).
fn within(limit: usize, f: impl Fn()) {
    slotsmith_fuzzing::exercise_with_limit("yaml_limits", &[Vec::new()], 0, limit, |_| f());
}

#[test]
fn keys_values_and_file_names_reach_diagnostics_only_escaped() {
    let file = Path::new(OsStr::from_bytes(
        b"images/\x1b[2J\xe2\x80\xae\xc2\x9b31m\xff.yaml",
    ));
    let text = format!(
        "\"k{HOSTILE_YAML}\": 1\nname: \"v{HOSTILE_YAML}\"\ncount: \"c{HOSTILE_YAML}\"\n\"{HOSTILE_YAML}\":\n  \"{HOSTILE_YAML}\": 2\n"
    );
    let doc = Doc::parse(file, &text).unwrap();
    let mut r = Reader::new(&doc);
    let mut m = r.map("", &doc.value, &["name", "count"]).unwrap();
    let name: Option<String> = r.req(&mut m, "name");
    // A loader echoing a value raw in its own message, as many do.
    r.error(
        "name",
        format!("'{}' is not a valid name", name.unwrap_or_default()),
    );
    let _: Option<u64> = r.req(&mut m, "count");
    r.finish(m);
    let diags = r.diags.sorted();
    assert!(diags.len() >= 5, "{diags}");
    let rendered = diags.to_string();
    assert_clean(&rendered);
    for escaped in ["\\x1b[2J", "\\u{202e}", "\\u{9b}31m", "\\xff.yaml"] {
        assert!(
            rendered.contains(escaped),
            "{escaped} missing in:\n{rendered}"
        );
    }
    // Every diagnostic, one by one, as a caller printing them singly would.
    for d in diags.iter() {
        assert_clean(&d.to_string());
    }
}

#[test]
fn ten_thousand_unknown_keys_give_fifty_lines_and_a_count() {
    let text: String = (0..10_000).map(|i| format!("k{i:05}: 1\n")).collect();
    within(64 << 20, || {
        let doc = Doc::parse(Path::new("x.yaml"), &text).unwrap();
        let mut r = Reader::new(&doc);
        let m = r.map("", &doc.value, &["name"]).unwrap();
        r.finish(m);
        let diags = r.diags.sorted();
        assert_eq!(diags.len(), 10_000);
        assert!(diags.iter().count() <= slotsmith_yaml::diag::MAX_KEPT);
        let rendered = diags.to_string();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines.len(), MAX_SHOWN + 1, "{rendered}");
        assert!(
            lines[0].starts_with("x.yaml:1:1: k00000: unknown key"),
            "{}",
            lines[0]
        );
        assert!(
            lines[49].starts_with("x.yaml:50:1: k00049:"),
            "{}",
            lines[49]
        );
        assert_eq!(lines[50], "... and 9950 more problem(s)");
    });
}

#[test]
fn the_kept_diagnostics_are_the_first_in_sorted_order() {
    let mut d = Diagnostics::default();
    // Pushed last line first: the bound must keep the smallest, not the
    // first pushed.
    for line in (1..=5000).rev() {
        d.push(slotsmith_yaml::diag::Diagnostic {
            file: "x.yaml".into(),
            line,
            col: 1,
            key: String::new(),
            message: "bad".into(),
        });
    }
    let d = d.sorted();
    assert_eq!(d.len(), 5000);
    assert_eq!(d.iter().next().map(|x| x.line), Some(1));
    assert!(d.to_string().ends_with("... and 4950 more problem(s)"));
}

#[test]
fn a_50_mb_file_is_refused_quickly_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let line = b"unknown-key-with-a-long-name: value\n";
    let mut text = Vec::with_capacity(50 << 20);
    while text.len() < 50 << 20 {
        text.extend_from_slice(line);
    }
    std::fs::write(&path, &text).unwrap();
    drop(text);
    within(4 << 20, || {
        let start = Instant::now();
        let e = read_yaml(&path, Path::new("images/huge.yaml")).unwrap_err();
        assert!(start.elapsed() < Duration::from_millis(500));
        let msg = e.to_string();
        assert!(
            msg.starts_with("images/huge.yaml: ") && msg.contains("1 MiB limit"),
            "{msg}"
        );
    });
}

#[test]
fn an_endless_device_is_refused_after_the_limit() {
    within(4 << 20, || {
        let start = Instant::now();
        let e = read_yaml(Path::new("/dev/zero"), Path::new("/dev/zero")).unwrap_err();
        assert!(start.elapsed() < Duration::from_millis(500));
        assert!(e.to_string().contains("1 MiB limit"), "{e}");
    });
}

#[test]
fn the_limit_is_inclusive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.yaml");
    let mut text = b"a: 1\n".to_vec();
    text.resize(MAX_YAML_BYTES as usize, b'\n');
    std::fs::write(&path, &text).unwrap();
    assert!(read_yaml(&path, Path::new("x.yaml")).is_ok());
    text.push(b'\n');
    std::fs::write(&path, &text).unwrap();
    assert!(read_yaml(&path, Path::new("x.yaml")).is_err());
}

/// `n` levels of anchors, each a list of ten aliases of the previous one.
fn billion_laughs(levels: usize) -> String {
    let mut s = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..levels {
        let p = i - 1;
        s.push_str(&format!(
            "l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
        ));
    }
    s
}

#[test]
fn aliases_are_refused_before_they_expand() {
    let text = billion_laughs(10);
    within(8 << 20, || {
        let start = Instant::now();
        let e = Doc::parse(Path::new("x.yaml"), &text).unwrap_err();
        assert!(start.elapsed() < Duration::from_millis(500));
        let d = e.iter().next().unwrap();
        assert_eq!((d.line, d.col), (2, 10), "{d}");
        assert!(d.message.contains("aliases"), "{d}");
    });
    // An anchor alone expands nothing and is allowed.
    assert!(Doc::parse(Path::new("x.yaml"), "a: &x 1\n").is_ok());
}

#[test]
fn deep_nesting_is_refused_in_every_style() {
    let flow = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let unclosed = "{a: ".repeat(200_000);
    let block: String = (0..100)
        .map(|i| format!("{}k:\n", "  ".repeat(i)))
        .collect();
    for text in [flow, unclosed, block] {
        within(32 << 20, || {
            let start = Instant::now();
            let e = Doc::parse(Path::new("x.yaml"), &text).unwrap_err();
            assert!(start.elapsed() < Duration::from_secs(1));
            let d = e.iter().next().unwrap();
            assert!(d.line >= 1, "{d}");
            // Ours, or yaml-rust2's own limit on flow-level lookahead.
            assert!(
                d.message.contains("nested deeper than 64")
                    || d.message.contains("recursion limit exceeded"),
                "{d}"
            );
        });
    }
    // 64 levels are fine.
    let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
    assert!(Doc::parse(Path::new("x.yaml"), &ok).is_ok());
}

#[test]
fn long_keys_above_many_children_are_refused_not_indexed() {
    // One explicit key of 512 KiB (implicit keys stop at 1024 characters)...
    let mut one = format!("? {}\n:\n", "k".repeat(512 << 10));
    // ...or sixty nested keys of 1000 characters each.
    let mut nested = String::new();
    for depth in 0..60 {
        nested.push_str(&format!(
            "{}{}{depth:02}:\n",
            "  ".repeat(depth),
            "k".repeat(998)
        ));
    }
    for i in 0..300 {
        one.push_str(&format!("  c{i}: 1\n"));
        nested.push_str(&format!("{}c{i}: 1\n", "  ".repeat(60)));
    }
    for text in [one, nested] {
        assert!(text.len() < MAX_YAML_BYTES as usize);
        within(64 << 20, || {
            let e = Doc::parse(Path::new("x.yaml"), &text).unwrap_err();
            assert!(e.to_string().contains("too many or too long keys"), "{e}");
        });
    }
}

#[test]
fn a_duplicate_key_is_reported_at_the_duplicate() {
    let text = "a: 1\nb:\n  x: 1\n  y: 2\n  x: 3\nc: [{p: 1, p: 2}]\n";
    let e = Doc::parse(Path::new("x.yaml"), text).unwrap_err();
    assert_eq!(
        e.to_string(),
        "x.yaml:5:3: b.x: duplicate key 'x' (first at line 3)\n\
         x.yaml:6:12: c[0].p: duplicate key 'p' (first at line 6)"
    );
    // The same key in two different mappings is no duplicate, nor is a
    // root key spelt like a nested path.
    assert!(Doc::parse(Path::new("x.yaml"), "a: {x: 1}\nb: {x: 1}\na.x: 2\n").is_ok());
}

#[test]
fn a_byte_order_mark_is_accepted_and_positions_stay_right() {
    let doc = Doc::parse(Path::new("x.yaml"), "\u{feff}name: x\nzz: 1\n").unwrap();
    assert_eq!(doc.key_position("name"), (1, 1));
    assert_eq!(doc.position("name"), (1, 7));
    let mut r = Reader::new(&doc);
    let mut m = r.map("", &doc.value, &["name"]).unwrap();
    let name: Option<String> = r.req(&mut m, "name");
    assert_eq!(name.as_deref(), Some("x"));
    r.finish(m);
    assert!(r
        .diags
        .to_string()
        .starts_with("x.yaml:2:1: zz: unknown key"));
    // Through bytes too, as files are read.
    assert!(Doc::parse_bytes(Path::new("x.yaml"), b"\xef\xbb\xbfa: 1\n").is_ok());
}

#[test]
fn invalid_utf8_is_reported_at_the_first_bad_byte() {
    let e =
        Doc::parse_bytes(Path::new("x.yaml"), b"a: 1\nname: \"ok \xc3\xa9 \xff\"\n").unwrap_err();
    let d = e.iter().next().unwrap();
    assert_eq!((d.line, d.col), (2, 13), "{d}");
    assert!(
        d.to_string()
            .starts_with("x.yaml:2:13: not valid UTF-8 (bytes \\xff)"),
        "{d}"
    );
}

#[test]
fn a_second_document_is_reported_where_it_starts() {
    let e = Doc::parse(Path::new("x.yaml"), "a: 1\n---\nb: 2\n").unwrap_err();
    let d = e.iter().next().unwrap();
    assert_eq!(d.line, 2, "{d}");
    assert!(d.message.contains("second yaml document"), "{d}");
}

#[test]
fn every_syntax_error_has_a_line() {
    for text in [
        "a: [1, 2\n",
        "a: b: c\n",
        "\t- x\n",
        "a: \"x\n",
        "- a\nb: 1\n",
        "\0",
    ] {
        let e = Doc::parse(Path::new("x.yaml"), text).unwrap_err();
        for d in e.iter() {
            assert!(d.line >= 1 && d.col >= 1, "{text:?}: {d}");
            assert!(d.message.starts_with("invalid yaml"), "{text:?}: {d}");
        }
    }
}

#[test]
fn an_unclosed_flow_list_is_reported_after_its_start() {
    let e = Doc::parse(Path::new("x.yaml"), "name: x\nlayers: [a, b\nversion: 1\n").unwrap_err();
    let d = e.iter().next().unwrap();
    assert!(d.line >= 2 && d.message.starts_with("invalid yaml"), "{d}");
}
