//! End-to-end on pods: the Helm chart runs the operator image on the test node, and the example
//! services run as pods that mount what the operator writes, so the kubelet's real volume updates are
//! what the services see.
//!
//! Needs the node (`tests/control-plane/up --node`, or `JKO_NODE=1 scripts/test`): kubelet,
//! kube-scheduler and containerd, with the images `localhost/jwt-key-operator:dev` and
//! `localhost/jwt-keys-examples:dev` imported. Without a node every test here prints why it is
//! skipped and passes; with `JKO_NODE=1` a missing node fails them.
//!
//! The host reaches pod IPs directly (the node's bridge), so the client here is "outside the pods".
//! Processes in the containers are inspected from the host through `/proc` (the tests run as root on
//! the node's machine): user, capabilities, seccomp and the read-only root are checked where they
//! take effect, and files are read through the container's own mount namespace.

mod common;
mod support;

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{install_crd, random_suffix, wait_for, with_temp_ns};
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{ConfigMap, EnvVar, Namespace, Pod},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OPERATOR_REPOSITORY: &str = "localhost/jwt-key-operator";
const OPERATOR_TAG: &str = "dev";
const EXAMPLES_IMAGE: &str = "localhost/jwt-keys-examples:dev";
/// Pods start in seconds (images are local); the first start on a busy machine takes longer.
const POD_START: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The node

/// Skips the test (returns from it) when there is no node, saying why.
macro_rules! require_node {
    ($client:expr) => {
        if let Some(reason) = common::missing_node($client).await {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Pods

/// Pods of namespace `ns` matching `selector`.
async fn pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .expect("listing pods")
        .items
}

fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Waits until exactly `count` pods match `selector`, all Running and Ready, and returns them.
async fn wait_pods_ready(client: &Client, ns: &str, selector: &str, count: usize) -> Vec<Pod> {
    wait_for(
        &format!("{count} pod(s) {selector} in {ns} Running and Ready"),
        POD_START,
        || async {
            let pods = pods(client, ns, selector).await;
            (pods.len() == count && pods.iter().all(is_ready)).then_some(pods)
        },
    )
    .await
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a Running pod has an IP")
}

/// The container id (without `containerd://`) of the pod's first container.
fn container_id(pod: &Pod) -> String {
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.container_id.clone())
        .expect("a running container has an id");
    id.rsplit("://").next().unwrap_or(&id).to_string()
}

/// The host pid of the main process of container `id`: the process in that container's cgroup whose
/// parent is not in it.
fn container_pid(id: &str) -> Option<u32> {
    let in_container = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(id))
    };
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || !in_container(&name) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{name}/stat")).ok()?;
        // Field 4 (after the parenthesised command) is the parent pid.
        let ppid = stat.rsplit(')').next()?.split_whitespace().nth(1)?;
        if !in_container(ppid) {
            return name.parse().ok();
        }
    }
    None
}

/// Waits for the main process of the pod's (current) container.
async fn wait_container_pid(pod: &Pod) -> u32 {
    let id = container_id(pod);
    wait_for(
        &format!("the process of container {id}"),
        Duration::from_secs(10),
        || async { container_pid(&id) },
    )
    .await
}

/// `Name:\tvalue` from `/proc/<pid>/status`.
fn proc_status(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no {field}"))
}

/// Checks, on the running process, the restricted security context the chart asks for: non-root
/// 65532, no capabilities, no privilege escalation, a seccomp filter, a read-only root file system.
fn assert_restricted(pid: u32, what: &str) {
    let uids: Vec<String> = proc_status(pid, "Uid")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(uids.iter().all(|u| u == "65532"), "{what}: uids {uids:?}");
    let gids: Vec<String> = proc_status(pid, "Gid")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(gids.iter().all(|g| g == "65532"), "{what}: gids {gids:?}");
    for caps in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(
            proc_status(pid, caps),
            "0000000000000000",
            "{what}: {caps} not empty"
        );
    }
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1", "{what}: NoNewPrivs");
    // 2: a seccomp filter (RuntimeDefault) is installed.
    assert_eq!(proc_status(pid, "Seccomp"), "2", "{what}: Seccomp mode");
    let mountinfo =
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("reading mountinfo");
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("a root mount");
    let options = root.split_whitespace().nth(5).unwrap_or_default();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "{what}: root mounted {options}"
    );
}

