//! End-to-end: an API server that hangs and then restarts, and one that refuses the operator for a
//! while after its restart. Alone in their test binary, because they stop the control plane every
//! other test uses; one at a time, for the same reason.

mod common;
mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{OperatorProcess, TestNamespace, install_crd, repo_root, wait_for, with_temp_ns};
use futures::TryStreamExt;
use jwt_key_operator::crd::JwtSigningKey;
use k8s_openapi::api::{
    coordination::v1::Lease,
    rbac::v1::{ClusterRoleBinding, RoleBinding, Subject},
};
use kube::{
    Api, Resource,
    api::{DeleteParams, ObjectMeta, PostParams, WatchEvent, WatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use support::*;

/// Held by each test for its whole run: two API server restarts must not overlap.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// An operator for `ns` whose log may show refusals (a restarted API server answers 403 until its
/// RBAC caches have synced), with the keys `names` Ready.
async fn operator_with_keys(ns: &TestNamespace, names: &[&str]) -> OperatorProcess {
    install_crd(&ns.client).await;
    let mut operator = operator(&[&ns.name]);
    operator.tolerate_refusals();
    for name in names {
        create_ready(ns, &jsk(name, json!({}))).await;
    }
    operator
}

/// Kills the API server and starts it again with the same flags; returns once it answers.
fn restart_api_server() {
    let restart = Command::new(repo_root().join("tests/control-plane/restart"))
        .arg("kube-apiserver")
        .status()
        .expect("running tests/control-plane/restart");
    assert!(restart.success(), "restarting the API server");
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
    let _alone = ONE_AT_A_TIME.lock().await;
    with_temp_ns("outage", |ns| async move {
        let mut operator = operator_with_keys(&ns, &["before"]).await;
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
        restart_api_server();
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

/// The bindings in `api` that grant `username` its rights, taken away: returned as they were, to be
/// created again.
async fn take_bindings<K>(api: &Api<K>, username: &str) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    K: Binding,
{
    let mut taken = Vec::new();
    for binding in api
        .list(&Default::default())
        .await
        .expect("listing bindings")
    {
        let grants = binding.subjects().iter().any(|s| {
            s.kind == "ServiceAccount"
                && format!(
                    "system:serviceaccount:{}:{}",
                    s.namespace.as_deref().unwrap_or_default(),
                    s.name
                ) == username
        });
        if grants {
            let name = binding.meta().name.clone().expect("a binding's name");
            api.delete(&name, &DeleteParams::default())
                .await
                .expect("deleting a binding");
            let mut kept = binding.clone();
            *kept.meta_mut() = ObjectMeta {
                name: Some(name),
                namespace: binding.meta().namespace.clone(),
                labels: binding.meta().labels.clone(),
                ..Default::default()
            };
            taken.push(kept);
        }
    }
    taken
}

async fn give_back<K>(api: &Api<K>, bindings: Vec<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    for binding in bindings {
        api.create(&PostParams::default(), &binding)
            .await
            .expect("creating a binding again");
    }
}

trait Binding {
    fn subjects(&self) -> &[Subject];
}

impl Binding for RoleBinding {
    fn subjects(&self) -> &[Subject] {
        self.subjects.as_deref().unwrap_or_default()
    }
}

impl Binding for ClusterRoleBinding {
    fn subjects(&self) -> &[Subject] {
        self.subjects.as_deref().unwrap_or_default()
    }
}

/// A restarted API server refuses every request of the operator until its RBAC caches are filled (12 s
/// after a restart in CI, with the objects of the whole suite in etcd). Here the refusal is made to
/// last that long by taking the operator's bindings away across the restart. Each watch retries on a
/// schedule of its own: one refused watch must not hold back the others, nor the keys that were
/// created meanwhile, once the rights are back.
#[tokio::test]
async fn watches_recover_within_seconds_when_the_restarted_api_server_refuses_the_operator_for_a_while()
 {
    let _alone = ONE_AT_A_TIME.lock().await;
    with_temp_ns("refused", |ns| async move {
        let mut operator = operator_with_keys(&ns, &["before"]).await;
        let username = operator.username();
        let role_binding_api = Api::<RoleBinding>::namespaced(ns.client.clone(), &ns.name);
        let cluster_role_binding_api = Api::<ClusterRoleBinding>::all(ns.client.clone());
        let role_bindings = take_bindings(&role_binding_api, &username).await;
        let cluster_role_bindings = take_bindings(&cluster_role_binding_api, &username).await;
        assert!(
            !role_bindings.is_empty(),
            "the operator holds its rights through RoleBindings in {}",
            ns.name
        );

        restart_api_server();
        let refused_from = Instant::now();
        // A key created while the operator is refused, and one created when its rights are back.
        create(&ns, &jsk("during", json!({}))).await;
        let refusal = Duration::from_secs(12);
        tokio::time::sleep(refusal.saturating_sub(refused_from.elapsed())).await;
        assert!(
            operator.logs().contains("403"),
            "the restarted API server refused the operator:\n{}",
            operator.logs()
        );
        give_back(&role_binding_api, role_bindings).await;
        give_back(&cluster_role_binding_api, cluster_role_bindings).await;
        let authorized = Instant::now();
        create(&ns, &jsk("after", json!({}))).await;
        wait_ready(&ns, "during", "True", "KeysReady").await;
        wait_ready(&ns, "after", "True", "KeysReady").await;
        let recovered = authorized.elapsed();
        eprintln!(
            "figure: after {refusal:?} of refusals by the restarted API server, the keys created during \
             and after them were Ready {recovered:.1?} after the operator's rights were back"
        );
        // Every watch retries at least every 5 s; a reconcile takes well under a second.
        assert!(
            recovered < Duration::from_secs(10),
            "watches recover within seconds of the rights coming back ({recovered:?})"
        );
        let text = metrics(&operator).await;
        for resource in ["jwtsigningkeys", "secrets", "configmaps", "namespaces"] {
            let errors = metric_sum(
                &text,
                "jwtkeys_watch_errors_total",
                &format!("resource=\"{resource}\""),
            );
            assert!(
                errors >= 1.0,
                "the refused watches of {resource} are counted:\n{text}"
            );
        }
        assert!(operator.is_running(), "the operator never exited");
        operator.kill();
    })
    .await;
}

/// A watch that cannot resume where it was (a restarted API server starts its watch cache at the
/// present) lists again. A key deleted while the watch was away is in no delete event: the
/// operator forgets it because the fresh listing lacks it, and its gauges go.
#[tokio::test]
async fn a_key_deleted_while_its_watch_was_away_is_forgotten_after_the_watch_lists_again() {
    let _alone = ONE_AT_A_TIME.lock().await;
    with_temp_ns("relist", |ns| async move {
        let mut operator = operator_with_keys(&ns, &["kept", "gone"]).await;
        let shows = |text: &str, name: &str| {
            text.lines().any(|l| {
                l.starts_with("jwtkeys_published_keys") && l.contains(&format!("name=\"{name}\""))
            })
        };
        let text = metrics(&operator).await;
        assert!(shows(&text, "kept") && shows(&text, "gone"), "{text}");

        // The operator is frozen; the API server restarts, and then the key is deleted. A delete
        // before the restart would reach the frozen operator through its old connection, buffered
        // by the kernel. The restarted API server's watch cache starts at the present; a write of
        // an object the operator does not watch makes sure that is after the operator's last
        // resourceVersion, so its watch of the keys cannot resume and must list again.
        let before = api(&ns)
            .list(&Default::default())
            .await
            .expect("listing the keys")
            .metadata
            .resource_version
            .expect("a list's resourceVersion");
        let pid = i32::try_from(operator.pid().expect("the operator runs")).unwrap();
        signal(pid, "STOP");
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some("after-the-operator-stopped".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Lease>::namespaced(ns.client.clone(), &ns.name)
            .create(&PostParams::default(), &lease)
            .await
            .expect("creating a Lease the operator does not watch");
        restart_api_server();
        api(&ns)
            .delete("gone", &Default::default())
            .await
            .expect("deleting a key");
        wait_for("the key deleted", Duration::from_secs(30), || async {
            api(&ns).get_opt("gone").await.ok()?.is_none().then_some(())
        })
        .await;
        assert!(
            expired(&api(&ns), &before).await,
            "the restarted API server cannot resume a key watch from before the operator stopped"
        );
        signal(pid, "CONT");

        let text = wait_for(
            "the deleted key's gauges gone",
            Duration::from_secs(30),
            || async {
                let text = metrics(&operator).await;
                (!shows(&text, "gone")).then_some(text)
            },
        )
        .await;
        assert!(shows(&text, "kept"), "the other key's gauges stay:\n{text}");
        let logs = operator.logs();
        assert!(
            logs.lines()
                .any(|l| l.contains("watch=JwtSigningKeys")
                    && l.contains("too old resource version")),
            "the key watch could not resume and listed again:\n{logs}"
        );
        assert!(operator.is_running(), "the operator never exited");
        operator.kill();
    })
    .await;
}

/// Whether a watch of `api` from `version` ends at once with 410 Gone (Expired).
async fn expired(api: &Api<JwtSigningKey>, version: &str) -> bool {
    match api.watch(&WatchParams::default().timeout(1), version).await {
        Err(kube::Error::Api(status)) => status.code == 410,
        Err(_) => false,
        Ok(events) => matches!(
            std::pin::pin!(events).try_next().await,
            Ok(Some(WatchEvent::Error(status))) if status.code == 410
        ),
    }
}
