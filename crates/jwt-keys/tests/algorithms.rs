//! Signing and verifying with every algorithm the operator makes keys for (RS256 ... PS512,
//! ES256, ES384, EdDSA): keys pinned to their own `alg`, JWS-form ECDSA signatures, keys of two
//! types in one set, a key that does not fit its algorithm, and reloads across a change of
//! algorithm.

mod common;

use std::time::Duration;

use aws_lc_rs::signature as sig;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use jwt_keys::{LoadError, Signer, Verifier, VerifyError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Claims {
    sub: String,
    exp: u64,
}

fn claims() -> Claims {
    Claims {
        sub: "alice".into(),
        exp: now() + 600,
    }
}

const ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// A token with this header, the claims, and the signature of `signer_token` (a real signature
/// by another key or algorithm: what an attacker could paste).
fn with_header(header: Value, signer_token: &str) -> String {
    let mut parts = signer_token.split('.');
    let _ = parts.next();
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        parts.next().unwrap(),
        parts.next().unwrap()
    )
}

fn header_of(token: &str) -> Value {
    let header = URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    serde_json::from_slice(&header).unwrap()
}

fn signature_of(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(token.rsplit('.').next().unwrap())
        .unwrap()
}

#[test]
fn every_algorithm_signs_and_verifies_with_its_kid_and_alg() {
    for alg in ALGORITHMS {
        let key = AnyKey::generate(alg);
        let tmp = tempfile::tempdir().unwrap();
        let secret = KubeletDir::new(tmp.path().join("s"), &key.secret_files());
        let cm = KubeletDir::new(tmp.path().join("c"), &any_configmap(&[&key]));
        let signer = Signer::from_dir(secret.path()).unwrap();
        let verifier = Verifier::from_dir(cm.path()).unwrap();
        let token = signer.sign(&claims()).unwrap();
        let header = header_of(&token);
        assert_eq!(
            (header["alg"].as_str(), header["kid"].as_str()),
            (Some(alg), Some(key.kid.as_str()))
        );
        let verified = verifier.verify::<Claims>(&token).unwrap();
        assert_eq!(jwt_keys::algorithm_name(verified.algorithm), alg);
        assert_eq!(verified.kid, key.kid);
        assert_eq!(verified.claims.sub, "alice");
    }
}

#[test]
fn ecdsa_signatures_are_raw_r_and_s_and_verify_independently() {
    for (alg, size, verification) in [
        ("ES256", 64, &sig::ECDSA_P256_SHA256_FIXED),
        ("ES384", 96, &sig::ECDSA_P384_SHA384_FIXED),
    ] {
        let key = AnyKey::generate(alg);
        let tmp = tempfile::tempdir().unwrap();
        let secret = KubeletDir::new(tmp.path().join("s"), &key.secret_files());
        let token = Signer::from_dir(secret.path())
            .unwrap()
            .sign(&claims())
            .unwrap();
        let signature = signature_of(&token);
        assert_eq!(signature.len(), size, "{alg}: r || s, not DER");
        // aws-lc's own verifier of the fixed-size form, with the SPKI PEM's key.
        let spki = pem::parse(&key.public_pem).unwrap();
        let signing_input = token.rsplit_once('.').unwrap().0;
        sig::UnparsedPublicKey::new(verification, spki.contents())
            .verify(signing_input.as_bytes(), &signature)
            .unwrap_or_else(|_| panic!("{alg}: the signature verifies as r || s"));
    }
    let key = AnyKey::generate("EdDSA");
    let tmp = tempfile::tempdir().unwrap();
    let secret = KubeletDir::new(tmp.path().join("s"), &key.secret_files());
    let token = Signer::from_dir(secret.path())
        .unwrap()
        .sign(&claims())
        .unwrap();
    assert_eq!(signature_of(&token).len(), 64);
}

