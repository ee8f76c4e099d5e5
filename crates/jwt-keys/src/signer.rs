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
/// The Secret entry holding the algorithm name (`RS256` ... `PS512`).
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
    /// The key parsed once by aws-lc. jsonwebtoken's `encode` re-parses (and re-validates) the
    /// private key for every signature, which costs about two thirds of the signing time; the
    /// signing input and the output are the same as jsonwebtoken's.
    #[cfg(feature = "aws_lc_rs")]
    AwsLc {
        key_pair: aws_lc_rs::signature::RsaKeyPair,
        encoding: &'static dyn aws_lc_rs::signature::RsaEncoding,
    },
    /// jsonwebtoken's own signing, used with the `rust_crypto` backend.
    #[cfg_attr(feature = "aws_lc_rs", allow(dead_code))]
    Jsonwebtoken(EncodingKey),
}

impl Engine {
    fn new(encoding_key: EncodingKey, algorithm: Algorithm) -> Result<Engine, String> {
        #[cfg(feature = "aws_lc_rs")]
        {
            use aws_lc_rs::signature as sig;
            let encoding: &'static dyn sig::RsaEncoding = match algorithm {
                Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
                Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
                Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
                Algorithm::PS256 => &sig::RSA_PSS_SHA256,
                Algorithm::PS384 => &sig::RSA_PSS_SHA384,
                Algorithm::PS512 => &sig::RSA_PSS_SHA512,
                other => return Err(format!("{other:?} is not an RSA algorithm")),
            };
            // jsonwebtoken hands the PEM's key over as PKCS#1 RSAPrivateKey DER.
            let key_pair = sig::RsaKeyPair::from_der(encoding_key.as_bytes())
                .map_err(|err| err.to_string())?;
            Ok(Engine::AwsLc { key_pair, encoding })
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
            Engine::AwsLc { key_pair, encoding } => {
                let mut signature = vec![0; key_pair.public_modulus_len()];
                let rng = aws_lc_rs::rand::SystemRandom::new();
                key_pair
                    .sign(*encoding, &rng, message, &mut signature)
                    .map_err(|_| ErrorKind::RsaFailedSigning)?;
                Ok(signature)
            }
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
        let parse_error = |source| LoadError::ParsePrivateKey {
            path: dir.join(PRIVATE_KEY_FILE),
            source,
        };
        let encoding_key = EncodingKey::from_rsa_pem(private_pem).map_err(parse_error)?;
        let engine = Engine::new(encoding_key, algorithm).map_err(|reason| {
            parse_error(jsonwebtoken::errors::ErrorKind::InvalidRsaKey(reason).into())
        })?;
        // A key that parses may still be refused by the backend (too small, inconsistent):
        // find out now, while the previous key can still be kept.
        engine.sign(b"probe", algorithm).map_err(parse_error)?;
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
