//! YAML input with positioned diagnostics, shared by every loader
//! (images, layers, policies): `diag` holds the diagnostic types, `yaml`
//! the reader that collects every problem with its file, line, column and
//! key path before failing. `escape` makes untrusted text safe to print.
//! `input` is the one rule for reaching input paths (symlinks, `..`);
//! `read` reads input files with a size limit and decodes them as UTF-8;
//! `span` indexes positions and bounds what a document may cost.

pub mod diag;
pub mod escape;
pub mod input;
pub mod read;
pub mod span;
pub mod yaml;
