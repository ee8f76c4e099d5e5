//! End-to-end: `spec.deletionPolicy`. Under `Retain`, deleting a JwtSigningKey, with or
//! without the operator running, leaves its Secret, its home ConfigMap and its copies in other
//! namespaces as they were (garbage collection has nothing to follow), and a JwtSigningKey created
//! again with the same name adopts them and goes on with the same keys and schedule: no new key, no
//! version of any JWKS without the signing key. A retained Secret edited in between is checked like
//! any state, never trusted. Under `Delete`, the objects go with the key; switching the policy of a
//! live key rewrites the owner references and the finalizer.

mod common;
mod support;

use common::{install_crd, wait_for, with_temp_ns};
use jwt_key_operator::{
    controller::FINALIZER,
    crd::{Algorithm, JwtSigningKey},
    keys::KeyPair,
    resources::{OWNER_UID_ANNOTATION, PRIVATE_PEM, STATE_JSON},
};
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Event, Secret},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::*;

/// The metadata of a Secret or ConfigMap, if it exists.
async fn meta_of<K>(client: &Client, namespace: &str, name: &str) -> Option<ObjectMeta>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()?
        .map(|object| object.meta().clone())
}

/// The owner references to JwtSigningKeys an object carries: (uid, controller).
fn key_owners(meta: &ObjectMeta) -> Vec<(String, Option<bool>)> {
    meta.owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "JwtSigningKey")
        .map(|o| (o.uid.clone(), o.controller))
        .collect()
}

/// The owner annotation of an object.
fn owner_uid(meta: &ObjectMeta) -> Option<String> {
    meta.annotations
        .as_ref()?
        .get(OWNER_UID_ANNOTATION)
        .cloned()
}

/// The Secret, the home ConfigMap and the copy, as (kind, namespace, name).
fn objects<'a>(ns: &'a str, copy: &'a str) -> [(&'static str, &'a str, &'static str); 3] {
    [
        ("Secret", ns, "auth-signing-key"),
        ("ConfigMap", ns, "auth-jwks"),
        ("ConfigMap", copy, "auth-jwks"),
    ]
}

/// The metadata of one of [`objects`].
async fn meta(client: &Client, (kind, namespace, name): (&str, &str, &str)) -> Option<ObjectMeta> {
    match kind {
        "Secret" => meta_of::<Secret>(client, namespace, name).await,
        _ => meta_of::<ConfigMap>(client, namespace, name).await,
    }
}

/// The data and labels of one of [`objects`] (Secret entries as text).
async fn content(
    client: &Client,
    (kind, namespace, name): (&str, &str, &str),
) -> Option<(
    std::collections::BTreeMap<String, String>,
    std::collections::BTreeMap<String, String>,
)> {
    let labels = meta(client, (kind, namespace, name)).await?.labels?;
    let data = match kind {
        "Secret" => secret_text(client, namespace, name).await?,
        _ => config_map_data(client, namespace, name).await?,
    };
    Some((data, labels))
}

