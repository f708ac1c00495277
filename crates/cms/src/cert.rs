//! X.509 v3 certificates for update signing keys and private CAs.
//!
//! SWUpdate 2022.12 (Debian) checks the CMS signer certificate with
//! OpenSSL's `smime_sign` purpose unless it is started with
//! `--cert-purpose codeSigning`. Under that purpose an extendedKeyUsage
//! without emailProtection is refused, so a "correct-looking" codeSigning
//! certificate silently bricks updates on stock devices. Update certificates
//! made here therefore carry emailProtection *and* codeSigning, so they pass
//! both the default purpose and `--cert-purpose codeSigning`.
//!
//! The certificate is built field by field instead of through the
//! x509-cert builder profiles, so that exactly the extensions the docs
//! promise are present, with the criticality RFC 5280 asks for: the
//! builder's leaf profile would add nonRepudiation and an
//! authorityKeyIdentifier to self-signed certificates, and derives key
//! identifiers with SHA-1.

use crate::files::{self, LoadedCert};
use crate::oids;
use anyhow::{anyhow, bail, ensure, Context, Result};
use der::asn1::{BitString, GeneralizedTime, OctetString, UtcTime};
use der::{Any, Encode, Tag};
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use p256::{PublicKey, SecretKey};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use signature::Signer;
use slotsmith_sign::algorithm::Algorithm;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};
use x509_cert::ext::{AsExtension, Extension};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

/// RFC 5280 `ub-common-name`.
const MAX_COMMON_NAME: usize = 64;
/// Seconds in a validity day.
const DAY: u64 = 86_400;
/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050 on.
/// 2050-01-01T00:00:00Z as unix seconds.
const GENERALIZED_TIME_FROM: u64 = 2_524_608_000;

/// What kind of certificate to make.
enum Role<'a> {
    /// Update signer; issued by the given CA, or self-signed when `None`.
    Leaf(Option<&'a Issuer>),
    /// Self-signed private CA.
    Ca,
}

/// A CA that issues update certificates.
struct Issuer {
    cert: LoadedCert,
    key: SecretKey,
}

/// Writes `<name>.key.pem` (PKCS#8 PEM, P-256, mode 0600 set at creation)
/// and `<name>.cert.pem` (X.509 v3, `CN=<common_name>`, valid from
/// `not_before` (unix seconds) for `days` days) into `out_dir`, refusing to
/// overwrite either file.
///
/// The certificate has keyUsage digitalSignature (critical),
/// extendedKeyUsage emailProtection + codeSigning (so SWUpdate's default
/// `smime_sign` purpose accepts it, see the module docs),
/// subjectKeyIdentifier and basicConstraints CA:FALSE (critical). It is
/// self-signed when `issuer` is `None`; otherwise it is issued by the CA
/// whose certificate and key PEM files are given, and carries an
/// authorityKeyIdentifier. Returns `(key path, cert path)`.
pub fn generate_update_key(
    out_dir: &Path,
    name: &str,
    common_name: &str,
    not_before: u64,
    days: u32,
    issuer: Option<(&Path, &Path)>,
) -> Result<(PathBuf, PathBuf)> {
    let issuer = match issuer {
        Some((cert, key)) => Some(load_issuer(cert, key)?),
        None => None,
    };
    generate(
        out_dir,
        name,
        common_name,
        not_before,
        days,
        Role::Leaf(issuer.as_ref()),
    )
}

/// Writes a private CA the same way as [`generate_update_key`]: a
/// self-signed certificate with keyUsage keyCertSign + cRLSign (critical),
/// basicConstraints CA:TRUE (critical) and subjectKeyIdentifier. Give its
/// certificate to `swupdate -k` and issue update keys from it with
/// [`generate_update_key`], so that update keys can be rotated without
/// touching the devices' trust store.
pub fn generate_ca(
    out_dir: &Path,
    name: &str,
    common_name: &str,
    not_before: u64,
    days: u32,
) -> Result<(PathBuf, PathBuf)> {
    generate(out_dir, name, common_name, not_before, days, Role::Ca)
}

