//! The Secure Boot key files: generating PK, KEK and db (`keys generate
//! --role secureboot`, and the development keys on a development image's
//! first build), and resolving an image's `signing.secureboot` into
//! [`SecureBootKeys`] with the same rules as the other roles: the path
//! rule, 0600 private keys, each key matching its certificate, and a
//! release image refusing development keys by their public keys.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use slotsmith_yaml::escape::shown_path;
use zeroize::Zeroizing;

use super::rsa::{self, RsaPublic};
use super::{DbKey, SecureBootKeys};
use crate::progress::Progress;
use crate::signing::{self, DevKeys, DEV_KEY_DIR};
use crate::spec::{KeySource, SecureBootDbKey, SecureBootKeySpec};
use crate::tool::Tool;

/// The role name in the development-key registry and on the command line.
pub const ROLE: &str = "secureboot";
/// RSA-2048: the one size every UEFI firmware verifies.
const BITS: u32 = 2048;
/// Development certificates are valid for 20 years (firmware does not
/// check the dates, but sbverify and other tools may).
const DEV_DAYS: u32 = 7305;

/// The three Secure Boot keys, in the order they are generated.
pub const KEYS: [&str; 3] = ["pk", "kek", "db"];

/// The file names of one Secure Boot key in a key directory:
/// `secureboot-<name>.key.pem` and `secureboot-<name>.cert.pem`.
pub fn file_names(name: &str) -> (String, String) {
    (
        format!("{ROLE}-{name}.key.pem"),
        format!("{ROLE}-{name}.cert.pem"),
    )
}

/// One generated key.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// `pk`, `kek` or `db`.
    pub name: &'static str,
    /// The PKCS#8 PEM private key (mode 0600).
    pub key: PathBuf,
    /// The self-signed X.509 certificate (PEM).
    pub cert: PathBuf,
    /// The public-key fingerprint (see `rsa`).
    pub fingerprint: String,
}

/// Generates PK, KEK and db in `out_dir` (created 0700): RSA-2048 PKCS#8
/// private keys (0600, written by us, never by openssl, so they are never
/// readable by others even for an instant) and self-signed certificates
/// with the common name `<subject> PK|KEK|db`, valid for `days`. Refuses to
/// replace any existing file, and removes what it wrote when a step fails.
pub fn generate(out_dir: &Path, subject: &str, days: u32) -> Result<Vec<GeneratedKey>> {
    ensure!(
        !subject.is_empty()
            && subject.len() <= 48
            && subject
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " ._-()".contains(c)),
        "the certificate name {:?} must be 1 to 48 letters, digits, spaces or ._-()",
        slotsmith_yaml::escape::shown(subject)
    );
    ensure!(
        days > 0,
        "the certificate validity must be at least one day"
    );
    let mut planned = Vec::new();
    for name in KEYS {
        let (key, cert) = file_names(name);
        for p in [out_dir.join(key), out_dir.join(cert)] {
            if p.symlink_metadata().is_ok() {
                bail!(
                    "{} already exists: refusing to overwrite a key or certificate (move it away first)",
                    shown_path(&p)
                );
            }
            planned.push(p);
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out_dir)
        .with_context(|| format!("cannot create key directory {}", shown_path(out_dir)))?;
    let mut written = Vec::new();
    let result = generate_all(out_dir, subject, days, &mut written);
    if result.is_err() {
        // Only files this call created exclusively (write_new).
        for p in &written {
            let _ = fs::remove_file(p);
        }
    }
    result
}

