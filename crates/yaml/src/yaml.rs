//! YAML reading with positions, for diagnostics that name file, line and key.
//!
//! `serde_norway` gives us YAML values and typed conversion but no positions
//! for values, and serde stops at the first error. So a document is parsed
//! twice: once through `yaml-rust2`'s event parser (`span.rs`) to build an
//! index from key paths (`layout.slot`, `layers[1]`) to line and column and
//! to refuse aliases and deep nesting, then into a `serde_norway::Value`. [`Reader`] then walks the value field by
//! field, converting each with serde and collecting every problem (unknown
//! keys, wrong types, missing keys, control characters) before failing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Diagnostics};
use crate::span;
use serde::de::DeserializeOwned;
use serde_norway::{Mapping, Value};

/// A parsed YAML document with its position index.
#[derive(Debug)]
pub struct Doc {
    /// The file as shown in diagnostics.
    pub file: PathBuf,
    /// The document's value (`Null` for an empty file).
    pub value: Value,
    /// Where each key is written.
    keys: BTreeMap<String, (usize, usize)>,
    /// Where each value starts.
    values: BTreeMap<String, (usize, usize)>,
}

impl Doc {
    /// Parses `text`; a syntax error, an alias, too deep nesting, a
    /// duplicate key or a second document becomes a positioned diagnostic
    /// (see [`crate::span`] for the limits). A leading byte-order mark is
    /// skipped.
    pub fn parse(file: &Path, text: &str) -> Result<Doc, Diagnostics> {
        // Editors on Windows start UTF-8 files with U+FEFF; it is not
        // content, and columns on line 1 are counted without it.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // The event pass first: it refuses aliases and deep nesting before
        // serde_norway could expand them.
        let spans = span::scan(file, text)?;
        let value = match serde_norway::from_str::<Value>(text) {
            Ok(v) => v,
            Err(e) => {
                let (line, col) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((1, 1));
                let mut diags = Diagnostics::default();
                diags.push(Diagnostic {
                    file: file.to_path_buf(),
                    line: line.max(1),
                    col: col.max(1),
                    key: String::new(),
                    message: format!("invalid yaml: {}", strip_location(&e.to_string())),
                });
                return Err(diags);
            }
        };
        Ok(Doc {
            file: file.to_path_buf(),
            value,
            keys: spans.keys,
            values: spans.values,
        })
    }

    /// Parses `bytes`, which must be UTF-8 (else a diagnostic at the first
    /// bad byte), as [`Doc::parse`] does.
    pub fn parse_bytes(file: &Path, bytes: &[u8]) -> Result<Doc, Diagnostics> {
        Doc::parse(file, crate::read::decode(file, bytes)?)
    }

    /// A document with no content, as a placeholder.
    pub fn empty() -> Doc {
        Doc {
            file: PathBuf::new(),
            value: Value::Null,
            keys: BTreeMap::new(),
            values: BTreeMap::new(),
        }
    }

    /// Line and column of the value at a key path (else of the key, else of
    /// the closest known ancestor): where a wrong value is written.
    pub fn position(&self, key: &str) -> (usize, usize) {
        if let Some(&p) = self.values.get(key).or_else(|| self.keys.get(key)) {
            return p;
        }
        // An absent key: point at the nearest ancestor's key, where the
        // mapping that lacks it is written.
        let mut k = key.to_string();
        loop {
            if let Some(&p) = self.keys.get(&k).or_else(|| self.values.get(&k)) {
                return p;
            }
            match k.rfind(['.', '[']) {
                Some(i) => k.truncate(i),
                // The document itself: point at its first line.
                None => return (1, 1),
            }
        }
    }

    /// Line and column of the key itself: where an unknown key is written.
    pub fn key_position(&self, key: &str) -> (usize, usize) {
        self.keys
            .get(key)
            .copied()
            .unwrap_or_else(|| self.position(key))
    }

