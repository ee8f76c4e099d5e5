//! Report: the status (written with server-side apply, only when it changed), the `Ready`
//! condition, and events (published when state changes, never with key material).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde_json::json;
use tracing::warn;

use super::{Error, MANAGER, Reconciliation, Result};
use crate::{
    crd::{JwtSigningKey, JwtSigningKeyStatus, Timing},
    schedule::{self, KeySet},
    time::rfc3339_secs,
};

/// How long kube's [`Recorder`] counts repeats of an event into one series (its cache TTL).
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Publishes events through kube's [`Recorder`], which counts repeats of an event into a series.
/// The Recorder keeps every event it published for [`SERIES_WINDOW`] and forgets old ones only
/// when it publishes the next: after a thousand new keys, their few thousand events would stay in
/// memory until the next event, however late. [`Events::renew`], called every window, starts a
/// fresh Recorder instead; a repeat after that starts a new event rather than a series.
pub struct Events {
    client: Client,
    reporter: Reporter,
    current: Mutex<Recorder>,
}

impl Events {
    /// Events reported as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Events {
        let recorder = Recorder::new(client.clone(), reporter.clone());
        Events {
            client,
            reporter,
            current: Mutex::new(recorder),
        }
    }

    fn recorder(&self) -> Recorder {
        self.current.lock().expect("event recorder lock").clone()
    }

    /// Forgets the events published so far: a repeat starts a new event. Called every
    /// [`SERIES_WINDOW`].
    pub fn renew(&self) {
        *self.current.lock().expect("event recorder lock") =
            Recorder::new(self.client.clone(), self.reporter.clone());
    }
}

/// The `Ready` condition's status, reason and message.
pub struct Readiness {
    /// `True` or `False`.
    pub status: &'static str,
    /// A reason of the contract (`KeysReady`, `PublishFailed`, ...).
    pub reason: &'static str,
    /// What a user reads.
    pub message: String,
}