fn generate_all(
    out_dir: &Path,
    subject: &str,
    days: u32,
    written: &mut Vec<PathBuf>,
) -> Result<Vec<GeneratedKey>> {
    let scratch = tempfile::Builder::new()
        .prefix("slotsmith-secureboot-")
        .tempdir()
        .context("creating a directory for the openssl configuration")?;
    // A configuration of our own: the system's openssl.cnf would decide the
    // extensions otherwise. Leaf certificates that sign (the firmware
    // checks signatures against them directly, not as a chain).
    let config = scratch.path().join("req.cnf");
    fs::write(
        &config,
        "[req]\ndistinguished_name = dn\n[dn]\n\
         [ext]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n\
         [db_ext]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
         extendedKeyUsage = codeSigning\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
    )
    .with_context(|| format!("writing {}", config.display()))?;
    let mut out = Vec::new();
    for name in KEYS {
        let (key_name, cert_name) = file_names(name);
        let key_path = out_dir.join(key_name);
        let cert_path = out_dir.join(cert_name);
        let pem = Zeroizing::new(
            Tool::new("openssl")?
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
                .arg(format!("rsa_keygen_bits:{BITS}"))
                .run()
                .with_context(|| format!("generating the secure boot {name} key"))?
                .stdout,
        );
        slotsmith_sign::keyfile::write_new(&key_path, 0o600, &pem)?;
        written.push(key_path.clone());
        let label = match name {
            "pk" => "PK",
            "kek" => "KEK",
            _ => "db",
        };
        let cert = Tool::new("openssl")?
            .args(["req", "-new", "-x509", "-sha256", "-config"])
            .arg(&config)
            .arg("-extensions")
            .arg(if name == "db" { "db_ext" } else { "ext" })
            .arg("-key")
            .arg(&key_path)
            .arg("-subj")
            .arg(format!("/CN={subject} {label}"))
            .arg("-days")
            .arg(days.to_string())
            .run()
            .with_context(|| format!("creating the secure boot {name} certificate"))?
            .stdout;
        slotsmith_sign::keyfile::write_new(&cert_path, 0o644, &cert)?;
        written.push(cert_path.clone());
        let public = rsa::load_private(&key_path, &format!("secure boot {name} key"))?;
        let (in_cert, _) = rsa::load_cert(&cert_path, &format!("secure boot {name} certificate"))?;
        ensure!(
            public == in_cert,
            "internal error: the {name} certificate does not hold the {name} key"
        );
        out.push(GeneratedKey {
            name,
            key: key_path,
            cert: cert_path,
            fingerprint: public.fingerprint(),
        });
    }
    Ok(out)
}

