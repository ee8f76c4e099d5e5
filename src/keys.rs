//! RSA key material: generation, PEM encodings, JWKs and RFC 7638 key ids.

use std::fmt;

use aws_lc_rs::{
    digest::{SHA256, digest},
    encoding::AsDer,
    rsa::{KeySize, PublicKeyComponents},
    signature::KeyPair as _,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::crd::Algorithm;

/// Why key material could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RSA key generation failed.
    #[error("generating a {bits}-bit RSA key failed: {reason}")]
    Generate {
        /// Modulus size.
        bits: usize,
        /// Cause.
        reason: String,
    },
    /// PEM encoding failed.
    #[error("encoding the key as PEM failed: {0}")]
    Encode(String),
    /// A stored private key does not parse (its content is never printed).
    #[error("the stored private key is not a valid PKCS#8 RSA key")]
    DecodePrivate,
    /// A stored public key does not parse.
    #[error("the stored public key is not a valid RSA key: {0}")]
    DecodePublic(String),
}

/// A JSON Web Key for an RSA public key (RFC 7517), as published in `jwks.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    /// Always `RSA`.
    pub kty: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Algorithm the key signs with.
    pub alg: String,
    /// Key id.
    pub kid: String,
    /// Modulus, base64url.
    pub n: String,
    /// Public exponent, base64url.
    pub e: String,
}

impl Jwk {
    /// The JWK of a public key given by its big-endian modulus and exponent.
    pub fn from_components(n: &[u8], e: &[u8], algorithm: Algorithm) -> Jwk {
        let n = URL_SAFE_NO_PAD.encode(n);
        let e = URL_SAFE_NO_PAD.encode(e);
        Jwk {
            kty: "RSA".into(),
            use_: "sig".into(),
            alg: algorithm.as_str().into(),
            kid: thumbprint(&n, &e),
            n,
            e,
        }
    }

    /// SPKI PEM of the key (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_pem(&self) -> Result<String, Error> {
        let decode = |field: &str, value: &str| {
            URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|e| Error::DecodePublic(format!("{field}: {e}")))
        };
        let components = PublicKeyComponents {
            n: decode("n", &self.n)?,
            e: decode("e", &self.e)?,
        };
        let der: aws_lc_rs::encoding::PublicKeyX509Der<'static> = components
            .as_der()
            .map_err(|_| Error::DecodePublic("n and e do not form an RSA public key".into()))?;
        Ok(encode_pem("PUBLIC KEY", der.as_ref()))
    }
}

/// RFC 7638 thumbprint of an RSA key: SHA-256 over the canonical JSON of `e`, `kty`, `n`,
/// base64url without padding.
pub fn thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()))
}

fn encode_pem(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// A private key with its public forms. `Debug` never prints the private key.
#[derive(Clone)]
pub struct KeyPair {
    /// Public JWK (carries kid and alg).
    pub jwk: Jwk,
    /// PKCS#8 PEM of the private key.
    private_pem: String,
    /// SPKI PEM of the public key.
    pub public_pem: String,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("kid", &self.jwk.kid)
            .field("alg", &self.jwk.alg)
            .field("private_pem", &"<redacted>")
            .finish()
    }
}

impl KeyPair {
    /// Generates a fresh RSA key (2048, 3072 or 4096 bits) with aws-lc-rs, the fastest of the
    /// generators `cargo bench --bench keygen` compares. CPU-bound for up to seconds: call it off
    /// the async runtime (the controller runs it on its key-generation pool).
    pub fn generate(bits: usize, algorithm: Algorithm) -> Result<KeyPair, Error> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            _ => {
                return Err(Error::Generate {
                    bits,
                    reason: "the size is not one of 2048, 3072, 4096".into(),
                });
            }
        };
        let private = aws_lc_rs::rsa::KeyPair::generate(size).map_err(|e| Error::Generate {
            bits,
            reason: e.to_string(),
        })?;
        KeyPair::from_private(&private, algorithm)
    }

    /// Reads a stored PKCS#8 PEM private key.
    pub fn from_private_pem(pem: &str, algorithm: Algorithm) -> Result<KeyPair, Error> {
        let parsed = pem::parse(pem).map_err(|_| Error::DecodePrivate)?;
        if parsed.tag() != "PRIVATE KEY" {
            return Err(Error::DecodePrivate);
        }
        let private = aws_lc_rs::rsa::KeyPair::from_pkcs8(parsed.contents())
            .map_err(|_| Error::DecodePrivate)?;
        KeyPair::from_private(&private, algorithm)
    }

    fn from_private(
        private: &aws_lc_rs::rsa::KeyPair,
        algorithm: Algorithm,
    ) -> Result<KeyPair, Error> {
        let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der<'static> = private
            .as_der()
            .map_err(|_| Error::Encode("PKCS#8 encoding of the private key".into()))?;
        let public = private.public_key();
        let spki: aws_lc_rs::encoding::PublicKeyX509Der<'static> = public
            .as_der()
            .map_err(|_| Error::Encode("SPKI encoding of the public key".into()))?;
        Ok(KeyPair {
            jwk: Jwk::from_components(
                public.modulus().big_endian_without_leading_zero(),
                public.exponent().big_endian_without_leading_zero(),
                algorithm,
            ),
            private_pem: encode_pem("PRIVATE KEY", pkcs8.as_ref()),
            public_pem: encode_pem("PUBLIC KEY", spki.as_ref()),
        })
    }

    /// Key id.
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    /// PKCS#8 PEM of the private key: for the Secret only.
    pub fn private_pem(&self) -> &str {
        &self.private_pem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // The example key of RFC 7638, section 3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            thumbprint(n, "AQAB"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn generated_key_round_trips_through_its_pem_forms() {
        let pair = KeyPair::generate(2048, Algorithm::RS256).unwrap();
        assert!(
            pair.private_pem()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert!(pair.public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let again = KeyPair::from_private_pem(pair.private_pem(), Algorithm::RS256).unwrap();
        assert_eq!(again.kid(), pair.kid());
        assert_eq!(pair.jwk.public_pem().unwrap(), pair.public_pem);
        assert_eq!(pair.jwk.kid, thumbprint(&pair.jwk.n, &pair.jwk.e));
        assert!(!format!("{pair:?}").contains("PRIVATE"));
    }
}
