//! The reconciler: observe the Secret and ConfigMaps, ask the schedule for the desired key set,
//! apply it (ConfigMaps first, then the Secret, then the status) and requeue for the next planned
//! change. It writes nothing while everything is in sync.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace, Secret},
    apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder},
        finalizer::{Event as Finalizer, finalizer},
        reflector::Store,
    },
};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::{
    crd::{
        JwtSigningKey, JwtSigningKeyStatus, KeyState, REVOKE_ANNOTATION, ROTATE_ANNOTATION, Timing,
    },
    keys::KeyPair,
    metrics::Metrics,
    resources::{self, PrivateKeys},
    schedule::{self, KeyRecord, KeySet, NewKey, Transition},
};

/// Field manager for every write.
pub const MANAGER: &str = "jwt-key-operator";
/// Finalizer that removes ConfigMap copies in other namespaces.
pub const FINALIZER: &str = "jwtkeys.dev/cleanup";

/// Why a reconcile failed. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the Secret failed.
    #[error("reading Secret {0}: {1}")]
    GetSecret(String, #[source] kube::Error),
    /// Reading a ConfigMap failed.
    #[error("reading ConfigMap {0}: {1}")]
    GetConfigMap(String, #[source] kube::Error),
    /// Listing ConfigMap copies failed.
    #[error("listing ConfigMap copies: {0}")]
    ListCopies(#[source] kube::Error),
    /// Writing the Secret failed.
    #[error("writing Secret {0}: {1}")]
    ApplySecret(String, #[source] kube::Error),
    /// Writing a ConfigMap failed.
    #[error("writing ConfigMap {0}: {1}")]
    ApplyConfigMap(String, #[source] kube::Error),
    /// Deleting a ConfigMap copy failed.
    #[error("deleting ConfigMap copy {0}: {1}")]
    DeleteConfigMap(String, #[source] kube::Error),
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
    /// A stored public key is corrupt.
    #[error("building ConfigMap: {0}")]
    BuildConfigMap(#[source] crate::keys::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// The action that failed, as the `error` label of `jwtkeys_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::GetSecret(..) => "GetSecret",
            Error::GetConfigMap(..) => "GetConfigMap",
            Error::ListCopies(_) => "ListCopies",
            Error::ApplySecret(..) => "ApplySecret",
            Error::ApplyConfigMap(..) => "ApplyConfigMap",
            Error::DeleteConfigMap(..) => "DeleteConfigMap",
            Error::GetStatus(_) => "GetStatus",
            Error::ApplyStatus(_) => "ApplyStatus",
            Error::GenerateKey(_) => "GenerateKey",
            Error::KeyTask(_) => "KeyTask",
            Error::BuildConfigMap(_) => "BuildConfigMap",
            Error::Finalizer(_) => "Finalizer",
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// Shared state of the reconcilers.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Namespaces (for `publish.namespaceSelector`).
    pub namespaces: Store<Namespace>,
    /// Namespaces the operator may act in; `None` means all.
    pub scope: Option<Vec<String>>,
}

impl Context {
    fn in_scope(&self, namespace: &str) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|s| s.iter().any(|n| n == namespace))
    }
}

/// Entry point for the controller runtime.
#[instrument(skip(jsk, ctx), fields(namespace = jsk.namespace().unwrap_or_default(), name = jsk.name_any()))]
pub async fn reconcile(jsk: Arc<JwtSigningKey>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = jsk.namespace().unwrap_or_default();
    let api: Api<JwtSigningKey> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, jsk, |event| async {
        match event {
            Finalizer::Apply(jsk) => apply(&jsk, &ctx).await,
            Finalizer::Cleanup(jsk) => cleanup(&jsk, &ctx).await,
        }
    })
    .await
    .inspect(|action| info!(?action, "reconciled"))
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// Error policy: log, count, retry with a short delay.
pub fn error_policy(jsk: Arc<JwtSigningKey>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = jsk.namespace(), name = jsk.name_any(), %error, "reconcile failed");
    ctx.metrics.reconcile_error(&jsk, error);
    Action::requeue(std::time::Duration::from_secs(5))
}

/// Outcome of looking at an object the operator wants to write.
enum Observed<T> {
    Missing,
    Owned(T),
    Foreign,
}

async fn observe<K>(
    api: &Api<K>,
    name: &str,
    jsk: &JwtSigningKey,
) -> Result<Observed<K>, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(match api.get_opt(name).await? {
        None => Observed::Missing,
        Some(obj) if resources::is_owned_by(obj.meta(), jsk) => Observed::Owned(obj),
        Some(_) => Observed::Foreign,
    })
}

struct Reconciliation<'a> {
    jsk: &'a JwtSigningKey,
    ctx: &'a Context,
    namespace: String,
}

async fn apply(jsk: &JwtSigningKey, ctx: &Context) -> Result<Action> {
    let now = Utc::now();
    let namespace = jsk.namespace().unwrap_or_default();
    let status = jsk.status.clone().unwrap_or_default();
    let run = Reconciliation {
        jsk,
        ctx,
        namespace: namespace.clone(),
    };

    let timing = match jsk.spec.timing() {
        Ok(timing) => timing,
        Err(problem) => {
            run.not_ready("InvalidSpec", &problem.to_string(), &status)
                .await?;
            return Ok(Action::await_change());
        }
    };

    let secret_name = jsk.secret_name();
    let config_map_name = jsk.config_map_name();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret = match observe(&secrets, &secret_name, jsk).await {
        Ok(Observed::Foreign) => {
            let message = format!(
                "Secret {secret_name} exists and is not managed by this JwtSigningKey; it is left untouched. \
                 Delete or rename it, or set spec.secretName."
            );
            run.not_ready("SecretConflict", &message, &status).await?;
            return Ok(Action::await_change());
        }
        Ok(Observed::Owned(secret)) => Some(secret),
        Ok(Observed::Missing) => None,
        Err(e) => return Err(Error::GetSecret(secret_name, e)),
    };
    let home_config_map = match observe(&config_maps, &config_map_name, jsk).await {
        Ok(Observed::Foreign) => {
            let message = format!(
                "ConfigMap {config_map_name} exists and is not managed by this JwtSigningKey; it is left \
                 untouched. Delete or rename it, or set spec.configMapName."
            );
            run.not_ready("ConfigMapConflict", &message, &status)
                .await?;
            return Ok(Action::await_change());
        }
        Ok(Observed::Owned(cm)) => Some(cm),
        Ok(Observed::Missing) => None,
        Err(e) => return Err(Error::GetConfigMap(config_map_name, e)),
    };

    // Without the Secret, the status is what tells which published keys signed: read it fresh, since
    // the cached object may predate the last status write.
    let recovery_status = match &secret {
        Some(_) => status.clone(),
        None => Api::<JwtSigningKey>::namespaced(ctx.client.clone(), &namespace)
            .get_status(&jsk.name_any())
            .await
            .map_err(Error::GetStatus)?
            .status
            .unwrap_or_default(),
    };
    let (mut keys, mut private) = load_state(
        jsk,
        &timing,
        secret.as_ref(),
        home_config_map.as_ref(),
        &recovery_status,
        now,
    );
    let mut notes = Vec::new();
    take_annotations(jsk, &mut keys, now, &mut notes);

    let targets = run.target_namespaces();
    let mut publisher = Publisher::new(&run, home_config_map, targets).await?;

    // Plan; when the plan needs a key, generate it, publish it, and plan again from that moment.
    let mut now = now;
    let mut transitions = Vec::new();
    let next_change = loop {
        let plan = schedule::plan(&timing, &keys, now);
        keys = plan.keys;
        transitions.extend(plan.transitions);
        let Some(role) = plan.generate else {
            break plan.next_change;
        };
        let pair = run.generate_key().await?;
        let mut published = keys.clone();
        published.add_published(pair.jwk.clone(), now, role);
        publisher.publish(&published).await?;
        now = Utc::now();
        keys.add_published(pair.jwk.clone(), now, role);
        notes.push((
            "KeyCreated",
            format!(
                "Generated {} key {} ({}-bit), {}",
                pair.jwk.alg,
                pair.kid(),
                jsk.spec.key_size,
                match role {
                    NewKey::SignsNow => "signing at once",
                    NewKey::Next => "published ahead of signing",
                }
            ),
        ));
        private.insert(pair.kid().to_string(), pair);
    };
    publisher.publish(&keys).await?;

    let private_keys = PrivateKeys {
        active: keys.active().and_then(|k| private.get(k.kid()).cloned()),
        next: keys.next().and_then(|k| private.get(k.kid()).cloned()),
    };
    let desired_secret = resources::secret(jsk, &keys, &private_keys);
    let secret_in_sync = secret.as_ref().is_some_and(|s| {
        resources::secret_data_matches(s, &desired_secret)
            && resources::is_in_sync(&s.metadata, &desired_secret.metadata)
    });
    if !secret_in_sync {
        secrets
            .patch(
                &secret_name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&desired_secret),
            )
            .await
            .map_err(|e| Error::ApplySecret(secret_name.clone(), e))?;
        ctx.metrics.api_write("secret");
    }

    for transition in &transitions {
        notes.push(match transition {
            Transition::Activated(kid) => {
                ctx.metrics.rotation(jsk);
                ("KeyActivated", format!("Key {kid} now signs"))
            }
            Transition::Retired(kid) => (
                "KeyRetired",
                format!("Key {kid} stopped signing; it stays published for verification"),
            ),
            Transition::Removed(kid) => ("KeyRemoved", format!("Key {kid} is no longer published")),
            Transition::Revoked(kid) => (
                "KeyRevoked",
                format!("Key {kid} was revoked and removed from the Secret and every ConfigMap"),
            ),
        });
    }
    for (reason, note) in notes {
        info!(reason, note, "key event");
        run.event(EventType::Normal, reason, note).await;
    }

    let published_namespaces = publisher.published_namespaces();
    let conflict = publisher.conflicts();
    let new_status = run.status(
        &timing,
        &keys,
        published_namespaces,
        conflict.as_deref(),
        &status,
    );
    run.write_status(new_status, &status).await?;
    ctx.metrics
        .observe_keys(jsk, &keys, schedule::next_rotation(&timing, &keys));

    Ok(match next_change {
        Some(at) => Action::requeue(
            (at - Utc::now()).to_std().unwrap_or_default() + std::time::Duration::from_millis(20),
        ),
        None => Action::await_change(),
    })
}

