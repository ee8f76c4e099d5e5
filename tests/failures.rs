//! End-to-end: when the world misbehaves, no promise breaks. ConfigMap writes refused by a
//! ValidatingAdmissionPolicy (built into the API server, no webhook needed), and a Secret whose
//! `state.json` was emptied, garbled, rolled back or altered.

mod common;
mod support;

use std::time::Duration;

use base64::Engine;
use common::{TestNamespace, install_crd, wait_for, with_temp_ns};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use support::*;

async fn generated_keys(operator: &common::OperatorProcess) -> f64 {
    metric_sum(
        &metrics(operator).await,
        "jwtkeys_key_generation_seconds_count",
        "",
    )
}

async fn signing_kid(ns: &TestNamespace) -> String {
    secret_text(&ns.client, &ns.name, "auth-signing-key")
        .await
        .expect("the Secret")[jwt_key_operator::resources::KID]
        .clone()
}

async fn wait_publish_failed_naming(ns: &TestNamespace, namespace: &str) {
    wait_status(
        ns,
        "auth",
        &format!("Ready=False PublishFailed naming {namespace}"),
        REACT,
        |k| {
            k.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Ready"
                        && c.status == "False"
                        && c.reason == "PublishFailed"
                        && c.message.contains(namespace)
                })
            })
        },
    )
    .await;
}

#[tokio::test]
async fn a_revocation_switches_the_secret_even_when_a_copy_cannot_be_written() {
    with_temp_ns("fail-revoke", |ns| async move {
        install_crd(&ns.client).await;
        let frozen = ns.extra("frozen", &[("jwks", "auth")]).await;
        accept_from(&ns.client, &frozen, Some(&format!("{}/auth", ns.name))).await;
        let spec = json!({
            "rotationInterval": "1h", "propagationDelay": "5s", "maxTokenLifetime": "10s",
            "publish": {"namespaceSelector": {"matchLabels": {"jwks": "auth"}}},
        });
        let operator = operator(&[&ns.name, &frozen]);
        let revoked = create_ready(&ns, &jsk("auth", spec)).await;
        wait_for("the copy", REACT, || async {
            config_map_data(&ns.client, &frozen, "auth-jwks").await
        })
        .await;
        let history = History::record(
            &ns.client,
            &[ns.name.clone(), frozen.clone()],
            "auth-signing-key",
            "auth-jwks",
        )
        .await;
        let freeze = Freeze::namespace(&ns, &frozen).await;
        assert_eq!(generated_keys(&operator).await, 1.0);

        annotate(&ns, "auth", json!({"jwtkeys.dev/revoke": revoked})).await;
        let fresh = wait_for(
            "the Secret to stop signing with the revoked key",
            Duration::from_secs(10),
            || async { Some(signing_kid(&ns).await).filter(|kid| *kid != revoked) },
        )
        .await;
        wait_publish_failed_naming(&ns, &frozen).await;
        let home = config_map_data(&ns.client, &ns.name, "auth-jwks")
            .await
            .unwrap();
        assert_eq!(
            jwks_kids(&home),
            std::slice::from_ref(&fresh),
            "the home ConfigMap holds the new key only"
        );
        // Retries back off and reuse the state: no key-generation storm.
        wait_for("a few retries", REACT, || async {
            let text = metrics(&operator).await;
            (metric_sum(&text, "jwtkeys_reconcile_errors_total", "PublishFailed") >= 3.0)
                .then_some(())
        })
        .await;
        assert_eq!(
            generated_keys(&operator).await,
            2.0,
            "one key replaces the revoked one"
        );
        assert!(
            events(&ns)
                .await
                .iter()
                .any(|(t, r, m)| t == "Warning" && r == "PublishFailed" && m.contains(&frozen)),
            "a Warning event names the namespace"
        );

        freeze.thaw().await;
        wait_for(
            "the frozen copy to converge",
            Duration::from_secs(60),
            || async {
                let copy = config_map_data(&ns.client, &frozen, "auth-jwks").await?;
                (jwks_kids(&copy) == [fresh.clone()]).then_some(())
            },
        )
        .await;
        wait_ready(&ns, "auth", "True", "KeysReady").await;
        history.check_signing_key_published_in(std::slice::from_ref(&ns.name));
        assert_secret_token_verifies(&ns.client, &ns.name, &frozen).await;
        assert_eq!(generated_keys(&operator).await, 2.0);
    })
    .await;
}

