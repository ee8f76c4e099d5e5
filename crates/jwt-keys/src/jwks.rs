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
}

impl KeySet {
    /// Parses a JWK set document `{"keys":[...]}`.
    ///
    /// Keys this crate cannot verify with are skipped with a warning, as RFC 7517 section 5
    /// asks: not RSA, `use` other than `sig`, no or unsupported `alg`, no `kid`, bad `n`/`e`,
    /// a modulus under 2048 bits, or a `kid` seen before. Fails only if the document itself is
    /// not a JWK set.
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
        if jwk.kty != "RSA" {
            return Err(reject(format!("kty {:?} is not RSA", jwk.kty)));
        }
        if let Some(use_) = jwk.use_.as_deref().filter(|use_| *use_ != "sig") {
            return Err(reject(format!("use {use_:?} is not sig")));
        }
        let alg_name = jwk.alg.ok_or_else(|| reject("no alg".to_owned()))?;
        let algorithm = crate::parse_algorithm(&alg_name)
            .ok_or_else(|| reject(format!("unsupported alg {alg_name:?}")))?;
        let decode = |name: &str, value: Option<String>| {
            let value = value.ok_or_else(|| reject(format!("no {name}")))?;
            let bytes = URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|err| reject(format!("{name} is not base64url: {err}")))?;
            let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
            Ok::<_, String>(bytes[start..].to_vec())
        };
        let n = decode("n", jwk.n)?;
        let e = decode("e", jwk.e)?;
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
        Ok(PublicKey {
            decoding_key: DecodingKey::from_rsa_raw_components(&n, &e),
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
