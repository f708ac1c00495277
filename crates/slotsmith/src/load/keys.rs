//! The `signing:` section of an image: which key signs the boot manifests,
//! which signs the `.swu`, which Secure Boot keys sign the EFI binaries and
//! are enrolled in the firmware, which signs the build's provenance
//! (`provenance.dsse.json`), and the public half each verifier trusts.
//!
//! Only the early, lexical half of the development-key rule is here (a path
//! under `keys/dev/`, for a diagnostic on the key's line); the build refuses
//! a development key by its public key (`signing::DevKeys`).

use serde_norway::Value;

use crate::spec::{BootKeySpec, KeySource, SecureBootDbKey, SecureBootKeySpec, UpdateKeySpec};
use crate::yaml::{join_key, Reader};

const SIGNING_KEYS: &[&str] = &["boot", "update", "secureboot", "provenance"];
const SECUREBOOT_KEYS: &[&str] = &[
    "db-key",
    "db-key-env",
    "db-engine",
    "db-cert",
    "kek-cert",
    "pk-cert",
    "kek-key",
    "kek-key-env",
    "pk-key",
    "pk-key-env",
];
const UPDATE_KEY_KEYS: &[&str] = &["key", "key-env", "external-signer", "cert"];
const KEY_KEYS: &[&str] = &["key", "key-env", "external-signer", "public-key"];

/// The four signing roles of an image (the provenance key has the boot
/// key's shape: an Ed25519 key and its public half).
pub(super) type SigningSpecs = (BootKeySpec, UpdateKeySpec, SecureBootKeySpec, BootKeySpec);

pub(super) fn read_signing(
    r: &mut Reader<'_>,
    v: Option<&Value>,
    release: bool,
    chain: bool,
) -> Option<SigningSpecs> {
    let mut boot = None;
    let mut update = None;
    let mut secureboot = None;
    let mut provenance = None;
    if let Some(v) = v {
        let mut m = r.map("signing", v, SIGNING_KEYS)?;
        boot = r.raw(&mut m, "boot");
        update = r.raw(&mut m, "update");
        secureboot = r.raw(&mut m, "secureboot");
        provenance = r.raw(&mut m, "provenance");
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
    // Only an image with a boot chain (`boot:`) signs EFI binaries; a
    // release of one must name its Secure Boot keys.
    let secureboot = match secureboot {
        None if release && chain => {
            r.error(
                "signing.secureboot",
                "a release image must name its Secure Boot keys (db-key, db-cert, kek-cert, \
                 pk-cert); development keys are refused",
            );
            None
        }
        None => Some(SecureBootKeySpec::development()),
        Some(v) => read_secureboot(r, v, release),
    };
    let provenance = match provenance {
        None if release => {
            r.error(
                "signing.provenance",
                "a release image must name its provenance key; development keys are refused",
            );
            None
        }
        None => Some((KeySource::Development, None)),
        Some(v) => read_key(r, "signing.provenance", v, release, "public-key"),
    };
    let (boot, update, secureboot, provenance) = (boot?, update?, secureboot?, provenance?);
    Some((
        BootKeySpec {
            source: boot.0,
            public_key: boot.1,
        },
        UpdateKeySpec {
            source: update.0,
            cert: update.1,
        },
        secureboot,
        BootKeySpec {
            source: provenance.0,
            public_key: provenance.1,
        },
    ))
}

/// Reads `signing.secureboot`: the db key (a file, `db-key-env`, or an
/// OpenSSL engine key with `db-engine`), the three certificates, and the
/// optional KEK and PK private keys (only the signed `.auth` variables need
/// them).
fn read_secureboot(r: &mut Reader<'_>, v: &Value, release: bool) -> Option<SecureBootKeySpec> {
    const PATH: &str = "signing.secureboot";
    let mut m = r.map(PATH, v, SECUREBOOT_KEYS)?;
    let db_key: Option<String> = r.opt(&mut m, "db-key");
    let db_key_env: Option<String> = r.opt(&mut m, "db-key-env");
    let db_engine: Option<String> = r.opt(&mut m, "db-engine");
    let mut certs = Vec::new();
    for field in ["db-cert", "kek-cert", "pk-cert"] {
        certs.push((field, r.req::<String>(&mut m, field)));
    }
    let kek = (
        r.opt::<String>(&mut m, "kek-key"),
        r.opt::<String>(&mut m, "kek-key-env"),
    );
    let pk = (
        r.opt::<String>(&mut m, "pk-key"),
        r.opt::<String>(&mut m, "pk-key-env"),
    );
    r.finish(m);
    let mut ok = true;
    let db = match (db_key, db_key_env, db_engine) {
        (Some(key), None, Some(engine)) => {
            if engine.is_empty()
                || !engine
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                r.error(
                    &join_key(PATH, "db-engine"),
                    "must be an OpenSSL engine name such as pkcs11",
                );
                ok = false;
            }
            if key.is_empty() {
                r.error(
                    &join_key(PATH, "db-key"),
                    "must be the engine's key identifier (a PKCS#11 URI)",
                );
                ok = false;
            }
            Some(SecureBootDbKey::Engine { engine, key })
        }
        (Some(path), None, None) => {
            ok &= release_path_ok(r, PATH, "db-key", &path, release);
            Some(SecureBootDbKey::File { path })
        }
        (None, Some(var), None) => {
            ok &= env_name_ok(r, PATH, "db-key-env", &var);
            Some(SecureBootDbKey::Env { var })
        }
        (None, Some(_), Some(_)) | (Some(_), Some(_), Some(_)) => {
            r.error(
                &join_key(PATH, "db-engine"),
                "an engine key is named by db-key (its URI), not by db-key-env",
            );
            None
        }
        (None, None, Some(_)) => {
            r.error(
                &join_key(PATH, "db-key"),
                "db-engine needs db-key: the engine's key identifier (a PKCS#11 URI)",
            );
            None
        }
        _ => {
            r.error(PATH, "set exactly one of db-key or db-key-env");
            None
        }
    };
    let mut paths = Vec::new();
    for (field, cert) in certs {
        if let Some(c) = &cert {
            ok &= release_path_ok(r, PATH, field, c, release);
        }
        paths.push(cert);
    }
    let kek_key = read_optional_key(r, PATH, "kek-key", kek, release, &mut ok);
    let pk_key = read_optional_key(r, PATH, "pk-key", pk, release, &mut ok);
    let [db_cert, kek_cert, pk_cert]: [Option<String>; 3] = paths.try_into().ok()?;
    let (db_cert, kek_cert, pk_cert) = (db_cert?, kek_cert?, pk_cert?);
    if !ok {
        return None;
    }
    Some(SecureBootKeySpec {
        db_key: db?,
        db_cert: Some(db_cert),
        kek_cert: Some(kek_cert),
        pk_cert: Some(pk_cert),
        kek_key,
        pk_key,
    })
}

