//! Operator-specific helpers for the end-to-end tests: JwtSigningKey fixtures, waits on its status,
//! reading the Secret and ConfigMap it writes, and a recorder of every version of them.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use jwt_key_operator::{
    crd::{JwtSigningKey, JwtSigningKeySpec},
    invariants::{self, Kind, Rules, Writer},
    resources,
};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};

use crate::common::{self, TestNamespace, wait_for};

/// Time allowed for the operator to react to a change.
pub const REACT: Duration = Duration::from_secs(30);

/// A JwtSigningKey named `name` with `spec` (JSON; missing fields take the CRD defaults).
pub fn jsk(name: &str, spec: serde_json::Value) -> JwtSigningKey {
    let spec: JwtSigningKeySpec = serde_json::from_value(spec).expect("a valid spec");
    JwtSigningKey::new(name, spec)
}

/// `spec` with `publish.namespaceSelector` matching the namespace of [`History::with_copy`].
pub fn publish_to_copies(mut spec: serde_json::Value) -> serde_json::Value {
    spec["publish"] = serde_json::json!({"namespaceSelector": {"matchLabels": {"jwks": "auth"}}});
    spec
}

/// Creates a JwtSigningKey in the test namespace.
pub async fn create(ns: &TestNamespace, key: &JwtSigningKey) -> JwtSigningKey {
    api(ns)
        .create(&PostParams::default(), key)
        .await
        .expect("creating the JwtSigningKey")
}

/// The JwtSigningKey API of the test namespace.
pub fn api(ns: &TestNamespace) -> Api<JwtSigningKey> {
    Api::namespaced(ns.client.clone(), &ns.name)
}

/// Creates a JwtSigningKey, waits until it is Ready and returns its signing kid.
pub async fn create_ready(ns: &TestNamespace, key: &JwtSigningKey) -> String {
    create(ns, key).await;
    let name = key.metadata.name.as_deref().expect("a named key");
    let ready = wait_ready(ns, name, "True", "KeysReady").await;
    ready
        .status
        .and_then(|s| s.active_key_id)
        .expect("activeKeyId")
}

/// Waits until the status names a signing key other than `previous`, and returns it.
pub async fn wait_new_signing_key(ns: &TestNamespace, name: &str, previous: &str) -> String {
    let key = wait_status(ns, name, "a new signing key", REACT, |k| {
        k.status
            .as_ref()
            .and_then(|s| s.active_key_id.as_deref())
            .is_some_and(|kid| kid != previous)
    })
    .await;
    key.status
        .and_then(|s| s.active_key_id)
        .expect("activeKeyId")
}

/// Merges `spec` into the JwtSigningKey's spec.
pub async fn patch_spec(ns: &TestNamespace, name: &str, spec: serde_json::Value) {
    api(ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await
        .expect("editing the JwtSigningKey's spec");
}

/// Merges `annotations` into the JwtSigningKey's metadata.
pub async fn annotate(ns: &TestNamespace, name: &str, annotations: serde_json::Value) {
    api(ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": annotations}})),
        )
        .await
        .expect("annotating the JwtSigningKey");
}

/// Waits until the Ready condition has `status` and `reason`, and returns the object.
pub async fn wait_ready(
    ns: &TestNamespace,
    name: &str,
    status: &str,
    reason: &str,
) -> JwtSigningKey {
    let api = api(ns);
    wait_for(
        &format!("{name} Ready={status} ({reason})"),
        REACT,
        || async {
            let key = api.get(name).await.ok()?;
            let ready = key
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")?
                .clone();
            (ready.status == status
                && ready.reason == reason
                && key.status.as_ref()?.observed_generation == key.metadata.generation)
                .then_some(key)
        },
    )
    .await
}

/// Waits until a reconcile of `operator` has ended. A status that a test sees can come from a write
/// whose response the operator has not received yet; a reconcile counts its writes
/// (`jwtkeys_api_writes_total`) before it logs "reconciled". Call it after the status that the
/// operator's first reconcile writes, before reading the counter.
pub async fn wait_reconciled(operator: &common::OperatorProcess) {
    wait_for("a reconcile's end in the operator log", REACT, || async {
        operator.logs().contains("reconciled").then_some(())
    })
    .await;
}

/// Waits for a status that satisfies `check`.
pub async fn wait_status<F>(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    timeout: Duration,
    check: F,
) -> JwtSigningKey
where
    F: Fn(&JwtSigningKey) -> bool,
{
    let api = api(ns);
    let check = &check;
    wait_for(what, timeout, || {
        let api = api.clone();
        async move {
            let key = api.get(name).await.ok()?;
            check(&key).then_some(key)
        }
    })
    .await
}

/// The Secret's entries as text.
pub async fn secret_text(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Option<BTreeMap<String, String>> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()??;
    Some(
        secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).expect("UTF-8 Secret entry")))
            .collect(),
    )
}

