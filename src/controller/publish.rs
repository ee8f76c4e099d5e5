//! Publish: the ConfigMap in the key's namespace and its copies in the target namespaces. Every write
//! is attempted, in parallel with a bounded concurrency; failures are collected per namespace rather
//! than ending the reconcile at the first one, and the moment each write added a key to a ConfigMap
//! that lacked it is recorded, so that a next key signs only once every target has held it for P.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, ResourceExt, api::DeleteParams};
use tracing::info;

use super::{Found, Reconciliation};
use crate::{keys::Jwk, resources};

/// Writes in flight at once.
const WRITE_CONCURRENCY: usize = 8;

/// One namespace that should hold the ConfigMap.
struct Target {
    /// The ConfigMap as last read or written; `None` when it does not exist.
    current: Option<ConfigMap>,
}

/// The published ConfigMaps of one JwtSigningKey.
pub struct Publisher<'a> {
    run: &'a Reconciliation<'a>,
    targets: BTreeMap<String, Target>,
    /// Target namespaces where a ConfigMap of that name exists and is not ours.
    foreign: Vec<String>,
    /// Namespaces whose last write (or read) failed, with the error.
    failed: BTreeMap<String, String>,
    /// Kid -> latest instant a write returned that added it to a ConfigMap that lacked it.
    added: BTreeMap<String, Timestamp>,
    /// Copies under a name this key no longer uses: (namespace, name).
    renamed: Vec<(String, String)>,
}

