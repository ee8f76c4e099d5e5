//! Pure builders for the objects the operator writes (Secret, ConfigMaps) and the ownership rules
//! that decide whether an existing object may be touched.
//!
//! Ownership is recorded on every object by the operator's labels and the owner-uid annotation;
//! the owner reference (garbage collection) is added only under `deletionPolicy: Delete`, so that
//! under `Retain` nothing removes the objects when the key goes, whether or not the operator runs.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{Resource, ResourceExt};
use serde::Serialize;

use crate::{
    crd::{DeletionPolicy, GROUP, JwtSigningKey, ObjectTemplate},
    keys::{Jwk, KeyPair},
    schedule::KeySet,
};

/// Label on everything the operator writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "jwt-key-operator";
/// Label naming the JwtSigningKey an object belongs to.
pub const SIGNING_KEY_LABEL: &str = "jwtkeys.dev/signing-key";
/// Label on ConfigMap copies in other namespaces: the JwtSigningKey's namespace.
pub const SOURCE_NAMESPACE_LABEL: &str = "jwtkeys.dev/source-namespace";
/// Annotation with the owning JwtSigningKey's uid (copies in other namespaces cannot carry an
/// ownerReference).
pub const OWNER_UID_ANNOTATION: &str = "jwtkeys.dev/owner-uid";

/// Annotation with the JwtSigningKey generation an object was last written for: a spec change
/// (templates, names) rewrites the objects once, so that labels dropped from a template go too.
pub const GENERATION_ANNOTATION: &str = "jwtkeys.dev/generation";

/// Secret entry: the signing key, PKCS#8 PEM.
pub const PRIVATE_PEM: &str = "private.pem";
/// Secret entry: the signing key's public key, SPKI PEM.
pub const PUBLIC_PEM: &str = "public.pem";
/// Secret entry: the signing key's kid.
pub const KID: &str = "kid";
/// Secret entry: the signing key's algorithm.
pub const ALGORITHM: &str = "algorithm";
/// Secret entry (operator state): the next key, PKCS#8 PEM.
pub const NEXT_PRIVATE_PEM: &str = "next-private.pem";
/// Secret entry (operator state): the next key's kid.
pub const NEXT_KID: &str = "next-kid";
/// Secret entry (operator state): a generated key saved before it is published everywhere, PKCS#8 PEM.
pub const PENDING_PRIVATE_PEM: &str = "pending-private.pem";
/// Secret entry (operator state): every published key's public JWK and schedule, revoked kids.
/// Holds no private material.
pub const STATE_JSON: &str = "state.json";
/// ConfigMap entry: the JWK set.
pub const JWKS_JSON: &str = "jwks.json";

/// Private halves of the signing and next keys, for the Secret.
#[derive(Debug, Default, Clone)]
pub struct PrivateKeys {
    /// The signing key.
    pub active: Option<KeyPair>,
    /// The next key.
    pub next: Option<KeyPair>,
    /// A generated key not yet published everywhere.
    pub pending: Option<KeyPair>,
}

/// Labels every object of this JwtSigningKey carries.
pub fn labels(jsk: &JwtSigningKey, template: Option<&ObjectTemplate>) -> BTreeMap<String, String> {
    let mut labels = template.map(|t| t.labels.clone()).unwrap_or_default();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels.insert(SIGNING_KEY_LABEL.into(), jsk.name_any());
    labels
}

fn annotations(jsk: &JwtSigningKey, template: Option<&ObjectTemplate>) -> BTreeMap<String, String> {
    let mut annotations = template.map(|t| t.annotations.clone()).unwrap_or_default();
    annotations.insert(OWNER_UID_ANNOTATION.into(), jsk.uid().unwrap_or_default());
    annotations.insert(
        GENERATION_ANNOTATION.into(),
        jsk.metadata.generation.unwrap_or_default().to_string(),
    );
    annotations
}

