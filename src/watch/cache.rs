//! What a reconcile reads, served from watch caches instead of GETs and cluster-wide LISTs.
//!
//! For Secrets and ConfigMaps the operator keeps two stores per watched scope, as cert-manager does:
//! - the whole objects that carry the operator's `app.kubernetes.io/managed-by` label (its Secrets,
//!   its ConfigMaps and their copies), which a reconcile reads instead of GET and LIST;
//! - the metadata (names, labels, owners: no data) of every other object, so that a conflicting
//!   object of another owner is seen without reading its data.
//!
//! Each object is in one store only, and an object that gains or loses the label moves from one to
//! the other. Both watches trigger reconciles: they are separate streams, and a reconcile that one
//! of them started must be followed by one that sees what the other delivered.
//!
//! A reconcile may run before the watch has delivered the operator's own last write. Each write's
//! result is therefore kept in an overlay until the watch brings that `resourceVersion` (or for at
//! most [`OVERLAY_TTL`]): reads see the object as written. The overlay is only a hint: every write
//! carries the `resourceVersion` it was based on, so a stale read ends in a conflict and a retry,
//! never in an overwrite.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Debug,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt, stream};
use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{PartialObjectMeta, PartialObjectMetaExt},
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;

use super::{
    Synced, Watch, retried, scope_name,
    strip::{keep_ownership_only, strip_bookkeeping},
    watch_config,
};
use crate::{
    crd::JwtSigningKey,
    metrics::Metrics,
    resources::{self, MANAGED_BY, MANAGED_BY_LABEL},
};

/// How long a written object is preferred to the cache when its watch event does not arrive (a
/// relist may skip it).
pub const OVERLAY_TTL: Duration = Duration::from_secs(10);

/// The last write of one object, until the watch shows it.
enum Written<K> {
    Object {
        resource_version: Option<String>,
        object: Arc<K>,
        at: Instant,
    },
    Deleted {
        at: Instant,
    },
}

impl<K> Written<K> {
    fn fresh(&self) -> bool {
        let at = match self {
            Written::Object { at, .. } | Written::Deleted { at } => at,
        };
        at.elapsed() < OVERLAY_TTL
    }
}

type Key = (String, String);

/// Outcome of looking at an object the operator wants to write.
#[derive(Clone, Debug, Default)]
pub enum Found<T> {
    /// No object of that name.
    #[default]
    Missing,
    /// This key's.
    Owned(T),
    /// Someone else's: left untouched.
    Foreign,
}

/// Looks at `name` through the API server, for an object no cache holds whole.
async fn find_in_api<K>(
    api: &Api<K>,
    name: &str,
    jsk: &JwtSigningKey,
) -> Result<Found<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    Ok(match api.get_opt(name).await? {
        None => Found::Missing,
        Some(obj) if resources::is_owned_by(obj.meta(), jsk) => Found::Owned(obj),
        Some(_) => Found::Foreign,
    })
}

/// The cached objects of one kind (Secret or ConfigMap) in every watched scope.
pub struct Cached<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// Scope (namespace, or "" for all namespaces) -> metadata of the objects without the label.
    meta: BTreeMap<String, Store<PartialObjectMeta<K>>>,
    /// Scope -> whole objects labelled as the operator's.
    managed: BTreeMap<String, Store<K>>,
    overlay: Mutex<HashMap<Key, Written<K>>>,
    synced: Synced,
}

/// The two watch streams of one scope that fill a [`Cached`]; they fill it only while they are
/// polled, as one trigger stream ([`Streams::merged`]).
pub struct Streams<M, F> {
    /// Metadata of every object without the label.
    meta: M,
    /// Whole managed objects.
    managed: F,
}

impl<M, F> Streams<M, F> {
    /// One trigger stream from the two watches of a kind: the metadata of the objects without the
    /// operator's label, and the operator's whole objects (which fill their store, and tell the
    /// cache which of its own writes the watch has shown). Both trigger: an object that loses or
    /// gains the label leaves one watch and joins the other, and a reconcile that one of them
    /// started is followed by one that sees what the other delivered.
    pub fn merged<K>(
        self,
        cache: Arc<Cached<K>>,
    ) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
        PartialObjectMeta<K>: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
        M: Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
        F: Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    {
        let managed = self.managed.map(move |event| {
            event.map(|object| {
                cache.observed(&object);
                object.meta().clone().into_response_partial::<K>()
            })
        });
        stream::select(self.meta, managed)
    }
}

