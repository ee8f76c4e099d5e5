//! RS256-2048 signatures and verifications per second on one thread, through the library's
//! full path (claims serialisation, base64url, header checks, claim validation).
//!
//! `bench/compare-openssl.sh` runs this next to `openssl speed rsa2048` and prints the ratios.

use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::signature::KeyPair as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jwt_keys::{Signer, Verifier};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    exp: u64,
}

fn write_key_dirs(root: &std::path::Path) {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let private = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let public = private.public_key();
    let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
    let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
    let kid = "bench-key";
    let secret = root.join("secret");
    let configmap = root.join("configmap");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::create_dir_all(&configmap).unwrap();
    let pkcs8: Pkcs8V1Der<'static> = private.as_der().unwrap();
    let pem = pem::encode_config(
        &pem::Pem::new("PRIVATE KEY", pkcs8.as_ref()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    std::fs::write(secret.join("private.pem"), pem.as_bytes()).unwrap();
    std::fs::write(secret.join("kid"), kid).unwrap();
    std::fs::write(secret.join("algorithm"), "RS256").unwrap();
    let jwks = serde_json::json!({"keys": [
        {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e}
    ]});
    std::fs::write(configmap.join("jwks.json"), jwks.to_string()).unwrap();
}

fn rs256(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    write_key_dirs(tmp.path());
    let signer = Signer::builder(tmp.path().join("secret"))
        .watch(false)
        .poll_interval(None)
        .build()
        .unwrap();
    let verifier = Verifier::builder(tmp.path().join("configmap"))
        .watch(false)
        .poll_interval(None)
        .build()
        .unwrap();
    let claims = Claims {
        sub: "alice".into(),
        iss: "https://auth.example".into(),
        exp: 4_000_000_000,
    };
    let token = signer.sign(&claims).unwrap();
    verifier.verify::<Claims>(&token).unwrap();

    let mut group = c.benchmark_group("rs256_2048");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("sign", |b| {
        b.iter(|| signer.sign(black_box(&claims)).unwrap())
    });
    group.bench_function("verify", |b| {
        b.iter(|| verifier.verify::<Claims>(black_box(&token)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, rs256);
criterion_main!(benches);
