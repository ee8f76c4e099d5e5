//! Prometheus metrics. Labels carry names and kids at most, never key material.

use std::{sync::Mutex, time::Duration};

use jiff::Timestamp;
use kube::ResourceExt;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use std::sync::atomic::AtomicU64;

use crate::{crd::JwtSigningKey, schedule::KeySet};

/// Identifies one JwtSigningKey.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// Namespace of the JwtSigningKey.
    pub namespace: String,
    /// Name of the JwtSigningKey.
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    namespace: String,
    name: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SizeLabels {
    algorithm: String,
    key_size: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

/// The operator's metrics and their registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    rotations: Family<KeyLabels, Counter>,
    key_generation: Family<SizeLabels, Histogram>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    next_rotation: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    published_keys: Family<KeyLabels, Gauge>,
    api_writes: Family<ResourceLabels, Counter>,
    watch_errors: Family<ResourceLabels, Counter>,
    watches_synced: Gauge,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let rotations = Family::<KeyLabels, Counter>::default();
        let key_generation = Family::<SizeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 12))
        });
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let next_rotation = Family::<KeyLabels, Gauge<f64, AtomicU64>>::default();
        let published_keys = Family::<KeyLabels, Gauge>::default();
        let api_writes = Family::<ResourceLabels, Counter>::default();
        let watch_errors = Family::<ResourceLabels, Counter>::default();
        let watches_synced = Gauge::default();
        let leader = Gauge::default();
        registry.register(
            "jwtkeys_rotations",
            "Signing key changes",
            rotations.clone(),
        );
        registry.register(
            "jwtkeys_key_generation_seconds",
            "Time to generate one RSA key",
            key_generation.clone(),
        );
        registry.register(
            "jwtkeys_reconcile_errors",
            "Failed reconciles",
            reconcile_errors.clone(),
        );
        registry.register(
            "jwtkeys_next_rotation_timestamp_seconds",
            "Unix time of the next signing key change",
            next_rotation.clone(),
        );
        registry.register(
            "jwtkeys_published_keys",
            "Public keys published in the ConfigMap",
            published_keys.clone(),
        );
        registry.register(
            "jwtkeys_api_writes",
            "Writes to the API server (Secrets, ConfigMaps, status)",
            api_writes.clone(),
        );
        registry.register(
            "jwtkeys_watch_errors",
            "Failed lists and watches, by resource; each watch retries on its own, and what it \
             caches is stale until it succeeds",
            watch_errors.clone(),
        );
        registry.register(
            "jwtkeys_watches_synced",
            "1 once every watch has listed its objects and reconciles read from the caches",
            watches_synced.clone(),
        );
        registry.register(
            "jwtkeys_leader",
            "1 once this replica holds the Lease (or runs without leader election) and reconciles",
            leader.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            rotations,
            key_generation,
            reconcile_errors,
            next_rotation,
            published_keys,
            api_writes,
            watch_errors,
            watches_synced,
            leader,
        }
    }
}

fn labels(jsk: &JwtSigningKey) -> KeyLabels {
    KeyLabels {
        namespace: jsk.namespace().unwrap_or_default(),
        name: jsk.name_any(),
    }
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry lock");
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }

    /// Marks every watch as synced.
    pub fn watches_synced(&self) {
        self.watches_synced.set(1);
    }

    /// Marks this replica as the one that reconciles.
    pub fn leading(&self) {
        self.leader.set(1);
    }

    /// Counts a signing key change.
    pub fn rotation(&self, jsk: &JwtSigningKey) {
        self.rotations.get_or_create(&labels(jsk)).inc();
    }

    /// Records a key generation, by algorithm and key size (RSA bits or the curve's size).
    pub fn key_generated(&self, key: &crate::keys::KeyPair, took: Duration) {
        self.key_generation
            .get_or_create(&SizeLabels {
                algorithm: key.jwk.alg.clone(),
                key_size: key.bits().to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a failed reconcile, or a refused write (`action` names what failed: `PublishFailed`
    /// for a ConfigMap write, `ApplySecret` for the Secret's, ...).
    pub fn reconcile_error(&self, jsk: &JwtSigningKey, action: &str) {
        let KeyLabels { namespace, name } = labels(jsk);
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                namespace,
                name,
                error: action.to_string(),
            })
            .inc();
    }

    /// Records the published keys and the next rotation of a JwtSigningKey.
    pub fn observe_keys(
        &self,
        jsk: &JwtSigningKey,
        keys: &KeySet,
        next_rotation: Option<Timestamp>,
    ) {
        let labels = labels(jsk);
        self.published_keys
            .get_or_create(&labels)
            .set(keys.keys.len() as i64);
        if let Some(at) = next_rotation {
            self.next_rotation
                .get_or_create(&labels)
                .set(at.as_millisecond() as f64 / 1000.0);
        }
    }

    /// Counts one write to the API server.
    pub fn api_write(&self, resource: &str) {
        self.api_writes
            .get_or_create(&ResourceLabels {
                resource: resource.into(),
            })
            .inc();
    }

    /// Counts a failed list or watch of `resource` (plural, e.g. `secrets`).
    pub fn watch_error(&self, resource: &str) {
        self.watch_errors
            .get_or_create(&ResourceLabels {
                resource: resource.into(),
            })
            .inc();
    }

    /// Forgets a deleted JwtSigningKey's gauges.
    pub fn forget(&self, namespace: &str, name: &str) {
        let labels = KeyLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.published_keys.remove(&labels);
        self.next_rotation.remove(&labels);
    }
}
