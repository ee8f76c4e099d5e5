//! Publish: the ConfigMap in the key's namespace and its copies in the target namespaces. Every write
//! is attempted, in parallel with a bounded concurrency; failures are collected per namespace rather
//! than ending the reconcile at the first one, and the moment each write added a key to a ConfigMap
//! that lacked it is recorded, so that a next key signs only once every target has held it for P.
//! Every version written holds the key the Secret signs with, and none is an empty key set; a
//! ConfigMap that refused its last write retries on its own backoff, never slowing the others.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use super::Found;
use crate::{crd::JwtSigningKey, keys::Jwk, resources};

/// The published ConfigMaps of one JwtSigningKey, as last read or written, and what this reconcile
/// learnt writing them. Pure: [`Publication::writes`] says what to write, the executor writes it,
/// and [`Publication::record`] takes the results back.
pub struct Publication {
    /// The key's own namespace.
    home: String,
    /// Target namespace -> its ConfigMap as last read or written (`None`: it does not exist).
    targets: BTreeMap<String, Option<ConfigMap>>,
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
    /// Copies in namespaces that are no longer targeted (or no longer accept them).
    untargeted: Vec<ConfigMap>,
}

/// One ConfigMap write: `desired` over `current` (created when `None`).
#[derive(Clone, Debug)]
pub struct Write {
    /// Its namespace.
    pub namespace: String,
    /// The object as last read or written.
    pub current: Option<ConfigMap>,
    /// What it becomes.
    pub desired: ConfigMap,
}

/// What one [`Write`] returned: the object written, or the error; and when the call returned.
pub type Written = (String, Result<ConfigMap, String>, Timestamp);

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

impl Publication {
    /// `home` is the owned ConfigMap in the key's namespace (if any), `copies` the owned copies found
    /// anywhere in scope, `targets` the other namespaces that should hold a copy, and `looked_up`
    /// what a look at the ConfigMap name found in each target without an owned copy.
    pub fn new(
        jsk: &JwtSigningKey,
        home: Option<ConfigMap>,
        copies: Vec<ConfigMap>,
        targets: &[String],
        looked_up: BTreeMap<String, Result<Found<ConfigMap>, String>>,
    ) -> Publication {
        let namespace = jsk.namespace().unwrap_or_default();
        let name = jsk.config_map_name();
        let mut publication = Publication {
            home: namespace.clone(),
            targets: BTreeMap::from([(namespace, home)]),
            signing: None,
            foreign: Vec::new(),
            failed: BTreeMap::new(),
            removals_failed: BTreeMap::new(),
            added: BTreeMap::new(),
            renamed: Vec::new(),
            untargeted: Vec::new(),
        };
        let (current, renamed): (Vec<ConfigMap>, Vec<ConfigMap>) =
            copies.into_iter().partition(|cm| cm.name_any() == name);
        publication.renamed = renamed;
        let mut existing: BTreeMap<String, ConfigMap> = current
            .into_iter()
            .map(|cm| (cm.namespace().unwrap_or_default(), cm))
            .collect();
        for (ns, found) in looked_up {
            if existing.contains_key(&ns) || !targets.contains(&ns) {
                continue;
            }
            match found {
                Ok(Found::Foreign) => publication.foreign.push(ns),
                Ok(Found::Owned(cm)) => {
                    existing.insert(ns, cm);
                }
                Ok(Found::Missing) => {
                    publication.targets.insert(ns, None);
                }
                Err(e) => {
                    publication
                        .failed
                        .insert(ns, format!("reading ConfigMap {name}: {e}"));
                }
            }
        }
        publication.foreign.sort();
        for (ns, cm) in existing {
            if targets.contains(&ns) {
                publication.targets.insert(ns, Some(cm));
            } else {
                publication.untargeted.push(cm);
            }
        }
        publication
    }

    /// The copies in namespaces no longer targeted: they are removed first.
    pub fn take_untargeted(&mut self) -> Vec<ConfigMap> {
        std::mem::take(&mut self.untargeted)
    }

    /// A copy no longer targeted could not be removed.
    pub fn removal_failed(&mut self, namespace: String, error: String) {
        self.removals_failed.insert(namespace, error);
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
                .all(|current| kids_of(current.as_ref()).contains(kid))
    }

    /// Whether the last writes of every target went through.
    pub fn all_written(&self) -> bool {
        self.failed.is_empty()
    }

    /// Whether the ConfigMap in the key's own namespace holds `kid`.
    pub fn home_holds(&self, kid: &str) -> bool {
        self.targets
            .get(&self.home)
            .is_some_and(|current| kids_of(current.as_ref()).contains(kid))
    }

    /// The public keys found in the owned copies and target ConfigMaps, under former names too.
    pub fn published(&self) -> Vec<Jwk> {
        self.targets
            .values()
            .flatten()
            .chain(&self.renamed)
            .flat_map(published_jwks)
            .collect()
    }

    /// Kids that target ConfigMaps name and `recorded` does not know, by namespace: whoever may
    /// edit that ConfigMap put them there. The next write removes them.
    pub fn foreign_kids(&self, recorded: impl Fn(&str) -> bool) -> Vec<(String, Vec<String>)> {
        self.targets
            .iter()
            .filter_map(|(ns, current)| {
                let kids: Vec<String> = named_kids(current.as_ref()?)
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
            .flatten()
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

    /// The writes that bring every target to `jwks` (in `jwks.json` order), with the Secret's
    /// signing key in every version ([`Self::set_signing`]) and never an empty key set; the home
    /// ConfigMap first, so that with many copies its repair never waits behind theirs. A target
    /// whose data cannot be built fails here.
    pub fn writes(&mut self, jsk: &JwtSigningKey, jwks: &[Jwk]) -> Vec<Write> {
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
        let mut writes = Vec::new();
        for (ns, current) in &self.targets {
            let held = kids_of(current.as_ref());
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
            match data {
                Ok(data) => {
                    let home = *ns == self.home;
                    writes.push(Write {
                        namespace: ns.clone(),
                        current: current.clone(),
                        desired: resources::config_map(jsk, data, (!home).then_some(ns.as_str())),
                    });
                }
                Err(e) => {
                    self.failed
                        .insert(ns.clone(), format!("building ConfigMap: {e}"));
                }
            }
        }
        writes.sort_by_key(|w| w.namespace != self.home);
        writes
    }

    /// Takes back what the writes of [`Self::writes`] returned.
    pub fn record(&mut self, results: Vec<Written>) {
        for (ns, result, returned) in results {
            let Some(current) = self.targets.get_mut(&ns) else {
                continue;
            };
            match result {
                Ok(written) => {
                    let held = kids_of(current.as_ref());
                    for kid in kids_of(Some(&written)).difference(&held) {
                        let at = self.added.entry(kid.clone()).or_insert(returned);
                        *at = (*at).max(returned);
                    }
                    *current = Some(written);
                    self.failed.remove(&ns);
                }
                Err(e) => {
                    self.failed.insert(ns, e);
                }
            }
        }
    }

    /// Namespaces (other than the key's own) that hold a copy.
    pub fn published_namespaces(&self) -> Vec<String> {
        self.targets
            .iter()
            .filter(|(ns, current)| **ns != self.home && current.is_some())
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
