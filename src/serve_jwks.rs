//! `jwt-key-operator serve-jwks`: serves a mounted JWKS ConfigMap over HTTP, for verifiers that
//! fetch a `jwks_uri` or an OpenID discovery document instead of reading a file.
//!
//! It needs no Kubernetes API access: the kubelet mounts the ConfigMap, and the directory is
//! followed with the same reload logic as the `jwt-keys` crate (`..data` swap, file watcher,
//! periodic re-stat). A missing, partial or invalid `jwks.json` keeps the last good set in
//! service. Responses carry a strong `ETag` (a hash of the published bytes), answer
//! `If-None-Match` with 304, and a `Cache-Control: max-age` that must stay well below the
//! key's `propagationDelay`, because every cache between the file and the verifier adds to the
//! time a new key takes to reach it.

use std::{
    io::Read,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use jwt_keys::reload::{Load, ReloadOptions, Reloading};
use serde::Deserialize;
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::{error, info, warn};

use crate::cli::ServeJwksArgs;

/// Where the JWK set is served.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Where the OpenID discovery document is served (below the issuer's path), with `--issuer`.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// The file of the mounted ConfigMap that is served.
pub const JWKS_FILE: &str = "jwks.json";
/// A ConfigMap holds at most 1 MiB; anything larger is not what the operator wrote.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// How often the directory is re-stat'ed in case the file watcher misses a change.
const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted; JWKS requests are small.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Connections served at once; further connections are closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// How long in-flight requests may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why a `jwks.json` was not taken into service (the previous one stays in service).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read (missing during a swap, permissions).
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than a ConfigMap can be.
    #[error("{path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The content is not a JWK set with at least one key.
    #[error("{path} is not a JWK set: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: InvalidJwks,
    },
}

/// What is wrong with a JWK set document.
#[derive(Debug, thiserror::Error)]
pub enum InvalidJwks {
    /// Not JSON, or keys without `kty` or `kid` (a partial write ends here too).
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// `{"keys": []}`: serving it would make every verifier reject every token.
    #[error("it holds no key")]
    Empty,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<RawKey>,
}

#[derive(Deserialize)]
struct RawKey {
    #[allow(dead_code)] // required to be present, not used
    kty: String,
    kid: String,
    #[serde(default)]
    alg: Option<String>,
}

/// A JWK set as it is served: the published bytes unchanged, their ETag, and what the discovery
/// document needs.
#[derive(Debug, Clone)]
pub struct KeySetDocument {
    body: axum::body::Bytes,
    etag: HeaderValue,
    kids: Vec<String>,
    algorithms: Vec<String>,
}

impl KeySetDocument {
    /// Checks that `bytes` is a JWK set with at least one key, each with `kty` and `kid`.
    pub fn parse(bytes: Vec<u8>) -> Result<KeySetDocument, InvalidJwks> {
        let raw: RawSet = serde_json::from_slice(&bytes)?;
        if raw.keys.is_empty() {
            return Err(InvalidJwks::Empty);
        }
        let mut algorithms: Vec<String> = Vec::new();
        for alg in raw.keys.iter().filter_map(|key| key.alg.as_ref()) {
            if !algorithms.contains(alg) {
                algorithms.push(alg.clone());
            }
        }
        Ok(KeySetDocument {
            etag: etag_of(&bytes),
            kids: raw.keys.into_iter().map(|key| key.kid).collect(),
            algorithms,
            body: bytes.into(),
        })
    }

    /// The key ids, in published order.
    pub fn kids(&self) -> &[String] {
        &self.kids
    }

    /// The distinct `alg` values of the keys, in published order.
    pub fn algorithms(&self) -> &[String] {
        &self.algorithms
    }
}

impl Load for KeySetDocument {
    type Error = LoadError;

    fn load(dir: &Path) -> Result<KeySetDocument, LoadError> {
        let path = dir.join(JWKS_FILE);
        let read_error = |source| LoadError::Read {
            path: path.clone(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .map_err(read_error)?
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(LoadError::TooLarge { path });
        }
        KeySetDocument::parse(bytes).map_err(|source| LoadError::Invalid { path, source })
    }

    fn describe(&self) -> String {
        format!("kids={:?}", self.kids)
    }
}

/// A strong entity tag: the first 128 bits of the SHA-256 of the body, base64url.
fn etag_of(body: &[u8]) -> HeaderValue {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    let tag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]));
    HeaderValue::from_str(&tag).expect("base64url is a valid header value")
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, RFC 9110 section 13.1.2).
pub fn if_none_match_matches(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or_default();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

/// The issuer of the discovery document and the paths it implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    /// The issuer exactly as tokens carry it in `iss`.
    pub url: String,
    /// The path part of the issuer without a trailing slash (`""` for a bare host).
    pub path: String,
}