#[test]
fn a_token_whose_alg_is_not_its_keys_alg_is_refused() {
    let es256 = AnyKey::generate("ES256");
    let es384 = AnyKey::generate("ES384");
    let eddsa = AnyKey::generate("EdDSA");
    let rs256 = AnyKey::generate("RS256");
    let tmp = tempfile::tempdir().unwrap();
    let cm = KubeletDir::new(
        tmp.path().join("c"),
        &any_configmap(&[&es256, &es384, &eddsa, &rs256]),
    );
    let verifier = Verifier::from_dir(cm.path()).unwrap();
    let sign = |key: &AnyKey| {
        let dir = tmp.path().join(format!("s-{}", key.alg));
        let secret = KubeletDir::new(dir, &key.secret_files());
        Signer::from_dir(secret.path())
            .unwrap()
            .sign(&claims())
            .unwrap()
    };
    let tokens = [
        (&es256, sign(&es256)),
        (&es384, sign(&es384)),
        (&eddsa, sign(&eddsa)),
        (&rs256, sign(&rs256)),
    ];
    for (key, token) in &tokens {
        verifier.verify::<Claims>(token).unwrap();
        // The same token, its header naming every other algorithm under the same kid.
        for other in ALGORITHMS.iter().filter(|a| **a != key.alg) {
            let forged = with_header(json!({"alg": other, "kid": key.kid, "typ": "JWT"}), token);
            match verifier.verify::<Claims>(&forged) {
                Err(VerifyError::WrongAlgorithm { expected, found }) => {
                    assert_eq!((expected.as_str(), found.as_str()), (key.alg, *other));
                }
                other => panic!("{} token as {other:?}: must be WrongAlgorithm", key.alg),
            }
        }
        for refused in ["none", "HS256", "ES512", "Ed25519"] {
            let forged = with_header(json!({"alg": refused, "kid": key.kid}), token);
            assert!(matches!(
                verifier.verify::<Claims>(&forged),
                Err(VerifyError::WrongAlgorithm { .. })
            ));
        }
    }
    // A real ES384 signature under the ES256 key's kid with alg ES256: a bad signature.
    let (_, es384_token) = &tokens[1];
    let swapped = with_header(json!({"alg": "ES256", "kid": es256.kid}), es384_token);
    assert!(matches!(
        verifier.verify::<Claims>(&swapped),
        Err(VerifyError::BadSignature | VerifyError::Other(_))
    ));
}

#[test]
fn jwks_entries_whose_key_type_does_not_fit_their_alg_are_skipped() {
    let es256 = AnyKey::generate("ES256");
    let eddsa = AnyKey::generate("EdDSA");
    let rs256 = AnyKey::generate("RS256");
    let mut rsa_as_es256 = rs256.jwk.clone();
    rsa_as_es256["alg"] = json!("ES256");
    rsa_as_es256["kid"] = json!("rsa-as-es256");
    let mut p256_as_es384 = es256.jwk.clone();
    p256_as_es384["alg"] = json!("ES384");
    p256_as_es384["kid"] = json!("p256-as-es384");
    let mut ec_as_rs256 = es256.jwk.clone();
    ec_as_rs256["alg"] = json!("RS256");
    ec_as_rs256["kid"] = json!("ec-as-rs256");
    let mut okp_as_es256 = eddsa.jwk.clone();
    okp_as_es256["alg"] = json!("ES256");
    okp_as_es256["kid"] = json!("okp-as-es256");
    let mut short_x = es256.jwk.clone();
    short_x["x"] = json!(b64(&URL_SAFE_NO_PAD
        .decode(es256.jwk["x"].as_str().unwrap())
        .unwrap()[1..]));
    short_x["kid"] = json!("short-x");
    let mut x25519 = eddsa.jwk.clone();
    x25519["crv"] = json!("X25519");
    x25519["kid"] = json!("x25519");
    let set = json!({"keys": [rsa_as_es256, p256_as_es384, ec_as_rs256, okp_as_es256, short_x, x25519, es256.jwk]});
    let keys = jwt_keys::KeySet::from_json(set.to_string().as_bytes()).unwrap();
    assert_eq!(keys.kids().collect::<Vec<_>>(), [es256.kid.as_str()]);
}

