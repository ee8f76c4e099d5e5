//! Interoperability for every kind of key: PyJWT (with cryptography), Node's `jose` and Go's
//! `golang-jwt` verify tokens that the `jwt-keys` signer made, through `jwks.json` (key by kid,
//! pinned to its alg) and through `<kid>.pem`, and sign tokens with the Secret's `private.pem`
//! that the `jwt-keys` verifier accepts; `jose` also recomputes every kid (RFC 7638).
//! Two verifiers take some algorithms only in some setups, and the checks assert what each one
//! does with each algorithm, so that a change in them fails here:
//! - go-oidc (oauth2-proxy's `--extra-jwt-issuers`) verifies every kind of key through
//!   `jwks.json` served over HTTP and through `<kid>.pem` once its `SupportedSigningAlgs` lists
//!   the keys' algorithms (as `serve-jwks`'s discovery document does); left unset it takes RS256
//!   only. It does not sign.
//! - Nimbus JOSE+JWT (Spring Security's `NimbusJwtDecoder`) verifies RSA and EC tokens through
//!   `jwks.json` (`JWSVerificationKeySelector`) and `<kid>.pem` and signs them; both paths refuse
//!   EdDSA tokens. Its `Ed25519Verifier` and `Ed25519Signer` (with Tink) handle Ed25519.
//!
//! The tools come from their registries, cached under `<repo>/.cache/`: the Python venv that
//! `scripts/test` prepares (or `JKO_PYTHON`), `jose` from npm (installed here), `golang-jwt` and
//! `go-oidc` from the Go module proxy (built here), Nimbus and Tink from Maven Central (built here
//! with `mvn` into `.cache/java`, the Maven repository in `.cache/m2`; rebuilt only when its
//! sources change). PyJWT is required; the Node, Go and Java checks are skipped, saying so, only
//! when `node`/`npm`, `go` or `java`/`mvn` is not installed at all.

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

/// What a tool does with a token of one algorithm, through one of its ways to verify.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// Verifies it: the tool answers with its claims.
    Verifies,
    /// Refuses it, with an error that contains this text.
    Refused(&'static str),
}

