//! Offline verification of `sw-description.sig`, for `cargo xtask verify`.
//!
//! The goal is to catch, on the build machine, every signature SWUpdate
//! would reject, and to say why in terms a release engineer can act on.
//! It re-implements the checks of `CMS_verify(.., CMS_BINARY)` plus
//! SWUpdate's "signer must chain to the `-k` store" rule for the shapes
//! this project produces (and `openssl cms -sign` produces):
//!
//! 1. the input is DER ContentInfo/SignedData with detached id-data;
//! 2. exactly one SignerInfo, digest sha256;
//! 3. its certificate is embedded (SWUpdate looks nowhere else);
//! 4. with signed attributes: messageDigest equals SHA-256 of the content
//!    and contentType is present; the ECDSA signature is over the DER of
//!    the attributes. Without them (`openssl cms -sign -noattr`, which
//!    SWUpdate accepts) the signature is over the content itself;
//! 5. the signer certificate is the trusted certificate itself, or is
//!    directly issued (signature-verified) by a trusted CA certificate.
//!
//! Limits, deliberately: only ECDSA P-256 with SHA-256 (what slotsmith
//! signs with), no intermediate CAs between the signer and the trusted
//! certificate, and no validity-date or key-purpose checks (SWUpdate checks
//! dates against the device clock at install time, which the build machine
//! cannot know). These limits fail closed: an unsupported shape is an
//! error, never a pass.

use crate::cert::{cert_public_key, is_ca};
use crate::files::{self, LoadedCert};
use crate::oids;
use anyhow::{anyhow, bail, Result};
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::OctetString;
use der::{Decode, Encode, Tagged};
use p256::ecdsa::{Signature, VerifyingKey};
use p256::PublicKey;
use sha2::{Digest, Sha256};
use signature::Verifier;
use spki::AlgorithmIdentifierOwned;
use std::path::Path;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

/// Verifies a detached DER CMS signature over `content` (the exact bytes of
/// `sw-description`) and that its signer is trusted by the PEM file
/// `trusted_cert_pem` (the same file given to `swupdate -k`: the signer
/// certificate itself, or a CA that issued it; a bundle of several is
/// accepted). Returns the signer certificate's subject, RFC 4514 style.
pub fn verify_detached(cms_der: &[u8], content: &[u8], trusted_cert_pem: &Path) -> Result<String> {
    let trusted = files::load_certs(trusted_cert_pem)?;
    let signed_data = parse_signed_data(cms_der)?;

    if signed_data.encap_content_info.econtent.is_some() {
        bail!("cms: signature is not detached (it embeds its content)");
    }
    let content_type = signed_data.encap_content_info.econtent_type;
    if content_type != oids::DATA {
        bail!("cms: signed content type is {content_type}, expected id-data");
    }
    let signers = signed_data.signer_infos.0.as_slice();
    let [signer] = signers else {
        bail!("cms: expected exactly one signer, found {}", signers.len());
    };
    if !is_sha256(&signer.digest_alg) {
        bail!(
            "cms: digest algorithm is {}, expected sha256",
            signer.digest_alg.oid
        );
    }
    let signer_cert = find_signer_cert(&signed_data, signer)?;

    // What the signature covers (RFC 5652 §5.4).
    let signed_bytes = match &signer.signed_attrs {
        Some(attrs) => {
            let digest = single_attr_value(attrs, oids::MESSAGE_DIGEST, "messageDigest")?
                .decode_as::<OctetString>()
                .map_err(|_| anyhow!("cms: messageDigest is not an OCTET STRING"))?;
            // Not constant-time, and need not be: both values are public.
            if digest.as_bytes() != Sha256::digest(content).as_slice() {
                bail!("cms: messageDigest does not match sw-description");
            }
            let ct = single_attr_value(attrs, oids::CONTENT_TYPE, "contentType")?
                .decode_as::<der::asn1::ObjectIdentifier>()
                .map_err(|_| anyhow!("cms: contentType is not an object identifier"))?;
            if ct != content_type {
                bail!(
                    "cms: contentType attribute {ct} differs from the content type {content_type}"
                );
            }
            // Re-encoded with the universal SET tag; the parser only takes
            // DER, so this is the byte sequence that was signed.
            attrs
                .to_der()
                .map_err(|_| anyhow!("cms: not DER SignedData"))?
        }
        None => content.to_vec(),
    };

    let alg = &signer.signature_algorithm;
    if alg.oid != oids::ECDSA_WITH_SHA256 && alg.oid != oids::EC_PUBLIC_KEY {
        bail!(
            "cms: signature algorithm {} is not supported (expected ecdsa-with-SHA256)",
            alg.oid
        );
    }
    let key = cert_public_key(&signer_cert.cert).map_err(|err| anyhow!("cms: signer {err}"))?;
    let signature = Signature::from_der(signer.signature.as_bytes())
        .map_err(|_| anyhow!("cms: signature does not verify"))?;
    VerifyingKey::from(&key)
        .verify(&signed_bytes, &signature)
        .map_err(|_| anyhow!("cms: signature does not verify"))?;

    let subject = signer_cert.cert.tbs_certificate.subject.to_string();
    for anchor in &trusted {
        if anchor.der == signer_cert.der || issued_by(&signer_cert.cert, &anchor.cert) {
            return Ok(subject);
        }
    }
    bail!("cms: signer certificate is not the given certificate nor issued by it")
}

/// True if `issuer` is a CA certificate whose name and P-256 key issued
/// `cert`. Anything unparseable or unsupported is simply "not issued by".
fn issued_by(cert: &Certificate, issuer: &Certificate) -> bool {
    if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return false;
    }
    if !is_ca(issuer).unwrap_or(false) {
        return false;
    }
    match cert_public_key(issuer) {
        Ok(key) => cert_signed_by(cert, &key).unwrap_or(false),
        Err(_) => false,
    }
}

