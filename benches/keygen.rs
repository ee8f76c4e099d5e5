//! RSA key generators side by side, in the same run, for 2048, 3072 and 4096 bits: aws-lc-rs (what
//! the operator uses, through `KeyPair::generate`, which includes its PEM and JWK encodings), the
//! `rsa` crate 0.10 (the pure-Rust alternative), and `openssl genpkey` (the reference floor, timed as
//! a process, so it includes start-up). Prints medians and ratios to openssl; asserts nothing.
//!
//! `cargo bench --bench keygen` (JKO_KEYGEN_RUNS sets the runs per size, default 11).

use std::{process::Command, time::Instant};

use jwt_key_operator::{crd::Algorithm, keys::KeyPair};

fn median(mut samples: Vec<f64>) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn millis(run: impl FnOnce() -> bool) -> Option<f64> {
    let started = Instant::now();
    run().then(|| started.elapsed().as_secs_f64() * 1000.0)
}

fn openssl(bits: usize) -> bool {
    Command::new("openssl")
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
        .status()
        .is_ok_and(|s| s.success())
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
    let version = Command::new("openssl").arg("version").output().ok();
    println!(
        "keygen: {runs} runs per size, medians in ms; {}",
        version
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or("openssl not found".into())
    );
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "bits", "aws-lc-rs", "rsa 0.10", "openssl", "aws/openssl", "rsa/openssl"
    );
    for bits in [2048usize, 3072, 4096] {
        let (mut aws, mut rust, mut reference) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            // Interleaved, so that all three see the same machine load.
            aws.extend(millis(|| {
                KeyPair::generate(bits, Algorithm::RS256).expect("aws-lc-rs key generation");
                true
            }));
            rust.extend(millis(|| {
                rsa::PrivateKey::new(&mut getrandom::SysRng, bits).expect("rsa key generation");
                true
            }));
            reference.extend(millis(|| openssl(bits)));
        }
        let (aws, rust, reference) = (median(aws), median(rust), median(reference));
        println!(
            "{bits:>6} {aws:>10.1} {rust:>10.1} {reference:>10.1} {:>11.2}x {:>11.2}x",
            aws / reference,
            rust / reference
        );
    }
}