/// Rebuilds the key set and private keys from what is stored. A lost or corrupt Secret retires the
/// signing key now while keeping every published public key until its scheduled removal.
fn load_state(
    jsk: &JwtSigningKey,
    timing: &Timing,
    secret: Option<&Secret>,
    home_config_map: Option<&ConfigMap>,
    status: &JwtSigningKeyStatus,
    now: DateTime<Utc>,
) -> (KeySet, BTreeMap<String, KeyPair>) {
    let text = |key: &str| {
        secret
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let stored: Option<KeySet> =
        text(resources::STATE_JSON).and_then(|json| serde_json::from_str(&json).ok());
    let mut private = BTreeMap::new();
    let mut keys = match stored {
        Some(keys) => keys,
        None => recover_from_publication(home_config_map, status),
    };
    keys.revoked.extend(status.revoked_key_ids.iter().cloned());

    for entry in [resources::PRIVATE_PEM, resources::NEXT_PRIVATE_PEM] {
        if let Some(pem) = text(entry) {
            let algorithm = jsk.spec.algorithm;
            if let Ok(pair) = KeyPair::from_private_pem(&pem, algorithm)
                && let Some(record) = keys.keys.iter().find(|k| k.kid() == pair.kid())
            {
                // Keep the algorithm the key was published with.
                let mut pair = pair;
                pair.jwk = record.jwk.clone();
                private.insert(pair.kid().to_string(), pair);
            }
        }
    }
    let active_lost = keys
        .active()
        .is_some_and(|k| !private.contains_key(k.kid()));
    let next_lost = keys.next().is_some_and(|k| !private.contains_key(k.kid()));
    if active_lost || next_lost {
        warn!(
            active_lost,
            next_lost, "private keys missing from the Secret; replacing them"
        );
        if active_lost {
            keys.lose_private_keys(timing, now, !next_lost);
        } else {
            keys.keys
                .retain(|k| private.contains_key(k.kid()) || k.activated_at.is_some());
        }
    }
    (keys, private)
}

/// Without the Secret, the published public keys and the status still tell which keys verifiers may
/// need and until when.
fn recover_from_publication(
    home_config_map: Option<&ConfigMap>,
    status: &JwtSigningKeyStatus,
) -> KeySet {
    let mut keys = KeySet::default();
    let Some(jwks) = home_config_map
        .and_then(|cm| cm.data.as_ref())
        .and_then(|d| d.get(resources::JWKS_JSON))
        .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok())
    else {
        return keys;
    };
    let parse = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    for jwk in jwks["keys"].as_array().into_iter().flatten() {
        let Ok(jwk) = serde_json::from_value::<crate::keys::Jwk>(jwk.clone()) else {
            continue;
        };
        let Some(entry) = status.keys.iter().find(|k| k.kid == jwk.kid) else {
            continue;
        };
        let Some(published_at) = parse(&Some(entry.created_at.clone())) else {
            continue;
        };
        let record = match entry.state {
            // A next key never signed: without its private half it is simply dropped.
            KeyState::Next => continue,
            KeyState::Active => KeyRecord {
                jwk,
                published_at,
                activated_at: parse(&entry.activates_at).or(Some(published_at)),
                retired_at: None,
                remove_after: None,
            },
            KeyState::Retired => KeyRecord {
                jwk,
                published_at,
                activated_at: parse(&entry.activates_at),
                retired_at: parse(&entry.retires_at).or(Some(published_at)),
                remove_after: parse(&entry.remove_after),
            },
        };
        keys.keys.push(record);
    }
    keys.handled_rotate = status.last_rotate_annotation.clone();
    keys.handled_revoke = status.last_revoke_annotation.clone();
    keys
}

