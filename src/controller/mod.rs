//! The reconciler, as phases that are each safe to cut at any point:
//! 1. observe and rebuild the key state from the Secret, every owned ConfigMap and the status
//!    (`observe`);
//! 2. a new key is saved in the Secret before it is published, then published to every target
//!    (`publish`); a retry reuses the saved key;
//! 3. the Secret switches (`secret`), only once every target has held the next key for P, with
//!    retirement stamped from the moment the write returned;
//! 4. the ConfigMaps drop what the schedule removed, and the status and events report, naming the
//!    namespaces whose writes failed (`report`).
//!
//! The decisions about time are the pure `schedule`; this module observes, asks, applies, reports.

mod backoff;
mod known;
mod observe;
mod publish;
mod report;
mod secret;

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace, Secret},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{PartialObjectMeta, Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
        reflector::Store,
        watcher,
    },
};
use tracing::{debug, info, instrument, warn};

pub use observe::{Inputs, Rebuilt, rebuild};
pub use publish::published_jwks;
pub use report::{Events, SERIES_WINDOW};

use crate::{
    crd::{
        ACCEPT_FROM_ANNOTATION, JwtSigningKey, JwtSigningKeyStatus, REVOKE_ANNOTATION,
        ROTATE_ANNOTATION, accepts,
    },
    duration::GoDuration,
    keys::{Jwk, KeyPair},
    leader::Fence,
    metrics::Metrics,
    resources::{self, PrivateKeys},
    schedule::{self, KeyRecord, KeySet, NewKey, PendingKey, Transition},
    time::plus,
    watch::{Cached, Found, OVERLAY_TTL},
};
use publish::Publisher;
use report::Readiness;
use secret::SecretWriter;

/// Field manager for every write.
pub const MANAGER: &str = "jwt-key-operator";
/// Finalizer that removes ConfigMap copies in other namespaces.
pub const FINALIZER: &str = "jwtkeys.dev/cleanup";

