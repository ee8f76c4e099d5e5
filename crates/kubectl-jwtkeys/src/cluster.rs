//! Reading what the operator manages: JwtSigningKeys, the ConfigMaps that publish their keys (home and
//! copies, found by the operator's labels) and their events. Every call names what it tried, so a
//! refusal says which right is missing.

use std::collections::BTreeMap;

use jwt_key_operator::{
    crd::JwtSigningKey,
    resources::{
        JWKS_JSON, MANAGED_BY, MANAGED_BY_LABEL, SIGNING_KEY_LABEL, SOURCE_NAMESPACE_LABEL,
    },
};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    config::KubeConfigOptions,
};
use serde::{Deserialize, Serialize};

use crate::error::{Attempt, Error, Result};

/// The JwtSigningKey resource, for messages and RBAC hints.
pub const JSK: &str = "jwtsigningkeys.jwtkeys.dev";

/// A client and the namespace the command works in.
pub struct Cluster {
    /// API client, from the kubeconfig.
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

impl Cluster {
    /// Loads the kubeconfig as kubectl does (`KUBECONFIG`, else `~/.kube/config`; in a pod, its
    /// ServiceAccount), with `--context` and `-n` applied.
    pub async fn connect(context: Option<String>, namespace: Option<String>) -> Result<Cluster> {
        let options = KubeConfigOptions {
            context,
            ..KubeConfigOptions::default()
        };
        let config = match Config::from_kubeconfig(&options).await {
            Ok(config) => config,
            // No kubeconfig at all: in a pod (the operator's image), the ServiceAccount.
            Err(kubeconfig_error) if options.context.is_none() => {
                Config::incluster().map_err(|_| Error::Kubeconfig(kubeconfig_error.to_string()))?
            }
            Err(err) => return Err(Error::Kubeconfig(err.to_string())),
        };
        let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        Ok(Cluster { client, namespace })
    }

    /// The JwtSigningKey `name` in the current namespace.
    pub async fn key(&self, name: &str) -> Result<JwtSigningKey> {
        Api::<JwtSigningKey>::namespaced(self.client.clone(), &self.namespace)
            .get(name)
            .await
            .map_err(|e| Error::from_kube(Attempt::one("get", JSK, &self.namespace, name), e))
    }

    /// Every JwtSigningKey in the current namespace, or in all of them.
    pub async fn keys(&self, all_namespaces: bool) -> Result<Vec<JwtSigningKey>> {
        let (api, scope) = if all_namespaces {
            (Api::<JwtSigningKey>::all(self.client.clone()), None)
        } else {
            (
                Api::namespaced(self.client.clone(), &self.namespace),
                Some(self.namespace.as_str()),
            )
        };
        let mut keys = api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::from_kube(Attempt::list(JSK, scope), e))?
            .items;
        keys.sort_by_key(|k| (k.namespace(), k.name_any()));
        Ok(keys)
    }

