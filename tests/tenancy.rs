//! End-to-end: tenants cannot plant keys in each other's namespaces. A copy is written only where the
//! selector matches and the namespace accepts the key (`jwtkeys.dev/accept-from`); foreign ConfigMaps
//! are never touched, and freeing the name gets the copy at once; renaming the ConfigMap or the
//! Secret leaves nothing behind (an old Secret whose delete was refused goes once it can), and a
//! ConfigMap renamed while the Secret is lost still publishes the lost key.

mod common;
mod support;

use std::time::Duration;

use common::{install_crd, wait_for, with_temp_ns};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;
use support::*;

#[tokio::test]
async fn a_tenant_key_reaches_only_the_namespaces_that_accept_it() {
    with_temp_ns("tenant", |ns| async move {
        install_crd(&ns.client).await;
        let victim = ns.extra("victim", &[]).await;
        let consenting = ns.extra("consenting", &[]).await;
        accept_from(&ns.client, &consenting, Some(&format!("{}/*", ns.name))).await;
        let _operator = operator(&[&ns.name, &victim, &consenting]);
        // A popular name and a selector that matches every namespace.
        create(
            &ns,
            &jsk(
                "tenant",
                json!({"configMapName": "auth-jwks", "publish": {"namespaceSelector": {}}}),
            ),
        )
        .await;
        let key = wait_status(
            &ns,
            "tenant",
            "the copy in the consenting namespace",
            REACT,
            |k| {
                k.status.as_ref().is_some_and(|s| {
                    s.published_namespaces == [consenting.clone()]
                        && s.unaccepted_namespaces == [victim.clone()]
                })
            },
        )
        .await;
        assert!(key.status.is_some());
        assert!(
            config_map_data(&ns.client, &victim, "auth-jwks")
                .await
                .is_none(),
            "nothing is written where the key is not accepted"
        );
        let copy = config_map_data(&ns.client, &consenting, "auth-jwks")
            .await
            .expect("the accepted copy");
        assert_eq!(jwks_kids(&copy).len(), 1);
        let (_, _, note) = wait_event(&ns, "NamespaceNotAccepted").await;
        assert!(note.contains(&victim), "{note}");

        // Consent withdrawn: the copy goes.
        accept_from(&ns.client, &consenting, None).await;
        wait_for("the copy to be removed", REACT, || async {
            config_map_data(&ns.client, &consenting, "auth-jwks")
                .await
                .is_none()
                .then_some(())
        })
        .await;
        wait_status(&ns, "tenant", "no published namespace", REACT, |k| {
            k.status
                .as_ref()
                .is_some_and(|s| s.published_namespaces.is_empty())
        })
        .await;
        // Consent naming another key does not accept this one.
        accept_from(&ns.client, &victim, Some(&format!("{}/other", ns.name))).await;
        accept_from(
            &ns.client,
            &consenting,
            Some(&format!("{}/tenant", ns.name)),
        )
        .await;
        wait_for("the copy to come back", REACT, || async {
            config_map_data(&ns.client, &consenting, "auth-jwks").await
        })
        .await;
        assert!(
            config_map_data(&ns.client, &victim, "auth-jwks")
                .await
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn a_foreign_config_map_in_a_target_is_reported_and_freeing_the_name_gets_the_copy_at_once() {
    with_temp_ns("tenant-conflict", |ns| async move {
        install_crd(&ns.client).await;
        let target = ns.extra("target", &[("jwks", "auth")]).await;
        accept_from(&ns.client, &target, Some(&format!("{}/auth", ns.name))).await;
        let foreign: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "auth-jwks"},
            "data": {"jwks.json": "{\"keys\":[]}"},
        }))
        .unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &target);
        cms.create(&PostParams::default(), &foreign).await.unwrap();
        let _operator = operator(&[&ns.name, &target]);
        create(
            &ns,
            &jsk(
                "auth",
                json!({"rotationInterval": "1h", "publish": {"namespaceSelector": {"matchLabels": {"jwks": "auth"}}}}),
            ),
        )
        .await;
        wait_ready(&ns, "auth", "False", "ConfigMapConflict").await;
        let (kind, _, note) = wait_event(&ns, "ConfigMapConflict").await;
        assert_eq!(kind, "Warning");
        assert!(note.contains(&target), "the event names the namespace: {note}");
        assert_eq!(
            cms.get("auth-jwks").await.unwrap().data.unwrap()["jwks.json"],
            "{\"keys\":[]}",
            "the foreign ConfigMap is untouched"
        );

        cms.delete("auth-jwks", &DeleteParams::default()).await.unwrap();
        let copy = wait_for("the copy", Duration::from_secs(10), || async {
            let data = config_map_data(&ns.client, &target, "auth-jwks").await?;
            (!jwks_kids(&data).is_empty()).then_some(data)
        })
        .await;
        let home = config_map_data(&ns.client, &ns.name, "auth-jwks").await.unwrap();
        assert_eq!(copy, home);
        wait_ready(&ns, "auth", "True", "KeysReady").await;
    })
    .await;
}

