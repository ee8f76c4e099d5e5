//! Pure builders for the objects the operator writes (Secret, ConfigMaps) and the ownership rules
//! that decide whether an existing object may be touched.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{Resource, ResourceExt};
use serde::Serialize;

use crate::{
    crd::{JwtSigningKey, ObjectTemplate},
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

/// A controller reference that blocks the key's foreground deletion until its objects are gone.
fn owner_reference(jsk: &JwtSigningKey) -> Option<OwnerReference> {
    jsk.controller_owner_ref(&()).map(|owner| OwnerReference {
        block_owner_deletion: Some(true),
        ..owner
    })
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
            owner_references: owner_reference(jsk).map(|o| vec![o]),
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
    let owner_references = match namespace {
        None => owner_reference(jsk).map(|o| vec![o]),
        Some(_) => {
            labels.insert(
                SOURCE_NAMESPACE_LABEL.into(),
                jsk.namespace().unwrap_or_default(),
            );
            None
        }
    };
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(jsk.config_map_name()),
            namespace: namespace.map(str::to_string).or_else(|| jsk.namespace()),
            labels: Some(labels),
            annotations: Some(annotations(jsk, template)),
            owner_references,
            ..ObjectMeta::default()
        },
        data: Some(data.clone()),
        ..ConfigMap::default()
    }
}

/// Whether an existing object belongs to this JwtSigningKey: a controller ownerReference to it, or
/// (for copies in other namespaces) its uid in the owner annotation.
pub fn is_owned_by(meta: &ObjectMeta, jsk: &JwtSigningKey) -> bool {
    let Some(uid) = jsk.uid() else { return false };
    let by_reference = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true));
    let by_annotation = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(OWNER_UID_ANNOTATION))
        .is_some_and(|owner| *owner == uid)
        && meta
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .map(String::as_str)
            == Some(MANAGED_BY);
    by_reference || by_annotation
}

/// Whether `observed` already carries everything in `desired` (data exactly; labels, annotations
/// and owner references as a subset), so that no write is needed.
pub fn is_in_sync(observed: &ObjectMeta, desired: &ObjectMeta) -> bool {
    let subset = |want: &Option<BTreeMap<String, String>>,
                  have: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let owners = desired.owner_references.iter().flatten().all(|want| {
        observed
            .owner_references
            .iter()
            .flatten()
            .any(|have| have.uid == want.uid && have.controller == want.controller)
    });
    subset(&desired.labels, &observed.labels)
        && subset(&desired.annotations, &observed.annotations)
        && owners
}

/// The JSON merge patch that turns a stored Secret or ConfigMap into `desired`, in one write guarded
/// by the stored `resourceVersion`: every desired data entry, `null` for each stored entry the
/// operator does not write (whoever added it), the desired labels and annotations (others' stay),
/// and the desired ownerReferences next to the ones of other owners.
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
        let theirs = stored
            .owner_references
            .iter()
            .flatten()
            .filter(|have| ours.iter().all(|want| want.uid != have.uid));
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
        assert!(copy.metadata.owner_references.is_none());
        assert!(is_owned_by(&copy.metadata, &jsk));

        let mut foreign = copy.clone();
        foreign.metadata.annotations = None;
        assert!(!is_owned_by(&foreign.metadata, &jsk));
    }

    #[test]
    fn an_update_patch_writes_every_entry_removes_the_others_and_keeps_other_owners() {
        let jsk = jsk();
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
