//! Phase 6, fan-out: one key published into M namespaces by a second operator watching them;
//! time until every copy holds a new key, and every copy held it at least P before the Secret
//! switched.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use futures::{StreamExt, stream};
use jwt_key_operator::{
    crd::{ACCEPT_FROM_ANNOTATION, JwtSigningKey},
    resources,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{ObjectMeta, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

use crate::{
    bounds::{QUICK_FANOUT_CREATE_SECS, QUICK_FANOUT_ROTATE_SECS},
    cluster::{
        AUDIT_FLUSH, active_kid, annotate_rotate, is_lease, is_ready, release_keys, requests_of,
        watch_until,
    },
    common::{Counts, OperatorProcess, Request, RequestKind},
    process::{status_field, status_mib, wait_log},
    report::show,
    setup::Bench,
    support,
};

const FANOUT_P: Duration = Duration::from_secs(5);

const FANOUT_P_TEXT: &str = "5s";

/// Watch delivery jitter allowed in the I1 check of the copies.
const SLACK: Duration = Duration::from_millis(500);

/// Label of the fan-out namespaces, matched by the fan-out key's namespaceSelector.
pub const FANOUT_LABEL: &str = "jwtkeys.dev/scale-bench";

/// Every version of the fan-out key's copies (by namespace) and of its Secret's `kid`.
#[derive(Default)]
struct FanoutHistory {
    /// (namespace, kid) → when a copy in that namespace first held the kid.
    first_held: HashMap<(String, String), Instant>,
    /// namespace → kids its copy holds now.
    current: HashMap<String, Vec<String>>,
    /// Signing kids of the Secret, with when the watch saw each start.
    signing: Vec<(String, Instant)>,
}

impl FanoutHistory {
    fn holding(&self, kid: &str) -> usize {
        self.current
            .values()
            .filter(|kids| kids.iter().any(|k| k == kid))
            .count()
    }
}

/// Starts watching the copies (all namespaces, by label) and the Secret; returns once both listed.
async fn record_fanout(client: &Client, source_ns: &str, key: &str) -> Arc<Mutex<FanoutHistory>> {
    let history = Arc::new(Mutex::new(FanoutHistory::default()));
    let (listed_tx, mut listed_rx) = tokio::sync::mpsc::channel::<()>(2);
    let copies: Api<ConfigMap> = Api::all(client.clone());
    let selector = format!(
        "{}={key},{}={source_ns}",
        resources::SIGNING_KEY_LABEL,
        resources::SOURCE_NAMESPACE_LABEL
    );
    let recorded = history.clone();
    let tx = listed_tx.clone();
    tokio::spawn(async move {
        let config = watcher::Config::default().labels(&selector);
        let mut events = std::pin::pin!(watcher(copies, config).default_backoff());
        while let Some(event) = events.next().await {
            let Ok(event) = event else { continue };
            let at = Instant::now();
            let mut history = recorded.lock().unwrap();
            match event {
                watcher::Event::Apply(cm) | watcher::Event::InitApply(cm) => {
                    let ns = cm.namespace().unwrap_or_default();
                    let kids = cm
                        .data
                        .as_ref()
                        .filter(|d| d.contains_key(resources::JWKS_JSON))
                        .map(support::jwks_kids)
                        .unwrap_or_default();
                    for kid in &kids {
                        history
                            .first_held
                            .entry((ns.clone(), kid.clone()))
                            .or_insert(at);
                    }
                    history.current.insert(ns, kids);
                }
                watcher::Event::Delete(cm) => {
                    history.current.remove(&cm.namespace().unwrap_or_default());
                }
                watcher::Event::InitDone => {
                    let _ = tx.try_send(());
                }
                watcher::Event::Init => {}
            }
        }
    });
    let secrets: Api<Secret> = Api::namespaced(client.clone(), source_ns);
    let recorded = history.clone();
    let secret_name = format!("{key}-signing-key");
    tokio::spawn(async move {
        let config = watcher::Config::default().fields(&format!("metadata.name={secret_name}"));
        let mut events = std::pin::pin!(watcher(secrets, config).default_backoff());
        while let Some(event) = events.next().await {
            let Ok(event) = event else { continue };
            match event {
                watcher::Event::Apply(secret) | watcher::Event::InitApply(secret) => {
                    let Some(kid) = secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(resources::KID))
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                    else {
                        continue;
                    };
                    let mut history = recorded.lock().unwrap();
                    if history.signing.last().map(|(k, _)| k) != Some(&kid) {
                        history.signing.push((kid, Instant::now()));
                    }
                }
                watcher::Event::InitDone => {
                    let _ = listed_tx.try_send(());
                }
                _ => {}
            }
        }
    });
    for _ in 0..2 {
        listed_rx.recv().await;
    }
    history
}

/// Waits (on the recorded history, not the API) until `check` returns a value.
async fn wait_history<T>(
    history: &Mutex<FanoutHistory>,
    what: &str,
    timeout: Duration,
    check: impl Fn(&FanoutHistory) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check(&history.lock().unwrap()) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Phase 6. Returns the namespaces it created (deleted at the end of the run).
pub async fn fanout(b: &Bench<'_>, bystander: &OperatorProcess, namespaces: &mut Vec<String>) {
    let m = b.scale.namespaces;
    b.report.phase(&format!(
        "6. fan-out: one key published into {m} namespaces (propagationDelay {FANOUT_P_TEXT})"
    ));
    let client = &b.ns.client;
    let phase_from = SystemTime::now();
    let source = b.ns.extra("src", &[]).await;
    let key = "fan";
    *namespaces = (0..m).map(|i| format!("{}-f{i:04}", b.ns.name)).collect();
    let all_ns: Api<Namespace> = Api::all(client.clone());
    let started = Instant::now();
    stream::iter(namespaces.iter().cloned())
        .map(|name| {
            let api = all_ns.clone();
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(BTreeMap::from([
                        ("jwtkeys.dev/test".to_string(), "true".to_string()),
                        (FANOUT_LABEL.to_string(), b.ns.name.clone()),
                    ])),
                    annotations: Some(BTreeMap::from([(
                        ACCEPT_FROM_ANNOTATION.to_string(),
                        format!("{source}/{key}"),
                    )])),
                    ..Default::default()
                },
                ..Default::default()
            };
            async move {
                api.create(&PostParams::default(), &ns)
                    .await
                    .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    println!(
        "  {m} namespaces created in {:.1?} (16 in parallel)",
        started.elapsed()
    );

    let mut watched: Vec<&str> = vec![source.as_str()];
    watched.extend(namespaces.iter().map(String::as_str));
    let spawned = Instant::now();
    let spawned_wall = SystemTime::now();
    let operator = tokio::task::block_in_place(|| OperatorProcess::start(&watched, &[]));
    let rbac = spawned.elapsed();
    wait_log(
        &operator,
        "starting controllers",
        1,
        Duration::from_secs(300),
    )
    .await;
    // Established watches, as the API server saw them: JwtSigningKeys, Secrets and ConfigMaps in
    // every watched namespace.
    let watches = 3 * watched.len();
    let synced = match &b.audit {
        Some(audit) => {
            let user = operator.username();
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                let established: HashSet<(String, String)> = audit
                    .requests(
                        &user,
                        spawned_wall,
                        SystemTime::now() + Duration::from_secs(60),
                    )
                    .into_iter()
                    .filter(|r| r.kind() == RequestKind::Watch && !r.namespace.is_empty())
                    .map(|r| (r.resource, r.namespace))
                    .collect();
                if established.len() >= watches {
                    break Some(spawned.elapsed());
                }
                if Instant::now() > deadline {
                    println!(
                        "  only {} of {watches} watches established after 300 s",
                        established.len()
                    );
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        None => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            None
        }
    };
    println!(
        "  fan-out operator: --watch-namespace × {} (chart RBAC: a Role per namespace) applied in \
         {rbac:.1?}; {watches} watches established {}",
        watched.len(),
        synced.map_or("(not measured)".into(), |d| format!(
            "{:.1} s after spawn",
            d.as_secs_f64()
        ))
    );

    let history = record_fanout(client, &source, key).await;
    let keys: Api<JwtSigningKey> = Api::namespaced(client.clone(), &source);
    let spec = b.scale.key_spec(json!({
        "propagationDelay": FANOUT_P_TEXT,
        "publish": {"namespaceSelector": {"matchLabels": {FANOUT_LABEL: b.ns.name}}},
    }));
    let allow = Duration::from_secs(120) + Duration::from_millis(300) * m as u32;
    let created_wall = SystemTime::now();
    let created = Instant::now();
    keys.create(&PostParams::default(), &support::jsk(key, spec))
        .await
        .expect("creating the fan-out key");
    let first = wait_history(&history, "the first signing key", allow, |h| {
        h.signing.first().map(|(kid, _)| kid.clone())
    })
    .await;
    let everywhere = wait_history(&history, "a copy in every namespace", allow, |h| {
        (h.holding(&first) >= m).then(|| {
            h.first_held
                .iter()
                .filter(|((_, kid), _)| *kid == first)
                .map(|(_, at)| *at)
                .max()
        })?
    })
    .await;
    b.report.figure(
        format!("key created → copy in all {m} namespaces"),
        everywhere.duration_since(created).as_secs_f64(),
        "s",
        "",
        Some(QUICK_FANOUT_CREATE_SECS),
    );
    // Ready once the status reports every namespace, so that the rotation starts from a settled key.
    watch_until(
        &keys,
        &[key.to_string()],
        "the fan-out key Ready",
        allow,
        None,
        is_ready,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let created_to = SystemTime::now();

    let rotate_wall = SystemTime::now();
    let requested = Instant::now();
    annotate_rotate(&keys, key, "scale-fanout").await;
    let (second, switched) = wait_history(&history, "the new key to sign", allow + FANOUT_P, |h| {
        h.signing
            .iter()
            .find(|(kid, _)| *kid != first)
            .map(|(kid, at)| (kid.clone(), *at))
    })
    .await;
    let held_everywhere = wait_history(&history, "the new kid in every copy", allow, |h| {
        (h.holding(&second) >= m).then(|| {
            h.first_held
                .iter()
                .filter(|((_, kid), _)| *kid == second)
                .map(|(_, at)| *at)
                .max()
        })?
    })
    .await;
    watch_until(
        &keys,
        &[key.to_string()],
        "the fan-out key Ready after the rotation",
        allow,
        None,
        |k| is_ready(k) && active_kid(k).as_deref() == Some(second.as_str()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rotate_to = SystemTime::now();
    b.report.figure(
        format!("rotate request → new kid in all {m} copies"),
        held_everywhere.duration_since(requested).as_secs_f64(),
        "s",
        format!(
            "the Secret switched {} s after the request (P = {FANOUT_P_TEXT})",
            show(switched.duration_since(requested).as_secs_f64())
        ),
        Some(QUICK_FANOUT_ROTATE_SECS),
    );
    // I1/I3 on every copy: it held the new kid at least P before the Secret switched to it.
    let (leads, late): (Vec<Duration>, Vec<String>) = {
        let h = history.lock().unwrap();
        let mut leads = Vec::new();
        let mut late = Vec::new();
        for ns in namespaces.iter() {
            match h.first_held.get(&(ns.clone(), second.clone())) {
                Some(at) => {
                    let lead = switched.saturating_duration_since(*at);
                    if *at > switched || lead + SLACK < FANOUT_P {
                        late.push(format!("{ns} (lead {lead:?})"));
                    }
                    leads.push(lead);
                }
                None => late.push(format!("{ns} (never held it)")),
            }
        }
        (leads, late)
    };
    b.report.invariant(
        "copies that did not hold the new kid P before the switch",
        late.len() as f64,
        "",
        format!(
            "smallest lead {} s over {} copies, P = {FANOUT_P_TEXT}{}",
            show(
                leads
                    .iter()
                    .min()
                    .copied()
                    .unwrap_or_default()
                    .as_secs_f64()
            ),
            leads.len(),
            if late.is_empty() {
                String::new()
            } else {
                format!("; late: {}", late.join(", "))
            }
        ),
        0.0,
    );

    if let Some(audit) = &b.audit {
        let user = operator.username();
        tokio::time::sleep(AUDIT_FLUSH).await;
        for (label, from, to) in [
            ("create", created_wall, created_to),
            ("rotation", rotate_wall, rotate_to),
        ] {
            let requests = audit.requests(&user, from, to);
            let counts = Counts::of(&requests);
            b.report.figure(
                format!("fan-out operator requests, {label}"),
                counts.total() as f64,
                "req",
                format!(
                    "{} reads ({} lists), {} writes, {} watches over {m} namespaces",
                    counts.reads,
                    requests.iter().filter(|r| r.verb == "list").count(),
                    counts.writes,
                    counts.watches
                ),
                None,
            );
            if label == "rotation" {
                let writes: Vec<&Request> = requests
                    .iter()
                    .filter(|r| r.kind() == RequestKind::Write)
                    .collect();
                let of = |resource: &str| writes.iter().filter(|r| r.target() == resource).count();
                let events = of("events");
                b.report.figure(
                    format!("fan-out writes for one rotation over {m} namespaces (events apart)"),
                    (writes.len() - events) as f64,
                    "",
                    format!(
                        "secrets {}, configmaps {}, status {}, events {}; expected minimum {} \
                         (1 Secret + 1 ConfigMap in each of {} namespaces + 1 status)",
                        of("secrets"),
                        of("configmaps"),
                        of("jwtsigningkeys/status"),
                        events,
                        m + 3,
                        m + 1
                    ),
                    None,
                );
            }
        }
        // What publication churn elsewhere costs the first operator, whose keys publish nowhere.
        let requests = requests_of(audit, bystander, phase_from, SystemTime::now()).await;
        let other: Vec<&Request> = requests.iter().filter(|r| !is_lease(r)).collect();
        let counts = Counts::of(other.iter().copied());
        b.report.figure(
            "bystander operator requests during the fan-out phase",
            counts.total() as f64,
            "req",
            format!(
                "the storm's operator ({} keys, none published elsewhere): {} reads, {} writes, \
                 {} watches",
                b.keys, counts.reads, counts.writes, counts.watches
            ),
            None,
        );
    }
    let pid = operator.pid().expect("the fan-out operator runs");
    b.report.figure(
        format!(
            "fan-out operator peak RSS ({} namespaces watched)",
            watched.len()
        ),
        status_mib(pid, "VmHWM"),
        "MiB",
        format!(
            "{} threads",
            show(status_field(pid, "Threads").unwrap_or(f64::NAN))
        ),
        None,
    );
    drop(operator);
    release_keys(client, &source).await;
}
