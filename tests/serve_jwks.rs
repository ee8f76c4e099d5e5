//! `jwt-key-operator serve-jwks` as a process, against a directory that is swapped the way the
//! kubelet swaps a mounted ConfigMap (timestamped directory, `..data` symlink renamed over).
//! No cluster: the server needs no API access, and runs here with no kubeconfig at all. Keys of
//! every algorithm (RS256, ES256, ES384, EdDSA) are served and reloaded as the operator publishes
//! them.
//!
//! The PyJWKClient test needs PyJWT and cryptography in the interpreter `JKO_PYTHON` (default
//! `python3`; `scripts/test` prepares one); a missing module fails the test rather than skipping it.

// The kubelet-style directory and the test keys of the consumer crate's tests, shared rather than
// written twice.
#[path = "../crates/jwt-keys/tests/common/mod.rs"]
mod kubelet;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    jwk::{Jwk, ThumbprintHash},
};
use jwt_key_operator::{crd::Algorithm as KeyAlgorithm, keys::KeyPair, resources};
use kubelet::{AnyKey, KubeletDir, TestKey, any_keys, configmap_files, keys, now, wait_for};
use serde_json::{Value, json};

const ISSUER: &str = "https://auth.example.test";
const AUDIENCE: &str = "api";
/// Time allowed for the server to pick up a swap (it watches the directory; the poll is 5 s).
const RELOAD: Duration = Duration::from_secs(10);

/// A running `serve-jwks`, killed when dropped (its log is printed if the test failed).
struct Server {
    child: Child,
    address: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jwt-key-operator"))
            .args(["serve-jwks", "--dir"])
            .arg(dir)
            .args(["--http-address", "127.0.0.1", "--http-port", "0"])
            .args(["--log-format", "json"])
            .args(extra)
            // No Kubernetes anywhere: the server must not need it.
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("HTTP_PORT")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("starting jwt-key-operator serve-jwks");
        let mut server = Server {
            child,
            address: "127.0.0.1:0".parse().unwrap(),
            log,
        };
        let mut address = None;
        let started = wait_for(Duration::from_secs(30), || {
            address = server.logs().lines().find_map(|line| {
                let line: Value = serde_json::from_str(line).ok()?;
                line["message"]
                    .as_str()?
                    .starts_with("serving")
                    .then(|| line["address"].as_str()?.parse().ok())?
            });
            address.is_some()
        });
        assert!(started, "serve-jwks did not start:\n{}", server.logs());
        server.address = address.unwrap();
        server
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn get(&self, path: &str) -> HttpResponse {
        request(self.address, "GET", path, &[])
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Waits until the JWK set served has exactly these kids, and returns its ETag.
    fn wait_serving(&self, kids: &[&str]) -> String {
        let mut last = None;
        let served = wait_for(RELOAD, || {
            let response = self.get("/.well-known/jwks.json");
            let matches = response.status == 200 && served_kids(&response) == kids;
            last = Some(response);
            matches
        });
        let last = last.unwrap();
        assert!(
            served,
            "serving {:?} (status {}), expected {kids:?}\n{}",
            served_kids(&last),
            last.status,
            self.logs()
        );
        last.header("etag").expect("an ETag").to_owned()
    }

    /// Waits until the server has counted `failures` failed reloads, and returns /healthz.
    fn wait_failed_reloads(&self, failures: u64) -> Value {
        let mut health = Value::Null;
        let counted = wait_for(RELOAD, || {
            health = self.get("/healthz").json();
            health["failedReloads"].as_u64() >= Some(failures)
        });
        assert!(counted, "{failures} failed reloads expected: {health}");
        health
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("===== serve-jwks log =====\n{}", self.logs());
        }
    }
}

