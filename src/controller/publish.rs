//! Publish: the ConfigMap in the key's namespace and its copies in the target namespaces. Every write
//! is attempted, in parallel with a bounded concurrency; failures are collected per namespace rather
//! than ending the reconcile at the first one, and the moment each write added a key to a ConfigMap
//! that lacked it is recorded, so that a next key signs only once every target has held it for P.
//! Every version written holds the key the Secret signs with, and none is an empty key set; a
//! ConfigMap that refused its last write retries on its own backoff, never slowing the others.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Preconditions},
};
use tracing::info;

use super::{Found, Reconciliation, backoff::Target as Written};
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
    /// The key the Secret signs with now: every version of every ConfigMap holds it; a revoked one
    /// (`true`) only where it is held already, until the Secret switches, and is never published
    /// again anywhere.
    signing: Option<(Jwk, bool)>,
    /// Target namespaces where a ConfigMap of that name exists and is not ours.
    foreign: Vec<String>,
    /// Target namespaces whose last write (or read) failed, with the error.
    failed: BTreeMap<String, String>,
    /// Namespaces no longer targeted whose copy could not be removed: reported, and retried, but
    /// no reason to hold a next key back in the namespaces that are targeted.
    removals_failed: BTreeMap<String, String>,
    /// Kid -> latest instant a write returned that added it to a ConfigMap that lacked it.
    added: BTreeMap<String, Timestamp>,
    /// Copies under a name this key no longer uses.
    renamed: Vec<ConfigMap>,
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

