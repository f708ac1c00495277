//! Signed build provenance: an in-toto Statement v1 carrying a SLSA
//! provenance v1 predicate, in a DSSE envelope signed with the image's
//! provenance key (Ed25519, a role of its own; see `signing.rs`).
//!
//! The build writes it as `out/<name>/provenance.dsse.json`. Its subjects
//! are every artifact `build.json` lists plus `build.json` itself; the
//! envelope cannot name itself, so `SHA256SUMS` covers it. The predicate
//! lists what went in: every input `build.json` records (image file,
//! policies, layer files, base tarball, kernel files, the lock) and every
//! locked Debian package, by sha256.
//!
//! **Deterministic:** the statement is compact JSON whose keys are sorted
//! (every struct below declares its fields in byte order of their JSON
//! names, and the only maps are `BTreeMap`s); its times are
//! `SOURCE_DATE_EPOCH`; Ed25519 signatures are deterministic. The same
//! inputs and key give the same bytes.
//!
//! **What a signature is over:** DSSE's pre-authentication encoding
//! ([`pae`]), never the JSON of the envelope, so the payload type is
//! signed too and no JSON canonicalisation is trusted. Verification
//! ([`verify`]) decodes the payload, checks a signature over its PAE with
//! the one key the caller trusts, and only then parses the statement; the
//! `keyid` is a hint and decides nothing. [`verify_dir`] then checks that
//! every subject is the file beside the envelope, with its sha256.
//!
//! Hand-written (about 300 lines) because the format is small and fixed,
//! and no Rust in-toto crate is in the dependency graph; the tests check
//! the bytes against an independent implementation (`securesystemslib`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path};

use anyhow::{bail, ensure, Context};
use base64ct::{Base64, Encoding};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use slotsmith_sign::{check_signature, Signer};
use slotsmith_yaml::escape::{shown, shown_path};

use crate::build::BuildRecord;
use crate::lockfile::LockedPackage;

/// The DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// SLSA provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What a slotsmith build is, for `buildType`. The `.invalid` domain says
/// it names, and fetches, nothing.
pub const BUILD_TYPE: &str = "https://slotsmith.invalid/provenance/build/v1";
/// The builder: a slotsmith build on the machine that ran it.
pub const BUILDER_ID: &str = "https://slotsmith.invalid/provenance/builder/local/v1";
/// An envelope is a few KiB per thousand artifacts; a larger file is not one.
const MAX_ENVELOPE: u64 = 64 << 20;

/// An in-toto Statement v1 (fields in JSON key order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// The SLSA provenance predicate.
    pub predicate: Provenance,
    /// [`PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// What was built: each artifact by name and sha256.
    pub subject: Vec<Subject>,
}

/// One built artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// Its digests.
    pub digest: Digests,
    /// Its path inside the output directory.
    pub name: String,
}

/// A digest set; slotsmith records sha256 only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digests {
    /// Lowercase hex.
    pub sha256: String,
}

/// SLSA provenance v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// How the build was defined.
    #[serde(rename = "buildDefinition")]
    pub build_definition: BuildDefinition,
    /// Who ran it.
    #[serde(rename = "runDetails")]
    pub run_details: RunDetails,
}

/// SLSA `buildDefinition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildDefinition {
    /// [`BUILD_TYPE`].
    #[serde(rename = "buildType")]
    pub build_type: String,
    /// What the user chose: the image and the timestamp clamp.
    #[serde(rename = "externalParameters")]
    pub external_parameters: ExternalParameters,
    /// What slotsmith derived: the plan's hash and its own version.
    #[serde(rename = "internalParameters")]
    pub internal_parameters: InternalParameters,
    /// Every input, by content.
    #[serde(rename = "resolvedDependencies")]
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// The build's external parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalParameters {
    /// The image definition.
    pub image: ImageParameters,
    /// `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: u64,
}

/// The image a build was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageParameters {
    /// The image file, relative to the project root.
    pub file: String,
    /// Image name.
    pub name: String,
    /// Image version.
    pub version: String,
}