/// An optional private key given as `<field>` (a file) or `<field>-env`.
fn read_optional_key(
    r: &mut Reader<'_>,
    path: &str,
    field: &'static str,
    (file, env): (Option<String>, Option<String>),
    release: bool,
    ok: &mut bool,
) -> Option<KeySource> {
    match (file, env) {
        (Some(_), Some(_)) => {
            r.error(
                &join_key(path, field),
                format!("set at most one of {field} or {field}-env"),
            );
            *ok = false;
            None
        }
        (Some(p), None) => {
            *ok &= release_path_ok(r, path, field, &p, release);
            Some(KeySource::File { path: p })
        }
        (None, Some(var)) => {
            *ok &= env_name_ok(r, path, &format!("{field}-env"), &var);
            Some(KeySource::Env { var })
        }
        (None, None) => None,
    }
}

/// The early, lexical half of the development-key rule for one path.
fn release_path_ok(r: &mut Reader<'_>, path: &str, field: &str, p: &str, release: bool) -> bool {
    if release && is_dev_key_path(p) {
        r.error(
            &join_key(path, field),
            "a release image refuses keys from keys/dev/",
        );
        return false;
    }
    true
}

/// An environment variable name.
fn env_name_ok(r: &mut Reader<'_>, path: &str, field: &str, var: &str) -> bool {
    if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        r.error(
            &join_key(path, field),
            "must be an environment variable name",
        );
        return false;
    }
    true
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
        let (all, diags) = all_keys_of(signing, release);
        (all.map(|(b, u, _, _)| (b, u)), diags)
    }

    /// A release image's Secure Boot and provenance sections for the tests
    /// of the other roles, which are not about them.
    const SECUREBOOT: &str = "  secureboot:\n    db-key: sb/db.key\n    db-cert: sb/db.crt\n    kek-cert: sb/kek.crt\n    pk-cert: sb/pk.crt\n  provenance:\n    key: keys/provenance.pem\n    public-key: keys/provenance.pub\n";

    fn all_keys_of(signing: &str, release: bool) -> (Option<SigningSpecs>, Vec<String>) {
        let text = format!("{MINIMAL}release: {release}\n{signing}");
        let (image, diags) = image(&text);
        let shown = diags
            .iter()
            .map(|d| format!("{}:{}: {}", d.line, d.key, d.message))
            .collect();
        (
            image.map(|i| (i.boot_key, i.update_key, i.secureboot_key, i.provenance_key)),
            shown,
        )
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
                "1:signing.provenance: a release image must name its provenance key; development keys are refused",
                "1:signing.update: a release image must name its update key and certificate; development keys are refused",
            ]
        );
        // With a boot chain, the Secure Boot keys too.
        let (_, diags) = all_keys_of("boot:\n  loader: efibootguard\n", true);
        assert!(
            diags.contains(&"1:signing.secureboot: a release image must name its Secure Boot keys (db-key, db-cert, kek-cert, pk-cert); development keys are refused".to_string()),
            "{diags:#?}"
        );
    }

    #[test]
    fn each_key_source_is_read() {
        let signing = "signing:\n  boot:\n    external-signer: [sign, \"{in}\", \"{out}\"]\n    public-key: keys/boot.pub\n  update:\n    key-env: UPDATE_KEY\n    cert: keys/update.crt\n".to_string() + SECUREBOOT;
        let (keys, diags) = keys_of(&signing, true);
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
    fn the_provenance_key_is_read_like_the_boot_key() {
        let (all, diags) = all_keys_of("", false);
        assert!(diags.is_empty(), "{diags:#?}");
        let p = all.unwrap().3;
        assert_eq!((p.source, p.public_key), (KeySource::Development, None));
        let signing = "signing:\n  boot:\n    key: b\n    public-key: bp\n  update:\n    key: u\n    cert: uc\n".to_string() + SECUREBOOT;
        let (all, diags) = all_keys_of(&signing, true);
        assert!(diags.is_empty(), "{diags:#?}");
        let p = all.unwrap().3;
        assert_eq!(
            p.source,
            KeySource::File {
                path: "keys/provenance.pem".into()
            }
        );
        assert_eq!(p.public_key.as_deref(), Some("keys/provenance.pub"));
        // The same rules as the boot key: one source, a public key, no
        // keys/dev/ path in a release.
        let (_, diags) = all_keys_of(
            "signing:\n  provenance:\n    key-env: P\n    external-signer: [s, \"{in}\", \"{out}\"]\n",
            false,
        );
        assert_eq!(
            diags,
            ["16:signing.provenance: set exactly one of key, key-env or external-signer"]
        );
        let (_, diags) = all_keys_of(
            &signing.replace("keys/provenance.pem", "keys/dev/provenance.key.pem"),
            true,
        );
        assert_eq!(
            diags,
            ["27:signing.provenance.key: a release image refuses keys from keys/dev/"]
        );
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
        let signing = "signing:\n  boot:\n    key: keys/./dev/boot.pem\n    public-key: p\n  update:\n    key: k\n    cert: a/../keys/dev/update.crt\n".to_string() + SECUREBOOT;
        let (keys, diags) = keys_of(&signing, true);
        assert!(keys.is_none());
        assert_eq!(
            diags,
            [
                "16:signing.boot.key: a release image refuses keys from keys/dev/",
                "20:signing.update.cert: a release image refuses keys from keys/dev/",
            ]
        );
        let (keys, diags) = keys_of(&signing, false);
        assert!(diags.is_empty() && keys.is_some(), "{diags:#?}");
    }

    /// The diagnostics of an image with `section` under
    /// `signing.secureboot` (and valid boot and update keys after it), and
    /// its Secure Boot spec when it loads.
    fn secureboot_of(section: &str, release: bool) -> (Option<SecureBootKeySpec>, Vec<String>) {
        let others = "  boot:\n    key: k\n    public-key: p\n  update:\n    key: k\n    cert: c\n  provenance:\n    key: k\n    public-key: p\n";
        let (all, diags) = all_keys_of(
            &format!("signing:\n  secureboot:\n{section}{others}"),
            release,
        );
        (all.map(|(_, _, sb, _)| sb), diags)
    }

    #[test]
    fn a_development_image_gets_the_development_secure_boot_keys() {
        let (all, diags) = all_keys_of("", false);
        assert!(diags.is_empty(), "{diags:#?}");
        assert_eq!(all.unwrap().2, SecureBootKeySpec::development());
    }

    #[test]
    fn each_secure_boot_key_form_is_read() {
        let certs = "    db-cert: sb/db.crt\n    kek-cert: sb/kek.crt\n    pk-cert: sb/pk.crt\n";
        let (sb, diags) = secureboot_of(
            &format!(
                "    db-key: sb/db.key\n{certs}    kek-key: sb/kek.key\n    pk-key-env: PK_KEY\n"
            ),
            true,
        );
        assert!(diags.is_empty(), "{diags:#?}");
        let sb = sb.unwrap();
        assert_eq!(
            sb.db_key,
            SecureBootDbKey::File {
                path: "sb/db.key".into()
            }
        );
        assert_eq!(
            (
                sb.db_cert.as_deref(),
                sb.kek_cert.as_deref(),
                sb.pk_cert.as_deref()
            ),
            (Some("sb/db.crt"), Some("sb/kek.crt"), Some("sb/pk.crt"))
        );
        assert_eq!(
            sb.kek_key,
            Some(KeySource::File {
                path: "sb/kek.key".into()
            })
        );
        assert_eq!(
            sb.pk_key,
            Some(KeySource::Env {
                var: "PK_KEY".into()
            })
        );
        let (sb, diags) = secureboot_of(
            &format!("    db-engine: pkcs11\n    db-key: \"pkcs11:token=hsm;object=db\"\n{certs}"),
            true,
        );
        assert!(diags.is_empty(), "{diags:#?}");
        let sb = sb.unwrap();
        assert_eq!(
            sb.db_key,
            SecureBootDbKey::Engine {
                engine: "pkcs11".into(),
                key: "pkcs11:token=hsm;object=db".into()
            }
        );
        assert_eq!((sb.kek_key, sb.pk_key), (None, None));
        let (sb, diags) = secureboot_of(&format!("    db-key-env: DB_KEY\n{certs}"), false);
        assert!(diags.is_empty(), "{diags:#?}");
        assert_eq!(
            sb.unwrap().db_key,
            SecureBootDbKey::Env {
                var: "DB_KEY".into()
            }
        );
    }

    #[test]
    fn secure_boot_key_mistakes_are_positioned() {
        let certs = "    db-cert: c\n    kek-cert: c\n    pk-cert: c\n";
        let cases: &[(&str, bool, &str)] = &[
            ("    db-key: k\n    db-cert: c\n    kek-cert: c\n", false,
             "15:signing.secureboot.pk-cert: missing required key 'pk-cert'"),
            (certs, false, "16:signing.secureboot: set exactly one of db-key or db-key-env"),
            ("    db-key: a\n    db-key-env: B\n    db-cert: c\n    kek-cert: c\n    pk-cert: c\n", false,
             "16:signing.secureboot: set exactly one of db-key or db-key-env"),
            ("    db-engine: pkcs11\n    db-cert: c\n    kek-cert: c\n    pk-cert: c\n", false,
             "15:signing.secureboot.db-key: db-engine needs db-key: the engine's key identifier (a PKCS#11 URI)"),
            ("    db-engine: pkcs11\n    db-key-env: K\n    db-cert: c\n    kek-cert: c\n    pk-cert: c\n", false,
             "16:signing.secureboot.db-engine: an engine key is named by db-key (its URI), not by db-key-env"),
            ("    db-engine: \"pk cs11\"\n    db-key: u\n    db-cert: c\n    kek-cert: c\n    pk-cert: c\n", false,
             "16:signing.secureboot.db-engine: must be an OpenSSL engine name such as pkcs11"),
            ("    db-key-env: \"A-B\"\n    db-cert: c\n    kek-cert: c\n    pk-cert: c\n", false,
             "16:signing.secureboot.db-key-env: must be an environment variable name"),
            ("    db-key: k\n    db-cert: c\n    kek-cert: c\n    pk-cert: c\n    kek-key: a\n    kek-key-env: B\n", false,
             "20:signing.secureboot.kek-key: set at most one of kek-key or kek-key-env"),
            ("    db-key: k\n    db-cert: c\n    kek-cert: c\n    pk-cert: keys/dev/secureboot-pk.cert.pem\n", true,
             "19:signing.secureboot.pk-cert: a release image refuses keys from keys/dev/"),
            ("    db-key: k\n    db-cert: c\n    kek-cert: c\n    pk-cert: c\n    pk-key: x/../keys/dev/pk.pem\n", true,
             "20:signing.secureboot.pk-key: a release image refuses keys from keys/dev/"),
            ("    db-key: keys//dev/db.pem\n    db-cert: c\n    kek-cert: c\n    pk-cert: c\n", true,
             "16:signing.secureboot.db-key: a release image refuses keys from keys/dev/"),
        ];
        for (section, release, expected) in cases {
            let (sb, diags) = secureboot_of(section, *release);
            assert!(sb.is_none(), "{section}");
            assert_eq!(diags.len(), 1, "{section}: {diags:#?}");
            assert!(diags[0].starts_with(expected), "{section}: {diags:#?}");
        }
        let (_, diags) = secureboot_of(
            "    db-key: k\n    db-cert: c\n    kek-cert: c\n    pk-cert: c\n    key: k\n",
            false,
        );
        assert_eq!(diags.len(), 1, "{diags:#?}");
        assert!(
            diags[0].starts_with("20:signing.secureboot.key: unknown key 'key'"),
            "{diags:#?}"
        );
        // An engine key is an identifier, not a path: the path rule and the
        // keys/dev/ check do not apply to it.
        let (sb, diags) = secureboot_of(
            &format!("    db-engine: pkcs11\n    db-key: \"pkcs11:object=keys/dev/x\"\n{certs}"),
            true,
        );
        assert!(diags.is_empty() && sb.is_some(), "{diags:#?}");
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
