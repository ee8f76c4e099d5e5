//! The operator's identity in tests, as the product runs: the chart's ServiceAccount with the RBAC the
//! chart renders for the test's scope (`helm template`), applied by the admin, and a kubeconfig
//! holding a TokenRequest token of that ServiceAccount.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, OnceLock, PoisonError, Weak},
    time::Duration,
};

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
    core::v1::ServiceAccount,
};
use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
    },
    config::Kubeconfig,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// What the operator is started for, and so what the chart must grant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    /// `--watch-namespace` values; empty for cluster-wide mode.
    pub watch_namespaces: Vec<String>,
    /// The Lease name, when the operator runs with leader election.
    pub lease: Option<String>,
    /// The release namespace: where the ServiceAccount and the Lease live.
    pub namespace: String,
}

/// A ServiceAccount and the chart's RBAC for it, rendered once for one scope under a unique release
/// name (parallel tests never share one), and a kubeconfig with its token. Dropping it deletes every
/// object it applied (the cluster-scoped ones would outlive the test namespaces otherwise).
pub struct ChartIdentity {
    pub service_account: String,
    kubeconfig: tempfile::NamedTempFile,
    applied: Vec<(ApiResource, Option<String>, String)>,
}

/// Kinds of the chart's objects that make up the operator's identity.
const IDENTITY_KINDS: &[(&str, &str, &str)] = &[
    ("ServiceAccount", "", "serviceaccounts"),
    ("ClusterRole", "rbac.authorization.k8s.io", "clusterroles"),
    (
        "ClusterRoleBinding",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
    ),
    ("Role", "rbac.authorization.k8s.io", "roles"),
    ("RoleBinding", "rbac.authorization.k8s.io", "rolebindings"),
];

impl ChartIdentity {
    /// The identity for `scope`: the one already in use by a running process of this test binary
    /// with the same scope (replicas of one install share their ServiceAccount, as in a cluster), or
    /// a new one. Scopes name the test's own namespaces, so tests do not share identities (except
    /// cluster-wide scopes in `default`, which would share one with the same rights).
    pub fn for_scope(scope: &Scope) -> Arc<ChartIdentity> {
        static IN_USE: OnceLock<Mutex<HashMap<Scope, Weak<ChartIdentity>>>> = OnceLock::new();
        let in_use = || {
            IN_USE
                .get_or_init(Mutex::default)
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some(identity) = in_use().get(scope).and_then(Weak::upgrade) {
            return identity;
        }
        // Created without the lock held: other tests start their operators meanwhile.
        let identity = Arc::new(ChartIdentity::create(scope));
        let mut in_use = in_use();
        in_use.retain(|_, identity| identity.strong_count() > 0);
        in_use.insert(scope.clone(), Arc::downgrade(&identity));
        identity
    }

    /// Renders the chart for `scope`, applies its ServiceAccount and RBAC, waits until the API server
    /// authorizes what the operator needs at start-up, and writes the kubeconfig. Blocks the calling
    /// thread (the work runs on a runtime of its own), so that `OperatorProcess::start` stays sync.
    pub fn create(scope: &Scope) -> ChartIdentity {
        let release = format!("jko-{}", super::random_suffix(8));
        let documents = render(&release, scope);
        block_on(async {
            let client = super::client().await;
            let mut identity = ChartIdentity {
                service_account: format!("{release}-jwt-key-operator"),
                kubeconfig: tempfile::NamedTempFile::new().expect("a temp file for a kubeconfig"),
                applied: Vec::new(),
            };
            for document in documents {
                identity.apply(&client, document).await;
            }
            wait_authorized(&client, scope, &identity.service_account).await;
            let token = token(&client, &scope.namespace, &identity.service_account).await;
            let yaml = token_kubeconfig(&identity.service_account, &token, &scope.namespace);
            std::fs::write(identity.kubeconfig.path(), yaml).expect("writing a kubeconfig");
            identity
        })
    }

    /// The kubeconfig file that authenticates as the ServiceAccount.
    pub fn kubeconfig(&self) -> &std::path::Path {
        self.kubeconfig.path()
    }

    async fn apply(&mut self, client: &Client, document: Value) {
        let kind = document["kind"].as_str().unwrap_or_default().to_string();
        let &(_, group, plural) = IDENTITY_KINDS
            .iter()
            .find(|(k, _, _)| *k == kind.as_str())
            .expect("an identity kind");
        let gvk = GroupVersionKind::gvk(group, "v1", &kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
        let object: DynamicObject = serde_json::from_value(document).expect("a Kubernetes object");
        let name = object.metadata.name.clone().expect("a name");
        let namespace = object.metadata.namespace.clone();
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &name,
            &PatchParams::apply(super::TEST_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|err| panic!("applying the chart's {kind} {namespace:?}/{name}: {err}"));
        self.applied.push((resource, namespace, name));
    }
}

impl Drop for ChartIdentity {
    fn drop(&mut self) {
        let applied = std::mem::take(&mut self.applied);
        block_on(async {
            let client = super::client().await;
            for (resource, namespace, name) in applied.into_iter().rev() {
                let api: Api<DynamicObject> = match &namespace {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                    None => Api::all_with(client.clone(), &resource),
                };
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(err) => eprintln!("deleting {} {name}: {err}", resource.kind),
                }
            }
        });
    }
}

/// `helm template` of the chart for `scope`: its ServiceAccount, (Cluster)Roles and bindings.
fn render(release: &str, scope: &Scope) -> Vec<Value> {
    let chart = super::repo_root().join("charts/jwt-key-operator");
    let mut values = vec![
        "crds.enabled=false".to_string(),
        // Roles for users are not the operator's identity.
        "rbac.aggregate.enabled=false".to_string(),
    ];
    if !scope.watch_namespaces.is_empty() {
        values.push(format!(
            "watchNamespaces={{{}}}",
            scope.watch_namespaces.join(",")
        ));
    }
    match &scope.lease {
        Some(lease) => {
            values.push("leaderElection.enabled=true".into());
            values.push(format!("leaderElection.leaseName={lease}"));
        }
        None => values.push("leaderElection.enabled=false".into()),
    }
    let mut helm = super::helm();
    helm.arg("template")
        .arg(release)
        .arg(&chart)
        .args(["--namespace", &scope.namespace])
        .args(["--kube-version", &super::kube_version()]);
    for value in &values {
        helm.args(["--set", value]);
    }
    let output = helm.output().expect("running helm template");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "helm template {release} ({values:?}) failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // One Role and RoleBinding per watched namespace: a thousand namespaces exceed serde-saphyr's
    // default budget of 1024 documents.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 100_000,
            max_nodes: 50_000_000,
        },
    };
    serde_saphyr::from_multiple_with_options::<Value>(&stdout, options)
        .expect("helm renders valid YAML")
        .into_iter()
        .filter(|doc| {
            IDENTITY_KINDS
                .iter()
                .any(|(kind, _, _)| doc["kind"] == *kind)
        })
        .collect()
}