/// First retry delay after a failed reconcile; it doubles with each failure in a row.
pub const RETRY_BASE: Duration = Duration::from_secs(2);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// A write whose return is later than the planned instant by more than this is stamped again in the
/// Secret's state (the retention's clock margin covers the rest).
const STAMP_TOLERANCE: SignedDuration = SignedDuration::from_millis(200);

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
            retries: Mutex::new(HashMap::new()),
            statuses: Mutex::new(HashMap::new()),
            next_published: Mutex::new(HashMap::new()),
            known: Mutex::new(known::KnownKeys::default()),
            writes: Mutex::new(backoff::Backoffs::default()),
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
        let mut statuses = self.statuses.lock().expect("status lock");
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
        self.retries
            .lock()
            .expect("retry lock")
            .remove(&(key.namespace.clone(), key.name.clone()));
        self.statuses.lock().expect("status lock").remove(&key.uid);
        self.next_published
            .lock()
            .expect("next key lock")
            .remove(&key.uid);
        self.writes
            .lock()
            .expect("write backoff lock")
            .forget(&key.uid);
    }

    /// While `target` of `jsk` waits after a failed write: that write's error.
    fn waiting(&self, jsk: &JwtSigningKey, target: &backoff::Target) -> Option<String> {
        let uid = jsk.uid().unwrap_or_default();
        let writes = self.writes.lock().expect("write backoff lock");
        writes
            .waiting(&uid, target, Instant::now())
            .map(str::to_string)
    }

    /// Records a refused write of `target`: it backs off on its own, and is counted.
    fn write_failed(&self, jsk: &JwtSigningKey, target: &backoff::Target, error: &Error) {
        let uid = jsk.uid().unwrap_or_default();
        let delay = self.writes.lock().expect("write backoff lock").failed(
            &uid,
            target,
            error.brief(),
            Instant::now(),
        );
        self.metrics.reconcile_error(jsk, error.metric_label());
        warn!(kind = target.kind, namespace = target.namespace, name = target.name, error = %error.brief(), retry_in = ?delay, "write failed");
    }

    /// A write of `target` went through or was not needed.
    fn write_succeeded(&self, jsk: &JwtSigningKey, target: &backoff::Target) {
        let uid = jsk.uid().unwrap_or_default();
        self.writes
            .lock()
            .expect("write backoff lock")
            .succeeded(&uid, target);
    }

    /// How long until the first object of `jsk` that waits after a failed write may be tried again.
    fn next_write_retry(&self, jsk: &JwtSigningKey) -> Option<Duration> {
        let uid = jsk.uid().unwrap_or_default();
        self.writes
            .lock()
            .expect("write backoff lock")
            .next_retry(&uid, Instant::now())
    }

    /// When this process saw `kid`, the next key of `jsk`, published in every ConfigMap.
    fn next_published_at(&self, jsk: &JwtSigningKey, kid: &str) -> Option<Timestamp> {
        let uid = jsk.uid()?;
        let remembered = self.next_published.lock().expect("next key lock");
        remembered
            .get(&uid)
            .filter(|(next, _)| next == kid)
            .map(|(_, at)| *at)
    }

    /// Remembers the next key of `jsk` and when it was published everywhere (or forgets it).
    fn remember_next(&self, jsk: &JwtSigningKey, next: Option<&KeyRecord>) {
        let Some(uid) = jsk.uid() else { return };
        let mut remembered = self.next_published.lock().expect("next key lock");
        match next {
            Some(next) => remembered.insert(uid, (next.kid().to_string(), next.published_at)),
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
        let retries = self.retries.lock().expect("retry lock");
        let retry = retries.get(&Self::retry_key(jsk))?;
        let left = retry.until.checked_duration_since(Instant::now())?;
        (retry.fingerprint == Self::fingerprint(jsk)).then_some(left)
    }

    fn succeeded(&self, jsk: &JwtSigningKey) {
        self.retries
            .lock()
            .expect("retry lock")
            .remove(&Self::retry_key(jsk));
    }

    /// Records a failure and returns the delay before the next attempt.
    fn failed(&self, jsk: &JwtSigningKey) -> Duration {
        let mut retries = self.retries.lock().expect("retry lock");
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
    let copies = Reconciliation {
        jsk: &jsk,
        ctx: &ctx,
        namespace: namespace.clone(),
    }
    .list_copies();
    let result = if jsk.finalizers().iter().any(|f| f == FINALIZER)
        || (!deleting && publishes_copies(&jsk, &copies))
    {
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
        && !ctx.known.lock().expect("known keys lock").knows(&uid)
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

/// Writes a Secret or ConfigMap the way the operator writes them all: created when `current` is
/// `None` (a 409 means someone else took the name meanwhile), else turned into `desired` by one
/// merge patch with the stored `resourceVersion` as precondition ([`resources::update_patch`]).
pub(crate) async fn create_or_update<K>(
    api: &Api<K>,
    current: Option<&K>,
    desired: &K,
) -> Result<K, kube::Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match current {
        None => {
            let params = PostParams {
                field_manager: Some(MANAGER.into()),
                ..PostParams::default()
            };
            api.create(&params, desired).await
        }
        Some(current) => {
            let params = PatchParams {
                field_manager: Some(MANAGER.into()),
                ..PatchParams::default()
            };
            let patch = Patch::Merge(resources::update_patch(current, desired));
            api.patch(&desired.name_any(), &params, &patch).await
        }
    }
}

pub(crate) struct Reconciliation<'a> {
    jsk: &'a JwtSigningKey,
    ctx: &'a Context,
    namespace: String,
}

/// Public keys in `jwks.json` order: signing keys (newest first), next keys, the pending key,
/// retired keys newest first. Revoked keys are left out (the publisher adds the key the Secret
/// still signs with until it switches, a revoked one only where it is held,
/// [`Publisher::set_signing`]).
fn publication_order(keys: &KeySet) -> Vec<Jwk> {
    let mut signing: Vec<_> = keys
        .keys
        .iter()
        .filter(|k| k.activated_at.is_some() && k.retired_at.is_none())
        .collect();
    signing.sort_by_key(|k| std::cmp::Reverse(k.activated_at));
    let mut next: Vec<_> = keys
        .keys
        .iter()
        .filter(|k| k.activated_at.is_none())
        .collect();
    next.sort_by_key(|k| std::cmp::Reverse(k.published_at));
    let mut order: Vec<Jwk> = signing
        .into_iter()
        .chain(next)
        .map(|k| k.jwk.clone())
        .chain(keys.pending.iter().map(|p| p.jwk.clone()))
        .chain(keys.retired().into_iter().map(|k| k.jwk.clone()))
        .filter(|jwk| !keys.revoked.contains(&jwk.kid))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    order.retain(|jwk| seen.insert(jwk.kid.clone()));
    order
}

/// Moves the instants the plan stamped at `planned` to `returned`, when the Secret write that made
/// them true returned. Only a retirement needs it (a retired key's retention counts from the moment
/// it stopped signing); an activation alone keeps its planned instant, which only shifts the next
/// rotation by the write's latency, and costs no second Secret write. Returns whether anything
/// moved.
fn restamp(
    keys: &mut KeySet,
    planned: Timestamp,
    returned: Timestamp,
    retention: SignedDuration,
) -> bool {
    if !keys.keys.iter().any(|k| k.retired_at == Some(planned)) {
        return false;
    }
    let mut moved = false;
    for key in keys.keys.iter_mut() {
        if key.retired_at == Some(planned) {
            key.retired_at = Some(returned);
            key.remove_after = Some(key.remove_after.map_or(plus(returned, retention), |at| {
                at.max(plus(returned, retention))
            }));
            moved = true;
        }
        if key.activated_at == Some(planned) {
            key.activated_at = Some(returned);
            moved = true;
        }
    }
    moved
}

/// The Secret for `keys`. A next key that the Secret holds as the pending key it was saved as
/// (`saved`) stays written that way until it signs: publishing it costs no Secret write. The
/// instant it was published everywhere is kept in memory ([`Context::next_published_at`]) and in
/// the status, which a process that restarts during P reads it from
/// ([`observe::published_next_since`]); a process that finds it in neither counts from its own
/// first look, so an activation can come later, never earlier.
fn desired_secret(
    jsk: &JwtSigningKey,
    keys: &KeySet,
    private: &BTreeMap<String, KeyPair>,
    saved: Option<&PendingKey>,
) -> Secret {
    let held_as_pending = saved.filter(|saved| {
        keys.pending.is_none() && keys.next().is_some_and(|next| next.kid() == saved.jwk.kid)
    });
    let keys = match held_as_pending {
        Some(saved) => {
            let mut held = keys.clone();
            held.keys.retain(|k| k.kid() != saved.jwk.kid);
            held.pending = Some(saved.clone());
            Cow::Owned(held)
        }
        None => Cow::Borrowed(keys),
    };
    // Each private key is written with the JWK it was published as: its algorithm is the one it
    // was made for, even when the spec names another by now (that one applies to the next key).
    let pair = |jwk: &Jwk| {
        private.get(&jwk.kid).cloned().map(|mut pair| {
            pair.jwk = jwk.clone();
            pair
        })
    };
    let private_keys = PrivateKeys {
        active: keys.active().and_then(|k| pair(&k.jwk)),
        next: keys.next().and_then(|k| pair(&k.jwk)),
        pending: keys.pending.as_ref().and_then(|p| pair(&p.jwk)),
    };
    resources::secret(jsk, &keys, &private_keys)
}

fn text<'s>(secret: Option<&'s Secret>, key: &str) -> Option<&'s str> {
    secret
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(key))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
}

