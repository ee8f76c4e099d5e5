//! End to end: the example auth and API services on 127.0.0.1, their mounts rotated under them
//! the way the operator and the kubelet do it, with traffic throughout and zero failures.
//!
//! Each rotation follows the operator's schedule: the next key is published first; it starts
//! signing only once the verifier has it (the propagation delay); the previous key stays
//! published as "retired" until the tokens it signed would have expired, then is removed.

mod common;

// Each example is its own binary with its own `common` module; here both are compiled into one crate.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../examples/auth_service.rs"]
mod auth_service;

#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../examples/api_service.rs"]
mod api_service;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{KubeletDir, TestKey, configmap_files, keys};
use jwt_keys::{Signer, Verifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROTATIONS: usize = 4;
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Requests the client must complete in every phase of a rotation.
const REQUESTS_PER_PHASE: u64 = 10;

/// One HTTP/1.1 request over a fresh connection; returns status and body.
async fn http(addr: SocketAddr, request: String) -> Result<(u16, String), String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {response:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((status, body.to_owned()))
}

async fn issue(auth: SocketAddr, sub: &str) -> Result<auth_service::TokenResponse, String> {
    let body = format!(r#"{{"sub":"{sub}"}}"#);
    let request = format!(
        "POST /token HTTP/1.1\r\nhost: auth\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    match http(auth, request).await? {
        (200, body) => serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")),
        (status, body) => Err(format!("POST /token: {status} {body}")),
    }
}

async fn hello(api: SocketAddr, token: &str) -> Result<api_service::Hello, String> {
    let request = format!(
        "GET /hello HTTP/1.1\r\nhost: api\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    match http(api, request).await? {
        (200, body) => serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")),
        (status, body) => Err(format!("GET /hello: {status} {body}")),
    }
}

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// What the client saw.
#[derive(Default)]
struct Traffic {
    requests: AtomicU64,
    failures: Mutex<Vec<String>>,
    kids_seen: Mutex<BTreeSet<String>>,
    /// Tokens issued earlier and not yet expired (in the simulation), re-verified all along.
    live_tokens: Mutex<Vec<(String, String)>>,
    stop: AtomicBool,
}

impl Traffic {
    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Waits until the client has completed `n` more rounds, so a phase is really exercised
    /// and no round that started before the call is still in flight.
    async fn wait_rounds(&self, n: u64) {
        let target = self.requests() + n;
        let waited = tokio::time::timeout(STEP_TIMEOUT, async {
            while self.requests() < target {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "client stalled");
    }
}

/// Issue a token, verify it, and re-verify an older live token; forever until stopped.
async fn client(auth: SocketAddr, api: SocketAddr, traffic: Arc<Traffic>) {
    let mut round = 0usize;
    while !traffic.stop.load(Ordering::SeqCst) {
        round += 1;
        let result = async {
            let issued = issue(auth, &format!("user-{round}")).await?;
            let hi = hello(api, &issued.access_token).await?;
            if hi.kid != issued.kid || hi.hello != format!("user-{round}") {
                return Err(format!(
                    "answer {hi:?} does not match token of {}",
                    issued.kid
                ));
            }
            traffic.kids_seen.lock().unwrap().insert(issued.kid.clone());
            let older = {
                let mut live = traffic.live_tokens.lock().unwrap();
                live.push((issued.kid, issued.access_token));
                live.get(round % live.len()).cloned()
            };
            if let Some((kid, token)) = older {
                let hi = hello(api, &token)
                    .await
                    .map_err(|e| format!("older token of {kid}: {e}"))?;
                if hi.kid != kid {
                    return Err(format!("older token of {kid} verified by {}", hi.kid));
                }
            }
            Ok::<_, String>(())
        }
        .await;
        if let Err(failure) = result {
            traffic.failures.lock().unwrap().push(failure);
        }
        traffic.requests.fetch_add(1, Ordering::SeqCst);
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(STEP_TIMEOUT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_keep_working_across_several_rotations_with_zero_failures() {
    let keys = keys(ROTATIONS + 1);
    let alg = "RS256";
    let tmp = tempfile::tempdir().unwrap();
    let mut secret = KubeletDir::new(tmp.path().join("secret"), &keys[0].secret_files(alg));
    let mut configmap = KubeletDir::new(
        tmp.path().join("jwks"),
        &configmap_files(&[(&keys[0], alg)]),
    );

    let signer = Signer::from_dir(secret.path()).unwrap();
    let verifier = Verifier::builder(configmap.path())
        .issuer(["https://auth.example"])
        .audience(["api"])
        .build()
        .unwrap();
    let settings = auth_service::Settings {
        issuer: "https://auth.example".into(),
        audience: "api".into(),
        token_ttl: Duration::from_secs(300),
    };
    let auth = serve(auth_service::app(signer.clone(), settings)).await;
    let api = serve(api_service::app(verifier.clone())).await;

    let traffic = Arc::new(Traffic::default());
    let client = tokio::spawn(client(auth, api, Arc::clone(&traffic)));
    traffic.wait_rounds(REQUESTS_PER_PHASE).await;

    // Published keys, newest first (after the signing key), as the operator orders them.
    let mut retired: Vec<&TestKey> = Vec::new();
    for i in 0..ROTATIONS {
        let (active, next) = (&keys[i], &keys[i + 1]);

        // 1. The next key is published before it signs.
        let mut published = vec![(active, alg), (next, alg)];
        published.extend(retired.iter().map(|k| (*k, alg)));
        configmap.publish(&configmap_files(&published));
        wait_until("the verifier has the next key", || {
            verifier.keys().get(&next.kid).is_some()
        })
        .await;
        traffic.wait_rounds(REQUESTS_PER_PHASE).await;

        // 2. It starts signing; the old key stays published as retired.
        secret.publish(&next.secret_files(alg));
        let mut published = vec![(next, alg), (active, alg)];
        published.extend(retired.iter().map(|k| (*k, alg)));
        configmap.publish(&configmap_files(&published));
        wait_until("the signer uses the next key", || {
            signer.current_key().kid == next.kid
        })
        .await;
        traffic.wait_rounds(REQUESTS_PER_PHASE).await;

        // 3. Keys retired earlier have outlived their tokens: those tokens expire (leave the
        //    client's pool), then the keys are removed.
        let removed: Vec<String> = retired.iter().map(|k| k.kid.clone()).collect();
        traffic
            .live_tokens
            .lock()
            .unwrap()
            .retain(|(kid, _)| !removed.contains(kid));
        traffic.wait_rounds(2).await;
        configmap.publish(&configmap_files(&[(next, alg), (active, alg)]));
        wait_until("the verifier dropped the removed keys", || {
            let keys = verifier.keys();
            removed.iter().all(|kid| keys.get(kid).is_none())
        })
        .await;
        retired = vec![active];
        traffic.wait_rounds(REQUESTS_PER_PHASE).await;
    }

    traffic.stop.store(true, Ordering::SeqCst);
    client.await.unwrap();

    let failures = traffic.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed rounds: {failures:#?}",
        failures.len()
    );
    let requests = traffic.requests();
    assert!(
        requests >= (ROTATIONS as u64) * 3 * REQUESTS_PER_PHASE,
        "{requests}"
    );
    let seen = traffic.kids_seen.lock().unwrap().clone();
    let all: BTreeSet<String> = keys.iter().map(|k| k.kid.clone()).collect();
    assert_eq!(seen, all, "every key signed tokens that verified");
    assert_eq!(signer.reload_status().failures, 0);
    assert_eq!(verifier.reload_status().failures, 0);
    eprintln!("{requests} rounds over {ROTATIONS} rotations, 0 failures");
}
