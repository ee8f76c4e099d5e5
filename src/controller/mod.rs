//! The reconciler: read what the key's objects look like ([`read`]), decide in a pure step machine
//! ([`machine`]) what to do next given that, this process's memory and the time, and perform each
//! step through a thin layer of effects ([`effects`]) that checks the fence before every write.
//! The decisions about time are the pure `schedule`; the key state is rebuilt on every reconcile
//! (`observe`); the ConfigMaps are planned in `publish`; the status and events in `report`.

mod backoff;
pub mod effects;
#[cfg(test)]
mod fake;
mod known;
pub mod machine;
mod observe;
mod publish;
mod read;
mod reason;
mod report;
#[cfg(test)]
mod schedules;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace, Secret},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Api, Client, ResourceExt,
    api::{PartialObjectMeta, Patch, PatchParams},
    runtime::{
        controller::Action,
        finalizer::{Event as Finalizer, finalizer},
        reflector::Store,
        watcher,
    },
};
use tracing::{debug, info, instrument, warn};

pub use crate::watch::{Cached, Found, Synced, strip_bookkeeping, strip_namespace};
pub use backoff::Target;
pub use observe::{Inputs, Rebuilt, rebuild};
pub use publish::{Publication, Write, published_jwks};
pub use reason::{ConditionReason, EventReason};
pub use report::{Events, Readiness, SERIES_WINDOW};

use crate::{
    crd::{JwtSigningKey, REVOKE_ANNOTATION, ROTATE_ANNOTATION},
    duration::GoDuration,
    leader::Fence,
    metrics::Metrics,
    watch::OVERLAY_TTL,
};
use effects::Kube;
use machine::{Machine, Memory, REQUEUE_MARGIN, Removal};

/// Field manager for every write.
pub const MANAGER: &str = "jwt-key-operator";
/// Finalizer that removes ConfigMap copies in other namespaces.
pub const FINALIZER: &str = "jwtkeys.dev/cleanup";

