//! Backup and restore as `docs/backup.md` describes it, on the real API server: a Secret restored
//! from a backup taken before a revocation must not bring the revoked key back. The revoked kid is
//! in the key's status (`revokedKeyIds`), which a restore of the Secret alone does not touch, so
//! the operator knows it even when the restored `state.json` and `private.pem` do not.

mod common;
mod support;

use std::collections::BTreeMap;

use common::{install_crd, wait_for, with_temp_ns};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Api, api::PostParams};
use serde_json::json;
use support::*;

/// The kids of every ConfigMap version recorded after `from` (an index into the history), with
/// their namespace, that hold `kid`.
fn config_map_versions_with(history: &History, from: usize, kid: &str) -> Vec<String> {
    history.versions()[from..]
        .iter()
        .filter(|v| v.kind == "ConfigMap")
        .filter(|v| {
            v.kids
                .as_ref()
                .is_some_and(|kids| kids.iter().any(|k| k == kid))
        })
        .map(|v| format!("{}: {:?}", v.namespace, v.kids))
        .collect()
}

#[tokio::test]
async fn a_secret_restored_from_before_a_revocation_never_publishes_the_revoked_key_again() {
    with_temp_ns("docs-backup", |ns| async move {
        install_crd(&ns.client).await;
        let (history, copy) = History::with_copy(&ns).await;
        let _operator = operator(&[&ns.name, &copy]);
        let key = jsk(
            "auth",
            publish_to_copies(json!({
                "rotationInterval": "1h",
                "propagationDelay": "5m",
                "maxTokenLifetime": "10m"
            })),
        );
        let revoked = create_ready(&ns, &key).await;
        wait_for("the copy to hold the first key", REACT, || async {
            let data = config_map_data(&ns.client, &copy, "auth-jwks").await?;
            jwks_kids(&data).contains(&revoked).then_some(())
        })
        .await;

        // The backup: the Secret's data as a backup tool saves it.
        let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), &ns.name);
        let backup: BTreeMap<String, ByteString> = secrets
            .get("auth-signing-key")
            .await
            .expect("reading the Secret")
            .data
            .expect("Secret data");

        // The revocation, until no ConfigMap holds the key.
        annotate(&ns, "auth", json!({"jwtkeys.dev/revoke": revoked})).await;
        let fresh = wait_new_signing_key(&ns, "auth", &revoked).await;
        for namespace in [&ns.name, &copy] {
            wait_for("the revoked key to leave the ConfigMap", REACT, || async {
                let data = config_map_data(&ns.client, namespace, "auth-jwks").await?;
                let kids = jwks_kids(&data);
                (kids.contains(&fresh) && !kids.contains(&revoked)).then_some(())
            })
            .await;
        }
        let revoked_at = history.versions().len();
        assert!(
            config_map_versions_with(&history, 0, &revoked).len() >= 2,
            "the history recorded the key in both ConfigMaps before the revocation"
        );

        // The restore: the Secret's data put back as it was before the revocation, as a restore
        // tool that replaces the object does.
        let mut secret = secrets
            .get("auth-signing-key")
            .await
            .expect("reading the Secret");
        secret.data = Some(backup.clone());
        secrets
            .replace("auth-signing-key", &PostParams::default(), &secret)
            .await
            .expect("restoring the Secret's data");

        // The operator takes the Secret back: it signs with a key that is not the revoked one.
        let signing = wait_for(
            "the Secret to sign with a key other than the revoked one",
            REACT,
            || async {
                let text = secret_text(&ns.client, &ns.name, "auth-signing-key").await?;
                let kid = text.get("kid")?.clone();
                (kid != revoked).then_some(kid)
            },
        )
        .await;
        // The status follows the Secret write in the same reconcile: wait for the one that
        // reports it (a read in between still shows the status from before the restore).
        let ready = wait_status(
            &ns,
            "auth",
            "the status to report the signing key",
            REACT,
            |k| {
                k.status
                    .as_ref()
                    .is_some_and(|s| s.active_key_id.as_deref() == Some(signing.as_str()))
            },
        )
        .await;
        wait_ready(&ns, "auth", "True", "KeysReady").await;
        let status = ready.status.expect("status");
        assert!(
            status.revoked_key_ids.contains(&revoked),
            "the status still lists the revoked kid: {:?}",
            status.revoked_key_ids
        );
        // Every ConfigMap now holds the signing key, and the watch has shown the last Secret write.
        for namespace in [&ns.name, &copy] {
            wait_for("the ConfigMap to hold the signing key", REACT, || async {
                let data = config_map_data(&ns.client, namespace, "auth-jwks").await?;
                jwks_kids(&data).contains(&signing).then_some(())
            })
            .await;
        }
        wait_for(
            "the history to record the last Secret version",
            REACT,
            || async {
                history
                    .versions()
                    .iter()
                    .rev()
                    .find(|v| v.kind == "Secret")
                    .and_then(|v| v.kids.clone())
                    .is_some_and(|kids| kids.first() == Some(&signing))
                    .then_some(())
            },
        )
        .await;

        // The restore happened: the history holds the restored Secret, signing with the revoked key.
        assert!(
            history.versions()[revoked_at..]
                .iter()
                .any(|v| v.kind == "Secret"
                    && v.kids.as_ref().and_then(|k| k.first()) == Some(&revoked)),
            "the history recorded the restored Secret"
        );
        let reappeared = config_map_versions_with(&history, revoked_at, &revoked);
        assert!(
            reappeared.is_empty(),
            "the revoked key {revoked} was published again after the restore: {reappeared:#?}"
        );
        for namespace in [&ns.name, &copy] {
            let data = config_map_data(&ns.client, namespace, "auth-jwks")
                .await
                .expect("the ConfigMap");
            assert!(
                !data.contains_key(&format!("{revoked}.pem")),
                "{namespace} holds the revoked key's PEM"
            );
        }
    })
    .await;
}