fn scope_key(namespace: Option<&str>) -> String {
    namespace.unwrap_or_default().to_string()
}

fn key_of(meta: &impl ResourceExt) -> Key {
    (meta.namespace().unwrap_or_default(), meta.name_any())
}

impl<K> Cached<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    PartialObjectMeta<K>: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    /// Adds the stores of one scope and returns the streams that fill them. `None` is every
    /// namespace.
    pub fn watch(
        &mut self,
        client: &Client,
        namespace: Option<&str>,
        metrics: &Arc<Metrics>,
    ) -> Streams<
        impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + use<K>,
        impl Stream<Item = Result<K, watcher::Error>> + Send + use<K>,
    > {
        let (meta_store, meta_writer) = reflector::store();
        let (managed_store, managed_writer) = reflector::store();
        let meta_api: Api<PartialObjectMeta<K>> = scoped(client, namespace);
        let managed_api: Api<K> = scoped(client, namespace);
        let (kind, scope) = (K::kind(&()), scope_name(namespace));
        // Tracked after the reflector: a listing counts once its objects are in the store.
        let meta = self.synced.track(reflector::reflector(
            meta_writer,
            watcher::watcher(
                meta_api,
                watch_config().labels(&format!("{MANAGED_BY_LABEL}!={MANAGED_BY}")),
            )
            .modify(|m: &mut PartialObjectMeta<K>| keep_ownership_only(&mut m.metadata)),
        ));
        let watch = |description: String| Watch {
            description,
            resource: K::plural(&()).into_owned(),
            metrics: metrics.clone(),
        };
        let meta = retried(watch(format!("other {kind}s in {scope}")), meta).touched_objects();
        let managed = self.synced.track(reflector::reflector(
            managed_writer,
            watcher::watcher(
                managed_api,
                watch_config().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
            )
            .modify(|o: &mut K| strip_bookkeeping(o.meta_mut())),
        ));
        let managed =
            retried(watch(format!("the operator's {kind}s in {scope}")), managed).touched_objects();
        self.meta.insert(scope_key(namespace), meta_store);
        self.managed.insert(scope_key(namespace), managed_store);
        Streams { meta, managed }
    }

    /// Waits until every store has listed its objects.
    pub async fn wait_until_ready(&self) {
        self.synced
            .wait_for(self.meta.len() + self.managed.len())
            .await;
    }

    fn scope_of(&self, namespace: &str) -> Option<String> {
        if self.meta.contains_key("") {
            Some(String::new())
        } else {
            self.meta.contains_key(namespace).then(|| namespace.into())
        }
    }

    /// The watch delivered `object`: a write of ours that it shows leaves the overlay.
    pub fn observed(&self, object: &K) {
        let key = key_of(object);
        let mut overlay = self.overlay.lock().expect("cache overlay lock");
        if let Some(Written::Object {
            resource_version, ..
        }) = overlay.get(&key)
            && *resource_version == object.resource_version()
        {
            overlay.remove(&key);
        }
        drop_stale(&mut overlay);
    }

    /// Forgets the writes older than [`OVERLAY_TTL`] (which reads no longer prefer), so that an
    /// idle operator does not keep the last writes of a busy period.
    pub fn prune(&self) {
        drop_stale(&mut self.overlay.lock().expect("cache overlay lock"));
    }

    /// Records what a write returned (unless the watch has shown it already).
    pub fn wrote(&self, object: &K) {
        let (namespace, name) = key_of(object);
        // Locked before looking at the store: the watch updates the store before it calls
        // `observed`, which takes this lock, so a write the watch shows is never left behind.
        let mut overlay = self.overlay.lock().expect("cache overlay lock");
        let shown = self
            .scope_of(&namespace)
            .and_then(|scope| self.managed.get(&scope))
            .and_then(|store| store.get(&ObjectRef::new(&name).within(&namespace)))
            .is_some_and(|cached| cached.resource_version() == object.resource_version());
        if shown {
            return;
        }
        overlay.insert(
            key_of(object),
            Written::Object {
                resource_version: object.resource_version(),
                object: Arc::new(object.clone()),
                at: Instant::now(),
            },
        );
    }

    /// Records a delete.
    pub fn deleted(&self, namespace: &str, name: &str) {
        self.overlay.lock().expect("cache overlay lock").insert(
            (namespace.into(), name.into()),
            Written::Deleted { at: Instant::now() },
        );
    }

    /// The object as last written by this process, while the watch has not shown it yet.
    fn written(&self, namespace: &str, name: &str) -> Option<Option<Arc<K>>> {
        let overlay = self.overlay.lock().expect("cache overlay lock");
        match overlay.get(&(namespace.to_string(), name.to_string())) {
            Some(w) if !w.fresh() => None,
            Some(Written::Object { object, .. }) => Some(Some(object.clone())),
            Some(Written::Deleted { .. }) => Some(None),
            None => None,
        }
    }

    /// Looks at the object `namespace/name` that `jsk` wants to write. An owned object that lost
    /// the operator's label is not in the managed store: it is read from the API server.
    pub(crate) async fn find(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
        jsk: &JwtSigningKey,
    ) -> Result<Found<K>, kube::Error> {
        if let Some(written) = self.written(namespace, name) {
            return Ok(match written {
                Some(object) => Found::Owned((*object).clone()),
                None => Found::Missing,
            });
        }
        let Some(scope) = self.scope_of(namespace) else {
            // Outside every watched scope (not expected): ask the API server.
            return find_in_api(&Api::namespaced(client.clone(), namespace), name, jsk).await;
        };
        let reference = ObjectRef::<K>::new(name).within(namespace);
        let managed = self.managed[&scope].get(&reference);
        let meta =
            self.meta[&scope].get(&ObjectRef::<PartialObjectMeta<K>>::new(name).within(namespace));
        Ok(match (managed, meta) {
            (Some(object), _) if resources::is_owned_by(object.meta(), jsk) => {
                Found::Owned((*object).clone())
            }
            (Some(_), _) => Found::Foreign,
            (None, None) => Found::Missing,
            (None, Some(meta)) if resources::is_owned_by(&meta.metadata, jsk) => {
                find_in_api(&Api::namespaced(client.clone(), namespace), name, jsk).await?
            }
            (None, Some(_)) => Found::Foreign,
        })
    }

    /// The managed objects `jsk` owns that carry `label=value`, in `namespace` or (with `None`) in
    /// every watched scope, as last written or watched.
    pub fn owned(
        &self,
        namespace: Option<&str>,
        label: (&str, &str),
        jsk: &JwtSigningKey,
    ) -> Vec<K> {
        let stores: Vec<&Store<K>> = match namespace {
            None => self.managed.values().collect(),
            Some(ns) => self
                .scope_of(ns)
                .and_then(|scope| self.managed.get(&scope))
                .into_iter()
                .collect(),
        };
        let mut found: BTreeMap<Key, K> = BTreeMap::new();
        for store in stores {
            for object in store.state() {
                if namespace.is_some_and(|ns| object.namespace().as_deref() != Some(ns)) {
                    continue;
                }
                let labelled = object.labels().get(label.0).map(String::as_str) == Some(label.1);
                if labelled && resources::is_owned_by(object.meta(), jsk) {
                    found.insert(key_of(&*object), (*object).clone());
                }
            }
        }
        // The overlay is newer than the stores.
        let overlay = self.overlay.lock().expect("cache overlay lock");
        for (key, written) in overlay.iter().filter(|(_, w)| w.fresh()) {
            if namespace.is_some_and(|ns| key.0 != ns) {
                continue;
            }
            match written {
                Written::Deleted { .. } => {
                    found.remove(key);
                }
                Written::Object { object, .. } => {
                    let labelled =
                        object.labels().get(label.0).map(String::as_str) == Some(label.1);
                    if labelled && resources::is_owned_by(object.meta(), jsk) {
                        found.insert(key.clone(), (**object).clone());
                    } else {
                        found.remove(key);
                    }
                }
            }
        }
        found.into_values().collect()
    }
}

impl<K> Default for Cached<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// An empty cache; [`Cached::watch`] adds a scope.
    fn default() -> Self {
        Cached {
            meta: BTreeMap::new(),
            managed: BTreeMap::new(),
            overlay: Mutex::new(HashMap::new()),
            synced: Synced::default(),
        }
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Removes from the overlay the writes that reads no longer prefer.
fn drop_stale<K>(overlay: &mut HashMap<Key, Written<K>>) {
    overlay.retain(|_, w| w.fresh());
}
