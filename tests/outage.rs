//! End-to-end: an API server that hangs and then restarts. Alone in its test binary, because it
//! stops the control plane every other test uses.

mod common;
mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{install_crd, repo_root, with_temp_ns};
use serde_json::json;
use support::*;

fn api_server_pid() -> i32 {
    std::fs::read_to_string(repo_root().join("target/control-plane/kube-apiserver.pid"))
        .expect("the API server's pid file")
        .trim()
        .parse()
        .expect("a pid")
}

fn signal(pid: i32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second: u64 = String::from_utf8(
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    Duration::from_millis(ticks * 1000 / per_second)
}

#[tokio::test]
async fn the_operator_survives_a_hung_and_restarted_api_server_and_recovers_within_seconds() {
    with_temp_ns("outage", |ns| async move {
        install_crd(&ns.client).await;
        let mut operator = operator(&[&ns.name]);
        // The restarted API server answers 403 until its RBAC caches have synced.
        operator.tolerate_refusals();
        create_ready(&ns, &jsk("before", json!({}))).await;
        let pid = operator.pid().expect("the operator runs");

        // The API server hangs for 30 s: requests and watches stall without an error.
        let hang = Duration::from_secs(30);
        let server = api_server_pid();
        let cpu_before = cpu_time(pid);
        signal(server, "STOP");
        tokio::time::sleep(hang).await;
        let cpu_during_hang = cpu_time(pid) - cpu_before;
        assert!(
            operator.is_running(),
            "the operator keeps running while the API server hangs"
        );

        // Then it is killed and started again with the same flags.
        let restart = Command::new(repo_root().join("tests/control-plane/restart"))
            .arg("kube-apiserver")
            .status()
            .expect("running tests/control-plane/restart");
        assert!(restart.success(), "restarting the API server");
        let answering = Instant::now();
        create(&ns, &jsk("after", json!({}))).await;
        wait_ready(&ns, "after", "True", "KeysReady").await;
        let recovered = answering.elapsed();
        eprintln!(
            "figure: operator CPU during a {hang:?} API server hang: {cpu_during_hang:?}; a key created once \
             the restarted API server answered was Ready {recovered:.1?} later"
        );
        assert!(
            cpu_during_hang < Duration::from_secs(3),
            "the operator does not spin while the API server hangs ({cpu_during_hang:?})"
        );
        assert!(
            recovered < Duration::from_secs(30),
            "watches recover within seconds ({recovered:?})"
        );
        assert!(operator.is_running(), "the operator never exited");
        operator.kill();
    })
    .await;
}
