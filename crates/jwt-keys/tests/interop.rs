//! Interoperability for every kind of key: PyJWT (with cryptography), Node's `jose` and Go's
//! `golang-jwt` verify tokens that the `jwt-keys` signer made, through `jwks.json` (key by kid,
//! pinned to its alg) and through `<kid>.pem`, and sign tokens with the Secret's `private.pem`
//! that the `jwt-keys` verifier accepts; `jose` also recomputes every kid (RFC 7638).
//!
//! The tools come from their registries, cached under `<repo>/.cache/`: the Python venv that
//! `scripts/test` prepares (or `JKO_PYTHON`), `jose` from npm (installed here), `golang-jwt`
//! from the Go module proxy (built here). PyJWT is required; the Node and Go checks are skipped,
//! saying so, only when `node`/`npm` or `go` is not installed at all.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{AnyKey, KubeletDir, any_configmap, now};
use jwt_keys::{Signer, Verifier};
use serde_json::{Value, json};

/// One RSA algorithm of each family, and every EC and OKP one.
const ALGORITHMS: [&str; 5] = ["RS256", "PS256", "ES256", "ES384", "EdDSA"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

fn installed(program: &str, version_flag: &str) -> bool {
    Command::new(program)
        .arg(version_flag)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// For each algorithm: a key in the operator's layout, a token signed by `jwt-keys` for the
/// tool to verify, and the tool's own token for `jwt-keys` to verify. `tool` is called with
/// the Secret and ConfigMap directories, the token and the algorithm, and prints
/// `{"token", "jwks", "pem"[, "thumbprints"]}`.
fn check(name: &str, tool: impl Fn(&Path, &Path, &str, &str) -> Command) {
    for alg in ALGORITHMS {
        let key = AnyKey::generate(alg);
        let tmp = tempfile::tempdir().unwrap();
        let secret = KubeletDir::new(tmp.path().join("secret"), &key.secret_files());
        let jwks = KubeletDir::new(tmp.path().join("jwks"), &any_configmap(&[&key]));
        let signer = Signer::from_dir(secret.path()).unwrap();
        let verifier = Verifier::builder(jwks.path())
            .issuer(["https://auth.example"])
            .audience(["api"])
            .build()
            .unwrap();
        let claims = json!({"sub": "from-rust", "iss": "https://auth.example", "aud": "api", "exp": now() + 300});
        let token = signer.sign(&claims).unwrap();

        let output = run(
            &mut tool(secret.path(), jwks.path(), &token, alg),
            &format!("{name} with {alg}"),
        );
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{name} {alg}: {e}: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
        for via in ["jwks", "pem"] {
            assert_eq!(
                answer[via]["sub"], "from-rust",
                "{name} verified the {alg} token via {via}"
            );
        }
        let verified = verifier
            .verify::<Value>(answer["token"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("jwt-keys refused the {alg} token of {name}: {e}"));
        assert_eq!(verified.kid, key.kid);
        assert_eq!(jwt_keys::algorithm_name(verified.algorithm), alg);
        assert!(
            verified.claims["sub"]
                .as_str()
                .unwrap()
                .starts_with("from-")
        );
        assert_ne!(verified.claims["sub"], "from-rust");
        if let Some(thumbprints) = answer.get("thumbprints") {
            assert_eq!(
                thumbprints[&key.kid], key.kid,
                "{name} computes the same {alg} kid"
            );
        }
        eprintln!("{name}: {alg} both ways");
    }
}

#[test]
fn pyjwt_and_jwt_keys_accept_each_others_tokens_for_every_kind_of_key() {
    let python = std::env::var("JKO_PYTHON").unwrap_or_else(|_| {
        let venv = repo().join(".cache/venv/bin/python");
        if venv.exists() {
            venv.display().to_string()
        } else {
            "python3".to_owned()
        }
    });
    let probe = Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .output()
        .unwrap_or_else(|err| panic!("cannot run {python} (set JKO_PYTHON): {err}"));
    assert!(
        probe.status.success(),
        "PyJWT is not usable with {python}: run scripts/test, or `{python} -m pip install pyjwt \
         cryptography` (or point JKO_PYTHON at a venv that has them)"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pyjwt_snippet.py");
    check("PyJWT", |secret, jwks, token, alg| {
        let mut command = Command::new(&python);
        command
            .arg(&script)
            .arg(secret)
            .arg(jwks)
            .arg(token)
            .arg(alg);
        command
    });
}

#[test]
fn node_jose_and_jwt_keys_accept_each_others_tokens_for_every_kind_of_key() {
    if !installed("node", "--version") || !installed("npm", "--version") {
        eprintln!(
            "SKIPPED: node or npm is not installed; the Node `jose` interop check did not run"
        );
        return;
    }
    let cache = repo().join(".cache/node");
    std::fs::create_dir_all(&cache).unwrap();
    if !cache.join("node_modules/jose/package.json").exists() {
        run(
            Command::new("npm")
                .args([
                    "install",
                    "--no-save",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                ])
                .arg(&cache)
                .arg("jose@6"),
            "npm install jose",
        );
    }
    // The script runs from the cache, where `import "jose"` resolves.
    let script = cache.join("jose-interop.mjs");
    std::fs::copy(interop_dir().join("jose.mjs"), &script).unwrap();
    check("Node jose", |secret, jwks, token, _| {
        let mut command = Command::new("node");
        command.arg(&script).arg(secret).arg(jwks).arg(token);
        command
    });
}

#[test]
fn go_golang_jwt_and_jwt_keys_accept_each_others_tokens_for_every_kind_of_key() {
    if !installed("go", "version") {
        eprintln!("SKIPPED: go is not installed; the Go `golang-jwt` interop check did not run");
        return;
    }
    let cache = repo().join(".cache/go");
    let binary = cache.join("golang-jwt-interop");
    run(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(".")
            .current_dir(interop_dir().join("golang-jwt"))
            .env("GOMODCACHE", cache.join("mod"))
            .env("GOCACHE", cache.join("build"))
            .env("GOFLAGS", "-mod=mod"),
        "go build (golang-jwt from the module proxy)",
    );
    check("Go golang-jwt", |secret, jwks, token, _| {
        let mut command = Command::new(&binary);
        command.arg(secret).arg(jwks).arg(token);
        command
    });
}
