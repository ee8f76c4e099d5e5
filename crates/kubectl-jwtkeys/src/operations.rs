//! `rotate` and `revoke`: set the annotation the operator acts on, then wait until the status and
//! every published ConfigMap show the result, or say what is still pending.

use std::{
    io::{BufRead, IsTerminal, Write},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use jwt_key_operator::crd::{JwtSigningKey, KeyState, REVOKE_ANNOTATION, ROTATE_ANNOTATION};
use kube::ResourceExt;

use crate::{
    cluster::Cluster,
    error::{Error, Result},
    status::{self, short},
};

/// How often a wait reads the key again.
const POLL: Duration = Duration::from_millis(500);

/// Requests a rotation; with `wait`, returns once the new key is in the status and every published
/// ConfigMap.
pub async fn rotate(cluster: &Cluster, name: &str, wait: Option<Duration>) -> Result<String> {
    let key = cluster.key(name).await?;
    let value = Timestamp::now().to_string();
    let known: Vec<String> = kids(&key);
    cluster
        .annotate(name, serde_json::json!({ ROTATE_ANNOTATION: value }))
        .await?;
    let mut out = format!(
        "jwtsigningkey {}/{name}: rotation requested ({ROTATE_ANNOTATION}={value})\n",
        cluster.namespace
    );
    let Some(timeout) = wait else {
        return Ok(out);
    };
    let key = wait_until(cluster, name, timeout, |key, holders| {
        let status = key.status.clone().unwrap_or_default();
        if status.last_rotate_annotation.as_deref() != Some(value.as_str()) {
            return Err(format!(
                "the operator has not handled {ROTATE_ANNOTATION}={value} yet \
                 (status.lastRotateAnnotation: {}); is the operator running and watching namespace {}?",
                status.last_rotate_annotation.as_deref().unwrap_or("none"),
                cluster.namespace
            ));
        }
        let Some(new) = status.keys.iter().find(|k| !known.contains(&k.kid)) else {
            return Err("no new key in the status yet".into());
        };
        pending_holders(holders, &new.kid, true)
    })
    .await?;
    let status = key.status.clone().unwrap_or_default();
    if let Some(new) = status.keys.iter().find(|k| !known.contains(&k.kid)) {
        out.push_str(&format!(
            "new key {} published in {} ConfigMap(s); it signs from {}\n",
            new.kid,
            holders_count(cluster, &key).await,
            new.activates_at.as_deref().unwrap_or("(not scheduled yet)")
        ));
    }
    out.push('\n');
    out.push_str(&status::render(
        &status::report(cluster, &key).await,
        Timestamp::now(),
    ));
    Ok(out)
}

/// Revokes `kids` after a confirmation (unless `yes`); with `wait`, returns once no published
/// ConfigMap holds them.
pub async fn revoke(
    cluster: &Cluster,
    name: &str,
    kids: &[String],
    yes: bool,
    wait: Option<Duration>,
) -> Result<String> {
    let key = cluster.key(name).await?;
    let status = key.status.clone().unwrap_or_default();
    for kid in kids {
        if status.revoked_key_ids.contains(kid) {
            return Err(Error::Invalid(format!(
                "kid {kid} of jwtsigningkey {}/{name} is already revoked",
                cluster.namespace
            )));
        }
        if !status.keys.iter().any(|k| &k.kid == kid) {
            return Err(Error::Invalid(format!(
                "kid {kid} is not a published key of jwtsigningkey {}/{name}; published: {}",
                cluster.namespace,
                kids_of(&key).join(", ")
            )));
        }
    }
    let signing = kids
        .iter()
        .any(|kid| status.active_key_id.as_deref() == Some(kid.as_str()));
    let mut warning = format!(
        "Revoking {} of jwtsigningkey {}/{name}: the key(s) leave the Secret and every ConfigMap at \
         once and are never published again; every token they signed is rejected as soon as \
         verifiers reload.\n",
        kids.join(", "),
        cluster.namespace
    );
    if signing {
        warning.push_str(
            "This includes the signing key: a fresh key signs at once, before verifiers may have \
             loaded it.\n",
        );
    }
    if !yes {
        confirm(&warning)?;
    }
    let value = kids.join(",");
    cluster
        .annotate(name, serde_json::json!({ REVOKE_ANNOTATION: value }))
        .await?;
    let mut out = format!(
        "jwtsigningkey {}/{name}: revocation requested ({REVOKE_ANNOTATION}={value})\n",
        cluster.namespace
    );
    let Some(timeout) = wait else {
        return Ok(out);
    };
    let key = wait_until(cluster, name, timeout, |key, holders| {
        let status = key.status.clone().unwrap_or_default();
        if status.last_revoke_annotation.as_deref() != Some(value.as_str()) {
            return Err(format!(
                "the operator has not handled {REVOKE_ANNOTATION}={value} yet \
                 (status.lastRevokeAnnotation: {}); is the operator running and watching namespace {}?",
                status.last_revoke_annotation.as_deref().unwrap_or("none"),
                cluster.namespace
            ));
        }
        if let Some(kid) = kids
            .iter()
            .find(|kid| status.keys.iter().any(|k| &k.kid == *kid))
        {
            return Err(format!("kid {kid} is still in the status"));
        }
        for kid in kids {
            pending_holders(holders, kid, false)?;
        }
        Ok(())
    })
    .await?;
    let status = key.status.clone().unwrap_or_default();
    out.push_str(&format!(
        "revoked {value}; the signing key is now {}\n\n",
        status.active_key_id.as_deref().unwrap_or("(none)")
    ));
    out.push_str(&status::render(
        &status::report(cluster, &key).await,
        Timestamp::now(),
    ));
    Ok(out)
}

/// Asks on the terminal; without one, refuses and names `--yes`.
fn confirm(warning: &str) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::Invalid(format!(
            "{warning}Not confirmed: stdin is not a terminal; pass --yes to revoke without asking."
        )));
    }
    eprint!("{warning}Revoke? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::Invalid(format!("reading the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Error::Invalid(
            "revocation cancelled; nothing changed".into(),
        ))
    }
}

