//! Read: what a reconcile observes before it decides anything, from the watch caches (an object the
//! caches cannot answer for, and the status when the Secret is gone, from the API server). Nothing
//! here writes.

use std::collections::BTreeMap;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, ResourceExt};

use super::{Context, Error, Found, Result, machine::Observed, report::StatusWritten};
use crate::{
    crd::{ACCEPT_FROM_ANNOTATION, JwtSigningKey, JwtSigningKeyStatus, accepts},
    resources,
};

/// Lookups of target namespaces in flight at once.
const READ_CONCURRENCY: usize = 8;

/// What `jsk` observes; `copies` are the copies it owns in other namespaces ([`copies`]).
pub(super) async fn observe(
    jsk: &JwtSigningKey,
    ctx: &Context,
    copies: Vec<ConfigMap>,
) -> Result<Observed> {
    let namespace = jsk.namespace().unwrap_or_default();
    let secret_name = jsk.secret_name();
    let config_map_name = jsk.config_map_name();
    let secret = ctx
        .secrets
        .find(&ctx.client, &namespace, &secret_name, jsk)
        .await
        .map_err(|e| Error::GetSecret(secret_name, e))?;
    // After a secretName change, the keys move from the Secret under the old name, which goes
    // once the new one holds them: looked for also when the new one exists, so that a delete that
    // failed (or a process that stopped before it) is retried.
    let renamed_secret = renamed_secret(jsk, ctx);
    let home = ctx
        .config_maps
        .find(&ctx.client, &namespace, &config_map_name, jsk)
        .await
        .map_err(|e| Error::GetConfigMap(config_map_name.clone(), e))?;
    let (targets, unaccepted) = target_namespaces(jsk, ctx);
    let renamed_home = renamed_home_config_maps(jsk, ctx);
    // A target namespace without a copy of ours may hold a ConfigMap of that name that is not ours.
    let unknown: Vec<String> = targets
        .iter()
        .filter(|ns| {
            !copies
                .iter()
                .any(|cm| cm.namespace().as_ref() == Some(*ns) && cm.name_any() == config_map_name)
        })
        .cloned()
        .collect();
    let looked_up = stream::iter(unknown)
        .map(|ns| async {
            let found = ctx
                .config_maps
                .find(&ctx.client, &ns, &config_map_name, jsk)
                .await
                .map_err(|e| super::brief(&e));
            (ns, found)
        })
        .buffer_unordered(READ_CONCURRENCY)
        .collect::<BTreeMap<_, _>>()
        .await;
    // The status helps rebuild the state when the Secret is gone: the stored one, since the cached
    // object may predate the last status write. A key that never had a status in the cache and
    // has no Secret or ConfigMap anywhere is new, and costs no read: with no key published, a
    // status the cache has not seen yet could only say that a rotate or revoke annotation was
    // handled, and acting on it again publishes one more key, or revokes none.
    let known = status_known(jsk, ctx);
    let stored_status = match (&secret, &renamed_secret) {
        (Found::Missing, None) => Some(
            if jsk.status.is_none()
                && matches!(home, Found::Missing)
                && copies.is_empty()
                && renamed_home.is_empty()
            {
                known.clone().unwrap_or_default()
            } else {
                stored_status(jsk, ctx, known.clone()).await?
            },
        ),
        _ => None,
    };
    let status_baseline = stored_status
        .clone()
        .or(known)
        .or_else(|| jsk.status.clone())
        .unwrap_or_default();
    Ok(Observed {
        secret,
        renamed_secret,
        home,
        renamed_home,
        copies,
        targets,
        unaccepted,
        looked_up,
        stored_status,
        status_baseline,
    })
}

/// The status this process last wrote, while the object the reconcile started from is the one
/// that write started from.
fn status_known(jsk: &JwtSigningKey, ctx: &Context) -> Option<JwtSigningKeyStatus> {
    let uid = jsk.uid()?;
    let statuses = ctx.memory.statuses.lock().expect("status lock");
    let written: &StatusWritten = statuses.get(&uid)?;
    (written.base == jsk.resource_version()).then(|| written.status.clone())
}

async fn stored_status(
    jsk: &JwtSigningKey,
    ctx: &Context,
    known: Option<JwtSigningKeyStatus>,
) -> Result<JwtSigningKeyStatus> {
    if let Some(status) = known {
        return Ok(status);
    }
    let namespace = jsk.namespace().unwrap_or_default();
    Ok(
        Api::<JwtSigningKey>::namespaced(ctx.client.clone(), &namespace)
            .get_status(&jsk.name_any())
            .await
            .map_err(Error::GetStatus)?
            .status
            .unwrap_or_default(),
    )
}

/// The namespaces the selector matches, split into those that accept copies of this key and those
/// that do not (terminating namespaces are neither).
fn target_namespaces(jsk: &JwtSigningKey, ctx: &Context) -> (Vec<String>, Vec<String>) {
    let Some(selector) = jsk
        .spec
        .publish
        .as_ref()
        .and_then(|p| p.namespace_selector.as_ref())
    else {
        return (Vec::new(), Vec::new());
    };
    let namespace = jsk.namespace().unwrap_or_default();
    let name = jsk.name_any();
    let (mut accepted, mut unaccepted): (Vec<_>, Vec<_>) = ctx
        .namespaces
        .state()
        .iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .filter(|ns| ns.name_any() != namespace && ctx.in_scope(&ns.name_any()))
        .filter(|ns| super::selector_matches(selector, ns.metadata.labels.as_ref()))
        .map(|ns| {
            let accept_from = ns
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ACCEPT_FROM_ANNOTATION))
                .map(String::as_str);
            (ns.name_any(), accepts(accept_from, &namespace, &name))
        })
        .partition(|(_, accepted)| *accepted);
    accepted.sort();
    unaccepted.sort();
    (
        accepted.into_iter().map(|(ns, _)| ns).collect(),
        unaccepted.into_iter().map(|(ns, _)| ns).collect(),
    )
}

/// ConfigMaps this key owns in its own namespace under a name it no longer uses.
fn renamed_home_config_maps(jsk: &JwtSigningKey, ctx: &Context) -> Vec<ConfigMap> {
    let name = jsk.config_map_name();
    ctx.config_maps
        .owned(
            jsk.namespace().as_deref(),
            (resources::SIGNING_KEY_LABEL, &jsk.name_any()),
            jsk,
        )
        .into_iter()
        .filter(|cm| cm.name_any() != name)
        .collect()
}

/// A Secret this key owns under a name it no longer uses (after a `secretName` change).
fn renamed_secret(jsk: &JwtSigningKey, ctx: &Context) -> Option<Secret> {
    let name = jsk.secret_name();
    ctx.secrets
        .owned(
            jsk.namespace().as_deref(),
            (resources::SIGNING_KEY_LABEL, &jsk.name_any()),
            jsk,
        )
        .into_iter()
        .find(|s| s.name_any() != name)
}

/// The copies this key owns in other namespaces.
pub(super) fn copies(jsk: &JwtSigningKey, ctx: &Context) -> Vec<ConfigMap> {
    let namespace = jsk.namespace().unwrap_or_default();
    ctx.config_maps
        .owned(None, (resources::SOURCE_NAMESPACE_LABEL, &namespace), jsk)
        .into_iter()
        .filter(|cm| {
            cm.namespace().as_deref() != Some(namespace.as_str())
                && cm.labels().get(resources::SIGNING_KEY_LABEL) == Some(&jsk.name_any())
        })
        .collect()
}
