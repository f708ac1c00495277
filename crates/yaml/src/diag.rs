//! Structured diagnostics for the load and plan stages.
//!
//! Load and plan never stop at the first problem: they collect every
//! diagnostic, each with the file, line, column and YAML key path, and fail
//! once, so one CI run shows a user everything that is wrong with an input.
//! The `Display` form is `file:line:col: key.path: message`, the shape that
//! editors and CI log viewers turn into links.
//!
//! Two rules hold for every diagnostic, whoever creates it:
//!
//! - **Untrusted text is escaped when rendered.** The file name, the key
//!   path and the message usually hold bytes from the input (a key, a
//!   value, a layer path), so `Display` runs each through
//!   [`crate::escape::defang`]: no control, bidi or other format character
//!   reaches a terminal, and fragments a caller already escaped with
//!   [`crate::escape::shown`] are not escaped twice.
//! - **The output is bounded.** A file of a million unknown keys must not
//!   print a million lines or hold them all: at most [`MAX_KEPT`]
//!   diagnostics are kept in detail (the first ones in sorted order; the
//!   rest are only counted) and `Display` renders the first [`MAX_SHOWN`]
//!   then `... and N more problem(s)`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::escape::{defang, defang_bytes};

/// How many diagnostics `Display` renders before `... and N more`.
pub const MAX_SHOWN: usize = 50;

/// How many diagnostics are kept in detail; beyond this only a count grows,
/// so memory stays bounded however many problems an input has.
pub const MAX_KEPT: usize = 1000;

/// One problem in an input file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The file as the user named it (relative to the project root when inside it).
    pub file: PathBuf,
    /// 1-based line, 0 when the position is unknown.
    pub line: usize,
    /// 1-based column, 0 when the position is unknown.
    pub col: usize,
    /// Dotted key path, such as `layout.slot` or `layers[1]`; empty for the whole file.
    pub key: String,
    /// What is wrong, in lowercase without a trailing period.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::ffi::OsStrExt as _;
        // Every text field may carry input bytes: escape them all here, so no
        // caller can forget to.
        write!(f, "{}", defang_bytes(self.file.as_os_str().as_bytes()))?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col.max(1))?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", defang(&self.key))?;
        }
        write!(f, ": {}", defang(&self.message))
    }
}

/// Every diagnostic of a failed load or plan. It is the error type that maps
/// to exit code 2 (input error), as opposed to build failures (exit code 1).
///
/// At most [`MAX_KEPT`] diagnostics are kept (the first in sorted order);
/// [`Diagnostics::len`] still counts every problem reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    list: Vec<Diagnostic>,
    /// Problems reported but not kept in detail.
    omitted: usize,
}

impl Diagnostics {
    /// Adds a diagnostic (or only counts it, past the bound).
    pub fn push(&mut self, d: Diagnostic) {
        self.list.push(d);
        // Compacting at twice the bound keeps pushes amortised O(log n)
        // while memory stays within 2 * MAX_KEPT diagnostics.
        if self.list.len() >= 2 * MAX_KEPT {
            self.compact();
        }
    }

    /// Adds a diagnostic about a whole file (no position).
    pub fn file_error(&mut self, file: &Path, message: impl Into<String>) {
        self.push(Diagnostic {
            file: file.to_path_buf(),
            line: 0,
            col: 0,
            key: String::new(),
            message: message.into(),
        });
    }

    /// True when nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty() && self.omitted == 0
    }

    /// How many problems were reported, including those only counted.
    pub fn len(&self) -> usize {
        self.list.len().saturating_add(self.omitted)
    }

    /// How many problems were only counted, not kept in detail.
    pub fn omitted(&self) -> usize {
        self.omitted
    }

    /// The diagnostics kept in detail.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.list.iter()
    }

    /// The diagnostics kept in detail, by value.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.list
    }

    /// Moves every diagnostic of `other` into `self`.
    pub fn extend(&mut self, other: Diagnostics) {
        self.omitted = self.omitted.saturating_add(other.omitted);
        for d in other.list {
            self.push(d);
        }
    }

    /// Sorts by file and position, and drops exact duplicates, so the output
    /// is stable and reads top to bottom.
    pub fn sorted(mut self) -> Diagnostics {
        self.compact();
        self
    }

    /// Sorts, deduplicates and keeps the first [`MAX_KEPT`], counting the
    /// rest.
    fn compact(&mut self) {
        self.list.sort();
        self.list.dedup();
        if self.list.len() > MAX_KEPT {
            let extra = self.list.len() - MAX_KEPT;
            self.list.truncate(MAX_KEPT);
            self.omitted = self.omitted.saturating_add(extra);
        }
    }

    /// `Ok(value)` when empty, else the sorted diagnostics as the error.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self.sorted())
        }
    }
}

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(list: Vec<Diagnostic>) -> Diagnostics {
        let mut d = Diagnostics { list, omitted: 0 };
        if d.list.len() > MAX_KEPT {
            d.compact();
        }
        d
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

impl fmt::Display for Diagnostics {
    /// The first [`MAX_SHOWN`] diagnostics in sorted order, one a line, then
    /// how many more there are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut all: Vec<&Diagnostic> = self.list.iter().collect();
        all.sort();
        all.dedup();
        let shown = all.len().min(MAX_SHOWN);
        for (i, d) in all.iter().take(shown).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        let more = (all.len() - shown).saturating_add(self.omitted);
        if more > 0 {
            if shown > 0 {
                writeln!(f)?;
            }
            write!(f, "... and {more} more problem(s)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
