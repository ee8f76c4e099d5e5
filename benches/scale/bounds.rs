//! The bounds of the quick mode (checked when run without `--bench`: N = 100 keys, M = 50
//! namespaces), every scenario's in one place. Measured on a 2-core machine shared with other
//! builds, debug build (as `cargo test` builds the operator); set with headroom so that a real
//! regression fails, not a busy machine. Measured with RS256 keys, as the suite runs it; the two
//! bounds relative to the keygen floor apply to RSA keys only (`Scale::floor_bounds`): an EC or
//! Ed25519 key generates in microseconds, and its storm is bound by the API server instead.

/// All N keys Ready within this many times the keygen floor (mean keygen CPU × N / cores): key
/// generation is the floor, everything else (API round trips, encoding, status, the API server
/// and etcd on the same cores) is overhead. Measured 1.33 on a quiet control plane, 1.94 and 2.61
/// in CI runs, where the API server and etcd are also busy with what earlier tests left (0.87 cores
/// besides the operator's in the 2.61 run, against 0.40 on a quiet one).
pub const QUICK_READY_OVER_FLOOR: f64 = 3.5;

/// Operator CPU per key created, in keygen CPU times (phase 1's CPU, not its wall-time median,
/// which grows with the machine's load): one generation, plus encoding and API traffic.
pub const QUICK_CPU_PER_KEY_OVER_KEYGEN: f64 = 1.8;

/// Largest gap between Lease renewals during the storm, in renew deadlines (at 1.0 the leader has
/// fenced itself and exits).
pub const QUICK_LEASE_GAP_OVER_DEADLINE: f64 = 0.5;

/// Peak RSS of the operator after the storm, MiB (debug build; 34.7 measured at 100 keys).
pub const QUICK_PEAK_RSS_MIB: f64 = 48.0;

/// Idle: requests per key per hour, the Lease's excepted (watch restarts only; nothing is polled).
pub const QUICK_IDLE_REQUESTS_PER_KEY_HOUR: f64 = 10.0;

/// Idle: writes per key per hour, the Lease's excepted.
pub const QUICK_IDLE_WRITES_PER_KEY_HOUR: f64 = 0.0;

/// Idle: Lease requests per hour (a renewal is a get and a patch every 2 s: 3600).
pub const QUICK_IDLE_LEASE_REQUESTS_PER_HOUR: f64 = 4000.0;

/// Writes per key created in the storm, the Lease's excepted: 5 measured (Secret 2, ConfigMap,
/// status, one event), one more allowed for retried writes.
pub const QUICK_STORM_WRITES_PER_KEY: f64 = 6.0;

/// Reads (GETs and LISTs, the Lease's and the watches' excepted) per key created in the storm:
/// reconciles read the watch caches and know the status they wrote, so a new key needs no read.
pub const QUICK_STORM_READS_PER_KEY: f64 = 0.5;

/// Writes per rotation (Secret, ConfigMap, status, JwtSigningKey; events apart), one namespace:
/// the contract's least, 6 (Secret 2, ConfigMap 2, status 2), plus two retried writes over the 5
/// rotations of the quick mode.
pub const QUICK_WRITES_PER_ROTATION: f64 = 6.4;

/// Fan-out: seconds from key created until the copy is in all M namespaces.
pub const QUICK_FANOUT_CREATE_SECS: f64 = 30.0;

/// Fan-out: seconds from the rotate request until the new kid is in all M copies.
pub const QUICK_FANOUT_ROTATE_SECS: f64 = 30.0;

/// Every restart: seconds from spawn until the watches are synced; after SIGTERM (the old process
/// hands the Lease back) and after SIGKILL in the same pod (the same holder identity), also until
/// the new process leads.
pub const QUICK_RESTART_SYNC_SECS: f64 = 10.0;

/// Restart after SIGKILL (a crash) in a new pod, spawn until the new process leads: the Lease of
/// the killed process runs out first (LEASE_SECONDS), then at most 10 s. Its watches sync meanwhile
/// (QUICK_RESTART_SYNC_SECS).
pub const QUICK_CRASH_LEADER_SECS: f64 = crate::setup::LEASE_SECONDS as f64 + 10.0;

/// Exits of the operator (it exits on purpose when its Lease renewals miss the renew deadline).
pub const QUICK_STORM_EXITS: f64 = 0.0;

/// Restart: writes (the Lease's excepted) for keys that are in sync.
pub const QUICK_RESTART_WRITES: f64 = 0.0;
