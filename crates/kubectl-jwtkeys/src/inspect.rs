//! `inspect secret` and `inspect configmap`: what each key in an object is (kid, algorithm, size, age,
//! state), from the object itself and the JwtSigningKey's status. Private keys are parsed to check
//! that they match their kid, and never printed.

use std::fmt::Write;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jiff::Timestamp;
use jwt_key_operator::{
    crd::{Algorithm, JwtSigningKey, KeyState},
    keys::KeyPair,
    resources::{
        ALGORITHM, KID, NEXT_KID, NEXT_PRIVATE_PEM, PENDING_PRIVATE_PEM, PRIVATE_PEM,
        SIGNING_KEY_LABEL, SOURCE_NAMESPACE_LABEL, STATE_JSON,
    },
    schedule::KeySet,
};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde::Serialize;

use crate::{
    cluster::{Cluster, parse_jwks},
    error::Result,
    table::{Table, relative},
};

/// One key found in a Secret or ConfigMap.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyLine {
    /// Key id.
    pub kid: String,
    /// Where it is: the Secret entry holding its private key, or `public only`; `jwks.json` for a
    /// ConfigMap.
    pub role: String,
    /// JWS algorithm.
    pub algorithm: String,
    /// RSA modulus size in bits.
    pub bits: Option<usize>,
    /// When it was created or published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Next, Active, Retired, or what is wrong.
    pub state: String,
    /// Checks that failed (a private key that does not match its kid, a PEM entry missing...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// What `inspect` reports about one object.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    /// `Secret` or `ConfigMap`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The JwtSigningKey it belongs to (from its labels), `namespace/name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
    /// Its keys.
    pub keys: Vec<KeyLine>,
    /// Notes: no owner label, status not readable...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Modulus size in bits of a JWK's base64url `n`.
pub fn modulus_bits(n: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(n).ok()?;
    let first = bytes.iter().position(|b| *b != 0)?;
    Some((bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize)
}

fn state_of(record: &jwt_key_operator::schedule::KeyRecord) -> &'static str {
    match (record.activated_at, record.retired_at) {
        (None, _) => "Next",
        (Some(_), None) => "Active",
        (Some(_), Some(_)) => "Retired",
    }
}