/// Acts on new values of the rotate and revoke annotations (each value once).
fn take_annotations(
    jsk: &JwtSigningKey,
    keys: &mut KeySet,
    now: DateTime<Utc>,
    notes: &mut Vec<(&'static str, String)>,
) {
    let annotations = jsk.annotations();
    if let Some(value) = annotations.get(ROTATE_ANNOTATION)
        && keys.handled_rotate.as_ref() != Some(value)
    {
        keys.handled_rotate = Some(value.clone());
        keys.rotation_requested_at = Some(now);
        notes.push((
            "RotationRequested",
            format!("Rotation requested ({ROTATE_ANNOTATION}={value})"),
        ));
    }
    if let Some(value) = annotations.get(REVOKE_ANNOTATION)
        && keys.handled_revoke.as_ref() != Some(value)
    {
        keys.handled_revoke = Some(value.clone());
        for kid in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            if !keys.keys.iter().any(|k| k.kid() == kid) {
                notes.push((
                    "RevokeUnknownKey",
                    format!("Key {kid} is not published; it will never be published"),
                ));
            }
            keys.revoked.insert(kid.to_string());
        }
    }
}

/// Writes the ConfigMap in the JwtSigningKey's namespace and its copies in matching namespaces,
/// skipping writes that would change nothing.
struct Publisher<'a> {
    run: &'a Reconciliation<'a>,
    home: Option<ConfigMap>,
    copies: BTreeMap<String, Option<ConfigMap>>,
    foreign: Vec<String>,
}

