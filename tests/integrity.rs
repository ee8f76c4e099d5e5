//! End-to-end: the ConfigMaps are the operator's output, never a source of keys, and every version of
//! every ConfigMap it writes holds the key the Secret signs with. A tenant that edits its copy cannot
//! plant a key anywhere; a ConfigMap is never born without the signing key; a namespace that starts
//! accepting during P is counted from when it got the next key; one refusing namespace slows nothing
//! else; the first key signs only once the home ConfigMap holds it.

mod common;
mod support;

use std::time::Duration;

use common::{install_crd, wait_for, with_temp_ns};
use jwt_key_operator::{
    crd::Algorithm,
    keys::KeyPair,
    resources::{JWKS_JSON, KID},
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use support::*;

/// The `jwtkeys.dev/signing-key` status entries' kids.
async fn status_kids(ns: &common::TestNamespace) -> Vec<String> {
    api(ns)
        .get("auth")
        .await
        .unwrap()
        .status
        .map(|s| s.keys.into_iter().map(|k| k.kid).collect())
        .unwrap_or_default()
}

/// Waits until the ConfigMap copy exists in `namespace`.
async fn wait_copy(ns: &common::TestNamespace, namespace: &str) {
    wait_for(&format!("the copy in {namespace}"), REACT, || async {
        config_map_data(&ns.client, namespace, "auth-jwks").await
    })
    .await;
}

fn kids_in(versions: &[Version], namespace: &str) -> Vec<String> {
    versions
        .iter()
        .filter(|v| v.kind == "ConfigMap" && v.namespace == namespace)
        .flat_map(|v| v.kids.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_key_planted_in_one_copy_never_reaches_another_config_map_and_is_removed_at_once() {
    with_temp_ns("plant", |ns| async move {
        install_crd(&ns.client).await;
        let tenant = ns.extra("tenant", &[("jwks", "auth")]).await;
        let other = ns.extra("other", &[("jwks", "auth")]).await;
        for copy in [&tenant, &other] {
            accept_from(&ns.client, copy, Some(&format!("{}/auth", ns.name))).await;
        }
        let all = [ns.name.clone(), tenant.clone(), other.clone()];
        let history = History::record(&ns.client, &all, "auth-signing-key", "auth-jwks").await;
        let _operator = operator(&[&ns.name, &tenant, &other]);
        let signing = create_ready(&ns, &jsk("auth", publish_to_copies(json!({})))).await;
        for copy in [&tenant, &other] {
            wait_copy(&ns, copy).await;
        }

        // The tenant adds a key of its own, with its correct RFC 7638 kid, to its copy.
        let planted = KeyPair::generate(2048, Algorithm::RS256).unwrap();
        let planted_kid = planted.kid().to_string();
        let copies: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &tenant);
        let data = config_map_data(&ns.client, &tenant, "auth-jwks")
            .await
            .unwrap();
        let mut jwks: serde_json::Value = serde_json::from_str(&data[JWKS_JSON]).unwrap();
        jwks["keys"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::to_value(&planted.jwk).unwrap());
        copies
            .patch(
                "auth-jwks",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {
                    JWKS_JSON: jwks.to_string(),
                    format!("{planted_kid}.pem"): planted.jwk.public_pem().unwrap(),
                }})),
            )
            .await
            .expect("the tenant edits its copy");

        // Restored within seconds, with a Warning event naming the namespace.
        wait_for(
            "the tampered copy restored",
            Duration::from_secs(10),
            || async {
                let data = config_map_data(&ns.client, &tenant, "auth-jwks").await?;
                (!jwks_kids(&data).contains(&planted_kid)
                    && !data.contains_key(&format!("{planted_kid}.pem")))
                .then_some(())
            },
        )
        .await;
        let (kind, _, message) = wait_event(&ns, "ForeignKeyRemoved").await;
        assert_eq!(kind, "Warning");
        assert!(
            message.contains(&tenant) && message.contains(&planted_kid),
            "the event names the namespace and the kid: {message}"
        );
        // Another reconcile (a rotation) must not bring it back from anywhere.
        annotate(&ns, "auth", json!({"jwtkeys.dev/rotate": "after-plant"})).await;
        wait_status(&ns, "auth", "a next key", REACT, |k| {
            k.status.as_ref().is_some_and(|s| s.keys.len() == 2)
        })
        .await;

        let versions = history.versions();
        for namespace in [&ns.name, &other] {
            assert!(
                !kids_in(&versions, namespace).contains(&planted_kid),
                "the planted key reached the ConfigMap in {namespace}"
            );
        }
        assert!(
            !status_kids(&ns).await.contains(&planted_kid),
            "the planted key is in the status"
        );
        let secret = secret_text(&ns.client, &ns.name, "auth-signing-key")
            .await
            .unwrap();
        assert!(
            !secret.values().any(|v| v.contains(&planted_kid)),
            "the planted key is in the Secret's state"
        );
        assert_eq!(secret[KID], signing);
        history.check_signing_key_published_in(&all);
    })
    .await;
}

