//! The published public keys: parsing an RFC 7517 JWK set into verification keys by `kid`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::error::{LoadError, read_file};
use crate::reload::Load;

/// Name of the JWK set file in the ConfigMap the operator publishes.
pub const JWKS_FILE: &str = "jwks.json";

/// Smallest RSA modulus accepted, in bits (the operator's smallest key size).
pub const MIN_RSA_BITS: usize = 2048;

/// One published verification key.
#[derive(Clone)]
pub struct PublicKey {
    /// The key id (`kid`), the RFC 7638 thumbprint when the operator wrote it.
    pub kid: String,
    /// The only algorithm tokens with this `kid` may use (the JWK's `alg`).
    pub algorithm: Algorithm,
    pub(crate) decoding_key: DecodingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The verification keys of a JWK set, in the order they were published (the operator puts
/// the signing key first).
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<PublicKey>,
    by_kid: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(rename = "use", default)]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// The kind of key an algorithm verifies with: `kty` and `crv` of its JWK, and the length of
/// an EC coordinate or of the Ed25519 key.
fn key_type_of(algorithm: Algorithm) -> (&'static str, Option<&'static str>, usize) {
    match algorithm {
        Algorithm::ES256 => ("EC", Some("P-256"), 32),
        Algorithm::ES384 => ("EC", Some("P-384"), 48),
        Algorithm::EdDSA => ("OKP", Some("Ed25519"), 32),
        _ => ("RSA", None, 0),
    }
}

impl KeySet {
    /// Parses a JWK set document `{"keys":[...]}`.
    ///
    /// Keys this crate cannot verify with are skipped with a warning, as RFC 7517 section 5
    /// asks: `use` other than `sig`, no or unsupported `alg`, a `kty`/`crv` that is not the one
    /// its `alg` signs with (an RSA key under `ES256`, a P-384 key under `ES256`), no `kid`, bad
    /// `n`/`e`, a modulus under 2048 bits, coordinates not of the curve's size, or a `kid` seen
    /// before. Fails only if the document itself is not a JWK set.
    pub fn from_json(json: &[u8]) -> Result<KeySet, serde_json::Error> {
        let raw: RawSet = serde_json::from_slice(json)?;
        let mut set = KeySet::default();
        for value in raw.keys {
            match PublicKey::from_jwk(value) {
                Ok(key) => {
                    if set.by_kid.contains_key(&key.kid) {
                        tracing::warn!(kid = %key.kid, "skipping JWK: duplicate kid");
                        continue;
                    }
                    set.by_kid.insert(key.kid.clone(), set.keys.len());
                    set.keys.push(key);
                }
                Err(reason) => tracing::warn!(%reason, "skipping JWK"),
            }
        }
        Ok(set)
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.by_kid.get(kid).map(|&index| &self.keys[index])
    }

    /// The key ids, in published order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|key| key.kid.as_str())
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl PublicKey {
    fn from_jwk(value: serde_json::Value) -> Result<PublicKey, String> {
        let jwk: RawJwk = serde_json::from_value(value).map_err(|err| err.to_string())?;
        let kid = jwk.kid.filter(|kid| !kid.is_empty()).ok_or("no kid")?;
        let reject = |reason: String| format!("key {kid:?}: {reason}");
        if let Some(use_) = jwk.use_.as_deref().filter(|use_| *use_ != "sig") {
            return Err(reject(format!("use {use_:?} is not sig")));
        }
        let alg_name = jwk.alg.ok_or_else(|| reject("no alg".to_owned()))?;
        let algorithm = crate::parse_algorithm(&alg_name)
            .ok_or_else(|| reject(format!("unsupported alg {alg_name:?}")))?;
        // The key type must be the one the alg signs with: a key is only ever used for its own
        // algorithm.
        let (kty, crv, size) = key_type_of(algorithm);
        if jwk.kty != kty || jwk.crv.as_deref() != crv {
            return Err(reject(format!(
                "kty {:?} crv {:?} is not a key for {alg_name} (needs kty {kty:?}{})",
                jwk.kty,
                jwk.crv.as_deref().unwrap_or(""),
                crv.map(|c| format!(" crv {c:?}")).unwrap_or_default()
            )));
        }
        let decode = |name: &str, value: Option<String>| {
            let value = value.ok_or_else(|| reject(format!("no {name}")))?;
            URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|err| reject(format!("{name} is not base64url: {err}")))
        };
        let sized = |name: &str, value: Option<String>| {
            let bytes = decode(name, value)?;
            if bytes.len() != size {
                return Err(reject(format!(
                    "{name} is {} bytes, not the curve's {size}",
                    bytes.len()
                )));
            }
            Ok(bytes)
        };
        let encode = |bytes: Vec<u8>| URL_SAFE_NO_PAD.encode(bytes);
        let decoding_key = match kty {
            "EC" => {
                let (x, y) = (sized("x", jwk.x)?, sized("y", jwk.y)?);
                DecodingKey::from_ec_components(&encode(x), &encode(y))
                    .map_err(|err| reject(format!("not an EC public key: {err}")))?
            }
            "OKP" => DecodingKey::from_ed_components(&encode(sized("x", jwk.x)?))
                .map_err(|err| reject(format!("not an Ed25519 public key: {err}")))?,
            _ => {
                let strip = |bytes: Vec<u8>| {
                    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
                    bytes[start..].to_vec()
                };
                let n = strip(decode("n", jwk.n)?);
                let e = strip(decode("e", jwk.e)?);
                let bits = n
                    .first()
                    .map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
                if bits < MIN_RSA_BITS {
                    return Err(reject(format!(
                        "modulus has {bits} bits, fewer than {MIN_RSA_BITS}"
                    )));
                }
                if e.is_empty() || e.len() > 8 {
                    return Err(reject("exponent out of range".to_owned()));
                }
                DecodingKey::from_rsa_raw_components(&n, &e)
            }
        };
        Ok(PublicKey {
            decoding_key,
            kid,
            algorithm,
        })
    }
}

impl Load for KeySet {
    type Error = LoadError;

    fn load(dir: &Path) -> Result<KeySet, LoadError> {
        let path = dir.join(JWKS_FILE);
        let json = read_file(&path)?;
        let set = KeySet::from_json(&json).map_err(|source| LoadError::ParseJwks {
            path: path.clone(),
            source,
        })?;
        if set.is_empty() {
            return Err(LoadError::NoUsableKey { path });
        }
        Ok(set)
    }

    fn describe(&self) -> String {
        format!("kids={:?}", self.kids().collect::<Vec<_>>())
    }
}
