//! Selection of jsonwebtoken's crypto backend, robust to workspace feature unification.

use jsonwebtoken::crypto::CryptoProvider;

/// The jsonwebtoken crypto backend this build signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// AWS-LC through `aws-lc-rs` (feature `aws_lc_rs`, the default): the faster one.
    AwsLc,
    /// Pure-Rust `rsa` crate (feature `rust_crypto`).
    RustCrypto,
}

impl Backend {
    /// The backend compiled in; aws-lc-rs when both features are enabled.
    pub fn compiled() -> Backend {
        if cfg!(feature = "aws_lc_rs") {
            Backend::AwsLc
        } else {
            Backend::RustCrypto
        }
    }
}

/// Makes sure jsonwebtoken has a process-wide provider.
///
/// jsonwebtoken picks one by itself only when exactly one backend feature is on; in a
/// workspace where another crate enables the other backend both are on and it would panic on
/// first use, so we install ours unless the application already installed one.
pub(crate) fn ensure_provider() {
    if CryptoProvider::try_get_default().is_some() {
        return;
    }
    #[cfg(feature = "aws_lc_rs")]
    let provider = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
    #[cfg(all(feature = "rust_crypto", not(feature = "aws_lc_rs")))]
    let provider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
    // Losing the race to another thread installing a provider is fine: one is installed.
    let _ = provider.install_default();
}