#[tokio::test]
async fn a_config_map_is_born_holding_the_signing_key() {
    with_temp_ns("born", |ns| async move {
        install_crd(&ns.client).await;
        // Watched before it accepts, so that the copy's first version is recorded.
        let late = ns.extra("late", &[("jwks", "auth")]).await;
        let both = [ns.name.clone(), late.clone()];
        let history = History::record(&ns.client, &both, "auth-signing-key", "auth-jwks").await;
        let _operator = operator(&[&ns.name, &late]);
        let signing = create_ready(&ns, &jsk("auth", publish_to_copies(json!({})))).await;

        accept_from(&ns.client, &late, Some(&format!("{}/auth", ns.name))).await;
        wait_copy(&ns, &late).await;
        Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name)
            .delete("auth-jwks", &DeleteParams::default())
            .await
            .unwrap();
        wait_for(
            "the home ConfigMap recreated",
            Duration::from_secs(10),
            || async {
                let data = config_map_data(&ns.client, &ns.name, "auth-jwks").await?;
                jwks_kids(&data).contains(&signing).then_some(())
            },
        )
        .await;

        for namespace in &both {
            let first = history
                .in_write_order()
                .into_iter()
                .filter(|v| v.kind == "ConfigMap" && &v.namespace == namespace)
                .filter_map(|v| v.kids)
                .collect::<Vec<_>>();
            assert!(
                first.iter().all(|kids| kids.contains(&signing)),
                "every version of the ConfigMap in {namespace} holds the signing key: {first:?}"
            );
        }
        let recreated = history
            .in_write_order()
            .into_iter()
            .filter(|v| v.kind == "ConfigMap" && v.namespace == ns.name)
            .skip_while(|v| v.kids.is_some())
            .nth(1)
            .expect("a version after the delete");
        assert!(recreated.kids.unwrap().contains(&signing));
        history.check_signing_key_published_in(&both);
    })
    .await;
}

#[tokio::test]
async fn a_namespace_that_accepts_during_p_holds_the_next_key_for_p_before_it_signs() {
    with_temp_ns("late-p", |ns| async move {
        install_crd(&ns.client).await;
        let late = ns.extra("late", &[("jwks", "auth")]).await;
        let both = [ns.name.clone(), late.clone()];
        let history = History::record(&ns.client, &both, "auth-signing-key", "auth-jwks").await;
        let operator = operator(&[&ns.name, &late]);
        let spec = json!({
            "rotationInterval": "10m", "propagationDelay": "20s", "maxTokenLifetime": "4s",
            "publish": {"namespaceSelector": {"matchLabels": {"jwks": "auth"}}},
        });
        let first = create_ready(&ns, &jsk("auth", spec)).await;
        annotate(&ns, "auth", json!({"jwtkeys.dev/rotate": "now"})).await;
        wait_status(&ns, "auth", "the next key published", REACT, |k| {
            k.status.as_ref().is_some_and(|s| s.keys.len() == 2)
        })
        .await;

        // The operator's Secret writes are refused, and the Secret needs one (a hand edit to undo):
        // every reconcile ends in a failed Secret write.
        let freeze = Freeze::writes(&ns, "secrets", &ns.name, Some(&operator.username())).await;
        Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
            .patch(
                "auth-signing-key",
                &PatchParams::default(),
                &Patch::Json::<()>(
                    serde_json::from_value(json!([{"op": "remove", "path": "/data/public.pem"}]))
                        .unwrap(),
                ),
            )
            .await
            .unwrap();
        wait_ready(&ns, "auth", "False", "SecretWriteFailed").await;

        // During P, the late namespace starts accepting and gets the next key.
        accept_from(&ns.client, &late, Some(&format!("{}/auth", ns.name))).await;
        wait_copy(&ns, &late).await;
        // The refusal ends before P has passed since the late namespace got the key; a spec change
        // makes the operator try at once.
        wait_for(
            "P to pass since the first publication",
            Duration::from_secs(30),
            || async {
                let key = api(&ns).get("auth").await.ok()?;
                let next = key.status?.keys.into_iter().find(|k| k.kid != first)?;
                let created: jiff::Timestamp = next.created_at.parse().ok()?;
                (jiff::Timestamp::now() > created + jiff::SignedDuration::from_secs(21))
                    .then_some(())
            },
        )
        .await;
        freeze.thaw().await;
        api(&ns)
            .patch(
                "auth",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"maxTokenLifetime": "5s"}})),
            )
            .await
            .unwrap();
        wait_new_signing_key(&ns, "auth", &first).await;
        wait_for("the Secret to sign with the next key", REACT, || async {
            history.signing_kids().len().eq(&2).then_some(())
        })
        .await;
        history.check_invariants(
            Duration::from_secs(20),
            Duration::from_secs(9),
            Duration::from_millis(300),
            std::slice::from_ref(&first),
            &[],
        );
    })
    .await;
}

