//! Zero-failure soak: an issuer keeps signing with the Secret's files and a verifier keeps verifying
//! with the ConfigMap's files, each seeing changes late by a random delay up to propagationDelay (as
//! a kubelet and a verifier cache would), across many rotations. No valid token may be rejected.
//!
//! `JKO_SOAK_ROTATIONS` sets the number of rotations (default 5 in the suite; `scripts/soak` runs 20).

mod common;
mod support;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{install_crd, with_temp_ns};
use futures::StreamExt;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use support::*;

const P: Duration = Duration::from_secs(3);
const LIFETIME_SECS: u64 = 4;

/// What a mounted volume shows: the latest version, seen late by up to P, never out of order.
type View<T> = Arc<Mutex<Option<T>>>;

fn jitter(seed: &AtomicU64) -> Duration {
    let mut x = seed.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    seed.store(x, Ordering::Relaxed);
    // Half of the delays are the extremes (none, or almost P), where a schedule bug shows first.
    let p = P.as_millis() as u64;
    Duration::from_millis(match x % 4 {
        0 => 0,
        1 => p - 50,
        _ => (x >> 8) % p,
    })
}

/// Feeds every version of a watched object into `view`, each after a random delay up to P.
fn mount<K, T>(
    api: Api<K>,
    name: &str,
    view: View<T>,
    seed: Arc<AtomicU64>,
    extract: fn(&K) -> Option<T>,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    T: Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, T)>();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut visible_at = Instant::now();
        let mut stream = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
        while let Some(Ok(object)) = stream.next().await {
            if let Some(value) = extract(&object) {
                visible_at = visible_at.max(Instant::now() + jitter(&seed));
                let _ = tx.send((visible_at, value));
            }
        }
    });
    tokio::spawn(async move {
        while let Some((at, value)) = rx.recv().await {
            tokio::time::sleep_until(at.into()).await;
            *view.lock().unwrap() = Some(value);
        }
    });
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn no_valid_token_is_rejected_across_rotations() {
    let rotations: usize = std::env::var("JKO_SOAK_ROTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    with_temp_ns("soak", |ns| async move {
        install_crd(&ns.client).await;
        // I1-I3 hold in the copy in another namespace too.
        let (history, copy) = History::with_copy(&ns).await;
        let _operator = operator(&[&ns.name, &copy]);
        let spec = publish_to_copies(
            json!({"rotationInterval": "10s", "propagationDelay": "3s", "maxTokenLifetime": format!("{LIFETIME_SECS}s")}),
        );
        create(&ns, &jsk("auth", spec)).await;
        wait_ready(&ns, "auth", "True", "KeysReady").await;

        let seed = Arc::new(AtomicU64::new(now_secs() | 1));
        let signing: View<(String, String)> = View::default();
        let published: View<String> = View::default();
        mount(Api::<Secret>::namespaced(ns.client.clone(), &ns.name), "auth-signing-key", signing.clone(), seed.clone(), |s| {
            let data = s.data.as_ref()?;
            let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
            Some((text("kid")?, text("private.pem")?))
        });
        mount(Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name), "auth-jwks", published.clone(), seed.clone(), |c| {
            c.data.as_ref()?.get("jwks.json").cloned()
        });

        let stop = Arc::new(AtomicBool::new(false));
        let tokens: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let issued = Arc::new(AtomicU64::new(0));
        let issuer = {
            let (stop, tokens, issued, signing) = (stop.clone(), tokens.clone(), issued.clone(), signing.clone());
            tokio::spawn(async move {
                let mut keys: HashMap<String, EncodingKey> = HashMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let view = signing.lock().unwrap().clone();
                    if let Some((kid, pem)) = view {
                        let key = keys.entry(kid.clone()).or_insert_with(|| EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap());
                        let iat = now_secs();
                        let mut header = Header::new(Algorithm::RS256);
                        header.kid = Some(kid);
                        let token = jsonwebtoken::encode(&header, &json!({"sub": "soak", "iat": iat, "exp": iat + LIFETIME_SECS}), key).unwrap();
                        tokens.lock().unwrap().push((token, iat + LIFETIME_SECS));
                        issued.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let verified = Arc::new(AtomicU64::new(0));
        let verifier = {
            let (stop, tokens, failures, verified, published, seed) =
                (stop.clone(), tokens.clone(), failures.clone(), verified.clone(), published.clone(), seed.clone());
            tokio::spawn(async move {
                let mut keys: BTreeMap<String, DecodingKey> = BTreeMap::new();
                let mut validation = Validation::new(Algorithm::RS256);
                validation.leeway = 0;
                while !stop.load(Ordering::Relaxed) {
                    let jwks = published.lock().unwrap().clone();
                    let candidates: Vec<String> = {
                        let mut pool = tokens.lock().unwrap();
                        // Tokens within a second of expiry are left out: their rejection would be legitimate.
                        pool.retain(|(_, exp)| *exp > now_secs() + 1);
                        let pick = |i: usize| pool.get(i).map(|(t, _)| t.clone());
                        let random = if pool.is_empty() { None } else { pick((seed.load(Ordering::Relaxed) as usize) % pool.len()) };
                        pool.last().map(|(t, _)| t.clone()).into_iter().chain(random).collect()
                    };
                    if let Some(jwks) = jwks {
                        let set: JwkSet = serde_json::from_str(&jwks).unwrap();
                        keys.retain(|kid, _| set.find(kid).is_some());
                        for token in candidates {
                            let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
                            let key = match keys.get(&kid) {
                                Some(key) => key,
                                None => match set.find(&kid) {
                                    Some(jwk) => keys.entry(kid.clone()).or_insert(DecodingKey::from_jwk(jwk).unwrap()),
                                    None => {
                                        failures.lock().unwrap().push(format!("unknown kid {kid}"));
                                        continue;
                                    }
                                },
                            };
                            match jsonwebtoken::decode::<serde_json::Value>(&token, key, &validation) {
                                Ok(_) => {
                                    verified.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => failures.lock().unwrap().push(format!("kid {kid}: {e}")),
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };

        let started = Instant::now();
        common::wait_for(
            &format!("{rotations} rotations"),
            Duration::from_secs(rotations as u64 * 10 + 60),
            || async { (history.signing_kids().len() > rotations).then_some(()) },
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        issuer.await.unwrap();
        verifier.await.unwrap();
        let failures = failures.lock().unwrap().clone();
        eprintln!(
            "figure: soak of {rotations} rotations in {:.0?}: {} tokens issued, {} verifications, {} failures",
            started.elapsed(),
            issued.load(Ordering::Relaxed),
            verified.load(Ordering::Relaxed),
            failures.len()
        );
        assert!(verified.load(Ordering::Relaxed) > 100 * rotations as u64, "the soak verified tokens throughout");
        assert!(failures.is_empty(), "{} failed verifications, first: {:?}", failures.len(), failures.first());
    })
    .await;
}
