//! The object identifiers this crate writes and checks, in one place.
//!
//! Spelled out as dotted strings (evaluated at compile time) rather than
//! pulled from const-oid's generated database, so that a reviewer can check
//! each against its RFC without chasing generated code.

use der::asn1::ObjectIdentifier as Oid;

/// RFC 5652 §4: id-data, the content type of `sw-description`.
pub(crate) const DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
/// RFC 5652 §5: id-signedData.
pub(crate) const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
/// RFC 5652 §11.1: id-contentType signed attribute.
pub(crate) const CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
/// RFC 5652 §11.2: id-messageDigest signed attribute.
pub(crate) const MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
/// RFC 5754 §2.2: id-sha256.
pub(crate) const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
/// RFC 5758 §3.2: ecdsa-with-SHA256.
pub(crate) const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
/// RFC 5480 §2.1.1: id-ecPublicKey. Some CMS producers put it in
/// SignerInfo.signatureAlgorithm instead of ecdsa-with-SHA256 (RFC 5753
/// §2.1.1 tolerates it); the hash then comes from digestAlgorithm.
pub(crate) const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
/// X.520 commonName.
pub(crate) const COMMON_NAME: Oid = Oid::new_unwrap("2.5.4.3");
/// RFC 5280 §4.2.1.12: id-kp-codeSigning.
pub(crate) const KP_CODE_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.3");
/// RFC 5280 §4.2.1.12: id-kp-emailProtection, which OpenSSL's `smime_sign`
/// purpose (SWUpdate's default) requires when an EKU is present.
pub(crate) const KP_EMAIL_PROTECTION: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.4");