/// Events about the JwtSigningKey with this uid: (type, reason, message).
async fn events_of(ns: &common::TestNamespace, uid: &str) -> Vec<(String, String, String)> {
    Api::<Event>::namespaced(ns.client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.uid.as_deref() == Some(uid))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

/// Deletes the key `auth` and returns once garbage collection has acted on its deletion: a
/// ConfigMap made a dependent of the key for that purpose is gone.
async fn delete_key_and_wait_for_garbage_collection(ns: &common::TestNamespace) {
    let key = api(ns).get("auth").await.expect("the key");
    let dependent = ConfigMap {
        metadata: ObjectMeta {
            name: Some("gc-witness".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: JwtSigningKey::api_version(&()).into_owned(),
                kind: JwtSigningKey::kind(&()).into_owned(),
                name: key.name_any(),
                uid: key.uid().expect("a uid"),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    config_maps
        .create(&PostParams::default(), &dependent)
        .await
        .expect("creating the witness");
    api(ns)
        .delete("auth", &DeleteParams::default())
        .await
        .expect("deleting the key");
    wait_for(
        "garbage collection to remove the key's witness",
        std::time::Duration::from_secs(60),
        || async {
            let gone = api(ns).get_opt("auth").await.ok()?.is_none()
                && config_maps.get_opt("gc-witness").await.ok()?.is_none();
            gone.then_some(())
        },
    )
    .await;
}

/// Every version of every ConfigMap holds the signing key, none is an empty key set and none is
/// a deletion: the JWKS never had a gap.
fn assert_no_gap(history: &History, namespaces: &[String]) {
    history.check_signing_key_published_in(namespaces);
    let deleted: Vec<String> = history
        .versions()
        .iter()
        .filter(|v| v.kind == "ConfigMap" && v.kids.is_none())
        .map(|v| v.namespace.clone())
        .collect();
    assert!(deleted.is_empty(), "a ConfigMap was deleted in {deleted:?}");
}

#[tokio::test]
async fn a_deleted_key_leaves_its_objects_and_a_key_created_again_adopts_them() {
    with_temp_ns("retain", |ns| async move {
        install_crd(&ns.client).await;
        let (history, copy) = History::with_copy(&ns).await;
        let all = [ns.name.clone(), copy.clone()];
        let mut operator = operator(&[&ns.name, &copy]);
        let spec = publish_to_copies(json!({
            "deletionPolicy": "Retain",
            "rotationInterval": "1h", "propagationDelay": "5s", "maxTokenLifetime": "1m",
        }));
        let signing = create_ready(&ns, &jsk("auth", spec.clone())).await;
        let first = wait_status(&ns, "auth", "the copy in the status", REACT, |k| {
            k.status
                .as_ref()
                .is_some_and(|s| s.published_namespaces == [copy.clone()])
        })
        .await;
        let first_uid = first.uid().unwrap();
        assert!(first.finalizers().is_empty(), "Retain: no finalizer");
        let mut before = Vec::new();
        for object in objects(&ns.name, &copy) {
            let meta = wait_for(&format!("{object:?}"), REACT, || meta(&ns.client, object)).await;
            assert!(
                key_owners(&meta).is_empty(),
                "Retain: no owner reference on {object:?}"
            );
            assert_eq!(owner_uid(&meta).as_ref(), Some(&first_uid), "{object:?}");
            before.push(content(&ns.client, object).await.unwrap());
        }

        // The key goes while no operator runs (a `helm uninstall` that takes the CRD along).
        operator.terminate();
        delete_key_and_wait_for_garbage_collection(&ns).await;
        for (object, was) in objects(&ns.name, &copy).into_iter().zip(&before) {
            // Compared without printing: the Secret holds private keys.
            let now = content(&ns.client, object).await;
            assert!(
                now.as_ref() == Some(was),
                "{object:?} lost its content or labels"
            );
        }

        // Another key may not take them: the Secret is labelled as auth's.
        operator.restart();
        create(
            &ns,
            &jsk(
                "other",
                json!({"secretName": "auth-signing-key", "configMapName": "other-jwks"}),
            ),
        )
        .await;
        wait_ready(&ns, "other", "False", "SecretConflict").await;
        api(&ns)
            .delete("other", &DeleteParams::default())
            .await
            .unwrap();
        assert!(
            content(&ns.client, objects(&ns.name, &copy)[0])
                .await
                .as_ref()
                == Some(&before[0]),
            "the conflicting key changed the Secret"
        );

        // The key created again adopts everything and goes on with the same key and schedule.
        let again = create(&ns, &jsk("auth", spec)).await;
        let new_uid = again.uid().unwrap();
        assert_ne!(new_uid, first_uid);
        let adopted = wait_ready(&ns, "auth", "True", "KeysReady").await;
        let (old_status, new_status) = (first.status.unwrap(), adopted.status.clone().unwrap());
        assert_eq!(
            new_status.active_key_id.as_ref(),
            Some(&signing),
            "the same key signs"
        );
        assert_eq!(
            new_status.keys, old_status.keys,
            "the same keys, on the same schedule"
        );
        assert_eq!(new_status.next_rotation_time, old_status.next_rotation_time);
        assert_eq!(new_status.published_namespaces, std::slice::from_ref(&copy));
        for object in objects(&ns.name, &copy) {
            wait_for(&format!("{object:?} adopted"), REACT, || async {
                let meta = meta(&ns.client, object).await?;
                (owner_uid(&meta) == Some(new_uid.clone()) && key_owners(&meta).is_empty())
                    .then_some(())
            })
            .await;
        }
        let events = events_of(&ns, &new_uid).await;
        assert!(
            !events.iter().any(|(_, reason, _)| reason == "KeyCreated"),
            "no new key: {events:?}"
        );
        assert_eq!(history.signing_kids(), std::slice::from_ref(&signing));
        assert_no_gap(&history, &all);
        assert_secret_token_verifies(&ns.client, &ns.name, &copy).await;
    })
    .await;
}

#[tokio::test]
async fn a_retained_secret_whose_private_key_was_replaced_is_repaired_not_trusted() {
    with_temp_ns("retain-tamper", |ns| async move {
        install_crd(&ns.client).await;
        let history = History::of(&ns).await;
        let _operator = operator(&[&ns.name]);
        let spec =
            json!({"rotationInterval": "1h", "propagationDelay": "5s", "maxTokenLifetime": "1m", "deletionPolicy": "Retain"});
        let signing = create_ready(&ns, &jsk("auth", spec.clone())).await;
        delete_key_and_wait_for_garbage_collection(&ns).await;

        // Someone puts a private key of their own into the retained Secret.
        let planted = KeyPair::generate(2048, Algorithm::RS256).unwrap();
        let planted_kid = planted.kid().to_string();
        Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
            .patch(
                "auth-signing-key",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {
                    PRIVATE_PEM: ByteString(planted.private_pem().as_bytes().to_vec()),
                }})),
            )
            .await
            .expect("editing the retained Secret");

        let again = create(&ns, &jsk("auth", spec)).await;
        let fresh = wait_new_signing_key(&ns, "auth", &signing).await;
        assert_ne!(fresh, planted_kid, "the planted key never signs");
        let key = wait_ready(&ns, "auth", "True", "KeysReady").await;
        let (_, _, repaired) = wait_for("the repair event", REACT, || async {
            events_of(&ns, &again.uid().unwrap())
                .await
                .into_iter()
                .find(|(kind, reason, _)| kind == "Warning" && reason == "StateRepaired")
        })
        .await;
        assert!(repaired.contains(&planted_kid), "{repaired}");
        let secret = secret_text(&ns.client, &ns.name, "auth-signing-key")
            .await
            .unwrap();
        assert!(
            secret[PRIVATE_PEM] != planted.private_pem(),
            "the planted key still signs"
        );
        assert!(
            !secret.values().any(|v| v.contains(&planted_kid)),
            "the planted key is in no entry of the Secret"
        );
        // The key that signed before stays published for the tokens it signed.
        let status = key.status.unwrap();
        assert!(status.keys.iter().any(|k| k.kid == signing));
        assert!(!status.keys.iter().any(|k| k.kid == planted_kid));
        let data = config_map_data(&ns.client, &ns.name, "auth-jwks")
            .await
            .unwrap();
        assert!(jwks_kids(&data).contains(&signing));
        assert!(
            !history
                .versions()
                .iter()
                .filter(|v| v.kind == "ConfigMap")
                .any(|v| v.kids.iter().flatten().any(|kid| *kid == planted_kid)),
            "the planted key was published"
        );
        assert_no_gap(&history, std::slice::from_ref(&ns.name));
        assert_secret_token_verifies(&ns.client, &ns.name, &ns.name).await;
    })
    .await;
}

#[tokio::test]
async fn a_retained_secret_whose_state_was_garbled_is_rebuilt_with_the_same_signing_key() {
    with_temp_ns("retain-state", |ns| async move {
        install_crd(&ns.client).await;
        let history = History::of(&ns).await;
        let _operator = operator(&[&ns.name]);
        let spec =
            json!({"rotationInterval": "1h", "propagationDelay": "5s", "maxTokenLifetime": "1m", "deletionPolicy": "Retain"});
        let signing = create_ready(&ns, &jsk("auth", spec.clone())).await;
        delete_key_and_wait_for_garbage_collection(&ns).await;

        Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
            .patch(
                "auth-signing-key",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {STATE_JSON: ByteString(b"{\"keys\": [".to_vec())}})),
            )
            .await
            .expect("editing the retained Secret");

        let again = create(&ns, &jsk("auth", spec)).await;
        let key = wait_ready(&ns, "auth", "True", "KeysReady").await;
        assert_eq!(
            key.status.unwrap().active_key_id.as_ref(),
            Some(&signing),
            "the Secret's own key, published before, still signs"
        );
        let events = wait_for("the repair event", REACT, || async {
            let events = events_of(&ns, &again.uid().unwrap()).await;
            events
                .iter()
                .any(|(kind, reason, message)| {
                    kind == "Warning" && reason == "StateRepaired" && message.contains("state.json")
                })
                .then_some(events)
        })
        .await;
        assert!(
            !events.iter().any(|(_, reason, _)| reason == "KeyCreated"),
            "no new key: {events:?}"
        );
        let state = wait_for("a state.json that parses again", REACT, || async {
            let secret = secret_text(&ns.client, &ns.name, "auth-signing-key").await?;
            serde_json::from_str::<serde_json::Value>(&secret[STATE_JSON]).ok()
        })
        .await;
        assert!(state.to_string().contains(&signing), "{state}");
        assert_eq!(history.signing_kids(), [signing]);
        assert_no_gap(&history, std::slice::from_ref(&ns.name));
    })
    .await;
}

