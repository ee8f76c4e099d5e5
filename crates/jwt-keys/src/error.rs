//! Errors of loading keys, signing and verifying; each variant says what a caller can act on.

use std::path::{Path, PathBuf};

/// Loading keys from a mounted directory failed; on a reload the previous keys stay in use.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read (missing, permissions, removed during the read).
    #[error("reading {path}: {source}")]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `jwks.json` is not a JWK set (`{"keys": [...]}`).
    #[error("parsing JWK set {path}: {source}")]
    ParseJwks {
        /// The file that failed to parse.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The JWK set holds no key this crate can verify with.
    #[error("JWK set {path} holds no usable signing key")]
    NoUsableKey {
        /// The JWK set file.
        path: PathBuf,
    },
    /// `private.pem` is not a PKCS#8 private key in PEM form (RSA keys may also be PKCS#1).
    #[error("parsing private key {path}: {source}")]
    ParsePrivateKey {
        /// The PEM file.
        path: PathBuf,
        /// jsonwebtoken's error.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// The `algorithm` file names an algorithm other than RS256..RS512, PS256..PS512, ES256,
    /// ES384, EdDSA.
    #[error(
        "unsupported algorithm {found:?} in {path} (expected one of RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)"
    )]
    UnsupportedAlgorithm {
        /// The `algorithm` file.
        path: PathBuf,
        /// What it contains.
        found: String,
    },
    /// `private.pem` holds a key of another type than the `algorithm` file's algorithm signs
    /// with (a hand-edited Secret): the key is not used, so no token is ever signed under an
    /// `alg` its key cannot make.
    #[error("{path} holds {found}, but {algorithm} needs {needed}")]
    KeyDoesNotFitAlgorithm {
        /// The `private.pem` file.
        path: PathBuf,
        /// The algorithm the `algorithm` file names.
        algorithm: String,
        /// The kind of key the algorithm signs with, e.g. `a P-256 key`.
        needed: String,
        /// The kind of key found, e.g. `an RSA key`.
        found: String,
    },
    /// The `kid` file is empty.
    #[error("empty key id in {path}")]
    EmptyKid {
        /// The `kid` file.
        path: PathBuf,
    },
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Signing a token failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The claims could not be serialised, or the crypto backend refused to sign.
    #[error("signing token with key {kid}: {source}")]
    Sign {
        /// The key that was used.
        kid: String,
        /// jsonwebtoken's error.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

/// Why a token was rejected.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The token is not a compact JWS with a JSON header (three base64url parts).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header has no `kid`, so the key cannot be chosen.
    #[error("token header has no kid")]
    MissingKid,
    /// No published key has this `kid`, even after re-reading the JWK set.
    #[error("unknown key id {0:?}")]
    UnknownKid(String),
    /// The header's `alg` is not the algorithm the key is published for (this is how `none`,
    /// HS256 with the public key as secret, and algorithm confusion are refused).
    #[error("algorithm {found:?} not allowed for this token, expected {expected}")]
    WrongAlgorithm {
        /// The algorithm of the key, or the supported family when no key was chosen yet.
        expected: String,
        /// The `alg` of the token.
        found: String,
    },
    /// The signature does not match the key.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// `iss` is not one of the accepted issuers.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not name an accepted audience.
    #[error("wrong audience")]
    WrongAudience,
    /// A claim the validation requires (`exp`, or `iss`/`aud` when configured) is absent.
    #[error("missing required claim {0:?}")]
    MissingClaim(String),
    /// The claims are valid JSON but do not deserialise into the requested type, or a
    /// registered claim has the wrong type.
    #[error("invalid claims: {0}")]
    InvalidClaims(String),
    /// Any other failure of the crypto backend.
    #[error("verification failed: {0}")]
    Other(#[source] jsonwebtoken::errors::Error),
}

impl VerifyError {
    pub(crate) fn from_jsonwebtoken(err: jsonwebtoken::errors::Error) -> VerifyError {
        use jsonwebtoken::errors::ErrorKind;
        match err.kind() {
            ErrorKind::InvalidSignature => VerifyError::BadSignature,
            ErrorKind::ExpiredSignature => VerifyError::Expired,
            ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
            ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
            ErrorKind::InvalidAudience => VerifyError::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) => VerifyError::MissingClaim(claim.clone()),
            ErrorKind::InvalidClaimFormat(claim) => {
                VerifyError::InvalidClaims(format!("claim {claim:?} has the wrong type"))
            }
            ErrorKind::Json(json) => VerifyError::InvalidClaims(json.to_string()),
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                VerifyError::Malformed(err.to_string())
            }
            _ => VerifyError::Other(err),
        }
    }
}
