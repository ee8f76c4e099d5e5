//! How the operator watches the cluster: the configuration every watch starts from, a retry
//! schedule of its own for each ([`retried`]), what the cached objects keep ([`strip_bookkeeping`],
//! [`strip_namespace`]), when the watches have listed ([`Synced`]), and the caches of Secrets and
//! ConfigMaps that reconciles read instead of the API server ([`Cached`]).
//!
//! It depends on neither the reconciler (`controller`) nor the process that wires them (`run`):
//! both use it.

mod cache;
mod retry;
mod strip;
mod synced;

pub use cache::Found;
pub(crate) use cache::OVERLAY_TTL;
pub use cache::{Cached, Streams};
pub(crate) use retry::{Watch, retried};
pub use strip::{strip_bookkeeping, strip_namespace};
pub use synced::Synced;

use kube::runtime::watcher;

/// Objects per page of a watch's initial list (and of a relist). A page is held whole while it is
/// decoded, so its size sets the peak that a restart leaves in the heap: with 1000 keys in one
/// namespace, the RSS 20 s after a restart was 37-38 MiB with kube's default of 500, 29-30 MiB with
/// 100 or 50, 34-35 MiB with streaming lists. 1000 objects cost 10 list requests instead of 2.
pub(crate) const LIST_PAGE_SIZE: u32 = 100;

/// The configuration every watch of the operator starts from.
pub(crate) fn watch_config() -> watcher::Config {
    watcher::Config::default()
        .page_size(LIST_PAGE_SIZE)
        .timeout(watch_timeout())
}

/// Seconds after which the API server ends a watch (which then resumes from where it was), drawn
/// for each watch between 5 and 10 minutes as client-go's reflectors do. With kube's fixed 290 s,
/// the thousands of watches of an operator that watches a thousand namespaces, all opened within
/// seconds, all ended and were opened again within seconds of each other every 290 s
/// (`cargo bench --bench scale`).
fn watch_timeout() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // A fresh `RandomState` is randomly keyed: its hash of nothing is a random number.
    let random = std::hash::RandomState::new().build_hasher().finish();
    WATCH_TIMEOUT_MIN + (random % u64::from(WATCH_TIMEOUT_MIN)) as u32
}

const WATCH_TIMEOUT_MIN: u32 = 300;

/// How logs name a watch's scope.
pub(crate) fn scope_name(namespace: Option<&str>) -> String {
    namespace.map_or_else(|| "all namespaces".into(), |ns| format!("namespace {ns}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_end_at_times_spread_between_5_and_10_minutes() {
        let timeouts: std::collections::BTreeSet<u32> = (0..200).map(|_| watch_timeout()).collect();
        assert!(
            timeouts.iter().all(|t| (300..600).contains(t)),
            "{timeouts:?}"
        );
        // 200 draws from 300 values: fewer than 100 distinct ones would be a broken draw.
        assert!(timeouts.len() > 100, "{timeouts:?}");
        assert!(
            watch_config()
                .timeout
                .is_some_and(|t| (300..600).contains(&t)),
            "every watch of the operator gets such a timeout"
        );
    }
}
