//! What wakes which keys besides their own watch events. Each trigger is a function from a watch
//! event to the keys it concerns:
//! - a Secret wakes the keys that keep their signing key under its name ([`keys_of_secret`]);
//! - a ConfigMap wakes the keys that publish under its name in its namespace
//!   ([`keys_of_config_map`]), and a copy wakes the key it was copied from ([`source_of_copy`]),
//!   through the controller of the source's scope ([`in_scope`]);
//! - a foreign ConfigMap that changes or goes away may free its name: the keys that publish copies
//!   under that name look again ([`keys_publishing_as`]);
//! - a namespace whose labels, consent or life changed wakes the keys that publish into other
//!   namespaces ([`keys_publishing_elsewhere`]).

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    ResourceExt,
    api::PartialObjectMeta,
    runtime::{
        Controller,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::broadcast;

use crate::{
    crd::JwtSigningKey,
    resources::{MANAGED_BY, MANAGED_BY_LABEL, SIGNING_KEY_LABEL, SOURCE_NAMESPACE_LABEL},
};

/// What makes a controller reconcile besides its JwtSigningKeys.
pub(super) struct Triggers<S, C> {
    /// Every Secret in scope (as metadata).
    pub secrets: S,
    /// Every ConfigMap in scope (as metadata).
    pub config_maps: C,
    /// Keys woken by a copy seen by the controller of another scope.
    pub copies_hub: broadcast::Sender<ObjectRef<JwtSigningKey>>,
    /// Names of foreign ConfigMaps that changed or went away, in any scope.
    pub names_hub: broadcast::Sender<String>,
    /// Something publication sees of a namespace changed.
    pub namespace_changes: broadcast::Sender<()>,
}

impl<S, C> Triggers<S, C>
where
    S: Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static,
    C: Stream<Item = Result<PartialObjectMeta<ConfigMap>, watcher::Error>> + Send + 'static,
{
    /// `controller`, the controller of the keys in `scope` (`None`: every namespace) whose store
    /// is `keys`, woken by every trigger as well. Secrets and ConfigMaps are matched by name, so
    /// that a conflicting object that goes away frees the name at once. These streams carry
    /// metadata only: the operator never caches other Secrets' data.
    pub(super) fn attach(
        self,
        controller: Controller<JwtSigningKey>,
        keys: &Store<JwtSigningKey>,
        scope: Option<String>,
    ) -> Controller<JwtSigningKey> {
        let Triggers {
            secrets,
            config_maps,
            copies_hub,
            names_hub,
            namespace_changes,
        } = self;
        let own_scope = scope.clone();
        let from_other_scopes = broadcast_stream(&copies_hub)
            .filter(move |key| futures::future::ready(in_scope(own_scope.as_deref(), key)));
        let store = keys.clone();
        let freed_names = broadcast_stream(&names_hub)
            .flat_map(move |name| stream::iter(keys_publishing_as(&store, &name)));
        let store = keys.clone();
        let namespace_changed = broadcast_stream(&namespace_changes)
            .flat_map(move |()| stream::iter(keys_publishing_elsewhere(&store)));
        let (secret_store, config_map_store) = (keys.clone(), keys.clone());
        controller
            .watches_stream(secrets, move |secret| {
                keys_of_secret(&secret_store, &secret)
            })
            .watches_stream(config_maps, move |cm| {
                let mut woken = keys_of_config_map(&config_map_store, &cm);
                if is_foreign(&cm) {
                    let _ = names_hub.send(cm.name_any());
                }
                if let Some(source) = source_of_copy(&cm) {
                    if in_scope(scope.as_deref(), &source) {
                        woken.push(source);
                    } else {
                        let _ = copies_hub.send(source);
                    }
                }
                woken
            })
            .reconcile_on(from_other_scopes)
            .reconcile_on(freed_names)
            .reconcile_on(namespace_changed)
    }
}

/// The keys in the Secret's namespace that keep their signing key under its name.
fn keys_of_secret(
    keys: &Store<JwtSigningKey>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<JwtSigningKey>> {
    let (ns, name) = (secret.namespace(), secret.name_any());
    keys.state()
        .into_iter()
        .filter(|j| j.namespace() == ns && j.secret_name() == name)
        .map(|j| ObjectRef::from_obj(&*j))
        .collect()
}

/// The keys in the ConfigMap's namespace that publish under its name.
fn keys_of_config_map(
    keys: &Store<JwtSigningKey>,
    cm: &PartialObjectMeta<ConfigMap>,
) -> Vec<ObjectRef<JwtSigningKey>> {
    let (ns, name) = (cm.namespace(), cm.name_any());
    keys.state()
        .into_iter()
        .filter(|j| j.namespace() == ns && j.config_map_name() == name)
        .map(|j| ObjectRef::from_obj(&*j))
        .collect()
}

/// A ConfigMap without the operator's label: when it changes or goes away, its name may be free
/// in its namespace.
fn is_foreign(cm: &PartialObjectMeta<ConfigMap>) -> bool {
    cm.labels().get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY)
}

/// The key a copy was published from, by the copy's labels.
fn source_of_copy(cm: &PartialObjectMeta<ConfigMap>) -> Option<ObjectRef<JwtSigningKey>> {
    let labels = cm.labels();
    let (source_ns, source) = (
        labels.get(SOURCE_NAMESPACE_LABEL)?,
        labels.get(SIGNING_KEY_LABEL)?,
    );
    Some(ObjectRef::new(source).within(source_ns))
}

/// Whether the controller of `scope` (`None`: every namespace) reconciles `key`.
fn in_scope(scope: Option<&str>, key: &ObjectRef<JwtSigningKey>) -> bool {
    scope.is_none_or(|ns| key.namespace.as_deref() == Some(ns))
}

/// The keys that publish copies into other namespaces under `name`.
fn keys_publishing_as(keys: &Store<JwtSigningKey>, name: &str) -> Vec<ObjectRef<JwtSigningKey>> {
    publishing_keys(keys, |j| j.config_map_name() == name)
}

/// The keys that publish into other namespaces (a `namespaceSelector`).
fn keys_publishing_elsewhere(keys: &Store<JwtSigningKey>) -> Vec<ObjectRef<JwtSigningKey>> {
    publishing_keys(keys, |_| true)
}

/// The keys that publish into other namespaces (a `namespaceSelector`) and match `also`.
fn publishing_keys(
    store: &Store<JwtSigningKey>,
    also: impl Fn(&JwtSigningKey) -> bool,
) -> Vec<ObjectRef<JwtSigningKey>> {
    store
        .state()
        .into_iter()
        .filter(|j| {
            j.spec
                .publish
                .as_ref()
                .is_some_and(|p| p.namespace_selector.is_some())
                && also(j)
        })
        .map(|j| ObjectRef::from_obj(&*j))
        .collect()
}

/// Every item sent on `sender` from now on; an item missed by a lagging receiver is skipped.
fn broadcast_stream<T: Clone + Send + 'static>(
    sender: &broadcast::Sender<T>,
) -> impl Stream<Item = T> + Send + use<T> {
    stream::unfold(sender.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(item) => return Some((item, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use serde_json::json;

    fn key(namespace: &str, name: &str, spec: serde_json::Value) -> JwtSigningKey {
        let mut key = JwtSigningKey::new(name, serde_json::from_value(spec).unwrap());
        key.metadata.namespace = Some(namespace.into());
        key
    }

    fn store(keys: Vec<JwtSigningKey>) -> Store<JwtSigningKey> {
        let (reader, mut writer) = reflector::store();
        for key in keys {
            writer.apply_watcher_event(&watcher::Event::Apply(key));
        }
        reader
    }

    fn config_map(
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> PartialObjectMeta<ConfigMap> {
        let mut cm = PartialObjectMeta::<ConfigMap>::default();
        cm.metadata.namespace = Some(namespace.into());
        cm.metadata.name = Some(name.into());
        cm.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        cm
    }

    fn names(mut refs: Vec<ObjectRef<JwtSigningKey>>) -> Vec<String> {
        refs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        refs.into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect()
    }

    const SELECTING: &str = "publish";

    fn keys() -> Store<JwtSigningKey> {
        let selecting = json!({"publish": {"namespaceSelector": {"matchLabels": {"team": "a"}}}});
        store(vec![
            key("auth", "api", json!({})),
            key("auth", "renamed", json!({"configMapName": "api-jwks"})),
            key("other", "api", json!({})),
            key("auth", SELECTING, selecting.clone()),
            key("other", "shared", {
                let mut spec = selecting;
                spec["configMapName"] = json!("api-jwks");
                spec
            }),
        ])
    }

    #[test]
    fn objects_wake_the_keys_of_their_namespace_that_use_their_name() {
        let keys = keys();
        let cm = config_map("auth", "api-jwks", &[]);
        assert_eq!(
            names(keys_of_config_map(&keys, &cm)),
            ["auth/api", "auth/renamed"]
        );
        let mut secret = PartialObjectMeta::<Secret>::default();
        secret.metadata.namespace = Some("other".into());
        secret.metadata.name = Some("api-signing-key".into());
        assert_eq!(names(keys_of_secret(&keys, &secret)), ["other/api"]);
    }

    #[test]
    fn a_copy_wakes_its_source_through_the_controller_of_the_source_scope() {
        let copy = config_map(
            "team-a",
            "publish-jwks",
            &[
                (MANAGED_BY_LABEL, MANAGED_BY),
                (SOURCE_NAMESPACE_LABEL, "auth"),
                (SIGNING_KEY_LABEL, SELECTING),
            ],
        );
        assert!(!is_foreign(&copy), "a copy frees no name");
        let source = source_of_copy(&copy).expect("a copy names its source");
        assert_eq!(names(vec![source.clone()]), ["auth/publish"]);
        assert!(in_scope(None, &source));
        assert!(in_scope(Some("auth"), &source));
        assert!(!in_scope(Some("team-a"), &source));
        assert!(source_of_copy(&config_map("auth", "api-jwks", &[])).is_none());
    }

    #[test]
    fn names_and_namespaces_wake_only_the_keys_that_publish_elsewhere() {
        let keys = keys();
        assert!(is_foreign(&config_map("team-a", "api-jwks", &[])));
        assert_eq!(
            names(keys_publishing_as(&keys, "api-jwks")),
            ["other/shared"]
        );
        assert_eq!(
            names(keys_publishing_elsewhere(&keys)),
            ["auth/publish", "other/shared"]
        );
    }
}
