//! RSA key material: generation, PEM encodings, JWKs and RFC 7638 key ids.

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rsa::{
    RsaPrivateKey, RsaPublicKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding},
    traits::PublicKeyParts,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crd::Algorithm;

/// Why key material could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RSA key generation failed.
    #[error("generating a {bits}-bit RSA key failed: {source}")]
    Generate {
        /// Modulus size.
        bits: usize,
        /// Cause.
        #[source]
        source: rsa::Error,
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
    /// The JWK of a public key.
    pub fn from_public(key: &RsaPublicKey, algorithm: Algorithm) -> Jwk {
        let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
        Jwk {
            kty: "RSA".into(),
            use_: "sig".into(),
            alg: algorithm.as_str().into(),
            kid: thumbprint(&n, &e),
            n,
            e,
        }
    }

    /// The RSA public key this JWK describes.
    pub fn public_key(&self) -> Result<RsaPublicKey, Error> {
        let decode = |field: &str, value: &str| {
            URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|e| Error::DecodePublic(format!("{field}: {e}")))
        };
        let n = rsa::BigUint::from_bytes_be(&decode("n", &self.n)?);
        let e = rsa::BigUint::from_bytes_be(&decode("e", &self.e)?);
        RsaPublicKey::new(n, e).map_err(|e| Error::DecodePublic(e.to_string()))
    }

    /// SPKI PEM of the key (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_pem(&self) -> Result<String, Error> {
        self.public_key()?
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Encode(e.to_string()))
    }
}

/// RFC 7638 thumbprint of an RSA key: SHA-256 over the canonical JSON of `e`, `kty`, `n`,
/// base64url without padding.
pub fn thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
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
    /// Generates a fresh RSA key. CPU-bound for up to seconds: call it off the async runtime.
    pub fn generate(bits: usize, algorithm: Algorithm) -> Result<KeyPair, Error> {
        let private = RsaPrivateKey::new(&mut rand::thread_rng(), bits)
            .map_err(|source| Error::Generate { bits, source })?;
        KeyPair::from_private(&private, algorithm)
    }

    /// Reads a stored PKCS#8 PEM private key.
    pub fn from_private_pem(pem: &str, algorithm: Algorithm) -> Result<KeyPair, Error> {
        let private = RsaPrivateKey::from_pkcs8_pem(pem).map_err(|_| Error::DecodePrivate)?;
        KeyPair::from_private(&private, algorithm)
    }

    fn from_private(private: &RsaPrivateKey, algorithm: Algorithm) -> Result<KeyPair, Error> {
        let public = private.to_public_key();
        let private_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| Error::Encode(e.to_string()))?
            .to_string();
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Encode(e.to_string()))?;
        Ok(KeyPair {
            jwk: Jwk::from_public(&public, algorithm),
            private_pem,
            public_pem,
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