/// Waits until the RBAC authorizer has seen the new bindings: the operator exits at start-up when it
/// may not list JwtSigningKeys (and namespaces), or read its Lease.
async fn wait_authorized(client: &Client, scope: &Scope, service_account: &str) {
    let mut checks = vec![(None, "", "namespaces", "list", None)];
    if scope.watch_namespaces.is_empty() {
        checks.push((None, "jwtkeys.dev", "jwtsigningkeys", "list", None));
    }
    for ns in &scope.watch_namespaces {
        checks.push((
            Some(ns.clone()),
            "jwtkeys.dev",
            "jwtsigningkeys",
            "list",
            None,
        ));
    }
    if let Some(lease) = &scope.lease {
        checks.push((
            Some(scope.namespace.clone()),
            "coordination.k8s.io",
            "leases",
            "get",
            Some(lease.clone()),
        ));
    }
    let user = format!(
        "system:serviceaccount:{}:{service_account}",
        scope.namespace
    );
    let groups = vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{}", scope.namespace),
        "system:authenticated".to_string(),
    ];
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    for (namespace, group, resource, verb, name) in checks {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.clone()),
                groups: Some(groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: namespace.clone(),
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    verb: Some(verb.into()),
                    name: name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        super::wait_for(
            &format!("{user} to be allowed to {verb} {resource} in {namespace:?}"),
            Duration::from_secs(30),
            || async {
                let answer = reviews
                    .create(&PostParams::default(), &review)
                    .await
                    .expect("a SubjectAccessReview");
                answer.status.is_some_and(|s| s.allowed).then_some(())
            },
        )
        .await;
    }
}

/// A TokenRequest token of the ServiceAccount, valid for a day (longer than any test run).
async fn token(client: &Client, namespace: &str, service_account: &str) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(24 * 3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|err| panic!("a TokenRequest for {namespace}/{service_account}: {err}"))
        .status
        .expect("a TokenRequest status")
        .token
        .expect("a token")
}

/// A kubeconfig for the test cluster (the admin's server and CA) that authenticates with `token`.
fn token_kubeconfig(user: &str, token: &str, namespace: &str) -> String {
    let path = super::kubeconfig_path();
    let admin = Kubeconfig::read_from(&path)
        .unwrap_or_else(|err| panic!("reading kubeconfig {}: {err}", path.display()));
    let context = admin
        .contexts
        .iter()
        .find(|c| Some(&c.name) == admin.current_context.as_ref())
        .or(admin.contexts.first())
        .and_then(|c| c.context.clone())
        .expect("a kubeconfig context");
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.clone())
        .expect("the context's cluster");
    serde_saphyr::to_string(&json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "test", "user": user, "namespace": namespace}}],
        "current-context": user,
    }))
    .expect("serialising a kubeconfig")
}

/// Runs `future` to completion on a runtime of its own, on another thread, so that sync code called
/// from a test's runtime can wait for API calls.
fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime")
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
