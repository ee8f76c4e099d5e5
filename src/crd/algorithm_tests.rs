//! Unit tests of the algorithm and key-size rules and of the JWKS byte bound per key type.

use super::*;
use crate::{keys::KeyPair, resources::config_map_data_of};
use serde_json::json;

fn spec(json: serde_json::Value) -> JwtSigningKeySpec {
    serde_json::from_value(json).unwrap()
}

#[test]
fn every_algorithm_round_trips_through_its_jose_name() {
    for algorithm in Algorithm::ALL {
        assert_eq!(Algorithm::from_name(algorithm.as_str()), Some(algorithm));
        let json = serde_json::to_value(algorithm).unwrap();
        assert_eq!(json, algorithm.as_str());
    }
    for unknown in ["ES512", "es256", "Ed25519", "HS256", "none", ""] {
        assert_eq!(Algorithm::from_name(unknown), None, "{unknown}");
    }
    assert_eq!(Algorithm::default(), Algorithm::RS256);
}

#[test]
fn key_size_is_refused_with_ec_and_okp_algorithms_and_naming_the_field() {
    for algorithm in ["ES256", "ES384", "EdDSA"] {
        let error = spec(json!({"algorithm": algorithm, "keySize": 2048}))
            .timing()
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("spec.keySize: ") && message.contains(algorithm),
            "{message}"
        );
        spec(json!({"algorithm": algorithm})).timing().unwrap();
    }
    for algorithm in ["RS256", "PS512"] {
        spec(json!({"algorithm": algorithm, "keySize": 4096}))
            .timing()
            .unwrap();
    }
    let error = spec(json!({"keySize": 1024})).timing().unwrap_err();
    assert_eq!(
        error.to_string(),
        "spec.keySize: 1024 is not one of 2048, 3072, 4096"
    );
}

#[test]
fn an_unset_key_size_is_2048_bits_and_not_serialized() {
    let unset = spec(json!({"algorithm": "ES256"}));
    assert_eq!(unset.key_size, None);
    assert_eq!(unset.rsa_key_size(), 2048);
    assert!(
        serde_json::to_value(&unset)
            .unwrap()
            .get("keySize")
            .is_none()
    );
}

#[test]
fn the_crd_has_no_key_size_default_and_refuses_it_with_other_key_types() {
    // A schema default would write keySize: 2048 into every object, EC and OKP ones included,
    // which the rule then refuses.
    let crd = serde_json::to_value(JwtSigningKey::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert!(schema["properties"]["keySize"].get("default").is_none());
    let algorithms: Vec<&str> = schema["properties"]["algorithm"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(algorithms, Algorithm::ALL.map(Algorithm::as_str));
    let rules = schema["x-kubernetes-validations"].as_array().unwrap();
    let key_size = rules
        .iter()
        .find(|rule| rule["fieldPath"] == ".keySize")
        .expect("a rule on keySize");
    assert!(
        key_size["rule"]
            .as_str()
            .unwrap()
            .contains("startsWith('RS')")
    );
}

/// `jwks.json` of `count` keys shaped like `pair` (distinct kids of the same length).
fn jwks_len(pair: &KeyPair, count: usize) -> usize {
    let jwks: Vec<_> = (0..count)
        .map(|i| {
            let mut jwk = pair.jwk.clone();
            jwk.kid = format!("{i:0>43}");
            jwk
        })
        .collect();
    let refs: Vec<_> = jwks.iter().collect();
    config_map_data_of(&refs).unwrap()["jwks.json"].len()
}

#[test]
fn the_most_keys_a_spec_may_publish_keep_the_jwks_under_50000_bytes() {
    let cases = [
        (json!({}), 64),
        (json!({"keySize": 3072, "algorithm": "PS512"}), 64),
        (json!({"keySize": 4096}), 57),
        (json!({"algorithm": "ES256"}), 64),
        (json!({"algorithm": "ES384"}), 64),
        (json!({"algorithm": "EdDSA"}), 64),
    ];
    for (json, most) in cases {
        let spec = spec(json.clone());
        assert_eq!(spec.max_published_keys(), most, "{json}");
        let pair = KeyPair::generate(spec.rsa_key_size() as usize, spec.algorithm).unwrap();
        let len = jwks_len(&pair, most as usize);
        assert!(len < MAX_JWKS_BYTES, "{json}: {most} keys make {len} bytes");
    }
    // Why 4096-bit keys have their own bound: 64 of them are over the limit (about 54,500
    // bytes), 59 too, and 58 would come within about 650 bytes of it.
    let rsa_4096 = KeyPair::generate(4096, Algorithm::PS512).unwrap();
    assert!(jwks_len(&rsa_4096, 64) > MAX_JWKS_BYTES);
    assert!(jwks_len(&rsa_4096, 59) > MAX_JWKS_BYTES);
    assert!(jwks_len(&rsa_4096, 58) > MAX_JWKS_BYTES - 1000);
}

#[test]
fn the_timing_bound_counts_the_key_type() {
    // L + P = 60 R: fine with every key type but 4096-bit RSA (at most 55 R).
    let loose =
        json!({"rotationInterval": "1h", "propagationDelay": "30m", "maxTokenLifetime": "59h30m"});
    let mut rsa_4096 = loose.clone();
    rsa_4096["keySize"] = json!(4096);
    let error = spec(rsa_4096).timing().unwrap_err().to_string();
    assert!(error.starts_with("spec.maxTokenLifetime: "));
    assert!(error.contains("55 x rotationInterval"), "{error}");
    for algorithm in ["RS256", "ES256", "ES384", "EdDSA"] {
        let mut ok = loose.clone();
        ok["algorithm"] = json!(algorithm);
        spec(ok).timing().unwrap();
    }
    let mut edge =
        json!({"rotationInterval": "1h", "propagationDelay": "30m", "maxTokenLifetime": "54h30m"});
    edge["keySize"] = json!(4096);
    spec(edge).timing().unwrap();
}