/// The ConfigMap's data.
pub async fn config_map_data(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Option<BTreeMap<String, String>> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()??;
    Some(cm.data.unwrap_or_default())
}

/// Kids listed in a `jwks.json`, in order.
pub fn jwks_kids(data: &BTreeMap<String, String>) -> Vec<String> {
    let jwks: serde_json::Value =
        serde_json::from_str(&data[resources::JWKS_JSON]).expect("jwks.json is JSON");
    jwks["keys"]
        .as_array()
        .expect("jwks.json has keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect()
}

/// Events on objects in the namespace, as `reason: message`.
pub async fn events(ns: &TestNamespace) -> Vec<(String, String, String)> {
    Api::<Event>::namespaced(ns.client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits for an event with this reason.
pub async fn wait_event(ns: &TestNamespace, reason: &str) -> (String, String, String) {
    wait_for(&format!("an event {reason}"), REACT, || async {
        events(ns).await.into_iter().find(|(_, r, _)| r == reason)
    })
    .await
}

/// One observed version of the Secret or ConfigMap.
#[derive(Clone, Debug)]
pub struct Version {
    /// When the watch delivered it.
    pub at: Timestamp,
    /// `Secret` or `ConfigMap`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// The signing kid (Secret) or the published kids (ConfigMap); `None` when deleted.
    pub kids: Option<Vec<String>>,
    /// The object's `resourceVersion`: the test control plane has one etcd, whose revisions order
    /// every write of every object, whatever order the watches delivered them in.
    pub revision: u64,
}

/// Records every version of the Secret and ConfigMaps named `secret`/`config_map` in the given
/// namespaces, as a watch sees them.
#[derive(Clone, Default)]
pub struct History {
    versions: Arc<Mutex<Vec<Version>>>,
}

impl History {
    /// Records the default objects (`auth-signing-key`, `auth-jwks`) of the test namespace.
    pub async fn of(ns: &TestNamespace) -> History {
        History::record(
            &ns.client,
            std::slice::from_ref(&ns.name),
            "auth-signing-key",
            "auth-jwks",
        )
        .await
    }

    /// An extra namespace labelled `jwks=auth` that accepts copies of `auth` from the test namespace,
    /// and a history of the default objects in both. Give the key [`publish_to_copies`].
    pub async fn with_copy(ns: &TestNamespace) -> (History, String) {
        let copy = ns.extra("copy", &[("jwks", "auth")]).await;
        accept_from(&ns.client, &copy, Some(&format!("{}/auth", ns.name))).await;
        let history = History::record(
            &ns.client,
            &[ns.name.clone(), copy.clone()],
            "auth-signing-key",
            "auth-jwks",
        )
        .await;
        (history, copy)
    }

    /// Starts watching; returns once every watch has listed.
    pub async fn record(
        client: &Client,
        namespaces: &[String],
        secret: &str,
        config_map: &str,
    ) -> History {
        let history = History::default();
        let mut listed = Vec::new();
        for ns in namespaces {
            listed.push(history.watch(
                Api::<Secret>::namespaced(client.clone(), ns),
                ns,
                secret,
                "Secret",
                |s| {
                    let kid = s.data.as_ref()?.get(resources::KID)?;
                    Some(vec![String::from_utf8_lossy(&kid.0).into_owned()])
                },
            ));
            listed.push(history.watch(
                Api::<ConfigMap>::namespaced(client.clone(), ns),
                ns,
                config_map,
                "ConfigMap",
                |c| {
                    c.data
                        .as_ref()
                        .filter(|d| d.contains_key(resources::JWKS_JSON))
                        .map(jwks_kids)
                },
            ));
        }
        for rx in listed {
            let _ = rx.await;
        }
        history
    }

    /// Records every version of one object; the receiver fires once the initial list is done.
    fn watch<K>(
        &self,
        api: Api<K>,
        namespace: &str,
        name: &str,
        kind: &'static str,
        kids: fn(&K) -> Option<Vec<String>>,
    ) -> tokio::sync::oneshot::Receiver<()>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut tx = Some(tx);
        let versions = self.versions.clone();
        let namespace = namespace.to_string();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
            while let Some(Ok(event)) = stream.next().await {
                let revision = |object: &K| {
                    object
                        .meta()
                        .resource_version
                        .as_deref()
                        .and_then(|rv| rv.parse().ok())
                        .unwrap_or_default()
                };
                let (kids, revision) = match event {
                    watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                        (Some(kids(&object).unwrap_or_default()), revision(&object))
                    }
                    watcher::Event::Delete(object) => (None, revision(&object)),
                    watcher::Event::InitDone => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    watcher::Event::Init => continue,
                };
                versions.lock().unwrap().push(Version {
                    at: Timestamp::now(),
                    kind,
                    namespace: namespace.clone(),
                    kids,
                    revision,
                });
            }
        });
        rx
    }

    /// Everything recorded so far, in order.
    pub fn versions(&self) -> Vec<Version> {
        self.versions.lock().unwrap().clone()
    }

    /// Distinct signing kids in the order they signed.
    pub fn signing_kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = Vec::new();
        for v in self.versions().iter().filter(|v| v.kind == "Secret") {
            if let Some(kid) = v.kids.as_ref().and_then(|k| k.first())
                && kids.last() != Some(kid)
            {
                kids.push(kid.clone());
            }
        }
        kids
    }

    /// Every version, in the order etcd wrote them.
    pub fn in_write_order(&self) -> Vec<Version> {
        let mut versions = self.versions();
        versions.sort_by_key(|v| v.revision);
        versions.dedup_by_key(|v| (v.revision, v.kind, v.namespace.clone()));
        versions
    }

    /// I3 for these namespaces, on every version of every object in the order etcd wrote them: each
    /// version of a ConfigMap holds the key the Secret signs with at that moment (the first version
    /// of a ConfigMap the operator creates or recreates included) and is never an empty key set;
    /// each key the Secret switches to is in each ConfigMap that exists then; no key signs twice.
    /// ConfigMaps in other namespaces are left out. The rules are [`invariants`]'.
    pub fn check_signing_key_published_in(&self, namespaces: &[String]) {
        self.check(Rules::default(), |ns| namespaces.contains(&ns.to_string()));
    }

    /// Checks I1-I3 on the recorded history with the shared checker ([`invariants`]): every
    /// signing key (except `signs_at_once`) was held by every ConfigMap existing then for at least
    /// `p` before it signed; every key that stopped signing stayed in every ConfigMap version for
    /// at least `retention` after (except `revoked`); I3 on every version of every object
    /// ([`Self::check_signing_key_published_in`], the keys that sign at once included). `slack`
    /// absorbs watch delivery jitter.
    pub fn check_invariants(
        &self,
        p: Duration,
        retention: Duration,
        slack: Duration,
        signs_at_once: &[String],
        revoked: &[String],
    ) {
        self.check(Rules::default(), |_| true);
        let duration = |d: Duration| SignedDuration::try_from(d).expect("a duration in range");
        let rules = Rules {
            propagation_delay: duration(p),
            retention: duration(retention),
            slack: duration(slack),
            signs_at_once: signs_at_once.iter().cloned().collect(),
            revoked: revoked.iter().cloned().collect(),
        };
        self.check(rules, |_| true);
    }

    /// Runs the shared checker on the Secret versions and the ConfigMap versions of the namespaces
    /// that `config_maps_in` selects, and panics with the violation and the versions that led to it.
    fn check(&self, rules: Rules, config_maps_in: impl Fn(&str) -> bool) {
        let versions: Vec<invariants::Version> = self
            .versions()
            .into_iter()
            .filter(|v| v.kind == "Secret" || config_maps_in(&v.namespace))
            .map(|v| invariants::Version {
                kind: match v.kind {
                    "Secret" => Kind::Secret,
                    _ => Kind::ConfigMap,
                },
                namespace: v.namespace,
                kids: v.kids,
                order: v.revision,
                at: v.at,
                writer: Writer::Operator,
            })
            .collect();
        if let Err(violation) = invariants::check(rules, &versions) {
            let mut written: Vec<&invariants::Version> = versions
                .iter()
                .filter(|v| v.order <= violation.order())
                .collect();
            written.sort_by_key(|v| (v.order, v.at));
            written.dedup_by_key(|v| (v.order, v.kind, v.namespace.clone()));
            let shown = written.len().saturating_sub(30);
            let lines: Vec<String> = written[shown..]
                .iter()
                .map(|v| {
                    format!(
                        "  revision {} at {}: {:?} in {}: {:?}",
                        v.order, v.at, v.kind, v.namespace, v.kids
                    )
                })
                .collect();
            panic!(
                "{violation}\nthe versions up to it, in write order (last {}):\n{}",
                lines.len(),
                lines.join("\n")
            );
        }
    }
}

