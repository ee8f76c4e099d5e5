//! `verify`: which key signed a token, its state, and whether each ConfigMap that publishes the key
//! verifies the token now, and until when (the token's `exp` or the key's removal, whichever is
//! first).

use std::fmt::Write;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jiff::Timestamp;
use jsonwebtoken::{DecodingKey, Validation, jwk::Jwk};
use jwt_key_operator::crd::{JwtSigningKey, KeyState, KeyStatus};
use kube::ResourceExt;
use serde::Serialize;

use crate::{
    cluster::{Cluster, Holder},
    error::{Error, Result},
    table::{Table, when},
};

/// What `verify` reports.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// The token's `kid` header.
    pub kid: String,
    /// The token's `alg` header.
    pub algorithm: String,
    /// The JwtSigningKey that published the kid, `namespace/name`.
    pub signing_key: String,
    /// Next, Active, Retired or Revoked.
    pub state: String,
    /// The token's `exp`, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// When the key leaves every ConfigMap (scheduled or projected from the spec).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_removed_after: Option<String>,
    /// One line per published ConfigMap.
    pub config_maps: Vec<ConfigMapVerdict>,
    /// Whether every ConfigMap verifies the token now.
    pub verifies_everywhere: bool,
}

/// Whether one ConfigMap verifies the token.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapVerdict {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Home or copy.
    pub home: bool,
    /// Whether it verifies the token now.
    pub verifies: bool,
    /// Why not, or until when.
    pub detail: String,
}

/// The token's header and `exp`.
struct Parsed {
    kid: String,
    algorithm: jsonwebtoken::Algorithm,
    algorithm_name: String,
    expires: Option<Timestamp>,
}

/// Whether `token` is a JWT with a `kid` (before anything connects).
pub fn check(token: &str) -> Result<()> {
    parse(token.trim()).map(|_| ())
}

fn parse(token: &str) -> Result<Parsed> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| Error::Invalid(format!("the token does not parse as a JWT: {e}")))?;
    let kid = header.kid.ok_or_else(|| {
        Error::Invalid(
            "the token has no `kid` header; jwt-key-operator's keys are chosen by kid".into(),
        )
    })?;
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .ok_or_else(|| Error::Invalid("the token's payload is not base64url JSON".into()))?;
    let expires = payload["exp"]
        .as_i64()
        .and_then(|exp| Timestamp::from_second(exp).ok());
    Ok(Parsed {
        kid,
        algorithm: header.alg,
        algorithm_name: format!("{:?}", header.alg),
        expires,
    })
}

/// When a published key leaves the ConfigMaps: its scheduled removal, or for a key that has not
/// retired yet, its retirement (or activation plus one interval) plus L + P.
fn removal(key: &JwtSigningKey, entry: &KeyStatus) -> Option<Timestamp> {
    if let Some(at) = &entry.remove_after {
        return at.parse().ok();
    }
    let timing = key.spec.timing().ok()?;
    let keep = timing.max_token_lifetime.as_signed() + timing.propagation_delay.as_signed();
    let retires = match (&entry.retires_at, &entry.activates_at) {
        (Some(retires), _) => retires.parse::<Timestamp>().ok()?,
        (None, Some(activates)) => activates
            .parse::<Timestamp>()
            .ok()?
            .checked_add(timing.rotation_interval.as_signed())
            .ok()?,
        (None, None) => return None,
    };
    retires.checked_add(keep).ok()
}