#[tokio::test]
async fn the_delete_policy_removes_everything_with_the_key_and_a_switch_rewrites_the_owners() {
    with_temp_ns("delete-policy", |ns| async move {
        install_crd(&ns.client).await;
        let (history, copy) = History::with_copy(&ns).await;
        let all = [ns.name.clone(), copy.clone()];
        let _operator = operator(&[&ns.name, &copy]);
        let spec = publish_to_copies(json!({"rotationInterval": "1h", "deletionPolicy": "Delete"}));
        let signing = create_ready(&ns, &jsk("auth", spec)).await;
        let uid = api(&ns).get("auth").await.unwrap().uid().unwrap();
        let [secret, home, copied] = objects(&ns.name, &copy);

        // Whether the objects and the key carry what `policy` asks for.
        let settled = |policy: &'static str| {
            let (ns, uid) = (ns.clone(), uid.clone());
            async move {
                let key = api(&ns).get("auth").await.ok()?;
                let generation = key.metadata.generation;
                let finalizers = key.finalizers().to_vec();
                let observed = key.status.and_then(|s| s.observed_generation);
                let owners = match policy {
                    "Delete" => vec![(uid.clone(), Some(true))],
                    _ => Vec::new(),
                };
                let wanted_finalizers = match policy {
                    "Delete" => vec![FINALIZER.to_string()],
                    _ => Vec::new(),
                };
                for object in [secret, home] {
                    if key_owners(&meta(&ns.client, object).await?) != owners {
                        return None;
                    }
                }
                let copy_meta = meta(&ns.client, copied).await?;
                assert!(
                    key_owners(&copy_meta).is_empty(),
                    "a copy has no owner reference"
                );
                (observed == generation && finalizers == wanted_finalizers).then_some(())
            }
        };
        wait_for("the Delete policy's owners and finalizer", REACT, || {
            settled("Delete")
        })
        .await;

        for policy in ["Retain", "Delete"] {
            api(&ns)
                .patch(
                    "auth",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"deletionPolicy": policy}})),
                )
                .await
                .unwrap();
            wait_for(
                &format!("the owners and finalizer of {policy}"),
                REACT,
                || settled(policy),
            )
            .await;
        }

        api(&ns)
            .delete("auth", &DeleteParams::default())
            .await
            .unwrap();
        wait_for("the key and everything it wrote to go", REACT, || async {
            for object in objects(&ns.name, &copy) {
                if meta(&ns.client, object).await.is_some() {
                    return None;
                }
            }
            api(&ns).get_opt("auth").await.ok()?.is_none().then_some(())
        })
        .await;
        assert_eq!(history.signing_kids(), [signing]);
        history.check_signing_key_published_in(&all);
    })
    .await;
}
