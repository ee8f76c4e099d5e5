//! Key material for every algorithm (RSA, P-256, P-384, Ed25519): generation, PEM encodings
//! (PKCS#8 private, SPKI public), JWKs (RFC 7517/7518/8037) and RFC 7638 key ids.

use std::fmt;

use aws_lc_rs::{
    digest::{SHA256, digest},
    encoding::{AsDer, PublicKeyX509Der},
    rsa::{KeySize, PublicKeyComponents},
    signature::{self as sig, KeyPair as _},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::crd::{Algorithm, KeyType};

/// Why key material could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Key generation failed.
    #[error("generating a {key} key failed: {reason}")]
    Generate {
        /// The key asked for, e.g. `2048-bit RSA` or `P-256`.
        key: String,
        /// Cause.
        reason: String,
    },
    /// PEM encoding failed.
    #[error("encoding the key as PEM failed: {0}")]
    Encode(String),
    /// A stored private key does not parse (its content is never printed).
    #[error(
        "the stored private key is not a valid PKCS#8 RSA, P-256, P-384 or Ed25519 key in PEM form"
    )]
    DecodePrivate,
    /// A stored public key does not parse.
    #[error("the stored public key is not valid: {0}")]
    DecodePublic(String),
    /// A key of one type named with an algorithm of another (a hand-edited Secret or status).
    #[error("a {key} key cannot sign {algorithm}: {algorithm} needs a {needed} key")]
    AlgorithmMismatch {
        /// The key's type.
        key: KeyType,
        /// The algorithm it was named with.
        algorithm: Algorithm,
        /// The type that algorithm signs with.
        needed: KeyType,
    },
}

/// A JSON Web Key as published in `jwks.json`: RSA (RFC 7518 6.3), EC (RFC 7518 6.2) or OKP
/// (RFC 8037). Members a key type does not have are empty and not serialized, so an RSA JWK is
/// `kty, use, alg, kid, n, e` exactly as before EC and OKP keys existed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Jwk {
    /// `RSA`, `EC` or `OKP`.
    pub kty: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Algorithm the key signs with.
    pub alg: String,
    /// Key id: the RFC 7638 thumbprint.
    pub kid: String,
    /// RSA modulus, base64url (empty for other key types).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub n: String,
    /// RSA public exponent, base64url (empty for other key types).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub e: String,
    /// Curve of an EC or OKP key: `P-256`, `P-384`, `Ed25519` (empty for RSA).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crv: String,
    /// EC x coordinate zero-padded to the curve size, or the Ed25519 public key; base64url.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub x: String,
    /// EC y coordinate zero-padded to the curve size, base64url (empty for RSA and OKP).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub y: String,
}

/// Length in bytes of one coordinate (EC) or of the public key (Ed25519).
fn coordinate_len(key_type: KeyType) -> usize {
    match key_type {
        KeyType::Rsa => 0,
        KeyType::P256 | KeyType::Ed25519 => 32,
        KeyType::P384 => 48,
    }
}

fn verification_algorithm(key_type: KeyType) -> &'static dyn sig::VerificationAlgorithm {
    match key_type {
        KeyType::Rsa => &sig::RSA_PKCS1_2048_8192_SHA256,
        KeyType::P256 => &sig::ECDSA_P256_SHA256_FIXED,
        KeyType::P384 => &sig::ECDSA_P384_SHA384_FIXED,
        KeyType::Ed25519 => &sig::ED25519,
    }
}

impl Jwk {
    fn new(kty: &str, algorithm: Algorithm) -> Jwk {
        Jwk {
            kty: kty.into(),
            use_: "sig".into(),
            alg: algorithm.as_str().into(),
            ..Jwk::default()
        }
    }

    /// The JWK of an RSA public key given by its big-endian modulus and exponent.
    pub fn from_components(n: &[u8], e: &[u8], algorithm: Algorithm) -> Jwk {
        let mut jwk = Jwk::new("RSA", algorithm);
        jwk.n = URL_SAFE_NO_PAD.encode(n);
        jwk.e = URL_SAFE_NO_PAD.encode(e);
        jwk.kid = thumbprint(&jwk.n, &jwk.e);
        jwk
    }

