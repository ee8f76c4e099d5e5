//! The auth service's side: sign claims with the key in the mounted Secret.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::error::{LoadError, SignError, read_file};
use crate::reload::{Load, ReloadOptions, ReloadStatus, Reloading};

/// The Secret entry holding the signing key (PKCS#8 PEM).
pub const PRIVATE_KEY_FILE: &str = "private.pem";
/// The Secret entry holding the signing key's id.
pub const KID_FILE: &str = "kid";
/// The Secret entry holding the algorithm name (`RS256` ... `PS512`, `ES256`, `ES384`, `EdDSA`).
pub const ALGORITHM_FILE: &str = "algorithm";

/// Default period of the re-stat that backs up the file watcher.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The key that signs right now. Its `Debug` output never shows key material.
pub struct SigningKey {
    /// The key id written into every token's header.
    pub kid: String,
    /// The algorithm written into every token's header.
    pub algorithm: Algorithm,
    /// The header, serialised and base64url-encoded once per key.
    encoded_header: String,
    engine: Engine,
}

/// What computes the signature.
enum Engine {
    /// An RSA key parsed once by aws-lc. jsonwebtoken's `encode` re-parses (and re-validates)
    /// the private key for every signature, which costs about two thirds of the RSA signing
    /// time; the signing input and the output are the same as jsonwebtoken's.
    #[cfg(feature = "aws_lc_rs")]
    AwsLcRsa {
        key_pair: aws_lc_rs::signature::RsaKeyPair,
        encoding: &'static dyn aws_lc_rs::signature::RsaEncoding,
    },
    /// A P-256 or P-384 key parsed once by aws-lc; signs in the JWS form, raw `r || s`
    /// (RFC 7518 3.4), not DER.
    #[cfg(feature = "aws_lc_rs")]
    AwsLcEcdsa(aws_lc_rs::signature::EcdsaKeyPair),
    /// An Ed25519 key parsed once by aws-lc (RFC 8037 3.1).
    #[cfg(feature = "aws_lc_rs")]
    AwsLcEd25519(aws_lc_rs::signature::Ed25519KeyPair),
    /// jsonwebtoken's own signing, used with the `rust_crypto` backend.
    #[cfg_attr(feature = "aws_lc_rs", allow(dead_code))]
    Jsonwebtoken(EncodingKey),
}

/// The kind of private key an algorithm signs with, as error messages name it.
fn needed_key(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::ES256 => "a P-256 key",
        Algorithm::ES384 => "a P-384 key",
        Algorithm::EdDSA => "an Ed25519 key",
        _ => "an RSA key",
    }
}

/// The kind of private key a PEM holds, for the error when it does not fit the algorithm.
fn found_key(pem: &[u8]) -> Option<&'static str> {
    if EncodingKey::from_rsa_pem(pem).is_ok() {
        return Some("an RSA key");
    }
    if let Ok(key) = EncodingKey::from_ec_pem(pem) {
        // The curve's OID in the PKCS#8 AlgorithmIdentifier (RFC 5480): 1.2.840.10045.3.1.7 is
        // P-256, 1.3.132.0.34 is P-384. Read from the DER, so that both backends name it.
        const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
        let der = key.as_bytes();
        let holds = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
        return Some(if holds(P256) {
            "a P-256 key"
        } else if holds(P384) {
            "a P-384 key"
        } else {
            "an EC key"
        });
    }
    EncodingKey::from_ed_pem(pem)
        .ok()
        .map(|_| "an Ed25519 key")
}

/// The PEM's key for `algorithm`, parsed the way jsonwebtoken reads that family.
fn encoding_key(pem: &[u8], algorithm: Algorithm) -> jsonwebtoken::errors::Result<EncodingKey> {
    match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
}

