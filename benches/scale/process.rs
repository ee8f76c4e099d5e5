//! The operator process, seen from /proc and its log: CPU time, memory, threads, exits.

use std::time::{Duration, Instant};

use crate::common::{self, OperatorProcess};

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process (also of one that exited and was not reaped yet), in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// The operator of phases 2-7, restarted when it exits as a Deployment's pod would be (a leader
/// whose Lease renewals miss the renew deadline exits on purpose); its exits are counted and its
/// CPU time is kept across them.
pub struct Supervised {
    pub process: OperatorProcess,
    /// Why each exit happened (the last error the process logged).
    pub exits: Vec<String>,
    pub cpu_of_exited: f64,
    pub last_cpu: f64,
    /// Most threads seen at a tick.
    pub peak_threads: usize,
}

impl std::ops::Deref for Supervised {
    type Target = OperatorProcess;

    fn deref(&self) -> &OperatorProcess {
        &self.process
    }
}

impl Supervised {
    pub fn new(process: OperatorProcess) -> Supervised {
        Supervised {
            process,
            exits: Vec::new(),
            cpu_of_exited: 0.0,
            last_cpu: 0.0,
            peak_threads: 0,
        }
    }

    /// Samples the CPU time; restarts the process if it exited.
    pub fn tick(&mut self) {
        if let Some(pid) = self.process.pid() {
            if let Some(cpu) = cpu_seconds(pid) {
                self.last_cpu = cpu;
            }
            let threads = status_field(pid, "Threads").unwrap_or(0.0) as usize;
            self.peak_threads = self.peak_threads.max(threads);
        }
        if self.process.is_running() {
            return;
        }
        let logs = self.process.logs();
        // `<time> ERROR <target>: <message> <fields>`: the message.
        let reason = logs
            .lines()
            .rev()
            .find_map(|l| l.split_once(" ERROR ")?.1.split_once(": "))
            .map_or("no error logged", |(_, message)| message)
            .to_string();
        println!("  !! the operator exited ({reason}); restarting it");
        self.exits.push(reason);
        self.cpu_of_exited += self.last_cpu;
        self.last_cpu = 0.0;
        self.process.restart();
    }

    /// CPU seconds of this process and of those that exited before it.
    pub fn cpu(&mut self) -> f64 {
        self.tick();
        self.cpu_of_exited + self.last_cpu
    }
}

/// A numeric field of /proc/PID/status (`VmHWM`, `VmRSS` in kB, `Threads`).
pub fn status_field(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
}

/// A `kB` field of /proc/PID/status (VmHWM, VmRSS), in MiB.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    status_field(pid, field).map_or(f64::NAN, |kib| kib / 1024.0)
}

pub fn count_in_log(operator: &OperatorProcess, needle: &str) -> usize {
    operator.logs().matches(needle).count()
}

pub async fn wait_log(operator: &OperatorProcess, needle: &str, count: usize, timeout: Duration) {
    common::wait_for(
        &format!("{count} × '{needle}' in the operator log"),
        timeout,
        || async { (count_in_log(operator, needle) >= count).then_some(()) },
    )
    .await;
}

/// Waits until the operator has logged no reconcile for `quiet` (at most `timeout`).
pub async fn settle(operator: &OperatorProcess, quiet: Duration, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last = count_in_log(operator, "reconciled");
    let mut since = Instant::now();
    while since.elapsed() < quiet && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = count_in_log(operator, "reconciled");
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

/// The operator's `jwtkeys_watches_synced` gauge, when it exports one.
pub fn watches_synced(metrics: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix("jwtkeys_watches_synced ")
            .and_then(|v| v.trim().parse().ok())
    })
}

/// utime + stime of what shares the cores with the operator during the storm, in seconds: the
/// control plane's processes and this bench (its create clients and watches).
pub fn others_cpu() -> Vec<(&'static str, f64)> {
    let state = concat!(env!("CARGO_MANIFEST_DIR"), "/target/control-plane");
    let of_pid_file = |file: &str| {
        std::fs::read_to_string(format!("{state}/{file}.pid"))
            .ok()
            .and_then(|pid| pid.trim().parse().ok())
            .and_then(cpu_seconds)
            .unwrap_or_default()
    };
    vec![
        ("kube-apiserver", of_pid_file("kube-apiserver")),
        ("etcd", of_pid_file("etcd")),
        (
            "kube-controller-manager",
            of_pid_file("kube-controller-manager"),
        ),
        (
            "bench clients",
            cpu_seconds(std::process::id()).unwrap_or_default(),
        ),
    ]
}

/// CPU time of the calling thread, in seconds, to the nanosecond (`CLOCK_THREAD_CPUTIME_ID`): an EC
/// or Ed25519 generation takes tens of microseconds, and /proc counts utime + stime in 10 ms clock
/// ticks.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn thread_cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `now` is, and keeps no pointer to it.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if result == 0 {
        now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
    } else {
        f64::NAN
    }
}

/// utime + stime of the calling thread, in seconds.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rfind(')')
        .map(|end| stat[end + 1..].split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / clock_ticks(),
        _ => f64::NAN,
    }
}