#[tokio::test]
async fn a_namespace_that_keeps_refusing_does_not_slow_repairs_of_the_home_namespace() {
    with_temp_ns("slow", |ns| async move {
        install_crd(&ns.client).await;
        let frozen = ns.extra("frozen", &[("jwks", "auth")]).await;
        accept_from(&ns.client, &frozen, Some(&format!("{}/auth", ns.name))).await;
        let operator = operator(&[&ns.name, &frozen]);
        let signing = create_ready(&ns, &jsk("auth", publish_to_copies(json!({})))).await;
        wait_copy(&ns, &frozen).await;
        let freeze = Freeze::namespace(&ns, &frozen).await;
        annotate(&ns, "auth", json!({"jwtkeys.dev/rotate": "blocked"})).await;
        // Five refused writes in a row: a backoff of the whole key would wait a minute now.
        wait_for(
            "five refused writes in the frozen namespace",
            Duration::from_secs(120),
            || async {
                let failures = metric_sum(
                    &metrics(&operator).await,
                    "jwtkeys_reconcile_errors_total",
                    "PublishFailed",
                );
                (failures >= 5.0).then_some(())
            },
        )
        .await;

        Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name)
            .delete("auth-jwks", &DeleteParams::default())
            .await
            .unwrap();
        wait_for(
            "the home ConfigMap back",
            Duration::from_secs(10),
            || async {
                let data = config_map_data(&ns.client, &ns.name, "auth-jwks").await?;
                jwks_kids(&data).contains(&signing).then_some(())
            },
        )
        .await;
        freeze.thaw().await;
    })
    .await;
}

#[tokio::test]
async fn the_first_key_signs_only_once_the_home_config_map_holds_it() {
    with_temp_ns("first", |ns| async move {
        install_crd(&ns.client).await;
        let history = History::of(&ns).await;
        let _operator = operator(&[&ns.name]);
        let freeze = Freeze::namespace(&ns, &ns.name).await;
        create(&ns, &jsk("auth", json!({}))).await;
        let refused = wait_ready(&ns, "auth", "False", "PublishFailed").await;
        let message = refused.status.unwrap().conditions[0].message.clone();
        assert!(
            message.contains(&ns.name),
            "the condition names the namespace: {message}"
        );
        assert!(
            history.signing_kids().is_empty(),
            "the Secret names a signing key that no ConfigMap holds: {:?}",
            history.signing_kids()
        );
        freeze.thaw().await;
        let signing = wait_ready(&ns, "auth", "True", "KeysReady")
            .await
            .status
            .unwrap()
            .active_key_id
            .unwrap();
        wait_for("the Secret to sign", REACT, || async {
            history.signing_kids().contains(&signing).then_some(())
        })
        .await;
        history.check_signing_key_published_in(std::slice::from_ref(&ns.name));
    })
    .await;
}

#[tokio::test]
async fn a_copy_that_cannot_be_removed_does_not_hold_the_next_key_back() {
    with_temp_ns("stuck", |ns| async move {
        install_crd(&ns.client).await;
        let leaving = ns.extra("leaving", &[("jwks", "auth")]).await;
        accept_from(&ns.client, &leaving, Some(&format!("{}/auth", ns.name))).await;
        let _operator = operator(&[&ns.name, &leaving]);
        let spec = json!({
            "rotationInterval": "1h", "propagationDelay": "3s", "maxTokenLifetime": "4s",
            "publish": {"namespaceSelector": {"matchLabels": {"jwks": "auth"}}},
        });
        let first = create_ready(&ns, &jsk("auth", spec)).await;
        wait_copy(&ns, &leaving).await;
        // The namespace withdraws its consent, and its copy cannot be deleted.
        let freeze = Freeze::operations(&ns, "configmaps", &leaving, None, &["DELETE"]).await;
        accept_from(&ns.client, &leaving, None).await;
        wait_ready(&ns, "auth", "False", "PublishFailed").await;
        annotate(&ns, "auth", json!({"jwtkeys.dev/rotate": "now"})).await;
        let second = wait_for(
            "the next key to sign after P",
            Duration::from_secs(20),
            || async {
                let key = api(&ns).get("auth").await.ok()?;
                key.status?.active_key_id.filter(|kid| *kid != first)
            },
        )
        .await;
        let home = config_map_data(&ns.client, &ns.name, "auth-jwks")
            .await
            .unwrap();
        assert!(jwks_kids(&home).contains(&second));
        freeze.thaw().await;
        wait_for("the copy removed", REACT, || async {
            config_map_data(&ns.client, &leaving, "auth-jwks")
                .await
                .is_none()
                .then_some(())
        })
        .await;
    })
    .await;
}
