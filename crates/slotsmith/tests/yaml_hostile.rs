//! Hostile bytes in image and layer inputs reach diagnostics only escaped
//! (issue 8, defect 8), and oversize inputs are refused at once naming the
//! file and the limit (defect 9), through the real loader on a project in a
//! temporary directory.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use slotsmith::load::load_image;
use slotsmith_yaml::escape::needs_escape;

/// An erase-screen, a right-to-left override and a C1 CSI, as YAML
/// double-quoted escapes and as raw UTF-8 bytes (for file names).
const HOSTILE_YAML: &str = r#"\e[2J\u202E\x9b31m"#;
const HOSTILE_BYTES: &[u8] = b"\x1b[2J\xe2\x80\xae\xc2\x9b31m";

fn assert_clean(rendered: &str) {
    for line in rendered.split('\n') {
        let bad: Vec<char> = line
            .chars()
            .filter(|&c| c != '\\' && needs_escape(c))
            .collect();
        assert!(bad.is_empty(), "raw {bad:?} in rendered line {line:?}");
    }
}

fn image(layer: &str, extra: &str) -> String {
    format!(
        "name: h\nversion: 1.0.0\narch: x86-64\nboard: b\nhardware-compatibility: [\"1.0\"]\n\
         base:\n  debian:\n    suite: bookworm\nkernel:\n  from-rootfs: true\n\
         layers: [{layer}]\nlayout:\n  esp: 64MiB\n  slot: 1GiB\n  data: 64MiB\n{extra}"
    )
}

#[test]
fn keys_values_file_names_and_layer_paths_reach_diagnostics_only_escaped() {
    let p = tempfile::tempdir().unwrap();
    let root = p.path();
    std::fs::create_dir_all(root.join("images")).unwrap();
    // A layer whose conf has a hostile key and value, and whose files/
    // holds a file with a hostile name.
    let layer = root.join("layers/meta-h");
    std::fs::create_dir_all(layer.join("conf")).unwrap();
    std::fs::create_dir_all(layer.join("files/etc")).unwrap();
    let mut name = b"x".to_vec();
    name.extend_from_slice(HOSTILE_BYTES);
    std::fs::write(layer.join("files/etc").join(OsStr::from_bytes(&name)), "x").unwrap();
    std::fs::write(
        layer.join("conf/layer.yaml"),
        format!(
            "collection: \"c{HOSTILE_YAML}\"\npriority: 5\nversion: 1\nseries-compat: [anvil]\n\"k{HOSTILE_YAML}\": 1\n"
        ),
    )
    .unwrap();
    // An image file with a hostile name, key and value.
    let mut file = b"images/i".to_vec();
    file.extend_from_slice(HOSTILE_BYTES);
    file.extend_from_slice(b".yaml");
    let path = root.join(OsStr::from_bytes(&file));
    // An unknown key does not stop the load, so the layer is read too.
    std::fs::write(&path, image("meta-h", &format!("\"k{HOSTILE_YAML}\": 1\n"))).unwrap();
    // A bad value stops the image before its layers: a second image.
    let values = root.join("images/v.yaml");
    std::fs::write(
        &values,
        image("meta-h", &format!("profile: \"p{HOSTILE_YAML}\"\n")),
    )
    .unwrap();

    let err = load_image(&path).unwrap_err();
    let mut rendered = err.to_string();
    rendered.push('\n');
    rendered.push_str(&load_image(&values).unwrap_err().to_string());
    assert_clean(&rendered);
    // Each source of hostile bytes is present, escaped: the image file name,
    // its key and value, the layer's key and value, the layer file's path.
    for want in [
        "images/i\\x1b[2J\\u{202e}\\u{9b}31m.yaml",
        ": k\\x1b[2J\\u{202e}\\u{9b}31m: unknown key",
        "images/v.yaml:16:10: profile: unknown profile 'p\\x1b[2J\\u{202e}\\u{9b}31m'",
        "layers/meta-h/conf/layer.yaml:5:1: k\\x1b[2J\\u{202e}\\u{9b}31m: unknown key",
        "layers/meta-h/conf/layer.yaml:1:13: collection: 'c\\x1b[2J\\u{202e}\\u{9b}31m'",
        "etc/x\\x1b[2J\\u{202e}\\u{9b}31m",
    ] {
        assert!(rendered.contains(want), "{want} missing in:\n{rendered}");
    }
    assert!(err.len() >= 5, "{rendered}");
}

#[test]
fn an_oversize_image_or_layer_file_is_refused_naming_the_limit() {
    let p = tempfile::tempdir().unwrap();
    let root = p.path();
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(root.join("layers/meta-big/conf")).unwrap();
    let padding = "# padding\n".repeat(200_000);
    std::fs::write(
        root.join("layers/meta-big/conf/layer.yaml"),
        format!("collection: big\npriority: 5\nversion: 1\n{padding}"),
    )
    .unwrap();
    std::fs::write(root.join("images/ok.yaml"), image("meta-big", "")).unwrap();
    std::fs::write(root.join("images/big.yaml"), image("meta-big", &padding)).unwrap();

    let start = Instant::now();
    let err = load_image(&root.join("images/big.yaml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "images/big.yaml: is larger than the 1 MiB limit for this input"
    );
    let err = load_image(&root.join("images/ok.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layers/meta-big/conf/layer.yaml: is larger than the 1 MiB limit"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn invalid_utf8_in_an_image_has_a_position() {
    let p = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(p.path().join("images")).unwrap();
    let path = p.path().join("images/u.yaml");
    std::fs::write(&path, b"name: h\nversion: 1.0.\xff\n").unwrap();
    let err = load_image(&path).unwrap_err().to_string();
    assert!(
        err.starts_with("images/u.yaml:2:14: not valid UTF-8 (bytes \\xff)"),
        "{err}"
    );
    assert!(Path::new(&path).exists());
}

#[test]
fn ten_thousand_unknown_keys_in_an_image_give_fifty_lines_and_a_count() {
    let p = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(p.path().join("images")).unwrap();
    let path = p.path().join("images/many.yaml");
    let keys: String = (0..10_000).map(|i| format!("k{i:05}: 1\n")).collect();
    std::fs::write(&path, image("meta-none", &keys)).unwrap();
    let start = Instant::now();
    let err = load_image(&path).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(err.len() > 10_000, "{}", err.len());
    let rendered = err.to_string();
    let lines: Vec<&str> = rendered.lines().collect();
    assert_eq!(lines.len(), 51, "{rendered}");
    assert!(lines[50].starts_with("... and ") && lines[50].ends_with(" more problem(s)"));
}
