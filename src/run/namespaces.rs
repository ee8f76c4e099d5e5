//! The namespaces that publication may target: one watch of them (by name for a short scope), a
//! store for label selection, and a broadcast whenever what publication sees of them changes.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use tokio::sync::broadcast;

use crate::{
    crd::ACCEPT_FROM_ANNOTATION,
    metrics::Metrics,
    watch::{Watch, retried, strip_namespace, watch_config},
};

/// Up to this many watched namespaces are selected by name in the namespace watch's label
/// selector; a longer scope filters a watch of every namespace.
const NAMESPACE_SELECTOR_MAX: usize = 100;

/// A store of Namespaces for label selection, and a broadcast of "namespace labels changed".
pub(super) fn watch_namespaces(
    client: Client,
    scope: Option<Vec<String>>,
    metrics: Arc<Metrics>,
) -> (Store<PartialObjectMeta<Namespace>>, broadcast::Sender<()>) {
    // Namespaces outside the scope are never targets: neither the store nor the task below keeps
    // them (1000 of them cost 3-4 MiB), and a short scope is selected by the API server itself
    // through the name label that every namespace carries.
    let config = match &scope {
        Some(names) if !names.is_empty() && names.len() <= NAMESPACE_SELECTOR_MAX => watch_config()
            .labels(&format!(
                "kubernetes.io/metadata.name in ({})",
                names.join(",")
            )),
        _ => watch_config(),
    };
    let in_scope = move |ns: &PartialObjectMeta<Namespace>| {
        scope
            .as_ref()
            .is_none_or(|s| s.iter().any(|n| *n == ns.name_any()))
    };
    let (reader, writer) = reflector::store();
    let (changes, _) = broadcast::channel(64);
    let sender = changes.clone();
    // Publication to other namespaces lags while this watch fails.
    let events = retried(
        Watch {
            description: "namespaces".into(),
            resource: "namespaces".into(),
            metrics,
        },
        reflector::reflector(
            writer,
            watcher::watcher(Api::<PartialObjectMeta<Namespace>>::all(client), config)
                .modify(strip_namespace)
                .try_filter(move |event| {
                    std::future::ready(match event {
                        watcher::Event::Apply(ns)
                        | watcher::Event::InitApply(ns)
                        | watcher::Event::Delete(ns) => in_scope(ns),
                        watcher::Event::Init | watcher::Event::InitDone => true,
                    })
                }),
        ),
    )
    .filter_map(|event| std::future::ready(event.ok()));
    tokio::spawn(async move {
        let mut looks = NamespaceLooks::default();
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            if looks.changed(&event) {
                let _ = sender.send(());
            }
        }
    });
    (reader, changes)
}

/// What publication depends on in a namespace: labels (selectors), consent, and whether it is
/// terminating.
type Looks = (Option<BTreeMap<String, String>>, Option<String>, bool);

/// The namespaces as publication last saw them, to tell which watch events change a target.
#[derive(Default)]
struct NamespaceLooks {
    seen: BTreeMap<String, Looks>,
    /// A listing after the first one (a watch back after a 410 or an outage) may show changes no
    /// event announced: consent given or withdrawn, labels changed, namespaces gone.
    listed_once: bool,
    relisted: BTreeSet<String>,
    relist_changed: bool,
}

impl NamespaceLooks {
    /// Whether `event` changes what publication sees (a listing counts once it is done).
    fn changed(&mut self, event: &watcher::Event<PartialObjectMeta<Namespace>>) -> bool {
        let looks = |ns: &PartialObjectMeta<Namespace>| -> Looks {
            (
                ns.metadata.labels.clone(),
                ns.annotations().get(ACCEPT_FROM_ANNOTATION).cloned(),
                ns.metadata.deletion_timestamp.is_some(),
            )
        };
        match event {
            watcher::Event::Apply(ns) => {
                let now = looks(ns);
                self.seen.insert(ns.name_any(), now.clone()).as_ref() != Some(&now)
            }
            watcher::Event::Delete(ns) => {
                self.seen.remove(&ns.name_any());
                true
            }
            watcher::Event::Init => {
                self.relisted.clear();
                self.relist_changed = false;
                false
            }
            watcher::Event::InitApply(ns) => {
                let now = looks(ns);
                self.relisted.insert(ns.name_any());
                self.relist_changed |=
                    self.seen.insert(ns.name_any(), now.clone()).as_ref() != Some(&now);
                false
            }
            watcher::Event::InitDone => {
                let before = self.seen.len();
                let relisted = &self.relisted;
                self.seen.retain(|name, _| relisted.contains(name));
                self.relist_changed |= self.seen.len() != before;
                let changed = self.listed_once && self.relist_changed;
                self.listed_once = true;
                changed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(name: &str, accept_from: Option<&str>) -> PartialObjectMeta<Namespace> {
        let mut ns = PartialObjectMeta::<Namespace>::default();
        ns.metadata.name = Some(name.into());
        ns.metadata.annotations =
            accept_from.map(|a| [(ACCEPT_FROM_ANNOTATION.to_string(), a.to_string())].into());
        ns
    }

    #[test]
    fn consent_changed_while_the_watch_was_away_counts_once_the_listing_is_done() {
        use watcher::Event::*;
        let mut looks = NamespaceLooks::default();
        let first = [
            Init,
            InitApply(namespace("a", None)),
            InitApply(namespace("b", Some("auth/*"))),
            InitDone,
        ];
        assert!(
            first.iter().all(|e| !looks.changed(e)),
            "the first listing is what the reconciles start from"
        );
        let same = [
            Init,
            InitApply(namespace("a", None)),
            InitApply(namespace("b", Some("auth/*"))),
            InitDone,
        ];
        assert!(same.iter().all(|e| !looks.changed(e)), "nothing changed");
        let consent = [
            Init,
            InitApply(namespace("a", Some("auth/*"))),
            InitApply(namespace("b", Some("auth/*"))),
        ];
        assert!(consent.iter().all(|e| !looks.changed(e)));
        assert!(looks.changed(&InitDone), "consent given while away");
        let gone = [Init, InitApply(namespace("a", Some("auth/*")))];
        assert!(gone.iter().all(|e| !looks.changed(e)));
        assert!(looks.changed(&InitDone), "a namespace gone while away");
        assert!(
            looks.changed(&Apply(namespace("a", None))),
            "consent withdrawn"
        );
        assert!(!looks.changed(&Apply(namespace("a", None))));
    }
}
