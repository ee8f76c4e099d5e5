//! The thin layer between the step machine and the world: [`execute`] performs each step of a
//! [`Machine`] through [`Effects`], checks the fence once before every write, lets an object that
//! refused its last write wait for its own backoff, skips writes that would change nothing, and
//! stamps the instant each call returned. [`Kube`] is the implementation on the API server; the
//! property tests use an in-memory cluster.

use std::future::Future;

use futures::{StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
};
use serde_json::json;
use tracing::{info, warn};

use super::{
    Context, Error, MANAGER, Result,
    backoff::Target,
    machine::{Machine, Outcome, Removal, Report, Step},
    publish::Write,
    report::StatusWritten,
};
use crate::{
    crd::{Algorithm, JwtSigningKey, JwtSigningKeyStatus},
    keys::KeyPair,
    resources,
};

/// ConfigMap writes in flight at once.
const WRITE_CONCURRENCY: usize = 8;

/// What the reconciler does to the world. Every write here is one API call; [`execute`] decides
/// whether to make it.
pub trait Effects: Sync {
    /// The clock.
    fn now(&self) -> Timestamp;
    /// Fails when this replica may no longer write.
    fn check_fence(&self) -> Result<()>;
    /// While `target` waits after a refused write: that write's error.
    fn waiting(&self, target: &Target) -> Option<String>;
    /// A write of `target` was refused: it backs off on its own.
    fn write_failed(&self, target: &Target, error: &Error);
    /// A write of `target` went through or was not needed.
    fn write_succeeded(&self, target: &Target);
    /// Remembers the key's next key and when it was published everywhere (or forgets it).
    fn remember_next(&self, next: Option<(String, Timestamp)>);
    /// Generates a key pair.
    fn generate(
        &self,
        algorithm: Algorithm,
        bits: usize,
    ) -> impl Future<Output = Result<KeyPair>> + Send;
    /// Creates the Secret (`current` is `None`) or patches it with `current`'s resourceVersion as
    /// precondition.
    fn write_secret(
        &self,
        current: Option<&Secret>,
        desired: &Secret,
    ) -> impl Future<Output = Result<Secret, kube::Error>> + Send;
    /// The same for a ConfigMap.
    fn write_config_map(
        &self,
        current: Option<&ConfigMap>,
        desired: &ConfigMap,
    ) -> impl Future<Output = Result<ConfigMap, kube::Error>> + Send;
    /// Deletes an object with its uid as precondition.
    fn delete(&self, removal: &Removal) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Sends the events, sets the gauges, writes the status.
    fn report(&self, report: Report) -> impl Future<Output = Result<()>> + Send;
}

/// Runs `machine` to its end through `effects`: what the reconcile returns (when to look again).
pub async fn execute<E: Effects>(mut machine: Machine, effects: &E) -> Result<Option<Timestamp>> {
    loop {
        let outcome = match machine.next(effects.now()) {
            Step::Finish(result) => return result,
            Step::Remember(next) => {
                effects.remember_next(next);
                Outcome::Done
            }
            Step::Generate { algorithm, bits } => Outcome::Generated(
                effects
                    .generate(algorithm, bits)
                    .await
                    .map(|pair| (pair, effects.now())),
            ),
            Step::WriteSecret { current, desired } => {
                Outcome::SecretWritten(write_secret(effects, current.as_deref(), &desired).await)
            }
            Step::Publish(writes) => Outcome::Published(
                stream::iter(writes)
                    .map(|write| async move {
                        let result = write_config_map(effects, &write).await;
                        (write.namespace, result, effects.now())
                    })
                    .buffer_unordered(WRITE_CONCURRENCY)
                    .collect()
                    .await,
            ),
            Step::Delete(removals) => {
                let mut results = Vec::with_capacity(removals.len());
                for removal in removals {
                    results.push((removal.namespace(), delete(effects, &removal).await));
                }
                Outcome::Deleted(results)
            }
            Step::Report(report) => Outcome::Reported(effects.report(*report).await),
        };
        machine.record(outcome);
    }
}