/// Signs a token with the Secret's `private.pem` and verifies it with the JWK of its kid from the
/// ConfigMap's `jwks.json` in `namespace`; the error says why it does not verify.
pub async fn secret_token_verifies(
    client: &Client,
    secret_ns: &str,
    namespace: &str,
) -> Result<(), String> {
    use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation, decode, encode, jwk::JwkSet};
    let secret = secret_text(client, secret_ns, "auth-signing-key")
        .await
        .ok_or("no Secret")?;
    let data = config_map_data(client, namespace, "auth-jwks")
        .await
        .ok_or("no ConfigMap")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(secret[resources::KID].clone());
    let token = encode(
        &header,
        &serde_json::json!({"sub": "alice", "iat": now, "exp": now + 600}),
        &EncodingKey::from_rsa_pem(secret[resources::PRIVATE_PEM].as_bytes())
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let jwks: JwkSet =
        serde_json::from_str(&data[resources::JWKS_JSON]).map_err(|e| e.to_string())?;
    let jwk = jwks
        .find(&secret[resources::KID])
        .ok_or_else(|| format!("the signing kid is not published in {namespace}"))?;
    decode::<serde_json::Value>(
        &token,
        &DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?,
        &Validation::new(jsonwebtoken::Algorithm::RS256),
    )
    .map(|_| ())
    .map_err(|e| format!("a token signed with the Secret does not verify in {namespace}: {e}"))
}