fn kids_of(config_map: Option<&ConfigMap>) -> BTreeSet<String> {
    config_map
        .and_then(|cm| cm.data.as_ref())
        .map(|data| {
            data.keys()
                .filter_map(|k| k.strip_suffix(".pem"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The JWKs a ConfigMap publishes (invalid entries are skipped).
pub fn published_jwks(config_map: &ConfigMap) -> Vec<Jwk> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    config_map
        .data
        .as_ref()
        .and_then(|d| d.get(resources::JWKS_JSON))
        .and_then(|json| serde_json::from_str::<Set>(json).ok())
        .map(|set| {
            set.keys
                .into_iter()
                .filter_map(|k| serde_json::from_value(k).ok())
                .collect()
        })
        .unwrap_or_default()
}

impl<'a> Publisher<'a> {
    /// `home` is the owned ConfigMap in the key's namespace (if any), `copies` the owned copies found
    /// anywhere in scope, `targets` the other namespaces that should hold a copy.
    pub async fn new(
        run: &'a Reconciliation<'a>,
        home: Option<ConfigMap>,
        copies: Vec<ConfigMap>,
        targets: &[String],
    ) -> Publisher<'a> {
        let mut publisher = Publisher {
            run,
            targets: BTreeMap::new(),
            foreign: Vec::new(),
            failed: BTreeMap::new(),
            added: BTreeMap::new(),
            renamed: Vec::new(),
        };
        publisher
            .targets
            .insert(run.namespace.clone(), Target { current: home });
        let name = run.jsk.config_map_name();
        let (current, renamed): (Vec<ConfigMap>, Vec<ConfigMap>) =
            copies.into_iter().partition(|cm| cm.name_any() == name);
        publisher.renamed = renamed
            .iter()
            .map(|cm| (cm.namespace().unwrap_or_default(), cm.name_any()))
            .collect();
        let mut existing: BTreeMap<String, ConfigMap> = current
            .into_iter()
            .map(|cm| (cm.namespace().unwrap_or_default(), cm))
            .collect();
        // A target namespace may hold a ConfigMap of that name that is not ours.
        let unknown: Vec<String> = targets
            .iter()
            .filter(|ns| !existing.contains_key(*ns))
            .cloned()
            .collect();
        let looked_up: Vec<(String, Result<Found<ConfigMap>, kube::Error>)> = stream::iter(unknown)
            .map(|ns| async {
                let found = run
                    .ctx
                    .config_maps
                    .find(&run.ctx.client, &ns, &name, run.jsk)
                    .await;
                (ns, found)
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        for (ns, found) in looked_up {
            match found {
                Ok(Found::Foreign) => publisher.foreign.push(ns),
                Ok(Found::Owned(cm)) => {
                    existing.insert(ns, cm);
                }
                Ok(Found::Missing) => {
                    publisher.targets.insert(ns, Target { current: None });
                }
                Err(e) => {
                    publisher.failed.insert(
                        ns.clone(),
                        format!("reading ConfigMap {name}: {}", super::brief(&e)),
                    );
                }
            }
        }
        publisher.foreign.sort();
        for (ns, cm) in existing {
            if targets.contains(&ns) {
                publisher.targets.insert(ns, Target { current: Some(cm) });
            } else {
                // No longer targeted (or no longer accepted): removed.
                if let Err(e) = run.delete_config_map(&ns, &name).await {
                    publisher.failed.insert(ns, e.brief());
                }
            }
        }
        publisher
    }

    /// Whether every target namespace holds `kid`, counting failed and unreadable ones as not.
    pub fn everywhere(&self, kid: &str) -> bool {
        self.failed.is_empty()
            && self
                .targets
                .values()
                .all(|t| kids_of(t.current.as_ref()).contains(kid))
    }

    /// The public keys found in the owned ConfigMaps.
    pub fn published(&self) -> Vec<Jwk> {
        self.targets
            .values()
            .filter_map(|t| t.current.as_ref())
            .flat_map(published_jwks)
            .collect()
    }

    /// When a write last added `kid` to a ConfigMap that lacked it, in this reconcile.
    pub fn added_at(&self, kid: &str) -> Option<Timestamp> {
        self.added.get(kid).copied()
    }

    /// Writes `jwks` (in `jwks.json` order) to every target; `keep_if_held` is kept only in the
    /// ConfigMaps that hold it already (the revoked signing key, until the Secret switches).
    /// Returns whether every write succeeded.
    pub async fn publish(&mut self, jwks: &[Jwk], keep_if_held: Option<&str>) -> bool {
        let run = self.run;
        let mut work = Vec::new();
        for (ns, target) in self.targets.iter_mut() {
            let held = kids_of(target.current.as_ref());
            let wanted: Vec<&Jwk> = jwks
                .iter()
                .filter(|jwk| Some(jwk.kid.as_str()) != keep_if_held || held.contains(&jwk.kid))
                .collect();
            let data = match resources::config_map_data_of(&wanted) {
                Ok(data) => data,
                Err(e) => {
                    self.failed
                        .insert(ns.clone(), format!("building ConfigMap: {e}"));
                    continue;
                }
            };
            let home = *ns == run.namespace;
            let desired = resources::config_map(run.jsk, &data, (!home).then_some(ns.as_str()));
            work.push((ns.clone(), target.current.take(), desired, held));
        }
        let results: Vec<_> = stream::iter(work)
            .map(|(ns, current, desired, held)| async move {
                let result = run.write_config_map(current.as_ref(), desired).await;
                (ns, current, held, result, Timestamp::now())
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        for (ns, previous, held, result, returned) in results {
            let target = self
                .targets
                .get_mut(&ns)
                .expect("a target of this publisher");
            match result {
                Ok(written) => {
                    for kid in kids_of(Some(&written)).difference(&held) {
                        let at = self.added.entry(kid.clone()).or_insert(returned);
                        *at = (*at).max(returned);
                    }
                    target.current = Some(written);
                    self.failed.remove(&ns);
                }
                Err(e) => {
                    target.current = previous;
                    self.failed.insert(ns, e.brief());
                }
            }
        }
        self.failed.is_empty()
    }

    /// Namespaces (other than the key's own) that hold a copy.
    pub fn published_namespaces(&self) -> Vec<String> {
        self.targets
            .iter()
            .filter(|(ns, t)| **ns != self.run.namespace && t.current.is_some())
            .map(|(ns, _)| ns.clone())
            .collect()
    }

    /// Copies under a name this key no longer uses, as (namespace, name).
    pub fn renamed(&self) -> &[(String, String)] {
        &self.renamed
    }

    /// Failed namespaces with their errors.
    pub fn failures(&self) -> &BTreeMap<String, String> {
        &self.failed
    }

    /// Target namespaces whose ConfigMap name is taken by an object this key does not own.
    pub fn conflicts(&self) -> &[String] {
        &self.foreign
    }
}

impl Reconciliation<'_> {
    /// Deletes a ConfigMap this key owns (a copy, or one under a former name).
    pub(super) async fn delete_config_map(&self, namespace: &str, name: &str) -> super::Result<()> {
        self.ctx.check_fence()?;
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), namespace);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                self.ctx.metrics.api_write("configmap");
                self.ctx.config_maps.deleted(namespace, name);
                info!(namespace, name, "removed ConfigMap");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                self.ctx.config_maps.deleted(namespace, name);
                Ok(())
            }
            Err(e) => Err(super::Error::DeleteConfigMap(
                format!("{namespace}/{name}"),
                e,
            )),
        }
    }

    /// Creates the ConfigMap when missing (a 409 means someone else took the name meanwhile), or
    /// patches it with a `resourceVersion` precondition, in one write that also removes data
    /// entries someone else added.
    /// Skips the write when the stored object already matches.
    async fn write_config_map(
        &self,
        current: Option<&ConfigMap>,
        desired: ConfigMap,
    ) -> super::Result<ConfigMap> {
        let namespace = desired.namespace().unwrap_or_default();
        let name = desired.name_any();
        if let Some(current) = current
            && current.data == desired.data
            && resources::is_in_sync(&current.metadata, &desired.metadata)
        {
            return Ok(current.clone());
        }
        self.ctx.check_fence()?;
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let written = super::create_or_update(&api, current, &desired)
            .await
            .map_err(|e| super::Error::ApplyConfigMap(format!("{namespace}/{name}"), e))?;
        self.ctx.metrics.api_write("configmap");
        match current {
            None => info!(namespace, name, "created ConfigMap"),
            Some(_) => info!(namespace, name, "wrote ConfigMap"),
        }
        self.ctx.config_maps.wrote(&written);
        Ok(written)
    }
}
