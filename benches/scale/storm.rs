//! Phase 2, the create storm: N keys created by parallel clients against one operator with leader
//! election; time until all are Ready, the operator's CPU per key, its Lease renewals, its
//! requests.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use futures::StreamExt;
use jwt_key_operator::crd::JwtSigningKey;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

use crate::{
    bounds::{
        QUICK_CPU_PER_KEY_OVER_KEYGEN, QUICK_LEASE_GAP_OVER_DEADLINE, QUICK_READY_OVER_FLOOR,
        QUICK_STORM_EXITS, QUICK_STORM_READS_PER_KEY, QUICK_STORM_WRITES_PER_KEY,
    },
    cluster::{describe, is_lease, is_ready, of_kind, requests_of, watch_until},
    common::{Counts, Request, RequestKind},
    process::{Supervised, others_cpu},
    report::show,
    setup::{Bench, LEASE_NAME, LEASE_SECONDS},
    support,
};

/// Parallel clients creating keys in the storm.
const CREATORS: usize = 8;

/// Phase 2.
pub async fn storm(b: &Bench<'_>, operator: &mut Supervised) {
    let n = b.scale.keys;
    let algorithm = b.scale.algorithm.as_str();
    b.report.phase(&format!(
        "2. create storm: {n} {algorithm} keys, {CREATORS} parallel clients, one operator with \
         leader election"
    ));
    // The ratios to the floor are bounded for RSA only (see `Scale::floor_bounds`).
    let floor_bound = |bound: f64| b.scale.floor_bounds().then_some(bound);
    let floor = b.keygen.cpu_ms / 1000.0 * n as f64 / b.cores as f64;
    let median_floor = b.keygen.median_ms / 1000.0 * n as f64 / b.cores as f64;
    let api: Api<JwtSigningKey> = Api::namespaced(b.ns.client.clone(), &b.ns.name);
    let renewals = record_renewals(&b.ns.client, &b.ns.name, LEASE_NAME);
    let names: Vec<String> = (0..n).map(|i| format!("key-{i:04}")).collect();
    let spec = b.scale.key_spec(json!({}));
    let cpu_before = operator.cpu();
    let others_before = others_cpu();
    let exits_before = operator.exits.len();
    operator.peak_threads = 0;
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let creators: Vec<tokio::task::JoinHandle<Instant>> = (0..CREATORS)
        .map(|t| {
            let api = api.clone();
            let mine: Vec<String> = names.iter().skip(t).step_by(CREATORS).cloned().collect();
            let spec = spec.clone();
            tokio::spawn(async move {
                for name in mine {
                    api.create(&PostParams::default(), &support::jsk(&name, spec.clone()))
                        .await
                        .unwrap_or_else(|e| panic!("creating {name}: {e}"));
                }
                Instant::now()
            })
        })
        .collect();
    let timeout = Duration::from_secs_f64((floor * 20.0).max(180.0));
    let ready = watch_until(
        &api,
        &names,
        "every key Ready",
        timeout,
        Some(&mut *operator),
        is_ready,
    )
    .await;
    let all_ready = ready.values().max().expect("keys").duration_since(started);
    let ended_wall = SystemTime::now();
    let cpu = operator.cpu() - cpu_before;
    let others: Vec<(&str, f64)> = others_cpu()
        .into_iter()
        .zip(others_before)
        .map(|((name, after), (_, before))| (name, after - before))
        .collect();
    let mut last_create = started;
    for creator in creators {
        last_create = last_create.max(creator.await.expect("a create task"));
    }
    b.report.figure(
        format!("{n} keys created in"),
        last_create.duration_since(started).as_secs_f64(),
        "s",
        "first create to last create returned",
        None,
    );
    b.report.figure(
        "all Ready after",
        all_ready.as_secs_f64(),
        "s",
        format!("floor {} s", show(floor)),
        None,
    );
    b.report.figure(
        "all Ready / floor",
        all_ready.as_secs_f64() / floor,
        "×",
        format!(
            "against the median instead (median × N / cores = {} s): {} ×",
            show(median_floor),
            show(all_ready.as_secs_f64() / median_floor)
        ),
        floor_bound(QUICK_READY_OVER_FLOOR),
    );
    let cpu_per_key = cpu / n as f64 * 1000.0;
    b.report.figure(
        "operator CPU per key",
        cpu_per_key,
        "ms",
        format!(
            "{} s in all; keygen median {} ms, CPU {} ms",
            show(cpu),
            show(b.keygen.median_ms),
            show(b.keygen.cpu_ms)
        ),
        None,
    );
    b.report.figure(
        "operator CPU per key / keygen median",
        cpu_per_key / b.keygen.median_ms,
        "×",
        "the median is wall time: it grows with the machine's load",
        None,
    );
    b.report.figure(
        "operator CPU per key / keygen CPU",
        cpu_per_key / b.keygen.cpu_ms,
        "×",
        "",
        floor_bound(QUICK_CPU_PER_KEY_OVER_KEYGEN),
    );
    // Where the rest of the cores went: the floor assumes the operator has them all.
    let seconds = all_ready.as_secs_f64();
    b.report.figure(
        "cores used until all Ready: operator",
        cpu / seconds,
        "",
        format!("of {} cores", b.cores),
        None,
    );
    b.report.figure(
        "cores used until all Ready: everything else",
        others.iter().map(|(_, cpu)| cpu).sum::<f64>() / seconds,
        "",
        others
            .iter()
            .map(|(name, cpu)| format!("{name} {}", show(cpu / seconds)))
            .collect::<Vec<_>>()
            .join(", "),
        None,
    );
    let deadline = Duration::from_secs(LEASE_SECONDS) * 2 / 3;
    let renewals = renewals.lock().unwrap().clone();
    let gap = largest_renewal_gap(&renewals, started_wall, ended_wall);
    b.report.figure(
        "largest Lease renewTime gap during the storm",
        gap.as_secs_f64(),
        "s",
        format!(
            "{} renewals seen; renew every {} s, deadline {} s",
            renewals.len(),
            show((Duration::from_secs(LEASE_SECONDS) * 2 / 15).as_secs_f64()),
            show(deadline.as_secs_f64())
        ),
        None,
    );
    b.report.figure(
        "largest Lease gap / renew deadline",
        gap.as_secs_f64() / deadline.as_secs_f64(),
        "×",
        "",
        Some(QUICK_LEASE_GAP_OVER_DEADLINE),
    );
    if let Some(audit) = &b.audit {
        let requests = requests_of(audit, operator, started_wall, ended_wall).await;
        let (lease, other): (Vec<&Request>, Vec<&Request>) =
            requests.iter().partition(|r| is_lease(r));
        // Whether renewals were late leaving the operator or slow in the API server.
        let slowest = lease
            .iter()
            .filter_map(|r| r.completed.duration_since(r.received).ok())
            .max()
            .unwrap_or_default();
        let silence = lease
            .windows(2)
            .filter_map(|pair| pair[1].received.duration_since(pair[0].received).ok())
            .max()
            .unwrap_or_default();
        b.report.figure(
            "Lease requests during the storm: longest silence",
            silence.as_secs_f64(),
            "s",
            format!(
                "between two Lease requests received by the API server; {} requests, the slowest \
                 answered in {} s",
                lease.len(),
                show(slowest.as_secs_f64())
            ),
            None,
        );
        let counts = Counts::of(other.iter().copied());
        let writes = of_kind(&other, RequestKind::Write);
        b.report.figure(
            "storm writes per key (Lease excepted)",
            counts.writes as f64 / n as f64,
            "",
            format!(
                "least 5: the Secret saves the key before it is published and makes it sign \
                 after, ConfigMap, status, one event (no finalizer: the keys publish no copies); \
                 writes: {}",
                describe(&writes)
            ),
            Some(QUICK_STORM_WRITES_PER_KEY),
        );
        b.report.figure(
            "storm writes per second until all Ready (Lease excepted)",
            counts.writes as f64 / all_ready.as_secs_f64(),
            "/s",
            "first create to all Ready; with keys that generate in microseconds, the pace of \
             the storm",
            None,
        );
        let reads = of_kind(&other, RequestKind::Read);
        b.report.figure(
            "storm reads per key (Lease and watches excepted)",
            counts.reads as f64 / n as f64,
            "",
            format!(
                "reconciles read the watch caches; reads: {}",
                describe(&reads)
            ),
            Some(QUICK_STORM_READS_PER_KEY),
        );
    }
    b.report.figure(
        "operator threads at most during the storm",
        operator.peak_threads as f64,
        "",
        "sampled every 200 ms; key generation runs on tokio's blocking pool",
        None,
    );
    let exits = &operator.exits[exits_before..];
    b.report.figure(
        "operator exits during the storm",
        exits.len() as f64,
        "",
        if exits.is_empty() {
            "restarted when it exits, as a Deployment would".to_string()
        } else {
            format!("restarted each time; {}", tally(exits))
        },
        Some(QUICK_STORM_EXITS),
    );
}