// ---------------------------------------------------------------------------------------------
// The chart

fn chart_dir() -> PathBuf {
    common::repo_root().join("charts/jwt-key-operator")
}

/// `helm install` of the chart from the local image, into `ns`, watching `watch`; waits for nothing.
fn helm_install(release: &str, ns: &str, watch: &[&str], extra: &[&str]) {
    let chart = chart_dir();
    let watch = format!("watchNamespaces={{{}}}", watch.join(","));
    let repository = format!("image.repository={OPERATOR_REPOSITORY}");
    let tag = format!("image.tag={OPERATOR_TAG}");
    let mut args = vec![
        "install",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        ns,
        "--set",
        &repository,
        "--set",
        &tag,
        "--set",
        "image.pullPolicy=Never",
        // The CRD is cluster-wide and shared by parallel tests; common::install_crd applies it.
        "--set",
        "crds.enabled=false",
        "--set",
        &watch,
    ];
    for value in extra {
        args.extend(["--set", value]);
    }
    let output = common::helm().args(&args).output().expect("running helm");
    assert!(
        output.status.success(),
        "helm {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
}

/// Deletes the JwtSigningKey `auth` while the operator still runs (its finalizer needs the
/// operator), then `helm uninstall`s the release, so that its cluster-wide RBAC goes with the test
/// and the namespace can be deleted.
async fn clean_up(ns: &common::TestNamespace, release: &str) {
    let keys = api(ns);
    let _ = keys.delete("auth", &DeleteParams::default()).await;
    wait_for("the JwtSigningKey to be finalized", REACT, || async {
        keys.get_opt("auth").await.ok()?.is_none().then_some(())
    })
    .await;
    let _ = common::helm()
        .args([
            "uninstall",
            release,
            "--namespace",
            &ns.name,
            "--wait=false",
        ])
        .output();
}

/// A GET through the API server (for example its service or pod proxy), as text.
async fn api_get(client: &Client, path: &str) -> Result<String, kube::Error> {
    let request = http::Request::get(path).body(Vec::new()).unwrap();
    client.request_text(request).await
}

async fn lease_holder(client: &Client, ns: &str, name: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??
        .spec?
        .holder_identity
}

async fn label_namespace(client: &Client, ns: &str, metadata: serde_json::Value) {
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": metadata })),
        )
        .await
        .expect("patching the namespace");
}

