//! The PyJWT snippet of docs/consumers.md works with keys in the operator's layout, both ways.
//!
//! Runs `tests/pyjwt_snippet.py` with the interpreter in `JKO_PYTHON` (default `python3`), which
//! needs `pip install pyjwt cryptography`. A missing module fails the test: it never passes
//! without having run the snippet.

mod common;

use std::process::Command;

use common::{KubeletDir, configmap_files, keys, now};
use jwt_keys::{Signer, Verifier};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    exp: u64,
}

fn python() -> String {
    std::env::var("JKO_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

#[test]
fn pyjwt_snippet_signs_for_rust_and_verifies_rust_tokens() {
    let python = python();
    let probe = Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .output()
        .unwrap_or_else(|err| panic!("cannot run {python} (set JKO_PYTHON): {err}"));
    assert!(
        probe.status.success(),
        "PyJWT is not usable with {python}: {}\nrun `{python} -m pip install pyjwt cryptography` \
         (or point JKO_PYTHON at a venv that has them)",
        String::from_utf8_lossy(&probe.stderr)
    );

    let [key] = keys(1).try_into().ok().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let secret = KubeletDir::new(tmp.path().join("secret"), &key.secret_files("RS256"));
    let jwks = KubeletDir::new(
        tmp.path().join("jwks"),
        &configmap_files(&[(&key, "RS256")]),
    );
    let signer = Signer::from_dir(secret.path()).unwrap();
    let verifier = Verifier::builder(jwks.path())
        .issuer(["https://auth.example"])
        .audience(["api"])
        .build()
        .unwrap();
    let rust_claims = Claims {
        sub: "from-rust".into(),
        iss: "https://auth.example".into(),
        aud: "api".into(),
        exp: now() + 300,
    };
    let rust_token = signer.sign(&rust_claims).unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pyjwt_snippet.py");
    let output = Command::new(&python)
        .arg(script)
        .arg(secret.path())
        .arg(jwks.path())
        .arg(&rust_token)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&output.stdout)));

    // Python verified the Rust token, through jwks.json and through <kid>.pem.
    for via in ["jwks", "pem"] {
        let claims: Claims = serde_json::from_value(answer[via].clone()).unwrap();
        assert_eq!(claims, rust_claims, "verified via {via}");
    }

    // Rust verifies the Python token, which carries the operator's kid.
    let python_token = answer["token"].as_str().unwrap();
    let verified = verifier.verify::<Claims>(python_token).unwrap();
    assert_eq!(verified.kid, key.kid);
    assert_eq!(verified.claims.sub, "from-python");
}
