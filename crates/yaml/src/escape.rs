//! Escaping untrusted text before it reaches a terminal, a log or a report.
//!
//! Keys, values, file names and archive entry names come from input the
//! builder does not trust. Echoed raw, an `ESC [ 2 J` clears the user's
//! terminal, an OSC sequence retitles it or forges a hyperlink, a C1 `CSI`
//! (U+009B) does the same on terminals that honour 8-bit controls, and a
//! bidi override (U+202E) makes `evil.yaml` print as something else. Every
//! untrusted string therefore goes through [`shown`] (or [`shown_bytes`],
//! [`shown_path`]) before it is printed.
//!
//! The output is unambiguous: a backslash is doubled, so every other
//! backslash starts an escape, and the three escape forms never overlap:
//!
//! - `\t`, `\n`, `\r` and `\\` for tab, newline, carriage return, backslash;
//! - `\xNN` (two lowercase hex digits, `NN` < `80`) for the other C0
//!   controls and DEL, and `\xNN` (`NN` >= `80`) for a byte that is not
//!   valid UTF-8 (a valid character is never written as a byte >= `0x80`);
//! - `\u{NNNN}` for C1 controls (U+0080..U+009F) and for format characters
//!   that can reorder, hide or fake text: bidi embeddings, overrides and
//!   isolates, zero-width characters, line and paragraph separators, the
//!   byte-order mark, interlinear annotation marks and tag characters.
//!
//! Every other character, printable ASCII and ordinary Unicode alike, is
//! kept as it is so diagnostics stay readable in any language.

use std::fmt::Write as _;
use std::path::Path;

/// `s` with every character that could control or deceive a terminal escaped
/// (see the module documentation for the exact forms).
pub fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_str(&mut out, s);
    out
}

/// `b` decoded as UTF-8 where it is valid, each invalid byte written as
/// `\xNN`, and the valid parts escaped as [`shown`] does.
pub fn shown_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        push_str(&mut out, chunk.valid());
        for byte in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// A path's raw bytes escaped as [`shown_bytes`] does: file names are bytes on
/// Unix, not necessarily UTF-8, and `Path::display` would replace invalid
/// bytes with U+FFFD, hiding what the name really is.
pub fn shown_path(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    shown_bytes(p.as_os_str().as_bytes())
}

/// Like [`shown`], but a backslash is kept as it is. Applying it to text that
/// already went through [`shown`] changes nothing, so a renderer that cannot
/// know which fragments its caller escaped (a diagnostic message mixing
/// trusted words with `shown(key)`) applies it to everything without
/// escaping anything twice. Its output still holds no control or format
/// character; it is only less unambiguous than [`shown`]'s.
pub fn defang(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s, false);
    out
}

/// [`defang`] for bytes: invalid UTF-8 bytes become `\xNN`.
pub fn defang_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        push_escaped(&mut out, chunk.valid(), false);
        for byte in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// True when `c` is printed escaped: controls and the format characters
/// that can reorder or hide text.
pub fn needs_escape(c: char) -> bool {
    matches!(c,
        '\\'
        | '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        // Soft hyphen: invisible unless a line breaks at it.
        | '\u{ad}'
        // Arabic letter mark and Mongolian vowel separator: invisible, bidi.
        | '\u{61c}'
        | '\u{180e}'
        // Zero-width space, non-joiner, joiner, LRM, RLM.
        | '\u{200b}'..='\u{200f}'
        // Line and paragraph separators, bidi embeddings and overrides.
        | '\u{2028}'..='\u{202e}'
        // Word joiner, invisible operators, bidi isolates, deprecated formats.
        | '\u{2060}'..='\u{206f}'
        // Byte-order mark / zero-width no-break space.
        | '\u{feff}'
        // Interlinear annotation marks.
        | '\u{fff9}'..='\u{fffb}'
        // Tag characters: invisible, used to smuggle hidden text.
        | '\u{e0000}'..='\u{e007f}'
    )
}

/// JSON text with every character [`needs_escape`] names written as a
/// JSON `\uXXXX` escape (a surrogate pair beyond the BMP), except the
/// backslash and the tab, line feed and carriage return JSON allows
/// between tokens. In valid JSON the others can only stand raw inside
/// strings (DEL, C1 controls such as U+009B CSI, bidi overrides, tag
/// characters), where the escape means the same character: the output is
/// the same JSON value, safe on a terminal, and equal to the input when
/// there was nothing to escape. For documents printed or written whole
/// (the SBOM), where [`shown`]'s forms would not be JSON.
pub fn json_for_terminal(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if !needs_escape(c) || matches!(c, '\\' | '\t' | '\n' | '\r') {
            out.push(c);
            continue;
        }
        let mut units = [0u16; 2];
        for u in c.encode_utf16(&mut units) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{u:04x}");
        }
    }
    out
}