#[tokio::test]
async fn chart_runs_two_replicas_as_pods_and_the_leader_hands_over() {
    with_temp_ns("pods-chart", |ns| async move {
        require_node!(&ns.client);
        install_crd(&ns.client).await;
        // The API server's Pod Security admission refuses any pod that is not "restricted".
        label_namespace(
            &ns.client,
            &ns.name,
            json!({"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}),
        )
        .await;
        let release = format!("jwt-key-operator-{}", random_suffix(5));
        let lease_seconds = 6;
        helm_install(
            &release,
            &ns.name,
            &[&ns.name],
            &[
                "replicaCount=2",
                &format!("leaderElection.leaseDurationSeconds={lease_seconds}"),
            ],
        );
        let selector = format!("app.kubernetes.io/instance={release}");
        let started = Instant::now();
        let running = wait_pods_ready(&ns.client, &ns.name, &selector, 2).await;
        eprintln!(
            "figure: two operator pods Running and Ready {:.1?} after helm install",
            started.elapsed()
        );
        let names: BTreeSet<String> = running.iter().map(pod_name).collect();

        // The restricted security context is in force on both processes.
        for pod in &running {
            let pid = wait_container_pid(pod).await;
            assert_restricted(pid, &pod_name(pod));
        }

        // One leader, named by the Lease; it does the work.
        let leader = wait_for("a Lease held by one of the pods", REACT, || async {
            lease_holder(&ns.client, &ns.name, &release)
                .await
                .filter(|holder| names.contains(holder))
        })
        .await;
        let before = create_ready(&ns, &jsk("auth", json!({"propagationDelay": "2s"}))).await;

        // Metrics through the API server's service proxy (the metrics Service's endpoints are the
        // pods; it picks either, and a standby has no samples yet), then from the leader through the
        // pod proxy: the leader counts the key it generated and published.
        let service = format!(
            "/api/v1/namespaces/{}/services/{release}-metrics:http-metrics/proxy/metrics",
            ns.name
        );
        let text = wait_for("metrics through the service proxy", REACT, || async {
            api_get(&ns.client, &service).await.ok()
        })
        .await;
        assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text: {text}");
        let leader_metrics = api_get(
            &ns.client,
            &format!("/api/v1/namespaces/{}/pods/{leader}:8080/proxy/metrics", ns.name),
        )
        .await
        .expect("leader metrics through the pod proxy");
        assert!(
            metric_sum(&leader_metrics, "jwtkeys_key_generation_seconds_count", "") >= 1.0
                && metric_sum(&leader_metrics, "jwtkeys_published_keys", "") >= 1.0,
            "{leader_metrics}"
        );

        // Kill the leader pod (deleted with no grace period: the kubelet stops its container at once
        // and the ReplicaSet makes a new pod with a new name); the standby takes the Lease when it
        // expires. (A container that merely crashes is restarted in the same pod, under the same
        // identity, and simply renews its own Lease.)
        let pods_api: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
        let killed = Instant::now();
        pods_api
            .delete(
                &leader,
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await
            .expect("deleting the leader pod");
        // The standby, or the ReplicaSet's replacement pod if it starts first: either way another
        // pod than the dead leader.
        let new_leader = wait_for(
            "another pod to take the Lease",
            Duration::from_secs(3 * lease_seconds),
            || async {
                lease_holder(&ns.client, &ns.name, &release)
                    .await
                    .filter(|holder| *holder != leader)
            },
        )
        .await;
        let takeover = killed.elapsed();
        eprintln!(
            "figure: {new_leader} took the Lease {takeover:.1?} after the leader pod was killed (lease {lease_seconds}s)"
        );
        assert!(
            takeover <= Duration::from_secs(lease_seconds + 3),
            "takeover within the lease duration (plus the retry period): {takeover:?}"
        );
        annotate(&ns, "auth", json!({"jwtkeys.dev/rotate": "after-failover"})).await;
        wait_new_signing_key(&ns, "auth", &before).await;

        // The replacement pod comes up Ready; the new leader keeps the Lease.
        let now = wait_pods_ready(&ns.client, &ns.name, &selector, 2).await;
        assert!(now.iter().all(|p| pod_name(p) != leader));
        assert!(now.iter().any(|p| pod_name(p) == new_leader));
        assert_eq!(
            lease_holder(&ns.client, &ns.name, &release).await.as_deref(),
            Some(new_leader.as_str())
        );
        clean_up(&ns, &release).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The example services

/// The Deployment of an example service manifest (`examples/services/<file>`), pointed at the local
/// examples image with `env` overrides; it is created as shipped otherwise (replicas, probes,
/// restricted security context, the volume).
fn example_deployment(file: &str, env: &[(&str, &str)]) -> Deployment {
    let path = common::repo_root().join("examples/services").join(file);
    let yaml = std::fs::read_to_string(&path).expect("reading the example manifest");
    let mut deployment: Deployment = serde_saphyr::from_multiple::<serde_json::Value>(&yaml)
        .expect("valid YAML")
        .into_iter()
        .find(|doc| doc["kind"] == "Deployment")
        .map(|doc| serde_json::from_value(doc).expect("a valid Deployment"))
        .expect("the manifest has a Deployment");
    let container = &mut deployment.spec.template.spec.as_mut().unwrap().containers[0];
    container.image = Some(EXAMPLES_IMAGE.into());
    container.image_pull_policy = Some("Never".into());
    let vars = container.env.get_or_insert_with(Vec::new);
    for (name, value) in env {
        vars.retain(|v| v.name != *name);
        vars.push(EnvVar {
            name: name.to_string(),
            value: Some(value.to_string()),
            ..Default::default()
        });
    }
    deployment
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
async fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("writing to {address}: {e}"))?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .map_err(|e| format!("reading from {address}: {e}"))?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no HTTP status from {address}: {response:?}"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("{method} {address}{path} timed out"))?
}

/// Successive contents of a file or object, each with the moment it was first seen.
type Versions = Vec<(Instant, String)>;

/// p-th percentile (nearest rank) of sorted `values`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test]
async fn services_on_pods_verify_every_token_across_rotations() {
    with_temp_ns("pods-services", |ns| async move {
        require_node!(&ns.client);
        install_crd(&ns.client).await;
        // The API service's namespace: selected by the key's publish selector, and accepting copies
        // of this key (consent annotation).
        let api_ns = ns.extra("api", &[("jwks", &ns.name)]).await;
        label_namespace(
            &ns.client,
            &api_ns,
            json!({"annotations": {"jwtkeys.dev/accept-from": format!("{}/auth", ns.name)}}),
        )
        .await;
        let release = format!("jwt-key-operator-{}", random_suffix(5));
        helm_install(&release, &ns.name, &[&ns.name, &api_ns], &[]);
        wait_pods_ready(&ns.client, &ns.name, &format!("app.kubernetes.io/instance={release}"), 1).await;

        // Rotations every 2 minutes, each key published 100 s before it signs: longer than the
        // kubelet's default sync period (1 minute) plus its jitter, which the figures below measure.
        let rotation = Duration::from_secs(120);
        let key = jsk(
            "auth",
            json!({
                "rotationInterval": "120s",
                "propagationDelay": "100s",
                "maxTokenLifetime": "30s",
                "publish": {"namespaceSelector": {"matchLabels": {"jwks": ns.name}}}
            }),
        );
        let first = create_ready(&ns, &key).await;
        wait_for("the ConfigMap copy in the API namespace", REACT, || async {
            config_map_data(&ns.client, &api_ns, "auth-jwks").await
        })
        .await;

        // Every version of the API namespace's ConfigMap, as the watch delivers it (the write time).
        let writes: Arc<Mutex<Versions>> = Arc::default();
        let watch = {
            let writes = writes.clone();
            let api: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &api_ns);
            let config = watcher::Config::default().fields("metadata.name=auth-jwks");
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(watcher(api, config).applied_objects());
                while let Some(Ok(cm)) = stream.next().await {
                    let jwks = cm.data.unwrap_or_default().remove("jwks.json").unwrap_or_default();
                    let mut writes = writes.lock().unwrap();
                    if writes.last().is_none_or(|(_, last)| *last != jwks) {
                        writes.push((Instant::now(), jwks));
                    }
                }
            })
        };

        // The example services as shipped in examples/services, two replicas each: the auth service
        // mounts the Secret here, the API service the ConfigMap copy in the other namespace.
        Api::<Deployment>::namespaced(ns.client.clone(), &ns.name)
            .create(
                &PostParams::default(),
                &example_deployment("auth-service.yaml", &[("TOKEN_TTL_SECONDS", "30")]),
            )
            .await
            .expect("creating the auth service");
        Api::<Deployment>::namespaced(ns.client.clone(), &api_ns)
            .create(&PostParams::default(), &example_deployment("api-service.yaml", &[]))
            .await
            .expect("creating the API service");
        let auth_pods = wait_pods_ready(&ns.client, &ns.name, "app.kubernetes.io/name=auth-service", 2).await;
        let api_pods = wait_pods_ready(&ns.client, &api_ns, "app.kubernetes.io/name=api-service", 2).await;
        let mut api_pids = Vec::new();
        for pod in auth_pods.iter().chain(&api_pods) {
            let pid = wait_container_pid(pod).await;
            assert_restricted(pid, &pod_name(pod));
            if api_pods.contains(pod) {
                api_pids.push(pid);
            }
        }
        let auth_addresses: Vec<String> = auth_pods.iter().map(|p| format!("{}:8080", pod_ip(p))).collect();
        let api_addresses: Vec<String> = api_pods.iter().map(|p| format!("{}:8080", pod_ip(p))).collect();

        // What each API service process sees in its mount, read through its own root.
        let seen: Arc<Mutex<Vec<Versions>>> =
            Arc::new(Mutex::new(vec![Vec::new(); api_pids.len()]));
        let poll = {
            let seen = seen.clone();
            let paths: Vec<String> = api_pids
                .iter()
                .map(|pid| format!("/proc/{pid}/root/var/run/jwks/jwks.json"))
                .collect();
            tokio::spawn(async move {
                loop {
                    for (i, path) in paths.iter().enumerate() {
                        if let Ok(text) = std::fs::read_to_string(path) {
                            let mut seen = seen.lock().unwrap();
                            if seen[i].last().is_none_or(|(_, last)| *last != text) {
                                seen[i].push((Instant::now(), text));
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };

        // The client: a token from the auth service, then a call to the API service with it, over and
        // over, until tokens from three rotated keys have been verified.
        let started = Instant::now();
        let mut signed_by: Vec<String> = Vec::new();
        let mut calls = 0u32;
        let mut failures: Vec<String> = Vec::new();
        let deadline = started + 3 * rotation + Duration::from_secs(240);
        while signed_by.len() < 4 {
            assert!(Instant::now() < deadline, "three rotations took too long; kids used: {signed_by:?}");
            let auth_address = &auth_addresses[calls as usize % auth_addresses.len()];
            let api_address = &api_addresses[(calls as usize / 2) % api_addresses.len()];
            let token = match http(auth_address, "POST", "/token", "Content-Type: application/json\r\n", r#"{"sub":"alice"}"#).await {
                Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body).expect("token JSON"),
                other => panic!("the auth service failed: {other:?}"),
            };
            let kid = token["kid"].as_str().expect("kid").to_string();
            let bearer = format!("Authorization: Bearer {}\r\n", token["access_token"].as_str().unwrap());
            calls += 1;
            match http(api_address, "GET", "/hello", &bearer, "").await {
                Ok((200, body)) => assert!(body.contains(&kid), "{body}"),
                other => failures.push(format!("{:.1?} kid {kid}: {other:?}", started.elapsed())),
            }
            // The two auth replicas see a new Secret at different moments, so for a while tokens
            // come from the old and the new key alike: count each key once, in order of first use.
            if !signed_by.contains(&kid) {
                eprintln!("{:.1?}: tokens now signed by {kid}", started.elapsed());
                signed_by.push(kid);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        watch.abort();
        poll.abort();
        assert_eq!(signed_by[0], first);
        eprintln!("figure: {calls} calls over {:.0?}, {} rotations, {} failed verifications", started.elapsed(), signed_by.len() - 1, failures.len());
        assert!(failures.is_empty(), "failed verifications: {failures:#?}");

        // Propagation: from each ConfigMap write to the moment the pod's file holds that content.
        let writes = writes.lock().unwrap().clone();
        let seen = seen.lock().unwrap().clone();
        let mut delays: Vec<Duration> = Vec::new();
        let mut skipped = 0;
        for (written, content) in writes.iter().skip(1) {
            for pod in &seen {
                match pod.iter().find(|(at, text)| text == content && at >= written) {
                    Some((at, _)) => delays.push(*at - *written),
                    None => skipped += 1,
                }
            }
        }
        delays.sort();
        assert!(delays.len() >= 3, "at least three ConfigMap updates reached the pod: {delays:?}");
        let p50 = percentile(&delays, 50.0);
        let p95 = percentile(&delays, 95.0);
        let max = *delays.last().unwrap();
        eprintln!(
            "figure: kubelet ConfigMap propagation over {} pod updates ({skipped} versions superseded before they reached a pod): p50 {p50:.1?}, p95 {p95:.1?}, max {max:.1?} (syncFrequency 1m, configMapAndSecretChangeDetectionStrategy Watch: the kubelet's defaults)",
            delays.len()
        );
        assert!(max < Duration::from_secs(100), "a ConfigMap update took longer than propagationDelay: {max:?}");
        clean_up(&ns, &release).await;
    })
    .await;
}