/// Brings the key's objects to its schedule. `copies` are the copies it owns in other namespaces
/// ([`Reconciliation::list_copies`]).
async fn apply(jsk: &JwtSigningKey, ctx: &Context, copies: Vec<ConfigMap>) -> Result<Action> {
    let namespace = jsk.namespace().unwrap_or_default();
    let status = jsk.status.clone().unwrap_or_default();
    let run = Reconciliation {
        jsk,
        ctx,
        namespace: namespace.clone(),
    };

    let mut timing = match jsk.spec.timing() {
        Ok(timing) => timing,
        Err(problem) => {
            run.not_ready("InvalidSpec", &problem.to_string(), &status)
                .await?;
            return Ok(Action::await_change());
        }
    };
    timing.activation_margin = ctx.activation_margin;
    let retention = schedule::retention(&timing);

    // Observe.
    let secret_name = jsk.secret_name();
    let config_map_name = jsk.config_map_name();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret = match ctx
        .secrets
        .find(&ctx.client, &namespace, &secret_name, jsk)
        .await
    {
        Ok(Found::Foreign) => {
            let message = format!(
                "Secret {secret_name} exists and is not managed by this JwtSigningKey; it is left untouched. \
                 Delete or rename it, or set spec.secretName."
            );
            run.not_ready("SecretConflict", &message, &status).await?;
            return Ok(Action::await_change());
        }
        Ok(Found::Owned(secret)) => Some(secret),
        Ok(Found::Missing) => None,
        Err(e) => return Err(Error::GetSecret(secret_name, e)),
    };
    // After a secretName change, the keys move from the Secret under the old name.
    let renamed_secret = match &secret {
        Some(_) => None,
        None => run.renamed_secret(),
    };
    let home = match ctx
        .config_maps
        .find(&ctx.client, &namespace, &config_map_name, jsk)
        .await
    {
        Ok(Found::Foreign) => {
            let message = format!(
                "ConfigMap {config_map_name} exists and is not managed by this JwtSigningKey; it is left \
                 untouched. Delete or rename it, or set spec.configMapName."
            );
            run.not_ready("ConfigMapConflict", &message, &status)
                .await?;
            return Ok(Action::await_change());
        }
        Ok(Found::Owned(cm)) => Some(cm),
        Ok(Found::Missing) => None,
        Err(e) => return Err(Error::GetConfigMap(config_map_name, e)),
    };
    let (targets, unaccepted) = run.target_namespaces();
    let renamed_home = run.renamed_home_config_maps();
    // The status helps rebuild the state when the Secret is gone: the stored one, since the cached
    // object may predate the last status write. A key that never had a status in the cache and
    // has no Secret or ConfigMap anywhere is new, and costs no read: with no key published, a
    // status the cache has not seen yet could only say that a rotate or revoke annotation was
    // handled, and acting on it again publishes one more key, or revokes none.
    let stored_status = match secret.as_ref().or(renamed_secret.as_ref()) {
        Some(_) => None,
        None if jsk.status.is_none()
            && home.is_none()
            && copies.is_empty()
            && renamed_home.is_empty() =>
        {
            Some(run.status_known().unwrap_or_default())
        }
        None => Some(run.stored_status().await?),
    };
    let known_status = stored_status.clone().unwrap_or_else(|| status.clone());
    let mut publisher = Publisher::new(&run, home, copies, &targets).await;

    let now = Timestamp::now();
    let source = secret.as_ref().or(renamed_secret.as_ref());
    let Rebuilt {
        mut keys,
        mut private,
        repairs,
    } = rebuild(
        &timing,
        &Inputs {
            state_json: text(source, resources::STATE_JSON),
            active_pem: text(source, resources::PRIVATE_PEM),
            next_pem: text(source, resources::NEXT_PRIVATE_PEM),
            pending_pem: text(source, resources::PENDING_PRIVATE_PEM),
            published: publisher.published(),
            status: Some(&known_status),
            algorithm: jsk.spec.algorithm,
        },
        now,
    );
    for repair in &repairs {
        warn!(repair, "key state repaired");
    }
    // The pending key as the Secret holds it (a next key stays held that way until it signs).
    let mut saved_pending = keys.pending.clone();
    let mut notes: Vec<(EventType, &'static str, String)> = repairs
        .into_iter()
        .map(|r| (EventType::Warning, "StateRepaired", r))
        .collect();
    take_annotations(jsk, &mut keys, &known_status, now, &mut notes);
    // What the ConfigMaps name and the operator never recorded was put there by whoever may edit
    // them: the next write removes it, and it reaches no other ConfigMap.
    for (ns, kids) in publisher.foreign_kids(|kid| keys.records(kid)) {
        notes.push((
            EventType::Warning,
            "ForeignKeyRemoved",
            format!(
                "ConfigMap {config_map_name} in namespace {ns} held key(s) {} that this JwtSigningKey \
                 never published; they are removed and published nowhere else",
                kids.join(", ")
            ),
        ));
    }
    let mut writer = SecretWriter::new(secrets, secret_name.clone(), secret);
    // Every ConfigMap version holds the key the Secret signs with, until the Secret switches.
    let signing_in_secret = keys.active().map(|k| k.jwk.clone());
    let signing_revoked = signing_in_secret
        .as_ref()
        .is_some_and(|jwk| keys.revoked.contains(&jwk.kid));
    publisher.set_signing(signing_in_secret.clone(), signing_revoked);

    // New keys: saved in the Secret, then published everywhere, then part of the schedule.
    let mut secret_error = None;
    loop {
        let plan = schedule::plan(&timing, &keys, Timestamp::now());
        let Some(role) = plan.generate else { break };
        let reuse = keys
            .pending
            .clone()
            .filter(|p| private.contains_key(&p.jwk.kid));
        // A key generated and published in the same reconcile gets one event, not two.
        let mut created_note = None;
        let pending = match reuse {
            Some(pending) => pending,
            None => {
                // A key is saved before it is published: none is made while the Secret waits to
                // retry a refused write.
                if let Some(error) =
                    ctx.waiting(jsk, &backoff::Target::secret(&namespace, &secret_name))
                {
                    secret_error = Some(Error::Waiting(error));
                    break;
                }
                let pair = run.generate_key().await?;
                let pending = PendingKey {
                    jwk: pair.jwk.clone(),
                    generated_at: Timestamp::now(),
                };
                keys.pending = Some(pending.clone());
                private.insert(pair.kid().to_string(), pair);
                if let Err(e) = writer
                    .write(&run, desired_secret(jsk, &keys, &private, None))
                    .await
                {
                    // Not saved, so never published: the next try makes another.
                    private.remove(&pending.jwk.kid);
                    keys.pending = saved_pending.clone();
                    secret_error = Some(e);
                    break;
                }
                created_note = Some(notes.len());
                notes.push((
                    EventType::Normal,
                    "KeyCreated",
                    format!(
                        "Generated {} key {} ({})",
                        pending.jwk.alg,
                        pending.jwk.kid,
                        private[&pending.jwk.kid].description()
                    ),
                ));
                saved_pending = Some(pending.clone());
                pending
            }
        };
        let everywhere = publisher.publish(&publication_order(&keys)).await;
        // A next key waits until every target holds it. A key that must sign now signs once every
        // writable target holds it; when no key signs yet, once the home ConfigMap holds it.
        if role == NewKey::Next && !everywhere {
            break;
        }
        if role == NewKey::SignsNow
            && signing_in_secret.is_none()
            && !publisher.home_holds(&pending.jwk.kid)
        {
            break;
        }
        let published_at = match (publisher.added_at(&pending.jwk.kid), role) {
            (Some(added), _) => added,
            (None, NewKey::SignsNow) => Timestamp::now(),
            (None, NewKey::Next) => {
                next_published_since(ctx, jsk, &known_status, &pending, &publisher)
            }
        };
        keys.pending = None;
        keys.add_published(pending.jwk.clone(), published_at, role);
        let published = match role {
            NewKey::SignsNow => "is published and signs at once",
            NewKey::Next => "is published in every ConfigMap; it signs after propagationDelay",
        };
        // A next key held as pending is found published on every reconcile until it signs: it
        // gets its event from the reconcile whose writes published it.
        match created_note {
            Some(i) => notes[i].2.push_str(&format!("; it {published}")),
            None if role == NewKey::SignsNow || publisher.added_at(&pending.jwk.kid).is_some() => {
                notes.push((
                    EventType::Normal,
                    "KeyPublished",
                    format!("Key {} {published}", pending.jwk.kid),
                ))
            }
            None => {}
        }
    }

    // Every target holds every key before the Secret changes (repairs included, whether or not
    // the Secret can be written); the next key counts as published from the last write that added
    // it anywhere, and not at all while a target lacks it. This process remembers that instant
    // before anything else can fail.
    publisher.publish(&publication_order(&keys)).await;
    hold_next_until_everywhere(&mut keys, &publisher);
    ctx.remember_next(jsk, keys.next());

    // Switch the Secret.
    let planned = Timestamp::now();
    let mut plan = schedule::plan(&timing, &keys, planned);
    if secret_error.is_none() {
        match writer
            .write(
                &run,
                desired_secret(jsk, &plan.keys, &private, saved_pending.as_ref()),
            )
            .await
        {
            Ok(Some(returned)) => {
                if restamp(&mut plan.keys, planned, returned, retention)
                    && returned.duration_since(planned) > STAMP_TOLERANCE
                    && let Err(e) = writer
                        .write(
                            &run,
                            desired_secret(jsk, &plan.keys, &private, saved_pending.as_ref()),
                        )
                        .await
                {
                    secret_error = Some(e);
                }
            }
            Ok(None) => {}
            Err(e) => secret_error = Some(e),
        }
    }
    if let Some(error) = secret_error {
        // The Secret did not switch: the keys stay as they were before the plan, and the status
        // records them (the instant the next key was published everywhere included).
        let message = format!(
            "Writing Secret {secret_name} failed; the keys it holds are unchanged and ConfigMaps keep \
             every key it may sign with: {}",
            error.brief()
        );
        let ready = Readiness {
            status: "False",
            reason: "SecretWriteFailed",
            message,
        };
        run.report(ReportInput {
            timing: &timing,
            keys: &keys,
            transitions: &[],
            notes,
            ready: &ready,
            publisher: &publisher,
            unaccepted,
            old: &status,
            stored: stored_status,
        })
        .await?;
        return Err(error);
    }
    let mut keys = plan.keys.clone();

    // Drop what the schedule removed, now that the Secret no longer needs it.
    publisher.set_signing(keys.active().map(|k| k.jwk.clone()), false);
    publisher.publish(&publication_order(&keys)).await;
    let mut failures = publisher.failures();
    if let Some(kid) = keys.next().map(|k| k.kid().to_string())
        && let Some(added) = publisher.added_at(&kid)
    {
        if let Some(next) = keys.keys.iter_mut().find(|k| k.kid() == kid)
            && next.published_at < added
        {
            next.published_at = added;
        }
        if let Err(error) = writer
            .write(
                &run,
                desired_secret(jsk, &keys, &private, saved_pending.as_ref()),
            )
            .await
        {
            failures.insert(namespace.clone(), error.brief());
        }
    }
    ctx.remember_next(jsk, keys.next());

    // Objects under names this key no longer uses go once the current names hold the keys; a
    // removal that fails is reported and retried, and skips nothing else.
    if failures.is_empty() {
        for old in renamed_home.iter().chain(publisher.renamed()) {
            if let Err(error) = run.delete_config_map(old).await {
                failures.insert(old.namespace().unwrap_or_default(), error.brief());
            }
        }
    }
    if let Some(old) = &renamed_secret
        && writer.written()
    {
        match run.delete_secret(old).await {
            Ok(()) => notes.push((
                EventType::Normal,
                "SecretRenamed",
                format!(
                    "The keys moved from Secret {} to {secret_name}; the old Secret was deleted",
                    old.name_any()
                ),
            )),
            Err(error) => {
                failures.insert(namespace.clone(), error.brief());
            }
        }
    }

    let ready = readiness(&run, &keys, &failures, publisher.conflicts());
    run.report(ReportInput {
        timing: &timing,
        keys: &keys,
        transitions: &plan.transitions,
        notes,
        ready: &ready,
        publisher: &publisher,
        unaccepted,
        old: &status,
        stored: stored_status,
    })
    .await?;
    if !failures.is_empty() {
        return Err(Error::Publish(ready.message));
    }
    Ok(match plan.next_change {
        Some(at) => Action::requeue(
            Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default()
                + Duration::from_millis(20),
        ),
        None => Action::await_change(),
    })
}

/// When a next key that every target holds was published everywhere, when no write of this
/// reconcile added it: this process's record of an earlier reconcile, or the status (a process
/// that restarted during P), never before the newest ConfigMap holding it was created (a namespace
/// that started accepting, a recreated ConfigMap, which a crash may have kept out of both);
/// otherwise now.
fn next_published_since(
    ctx: &Context,
    jsk: &JwtSigningKey,
    status: &JwtSigningKeyStatus,
    pending: &PendingKey,
    publisher: &Publisher<'_>,
) -> Timestamp {
    let now = Timestamp::now();
    let recorded = ctx
        .next_published_at(jsk, &pending.jwk.kid)
        .or_else(|| observe::published_next_since(status, pending, now));
    match recorded {
        Some(at) => at
            .max(publisher.created_holding(&pending.jwk.kid).unwrap_or(at))
            .min(now),
        None => now,
    }
}

/// What [`Reconciliation::report`] reports.
struct ReportInput<'r> {
    timing: &'r crate::crd::Timing,
    keys: &'r KeySet,
    transitions: &'r [Transition],
    notes: Vec<(EventType, &'static str, String)>,
    ready: &'r Readiness,
    publisher: &'r Publisher<'r>,
    unaccepted: Vec<String>,
    old: &'r JwtSigningKeyStatus,
    stored: Option<JwtSigningKeyStatus>,
}

impl Reconciliation<'_> {
    /// Events for what happened, a Warning when the Ready condition turns false for a new reason,
    /// the status and the key gauges.
    async fn report(&self, input: ReportInput<'_>) -> Result<()> {
        let ReportInput {
            timing,
            keys,
            transitions,
            mut notes,
            ready,
            publisher,
            unaccepted,
            old,
            stored,
        } = input;
        let namespace = &self.namespace;
        if unaccepted != old.unaccepted_namespaces && !unaccepted.is_empty() {
            notes.push((
                EventType::Normal,
                "NamespaceNotAccepted",
                format!(
                    "Namespace(s) {} match publish.namespaceSelector but do not accept copies of this \
                     key (annotation {ACCEPT_FROM_ANNOTATION} naming {namespace}/{} or {namespace}/*); \
                     nothing is written there",
                    unaccepted.join(", "),
                    self.jsk.name_any()
                ),
            ));
        }
        for transition in transitions {
            notes.push(match transition {
                Transition::Activated(kid) => {
                    self.ctx.metrics.rotation(self.jsk);
                    (
                        EventType::Normal,
                        "KeyActivated",
                        format!("Key {kid} now signs"),
                    )
                }
                Transition::Retired(kid) => (
                    EventType::Normal,
                    "KeyRetired",
                    format!("Key {kid} stopped signing; it stays published for verification"),
                ),
                Transition::Removed(kid) => (
                    EventType::Normal,
                    "KeyRemoved",
                    format!("Key {kid} is no longer published"),
                ),
                Transition::Revoked(kid) => (
                    EventType::Normal,
                    "KeyRevoked",
                    format!(
                        "Key {kid} was revoked and removed from the Secret and every ConfigMap"
                    ),
                ),
            });
        }
        for (type_, reason, note) in notes {
            info!(reason, note, "key event");
            self.event(type_, reason, note).await;
        }
        if ready.status == "False" {
            self.warn_if_new(ready, old).await;
        }
        // The gauges before the status: whoever sees the status sees the gauges of the same keys.
        self.ctx
            .metrics
            .observe_keys(self.jsk, keys, schedule::next_rotation(timing, keys));
        let mut new_status =
            self.status(timing, keys, publisher.published_namespaces(), ready, old);
        new_status.unaccepted_namespaces = unaccepted;
        self.write_status(new_status, old, stored).await
    }
}

