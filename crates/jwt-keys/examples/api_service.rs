//! Example API service: accepts only requests with a Bearer token that verifies against the
//! public keys jwt-key-operator publishes in the mounted ConfigMap, following rotations
//! without a restart.
//!
//! ```sh
//! JWKS_DIR=/var/run/jwks cargo run -p jwt-keys --example api_service
//! curl -s localhost:8080/hello -H "authorization: Bearer $TOKEN"
//! ```
//!
//! Environment: `JWKS_DIR` (default `/var/run/jwks`), `LISTEN_ADDR` (`0.0.0.0:8080`),
//! `ISSUER` (`https://auth.example`), `AUDIENCE` (`api`), `LEEWAY_SECONDS` (`60`).

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use jwt_keys::{Verifier, VerifyError};
use serde::{Deserialize, Serialize};

use common::{env_or, init_logging, shutdown_signal};

/// The claims this service reads from a token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Subject.
    pub sub: String,
    /// Expiry, checked by the verifier.
    pub exp: u64,
}

/// Answer of `GET /hello`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    /// The token's subject.
    pub hello: String,
    /// The key that verified the token.
    pub kid: String,
}

/// The routes: `GET /hello` (needs a token), `GET /healthz`, `GET /readyz`.
pub fn app(verifier: Verifier) -> Router {
    Router::new()
        .route("/hello", get(hello))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(Arc::new(verifier))
}

async fn hello(
    State(verifier): State<Arc<Verifier>>,
    headers: HeaderMap,
) -> Result<Json<Hello>, Unauthorized> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or(Unauthorized(None))?;
    let verified = verifier
        .verify::<Claims>(token.trim())
        .map_err(|err| Unauthorized(Some(err)))?;
    Ok(Json(Hello {
        hello: verified.claims.sub,
        kid: verified.kid,
    }))
}

async fn ready(State(verifier): State<Arc<Verifier>>) -> String {
    format!("{} keys published", verifier.keys().len())
}

/// A 401 with the RFC 6750 `WWW-Authenticate` challenge.
pub struct Unauthorized(Option<VerifyError>);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let challenge = match &self.0 {
            None => "Bearer".to_owned(),
            Some(err) => {
                tracing::info!(error = %err, "rejected token");
                // The reason helps clients; it never contains key material.
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    err.to_string().replace(['"', '\\'], "'")
                )
            }
        };
        let mut response = (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let jwks_dir = env_or("JWKS_DIR", "/var/run/jwks");
    let leeway: u64 = env_or("LEEWAY_SECONDS", "60")
        .parse()
        .expect("LEEWAY_SECONDS must be a number of seconds");
    let verifier = Verifier::builder(&jwks_dir)
        .issuer([env_or("ISSUER", "https://auth.example")])
        .audience([env_or("AUDIENCE", "api")])
        .leeway(Duration::from_secs(leeway))
        .build()?;
    let listen = env_or("LISTEN_ADDR", "0.0.0.0:8080");
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, %jwks_dir, "api service listening");
    axum::serve(listener, app(verifier))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}
