//! Unit tests of key material: RFC test vectors, encodings and refusals for every key type.

use super::*;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

/// The P-256 key of RFC 7515 appendix A.3, as PKCS#8 PEM.
fn rfc7515_p256() -> (String, &'static str, &'static str) {
    let x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    let y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    let d = unb64("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI");
    let point = [vec![4], unb64(x), unb64(y)].concat();
    let key = sig::EcdsaKeyPair::from_private_key_and_public_key(
        &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
        &d,
        &point,
    )
    .unwrap();
    let pem = encode_pem("PRIVATE KEY", key.to_pkcs8v1().unwrap().as_ref());
    (pem, x, y)
}

/// The Ed25519 key of RFC 8037 appendix A.1, as PKCS#8 v1 PEM (RFC 8410).
fn rfc8037_ed25519() -> String {
    let seed = unb64("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
    let prefix = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    encode_pem("PRIVATE KEY", &[&prefix[..], &seed].concat())
}

#[test]
fn rsa_thumbprint_matches_rfc_7638_example() {
    // The example key of RFC 7638, section 3.1.
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let expected = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
    assert_eq!(thumbprint(n, "AQAB"), expected);
    let jwk = Jwk {
        kty: "RSA".into(),
        n: n.into(),
        e: "AQAB".into(),
        ..Jwk::default()
    };
    assert_eq!(jwk.thumbprint().as_deref(), Some(expected));
}

#[test]
fn ed25519_key_and_thumbprint_match_rfc_8037() {
    // RFC 8037 A.1 (the key) and A.3 (its thumbprint).
    let pair = KeyPair::from_private_pem(&rfc8037_ed25519(), Algorithm::EdDSA).unwrap();
    assert_eq!(pair.jwk.kty, "OKP");
    assert_eq!(pair.jwk.crv, "Ed25519");
    assert_eq!(pair.jwk.x, "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
    assert_eq!(pair.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    assert_eq!(pair.jwk.alg, "EdDSA");
    assert!(pair.jwk.is_consistent());
    assert_eq!(
        serde_json::to_string(&pair.jwk).unwrap(),
        r#"{"kty":"OKP","use":"sig","alg":"EdDSA","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#
    );
}

#[test]
fn p256_key_of_rfc_7515_gives_its_coordinates_and_thumbprint() {
    let (pem, x, y) = rfc7515_p256();
    let pair = KeyPair::from_private_pem(&pem, Algorithm::ES256).unwrap();
    assert_eq!(
        (pair.jwk.kty.as_str(), pair.jwk.crv.as_str()),
        ("EC", "P-256")
    );
    assert_eq!((pair.jwk.x.as_str(), pair.jwk.y.as_str()), (x, y));
    // SHA-256 of {"crv":"P-256","kty":"EC","x":"f83O...","y":"x_FE..."} (computed with Python's
    // hashlib, independently of this code).
    assert_eq!(pair.kid(), "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U");
    assert!(pair.jwk.is_consistent());
    assert!(pair.jwk.n.is_empty() && pair.jwk.e.is_empty());
}

#[test]
fn rsa_jwk_serializes_exactly_as_before_ec_keys_existed() {
    let pair = KeyPair::generate(2048, Algorithm::RS256).unwrap();
    let json = serde_json::to_string(&pair.jwk).unwrap();
    assert_eq!(
        json,
        format!(
            r#"{{"kty":"RSA","use":"sig","alg":"RS256","kid":"{}","n":"{}","e":"AQAB"}}"#,
            pair.jwk.kid, pair.jwk.n
        )
    );
    // Records written before (no crv/x/y members) read back unchanged.
    let back: Jwk = serde_json::from_str(&json).unwrap();
    assert_eq!(back, pair.jwk);
}

#[test]
fn every_algorithm_generates_a_key_that_round_trips_through_its_pem_forms() {
    for algorithm in Algorithm::ALL {
        let pair = KeyPair::generate(2048, algorithm).unwrap();
        assert!(
            pair.private_pem()
                .starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{algorithm}"
        );
        assert!(
            pair.public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"),
            "{algorithm}"
        );
        assert_eq!(pair.jwk.alg, algorithm.as_str());
        assert_eq!(pair.key_type(), algorithm.key_type());
        assert!(pair.jwk.is_consistent(), "{algorithm}: {:?}", pair.jwk);
        let again = KeyPair::from_private_pem(pair.private_pem(), algorithm).unwrap();
        assert_eq!(again.kid(), pair.kid(), "{algorithm}");
        assert_eq!(again.jwk, pair.jwk, "{algorithm}");
        assert_eq!(again.public_pem, pair.public_pem, "{algorithm}");
        // The SPKI PEM made from the published JWK is the one made from the private key.
        assert_eq!(
            pair.jwk.public_pem().unwrap(),
            pair.public_pem,
            "{algorithm}"
        );
        assert!(!format!("{pair:?}").contains("PRIVATE"));
    }
}

#[test]
fn key_descriptions_name_the_key_type_and_size() {
    let cases = [
        (3072, Algorithm::PS256, "3072-bit RSA", 3072),
        (2048, Algorithm::ES256, "P-256", 256),
        (2048, Algorithm::ES384, "P-384", 384),
        (2048, Algorithm::EdDSA, "Ed25519", 256),
    ];
    for (bits, algorithm, description, size) in cases {
        let pair = KeyPair::generate(bits, algorithm).unwrap();
        assert_eq!(
            (pair.description().as_str(), pair.bits()),
            (description, size)
        );
    }
}

#[test]
fn ec_coordinates_are_zero_padded_to_the_curve_size() {
    // About one key in 128 has a coordinate with a leading zero byte; look until one shows up
    // for each curve, so that the padding is seen, not assumed.
    for (algorithm, size) in [(Algorithm::ES256, 32), (Algorithm::ES384, 48)] {
        let padded = (0..20_000)
            .map(|_| KeyPair::generate(0, algorithm).unwrap())
            .find(|pair| unb64(&pair.jwk.x)[0] == 0 || unb64(&pair.jwk.y)[0] == 0)
            .expect("a coordinate with a leading zero byte within 20000 keys");
        assert_eq!(unb64(&padded.jwk.x).len(), size, "{algorithm}");
        assert_eq!(unb64(&padded.jwk.y).len(), size, "{algorithm}");
        assert!(padded.jwk.is_consistent());
        assert_eq!(padded.jwk.public_pem().unwrap(), padded.public_pem);
    }
}

#[test]
fn a_key_is_never_named_with_an_algorithm_of_another_key_type() {
    // During a change of algorithm (or after a hand edit) the spec names another algorithm than
    // the stored key signs: the key decides, with its type's default algorithm.
    let ec = KeyPair::generate(0, Algorithm::ES256).unwrap();
    let read = KeyPair::from_private_pem(ec.private_pem(), Algorithm::RS256).unwrap();
    assert_eq!((read.kid(), read.jwk.alg.as_str()), (ec.kid(), "ES256"));
    let p384 = KeyPair::generate(0, Algorithm::ES384).unwrap();
    let read = KeyPair::from_private_pem(p384.private_pem(), Algorithm::ES256).unwrap();
    assert_eq!(read.jwk.alg, "ES384");
    let rsa = KeyPair::generate(2048, Algorithm::PS384).unwrap();
    let read = KeyPair::from_private_pem(rsa.private_pem(), Algorithm::EdDSA).unwrap();
    assert_eq!((read.kid(), read.jwk.alg.as_str()), (rsa.kid(), "RS256"));
    // Within its type the key takes the algorithm it is given.
    let read = KeyPair::from_private_pem(rsa.private_pem(), Algorithm::PS512).unwrap();
    assert_eq!(read.jwk.alg, "PS512");

    // Naming it explicitly with another type's algorithm is refused, naming both.
    let error = ec.clone().with_algorithm(Algorithm::RS256).unwrap_err();
    assert_eq!(
        error.to_string(),
        "a P-256 key cannot sign RS256: RS256 needs a RSA key"
    );
    assert!(ec.clone().with_algorithm(Algorithm::EdDSA).is_err());
    assert_eq!(
        rsa.with_algorithm(Algorithm::RS512).unwrap().jwk.alg,
        "RS512"
    );
}

#[test]
fn inconsistent_jwks_are_refused() {
    let ec = KeyPair::generate(0, Algorithm::ES256).unwrap().jwk;
    let ed = KeyPair::generate(0, Algorithm::EdDSA).unwrap().jwk;
    let rsa = KeyPair::generate(2048, Algorithm::RS256).unwrap().jwk;
    let edits: Vec<(&str, Jwk)> = vec![
        (
            "RS256 on an EC key",
            Jwk {
                alg: "RS256".into(),
                ..ec.clone()
            },
        ),
        (
            "ES384 on a P-256 key",
            Jwk {
                alg: "ES384".into(),
                ..ec.clone()
            },
        ),
        (
            "ES256 on an RSA key",
            Jwk {
                alg: "ES256".into(),
                ..rsa.clone()
            },
        ),
        (
            "EdDSA on a P-256 key",
            Jwk {
                alg: "EdDSA".into(),
                ..ec.clone()
            },
        ),
        (
            "an unknown curve",
            Jwk {
                crv: "P-521".into(),
                ..ec.clone()
            },
        ),
        (
            "X25519 (not a signing curve)",
            Jwk {
                crv: "X25519".into(),
                ..ed.clone()
            },
        ),
        (
            "a y member on an OKP key",
            Jwk {
                y: ec.y.clone(),
                ..ed.clone()
            },
        ),
        (
            "RSA members on an EC key",
            Jwk {
                n: rsa.n.clone(),
                e: rsa.e.clone(),
                ..ec.clone()
            },
        ),
        (
            "an EC key without y",
            Jwk {
                y: String::new(),
                ..ec.clone()
            },
        ),
        (
            "a short coordinate",
            Jwk {
                x: b64(&unb64(&ec.x)[1..]),
                ..ec.clone()
            },
        ),
        (
            "a kid of another key",
            Jwk {
                kid: rsa.kid.clone(),
                ..ec.clone()
            },
        ),
        (
            "use enc",
            Jwk {
                use_: "enc".into(),
                ..ed.clone()
            },
        ),
        (
            "kty oct",
            Jwk {
                kty: "oct".into(),
                ..rsa.clone()
            },
        ),
        (
            "an unknown alg",
            Jwk {
                alg: "none".into(),
                ..rsa.clone()
            },
        ),
    ];
    for (what, jwk) in edits {
        assert!(!jwk.is_consistent(), "{what} is refused");
    }
    for jwk in [&ec, &ed, &rsa] {
        assert!(jwk.is_consistent());
    }
}

#[test]
fn a_point_off_its_curve_makes_no_public_key() {
    let ec = KeyPair::generate(0, Algorithm::ES256).unwrap().jwk;
    let mut y = unb64(&ec.y);
    y[31] ^= 1;
    let off = Jwk { y: b64(&y), ..ec };
    assert!(matches!(off.public_pem(), Err(Error::DecodePublic(_))));
}

#[test]
fn private_keys_the_operator_does_not_make_are_refused() {
    // A P-521 key (no such algorithm here), an RSA key in PKCS#1 form and garbage.
    let p521 = sig::EcdsaKeyPair::generate(&sig::ECDSA_P521_SHA512_FIXED_SIGNING).unwrap();
    let p521 = encode_pem("PRIVATE KEY", p521.to_pkcs8v1().unwrap().as_ref());
    let rsa = KeyPair::generate(2048, Algorithm::RS256).unwrap();
    let pkcs1 = rsa.private_pem().replace("PRIVATE KEY", "RSA PRIVATE KEY");
    for pem in [p521.as_str(), pkcs1.as_str(), "not a key", ""] {
        assert!(matches!(
            KeyPair::from_private_pem(pem, Algorithm::RS256),
            Err(Error::DecodePrivate)
        ));
    }
}

#[test]
fn rsa_sizes_other_than_the_three_are_refused() {
    let error = KeyPair::generate(1024, Algorithm::RS256).unwrap_err();
    assert_eq!(
        error.to_string(),
        "generating a 1024-bit RSA key failed: the size is not one of 2048, 3072, 4096"
    );
}
