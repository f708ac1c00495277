//! The `signing:` section of an image: which key signs the boot manifests
//! and which signs the `.swu`, and the public half each device trusts.
//!
//! Only the early, lexical half of the development-key rule is here (a path
//! under `keys/dev/`, for a diagnostic on the key's line); the build refuses
//! a development key by its public key (`signing::DevKeys`).

use serde_norway::Value;

use crate::spec::{BootKeySpec, KeySource, UpdateKeySpec};
use crate::yaml::{join_key, Reader};

const SIGNING_KEYS: &[&str] = &["boot", "update"];
const UPDATE_KEY_KEYS: &[&str] = &["key", "key-env", "external-signer", "cert"];
const KEY_KEYS: &[&str] = &["key", "key-env", "external-signer", "public-key"];

pub(super) fn read_signing(
    r: &mut Reader<'_>,
    v: Option<&Value>,
    release: bool,
) -> Option<(BootKeySpec, UpdateKeySpec)> {
    let mut boot = None;
    let mut update = None;
    if let Some(v) = v {
        let mut m = r.map("signing", v, SIGNING_KEYS)?;
        boot = r.raw(&mut m, "boot");
        update = r.raw(&mut m, "update");
        r.finish(m);
    }
    let boot = match boot {
        None if release => {
            r.error(
                "signing.boot",
                "a release image must name its boot key; development keys are refused",
            );
            None
        }
        None => Some((KeySource::Development, None)),
        Some(v) => read_key(r, "signing.boot", v, release, "public-key"),
    };
    let update = match update {
        None if release => {
            r.error("signing.update", "a release image must name its update key and certificate; development keys are refused");
            None
        }
        None => Some((KeySource::Development, None)),
        Some(v) => read_key(r, "signing.update", v, release, "cert"),
    };
    let (boot, update) = (boot?, update?);
    Some((
        BootKeySpec {
            source: boot.0,
            public_key: boot.1,
        },
        UpdateKeySpec {
            source: update.0,
            cert: update.1,
        },
    ))
}

/// Reads one role's key: exactly one of `key`, `key-env` and
/// `external-signer`, plus the public half (`public_key_field`).
fn read_key(
    r: &mut Reader<'_>,
    path: &str,
    v: &Value,
    release: bool,
    public_key_field: &'static str,
) -> Option<(KeySource, Option<String>)> {
    let allowed: &'static [&'static str] = if public_key_field == "cert" {
        UPDATE_KEY_KEYS
    } else {
        KEY_KEYS
    };
    let mut m = r.map(path, v, allowed)?;
    let key: Option<String> = r.opt(&mut m, "key");
    let key_env: Option<String> = r.opt(&mut m, "key-env");
    let external: Option<Vec<String>> = r.opt(&mut m, "external-signer");
    let public: Option<String> = r.opt(&mut m, public_key_field);
    r.finish(m);
    let set = [key.is_some(), key_env.is_some(), external.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set != 1 {
        r.error(path, "set exactly one of key, key-env or external-signer");
        return None;
    }
    let Some(public) = public else {
        r.error(
            &join_key(path, public_key_field),
            format!("missing required key '{public_key_field}' (what the device trusts)"),
        );
        return None;
    };
    let source = if let Some(p) = key {
        if release && is_dev_key_path(&p) {
            r.error(
                &join_key(path, "key"),
                "a release image refuses keys from keys/dev/",
            );
            return None;
        }
        KeySource::File { path: p }
    } else if let Some(var) = key_env {
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            r.error(
                &join_key(path, "key-env"),
                "must be an environment variable name",
            );
            return None;
        }
        KeySource::Env { var }
    } else {
        let argv = external.unwrap_or_default();
        if argv.is_empty()
            || !argv.iter().any(|a| a.contains("{in}"))
            || !argv.iter().any(|a| a.contains("{out}"))
        {
            r.error(
                &join_key(path, "external-signer"),
                "give the command as a list that uses {in} and {out}",
            );
            return None;
        }
        KeySource::External { argv }
    };
    if release && is_dev_key_path(&public) {
        r.error(
            &join_key(path, public_key_field),
            "a release image refuses keys from keys/dev/",
        );
        return None;
    }
    Some((source, Some(public)))
}

/// Whether a configured key path points into a development key directory
/// (`keys/dev/` of this or any project), after lexical normalisation, so
/// that `keys/./dev/x`, `keys//dev/x` and `a/../keys/dev/x` are caught too.
///
/// This is only the early, load-time half of the development-key rule, for
/// an exit-2 diagnostic on the key's line; it cannot see copies, links or
/// `key-env`. The build refuses a development key by its public key,
/// wherever the file is (`signing::DevKeys`).
pub fn is_dev_key_path(p: &str) -> bool {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    // `keys/dev` followed by a file name.
    parts.windows(3).any(|w| w[0] == "keys" && w[1] == "dev")
}
