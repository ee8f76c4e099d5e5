//! Report: the status (written with server-side apply, only when it changed), the `Ready`
//! condition, and events (published when state changes, never with key material).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Client, Resource,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tracing::warn;

use super::{machine::Note, reason::ConditionReason};
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
#[derive(Clone, Debug)]
pub struct Readiness {
    /// `True` or `False`.
    pub status: &'static str,
    /// Why.
    pub reason: ConditionReason,
    /// What a user reads.
    pub message: String,
}

impl Events {
    /// Publishes `note` for `jsk` (a note over 1000 bytes is cut); a failure is logged, never
    /// fatal.
    pub async fn publish(&self, jsk: &JwtSigningKey, note: &Note) {
        let mut message = note.message.clone();
        if message.len() > 1000 {
            let mut end = 1000;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        let event = Event {
            type_: note.type_,
            reason: note.reason.into(),
            note: Some(message),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder().publish(&event, &jsk.object_ref(&())).await {
            warn!(error = %e, reason = note.reason, "publishing event failed");
        }
    }
}

/// The status for `keys`.
pub fn status(
    jsk: &JwtSigningKey,
    timing: &Timing,
    keys: &KeySet,
    published_namespaces: Vec<String>,
    ready: &Readiness,
    old: &JwtSigningKeyStatus,
    now: Timestamp,
) -> JwtSigningKeyStatus {
    JwtSigningKeyStatus {
        observed_generation: jsk.metadata.generation,
        conditions: vec![ready_condition(jsk, ready, old, now)],
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

/// The Ready condition; its transition time moves only when its status changes.
pub fn ready_condition(
    jsk: &JwtSigningKey,
    ready: &Readiness,
    old: &JwtSigningKeyStatus,
    now: Timestamp,
) -> Condition {
    let previous = old.conditions.iter().find(|c| c.type_ == "Ready");
    let last_transition_time = match previous {
        Some(c) if c.status == ready.status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: "Ready".into(),
        status: ready.status.into(),
        reason: ready.reason.as_str().into(),
        message: ready.message.clone(),
        observed_generation: jsk.metadata.generation,
        last_transition_time,
    }
}

/// A Warning when the Ready condition is false for a reason or message it did not have.
pub fn warning_if_new(ready: &Readiness, old: &JwtSigningKeyStatus) -> Option<Note> {
    if ready.status != "False" {
        return None;
    }
    let was = old.conditions.iter().find(|c| c.type_ == "Ready");
    was.is_none_or(|c| c.reason != ready.reason.as_str() || c.message != ready.message)
        .then(|| Note {
            type_: EventType::Warning,
            reason: ready.reason.as_str(),
            message: ready.message.clone(),
        })
}

/// `new`, unless `stored` already says it (transition times kept from `stored`).
pub fn changed(
    mut new: JwtSigningKeyStatus,
    stored: &JwtSigningKeyStatus,
) -> Option<JwtSigningKeyStatus> {
    keep_transition_times(&mut new, stored);
    (new != *stored).then_some(new)
}

/// The status this process last wrote to a JwtSigningKey, the resourceVersion of the object the
/// reconcile that wrote it started from, and since when the cache holds a newer object.
pub(crate) struct StatusWritten {
    pub(super) base: Option<String>,
    /// The status as stored.
    pub(super) status: JwtSigningKeyStatus,
    /// When the watch delivered a newer object than `base`. A reconcile that took the object from
    /// the cache just before may still be running: the record stays for
    /// [`crate::watch::OVERLAY_TTL`] more.
    pub(super) superseded: Option<Instant>,
}

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
