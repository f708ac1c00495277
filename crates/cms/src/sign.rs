//! Detached CMS SignedData over `sw-description`, as SWUpdate verifies it.
//!
//! SWUpdate 2022.12 runs `CMS_verify(.., CMS_BINARY)` on the DER in
//! `sw-description.sig` with the file's exact bytes as detached content,
//! and needs the signer certificate embedded (it does not look it up
//! anywhere else). So the structure written here is the one
//! `openssl cms -sign -binary -md sha256 -nosmimecap -outform DER` writes:
//!
//! - SignedData v1, digestAlgorithms {sha256}, eContentType id-data with no
//!   eContent (detached), the signer certificate in `certificates`;
//! - one SignerInfo v1 identified by issuerAndSerialNumber, digest sha256,
//!   signature ecdsa-with-SHA256 over the DER of the signed attributes;
//! - signed attributes contentType and messageDigest only.
//!
//! Deliberately absent is signingTime (and smimeCapabilities): a timestamp
//! makes every signature of the same `sw-description` different, which
//! breaks reproducible update builds, and SWUpdate never reads it (it
//! checks validity against the device clock instead). With ECDSA nonces
//! derived per RFC 6979 (the p256 default), signing is then a pure
//! function of key, certificate and content.
//!
//! For keys held in an HSM, [`signed_attrs_der`] gives the exact bytes to
//! sign with ECDSA-SHA256 and [`assemble`] wraps the returned signature,
//! after checking it, into the same structure.

use crate::cert::cert_public_key;
use crate::files::{self, LoadedCert};
use crate::oids;
use anyhow::{anyhow, ensure, Context, Result};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier,
    SignerInfo, SignerInfos,
};
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use signature::{Signer, Verifier};
use spki::AlgorithmIdentifierOwned;
use std::fmt;
use std::path::Path;

/// DER of the signed attributes up to the 32 digest bytes:
///
/// ```text
/// 31 4b                                   SET (75 bytes), sorted per DER
///   30 18 06 09 2a864886f70d010903        Attribute contentType
///         31 0b 06 09 2a864886f70d010701    { id-data }
///   30 2f 06 09 2a864886f70d010904        Attribute messageDigest
///         31 22 04 20                       { OCTET STRING (32) ... }
/// ```
///
/// The contentType attribute sorts first because its encoding is shorter
/// (0x18 < 0x2f in the second byte), which is the DER SET OF order OpenSSL
/// re-creates when it verifies. A unit test checks these bytes against the
/// der crate's own encoding of the same attributes.
const SIGNED_ATTRS_PREFIX: [u8; 45] = [
    0x31, 0x4b, // SET
    0x30, 0x18, // Attribute
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03, // contentType
    0x31, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01, // {id-data}
    0x30, 0x2f, // Attribute
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04, // messageDigest
    0x31, 0x22, 0x04, 0x20, // { OCTET STRING (32)
];

/// The DER bytes of the signed attributes for `content`: exactly what an
/// external signer (HSM) must sign with ECDSA-SHA256 (that is, ECDSA over
/// SHA-256 of these bytes) for [`assemble`].
///
/// They hold contentType = id-data and messageDigest = SHA-256(content),
/// encoded with the universal SET tag as RFC 5652 §5.4 prescribes for the
/// signature input (inside SignerInfo the same set is tagged `[0]`).
pub fn signed_attrs_der(content: &[u8]) -> Vec<u8> {
    let mut der = Vec::with_capacity(SIGNED_ATTRS_PREFIX.len() + 32);
    der.extend_from_slice(&SIGNED_ATTRS_PREFIX);
    der.extend_from_slice(&Sha256::digest(content));
    der
}

/// An update signing key with its certificate, ready to sign
/// `sw-description` files.
pub struct UpdateSigner {
    key: SigningKey,
    cert: LoadedCert,
}

impl fmt::Debug for UpdateSigner {
    // Hand-written so that no formatting of the signer can ever print key
    // material; the subject is what a log needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateSigner")
            .field(
                "subject",
                &self.cert.cert.tbs_certificate.subject.to_string(),
            )
            .finish_non_exhaustive()
    }
}

impl UpdateSigner {
    /// Loads the private key (PKCS#8 PEM, P-256; SEC1 `EC PRIVATE KEY` PEM
    /// is accepted too) and the certificate (PEM, exactly one).
    ///
    /// The key file is refused, like ssh does, if group or others have any
    /// access to it. The certificate's public key must be the key's: a
    /// mismatch would produce signatures that SWUpdate rejects on every
    /// device, and is caught here instead of in the field.
    pub fn load(key: &Path, cert: &Path) -> Result<UpdateSigner> {
        let secret = files::load_private_key(key)?;
        let loaded = files::load_single_cert(cert)?;
        let cert_key = cert_public_key(&loaded.cert)
            .with_context(|| format!("certificate {}", cert.display()))?;
        ensure!(
            cert_key == secret.public_key(),
            "certificate {} does not belong to key {}: its public key differs",
            cert.display(),
            key.display()
        );
        Ok(UpdateSigner {
            key: SigningKey::from(&secret),
            cert: loaded,
        })
    }

    /// A detached CMS SignedData (DER) over `content`; see the module docs
    /// for its exact shape. Deterministic: the same key, certificate and
    /// content always give the same bytes.
    pub fn sign_detached(&self, content: &[u8]) -> Result<Vec<u8>> {
        let attrs = signed_attrs_der(content);
        let signature: Signature = self.key.sign(&attrs);
        // Security point: verify before releasing. A fault during signing
        // (bit flip, miscompiled curve code) could yield a bad signature or,
        // for ECDSA, one that leaks the key; checking costs microseconds.
        self.key
            .verifying_key()
            .verify(&attrs, &signature)
            .map_err(|_| anyhow!("internal error: the new signature does not verify"))?;
        build_signed_data(&self.cert, &attrs, &signature.to_der())
    }

