//! End-to-end: every algorithm (RS256, ES256, ES384, EdDSA) on the real API server: admission,
//! the Secret and ConfigMap as the contract says, tokens signed with `private.pem` verified with
//! `jwks.json` and `<kid>.pem`; and a live change RS256 -> ES256 -> EdDSA -> RS256 with tokens
//! signed and verified throughout, checked against I1-I3 with the rotation history.

mod common;
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{install_crd, kubectl, wait_for, with_temp_ns};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    jwk::{JwkSet, ThumbprintHash},
};
use jwt_key_operator::resources;
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::*;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs a token as the auth service does: with the Secret's `private.pem`, `kid` and `algorithm`.
fn sign(secret: &BTreeMap<String, String>, lifetime: Duration) -> Result<String, String> {
    let algorithm =
        Algorithm::from_str(&secret[resources::ALGORITHM]).map_err(|e| e.to_string())?;
    let pem = secret[resources::PRIVATE_PEM].as_bytes();
    let key = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .map_err(|e| format!("private.pem for {algorithm:?}: {e}"))?;
    let mut header = Header::new(algorithm);
    header.kid = Some(secret[resources::KID].clone());
    let now = now_secs();
    jsonwebtoken::encode(
        &header,
        &json!({"sub": "alice", "iat": now, "exp": now + lifetime.as_secs()}),
        &key,
    )
    .map_err(|e| e.to_string())
}

/// Verifies a token as a JWKS verifier should: the key chosen by `kid`, the token's `alg` pinned to
/// that key's `alg`. Returns the kid and algorithm that verified it.
fn verify(token: &str, jwks_json: &str) -> Result<(String, Algorithm), String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let raw: Value = serde_json::from_str(jwks_json).map_err(|e| e.to_string())?;
    let published_alg = raw["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid.as_str()))
        .and_then(|k| k["alg"].as_str())
        .ok_or_else(|| format!("kid {kid} is not published"))?;
    let algorithm = Algorithm::from_str(published_alg).map_err(|e| e.to_string())?;
    if algorithm != header.alg {
        return Err(format!(
            "token alg {:?} is not its key's alg {published_alg}",
            header.alg
        ));
    }
    let set: JwkSet = serde_json::from_str(jwks_json).map_err(|e| e.to_string())?;
    let jwk = set.find(&kid).ok_or("kid not in the set")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    jsonwebtoken::decode::<Value>(token, &key, &Validation::new(algorithm))
        .map_err(|e| format!("{kid} ({published_alg}): {e}"))?;
    Ok((kid, algorithm))
}

/// Verifies a token with the SPKI PEM of its key (`<kid>.pem`), as PyJWT users do.
fn verify_with_pem(token: &str, pem: &str, algorithm: Algorithm) -> Result<(), String> {
    let key = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
        _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .map_err(|e| e.to_string())?;
    jsonwebtoken::decode::<Value>(token, &key, &Validation::new(algorithm))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The JWK members each algorithm's key must have (RFC 7518 6.2/6.3, RFC 8037 2), and the byte
/// length of its coordinates.
fn expected_members(
    algorithm: &str,
) -> (
    &'static str,
    Option<&'static str>,
    &'static [&'static str],
    usize,
) {
    match algorithm {
        "ES256" => ("EC", Some("P-256"), &["crv", "x", "y"], 32),
        "ES384" => ("EC", Some("P-384"), &["crv", "x", "y"], 48),
        "EdDSA" => ("OKP", Some("Ed25519"), &["crv", "x"], 32),
        _ => ("RSA", None, &["n", "e"], 0),
    }
}