impl Engine {
    fn new(encoding_key: EncodingKey, algorithm: Algorithm) -> Result<Engine, String> {
        #[cfg(feature = "aws_lc_rs")]
        {
            use aws_lc_rs::signature as sig;
            let rsa: &'static dyn sig::RsaEncoding = match algorithm {
                Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
                Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
                Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
                Algorithm::PS256 => &sig::RSA_PSS_SHA256,
                Algorithm::PS384 => &sig::RSA_PSS_SHA384,
                Algorithm::PS512 => &sig::RSA_PSS_SHA512,
                // jsonwebtoken hands EC and Ed25519 keys over as PKCS#8 DER.
                Algorithm::ES256 | Algorithm::ES384 => {
                    let curve = if algorithm == Algorithm::ES256 {
                        &sig::ECDSA_P256_SHA256_FIXED_SIGNING
                    } else {
                        &sig::ECDSA_P384_SHA384_FIXED_SIGNING
                    };
                    return sig::EcdsaKeyPair::from_pkcs8(curve, encoding_key.as_bytes())
                        .map(Engine::AwsLcEcdsa)
                        .map_err(|err| err.to_string());
                }
                Algorithm::EdDSA => {
                    return sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(
                        encoding_key.as_bytes(),
                    )
                    .map(Engine::AwsLcEd25519)
                    .map_err(|err| err.to_string());
                }
                other => return Err(format!("{other:?} is not a supported algorithm")),
            };
            // jsonwebtoken hands the PEM's RSA key over as PKCS#1 RSAPrivateKey DER.
            let key_pair =
                sig::RsaKeyPair::from_der(encoding_key.as_bytes()).map_err(|err| err.to_string())?;
            Ok(Engine::AwsLcRsa {
                key_pair,
                encoding: rsa,
            })
        }
        #[cfg(not(feature = "aws_lc_rs"))]
        {
            let _ = algorithm;
            Ok(Engine::Jsonwebtoken(encoding_key))
        }
    }

    fn sign(
        &self,
        message: &[u8],
        algorithm: Algorithm,
    ) -> Result<Vec<u8>, jsonwebtoken::errors::Error> {
        use jsonwebtoken::errors::ErrorKind;
        match self {
            #[cfg(feature = "aws_lc_rs")]
            Engine::AwsLcRsa { key_pair, encoding } => {
                let mut signature = vec![0; key_pair.public_modulus_len()];
                let rng = aws_lc_rs::rand::SystemRandom::new();
                key_pair
                    .sign(*encoding, &rng, message, &mut signature)
                    .map_err(|_| ErrorKind::RsaFailedSigning)?;
                Ok(signature)
            }
            #[cfg(feature = "aws_lc_rs")]
            Engine::AwsLcEcdsa(key_pair) => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let signature = key_pair
                    .sign(&rng, message)
                    .map_err(|_| ErrorKind::Signing("ECDSA signing failed".to_owned()))?;
                Ok(signature.as_ref().to_vec())
            }
            #[cfg(feature = "aws_lc_rs")]
            Engine::AwsLcEd25519(key_pair) => Ok(key_pair.sign(message).as_ref().to_vec()),
            Engine::Jsonwebtoken(key) => {
                let signature = jsonwebtoken::crypto::sign(message, key, algorithm)?;
                Ok(URL_SAFE_NO_PAD
                    .decode(signature)
                    .map_err(|err| ErrorKind::Signing(err.to_string()))?)
            }
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Builds a signing key from its parts as the Secret holds them.
    pub fn from_parts(
        private_pem: &[u8],
        kid: &str,
        algorithm: &str,
    ) -> Result<SigningKey, LoadError> {
        SigningKey::from_parts_at(Path::new(""), private_pem, kid, algorithm)
    }

    fn from_parts_at(
        dir: &Path,
        private_pem: &[u8],
        kid: &str,
        algorithm: &str,
    ) -> Result<SigningKey, LoadError> {
        crate::crypto::ensure_provider();
        let kid = kid.trim();
        if kid.is_empty() {
            return Err(LoadError::EmptyKid {
                path: dir.join(KID_FILE),
            });
        }
        let algorithm_name = algorithm.trim();
        let algorithm = crate::parse_algorithm(algorithm_name).ok_or_else(|| {
            LoadError::UnsupportedAlgorithm {
                path: dir.join(ALGORITHM_FILE),
                found: algorithm_name.to_owned(),
            }
        })?;
        // A key of another type than the algorithm's (a hand-edited Secret) is named as such.
        let refused = |source: jsonwebtoken::errors::Error| match found_key(private_pem) {
            Some(found) if found != needed_key(algorithm) => LoadError::KeyDoesNotFitAlgorithm {
                path: dir.join(PRIVATE_KEY_FILE),
                algorithm: algorithm_name.to_owned(),
                needed: needed_key(algorithm).to_owned(),
                found: found.to_owned(),
            },
            _ => LoadError::ParsePrivateKey {
                path: dir.join(PRIVATE_KEY_FILE),
                source,
            },
        };
        let encoding_key = encoding_key(private_pem, algorithm).map_err(refused)?;
        let engine = Engine::new(encoding_key, algorithm)
            .map_err(|reason| refused(jsonwebtoken::errors::ErrorKind::Provider(reason).into()))?;
        // A key that parses may still be refused by the backend (too small, inconsistent, the
        // wrong curve): find out now, while the previous key can still be kept.
        engine.sign(b"probe", algorithm).map_err(refused)?;
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.to_owned());
        let header_json = serde_json::to_vec(&header).expect("a header always serialises");
        Ok(SigningKey {
            kid: kid.to_owned(),
            algorithm,
            encoded_header: URL_SAFE_NO_PAD.encode(header_json),
            engine,
        })
    }

    /// Signs `claims` into a compact JWS with `alg`, `typ: JWT` and `kid` in the header.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, SignError> {
        let error = |source| SignError::Sign {
            kid: self.kid.clone(),
            source,
        };
        let claims = serde_json::to_vec(claims).map_err(|err| {
            error(jsonwebtoken::errors::ErrorKind::Json(std::sync::Arc::new(err)).into())
        })?;
        let mut token = String::with_capacity(self.encoded_header.len() + claims.len() * 2 + 400);
        token.push_str(&self.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let signature = self
            .engine
            .sign(token.as_bytes(), self.algorithm)
            .map_err(error)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }
}