/// Records every distinct `renewTime` of a Lease, as a watch sees it.
fn record_renewals(client: &Client, namespace: &str, name: &str) -> Arc<Mutex<Vec<SystemTime>>> {
    let renewals = Arc::new(Mutex::new(Vec::new()));
    let recorded = renewals.clone();
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut leases = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
        while let Some(event) = leases.next().await {
            let Ok(lease) = event else { continue };
            let Some(renewed) = lease.spec.and_then(|s| s.renew_time) else {
                continue;
            };
            let Ok(micros) = u64::try_from(renewed.0.as_microsecond()) else {
                continue;
            };
            let at = SystemTime::UNIX_EPOCH + Duration::from_micros(micros);
            let mut renewals = recorded.lock().unwrap();
            if renewals.last() != Some(&at) {
                renewals.push(at);
            }
        }
    });
    renewals
}

/// The largest time without a renewal within `[from, to]`: between successive renewals, and from
/// the last one to `to`.
fn largest_renewal_gap(renewals: &[SystemTime], from: SystemTime, to: SystemTime) -> Duration {
    let mut sorted = renewals.to_vec();
    sorted.sort();
    let mut largest = Duration::ZERO;
    let mut previous: Option<SystemTime> = None;
    for at in sorted.into_iter().filter(|at| *at <= to) {
        if let Some(before) = previous
            && at >= from
        {
            largest = largest.max(at.duration_since(before).unwrap_or_default());
        }
        previous = Some(at);
    }
    if let Some(last) = previous {
        largest = largest.max(to.duration_since(last).unwrap_or_default());
    }
    largest
}

/// Distinct texts with their counts: `4× text; 1× other`.
fn tally(texts: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for text in texts {
        *counts.entry(text.as_str()).or_insert(0) += 1;
    }
    counts
        .iter()
        .map(|(text, count)| format!("{count}× {text}"))
        .collect::<Vec<_>>()
        .join("; ")
}
