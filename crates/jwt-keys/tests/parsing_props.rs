//! Property tests: no input, however hostile, makes token or JWK set parsing panic, and no
//! forged token verifies.

mod common;

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{KubeletDir, configmap_files, keys};
use jwt_keys::{KeySet, TokenHeader, Verifier};
use proptest::prelude::*;

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<(tempfile::TempDir, KubeletDir, Verifier)> = OnceLock::new();
    let (_, _, verifier) = VERIFIER.get_or_init(|| {
        let [key] = keys(1).try_into().ok().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = KubeletDir::new(
            tmp.path().join("jwks"),
            &configmap_files(&[(&key, "RS256")]),
        );
        let verifier = Verifier::builder(dir.path())
            .watch(false)
            .poll_interval(None)
            .build()
            .unwrap();
        (tmp, dir, verifier)
    });
    verifier
}

fn published_kid() -> String {
    verifier().keys().kids().next().unwrap().to_owned()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Headers that look plausible: real and bogus algorithms, the published kid or another.
fn header_json() -> impl Strategy<Value = String> {
    let alg = prop_oneof![
        Just("RS256".to_owned()),
        Just("PS512".to_owned()),
        Just("none".to_owned()),
        Just("HS256".to_owned()),
        "[A-Za-z0-9]{0,8}",
    ];
    let kid = prop_oneof![
        Just(Some(published_kid())),
        Just(None),
        proptest::option::of(".{0,40}"),
    ];
    (alg, kid, any::<bool>()).prop_map(|(alg, kid, typ)| {
        let mut header = serde_json::json!({"alg": alg});
        if let Some(kid) = kid {
            header["kid"] = kid.into();
        }
        if typ {
            header["typ"] = "JWT".into();
        }
        header.to_string()
    })
}

fn jwk_value() -> impl Strategy<Value = serde_json::Value> {
    let text = prop_oneof![
        Just(serde_json::Value::Null),
        ".{0,20}".prop_map(serde_json::Value::from),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| b64(b).into()),
        any::<i64>().prop_map(serde_json::Value::from),
    ];
    let kty = prop_oneof![Just("RSA".into()), Just("oct".into()), text.clone()];
    let alg = prop_oneof![Just("RS256".into()), Just("none".into()), text.clone()];
    (kty, alg, text.clone(), text.clone(), text.clone(), text).prop_map(
        |(kty, alg, kid, n, e, use_)| {
            serde_json::json!({"kty": kty, "alg": alg, "kid": kid, "n": n, "e": e, "use": use_})
        },
    )
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic_the_header_parser_or_verify(token in ".{0,300}") {
        let _ = TokenHeader::parse(&token);
        prop_assert!(verifier().verify::<serde_json::Value>(&token).is_err());
    }

    #[test]
    fn arbitrary_bytes_as_token_parts_never_verify(
        header in prop_oneof![header_json().prop_map(String::into_bytes), any::<Vec<u8>>()],
        payload in any::<Vec<u8>>(),
        signature in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let token = format!("{}.{}.{}", b64(header), b64(payload), b64(signature));
        let _ = TokenHeader::parse(&token);
        prop_assert!(verifier().verify::<serde_json::Value>(&token).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_jwks_parser(bytes in any::<Vec<u8>>()) {
        let _ = KeySet::from_json(&bytes);
    }

    #[test]
    fn jwk_sets_with_arbitrary_members_never_panic(keys in proptest::collection::vec(jwk_value(), 0..6)) {
        let json = serde_json::json!({"keys": keys}).to_string();
        let set = KeySet::from_json(json.as_bytes()).unwrap();
        // Whatever was accepted is an RSA signing key with a kid.
        prop_assert!(set.kids().all(|kid| !kid.is_empty()));
    }
}