impl<'a> Publisher<'a> {
    async fn new(
        run: &'a Reconciliation<'a>,
        home: Option<ConfigMap>,
        targets: Vec<String>,
    ) -> Result<Publisher<'a>> {
        let mut copies: BTreeMap<String, Option<ConfigMap>> =
            targets.iter().map(|t| (t.clone(), None)).collect();
        let mut foreign = Vec::new();
        let name = run.jsk.config_map_name();
        // Existing copies anywhere in scope, to update them or remove those no longer targeted.
        for existing in run.list_copies().await? {
            let ns = existing.namespace().unwrap_or_default();
            if existing.name_any() == name {
                copies.insert(ns, Some(existing));
            }
        }
        // A target namespace may hold a ConfigMap of that name that is not ours.
        for (ns, existing) in copies.iter_mut() {
            if existing.is_none() && targets.contains(ns) {
                let api: Api<ConfigMap> = Api::namespaced(run.ctx.client.clone(), ns);
                match observe(&api, &name, run.jsk).await {
                    Ok(Observed::Foreign) => foreign.push(ns.clone()),
                    Ok(Observed::Owned(cm)) => *existing = Some(cm),
                    Ok(Observed::Missing) => {}
                    Err(e) => return Err(Error::GetConfigMap(format!("{ns}/{name}"), e)),
                }
            }
        }
        copies.retain(|ns, existing| existing.is_some() || !foreign.contains(ns));
        // Copies that are no longer targeted are removed.
        let stale: Vec<String> = copies
            .keys()
            .filter(|ns| !targets.contains(ns))
            .cloned()
            .collect();
        for ns in stale {
            run.delete_copy(&ns).await?;
            copies.remove(&ns);
        }
        Ok(Publisher {
            run,
            home,
            copies,
            foreign,
        })
    }

    async fn publish(&mut self, keys: &KeySet) -> Result<()> {
        let data = resources::config_map_data(keys).map_err(Error::BuildConfigMap)?;
        let jsk = self.run.jsk;
        let desired = resources::config_map(jsk, &data, None);
        self.home = Some(self.run.write_config_map(self.home.take(), desired).await?);
        for (ns, existing) in self.copies.iter_mut() {
            let desired = resources::config_map(jsk, &data, Some(ns));
            *existing = Some(self.run.write_config_map(existing.take(), desired).await?);
        }
        Ok(())
    }

    fn published_namespaces(&self) -> Vec<String> {
        self.copies.keys().cloned().collect()
    }

    fn conflicts(&self) -> Option<String> {
        (!self.foreign.is_empty()).then(|| {
            format!(
                "ConfigMap {} exists and is not managed by this JwtSigningKey in namespace(s) {}; those are \
                 left untouched and get no copy",
                self.run.jsk.config_map_name(),
                self.foreign.join(", ")
            )
        })
    }
}

