//! The verifying services' side: check tokens against the keys of the mounted ConfigMap.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};
use serde::de::DeserializeOwned;

use crate::error::{LoadError, VerifyError};
use crate::jwks::KeySet;
use crate::reload::{ReloadOptions, ReloadStatus, Reloading};
use crate::signer::DEFAULT_POLL_INTERVAL;
use crate::token::TokenHeader;

/// Default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Default least time between two re-reads triggered by unknown key ids.
pub const DEFAULT_UNKNOWN_KID_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// A token that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T> {
    /// The claims.
    pub claims: T,
    /// The id of the key that verified the signature.
    pub kid: String,
    /// The algorithm of that key (and of the token).
    pub algorithm: Algorithm,
}

/// Verifies tokens with the keys of a mounted ConfigMap directory (`jwks.json`) and follows
/// the keys the operator publishes.
///
/// Cloning is cheap; clones share the keys and the watcher.
#[derive(Clone)]
pub struct Verifier {
    keys: Reloading<KeySet>,
    validation: Arc<ValidationTemplate>,
}

/// What every token is checked against, apart from the key-specific algorithm.
#[derive(Debug)]
struct ValidationTemplate {
    leeway: u64,
    issuers: Option<Vec<String>>,
    audiences: Option<Vec<String>>,
}

impl ValidationTemplate {
    fn for_algorithm(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuers) = &self.issuers {
            validation.set_issuer(issuers);
            required.push("iss");
        }
        match &self.audiences {
            Some(audiences) => {
                validation.set_audience(audiences);
                required.push("aud");
            }
            // Without an expected audience the claim is not checked (jsonwebtoken would
            // otherwise reject every token that carries one).
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("dir", &self.keys.dir())
            .field("keys", &self.keys.current().kids().collect::<Vec<_>>())
            .field("validation", &self.validation)
            .finish()
    }
}

impl Verifier {
    /// Reads `jwks.json` from `dir` and follows changes with the default settings (60 s
    /// leeway, no issuer or audience check); fails if it cannot be read or holds no usable key.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Result<Verifier, LoadError> {
        Verifier::builder(dir).build()
    }

    /// Settings for a verifier reading from `dir`.
    pub fn builder(dir: impl Into<PathBuf>) -> VerifierBuilder {
        VerifierBuilder {
            dir: dir.into(),
            leeway: DEFAULT_LEEWAY,
            issuers: None,
            audiences: None,
            unknown_kid_reload_interval: DEFAULT_UNKNOWN_KID_RELOAD_INTERVAL,
            watch: true,
            poll_interval: Some(DEFAULT_POLL_INTERVAL),
        }
    }

    /// Verifies a compact JWS and returns its claims.
    ///
    /// The key is chosen by the header's `kid`; the token's `alg` must equal that key's
    /// published `alg`. A `kid` that is not known triggers one re-read of `jwks.json` (at most
    /// one per `unknown_kid_reload_interval` across all callers) and one more lookup.
    pub fn verify<T: DeserializeOwned>(&self, token: &str) -> Result<Verified<T>, VerifyError> {
        let header = TokenHeader::parse(token)?;
        // Refuse `none`, HMAC and anything else before looking at keys: a public key must never
        // be used as an HMAC secret.
        let Some(token_algorithm) = crate::parse_algorithm(&header.alg) else {
            return Err(VerifyError::WrongAlgorithm {
                expected: "one of RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA".to_owned(),
                found: header.alg,
            });
        };
        let kid = header.kid.ok_or(VerifyError::MissingKid)?;
        let mut keys = self.keys.current();
        if keys.get(&kid).is_none() && self.keys.force_reload() {
            keys = self.keys.current();
        }
        let key = keys
            .get(&kid)
            .ok_or_else(|| VerifyError::UnknownKid(kid.clone()))?;
        if token_algorithm != key.algorithm {
            return Err(VerifyError::WrongAlgorithm {
                expected: crate::algorithm_name(key.algorithm),
                found: header.alg,
            });
        }
        let validation = self.validation.for_algorithm(key.algorithm);
        let data = jsonwebtoken::decode::<T>(token, &key.decoding_key, &validation)
            .map_err(VerifyError::from_jsonwebtoken)?;
        Ok(Verified {
            claims: data.claims,
            kid,
            algorithm: key.algorithm,
        })
    }

    /// The keys in use right now.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.current()
    }

    /// Counters of loads, failed and forced reloads.
    pub fn reload_status(&self) -> ReloadStatus {
        self.keys.status()
    }

    /// Re-reads the directory now if its files changed (for callers that know it changed);
    /// the watcher and the poll do this by themselves.
    pub fn reload_if_changed(&self) {
        self.keys.reload_if_changed();
    }
}

/// Settings of a [`Verifier`].
#[derive(Debug, Clone)]
pub struct VerifierBuilder {
    dir: PathBuf,
    leeway: Duration,
    issuers: Option<Vec<String>>,
    audiences: Option<Vec<String>>,
    unknown_kid_reload_interval: Duration,
    watch: bool,
    poll_interval: Option<Duration>,
}

impl VerifierBuilder {
    /// Clock-skew allowance for `exp` and `nbf`, whole seconds (default 60 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Require `iss` to be one of these.
    pub fn issuer<I, S>(mut self, issuers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.issuers = Some(issuers.into_iter().map(Into::into).collect());
        self
    }

    /// Require `aud` to name one of these.
    pub fn audience<I, S>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.audiences = Some(audiences.into_iter().map(Into::into).collect());
        self
    }

    /// Least time between two re-reads of `jwks.json` caused by tokens with an unknown `kid`
    /// (default 1 s), so that forged key ids cannot turn into a file-read storm.
    pub fn unknown_kid_reload_interval(mut self, interval: Duration) -> Self {
        self.unknown_kid_reload_interval = interval;
        self
    }

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

    /// Loads the keys and starts following the directory.
    pub fn build(self) -> Result<Verifier, LoadError> {
        crate::crypto::ensure_provider();
        let options = ReloadOptions {
            watch: self.watch,
            poll_interval: self.poll_interval,
            forced_reload_interval: self.unknown_kid_reload_interval,
        };
        Ok(Verifier {
            keys: Reloading::start(self.dir, options)?,
            validation: Arc::new(ValidationTemplate {
                leeway: self.leeway.as_secs(),
                issuers: self.issuers,
                audiences: self.audiences,
            }),
        })
    }
}
