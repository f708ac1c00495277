//! Naming the algorithm of a key file, so that a wrong key is reported as
//! what it is.
//!
//! The PKCS#8 and SPKI decoders only say "unknown/unsupported algorithm
//! OID" when handed an RSA key where an Ed25519 key was expected, which
//! reads as if *our* algorithm were the unsupported one. Both key roles
//! (the Ed25519 boot key here, the ECDSA P-256 update key in
//! `slotsmith-cms`) therefore look at the algorithm identifier first and
//! say "expected an Ed25519 key, found RSA", naming the file. The
//! identifier is read from the structure itself (PKCS#8 `PrivateKeyInfo`,
//! SPKI `SubjectPublicKeyInfo`, SEC1 `ECPrivateKey`), never guessed from
//! the file name or the PEM label alone.

use std::fmt;
use std::path::Path;

use anyhow::{anyhow, Error, Result};
use pkcs8::der::asn1::ObjectIdentifier as Oid;
use pkcs8::der::Decode;
use pkcs8::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use pkcs8::PrivateKeyInfo;

/// RFC 8410: id-Ed25519.
pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
/// RFC 8410: id-Ed448.
const ED448: Oid = Oid::new_unwrap("1.3.101.113");
/// RFC 8410: id-X25519.
const X25519: Oid = Oid::new_unwrap("1.3.101.110");
/// RFC 8410: id-X448.
const X448: Oid = Oid::new_unwrap("1.3.101.111");
/// RFC 8017: rsaEncryption.
const RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
/// RFC 4055: id-RSASSA-PSS.
const RSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");
/// RFC 3279: id-dsa.
const DSA: Oid = Oid::new_unwrap("1.2.840.10040.4.1");
/// RFC 3279: dhpublicnumber (X9.42), and PKCS#3 dhKeyAgreement.
const DH_X942: Oid = Oid::new_unwrap("1.2.840.10046.2.1");
const DH_PKCS3: Oid = Oid::new_unwrap("1.2.840.113549.1.3.1");
/// RFC 5480: id-ecPublicKey; the curve is in the parameters.
pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
/// RFC 5480 named curves.
pub const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
const P521: Oid = Oid::new_unwrap("1.3.132.0.35");
const SECP256K1: Oid = Oid::new_unwrap("1.3.132.0.10");
/// GB/T 32918 SM2 curve (openssl `-algorithm SM2`).
const SM2: Oid = Oid::new_unwrap("1.2.156.10197.1.301");
/// FIPS 204: ML-DSA-44, -65, -87 (openssl 3.5 `-algorithm ML-DSA-65`).
const ML_DSA_44: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.3.17");
const ML_DSA_65: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.3.18");
const ML_DSA_87: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.3.19");

/// The algorithm of a key, as far as a message needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    /// Ed25519 (RFC 8410), the boot key.
    Ed25519,
    /// ECDSA (id-ecPublicKey) on P-256, the update key.
    EcdsaP256,
    /// Anything else, by its display name ("RSA", "ECDSA P-384", "an
    /// unknown algorithm (OID 1.2.3)").
    Other(String),
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Algorithm::Ed25519 => f.write_str("Ed25519"),
            Algorithm::EcdsaP256 => f.write_str("ECDSA P-256"),
            Algorithm::Other(name) => f.write_str(name),
        }
    }
}

impl Algorithm {
    /// The algorithm an identifier names; for id-ecPublicKey the curve
    /// comes from the parameters.
    pub fn of_identifier(alg: &AlgorithmIdentifierRef<'_>) -> Algorithm {
        if alg.oid == EC_PUBLIC_KEY {
            return match alg.parameters_oid() {
                Ok(curve) => Algorithm::of_curve(curve),
                Err(_) => Algorithm::Other("ECDSA on explicit or missing curve parameters".into()),
            };
        }
        let name = match alg.oid {
            ED25519 => return Algorithm::Ed25519,
            ED448 => "Ed448",
            X25519 => "X25519",
            X448 => "X448",
            RSA => "RSA",
            RSA_PSS => "RSA-PSS",
            DSA => "DSA",
            DH_X942 | DH_PKCS3 => "Diffie-Hellman",
            SM2 => "SM2",
            ML_DSA_44 => "ML-DSA-44",
            ML_DSA_65 => "ML-DSA-65",
            ML_DSA_87 => "ML-DSA-87",
            other => return Algorithm::Other(format!("an unknown algorithm (OID {other})")),
        };
        Algorithm::Other(name.into())
    }

    /// An EC key on the named curve `curve`.
    pub fn of_curve(curve: Oid) -> Algorithm {
        let name = match curve {
            P256 => return Algorithm::EcdsaP256,
            P384 => "ECDSA P-384",
            P521 => "ECDSA P-521",
            SECP256K1 => "ECDSA secp256k1",
            SM2 => "SM2",
            other => return Algorithm::Other(format!("ECDSA on curve OID {other}")),
        };
        Algorithm::Other(name.into())
    }

    /// The algorithm of a DER PKCS#8 `PrivateKeyInfo`.
    pub fn of_pkcs8(der: &[u8]) -> Result<Algorithm> {
        let info = PrivateKeyInfo::try_from(der)
            .map_err(|err| anyhow!("not a PKCS#8 private key ({err})"))?;
        Ok(Algorithm::of_identifier(&info.algorithm))
    }