#[derive(Debug)]
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "{err}: status {} body {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One HTTP/1.1 request on its own connection.
fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut stream = TcpStream::connect(address).expect("connecting to serve-jwks");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: jwks.test\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("reading the response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn served_kids(response: &HttpResponse) -> Vec<String> {
    serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|set| {
            set["keys"].as_array().map(|keys| {
                keys.iter()
                    .filter_map(|key| key["kid"].as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The files of a mounted ConfigMap: (name, content).
type Files = Vec<(String, Vec<u8>)>;

/// The ConfigMap content publishing `published` (signing key first), all RS256.
fn published(keys: &[&TestKey]) -> Files {
    let with_alg: Vec<(&TestKey, &str)> = keys.iter().map(|key| (*key, "RS256")).collect();
    configmap_files(&with_alg)
}

fn sign(key: &TestKey) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "serve-jwks", "iat": now(), "exp": now() + 300});
    let encoding = EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
}

fn python() -> String {
    std::env::var("JKO_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// PyJWKClient in a Python process: one token per line in, one verdict per line out.
struct PyVerifier {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
    verified: usize,
    failures: Vec<String>,
}

impl PyVerifier {
    fn start(jwks_url: &str, lifespan: Duration, cooldown: Duration) -> PyVerifier {
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
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/serve_jwks/pyjwk_verifier.py"
        );
        let mut child = Command::new(&python)
            .arg(script)
            .args([jwks_url, ISSUER, AUDIENCE])
            .arg(lifespan.as_secs_f64().to_string())
            .arg(cooldown.as_secs_f64().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the PyJWKClient verifier");
        PyVerifier {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            verified: 0,
            failures: Vec::new(),
        }
    }

    /// Verifies one token; records a failure instead of stopping.
    fn verify(&mut self, token: &str, signed_by: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{token}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("{err}: the verifier said {line:?}"));
        if answer["ok"] == true && answer["kid"] == signed_by {
            self.verified += 1;
        } else {
            self.failures
                .push(format!("token of {signed_by}: {answer}"));
        }
    }

    /// Ends the run; returns how many times the client fetched the key set.
    fn finish(mut self) -> (usize, Vec<String>, u64) {
        drop(self.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let _ = self.child.wait();
        let stats: Value = serde_json::from_str(rest.trim()).expect("the fetch count");
        (
            self.verified,
            std::mem::take(&mut self.failures),
            stats["fetches"].as_u64().unwrap(),
        )
    }
}

impl Drop for PyVerifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Verifies tokens signed by `key` back to back for `duration` (the verifier's traffic while the
/// schedule waits).
fn traffic(verifier: &mut PyVerifier, key: &TestKey, duration: Duration) {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        verifier.verify(&sign(key), &key.kid);
    }
}

/// What a PyJWKClient saw over a run of rotations.
struct RotationRun {
    verified: usize,
    failures: Vec<String>,
    fetches: u64,
    max_reload_latency: Duration,
}

/// The operator's schedule on a compressed clock, served by serve-jwks to a PyJWKClient: each
/// rotation shows a broken mount first (jwks.json missing, then cut off mid-write), publishes the
/// next key, lets the verifier's traffic run for `propagation`, then makes the next key sign and
/// verifies a token of the previous key too.
fn rotations_with_pyjwk_client(
    rotations: usize,
    propagation: Duration,
    lifespan: Duration,
    cooldown: Duration,
) -> RotationRun {
    let keys = keys(rotations + 1);
    let tmp = tempfile::tempdir().unwrap();
    let mut mount = KubeletDir::new(tmp.path().join("jwks"), &published(&[&keys[0]]));
    let server = Server::start(mount.path(), &[]);
    server.wait_serving(&[&keys[0].kid]);
    let mut verifier = PyVerifier::start(&server.url("/.well-known/jwks.json"), lifespan, cooldown);
    traffic(&mut verifier, &keys[0], Duration::from_millis(300));

    let mut failed_reloads = 0;
    let mut reload_latencies = Vec::new();
    for rotation in 1..=rotations {
        let (active, next) = (&keys[rotation - 1], &keys[rotation]);
        let retired = (rotation >= 2).then(|| &keys[rotation - 2]);

        // The kubelet briefly shows a broken mount: jwks.json missing, then cut off mid-write.
        // The server keeps the last good set; verification goes on.
        let good = server.get("/.well-known/jwks.json");
        mount.publish(&[("other.pem".to_owned(), b"x".to_vec())]);
        failed_reloads += 1;
        server.wait_failed_reloads(failed_reloads);
        let mut partial = published(&[active, next]);
        let half = partial[0].1.len() / 2;
        partial[0].1.truncate(half);
        mount.publish(&partial);
        failed_reloads += 1;
        server.wait_failed_reloads(failed_reloads);
        let during = server.get("/.well-known/jwks.json");
        assert_eq!(during.status, 200);
        assert_eq!(during.body, good.body, "the last good set is still served");
        traffic(&mut verifier, active, Duration::from_millis(100));

        // Publish the next key (retired keys stay published), wait propagationDelay, then sign
        // with it; tokens of the previous key stay valid and verifiable.
        let mut set = vec![active, next];
        set.extend(retired);
        let swapped = Instant::now();
        mount.publish(&published(&set));
        let kids: Vec<&str> = set.iter().map(|key| key.kid.as_str()).collect();
        server.wait_serving(&kids);
        reload_latencies.push(swapped.elapsed());
        let old_token = sign(active);
        traffic(&mut verifier, active, propagation);

        // Activation: the next key signs, the old one is retired (kept), the one before removed.
        mount.publish(&published(&[next, active]));
        server.wait_serving(&[&next.kid, &active.kid]);
        traffic(&mut verifier, next, Duration::from_millis(300));
        verifier.verify(&old_token, &active.kid);
    }

    let (verified, failures, fetches) = verifier.finish();
    RotationRun {
        verified,
        failures,
        fetches,
        max_reload_latency: reload_latencies.into_iter().max().unwrap(),
    }
}

#[test]
fn pyjwk_client_verifies_tokens_across_rotations_with_zero_failures() {
    // PyJWKClient caches the set for `lifespan` and refetches on an unknown kid only if its last
    // fetch is `cooldown` old: a next key published `propagation` > cooldown before it signs is
    // always found, whatever the client's cache holds.
    const ROTATIONS: usize = 4;
    let run = rotations_with_pyjwk_client(
        ROTATIONS,
        Duration::from_millis(1500),
        Duration::from_secs(3),
        Duration::from_millis(1000),
    );
    eprintln!(
        "FIGURE serve-jwks + PyJWKClient: {} tokens over {ROTATIONS} rotations, {} failures, \
         {} JWKS fetches; swap-to-served latency max {:?}",
        run.verified,
        run.failures.len(),
        run.fetches,
        run.max_reload_latency
    );
    assert!(
        run.failures.is_empty(),
        "failed verifications: {:#?}",
        run.failures
    );
    assert!(
        run.verified > 10 * ROTATIONS,
        "only {} tokens verified",
        run.verified
    );
    assert!(
        run.fetches > ROTATIONS as u64,
        "PyJWKClient fetched the set {} times: each new key must have come over HTTP",
        run.fetches
    );
}

#[test]
fn a_propagation_delay_shorter_than_the_clients_refetch_cooldown_fails_tokens() {
    // The control for the test above and for the table in docs/consumers.md: when the next key
    // signs sooner after its publication than the client's refetch cooldown, a client that
    // fetched just before the publication refuses the new kid. So the zero above is earned.
    let run = rotations_with_pyjwk_client(
        2,
        Duration::from_millis(200),
        Duration::from_secs(30),
        Duration::from_secs(3),
    );
    eprintln!(
        "FIGURE PyJWKClient with propagation 0.2 s < cooldown 3 s: {} failures, {} verified",
        run.failures.len(),
        run.verified
    );
    assert!(
        run.failures
            .iter()
            .any(|f| f.contains("Unable to find a signing key")),
        "expected unknown-kid failures, got {:#?}",
        run.failures
    );
}

#[test]
fn the_jwk_set_is_served_as_published_with_etag_and_cache_control() {
    let [key] = keys(1).try_into().ok().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let files = published(&[&key]);
    let mount = KubeletDir::new(tmp.path().join("jwks"), &files);
    let server = Server::start(mount.path(), &[]);

    let response = server.get("/.well-known/jwks.json");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, files[0].1, "the published bytes, unchanged");
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.header("cache-control"),
        Some("public, max-age=300"),
        "the default max-age, well below the default propagationDelay"
    );
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    let etag = response.header("etag").expect("an ETag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "a strong ETag: {etag}"
    );

    // Conditional requests: 304 without a body for the current ETag (also weak or in a list).
    for value in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"stale\", {etag}"),
    ] {
        let not_modified = request(
            server.address,
            "GET",
            "/.well-known/jwks.json",
            &[("If-None-Match", &value)],
        );
        assert_eq!(not_modified.status, 304, "If-None-Match: {value}");
        assert!(not_modified.body.is_empty());
        assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
        assert_eq!(
            not_modified.header("cache-control"),
            Some("public, max-age=300")
        );
    }
    let stale = request(
        server.address,
        "GET",
        "/.well-known/jwks.json",
        &[("If-None-Match", "\"stale\"")],
    );
    assert_eq!(stale.status, 200);

    let head = request(server.address, "HEAD", "/.well-known/jwks.json", &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("etag"), Some(etag.as_str()));

    let post = request(server.address, "POST", "/.well-known/jwks.json", &[]);
    assert_eq!(post.status, 405, "read-only");
    assert_eq!(server.get("/jwks.json").status, 404);
    assert_eq!(server.get("/.well-known/../jwks.json").status, 404);
    assert_eq!(
        server.get("/.well-known/openid-configuration").status,
        404,
        "no discovery without --issuer"
    );
    let health = server.get("/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["kids"], json!([key.kid]));

    // Request heads with more than 64 headers are refused before any handler runs.
    let names: Vec<String> = (0..80).map(|i| format!("X-Padding-{i}")).collect();
    let padding: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "x")).collect();
    let refused = request(server.address, "GET", "/.well-known/jwks.json", &padding);
    assert_eq!(refused.status, 431);

    // --max-age sets Cache-Control.
    let short = Server::start(mount.path(), &["--max-age", "60"]);
    assert_eq!(
        short.get("/.well-known/jwks.json").header("cache-control"),
        Some("public, max-age=60")
    );
}

