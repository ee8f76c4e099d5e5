//! Phase 7, restart: after SIGTERM (a rolling update), after SIGKILL with the container restarted
//! in its pod, and after SIGKILL with a new pod in its place; time until the watches are synced
//! (a standby syncs before it leads) and until it leads, the RSS, and the writes it makes for keys
//! already in sync.

use std::time::{Duration, Instant, SystemTime};

use crate::{
    bounds::{QUICK_CRASH_LEADER_SECS, QUICK_RESTART_SYNC_SECS, QUICK_RESTART_WRITES},
    cluster::{describe, is_lease, of_kind, requests_of},
    common::{Counts, Request, RequestKind},
    process::{Supervised, count_in_log, settle, status_mib, wait_log, watches_synced},
    report::show,
    setup::{Bench, LEASE_SECONDS},
    support,
};

/// Window after a restarted operator is synced and has reconciled every key, in which its writes
/// are counted.
const RESTART_WINDOW: Duration = Duration::from_secs(15);

/// How phase 7 stops the operator before starting it again.
#[derive(Clone, Copy, PartialEq)]
pub enum Stop {
    /// SIGTERM, as a rolling update: the Lease is handed back.
    Term,
    /// SIGKILL, and the container starts again in the same pod (same `POD_NAME`, the Lease holder
    /// identity): it takes its Lease back at once.
    Kill,
    /// SIGKILL, and another pod replaces it: the new process waits for the old Lease to run out,
    /// with its watches synced meanwhile.
    KillReplaced,
}

impl Stop {
    fn phase(self) -> &'static str {
        match self {
            Stop::Term => "7a. restart: SIGTERM (rolling update)",
            Stop::Kill => "7b. restart: SIGKILL (crash), the container restarted in its pod",
            Stop::KillReplaced => "7c. restart: SIGKILL (crash), a new pod in its place",
        }
    }
}

/// `POD_NAME` of the storm's operator; phase 7c replaces it.
pub const POD_NAME: &str = "jwt-key-operator-scale";

/// Phase 7.
pub async fn restart(b: &Bench<'_>, operator: &mut Supervised, stop: Stop) {
    b.report
        .phase(&format!("{}, with {} keys in sync", stop.phase(), b.keys));
    settle(operator, Duration::from_secs(2), Duration::from_secs(60)).await;
    let serving = count_in_log(operator, "serving /metrics");
    let leading = count_in_log(operator, "became leader");
    let reconciled = count_in_log(operator, "reconciled");
    let spawned_wall = SystemTime::now();
    let spawned = Instant::now();
    match stop {
        Stop::Term => operator.process.restart_gracefully(),
        Stop::Kill => operator.process.restart(),
        Stop::KillReplaced => {
            operator
                .process
                .set_pod_name(Some(&format!("{POD_NAME}-replacement")));
            operator.process.restart();
        }
    }
    wait_log(
        operator,
        "serving /metrics",
        serving + 1,
        Duration::from_secs(60),
    )
    .await;
    let mut leader_at = None;
    let mut synced_at = None;
    let mut all_reconciled_at = None;
    let deadline = spawned + Duration::from_secs(LEASE_SECONDS) + Duration::from_secs(300);
    while Instant::now() < deadline {
        if leader_at.is_none() && count_in_log(operator, "became leader") > leading {
            leader_at = Some(spawned.elapsed());
        }
        if synced_at.is_none() && watches_synced(&support::metrics(operator).await) == Some(1.0) {
            synced_at = Some(spawned.elapsed());
        }
        if all_reconciled_at.is_none()
            && count_in_log(operator, "reconciled") >= reconciled + b.keys
        {
            all_reconciled_at = Some(spawned.elapsed());
        }
        // Done once synced and every key was looked at; the gauge gets 10 s more than the keys.
        let gauge_done = synced_at.is_some()
            || all_reconciled_at.is_some_and(|at| spawned.elapsed() > at + Duration::from_secs(10));
        if gauge_done && all_reconciled_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    b.report.figure(
        "spawn → became leader",
        secs(leader_at),
        "s",
        match stop {
            Stop::Term => "the stopped process handed the Lease back".to_string(),
            Stop::Kill => "the same holder identity takes its Lease back".to_string(),
            Stop::KillReplaced => {
                format!("the killed process's Lease ({LEASE_SECONDS} s) runs out first")
            }
        },
        Some(match stop {
            Stop::Term | Stop::Kill => QUICK_RESTART_SYNC_SECS,
            Stop::KillReplaced => QUICK_CRASH_LEADER_SECS,
        }),
    );
    b.report.figure(
        "spawn → jwtkeys_watches_synced 1",
        secs(synced_at),
        "s",
        if synced_at.is_some() {
            String::new()
        } else {
            "never seen: the operator does not set the gauge".into()
        },
        Some(QUICK_RESTART_SYNC_SECS),
    );
    b.report.figure(
        format!("spawn → all {} keys reconciled", b.keys),
        secs(all_reconciled_at),
        "s",
        "from the operator log",
        None,
    );
    let Some(audit) = &b.audit else {
        println!("  writes skipped: the control plane keeps no audit log");
        return;
    };
    // Writes are counted until the window after the later of sync and the reconciles, which follow
    // the Lease: a standby syncs its caches before it leads.
    let ready = synced_at
        .into_iter()
        .chain(all_reconciled_at)
        .max()
        .unwrap_or(spawned.elapsed());
    let window = ready + RESTART_WINDOW;
    tokio::time::sleep(window.saturating_sub(spawned.elapsed())).await;
    if let Some(pid) = operator.process.pid() {
        b.report.figure(
            "RSS after the restart (VmRSS)",
            status_mib(pid, "VmRSS"),
            "MiB",
            format!(
                "{} s after the later of sync and the reconciles; peak {:.1} MiB",
                RESTART_WINDOW.as_secs(),
                status_mib(pid, "VmHWM")
            ),
            None,
        );
    }
    let requests = requests_of(audit, operator, spawned_wall, spawned_wall + window).await;
    let (lease, other): (Vec<&Request>, Vec<&Request>) = requests.iter().partition(|r| is_lease(r));
    let counts = Counts::of(other.iter().copied());
    let writes = of_kind(&other, RequestKind::Write);
    b.report.figure(
        "writes after restart (Lease excepted)",
        counts.writes as f64,
        "",
        format!(
            "from spawn until {} s after the later of sync and the reconciles ({} s): {}",
            RESTART_WINDOW.as_secs(),
            show(window.as_secs_f64()),
            describe(&writes)
        ),
        Some(QUICK_RESTART_WRITES),
    );
    b.report.figure(
        "reads per key at restart",
        counts.reads as f64 / b.keys as f64,
        "",
        format!(
            "{} reads, {} watches, {} Lease requests in the window",
            counts.reads,
            counts.watches,
            lease.len()
        ),
        None,
    );
}