    /// A diagnostic about the value at `key`.
    pub fn diag(&self, key: &str, message: impl Into<String>) -> Diagnostic {
        let (line, col) = self.position(key);
        Diagnostic {
            file: self.file.clone(),
            line,
            col,
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// A diagnostic about the key itself.
    pub fn key_diag(&self, key: &str, message: impl Into<String>) -> Diagnostic {
        let (line, col) = self.key_position(key);
        Diagnostic {
            file: self.file.clone(),
            line,
            col,
            key: key.to_string(),
            message: message.into(),
        }
    }
}

fn strip_location(msg: &str) -> String {
    // serde_norway appends " at line X column Y"; the diagnostic already
    // carries the position.
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Joins a key to a parent path with a dot.
pub fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Walks a [`Doc`] and collects diagnostics.
pub struct Reader<'a> {
    /// The document being read.
    pub doc: &'a Doc,
    /// Everything found wrong so far.
    pub diags: Diagnostics,
}

/// A mapping being read: remembers which keys were used, so [`Reader::finish`]
/// can report the unknown ones.
pub struct MapView<'a> {
    path: String,
    map: &'a Mapping,
    seen: BTreeSet<String>,
    allowed: &'static [&'static str],
}

impl<'a> Reader<'a> {
    /// A reader with no diagnostics yet.
    pub fn new(doc: &'a Doc) -> Reader<'a> {
        Reader {
            doc,
            diags: Diagnostics::default(),
        }
    }

    /// Records a diagnostic at `key`.
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let d = self.doc.diag(key, message);
        self.diags.push(d);
    }

    /// Records a diagnostic about the key itself (such as a bad path used
    /// as a key), positioned at the key rather than its value.
    pub fn key_error(&mut self, key: &str, message: impl Into<String>) {
        let d = self.doc.key_diag(key, message);
        self.diags.push(d);
    }

    /// Opens `value` at `path` as a mapping whose keys must be in `allowed`.
    pub fn map<'v>(
        &mut self,
        path: &str,
        value: &'v Value,
        allowed: &'static [&'static str],
    ) -> Option<MapView<'v>> {
        match value {
            Value::Mapping(map) => {
                let mut ok = true;
                for k in map.keys() {
                    if !matches!(k, Value::String(_)) {
                        self.error(path, format!("keys must be strings, found {}", describe(k)));
                        ok = false;
                    }
                }
                ok.then(|| MapView {
                    path: path.to_string(),
                    map,
                    seen: BTreeSet::new(),
                    allowed,
                })
            }
            Value::Tagged(t) => self.map(path, &t.value, allowed),
            other => {
                let what = if path.is_empty() {
                    "the document"
                } else {
                    "this key"
                };
                self.error(
                    path,
                    format!("{what} must be a mapping, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// The raw value of `key`, marking it as known.
    pub fn raw<'m>(&mut self, m: &mut MapView<'m>, key: &str) -> Option<&'m Value> {
        m.seen.insert(key.to_string());
        m.map.get(key)
    }

    /// Converts `key` to `T`; `None` (with no diagnostic) when absent.
    pub fn opt<T: DeserializeOwned>(&mut self, m: &mut MapView<'_>, key: &str) -> Option<T> {
        let path = join_key(&m.path, key);
        let v = self.raw(m, key)?;
        if v.is_null() {
            return None;
        }
        self.convert(&path, v)
    }

    /// Converts `key` to `T`; a missing key is a diagnostic.
    pub fn req<T: DeserializeOwned>(&mut self, m: &mut MapView<'_>, key: &str) -> Option<T> {
        if !m.map.contains_key(key) {
            let path = join_key(&m.path, key);
            self.error(&path, format!("missing required key '{key}'"));
            m.seen.insert(key.to_string());
            return None;
        }
        self.opt(m, key)
    }

    /// Converts a value at `path` to `T`, checking strings for control
    /// characters on the way.
    pub fn convert<T: DeserializeOwned>(&mut self, path: &str, v: &Value) -> Option<T> {
        self.check_strings(path, v);
        match serde_norway::from_value::<T>(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(path, strip_location(&e.to_string()));
                None
            }
        }
    }

    /// Reports control characters in any string below `v`. They have no
    /// legitimate use in image definitions, and a newline in a value that
    /// ends up in a line-based format (a bootloader env, a config file)
    /// injects a second entry.
    pub fn check_strings(&mut self, path: &str, v: &Value) {
        match v {
            Value::String(s) => {
                if let Some(c) = s.chars().find(|c| c.is_control()) {
                    self.error(
                        path,
                        format!("control character {:?} is not allowed in values", c),
                    );
                }
            }
            Value::Sequence(seq) => {
                for (i, item) in seq.iter().enumerate() {
                    self.check_strings(&format!("{path}[{i}]"), item);
                }
            }
            Value::Mapping(map) => {
                for (k, item) in map {
                    let key = k.as_str().unwrap_or("?");
                    self.check_strings(&join_key(path, key), item);
                }
            }
            Value::Tagged(t) => self.check_strings(path, &t.value),
            _ => {}
        }
    }

    /// Reports every key of `m` that was never asked for.
    pub fn finish(&mut self, m: MapView<'_>) {
        for k in m.map.keys() {
            let Some(k) = k.as_str() else { continue };
            if !m.seen.contains(k) && !m.allowed.contains(&k) {
                let path = join_key(&m.path, k);
                let expected = m.allowed.join(", ");
                let d = self.doc.key_diag(
                    &path,
                    format!("unknown key '{k}' (expected one of: {expected})"),
                );
                self.diags.push(d);
            } else if !m.seen.contains(k) {
                // Allowed but not read: a bug in the caller, not the input.
                debug_assert!(false, "key {k} allowed but never read");
            }
        }
    }
}