/// A next key that some target does not hold yet has not been published for any time at all: it
/// counts from now, and from the write that finally adds it.
fn hold_next_until_everywhere(keys: &mut KeySet, publisher: &Publisher<'_>) {
    let Some(kid) = keys.next().map(|k| k.kid().to_string()) else {
        return;
    };
    let since = if publisher.everywhere(&kid) {
        publisher.added_at(&kid)
    } else {
        Some(Timestamp::now())
    };
    if let Some(since) = since
        && let Some(next) = keys.keys.iter_mut().find(|k| k.kid() == kid)
    {
        next.published_at = next.published_at.max(since);
    }
}

fn readiness(
    run: &Reconciliation<'_>,
    keys: &KeySet,
    failures: &BTreeMap<String, String>,
    conflicts: &[String],
) -> Readiness {
    let name = run.jsk.config_map_name();
    if !failures.is_empty() {
        let namespaces: Vec<&str> = failures.keys().map(String::as_str).collect();
        let first = failures.values().next().cloned().unwrap_or_default();
        return Readiness {
            status: "False",
            reason: "PublishFailed",
            message: format!(
                "Publishing ConfigMap {name} failed in namespace(s) {}; retrying with backoff. A next \
                 key signs only once every namespace holds it. First error: {first}",
                namespaces.join(", ")
            ),
        };
    }
    if !conflicts.is_empty() {
        return Readiness {
            status: "False",
            reason: "ConfigMapConflict",
            message: format!(
                "ConfigMap {name} exists and is not managed by this JwtSigningKey in namespace(s) {}; \
                 those are left untouched and get no copy",
                conflicts.join(", ")
            ),
        };
    }
    Readiness {
        status: "True",
        reason: "KeysReady",
        message: format!(
            "{} key(s) published; key {} signs",
            keys.keys.len(),
            keys.active().map(|k| k.kid()).unwrap_or("-")
        ),
    }
}