/// Resolves an image's Secure Boot keys, generating the development keys
/// on first use (never for a release image). `image_file` names the image
/// in messages.
pub fn resolve_keys(
    spec: &SecureBootKeySpec,
    release: bool,
    image_file: &str,
    root: &Path,
    progress: &mut Progress,
) -> Result<SecureBootKeys> {
    let dev_dir = root.join(DEV_KEY_DIR);
    let development = matches!(spec.db_key, SecureBootDbKey::Development);
    if development {
        if release {
            bail!(
                "a release image refuses development keys; set signing.secureboot in {image_file}"
            );
        }
        ensure_dev_keys(&dev_dir, progress)?;
    }
    let cert = |configured: &Option<String>, name: &str| -> Result<PathBuf> {
        match configured {
            Some(p) => signing::resolve(root, p, &format!("signing.secureboot.{name}-cert")),
            None => Ok(dev_dir.join(file_names(name).1)),
        }
    };
    let db_cert = cert(&spec.db_cert, "db")?;
    let kek_cert = cert(&spec.kek_cert, "kek")?;
    let pk_cert = cert(&spec.pk_cert, "pk")?;
    let db_key = match &spec.db_key {
        SecureBootDbKey::Development => DbKey::File(dev_dir.join(file_names("db").0)),
        SecureBootDbKey::File { path } => {
            DbKey::File(signing::resolve(root, path, "signing.secureboot.db-key")?)
        }
        SecureBootDbKey::Env { var } => DbKey::File(env_path(var, "db-key-env")?),
        SecureBootDbKey::Engine { engine, key } => DbKey::Engine {
            engine: engine.clone(),
            key: key.clone(),
        },
    };
    let optional = |source: &Option<KeySource>, name: &str| -> Result<Option<PathBuf>> {
        Ok(match source {
            None => None,
            Some(KeySource::Development) => Some(dev_dir.join(file_names(name).0)),
            Some(KeySource::File { path }) => Some(signing::resolve(
                root,
                path,
                &format!("signing.secureboot.{name}-key"),
            )?),
            Some(KeySource::Env { var }) => Some(env_path(var, &format!("{name}-key-env"))?),
            Some(KeySource::External { .. }) => {
                bail!("signing.secureboot.{name}-key cannot be an external signer")
            }
        })
    };
    let kek_key = optional(&spec.kek_key, "kek")?;
    let pk_key = optional(&spec.pk_key, "pk")?;

    if release {
        let files = [&db_cert, &kek_cert, &pk_cert]
            .into_iter()
            .chain(kek_key.iter())
            .chain(pk_key.iter());
        let db_file = match &db_key {
            DbKey::File(p) => Some(p),
            DbKey::Engine { .. } => None,
        };
        for p in files.chain(db_file) {
            signing::refuse_dev_key(p, &dev_dir)?;
        }
    }
    let dev = if release {
        Some(DevKeys::load(root)?)
    } else {
        None
    };
    let refuse = |what: String, key: &RsaPublic| -> Result<()> {
        match &dev {
            Some(dev) => dev.refuse(ROLE, &what, &key.fingerprint()),
            None => Ok(()),
        }
    };
    let mut certs = Vec::new();
    for (name, path) in [("db", &db_cert), ("kek", &kek_cert), ("pk", &pk_cert)] {
        let (key, der) = rsa::load_cert(path, &format!("secure boot {name} certificate"))?;
        refuse(format!("{name} certificate {}", shown_path(path)), &key)?;
        certs.push((key, der));
    }
    let [(db_pub, db_der), (kek_pub, kek_der), (pk_pub, pk_der)]: [(RsaPublic, Vec<u8>); 3] =
        certs.try_into().expect("three certificates");
    let private = |path: &Path, name: &str, cert_key: &RsaPublic, cert: &Path| -> Result<()> {
        let key = rsa::load_private(path, &format!("secure boot {name} key"))?;
        refuse(format!("{name} private key {}", shown_path(path)), &key)?;
        ensure!(
            key == *cert_key,
            "secure boot {name} key {} does not match certificate {}",
            shown_path(path),
            shown_path(cert)
        );
        Ok(())
    };
    if let DbKey::File(p) = &db_key {
        private(p, "db", &db_pub, &db_cert)?;
    }
    if let Some(p) = &kek_key {
        private(p, "kek", &kek_pub, &kek_cert)?;
    }
    if let Some(p) = &pk_key {
        private(p, "pk", &pk_pub, &pk_cert)?;
    }
    if development {
        progress.warn(&format!(
            "signing EFI binaries with the DEVELOPMENT secure boot db key {}",
            shown_path(&dev_dir.join(file_names("db").0))
        ));
        for (name, key) in [("pk", &pk_pub), ("kek", &kek_pub), ("db", &db_pub)] {
            signing::remember_dev_key(
                root,
                ROLE,
                &key.fingerprint(),
                &dev_dir.join(file_names(name).0),
                progress,
            );
        }
    }
    Ok(SecureBootKeys {
        db_key,
        db_cert,
        kek_cert,
        pk_cert,
        kek_key,
        pk_key,
        db_cert_der: db_der,
        kek_cert_der: kek_der,
        pk_cert_der: pk_der,
        fingerprints: [
            db_pub.fingerprint(),
            kek_pub.fingerprint(),
            pk_pub.fingerprint(),
        ],
        development,
    })
}

/// The private key file a `*-key-env` variable names.
fn env_path(var: &str, field: &str) -> Result<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => bail!("signing.secureboot.{field} names {var}, which is not set"),
    }
}

/// Generates the development PK, KEK and db in `keys/dev/` unless all six
/// files are there; a partial set is an error rather than a silent
/// regeneration (which would change the keys devices were given).
fn ensure_dev_keys(dev_dir: &Path, progress: &mut Progress) -> Result<()> {
    let files: Vec<PathBuf> = KEYS
        .iter()
        .flat_map(|name| {
            let (k, c) = file_names(name);
            [dev_dir.join(k), dev_dir.join(c)]
        })
        .collect();
    let present = files
        .iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .count();
    if present == files.len() {
        return Ok(());
    }
    if present > 0 {
        let missing: Vec<String> = files
            .iter()
            .filter(|p| p.symlink_metadata().is_err())
            .map(|p| shown_path(p))
            .collect();
        bail!(
            "the development secure boot keys in {} are incomplete (missing {}); move the \
             remaining secureboot-* files away to generate a new set",
            shown_path(dev_dir),
            missing.join(", ")
        );
    }
    generate(dev_dir, "slotsmith development", DEV_DAYS).with_context(|| {
        format!(
            "generating the development secure boot keys in {}",
            shown_path(dev_dir)
        )
    })?;
    progress.warn(&format!(
        "generated DEVELOPMENT secure boot keys (PK, KEK, db) in {} (not for release; \
         firmware that enrols them runs anything signed with them)",
        shown_path(dev_dir)
    ));
    Ok(())
}