/// Checks the signature on `cert` with `key`. Errors for algorithms other
/// than ecdsa-with-SHA256, so a caller can tell "unsupported" from "bad".
pub(crate) fn cert_signed_by(cert: &Certificate, key: &PublicKey) -> Result<bool> {
    if cert.signature_algorithm.oid != oids::ECDSA_WITH_SHA256 {
        bail!(
            "certificate signature algorithm {} is not supported (expected ecdsa-with-SHA256)",
            cert.signature_algorithm.oid
        );
    }
    let tbs = cert
        .tbs_certificate
        .to_der()
        .map_err(|err| anyhow!("cannot encode certificate: {err}"))?;
    let Some(sig_bytes) = cert.signature.as_bytes() else {
        return Ok(false);
    };
    let Ok(signature) = Signature::from_der(sig_bytes) else {
        return Ok(false);
    };
    Ok(VerifyingKey::from(key).verify(&tbs, &signature).is_ok())
}

/// The fingerprint (`sha256:<hex>` of its public key, as
/// [`crate::fingerprint`]) of the certificate a detached signature CLAIMS
/// to be signed by: the embedded certificate its one SignerInfo names.
/// Nothing is verified; the device's audit trail records it next to
/// SWUpdate's verdict, so a refused update still says who signed it.
/// Untrusted input: only the shapes [`verify_detached`] accepts are read.
pub fn claimed_signer_fingerprint(cms_der: &[u8]) -> Result<String> {
    let signed_data = parse_signed_data(cms_der)?;
    let signers = signed_data.signer_infos.0.as_slice();
    let [signer] = signers else {
        bail!("cms: expected exactly one signer, found {}", signers.len());
    };
    let cert = find_signer_cert(&signed_data, signer)?;
    let key = cert_public_key(&cert.cert)?;
    Ok(crate::fingerprint(&key))
}

fn parse_signed_data(cms_der: &[u8]) -> Result<SignedData> {
    let not_signed_data = || anyhow!("cms: not DER SignedData");
    let content_info = ContentInfo::from_der(cms_der).map_err(|_| not_signed_data())?;
    if content_info.content_type != oids::SIGNED_DATA {
        return Err(not_signed_data());
    }
    content_info
        .content
        .decode_as::<SignedData>()
        .map_err(|_| not_signed_data())
}

/// sha256 with parameters absent or NULL (RFC 5754 §2 allows both).
fn is_sha256(alg: &AlgorithmIdentifierOwned) -> bool {
    alg.oid == oids::SHA256
        && alg
            .parameters
            .as_ref()
            .is_none_or(|p| p.tag() == der::Tag::Null && p.value().is_empty())
}

/// The embedded certificate the SignerInfo names, by issuer and serial
/// number or by subject key identifier.
fn find_signer_cert(signed_data: &SignedData, signer: &SignerInfo) -> Result<LoadedCert> {
    let certs = signed_data
        .certificates
        .as_ref()
        .map(|set| set.0.as_slice());
    for choice in certs.unwrap_or_default() {
        let CertificateChoices::Certificate(cert) = choice else {
            continue;
        };
        let tbs = &cert.tbs_certificate;
        let matches = match &signer.sid {
            SignerIdentifier::IssuerAndSerialNumber(ias) => {
                ias.issuer == tbs.issuer && ias.serial_number == tbs.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => {
                matches!(tbs.get::<SubjectKeyIdentifier>(), Ok(Some((_, own))) if own == *ski)
            }
        };
        if matches {
            let der = cert
                .to_der()
                .map_err(|_| anyhow!("cms: not DER SignedData"))?;
            return files::parse_cert_der(&der)
                .map_err(|err| anyhow!("cms: embedded signer certificate is invalid: {err}"));
        }
    }
    bail!("cms: signer certificate is not embedded (sign without -nocerts)")
}

/// The single value of the single signed attribute `oid`. RFC 5652 §11
/// requires both to be single; a duplicate could otherwise let a verifier
/// and SWUpdate disagree about which digest counts.
fn single_attr_value<'a>(
    attrs: &'a x509_cert::attr::Attributes,
    oid: der::asn1::ObjectIdentifier,
    name: &str,
) -> Result<&'a der::Any> {
    let mut found = attrs.iter().filter(|attr| attr.oid == oid);
    let (Some(attr), None) = (found.next(), found.next()) else {
        bail!("cms: signed attributes must contain exactly one {name}");
    };
    let values = attr.values.as_slice();
    let [value] = values else {
        bail!("cms: {name} attribute must have exactly one value");
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_signed_data() {
        let dir = tempfile::tempdir().unwrap();
        let (_, cert) =
            crate::generate_update_key(dir.path(), "k", "k", 1_700_000_000, 1, None).unwrap();
        for junk in [
            &b""[..],
            b"\x30",
            b"\x30\x03\x06\x01\x00",
            b"not der at all",
        ] {
            let err = verify_detached(junk, b"x", &cert).unwrap_err().to_string();
            assert_eq!(err, "cms: not DER SignedData");
        }
    }

    #[test]
    fn sha256_params_may_be_absent_or_null() {
        let mut alg = AlgorithmIdentifierOwned {
            oid: oids::SHA256,
            parameters: None,
        };
        assert!(is_sha256(&alg));
        alg.parameters = Some(der::Any::new(der::Tag::Null, [0u8; 0]).unwrap());
        assert!(is_sha256(&alg));
        alg.parameters = Some(der::Any::new(der::Tag::Integer, [1u8]).unwrap());
        assert!(!is_sha256(&alg));
    }
}