    /// The JWK of an EC public key given as an uncompressed SEC1 point (`04 || x || y`, each
    /// coordinate already the curve's size, as RFC 7518 6.2.1.2 wants it).
    fn from_ec_point(key_type: KeyType, point: &[u8], algorithm: Algorithm) -> Result<Jwk, Error> {
        let size = coordinate_len(key_type);
        if point.len() != 1 + 2 * size || point[0] != 4 {
            return Err(Error::Encode(format!(
                "the {key_type} public key is not an uncompressed point"
            )));
        }
        let mut jwk = Jwk::new("EC", algorithm);
        jwk.crv = key_type.name().into();
        jwk.x = URL_SAFE_NO_PAD.encode(&point[1..=size]);
        jwk.y = URL_SAFE_NO_PAD.encode(&point[1 + size..]);
        jwk.kid = jwk.thumbprint().expect("an EC JWK with crv, x and y");
        Ok(jwk)
    }

    /// The JWK of an Ed25519 public key (RFC 8037 2).
    fn from_ed25519(public: &[u8], algorithm: Algorithm) -> Jwk {
        let mut jwk = Jwk::new("OKP", algorithm);
        jwk.crv = KeyType::Ed25519.name().into();
        jwk.x = URL_SAFE_NO_PAD.encode(public);
        jwk.kid = jwk.thumbprint().expect("an OKP JWK with crv and x");
        jwk
    }

    /// The key type named by `kty` and `crv`; `None` for anything the operator does not make
    /// (another curve, X25519, a symmetric key).
    pub fn key_type(&self) -> Option<KeyType> {
        match (self.kty.as_str(), self.crv.as_str()) {
            ("RSA", "") => Some(KeyType::Rsa),
            ("EC", "P-256") => Some(KeyType::P256),
            ("EC", "P-384") => Some(KeyType::P384),
            ("OKP", "Ed25519") => Some(KeyType::Ed25519),
            _ => None,
        }
    }

    /// RFC 7638 thumbprint over the required members of the key's type, in lexicographic order
    /// (RSA `e, kty, n`; EC `crv, kty, x, y`; OKP `crv, kty, x`, RFC 8037 A.3). `None` when the
    /// type is unknown or a required member is missing.
    pub fn thumbprint(&self) -> Option<String> {
        let present = |members: &[&str]| members.iter().all(|m| !m.is_empty());
        let canonical = match self.key_type()? {
            KeyType::Rsa if present(&[&self.n, &self.e]) => {
                return Some(thumbprint(&self.n, &self.e));
            }
            KeyType::P256 | KeyType::P384 if present(&[&self.x, &self.y]) => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                self.crv, self.x, self.y
            ),
            KeyType::Ed25519 if present(&[&self.x]) => {
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, self.x)
            }
            _ => return None,
        };
        Some(URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes())))
    }

    /// Whether the JWK describes one key the operator could have made, consistently: a known key
    /// type with its members only, coordinates of the curve's size, an `alg` that signs with that
    /// type (never `RS256` on an EC key), and a `kid` that is the key's thumbprint. Cheap (no
    /// curve arithmetic): the reconciler checks every JWK it reads back on every reconcile.
    pub fn is_consistent(&self) -> bool {
        let Some(key_type) = self.key_type() else {
            return false;
        };
        let fits = Algorithm::from_name(&self.alg).is_some_and(|alg| alg.key_type() == key_type);
        let sized = |member: &str| {
            URL_SAFE_NO_PAD
                .decode(member)
                .is_ok_and(|bytes| bytes.len() == coordinate_len(key_type))
        };
        let members = match key_type {
            KeyType::Rsa => self.x.is_empty() && self.y.is_empty(),
            KeyType::P256 | KeyType::P384 => {
                self.n.is_empty() && self.e.is_empty() && sized(&self.x) && sized(&self.y)
            }
            KeyType::Ed25519 => {
                self.n.is_empty() && self.e.is_empty() && self.y.is_empty() && sized(&self.x)
            }
        };
        fits && members && self.use_ == "sig" && self.thumbprint().as_deref() == Some(&self.kid)
    }

    /// SPKI DER of the key; EC points are checked to lie on their curve.
    fn public_der(&self) -> Result<Vec<u8>, Error> {
        let decode = |field: &str, value: &str| {
            URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|e| Error::DecodePublic(format!("{field}: {e}")))
        };
        let key_type = self.key_type().ok_or_else(|| {
            Error::DecodePublic(format!(
                "unknown key type kty {:?} crv {:?}",
                self.kty, self.crv
            ))
        })?;
        let der: PublicKeyX509Der<'static> = match key_type {
            KeyType::Rsa => PublicKeyComponents {
                n: decode("n", &self.n)?,
                e: decode("e", &self.e)?,
            }
            .as_der()
            .map_err(|_| Error::DecodePublic("n and e do not form an RSA public key".into()))?,
            KeyType::P256 | KeyType::P384 | KeyType::Ed25519 => {
                let size = coordinate_len(key_type);
                let sized = |field: &str, value: &str| {
                    let bytes = decode(field, value)?;
                    if bytes.len() != size {
                        return Err(Error::DecodePublic(format!(
                            "{field} of a {key_type} key is {} bytes, not {size}",
                            bytes.len()
                        )));
                    }
                    Ok(bytes)
                };
                // The SEC1 uncompressed point for EC, the raw public key for Ed25519.
                let raw = match key_type {
                    KeyType::Ed25519 => sized("x", &self.x)?,
                    _ => [vec![4], sized("x", &self.x)?, sized("y", &self.y)?].concat(),
                };
                sig::ParsedPublicKey::new(verification_algorithm(key_type), &raw)
                    .map_err(|e| Error::DecodePublic(format!("not a {key_type} public key: {e}")))?
                    .as_der()
                    .map_err(|_| {
                        Error::DecodePublic(format!("SPKI encoding of a {key_type} key"))
                    })?
            }
        };
        Ok(der.as_ref().to_vec())
    }

    /// SPKI PEM of the key (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_pem(&self) -> Result<String, Error> {
        Ok(encode_pem("PUBLIC KEY", &self.public_der()?))
    }
}

