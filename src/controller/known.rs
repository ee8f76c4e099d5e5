//! Which JwtSigningKeys the watch has shown, so that what the process keeps about a key (its
//! gauges, its backoff, its records of writes) goes when the key goes, also when the deletion falls
//! in a gap of the watch: a watch that restarts with a fresh listing (its resourceVersion expired)
//! delivers no delete for a key deleted in between, only a listing without it.

use std::collections::{HashMap, HashSet};

use kube::{ResourceExt, runtime::watcher};

use crate::crd::JwtSigningKey;

/// A key that went away: its uid, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gone {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

impl Gone {
    pub fn of(jsk: &JwtSigningKey) -> Gone {
        Gone {
            uid: jsk.uid().unwrap_or_default(),
            namespace: jsk.namespace().unwrap_or_default(),
            name: jsk.name_any(),
        }
    }
}

/// The keys each watch has shown. The operator runs one JwtSigningKey watch per watched namespace
/// (or one for the cluster), each listing only its own scope.
#[derive(Debug, Default)]
pub(crate) struct KnownKeys {
    scopes: HashMap<Option<String>, ScopeKeys>,
}

impl KnownKeys {
    /// Takes one event of the watch of `scope` (a namespace, or `None` for the cluster) and
    /// returns the keys it shows gone.
    pub fn observe(
        &mut self,
        scope: Option<&str>,
        event: &watcher::Event<JwtSigningKey>,
    ) -> Vec<Gone> {
        self.scopes
            .entry(scope.map(str::to_string))
            .or_default()
            .observe(event)
    }

    /// Whether a watch shows the key with this uid now.
    pub fn knows(&self, uid: &str) -> bool {
        self.scopes
            .values()
            .any(|scope| scope.known.contains_key(uid))
    }
}

/// The keys one watch has shown, by uid, and the uids of a listing in progress.
#[derive(Debug, Default)]
struct ScopeKeys {
    known: HashMap<String, (String, String)>,
    listing: Option<HashSet<String>>,
}

impl ScopeKeys {
    fn observe(&mut self, event: &watcher::Event<JwtSigningKey>) -> Vec<Gone> {
        match event {
            watcher::Event::Init => {
                self.listing = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(jsk) => {
                if let (Some(listing), Some(uid)) = (self.listing.as_mut(), jsk.uid()) {
                    listing.insert(uid);
                }
                self.add(jsk);
                Vec::new()
            }
            watcher::Event::Apply(jsk) => {
                self.add(jsk);
                Vec::new()
            }
            watcher::Event::Delete(jsk) => {
                let gone = Gone::of(jsk);
                self.known.remove(&gone.uid);
                vec![gone]
            }
            watcher::Event::InitDone => {
                let Some(listed) = self.listing.take() else {
                    return Vec::new();
                };
                self.known
                    .extract_if(|uid, _| !listed.contains(uid))
                    .map(|(uid, (namespace, name))| Gone {
                        uid,
                        namespace,
                        name,
                    })
                    .collect()
            }
        }
    }

    fn add(&mut self, jsk: &JwtSigningKey) {
        if let Some(uid) = jsk.uid() {
            self.known
                .entry(uid)
                .or_insert_with(|| (jsk.namespace().unwrap_or_default(), jsk.name_any()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, uid: &str) -> JwtSigningKey {
        let mut jsk =
            JwtSigningKey::new(name, serde_json::from_value(serde_json::json!({})).unwrap());
        jsk.metadata.namespace = Some("team".into());
        jsk.metadata.uid = Some(uid.into());
        jsk
    }

    fn gone(name: &str, uid: &str) -> Gone {
        Gone {
            uid: uid.into(),
            namespace: "team".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_delete_event_reports_the_key() {
        let mut known = KnownKeys::default();
        assert!(
            known
                .observe(None, &watcher::Event::Apply(key("a", "1")))
                .is_empty()
        );
        assert_eq!(
            known.observe(None, &watcher::Event::Delete(key("a", "1"))),
            vec![gone("a", "1")]
        );
    }

    #[test]
    fn a_relisting_reports_the_keys_it_no_longer_holds() {
        let mut known = KnownKeys::default();
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(key("a", "1")),
            watcher::Event::InitApply(key("b", "2")),
            watcher::Event::InitDone,
            watcher::Event::Apply(key("c", "3")),
        ] {
            assert!(known.observe(None, &event).is_empty());
        }
        // The watch restarts with a fresh listing: b was deleted in the gap, and a was deleted and
        // created again under the same name (a new uid).
        assert!(known.observe(None, &watcher::Event::Init).is_empty());
        assert!(
            known
                .observe(None, &watcher::Event::InitApply(key("c", "3")))
                .is_empty()
        );
        assert!(
            known
                .observe(None, &watcher::Event::InitApply(key("a", "4")))
                .is_empty()
        );
        let mut gone_keys = known.observe(None, &watcher::Event::InitDone);
        gone_keys.sort_by(|x, y| x.uid.cmp(&y.uid));
        assert_eq!(gone_keys, vec![gone("a", "1"), gone("b", "2")]);
        // What stays known is what the listing held.
        assert!(known.observe(None, &watcher::Event::Init).is_empty());
        let mut gone_keys = known.observe(None, &watcher::Event::InitDone);
        gone_keys.sort_by(|x, y| x.uid.cmp(&y.uid));
        assert_eq!(gone_keys, vec![gone("c", "3"), gone("a", "4")]);
    }

    #[test]
    fn the_watch_of_one_namespace_lists_only_its_own_keys() {
        let mut known = KnownKeys::default();
        let mut other = key("b", "2");
        other.metadata.namespace = Some("other".into());
        for (scope, event) in [
            (Some("team"), watcher::Event::Init),
            (Some("other"), watcher::Event::Init),
            (Some("team"), watcher::Event::InitApply(key("a", "1"))),
            (Some("other"), watcher::Event::InitApply(other.clone())),
            (Some("team"), watcher::Event::InitDone),
            (Some("other"), watcher::Event::InitDone),
            // The first watch lists again: the other namespace's key is not in its listing, and
            // is not gone.
            (Some("team"), watcher::Event::Init),
            (Some("team"), watcher::Event::InitApply(key("a", "1"))),
            (Some("team"), watcher::Event::InitDone),
        ] {
            assert!(
                known.observe(scope, &event).is_empty(),
                "{scope:?} {event:?}"
            );
        }
        assert!(
            known
                .observe(Some("other"), &watcher::Event::Init)
                .is_empty()
        );
        assert_eq!(
            known.observe(Some("other"), &watcher::Event::InitDone),
            vec![Gone {
                uid: "2".into(),
                namespace: "other".into(),
                name: "b".into(),
            }]
        );
    }

    #[test]
    fn the_first_listing_reports_nothing() {
        let mut known = KnownKeys::default();
        assert!(known.observe(None, &watcher::Event::Init).is_empty());
        assert!(
            known
                .observe(None, &watcher::Event::InitApply(key("a", "1")))
                .is_empty()
        );
        assert!(known.observe(None, &watcher::Event::InitDone).is_empty());
    }
}
