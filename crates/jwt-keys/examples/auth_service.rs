//! Example auth service: issues RS256 tokens signed with the key that jwt-key-operator keeps
//! in the mounted Secret, and picks up rotated keys without a restart.
//!
//! ```sh
//! KEY_DIR=/var/run/secrets/jwt-signing-key cargo run -p jwt-keys --example auth_service
//! curl -s -XPOST localhost:8080/token -H 'content-type: application/json' -d '{"sub":"alice"}'
//! ```
//!
//! Environment: `KEY_DIR` (default `/var/run/secrets/jwt-signing-key`), `LISTEN_ADDR`
//! (`0.0.0.0:8080`), `ISSUER` (`https://auth.example`), `AUDIENCE` (`api`),
//! `TOKEN_TTL_SECONDS` (`300`, keep it within the key's `maxTokenLifetime`).
//!
//! A real auth service authenticates the caller before it issues a token; this one issues a
//! token to anyone who asks, to keep the key handling in focus.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use jwt_keys::Signer;
use serde::{Deserialize, Serialize};

use common::{env_or, init_logging, shutdown_signal};

/// What the service is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `iss` of every token.
    pub issuer: String,
    /// `aud` of every token.
    pub audience: String,
    /// `exp - iat` of every token.
    pub token_ttl: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            issuer: env_or("ISSUER", "https://auth.example"),
            audience: env_or("AUDIENCE", "api"),
            token_ttl: Duration::from_secs(
                env_or("TOKEN_TTL_SECONDS", "300")
                    .parse()
                    .expect("TOKEN_TTL_SECONDS must be a number of seconds"),
            ),
        }
    }
}

/// The claims this service puts into a token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: who the token is for.
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// Body of `POST /token`.
#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    /// The subject to issue the token for.
    pub sub: String,
}

/// Answer of `POST /token`, shaped like an OAuth 2.0 token response.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The signed JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until `exp`.
    pub expires_in: u64,
    /// The key that signed it.
    pub kid: String,
}

struct AppState {
    signer: Signer,
    settings: Settings,
}

/// The routes: `POST /token`, `GET /healthz`, `GET /readyz`.
pub fn app(signer: Signer, settings: Settings) -> Router {
    Router::new()
        .route("/token", post(issue_token))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(Arc::new(AppState { signer, settings }))
}

async fn issue_token(
    State(state): State<Arc<AppState>>,
    Json(request): Json<TokenRequest>,
) -> Result<Json<TokenResponse>, (StatusCode, String)> {
    if request.sub.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "sub must not be empty".into()));
    }
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let ttl = state.settings.token_ttl.as_secs();
    let claims = Claims {
        sub: request.sub,
        iss: state.settings.issuer.clone(),
        aud: state.settings.audience.clone(),
        iat,
        exp: iat + ttl,
    };
    // Take the key once so the kid reported is the one that signed.
    let key = state.signer.current_key();
    let access_token = key.sign(&claims).map_err(|err| {
        tracing::error!(error = %err, "signing failed");
        (StatusCode::INTERNAL_SERVER_ERROR, "signing failed".into())
    })?;
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_in: ttl,
        kid: key.kid.clone(),
    }))
}

async fn ready(State(state): State<Arc<AppState>>) -> String {
    // Ready as long as a key is loaded; a failed reload keeps the previous key and is logged.
    format!("signing with {}", state.signer.current_key().kid)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let key_dir = env_or("KEY_DIR", "/var/run/secrets/jwt-signing-key");
    let signer = Signer::from_dir(&key_dir)?;
    let listen = env_or("LISTEN_ADDR", "0.0.0.0:8080");
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, %key_dir, "auth service listening");
    axum::serve(listener, app(signer, Settings::from_env()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}
