//! The auth service's side: sign claims with the key in the mounted Secret.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::error::{LoadError, SignError};
use crate::reload::{Load, ReloadOptions, ReloadStatus, Reloading, read_file};

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
    header: Header,
    encoding_key: EncodingKey,
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
        // A key that parses may still be refused by the backend (too small, inconsistent):
        // find out now, while the previous key can still be kept.
        jsonwebtoken::crypto::sign(b"probe", &encoding_key, algorithm).map_err(parse_error)?;
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.to_owned());
        Ok(SigningKey {
            kid: kid.to_owned(),
            algorithm,
            header,
            encoding_key,
        })
    }

    /// Signs `claims` into a compact JWS with `alg`, `typ: JWT` and `kid` in the header.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, SignError> {
        jsonwebtoken::encode(&self.header, claims, &self.encoding_key).map_err(|source| {
            SignError::Sign {
                kid: self.kid.clone(),
                source,
            }
        })
    }
}

impl Load for SigningKey {
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
