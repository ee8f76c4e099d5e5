//! The size of a run (quick or full), the storm operator's Lease, and what every phase after the
//! first is given.

use std::time::Duration;

use jwt_key_operator::{controller::SERIES_WINDOW, crd::Algorithm};
use serde_json::{Value, json};

use crate::{
    common::{AuditLog, TestNamespace},
    report::Report,
};

/// The storm operator's Lease; its duration is the operator's default, passed explicitly so that
/// the renew deadline printed is the one in force (two thirds of it; renewals every 2/15 of it).
pub const LEASE_NAME: &str = "jwt-key-operator-scale";
pub const LEASE_SECONDS: u64 = 15;

/// The size of a run: quick (as `cargo test --all-targets` runs it) or full (`--bench`).
pub struct Scale {
    pub full: bool,
    /// N
    pub keys: usize,
    /// M
    pub namespaces: usize,
    /// K
    pub keygen_runs: usize,
    /// W
    pub idle: Duration,
    /// Keys rotated in phase 5.
    pub rotations: usize,
    /// The algorithm of every key the bench creates (and of the generator of phase 1).
    pub algorithm: Algorithm,
    /// Phases 1 to 3 only (floor, storm, memory), to compare algorithms.
    pub storm_only: bool,
}

impl Scale {
    pub fn from_args() -> Scale {
        let full = std::env::args().any(|a| a == "--bench");
        let env = |name: &str, default: usize| -> usize {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let keys = env("JKO_SCALE_KEYS", if full { 1000 } else { 100 }).max(1);
        let algorithm = std::env::var("JKO_SCALE_ALGORITHM").map_or(Algorithm::RS256, |name| {
            serde_json::from_value(json!(name)).unwrap_or_else(|_| {
                panic!(
                    "JKO_SCALE_ALGORITHM={name}: not an algorithm (RS256, ES256, ES384, EdDSA, ...)"
                )
            })
        });
        Scale {
            full,
            keys,
            namespaces: env("JKO_SCALE_NAMESPACES", if full { 1000 } else { 50 }).max(1),
            // Full: as many generations as keys, so that the floor is the CPU time of N
            // generations, not an estimate from a sample of a skewed distribution.
            keygen_runs: if full { keys } else { 20 },
            // Full: long enough for the event recorder to forget the storm's events.
            idle: if full {
                SERIES_WINDOW + Duration::from_secs(40)
            } else {
                Duration::from_secs(30)
            },
            rotations: if full { 20 } else { 5 },
            algorithm,
            storm_only: std::env::var("JKO_SCALE_STORM_ONLY")
                .is_ok_and(|v| !v.is_empty() && v != "0"),
        }
    }

    /// Whether the keygen floor bounds the storm: RSA generation takes tens of milliseconds of
    /// CPU per key, EC and Ed25519 generation microseconds, so that their storm is all API
    /// round trips and a ratio to the floor says nothing.
    pub fn floor_bounds(&self) -> bool {
        self.algorithm.key_type() == jwt_key_operator::crd::KeyType::Rsa
    }

    /// A JwtSigningKey spec: `spec` with the run's algorithm.
    pub fn key_spec(&self, mut spec: Value) -> Value {
        spec["algorithm"] = json!(self.algorithm.as_str());
        spec
    }
}

/// What every phase after the first is given.
pub struct Bench<'a> {
    pub scale: &'a Scale,
    pub report: &'a Report,
    pub ns: TestNamespace,
    pub audit: Option<AuditLog>,
    pub keygen: Keygen,
    pub cores: usize,
    /// Keys created in the storm and the rotation sample, all in sync by the end of phase 5.
    pub keys: usize,
}

/// The floor of phase 1.
#[derive(Clone, Copy)]
pub struct Keygen {
    /// Median wall time of one generation.
    pub median_ms: f64,
    /// Mean CPU time of one generation.
    pub cpu_ms: f64,
}