/// Checks the token against the key's ConfigMaps.
pub async fn verify(cluster: &Cluster, token: &str, all_namespaces: bool) -> Result<Verification> {
    let token = token.trim();
    let parsed = parse(token)?;
    let keys = cluster.keys(all_namespaces).await?;
    let owner = keys.iter().find(|k| {
        k.status.as_ref().is_some_and(|s| {
            s.keys.iter().any(|e| e.kid == parsed.kid) || s.revoked_key_ids.contains(&parsed.kid)
        })
    });
    let Some(key) = owner else {
        let scope = if all_namespaces {
            "any namespace".to_string()
        } else {
            format!("namespace {} (try -A)", cluster.namespace)
        };
        return Err(Error::Invalid(format!(
            "no JwtSigningKey in {scope} publishes or revoked kid {}: the token was not signed by \
             a key of jwt-key-operator, or its key was removed",
            parsed.kid
        )));
    };
    let status = key.status.clone().unwrap_or_default();
    let entry = status.keys.iter().find(|e| e.kid == parsed.kid);
    let state = match entry.map(|e| e.state) {
        Some(KeyState::Next) => "Next",
        Some(KeyState::Active) => "Active",
        Some(KeyState::Retired) => "Retired",
        None => "Revoked",
    };
    let removed = entry.and_then(|e| removal(key, e));
    let until = match (parsed.expires, removed) {
        (Some(exp), Some(removed)) => Some(exp.min(removed)),
        (exp, removed) => exp.or(removed),
    };
    let now = Timestamp::now();
    let holders = cluster.holders(key).await;
    let config_maps: Vec<ConfigMapVerdict> = holders
        .iter()
        .map(|holder| verdict(holder, token, &parsed, until, now))
        .collect();
    Ok(Verification {
        kid: parsed.kid.clone(),
        algorithm: parsed.algorithm_name.clone(),
        signing_key: format!("{}/{}", key.namespace().unwrap_or_default(), key.name_any()),
        state: state.into(),
        expires: parsed.expires.map(|t| t.to_string()),
        key_removed_after: removed.map(|t| t.to_string()),
        verifies_everywhere: !config_maps.is_empty() && config_maps.iter().all(|c| c.verifies),
        config_maps,
    })
}

fn verdict(
    holder: &Holder,
    token: &str,
    parsed: &Parsed,
    until: Option<Timestamp>,
    now: Timestamp,
) -> ConfigMapVerdict {
    let (verifies, detail) = match (&holder.problem, holder.jwks.get(&parsed.kid)) {
        (Some(problem), _) => (false, problem.clone()),
        (None, None) => (false, format!("does not publish kid {}", parsed.kid)),
        (None, Some(jwk)) => match check_signature(jwk, token, parsed.algorithm) {
            Err(why) => (false, why),
            Ok(()) => match parsed.expires {
                Some(exp) if exp <= now => {
                    (false, format!("signature valid, token expired at {exp}"))
                }
                _ => (
                    true,
                    until
                        .map(|t| format!("until {}", when(&t.to_string(), now)))
                        .unwrap_or_else(|| "no exp and no scheduled removal".into()),
                ),
            },
        },
    };
    ConfigMapVerdict {
        namespace: holder.namespace.clone(),
        name: holder.name.clone(),
        home: holder.home,
        verifies,
        detail,
    }
}

/// The signature check alone (expiry and claims are reported separately).
fn check_signature(
    jwk: &serde_json::Value,
    token: &str,
    algorithm: jsonwebtoken::Algorithm,
) -> Result<(), String> {
    let jwk: Jwk = serde_json::from_value(jwk.clone()).map_err(|e| format!("bad JWK: {e}"))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("bad JWK: {e}"))?;
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    if let Some(alg) = jwk.common.key_algorithm {
        let published = format!("{alg:?}");
        if published != format!("{algorithm:?}") {
            return Err(format!(
                "the key is published for {published}, the token says {algorithm:?}"
            ));
        }
    }
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .map(|_| ())
        .map_err(|e| format!("signature does not verify: {e}"))
}

/// The readable form.
pub fn render(v: &Verification, now: Timestamp) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Signed by kid {} ({}) of JwtSigningKey {}: {}",
        v.kid, v.algorithm, v.signing_key, v.state
    );
    if let Some(exp) = &v.expires {
        let _ = writeln!(out, "Token expires: {}", when(exp, now));
    } else {
        let _ = writeln!(out, "Token expires: never (no exp claim)");
    }
    if let Some(removed) = &v.key_removed_after {
        let _ = writeln!(out, "Key removed after: {}", when(removed, now));
    }
    let mut table = Table::new(&["NAMESPACE", "CONFIGMAP", "ROLE", "VERIFIES", "DETAIL"]);
    for c in &v.config_maps {
        table.row(vec![
            c.namespace.clone(),
            c.name.clone(),
            if c.home { "home" } else { "copy" }.into(),
            if c.verifies { "yes" } else { "no" }.into(),
            c.detail.clone(),
        ]);
    }
    out.push_str(&table.render());
    out
}