/// The owner references the operator wants on an object in the key's namespace: under
/// `deletionPolicy: Delete`, a controller reference that blocks the key's foreground deletion until
/// its objects are gone; under `Retain`, none (garbage collection would delete the objects with the
/// key, even while the operator is not running).
fn owner_references(jsk: &JwtSigningKey) -> Vec<OwnerReference> {
    match jsk.spec.deletion_policy {
        DeletionPolicy::Retain => Vec::new(),
        DeletionPolicy::Delete => jsk
            .controller_owner_ref(&())
            .map(|owner| OwnerReference {
                block_owner_deletion: Some(true),
                ..owner
            })
            .into_iter()
            .collect(),
    }
}

/// Whether an owner reference points at a JwtSigningKey: the operator's kind of reference, which it
/// adds or removes as the `deletionPolicy` says. Others' references are left as they are.
fn is_key_reference(owner: &OwnerReference) -> bool {
    owner.kind == "JwtSigningKey" && owner.api_version.split('/').next() == Some(GROUP)
}

/// The Secret for the auth service: signing key plus the operator's own state.
pub fn secret(jsk: &JwtSigningKey, keys: &KeySet, private: &PrivateKeys) -> Secret {
    let mut data = BTreeMap::new();
    let mut put = |key: &str, value: &str| {
        data.insert(key.to_string(), ByteString(value.as_bytes().to_vec()));
    };
    if let Some(active) = &private.active {
        put(PRIVATE_PEM, active.private_pem());
        put(PUBLIC_PEM, &active.public_pem);
        put(KID, active.kid());
        put(ALGORITHM, &active.jwk.alg);
    }
    if let Some(next) = &private.next {
        put(NEXT_PRIVATE_PEM, next.private_pem());
        put(NEXT_KID, next.kid());
    }
    if let Some(pending) = &private.pending {
        put(PENDING_PRIVATE_PEM, pending.private_pem());
    }
    put(
        STATE_JSON,
        &serde_json::to_string(keys).expect("the key set serializes"),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(jsk.secret_name()),
            namespace: jsk.namespace(),
            labels: Some(labels(jsk, jsk.spec.secret_template.as_ref())),
            annotations: Some(annotations(jsk, jsk.spec.secret_template.as_ref())),
            owner_references: Some(owner_references(jsk)),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

#[derive(Serialize)]
struct JwkSet<'a> {
    keys: Vec<&'a Jwk>,
}

/// The ConfigMap data for verifiers: `jwks.json` in signing, next, retired order, and one
/// `<kid>.pem` per key. Fails only if a stored public key is corrupt.
pub fn config_map_data(keys: &KeySet) -> Result<BTreeMap<String, String>, crate::keys::Error> {
    let published: Vec<&Jwk> = keys
        .published_in_order()
        .into_iter()
        .map(|k| &k.jwk)
        .collect();
    config_map_data_of(&published)
}

/// The ConfigMap data for these JWKs, in this order.
pub fn config_map_data_of(jwks: &[&Jwk]) -> Result<BTreeMap<String, String>, crate::keys::Error> {
    let mut data = BTreeMap::new();
    for jwk in jwks {
        data.insert(format!("{}.pem", jwk.kid), jwk.public_pem()?);
    }
    let set = JwkSet {
        keys: jwks.to_vec(),
    };
    data.insert(
        JWKS_JSON.into(),
        serde_json::to_string_pretty(&set).expect("the JWK set serializes") + "\n",
    );
    Ok(data)
}

/// A published ConfigMap, in the JwtSigningKey's namespace (`namespace == None`) or a copy in
/// another namespace.
pub fn config_map(
    jsk: &JwtSigningKey,
    data: &BTreeMap<String, String>,
    namespace: Option<&str>,
) -> ConfigMap {
    let template = jsk.spec.config_map_template.as_ref();
    let mut labels = labels(jsk, template);
    // A copy in another namespace cannot carry an owner reference (they do not cross namespaces).
    let owner_references = match namespace {
        None => owner_references(jsk),
        Some(_) => {
            labels.insert(
                SOURCE_NAMESPACE_LABEL.into(),
                jsk.namespace().unwrap_or_default(),
            );
            Vec::new()
        }
    };
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(jsk.config_map_name()),
            namespace: namespace.map(str::to_string).or_else(|| jsk.namespace()),
            labels: Some(labels),
            annotations: Some(annotations(jsk, template)),
            owner_references: Some(owner_references),
            ..ObjectMeta::default()
        },
        data: Some(data.clone()),
        ..ConfigMap::default()
    }
}