/// The Secret written, unless it already holds `desired` (`None`), and when the write returned.
async fn write_secret<E: Effects>(
    effects: &E,
    current: Option<&Secret>,
    desired: &Secret,
) -> Result<Option<(Secret, Timestamp)>> {
    if let Some(current) = current
        && resources::secret_data_matches(current, desired)
        && resources::is_in_sync(&current.metadata, &desired.metadata)
    {
        return Ok(None);
    }
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let target = Target::secret(&namespace, &name);
    if let Some(error) = effects.waiting(&target) {
        return Err(Error::Waiting(error));
    }
    effects.check_fence()?;
    match effects.write_secret(current, desired).await {
        Ok(written) => {
            effects.write_succeeded(&target);
            match current {
                None => info!(name, "created Secret"),
                Some(_) => info!(name, "wrote Secret"),
            }
            Ok(Some((written, effects.now())))
        }
        Err(e) => {
            let error = Error::ApplySecret(name, e);
            effects.write_failed(&target, &error);
            Err(error)
        }
    }
}

/// One ConfigMap write; a write that changes nothing is not made, and one whose object waits
/// after a refused write fails with that write's error.
async fn write_config_map<E: Effects>(effects: &E, write: &Write) -> Result<ConfigMap, String> {
    let desired = &write.desired;
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let target = Target::config_map(&namespace, &name);
    if let Some(current) = &write.current
        && current.data == desired.data
        && resources::is_in_sync(&current.metadata, &desired.metadata)
    {
        effects.write_succeeded(&target);
        return Ok(current.clone());
    }
    if let Some(error) = effects.waiting(&target) {
        return Err(error);
    }
    effects.check_fence().map_err(|e| e.brief())?;
    match effects
        .write_config_map(write.current.as_ref(), desired)
        .await
    {
        Ok(written) => {
            effects.write_succeeded(&target);
            match write.current {
                None => info!(namespace, name, "created ConfigMap"),
                Some(_) => info!(namespace, name, "wrote ConfigMap"),
            }
            Ok(written)
        }
        Err(e) => {
            let error = Error::ApplyConfigMap(format!("{namespace}/{name}"), e);
            effects.write_failed(&target, &error);
            Err(error.brief())
        }
    }
}

/// Deletes an object this key owns, with its uid as precondition: an object someone created
/// under that name since it was read is not touched. A ConfigMap whose last removal failed waits
/// for its own backoff.
pub async fn delete<E: Effects>(effects: &E, removal: &Removal) -> Result<()> {
    let (target, what) = match removal {
        Removal::ConfigMap(cm) => (
            Target::config_map(&cm.namespace().unwrap_or_default(), &cm.name_any()),
            "ConfigMap",
        ),
        Removal::Secret(s) => (
            Target::secret(&s.namespace().unwrap_or_default(), &s.name_any()),
            "Secret",
        ),
    };
    if let Some(error) = effects.waiting(&target) {
        return Err(Error::Waiting(error));
    }
    effects.check_fence()?;
    match effects.delete(removal).await {
        // Gone, or replaced by another object of that name (a 409 on the uid): not ours to delete.
        Ok(()) => {
            effects.write_succeeded(&target);
            info!(
                namespace = target.namespace,
                name = target.name,
                "removed {what}"
            );
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
            effects.write_succeeded(&target);
            Ok(())
        }
        Err(e) => {
            let error = match removal {
                Removal::ConfigMap(_) => {
                    Error::DeleteConfigMap(format!("{}/{}", target.namespace, target.name), e)
                }
                Removal::Secret(_) => Error::ApplySecret(target.name.clone(), e),
            };
            effects.write_failed(&target, &error);
            Err(error)
        }
    }
}

/// [`Effects`] on the API server, for one JwtSigningKey: writes go through the API and into the
/// caches' overlay, memory into the [`Context`].
pub struct Kube<'a> {
    /// The key reconciled.
    pub jsk: &'a JwtSigningKey,
    /// Dependencies and per-key memory.
    pub ctx: &'a Context,
}

