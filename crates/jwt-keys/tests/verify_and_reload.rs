//! Behaviour of `Signer` and `Verifier`: the answers for every kind of bad token, and how they
//! follow a mount that changes underneath them.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{KubeletDir, TestKey, configmap_files, keys, now, wait_for};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use jwt_keys::{Signer, SigningKey, Verifier, VerifyError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

fn claims() -> Claims {
    Claims {
        sub: "alice".into(),
        exp: now() + 300,
        nbf: None,
        iss: None,
        aud: None,
    }
}

const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    _tmp: tempfile::TempDir,
    secret: KubeletDir,
    configmap: KubeletDir,
}

fn fixture(signing: &TestKey, published: &[(&TestKey, &str)]) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let secret = KubeletDir::new(tmp.path().join("secret"), &signing.secret_files("RS256"));
    let configmap = KubeletDir::new(tmp.path().join("configmap"), &configmap_files(published));
    Fixture {
        _tmp: tmp,
        secret,
        configmap,
    }
}

/// A verifier that only reloads when asked (or on an unknown kid), to test those paths alone.
fn still_verifier(dir: &std::path::Path) -> Verifier {
    Verifier::builder(dir)
        .watch(false)
        .poll_interval(None)
        .build()
        .unwrap()
}

fn sign_with(key: &TestKey, alg: Algorithm, kid: Option<&str>, claims: &Claims) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let encoding_key = EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &encoding_key).unwrap()
}

fn unsigned_token(header: serde_json::Value, claims: &Claims) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(serde_json::to_string(claims).unwrap())
    )
}

#[test]
fn token_signed_by_the_signer_verifies_with_the_published_key() {
    let [key] = keys(1).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let signer = Signer::from_dir(fx.secret.path()).unwrap();
    let verifier = Verifier::from_dir(fx.configmap.path()).unwrap();

    let token = signer.sign(&claims()).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
    assert_eq!(header.alg, Algorithm::RS256);

    let verified = verifier.verify::<Claims>(&token).unwrap();
    assert_eq!(verified.claims, claims_without_time(&verified.claims));
    assert_eq!(verified.kid, key.kid);
    assert_eq!(verified.algorithm, Algorithm::RS256);
}

fn claims_without_time(verified: &Claims) -> Claims {
    Claims {
        exp: verified.exp,
        ..claims()
    }
}

#[test]
fn every_supported_algorithm_round_trips() {
    let [key] = keys(1).try_into().ok().unwrap();
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        let tmp = tempfile::tempdir().unwrap();
        let secret = KubeletDir::new(tmp.path().join("s"), &key.secret_files(alg));
        let configmap = KubeletDir::new(tmp.path().join("c"), &configmap_files(&[(&key, alg)]));
        let signer = Signer::from_dir(secret.path()).unwrap();
        let verifier = Verifier::from_dir(configmap.path()).unwrap();
        let token = signer.sign(&claims()).unwrap();
        let verified = verifier.verify::<Claims>(&token).unwrap();
        assert_eq!(jwt_keys::algorithm_name(verified.algorithm), alg);
    }
}

#[test]
fn token_without_kid_is_refused_as_missing_kid() {
    let [key] = keys(1).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let verifier = Verifier::from_dir(fx.configmap.path()).unwrap();
    let token = sign_with(&key, Algorithm::RS256, None, &claims());
    assert!(matches!(
        verifier.verify::<Claims>(&token),
        Err(VerifyError::MissingKid)
    ));
}

#[test]
fn alg_none_is_refused_as_wrong_algorithm() {
    let [key] = keys(1).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let verifier = Verifier::from_dir(fx.configmap.path()).unwrap();
    for alg in ["none", "None", "NONE"] {
        let token = unsigned_token(serde_json::json!({"alg": alg, "kid": key.kid}), &claims());
        match verifier.verify::<Claims>(&token) {
            Err(VerifyError::WrongAlgorithm { found, .. }) => assert_eq!(found, alg),
            other => panic!("alg {alg} gave {other:?}"),
        }
    }
}

#[test]
fn hs256_signed_with_the_public_key_as_secret_is_refused() {
    let [key] = keys(1).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let verifier = Verifier::from_dir(fx.configmap.path()).unwrap();
    let jwks = std::fs::read(fx.configmap.path().join("jwks.json")).unwrap();
    for secret in [key.public_pem.as_bytes(), key.n.as_bytes(), &jwks] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap();
        match verifier.verify::<Claims>(&token) {
            Err(VerifyError::WrongAlgorithm { found, expected }) => {
                assert_eq!(found, "HS256");
                assert!(expected.contains("RS256"), "{expected}");
            }
            other => panic!("HS256 token gave {other:?}"),
        }
    }
}