/// What a tool is expected to do with one algorithm: the outcome of each way it verifies (the
/// members of its answer besides `token` and `thumbprints`), and whether it signs a token.
struct Expected {
    verifies: Vec<(&'static str, Outcome)>,
    signs: bool,
}

impl Expected {
    /// Verifies through `jwks.json` and through `<kid>.pem`, and signs.
    fn both_ways(_alg: &str) -> Expected {
        Expected {
            verifies: vec![("jwks", Outcome::Verifies), ("pem", Outcome::Verifies)],
            signs: true,
        }
    }
}

/// For each algorithm: a key in the operator's layout, a token signed by `jwt-keys` for the
/// tool to verify, and the tool's own token, if it signs, for `jwt-keys` to verify. `tool` is
/// called with the Secret and ConfigMap directories, the token and the algorithm, and prints a
/// JSON object: `token` (when it signs), `thumbprints` (optional), and for each way it verifies
/// the claims or `{"refused": <its error>}`. Its answer must hold exactly the ways `expected`
/// names, each with the expected outcome.
fn check(
    name: &str,
    expected: impl Fn(&str) -> Expected,
    tool: impl Fn(&Path, &Path, &str, &str) -> Command,
) {
    for alg in ALGORITHMS {
        let expected = expected(alg);
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
        let mut members: Vec<&str> = answer
            .as_object()
            .unwrap_or_else(|| panic!("{name} {alg}: not an object: {answer}"))
            .keys()
            .map(String::as_str)
            .filter(|m| *m != "thumbprints")
            .collect();
        members.sort_unstable();
        let mut names: Vec<&str> = expected.verifies.iter().map(|(via, _)| *via).collect();
        if expected.signs {
            names.push("token");
        }
        names.sort_unstable();
        assert_eq!(
            members, names,
            "{name} {alg}: the ways it verifies and signs"
        );

        for (via, outcome) in &expected.verifies {
            match outcome {
                Outcome::Verifies => assert_eq!(
                    answer[via]["sub"], "from-rust",
                    "{name} verifies the {alg} token via {via}: {}",
                    answer[via]
                ),
                Outcome::Refused(reason) => {
                    let refused = answer[via]["refused"].as_str().unwrap_or_else(|| {
                        panic!(
                            "{name} was expected to refuse the {alg} token via {via}, but \
                             answered {}",
                            answer[via]
                        )
                    });
                    assert!(
                        refused.contains(reason),
                        "{name} refused the {alg} token via {via} for another reason than \
                         {reason:?}: {refused}"
                    );
                }
            }
        }
        if expected.signs {
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
        }
        if let Some(thumbprints) = answer.get("thumbprints") {
            assert_eq!(
                thumbprints[&key.kid], key.kid,
                "{name} computes the same {alg} kid"
            );
        }
        let ways: Vec<String> = expected
            .verifies
            .iter()
            .map(|(via, outcome)| match outcome {
                Outcome::Verifies => format!("{via}: verifies"),
                Outcome::Refused(_) => format!("{via}: refused"),
            })
            .collect();
        let signs = if expected.signs {
            "signs"
        } else {
            "does not sign"
        };
        eprintln!("{name}: {alg}: {}; {signs}", ways.join(", "));
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
    check("PyJWT", Expected::both_ways, |secret, jwks, token, alg| {
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
    check(
        "Node jose",
        Expected::both_ways,
        |secret, jwks, token, _| {
            let mut command = Command::new("node");
            command.arg(&script).arg(secret).arg(jwks).arg(token);
            command
        },
    );
}

/// Builds the Go program in `tests/interop/<module>` into `<repo>/.cache/go/<module>-interop`,
/// its modules from the module proxy (cached with the build cache under `.cache/go`).
fn go_build(module: &str) -> PathBuf {
    let cache = repo().join(".cache/go");
    let binary = cache.join(format!("{module}-interop"));
    run(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(".")
            .current_dir(interop_dir().join(module))
            .env("GOMODCACHE", cache.join("mod"))
            .env("GOCACHE", cache.join("build"))
            .env("GOFLAGS", "-mod=mod"),
        &format!("go build ({module} from the module proxy)"),
    );
    binary
}

#[test]
fn go_golang_jwt_and_jwt_keys_accept_each_others_tokens_for_every_kind_of_key() {
    if !installed("go", "version") {
        eprintln!("SKIPPED: go is not installed; the Go `golang-jwt` interop check did not run");
        return;
    }
    let binary = go_build("golang-jwt");
    check(
        "Go golang-jwt",
        Expected::both_ways,
        |secret, jwks, token, _| {
            let mut command = Command::new(&binary);
            command.arg(secret).arg(jwks).arg(token);
            command
        },
    );
}

/// go-oidc, the verifier of oauth2-proxy's `--extra-jwt-issuers`, verifies every kind of key
/// through `jwks.json` (its `RemoteKeySet`, over HTTP) and `<kid>.pem` (its `StaticKeySet`) once
/// `SupportedSigningAlgs` lists the keys' algorithms, as the discovery document of `serve-jwks`
/// does and oauth2-proxy passes on. Left unset (an issuer without discovery), it takes RS256 only.
#[test]
fn go_oidc_verifies_every_kind_of_key_with_the_published_algorithms() {
    if !installed("go", "version") {
        eprintln!("SKIPPED: go is not installed; the Go `go-oidc` interop check did not run");
        return;
    }
    let binary = go_build("go-oidc");
    check(
        "Go go-oidc",
        |alg| Expected {
            verifies: vec![
                ("jwks", Outcome::Verifies),
                ("pem", Outcome::Verifies),
                (
                    "no_discovery",
                    if alg == "RS256" {
                        Outcome::Verifies
                    } else {
                        Outcome::Refused("unexpected signature algorithm")
                    },
                ),
            ],
            signs: false,
        },
        |_, jwks, token, _| {
            let mut command = Command::new(&binary);
            command.arg(jwks).arg(token);
            command
        },
    );
}

/// Nimbus JOSE+JWT, the library of Spring Security's `NimbusJwtDecoder`: RSA and EC tokens
/// verify through `jwks.json` (`JWSVerificationKeySelector`) and `<kid>.pem`
/// (`SingleKeyJWSKeySelector`), and Nimbus signs tokens that `jwt-keys` verifies. EdDSA tokens are
/// refused on both paths, though EdDSA is among the expected algorithms: the key selector turns no
/// OKP key into a Java key, and the default verifier factory has no Ed25519. Only Nimbus's
/// `Ed25519Verifier` and `Ed25519Signer`, with Tink on the classpath, handle Ed25519.
#[test]
fn nimbus_verifies_rsa_and_ec_tokens_and_its_key_selector_refuses_eddsa() {
    if !installed("java", "-version") || !installed("mvn", "--version") {
        eprintln!(
            "SKIPPED: java or mvn is not installed; the Java Nimbus JOSE+JWT interop check did \
             not run"
        );
        return;
    }
    let classpath = nimbus_build();
    check(
        "Java Nimbus",
        |alg| {
            if alg == "EdDSA" {
                Expected {
                    verifies: vec![
                        (
                            "jwks",
                            Outcome::Refused(
                                "Another algorithm expected, or no matching key(s) found",
                            ),
                        ),
                        // The default verifier factory has no Ed25519.
                        ("pem", Outcome::Refused("Unsupported JWS algorithm: EdDSA")),
                        ("ed25519_verifier", Outcome::Verifies),
                    ],
                    signs: true,
                }
            } else {
                Expected::both_ways(alg)
            }
        },
        |secret, jwks, token, _| {
            let mut command = Command::new("java");
            command
                .args(["-XX:TieredStopAtLevel=1", "-cp"])
                .arg(&classpath)
                .arg("interop.NimbusInterop")
                .arg(secret)
                .arg(jwks)
                .arg(token);
            command
        },
    );
}

/// Builds `tests/interop/nimbus` with Maven (Nimbus and Tink from Maven Central, cached in
/// `<repo>/.cache/m2`) into `<repo>/.cache/java/nimbus`, unless that build is of the same
/// sources and its classpath is still there, and returns the classpath to run it with.
fn nimbus_build() -> String {
    let project = interop_dir().join("nimbus");
    let build = repo().join(".cache/java/nimbus");
    let mut inputs = Vec::new();
    for file in ["pom.xml", "src/main/java/interop/NimbusInterop.java"] {
        inputs.extend(std::fs::read(project.join(file)).unwrap());
    }
    let stamp = build.join("built-from");
    let classpath = || -> Option<String> {
        let dependencies = std::fs::read_to_string(build.join("classpath")).ok()?;
        let entries: Vec<&str> = dependencies.trim().split(':').collect();
        (build.join("classes/interop/NimbusInterop.class").exists()
            && entries.iter().all(|entry| Path::new(entry).exists()))
        .then(|| format!("{}:{}", build.join("classes").display(), entries.join(":")))
    };
    if std::fs::read(&stamp).ok().as_ref() == Some(&inputs)
        && let Some(classpath) = classpath()
    {
        return classpath;
    }
    run(
        Command::new("mvn")
            .args(["-B", "-q", "-f"])
            .arg(project.join("pom.xml"))
            .arg(format!(
                "-Dmaven.repo.local={}",
                repo().join(".cache/m2").display()
            ))
            .arg(format!("-Dinterop.build={}", build.display()))
            .arg("package"),
        "mvn package (Nimbus JOSE+JWT from Maven Central)",
    );
    std::fs::write(&stamp, &inputs).unwrap();
    classpath().expect("mvn wrote the classpath of the Nimbus check")
}
