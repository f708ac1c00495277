//! `keys generate` and development keys: the project's registry of
//! development key fingerprints, which release builds check every key
//! against.

use std::path::Path;

use super::{Failure, KeysGenerateArgs};

/// `keys generate`: records a development key (`--dev`, or written into
/// keys/dev) in the project's registry, which release builds check every
/// key against (see `slotsmith::signing::DevKeys`).
pub(crate) fn note_dev_key(
    project: Option<&Path>,
    a: &KeysGenerateArgs,
    role: &str,
    fingerprint: &str,
    private: &Path,
) -> Result<(), Failure> {
    let recorded =
        slotsmith::signing::note_generated_key(project, &a.out, a.dev, role, fingerprint, private)?;
    if let Some(registry) = recorded {
        eprintln!(
            "a DEVELOPMENT key: recorded in {} (commit it; release images refuse this key \
             wherever it is copied)",
            registry.display()
        );
    }
    Ok(())
}