/// [`secret_token_verifies`], panicking with the reason.
pub async fn assert_secret_token_verifies(client: &Client, secret_ns: &str, namespace: &str) {
    if let Err(why) = secret_token_verifies(client, secret_ns, namespace).await {
        panic!("{why}");
    }
}

/// Sets (or with `None` removes) the `jwtkeys.dev/accept-from` annotation of a namespace: the keys
/// it accepts copies from.
pub async fn accept_from(client: &Client, namespace: &str, value: Option<&str>) {
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {jwt_key_operator::crd::ACCEPT_FROM_ANNOTATION: value}}
            })),
        )
        .await
        .expect("annotating the namespace");
}

/// Starts an operator for the test namespace (and extra namespaces).
pub fn operator(namespaces: &[&str]) -> common::OperatorProcess {
    common::OperatorProcess::start(namespaces, &[])
}

/// The operator's metrics text, from the HTTP port it logged.
pub async fn metrics(operator: &common::OperatorProcess) -> String {
    let address = wait_for("the operator's HTTP address in its log", REACT, || async {
        let logs = operator.logs();
        let line = logs
            .lines()
            .rev()
            .find(|l| l.contains("serving /metrics"))?;
        let port = line
            .rsplit(':')
            .next()?
            .trim()
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .to_string();
        Some(format!("127.0.0.1:{port}"))
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connecting to /metrics");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .expect("requesting /metrics");
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .await
        .expect("reading /metrics");
    body
}

/// Sum of a metric's samples whose line contains `filter`.
pub fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Refuses writes through a ValidatingAdmissionPolicy (built into the API server, no webhook) until
/// [`Freeze::thaw`]: creates and updates of one resource in one namespace, from everyone or from one
/// user only.
pub struct Freeze {
    client: Client,
    name: String,
}

impl Freeze {
    /// Refuses every ConfigMap create and update in `namespace`.
    pub async fn namespace(ns: &TestNamespace, namespace: &str) -> Freeze {
        Freeze::writes(ns, "configmaps", namespace, None).await
    }

    /// Refuses creates and updates of `resource` (a core resource, plural) in `namespace`, by
    /// `user` only when given (the others may still write). Returns once the API server refuses.
    pub async fn writes(
        ns: &TestNamespace,
        resource: &str,
        namespace: &str,
        user: Option<&str>,
    ) -> Freeze {
        Freeze::operations(ns, resource, namespace, user, &["CREATE", "UPDATE"]).await
    }

    /// Refuses `operations` (`CREATE`, `UPDATE`, `DELETE`) of `resource` in `namespace`, by `user`
    /// only when given. Returns once the API server refuses a create (or, for deletes only, once
    /// the policy is bound; the API server applies it within a second or so).
    pub async fn operations(
        ns: &TestNamespace,
        resource: &str,
        namespace: &str,
        user: Option<&str>,
        operations: &[&str],
    ) -> Freeze {
        use k8s_openapi::api::admissionregistration::v1::{
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        };
        let name = format!(
            "freeze-{}-{resource}-{namespace}",
            operations.join("-").to_lowercase()
        );
        let expression = match user {
            Some(user) => format!("request.userInfo.username != '{user}'"),
            None => "false".to_string(),
        };
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": operations, "resources": [resource],
                }]},
                "validations": [{"expression": expression, "message": format!("{resource} are frozen in this namespace")}],
            },
        }))
        .unwrap();
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
            },
        }))
        .unwrap();
        Api::<ValidatingAdmissionPolicy>::all(ns.client.clone())
            .create(&PostParams::default(), &policy)
            .await
            .expect("creating the freezing policy");
        Api::<ValidatingAdmissionPolicyBinding>::all(ns.client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .expect("binding the freezing policy");
        let freeze = Freeze {
            client: ns.client.clone(),
            name,
        };
        // The policy takes effect once the API server's policy informer has it: a dry-run create
        // as the frozen user (impersonated, as the admin may) is refused.
        let probes = |kind: &str| -> serde_json::Value {
            serde_json::json!({"apiVersion": "v1", "kind": kind, "metadata": {"generateName": "probe-"}})
        };
        let (kind, api_resource) = match resource {
            "secrets" => ("Secret", kube::api::ApiResource::erase::<Secret>(&())),
            "configmaps" => ("ConfigMap", kube::api::ApiResource::erase::<ConfigMap>(&())),
            other => panic!("no probe for {other}"),
        };
        let client = match user {
            Some(user) => {
                let mut config = common::admin_config().await;
                config.auth_info.impersonate = Some(user.to_string());
                Client::try_from(config).expect("an impersonating client")
            }
            None => ns.client.clone(),
        };
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(client, namespace, &api_resource);
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        if operations.contains(&"CREATE") {
            wait_for("the policy to refuse writes", REACT, || async {
                let probe: kube::api::DynamicObject = serde_json::from_value(probes(kind)).unwrap();
                match api.create(&dry_run, &probe).await {
                    Err(kube::Error::Api(e)) if e.message.contains("frozen") => Some(()),
                    _ => None,
                }
            })
            .await;
        } else {
            let probe: kube::api::DynamicObject = serde_json::from_value(probes(kind)).unwrap();
            let probe = api
                .create(&PostParams::default(), &probe)
                .await
                .expect("creating a probe");
            let name = probe.metadata.name.clone().unwrap();
            let dry_run = kube::api::DeleteParams {
                dry_run: true,
                ..Default::default()
            };
            wait_for("the policy to refuse deletes", REACT, || async {
                match api.delete(&name, &dry_run).await {
                    Err(kube::Error::Api(e)) if e.message.contains("frozen") => Some(()),
                    _ => None,
                }
            })
            .await;
        }
        freeze
    }

    /// Lets writes through again (the API server applies it within a second or so).
    pub async fn thaw(&self) {
        use k8s_openapi::api::admissionregistration::v1::{
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        };
        let _ = Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone())
            .delete(&self.name, &Default::default())
            .await;
        let _ = Api::<ValidatingAdmissionPolicy>::all(self.client.clone())
            .delete(&self.name, &Default::default())
            .await;
    }
}
