//! The watches of each controller: its JwtSigningKeys, and the Secrets and ConfigMaps of its
//! scope, read through caches ([`crate::watch::Cached`]).

use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client,
    api::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};

use crate::{
    controller::Context,
    crd::JwtSigningKey,
    metrics::Metrics,
    watch::{Cached, Synced, Watch, retried, scope_name, strip_bookkeeping, watch_config},
};

/// The Secret and ConfigMap watches of every scope, and the caches they fill.
pub(super) struct ObjectWatches<S, C> {
    /// Whole Secrets of the operator's, metadata of every other.
    pub secrets: Arc<Cached<Secret>>,
    /// Whole ConfigMaps of the operator's, metadata of every other.
    pub config_maps: Arc<Cached<ConfigMap>>,
    /// For each scope (`None`: every namespace), one trigger stream of its Secrets and one of its
    /// ConfigMaps.
    pub scopes: Vec<(Option<String>, S, C)>,
}

/// Starts no watch yet: each fills its cache once its trigger stream is polled.
pub(super) fn objects(
    client: &Client,
    scopes: &[Option<String>],
    metrics: &Arc<Metrics>,
) -> ObjectWatches<
    impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + use<>,
    impl Stream<Item = Result<PartialObjectMeta<ConfigMap>, watcher::Error>> + Send + use<>,
> {
    let mut secrets = Cached::<Secret>::default();
    let mut config_maps = Cached::<ConfigMap>::default();
    let mut streams = Vec::new();
    for namespace in scopes {
        let secret_streams = secrets.watch(client, namespace.as_deref(), metrics);
        let config_map_streams = config_maps.watch(client, namespace.as_deref(), metrics);
        streams.push((namespace.clone(), secret_streams, config_map_streams));
    }
    let (secrets, config_maps) = (Arc::new(secrets), Arc::new(config_maps));
    let scopes = streams
        .into_iter()
        .map(|(namespace, secret_streams, config_map_streams)| {
            (
                namespace,
                secret_streams.merged(secrets.clone()),
                config_map_streams.merged(config_maps.clone()),
            )
        })
        .collect();
    ObjectWatches {
        secrets,
        config_maps,
        scopes,
    }
}

/// The JwtSigningKeys in `namespace` (`None`: every namespace): their store, and the keys a
/// reconcile acts on ([`reconcile_worthy`]). The context hears of every event of the watch, and
/// `keys_synced` counts it once it has listed.
pub(super) fn keys(
    client: &Client,
    namespace: Option<&str>,
    context: &Arc<Context>,
    keys_synced: &Synced,
) -> (
    Store<JwtSigningKey>,
    impl Stream<Item = Result<JwtSigningKey, watcher::Error>> + Send + use<>,
) {
    let api: Api<JwtSigningKey> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (store, writer) = reflector::store();
    let (seen, scope) = (context.clone(), namespace.map(str::to_string));
    let keys = keys_synced.track(
        reflector::reflector(
            writer,
            watcher::watcher(api, watch_config().any_semantic())
                .modify(|jsk: &mut JwtSigningKey| strip_bookkeeping(&mut jsk.metadata)),
        )
        .inspect_ok(move |event| seen.key_event(scope.as_deref(), event)),
    );
    let keys = retried(
        Watch {
            description: format!("JwtSigningKeys in {}", scope_name(namespace)),
            resource: "jwtsigningkeys".into(),
            metrics: context.metrics.clone(),
        },
        keys,
    )
    .applied_objects()
    .predicate_filter(reconcile_worthy, Default::default());
    (store, keys)
}

/// What of a JwtSigningKey a reconcile acts on: not its status (which only the operator writes).
fn reconcile_worthy(jsk: &JwtSigningKey) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    jsk.metadata.uid.hash(&mut hasher);
    jsk.metadata.generation.hash(&mut hasher);
    jsk.metadata.annotations.hash(&mut hasher);
    jsk.metadata.finalizers.hash(&mut hasher);
    jsk.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}