/// Acts on new values of the rotate and revoke annotations (each value once). A value counts as
/// handled when the state or the status says so.
fn take_annotations(
    jsk: &JwtSigningKey,
    keys: &mut KeySet,
    status: &JwtSigningKeyStatus,
    now: Timestamp,
    notes: &mut Vec<(EventType, &'static str, String)>,
) {
    let annotations = jsk.annotations();
    if let Some(value) = annotations.get(ROTATE_ANNOTATION)
        && keys.handled_rotate.as_ref() != Some(value)
        && status.last_rotate_annotation.as_ref() != Some(value)
    {
        keys.handled_rotate = Some(value.clone());
        keys.rotation_requested_at = Some(now);
        notes.push((
            EventType::Normal,
            "RotationRequested",
            format!("Rotation requested ({ROTATE_ANNOTATION}={value})"),
        ));
    }
    if let Some(value) = annotations.get(REVOKE_ANNOTATION)
        && keys.handled_revoke.as_ref() != Some(value)
        && status.last_revoke_annotation.as_ref() != Some(value)
    {
        keys.handled_revoke = Some(value.clone());
        for kid in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let known = keys.keys.iter().any(|k| k.kid() == kid)
                || keys.pending.as_ref().is_some_and(|p| p.jwk.kid == kid);
            if !known {
                notes.push((
                    EventType::Warning,
                    "RevokeUnknownKey",
                    format!("Key {kid} is not published by this JwtSigningKey; nothing to revoke"),
                ));
                continue;
            }
            keys.revoked.insert(kid.to_string());
            keys.revoked_at.insert(kid.to_string(), now);
            if keys.pending.as_ref().is_some_and(|p| p.jwk.kid == kid) {
                keys.pending = None;
            }
        }
    }
}

