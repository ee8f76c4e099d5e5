//! RSA key generators side by side, in the same run, for 2048, 3072 and 4096 bits: aws-lc-rs (what
//! the operator uses, through `KeyPair::generate`, which includes its PEM and JWK encodings), the
//! `rsa` crate 0.10 (the pure-Rust alternative), and `openssl genpkey` (the reference floor, timed as
//! a process, so it includes start-up). Then, per algorithm (RS256 with 2048 bits, ES256, ES384,
//! EdDSA): key generation through `KeyPair::generate`, signing and verifying a JWS signing input
//! with aws-lc on a key parsed once (what the `jwt-keys` signer does), next to `openssl genpkey`
//! (as a process) and `openssl speed` (in-process sign and verify) of the same run. Prints medians
//! and ratios to openssl; asserts nothing.
//!
//! `cargo bench --bench keygen` (JKO_KEYGEN_RUNS sets the runs per size, default 11); the quick
//! smoke round of `cargo test --all-targets` runs each once and `openssl speed` for 1 s per
//! algorithm.

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
    per_algorithm(runs, if full { 3 } else { 1 });
}

/// Key type names for `openssl genpkey` and the line `openssl speed` prints for each algorithm.
fn openssl_names(algorithm: Algorithm) -> (&'static [&'static str], &'static str, &'static str) {
    match algorithm {
        Algorithm::ES256 => (
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "ecdsap256",
            "(nistp256)",
        ),
        Algorithm::ES384 => (
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            "ecdsap384",
            "(nistp384)",
        ),
        Algorithm::EdDSA => (&["-algorithm", "ED25519"], "ed25519", "(Ed25519)"),
        _ => (
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            "rsa2048",
            "rsa 2048 bits",
        ),
    }
}

/// `openssl speed`'s sign and verify times in microseconds, from its `sign/s verify/s` columns.
fn openssl_speed(test: &str, line_marker: &str, seconds: u32) -> Option<(f64, f64)> {
    let output = Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string(), test])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find(|l| l.contains(line_marker))?;
    let rates: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok())
        .collect();
    let [.., sign_rate, verify_rate] = rates[..] else {
        return None;
    };
    Some((1e6 / sign_rate, 1e6 / verify_rate))
}

type SignFn = Box<dyn Fn(&[u8]) -> Vec<u8>>;
type VerifyFn = Box<dyn Fn(&[u8], &[u8]) -> bool>;

/// A signer and verifier of one key, parsed once, as the consumer crate holds them.
struct Signing {
    sign: SignFn,
    verify: VerifyFn,
}

fn signing(pair: &KeyPair, algorithm: Algorithm) -> Signing {
    use aws_lc_rs::signature as sig;
    let der = pem::parse(pair.private_pem()).unwrap().into_contents();
    let spki = pem::parse(&pair.public_pem).unwrap().into_contents();
    let (verification, sign): (&'static dyn sig::VerificationAlgorithm, SignFn) = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => {
            let (signing, verification) = if algorithm == Algorithm::ES256 {
                (
                    &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &sig::ECDSA_P256_SHA256_FIXED,
                )
            } else {
                (
                    &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
                    &sig::ECDSA_P384_SHA384_FIXED,
                )
            };
            let key = sig::EcdsaKeyPair::from_pkcs8(signing, &der).unwrap();
            let rng = aws_lc_rs::rand::SystemRandom::new();
            (
                verification,
                Box::new(move |m| key.sign(&rng, m).unwrap().as_ref().to_vec()),
            )
        }
        Algorithm::EdDSA => {
            let key = sig::Ed25519KeyPair::from_pkcs8(&der).unwrap();
            (
                &sig::ED25519,
                Box::new(move |m| key.sign(m).as_ref().to_vec()),
            )
        }
        _ => {
            let key = sig::RsaKeyPair::from_pkcs8(&der).unwrap();
            let rng = aws_lc_rs::rand::SystemRandom::new();
            (
                &sig::RSA_PKCS1_2048_8192_SHA256,
                Box::new(move |m| {
                    let mut out = vec![0; key.public_modulus_len()];
                    key.sign(&sig::RSA_PKCS1_SHA256, &rng, m, &mut out).unwrap();
                    out
                }),
            )
        }
    };
    let public = sig::ParsedPublicKey::new(verification, &spki).unwrap();
    Signing {
        sign,
        verify: Box::new(move |m, s| public.verify_sig(m, s).is_ok()),
    }
}

/// Median microseconds per call of `op`, over `batches` batches of `per_batch` calls.
fn micros_per_op(batches: usize, per_batch: usize, mut op: impl FnMut()) -> f64 {
    median(
        (0..batches)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..per_batch {
                    op();
                }
                started.elapsed().as_secs_f64() * 1e6 / per_batch as f64
            })
            .collect(),
    )
}

fn per_algorithm(runs: usize, speed_seconds: u32) {
    // A typical signing input: a JOSE header with a kid and a few claims, base64url.
    let message = format!("{}.{}", "e".repeat(100), "c".repeat(160));
    let message = message.as_bytes();
    println!();
    println!(
        "per algorithm: keygen median of {} runs in us (openssl genpkey as a process, start-up \
         included); sign/verify median us per operation (openssl speed -seconds {speed_seconds})",
        runs.max(5)
    );
    println!(
        "{:>6} {:>12} {:>12} {:>9} {:>9} {:>12} {:>12} {:>8} {:>8}",
        "alg",
        "keygen",
        "genpkey",
        "sign",
        "verify",
        "ossl sign",
        "ossl verify",
        "sign x",
        "verify x"
    );
    for algorithm in [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let (genpkey_args, speed_test, speed_line) = openssl_names(algorithm);
        let (mut ours, mut reference) = (Vec::new(), Vec::new());
        // EC and OKP keys take microseconds: at least 5 runs even in the quick round.
        for _ in 0..runs.max(5) {
            let started = Instant::now();
            KeyPair::generate(2048, algorithm).expect("key generation");
            ours.push(started.elapsed().as_secs_f64() * 1e6);
            let started = Instant::now();
            let ok = Command::new("openssl")
                .arg("genpkey")
                .args(genpkey_args)
                .args(["-out", "/dev/null"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                reference.push(started.elapsed().as_secs_f64() * 1e6);
            }
        }
        let pair = KeyPair::generate(2048, algorithm).expect("key generation");
        let signing = signing(&pair, algorithm);
        let per_batch = if algorithm.is_rsa() { 50 } else { 500 };
        let sign = micros_per_op(5, per_batch, || {
            std::hint::black_box((signing.sign)(message));
        });
        let signature = (signing.sign)(message);
        assert!(
            (signing.verify)(message, &signature),
            "{algorithm} verifies"
        );
        let verify = micros_per_op(5, per_batch, || {
            std::hint::black_box((signing.verify)(message, &signature));
        });
        let (ossl_sign, ossl_verify) =
            openssl_speed(speed_test, speed_line, speed_seconds).unwrap_or((f64::NAN, f64::NAN));
        println!(
            "{:>6} {:>12.1} {:>12.1} {sign:>9.1} {verify:>9.1} {ossl_sign:>12.1} {ossl_verify:>12.1} {:>7.2}x {:>7.2}x",
            algorithm.as_str(),
            median(ours),
            median(reference),
            sign / ossl_sign,
            verify / ossl_verify,
        );
    }
}
