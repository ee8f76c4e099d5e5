//! The operator binary run as a child process against the test cluster, as the product runs it: with a
//! token of the chart's ServiceAccount and the RBAC the chart renders for the process's scope; its
//! output kept in a file.

use std::{
    fs::OpenOptions,
    io::Write,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
};

use super::identity::{ChartIdentity, Scope};

/// A running `jwt-key-operator run` process. Killed when dropped (then its RBAC is deleted); its log is
/// printed if the test is failing at that moment.
pub struct OperatorProcess {
    args: Vec<String>,
    child: Option<Child>,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
    // Dropped after the process is killed (fields drop after `Drop::drop`).
    identity: Arc<ChartIdentity>,
    namespace: String,
    /// Skip the refusal check on drop (see [`OperatorProcess::tolerate_refusals`]).
    refusals_expected: bool,
    /// `POD_NAME` of every process started (the Lease holder identity), as a container of a pod has
    /// it through each restart; `None` leaves the operator's own default (host name and process id).
    pod_name: Option<String>,
}

impl OperatorProcess {
    /// Refusals in the log do not fail the test: a restarted API server answers 403 until its
    /// RBAC caches have synced, which is not a missing right.
    pub fn tolerate_refusals(&mut self) {
        self.refusals_expected = true;
    }

    /// Starts `jwt-key-operator run --watch-namespace <ns>... --leader-election=false --http-port 0
    /// <extra_args>` with `RUST_LOG=info`, authenticated as a ServiceAccount of its own that holds what
    /// the chart grants for these arguments: Roles in the watched namespaces (a ClusterRole when there
    /// are none), the Lease named by `--leader-election-id` when `--leader-election=true`. The
    /// ServiceAccount lives where the chart would be installed: the Lease's namespace, else the first
    /// watched namespace (`default` for neither), which is also the process's `POD_NAMESPACE`.
    /// Processes started with the same scope while one runs (replicas) share the ServiceAccount.
    pub fn start(namespaces: &[&str], extra_args: &[&str]) -> OperatorProcess {
        Self::start_with_pod_name(None, namespaces, extra_args)
    }

    /// As [`OperatorProcess::start`], with `POD_NAME` set to `pod_name` in this process and in every
    /// restart, as the container of one pod: the Lease holder identity survives a restart.
    pub fn start_in_pod(
        pod_name: &str,
        namespaces: &[&str],
        extra_args: &[&str],
    ) -> OperatorProcess {
        Self::start_with_pod_name(Some(pod_name), namespaces, extra_args)
    }

    /// Sets `POD_NAME` for the next start (`None`: the operator's default), as a pod that replaces
    /// another.
    pub fn set_pod_name(&mut self, pod_name: Option<&str>) {
        self.pod_name = pod_name.map(String::from);
    }

    fn start_with_pod_name(
        pod_name: Option<&str>,
        namespaces: &[&str],
        extra_args: &[&str],
    ) -> OperatorProcess {
        let mut args = vec!["run".to_string()];
        for ns in namespaces {
            args.extend(["--watch-namespace".to_string(), ns.to_string()]);
        }
        args.extend(["--leader-election=false", "--http-port", "0"].map(String::from));
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let scope = scope_of(&args);
        let identity = ChartIdentity::for_scope(&scope);
        let log_dir = tempfile::tempdir().expect("creating a temp dir for the operator log");
        let log_path = log_dir.path().join("operator.log");
        let mut operator = OperatorProcess {
            args,
            child: None,
            log_path,
            _log_dir: log_dir,
            identity,
            namespace: scope.namespace,
            refusals_expected: false,
            pod_name: pod_name.map(String::from),
        };
        operator.spawn();
        operator
    }