#[tokio::test]
async fn a_scheduled_rotation_waits_until_every_copy_holds_the_next_key() {
    with_temp_ns("fail-rotate", |ns| async move {
        install_crd(&ns.client).await;
        let frozen = ns.extra("frozen", &[("jwks", "auth")]).await;
        accept_from(&ns.client, &frozen, Some(&format!("{}/auth", ns.name))).await;
        let spec = json!({
            "rotationInterval": "10s", "propagationDelay": "3s", "maxTokenLifetime": "4s",
            "publish": {"namespaceSelector": {"matchLabels": {"jwks": "auth"}}},
        });
        let both = [ns.name.clone(), frozen.clone()];
        let history = History::record(&ns.client, &both, "auth-signing-key", "auth-jwks").await;
        let operator = operator(&[&ns.name, &frozen]);
        let first = create_ready(&ns, &jsk("auth", spec)).await;
        wait_for("the copy", REACT, || async {
            config_map_data(&ns.client, &frozen, "auth-jwks").await
        })
        .await;
        let freeze = Freeze::namespace(&ns, &frozen).await;

        // Past the scheduled rotation, the first key still signs: the frozen copy lacks the next key.
        let key = api(&ns).get("auth").await.unwrap();
        let scheduled = key.status.unwrap().next_rotation_time.unwrap();
        let scheduled: jiff::Timestamp = scheduled.parse().unwrap();
        wait_publish_failed_naming(&ns, &frozen).await;
        wait_for(
            "the scheduled rotation to pass",
            Duration::from_secs(30),
            || async {
                (jiff::Timestamp::now() > scheduled + jiff::SignedDuration::from_secs(5))
                    .then_some(())
            },
        )
        .await;
        assert_eq!(
            signing_kid(&ns).await,
            first,
            "the current key keeps signing"
        );
        assert_eq!(
            generated_keys(&operator).await,
            2.0,
            "one next key, saved and reused by every retry"
        );
        history.check_signing_key_published_in(&both);

        freeze.thaw().await;
        let second = wait_for("a new signing key", Duration::from_secs(60), || async {
            Some(signing_kid(&ns).await).filter(|kid| *kid != first)
        })
        .await;
        // The next key was in every ConfigMap for P before it signed, measured per namespace.
        history.check_invariants(
            Duration::from_secs(3),
            Duration::from_secs(8),
            Duration::from_millis(300),
            std::slice::from_ref(&first),
            &[],
        );
        history.check_signing_key_published_in(&both);
        assert_secret_token_verifies(&ns.client, &ns.name, &frozen).await;
        assert_ne!(second, first);
    })
    .await;
}

/// Three published keys (one signing, two retired), then `tamper` on the stored state.json; no
/// published kid disappears before its removal time, and the Secret's key verifies against the
/// published JWK.
async fn tampered_state_keeps_every_published_key(
    prefix: &str,
    tamper: fn(old: &str, current: &str) -> String,
) {
    with_temp_ns(prefix, |ns| async move {
        install_crd(&ns.client).await;
        let _operator = operator(&[&ns.name]);
        let spec =
            json!({"rotationInterval": "1h", "propagationDelay": "2s", "maxTokenLifetime": "60s"});
        let mut kid = create_ready(&ns, &jsk("auth", spec)).await;
        let first_state = secret_text(&ns.client, &ns.name, "auth-signing-key")
            .await
            .unwrap()["state.json"]
            .clone();
        for round in 0..2 {
            annotate(
                &ns,
                "auth",
                json!({"jwtkeys.dev/rotate": format!("r{round}")}),
            )
            .await;
            kid = wait_new_signing_key(&ns, "auth", &kid).await;
        }
        let published = wait_for("three published keys", REACT, || async {
            let data = config_map_data(&ns.client, &ns.name, "auth-jwks").await?;
            let kids = jwks_kids(&data);
            (kids.len() == 3).then_some(kids)
        })
        .await;
        let history = History::of(&ns).await;

        let current = secret_text(&ns.client, &ns.name, "auth-signing-key")
            .await
            .unwrap()["state.json"]
            .clone();
        let tampered = tamper(&first_state, &current);
        Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
            .patch(
                "auth-signing-key",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {
                    "state.json": base64::engine::general_purpose::STANDARD.encode(&tampered),
                }})),
            )
            .await
            .unwrap();
        // The operator undoes the edit: it rewrites its state, listing every published key again.
        wait_for("the state to be rebuilt", REACT, || async {
            let state =
                secret_text(&ns.client, &ns.name, "auth-signing-key").await?["state.json"].clone();
            (state != tampered && published.iter().all(|kid| state.contains(kid.as_str())))
                .then_some(())
        })
        .await;
        // Every published key is still published, and the published JWK verifies what the Secret signs.
        wait_for("the JWKS to verify the Secret's tokens", REACT, || async {
            let data = config_map_data(&ns.client, &ns.name, "auth-jwks").await?;
            let now_published = jwks_kids(&data);
            (published.iter().all(|kid| now_published.contains(kid))
                && secret_token_verifies(&ns.client, &ns.name, &ns.name)
                    .await
                    .is_ok())
            .then_some(())
        })
        .await;
        for version in history.versions() {
            if version.kind == "ConfigMap" {
                let kids = version.kids.unwrap_or_default();
                assert!(
                    published.iter().all(|k| kids.contains(k)),
                    "a ConfigMap version dropped a published key: {kids:?}"
                );
            }
        }
        assert_eq!(
            signing_kid(&ns).await,
            kid,
            "the signing key did not change"
        );
        assert_secret_token_verifies(&ns.client, &ns.name, &ns.name).await;
    })
    .await;
}

