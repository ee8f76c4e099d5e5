//! Phase 1, the floor: the operator's own generator for the run's algorithm, in-process.

use std::time::Instant;

use jwt_key_operator::keys::KeyPair;

use crate::{
    process::thread_cpu_seconds,
    report::{Report, show},
    setup::{Keygen, Scale},
};

/// Phase 1: the median wall time and the mean CPU time of one generation.
pub fn keygen_floor(scale: &Scale, report: &Report, cores: usize) -> Keygen {
    let algorithm = scale.algorithm;
    report.phase(&format!(
        "1. keygen floor ({algorithm}: the operator's generator, in-process)"
    ));
    // One generation first, not counted: it pays the generator's one-time set-up (the first P-256
    // key took 39 ms in a debug build, the next ones 0.03 ms), which the operator pays once.
    let key = KeyPair::generate(2048, algorithm)
        .unwrap_or_else(|e| panic!("generating a key for {algorithm}: {e}"))
        .description();
    let cpu_before = thread_cpu_seconds();
    let mut samples: Vec<f64> = (0..scale.keygen_runs)
        .map(|_| {
            let started = Instant::now();
            // The size applies to RSA only; the operator's default, as the storm's keys have it.
            KeyPair::generate(2048, algorithm)
                .unwrap_or_else(|e| panic!("generating a key for {algorithm}: {e}"));
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let cpu_ms = (thread_cpu_seconds() - cpu_before) / samples.len() as f64 * 1000.0;
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    report.figure(
        format!("keygen median, {key} ({} runs)", samples.len()),
        median,
        "ms",
        format!(
            "min {}, max {}",
            show(samples[0]),
            show(samples[samples.len() - 1])
        ),
        None,
    );
    report.figure(
        "keygen CPU per key, mean",
        cpu_ms,
        "ms",
        "this thread's CPU time over the runs, without other load; RSA key generation time is \
         skewed (a long tail of prime searches), so the mean, not the median, times N is the CPU \
         time of N keys",
        None,
    );
    report.figure(
        format!("floor for {} keys on {cores} cores", scale.keys),
        cpu_ms / 1000.0 * scale.keys as f64 / cores as f64,
        "s",
        "keygen CPU mean × N / cores",
        None,
    );
    Keygen {
        median_ms: median,
        cpu_ms,
    }
}