impl Reconciliation<'_> {
    async fn generate_key(&self) -> Result<KeyPair> {
        let bits = self.jsk.spec.key_size as usize;
        let algorithm = self.jsk.spec.algorithm;
        let started = Instant::now();
        let pair = tokio::task::spawn_blocking(move || KeyPair::generate(bits, algorithm))
            .await
            .map_err(Error::KeyTask)?
            .map_err(Error::GenerateKey)?;
        self.ctx.metrics.key_generated(bits, started.elapsed());
        Ok(pair)
    }

    fn target_namespaces(&self) -> Vec<String> {
        let Some(selector) = self
            .jsk
            .spec
            .publish
            .as_ref()
            .and_then(|p| p.namespace_selector.as_ref())
        else {
            return Vec::new();
        };
        let mut targets: Vec<String> = self
            .ctx
            .namespaces
            .state()
            .iter()
            .filter(|ns| ns.metadata.deletion_timestamp.is_none())
            .filter(|ns| ns.name_any() != self.namespace && self.ctx.in_scope(&ns.name_any()))
            .filter(|ns| selector_matches(selector, ns.metadata.labels.as_ref()))
            .map(|ns| ns.name_any())
            .collect();
        targets.sort();
        targets
    }

    async fn list_copies(&self) -> Result<Vec<ConfigMap>> {
        let selector = format!(
            "{}={},{}={}",
            resources::SIGNING_KEY_LABEL,
            self.jsk.name_any(),
            resources::SOURCE_NAMESPACE_LABEL,
            self.namespace
        );
        let params = ListParams::default().labels(&selector);
        let apis: Vec<Api<ConfigMap>> = match &self.ctx.scope {
            None => vec![Api::all(self.ctx.client.clone())],
            Some(scope) => scope
                .iter()
                .filter(|ns| **ns != self.namespace)
                .map(|ns| Api::namespaced(self.ctx.client.clone(), ns))
                .collect(),
        };
        let mut copies = Vec::new();
        for api in apis {
            let list = api.list(&params).await.map_err(Error::ListCopies)?;
            copies.extend(
                list.items
                    .into_iter()
                    .filter(|cm| resources::is_owned_by(&cm.metadata, self.jsk)),
            );
        }
        Ok(copies)
    }

    async fn delete_copy(&self, namespace: &str) -> Result<()> {
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), namespace);
        let name = self.jsk.config_map_name();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                self.ctx.metrics.api_write("configmap");
                info!(namespace, name, "removed ConfigMap copy");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(Error::DeleteConfigMap(format!("{namespace}/{name}"), e)),
        }
    }

    /// Applies a ConfigMap unless the stored one already matches; removes data keys someone added.
    async fn write_config_map(
        &self,
        existing: Option<ConfigMap>,
        desired: ConfigMap,
    ) -> Result<ConfigMap> {
        let namespace = desired.namespace().unwrap_or_default();
        let name = desired.name_any();
        if let Some(existing) = existing
            && existing.data == desired.data
            && resources::is_in_sync(&existing.metadata, &desired.metadata)
        {
            return Ok(existing);
        }
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let err = |e| Error::ApplyConfigMap(format!("{namespace}/{name}"), e);
        let mut written = api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .await
            .map_err(err)?;
        self.ctx.metrics.api_write("configmap");
        let want = desired.data.unwrap_or_default();
        let extra: serde_json::Map<String, serde_json::Value> = written
            .data
            .iter()
            .flatten()
            .filter(|(k, _)| !want.contains_key(*k))
            .map(|(k, _)| (k.clone(), serde_json::Value::Null))
            .collect();
        if !extra.is_empty() {
            written = api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "data": extra })),
                )
                .await
                .map_err(err)?;
            self.ctx.metrics.api_write("configmap");
        }
        Ok(written)
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self
            .ctx
            .recorder
            .publish(&event, &self.jsk.object_ref(&()))
            .await
        {
            warn!(error = %e, reason, "publishing event failed");
        }
    }

    fn status(
        &self,
        timing: &Timing,
        keys: &KeySet,
        published_namespaces: Vec<String>,
        conflict: Option<&str>,
        old: &JwtSigningKeyStatus,
    ) -> JwtSigningKeyStatus {
        let rfc3339 = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let (status, reason, message) = match conflict {
            Some(message) => ("False", "ConfigMapConflict", message.to_string()),
            None => (
                "True",
                "KeysReady",
                format!(
                    "{} key(s) published; key {} signs",
                    keys.keys.len(),
                    keys.active().map(|k| k.kid()).unwrap_or("-")
                ),
            ),
        };
        JwtSigningKeyStatus {
            observed_generation: self.jsk.metadata.generation,
            conditions: vec![self.ready_condition(status, reason, &message, old)],
            active_key_id: keys.active().map(|k| k.kid().to_string()),
            keys: schedule::key_statuses(timing, keys),
            last_rotation_time: keys.active().and_then(|k| k.activated_at).map(rfc3339),
            next_rotation_time: schedule::next_rotation(timing, keys).map(rfc3339),
            published_namespaces,
            last_rotate_annotation: keys.handled_rotate.clone(),
            last_revoke_annotation: keys.handled_revoke.clone(),
            revoked_key_ids: keys.revoked.iter().cloned().collect(),
        }
    }

    fn ready_condition(
        &self,
        status: &str,
        reason: &str,
        message: &str,
        old: &JwtSigningKeyStatus,
    ) -> Condition {
        let previous = old.conditions.iter().find(|c| c.type_ == "Ready");
        let last_transition_time = match previous {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Time(jiff_now()),
        };
        Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: self.jsk.metadata.generation,
            last_transition_time,
        }
    }

    /// Reports `Ready=False`, with a Warning event when the reason is new. Key state is untouched.
    async fn not_ready(
        &self,
        reason: &str,
        message: &str,
        old: &JwtSigningKeyStatus,
    ) -> Result<()> {
        let was = old.conditions.iter().find(|c| c.type_ == "Ready");
        if was.is_none_or(|c| c.reason != reason || c.message != message) {
            warn!(reason, message, "not ready");
            self.event(EventType::Warning, reason, message.to_string())
                .await;
        }
        let mut status = old.clone();
        status.observed_generation = self.jsk.metadata.generation;
        status.conditions = vec![self.ready_condition("False", reason, message, old)];
        self.write_status(status, old).await
    }

    async fn write_status(
        &self,
        new: JwtSigningKeyStatus,
        old: &JwtSigningKeyStatus,
    ) -> Result<()> {
        if new == *old {
            return Ok(());
        }
        let api: Api<JwtSigningKey> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        // The cached object may predate this operator's last status write: compare with the stored
        // status before writing, so that a stale cache costs a read, not a write.
        let stored = api
            .get_status(&self.jsk.name_any())
            .await
            .map_err(Error::GetStatus)?
            .status;
        if stored.as_ref() == Some(&new) {
            return Ok(());
        }
        let patch = json!({
            "apiVersion": JwtSigningKey::api_version(&()),
            "kind": JwtSigningKey::kind(&()),
            "status": new,
        });
        api.patch_status(
            &self.jsk.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map_err(Error::ApplyStatus)?;
        self.ctx.metrics.api_write("status");
        Ok(())
    }
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// Removes the ConfigMap copies in other namespaces; objects in the JwtSigningKey's own namespace go
/// with it through their ownerReferences.
async fn cleanup(jsk: &JwtSigningKey, ctx: &Context) -> Result<Action> {
    let run = Reconciliation {
        jsk,
        ctx,
        namespace: jsk.namespace().unwrap_or_default(),
    };
    for copy in run.list_copies().await? {
        run.delete_copy(&copy.namespace().unwrap_or_default())
            .await?;
    }
    ctx.metrics.forget(jsk);
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