/// RFC 7638 thumbprint of an RSA key: SHA-256 over the canonical JSON of `e`, `kty`, `n`,
/// base64url without padding. [`Jwk::thumbprint`] covers every key type.
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
    /// The kind of key, as parsed (not as named).
    key_type: KeyType,
    /// RSA modulus size in bits, or the curve's size.
    bits: usize,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("kid", &self.jwk.kid)
            .field("alg", &self.jwk.alg)
            .field("key", &self.description())
            .field("private_pem", &"<redacted>")
            .finish()
    }
}

/// The parsed private key of one type.
enum Private {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ec(KeyType, sig::EcdsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
}

fn ecdsa_signing(key_type: KeyType) -> &'static sig::EcdsaSigningAlgorithm {
    match key_type {
        KeyType::P384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
        _ => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
    }
}

impl Private {
    /// Parses PKCS#8 DER of any supported type: the key decides its type.
    fn from_pkcs8(der: &[u8]) -> Option<Private> {
        if let Ok(key) = aws_lc_rs::rsa::KeyPair::from_pkcs8(der) {
            return Some(Private::Rsa(key));
        }
        for key_type in [KeyType::P256, KeyType::P384] {
            if let Ok(key) = sig::EcdsaKeyPair::from_pkcs8(ecdsa_signing(key_type), der) {
                return Some(Private::Ec(key_type, key));
            }
        }
        sig::Ed25519KeyPair::from_pkcs8(der)
            .ok()
            .map(Private::Ed25519)
    }

    fn key_type(&self) -> KeyType {
        match self {
            Private::Rsa(_) => KeyType::Rsa,
            Private::Ec(key_type, _) => *key_type,
            Private::Ed25519(_) => KeyType::Ed25519,
        }
    }
}

impl KeyPair {
    /// Generates a fresh key for `algorithm` with aws-lc-rs: RSA of `bits` (2048, 3072 or 4096;
    /// the fastest of the generators `cargo bench --bench keygen` compares), or a P-256, P-384
    /// or Ed25519 key, whose curve fixes the size (`bits` is ignored). RSA is CPU-bound for up to
    /// seconds, the others take microseconds: call it off the async runtime (the controller runs
    /// it on its key-generation pool).
    pub fn generate(bits: usize, algorithm: Algorithm) -> Result<KeyPair, Error> {
        let key_type = algorithm.key_type();
        let failed = |reason: String| Error::Generate {
            key: match key_type {
                KeyType::Rsa => format!("{bits}-bit RSA"),
                other => other.name().into(),
            },
            reason,
        };
        let private = match key_type {
            KeyType::Rsa => {
                let size = match bits {
                    2048 => KeySize::Rsa2048,
                    3072 => KeySize::Rsa3072,
                    4096 => KeySize::Rsa4096,
                    _ => return Err(failed("the size is not one of 2048, 3072, 4096".into())),
                };
                Private::Rsa(
                    aws_lc_rs::rsa::KeyPair::generate(size).map_err(|e| failed(e.to_string()))?,
                )
            }
            KeyType::P256 | KeyType::P384 => Private::Ec(
                key_type,
                sig::EcdsaKeyPair::generate(ecdsa_signing(key_type))
                    .map_err(|e| failed(e.to_string()))?,
            ),
            KeyType::Ed25519 => Private::Ed25519(
                sig::Ed25519KeyPair::generate().map_err(|e| failed(e.to_string()))?,
            ),
        };
        KeyPair::from_private(&private, algorithm)
    }