/// Whether every readable published ConfigMap holds `kid` (`want`) or none does (`!want`); the
/// first that does not, as what is pending.
fn pending_holders(
    holders: &[crate::cluster::Holder],
    kid: &str,
    want: bool,
) -> Result<(), String> {
    for holder in holders {
        let place = format!(
            "ConfigMap {}/{} ({})",
            holder.namespace,
            holder.name,
            if holder.home { "home" } else { "copy" }
        );
        if let Some(problem) = &holder.problem {
            // A ConfigMap the user may not read cannot be waited for; a missing one can.
            if problem == "missing" {
                return Err(format!("{place} is missing"));
            }
            continue;
        }
        let holds = holder.kids.iter().any(|k| k == kid);
        if holds != want {
            return Err(if want {
                format!("{place} does not hold kid {} yet", short(kid))
            } else {
                format!("{place} still holds kid {}", short(kid))
            });
        }
    }
    Ok(())
}

/// Polls the key and its ConfigMaps until `done` accepts them; on timeout the error names what
/// `done` last reported as pending.
async fn wait_until<F>(
    cluster: &Cluster,
    name: &str,
    timeout: Duration,
    mut done: F,
) -> Result<JwtSigningKey>
where
    F: FnMut(&JwtSigningKey, &[crate::cluster::Holder]) -> Result<(), String>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let key = cluster.key(name).await?;
        let holders = cluster.holders(&key).await;
        match done(&key, &holders) {
            Ok(()) => return Ok(key),
            Err(pending) if Instant::now() >= deadline => {
                let ready = key
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                    .map(|c| format!("; Ready={} ({}): {}", c.status, c.reason, c.message))
                    .unwrap_or_default();
                return Err(Error::Timeout(format!(
                    "timed out after {}s waiting for jwtsigningkey {}/{}: {pending}{ready}",
                    timeout.as_secs(),
                    key.namespace().unwrap_or_default(),
                    key.name_any()
                )));
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

fn kids(key: &JwtSigningKey) -> Vec<String> {
    key.status
        .as_ref()
        .map(|s| s.keys.iter().map(|k| k.kid.clone()).collect())
        .unwrap_or_default()
}

fn kids_of(key: &JwtSigningKey) -> Vec<String> {
    key.status
        .as_ref()
        .map(|s| {
            s.keys
                .iter()
                .map(|k| {
                    let state = match k.state {
                        KeyState::Next => "Next",
                        KeyState::Active => "Active",
                        KeyState::Retired => "Retired",
                    };
                    format!("{} ({state})", k.kid)
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn holders_count(cluster: &Cluster, key: &JwtSigningKey) -> usize {
    cluster
        .holders(key)
        .await
        .iter()
        .filter(|h| h.problem.is_none())
        .count()
}
