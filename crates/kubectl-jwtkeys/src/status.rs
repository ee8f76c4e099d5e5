//! `status`: each key's schedule, where its kids are published, its Ready condition and last events.

use std::fmt::Write;

use jiff::Timestamp;
use jwt_key_operator::crd::{JwtSigningKey, KeyState};
use kube::ResourceExt;
use serde::Serialize;

use crate::{
    cluster::{Cluster, EventLine, Holder},
    table::{Table, when},
};

/// Events shown per key.
const EVENTS: usize = 5;

/// What `status` reports about one JwtSigningKey (also its `-o json|yaml` form).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyReport {
    /// Namespace of the JwtSigningKey.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Algorithm of new keys.
    pub algorithm: String,
    /// The Secret the auth service mounts.
    pub secret: String,
    /// The kid that signs now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_key_id: Option<String>,
    /// When the signing key changes next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<String>,
    /// The Ready condition.
    pub ready: Ready,
    /// Published keys and their schedule.
    pub keys: Vec<jwt_key_operator::crd::KeyStatus>,
    /// Revoked kids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub revoked_key_ids: Vec<String>,
    /// The ConfigMaps that publish the keys, home first.
    pub published_in: Vec<Holder>,
    /// Namespaces the selector matches that do not accept copies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unaccepted_namespaces: Vec<String>,
    /// The newest events.
    pub events: Vec<EventLine>,
    /// Why events are not shown (no right to list them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_problem: Option<String>,
}

/// The Ready condition, or `Unknown` before the operator wrote one.
#[derive(Clone, Debug, Serialize)]
pub struct Ready {
    /// True, False or Unknown.
    pub status: String,
    /// Reason, e.g. KeysReady.
    pub reason: String,
    /// Message.
    pub message: String,
    /// Whether the condition describes the current spec (observedGeneration).
    pub current: bool,
}

/// Collects the report of one key.
pub async fn report(cluster: &Cluster, key: &JwtSigningKey) -> KeyReport {
    let status = key.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| Ready {
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            // Not every status write records a generation (a failed reconcile may not): only a
            // recorded older one says that the condition predates the spec.
            current: match (status.observed_generation, key.metadata.generation) {
                (Some(observed), Some(generation)) => observed >= generation,
                _ => true,
            },
        })
        .unwrap_or(Ready {
            status: "Unknown".into(),
            reason: "NotReconciled".into(),
            message: "the operator has not written a status yet".into(),
            current: false,
        });
    let (events, events_problem) = match cluster.events(key, EVENTS).await {
        Ok(events) => (events, None),
        Err(err) => (Vec::new(), Some(err.to_string())),
    };
    KeyReport {
        namespace: key.namespace().unwrap_or_default(),
        name: key.name_any(),
        algorithm: key.spec.algorithm.to_string(),
        secret: key.secret_name(),
        active_key_id: status.active_key_id.clone(),
        next_rotation_time: status.next_rotation_time.clone(),
        ready,
        keys: status.keys.clone(),
        revoked_key_ids: status.revoked_key_ids.clone(),
        published_in: cluster.holders(key).await,
        unaccepted_namespaces: status.unaccepted_namespaces.clone(),
        events,
        events_problem,
    }
}

/// Short form of a kid for tables: the first 12 characters (thumbprints are 43).
pub fn short(kid: &str) -> String {
    kid.chars().take(12).collect()
}

fn state_name(state: KeyState) -> &'static str {
    match state {
        KeyState::Next => "Next",
        KeyState::Active => "Active",
        KeyState::Retired => "Retired",
    }
}

/// The readable form of a report.
pub fn render(report: &KeyReport, now: Timestamp) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "JwtSigningKey {}/{}  algorithm {}  Secret {}",
        report.namespace, report.name, report.algorithm, report.secret
    );
    let ready = &report.ready;
    let _ = writeln!(
        out,
        "Ready: {} ({}){}{}",
        ready.status,
        ready.reason,
        if ready.message.is_empty() {
            String::new()
        } else {
            format!(": {}", ready.message)
        },
        if ready.current || ready.reason == "NotReconciled" {
            ""
        } else {
            " [for an older generation of the spec]"
        }
    );
    if let Some(next) = &report.next_rotation_time {
        let _ = writeln!(out, "Next rotation: {}", when(next, now));
    }
    let _ = writeln!(out);
    let mut keys = Table::new(&[
        "KID",
        "STATE",
        "ALG",
        "CREATED",
        "ACTIVATES",
        "RETIRES",
        "REMOVED AFTER",
    ]);
    for key in &report.keys {
        let opt = |t: &Option<String>| t.as_deref().map(|t| when(t, now)).unwrap_or("-".into());
        keys.row(vec![
            key.kid.clone(),
            state_name(key.state).to_string(),
            key.algorithm.clone().unwrap_or_else(|| "-".into()),
            when(&key.created_at, now),
            opt(&key.activates_at),
            opt(&key.retires_at),
            opt(&key.remove_after),
        ]);
    }
    if report.keys.is_empty() {
        let _ = writeln!(out, "No published keys yet.");
    } else {
        out.push_str(&keys.render());
    }
    if !report.revoked_key_ids.is_empty() {
        let _ = writeln!(out, "Revoked: {}", report.revoked_key_ids.join(", "));
    }
    let _ = writeln!(out);
    let mut holders = Table::new(&["NAMESPACE", "CONFIGMAP", "ROLE", "KIDS"]);
    for holder in &report.published_in {
        let kids = match &holder.problem {
            Some(problem) => problem.clone(),
            None => holder
                .kids
                .iter()
                .map(|k| short(k))
                .collect::<Vec<_>>()
                .join(" "),
        };
        holders.row(vec![
            holder.namespace.clone(),
            holder.name.clone(),
            if holder.home { "home" } else { "copy" }.to_string(),
            kids,
        ]);
    }
    out.push_str(&holders.render());
    if !report.unaccepted_namespaces.is_empty() {
        let _ = writeln!(
            out,
            "Selected but not accepting copies (jwtkeys.dev/accept-from): {}",
            report.unaccepted_namespaces.join(", ")
        );
    }
    let _ = writeln!(out);
    match &report.events_problem {
        Some(problem) => {
            let _ = writeln!(out, "Events: {problem}");
        }
        None if report.events.is_empty() => {
            let _ = writeln!(out, "Events: none");
        }
        None => {
            let mut events = Table::new(&["LAST SEEN", "TYPE", "REASON", "MESSAGE"]);
            for event in &report.events {
                events.row(vec![
                    when(&event.at, now),
                    event.type_.clone(),
                    if event.count > 1 {
                        format!("{} (x{})", event.reason, event.count)
                    } else {
                        event.reason.clone()
                    },
                    event.message.clone(),
                ]);
            }
            let _ = writeln!(out, "Events:");
            out.push_str(&events.render());
        }
    }
    out
}