#[tokio::test]
async fn an_emptied_state_drops_no_published_key() {
    tampered_state_keeps_every_published_key("fail-empty", |_, _| r#"{"keys":[]}"#.into()).await;
}

#[tokio::test]
async fn a_garbled_state_drops_no_published_key() {
    tampered_state_keeps_every_published_key("fail-garbled", |_, current| {
        current[..current.len() / 2].to_string()
    })
    .await;
}

#[tokio::test]
async fn a_rolled_back_state_drops_no_published_key() {
    tampered_state_keeps_every_published_key("fail-rollback", |old, _| old.to_string()).await;
}

#[tokio::test]
async fn an_altered_modulus_is_rebuilt_from_the_private_key() {
    tampered_state_keeps_every_published_key("fail-modulus", |_, current| {
        let mut state: serde_json::Value = serde_json::from_str(current).unwrap();
        // A valid modulus of another key under each real kid: published as it is, it would verify
        // nothing the Secret signs.
        for key in state["keys"].as_array_mut().unwrap() {
            let other = jwt_key_operator::keys::KeyPair::generate(
                2048,
                jwt_key_operator::crd::Algorithm::RS256,
            )
            .unwrap();
            key["jwk"]["n"] = json!(other.jwk.n);
        }
        state.to_string()
    })
    .await;
}

#[tokio::test]
async fn deleting_the_secret_and_the_home_config_map_together_keeps_the_keys_in_the_copies() {
    with_temp_ns("fail-both-gone", |ns| async move {
        install_crd(&ns.client).await;
        let copy = ns.extra("copy", &[("jwks", "auth")]).await;
        accept_from(&ns.client, &copy, Some(&format!("{}/auth", ns.name))).await;
        let _operator = operator(&[&ns.name, &copy]);
        let spec = json!({
            "rotationInterval": "1h", "propagationDelay": "2s", "maxTokenLifetime": "60s",
            "publish": {"namespaceSelector": {"matchLabels": {"jwks": "auth"}}},
        });
        let mut kid = create_ready(&ns, &jsk("auth", spec)).await;
        annotate(&ns, "auth", json!({"jwtkeys.dev/rotate": "once"})).await;
        kid = wait_new_signing_key(&ns, "auth", &kid).await;
        let published = wait_for("both keys in the copy", REACT, || async {
            let data = config_map_data(&ns.client, &copy, "auth-jwks").await?;
            let kids = jwks_kids(&data);
            (kids.len() == 2 && kids[0] == kid).then_some(kids)
        })
        .await;
        let history = History::record(
            &ns.client,
            std::slice::from_ref(&copy),
            "auth-signing-key",
            "auth-jwks",
        )
        .await;

        Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
            .delete("auth-signing-key", &DeleteParams::default())
            .await
            .unwrap();
        Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name)
            .delete("auth-jwks", &DeleteParams::default())
            .await
            .unwrap();
        let fresh = wait_for("a new signing key", REACT, || async {
            // The recreated Secret holds the new key as pending (no `kid` yet) until it is published.
            let secret = secret_text(&ns.client, &ns.name, "auth-signing-key").await?;
            let fresh = secret.get(jwt_key_operator::resources::KID)?;
            (*fresh != kid).then(|| fresh.clone())
        })
        .await;
        let home = wait_for("the home ConfigMap again", REACT, || async {
            let data = config_map_data(&ns.client, &ns.name, "auth-jwks").await?;
            (jwks_kids(&data).contains(&fresh)).then_some(data)
        })
        .await;
        for old in &published {
            assert!(
                jwks_kids(&home).contains(old),
                "{old} is published at home again"
            );
        }
        for version in history.versions() {
            if version.kind == "ConfigMap" {
                let kids = version.kids.unwrap_or_default();
                assert!(
                    published.iter().all(|k| kids.contains(k)),
                    "the copy dropped a key that verifiers may need: {kids:?}"
                );
            }
        }
        assert_secret_token_verifies(&ns.client, &ns.name, &copy).await;
    })
    .await;
}