#[tokio::test]
async fn every_algorithm_gets_a_ready_key_as_the_contract_says() {
    with_temp_ns("alg-every", |ns| async move {
        install_crd(&ns.client).await;
        let operator = operator(&[&ns.name]);
        let algorithms = ["RS256", "ES256", "ES384", "EdDSA"];
        for algorithm in algorithms {
            let name = format!("k-{}", algorithm.to_lowercase());
            create(&ns, &jsk(&name, json!({"algorithm": algorithm}))).await;
        }
        for algorithm in algorithms {
            let name = format!("k-{}", algorithm.to_lowercase());
            let key = wait_ready(&ns, &name, "True", "KeysReady").await;
            let status = key.status.unwrap();
            let kid = status.active_key_id.clone().unwrap();
            assert_eq!(status.keys[0].algorithm.as_deref(), Some(algorithm));

            let secret = secret_text(&ns.client, &ns.name, &format!("{name}-signing-key"))
                .await
                .unwrap();
            assert!(secret[resources::PRIVATE_PEM].starts_with("-----BEGIN PRIVATE KEY-----\n"));
            assert!(secret[resources::PUBLIC_PEM].starts_with("-----BEGIN PUBLIC KEY-----\n"));
            assert_eq!(secret[resources::KID], kid);
            assert_eq!(secret[resources::ALGORITHM], algorithm);

            let data = config_map_data(&ns.client, &ns.name, &format!("{name}-jwks"))
                .await
                .unwrap();
            let jwks: Value = serde_json::from_str(&data[resources::JWKS_JSON]).unwrap();
            let jwk = &jwks["keys"][0];
            let (kty, crv, members, size) = expected_members(algorithm);
            let mut names: BTreeSet<&str> = jwk
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            for common in ["kty", "use", "alg", "kid"] {
                assert!(names.remove(common), "{algorithm}: {common} in {jwk}");
            }
            assert_eq!(
                names,
                members.iter().copied().collect(),
                "{algorithm}: members of {jwk}"
            );
            assert_eq!(
                (jwk["kty"].as_str(), jwk["crv"].as_str()),
                (Some(kty), crv),
                "{jwk}"
            );
            assert_eq!(
                (jwk["use"].as_str(), jwk["alg"].as_str()),
                (Some("sig"), Some(algorithm))
            );
            if size > 0 {
                for coordinate in members.iter().filter(|m| **m != "crv") {
                    let bytes = URL_SAFE_NO_PAD
                        .decode(jwk[coordinate].as_str().unwrap())
                        .unwrap();
                    assert_eq!(
                        bytes.len(),
                        size,
                        "{algorithm}: {coordinate} is the curve's size"
                    );
                }
            }
            // The kid is the RFC 7638 thumbprint, as jsonwebtoken computes it independently.
            let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
            assert_eq!(
                parsed.thumbprint(ThumbprintHash::SHA256).unwrap(),
                kid,
                "{algorithm}"
            );
            assert_eq!(data[&format!("{kid}.pem")], secret[resources::PUBLIC_PEM]);
            assert!(
                !data.values().any(|v| v.contains("PRIVATE")),
                "no private key material in the ConfigMap"
            );

            let token = sign(&secret, Duration::from_secs(600)).unwrap();
            let (verified_kid, verified_alg) = verify(&token, &data[resources::JWKS_JSON]).unwrap();
            assert_eq!(
                (verified_kid.as_str(), format!("{verified_alg:?}").as_str()),
                (kid.as_str(), algorithm)
            );
            verify_with_pem(&token, &data[&format!("{kid}.pem")], verified_alg).unwrap();

            // The event names the key type.
            let description = match algorithm {
                "ES256" => "(P-256)",
                "ES384" => "(P-384)",
                "EdDSA" => "(Ed25519)",
                _ => "(2048-bit RSA)",
            };
            let created = events(&ns)
                .await
                .into_iter()
                .find(|(_, reason, message)| reason == "KeyCreated" && message.contains(&kid));
            let (_, _, message) = created.expect("a KeyCreated event");
            assert!(
                message.contains(algorithm) && message.contains(description),
                "{message}"
            );
        }

        // The printer column shows each key's algorithm.
        let output = kubectl()
            .args([
                "get",
                "jsk",
                "-n",
                &ns.name,
                "--no-headers",
                "-o",
                "custom-columns=NAME:.metadata.name,ALG:.spec.algorithm",
            ])
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&output.stdout).to_string();
        let wide = kubectl()
            .args(["get", "jsk", "-n", &ns.name])
            .output()
            .unwrap();
        let wide = String::from_utf8_lossy(&wide.stdout).to_string();
        assert!(wide.lines().next().unwrap().contains("ALGORITHM"), "{wide}");
        for algorithm in algorithms {
            let row = format!("k-{}", algorithm.to_lowercase());
            assert!(
                table
                    .lines()
                    .any(|l| l.contains(&row) && l.contains(algorithm)),
                "{table}"
            );
            assert!(
                wide.lines()
                    .any(|l| l.starts_with(&row) && l.contains(algorithm)),
                "{wide}"
            );
        }

        // Key generation is measured per algorithm.
        let text = metrics(&operator).await;
        for (algorithm, size) in [
            ("RS256", "2048"),
            ("ES256", "256"),
            ("ES384", "384"),
            ("EdDSA", "256"),
        ] {
            let filter = format!("algorithm=\"{algorithm}\",key_size=\"{size}\"");
            assert!(
                metric_sum(&text, "jwtkeys_key_generation_seconds_count", &filter) >= 1.0,
                "no key generation sample for {filter}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn admission_refuses_key_size_with_ec_and_okp_and_bounds_4096_bit_keys() {
    with_temp_ns("alg-admission", |ns| async move {
        install_crd(&ns.client).await;
        let api: Api<DynamicObject> = Api::namespaced_with(
            ns.client.clone(),
            &ns.name,
            &kube::discovery::ApiResource::erase::<jwt_key_operator::crd::JwtSigningKey>(&()),
        );
        let object = |spec: Value| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "jwtkeys.dev/v1alpha1", "kind": "JwtSigningKey",
                "metadata": {"generateName": "k-"}, "spec": spec,
            }))
            .unwrap()
        };
        let dry_run = PostParams { dry_run: true, ..Default::default() };
        let refused = [
            (json!({"algorithm": "ES256", "keySize": 2048}), "spec.keySize", "RSA algorithms only"),
            (json!({"algorithm": "ES384", "keySize": 3072}), "spec.keySize", "RSA algorithms only"),
            (json!({"algorithm": "EdDSA", "keySize": 4096}), "spec.keySize", "RSA algorithms only"),
            (json!({"algorithm": "ES512"}), "spec.algorithm", "Unsupported value"),
            (json!({"algorithm": "Ed25519"}), "spec.algorithm", "Unsupported value"),
            (
                json!({"keySize": 4096, "rotationInterval": "1h", "propagationDelay": "30m", "maxTokenLifetime": "59h30m"}),
                "spec.maxTokenLifetime",
                "55 x",
            ),
        ];
        for (spec, field, words) in refused {
            let error = api
                .create(&dry_run, &object(spec.clone()))
                .await
                .expect_err(&format!("{spec} must be refused"));
            let kube::Error::Api(status) = error else {
                panic!("{spec}: unexpected error {error}");
            };
            assert_eq!(status.code, 422, "{spec}: {}", status.message);
            assert!(
                status.message.contains(field) && status.message.contains(words),
                "{spec}: the message names {field}: {}",
                status.message
            );
        }
        let accepted = [
            json!({"algorithm": "ES256"}),
            json!({"algorithm": "ES384"}),
            json!({"algorithm": "EdDSA"}),
            json!({"algorithm": "EdDSA", "keySize": null}),
            json!({"algorithm": "PS256", "keySize": 4096}),
            // L + P = 60 R: over the 4096-bit bound, within the others.
            json!({"algorithm": "ES256", "rotationInterval": "1h", "propagationDelay": "30m", "maxTokenLifetime": "59h30m"}),
            json!({"keySize": 3072, "rotationInterval": "1h", "propagationDelay": "30m", "maxTokenLifetime": "59h30m"}),
        ];
        for spec in accepted {
            let created = api
                .create(&dry_run, &object(spec.clone()))
                .await
                .unwrap_or_else(|e| panic!("{spec} must be accepted: {e}"));
            // No schema default writes a key size into EC and OKP objects.
            if spec["keySize"].is_null() {
                assert!(created.data["spec"].get("keySize").is_none(), "{}", created.data);
            }
        }

        // Changing an RSA key to ES256 needs keySize removed in the same change.
        let created = api
            .create(&PostParams::default(), &object(json!({"keySize": 3072})))
            .await
            .unwrap();
        let name = created.metadata.name.unwrap();
        let error = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"algorithm": "ES256"}})))
            .await
            .expect_err("ES256 with keySize 3072 is refused");
        assert!(error.to_string().contains("spec.keySize"), "{error}");
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"algorithm": "ES256", "keySize": null}})),
        )
        .await
        .expect("ES256 with keySize removed is accepted");
    })
    .await;
}