/// Whether an existing object belongs to this JwtSigningKey (and may be written or deleted by it):
/// - a controller ownerReference to it; or
/// - the operator's label and this key's uid in the owner annotation; or
/// - retained by an earlier JwtSigningKey of the same namespace and name, deleted under
///   `deletionPolicy: Retain`, which this one adopts: the operator's label, an owner annotation
///   (another uid), the `signing-key` label naming this key, the `source-namespace` label naming
///   this key's namespace on a copy and absent in the key's own namespace, and no controller
///   ownerReference. Only one JwtSigningKey of a namespace and name lives at a time, so the uid
///   can only be a deleted one's; an object under a controller reference belongs to that owner
///   (or is about to be garbage-collected with it) and is never adopted.
pub fn is_owned_by(meta: &ObjectMeta, jsk: &JwtSigningKey) -> bool {
    let Some(uid) = jsk.uid() else { return false };
    let mut controllers = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.controller == Some(true));
    if controllers.clone().any(|o| o.uid == uid) {
        return true;
    }
    let label = |name: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(name))
            .map(String::as_str)
    };
    let owner = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(OWNER_UID_ANNOTATION));
    let (Some(MANAGED_BY), Some(owner)) = (label(MANAGED_BY_LABEL), owner) else {
        return false;
    };
    if *owner == uid {
        return true;
    }
    let (Some(namespace), Some(home)) = (meta.namespace.as_deref(), jsk.namespace()) else {
        return false;
    };
    let source = (namespace != home).then_some(home.as_str());
    controllers.next().is_none()
        && label(SIGNING_KEY_LABEL) == Some(jsk.name_any().as_str())
        && label(SOURCE_NAMESPACE_LABEL) == source
}

/// Whether `observed` already carries everything in `desired` (labels and annotations as a subset;
/// references to JwtSigningKeys exactly, so that a `deletionPolicy` change adds or removes them),
/// so that no metadata write is needed.
pub fn is_in_sync(observed: &ObjectMeta, desired: &ObjectMeta) -> bool {
    let subset = |want: &Option<BTreeMap<String, String>>,
                  have: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let key_references = |meta: &ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .filter(|o| is_key_reference(o))
            .map(|o| (o.uid.clone(), o.controller))
            .collect::<std::collections::BTreeSet<_>>()
    };
    let owners = key_references(observed) == key_references(desired);
    subset(&desired.labels, &observed.labels)
        && subset(&desired.annotations, &observed.annotations)
        && owners
}

