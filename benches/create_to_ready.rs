//! Create-to-Ready latency on the local control plane: JwtSigningKeys (RSA-2048) created one after
//! another, each timed from the create call until its status says Ready. Prints median and p95 next
//! to the operator's own key generation median; asserts nothing.
//!
//! `cargo bench --bench create_to_ready` (JKO_READY_KEYS sets the count, default 50). Starts the test
//! control plane if needed.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use jwt_key_operator::crd::{JwtSigningKey, JwtSigningKeySpec};
use kube::{
    Api,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn is_ready(key: &JwtSigningKey) -> bool {
    key.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs two keys as a smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let count: usize = std::env::var("JKO_READY_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 50 } else { 2 });
    common::with_temp_ns("bench-ready", |ns| async move {
        common::install_crd(&ns.client).await;
        let operator = common::OperatorProcess::start(&[&ns.name], &[]);
        let api: Api<JwtSigningKey> = Api::namespaced(ns.client.clone(), &ns.name);
        let mut ready = std::pin::pin!(watcher(api.clone(), watcher::Config::default()).default_backoff().applied_objects());
        let spec: JwtSigningKeySpec = serde_json::from_value(serde_json::json!({})).unwrap();
        let mut latencies = Vec::new();
        for i in 0..count {
            let name = format!("key-{i}");
            let started = Instant::now();
            api.create(&PostParams::default(), &JwtSigningKey::new(&name, spec.clone())).await.unwrap();
            loop {
                let event = tokio::time::timeout(Duration::from_secs(60), ready.next()).await;
                let key = event.expect("Ready within 60s").expect("watch open").expect("watch event");
                if key.metadata.name.as_deref() == Some(name.as_str()) && is_ready(&key) {
                    break;
                }
            }
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let metrics = operator_metric(&operator).await;
        println!(
            "create-to-Ready over {count} keys (RSA-2048): median {:.0} ms, p95 {:.0} ms; operator key generation: {}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.95),
            metrics
        );
    })
    .await;
}

/// Mean key generation time from the operator's histogram (sum / count).
async fn operator_metric(operator: &common::OperatorProcess) -> String {
    let text = support::metrics(operator).await;
    let sum = support::metric_sum(&text, "jwtkeys_key_generation_seconds_sum", "");
    let count = support::metric_sum(&text, "jwtkeys_key_generation_seconds_count", "");
    format!("mean {:.0} ms over {count} keys", sum / count * 1000.0)
}