/// What the token loop saw.
#[derive(Default)]
struct Observed {
    signed: usize,
    verified: usize,
    failures: Vec<String>,
    /// Algorithms of the tokens signed, in order of first use.
    signing_algorithms: Vec<String>,
    /// The sets of key types `jwks.json` held, e.g. {"EC", "RSA"}.
    key_type_sets: BTreeSet<Vec<String>>,
}

/// Every 200 ms: signs a token with the Secret as it is now (as the auth service would), keeps it
/// for its lifetime, and verifies every live token against the ConfigMap as it is now (as a
/// verifier would). Runs until `stop`.
async fn sign_and_verify_throughout(
    ns: common::TestNamespace,
    lifetime: Duration,
    stop: Arc<AtomicBool>,
    observed: Arc<Mutex<Observed>>,
) {
    let mut live: Vec<(Instant, String)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let secret = secret_text(&ns.client, &ns.name, "auth-signing-key").await;
        let data = config_map_data(&ns.client, &ns.name, "auth-jwks").await;
        let (Some(secret), Some(data)) = (secret, data) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        {
            let mut o = observed.lock().unwrap();
            match sign(&secret, lifetime) {
                Ok(token) => {
                    o.signed += 1;
                    let algorithm = secret[resources::ALGORITHM].clone();
                    if o.signing_algorithms.last() != Some(&algorithm) {
                        o.signing_algorithms.push(algorithm);
                    }
                    live.push((Instant::now(), token));
                }
                Err(e) => o.failures.push(format!("signing: {e}")),
            }
            // Tokens within their lifetime (less a second, as exp has whole seconds) must verify.
            live.retain(|(at, _)| at.elapsed() + Duration::from_secs(1) < lifetime);
            for (_, token) in &live {
                match verify(token, &data[resources::JWKS_JSON]) {
                    Ok(_) => o.verified += 1,
                    Err(e) => o.failures.push(format!("verifying: {e}")),
                }
            }
            let jwks: Value = serde_json::from_str(&data[resources::JWKS_JSON]).unwrap();
            let mut types: Vec<String> = jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    format!(
                        "{}{}",
                        k["kty"].as_str().unwrap(),
                        k["crv"]
                            .as_str()
                            .map(|c| format!(" {c}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            types.sort();
            types.dedup();
            o.key_type_sets.insert(types);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_live_change_of_algorithm_rs256_es256_eddsa_rs256_fails_no_token() {
    with_temp_ns("alg-change", |ns| async move {
        install_crd(&ns.client).await;
        let history = History::of(&ns).await;
        let _operator = operator(&[&ns.name]);
        // R = 20s, P = 5s, L = 10s: a retired key stays published L + P = 15s.
        let p = Duration::from_secs(5);
        let l = Duration::from_secs(10);
        let spec = json!({"rotationInterval": "20s", "propagationDelay": "5s", "maxTokenLifetime": "10s"});
        let first = create_ready(&ns, &jsk("auth", spec)).await;

        let stop = Arc::new(AtomicBool::new(false));
        let observed = Arc::new(Mutex::new(Observed::default()));
        let tokens = tokio::spawn(sign_and_verify_throughout(
            ns.clone(),
            l,
            stop.clone(),
            observed.clone(),
        ));

        for (step, algorithm) in ["ES256", "EdDSA", "RS256"].into_iter().enumerate() {
            api(&ns)
                .patch(
                    "auth",
                    &PatchParams::default(),
                    &Patch::Merge(json!({
                        "metadata": {"annotations": {"jwtkeys.dev/rotate": format!("to-{algorithm}-{step}")}},
                        "spec": {"algorithm": algorithm},
                    })),
                )
                .await
                .unwrap();
            wait_for(&format!("{algorithm} to sign"), Duration::from_secs(60), || async {
                let secret = secret_text(&ns.client, &ns.name, "auth-signing-key").await?;
                (secret[resources::ALGORITHM] == algorithm).then_some(())
            })
            .await;
            // Sign with it a while before the next change.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        // Once the EC and OKP keys' retention has passed, only RSA keys are published.
        wait_for("only RSA keys published", Duration::from_secs(60), || async {
            let data = config_map_data(&ns.client, &ns.name, "auth-jwks").await?;
            let jwks: Value = serde_json::from_str(&data[resources::JWKS_JSON]).ok()?;
            jwks["keys"].as_array()?.iter().all(|k| k["kty"] == "RSA").then_some(())
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        tokens.await.unwrap();

        let observed = observed.lock().unwrap();
        assert!(
            observed.failures.is_empty(),
            "{} of {} verifications failed: {:?}",
            observed.failures.len(),
            observed.verified + observed.failures.len(),
            &observed.failures[..observed.failures.len().min(10)]
        );
        assert_eq!(observed.signing_algorithms, ["RS256", "ES256", "EdDSA", "RS256"]);
        for mixed in [vec!["EC P-256", "RSA"], vec!["EC P-256", "OKP Ed25519"], vec!["OKP Ed25519", "RSA"]] {
            let mixed: Vec<String> = mixed.into_iter().map(String::from).collect();
            assert!(
                observed.key_type_sets.iter().any(|set| mixed.iter().all(|t| set.contains(t))),
                "the JWKS held {mixed:?} at once during the change: {:?}",
                observed.key_type_sets
            );
        }
        eprintln!(
            "algorithm change: {} tokens signed, {} verifications, 0 failed; key type sets {:?}",
            observed.signed, observed.verified, observed.key_type_sets
        );
        history.check_invariants(p, l + p, Duration::from_millis(300), &[first], &[]);
        assert!(history.signing_kids().len() >= 4, "{:?}", history.signing_kids());
    })
    .await;
}

#[tokio::test]
async fn a_hand_edited_secret_whose_key_does_not_fit_its_algorithm_loses_nothing_published() {
    with_temp_ns("alg-edit", |ns| async move {
        install_crd(&ns.client).await;
        let _operator = operator(&[&ns.name]);
        let spec =
            json!({"rotationInterval": "1h", "propagationDelay": "5s", "maxTokenLifetime": "1h"});
        let first = create_ready(&ns, &jsk("auth", spec)).await;
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(ns.client.clone(), &ns.name);
        let edit = |entries: Value| {
            let secrets = secrets.clone();
            async move {
                secrets
                    .patch(
                        "auth-signing-key",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"stringData": entries})),
                    )
                    .await
                    .unwrap();
            }
        };

        // The algorithm entry names ES256 while private.pem holds the RSA key: the edit is undone.
        edit(json!({"algorithm": "ES256"})).await;
        wait_for("the algorithm entry restored", REACT, || async {
            let secret = secret_text(&ns.client, &ns.name, "auth-signing-key").await?;
            (secret.get(resources::ALGORITHM)? == "RS256" && secret.get(resources::KID)? == &first)
                .then_some(())
        })
        .await;

        // private.pem replaced by a P-256 key the operator never published, still named RS256.
        let foreign =
            jwt_key_operator::keys::KeyPair::generate(0, jwt_key_operator::crd::Algorithm::ES256)
                .unwrap();
        edit(json!({"private.pem": foreign.private_pem()})).await;
        let secret = wait_for("a signing key the operator published", REACT, || async {
            // Until the repair's new key signs, a Secret version may hold no signing key (the
            // edit destroyed the previous one's private half): look only at complete ones.
            let secret = secret_text(&ns.client, &ns.name, "auth-signing-key").await?;
            let data = config_map_data(&ns.client, &ns.name, "auth-jwks").await?;
            let kid = secret.get(resources::KID)?;
            let pem = secret.get(resources::PRIVATE_PEM)?;
            let repaired = kid != foreign.kid()
                && jwks_kids(&data).contains(kid)
                && !pem.contains(foreign.private_pem().lines().nth(1).unwrap());
            repaired.then_some(secret.clone())
        })
        .await;
        // Whatever signs now is an RSA key named RS256, and its tokens verify.
        assert_eq!(secret[resources::ALGORITHM], "RS256");
        let data = config_map_data(&ns.client, &ns.name, "auth-jwks")
            .await
            .unwrap();
        let token = sign(&secret, Duration::from_secs(60)).unwrap();
        verify(&token, &data[resources::JWKS_JSON]).unwrap();
        // Nothing published was lost, and the foreign key was never published.
        let kids = jwks_kids(&data);
        assert!(
            kids.contains(&first),
            "the first key stays published: {kids:?}"
        );
        assert!(!kids.contains(&foreign.kid().to_string()), "{kids:?}");
        let jwks: Value = serde_json::from_str(&data[resources::JWKS_JSON]).unwrap();
        assert!(
            jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .all(|k| k["kty"] == "RSA" && k["alg"] == "RS256")
        );
    })
    .await;
}