/// The JSON merge patch that turns a stored Secret or ConfigMap into `desired`, in one write guarded
/// by the stored `resourceVersion`: every desired data entry, `null` for each stored entry the
/// operator does not write (whoever added it), the desired labels and annotations (others' stay),
/// and the desired ownerReferences next to the ones of other owners (a reference to a JwtSigningKey
/// that `desired` does not carry goes: `deletionPolicy: Retain`).
///
/// A merge patch rather than server-side apply: entries written by the create (an `Update` for
/// the API server's field ownership) would outlive an apply that drops them and need a second
/// write to go.
pub fn update_patch<K: Resource + Serialize>(stored: &K, desired: &K) -> serde_json::Value {
    let data_of = |object: &K| match serde_json::to_value(object) {
        Ok(serde_json::Value::Object(mut fields)) => match fields.remove("data") {
            Some(serde_json::Value::Object(data)) => data,
            _ => serde_json::Map::new(),
        },
        _ => serde_json::Map::new(),
    };
    let desired_data = data_of(desired);
    let mut data: serde_json::Map<String, serde_json::Value> = data_of(stored)
        .into_iter()
        .filter(|(k, _)| !desired_data.contains_key(k))
        .map(|(k, _)| (k, serde_json::Value::Null))
        .collect();
    data.extend(desired_data);
    let (stored, desired) = (stored.meta(), desired.meta());
    let mut metadata = serde_json::json!({
        "resourceVersion": stored.resource_version,
        "labels": desired.labels,
        "annotations": desired.annotations,
    });
    if let Some(ours) = &desired.owner_references {
        let theirs =
            stored.owner_references.iter().flatten().filter(|have| {
                !is_key_reference(have) && ours.iter().all(|want| want.uid != have.uid)
            });
        metadata["ownerReferences"] = serde_json::json!(theirs.chain(ours).collect::<Vec<_>>());
    }
    serde_json::json!({"metadata": metadata, "data": data})
}

