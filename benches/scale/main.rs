//! The operator's cost at scale, next to its floor, on the local control plane, in one run:
//!
//! 1. keygen floor (`keygen.rs`): the operator's own generator in-process (RSA-2048 for RS256, the
//!    default); floor = mean CPU × N / cores (the full run generates N keys, so the floor is the CPU
//!    time of N generations over the cores);
//! 2. create storm (`storm.rs`): N JwtSigningKeys created by 8 parallel clients against one
//!    operator (with leader election); time until all are Ready, the operator's CPU per key, the
//!    largest gap between Lease renewals;
//! 3. memory after the storm (`memory.rs`: peak and current RSS);
//! 4. idle (`idle.rs`): the operator's requests while nothing is due, as the API server's audit
//!    log records them (the Lease's apart);
//! 5. writes per rotation for a sample of keys (`rotations.rs`: audit log, by resource);
//! 6. fan-out (`fanout.rs`): one key published into M namespaces by a second operator watching
//!    them; time until every copy holds a new key, and every copy held it at least P before the
//!    Secret switched;
//! 7. restart (`restart.rs`), after SIGTERM (a rolling update), after SIGKILL with the container
//!    restarted in its pod, and after SIGKILL with a new pod in its place: time until the watches
//!    are synced (a standby syncs before it leads) and until it leads, the RSS, and the writes it
//!    makes for keys already in sync.
//!
//! `cargo bench --bench scale`: N = 1000 keys, M = 1000 namespaces (JKO_SCALE_KEYS and
//! JKO_SCALE_NAMESPACES override; the size of a run is set in `setup.rs`). Without `--bench` (as
//! `cargo test --all-targets` runs it): N = 100, M = 50, and the figures must stay within the bounds
//! of `bounds.rs`. Every figure is printed first (`report.rs`), then the bounds are checked. Starts
//! the test control plane if needed. Every key the bench creates is RS256 unless
//! JKO_SCALE_ALGORITHM names another algorithm (ES256, ES384, EdDSA, ...), whose generator is then
//! the floor; JKO_SCALE_STORM_ONLY=1 stops after phase 3, to compare algorithms.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/support/mod.rs"]
mod support;

mod bounds;
mod cluster;
mod fanout;
mod idle;
mod keygen;
mod memory;
mod process;
mod report;
mod restart;
mod rotations;
mod setup;
mod storm;

use std::time::{Duration, Instant};

use common::{AuditLog, OperatorProcess};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{DeleteParams, ListParams},
};

use crate::{
    bounds::QUICK_STORM_EXITS,
    cluster::release_keys,
    fanout::{FANOUT_LABEL, fanout},
    idle::idle,
    keygen::keygen_floor,
    memory::memory,
    process::{Supervised, wait_log},
    report::Report,
    restart::{POD_NAME, Stop, restart},
    rotations::rotations,
    setup::{Bench, LEASE_NAME, LEASE_SECONDS, Scale},
    storm::storm,
};

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let scale = Scale::from_args();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let title = format!(
        "scale bench ({} mode): N = {} {} keys, M = {} namespaces, {cores} cores{}",
        if scale.full { "full" } else { "quick" },
        scale.keys,
        scale.algorithm,
        scale.namespaces,
        if scale.storm_only {
            "; phases 1-3 only"
        } else {
            ""
        }
    );
    println!("{title}");
    let report = Report::new(!scale.full, title);
    let keygen = keygen_floor(&scale, &report, cores);
    let (scale_ref, report_ref) = (&scale, &report);
    common::with_temp_ns("bench-scale", |ns| async move {
        common::install_crd(&ns.client).await;
        let audit = AuditLog::open();
        if audit.is_none() {
            println!("(no audit log: request counts are skipped)");
        }
        let lease_seconds = LEASE_SECONDS.to_string();
        let mut operator = Supervised::new(tokio::task::block_in_place(|| {
            OperatorProcess::start_in_pod(
                POD_NAME,
                &[&ns.name],
                &[
                    "--leader-election=true",
                    "--leader-election-namespace",
                    &ns.name,
                    "--leader-election-id",
                    LEASE_NAME,
                    "--lease-duration-seconds",
                    &lease_seconds,
                ],
            )
        }));
        wait_log(&operator, "became leader", 1, Duration::from_secs(60)).await;
        let mut bench = Bench {
            scale: scale_ref,
            report: report_ref,
            ns: ns.clone(),
            audit,
            keygen,
            cores,
            keys: scale_ref.keys,
        };
        storm(&bench, &mut operator).await;
        memory(&bench, &operator).await;
        if scale_ref.storm_only {
            drop(operator);
            release_keys(&ns.client, &ns.name).await;
            return;
        }
        idle(&bench, &operator).await;
        rotations(&bench, &mut operator).await;
        bench.keys += scale_ref.rotations;
        let mut fanout_namespaces = Vec::new();
        fanout(&bench, &operator, &mut fanout_namespaces).await;
        operator.tick();
        let exits = operator.exits.len();
        restart(&bench, &mut operator, Stop::Term).await;
        restart(&bench, &mut operator, Stop::Kill).await;
        restart(&bench, &mut operator, Stop::KillReplaced).await;
        report_ref.figure(
            "operator exits over phases 2-6",
            exits as f64,
            "",
            "each restarted at once",
            Some(QUICK_STORM_EXITS),
        );

        // Clean up: no operator runs any more, so the keys' finalizers go by hand.
        drop(operator);
        release_keys(&ns.client, &ns.name).await;
        let namespaces: Api<Namespace> = Api::all(ns.client.clone());
        stream::iter(fanout_namespaces.clone())
            .map(|name| {
                let api = namespaces.clone();
                async move {
                    let _ = api.delete(&name, &DeleteParams::background()).await;
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
        if scale_ref.full {
            // A thousand terminating namespaces would slow the next run: wait for them here.
            let started = Instant::now();
            let _ = tokio::time::timeout(Duration::from_secs(600), async {
                loop {
                    let left = namespaces
                        .list_metadata(
                            &ListParams::default().labels(&format!("{FANOUT_LABEL}={}", ns.name)),
                        )
                        .await
                        .map_or(0, |l| l.items.len());
                    if left == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            })
            .await;
            println!(
                "\n{} fan-out namespaces deleted in {:.1?}",
                fanout_namespaces.len(),
                started.elapsed()
            );
        }
    })
    .await;
    report.table();
    report.check();
}