impl Load for SigningKey {
    type Error = LoadError;

    fn load(dir: &Path) -> Result<SigningKey, LoadError> {
        let pem = read_file(&dir.join(PRIVATE_KEY_FILE))?;
        let kid = read_file(&dir.join(KID_FILE))?;
        let algorithm = read_file(&dir.join(ALGORITHM_FILE))?;
        SigningKey::from_parts_at(
            dir,
            &pem,
            &String::from_utf8_lossy(&kid),
            &String::from_utf8_lossy(&algorithm),
        )
    }

    fn describe(&self) -> String {
        format!("kid={} alg={:?}", self.kid, self.algorithm)
    }
}

/// Signs tokens with the key of a mounted Secret directory and follows key rotations.
///
/// Cloning is cheap; clones share the key and the watcher.
#[derive(Clone)]
pub struct Signer {
    key: Reloading<SigningKey>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("dir", &self.key.dir())
            .field("key", &self.key.current())
            .finish()
    }
}

impl Signer {
    /// Reads `private.pem`, `kid` and `algorithm` from `dir` and follows changes with the
    /// default settings; fails if the files cannot be read or parsed.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Result<Signer, LoadError> {
        Signer::builder(dir).build()
    }

    /// Settings for a signer reading from `dir`.
    pub fn builder(dir: impl Into<PathBuf>) -> SignerBuilder {
        SignerBuilder {
            dir: dir.into(),
            watch: true,
            poll_interval: Some(DEFAULT_POLL_INTERVAL),
        }
    }

    /// Signs `claims` with the current key. Never waits for a reload.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, SignError> {
        self.key.current().sign(claims)
    }

    /// The key that signs right now.
    pub fn current_key(&self) -> Arc<SigningKey> {
        self.key.current()
    }

    /// Counters of loads and failed reloads.
    pub fn reload_status(&self) -> ReloadStatus {
        self.key.status()
    }

    /// Re-reads the directory now if its files changed (for callers that know it changed,
    /// e.g. on SIGHUP); the watcher and the poll do this by themselves.
    pub fn reload_if_changed(&self) {
        self.key.reload_if_changed();
    }
}

/// Settings of a [`Signer`].
#[derive(Debug, Clone)]
pub struct SignerBuilder {
    dir: PathBuf,
    watch: bool,
    poll_interval: Option<Duration>,
}

impl SignerBuilder {
    /// Whether to watch the directory for changes (default: yes).
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// How often to re-stat the files as a fallback to the watcher (default 5 s); `None`
    /// turns polling off.
    pub fn poll_interval(mut self, interval: Option<Duration>) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Loads the key and starts following the directory.
    pub fn build(self) -> Result<Signer, LoadError> {
        let options = ReloadOptions {
            watch: self.watch,
            poll_interval: self.poll_interval,
            forced_reload_interval: Duration::MAX,
        };
        Ok(Signer {
            key: Reloading::start(self.dir, options)?,
        })
    }
}
