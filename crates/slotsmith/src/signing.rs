//! Resolving an image's boot, update and provenance keys into signers, and
//! the rule that keeps development keys out of release images.
//!
//! The plan only says *where* a key is (a file, an environment variable, an
//! external command, or the development key); this module turns that into
//! a [`Signer`] at build time. Security rules enforced here:
//! - a release image never uses, nor generates, a development key (see
//!   [`DevKeys`] for what makes a key a development key: its public key,
//!   not the path of its file);
//! - a private key readable by group or others is refused, as ssh does
//!   (`slotsmith_sign::keys::load_signing_key`);
//! - the configured public key must match the private key, and a signature
//!   returned by an external signer is verified against it before use, so
//!   a misconfigured HSM cannot produce an image the device will reject.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ed25519_dalek::VerifyingKey;
use slotsmith_sign::{check_signature, keys, KeySigner, Signer};
use slotsmith_yaml::escape::shown_path;

use crate::plan::Plan;
use crate::progress::Progress;
use crate::spec::{BootKeySpec, KeySource, UpdateKeySpec};
use crate::tool::Tool;

mod devkeys;
#[cfg(test)]
mod tests;
pub use devkeys::{
    key_fingerprints, note_generated_key, record_dev_key, DevKeys, DEV_KEY_DIR, DEV_KEY_REGISTRY,
};

/// A signer plus a line describing it for logs.
pub struct BootSigner {
    /// Signs manifests.
    pub signer: Box<dyn Signer>,
    /// The public key the device trusts.
    pub public_key: VerifyingKey,
}

/// Resolves the plan's boot key.
pub fn boot_signer(
    plan: &Plan,
    root: &Path,
    progress: &mut Progress,
) -> anyhow::Result<BootSigner> {
    boot_signer_for(
        &plan.boot.key,
        plan.boot.release,
        &plan.image.file,
        root,
        progress,
    )
}

/// [`boot_signer`] on the parts of the plan it needs (the key, whether the
/// image is a release, the image file for messages).
fn boot_signer_for(
    key: &BootKeySpec,
    release: bool,
    image_file: &str,
    root: &Path,
    progress: &mut Progress,
) -> anyhow::Result<BootSigner> {
    ed25519_signer_for("boot", key, release, image_file, root, progress)
}

/// Resolves the provenance key (an Ed25519 role of its own, with the boot
/// key's rules: `keys/dev/provenance.key.pem` generated on first use for
/// a development image, refused with every copy of it for a release).
pub fn provenance_signer(
    plan: &Plan,
    root: &Path,
    progress: &mut Progress,
) -> anyhow::Result<BootSigner> {
    ed25519_signer_for(
        "provenance",
        &plan.provenance_key,
        plan.boot.release,
        &plan.image.file,
        root,
        progress,
    )
}