fn generate(
    out_dir: &Path,
    name: &str,
    common_name: &str,
    not_before: u64,
    days: u32,
    role: Role<'_>,
) -> Result<(PathBuf, PathBuf)> {
    files::check_file_name(name)?;
    let subject = common_name_to_name(common_name)?;
    let validity = validity(not_before, days)?;
    files::create_dir(out_dir)?;
    let key_path = out_dir.join(format!("{name}.key.pem"));
    let cert_path = out_dir.join(format!("{name}.cert.pem"));
    // Check both first so that an existing certificate is reported before
    // a key is written next to it.
    files::refuse_existing(&key_path)?;
    files::refuse_existing(&cert_path)?;

    let key = SecretKey::random(&mut OsRng);
    let cert_der = build_certificate(&key, subject, validity, &role)?;
    let cert_pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &cert_der)
        .map_err(|err| anyhow!("cannot encode the certificate as PEM: {err}"))?;
    let key_pem = files::private_key_pem(&key)?;

    files::write_new(&key_path, files::PRIVATE_MODE, key_pem.as_bytes())?;
    if let Err(err) = files::write_new(&cert_path, files::PUBLIC_MODE, cert_pem.as_bytes()) {
        // Do not leave a key without its certificate; we created it
        // exclusively, so this removes only what we wrote.
        let _ = fs::remove_file(&key_path);
        return Err(err);
    }
    files::sync_dir(out_dir)?;
    Ok((key_path, cert_path))
}

/// Loads and sanity-checks the issuing CA: its key must match its
/// certificate, and the certificate must be a CA allowed to sign
/// certificates, otherwise OpenSSL (and so SWUpdate) would reject every
/// certificate we issue from it.
fn load_issuer(cert_path: &Path, key_path: &Path) -> Result<Issuer> {
    let cert = files::load_single_cert(cert_path)?;
    let key = files::load_private_key(key_path)?;
    let cert_key = cert_public_key(&cert.cert)
        .with_context(|| format!("CA certificate {}", cert_path.display()))?;
    ensure!(
        cert_key == key.public_key(),
        "CA key {} does not belong to CA certificate {}",
        key_path.display(),
        cert_path.display()
    );
    ensure!(
        is_ca(&cert.cert)?,
        "{} is not a CA certificate (basicConstraints CA:TRUE with keyCertSign)",
        cert_path.display()
    );
    Ok(Issuer { cert, key })
}

/// True if the certificate has basicConstraints CA:TRUE and, when keyUsage
/// is present, keyCertSign: what OpenSSL demands of an issuer.
pub(crate) fn is_ca(cert: &Certificate) -> Result<bool> {
    let bc = cert
        .tbs_certificate
        .get::<BasicConstraints>()
        .map_err(|err| anyhow!("cannot parse basicConstraints: {err}"))?;
    let ku = cert
        .tbs_certificate
        .get::<KeyUsage>()
        .map_err(|err| anyhow!("cannot parse keyUsage: {err}"))?;
    let ca = matches!(bc, Some((_, BasicConstraints { ca: true, .. })));
    let may_sign = ku.is_none_or(|(_, ku)| ku.key_cert_sign());
    Ok(ca && may_sign)
}

/// The P-256 public key of a certificate, or an error naming what it has
/// ("expected an ECDSA P-256 key, found Ed25519"); callers add the file.
pub(crate) fn cert_public_key(cert: &Certificate) -> Result<PublicKey> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let der = spki.to_der().map_err(|err| anyhow!("{err}"))?;
    let found = Algorithm::of_spki(&der)?;
    ensure!(
        found == Algorithm::EcdsaP256,
        "expected an ECDSA P-256 key, found {found} in the certificate"
    );
    spki::DecodePublicKey::from_public_key_der(&der)
        .map_err(|err| anyhow!("the certificate's ECDSA P-256 public key is invalid ({err})"))
}

