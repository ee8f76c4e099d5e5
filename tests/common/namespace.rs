//! A fresh namespace per test: created before the body runs, dumped if it fails, deleted afterwards.

use std::{
    collections::BTreeMap,
    future::Future,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
};

use futures::FutureExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta,
        PostParams,
    },
};

/// Label on every namespace the tests create, so leftovers are easy to find:
/// `kubectl delete ns -l jwtkeys.dev/test=true`.
pub const TEST_LABEL: &str = "jwtkeys.dev/test";

/// The namespace a test runs in, and an admin client.
#[derive(Clone)]
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
    /// Further namespaces made with [`TestNamespace::extra`]; dumped and deleted with this one.
    extras: Arc<Mutex<Vec<String>>>,
}

impl TestNamespace {
    /// Creates another namespace, `<name>-<suffix>`, with `labels` (and the test label); it is dumped and
    /// deleted together with this one. Returns its name.
    pub async fn extra(&self, suffix: &str, labels: &[(&str, &str)]) -> String {
        let name = format!("{}-{suffix}", self.name);
        create_namespace(&self.client, &name, labels).await;
        self.extras.lock().unwrap().push(name.clone());
        name
    }

    /// This namespace and its extras.
    pub fn all_names(&self) -> Vec<String> {
        let mut names = vec![self.name.clone()];
        names.extend(self.extras.lock().unwrap().iter().cloned());
        names
    }
}

/// Runs `body` in a new namespace named `<prefix>-<random>` (labelled `jwtkeys.dev/test=true`). When the
/// body panics, the namespace's ConfigMaps, Secrets (keys only, never values), Events and JwtSigningKeys
/// are printed; either way the namespace and its extras are deleted; then the panic is re-raised.
pub async fn with_temp_ns<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(TestNamespace) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = super::client().await;
    let name = format!("{}-{}", dns_label_prefix(prefix), super::random_suffix(6));
    create_namespace(&client, &name, &[]).await;
    let ns = TestNamespace {
        client: client.clone(),
        name,
        extras: Arc::default(),
    };

    let outcome = AssertUnwindSafe(body(ns.clone())).catch_unwind().await;

    if outcome.is_err() {
        for name in ns.all_names() {
            eprintln!("{}", dump_namespace(&client, &name).await);
        }
    }
    let namespaces: Api<Namespace> = Api::all(client);
    for name in ns.all_names() {
        match namespaces.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => eprintln!("deleting test namespace {name}: {err}"),
        }
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// `prefix` made fit for the start of a namespace name: lowercase alphanumerics and dashes, at most 50.
fn dns_label_prefix(prefix: &str) -> String {
    let label: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "test".into()
    } else {
        label.into()
    }
}

async fn create_namespace(client: &Client, name: &str, labels: &[(&str, &str)]) {
    let mut all_labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all_labels.insert(TEST_LABEL.into(), "true".into());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(all_labels),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|err| panic!("creating test namespace {name}: {err}"));
}

/// A readable account of what is in namespace `ns`, for the output of a failed test. Secret values are
/// never printed, only their keys.
pub async fn dump_namespace(client: &Client, ns: &str) -> String {
    use std::fmt::Write;
    let mut out = format!("===== namespace {ns} =====\n");
    let lp = ListParams::default();

    match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
    {
        Ok(list) => {
            for cm in list {
                let mut keys: Vec<&String> = cm.data.iter().flat_map(|d| d.keys()).collect();
                keys.extend(cm.binary_data.iter().flat_map(|d| d.keys()));
                let _ = writeln!(
                    out,
                    "ConfigMap {} keys={keys:?} labels={:?}",
                    cm.name_any(),
                    cm.labels()
                );
            }
        }
        Err(err) => out.push_str(&format!("listing ConfigMaps: {err}\n")),
    }

    match Api::<Secret>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
    {
        Ok(list) => {
            for secret in list {
                let keys: Vec<&String> = secret.data.iter().flat_map(|d| d.keys()).collect();
                let _ = writeln!(
                    out,
                    "Secret {} type={} keys={keys:?} labels={:?}",
                    secret.name_any(),
                    secret.type_.as_deref().unwrap_or("?"),
                    secret.labels()
                );
            }
        }
        Err(err) => out.push_str(&format!("listing Secrets: {err}\n")),
    }

    match Api::<Event>::namespaced(client.clone(), ns).list(&lp).await {
        Ok(list) => {
            let mut events = list.items;
            events.sort_by_key(|e| e.last_timestamp.clone().or(e.first_timestamp.clone()));
            for e in events {
                let _ = writeln!(
                    out,
                    "Event {} {} {}/{}: {}",
                    e.type_.as_deref().unwrap_or("?"),
                    e.reason.as_deref().unwrap_or("?"),
                    e.involved_object.kind.as_deref().unwrap_or("?"),
                    e.involved_object.name.as_deref().unwrap_or("?"),
                    e.message.as_deref().unwrap_or("")
                );
            }
        }
        Err(err) => out.push_str(&format!("listing Events: {err}\n")),
    }

    let gvk = GroupVersionKind::gvk("jwtkeys.dev", "v1alpha1", "JwtSigningKey");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "jwtsigningkeys");
    match Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource)
        .list(&lp)
        .await
    {
        Ok(list) => {
            for mut key in list {
                key.metadata.managed_fields = None;
                let yaml = serde_saphyr::to_string(&key).unwrap_or_else(|err| err.to_string());
                let _ = writeln!(out, "JwtSigningKey {}:\n{yaml}", key.name_any());
            }
        }
        // No CRD installed: nothing to show.
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => out.push_str(&format!("listing JwtSigningKeys: {err}\n")),
    }
    out
}