/// An Ed25519 signer of `role` (`boot`, `provenance`): its key under
/// `signing.<role>`, the development key `keys/dev/<role>.key.pem`.
fn ed25519_signer_for(
    role: &str,
    key: &BootKeySpec,
    release: bool,
    image_file: &str,
    root: &Path,
    progress: &mut Progress,
) -> anyhow::Result<BootSigner> {
    let dev_dir = root.join(DEV_KEY_DIR);
    let configured_public = key
        .public_key
        .as_deref()
        .map(|p| resolve(root, p, &format!("signing.{role}.public-key")))
        .transpose()?;
    let private_path = match &key.source {
        KeySource::Development => {
            if release {
                bail!(
                    "a release image refuses development keys; set signing.{role} in {image_file}"
                );
            }
            let private = dev_dir.join(format!("{role}.key.pem"));
            if !private.exists() {
                keys::generate(&dev_dir, role).with_context(|| {
                    format!(
                        "generating a development {role} key in {}",
                        dev_dir.display()
                    )
                })?;
                progress.warn(&format!(
                    "generated a DEVELOPMENT {role} key: {} (not for release; images signed with it must never ship)",
                    private.display()
                ));
            }
            progress.warn(&format!(
                "signing with the DEVELOPMENT {role} key {}",
                private.display()
            ));
            Some(private)
        }
        KeySource::File { path } => Some(resolve(root, path, &format!("signing.{role}.key"))?),
        KeySource::Env { var } => Some(env_key_path(var, &format!("signing.{role}"))?),
        KeySource::External { .. } => None,
    };
    // The path check is the cheap, early half of the rule: it names the
    // directory. The key check below is the one that counts.
    if release {
        for p in private_path.iter().chain(configured_public.iter()) {
            refuse_dev_key(p, &dev_dir)?;
        }
    }
    let dev_keys = if release {
        Some(DevKeys::load(root)?)
    } else {
        None
    };
    match (&key.source, private_path) {
        (KeySource::External { argv }, _) => {
            let public = configured_public
                .with_context(|| format!("an external signer needs signing.{role}.public-key"))?;
            let public_key = keys::load_verifying_key(&public)
                .with_context(|| format!("loading {role} public key {}", public.display()))?;
            if let Some(dev) = &dev_keys {
                dev.refuse(
                    role,
                    &format!("public key {}", shown_path(&public)),
                    &keys::fingerprint(&public_key),
                )?;
            }
            Ok(BootSigner {
                signer: Box::new(ExternalSigner {
                    argv: argv.clone(),
                    public_key,
                    role: role.to_string(),
                }),
                public_key,
            })
        }
        (source, Some(private)) => {
            let sk = keys::load_signing_key(&private)
                .with_context(|| format!("loading {role} key {}", private.display()))?;
            let signer = KeySigner::new(sk);
            let public_key = signer.public_key();
            let fingerprint = keys::fingerprint(&public_key);
            if let Some(dev) = &dev_keys {
                dev.refuse(role, &describe_private(source, &private), &fingerprint)?;
            }
            let public =
                configured_public.unwrap_or_else(|| dev_dir.join(format!("{role}.pub.pem")));
            let configured = keys::load_verifying_key(&public)
                .with_context(|| format!("loading {role} public key {}", public.display()))?;
            if let Some(dev) = &dev_keys {
                dev.refuse(
                    role,
                    &format!("public key {}", shown_path(&public)),
                    &keys::fingerprint(&configured),
                )?;
            }
            if configured != public_key {
                bail!(
                    "{role} key {} does not match public key {}",
                    private.display(),
                    public.display()
                );
            }
            if matches!(source, KeySource::Development) {
                remember_dev_key(root, role, &fingerprint, &private, progress);
            }
            Ok(BootSigner {
                signer: Box::new(signer),
                public_key,
            })
        }
        (_, None) => bail!("no {role} key configured"),
    }
}

/// The private key file a `key-env` variable names.
fn env_key_path(var: &str, key: &str) -> anyhow::Result<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => bail!("{key}.key-env names {var}, which is not set"),
    }
}

/// "private key PATH", saying where the path came from for `key-env`.
fn describe_private(source: &KeySource, path: &Path) -> String {
    match source {
        KeySource::Env { var } => format!("private key {} (from ${var})", shown_path(path)),
        _ => format!("private key {}", shown_path(path)),
    }
}

/// Records a development key the build signs with in the project's
/// registry, so that the key stays recognisable after `keys/dev/` is
/// deleted or the key copied elsewhere. This also covers development keys
/// made before the registry existed. A failure is only a warning: the key
/// sits in `keys/dev/`, which the release check reads as well.
pub(crate) fn remember_dev_key(
    root: &Path,
    role: &str,
    fingerprint: &str,
    file: &Path,
    progress: &mut Progress,
) {
    match record_dev_key(root, role, fingerprint, file) {
        Ok(true) => progress.warn(&format!(
            "recorded the DEVELOPMENT {role} key {fingerprint} in {DEV_KEY_REGISTRY}; commit \
             that file so release images refuse this key wherever it is copied"
        )),
        Ok(false) => {}
        Err(err) => progress.warn(&format!(
            "cannot record the development {role} key in {DEV_KEY_REGISTRY}: {err:#}"
        )),
    }
}

/// A key, public key or certificate path from the image, through the one
/// path rule (crates/yaml/src/input.rs): a path inside the project may not
/// leave it through a symlink, and it must be a regular file.
pub(crate) fn resolve(root: &Path, p: &str, what: &str) -> anyhow::Result<PathBuf> {
    slotsmith_yaml::input::resolve_input_file(root, p)
        .map_err(|e| anyhow::format_err!("{what}: {e}"))
}