#[test]
fn the_last_good_set_stays_in_service_when_the_mount_is_missing_partial_or_empty() {
    let [first, second] = keys(2).try_into().ok().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut mount = KubeletDir::new(tmp.path().join("jwks"), &published(&[&first]));
    let server = Server::start(mount.path(), &[]);
    let etag = server.wait_serving(&[&first.kid]);

    let mut partial = published(&[&first, &second]);
    partial[0].1.truncate(40);
    let broken: Vec<(&str, Files)> = vec![
        ("missing", vec![("unrelated".to_owned(), b"x".to_vec())]),
        ("partial", partial),
        (
            "empty set",
            vec![("jwks.json".to_owned(), br#"{"keys":[]}"#.to_vec())],
        ),
        (
            "not JSON",
            vec![("jwks.json".to_owned(), b"<html>".to_vec())],
        ),
    ];
    for (failures, (what, files)) in broken.into_iter().enumerate() {
        mount.publish(&files);
        let health = server.wait_failed_reloads(failures as u64 + 1);
        assert!(
            health["lastError"].is_string(),
            "{what}: the error is reported: {health}"
        );
        let response = server.get("/.well-known/jwks.json");
        assert_eq!(response.status, 200, "{what}");
        assert_eq!(response.header("etag"), Some(etag.as_str()), "{what}");
        assert_eq!(served_kids(&response), [first.kid.as_str()], "{what}");
    }

    // The next good set is taken at once, with a new ETag; the error is cleared.
    mount.publish(&published(&[&second, &first]));
    let new_etag = server.wait_serving(&[&second.kid, &first.kid]);
    assert_ne!(new_etag, etag);
    assert!(server.get("/healthz").json()["lastError"].is_null());
}

#[test]
fn until_a_first_valid_set_appears_the_server_answers_503() {
    let [key] = keys(1).try_into().ok().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut mount = KubeletDir::new(tmp.path().join("jwks"), &[]);
    let server = Server::start(mount.path(), &[]);
    assert_eq!(server.get("/.well-known/jwks.json").status, 503);
    assert_eq!(server.get("/healthz").status, 503);
    mount.publish(&published(&[&key]));
    server.wait_serving(&[&key.kid]);
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn with_an_issuer_the_discovery_document_points_at_the_jwk_set() {
    let keys = keys(2);
    let tmp = tempfile::tempdir().unwrap();
    let files = configmap_files(&[(&keys[0], "PS256"), (&keys[1], "RS256")]);
    let mount = KubeletDir::new(tmp.path().join("jwks"), &files);

    let server = Server::start(mount.path(), &["--issuer", ISSUER]);
    let response = server.get("/.well-known/openid-configuration");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert!(response.header("etag").is_some());
    assert_eq!(
        response.json(),
        json!({
            "issuer": ISSUER,
            "jwks_uri": format!("{ISSUER}/.well-known/jwks.json"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["PS256", "RS256"],
        })
    );

    // An issuer with a path: discovery and the set under that path (and the set at the root).
    let tenant = format!("{ISSUER}/tenants/a");
    let nested = Server::start(mount.path(), &["--issuer", &tenant]);
    let discovery = nested.get("/tenants/a/.well-known/openid-configuration");
    assert_eq!(discovery.status, 200);
    assert_eq!(discovery.json()["issuer"], tenant);
    assert_eq!(
        discovery.json()["jwks_uri"],
        format!("{tenant}/.well-known/jwks.json")
    );
    assert_eq!(
        nested.get("/tenants/a/.well-known/jwks.json").body,
        files[0].1
    );
    assert_eq!(nested.get("/.well-known/jwks.json").body, files[0].1);
    assert_eq!(nested.get("/.well-known/openid-configuration").status, 404);

    // An issuer that is not a URL is refused at start-up, naming the problem.
    let output = Command::new(env!("CARGO_BIN_EXE_jwt-key-operator"))
        .args(["serve-jwks", "--dir"])
        .arg(mount.path())
        .args(["--issuer", "auth.example.test", "--http-port", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not an http(s) URL"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn readyz_answers_as_healthz_does() {
    let [key] = keys(1).try_into().ok().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut mount = KubeletDir::new(tmp.path().join("jwks"), &[]);
    let server = Server::start(mount.path(), &[]);
    // Not ready before a first valid set, as /healthz.
    assert_eq!(server.get("/readyz").status, 503);
    mount.publish(&published(&[&key]));
    server.wait_serving(&[&key.kid]);
    let ready = server.get("/readyz");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["kids"], json!([key.kid]));
    assert_eq!(ready.json()["status"], "ok");
}

#[test]
fn one_swap_of_the_mount_logs_one_reload() {
    let [first, second] = keys(2).try_into().ok().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut mount = KubeletDir::new(tmp.path().join("jwks"), &published(&[&first]));
    let server = Server::start(mount.path(), &[]);
    server.wait_serving(&[&first.kid]);
    mount.publish(&published(&[&second, &first]));
    server.wait_serving(&[&second.kid, &first.kid]);
    // The kubelet writes a new timestamped directory for any change of the ConfigMap, and the
    // files this server reads may be the same: not a change of the keys.
    mount.publish(&published(&[&second, &first]));
    assert!(
        wait_for(RELOAD, || server.get("/healthz").json()["loads"] == 3),
        "the second swap is read: {}",
        server.logs()
    );
    // Late duplicates would come from the watcher's remaining events or the next poll (every
    // 5 s): wait until a poll has certainly run since the swap, then count.
    let polled = Instant::now() + Duration::from_secs(6);
    let reloads = |logs: &str| {
        logs.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["message"] == "reloaded keys")
            .count()
    };
    while Instant::now() < polled {
        assert!(reloads(&server.logs()) <= 1, "{}", server.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(reloads(&server.logs()), 1, "{}", server.logs());
    assert_eq!(server.get("/healthz").json()["loads"], 3);
}

/// The ConfigMap content the operator writes for `keys` (signing key first): its own JWKs, read
/// from each key's private PEM as the operator reads its Secret.
fn published_by_operator(keys: &[&AnyKey]) -> Files {
    let jwks: Vec<_> = keys
        .iter()
        .map(|key| {
            let algorithm: KeyAlgorithm = serde_json::from_value(json!(key.alg)).unwrap();
            KeyPair::from_private_pem(&key.private_pem, algorithm)
                .unwrap()
                .jwk
        })
        .collect();
    let data = resources::config_map_data_of(&jwks.iter().collect::<Vec<_>>()).unwrap();
    data.into_iter()
        .map(|(name, content)| (name, content.into_bytes()))
        .collect()
}

fn jwks_json(files: &Files) -> &[u8] {
    &files
        .iter()
        .find(|(name, _)| name == resources::JWKS_JSON)
        .expect("jwks.json")
        .1
}

/// A token signed as the auth service signs it: with the key's `private.pem`, `kid` and algorithm.
fn sign_any(key: &AnyKey) -> String {
    let algorithm: Algorithm = key.alg.parse().unwrap();
    let pem = key.private_pem.as_bytes();
    let encoding = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .unwrap();
    let mut header = Header::new(algorithm);
    header.kid = Some(key.kid.clone());
    let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "serve-jwks", "iat": now(), "exp": now() + 300});
    jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
}

/// Checks each served JWK of `keys` (in this order) as a verifier reads it: the members RFC 7518
/// (6.2 EC, 6.3 RSA) and RFC 8037 (OKP) give its type and no other, coordinates of the curve's
/// size, `kid` the RFC 7638 thumbprint (as jsonwebtoken computes it); and a token of each key,
/// signed with its private key, verifies with the served JWK, the algorithm pinned to its `alg`.
fn check_served_keys(served: &Value, keys: &[&AnyKey]) {
    let served_keys = served["keys"].as_array().expect("a JWK set");
    assert_eq!(served_keys.len(), keys.len(), "{served}");
    for (jwk, key) in served_keys.iter().zip(keys) {
        let alg = key.alg;
        let (kty, crv, members, size): (&str, Option<&str>, &[&str], usize) = match alg {
            "ES256" => ("EC", Some("P-256"), &["crv", "x", "y"], 32),
            "ES384" => ("EC", Some("P-384"), &["crv", "x", "y"], 48),
            "EdDSA" => ("OKP", Some("Ed25519"), &["crv", "x"], 32),
            _ => ("RSA", None, &["n", "e"], 0),
        };
        let mut names: Vec<&str> = jwk
            .as_object()
            .expect("a JWK is an object")
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        let mut expected = vec!["alg", "kid", "kty", "use"];
        expected.extend(members);
        expected.sort_unstable();
        assert_eq!(names, expected, "{alg}: the members of {jwk}");
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str()),
            (Some(kty), crv),
            "{alg}: {jwk}"
        );
        assert_eq!(
            (jwk["use"].as_str(), jwk["alg"].as_str()),
            (Some("sig"), Some(alg)),
            "{jwk}"
        );
        for coordinate in members.iter().filter(|m| size > 0 && **m != "crv") {
            let bytes = URL_SAFE_NO_PAD
                .decode(jwk[coordinate].as_str().unwrap())
                .unwrap();
            assert_eq!(bytes.len(), size, "{alg}: {coordinate} of {jwk}");
        }
        let parsed: Jwk = serde_json::from_value(jwk.clone()).unwrap();
        let thumbprint = parsed.thumbprint(ThumbprintHash::SHA256).unwrap();
        assert_eq!(
            jwk["kid"], thumbprint,
            "{alg}: kid is the RFC 7638 thumbprint"
        );
        assert_eq!(thumbprint, key.kid, "{alg}: the key served is this key");

        let token = sign_any(key);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        let found = served_keys
            .iter()
            .find(|jwk| jwk["kid"].as_str() == header.kid.as_deref())
            .expect("the token's kid is served");
        let pinned: Algorithm = found["alg"].as_str().unwrap().parse().unwrap();
        let decoding = DecodingKey::from_jwk(&serde_json::from_value(found.clone()).unwrap())
            .unwrap_or_else(|err| panic!("{alg}: {err}: {found}"));
        let mut validation = Validation::new(pinned);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        jsonwebtoken::decode::<Value>(&token, &decoding, &validation)
            .unwrap_or_else(|err| panic!("{alg}: a token of {} does not verify: {err}", key.kid));
    }
}

/// A key of `algorithm` served from the operator's ConfigMap content, and its next key after a
/// swap of the mount: each JWK checked as a verifier reads it, tokens verified with what was
/// served (by jsonwebtoken and by a PyJWKClient that fetches the set over HTTP), the discovery
/// document naming the algorithm, a new ETag for the reloaded set.
fn serves_and_reloads_keys_of(algorithm: KeyAlgorithm) {
    let alg = algorithm.as_str();
    let [first, second] = any_keys(alg, 2).try_into().ok().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let files = published_by_operator(&[&first]);
    let mut mount = KubeletDir::new(tmp.path().join("jwks"), &files);
    let server = Server::start(mount.path(), &["--issuer", ISSUER]);

    let etag = server.wait_serving(&[&first.kid]);
    let response = server.get("/.well-known/jwks.json");
    assert_eq!(
        response.body,
        jwks_json(&files),
        "the published bytes, unchanged"
    );
    check_served_keys(&response.json(), &[&first]);
    let discovery = server.get("/.well-known/openid-configuration").json();
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!([alg])
    );
    let mut verifier = PyVerifier::start(
        &server.url("/.well-known/jwks.json"),
        Duration::from_secs(300),
        Duration::ZERO,
    );
    verifier.verify(&sign_any(&first), &first.kid);

    // The next key is published (the signing key stays first): the swap is served with a new
    // ETag, and tokens of both keys verify with the reloaded set.
    let files = published_by_operator(&[&first, &second]);
    mount.publish(&files);
    let reloaded = server.wait_serving(&[&first.kid, &second.kid]);
    assert_ne!(reloaded, etag);
    let response = server.get("/.well-known/jwks.json");
    assert_eq!(response.body, jwks_json(&files));
    check_served_keys(&response.json(), &[&first, &second]);

    // The next key signs: it comes first, the previous one stays published.
    let files = published_by_operator(&[&second, &first]);
    mount.publish(&files);
    server.wait_serving(&[&second.kid, &first.kid]);
    check_served_keys(
        &server.get("/.well-known/jwks.json").json(),
        &[&second, &first],
    );
    // The client fetched the set before `second` was published: its kid is unknown to the cached
    // set, so the client fetches the set again over HTTP (no refetch cooldown) and verifies it.
    verifier.verify(&sign_any(&second), &second.kid);
    verifier.verify(&sign_any(&first), &first.kid);
    let (verified, failures, fetches) = verifier.finish();
    assert!(
        failures.is_empty(),
        "{alg}: PyJWKClient failed: {failures:#?}"
    );
    assert_eq!(verified, 3);
    assert_eq!(
        fetches, 2,
        "{alg}: the next key's kid made the client refetch"
    );
    let health = server.get("/healthz").json();
    assert_eq!(health["kids"], json!([second.kid, first.kid]));
    assert_eq!(health["failedReloads"], 0, "{health}");
}

#[test]
fn rs256_keys_are_served_and_reloaded() {
    serves_and_reloads_keys_of(KeyAlgorithm::RS256);
}

#[test]
fn es256_keys_are_served_and_reloaded() {
    serves_and_reloads_keys_of(KeyAlgorithm::ES256);
}

#[test]
fn es384_keys_are_served_and_reloaded() {
    serves_and_reloads_keys_of(KeyAlgorithm::ES384);
}

#[test]
fn eddsa_keys_are_served_and_reloaded() {
    serves_and_reloads_keys_of(KeyAlgorithm::EdDSA);
}
