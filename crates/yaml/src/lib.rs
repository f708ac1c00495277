//! YAML input with positioned diagnostics, shared by every loader
//! (images, layers, policies): `diag` holds the diagnostic types, `yaml`
//! the reader that collects every problem with its file, line, column and
//! key path before failing. `escape` makes untrusted text safe to print.

pub mod diag;
pub mod escape;
pub mod yaml;
