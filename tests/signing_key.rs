//! End-to-end: a JwtSigningKey on the real API server gets its Secret, ConfigMap, status and events;
//! ownership rules hold; bad input is refused with a message that names the field.

mod common;
mod support;

use std::time::Duration;

use common::{install_crd, wait_for, with_temp_ns};
use jwt_key_operator::{controller::FINALIZER, keys::thumbprint, resources};
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::*;

#[tokio::test]
async fn a_new_key_gets_its_secret_config_map_status_and_events() {
    with_temp_ns("jsk-new", |ns| async move {
        install_crd(&ns.client).await;
        let operator = operator(&[&ns.name]);
        create(&ns, &jsk("auth", json!({}))).await;
        let key = wait_ready(&ns, "auth", "True", "KeysReady").await;
        let status = key.status.clone().unwrap();
        let kid = status.active_key_id.clone().expect("activeKeyId");

        let secret = secret_text(&ns.client, &ns.name, "auth-signing-key")
            .await
            .expect("the Secret");
        assert!(
            secret["private.pem"].starts_with("-----BEGIN PRIVATE KEY-----"),
            "PKCS#8 PEM"
        );
        assert!(
            secret["public.pem"].starts_with("-----BEGIN PUBLIC KEY-----"),
            "SPKI PEM"
        );
        assert_eq!(secret["kid"], kid);
        assert_eq!(secret["algorithm"], "RS256");
        let secret_obj = Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
            .get("auth-signing-key")
            .await
            .unwrap();
        assert_eq!(secret_obj.type_.as_deref(), Some("Opaque"));

        let data = config_map_data(&ns.client, &ns.name, "auth-jwks")
            .await
            .expect("the ConfigMap");
        assert_eq!(jwks_kids(&data), std::slice::from_ref(&kid));
        let jwks: serde_json::Value = serde_json::from_str(&data["jwks.json"]).unwrap();
        let jwk = &jwks["keys"][0];
        assert_eq!(
            (
                jwk["kty"].as_str(),
                jwk["use"].as_str(),
                jwk["alg"].as_str()
            ),
            (Some("RSA"), Some("sig"), Some("RS256"))
        );
        assert_eq!(
            thumbprint(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap()),
            kid,
            "kid is the RFC 7638 thumbprint"
        );
        assert_eq!(data[&format!("{kid}.pem")], secret["public.pem"]);

        for (kind, meta) in [
            ("Secret", secret_obj.metadata.clone()),
            (
                "ConfigMap",
                Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name)
                    .get("auth-jwks")
                    .await
                    .unwrap()
                    .metadata,
            ),
        ] {
            let labels = meta.labels.clone().unwrap_or_default();
            assert_eq!(
                labels
                    .get("app.kubernetes.io/managed-by")
                    .map(String::as_str),
                Some("jwt-key-operator"),
                "{kind}"
            );
            assert_eq!(
                labels.get("jwtkeys.dev/signing-key").map(String::as_str),
                Some("auth"),
                "{kind}"
            );
            let owner = &meta.owner_references.expect("ownerReferences")[0];
            assert_eq!(
                (owner.kind.as_str(), owner.controller),
                ("JwtSigningKey", Some(true)),
                "{kind}"
            );
            assert_eq!(Some(&owner.uid), key.metadata.uid.as_ref(), "{kind}");
        }

        assert_eq!(status.keys.len(), 1);
        assert_eq!(status.keys[0].kid, kid);
        assert!(status.next_rotation_time.is_some() && status.last_rotation_time.is_some());
        // One event for the first key: generated, published, signing.
        let (_, _, message) = wait_event(&ns, "KeyCreated").await;
        assert!(
            message.contains(&kid) && message.contains("signs at once"),
            "{message}"
        );

        // I4: no private material outside the Secret: not the PEM, not any line of its base64 body.
        let status_json = serde_json::to_string(&key.status).unwrap();
        let events = format!("{:?}", events(&ns).await);
        let body_lines: Vec<&str> = secret["private.pem"]
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        for (place, text) in [
            ("ConfigMap", format!("{data:?}")),
            ("status", status_json),
            ("events", events),
            ("logs", operator.logs()),
            ("metrics", metrics(&operator).await),
        ] {
            assert!(
                !text.contains("PRIVATE KEY"),
                "private key material in the {place}"
            );
            for line in &body_lines {
                assert!(
                    !text.contains(line),
                    "a line of the private key in the {place}"
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn templates_and_names_from_the_spec_are_applied() {
    with_temp_ns("jsk-templates", |ns| async move {
        install_crd(&ns.client).await;
        let _operator = operator(&[&ns.name]);
        create(
            &ns,
            &jsk(
                "issuer",
                json!({
                    "algorithm": "PS384", "keySize": 3072,
                    "secretName": "custom-secret", "configMapName": "custom-jwks",
                    "secretTemplate": {"labels": {"team": "auth"}, "annotations": {"note": "signing"}},
                    "configMapTemplate": {"labels": {"team": "verifiers"}, "annotations": {"note": "public"}},
                }),
            ),
        )
        .await;
        wait_ready(&ns, "issuer", "True", "KeysReady").await;
        let secret = Api::<Secret>::namespaced(ns.client.clone(), &ns.name).get("custom-secret").await.unwrap();
        assert_eq!(secret.labels()["team"], "auth");
        assert_eq!(secret.annotations()["note"], "signing");
        let text = secret_text(&ns.client, &ns.name, "custom-secret").await.unwrap();
        assert_eq!(text["algorithm"], "PS384");
        let pair = jwt_key_operator::keys::KeyPair::from_private_pem(&text["private.pem"], jwt_key_operator::crd::Algorithm::PS384).unwrap();
        assert_eq!(pair.jwk.n.len(), 512, "a 3072-bit modulus is 384 bytes, 512 base64url characters");
        let cm = Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name).get("custom-jwks").await.unwrap();
        assert_eq!(cm.labels()["team"], "verifiers");
        assert_eq!(cm.annotations()["note"], "public");
        let jwks: serde_json::Value = serde_json::from_str(&cm.data.unwrap()["jwks.json"]).unwrap();
        assert_eq!(jwks["keys"][0]["alg"], "PS384");
    })
    .await;
}

#[tokio::test]
async fn hand_edits_to_the_secret_and_config_map_are_undone_and_a_deleted_config_map_recreated() {
    with_temp_ns("jsk-cm-edit", |ns| async move {
        install_crd(&ns.client).await;
        let _operator = operator(&[&ns.name]);
        create(&ns, &jsk("auth", json!({}))).await;
        wait_ready(&ns, "auth", "True", "KeysReady").await;
        let original = config_map_data(&ns.client, &ns.name, "auth-jwks")
            .await
            .unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);

        cms.patch(
            "auth-jwks",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"data": {"jwks.json": "{\"keys\":[]}", "injected.pem": "not a key"}}),
            ),
        )
        .await
        .unwrap();
        wait_for("the edited ConfigMap to be restored", REACT, || async {
            (config_map_data(&ns.client, &ns.name, "auth-jwks").await? == original).then_some(())
        })
        .await;

        // The Secret too: a changed entry and a removed label are put back, an added entry goes,
        // the signing key stays.
        let secret_before = secret_text(&ns.client, &ns.name, "auth-signing-key")
            .await
            .unwrap();
        Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
            .patch(
                "auth-signing-key",
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"labels": {"jwtkeys.dev/signing-key": null}},
                    "data": {"kid": "dGFtcGVyZWQ=", "injected": "dGFtcGVyZWQ="},
                })),
            )
            .await
            .unwrap();
        wait_for("the edited Secret to be restored", REACT, || async {
            let secret = Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
                .get("auth-signing-key")
                .await
                .ok()?;
            let labelled = secret.labels().get("jwtkeys.dev/signing-key").is_some();
            (labelled
                && secret_text(&ns.client, &ns.name, "auth-signing-key").await? == secret_before)
                .then_some(())
        })
        .await;

        cms.delete("auth-jwks", &DeleteParams::default())
            .await
            .unwrap();
        wait_for("the deleted ConfigMap to be recreated", REACT, || async {
            (config_map_data(&ns.client, &ns.name, "auth-jwks").await? == original).then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_deleted_secret_gets_a_new_signing_key_and_the_old_key_stays_published() {
    with_temp_ns("jsk-secret-del", |ns| async move {
        install_crd(&ns.client).await;
        let _operator = operator(&[&ns.name]);
        let first = create_ready(&ns, &jsk("auth", json!({"maxTokenLifetime": "1h"}))).await;

        Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
            .delete("auth-signing-key", &DeleteParams::default())
            .await
            .unwrap();
        let second = wait_for("a new signing key in a recreated Secret", REACT, || async {
            let kid = secret_text(&ns.client, &ns.name, "auth-signing-key")
                .await?
                .get("kid")?
                .clone();
            (kid != first).then_some(kid)
        })
        .await;
        let data = config_map_data(&ns.client, &ns.name, "auth-jwks")
            .await
            .unwrap();
        assert_eq!(
            jwks_kids(&data),
            [second.clone(), first.clone()],
            "new key first, the old one still published"
        );
        let key = wait_status(&ns, "auth", "status shows both keys", REACT, |k| {
            k.status.as_ref().is_some_and(|s| {
                s.keys.len() == 2 && s.active_key_id.as_deref() == Some(second.as_str())
            })
        })
        .await;
        let old = key
            .status
            .unwrap()
            .keys
            .into_iter()
            .find(|k| k.kid == first)
            .unwrap();
        assert_eq!(old.state, jwt_key_operator::crd::KeyState::Retired);
        assert!(old.remove_after.is_some());
    })
    .await;
}

#[tokio::test]
async fn a_foreign_secret_is_never_touched_and_the_name_is_taken_over_once_freed() {
    with_temp_ns("jsk-secret-conflict", |ns| async move {
        install_crd(&ns.client).await;
        let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), &ns.name);
        let foreign = Secret {
            metadata: ObjectMeta {
                name: Some("auth-signing-key".into()),
                ..Default::default()
            },
            data: Some(
                [(
                    "private.pem".to_string(),
                    ByteString(b"someone else's".to_vec()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let foreign = secrets
            .create(&PostParams::default(), &foreign)
            .await
            .unwrap();
        let _operator = operator(&[&ns.name]);
        create(&ns, &jsk("auth", json!({}))).await;
        let key = wait_ready(&ns, "auth", "False", "SecretConflict").await;
        let message = &key.status.unwrap().conditions[0].message;
        assert!(message.contains("auth-signing-key"), "{message}");
        let (type_, _, _) = wait_event(&ns, "SecretConflict").await;
        assert_eq!(type_, "Warning");
        let unchanged = secrets.get("auth-signing-key").await.unwrap();
        assert_eq!(
            unchanged.metadata.resource_version, foreign.metadata.resource_version,
            "the foreign Secret is untouched"
        );
        assert!(
            config_map_data(&ns.client, &ns.name, "auth-jwks")
                .await
                .is_none(),
            "nothing is published while in conflict"
        );

        secrets
            .delete("auth-signing-key", &DeleteParams::default())
            .await
            .unwrap();
        wait_ready(&ns, "auth", "True", "KeysReady").await;
        assert!(
            secret_text(&ns.client, &ns.name, "auth-signing-key")
                .await
                .unwrap()
                .contains_key("kid")
        );
    })
    .await;
}

#[tokio::test]
async fn a_foreign_config_map_is_never_touched_and_the_name_is_taken_over_once_freed() {
    with_temp_ns("jsk-cm-conflict", |ns| async move {
        install_crd(&ns.client).await;
        let cms: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
        let foreign = ConfigMap {
            metadata: ObjectMeta {
                name: Some("auth-jwks".into()),
                ..Default::default()
            },
            data: Some([("jwks.json".to_string(), "{\"keys\":[]}".to_string())].into()),
            ..Default::default()
        };
        let foreign = cms.create(&PostParams::default(), &foreign).await.unwrap();
        let _operator = operator(&[&ns.name]);
        create(&ns, &jsk("auth", json!({}))).await;
        wait_ready(&ns, "auth", "False", "ConfigMapConflict").await;
        let (type_, _, message) = wait_event(&ns, "ConfigMapConflict").await;
        assert_eq!(type_, "Warning");
        assert!(message.contains("auth-jwks"), "{message}");
        assert_eq!(
            cms.get("auth-jwks")
                .await
                .unwrap()
                .metadata
                .resource_version,
            foreign.metadata.resource_version
        );
        assert!(
            secret_text(&ns.client, &ns.name, "auth-signing-key")
                .await
                .is_none(),
            "no key signs unpublished"
        );

        cms.delete("auth-jwks", &DeleteParams::default())
            .await
            .unwrap();
        wait_ready(&ns, "auth", "True", "KeysReady").await;
    })
    .await;
}

#[tokio::test]
async fn deleting_the_key_garbage_collects_its_secret_and_config_map() {
    with_temp_ns("jsk-gc", |ns| async move {
        install_crd(&ns.client).await;
        let mut operator = operator(&[&ns.name]);
        create(&ns, &jsk("auth", json!({"deletionPolicy": "Delete"}))).await;
        let key = wait_ready(&ns, "auth", "True", "KeysReady").await;
        // A key without copies in other namespaces carries no finalizer: everything it owns goes
        // with it through ownerReferences.
        assert!(
            key.finalizers().is_empty(),
            "no finalizer on a key that publishes no copies: {:?}",
            key.finalizers()
        );
        let series = format!("namespace=\"{}\",name=\"auth\"", ns.name);
        let gauges = |text: &str| {
            text.lines()
                .filter(|l| {
                    l.starts_with("jwtkeys_published_keys")
                        || l.starts_with("jwtkeys_next_rotation")
                })
                .filter(|l| l.contains(&series))
                .count()
        };
        let text = metrics(&operator).await;
        assert_eq!(
            metric_sum(&text, "jwtkeys_published_keys", &series),
            1.0,
            "{text}"
        );
        assert_eq!(gauges(&text), 2, "{text}");
        api(&ns)
            .delete("auth", &DeleteParams::default())
            .await
            .unwrap();
        // The operator forgets the key's gauges when its watch sees it go.
        wait_for("the key's gauges to go", REACT, || async {
            (gauges(&metrics(&operator).await) == 0).then_some(())
        })
        .await;
        // Nor does deleting it wait for the operator.
        operator.terminate();
        let second = create(&ns, &jsk("second", json!({"deletionPolicy": "Delete"}))).await;
        assert!(second.finalizers().is_empty());
        api(&ns)
            .delete("second", &DeleteParams::default())
            .await
            .unwrap();
        assert!(
            api(&ns).get_opt("second").await.unwrap().is_none(),
            "a key without copies is deleted at once, with no operator running"
        );
        wait_for(
            "the Secret and ConfigMap to be garbage-collected",
            Duration::from_secs(60),
            || async {
                let secret = secret_text(&ns.client, &ns.name, "auth-signing-key").await;
                let cm = config_map_data(&ns.client, &ns.name, "auth-jwks").await;
                (secret.is_none() && cm.is_none()).then_some(())
            },
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn invalid_specs_are_refused_at_admission_with_a_message_naming_the_field() {
    with_temp_ns("jsk-invalid", |ns| async move {
        install_crd(&ns.client).await;
        let cases = [
            (json!({"algorithm": "HS256"}), "spec.algorithm"),
            (json!({"algorithm": "none"}), "spec.algorithm"),
            (json!({"keySize": 1024}), "spec.keySize"),
            (json!({"rotationInterval": "30 days"}), "spec.rotationInterval"),
            (json!({"rotationInterval": "5s", "propagationDelay": "1s"}), "spec.rotationInterval"),
            (json!({"propagationDelay": "soon"}), "spec.propagationDelay"),
            (json!({"maxTokenLifetime": "1d"}), "spec.maxTokenLifetime"),
            (json!({"maxTokenLifetime": "0s"}), "spec.maxTokenLifetime"),
            (json!({"rotationInterval": "1h", "propagationDelay": "1h"}), "spec.propagationDelay"),
            (json!({"rotationInterval": "1h", "propagationDelay": "2h"}), "spec.propagationDelay"),
            (json!({"rotationInterval": "1h", "propagationDelay": "1m", "maxTokenLifetime": "72h"}), "spec.maxTokenLifetime"),
            (json!({"secretName": "Not_A_Name"}), "spec.secretName"),
            (json!({"configMapName": ""}), "spec.configMapName"),
        ];
        let api: Api<DynamicObject> = Api::namespaced_with(
            ns.client.clone(),
            &ns.name,
            &kube::api::ApiResource::erase::<jwt_key_operator::crd::JwtSigningKey>(&()),
        );
        for (spec, field) in cases {
            let object = json!({
                "apiVersion": "jwtkeys.dev/v1alpha1", "kind": "JwtSigningKey",
                "metadata": {"name": "bad"}, "spec": spec,
            });
            let object: DynamicObject = serde_json::from_value(object).unwrap();
            let error = api
                .create(&PostParams::default(), &object)
                .await
                .expect_err(&format!("{spec} must be refused"));
            let message = match error {
                kube::Error::Api(status) => {
                    assert_eq!(status.code, 422, "{spec}: {}", status.message);
                    status.message
                }
                other => panic!("{spec}: unexpected error {other}"),
            };
            assert!(message.contains(field), "{spec}: the message names {field}: {message}");
        }
        // The defaults are a valid spec, and the 62 x R bound admits its edge.
        for spec in [json!({}), json!({"rotationInterval": "1h", "propagationDelay": "2h", "maxTokenLifetime": "60h"})] {
            let object = json!({
                "apiVersion": "jwtkeys.dev/v1alpha1", "kind": "JwtSigningKey",
                "metadata": {"generateName": "good-"}, "spec": spec,
            });
            let object: DynamicObject = serde_json::from_value(object).unwrap();
            let result = api.create(&PostParams { dry_run: true, ..Default::default() }, &object).await;
            if spec.get("rotationInterval").is_some() {
                assert!(result.is_err(), "propagationDelay 2h >= rotationInterval 1h is refused");
            } else {
                result.expect("the defaults are accepted");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_spec_the_schema_cannot_catch_ends_in_invalid_spec_without_a_hot_loop() {
    with_temp_ns("jsk-invalid-spec", |ns| async move {
        install_crd(&ns.client).await;
        let operator = operator(&[&ns.name]);
        let selector = json!({"namespaceSelector": {"matchExpressions": [{"key": "jwks", "operator": "Near"}]}});
        create(&ns, &jsk("auth", json!({"publish": selector}))).await;
        let key = wait_ready(&ns, "auth", "False", "InvalidSpec").await;
        let message = key.status.unwrap().conditions[0].message.clone();
        assert!(message.contains("spec.publish.namespaceSelector") && message.contains("Near"), "{message}");
        assert!(secret_text(&ns.client, &ns.name, "auth-signing-key").await.is_none());

        wait_reconciled(&operator).await;
        let before = metrics(&operator).await;
        let reconciles = operator.logs().matches("reconciled").count();
        // A resync of the object must not make the operator write again.
        annotate(&ns, "auth", json!({"touch": "1"})).await;
        wait_for("the operator to reconcile the annotated object", REACT, || async {
            (operator.logs().matches("reconciled").count() > reconciles).then_some(())
        })
        .await;
        let after = metrics(&operator).await;
        assert_eq!(
            metric_sum(&before, "jwtkeys_api_writes_total", ""),
            metric_sum(&after, "jwtkeys_api_writes_total", ""),
            "no writes while the spec stays invalid"
        );
        assert_eq!(metric_sum(&after, "jwtkeys_reconcile_errors_total", ""), 0.0);

        // Fixing the spec recovers.
        api(&ns)
            .patch("auth", &PatchParams::default(), &Patch::Merge(json!({"spec": {"publish": null}})))
            .await
            .unwrap();
        wait_ready(&ns, "auth", "True", "KeysReady").await;
    })
    .await;
}

#[tokio::test]
async fn keys_are_published_into_matching_namespaces_and_withdrawn_when_they_stop_matching() {
    with_temp_ns("jsk-publish", |ns| async move {
        install_crd(&ns.client).await;
        let matching = ns.extra("a", &[("jwks", "auth")]).await;
        accept_from(&ns.client, &matching, Some(&format!("{}/auth", ns.name))).await;
        let other = ns.extra("b", &[]).await;
        accept_from(&ns.client, &other, Some(&format!("{}/*", ns.name))).await;
        let _operator = operator(&[&ns.name, &matching, &other]);
        // Without a selector the key has no copies and no finalizer; selecting namespaces adds
        // the finalizer before the first copy is written.
        let key = create(&ns, &jsk("auth", json!({"deletionPolicy": "Delete"}))).await;
        wait_ready(&ns, "auth", "True", "KeysReady").await;
        assert!(key.finalizers().is_empty());
        api(&ns)
            .patch(
                "auth",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"publish": {"namespaceSelector": {"matchLabels": {"jwks": "auth"}}}}})),
            )
            .await
            .unwrap();
        let key = wait_status(
            &ns,
            "auth",
            "published into the matching namespace",
            REACT,
            |k| {
                k.status
                    .as_ref()
                    .is_some_and(|s| s.published_namespaces == [matching.clone()])
            },
        )
        .await;
        let home = config_map_data(&ns.client, &ns.name, "auth-jwks")
            .await
            .unwrap();
        let copy = wait_for("the copy", REACT, || {
            config_map_data(&ns.client, &matching, "auth-jwks")
        })
        .await;
        assert_eq!(copy, home);
        assert!(
            config_map_data(&ns.client, &other, "auth-jwks")
                .await
                .is_none()
        );
        let copy_meta = Api::<ConfigMap>::namespaced(ns.client.clone(), &matching)
            .get("auth-jwks")
            .await
            .unwrap()
            .metadata;
        assert_eq!(copy_meta.labels.unwrap()["jwtkeys.dev/signing-key"], "auth");
        assert_eq!(key.finalizers(), [FINALIZER], "copies exist: the key carries the finalizer");
        assert_eq!(
            key.status.unwrap().published_namespaces,
            std::slice::from_ref(&matching)
        );

        // A deleted copy comes back.
        Api::<ConfigMap>::namespaced(ns.client.clone(), &matching)
            .delete("auth-jwks", &DeleteParams::default())
            .await
            .unwrap();
        wait_for("the copy to be recreated", REACT, || {
            config_map_data(&ns.client, &matching, "auth-jwks")
        })
        .await;

        // The other namespace starts matching; the first one stops.
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ns.client.clone());
        namespaces
            .patch(
                &other,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"jwks": "auth"}}})),
            )
            .await
            .unwrap();
        wait_for("a copy in the newly matching namespace", REACT, || {
            config_map_data(&ns.client, &other, "auth-jwks")
        })
        .await;
        namespaces
            .patch(
                &matching,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"jwks": null}}})),
            )
            .await
            .unwrap();
        wait_for("the copy to be withdrawn", REACT, || async {
            config_map_data(&ns.client, &matching, "auth-jwks")
                .await
                .is_none()
                .then_some(())
        })
        .await;

        // Deleting the key removes the copies (finalizer).
        api(&ns)
            .delete("auth", &DeleteParams::default())
            .await
            .unwrap();
        wait_for("copies removed and the key gone", REACT, || async {
            let gone = api(&ns).get_opt("auth").await.ok()?.is_none();
            (gone
                && config_map_data(&ns.client, &other, "auth-jwks")
                    .await
                    .is_none())
            .then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn tokens_signed_with_the_secret_verify_against_the_published_jwks() {
    use jsonwebtoken::{
        Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode, jwk::JwkSet,
    };
    with_temp_ns("jsk-interop", |ns| async move {
        install_crd(&ns.client).await;
        let _operator = operator(&[&ns.name]);
        create(&ns, &jsk("auth", json!({}))).await;
        wait_ready(&ns, "auth", "True", "KeysReady").await;
        let secret = secret_text(&ns.client, &ns.name, "auth-signing-key")
            .await
            .unwrap();
        let data = config_map_data(&ns.client, &ns.name, "auth-jwks")
            .await
            .unwrap();

        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({"sub": "alice", "iat": now, "exp": now + 600});
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(secret["kid"].clone());
        let token = encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(secret["private.pem"].as_bytes()).unwrap(),
        )
        .unwrap();

        let jwks: JwkSet = serde_json::from_str(&data[resources::JWKS_JSON]).unwrap();
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        let jwk = jwks.find(&kid).expect("the token's kid is published");
        let decoded = decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &Validation::new(Algorithm::RS256),
        )
        .unwrap();
        assert_eq!(decoded.claims["sub"], "alice");
        // The <kid>.pem entry verifies too.
        let pem = &data[&format!("{kid}.pem")];
        decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            &Validation::new(Algorithm::RS256),
        )
        .unwrap();

        // PyJWT, the seed's own tool, both ways.
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [
            ("private.pem", &secret["private.pem"]),
            ("kid", &secret["kid"]),
            ("jwks.json", &data[resources::JWKS_JSON]),
            (&format!("{kid}.pem"), pem),
        ] {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let python = std::env::var("JKO_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = r#"
import json, sys, time, pathlib, jwt
d = pathlib.Path(sys.argv[1]); rust_token = sys.argv[2]
kid = (d / "kid").read_text()
jwks = json.loads((d / "jwks.json").read_text())
key = next(jwt.PyJWK(k) for k in jwks["keys"] if k["kid"] == kid)
claims = jwt.decode(rust_token, key.key, algorithms=["RS256"])
assert claims["sub"] == "alice", claims
pem = (d / (kid + ".pem")).read_text()
assert jwt.decode(rust_token, pem, algorithms=["RS256"])["sub"] == "alice"
print(jwt.encode({"sub": "bob", "iat": int(time.time()), "exp": int(time.time()) + 600},
                 (d / "private.pem").read_text(), algorithm="RS256", headers={"kid": kid}))
"#;
        let output = std::process::Command::new(&python)
            .args(["-c", script, dir.path().to_str().unwrap(), &token])
            .output()
            .unwrap_or_else(|e| {
                panic!("running {python}: {e}; install PyJWT: pip install pyjwt cryptography")
            });
        assert!(
            output.status.success(),
            "PyJWT interop failed (needs `pip install pyjwt cryptography`, or JKO_PYTHON): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let py_token = String::from_utf8(output.stdout).unwrap().trim().to_string();
        let header = jsonwebtoken::decode_header(&py_token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
        let decoded = decode::<serde_json::Value>(
            &py_token,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &Validation::new(Algorithm::RS256),
        )
        .unwrap();
        assert_eq!(decoded.claims["sub"], "bob");
    })
    .await;
}