/// Appends `s` to `out`, escaped.
fn push_str(out: &mut String, s: &str) {
    push_escaped(out, s, true);
}

/// Appends `s` to `out`, escaped; a backslash is doubled only when
/// `backslash` is set.
fn push_escaped(out: &mut String, s: &str, backslash: bool) {
    for c in s.chars() {
        if !needs_escape(c) || (c == '\\' && !backslash) {
            out.push(c);
            continue;
        }
        // Writing to a String cannot fail.
        let _ = match c {
            '\\' => write!(out, "\\\\"),
            '\t' => write!(out, "\\t"),
            '\n' => write!(out, "\\n"),
            '\r' => write!(out, "\\r"),
            '\u{0}'..='\u{7f}' => write!(out, "\\x{:02x}", c as u32),
            _ => write!(out, "\\u{{{:x}}}", c as u32),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(shown("layout.slot: 2GiB"), "layout.slot: 2GiB");
        assert_eq!(shown("größe — 大きさ"), "größe — 大きさ");
    }

    #[test]
    fn controls_are_escaped() {
        assert_eq!(shown("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(shown("\t\n\r\0\x7f"), "\\t\\n\\r\\x00\\x7f");
        assert_eq!(shown("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(shown("\u{85}"), "\\u{85}");
    }

    #[test]
    fn format_characters_are_escaped() {
        for c in [
            '\u{200b}',
            '\u{200f}',
            '\u{202a}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',
            '\u{feff}',
            '\u{2028}',
            '\u{e0041}',
        ] {
            let s = shown(&format!("x{c}y"));
            assert!(!s.contains(c), "{c:?} kept in {s:?}");
            assert_eq!(s, format!("x\\u{{{:x}}}y", c as u32));
        }
    }

    #[test]
    fn backslash_is_doubled_so_output_is_unambiguous() {
        // A literal backslash-x1b in the input must not read like an ESC.
        assert_eq!(shown("\\x1b"), "\\\\x1b");
        assert_ne!(shown("\\x1b"), shown("\x1b"));
    }

    #[test]
    fn invalid_utf8_is_escaped_byte_by_byte() {
        assert_eq!(shown_bytes(b"ok\xff\xc3(\x1b"), "ok\\xff\\xc3(\\x1b");
        assert_eq!(shown_bytes("é".as_bytes()), "é");
        // A C1 control as a character and as a stray byte print differently.
        assert_eq!(shown_bytes("\u{9b}".as_bytes()), "\\u{9b}");
        assert_eq!(shown_bytes(b"\x9b"), "\\x9b");
    }

    #[test]
    fn defang_is_idempotent_on_shown_output() {
        let raw = "k\x1b[2J\u{202e}\u{9b}\\x";
        let once = shown(raw);
        assert_eq!(defang(&once), once);
        assert_eq!(defang(raw), "k\\x1b[2J\\u{202e}\\u{9b}\\x");
        assert_eq!(defang_bytes(b"a\xff\x1b"), "a\\xff\\x1b");
    }

    #[test]
    fn paths_keep_their_raw_bytes() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt as _;
        let p = Path::new(OsStr::from_bytes(b"images/\x1b]0;x\x07\xfe.yaml"));
        assert_eq!(shown_path(p), "images/\\x1b]0;x\\x07\\xfe.yaml");
    }

    #[test]
    fn json_keeps_its_meaning_without_terminal_controls() {
        // DEL, C1 CSI and NEL, a bidi override and a tag character (a
        // surrogate pair in JSON) inside a string; layout outside.
        let raw = "{\n\t\"name\": \"a\u{7f}b\u{9b}2Jc\u{85}\u{202e}d\u{e0041}\\\"\\u001b\"\r\n}\n";
        let safe = json_for_terminal(raw);
        assert_eq!(
            safe,
            "{\n\t\"name\": \"a\\u007fb\\u009b2Jc\\u0085\\u202ed\\udb40\\udc41\\\"\\u001b\"\r\n}\n"
        );
        assert!(safe
            .chars()
            .all(|c| c == '\\' || c.is_ascii_whitespace() || !needs_escape(c)));
        // Nothing to escape: the same text.
        let plain = "{\"spdxVersion\": \"SPDX-2.3\", \"größe\": \"大きさ\"}\n";
        assert_eq!(json_for_terminal(plain), plain);
    }

    #[test]
    fn output_never_contains_a_control_or_format_character() {
        let all: String = (0u32..0x11_0000).filter_map(char::from_u32).collect();
        let out = shown(&all);
        assert!(out.chars().all(|c| c == '\\' || !needs_escape(c)));
    }
}