impl MapView<'_> {
    /// The mapping's own key path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The keys present, in document order.
    pub fn keys(&self) -> Vec<String> {
        self.map
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect()
    }

    /// Whether `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }
}

/// A short description of a value's type for messages.
pub fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Doc {
        Doc::parse(Path::new("x.yaml"), text).unwrap()
    }

    #[test]
    fn positions_of_nested_keys_and_items() {
        let d = doc("name: a\nlayout:\n  slot: 1GiB\n  esp: 2\nlayers:\n  - one\n  - two\n");
        assert_eq!(d.position("layout.slot"), (3, 9));
        assert_eq!(d.key_position("layout.slot"), (3, 3));
        assert_eq!(d.position("layout.esp"), (4, 8));
        assert_eq!(d.position("layers[1]"), (7, 5));
        assert_eq!(d.position("layout.nope"), (2, 1));
    }

    #[test]
    fn collects_every_problem() {
        let d = doc("a: 1\nb: x\nc: \"x\\ny\"\nzz: 3\n");
        let mut r = Reader::new(&d);
        let mut m = r.map("", &d.value, &["a", "b", "c", "d"]).unwrap();
        let _: Option<u64> = r.req(&mut m, "a");
        let _: Option<u64> = r.req(&mut m, "b");
        let _: Option<String> = r.req(&mut m, "c");
        let _: Option<String> = r.req(&mut m, "d");
        r.finish(m);
        let text = r.diags.sorted().to_string();
        assert_eq!(
            text,
            "x.yaml:1:1: d: missing required key 'd'\n\
             x.yaml:2:4: b: invalid type: string \"x\", expected u64\n\
             x.yaml:3:4: c: control character '\\n' is not allowed in values\n\
             x.yaml:4:1: zz: unknown key 'zz' (expected one of: a, b, c, d)"
        );
    }

    #[test]
    fn syntax_error_has_a_position() {
        let e = Doc::parse(Path::new("x.yaml"), "a: [1, 2\nb: 3\n").unwrap_err();
        let d = e.iter().next().unwrap();
        assert!(d.line >= 1, "{d}");
        assert!(d.message.starts_with("invalid yaml"), "{d}");
    }
}
