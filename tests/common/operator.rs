//! The operator binary run as a child process against the test cluster, its output kept in a file.

use std::{
    fs::OpenOptions,
    io::Write,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

/// A running `jwt-key-operator run` process. Killed when dropped; its log is printed if the test is
/// failing at that moment.
pub struct OperatorProcess {
    args: Vec<String>,
    child: Option<Child>,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl OperatorProcess {
    /// Starts `jwt-key-operator run --watch-namespace <ns>... --leader-election=false --http-port 0
    /// <extra_args>` with the test kubeconfig and `RUST_LOG=info`.
    pub fn start(namespaces: &[&str], extra_args: &[&str]) -> OperatorProcess {
        let mut args = vec!["run".to_string()];
        for ns in namespaces {
            args.extend(["--watch-namespace".to_string(), ns.to_string()]);
        }
        args.extend(["--leader-election=false", "--http-port", "0"].map(String::from));
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let log_dir = tempfile::tempdir().expect("creating a temp dir for the operator log");
        let log_path = log_dir.path().join("operator.log");
        let mut operator = OperatorProcess {
            args,
            child: None,
            log_path,
            _log_dir: log_dir,
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
        let _ = writeln!(log, "----- jwt-key-operator {}", self.args.join(" "));
        let stderr = log.try_clone().expect("cloning the operator log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_jwt-key-operator"))
            .args(&self.args)
            .env("KUBECONFIG", super::kubeconfig_path())
            .env("RUST_LOG", "info")
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
            if let Ok(mut log) = OpenOptions::new().append(true).open(&self.log_path) {
                let _ = writeln!(log, "----- killed");
            }
        }
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
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "===== jwt-key-operator log ({}) =====\n{}",
                self.log_path.display(),
                self.logs()
            );
        }
    }
}