impl Reconciliation<'_> {
    pub(super) async fn event(&self, type_: EventType, reason: &str, mut note: String) {
        // The API server refuses notes over 1 kB.
        if note.len() > 1000 {
            let mut end = 1000;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
            note.push_str("...");
        }
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self
            .ctx
            .events
            .recorder()
            .publish(&event, &self.jsk.object_ref(&()))
            .await
        {
            warn!(error = %e, reason, "publishing event failed");
        }
    }

    /// The status for this key set.
    pub(super) fn status(
        &self,
        timing: &Timing,
        keys: &KeySet,
        published_namespaces: Vec<String>,
        ready: &Readiness,
        old: &JwtSigningKeyStatus,
    ) -> JwtSigningKeyStatus {
        JwtSigningKeyStatus {
            observed_generation: self.jsk.metadata.generation,
            conditions: vec![self.ready_condition(ready, old)],
            active_key_id: keys.active().map(|k| k.kid().to_string()),
            keys: schedule::key_statuses(timing, keys),
            last_rotation_time: keys.active().and_then(|k| k.activated_at).map(rfc3339_secs),
            next_rotation_time: schedule::next_rotation(timing, keys).map(rfc3339_secs),
            published_namespaces,
            unaccepted_namespaces: old.unaccepted_namespaces.clone(),
            last_rotate_annotation: keys.handled_rotate.clone(),
            last_revoke_annotation: keys.handled_revoke.clone(),
            revoked_key_ids: keys.revoked.iter().cloned().collect(),
        }
    }

    fn ready_condition(&self, ready: &Readiness, old: &JwtSigningKeyStatus) -> Condition {
        let previous = old.conditions.iter().find(|c| c.type_ == "Ready");
        let last_transition_time = match previous {
            Some(c) if c.status == ready.status => c.last_transition_time.clone(),
            _ => Time(jiff::Timestamp::now()),
        };
        Condition {
            type_: "Ready".into(),
            status: ready.status.into(),
            reason: ready.reason.into(),
            message: ready.message.clone(),
            observed_generation: self.jsk.metadata.generation,
            last_transition_time,
        }
    }

    /// A Warning event when the `Ready=False` reason or message is new.
    pub(super) async fn warn_if_new(&self, ready: &Readiness, old: &JwtSigningKeyStatus) {
        let was = old.conditions.iter().find(|c| c.type_ == "Ready");
        if was.is_none_or(|c| c.reason != ready.reason || c.message != ready.message) {
            warn!(reason = ready.reason, message = ready.message, "not ready");
            self.event(EventType::Warning, ready.reason, ready.message.clone())
                .await;
        }
    }

    /// Reports `Ready=False`, with a Warning event when the reason is new. Key state is untouched.
    pub(super) async fn not_ready(
        &self,
        reason: &'static str,
        message: &str,
        old: &JwtSigningKeyStatus,
    ) -> Result<()> {
        let ready = Readiness {
            status: "False",
            reason,
            message: message.to_string(),
        };
        self.warn_if_new(&ready, old).await;
        let mut status = old.clone();
        status.observed_generation = self.jsk.metadata.generation;
        status.conditions = vec![self.ready_condition(&ready, old)];
        self.write_status(status, old, None).await
    }

    /// The stored status, without reading it, when the cached object predates this process's
    /// last status write: the reconcile that wrote it started from this very object, and the watch
    /// has not delivered a newer one yet.
    pub(super) fn status_known(&self) -> Option<JwtSigningKeyStatus> {
        let uid = self.jsk.uid()?;
        let statuses = self.ctx.statuses.lock().expect("status lock");
        let written = statuses.get(&uid)?;
        (written.base == self.jsk.resource_version()).then(|| written.status.clone())
    }

    /// The stored status: known from this process's last write ([`Self::status_known`]), or
    /// read.
    pub(super) async fn stored_status(&self) -> Result<JwtSigningKeyStatus> {
        if let Some(status) = self.status_known() {
            return Ok(status);
        }
        Ok(
            Api::<JwtSigningKey>::namespaced(self.ctx.client.clone(), &self.namespace)
                .get_status(&self.jsk.name_any())
                .await
                .map_err(Error::GetStatus)?
                .status
                .unwrap_or_default(),
        )
    }

    /// Writes the status unless it is already stored. `stored` is the stored status when this
    /// reconcile read it; otherwise the cached one, or this process's last write when the cached
    /// object predates it (so that a cache that has not caught up with that write costs no second
    /// write, and no read).
    pub(super) async fn write_status(
        &self,
        mut new: JwtSigningKeyStatus,
        old: &JwtSigningKeyStatus,
        stored: Option<JwtSigningKeyStatus>,
    ) -> Result<()> {
        let stored = stored
            .or_else(|| self.status_known())
            .unwrap_or_else(|| old.clone());
        keep_transition_times(&mut new, &stored);
        if stored == new {
            return Ok(());
        }
        self.ctx.check_fence()?;
        let api: Api<JwtSigningKey> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let patch = json!({
            "apiVersion": JwtSigningKey::api_version(&()),
            "kind": JwtSigningKey::kind(&()),
            "status": new,
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
            self.ctx.statuses.lock().expect("status lock").insert(
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

/// A status this process wrote, kept while a reconcile may still start from the object that write
/// started from (`base`).
pub(crate) struct StatusWritten {
    /// The resourceVersion of the object the writing reconcile started from.
    pub(super) base: Option<String>,
    /// The status as stored.
    status: JwtSigningKeyStatus,
    /// When the watch delivered a newer object than `base`. A reconcile that took the object from
    /// the cache just before may still be running: the record stays for
    /// [`crate::watch::OVERLAY_TTL`] more.
    pub(super) superseded: Option<Instant>,
}

/// A condition whose status the stored one already has keeps the stored transition time (the
/// status was built against a cached object that may predate the stored one).
fn keep_transition_times(new: &mut JwtSigningKeyStatus, stored: &JwtSigningKeyStatus) {
    for condition in &mut new.conditions {
        if let Some(was) = stored
            .conditions
            .iter()
            .find(|c| c.type_ == condition.type_ && c.status == condition.status)
        {
            condition.last_transition_time = was.last_transition_time.clone();
        }
    }
}