#[test]
fn token_alg_other_than_the_keys_published_alg_is_refused() {
    let [key] = keys(1).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let verifier = Verifier::from_dir(fx.configmap.path()).unwrap();
    for alg in [Algorithm::RS384, Algorithm::PS256] {
        let token = sign_with(&key, alg, Some(&key.kid), &claims());
        match verifier.verify::<Claims>(&token) {
            Err(VerifyError::WrongAlgorithm { expected, .. }) => assert_eq!(expected, "RS256"),
            other => panic!("{alg:?} token gave {other:?}"),
        }
    }
}

#[test]
fn tampered_payload_is_a_bad_signature() {
    let [key] = keys(1).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let verifier = Verifier::from_dir(fx.configmap.path()).unwrap();
    let token = sign_with(&key, Algorithm::RS256, Some(&key.kid), &claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = Claims {
        sub: "mallory".into(),
        ..claims()
    };
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_string(&forged).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert!(matches!(
        verifier.verify::<Claims>(&tampered),
        Err(VerifyError::BadSignature)
    ));
}

#[test]
fn token_signed_by_another_key_under_a_published_kid_is_a_bad_signature() {
    let [key, other] = keys(2).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let verifier = Verifier::from_dir(fx.configmap.path()).unwrap();
    let token = sign_with(&other, Algorithm::RS256, Some(&key.kid), &claims());
    assert!(matches!(
        verifier.verify::<Claims>(&token),
        Err(VerifyError::BadSignature)
    ));
}

#[test]
fn expired_token_is_refused_beyond_the_leeway_and_accepted_within_it() {
    let [key] = keys(1).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let verifier = Verifier::builder(fx.configmap.path())
        .leeway(Duration::from_secs(30))
        .build()
        .unwrap();
    let expired = Claims {
        exp: now() - 120,
        ..claims()
    };
    let token = sign_with(&key, Algorithm::RS256, Some(&key.kid), &expired);
    assert!(matches!(
        verifier.verify::<Claims>(&token),
        Err(VerifyError::Expired)
    ));
    let just_expired = Claims {
        exp: now() - 5,
        ..claims()
    };
    let token = sign_with(&key, Algorithm::RS256, Some(&key.kid), &just_expired);
    verifier.verify::<Claims>(&token).unwrap();
}

#[test]
fn token_without_exp_is_refused_as_missing_claim() {
    let [key] = keys(1).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let verifier = Verifier::from_dir(fx.configmap.path()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    let encoding_key = EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).unwrap();
    let token =
        jsonwebtoken::encode(&header, &serde_json::json!({"sub": "a"}), &encoding_key).unwrap();
    match verifier.verify::<serde_json::Value>(&token) {
        Err(VerifyError::MissingClaim(claim)) => assert_eq!(claim, "exp"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn token_used_before_nbf_is_refused_as_not_yet_valid() {
    let [key] = keys(1).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let verifier = Verifier::from_dir(fx.configmap.path()).unwrap();
    let early = Claims {
        nbf: Some(now() + 3600),
        ..claims()
    };
    let token = sign_with(&key, Algorithm::RS256, Some(&key.kid), &early);
    assert!(matches!(
        verifier.verify::<Claims>(&token),
        Err(VerifyError::NotYetValid)
    ));
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let [key] = keys(1).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let verifier = Verifier::builder(fx.configmap.path())
        .issuer(["https://auth.example"])
        .audience(["api"])
        .build()
        .unwrap();
    let good = Claims {
        iss: Some("https://auth.example".into()),
        aud: Some("api".into()),
        ..claims()
    };
    let sign = |c: &Claims| sign_with(&key, Algorithm::RS256, Some(&key.kid), c);
    verifier.verify::<Claims>(&sign(&good)).unwrap();

    let wrong_iss = Claims {
        iss: Some("https://evil.example".into()),
        ..good.clone()
    };
    assert!(matches!(
        verifier.verify::<Claims>(&sign(&wrong_iss)),
        Err(VerifyError::WrongIssuer)
    ));
    let wrong_aud = Claims {
        aud: Some("billing".into()),
        ..good.clone()
    };
    assert!(matches!(
        verifier.verify::<Claims>(&sign(&wrong_aud)),
        Err(VerifyError::WrongAudience)
    ));
    let no_aud = Claims {
        aud: None,
        ..good.clone()
    };
    assert!(matches!(
        verifier.verify::<Claims>(&sign(&no_aud)),
        Err(VerifyError::MissingClaim(claim)) if claim == "aud"
    ));

    // Without configuration, an audience in the token is not a reason to refuse it.
    let lenient = Verifier::from_dir(fx.configmap.path()).unwrap();
    lenient.verify::<Claims>(&sign(&wrong_aud)).unwrap();
}

#[test]
fn malformed_tokens_are_refused_as_malformed() {
    let [key] = keys(1).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let verifier = Verifier::from_dir(fx.configmap.path()).unwrap();
    let good = sign_with(&key, Algorithm::RS256, Some(&key.kid), &claims());
    let (head, _) = good.split_once('.').unwrap();
    for token in [
        String::new(),
        "abc".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "!!.e30.sig".into(),
        format!("{}.e30.sig", URL_SAFE_NO_PAD.encode("not json")),
        format!("{head}.%%%.sig"),
        format!("{head}.e30.%%%"),
    ] {
        match verifier.verify::<Claims>(&token) {
            Err(VerifyError::Malformed(_)) => {}
            other => panic!("{token:?} gave {other:?}"),
        }
    }
}

#[test]
fn unknown_kid_triggers_one_reload_per_interval() {
    let [key] = keys(1).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let verifier = Verifier::builder(fx.configmap.path())
        .watch(false)
        .poll_interval(None)
        .unknown_kid_reload_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let forged = sign_with(&key, Algorithm::RS256, Some("no-such-kid"), &claims());
    for _ in 0..5 {
        match verifier.verify::<Claims>(&forged) {
            Err(VerifyError::UnknownKid(kid)) => assert_eq!(kid, "no-such-kid"),
            other => panic!("{other:?}"),
        }
    }
    let status = verifier.reload_status();
    assert_eq!(status.forced_reloads, 1);
    assert_eq!(status.loads, 2);
}

#[test]
fn unknown_kid_reloads_again_after_the_interval() {
    let [key] = keys(1).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let verifier = Verifier::builder(fx.configmap.path())
        .watch(false)
        .poll_interval(None)
        .unknown_kid_reload_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let forged = sign_with(&key, Algorithm::RS256, Some("no-such-kid"), &claims());
    assert!(wait_for(WAIT, || {
        let _ = verifier.verify::<Claims>(&forged);
        verifier.reload_status().forced_reloads >= 2
    }));
}

#[test]
fn newly_published_kid_verifies_at_once_through_the_unknown_kid_reload() {
    let [old, new] = keys(2).try_into().ok().unwrap();
    let mut fx = fixture(&old, &[(&old, "RS256")]);
    let verifier = still_verifier(fx.configmap.path());
    fx.configmap
        .publish(&configmap_files(&[(&old, "RS256"), (&new, "RS256")]));
    let token = sign_with(&new, Algorithm::RS256, Some(&new.kid), &claims());
    let verified = verifier.verify::<Claims>(&token).unwrap();
    assert_eq!(verified.kid, new.kid);
}

#[test]
fn verifier_follows_the_kubelet_swap_through_the_watcher() {
    let [old, new] = keys(2).try_into().ok().unwrap();
    let mut fx = fixture(&old, &[(&old, "RS256")]);
    let verifier = Verifier::builder(fx.configmap.path())
        .poll_interval(None)
        .build()
        .unwrap();
    assert!(verifier.reload_status().watching);
    fx.configmap.publish(&configmap_files(&[(&new, "RS256")]));
    assert!(wait_for(WAIT, || verifier.keys().get(&new.kid).is_some()));
    assert!(verifier.keys().get(&old.kid).is_none());
}

#[test]
fn signer_follows_the_kubelet_swap_through_the_watcher() {
    let [old, new] = keys(2).try_into().ok().unwrap();
    let mut fx = fixture(&old, &[(&old, "RS256")]);
    let signer = Signer::builder(fx.secret.path())
        .poll_interval(None)
        .build()
        .unwrap();
    assert_eq!(signer.current_key().kid, old.kid);
    fx.secret.publish(&new.secret_files("PS256"));
    assert!(wait_for(WAIT, || signer.current_key().kid == new.kid));
    let token = signer.sign(&claims()).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new.kid.as_str()));
    assert_eq!(header.alg, Algorithm::PS256);
}

#[test]
fn polling_follows_the_mount_without_a_watcher() {
    let [old, new] = keys(2).try_into().ok().unwrap();
    let mut fx = fixture(&old, &[(&old, "RS256")]);
    let signer = Signer::builder(fx.secret.path())
        .watch(false)
        .poll_interval(Some(Duration::from_millis(20)))
        .build()
        .unwrap();
    assert!(!signer.reload_status().watching);
    fx.secret.publish(&new.secret_files("RS256"));
    assert!(wait_for(WAIT, || signer.current_key().kid == new.kid));
}

#[test]
fn plain_directory_replaced_file_by_file_is_followed() {
    let [old, new] = keys(2).try_into().ok().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let write = |files: Vec<(String, Vec<u8>)>| {
        for (name, content) in files {
            let staging = tmp.path().join(format!(".{name}.tmp"));
            std::fs::write(&staging, content).unwrap();
            std::fs::rename(&staging, tmp.path().join(name)).unwrap();
        }
    };
    write(configmap_files(&[(&old, "RS256")]));
    let verifier = Verifier::builder(tmp.path())
        .poll_interval(None)
        .build()
        .unwrap();
    write(configmap_files(&[(&new, "RS256")]));
    assert!(wait_for(WAIT, || verifier.keys().get(&new.kid).is_some()));
}

#[test]
fn broken_jwks_keeps_the_previous_keys_and_reports_the_error() {
    let [old, new] = keys(2).try_into().ok().unwrap();
    let mut fx = fixture(&old, &[(&old, "RS256")]);
    let verifier = Verifier::builder(fx.configmap.path())
        .poll_interval(None)
        .build()
        .unwrap();
    let token = sign_with(&old, Algorithm::RS256, Some(&old.kid), &claims());

    for broken in [&b"{\"keys\": [{\"kty\":"[..], b"", b"{\"keys\": []}"] {
        let failures = verifier.reload_status().failures;
        fx.configmap
            .publish(&[("jwks.json".to_owned(), broken.to_vec())]);
        assert!(wait_for(WAIT, || verifier.reload_status().failures > failures));
        assert!(verifier.reload_status().last_error.is_some());
        verifier.verify::<Claims>(&token).unwrap();
    }

    fx.configmap.publish(&configmap_files(&[(&new, "RS256")]));
    assert!(wait_for(WAIT, || verifier.keys().get(&new.kid).is_some()));
    assert_eq!(verifier.reload_status().last_error, None);
}

#[test]
fn broken_private_key_keeps_the_previous_signing_key() {
    let [old, new] = keys(2).try_into().ok().unwrap();
    let mut fx = fixture(&old, &[(&old, "RS256")]);
    let signer = Signer::builder(fx.secret.path())
        .poll_interval(None)
        .build()
        .unwrap();
    let mut truncated = new.secret_files("RS256");
    truncated[0].1.truncate(200);
    fx.secret.publish(&truncated);
    assert!(wait_for(WAIT, || signer.reload_status().failures == 1));
    assert_eq!(signer.current_key().kid, old.kid);

    let mut wrong_alg = new.secret_files("HS256");
    wrong_alg[0].1 = new.private_pem.clone().into_bytes();
    fx.secret.publish(&wrong_alg);
    assert!(wait_for(WAIT, || signer.reload_status().failures == 2));
    assert_eq!(signer.current_key().kid, old.kid);
    assert!(signer.reload_status().last_error.unwrap().contains("HS256"));
}

#[test]
fn jwks_keys_that_cannot_verify_are_skipped() {
    let [key] = keys(1).try_into().ok().unwrap();
    let good = key.jwk("RS256");
    let mut encryption = key.jwk("RS256");
    encryption["use"] = "enc".into();
    encryption["kid"] = "enc".into();
    let mut hmac =
        serde_json::json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256"});
    hmac["use"] = "sig".into();
    let mut no_alg = key.jwk("RS256");
    no_alg.as_object_mut().unwrap().remove("alg");
    no_alg["kid"] = "no-alg".into();
    let small =
        serde_json::json!({"kty": "RSA", "kid": "small", "alg": "RS256", "n": "AQAB", "e": "AQAB"});
    let set = serde_json::json!({"keys": [encryption, hmac, no_alg, small, good.clone(), good]});
    let keys = jwt_keys::KeySet::from_json(set.to_string().as_bytes()).unwrap();
    assert_eq!(keys.kids().collect::<Vec<_>>(), vec![key.kid.as_str()]);
}

#[test]
fn missing_directory_is_a_load_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Verifier::from_dir(tmp.path().join("absent")).unwrap_err();
    assert!(matches!(err, jwt_keys::LoadError::Read { .. }), "{err}");
    let err = Signer::from_dir(tmp.path().join("absent")).unwrap_err();
    assert!(matches!(err, jwt_keys::LoadError::Read { .. }), "{err}");
}

#[test]
fn debug_output_never_shows_key_material() {
    let [key] = keys(1).try_into().ok().unwrap();
    let fx = fixture(&key, &[(&key, "RS256")]);
    let signer = Signer::from_dir(fx.secret.path()).unwrap();
    let signing_key =
        SigningKey::from_parts(key.private_pem.as_bytes(), &key.kid, "RS256").unwrap();
    for shown in [format!("{signer:?}"), format!("{signing_key:?}")] {
        assert!(shown.contains(&key.kid), "{shown}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert!(!shown.contains(&key.n[..40]), "{shown}");
    }
}