/// Refuses a key that resolves (through any symlink) into `keys/dev/`: the
/// early, path-based half of the development-key rule ([`DevKeys`] is the
/// key-based half, which also catches copies and hard links).
pub(crate) fn refuse_dev_key(p: &Path, dev_dir: &Path) -> anyhow::Result<()> {
    let real =
        fs::canonicalize(p).with_context(|| format!("resolving key path {}", p.display()))?;
    if let Ok(dev) = fs::canonicalize(dev_dir) {
        if real.starts_with(&dev) {
            bail!(
                "a release image refuses keys from {}: {} is a development key",
                DEV_KEY_DIR,
                p.display()
            );
        }
    }
    Ok(())
}

/// Signs through a configured command, for HSMs and offline signing: the
/// command gets the exact bytes to sign in the file `{in}` and must write
/// the raw 64-byte Ed25519 signature to `{out}`.
pub struct ExternalSigner {
    argv: Vec<String>,
    public_key: VerifyingKey,
    /// `boot` or `provenance`, for messages.
    role: String,
}

impl Signer for ExternalSigner {
    fn public_key(&self) -> VerifyingKey {
        self.public_key
    }

    fn sign(&self, msg: &[u8]) -> anyhow::Result<[u8; 64]> {
        let dir = tempfile::Builder::new()
            .prefix("slotsmith-sign-")
            .tempdir()
            .context("creating a signing directory")?;
        let input = dir.path().join("to-sign");
        let output = dir.path().join("signature");
        fs::write(&input, msg).with_context(|| format!("writing {}", input.display()))?;
        let subst = |a: &String| {
            a.replace("{in}", &input.to_string_lossy())
                .replace("{out}", &output.to_string_lossy())
        };
        let mut tool = Tool::new(&self.argv[0])?;
        for a in &self.argv[1..] {
            tool = tool.arg(subst(a));
        }
        tool.run()
            .with_context(|| format!("running the external {} signer", self.role))?;
        let sig = fs::read(&output).with_context(|| {
            format!(
                "reading the signature the external signer wrote to {}",
                output.display()
            )
        })?;
        check_signature(&self.public_key, msg, &sig).with_context(|| {
            format!(
                "the external signer returned a signature that does not verify with signing.{}.public-key",
                self.role
            )
        })?;
        let mut out = [0u8; 64];
        out.copy_from_slice(&sig);
        Ok(out)
    }

    fn describe(&self) -> String {
        format!("external signer {}", self.argv[0])
    }
}

/// How update signatures (detached CMS over sw-description) are made.
pub enum UpdateSigning {
    /// An in-process ECDSA P-256 key (boxed: it is large).
    Key(Box<slotsmith_cms::UpdateSigner>),
    /// A command that signs the CMS signed attributes.
    External {
        /// The argv with `{in}` and `{out}`.
        argv: Vec<String>,
        /// The signer certificate.
        cert: PathBuf,
    },
}

/// The resolved update signer and the certificate devices trust.
pub struct UpdateSigner {
    /// How to sign.
    pub signing: UpdateSigning,
    /// The signer certificate (PEM).
    pub cert: PathBuf,
}

impl UpdateSigner {
    /// A detached DER CMS SignedData over `content`. With an external
    /// signer, the command gets the DER signed attributes in `{in}` and
    /// writes an ECDSA-SHA256 signature (DER, as `openssl dgst -sha256
    /// -sign` makes) to `{out}`; it is checked against the certificate
    /// before the SignedData is assembled.
    pub fn sign(&self, content: &[u8]) -> anyhow::Result<Vec<u8>> {
        match &self.signing {
            UpdateSigning::Key(k) => k.sign_detached(content),
            UpdateSigning::External { argv, cert } => {
                let dir = tempfile::Builder::new()
                    .prefix("slotsmith-sign-")
                    .tempdir()
                    .context("creating a signing directory")?;
                let input = dir.path().join("signed-attributes.der");
                let output = dir.path().join("signature.der");
                fs::write(&input, slotsmith_cms::signed_attrs_der(content))
                    .with_context(|| format!("writing {}", input.display()))?;
                let subst = |a: &String| {
                    a.replace("{in}", &input.to_string_lossy())
                        .replace("{out}", &output.to_string_lossy())
                };
                let mut tool = Tool::new(&argv[0])?;
                for a in &argv[1..] {
                    tool = tool.arg(subst(a));
                }
                tool.run().context("running the external update signer")?;
                let sig = fs::read(&output).with_context(|| {
                    format!(
                        "reading the signature the external signer wrote to {}",
                        output.display()
                    )
                })?;
                slotsmith_cms::assemble(cert, content, &sig).context("the external update signer returned a signature that does not verify with signing.update.cert")
            }
        }
    }
}

