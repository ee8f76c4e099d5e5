//! End-to-end: several replicas are safe. A Lease elects one leader that writes; when it dies, a
//! standby takes over within the lease duration and keeps rotating.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::{OperatorProcess, install_crd, wait_for, with_temp_ns};
use serde_json::json;
use support::*;

/// The flags of a replica that elects a leader through a Lease in `ns`.
fn election_args(ns: &str, lease_seconds: u64) -> Vec<String> {
    [
        "--leader-election=true",
        "--leader-election-namespace",
        ns,
        "--leader-election-id",
        "jwt-key-operator-test",
        "--lease-duration-seconds",
        &lease_seconds.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

fn replica(ns: &str) -> OperatorProcess {
    let args = election_args(ns, 4);
    OperatorProcess::start(&[ns], &args.iter().map(String::as_str).collect::<Vec<_>>())
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
        // The standby's caches are warm before it leads: a takeover does not start with a listing.
        wait_for("the standby's watches to sync", REACT, || async {
            (metric_sum(&metrics(standby).await, "jwtkeys_watches_synced", "") == 1.0).then_some(())
        })
        .await;
        let standby_metrics = metrics(standby).await;
        assert_eq!(
            metric_sum(&standby_metrics, "jwtkeys_leader", ""),
            0.0,
            "the standby says it does not lead:\n{standby_metrics}"
        );
        assert_eq!(
            metric_sum(&metrics(leader).await, "jwtkeys_leader", ""),
            1.0,
            "the leader says it leads"
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
        assert_eq!(
            metric_sum(&metrics(standby).await, "jwtkeys_leader", ""),
            1.0,
            "the new leader says it leads"
        );
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

#[tokio::test]
async fn a_leader_restarted_in_its_pod_takes_its_lease_back_at_once() {
    with_temp_ns("leader-restart", |ns| async move {
        install_crd(&ns.client).await;
        let lease_seconds = 6;
        let args = election_args(&ns.name, lease_seconds);
        let mut leader = OperatorProcess::start_in_pod(
            "jwt-key-operator-0",
            &[&ns.name],
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let led = |operator: &OperatorProcess| operator.logs().matches("became leader").count();
        wait_for("a leader", REACT, || async { (led(&leader) == 1).then_some(()) }).await;
        let before = create_ready(&ns, &jsk("auth", json!({"propagationDelay": "2s"}))).await;

        // A crash: the kubelet starts the container again in the same pod, with the same POD_NAME.
        leader.restart();
        let restarted = Instant::now();
        wait_for("the restarted container to lead", REACT, || async {
            (led(&leader) == 2).then_some(())
        })
        .await;
        let took = restarted.elapsed();
        eprintln!("figure: a leader restarted in its pod led again {took:.1?} after the crash (lease {lease_seconds}s)");
        // Any other identity sees the record unchanged for a whole lease duration first.
        assert!(
            took < Duration::from_secs(lease_seconds),
            "the same holder identity takes its Lease back before it could have run out"
        );
        annotate(&ns, "auth", json!({"jwtkeys.dev/rotate": "after-restart"})).await;
        wait_new_signing_key(&ns, "auth", &before).await;
    })
    .await;
}

fn signal(operator: &OperatorProcess, name: &str) {
    let pid = operator.pid().expect("the replica runs");
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {pid}");
}

#[tokio::test]
async fn a_leader_frozen_past_its_lease_makes_no_write_when_it_resumes() {
    with_temp_ns("leader-frozen", |ns| async move {
        install_crd(&ns.client).await;
        let mut first = replica(&ns.name);
        let mut second = replica(&ns.name);
        wait_for("a leader", REACT, || async {
            (leads(&first) || leads(&second)).then_some(())
        })
        .await;
        let (leader, standby) = if leads(&first) {
            (&mut first, &mut second)
        } else {
            (&mut second, &mut first)
        };
        create_ready(&ns, &jsk("auth", json!({"propagationDelay": "2s"}))).await;

        // Frozen (as by CPU throttling or a long pause) while there is work to do.
        signal(leader, "STOP");
        let mark = leader.logs().len();
        create(&ns, &jsk("while-frozen", json!({}))).await;
        annotate(&ns, "auth", json!({"jwtkeys.dev/rotate": "while-frozen"})).await;
        wait_for(
            "the standby to take over",
            Duration::from_secs(20),
            || async { leads(standby).then_some(()) },
        )
        .await;
        wait_ready(&ns, "while-frozen", "True", "KeysReady").await;

        signal(leader, "CONT");
        let deadline = Instant::now() + REACT;
        while leader.is_running() {
            assert!(Instant::now() < deadline, "the old leader did not exit");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after = leader.logs()[mark..].to_string();
        for line in after.lines() {
            assert!(
                !line.contains("reconciled")
                    && !line.contains("wrote ")
                    && !line.contains("created ")
                    && !line.contains("removed ConfigMap"),
                "the resumed old leader completed a reconcile or wrote: {line}"
            );
        }
        assert!(
            after.contains("renew deadline"),
            "the old leader says why it stopped:\n{after}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_leader_that_is_stopped_hands_over_the_lease_at_once() {
    with_temp_ns("leader-release", |ns| async move {
        install_crd(&ns.client).await;
        let mut first = replica(&ns.name);
        let mut second = replica(&ns.name);
        wait_for("a leader", REACT, || async {
            (leads(&first) || leads(&second)).then_some(())
        })
        .await;
        let (leader, standby) = if leads(&first) {
            (&mut first, &mut second)
        } else {
            (&mut second, &mut first)
        };
        signal(leader, "TERM");
        let stopped = Instant::now();
        wait_for(
            "the standby to take over",
            Duration::from_secs(20),
            || async { leads(standby).then_some(()) },
        )
        .await;
        let takeover = stopped.elapsed();
        eprintln!(
            "figure: standby took over {takeover:.1?} after SIGTERM to the leader (lease 4s)"
        );
        assert!(leader.logs().contains("released the Lease"));
        assert!(
            takeover < Duration::from_secs(3),
            "a released Lease is taken without waiting for it to expire ({takeover:?})"
        );
    })
    .await;
}