/// `CN=<common_name>` as a single-RDN name, the value a UTF8String (what
/// `openssl req` writes by default).
fn common_name_to_name(common_name: &str) -> Result<Name> {
    ensure!(!common_name.is_empty(), "common name is empty");
    ensure!(
        common_name.chars().count() <= MAX_COMMON_NAME,
        "common name {common_name:?} is longer than {MAX_COMMON_NAME} characters (RFC 5280)"
    );
    // Control characters would be invisible in `openssl x509 -text` and in
    // SWUpdate's log, and could be used to make one name look like another.
    ensure!(
        !common_name.chars().any(char::is_control),
        "common name {common_name:?} contains control characters"
    );
    let value = Any::new(Tag::Utf8String, common_name.as_bytes())
        .map_err(|err| anyhow!("cannot encode common name: {err}"))?;
    let atv = AttributeTypeAndValue {
        oid: oids::COMMON_NAME,
        value,
    };
    let rdn = RelativeDistinguishedName::try_from(vec![atv])
        .map_err(|err| anyhow!("cannot encode common name: {err}"))?;
    Ok(RdnSequence(vec![rdn]))
}

fn validity(not_before: u64, days: u32) -> Result<Validity> {
    ensure!(days > 0, "validity must be at least one day");
    let not_after = u64::from(days)
        .checked_mul(DAY)
        .and_then(|d| d.checked_add(not_before))
        .ok_or_else(|| anyhow!("validity end is out of range"))?;
    Ok(Validity {
        not_before: x509_time(not_before)?,
        not_after: x509_time(not_after)?,
    })
}

/// RFC 5280 time: UTCTime before 2050, GeneralizedTime after (up to 9999).
fn x509_time(unix: u64) -> Result<Time> {
    let duration = Duration::from_secs(unix);
    let time = if unix < GENERALIZED_TIME_FROM {
        UtcTime::from_unix_duration(duration).map(Time::UtcTime)
    } else {
        GeneralizedTime::from_unix_duration(duration).map(Time::GeneralTime)
    };
    time.map_err(|_| anyhow!("time {unix} (unix seconds) cannot be put in a certificate"))
}

/// A random, positive, 16-byte serial number. RFC 5280 wants serials unique
/// per issuer; 127 random bits make a collision negligible without keeping
/// any CA state.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    // Clear the sign bit and keep the first byte nonzero so the encoding is
    // always exactly 16 bytes and positive.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::new(&bytes).map_err(|err| anyhow!("cannot encode serial number: {err}"))
}

/// RFC 7093 method 1: the leftmost 160 bits of SHA-256 over the
/// subjectPublicKey bits. Any stable derivation works for chain building;
/// this one avoids SHA-1.
pub(crate) fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Result<OctetString> {
    let digest = Sha256::digest(spki.subject_public_key.raw_bytes());
    OctetString::new(&digest[..20]).map_err(|err| anyhow!("{err}"))
}

/// The key identifier an issuer is known by: its subjectKeyIdentifier when
/// it has one (what OpenSSL matches authorityKeyIdentifier against), or
/// ours computed from its key.
fn issuer_key_identifier(cert: &Certificate) -> Result<OctetString> {
    let ski = cert
        .tbs_certificate
        .get::<SubjectKeyIdentifier>()
        .map_err(|err| anyhow!("cannot parse the CA's subjectKeyIdentifier: {err}"))?;
    match ski {
        Some((_, ski)) => Ok(ski.0),
        None => key_identifier(&cert.tbs_certificate.subject_public_key_info),
    }
}

fn ecdsa_sha256() -> AlgorithmIdentifierOwned {
    // RFC 5758 §3.2: the parameters field MUST be absent.
    AlgorithmIdentifierOwned {
        oid: oids::ECDSA_WITH_SHA256,
        parameters: None,
    }
}

fn extension<E: AsExtension>(ext: &E, subject: &Name, critical: bool) -> Result<Extension> {
    let mut ext = ext
        .to_extension(subject, &[])
        .map_err(|err| anyhow!("cannot encode certificate extension: {err}"))?;
    ext.critical = critical;
    Ok(ext)
}