fn text(secret: &Secret, entry: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(entry)
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

/// Inspects the Secret `name` of the current namespace.
pub async fn secret(cluster: &Cluster, name: &str) -> Result<Inspection> {
    let secret = cluster.secret(name).await?;
    let mut notes = Vec::new();
    let state: KeySet = match text(&secret, STATE_JSON) {
        Some(json) => serde_json::from_str(&json).unwrap_or_else(|e| {
            notes.push(format!("{STATE_JSON} does not parse: {e}"));
            KeySet::default()
        }),
        None => {
            notes.push(format!("no {STATE_JSON}: not written by jwt-key-operator?"));
            KeySet::default()
        }
    };
    let algorithm = text(&secret, ALGORITHM).unwrap_or_default();
    let mut lines: Vec<KeyLine> = Vec::new();
    // The private entries: each is parsed to compare its kid with the one recorded next to it.
    let entries = [
        (PRIVATE_PEM, text(&secret, KID), "signing key"),
        (NEXT_PRIVATE_PEM, text(&secret, NEXT_KID), "next key"),
        (PENDING_PRIVATE_PEM, None, "generated, not yet published"),
    ];
    for (entry, recorded_kid, role) in entries {
        let Some(pem) = text(&secret, entry) else {
            continue;
        };
        let record = recorded_kid
            .as_deref()
            .and_then(|kid| state.keys.iter().find(|r| r.jwk.kid == kid));
        let alg_name = record
            .map(|r| r.jwk.alg.clone())
            .unwrap_or_else(|| algorithm.clone());
        let parsed = serde_json::from_value::<Algorithm>(serde_json::json!(alg_name))
            .ok()
            .map(|alg| KeyPair::from_private_pem(&pem, alg));
        let mut problems = Vec::new();
        let (kid, bits) = match parsed {
            Some(Ok(pair)) => {
                if let Some(recorded) = &recorded_kid
                    && recorded != pair.kid()
                {
                    problems.push(format!(
                        "{entry} does not match the recorded kid {recorded}"
                    ));
                }
                (pair.kid().to_string(), modulus_bits(&pair.jwk.n))
            }
            Some(Err(err)) => {
                problems.push(format!("{entry}: {err}"));
                (recorded_kid.clone().unwrap_or_else(|| "?".into()), None)
            }
            None => {
                problems.push(format!("unknown algorithm {alg_name:?}"));
                (recorded_kid.clone().unwrap_or_else(|| "?".into()), None)
            }
        };
        let record = state.keys.iter().find(|r| r.jwk.kid == kid);
        lines.push(KeyLine {
            kid,
            role: format!("{role} ({entry})"),
            algorithm: alg_name,
            bits,
            since: record.map(|r| r.published_at.to_string()),
            state: record
                .map(|r| state_of(r).to_string())
                .unwrap_or_else(|| "not published yet".into()),
            problems,
        });
    }
    // Retired keys (and any other published key) have only their public half here.
    for record in &state.keys {
        if lines.iter().any(|l| l.kid == record.jwk.kid) {
            continue;
        }
        lines.push(KeyLine {
            kid: record.jwk.kid.clone(),
            role: "public only".into(),
            algorithm: record.jwk.alg.clone(),
            bits: modulus_bits(&record.jwk.n),
            since: Some(record.published_at.to_string()),
            state: state_of(record).into(),
            problems: Vec::new(),
        });
    }
    if !state.revoked.is_empty() {
        notes.push(format!(
            "revoked: {}",
            state.revoked.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let labels = secret.labels();
    Ok(Inspection {
        kind: "Secret".into(),
        namespace: cluster.namespace.clone(),
        name: name.to_string(),
        signing_key: labels
            .get(SIGNING_KEY_LABEL)
            .map(|k| format!("{}/{k}", cluster.namespace)),
        keys: lines,
        notes,
    })
}

/// Inspects the ConfigMap `name` of the current namespace; states come from the owning
/// JwtSigningKey's status when the user may read it.
pub async fn config_map(cluster: &Cluster, name: &str) -> Result<Inspection> {
    let config_map = cluster.config_map(&cluster.namespace, name).await?;
    let mut notes = Vec::new();
    let labels = config_map.labels();
    let owner = labels.get(SIGNING_KEY_LABEL).map(|key| {
        let home = labels
            .get(SOURCE_NAMESPACE_LABEL)
            .cloned()
            .unwrap_or_else(|| cluster.namespace.clone());
        (home, key.clone())
    });
    let key: Option<JwtSigningKey> = match &owner {
        Some((home, key)) => {
            let home_cluster = Cluster {
                client: cluster.client.clone(),
                namespace: home.clone(),
            };
            match home_cluster.key(key).await {
                Ok(found) => Some(found),
                Err(err) => {
                    notes.push(format!("states unknown: {err}"));
                    None
                }
            }
        }
        None => {
            notes.push(format!(
                "no {SIGNING_KEY_LABEL} label: not published by jwt-key-operator"
            ));
            None
        }
    };
    let data = config_map.data.clone().unwrap_or_default();
    if data.values().any(|v| v.contains("PRIVATE KEY")) {
        notes.push("WARNING: an entry holds a private key (not shown)".into());
    }
    let jwks = parse_jwks(&config_map).map_err(|problem| {
        crate::error::Error::Invalid(format!("ConfigMap {}/{name}: {problem}", cluster.namespace))
    })?;
    let status = key.as_ref().and_then(|k| k.status.clone());
    let lines = jwks
        .into_iter()
        .map(|(kid, jwk)| {
            let mut problems = Vec::new();
            if !data.contains_key(&format!("{kid}.pem")) {
                problems.push(format!("no {kid}.pem entry"));
            }
            let entry = status
                .as_ref()
                .and_then(|s| s.keys.iter().find(|k| k.kid == kid));
            let state = match (&status, entry) {
                (None, _) => "unknown".to_string(),
                (Some(_), Some(entry)) => match entry.state {
                    KeyState::Next => "Next".into(),
                    KeyState::Active => "Active".into(),
                    KeyState::Retired => "Retired".into(),
                },
                (Some(s), None) if s.revoked_key_ids.contains(&kid) => {
                    "REVOKED (still published)".into()
                }
                (Some(_), None) => "not in the key's status".into(),
            };
            KeyLine {
                bits: jwk["n"].as_str().and_then(modulus_bits),
                algorithm: jwk["alg"].as_str().unwrap_or("?").to_string(),
                since: entry.map(|e| e.created_at.clone()),
                role: "jwks.json".into(),
                kid,
                state,
                problems,
            }
        })
        .collect();
    Ok(Inspection {
        kind: "ConfigMap".into(),
        namespace: config_map.namespace().unwrap_or_default(),
        name: name.to_string(),
        signing_key: owner.map(|(ns, key)| format!("{ns}/{key}")),
        keys: lines,
        notes,
    })
}

/// The readable form.
pub fn render(inspection: &Inspection, now: Timestamp) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}/{}{}",
        inspection.kind,
        inspection.namespace,
        inspection.name,
        inspection
            .signing_key
            .as_ref()
            .map(|k| format!("  (JwtSigningKey {k})"))
            .unwrap_or_default()
    );
    let mut table = Table::new(&["KID", "ALG", "SIZE", "AGE", "STATE", "WHERE", "PROBLEMS"]);
    for key in &inspection.keys {
        table.row(vec![
            key.kid.clone(),
            key.algorithm.clone(),
            key.bits
                .map(|b| b.to_string())
                .unwrap_or_else(|| "?".into()),
            key.since
                .as_deref()
                .and_then(|s| s.parse::<Timestamp>().ok())
                .map(|t| relative(t, now).trim_end_matches(" ago").to_string())
                .unwrap_or_else(|| "-".into()),
            key.state.clone(),
            key.role.clone(),
            if key.problems.is_empty() {
                "-".into()
            } else {
                key.problems.join("; ")
            },
        ]);
    }
    out.push_str(&table.render());
    for note in &inspection.notes {
        let _ = writeln!(out, "Note: {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_ignore_leading_zero_bytes_and_bits() {
        let n = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(modulus_bits(&n(&[0x80; 256])), Some(2048));
        assert_eq!(modulus_bits(&n(&[0, 0x80, 1])), Some(16));
        assert_eq!(modulus_bits(&n(&[0x01, 0])), Some(9));
        assert_eq!(modulus_bits("!"), None);
    }
}
