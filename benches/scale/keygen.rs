//! Phase 1, the floor: the operator's own RSA-2048 generator, in-process.

use std::time::Instant;

use jwt_key_operator::{crd::Algorithm, keys::KeyPair};

use crate::{
    process::thread_cpu_seconds,
    report::{Report, show},
    setup::{Keygen, Scale},
};

/// Phase 1: the median wall time and the mean CPU time of one generation.
pub fn keygen_floor(scale: &Scale, report: &Report, cores: usize) -> Keygen {
    report.phase("1. keygen floor (the operator's generator, in-process)");
    let cpu_before = thread_cpu_seconds();
    let mut samples: Vec<f64> = (0..scale.keygen_runs)
        .map(|_| {
            let started = Instant::now();
            KeyPair::generate(2048, Algorithm::RS256).expect("generating an RSA-2048 key");
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let cpu_ms = (thread_cpu_seconds() - cpu_before) / samples.len() as f64 * 1000.0;
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    report.figure(
        format!("keygen median, RSA-2048 ({} runs)", samples.len()),
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
        "this thread's utime + stime over the runs, without other load; RSA key generation \
         time is skewed (a long tail of prime searches), so the mean, not the median, times N \
         is the CPU time of N keys",
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
