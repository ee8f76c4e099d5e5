//! Phase 4: the operator's requests while nothing is due, as the audit log records them.

use std::time::SystemTime;

use jwt_key_operator::controller::SERIES_WINDOW;

use crate::{
    bounds::{
        QUICK_IDLE_LEASE_REQUESTS_PER_HOUR, QUICK_IDLE_REQUESTS_PER_KEY_HOUR,
        QUICK_IDLE_WRITES_PER_KEY_HOUR,
    },
    cluster::{describe, is_lease, requests_of},
    common::{Counts, OperatorProcess, Request},
    process::status_mib,
    setup::Bench,
};

/// Phase 4.
pub async fn idle(b: &Bench<'_>, operator: &OperatorProcess) {
    let w = b.scale.idle;
    b.report.phase(&format!(
        "4. idle for {} s with {} keys in sync (audit log)",
        w.as_secs(),
        b.keys
    ));
    let Some(audit) = &b.audit else {
        println!("  skipped: the control plane keeps no audit log");
        return;
    };
    let from = SystemTime::now();
    tokio::time::sleep(w).await;
    let to = SystemTime::now();
    let requests = requests_of(audit, operator, from, to).await;
    let (lease, other): (Vec<&Request>, Vec<&Request>) = requests.iter().partition(|r| is_lease(r));
    let hours = w.as_secs_f64() / 3600.0;
    let per_key_hour = |count: usize| count as f64 / hours / b.keys as f64;
    let counts = Counts::of(other.iter().copied());
    b.report.figure(
        "idle requests per key per hour (Lease excepted)",
        per_key_hour(counts.total()),
        "req",
        format!(
            "{} in {} s: {} reads, {} watches, {} writes; {}",
            counts.total(),
            w.as_secs(),
            counts.reads,
            counts.watches,
            counts.writes,
            describe(&other)
        ),
        Some(QUICK_IDLE_REQUESTS_PER_KEY_HOUR),
    );
    b.report.figure(
        "idle writes per key per hour (Lease excepted)",
        per_key_hour(counts.writes),
        "req",
        "",
        Some(QUICK_IDLE_WRITES_PER_KEY_HOUR),
    );
    let lease_counts = Counts::of(lease.iter().copied());
    b.report.figure(
        "idle Lease requests per hour",
        lease_counts.total() as f64 / hours,
        "req",
        format!(
            "{} reads, {} writes in {} s (leader election, independent of the keys)",
            lease_counts.reads,
            lease_counts.writes,
            w.as_secs()
        ),
        Some(QUICK_IDLE_LEASE_REQUESTS_PER_HOUR),
    );
    if let Some(pid) = operator.pid() {
        b.report.figure(
            "RSS after idle (VmRSS)",
            status_mib(pid, "VmRSS"),
            "MiB",
            if w > SERIES_WINDOW {
                "steady: the storm's events are forgotten (event series window passed)"
            } else {
                "the storm's events are still held (within the event series window)"
            },
            None,
        );
    }
}