/// Resolves the plan's update key, generating the development key and
/// certificate on first use (never for a release image).
pub fn update_signer(
    plan: &Plan,
    root: &Path,
    progress: &mut Progress,
) -> anyhow::Result<UpdateSigner> {
    update_signer_for(
        &plan.update.key,
        plan.boot.release,
        &plan.image.file,
        plan.source_date_epoch,
        root,
        progress,
    )
}

/// [`update_signer`] on the parts of the plan it needs.
fn update_signer_for(
    key: &UpdateKeySpec,
    release: bool,
    image_file: &str,
    source_date_epoch: u64,
    root: &Path,
    progress: &mut Progress,
) -> anyhow::Result<UpdateSigner> {
    let dev_dir = root.join(DEV_KEY_DIR);
    let cert = match &key.cert {
        Some(c) => resolve(root, c, "signing.update.cert")?,
        None => dev_dir.join("update.cert.pem"),
    };
    let private = match &key.source {
        KeySource::Development => {
            if release {
                bail!(
                    "a release image refuses development keys; set signing.update in {image_file}"
                );
            }
            let private = dev_dir.join("update.key.pem");
            if !private.exists() {
                // Valid from a day before the epoch for 20 years: a device
                // clock anywhere in that range accepts the certificate.
                let not_before = source_date_epoch.saturating_sub(86400);
                slotsmith_cms::generate_update_key(
                    &dev_dir,
                    "update",
                    "slotsmith development update signer",
                    not_before,
                    7305,
                    None,
                )
                .with_context(|| {
                    format!(
                        "generating a development update key in {}",
                        dev_dir.display()
                    )
                })?;
                progress.warn(&format!(
                    "generated a DEVELOPMENT update key and certificate: {} (not for release; devices must never trust it)",
                    private.display()
                ));
            }
            progress.warn(&format!(
                "signing the update with the DEVELOPMENT key {}",
                private.display()
            ));
            Some(private)
        }
        KeySource::File { path } => Some(resolve(root, path, "signing.update.key")?),
        KeySource::Env { var } => Some(env_key_path(var, "signing.update")?),
        KeySource::External { .. } => None,
    };
    if release {
        for p in private.iter().chain(std::iter::once(&cert)) {
            refuse_dev_key(p, &dev_dir)?;
        }
        // The certificate is what devices trust; a development key's
        // certificate is refused whoever holds the private half.
        let dev = DevKeys::load(root)?;
        dev.refuse(
            "update",
            &format!("certificate {}", shown_path(&cert)),
            &slotsmith_cms::cert_fingerprint(&cert)
                .with_context(|| format!("loading update certificate {}", cert.display()))?,
        )?;
        if let (source, Some(private)) = (&key.source, &private) {
            let signer = slotsmith_cms::UpdateSigner::load(private, &cert)
                .with_context(|| format!("loading update key {}", private.display()))?;
            dev.refuse(
                "update",
                &describe_private(source, private),
                &signer.fingerprint(),
            )?;
        }
    }
    let signing = match (&key.source, private) {
        (KeySource::External { argv }, _) => UpdateSigning::External {
            argv: argv.clone(),
            cert: cert.clone(),
        },
        (source, Some(private)) => {
            let signer = slotsmith_cms::UpdateSigner::load(&private, &cert)
                .with_context(|| format!("loading update key {}", private.display()))?;
            if matches!(source, KeySource::Development) {
                remember_dev_key(root, "update", &signer.fingerprint(), &private, progress);
            }
            UpdateSigning::Key(Box::new(signer))
        }
        (_, None) => bail!("no update key configured"),
    };
    Ok(UpdateSigner { signing, cert })
}