/// Every kid a ConfigMap names, valid or not: in `jwks.json` and as `<kid>.pem` entries.
fn named_kids(config_map: &ConfigMap) -> BTreeSet<String> {
    let mut kids = kids_of(Some(config_map));
    let listed = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(resources::JWKS_JSON))
        .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok());
    if let Some(keys) = listed.as_ref().and_then(|set| set["keys"].as_array()) {
        kids.extend(
            keys.iter()
                .filter_map(|k| k["kid"].as_str())
                .map(str::to_string),
        );
    }
    kids
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
            signing: None,
            foreign: Vec::new(),
            failed: BTreeMap::new(),
            removals_failed: BTreeMap::new(),
            added: BTreeMap::new(),
            renamed: Vec::new(),
        };
        publisher
            .targets
            .insert(run.namespace.clone(), Target { current: home });
        let name = run.jsk.config_map_name();
        let (current, renamed): (Vec<ConfigMap>, Vec<ConfigMap>) =
            copies.into_iter().partition(|cm| cm.name_any() == name);
        publisher.renamed = renamed;
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
                if let Err(e) = run.delete_config_map(&cm).await {
                    publisher.removals_failed.insert(ns, e.brief());
                }
            }
        }
        publisher
    }

    /// The key the Secret signs with now (after a Secret write, the one it switched to): every
    /// ConfigMap written from here on holds it, except that a `revoked` one stays only where it is
    /// held (it is never published again).
    pub fn set_signing(&mut self, signing: Option<Jwk>, revoked: bool) {
        self.signing = signing.map(|jwk| (jwk, revoked));
    }

    /// Whether every target namespace holds `kid`, counting failed and unreadable ones as not.
    pub fn everywhere(&self, kid: &str) -> bool {
        self.failed.is_empty()
            && self
                .targets
                .values()
                .all(|t| kids_of(t.current.as_ref()).contains(kid))
    }

    /// Whether the ConfigMap in the key's own namespace holds `kid`.
    pub fn home_holds(&self, kid: &str) -> bool {
        self.targets
            .get(&self.run.namespace)
            .is_some_and(|t| kids_of(t.current.as_ref()).contains(kid))
    }

    /// The public keys found in the owned ConfigMaps.
    pub fn published(&self) -> Vec<Jwk> {
        self.targets
            .values()
            .filter_map(|t| t.current.as_ref())
            .flat_map(published_jwks)
            .collect()
    }

    /// Kids that target ConfigMaps name and `recorded` does not know, by namespace: whoever may
    /// edit that ConfigMap put them there. The next write removes them.
    pub fn foreign_kids(&self, recorded: impl Fn(&str) -> bool) -> Vec<(String, Vec<String>)> {
        self.targets
            .iter()
            .filter_map(|(ns, t)| {
                let kids: Vec<String> = named_kids(t.current.as_ref()?)
                    .into_iter()
                    .filter(|kid| !recorded(kid))
                    .collect();
                (!kids.is_empty()).then(|| (ns.clone(), kids))
            })
            .collect()
    }

    /// When a write last added `kid` to a ConfigMap that lacked it, in this reconcile.
    pub fn added_at(&self, kid: &str) -> Option<Timestamp> {
        self.added.get(kid).copied()
    }

    /// The last instant of the creation second of the newest target ConfigMap that holds `kid`: a
    /// ConfigMap created (a namespace that started accepting, a deleted one recreated) holds its
    /// keys since no earlier than that, whatever an older record says.
    pub fn created_holding(&self, kid: &str) -> Option<Timestamp> {
        self.targets
            .values()
            .filter_map(|t| t.current.as_ref())
            .filter(|cm| kids_of(Some(cm)).contains(kid))
            .filter_map(|cm| cm.metadata.creation_timestamp.as_ref())
            .map(|created| {
                crate::time::plus(
                    created.0,
                    jiff::SignedDuration::from_secs(1) - jiff::SignedDuration::from_nanos(1),
                )
            })
            .max()
    }

    /// Writes `jwks` (in `jwks.json` order) to every target, with the Secret's signing key in every
    /// version ([`Self::set_signing`]) and never an empty key set. A target that failed its last
    /// write waits for its own backoff; the others are written at once. Returns whether every
    /// target holds what was asked.
    pub async fn publish(&mut self, jwks: &[Jwk]) -> bool {
        let run = self.run;
        let wanted: Vec<&Jwk> = jwks.iter().collect();
        let with_signing: Option<Vec<&Jwk>> = match &self.signing {
            Some((signing, _)) if !wanted.iter().any(|jwk| jwk.kid == signing.kid) => Some(
                std::iter::once(signing)
                    .chain(wanted.iter().copied())
                    .collect(),
            ),
            _ => None,
        };
        let revoked_signing = self
            .signing
            .as_ref()
            .filter(|(_, revoked)| *revoked)
            .map(|(jwk, _)| jwk.kid.clone());
        let build = |jwks: &[&Jwk]| -> Option<Result<BTreeMap<String, String>, String>> {
            (!jwks.is_empty())
                .then(|| resources::config_map_data_of(jwks).map_err(|e| e.to_string()))
        };
        let (plain, signed) = (build(&wanted), with_signing.as_deref().and_then(build));
        let mut work = Vec::new();
        for (ns, target) in self.targets.iter_mut() {
            let held = kids_of(target.current.as_ref());
            // The signing key goes everywhere; a revoked one only stays where it is.
            let keeps_signing = signed.is_some()
                && revoked_signing
                    .as_ref()
                    .is_none_or(|kid| held.contains(kid));
            let data = match (keeps_signing, &signed, &plain) {
                (true, Some(data), _) | (false, _, Some(data)) => data,
                // Never an empty key set: nothing to write.
                (_, _, None) | (true, None, _) => continue,
            };
            let data = match data {
                Ok(data) => data.clone(),
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
        // The home ConfigMap first: with many copies, its repair never waits behind theirs.
        work.sort_by_key(|(ns, ..)| *ns != run.namespace);
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
                    self.failed.insert(ns, e);
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

    /// Copies under a name this key no longer uses.
    pub fn renamed(&self) -> &[ConfigMap] {
        &self.renamed
    }

    /// Namespaces whose write, read or removal failed, with the error.
    pub fn failures(&self) -> BTreeMap<String, String> {
        let mut all = self.removals_failed.clone();
        all.extend(self.failed.clone());
        all
    }

    /// Target namespaces whose ConfigMap name is taken by an object this key does not own.
    pub fn conflicts(&self) -> &[String] {
        &self.foreign
    }
}

impl Reconciliation<'_> {
    /// Deletes a ConfigMap this key owns (a copy, or one under a former name), with its uid as
    /// precondition: an object someone created under that name since it was read is not touched.
    /// A ConfigMap whose last removal failed waits for its own backoff.
    pub(super) async fn delete_config_map(&self, config_map: &ConfigMap) -> super::Result<()> {
        let namespace = config_map.namespace().unwrap_or_default();
        let name = config_map.name_any();
        let target = Written::config_map(&namespace, &name);
        if let Some(error) = self.ctx.waiting(self.jsk, &target) {
            return Err(super::Error::Waiting(error));
        }
        self.ctx.check_fence()?;
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let params = DeleteParams {
            preconditions: config_map.uid().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                self.ctx.metrics.api_write("configmap");
                self.ctx.config_maps.deleted(&namespace, &name);
                self.ctx.write_succeeded(self.jsk, &target);
                info!(namespace, name, "removed ConfigMap");
                Ok(())
            }
            // Gone, or replaced by another object of that name (a 409 on the uid): not ours to delete.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                self.ctx.config_maps.deleted(&namespace, &name);
                self.ctx.write_succeeded(self.jsk, &target);
                Ok(())
            }
            Err(e) => {
                let error = super::Error::DeleteConfigMap(format!("{namespace}/{name}"), e);
                self.ctx.write_failed(self.jsk, &target, &error);
                Err(error)
            }
        }
    }

    /// Creates the ConfigMap when missing (a 409 means someone else took the name meanwhile), or
    /// patches it with a `resourceVersion` precondition, in one write that also removes data
    /// entries someone else added. Skips the write when the stored object already matches, and
    /// while this ConfigMap waits after a failed write (the error is that write's).
    async fn write_config_map(
        &self,
        current: Option<&ConfigMap>,
        desired: ConfigMap,
    ) -> Result<ConfigMap, String> {
        let namespace = desired.namespace().unwrap_or_default();
        let name = desired.name_any();
        let target = Written::config_map(&namespace, &name);
        if let Some(current) = current
            && current.data == desired.data
            && resources::is_in_sync(&current.metadata, &desired.metadata)
        {
            self.ctx.write_succeeded(self.jsk, &target);
            return Ok(current.clone());
        }
        if let Some(error) = self.ctx.waiting(self.jsk, &target) {
            return Err(error);
        }
        self.ctx.check_fence().map_err(|e| e.brief())?;
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let written = match super::create_or_update(&api, current, &desired).await {
            Ok(written) => written,
            Err(e) => {
                let error = super::Error::ApplyConfigMap(format!("{namespace}/{name}"), e);
                self.ctx.write_failed(self.jsk, &target, &error);
                return Err(error.brief());
            }
        };
        self.ctx.write_succeeded(self.jsk, &target);
        self.ctx.metrics.api_write("configmap");
        match current {
            None => info!(namespace, name, "created ConfigMap"),
            Some(_) => info!(namespace, name, "wrote ConfigMap"),
        }
        self.ctx.config_maps.wrote(&written);
        Ok(written)
    }
}