impl Issuer {
    /// An `http` or `https` URL without query or fragment, as OpenID Connect Discovery requires
    /// (`http` for in-cluster issuers).
    pub fn parse(url: &str) -> Result<Issuer, String> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| format!("issuer {url:?} is not an http(s) URL"))?;
        if url.contains(['?', '#']) {
            return Err(format!(
                "issuer {url:?} must not have a query or fragment (OpenID Connect Discovery)"
            ));
        }
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("issuer {url:?} has no valid host"));
        }
        Ok(Issuer {
            url: url.to_owned(),
            path: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The `jwks_uri` of the discovery document.
    pub fn jwks_uri(&self) -> String {
        format!("{}{JWKS_PATH}", self.url.trim_end_matches('/'))
    }

    /// The discovery document for the published keys.
    pub fn discovery(&self, keys: &KeySetDocument) -> serde_json::Value {
        serde_json::json!({
            "issuer": self.url,
            "jwks_uri": self.jwks_uri(),
            // Required by OpenID Connect Discovery; the values Kubernetes' own service account
            // issuer publishes, since this server issues no ID tokens itself.
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": keys.algorithms(),
        })
    }
}

/// What the handlers share.
#[derive(Clone)]
struct Served {
    dir: PathBuf,
    keys: Arc<OnceLock<Reloading<KeySetDocument>>>,
    issuer: Option<Arc<Issuer>>,
    cache_control: HeaderValue,
}

impl Served {
    fn current(&self) -> Option<Arc<KeySetDocument>> {
        self.keys.get().map(Reloading::current)
    }

    fn not_loaded(&self) -> Response {
        let message = format!(
            "no valid {JWKS_FILE} loaded from {} yet\n",
            self.dir.display()
        );
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("5"))],
            message,
        )
            .into_response()
    }

    /// A JSON document with caching headers, or 304 when the client holds it already.
    fn document(&self, request: &HeaderMap, etag: HeaderValue, body: Body) -> Response {
        let status = if if_none_match_matches(request, &etag) {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        };
        let mut response = if status == StatusCode::OK {
            Response::new(body)
        } else {
            Response::new(Body::empty())
        };
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::ETAG, etag);
        headers.insert(header::CACHE_CONTROL, self.cache_control.clone());
        // Public keys are public: browsers' JavaScript may read them (OIDC clients do).
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        if status == StatusCode::OK {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        response
    }
}

async fn jwks(State(served): State<Served>, request: HeaderMap) -> Response {
    let Some(keys) = served.current() else {
        return served.not_loaded();
    };
    served.document(&request, keys.etag.clone(), Body::from(keys.body.clone()))
}

async fn discovery(State(served): State<Served>, request: HeaderMap) -> Response {
    let (Some(keys), Some(issuer)) = (served.current(), served.issuer.as_ref()) else {
        return served.not_loaded();
    };
    let body = serde_json::to_vec(&issuer.discovery(&keys)).expect("JSON values serialize");
    let etag = etag_of(&body);
    served.document(&request, etag, Body::from(body))
}

/// 200 while a key set is served, with the reload counters (a failed reload keeps serving the
/// last good set, so it is reported here but does not make the server unhealthy).
async fn healthz(State(served): State<Served>) -> Response {
    let (Some(keys), Some(reloading)) = (served.current(), served.keys.get()) else {
        return served.not_loaded();
    };
    let status = reloading.status();
    let body = serde_json::json!({
        "status": "ok",
        "kids": keys.kids(),
        "loads": status.loads,
        "failedReloads": status.failures,
        "lastError": status.last_error,
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// The routes: the JWK set at the root and, with an issuer, under the issuer's path next to the
/// discovery document; `/healthz` and `/readyz`; 404 for anything else, 405 for methods other than GET/HEAD.
fn router(served: Served) -> Router {
    let mut router = Router::new()
        .route(JWKS_PATH, get(jwks))
        .route("/healthz", get(healthz))
        // Kubernetes probes and the operator's own endpoints use both names; same answer.
        .route("/readyz", get(healthz));
    if let Some(issuer) = &served.issuer {
        router = router.route(&format!("{}{DISCOVERY_PATH}", issuer.path), get(discovery));
        if !issuer.path.is_empty() {
            router = router.route(&format!("{}{JWKS_PATH}", issuer.path), get(jwks));
        }
    }
    router
        .layer(axum::middleware::map_response(
            |mut response: Response| async move {
                response.headers_mut().insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                response
            },
        ))
        .with_state(served)
}

/// Runs the server until SIGTERM/SIGINT.
pub async fn serve_jwks(args: ServeJwksArgs) -> ExitCode {
    crate::run::init_logging(args.log_format);
    match serve_inner(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::from(2)
        }
    }
}

async fn serve_inner(args: ServeJwksArgs) -> Result<(), String> {
    let issuer = args
        .issuer
        .as_deref()
        .map(Issuer::parse)
        .transpose()?
        .map(Arc::new);
    let served = Served {
        dir: args.dir.clone(),
        keys: Arc::new(OnceLock::new()),
        issuer,
        cache_control: HeaderValue::from_str(&format!("public, max-age={}", args.max_age))
            .expect("digits are a valid header value"),
    };
    start_following(&served);

    let address = format!("{}:{}", args.http_address, args.http_port);
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    info!(
        address = %local,
        dir = %args.dir.display(),
        issuer = ?served.issuer.as_ref().map(|i| &i.url),
        max_age = args.max_age,
        "serving {JWKS_PATH}"
    );
    serve_connections(listener, router(served), shutdown_signal()).await;
    info!("stopped");
    Ok(())
}

/// Loads the directory and follows it; when the first load fails (the ConfigMap not there or
/// not valid yet), keeps answering 503 and retries until one succeeds.
fn start_following(served: &Served) {
    let options = ReloadOptions {
        watch: true,
        poll_interval: Some(POLL_INTERVAL),
        // Nothing here forces reloads: clients cannot make the server re-read the file.
        forced_reload_interval: Duration::MAX,
    };
    let dir = served.dir.clone();
    let keys = served.keys.clone();
    let first = Reloading::<KeySetDocument>::start(dir.clone(), options);
    let error = match first {
        Ok(reloading) => {
            let _ = keys.set(reloading);
            return;
        }
        Err(error) => error,
    };
    warn!(error = %error, "no valid JWK set yet; answering 503 until there is one");
    std::thread::Builder::new()
        .name("serve-jwks-first-load".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(POLL_INTERVAL.min(Duration::from_secs(1)));
                if let Ok(reloading) = Reloading::<KeySetDocument>::start(dir.clone(), options) {
                    let _ = keys.set(reloading);
                    return;
                }
            }
        })
        .expect("starting a thread");
}