/// The build's internal parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InternalParameters {
    /// sha256 of the plan's canonical JSON: every decision of the build.
    pub plan_sha256: String,
    /// The slotsmith version that built.
    pub slotsmith_version: String,
}

/// A SLSA ResourceDescriptor: at least one of `content`, `digest`, `uri`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceDescriptor {
    /// What kind of input it is, and for a symlink its target.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Base64 of a symlink's target (an empty directory: empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The sha256 of a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digests>,
    /// The project path, or the `.deb` file name of a locked package.
    pub name: String,
    /// A package URL for a locked Debian package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// SLSA `runDetails`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDetails {
    /// The builder.
    pub builder: Builder,
    /// The invocation.
    pub metadata: Metadata,
}

/// SLSA `builder`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Builder {
    /// [`BUILDER_ID`].
    pub id: String,
    /// `{"slotsmith": <version>}`.
    pub version: BTreeMap<String, String>,
}

/// SLSA `metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// `SOURCE_DATE_EPOCH` (no wall clock: the bytes must repeat).
    #[serde(rename = "finishedOn")]
    pub finished_on: String,
    /// Derived from the plan's hash: the same plan is the same invocation.
    #[serde(rename = "invocationId")]
    pub invocation_id: String,
    /// `SOURCE_DATE_EPOCH`.
    #[serde(rename = "startedOn")]
    pub started_on: String,
}

/// A DSSE envelope (fields in JSON key order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Base64 (standard, padded) of the serialized statement.
    pub payload: String,
    /// [`PAYLOAD_TYPE`].
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// One signature per key.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Hex sha256 of the raw 32-byte public key ([`keyid`]); a hint only.
    pub keyid: String,
    /// Base64 of the 64-byte Ed25519 signature over the PAE.
    pub sig: String,
}

/// The provenance of the build `record` describes. `build_json_sha256` is
/// the hash of the written `build.json`, a subject too; `packages` are
/// the locked Debian packages the base was installed from, of the Debian
/// `suite` (their purls are the SBOM's, [`crate::sbom::debian_purl`]).
pub fn statement(
    record: &BuildRecord,
    build_json: (&str, &str),
    packages: &[LockedPackage],
    suite: Option<&str>,
) -> Statement {
    let mut subject: Vec<Subject> = record
        .artifacts
        .iter()
        .map(|a| (a.name.as_str(), a.sha256.as_str()))
        .chain(std::iter::once(build_json))
        .map(|(name, sha256)| Subject {
            digest: Digests {
                sha256: sha256.to_string(),
            },
            name: name.to_string(),
        })
        .collect();
    subject.sort_by(|a, b| a.name.cmp(&b.name));
    let mut deps: Vec<ResourceDescriptor> = record.inputs.iter().map(input_descriptor).collect();
    deps.extend(packages.iter().map(|p| ResourceDescriptor {
        annotations: BTreeMap::from([("kind".to_string(), "debian-package".to_string())]),
        content: None,
        digest: Some(Digests {
            sha256: p.sha256.clone(),
        }),
        name: p.deb_file_name(),
        uri: Some(crate::sbom::debian_purl(
            &p.name,
            &p.version,
            &p.architecture,
            suite,
        )),
    }));
    let time = slotsmith_disk::time::rfc3339(record.source_date_epoch);
    let version = env!("CARGO_PKG_VERSION").to_string();
    Statement {
        type_: STATEMENT_TYPE.into(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE.into(),
                external_parameters: ExternalParameters {
                    image: ImageParameters {
                        file: record.image_file.clone(),
                        name: record.image.clone(),
                        version: record.version.clone(),
                    },
                    source_date_epoch: record.source_date_epoch,
                },
                internal_parameters: InternalParameters {
                    plan_sha256: record.plan_sha256.clone(),
                    slotsmith_version: version.clone(),
                },
                resolved_dependencies: deps,
            },
            run_details: RunDetails {
                builder: Builder {
                    id: BUILDER_ID.into(),
                    version: BTreeMap::from([("slotsmith".to_string(), version)]),
                },
                metadata: Metadata {
                    finished_on: time.clone(),
                    invocation_id: format!("slotsmith-plan-sha256:{}", record.plan_sha256),
                    started_on: time,
                },
            },
        },
        predicate_type: PREDICATE_TYPE.into(),
        subject,
    }
}