impl Effects for Kube<'_> {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn check_fence(&self) -> Result<()> {
        self.ctx.check_fence()
    }

    fn waiting(&self, target: &Target) -> Option<String> {
        self.ctx.waiting(self.jsk, target)
    }

    fn write_failed(&self, target: &Target, error: &Error) {
        self.ctx.write_failed(self.jsk, target, error)
    }

    fn write_succeeded(&self, target: &Target) {
        self.ctx.write_succeeded(self.jsk, target)
    }

    fn remember_next(&self, next: Option<(String, Timestamp)>) {
        self.ctx.remember_next(self.jsk, next)
    }

    async fn generate(&self, algorithm: Algorithm, bits: usize) -> Result<KeyPair> {
        let _permit = self
            .ctx
            .keygen
            .acquire()
            .await
            .expect("the key generation pool is never closed");
        let started = std::time::Instant::now();
        let pair = tokio::task::spawn_blocking(move || KeyPair::generate(bits, algorithm))
            .await
            .map_err(Error::KeyTask)?
            .map_err(Error::GenerateKey)?;
        self.ctx.metrics.key_generated(&pair, started.elapsed());
        Ok(pair)
    }

    async fn write_secret(
        &self,
        current: Option<&Secret>,
        desired: &Secret,
    ) -> Result<Secret, kube::Error> {
        let api = Api::namespaced(
            self.ctx.client.clone(),
            &desired.namespace().unwrap_or_default(),
        );
        let written = create_or_update(&api, current, desired).await?;
        self.ctx.metrics.api_write("secret");
        self.ctx.secrets.wrote(&written);
        Ok(written)
    }

    async fn write_config_map(
        &self,
        current: Option<&ConfigMap>,
        desired: &ConfigMap,
    ) -> Result<ConfigMap, kube::Error> {
        let api = Api::namespaced(
            self.ctx.client.clone(),
            &desired.namespace().unwrap_or_default(),
        );
        let written = create_or_update(&api, current, desired).await?;
        self.ctx.metrics.api_write("configmap");
        self.ctx.config_maps.wrote(&written);
        Ok(written)
    }

    async fn delete(&self, removal: &Removal) -> Result<(), kube::Error> {
        let params = |uid: Option<String>| DeleteParams {
            preconditions: uid.map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let namespace = removal.namespace();
        let (result, kind, name) = match removal {
            Removal::ConfigMap(cm) => {
                let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &namespace);
                (
                    api.delete(&cm.name_any(), &params(cm.uid()))
                        .await
                        .map(drop),
                    "configmap",
                    cm.name_any(),
                )
            }
            Removal::Secret(s) => {
                let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &namespace);
                (
                    api.delete(&s.name_any(), &params(s.uid())).await.map(drop),
                    "secret",
                    s.name_any(),
                )
            }
        };
        let gone = match &result {
            Ok(()) => {
                self.ctx.metrics.api_write(kind);
                true
            }
            Err(kube::Error::Api(e)) => e.code == 404 || e.code == 409,
            Err(_) => false,
        };
        if gone {
            match removal {
                Removal::ConfigMap(_) => self.ctx.config_maps.deleted(&namespace, &name),
                Removal::Secret(_) => self.ctx.secrets.deleted(&namespace, &name),
            }
        }
        result
    }

    async fn report(&self, report: Report) -> Result<()> {
        let Report {
            events,
            rotations,
            gauges,
            status,
        } = report;
        for note in &events {
            match note.type_ {
                kube::runtime::events::EventType::Warning => {
                    warn!(reason = note.reason, message = note.message, "key event")
                }
                kube::runtime::events::EventType::Normal => {
                    info!(reason = note.reason, note = note.message, "key event")
                }
            }
            self.ctx.events.publish(self.jsk, note).await;
        }
        for _ in 0..rotations {
            self.ctx.metrics.rotation(self.jsk);
        }
        // The gauges before the status: whoever sees the status sees the gauges of the same keys.
        if let Some((keys, next_rotation)) = &gauges {
            self.ctx
                .metrics
                .observe_keys(self.jsk, keys, *next_rotation);
        }
        match status {
            Some(status) => self.write_status(status).await,
            None => Ok(()),
        }
    }
}

impl Kube<'_> {
    /// Writes the status with server-side apply, and remembers it.
    async fn write_status(&self, status: JwtSigningKeyStatus) -> Result<()> {
        self.ctx.check_fence()?;
        let namespace = self.jsk.namespace().unwrap_or_default();
        let api: Api<JwtSigningKey> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": JwtSigningKey::api_version(&()),
            "kind": JwtSigningKey::kind(&()),
            "status": status,
        });
        let written = api
            .patch_status(
                &self.jsk.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
            .map_err(Error::ApplyStatus)?;
        self.ctx.metrics.api_write("status");
        if let Some(uid) = self.jsk.uid() {
            self.ctx
                .memory
                .statuses
                .lock()
                .expect("status lock")
                .insert(
                    uid,
                    StatusWritten {
                        base: self.jsk.resource_version(),
                        status: written.status.unwrap_or_default(),
                        superseded: None,
                    },
                );
        }
        Ok(())
    }
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