/// Accepts connections until `shutdown` resolves, then lets the open ones finish for at most
/// [`SHUTDOWN_GRACE`].
async fn serve_connections(
    listener: TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "too many connections; closing a new one");
            continue;
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES.max(8192))
            .max_headers(64)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("connections still open after the grace period; closing them");
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(json: &str) -> Result<KeySetDocument, InvalidJwks> {
        KeySetDocument::parse(json.as_bytes().to_vec())
    }

    #[test]
    fn a_published_set_is_served_byte_for_byte_with_its_algorithms() {
        let json = r#"{"keys":[{"kty":"RSA","kid":"a","alg":"RS256","n":"x","e":"AQAB"},
            {"kty":"RSA","kid":"b","alg":"PS256"},{"kty":"RSA","kid":"c","alg":"RS256"}]}"#;
        let doc = document(json).unwrap();
        assert_eq!(doc.body.as_ref(), json.as_bytes());
        assert_eq!(doc.kids(), ["a", "b", "c"]);
        assert_eq!(doc.algorithms(), ["RS256", "PS256"]);
    }

    #[test]
    fn partial_empty_or_foreign_documents_are_refused() {
        for bad in [
            r#"{"keys":[{"kty":"RSA","kid":"a""#,
            "",
            r#"{"keys":[]}"#,
            r#"{"keys":[{"kty":"RSA"}]}"#,
            r#"{"kid":"a"}"#,
            "[]",
        ] {
            assert!(document(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_etag_changes_with_the_content_and_if_none_match_compares_weakly() {
        let a = etag_of(b"a");
        assert_ne!(a, etag_of(b"b"));
        assert_eq!(a, etag_of(b"a"));
        let matches = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            if_none_match_matches(&headers, &a)
        };
        let tag = a.to_str().unwrap();
        assert!(matches(tag));
        assert!(matches(&format!("W/{tag}")));
        assert!(matches(&format!("\"other\", {tag}")));
        assert!(matches("*"));
        assert!(!matches("\"other\""));
        assert!(!if_none_match_matches(&HeaderMap::new(), &a));
    }

    #[test]
    fn the_issuer_decides_the_discovery_path_and_the_jwks_uri() {
        let root = Issuer::parse("https://auth.example.com").unwrap();
        assert_eq!(root.path, "");
        assert_eq!(
            root.jwks_uri(),
            "https://auth.example.com/.well-known/jwks.json"
        );
        let nested = Issuer::parse("http://jwks.auth.svc:8080/tenants/a/").unwrap();
        assert_eq!(nested.path, "/tenants/a");
        assert_eq!(
            nested.jwks_uri(),
            "http://jwks.auth.svc:8080/tenants/a/.well-known/jwks.json"
        );
        for bad in [
            "auth.example.com",
            "ftp://x",
            "https://",
            "https://x/?a=b",
            "https://x#f",
        ] {
            assert!(Issuer::parse(bad).is_err(), "{bad} was accepted");
        }
        let keys = document(r#"{"keys":[{"kty":"RSA","kid":"a","alg":"RS256"}]}"#).unwrap();
        let discovery = root.discovery(&keys);
        assert_eq!(discovery["issuer"], "https://auth.example.com");
        assert_eq!(
            discovery["id_token_signing_alg_values_supported"],
            serde_json::json!(["RS256"])
        );
    }
}
