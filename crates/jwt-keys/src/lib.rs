//! Sign and verify JWTs with the keys that `jwt-key-operator` mounts into pods.
//!
//! The operator writes the signing key into a Secret and publishes every public key that a
//! verifier may need in a ConfigMap (see "What it writes" in the repository's `docs/design.md`).
//! This crate is the consumer side, with no Kubernetes dependency:
//!
//! - [`Signer::from_dir`] reads the mounted Secret directory (`private.pem`, `kid`,
//!   `algorithm`) and signs claims with the `kid` header set.
//! - [`Verifier::from_dir`] reads the mounted ConfigMap directory (`jwks.json`), picks the key
//!   by the token's `kid`, pins the algorithm to that key's `alg` (so `none`, HS256 with the
//!   public key as HMAC secret, and a token that names another algorithm than its key's, such as
//!   RS256 under an EC key's kid, are refused), and validates `exp`, `nbf` and optionally `iss`
//!   and `aud`.
//!
//! Every algorithm the operator makes keys for is supported: RS256, RS384, RS512, PS256, PS384,
//! PS512 (RSA), ES256 (P-256), ES384 (P-384) and EdDSA (Ed25519); ECDSA signatures are the JWS
//! form, raw `r || s`. During a change of algorithm the JWK set holds keys of both types, each
//! with its own `alg`, and tokens of both verify.
//!
//! Both follow the mount: the kubelet swaps the files atomically through the `..data`
//! symlink, a file watcher (with a periodic re-stat as fallback) notices and the keys are
//! replaced with one atomic pointer swap, so a request never waits for a reload. A token with a
//! `kid` that is not known yet triggers at most one synchronous re-read per
//! [`VerifierBuilder::unknown_kid_reload_interval`]. A reload that reads a broken or partial
//! file keeps the previous keys and logs the error.
//!
//! The following of a mounted directory is the public, generic [`reload`] module. Built
//! without a crypto backend feature (`default-features = false`), the crate is only that
//! module, for programs that follow a mount but never sign or verify (the operator's
//! `serve-jwks`).
//!
//! ```no_run
//! use jwt_keys::{Signer, Verifier};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Claims { sub: String, exp: u64 }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let signer = Signer::from_dir("/var/run/secrets/jwt-signing-key")?;
//! let token = signer.sign(&Claims { sub: "alice".into(), exp: 4_000_000_000 })?;
//!
//! let verifier = Verifier::builder("/var/run/jwks").audience(["api"]).build()?;
//! match verifier.verify::<Claims>(&token) {
//!     Ok(verified) => println!("hello {} (key {})", verified.claims.sub, verified.kid),
//!     Err(err) => println!("rejected: {err}"),
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod reload;
pub use reload::ReloadStatus;

/// Marks items that need a jsonwebtoken crypto backend: without one, only [`reload`] is built.
macro_rules! with_backend {
    ($($item:item)*) => {
        $(#[cfg(any(feature = "aws_lc_rs", feature = "rust_crypto"))] $item)*
    };
}

with_backend! {
    mod crypto;
    mod error;
    mod jwks;
    mod signer;
    mod token;
    mod verifier;

    pub use crypto::Backend;
    pub use error::{LoadError, SignError, VerifyError};
    pub use jsonwebtoken::Algorithm;
    pub use jwks::{KeySet, PublicKey};
    pub use signer::{Signer, SignerBuilder, SigningKey};
    pub use token::TokenHeader;
    pub use verifier::{Verified, Verifier, VerifierBuilder};

    /// The algorithms the operator can configure: the RSA PKCS#1 v1.5 and RSA-PSS families,
    /// ECDSA on P-256 and P-384, and EdDSA on Ed25519.
    pub const SUPPORTED_ALGORITHMS: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// Parses an algorithm name as the operator writes it (`RS256` ... `PS512`, `ES256`,
    /// `ES384`, `EdDSA`); any other name, including `none` and the HMAC family, is refused.
    pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
        SUPPORTED_ALGORITHMS
            .into_iter()
            .find(|alg| algorithm_name(*alg) == name)
    }

    /// The JOSE name of an algorithm (`RS256`), as written in the `alg` header and JWK member.
    pub fn algorithm_name(alg: Algorithm) -> String {
        // jsonwebtoken's variant names are the JOSE names.
        format!("{alg:?}")
    }
}
