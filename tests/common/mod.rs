//! Integration-test harness: one real control plane per test run, a fresh namespace per test.
//!
//! Every test file starts with `mod common;`. [`client`] connects to the cluster named by `KUBECONFIG`,
//! or starts the repository's own control plane (`tests/control-plane/up`: etcd, kube-apiserver and
//! kube-controller-manager built from pinned Go modules) once per test process and connects to it.
//! [`with_temp_ns`] runs a test body in its own namespace, dumps that namespace when the body panics,
//! and deletes it afterwards. [`OperatorProcess`] runs the operator binary as the product runs: with a
//! token of the chart's ServiceAccount and only the RBAC the chart renders for the namespaces it
//! watches. Waiting is always [`wait_for`]: a condition polled against a deadline. [`AuditLog`] reads
//! what the operator asked of the API server, as the server recorded it ([`audit_log_path`]).
// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code, unused_imports)]

mod audit;
mod crd;
mod identity;
mod namespace;
mod operator;

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

pub use audit::{AuditLog, Counts, Request, RequestKind, audit_log_path, breakdown};
pub use crd::{TEST_MANAGER, apply_crd, install_crd};
pub use identity::{ChartIdentity, Scope};
pub use namespace::{TestNamespace, with_temp_ns};
pub use operator::OperatorProcess;

/// The Kubernetes version of the test control plane (`tests/control-plane/versions.env`), for helm
/// commands that do not ask the API server: a helm built from source otherwise assumes 1.20, which
/// the chart's kubeVersion refuses.
pub fn kube_version() -> String {
    let pins = std::fs::read_to_string(repo_root().join("tests/control-plane/versions.env"))
        .expect("tests/control-plane/versions.env");
    pins.lines()
        .find_map(|line| line.strip_prefix("KUBERNETES_VERSION="))
        .expect("KUBERNETES_VERSION in versions.env")
        .trim()
        .to_owned()
}

/// The repository root: the nearest ancestor of this crate that holds `tests/control-plane/up`.
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|dir| dir.join("tests/control-plane/up").is_file())
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// The kubeconfig the tests use: the first entry of `KUBECONFIG` if it names another cluster, otherwise
/// the one written by `tests/control-plane/up`, which is run (once per process) to make sure the
/// control plane is up.
pub fn kubeconfig_path() -> PathBuf {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG
        .get_or_init(|| {
            let ours = repo_root().join("target/control-plane/kubeconfig");
            let from_env = std::env::var_os("KUBECONFIG")
                .and_then(|paths| std::env::split_paths(&paths).next())
                .filter(|path| !path.as_os_str().is_empty());
            match from_env {
                Some(path) if path != ours => path,
                // Ours, or none: (re)start ours if needed; `up` is quick when it is running.
                _ => start_control_plane(),
            }
        })
        .clone()
}

/// Runs `tests/control-plane/up`, which is idempotent and serialises concurrent callers (parallel test
/// binaries) with a file lock, and returns the kubeconfig it reports.
fn start_control_plane() -> PathBuf {
    let up = repo_root().join("tests/control-plane/up");
    let started = Instant::now();
    let output = Command::new(&up)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|err| panic!("running {}: {err}", up.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} failed ({}):\n{stdout}",
        up.display(),
        output.status
    );
    let path = stdout
        .lines()
        .last()
        .and_then(|line| line.strip_prefix("export KUBECONFIG="))
        .unwrap_or_else(|| {
            panic!(
                "{} printed no `export KUBECONFIG=` line:\n{stdout}",
                up.display()
            )
        });
    eprintln!("control plane ready in {:.1?} ({path})", started.elapsed());
    PathBuf::from(path)
}

/// A client for the test cluster, authenticated as the cluster admin. Make one per test: a client
/// belongs to the tokio runtime that created it.
pub async fn client() -> Client {
    Client::try_from(admin_config().await).expect("building a kube client")
}

/// The admin client configuration, for tests that derive other identities from it (same server, same CA).
pub async fn admin_config() -> Config {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|err| panic!("reading kubeconfig {}: {err}", path.display()));
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|err| panic!("loading kubeconfig {}: {err}", path.display()))
}

/// Polls `f` every 150 ms until it returns `Some`, and returns that value; panics naming `what` when
/// `timeout` passes first.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// `kubectl` from the control plane's binaries, pointed at the test cluster.
pub fn kubectl() -> Command {
    control_plane_tool("kubectl")
}

/// `helm` from the control plane's binaries, pointed at the test cluster.
pub fn helm() -> Command {
    control_plane_tool("helm")
}

/// NAME from `target/control-plane/bin` (or from `PATH` when that folder does not exist, e.g. for a
/// cluster named by `KUBECONFIG`), with `KUBECONFIG` set.
fn control_plane_tool(name: &str) -> Command {
    let kubeconfig = kubeconfig_path();
    let bundled = repo_root().join("target/control-plane/bin").join(name);
    let mut command = if bundled.exists() {
        Command::new(bundled)
    } else {
        Command::new(name)
    };
    command.env("KUBECONFIG", kubeconfig);
    command
}

/// A random lowercase alphanumeric suffix of `len` characters for unique object names.
pub fn random_suffix(len: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut suffix = String::with_capacity(len);
    while suffix.len() < len {
        // RandomState is seeded randomly per instance: a dependency-free source of randomness.
        let mut bits = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        for _ in 0..8 {
            if suffix.len() == len {
                break;
            }
            suffix.push(ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char);
            bits /= ALPHABET.len() as u64;
        }
    }
    suffix
}

/// The node `tests/control-plane/node` registers.
pub const NODE: &str = "jko-node";

/// `None` when the test node is Ready; otherwise why the tests that need pods cannot run. With
/// `JKO_NODE=1` (set by `.ci/run`), a missing node is a failure rather than a reason to skip.
pub async fn missing_node(client: &Client) -> Option<String> {
    use k8s_openapi::api::core::v1::Node;
    let reason = match kube::Api::<Node>::all(client.clone()).get_opt(NODE).await {
        Ok(Some(node)) => {
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                return None;
            }
            format!("node {NODE} is not Ready")
        }
        Ok(None) => format!(
            "no node {NODE}: start one with `tests/control-plane/up --node` (or run `JKO_NODE=1 scripts/test`)"
        ),
        Err(err) => format!("cannot read node {NODE}: {err}"),
    };
    if std::env::var_os("JKO_NODE").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("JKO_NODE is set but {reason}");
    }
    Some(reason)
}
