//! End-to-end: several replicas are safe. A Lease elects one leader that writes; when it dies, a
//! standby takes over within the lease duration and keeps rotating.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::{OperatorProcess, install_crd, wait_for, with_temp_ns};
use serde_json::json;
use support::*;

fn replica(ns: &str) -> OperatorProcess {
    OperatorProcess::start(
        &[ns],
        &[
            "--leader-election=true",
            "--leader-election-namespace",
            ns,
            "--leader-election-id",
            "jwt-key-operator-test",
            "--lease-duration-seconds",
            "4",
        ],
    )
}

fn leads(operator: &OperatorProcess) -> bool {
    operator.logs().contains("became leader")
}

fn contends(operator: &OperatorProcess) -> bool {
    operator.logs().contains("waiting to become leader")
}

#[tokio::test]
async fn one_replica_leads_and_a_standby_takes_over_when_it_dies() {
    with_temp_ns("leader", |ns| async move {
        install_crd(&ns.client).await;
        let mut first = replica(&ns.name);
        let mut second = replica(&ns.name);
        // The replicas do not start at the same moment (the first start applies the chart's RBAC,
        // which the second shares): wait until both contend for the Lease.
        wait_for("both replicas to contend for the Lease", REACT, || async {
            (contends(&first) && contends(&second)).then_some(())
        })
        .await;
        wait_for("a leader", REACT, || async {
            (leads(&first) || leads(&second)).then_some(())
        })
        .await;
        // Both wait on the same Lease; exactly one leads.
        assert!(leads(&first) != leads(&second), "exactly one replica leads");
        let (leader, standby) = if leads(&first) {
            (&mut first, &mut second)
        } else {
            (&mut second, &mut first)
        };

        let before = create_ready(&ns, &jsk("auth", json!({"propagationDelay": "2s"}))).await;
        assert!(
            !standby.logs().contains("reconciled"),
            "the standby writes nothing"
        );

        leader.kill();
        let killed = Instant::now();
        wait_for(
            "the standby to take over",
            Duration::from_secs(20),
            || async { leads(standby).then_some(()) },
        )
        .await;
        let takeover = killed.elapsed();
        eprintln!("figure: standby took over {takeover:.1?} after the leader died (lease 4s)");
        assert!(
            takeover <= Duration::from_secs(4 + 3),
            "takeover within the lease duration (plus retry slack)"
        );

        annotate(&ns, "auth", json!({"jwtkeys.dev/rotate": "after-failover"})).await;
        wait_new_signing_key(&ns, "auth", &before).await;
    })
    .await;
}