/// One recorded input as a resource descriptor.
fn input_descriptor(i: &crate::build::Input) -> ResourceDescriptor {
    let mut annotations = BTreeMap::new();
    let mut content = None;
    if let Some(target) = &i.symlink {
        annotations.insert("symlink".to_string(), target.clone());
        content = Some(Base64::encode_string(target.as_bytes()));
    } else if i.directory {
        annotations.insert("directory".to_string(), "true".to_string());
        content = Some(String::new());
    }
    if let Some(mode) = &i.mode {
        annotations.insert("mode".to_string(), mode.clone());
    }
    ResourceDescriptor {
        annotations,
        content,
        digest: i.sha256.as_ref().map(|s| Digests { sha256: s.clone() }),
        name: i.path.clone(),
        uri: None,
    }
}

/// DSSE's pre-authentication encoding: `DSSEv1 <len> <type> <len> <body>`,
/// lengths in ASCII decimal bytes. This, not the envelope, is signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The DSSE `keyid` of a public key: hex sha256 of its raw 32 bytes (the
/// boot key's fingerprint without the `sha256:` prefix).
pub fn keyid(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The statement's bytes: compact JSON, keys sorted.
pub fn statement_bytes(statement: &Statement) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(statement).context("serialising the provenance statement")
}

/// Signs `statement` into an envelope with `signer`.
pub fn sign(statement: &Statement, signer: &dyn Signer) -> anyhow::Result<Envelope> {
    let payload = statement_bytes(statement)?;
    let sig = signer
        .sign(&pae(PAYLOAD_TYPE, &payload))
        .with_context(|| format!("signing the provenance with {}", signer.describe()))?;
    Ok(Envelope {
        payload: Base64::encode_string(&payload),
        payload_type: PAYLOAD_TYPE.into(),
        signatures: vec![EnvelopeSignature {
            keyid: keyid(&signer.public_key()),
            sig: Base64::encode_string(&sig),
        }],
    })
}

/// The envelope file's bytes: pretty JSON and a final newline.
pub fn envelope_bytes(envelope: &Envelope) -> anyhow::Result<Vec<u8>> {
    let mut v = serde_json::to_vec_pretty(envelope).context("serialising the DSSE envelope")?;
    v.push(b'\n');
    Ok(v)
}

/// Checks an envelope's signature with `key` and returns its statement.
/// Any one signature that verifies over the PAE suffices (DSSE allows
/// several signers); the statement is parsed only after that.
pub fn verify(envelope: &[u8], key: &VerifyingKey) -> anyhow::Result<Statement> {
    let env: Envelope =
        serde_json::from_slice(envelope).context("the provenance is not a DSSE envelope")?;
    ensure!(
        env.payload_type == PAYLOAD_TYPE,
        "the envelope's payloadType is {}, not {PAYLOAD_TYPE}",
        shown(&env.payload_type)
    );
    let payload = Base64::decode_vec(&env.payload)
        .map_err(|e| anyhow::format_err!("the envelope's payload is not base64: {e}"))?;
    let signed = pae(&env.payload_type, &payload);
    let good = env.signatures.iter().any(|s| {
        Base64::decode_vec(&s.sig)
            .ok()
            .is_some_and(|sig| check_signature(key, &signed, &sig).is_ok())
    });
    if !good {
        bail!(
            "no signature of the provenance ({} given) verifies with the provenance key {}",
            env.signatures.len(),
            slotsmith_sign::fingerprint(key)
        );
    }
    let statement: Statement = serde_json::from_slice(&payload)
        .context("the signed payload is not an in-toto statement")?;
    ensure!(
        statement.type_ == STATEMENT_TYPE,
        "the statement's _type is {}, not {STATEMENT_TYPE}",
        shown(&statement.type_)
    );
    ensure!(
        statement.predicate_type == PREDICATE_TYPE,
        "the statement's predicateType is {}, not {PREDICATE_TYPE}",
        shown(&statement.predicate_type)
    );
    Ok(statement)
}