#[tokio::test]
async fn renaming_the_config_map_and_the_secret_leaves_nothing_behind() {
    with_temp_ns("tenant-rename", |ns| async move {
        install_crd(&ns.client).await;
        let target = ns.extra("target", &[("jwks", "auth")]).await;
        accept_from(&ns.client, &target, Some(&format!("{}/auth", ns.name))).await;
        let _operator = operator(&[&ns.name, &target]);
        let spec = json!({"rotationInterval": "1h", "publish": {"namespaceSelector": {"matchLabels": {"jwks": "auth"}}}});
        let kid = create_ready(&ns, &jsk("auth", spec)).await;
        wait_for("the copy", REACT, || async {
            config_map_data(&ns.client, &target, "auth-jwks").await
        })
        .await;
        let old_private = secret_text(&ns.client, &ns.name, "auth-signing-key")
            .await
            .unwrap()["private.pem"]
            .clone();

        patch_spec(&ns, "auth", json!({"configMapName": "renamed-jwks", "secretName": "renamed-key"})).await;
        wait_for("the keys under the new names only", REACT, || async {
            let secret = secret_text(&ns.client, &ns.name, "renamed-key").await?;
            let home = config_map_data(&ns.client, &ns.name, "renamed-jwks").await?;
            let copy = config_map_data(&ns.client, &target, "renamed-jwks").await?;
            let gone = secret_text(&ns.client, &ns.name, "auth-signing-key").await.is_none()
                && config_map_data(&ns.client, &ns.name, "auth-jwks").await.is_none()
                && config_map_data(&ns.client, &target, "auth-jwks").await.is_none();
            (gone && secret["kid"] == kid && jwks_kids(&home) == [kid.clone()] && copy == home)
                .then_some(())
        })
        .await;
        let secret = secret_text(&ns.client, &ns.name, "renamed-key").await.unwrap();
        assert_eq!(secret["private.pem"], old_private, "the same key signs under the new name");
        wait_ready(&ns, "auth", "True", "KeysReady").await;
        // Nothing of this key is left under another name.
        let selector = "jwtkeys.dev/signing-key=auth";
        for namespace in [&ns.name, &target] {
            let names: Vec<String> = Api::<ConfigMap>::namespaced(ns.client.clone(), namespace)
                .list(&ListParams::default().labels(selector))
                .await
                .unwrap()
                .items
                .iter()
                .map(|cm| cm.name_any())
                .collect();
            assert_eq!(names, ["renamed-jwks"], "ConfigMaps in {namespace}");
        }
        let secrets: Vec<String> = Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items
            .iter()
            .map(|s| s.name_any())
            .collect();
        assert_eq!(secrets, ["renamed-key"]);
    })
    .await;
}

#[tokio::test]
async fn an_old_secret_whose_delete_was_refused_goes_once_deletes_are_allowed() {
    with_temp_ns("tenant-rename-refused", |ns| async move {
        install_crd(&ns.client).await;
        let operator = operator(&[&ns.name]);
        let kid = create_ready(&ns, &jsk("auth", json!({"rotationInterval": "1h"}))).await;
        // Secrets cannot be deleted in the key's namespace: the Secret under the old name stays
        // after the keys moved to the new one.
        let freeze = Freeze::operations(&ns, "secrets", &ns.name, None, &["DELETE"]).await;
        patch_spec(&ns, "auth", json!({"secretName": "renamed-key"})).await;
        wait_for(
            "the keys in the Secret under the new name",
            REACT,
            || async {
                let secret = secret_text(&ns.client, &ns.name, "renamed-key").await?;
                (secret["kid"] == kid).then_some(())
            },
        )
        .await;
        wait_for("a refused delete of the old Secret", REACT, || async {
            (metric_sum(
                &metrics(&operator).await,
                "jwtkeys_reconcile_errors_total",
                "",
            ) > 0.0)
                .then_some(())
        })
        .await;
        assert!(
            secret_text(&ns.client, &ns.name, "auth-signing-key")
                .await
                .is_some(),
            "the old Secret is still there while deletes are refused"
        );
        // Once deletes are allowed, the old Secret (private keys included) goes, though the one
        // under the new name exists since.
        freeze.thaw().await;
        wait_for("the old Secret gone", Duration::from_secs(90), || async {
            secret_text(&ns.client, &ns.name, "auth-signing-key")
                .await
                .is_none()
                .then_some(())
        })
        .await;
        let secret = secret_text(&ns.client, &ns.name, "renamed-key")
            .await
            .unwrap();
        assert_eq!(secret["kid"], kid, "the same key signs under the new name");
    })
    .await;
}

#[tokio::test]
async fn a_config_map_rename_while_the_secret_is_lost_publishes_the_lost_key_under_the_new_name() {
    with_temp_ns("tenant-rename-lost", |ns| async move {
        install_crd(&ns.client).await;
        let operator = operator(&[&ns.name]);
        let kid = create_ready(&ns, &jsk("auth", json!({"rotationInterval": "1h"}))).await;
        // The Secret is deleted and the operator may not write Secrets: the auth service keeps
        // signing with its mounted copy of the lost key, whose public key the ConfigMap holds.
        let freeze = Freeze::writes(&ns, "secrets", &ns.name, Some(&operator.username())).await;
        Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
            .delete("auth-signing-key", &DeleteParams::default())
            .await
            .unwrap();
        wait_ready(&ns, "auth", "False", "SecretWriteFailed").await;
        patch_spec(&ns, "auth", json!({"configMapName": "renamed-jwks"})).await;
        let renamed = wait_for("the ConfigMap under the new name", REACT, || async {
            config_map_data(&ns.client, &ns.name, "renamed-jwks").await
        })
        .await;
        assert!(
            jwks_kids(&renamed).contains(&kid),
            "the ConfigMap under the new name holds the lost key {kid}: {:?}",
            jwks_kids(&renamed)
        );
        freeze.thaw().await;
        wait_ready(&ns, "auth", "True", "KeysReady").await;
        let renamed = config_map_data(&ns.client, &ns.name, "renamed-jwks")
            .await
            .unwrap();
        assert!(
            jwks_kids(&renamed).contains(&kid),
            "the lost key stays published after a fresh key signs: {:?}",
            jwks_kids(&renamed)
        );
        assert!(
            config_map_data(&ns.client, &ns.name, "auth-jwks")
                .await
                .is_none(),
            "the ConfigMap under the old name is gone"
        );
    })
    .await;
}