/// Builds and signs the certificate for `key`, returning its DER.
fn build_certificate(
    key: &SecretKey,
    subject: Name,
    validity: Validity,
    role: &Role<'_>,
) -> Result<Vec<u8>> {
    let spki_der = key
        .public_key()
        .to_public_key_der()
        .map_err(|err| anyhow!("cannot encode the public key: {err}"))?;
    let spki = SubjectPublicKeyInfoOwned::try_from(spki_der.as_bytes())
        .map_err(|err| anyhow!("cannot encode the public key: {err}"))?;
    let ski = SubjectKeyIdentifier(key_identifier(&spki)?);

    let mut extensions = vec![extension(&ski, &subject, false)?];
    let (issuer_name, signer) = match role {
        Role::Leaf(Some(issuer)) => {
            let aki = AuthorityKeyIdentifier {
                key_identifier: Some(issuer_key_identifier(&issuer.cert.cert)?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            };
            extensions.push(extension(&aki, &subject, false)?);
            (
                issuer.cert.cert.tbs_certificate.subject.clone(),
                &issuer.key,
            )
        }
        Role::Leaf(None) | Role::Ca => (subject.clone(), key),
    };
    match role {
        Role::Leaf(_) => {
            let bc = BasicConstraints {
                ca: false,
                path_len_constraint: None,
            };
            extensions.push(extension(&bc, &subject, true)?);
            let ku = KeyUsage(KeyUsages::DigitalSignature.into());
            extensions.push(extension(&ku, &subject, true)?);
            let eku = ExtendedKeyUsage(vec![oids::KP_EMAIL_PROTECTION, oids::KP_CODE_SIGNING]);
            extensions.push(extension(&eku, &subject, false)?);
        }
        Role::Ca => {
            let bc = BasicConstraints {
                ca: true,
                path_len_constraint: None,
            };
            extensions.push(extension(&bc, &subject, true)?);
            let ku = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
            extensions.push(extension(&ku, &subject, true)?);
        }
    }

    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: random_serial()?,
        signature: ecdsa_sha256(),
        issuer: issuer_name,
        validity,
        subject,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let tbs_der = tbs
        .to_der()
        .map_err(|err| anyhow!("cannot encode the certificate: {err}"))?;
    let signature: DerSignature = SigningKey::from(signer).sign(&tbs_der);
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: ecdsa_sha256(),
        signature: BitString::from_bytes(signature.as_bytes())
            .map_err(|err| anyhow!("cannot encode the certificate signature: {err}"))?,
    };
    let der = cert
        .to_der()
        .map_err(|err| anyhow!("cannot encode the certificate: {err}"))?;
    // Self-check: a certificate we cannot verify ourselves must never be
    // written next to a key that someone will then trust.
    if !crate::verify::cert_signed_by(&cert, &signer.public_key())? {
        bail!("internal error: the new certificate does not verify");
    }
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_switch_to_generalized_in_2050() {
        assert!(matches!(x509_time(0).unwrap(), Time::UtcTime(_)));
        assert!(matches!(
            x509_time(GENERALIZED_TIME_FROM - 1).unwrap(),
            Time::UtcTime(_)
        ));
        assert!(matches!(
            x509_time(GENERALIZED_TIME_FROM).unwrap(),
            Time::GeneralTime(_)
        ));
        assert!(x509_time(u64::MAX).is_err());
    }

    #[test]
    fn validity_rejects_zero_days_and_overflow() {
        assert!(validity(0, 0).is_err());
        assert!(validity(u64::MAX - 10, 1).is_err());
        let v = validity(1_700_000_000, 2).unwrap();
        assert_eq!(
            v.not_after.to_unix_duration() - v.not_before.to_unix_duration(),
            Duration::from_secs(2 * DAY)
        );
    }

    #[test]
    fn common_name_is_checked() {
        assert!(common_name_to_name("").is_err());
        assert!(common_name_to_name(&"x".repeat(65)).is_err());
        assert!(common_name_to_name("a\nb").is_err());
        let name = common_name_to_name("Pump updates, Inc.").unwrap();
        assert_eq!(name.to_string(), "CN=Pump updates\\, Inc.");
    }

    #[test]
    fn serials_are_positive_16_bytes() {
        for _ in 0..64 {
            let s = random_serial().unwrap();
            assert_eq!(s.as_bytes().len(), 16);
            assert!(s.as_bytes()[0] < 0x80 && s.as_bytes()[0] != 0);
        }
    }
}