    /// The `sha256:` fingerprint of the signing key's public key (see
    /// [`crate::fingerprint`]).
    pub fn fingerprint(&self) -> String {
        crate::fingerprint(&p256::PublicKey::from(self.key.verifying_key()))
    }

    /// The signer certificate, DER, exactly as loaded.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert.der
    }
}

/// Builds the SignedData from a signature made elsewhere (an HSM) over
/// [`signed_attrs_der`]`(content)`.
///
/// `signature_der` is an ECDSA-SHA256 signature, DER `Ecdsa-Sig-Value`;
/// the raw 64-byte `r || s` form that PKCS#11 `CKM_ECDSA` returns is
/// accepted too. The signature is verified against the certificate's key
/// before anything is assembled, so a wrong key, wrong digest or wrong
/// input in the HSM setup fails here and not on a device.
pub fn assemble(cert_pem: &Path, content: &[u8], signature_der: &[u8]) -> Result<Vec<u8>> {
    let cert = files::load_single_cert(cert_pem)?;
    let key = cert_public_key(&cert.cert)
        .with_context(|| format!("certificate {}", cert_pem.display()))?;
    let signature = Signature::from_der(signature_der)
        .or_else(|der_err| {
            if signature_der.len() == 64 {
                Signature::from_slice(signature_der)
            } else {
                Err(der_err)
            }
        })
        .map_err(|_| {
            anyhow!("the external signature is neither a DER ECDSA signature nor raw r||s")
        })?;
    let attrs = signed_attrs_der(content);
    VerifyingKey::from(&key)
        .verify(&attrs, &signature)
        .map_err(|_| {
            anyhow!(
                "the external signature does not verify against {} over the signed \
                 attributes (it must be ECDSA-SHA256 over signed_attrs_der(content))",
                cert_pem.display()
            )
        })?;
    build_signed_data(&cert, &attrs, &signature.to_der())
}

fn sha256_alg() -> AlgorithmIdentifierOwned {
    // Parameters absent, as OpenSSL writes for SHA-2 (RFC 5754 §2 allows
    // absent or NULL; absent is preferred).
    AlgorithmIdentifierOwned {
        oid: oids::SHA256,
        parameters: None,
    }
}

/// Wraps signed attributes and their signature into ContentInfo DER.
fn build_signed_data(
    cert: &LoadedCert,
    attrs_der: &[u8],
    signature: &DerSignature,
) -> Result<Vec<u8>> {
    let enc = |err: der::Error| anyhow!("cannot encode CMS SignedData: {err}");
    let signed_attrs = SignedAttributes::from_der(attrs_der).map_err(enc)?;
    let tbs = &cert.cert.tbs_certificate;
    let signer_info = SignerInfo {
        // v1 because the signer is identified by issuer and serial number
        // (RFC 5652 §5.3); SWUpdate's OpenSSL handles both forms, but this
        // is what `openssl cms -sign` writes.
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer.clone(),
            serial_number: tbs.serial_number.clone(),
        }),
        digest_alg: sha256_alg(),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: oids::ECDSA_WITH_SHA256,
            parameters: None,
        },
        signature: OctetString::new(signature.as_bytes()).map_err(enc)?,
        unsigned_attrs: None,
    };
    let signed_data = SignedData {
        // v1: id-data content, only X.509 certificates, only v1 SignerInfos.
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![sha256_alg()]).map_err(enc)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: oids::DATA,
            // Detached: SWUpdate reads the content from the cpio entry.
            econtent: None,
        },
        certificates: Some(
            SetOfVec::try_from(vec![CertificateChoices::Certificate(cert.cert.clone())])
                .map(CertificateSet)
                .map_err(enc)?,
        ),
        crls: None,
        signer_infos: SetOfVec::try_from(vec![signer_info])
            .map(SignerInfos)
            .map_err(enc)?,
    };
    let content_info = ContentInfo {
        content_type: oids::SIGNED_DATA,
        content: Any::encode_from(&signed_data).map_err(enc)?,
    };
    content_info.to_der().map_err(enc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_cert::attr::Attribute;

    #[test]
    fn signed_attrs_match_the_der_encoder() {
        let content = b"software = { version = \"1.0\"; };\n";
        let digest = Sha256::digest(content);
        let ct = Attribute {
            oid: oids::CONTENT_TYPE,
            values: SetOfVec::try_from(vec![Any::encode_from(&oids::DATA).unwrap()]).unwrap(),
        };
        let md = Attribute {
            oid: oids::MESSAGE_DIGEST,
            values: SetOfVec::try_from(vec![Any::encode_from(
                &OctetString::new(&digest[..]).unwrap(),
            )
            .unwrap()])
            .unwrap(),
        };
        // Insert in the "wrong" order: the encoder must sort like DER wants.
        let attrs: SignedAttributes = SetOfVec::try_from(vec![md, ct]).unwrap();
        assert_eq!(signed_attrs_der(content), attrs.to_der().unwrap());
    }

    #[test]
    fn signed_attrs_depend_only_on_the_digest() {
        assert_eq!(signed_attrs_der(b"a"), signed_attrs_der(b"a"));
        assert_ne!(signed_attrs_der(b"a"), signed_attrs_der(b"b"));
        assert_eq!(signed_attrs_der(b"").len(), 77);
    }
}