    /// Merges `annotations` into a JwtSigningKey.
    pub async fn annotate(&self, name: &str, annotations: serde_json::Value) -> Result<()> {
        Api::<JwtSigningKey>::namespaced(self.client.clone(), &self.namespace)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": annotations}})),
            )
            .await
            .map_err(|e| Error::from_kube(Attempt::one("patch", JSK, &self.namespace, name), e))?;
        Ok(())
    }

    /// A Secret of the current namespace.
    pub async fn secret(&self, name: &str) -> Result<Secret> {
        Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .get(name)
            .await
            .map_err(|e| Error::from_kube(Attempt::one("get", "secrets", &self.namespace, name), e))
    }

    /// A ConfigMap.
    pub async fn config_map(&self, namespace: &str, name: &str) -> Result<ConfigMap> {
        Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
            .get(name)
            .await
            .map_err(|e| Error::from_kube(Attempt::one("get", "configmaps", namespace, name), e))
    }

    /// The ConfigMaps that publish `key`'s public keys: the home one and each copy, found by the
    /// operator's labels. Namespaces listed in the status that cannot be read are reported as such.
    pub async fn holders(&self, key: &JwtSigningKey) -> Vec<Holder> {
        let home = key.namespace().unwrap_or_default();
        let name = key.name_any();
        let mut holders = Vec::new();
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY},{SIGNING_KEY_LABEL}={name}");
        // Home: the operator's ConfigMap of this key without the source label (copies carry it).
        match self
            .list_config_maps(
                Some(&home),
                &format!("{selector},!{SOURCE_NAMESPACE_LABEL}"),
            )
            .await
        {
            Ok(found) if found.is_empty() => holders.push(Holder::missing(&home, true, key)),
            Ok(found) => holders.extend(found.iter().map(|cm| Holder::of(cm, true))),
            Err(err) => holders.push(Holder::unreadable(&home, true, key, &err)),
        }
        // Copies: everywhere at once when the user may list cluster-wide, else the namespaces the
        // status names.
        let copies = format!("{selector},{SOURCE_NAMESPACE_LABEL}={home}");
        let published = key
            .status
            .as_ref()
            .map(|s| s.published_namespaces.clone())
            .unwrap_or_default();
        match self.list_config_maps(None, &copies).await {
            Ok(found) => {
                holders.extend(found.iter().map(|cm| Holder::of(cm, false)));
                for ns in &published {
                    if !holders.iter().any(|h| &h.namespace == ns) {
                        holders.push(Holder::missing(ns, false, key));
                    }
                }
            }
            Err(_) => {
                for ns in &published {
                    match self.list_config_maps(Some(ns), &copies).await {
                        Ok(found) if found.is_empty() => {
                            holders.push(Holder::missing(ns, false, key))
                        }
                        Ok(found) => holders.extend(found.iter().map(|cm| Holder::of(cm, false))),
                        Err(err) => holders.push(Holder::unreadable(ns, false, key, &err)),
                    }
                }
            }
        }
        holders
    }

    async fn list_config_maps(
        &self,
        namespace: Option<&str>,
        selector: &str,
    ) -> Result<Vec<ConfigMap>> {
        let api: Api<ConfigMap> = match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let mut found = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| Error::from_kube(Attempt::list("configmaps", namespace), e))?
            .items;
        found.sort_by_key(|cm| (cm.namespace(), cm.name_any()));
        Ok(found)
    }

    /// The newest `limit` events of a JwtSigningKey, oldest first.
    pub async fn events(&self, key: &JwtSigningKey, limit: usize) -> Result<Vec<EventLine>> {
        let namespace = key.namespace().unwrap_or_default();
        let selector = format!(
            "involvedObject.kind=JwtSigningKey,involvedObject.name={}",
            key.name_any()
        );
        let events = Api::<Event>::namespaced(self.client.clone(), &namespace)
            .list(&ListParams::default().fields(&selector))
            .await
            .map_err(|e| Error::from_kube(Attempt::list("events", Some(&namespace)), e))?
            .items;
        let uid = key.uid();
        let mut lines: Vec<EventLine> = events
            .into_iter()
            // A key deleted and created again under the same name: only this one's events.
            .filter(|e| uid.is_none() || e.involved_object.uid == uid)
            .map(|e| {
                let at = e
                    .last_timestamp
                    .map(|t| t.0.to_string())
                    .or_else(|| e.event_time.map(|t| t.0.to_string()))
                    .or_else(|| e.first_timestamp.map(|t| t.0.to_string()))
                    .unwrap_or_default();
                EventLine {
                    at,
                    type_: e.type_.unwrap_or_default(),
                    reason: e.reason.unwrap_or_default(),
                    message: e.message.unwrap_or_default(),
                    count: e.count.unwrap_or(1),
                }
            })
            .collect();
        lines.sort_by(|a, b| a.at.cmp(&b.at));
        let skip = lines.len().saturating_sub(limit);
        Ok(lines.split_off(skip))
    }
}

/// One event of a JwtSigningKey.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventLine {
    /// Last seen, RFC 3339.
    pub at: String,
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: String,
    /// Reason, e.g. KeyCreated.
    pub reason: String,
    /// Message.
    pub message: String,
    /// How many times it happened.
    pub count: i32,
}

/// A ConfigMap that publishes (or should publish) a key's public keys.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The JwtSigningKey's own namespace (else a copy).
    pub home: bool,
    /// The kids in its `jwks.json`, in order; empty when it could not be read.
    pub kids: Vec<String>,
    /// Why the kids are unknown: missing, or not readable with the user's rights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The published JWKs, by kid (for `verify`).
    #[serde(skip)]
    pub jwks: BTreeMap<String, serde_json::Value>,
}

impl Holder {
    fn of(config_map: &ConfigMap, home: bool) -> Holder {
        let namespace = config_map.namespace().unwrap_or_default();
        let name = config_map.name_any();
        match parse_jwks(config_map) {
            Ok(keys) => Holder {
                namespace,
                name,
                home,
                kids: keys.iter().map(|(kid, _)| kid.clone()).collect(),
                problem: None,
                jwks: keys.into_iter().collect(),
            },
            Err(problem) => Holder {
                namespace,
                name,
                home,
                kids: Vec::new(),
                problem: Some(problem),
                jwks: BTreeMap::new(),
            },
        }
    }

    fn missing(namespace: &str, home: bool, key: &JwtSigningKey) -> Holder {
        Holder {
            namespace: namespace.to_string(),
            name: key.config_map_name(),
            home,
            kids: Vec::new(),
            problem: Some("missing".into()),
            jwks: BTreeMap::new(),
        }
    }

    fn unreadable(namespace: &str, home: bool, key: &JwtSigningKey, err: &Error) -> Holder {
        Holder {
            namespace: namespace.to_string(),
            name: key.config_map_name(),
            home,
            kids: Vec::new(),
            problem: Some(if err.is_forbidden() {
                format!("not readable: you lack `list` on `configmaps` in namespace {namespace}")
            } else {
                err.to_string()
            }),
            jwks: BTreeMap::new(),
        }
    }
}

/// A JWK as published: only the members the plugin reads.
#[derive(Debug, Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

/// The `(kid, JWK)` pairs of a ConfigMap's `jwks.json`, in order.
pub fn parse_jwks(config_map: &ConfigMap) -> Result<Vec<(String, serde_json::Value)>, String> {
    let text = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(JWKS_JSON))
        .ok_or_else(|| format!("no {JWKS_JSON} entry"))?;
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| format!("{JWKS_JSON} is not a JWK set: {e}"))?;
    Ok(set
        .keys
        .into_iter()
        .map(|jwk| {
            let kid = jwk["kid"].as_str().unwrap_or("(no kid)").to_string();
            (kid, jwk)
        })
        .collect())
}