    /// The algorithm of a DER `SubjectPublicKeyInfo`.
    pub fn of_spki(der: &[u8]) -> Result<Algorithm> {
        let info = SubjectPublicKeyInfoRef::try_from(der)
            .map_err(|err| anyhow!("not an SPKI public key ({err})"))?;
        Ok(Algorithm::of_identifier(&info.algorithm))
    }

    /// The algorithm of a DER SEC1 `ECPrivateKey` (`BEGIN EC PRIVATE KEY`).
    pub fn of_sec1(der: &[u8]) -> Result<Algorithm> {
        let key = sec1::EcPrivateKey::from_der(der)
            .map_err(|err| anyhow!("not a SEC1 EC private key ({err})"))?;
        Ok(match key.parameters.and_then(|p| p.named_curve()) {
            Some(curve) => Algorithm::of_curve(curve),
            None => Algorithm::Other("ECDSA on an unnamed curve".into()),
        })
    }

    /// The algorithm of a DER private key in any encoding openssl writes:
    /// PKCS#8, or (what `openssl pkey -outform DER` writes for RSA and EC)
    /// the legacy SEC1 and PKCS#1/DSA forms, recognised by their shape.
    /// The PKCS#8 error is kept when nothing matches.
    pub fn of_private_der(der: &[u8]) -> Result<Algorithm> {
        let pkcs8 = match Algorithm::of_pkcs8(der) {
            Ok(alg) => return Ok(alg),
            Err(err) => err,
        };
        if let Ok(alg) = Algorithm::of_sec1(der) {
            return Ok(alg);
        }
        match integer_sequence_len(der) {
            // RFC 8017 RSAPrivateKey: version, n, e, d, p, q, dp, dq, qinv
            // (and more primes in the multi-prime form).
            Some(n) if n >= 9 => Ok(Algorithm::Other("RSA".into())),
            // OpenSSL's traditional DSA key: version, p, q, g, y, x.
            Some(6) => Ok(Algorithm::Other("DSA".into())),
            _ => Err(pkcs8),
        }
    }

    /// The algorithm of a DER public key: SPKI, or a bare PKCS#1
    /// `RSAPublicKey` (modulus, exponent).
    pub fn of_public_der(der: &[u8]) -> Result<Algorithm> {
        let spki = match Algorithm::of_spki(der) {
            Ok(alg) => return Ok(alg),
            Err(err) => err,
        };
        match integer_sequence_len(der) {
            Some(2) => Ok(Algorithm::Other("RSA".into())),
            _ => Err(spki),
        }
    }

    /// The algorithm implied by a PEM label for the legacy, algorithm-
    /// specific encodings (PKCS#1 `RSA PRIVATE KEY` and the like), which
    /// carry no identifier of their own.
    pub fn of_legacy_label(label: &str) -> Option<Algorithm> {
        let name = match label {
            "RSA PRIVATE KEY" | "RSA PUBLIC KEY" => "RSA",
            "DSA PRIVATE KEY" => "DSA",
            "DH PARAMETERS" | "X9.42 DH PARAMETERS" => "Diffie-Hellman parameters",
            _ => return None,
        };
        Some(Algorithm::Other(name.into()))
    }
}

/// The number of elements when `der` is exactly a SEQUENCE of INTEGERs
/// (the shape of the legacy PKCS#1 and DSA key encodings).
fn integer_sequence_len(der: &[u8]) -> Option<usize> {
    Vec::<pkcs8::der::asn1::IntRef<'_>>::from_der(der)
        .ok()
        .map(|v| v.len())
}

/// The error for a key of the wrong type: "cannot load PATH: expected an
/// Ed25519 key, found RSA; HINT".
pub fn mismatch(path: &Path, expected: &Algorithm, found: &Algorithm, hint: &str) -> Error {
    anyhow!(
        "cannot load {}: expected {} key, found {found}; {hint}",
        path.display(),
        with_article(expected)
    )
}

/// "an Ed25519", "an ECDSA P-256": both names start with a vowel sound.
fn with_article(alg: &Algorithm) -> String {
    format!("an {alg}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_and_algorithms_have_names() {
        assert_eq!(Algorithm::of_curve(P256), Algorithm::EcdsaP256);
        assert_eq!(Algorithm::of_curve(P384).to_string(), "ECDSA P-384");
        assert_eq!(
            Algorithm::of_curve(Oid::new_unwrap("1.2.3.4")).to_string(),
            "ECDSA on curve OID 1.2.3.4"
        );
        let alg = AlgorithmIdentifierRef {
            oid: RSA,
            parameters: None,
        };
        assert_eq!(Algorithm::of_identifier(&alg).to_string(), "RSA");
        let alg = AlgorithmIdentifierRef {
            oid: Oid::new_unwrap("1.2.3.4.5"),
            parameters: None,
        };
        assert_eq!(
            Algorithm::of_identifier(&alg).to_string(),
            "an unknown algorithm (OID 1.2.3.4.5)"
        );
    }

    #[test]
    fn mismatch_names_file_expected_and_found() {
        let err = mismatch(
            Path::new("k.pem"),
            &Algorithm::Ed25519,
            &Algorithm::Other("RSA".into()),
            "hint",
        );
        assert_eq!(
            err.to_string(),
            "cannot load k.pem: expected an Ed25519 key, found RSA; hint"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Algorithm::of_pkcs8(b"").is_err());
        assert!(Algorithm::of_spki(&[0x30, 0x80]).is_err());
        assert!(Algorithm::of_sec1(&[0x30, 0x03, 0x02, 0x01]).is_err());
    }
}
