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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{image, MINIMAL};
    use super::*;

    fn keys_of(
        signing: &str,
        release: bool,
    ) -> (Option<(BootKeySpec, UpdateKeySpec)>, Vec<String>) {
        let text = format!("{MINIMAL}release: {release}\n{signing}");
        let (image, diags) = image(&text);
        let shown = diags
            .iter()
            .map(|d| format!("{}:{}: {}", d.line, d.key, d.message))
            .collect();
        (image.map(|i| (i.boot_key, i.update_key)), shown)
    }

    #[test]
    fn a_development_image_may_omit_its_keys_and_a_release_may_not() {
        let (keys, diags) = keys_of("", false);
        assert!(diags.is_empty(), "{diags:#?}");
        let (boot, update) = keys.unwrap();
        assert_eq!(
            (boot.source, boot.public_key),
            (KeySource::Development, None)
        );
        assert_eq!((update.source, update.cert), (KeySource::Development, None));
        let (keys, diags) = keys_of("", true);
        assert!(keys.is_none());
        assert_eq!(
            diags,
            [
                "1:signing.boot: a release image must name its boot key; development keys are refused",
                "1:signing.update: a release image must name its update key and certificate; development keys are refused",
            ]
        );
    }

    #[test]
    fn each_key_source_is_read() {
        let signing = "signing:\n  boot:\n    external-signer: [sign, \"{in}\", \"{out}\"]\n    public-key: keys/boot.pub\n  update:\n    key-env: UPDATE_KEY\n    cert: keys/update.crt\n";
        let (keys, diags) = keys_of(signing, true);
        assert!(diags.is_empty(), "{diags:#?}");
        let (boot, update) = keys.unwrap();
        assert_eq!(
            boot.source,
            KeySource::External {
                argv: vec!["sign".into(), "{in}".into(), "{out}".into()]
            }
        );
        assert_eq!(boot.public_key.as_deref(), Some("keys/boot.pub"));
        assert_eq!(
            update.source,
            KeySource::Env {
                var: "UPDATE_KEY".into()
            }
        );
        assert_eq!(update.cert.as_deref(), Some("keys/update.crt"));
    }

    #[test]
    fn a_key_is_one_source_and_names_what_the_device_trusts() {
        let base = "signing:\n  boot:\n    key: keys/boot.pem\n";
        let (_, diags) = keys_of(&format!("{base}    key-env: K\n    public-key: p\n"), false);
        assert_eq!(
            diags,
            ["16:signing.boot: set exactly one of key, key-env or external-signer"]
        );
        let (_, diags) = keys_of(base, false);
        assert_eq!(
            diags,
            ["15:signing.boot.public-key: missing required key 'public-key' (what the device trusts)"]
        );
        // The update key has a certificate, not a bare public key.
        let (_, diags) = keys_of(
            "signing:\n  update:\n    key: k\n    public-key: p\n",
            false,
        );
        assert_eq!(diags.len(), 2, "{diags:#?}");
        assert!(diags[0].starts_with("15:signing.update.cert: missing required key 'cert'"));
        assert!(diags[1].starts_with("17:signing.update.public-key: unknown key 'public-key'"));
        let (_, diags) = keys_of(
            "signing:\n  boot:\n    key-env: \"A B\"\n    public-key: p\n",
            false,
        );
        assert_eq!(
            diags,
            ["16:signing.boot.key-env: must be an environment variable name"]
        );
        let (_, diags) = keys_of(
            "signing:\n  boot:\n    external-signer: [sign]\n    public-key: p\n",
            false,
        );
        assert_eq!(
            diags,
            ["16:signing.boot.external-signer: give the command as a list that uses {in} and {out}"]
        );
    }

    #[test]
    fn a_release_refuses_paths_into_keys_dev() {
        let signing = "signing:\n  boot:\n    key: keys/./dev/boot.pem\n    public-key: p\n  update:\n    key: k\n    cert: a/../keys/dev/update.crt\n";
        let (keys, diags) = keys_of(signing, true);
        assert!(keys.is_none());
        assert_eq!(
            diags,
            [
                "16:signing.boot.key: a release image refuses keys from keys/dev/",
                "20:signing.update.cert: a release image refuses keys from keys/dev/",
            ]
        );
        let (keys, diags) = keys_of(signing, false);
        assert!(diags.is_empty() && keys.is_some(), "{diags:#?}");
    }

    #[test]
    fn dev_key_paths_are_normalised_lexically() {
        for dev in [
            "keys/dev/k",
            "/srv/p/keys/dev/k",
            "keys//dev/k",
            "x/../keys/dev/k",
        ] {
            assert!(is_dev_key_path(dev), "{dev}");
        }
        for other in ["keys/dev", "keys/prod/k", "keys/dev/../k", "mykeys/dev/k"] {
            assert!(!is_dev_key_path(other), "{other}");
        }
    }
}