#[test]
fn a_private_key_that_does_not_fit_the_algorithm_is_named_and_not_used() {
    let es256 = AnyKey::generate("ES256");
    let es384 = AnyKey::generate("ES384");
    let eddsa = AnyKey::generate("EdDSA");
    let rs256 = AnyKey::generate("RS256");
    let cases = [
        (
            &rs256,
            "ES256",
            "holds an RSA key, but ES256 needs a P-256 key",
        ),
        (
            &es256,
            "RS256",
            "holds a P-256 key, but RS256 needs an RSA key",
        ),
        (
            &es256,
            "ES384",
            "holds a P-256 key, but ES384 needs a P-384 key",
        ),
        (
            &es384,
            "ES256",
            "holds a P-384 key, but ES256 needs a P-256 key",
        ),
        (
            &eddsa,
            "ES256",
            "holds an Ed25519 key, but ES256 needs a P-256 key",
        ),
        (
            &es256,
            "EdDSA",
            "holds a P-256 key, but EdDSA needs an Ed25519 key",
        ),
    ];
    for (key, algorithm, message) in cases {
        let error =
            jwt_keys::SigningKey::from_parts(key.private_pem.as_bytes(), &key.kid, algorithm)
                .unwrap_err();
        assert!(
            matches!(error, LoadError::KeyDoesNotFitAlgorithm { .. }),
            "{algorithm}: {error}"
        );
        assert!(error.to_string().contains(message), "{error}");
    }
}

#[test]
fn the_signer_and_verifier_follow_a_change_of_algorithm_through_the_mount() {
    // The operator's change RS256 -> ES256 -> EdDSA: the ConfigMap holds the next key (of the new
    // type) before the Secret switches; tokens of the old key keep verifying afterwards.
    let rs256 = AnyKey::generate("RS256");
    let es256 = AnyKey::generate("ES256");
    let eddsa = AnyKey::generate("EdDSA");
    let tmp = tempfile::tempdir().unwrap();
    let mut secret = KubeletDir::new(tmp.path().join("s"), &rs256.secret_files());
    let mut cm = KubeletDir::new(tmp.path().join("c"), &any_configmap(&[&rs256]));
    let signer = Signer::builder(secret.path())
        .poll_interval(Some(Duration::from_millis(20)))
        .build()
        .unwrap();
    let verifier = Verifier::builder(cm.path())
        .poll_interval(Some(Duration::from_millis(20)))
        .build()
        .unwrap();
    let mut tokens = vec![signer.sign(&claims()).unwrap()];
    let mut published = vec![&rs256];
    for next in [&es256, &eddsa] {
        published.insert(0, next);
        cm.publish(&any_configmap(&published));
        secret.publish(&next.secret_files());
        assert!(
            wait_for(Duration::from_secs(10), || signer.current_key().kid
                == next.kid),
            "the signer takes the {} key",
            next.alg
        );
        let token = signer.sign(&claims()).unwrap();
        assert_eq!(header_of(&token)["alg"], next.alg);
        tokens.push(token);
        for token in &tokens {
            verifier.verify::<Claims>(token).unwrap();
        }
    }
    assert_eq!(verifier.keys().len(), 3);

    // A hand-edited Secret (an RSA key under `algorithm: EdDSA`) is not taken: the signer keeps
    // the Ed25519 key, and counts the failed reload.
    let failed_before = signer.reload_status().failures;
    let mut edited = eddsa.secret_files();
    edited[0].1 = rs256.private_pem.clone().into_bytes();
    secret.publish(&edited);
    assert!(wait_for(Duration::from_secs(10), || {
        signer.reload_status().failures > failed_before
    }));
    let error = signer.reload_status().last_error.unwrap();
    assert!(
        error.contains("holds an RSA key, but EdDSA needs an Ed25519 key"),
        "{error}"
    );
    assert_eq!(signer.current_key().kid, eddsa.kid);
    verifier
        .verify::<Claims>(&signer.sign(&claims()).unwrap())
        .unwrap();
}