/// First retry delay after a failed reconcile; it doubles with each failure in a row.
pub const RETRY_BASE: Duration = Duration::from_secs(2);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// Why a reconcile failed. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the Secret failed.
    #[error("reading Secret {0}: {1}")]
    GetSecret(String, #[source] kube::Error),
    /// Reading a ConfigMap failed.
    #[error("reading ConfigMap {0}: {1}")]
    GetConfigMap(String, #[source] kube::Error),
    /// Writing the Secret failed.
    #[error("writing Secret {0}: {1}")]
    ApplySecret(String, #[source] kube::Error),
    /// Writing a ConfigMap failed.
    #[error("writing ConfigMap {0}: {1}")]
    ApplyConfigMap(String, #[source] kube::Error),
    /// Deleting a ConfigMap copy failed.
    #[error("deleting ConfigMap copy {0}: {1}")]
    DeleteConfigMap(String, #[source] kube::Error),
    /// Some ConfigMap writes failed; the others went through.
    #[error("{0}")]
    Publish(String),
    /// Reading the status failed.
    #[error("reading status: {0}")]
    GetStatus(#[source] kube::Error),
    /// Writing the status failed.
    #[error("writing status: {0}")]
    ApplyStatus(#[source] kube::Error),
    /// Generating or encoding a key failed.
    #[error("generating key: {0}")]
    GenerateKey(#[source] crate::keys::Error),
    /// The key generation task died.
    #[error("key generation task failed: {0}")]
    KeyTask(#[source] tokio::task::JoinError),
    /// This replica may no longer write: its Lease was not renewed within the renew deadline.
    #[error("not writing: the leader Lease was not renewed within the renew deadline")]
    Fenced,
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// A write not tried: its object waits after a failed write (the error is that write's).
    #[error("{0} (waiting to retry)")]
    Waiting(String),
}

/// A kube error in one line: the API server's message and code, without the whole Status dump.
pub(crate) fn brief(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

impl Error {
    /// The error in one line, for conditions and events.
    pub fn brief(&self) -> String {
        match self {
            Error::GetSecret(what, e)
            | Error::GetConfigMap(what, e)
            | Error::ApplySecret(what, e)
            | Error::ApplyConfigMap(what, e)
            | Error::DeleteConfigMap(what, e) => {
                let action = match self {
                    Error::GetSecret(..) => "reading Secret",
                    Error::GetConfigMap(..) => "reading ConfigMap",
                    Error::ApplySecret(..) => "writing Secret",
                    Error::ApplyConfigMap(..) => "writing ConfigMap",
                    _ => "deleting ConfigMap copy",
                };
                format!("{action} {what}: {}", brief(e))
            }
            Error::GetStatus(e) => format!("reading status: {}", brief(e)),
            Error::ApplyStatus(e) => format!("writing status: {}", brief(e)),
            other => other.to_string(),
        }
    }

    /// The action that failed, as the `error` label of `jwtkeys_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::GetSecret(..) => "GetSecret",
            Error::GetConfigMap(..) => "GetConfigMap",
            Error::ApplySecret(..) => "ApplySecret",
            Error::ApplyConfigMap(..) => "PublishFailed",
            Error::DeleteConfigMap(..) => "DeleteConfigMap",
            Error::Publish(_) => "PublishFailed",
            Error::GetStatus(_) => "GetStatus",
            Error::ApplyStatus(_) => "ApplyStatus",
            Error::GenerateKey(_) => "GenerateKey",
            Error::KeyTask(_) => "KeyTask",
            Error::Fenced => "Fenced",
            Error::Finalizer(_) => "Finalizer",
            Error::Waiting(_) => "Waiting",
        }
    }

    /// Whether the error is a write of one object that failed (or waits to retry after a failure):
    /// that object backs off on its own schedule ([`backoff`]), and each refused write is counted
    /// where it happens, not once more for the reconcile.
    fn is_a_write(&self) -> bool {
        matches!(
            self,
            Error::ApplySecret(..)
                | Error::ApplyConfigMap(..)
                | Error::DeleteConfigMap(..)
                | Error::Publish(_)
                | Error::Waiting(_)
        )
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// Failures in a row of one JwtSigningKey, and until when retries wait.
struct Retry {
    failures: u32,
    until: Instant,
    fingerprint: String,
}

/// Shared state of the reconcilers.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event publisher.
    pub events: report::Events,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Namespaces (for `publish.namespaceSelector`).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Secrets: every one's metadata, the operator's whole.
    pub secrets: Arc<Cached<Secret>>,
    /// ConfigMaps: every one's metadata, the operator's (and their copies) whole.
    pub config_maps: Arc<Cached<ConfigMap>>,
    /// Key generation runs on at most this many threads at once (the cores), so that it never
    /// starves the reconcile loop or the Lease renewal.
    keygen: tokio::sync::Semaphore,
    /// Namespaces the operator may act in; `None` means all.
    pub scope: Option<Vec<String>>,
    /// With leader election: whether this replica may still write.
    pub fence: Option<Arc<Fence>>,
    /// Extra wait before a next key signs, for clock skew between replicas.
    pub activation_margin: GoDuration,
    /// What this process remembers of each key.
    memory: KeyMemories,
}

/// What this process remembers of each key (lost on a restart, which costs at most a later
/// activation, a read of the status or a retry sooner; never a broken invariant).
#[derive(Default)]
struct KeyMemories {
    /// Failures in a row of each key, by namespace and name.
    retries: Mutex<HashMap<(String, String), Retry>>,
    /// The status this process last wrote to each JwtSigningKey, by uid, while a reconcile may
    /// still start from the object that write started from ([`Context::watched`]).
    statuses: Mutex<HashMap<String, report::StatusWritten>>,
    /// By JwtSigningKey uid: its next key and when this process saw it published everywhere.
    next_published: Mutex<HashMap<String, (String, Timestamp)>>,
    /// The keys the watch has shown ([`Context::key_event`]).
    known: Mutex<known::KnownKeys>,
    /// Objects whose last write failed, each backing off on its own.
    writes: Mutex<backoff::Backoffs>,
}

impl Context {
    /// A context; `fence` is `None` without leader election.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        events: report::Events,
        metrics: Arc<Metrics>,
        namespaces: Store<PartialObjectMeta<Namespace>>,
        secrets: Arc<Cached<Secret>>,
        config_maps: Arc<Cached<ConfigMap>>,
        scope: Option<Vec<String>>,
        fence: Option<Arc<Fence>>,
        activation_margin: GoDuration,
    ) -> Context {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Context {
            client,
            events,
            metrics,
            namespaces,
            secrets,
            config_maps,
            keygen: tokio::sync::Semaphore::new(cores),
            scope,
            fence,
            activation_margin,
            memory: KeyMemories::default(),
        }
    }

    /// Called for every event of the JwtSigningKey watch: forgets the keys it shows gone, by a
    /// delete or by a fresh listing without them ([`Context::deleted`]), and ages the records of
    /// status writes ([`Context::watched`]).
    /// `scope` is the watch's namespace, `None` for the cluster.
    pub fn key_event(&self, scope: Option<&str>, event: &watcher::Event<JwtSigningKey>) {
        if let watcher::Event::Apply(jsk) | watcher::Event::InitApply(jsk) = event {
            self.watched(jsk);
        }
        let gone = self
            .memory
            .known
            .lock()
            .expect("known keys lock")
            .observe(scope, event);
        for key in gone {
            self.deleted(&key);
        }
    }

    /// A record of a status write goes once the cache has held a newer object than the one that
    /// write started from for [`OVERLAY_TTL`] (a reconcile that took the older object may
    /// still be running).
    fn watched(&self, jsk: &JwtSigningKey) {
        let Some(uid) = jsk.uid() else { return };
        let mut statuses = self.memory.statuses.lock().expect("status lock");
        if let Some(written) = statuses.get_mut(&uid)
            && written.base != jsk.resource_version()
            && written.superseded.is_none()
        {
            written.superseded = Some(Instant::now());
        }
        statuses.retain(|_, w| w.superseded.is_none_or(|at| at.elapsed() < OVERLAY_TTL));
    }

    /// Forgets what this process kept about a key that went away: its gauges, its backoff, its
    /// last status write, when its next key was published.
    fn deleted(&self, key: &known::Gone) {
        self.metrics.forget(&key.namespace, &key.name);
        self.memory
            .retries
            .lock()
            .expect("retry lock")
            .remove(&(key.namespace.clone(), key.name.clone()));
        self.memory
            .statuses
            .lock()
            .expect("status lock")
            .remove(&key.uid);
        self.memory
            .next_published
            .lock()
            .expect("next key lock")
            .remove(&key.uid);
        self.memory
            .writes
            .lock()
            .expect("write backoff lock")
            .forget(&key.uid);
    }

    /// While `target` of `jsk` waits after a failed write: that write's error.
    fn waiting(&self, jsk: &JwtSigningKey, target: &backoff::Target) -> Option<String> {
        let uid = jsk.uid().unwrap_or_default();
        let writes = self.memory.writes.lock().expect("write backoff lock");
        writes
            .waiting(&uid, target, Instant::now())
            .map(str::to_string)
    }

    /// Records a refused write of `target`: it backs off on its own, and is counted.
    fn write_failed(&self, jsk: &JwtSigningKey, target: &backoff::Target, error: &Error) {
        let uid = jsk.uid().unwrap_or_default();
        let delay = self
            .memory
            .writes
            .lock()
            .expect("write backoff lock")
            .failed(&uid, target, error.brief(), Instant::now());
        self.metrics.reconcile_error(jsk, error.metric_label());
        warn!(kind = target.kind, namespace = target.namespace, name = target.name, error = %error.brief(), retry_in = ?delay, "write failed");
    }

    /// A write of `target` went through or was not needed.
    fn write_succeeded(&self, jsk: &JwtSigningKey, target: &backoff::Target) {
        let uid = jsk.uid().unwrap_or_default();
        self.memory
            .writes
            .lock()
            .expect("write backoff lock")
            .succeeded(&uid, target);
    }

    /// How long until the first object of `jsk` that waits after a failed write may be tried again.
    fn next_write_retry(&self, jsk: &JwtSigningKey) -> Option<Duration> {
        let uid = jsk.uid().unwrap_or_default();
        self.memory
            .writes
            .lock()
            .expect("write backoff lock")
            .next_retry(&uid, Instant::now())
    }

    /// Remembers the next key of `jsk` and when it was published everywhere (or forgets it).
    fn remember_next(&self, jsk: &JwtSigningKey, next: Option<(String, Timestamp)>) {
        let Some(uid) = jsk.uid() else { return };
        let mut remembered = self.memory.next_published.lock().expect("next key lock");
        match next {
            Some(next) => remembered.insert(uid, next),
            None => remembered.remove(&uid),
        };
    }

    fn in_scope(&self, namespace: &str) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|s| s.iter().any(|n| n == namespace))
    }

    /// Fails when this replica may no longer write (checked before every write).
    pub fn check_fence(&self) -> Result<()> {
        match &self.fence {
            Some(fence) if !fence.may_write() => Err(Error::Fenced),
            _ => Ok(()),
        }
    }

    fn retry_key(jsk: &JwtSigningKey) -> (String, String) {
        (jsk.namespace().unwrap_or_default(), jsk.name_any())
    }

    /// What a user may change to make a retry worth trying at once.
    fn fingerprint(jsk: &JwtSigningKey) -> String {
        let annotations = jsk.annotations();
        format!(
            "{:?}/{:?}/{:?}/{}",
            jsk.metadata.generation,
            annotations.get(ROTATE_ANNOTATION),
            annotations.get(REVOKE_ANNOTATION),
            jsk.metadata.deletion_timestamp.is_some()
        )
    }

    /// While a failed key backs off and nothing the user controls changed, how long to wait.
    fn backing_off(&self, jsk: &JwtSigningKey) -> Option<Duration> {
        let retries = self.memory.retries.lock().expect("retry lock");
        let retry = retries.get(&Self::retry_key(jsk))?;
        let left = retry.until.checked_duration_since(Instant::now())?;
        (retry.fingerprint == Self::fingerprint(jsk)).then_some(left)
    }

    fn succeeded(&self, jsk: &JwtSigningKey) {
        self.memory
            .retries
            .lock()
            .expect("retry lock")
            .remove(&Self::retry_key(jsk));
    }

    /// Records a failure and returns the delay before the next attempt.
    fn failed(&self, jsk: &JwtSigningKey) -> Duration {
        let mut retries = self.memory.retries.lock().expect("retry lock");
        let retry = retries.entry(Self::retry_key(jsk)).or_insert(Retry {
            failures: 0,
            until: Instant::now(),
            fingerprint: String::new(),
        });
        retry.failures = retry.failures.saturating_add(1);
        let delay = RETRY_BASE
            .saturating_mul(1 << (retry.failures - 1).min(16))
            .min(RETRY_MAX);
        retry.until = Instant::now() + delay;
        retry.fingerprint = Self::fingerprint(jsk);
        delay
    }
}

/// Entry point for the controller runtime.
#[instrument(skip(jsk, ctx), fields(namespace = jsk.namespace().unwrap_or_default(), name = jsk.name_any()))]
pub async fn reconcile(jsk: Arc<JwtSigningKey>, ctx: Arc<Context>) -> Result<Action> {
    debug!("reconciling");
    // A standby keeps its watches and caches warm and reconciles nothing until it takes the Lease.
    // The object it was woken for may have changed while it waited: the controller hands it the
    // stored one on the requeue.
    if let Some(fence) = &ctx.fence
        && !fence.has_led()
    {
        debug!("waiting for the Lease");
        fence.wait_led().await;
        return Ok(Action::requeue(Duration::ZERO));
    }
    ctx.check_fence()?;
    // Reads come from the watch caches: none is read before every cache has listed its objects.
    ctx.secrets.wait_until_ready().await;
    ctx.config_maps.wait_until_ready().await;
    debug!("caches ready");
    if jsk.metadata.deletion_timestamp.is_none()
        && let Some(wait) = ctx.backing_off(&jsk)
    {
        debug!(?wait, "backing off after a failure");
        return Ok(Action::requeue(wait));
    }
    let namespace = jsk.namespace().unwrap_or_default();
    let api: Api<JwtSigningKey> = Api::namespaced(ctx.client.clone(), &namespace);
    let deleting = jsk.metadata.deletion_timestamp.is_some();
    let copies = read::copies(&jsk, &ctx);
    let mut finalized = jsk.finalizers().iter().any(|f| f == FINALIZER);
    // Under Retain nothing waits for the operator when the key goes (a `helm uninstall` that takes
    // the CRD along, with the operator gone): the finalizer of a Delete policy goes, in one write
    // guarded by the resourceVersion.
    if finalized && !deleting && jsk.spec.deletion_policy == crate::crd::DeletionPolicy::Retain {
        ctx.check_fence()?;
        let others: Vec<&String> = jsk
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .collect();
        let patch = serde_json::json!({"metadata": {
            "finalizers": others,
            "resourceVersion": jsk.resource_version(),
        }});
        api.patch(
            &jsk.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(|e| Error::Finalizer(brief(&e)))?;
        info!("finalizer removed (deletionPolicy Retain)");
        finalized = false;
    }
    let result = if finalized || (!deleting && publishes_copies(&jsk, &copies)) {
        finalizer(&api, FINALIZER, jsk.clone(), |event| async {
            match event {
                Finalizer::Apply(jsk) => apply(&jsk, &ctx, copies).await,
                Finalizer::Cleanup(jsk) => cleanup(&jsk, &ctx, copies).await,
            }
        })
        .await
        .map_err(|e| match e {
            kube::runtime::finalizer::Error::ApplyFailed(e)
            | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
            other => Error::Finalizer(other.to_string()),
        })
    } else if deleting {
        cleanup(&jsk, &ctx, copies).await
    } else {
        apply(&jsk, &ctx, copies).await
    };
    // A reconcile that started before this replica froze and ends after its fence closed does not
    // count as done: the replica that holds the Lease now owns the key.
    let result = result.and_then(|action| ctx.check_fence().map(|()| action));
    // A reconcile that started from a key its watch has since shown gone (a delete, or a fresh
    // listing without it that came while this ran) leaves nothing of it behind: its gauges went
    // when the watch showed it gone, and this reconcile may have set them again.
    if let Some(uid) = jsk.uid()
        && !ctx
            .memory
            .known
            .lock()
            .expect("known keys lock")
            .knows(&uid)
    {
        ctx.deleted(&known::Gone::of(&jsk));
    }
    if let Ok(action) = &result {
        ctx.succeeded(&jsk);
        info!(?action, "reconciled");
    }
    result
}

/// Error policy: log, count, retry with an exponential backoff (seconds up to minutes). A failed
/// write backs off per object: the key is tried again when its first waiting object may be, and
/// reconciles as usual meanwhile (a repair elsewhere is not held back).
pub fn error_policy(jsk: Arc<JwtSigningKey>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = if error.is_a_write() {
        ctx.next_write_retry(&jsk)
            .unwrap_or(RETRY_BASE)
            .max(Duration::from_millis(100))
    } else {
        ctx.metrics.reconcile_error(&jsk, error.metric_label());
        ctx.failed(&jsk)
    };
    warn!(namespace = jsk.namespace(), name = jsk.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Brings the key's objects to its schedule. `copies` are the copies it owns in other namespaces
/// ([`read::copies`]).
async fn apply(jsk: &JwtSigningKey, ctx: &Context, copies: Vec<ConfigMap>) -> Result<Action> {
    let observed = read::observe(jsk, ctx, copies).await?;
    let uid = jsk.uid().unwrap_or_default();
    let memory = Memory {
        next_published: ctx
            .memory
            .next_published
            .lock()
            .expect("next key lock")
            .get(&uid)
            .cloned(),
        secret_waiting: ctx.waiting(
            jsk,
            &Target::secret(&jsk.namespace().unwrap_or_default(), &jsk.secret_name()),
        ),
        activation_margin: ctx.activation_margin,
    };
    let machine = Machine::new(jsk, observed, memory, Timestamp::now());
    let next_change = effects::execute(machine, &Kube { jsk, ctx }).await?;
    Ok(match next_change {
        Some(at) => Action::requeue(
            Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default()
                + REQUEUE_MARGIN,
        ),
        None => Action::await_change(),
    })
}

/// Whether a key has copies in other namespaces to remove when it goes: under `deletionPolicy:
/// Delete`, it selects namespaces, or `copies` of it exist. Only such a key carries the finalizer;
/// everything else it owns lives in its namespace and goes with it through ownerReferences, so
/// deleting it never waits for the operator. Under Retain, the copies stay as everything else does.
fn publishes_copies(jsk: &JwtSigningKey, copies: &[ConfigMap]) -> bool {
    if jsk.spec.deletion_policy == crate::crd::DeletionPolicy::Retain {
        return false;
    }
    let selects = jsk
        .spec
        .publish
        .as_ref()
        .is_some_and(|p| p.namespace_selector.is_some());
    selects || !copies.is_empty()
}

/// Under `deletionPolicy: Delete`, removes the ConfigMap `copies` in other namespaces
/// ([`read::copies`]); objects in the JwtSigningKey's own namespace go with it through their
/// ownerReferences. Under Retain, everything stays, copies included.
async fn cleanup(jsk: &JwtSigningKey, ctx: &Context, copies: Vec<ConfigMap>) -> Result<Action> {
    let effects = Kube { jsk, ctx };
    if jsk.spec.deletion_policy == crate::crd::DeletionPolicy::Delete {
        for copy in copies {
            effects::delete(&effects, &Removal::ConfigMap(copy)).await?;
        }
    }
    ctx.deleted(&known::Gone::of(jsk));
    Ok(Action::await_change())
}

/// Whether labels match a LabelSelector (matchLabels and matchExpressions).
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|expr| {
        let values = expr.values.clone().unwrap_or_default();
        match expr.operator.as_str() {
            "In" => labels.get(&expr.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&expr.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&expr.key),
            "DoesNotExist" => !labels.contains_key(&expr.key),
            _ => false,
        }
    });
    by_labels && by_expressions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(value: serde_json::Value) -> LabelSelector {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn namespace_selectors_follow_kubernetes_label_selector_rules() {
        let labels: BTreeMap<String, String> = [("jwks", "auth"), ("tier", "api")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cases = [
            (serde_json::json!({}), true),
            (serde_json::json!({"matchLabels": {"jwks": "auth"}}), true),
            (serde_json::json!({"matchLabels": {"jwks": "other"}}), false),
            (
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["api", "web"]}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["api"]}]}),
                false,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "jwks", "operator": "Exists"}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "jwks", "operator": "DoesNotExist"}]}),
                false,
            ),
            (
                serde_json::json!({"matchLabels": {"jwks": "auth"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}),
                false,
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(
                selector_matches(&selector(spec.clone()), Some(&labels)),
                expected,
                "{spec}"
            );
        }
        assert!(!selector_matches(
            &selector(serde_json::json!({"matchLabels": {"jwks": "auth"}})),
            None
        ));
    }
}
