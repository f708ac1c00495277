//! Structured diagnostics for the load and plan stages.
//!
//! Load and plan never stop at the first problem: they collect every
//! diagnostic, each with the file, line, column and YAML key path, and fail
//! once, so one CI run shows a user everything that is wrong with an input.
//! The `Display` form is `file:line:col: key.path: message`, the shape that
//! editors and CI log viewers turn into links.

use std::fmt;
use std::path::{Path, PathBuf};

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
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col.max(1))?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every diagnostic of a failed load or plan. It is the error type that maps
/// to exit code 2 (input error), as opposed to build failures (exit code 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds a diagnostic.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
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
        self.0.is_empty()
    }

    /// Moves every diagnostic of `other` into `self`.
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// Sorts by file and position, and drops exact duplicates, so the output
    /// is stable and reads top to bottom.
    pub fn sorted(mut self) -> Diagnostics {
        self.0.sort();
        self.0.dedup();
        self
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

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