    fn spawn(&mut self) {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("opening the operator log");
        let _ = writeln!(
            log,
            "----- jwt-key-operator {} (as ServiceAccount {}/{})",
            self.args.join(" "),
            self.namespace,
            self.identity.service_account
        );
        let stderr = log.try_clone().expect("cloning the operator log handle");
        let mut command = Command::new(env!("CARGO_BIN_EXE_jwt-key-operator"));
        // Only the arguments choose the scope, never the shell's environment.
        for var in [
            "WATCH_NAMESPACES",
            "LEADER_ELECTION",
            "LEADER_ELECTION_NAMESPACE",
            "LEADER_ELECTION_ID",
            "POD_NAME",
        ] {
            command.env_remove(var);
        }
        if let Some(pod_name) = &self.pod_name {
            command.env("POD_NAME", pod_name);
        }
        let child = command
            .args(&self.args)
            .env("KUBECONFIG", self.identity.kubeconfig())
            .env("POD_NAMESPACE", &self.namespace)
            .env(
                "RUST_LOG",
                std::env::var("JKO_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .expect("starting jwt-key-operator");
        self.child = Some(child);
    }

    /// Kills the process at once (SIGKILL), as a crash or an evicted pod would end it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.mark_log("killed");
        }
    }

    /// Appends a line to the log that separates one process's output from the next one's.
    fn mark_log(&self, what: &str) {
        if let Ok(mut log) = OpenOptions::new().append(true).open(&self.log_path) {
            let _ = writeln!(log, "----- {what}");
        }
    }

    /// Stops the process as a rolling update does (SIGTERM, then waits for it to exit).
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            self.mark_log("terminated");
        }
    }

    /// Stops the process with SIGTERM and starts it again with the same arguments, as a rolling
    /// update replaces a pod; the log continues.
    pub fn restart_gracefully(&mut self) {
        self.terminate();
        self.spawn();
    }

    /// Kills the process if it runs and starts it again with the same arguments; the log continues.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The user the API server sees: `system:serviceaccount:<namespace>:<service account>` (the
    /// `user.username` of its requests in the audit log).
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.identity.service_account
        )
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the process (and earlier runs of it) wrote to stdout and stderr.
    pub fn logs(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for OperatorProcess {
    /// Kills the process. A test that passed still fails here when the API server refused the operator
    /// a right (the operator retries, so a missing verb might otherwise go unnoticed).
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "===== jwt-key-operator log ({}) =====\n{}",
                self.log_path.display(),
                self.logs()
            );
            return;
        }
        if self.refusals_expected {
            return;
        }
        let logs = self.logs();
        let refused: Vec<&str> = logs.lines().filter(|line| is_refusal(line)).collect();
        assert!(
            refused.is_empty(),
            "the API server refused the operator a right the chart does not grant:\n{}\n\
             ===== jwt-key-operator log ({}) =====\n{logs}",
            refused.join("\n"),
            self.log_path.display(),
        );
    }
}

/// A log line reporting that the API server refused the operator's ServiceAccount: an RBAC denial
/// (`... is forbidden: User "system:serviceaccount:..." cannot ...`), or the owner-reference check
/// for lack of the `finalizers` right. Not a refusal: the same check failing with "cannot find
/// RESTMapping", which only says that the API server's admission has not discovered a CRD
/// installed a moment before (the operator retries, and the next write passes).
fn is_refusal(line: &str) -> bool {
    (line.contains("forbidden") && line.contains("system:serviceaccount:"))
        || (line.contains("cannot set blockOwnerDeletion")
            && !line.contains("cannot find RESTMapping"))
}

/// What the chart must grant for `jwt-key-operator` arguments `args`: the watched namespaces, and the
/// Lease and its namespace when leader election is on (the last occurrence of a flag wins, as in clap).
fn scope_of(args: &[String]) -> Scope {
    let mut watch_namespaces: Vec<String> = Vec::new();
    let mut leader_election = true;
    let mut lease = "jwt-key-operator".to_string();
    let mut lease_namespace = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        let takes_value = matches!(
            flag,
            "--watch-namespace"
                | "--leader-election"
                | "--leader-election-id"
                | "--leader-election-namespace"
        );
        if !takes_value {
            continue;
        }
        let value = inline
            .or_else(|| rest.next().cloned())
            .unwrap_or_else(|| panic!("{flag} without a value"));
        match flag {
            "--watch-namespace" => {
                watch_namespaces.extend(value.split(',').map(String::from));
            }
            "--leader-election" => leader_election = value == "true",
            "--leader-election-id" => lease = value,
            _ => lease_namespace = Some(value),
        }
    }
    let namespace = lease_namespace
        .or_else(|| watch_namespaces.first().cloned())
        .unwrap_or_else(|| "default".into());
    Scope {
        watch_namespaces,
        lease: leader_election.then_some(lease),
        namespace,
    }
}