impl Reconciliation<'_> {
    async fn generate_key(&self) -> Result<KeyPair> {
        let bits = self.jsk.spec.rsa_key_size() as usize;
        let algorithm = self.jsk.spec.algorithm;
        let _permit = self
            .ctx
            .keygen
            .acquire()
            .await
            .expect("the key generation pool is never closed");
        let started = Instant::now();
        let pair = tokio::task::spawn_blocking(move || KeyPair::generate(bits, algorithm))
            .await
            .map_err(Error::KeyTask)?
            .map_err(Error::GenerateKey)?;
        self.ctx.metrics.key_generated(&pair, started.elapsed());
        Ok(pair)
    }

    /// The namespaces the selector matches, split into those that accept copies of this key and
    /// those that do not (terminating namespaces are neither).
    fn target_namespaces(&self) -> (Vec<String>, Vec<String>) {
        let Some(selector) = self
            .jsk
            .spec
            .publish
            .as_ref()
            .and_then(|p| p.namespace_selector.as_ref())
        else {
            return (Vec::new(), Vec::new());
        };
        let name = self.jsk.name_any();
        let (mut accepted, mut unaccepted): (Vec<_>, Vec<_>) = self
            .ctx
            .namespaces
            .state()
            .iter()
            .filter(|ns| ns.metadata.deletion_timestamp.is_none())
            .filter(|ns| ns.name_any() != self.namespace && self.ctx.in_scope(&ns.name_any()))
            .filter(|ns| selector_matches(selector, ns.metadata.labels.as_ref()))
            .map(|ns| {
                let accept_from = ns
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ACCEPT_FROM_ANNOTATION))
                    .map(String::as_str);
                (ns.name_any(), accepts(accept_from, &self.namespace, &name))
            })
            .partition(|(_, accepted)| *accepted);
        accepted.sort();
        unaccepted.sort();
        (
            accepted.into_iter().map(|(ns, _)| ns).collect(),
            unaccepted.into_iter().map(|(ns, _)| ns).collect(),
        )
    }

    /// ConfigMaps this key owns in its own namespace under a name it no longer uses.
    fn renamed_home_config_maps(&self) -> Vec<ConfigMap> {
        let name = self.jsk.config_map_name();
        self.ctx
            .config_maps
            .owned(
                Some(&self.namespace),
                (resources::SIGNING_KEY_LABEL, &self.jsk.name_any()),
                self.jsk,
            )
            .into_iter()
            .filter(|cm| cm.name_any() != name)
            .collect()
    }

    /// A Secret this key owns under a name it no longer uses (after a `secretName` change).
    fn renamed_secret(&self) -> Option<Secret> {
        let name = self.jsk.secret_name();
        self.ctx
            .secrets
            .owned(
                Some(&self.namespace),
                (resources::SIGNING_KEY_LABEL, &self.jsk.name_any()),
                self.jsk,
            )
            .into_iter()
            .find(|s| s.name_any() != name)
    }

    /// The copies this key owns in other namespaces.
    fn list_copies(&self) -> Vec<ConfigMap> {
        self.ctx
            .config_maps
            .owned(
                None,
                (resources::SOURCE_NAMESPACE_LABEL, &self.namespace),
                self.jsk,
            )
            .into_iter()
            .filter(|cm| {
                cm.namespace().as_deref() != Some(self.namespace.as_str())
                    && cm.labels().get(resources::SIGNING_KEY_LABEL) == Some(&self.jsk.name_any())
            })
            .collect()
    }
}