/// What [`verify_dir`] checked.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The envelope file.
    pub envelope: String,
    /// The key's fingerprint (`sha256:` over the raw key).
    pub key: String,
    /// Image name and version the statement names.
    pub image: String,
    /// The plan hash it names.
    pub plan_sha256: String,
    /// Subjects checked against the files beside the envelope.
    pub subjects: usize,
    /// Inputs it lists.
    pub dependencies: usize,
}

/// Verifies the envelope at `path` with `key`, then every subject against
/// the file of that name in the envelope's directory.
pub fn verify_dir(path: &Path, key: &VerifyingKey) -> anyhow::Result<Report> {
    let bytes = slotsmith_sign::keyfile::read_bounded(path, MAX_ENVELOPE, false)
        .with_context(|| format!("reading the provenance {}", shown_path(path)))?;
    let statement = verify(&bytes, key)
        .with_context(|| format!("verifying the provenance {}", shown_path(path)))?;
    ensure!(
        !statement.subject.is_empty(),
        "the provenance {} names no subject",
        shown_path(path)
    );
    let dir = path.parent().unwrap_or(Path::new("."));
    for s in &statement.subject {
        check_subject(dir, s).with_context(|| format!("provenance subject {}", shown(&s.name)))?;
    }
    let b = &statement.predicate.build_definition;
    Ok(Report {
        envelope: shown_path(path),
        key: slotsmith_sign::fingerprint(key),
        image: format!(
            "{} {}",
            shown(&b.external_parameters.image.name),
            shown(&b.external_parameters.image.version)
        ),
        plan_sha256: shown(&b.internal_parameters.plan_sha256),
        subjects: statement.subject.len(),
        dependencies: b.resolved_dependencies.len(),
    })
}

/// One subject: a plain relative path (the name is signed, but a path
/// must still never leave the directory) to a regular file with that
/// sha256. The file is opened once, without following a symlink and
/// without blocking (a FIFO must not hang `verify`), checked to be a
/// regular file through that handle, and that handle is hashed, up to
/// the size it had when opened: nothing can be swapped in between.
fn check_subject(dir: &Path, s: &Subject) -> anyhow::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let rel = Path::new(&s.name);
    ensure!(
        !s.name.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_))),
        "is not a plain relative path"
    );
    let file = dir.join(rel);
    let fd = match rustix::fs::open(
        &file,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => {
            bail!("missing beside the provenance: {}", shown_path(&file))
        }
        // O_NOFOLLOW on a symlink.
        Err(rustix::io::Errno::LOOP) => {
            bail!("{} is a symlink, not a regular file", shown_path(&file))
        }
        Err(e) => {
            return Err(std::io::Error::from(e))
                .with_context(|| format!("opening {}", shown_path(&file)))
        }
    };
    let f = fs::File::from(fd);
    let meta = f
        .metadata()
        .with_context(|| format!("reading the metadata of {}", shown_path(&file)))?;
    ensure!(
        meta.file_type().is_file(),
        "{} is not a regular file",
        shown_path(&file)
    );
    let mut h = Sha256::new();
    let n = std::io::copy(
        &mut std::io::Read::take(&f, meta.len().saturating_add(1)),
        &mut h,
    )
    .with_context(|| format!("hashing {}", shown_path(&file)))?;
    ensure!(
        n == meta.len(),
        "{} changed size while it was hashed",
        shown_path(&file)
    );
    let sha = hex::encode(h.finalize());
    ensure!(
        sha.eq_ignore_ascii_case(&s.digest.sha256),
        "{} has sha256 {sha}, the provenance says {}",
        shown_path(&file),
        shown(&s.digest.sha256)
    );
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