/// Whether a stored Secret or ConfigMap data map equals the desired one (extra keys count as drift).
pub fn secret_data_matches(observed: &Secret, desired: &Secret) -> bool {
    observed.data == desired.data && observed.type_ == desired.type_
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{crd::JwtSigningKeySpec, schedule::KeyRecord};
    use jiff::Timestamp;

    fn jsk() -> JwtSigningKey {
        let mut jsk = JwtSigningKey::new(
            "auth",
            serde_json::from_value::<JwtSigningKeySpec>(serde_json::json!({})).unwrap(),
        );
        jsk.metadata.namespace = Some("auth".into());
        jsk.metadata.uid = Some("uid-1".into());
        jsk
    }

    #[test]
    fn jwks_lists_signing_key_first_then_next_then_retired_newest_first() {
        let t = |s| Timestamp::from_second(s).unwrap();
        let pairs: Vec<KeyPair> = (0..4)
            .map(|_| KeyPair::generate(2048, crate::crd::Algorithm::RS256).unwrap())
            .collect();
        let record = |i: usize, activated: Option<i64>, retired: Option<i64>| KeyRecord {
            jwk: pairs[i].jwk.clone(),
            published_at: t(0),
            activated_at: activated.map(t),
            retired_at: retired.map(t),
            remove_after: retired.map(|r| t(r + 100)),
        };
        let keys = KeySet {
            keys: vec![
                record(0, Some(0), Some(10)),
                record(1, None, None),
                record(2, Some(20), None),
                record(3, Some(10), Some(20)),
            ],
            ..KeySet::default()
        };
        let data = config_map_data(&keys).unwrap();
        let jwks: serde_json::Value = serde_json::from_str(&data[JWKS_JSON]).unwrap();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(
            kids,
            [
                pairs[2].kid(),
                pairs[1].kid(),
                pairs[3].kid(),
                pairs[0].kid()
            ]
        );
        for pair in &pairs {
            assert_eq!(data[&format!("{}.pem", pair.kid())], pair.public_pem);
        }
        assert!(
            !data.values().any(|v| v.contains("PRIVATE")),
            "no private material in the ConfigMap"
        );
        let key = &jwks["keys"][0];
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], "RS256");
        assert_eq!(key["kty"], "RSA");
    }

    fn with_policy(policy: DeletionPolicy) -> JwtSigningKey {
        let mut jsk = jsk();
        jsk.spec.deletion_policy = policy;
        jsk
    }

    fn key_references(meta: &ObjectMeta) -> Vec<&str> {
        meta.owner_references
            .iter()
            .flatten()
            .filter(|o| is_key_reference(o))
            .map(|o| o.uid.as_str())
            .collect()
    }

    #[test]
    fn objects_carry_the_contract_labels_and_an_owner() {
        let jsk = jsk();
        let secret = secret(&jsk, &KeySet::default(), &PrivateKeys::default());
        let labels = secret.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels[SIGNING_KEY_LABEL], "auth");
        assert_eq!(secret.metadata.name.as_deref(), Some("auth-signing-key"));
        assert!(is_owned_by(&secret.metadata, &jsk));

        let copy = config_map(&jsk, &BTreeMap::new(), Some("other"));
        assert_eq!(copy.metadata.name.as_deref(), Some("auth-jwks"));
        assert_eq!(copy.metadata.namespace.as_deref(), Some("other"));
        assert!(key_references(&copy.metadata).is_empty());
        assert!(is_owned_by(&copy.metadata, &jsk));

        let mut foreign = copy.clone();
        foreign.metadata.annotations = None;
        assert!(!is_owned_by(&foreign.metadata, &jsk));
    }

    #[test]
    fn only_the_delete_policy_gives_the_objects_in_the_keys_namespace_an_owner_reference() {
        let data = BTreeMap::new();
        for (policy, expected) in [
            (DeletionPolicy::Retain, Vec::<&str>::new()),
            (DeletionPolicy::Delete, vec!["uid-1"]),
        ] {
            let jsk = with_policy(policy);
            let secret = secret(&jsk, &KeySet::default(), &PrivateKeys::default());
            let home = config_map(&jsk, &data, None);
            let copy = config_map(&jsk, &data, Some("other"));
            assert_eq!(key_references(&secret.metadata), expected, "{policy:?}");
            assert_eq!(key_references(&home.metadata), expected, "{policy:?}");
            assert!(key_references(&copy.metadata).is_empty(), "{policy:?}");
            if let Some(owner) = secret.metadata.owner_references.iter().flatten().next() {
                assert_eq!(
                    (owner.controller, owner.block_owner_deletion),
                    (Some(true), Some(true))
                );
            }
            for object in [&secret.metadata, &home.metadata, &copy.metadata] {
                assert!(is_owned_by(object, &jsk), "{policy:?}");
            }
        }
    }

    #[test]
    fn a_policy_change_rewrites_the_owner_references_and_keeps_other_owners() {
        let data = BTreeMap::new();
        let other_owner = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "someone".into(),
            uid: "uid-other".into(),
            ..OwnerReference::default()
        };
        let (retain, delete) = (
            with_policy(DeletionPolicy::Retain),
            with_policy(DeletionPolicy::Delete),
        );
        for (from, to, owners) in [
            (&delete, &retain, vec!["uid-other"]),
            (&retain, &delete, vec!["uid-other", "uid-1"]),
        ] {
            let mut stored = config_map(from, &data, None);
            stored.metadata.resource_version = Some("7".into());
            stored
                .metadata
                .owner_references
                .get_or_insert_with(Vec::new)
                .insert(0, other_owner.clone());
            let desired = config_map(to, &data, None);
            assert!(
                !is_in_sync(&stored.metadata, &desired.metadata),
                "{:?} -> {:?} needs a write",
                from.spec.deletion_policy,
                to.spec.deletion_policy
            );
            let patch = update_patch(&stored, &desired);
            let written: Vec<&str> = patch["metadata"]["ownerReferences"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["uid"].as_str().unwrap())
                .collect();
            assert_eq!(written, owners);
            // Once written, nothing more to do.
            let mut after = stored.clone();
            after.metadata.owner_references =
                Some(serde_json::from_value(patch["metadata"]["ownerReferences"].clone()).unwrap());
            assert!(is_in_sync(&after.metadata, &desired.metadata));
        }
    }

    #[test]
    fn objects_retained_by_a_deleted_key_of_the_same_name_are_adopted_and_no_others() {
        let data = BTreeMap::new();
        let mut old = with_policy(DeletionPolicy::Retain);
        old.metadata.uid = Some("uid-deleted".into());
        let new = jsk();
        let retained_secret = secret(&old, &KeySet::default(), &PrivateKeys::default());
        let retained_home = config_map(&old, &data, None);
        let retained_copy = config_map(&old, &data, Some("other"));
        for retained in [
            &retained_secret.metadata,
            &retained_home.metadata,
            &retained_copy.metadata,
        ] {
            assert!(is_owned_by(retained, &new), "{:?}", retained.namespace);
        }

        let change = |meta: &ObjectMeta, edit: &dyn Fn(&mut ObjectMeta)| {
            let mut meta = meta.clone();
            edit(&mut meta);
            meta
        };
        let label = |name: &'static str, value: Option<&'static str>| {
            move |meta: &mut ObjectMeta| {
                let labels = meta.labels.get_or_insert_with(BTreeMap::new);
                match value {
                    Some(value) => labels.insert(name.into(), value.into()),
                    None => labels.remove(name),
                };
            }
        };
        let not_adopted = [
            // Another key's objects.
            change(
                &retained_home.metadata,
                &label(SIGNING_KEY_LABEL, Some("other")),
            ),
            // A copy from a key of the same name in another namespace.
            change(
                &retained_copy.metadata,
                &label(SOURCE_NAMESPACE_LABEL, Some("elsewhere")),
            ),
            // Such a copy in this key's namespace is not its home ConfigMap.
            change(&retained_copy.metadata, &|meta: &mut ObjectMeta| {
                meta.namespace = Some("auth".into())
            }),
            // A home object without its source label is not a copy.
            change(
                &retained_copy.metadata,
                &label(SOURCE_NAMESPACE_LABEL, None),
            ),
            // Not labelled as the operator's.
            change(&retained_secret.metadata, &label(MANAGED_BY_LABEL, None)),
            change(
                &retained_secret.metadata,
                &label(MANAGED_BY_LABEL, Some("helm")),
            ),
            // Never written by the operator: no owner annotation.
            change(&retained_secret.metadata, &|meta: &mut ObjectMeta| {
                meta.annotations = None
            }),
            // Held by another owner (or about to be garbage-collected with a deleted one).
            secret(
                &{
                    let mut old = old.clone();
                    old.spec.deletion_policy = DeletionPolicy::Delete;
                    old
                },
                &KeySet::default(),
                &PrivateKeys::default(),
            )
            .metadata,
        ];
        for (i, meta) in not_adopted.iter().enumerate() {
            assert!(!is_owned_by(meta, &new), "case {i}: {meta:?}");
        }
    }

    #[test]
    fn an_update_patch_writes_every_entry_removes_the_others_and_keeps_other_owners() {
        let jsk = with_policy(DeletionPolicy::Delete);
        let desired = config_map(
            &jsk,
            &config_map_data_of(&[]).expect("an empty JWK set"),
            None,
        );
        let mut stored = desired.clone();
        stored.metadata.resource_version = Some("42".into());
        let other_owner = OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "someone".into(),
            uid: "uid-other".into(),
            ..OwnerReference::default()
        };
        stored
            .metadata
            .owner_references
            .get_or_insert_with(Vec::new)
            .push(other_owner);
        stored
            .data
            .get_or_insert_with(BTreeMap::new)
            .insert("injected.pem".into(), "x".into());

        let patch = update_patch(&stored, &desired);
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["data"]["injected.pem"], serde_json::Value::Null);
        assert_eq!(
            patch["data"]["jwks.json"],
            desired.data.as_ref().unwrap()["jwks.json"].as_str()
        );
        let owners: Vec<&str> = patch["metadata"]["ownerReferences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["uid"].as_str().unwrap())
            .collect();
        assert_eq!(owners, ["uid-other", "uid-1"]);
        assert_eq!(patch["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
    }
}