/// Whether a key has copies in other namespaces to remove when it goes: it selects namespaces, or
/// `copies` of it exist. Only such a key carries the finalizer; everything else it owns lives in
/// its namespace and goes with it through ownerReferences, so deleting it never waits for the
/// operator.
fn publishes_copies(jsk: &JwtSigningKey, copies: &[ConfigMap]) -> bool {
    let selects = jsk
        .spec
        .publish
        .as_ref()
        .is_some_and(|p| p.namespace_selector.is_some());
    selects || !copies.is_empty()
}

/// Removes the ConfigMap `copies` in other namespaces ([`Reconciliation::list_copies`]); objects in
/// the JwtSigningKey's own namespace go with it through their ownerReferences.
async fn cleanup(jsk: &JwtSigningKey, ctx: &Context, copies: Vec<ConfigMap>) -> Result<Action> {
    let run = Reconciliation {
        jsk,
        ctx,
        namespace: jsk.namespace().unwrap_or_default(),
    };
    for copy in copies {
        run.delete_config_map(&copy).await?;
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

    #[test]
    fn a_next_key_saved_as_pending_is_written_as_it_was_saved_until_it_signs() {
        let mut jsk = JwtSigningKey::new(
            "auth",
            serde_json::from_value(serde_json::json!({})).unwrap(),
        );
        jsk.metadata.namespace = Some("auth".into());
        jsk.metadata.uid = Some("uid-1".into());
        let t = |s| Timestamp::from_second(s).unwrap();
        let (signing, next) = (
            KeyPair::generate(2048, crate::crd::Algorithm::RS256).unwrap(),
            KeyPair::generate(2048, crate::crd::Algorithm::RS256).unwrap(),
        );
        let private: BTreeMap<String, KeyPair> = [&signing, &next]
            .map(|p| (p.kid().to_string(), p.clone()))
            .into_iter()
            .collect();
        let saved = PendingKey {
            jwk: next.jwk.clone(),
            generated_at: t(100),
        };
        // As saved before publication: the signing key and the pending key.
        let mut keys = KeySet {
            keys: vec![KeyRecord::published(signing.jwk.clone(), t(0), true)],
            pending: Some(saved.clone()),
            ..KeySet::default()
        };
        let stored = desired_secret(&jsk, &keys, &private, None);
        // Published everywhere: the next key of the schedule.
        keys.pending = None;
        keys.keys
            .push(KeyRecord::published(next.jwk.clone(), t(110), false));
        assert_eq!(
            desired_secret(&jsk, &keys, &private, Some(&saved)).data,
            stored.data,
            "publishing the saved key changes nothing in the Secret"
        );
        let legacy = desired_secret(&jsk, &keys, &private, None);
        assert!(
            legacy
                .data
                .as_ref()
                .unwrap()
                .contains_key(resources::NEXT_PRIVATE_PEM),
            "a next key the Secret does not hold as pending is written as the next key"
        );
        // Once it signs, the Secret holds it as the signing key and no pending key.
        let plan = schedule::plan(
            &serde_json::from_value::<crate::crd::JwtSigningKeySpec>(serde_json::json!({
                "rotationInterval": "100s", "propagationDelay": "10s", "maxTokenLifetime": "10s"
            }))
            .unwrap()
            .timing()
            .unwrap(),
            &keys,
            t(1000),
        );
        assert_eq!(plan.keys.active().map(|k| k.kid()), Some(next.kid()));
        let switched = desired_secret(&jsk, &plan.keys, &private, Some(&saved));
        let data = switched.data.unwrap();
        assert_eq!(data[resources::KID].0, next.kid().as_bytes());
        assert!(!data.contains_key(resources::PENDING_PRIVATE_PEM));
    }

    #[test]
    fn the_secret_names_the_algorithm_its_signing_key_was_published_with() {
        let mut jsk = JwtSigningKey::new(
            "auth",
            serde_json::from_value(serde_json::json!({"algorithm": "PS256"})).unwrap(),
        );
        jsk.metadata.namespace = Some("auth".into());
        // Generated for RS256 and published so; the spec says PS256 by now, and the private key
        // as read back from the Secret carries the spec's algorithm.
        let generated = KeyPair::generate(2048, crate::crd::Algorithm::RS256).unwrap();
        let read_back =
            KeyPair::from_private_pem(generated.private_pem(), crate::crd::Algorithm::PS256)
                .unwrap();
        assert_eq!(read_back.jwk.alg, "PS256");
        let keys = KeySet {
            keys: vec![KeyRecord::published(
                generated.jwk.clone(),
                Timestamp::UNIX_EPOCH,
                true,
            )],
            ..KeySet::default()
        };
        let private = [(generated.kid().to_string(), read_back)].into();
        let secret = desired_secret(&jsk, &keys, &private, None);
        assert_eq!(
            secret.data.unwrap()[resources::ALGORITHM].0,
            b"RS256",
            "the algorithm of the key that signs, not the spec's"
        );
    }

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
