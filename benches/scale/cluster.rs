//! What the scenarios share of the cluster: the keys' state, waits on their watch, and the
//! operator's requests as the API server's audit log records them.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant, SystemTime},
};

use futures::{StreamExt, stream};
use jwt_key_operator::crd::{JwtSigningKey, ROTATE_ANNOTATION};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

use crate::{
    common::{self, AuditLog, OperatorProcess, Request, RequestKind},
    process::Supervised,
};

pub fn is_ready(key: &JwtSigningKey) -> bool {
    key.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

pub fn active_kid(key: &JwtSigningKey) -> Option<String> {
    key.status.as_ref().and_then(|s| s.active_key_id.clone())
}

/// Watches the keys of `api` until `done` holds for every name in `names`; returns when each first
/// held. Panics after `timeout`, naming how many did.
pub async fn watch_until<F>(
    api: &Api<JwtSigningKey>,
    names: &[String],
    what: &str,
    timeout: Duration,
    mut operator: Option<&mut Supervised>,
    done: F,
) -> HashMap<String, Instant>
where
    F: Fn(&JwtSigningKey) -> bool,
{
    let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut reached: HashMap<String, Instant> = HashMap::new();
    let mut events = std::pin::pin!(
        watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    let deadline = Instant::now() + timeout;
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    while reached.len() < wanted.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::select! {
            event = tokio::time::timeout(left, events.next()) => event,
            _ = ticks.tick() => {
                if let Some(operator) = operator.as_deref_mut() {
                    operator.tick();
                }
                continue;
            }
        };
        match event {
            Ok(Some(Ok(key))) => {
                let name = key.name_any();
                if wanted.contains(name.as_str()) && !reached.contains_key(&name) && done(&key) {
                    reached.insert(name, Instant::now());
                }
            }
            Ok(Some(Err(e))) => eprintln!("watching JwtSigningKeys: {e} (retrying)"),
            Ok(None) => panic!("the JwtSigningKey watch ended"),
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for {what}: {} of {} reached it",
                reached.len(),
                wanted.len()
            ),
        }
    }
    reached
}

pub async fn annotate_rotate(api: &Api<JwtSigningKey>, name: &str, value: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {ROTATE_ANNOTATION: value}}})),
    )
    .await
    .unwrap_or_else(|e| panic!("annotating {name} to rotate: {e}"));
}

/// Removes the operator's finalizer from every key in `namespace` (once no operator runs), so that
/// the namespace can go.
pub async fn release_keys(client: &Client, namespace: &str) {
    let api: Api<JwtSigningKey> = Api::namespaced(client.clone(), namespace);
    let Ok(keys) = api.list(&ListParams::default()).await else {
        return;
    };
    stream::iter(
        keys.items
            .into_iter()
            .filter(|k| !k.finalizers().is_empty()),
    )
    .map(|key| {
        let api = api.clone();
        async move {
            let patch = json!({"metadata": {"finalizers": null}});
            if let Err(e) = api
                .patch(
                    &key.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
            {
                eprintln!("removing the finalizer of {}: {e}", key.name_any());
            }
        }
    })
    .buffer_unordered(16)
    .collect::<Vec<()>>()
    .await;
}

/// Time the API server may take to write an audit event after answering.
pub const AUDIT_FLUSH: Duration = Duration::from_millis(1500);

/// The operator's requests received in `[from, to)`, once the API server has written them.
pub async fn requests_of(
    audit: &AuditLog,
    operator: &OperatorProcess,
    from: SystemTime,
    to: SystemTime,
) -> Vec<Request> {
    let wait = (to + AUDIT_FLUSH)
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    audit.requests(&operator.username(), from, to)
}

pub fn is_lease(request: &Request) -> bool {
    request.resource == "leases"
}

/// The requests of one kind.
pub fn of_kind<'a>(requests: &[&'a Request], kind: RequestKind) -> Vec<&'a Request> {
    requests
        .iter()
        .copied()
        .filter(|r| r.kind() == kind)
        .collect()
}

pub fn describe(requests: &[&Request]) -> String {
    let counts = common::breakdown(requests.iter().copied());
    if counts.is_empty() {
        return "none".into();
    }
    let mut text = counts
        .iter()
        .map(|(what, count)| format!("{count}× {what}"))
        .collect::<Vec<_>>()
        .join(", ");
    // Refused requests are counted above too: a write refused with 409 Conflict was sent.
    let mut refused: BTreeMap<u16, usize> = BTreeMap::new();
    for code in requests.iter().filter_map(|r| r.code).filter(|c| *c >= 400) {
        *refused.entry(code).or_default() += 1;
    }
    if !refused.is_empty() {
        let codes: Vec<String> = refused
            .iter()
            .map(|(code, count)| format!("{count}× {code}"))
            .collect();
        text.push_str(&format!("; answered with an error: {}", codes.join(", ")));
    }
    text
}
