//! RSA key generation with the `rsa` crate (what the operator uses) against `openssl genpkey`, in the
//! same run, for 2048, 3072 and 4096 bits. Prints medians and the ratio; asserts nothing.
//!
//! `cargo bench --bench keygen` (JKO_KEYGEN_RUNS sets the runs per size, default 11).

use std::{process::Command, time::Instant};

use jwt_key_operator::{crd::Algorithm, keys::KeyPair};

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs one quick round as a smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("JKO_KEYGEN_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 11 } else { 1 });
    let openssl = Command::new("openssl").arg("version").output().ok();
    println!(
        "keygen: {runs} runs per size; {}",
        openssl
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or("openssl not found".into())
    );
    println!(
        "{:>6} {:>14} {:>16} {:>8}",
        "bits", "rsa crate (ms)", "openssl (ms)", "ratio"
    );
    for bits in [2048usize, 3072, 4096] {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..runs {
            // Interleaved, so that both see the same machine load.
            let started = Instant::now();
            KeyPair::generate(bits, Algorithm::RS256).expect("key generation");
            ours.push(started.elapsed().as_secs_f64() * 1000.0);

            let started = Instant::now();
            let status = Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    &format!("rsa_keygen_bits:{bits}"),
                    "-out",
                    "/dev/null",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            if status.is_ok_and(|s| s.success()) {
                theirs.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let (ours, theirs) = (
            median(ours),
            if theirs.is_empty() {
                f64::NAN
            } else {
                median(theirs)
            },
        );
        println!(
            "{bits:>6} {ours:>14.1} {theirs:>16.1} {:>7.2}x",
            ours / theirs
        );
    }
    println!("(ratio = rsa crate median / openssl median; openssl times include process start-up)");
}