    /// Reads a stored PKCS#8 PEM private key of any supported type. The key decides its type:
    /// it is published with `algorithm` when that algorithm signs with its type, and otherwise
    /// with its type's default (see [`KeyType::default_algorithm`]), so that a key is never
    /// named with an algorithm it cannot sign (during a change of algorithm the spec already
    /// names the next key's algorithm while `private.pem` still holds the previous type). The
    /// kid does not depend on the algorithm; callers that know the key's published `alg` use
    /// [`KeyPair::with_algorithm`].
    pub fn from_private_pem(pem: &str, algorithm: Algorithm) -> Result<KeyPair, Error> {
        let parsed = pem::parse(pem).map_err(|_| Error::DecodePrivate)?;
        if parsed.tag() != "PRIVATE KEY" {
            return Err(Error::DecodePrivate);
        }
        let private = Private::from_pkcs8(parsed.contents()).ok_or(Error::DecodePrivate)?;
        let algorithm = if algorithm.key_type() == private.key_type() {
            algorithm
        } else {
            private.key_type().default_algorithm()
        };
        KeyPair::from_private(&private, algorithm)
    }

    /// The same key published with another algorithm of its type (`RS256` to `PS512`, say);
    /// refused, naming both, when the algorithm signs with another type of key.
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Result<KeyPair, Error> {
        if algorithm.key_type() != self.key_type {
            return Err(Error::AlgorithmMismatch {
                key: self.key_type,
                algorithm,
                needed: algorithm.key_type(),
            });
        }
        self.jwk.alg = algorithm.as_str().into();
        Ok(self)
    }

    fn from_private(private: &Private, algorithm: Algorithm) -> Result<KeyPair, Error> {
        let pkcs8_failed = |_| Error::Encode("PKCS#8 encoding of the private key".into());
        let spki_failed = |_| Error::Encode("SPKI encoding of the public key".into());
        let key_type = private.key_type();
        let (jwk, pkcs8, spki, bits): (Jwk, Vec<u8>, Vec<u8>, usize) = match private {
            Private::Rsa(key) => {
                let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der<'static> =
                    key.as_der().map_err(pkcs8_failed)?;
                let public = key.public_key();
                let spki: PublicKeyX509Der<'static> = public.as_der().map_err(spki_failed)?;
                (
                    Jwk::from_components(
                        public.modulus().big_endian_without_leading_zero(),
                        public.exponent().big_endian_without_leading_zero(),
                        algorithm,
                    ),
                    pkcs8.as_ref().to_vec(),
                    spki.as_ref().to_vec(),
                    key.public_modulus_len() * 8,
                )
            }
            Private::Ec(key_type, key) => {
                let pkcs8 = key.to_pkcs8v1().map_err(pkcs8_failed)?;
                let public = key.public_key();
                let spki: PublicKeyX509Der<'static> = public.as_der().map_err(spki_failed)?;
                (
                    Jwk::from_ec_point(*key_type, public.as_ref(), algorithm)?,
                    pkcs8.as_ref().to_vec(),
                    spki.as_ref().to_vec(),
                    coordinate_len(*key_type) * 8,
                )
            }
            Private::Ed25519(key) => {
                // PKCS#8 v1 (RFC 8410), as `openssl genpkey` writes it: every consumer reads it.
                let pkcs8 = key.to_pkcs8v1().map_err(pkcs8_failed)?;
                let public = key.public_key();
                let spki: PublicKeyX509Der<'static> = public.as_der().map_err(spki_failed)?;
                (
                    Jwk::from_ed25519(public.as_ref(), algorithm),
                    pkcs8.as_ref().to_vec(),
                    spki.as_ref().to_vec(),
                    256,
                )
            }
        };
        Ok(KeyPair {
            jwk,
            private_pem: encode_pem("PRIVATE KEY", &pkcs8),
            public_pem: encode_pem("PUBLIC KEY", &spki),
            key_type,
            bits,
        })
    }

    /// Key id.
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    /// The kind of key.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// For events and logs: `2048-bit RSA`, `P-256`, `P-384`, `Ed25519`.
    pub fn description(&self) -> String {
        match self.key_type {
            KeyType::Rsa => format!("{}-bit RSA", self.bits),
            other => other.name().into(),
        }
    }

    /// RSA modulus size in bits, or the curve's size (256 for P-256 and Ed25519, 384 for P-384).
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// PKCS#8 PEM of the private key: for the Secret only.
    pub fn private_pem(&self) -> &str {
        &self.private_pem
    }
}

#[cfg(test)]
mod tests;
