//! The event pass over a YAML document: where every key and value is
//! written, and the structural rules that keep a small file small.
//!
//! It runs before `serde_norway` builds a value, so it is also the guard
//! against documents that are cheap to write and expensive to load:
//!
//! - **Aliases are refused.** Nine anchors of ten aliases each ("billion
//!   laughs") expand a few hundred bytes into 10^9 nodes when a value is
//!   built. No image, layer or policy needs them, so any `*alias` is an
//!   error at its position (an anchor alone is harmless and allowed).
//! - **Nesting is at most [`MAX_DEPTH`] levels**, far beyond any real input
//!   and well inside serde's own recursion limit of 128.
//! - **The key index is at most [`MAX_INDEX_BYTES`].** Each index entry
//!   holds its full key path, so a long key above many children costs
//!   length × children; the budget bounds that product.
//! - **One document per file.** A second one is reported where it starts.
//!
//! It also reports a duplicate key at the duplicate (naming the line of the
//! first), where `serde_norway` would point at the start of the mapping.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

use crate::diag::{Diagnostic, Diagnostics};
use crate::yaml::join_key;

/// The deepest nesting of mappings and lists a document may have.
pub const MAX_DEPTH: usize = 64;

/// The largest key index one document may need, in bytes of key paths (plus
/// a fixed overhead per entry).
pub const MAX_INDEX_BYTES: usize = 16 << 20;

/// Overhead counted per index entry: the map node and the position.
const ENTRY_COST: usize = 64;

/// Where each key and value of a document is written.
#[derive(Debug, Default)]
pub(crate) struct Spans {
    /// Where each key is written, by key path.
    pub keys: BTreeMap<String, (usize, usize)>,
    /// Where each value starts, by key path.
    pub values: BTreeMap<String, (usize, usize)>,
}

/// Scans `text`: the positions of its keys and values, or every duplicate
/// key, or the first structural problem (syntax, alias, depth, size, a
/// second document).
pub(crate) fn scan(file: &Path, text: &str) -> Result<Spans, Diagnostics> {
    let mut ix = Index {
        file,
        spans: Spans::default(),
        stack: Vec::new(),
        bytes: 0,
        documents: 0,
        diags: Diagnostics::default(),
    };
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((ev, mark)) => {
                if let Err(d) = ix.on_event(ev, mark) {
                    ix.diags.push(d);
                    break;
                }
            }
            Err(e) => {
                let d = ix.at(e.marker(), "", format!("invalid yaml: {}", e.info()));
                ix.diags.push(d);
                break;
            }
        }
    }
    ix.diags.into_result(ix.spans)
}

struct Index<'a> {
    file: &'a Path,
    spans: Spans,
    stack: Vec<Frame>,
    /// What the index holds so far, counted against [`MAX_INDEX_BYTES`].
    bytes: usize,
    documents: usize,
    /// Duplicate keys (the scan goes on to find them all).
    diags: Diagnostics,
}

enum Frame {
    Map {
        path: String,
        /// The key whose value comes next.
        key: Option<String>,
        /// Scalar keys seen so far, with the line of their first use.
        seen: HashMap<String, usize>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

impl Index<'_> {
    fn at(&self, mark: &Marker, key: &str, message: String) -> Diagnostic {
        Diagnostic {
            file: self.file.to_path_buf(),
            line: mark.line().max(1),
            col: mark.col().saturating_add(1),
            key: key.to_string(),
            message,
        }
    }

    /// Records a position, failing when the index would exceed its budget.
    fn record(&mut self, value: bool, path: &str, pos: (usize, usize)) -> Result<(), String> {
        let map = if value {
            &mut self.spans.values
        } else {
            &mut self.spans.keys
        };
        if map.contains_key(path) {
            return Ok(());
        }
        self.bytes = self
            .bytes
            .saturating_add(path.len())
            .saturating_add(ENTRY_COST);
        if self.bytes > MAX_INDEX_BYTES {
            return Err(format!(
                "too many or too long keys: indexing them needs over {} MiB",
                MAX_INDEX_BYTES >> 20
            ));
        }
        map.insert(path.to_string(), pos);
        Ok(())
    }

    /// The path of the value that starts at `mark`, its position recorded;
    /// `None` when the event is a mapping key.
    fn value_path(
        &mut self,
        mark: &Marker,
        scalar: Option<&str>,
    ) -> Result<Option<String>, String> {
        let pos = (mark.line().max(1), mark.col().saturating_add(1));
        let (path, is_value) = match self.stack.last_mut() {
            None => return Ok(Some(String::new())),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next = next.saturating_add(1);
                (p, true)
            }
            Some(Frame::Map { path, key, seen }) => match key.take() {
                Some(k) => (join_key(path, &k), true),
                None => {
                    // A key. Non-scalar keys are rejected later by the reader.
                    let k = scalar.unwrap_or("?").to_string();
                    let p = join_key(path, &k);
                    if let Some(s) = scalar {
                        if let Some(&first) = seen.get(s) {
                            let d = Diagnostic {
                                file: self.file.to_path_buf(),
                                line: pos.0,
                                col: pos.1,
                                key: p.clone(),
                                message: format!("duplicate key '{s}' (first at line {first})"),
                            };
                            self.diags.push(d);
                        } else {
                            seen.insert(s.to_string(), pos.0);
                        }
                    }
                    *key = Some(k);
                    self.record(false, &p, pos)?;
                    return Ok(None);
                }
            },
        };
        self.record(is_value, &path, pos)?;
        Ok(Some(path))
    }

    /// Opens a mapping or list at `mark`.
    fn open(&mut self, mark: &Marker, map: bool) -> Result<(), String> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let path = self.value_path(mark, None)?.unwrap_or_else(|| "?".into());
        self.stack.push(if map {
            Frame::Map {
                path,
                key: None,
                seen: HashMap::new(),
            }
        } else {
            Frame::Seq { path, next: 0 }
        });
        Ok(())
    }

    fn on_event(&mut self, ev: Event, mark: Marker) -> Result<(), Diagnostic> {
        let r = match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    Err("a second yaml document starts here; a file holds one".to_string())
                } else {
                    Ok(())
                }
            }
            Event::Scalar(ref s, ..) => self.value_path(&mark, Some(s)).map(drop),
            Event::Alias(_) => Err(
                "aliases (*name) are not allowed: they can expand a small file into gigabytes"
                    .to_string(),
            ),
            Event::MappingStart(..) => self.open(&mark, true),
            Event::SequenceStart(..) => self.open(&mark, false),
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                Ok(())
            }
            _ => Ok(()),
        };
        r.map_err(|message| self.at(&mark, "", message))
    }
}
