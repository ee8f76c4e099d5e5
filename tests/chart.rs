//! The Helm chart as users run it: `helm lint` and `helm template` for each notable values
//! combination, the schema's refusals, and installs on the real API server whose ServiceAccount then
//! runs the operator (out of cluster, with a TokenRequest token and the Deployment's own arguments and
//! environment) to prove that the RBAC the chart grants is enough, and nothing more.
//!
//! The JwtSigningKey CRD is cluster-scoped and shared by every test running in parallel, and
//! `common::install_crd` already applies it; installs here therefore use `crds.enabled=false`, so that
//! no release takes Helm ownership of the shared CRD. The chart's CRD is checked by rendering it and
//! comparing it with `crds/jwtsigningkeys.yaml`, and by a server-side dry run.

mod common;
mod support;

use std::{
    collections::BTreeMap,
    fs::File,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{TestNamespace, install_crd, wait_for, with_temp_ns};
use jwt_key_operator::crd::JwtSigningKey;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        authentication::v1::{TokenRequest, TokenRequestSpec},
        coordination::v1::Lease,
        core::v1::{ConfigMap, Secret, ServiceAccount},
        rbac::v1::RoleBinding,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Rendering

fn chart_dir() -> PathBuf {
    common::repo_root().join("charts/jwt-key-operator")
}

/// The Kubernetes version of the test control plane (`tests/control-plane/versions.env`).
/// Runs helm with `args`; returns (success, stdout, stderr). Commands that do not ask the API server
/// (lint, template, a client-side dry run) are told its version, which the chart's kubeVersion
/// checks: a helm built from source otherwise assumes Kubernetes 1.20.
fn helm(args: &[&str]) -> (bool, String, String) {
    let offline =
        matches!(args.first(), Some(&"lint" | &"template")) || args.contains(&"--dry-run=client");
    let mut command = common::helm();
    command.args(args);
    if offline {
        command.args(["--kube-version", &common::kube_version()]);
    }
    let output = command.output().expect("running helm");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn helm_ok(args: &[&str]) -> String {
    let (ok, stdout, stderr) = helm(args);
    assert!(ok, "helm {} failed:\n{stderr}\n{stdout}", args.join(" "));
    stdout
}

/// `--set` arguments from `key=value` pairs.
fn set_args<'a>(values: &[&'a str]) -> Vec<&'a str> {
    values.iter().flat_map(|v| ["--set", v]).collect()
}

/// `helm lint --strict` with `values`; panics with helm's output when it fails.
fn lint(values: &[&str]) {
    let chart = chart_dir();
    let mut args = vec!["lint", "--strict", chart.to_str().unwrap()];
    args.extend(set_args(values));
    helm_ok(&args);
}

/// `helm template` of the chart as release `release` in namespace `namespace`, every document parsed.
fn render(release: &str, namespace: &str, values: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    args.extend(set_args(values));
    parse_documents(&helm_ok(&args))
}

/// Every non-empty document of a multi-document YAML stream, as JSON values.
fn parse_documents(yaml: &str) -> Vec<Value> {
    // Empty documents (a template that renders nothing) are skipped.
    serde_saphyr::from_multiple::<Value>(yaml).expect("helm renders valid YAML")
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one_of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or("?").to_string())
        .collect();
    kinds.sort();
    kinds
}

/// A rule as `(apiGroup, resource, resourceNames, verbs)` lines, one per group and resource, sorted.
type Grant = (String, String, Vec<String>, Vec<String>);

fn grants(role: &Value) -> Vec<Grant> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().expect("a string").to_string())
            .collect()
    };
    let mut grants = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                let mut verbs = strings(&rule["verbs"]);
                verbs.sort();
                grants.push((
                    group.clone(),
                    resource,
                    strings(&rule["resourceNames"]),
                    verbs,
                ));
            }
        }
    }
    grants.sort();
    grants
}

fn grant(group: &str, resource: &str, names: &[&str], verbs: &[&str]) -> Grant {
    let mut verbs: Vec<String> = verbs.iter().map(|v| v.to_string()).collect();
    verbs.sort();
    (
        group.into(),
        resource.into(),
        names.iter().map(|n| n.to_string()).collect(),
        verbs,
    )
}

/// What the operator needs on JwtSigningKeys and the objects it writes for them, in each namespace it
/// watches (the chart README explains every verb).
fn namespaced_grants() -> Vec<Grant> {
    let mut grants = vec![
        grant(
            "",
            "configmaps",
            &[],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        grant(
            "",
            "secrets",
            &[],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        grant("events.k8s.io", "events", &[], &["create", "patch"]),
        grant(
            "jwtkeys.dev",
            "jwtsigningkeys",
            &[],
            &["list", "watch", "patch"],
        ),
        grant(
            "jwtkeys.dev",
            "jwtsigningkeys/status",
            &[],
            &["get", "patch"],
        ),
        grant("jwtkeys.dev", "jwtsigningkeys/finalizers", &[], &["update"]),
    ];
    grants.sort();
    grants
}

fn lease_grants(lease: &str) -> Vec<Grant> {
    let mut grants = vec![
        grant("coordination.k8s.io", "leases", &[], &["create"]),
        grant("coordination.k8s.io", "leases", &[lease], &["get", "patch"]),
    ];
    grants.sort();
    grants
}

fn named<'a>(docs: &'a [Value], kind: &str, namespace: Option<&str>, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"] == name
                && d["metadata"]["namespace"].as_str() == namespace
        })
        .unwrap_or_else(|| panic!("no {kind} {namespace:?}/{name} rendered"))
}

/// No `*` in any verb, resource, API group or resource name of any rule.
fn assert_no_wildcards(docs: &[Value]) {
    for role in of_kind(docs, "ClusterRole")
        .into_iter()
        .chain(of_kind(docs, "Role"))
    {
        let text = role["rules"].to_string();
        assert!(
            !text.contains('*'),
            "wildcard in {}: {text}",
            role["metadata"]["name"]
        );
    }
}

fn container(docs: &[Value]) -> &Value {
    &one_of_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn env(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let value = e
                .get("value")
                .cloned()
                .unwrap_or_else(|| e["valueFrom"].clone());
            (e["name"].as_str().unwrap().to_string(), value)
        })
        .collect()
}

/// `value` with every number as an f64: JSON (and the API server) does not tell `0` from `0.0`, and
/// Helm's template functions turn every number into a float.
fn numbers_as_f64(value: Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().expect("a finite number")),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_f64).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, numbers_as_f64(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Parses `crds/jwtsigningkeys.yaml`.
fn generated_crd() -> Value {
    let path = common::repo_root().join("crds/jwtsigningkeys.yaml");
    let text = std::fs::read_to_string(&path).expect("reading crds/jwtsigningkeys.yaml");
    serde_saphyr::from_str(&text).expect("crds/jwtsigningkeys.yaml is YAML")
}

// ---------------------------------------------------------------------------------------------
// helm lint and helm template

#[tokio::test]
async fn default_values_render_a_hardened_cluster_wide_install_with_least_privilege() {
    with_temp_ns("chart-default", |ns| async move {
        lint(&[]);
        let docs = render("jko", &ns.name, &[]);
        assert_eq!(
            kinds(&docs),
            [
                "ClusterRole",
                "ClusterRole",
                "ClusterRole",
                "ClusterRole",
                "ClusterRoleBinding",
                "ClusterRoleBinding",
                "CustomResourceDefinition",
                "Deployment",
                "Role",
                "RoleBinding",
                "Service",
                "ServiceAccount",
            ],
            "objects of a default install"
        );
        assert_no_wildcards(&docs);

        // RBAC: exactly what the operator calls, nothing else.
        let fullname = "jko-jwt-key-operator";
        assert_eq!(
            grants(named(&docs, "ClusterRole", None, fullname)),
            namespaced_grants()
        );
        assert_eq!(
            grants(named(
                &docs,
                "ClusterRole",
                None,
                &format!("{fullname}-namespaces")
            )),
            vec![grant("", "namespaces", &[], &["list", "watch"])]
        );
        assert_eq!(
            grants(named(
                &docs,
                "Role",
                Some(&ns.name),
                &format!("{fullname}-leader-election")
            )),
            lease_grants(fullname)
        );
        for binding in of_kind(&docs, "ClusterRoleBinding")
            .into_iter()
            .chain(of_kind(&docs, "RoleBinding"))
        {
            assert_eq!(
                binding["subjects"],
                json!([{"kind": "ServiceAccount", "name": fullname, "namespace": ns.name}]),
                "subjects of {}",
                binding["metadata"]["name"]
            );
        }

        // The Deployment: restricted pod security, probes, resources, configuration.
        let deployment = one_of_kind(&docs, "Deployment");
        assert_eq!(deployment["spec"]["replicas"], 1);
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], fullname);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        // No pinned UID/GID: the image's non-root user, enforced by runAsNonRoot.
        for pinned in ["runAsUser", "runAsGroup", "fsGroup"] {
            assert!(
                pod["securityContext"].get(pinned).is_none(),
                "{pinned} is not pinned"
            );
        }
        assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
        assert!(pod.get("volumes").is_none(), "no extra volumes by default");
        // Without a ServiceMonitor, Prometheus finds the pods by annotation.
        assert_eq!(
            deployment["spec"]["template"]["metadata"]["annotations"],
            json!({"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"})
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let container = container(&docs);
        let security = &container["securityContext"];
        assert_eq!(security["runAsNonRoot"], true);
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    container["resources"][kind][resource].is_string(),
                    "resources.{kind}.{resource} is set"
                );
            }
        }
        assert_eq!(container["ports"][0]["name"], "http");
        assert_eq!(container["ports"][0]["containerPort"], 8080);
        assert_eq!(
            container["livenessProbe"],
            json!({"httpGet": {"path": "/healthz", "port": "http"}, "initialDelaySeconds": 5,
                   "periodSeconds": 10, "timeoutSeconds": 1, "failureThreshold": 3})
        );
        assert_eq!(
            container["readinessProbe"],
            json!({"httpGet": {"path": "/readyz", "port": "http"}, "initialDelaySeconds": 2,
                   "periodSeconds": 5, "timeoutSeconds": 1, "failureThreshold": 3})
        );
        assert_eq!(
            container["args"],
            json!([
                "run",
                "--leader-election=true",
                format!("--leader-election-id={fullname}"),
                "--lease-duration-seconds=15"
            ])
        );
        let env = env(container);
        assert_eq!(
            env["POD_NAME"],
            json!({"fieldRef": {"fieldPath": "metadata.name"}})
        );
        assert_eq!(
            env["POD_NAMESPACE"],
            json!({"fieldRef": {"fieldPath": "metadata.namespace"}})
        );
        assert_eq!(env["LOG_FORMAT"], "json");
        assert_eq!(env["HTTP_PORT"], "8080");
        assert!(
            !env.contains_key("WATCH_NAMESPACES"),
            "all namespaces by default"
        );

        let service = one_of_kind(&docs, "Service");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
        assert_eq!(
            service["spec"]["selector"],
            deployment["spec"]["selector"]["matchLabels"]
        );
    })
    .await;
}

#[tokio::test]
async fn the_chart_ships_exactly_the_generated_crd_kept_on_uninstall() {
    with_temp_ns("chart-crd", |ns| async move {
        let generated = generated_crd();
        let docs = render("jko", &ns.name, &[]);
        let mut rendered = one_of_kind(&docs, "CustomResourceDefinition").clone();
        assert_eq!(
            rendered["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "crds.keep is on by default"
        );
        // The chart adds its labels and the keep annotation; everything else is the generated CRD.
        let metadata = rendered["metadata"].as_object_mut().unwrap();
        metadata.remove("labels");
        metadata.remove("annotations");
        assert_eq!(
            numbers_as_f64(rendered),
            numbers_as_f64(generated),
            "the chart's CRD differs from crds/jwtsigningkeys.yaml: copy it to \
             charts/jwt-key-operator/files/jwtsigningkeys.yaml"
        );

        let not_kept = render("jko", &ns.name, &["crds.keep=false"]);
        let crd = one_of_kind(&not_kept, "CustomResourceDefinition");
        assert!(
            crd["metadata"].get("annotations").is_none(),
            "no keep policy"
        );

        let without = render("jko", &ns.name, &["crds.enabled=false"]);
        assert!(of_kind(&without, "CustomResourceDefinition").is_empty());
        lint(&["crds.enabled=false"]);

        // The API server accepts the chart's CRD as it is (a dry run: the CRD is shared by all tests).
        install_crd(&ns.client).await;
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            serde_saphyr::to_string(one_of_kind(&docs, "CustomResourceDefinition")).unwrap(),
        )
        .unwrap();
        let output = common::kubectl()
            .args([
                "apply",
                "--server-side",
                "--force-conflicts",
                "--dry-run=server",
                "-f",
            ])
            .arg(file.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "server-side dry run of the chart's CRD: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    })
    .await;
}

#[tokio::test]
async fn watch_namespaces_grant_roles_only_in_those_namespaces() {
    with_temp_ns("chart-scoped", |ns| async move {
        let values = ["watchNamespaces={team-a,team-b}"];
        lint(&values);
        let docs = render("jko", &ns.name, &values);
        assert_no_wildcards(&docs);
        let fullname = "jko-jwt-key-operator";

        // The only cluster-wide rule left for the operator: reading namespaces for
        // spec.publish.namespaceSelector (the other ClusterRoles are for users, bound to nobody).
        let mut names: Vec<&str> = of_kind(&docs, "ClusterRole")
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                format!("{fullname}-edit"),
                format!("{fullname}-namespaces"),
                format!("{fullname}-view"),
            ]
        );
        assert_eq!(
            grants(named(
                &docs,
                "ClusterRole",
                None,
                &format!("{fullname}-namespaces")
            )),
            vec![grant("", "namespaces", &[], &["list", "watch"])]
        );
        let bindings = of_kind(&docs, "ClusterRoleBinding");
        assert_eq!(bindings.len(), 1);
        assert_eq!(
            bindings[0]["roleRef"]["name"],
            format!("{fullname}-namespaces")
        );
        for namespace in ["team-a", "team-b"] {
            assert_eq!(
                grants(named(&docs, "Role", Some(namespace), fullname)),
                namespaced_grants(),
                "Role in {namespace}"
            );
            let binding = named(&docs, "RoleBinding", Some(namespace), fullname);
            assert_eq!(binding["roleRef"]["kind"], "Role");
            assert_eq!(binding["subjects"][0]["namespace"], ns.name.as_str());
        }
        assert_eq!(
            grants(named(
                &docs,
                "Role",
                Some(&ns.name),
                &format!("{fullname}-leader-election")
            )),
            lease_grants(fullname)
        );
        assert_eq!(env(container(&docs))["WATCH_NAMESPACES"], "team-a,team-b");

        // Without leader election there is no Lease Role.
        let docs = render("jko", &ns.name, &["leaderElection.enabled=false"]);
        assert!(
            of_kind(&docs, "Role").is_empty(),
            "no Lease rights without leader election"
        );
        assert_eq!(
            container(&docs)["args"],
            json!(["run", "--leader-election=false"])
        );
    })
    .await;
}

#[tokio::test]
async fn user_roles_aggregate_into_the_built_in_view_edit_and_admin_roles() {
    with_temp_ns("chart-user-roles", |ns| async move {
        let docs = render("jko", &ns.name, &[]);
        let fullname = "jko-jwt-key-operator";
        let view = named(&docs, "ClusterRole", None, &format!("{fullname}-view"));
        let edit = named(&docs, "ClusterRole", None, &format!("{fullname}-edit"));
        let aggregates_to = |role: &Value| -> Vec<String> {
            let mut to: Vec<String> = role["metadata"]["labels"]
                .as_object()
                .unwrap()
                .iter()
                .filter_map(|(key, value)| {
                    let role = key.strip_prefix("rbac.authorization.k8s.io/aggregate-to-")?;
                    assert_eq!(value, "true", "{key}");
                    Some(role.to_string())
                })
                .collect();
            to.sort();
            to
        };
        assert_eq!(aggregates_to(view), ["admin", "edit", "view"]);
        assert_eq!(aggregates_to(edit), ["admin", "edit"]);
        assert_eq!(
            grants(view),
            vec![grant(
                "jwtkeys.dev",
                "jwtsigningkeys",
                &[],
                &["get", "list", "watch"]
            )]
        );
        assert_eq!(
            grants(edit),
            vec![grant(
                "jwtkeys.dev",
                "jwtsigningkeys",
                &[],
                &[
                    "get", "list", "watch", "create", "update", "patch", "delete"
                ]
            )]
        );
        // Nothing binds them: they only extend the roles users are already bound to.
        for binding in of_kind(&docs, "ClusterRoleBinding")
            .into_iter()
            .chain(of_kind(&docs, "RoleBinding"))
        {
            let role = binding["roleRef"]["name"].as_str().unwrap();
            assert!(
                !role.ends_with("-view") && !role.ends_with("-edit"),
                "{role}"
            );
        }

        for values in [
            &["rbac.aggregate.enabled=false"][..],
            &["rbac.create=false"],
        ] {
            lint(values);
            let docs = render("jko", &ns.name, values);
            let names: Vec<&Value> = of_kind(&docs, "ClusterRole")
                .into_iter()
                .map(|r| &r["metadata"]["name"])
                .collect();
            assert!(
                !names.contains(&&json!(format!("{fullname}-view")))
                    && !names.contains(&&json!(format!("{fullname}-edit"))),
                "{values:?}: {names:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn service_monitor_and_disruption_budget_render_when_enabled() {
    with_temp_ns("chart-optional", |ns| async move {
        let values = [
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.labels.release=prometheus",
            "metrics.serviceMonitor.honorLabels=true",
            "metrics.serviceMonitor.annotations.owner=platform",
            "metrics.serviceMonitor.endpointAdditionalProperties.metricRelabelings[0].action=drop",
            "metrics.serviceMonitor.endpointAdditionalProperties.metricRelabelings[0].regex=go_.*",
            "metrics.serviceMonitor.endpointAdditionalProperties.metricRelabelings[0].sourceLabels[0]=__name__",
            "podDisruptionBudget.enabled=true",
            "replicaCount=2",
        ];
        lint(&values);
        let docs = render("jko", &ns.name, &values);
        let monitor = one_of_kind(&docs, "ServiceMonitor");
        assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
        assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http-metrics");
        assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
        assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
        assert_eq!(monitor["metadata"]["annotations"]["owner"], "platform");
        assert_eq!(
            monitor["spec"]["endpoints"][0]["metricRelabelings"],
            json!([{"action": "drop", "regex": "go_.*", "sourceLabels": ["__name__"]}])
        );
        assert!(
            one_of_kind(&docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
                .get("prometheus.io/scrape")
                .is_none(),
            "no scrape annotations next to a ServiceMonitor"
        );
        let service = one_of_kind(&docs, "Service");
        assert_eq!(service["spec"]["ports"][0]["name"], "http-metrics");
        for (key, value) in monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(
                &service["metadata"]["labels"][key], value,
                "the monitor selects the Service"
            );
        }
        let budget = one_of_kind(&docs, "PodDisruptionBudget");
        assert_eq!(budget["spec"]["maxUnavailable"], 1);
        assert_eq!(budget["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");
        assert_eq!(one_of_kind(&docs, "Deployment")["spec"]["replicas"], 2);

        let docs = render(
            "jko",
            &ns.name,
            &[
                "podDisruptionBudget.enabled=true",
                "podDisruptionBudget.minAvailable=1",
                "podDisruptionBudget.maxUnavailable=null",
            ],
        );
        let budget = one_of_kind(&docs, "PodDisruptionBudget");
        assert_eq!(budget["spec"]["minAvailable"], 1);
        assert!(budget["spec"].get("maxUnavailable").is_none());

        // Off by default.
        let docs = render("jko", &ns.name, &[]);
        assert!(of_kind(&docs, "ServiceMonitor").is_empty());
        assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
    })
    .await;
}

#[tokio::test]
async fn the_ci_values_files_lint_and_render() {
    with_temp_ns("chart-ci-values", |ns| async move {
        let chart = chart_dir();
        let mut files: Vec<PathBuf> = std::fs::read_dir(chart.join("ci"))
            .expect("charts/jwt-key-operator/ci")
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty());
        for file in files {
            let file = file.to_str().unwrap();
            helm_ok(&["lint", "--strict", chart.to_str().unwrap(), "-f", file]);
            let output = helm_ok(&[
                "template",
                "jko",
                chart.to_str().unwrap(),
                "--namespace",
                &ns.name,
                "-f",
                file,
            ]);
            assert_no_wildcards(&parse_documents(&output));
        }
    })
    .await;
}

#[tokio::test]
async fn extra_args_env_volumes_and_probe_switches_reach_the_deployment() {
    with_temp_ns("chart-extras", |ns| async move {
        let values = [
            "replicaCount=3",
            "extraArgs[0]=--log-format=text",
            "extraEnv[0].name=HTTPS_PROXY",
            "extraEnv[0].value=http://proxy:3128",
            "volumes[0].name=ca",
            "volumes[0].configMap.name=corporate-ca",
            "volumeMounts[0].name=ca",
            "volumeMounts[0].mountPath=/etc/ssl/corporate",
            "livenessProbe.enabled=false",
            "readinessProbe.timeoutSeconds=3",
            "metrics.service.enabled=false",
            "metrics.podAnnotations=false",
            "nodeSelector=null",
        ];
        lint(&values);
        let docs = render("jko", &ns.name, &values);
        let deployment = one_of_kind(&docs, "Deployment");
        assert_eq!(deployment["spec"]["replicas"], 3);
        assert!(
            deployment["spec"]["template"]["metadata"]
                .get("annotations")
                .is_none(),
            "metrics.podAnnotations=false"
        );
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(
            pod["volumes"],
            json!([{"name": "ca", "configMap": {"name": "corporate-ca"}}])
        );
        assert!(pod.get("nodeSelector").is_none());
        let container = container(&docs);
        assert_eq!(
            container["args"].as_array().unwrap().last().unwrap(),
            "--log-format=text",
            "extra arguments come after the chart's"
        );
        assert_eq!(env(container)["HTTPS_PROXY"], "http://proxy:3128");
        assert_eq!(
            container["volumeMounts"],
            json!([{"name": "ca", "mountPath": "/etc/ssl/corporate"}])
        );
        assert!(container.get("livenessProbe").is_none());
        assert_eq!(container["readinessProbe"]["timeoutSeconds"], 3);
        assert!(
            container["readinessProbe"].get("enabled").is_none(),
            "the switch is not passed to Kubernetes"
        );
        assert!(of_kind(&docs, "Service").is_empty(), "no metrics Service");
    })
    .await;
}

#[tokio::test]
async fn notes_tell_the_truth_about_readiness_and_warn_on_one_replica_or_no_budget() {
    with_temp_ns("chart-notes", |ns| async move {
        // A server-side dry run: the notes as `helm install` prints them, nothing installed.
        let notes = |values: &[&str]| {
            let chart = chart_dir();
            let mut args = vec![
                "install",
                "jko",
                chart.to_str().unwrap(),
                "--dry-run=server",
                "--namespace",
                &ns.name,
                "--set",
                "crds.enabled=false",
            ];
            args.extend(set_args(values));
            let output = helm_ok(&args);
            output
                .split_once("NOTES:")
                .map(|(_, notes)| notes.to_owned())
                .unwrap_or_else(|| panic!("no NOTES in:\n{output}"))
        };
        let one = notes(&[]);
        assert!(one.contains("the leader and the standbys alike"), "{one}");
        assert!(one.contains("WARNING: one replica"), "{one}");
        let unprotected = notes(&["replicaCount=2"]);
        assert!(
            unprotected.contains("WARNING: 2 replicas but no PodDisruptionBudget"),
            "{unprotected}"
        );
        let protected = notes(&["replicaCount=2", "podDisruptionBudget.enabled=true"]);
        assert!(!protected.contains("WARNING"), "{protected}");
        assert!(
            protected.contains("get lease jko-jwt-key-operator"),
            "{protected}"
        );
    })
    .await;
}

#[test]
fn the_chart_readme_values_table_is_generated_from_values_yaml() {
    let script = common::repo_root().join("scripts/chart-docs");
    let output = Command::new("python3")
        .arg(&script)
        .arg("--check")
        .output()
        .unwrap_or_else(|err| panic!("running {}: {err}", script.display()));
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Every value of values.yaml is in the table (the script lists documented ones only).
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    for key in [
        "replicaCount",
        "extraArgs",
        "extraEnv",
        "volumes",
        "volumeMounts",
        "livenessProbe.timeoutSeconds",
        "metrics.service.enabled",
        "metrics.serviceMonitor.honorLabels",
        "metrics.serviceMonitor.endpointAdditionalProperties",
        "nodeSelector",
    ] {
        assert!(
            readme.contains(&format!("| `{key}` |")),
            "{key} is not in the README table"
        );
    }
}

#[tokio::test]
async fn bad_values_are_refused_with_a_message_naming_the_value() {
    with_temp_ns("chart-schema", |ns| async move {
        let cases: &[(&[&str], &str)] = &[
            (
                &["replicaCount=0"],
                "at '/replicaCount': minimum: got 0, want 1",
            ),
            (&["replicaCount=1.5"], "/replicaCount"),
            (&["replicaCount=two"], "/replicaCount"),
            (&["watchNamespaces={Team_A}"], "at '/watchNamespaces/0'"),
            (&["watchNamespaces=team-a"], "at '/watchNamespaces'"),
            (&["watchNamespaces={a,a}"], "at '/watchNamespaces'"),
            (
                &["logFormat=xml"],
                "at '/logFormat': value must be one of 'json', 'text'",
            ),
            (&["httpPort=0"], "at '/httpPort'"),
            (
                &["leaderElection.leaseDurationSeconds=1"],
                "/leaderElection/leaseDurationSeconds",
            ),
            (
                &["securityContext.readOnlyRootFilesystem=false"],
                "/securityContext/readOnlyRootFilesystem",
            ),
            (
                &["podSecurityContext.runAsNonRoot=false"],
                "/podSecurityContext/runAsNonRoot",
            ),
            (
                &["replicas=2"],
                "additional properties 'replicas' not allowed",
            ),
            (
                &["livenessProbe.timeout=3"],
                "additional properties 'timeout' not allowed",
            ),
            (
                &["readinessProbe.timeoutSeconds=0"],
                "/readinessProbe/timeoutSeconds",
            ),
            (
                &["metrics.serviceMonitor.honourLabels=true"],
                "additional properties 'honourLabels' not allowed",
            ),
            (
                &["service.port=9090"],
                "additional properties 'service' not allowed",
            ),
            (&["extraArgs[0].flag=x"], "/extraArgs/0"),
            (
                &[
                    "metrics.serviceMonitor.enabled=true",
                    "metrics.service.enabled=false",
                ],
                "metrics.serviceMonitor.enabled needs metrics.service.enabled",
            ),
            (
                &["podDisruptionBudget.maxUnavailable=lots"],
                "/podDisruptionBudget/maxUnavailable",
            ),
            (
                &["replicaCount=2", "leaderElection.enabled=false"],
                "replicaCount > 1 needs leaderElection.enabled=true",
            ),
            (
                &[
                    "podDisruptionBudget.enabled=true",
                    "podDisruptionBudget.minAvailable=1",
                ],
                "set either minAvailable or maxUnavailable, not both",
            ),
        ];
        let chart = chart_dir();
        for (values, message) in cases {
            let mut args = vec![
                "template",
                "jko",
                chart.to_str().unwrap(),
                "--namespace",
                &ns.name,
            ];
            args.extend(set_args(values));
            let (ok, _, stderr) = helm(&args);
            assert!(!ok, "{values:?} should be refused");
            assert!(
                stderr.contains(message),
                "{values:?}: expected {message:?} in:\n{stderr}"
            );
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Installs on the real API server

/// A Helm release in the test namespace; uninstalled when dropped (its ClusterRoles and
/// ClusterRoleBindings outlive the namespace otherwise).
struct Release {
    name: String,
    namespace: String,
}

impl Release {
    /// `helm install` with `crds.enabled=false` (see the module comment), `rbac.aggregate.enabled=false`
    /// and `values`; waits for nothing (no pods run on the test control plane).
    fn install(ns: &TestNamespace, values: &[&str]) -> Release {
        // Cluster-scoped names derive from the release name: make it unique in the cluster.
        let release = Release {
            name: ns.name.clone(),
            namespace: ns.name.clone(),
        };
        let chart = chart_dir();
        let mut args = vec![
            "install",
            &release.name,
            chart.to_str().unwrap(),
            "--namespace",
            &release.namespace,
            "--set",
            "crds.enabled=false",
            // The user roles only where a test asks for them, so that the one test of their
            // aggregation sees the built-in roles without them first.
            "--set",
            "rbac.aggregate.enabled=false",
        ];
        args.extend(set_args(values));
        helm_ok(&args);
        release
    }

    fn fullname(&self) -> String {
        format!("{}-jwt-key-operator", self.name)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let (ok, _, stderr) = helm(&["uninstall", &self.name, "--namespace", &self.namespace]);
        if !ok {
            eprintln!("helm uninstall {}: {stderr}", self.name);
        }
    }
}

/// The release's ServiceAccount as a kubeconfig file (same server and CA as the admin's, a one-hour
/// TokenRequest token) and a client built from it.
struct Identity {
    kubeconfig: tempfile::NamedTempFile,
    client: Client,
}

async fn service_account_identity(ns: &TestNamespace, service_account: &str) -> Identity {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(ns.client.clone(), &ns.name)
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .expect("a TokenRequest for the chart's ServiceAccount")
        .status
        .expect("TokenRequest status")
        .token;

    let admin = Kubeconfig::read_from(common::kubeconfig_path()).expect("the admin kubeconfig");
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
    let yaml = serde_saphyr::to_string(&json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "chart", "context": {"cluster": "test", "user": service_account, "namespace": ns.name}}],
        "current-context": "chart",
    }))
    .unwrap();
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(kubeconfig.path(), &yaml).unwrap();
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::from_yaml(&yaml).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Identity {
        kubeconfig,
        client: Client::try_from(config).unwrap(),
    }
}

/// The operator binary run with the installed Deployment's arguments and environment (the downward
/// API filled in as the kubelet would), authenticated as the chart's ServiceAccount. Killed when
/// dropped; its log is printed if the test is failing.
struct ChartOperator {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl ChartOperator {
    async fn start(
        ns: &TestNamespace,
        release: &Release,
        identity: &Identity,
        extra_args: &[&str],
    ) -> ChartOperator {
        let deployment = Api::<Deployment>::namespaced(ns.client.clone(), &release.namespace)
            .get(&release.fullname())
            .await
            .expect("the chart's Deployment");
        let container = deployment.spec.template.spec.unwrap().containers[0].clone();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_jwt-key-operator"));
        command
            .args(container.args.unwrap_or_default())
            .args(extra_args)
            // Only what the pod would have: no admin KUBECONFIG, no WATCH_NAMESPACES from the shell.
            .env_clear()
            .env("KUBECONFIG", identity.kubeconfig.path());
        for var in container.env.unwrap_or_default() {
            let value = match (var.value, var.value_from.and_then(|v| v.field_ref)) {
                (Some(value), _) => value,
                (None, Some(field)) if field.field_path == "metadata.name" => {
                    format!("{}-pod", release.fullname())
                }
                (None, Some(field)) if field.field_path == "metadata.namespace" => {
                    release.namespace.clone()
                }
                other => panic!("unexpected env {} {other:?}", var.name),
            };
            command.env(var.name, value);
        }
        // Many tests run at once: any free port (the Deployment's port is checked by rendering).
        command.env("HTTP_PORT", "0");
        if let Ok(filter) = std::env::var("JKO_OPERATOR_LOG") {
            command.env("RUST_LOG", filter);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(log.path()).unwrap())
            .stderr(File::options().append(true).open(log.path()).unwrap())
            .spawn()
            .expect("starting jwt-key-operator");
        ChartOperator { child, log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits for the process to exit and returns its exit code.
    async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the operator did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

impl Drop for ChartOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("===== jwt-key-operator log =====\n{}", self.logs());
        }
    }
}

fn is_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    match result {
        Err(kube::Error::Api(status)) => status.code == 403,
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

/// Creates a key that publishes into `publish_ns`, waits for it to be Ready, rotates it, and checks
/// every write the RBAC must allow: finalizer, Secret, ConfigMaps (home and copy), status, events,
/// the Lease, and the removal of the copy when the key is deleted.
async fn create_rotate_and_delete_a_key(
    ns: &TestNamespace,
    release: &Release,
    publish_ns: &str,
    publish_label: &str,
    started: Instant,
) {
    support::create(
        ns,
        &support::jsk(
            "auth",
            json!({
                "rotationInterval": "1h",
                "propagationDelay": "2s",
                "maxTokenLifetime": "1m",
                "publish": {"namespaceSelector": {"matchLabels": {"jwks": publish_label}}},
                "deletionPolicy": "Delete",
            }),
        ),
    )
    .await;
    let key = support::wait_ready(ns, "auth", "True", "KeysReady").await;
    eprintln!(
        "FIGURE helm install -> first JwtSigningKey Ready: {:.2?} (release {})",
        started.elapsed(),
        release.name
    );
    let first = key.status.unwrap().active_key_id.expect("activeKeyId");
    assert!(
        key.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f.contains("jwtkeys.dev")),
        "the finalizer was added (patch on jwtsigningkeys)"
    );
    let secret = support::secret_text(&ns.client, &ns.name, "auth-signing-key")
        .await
        .expect("the Secret");
    assert_eq!(secret["kid"], first);
    wait_for("the ConfigMap copy", support::REACT, || async {
        support::config_map_data(&ns.client, publish_ns, "auth-jwks").await
    })
    .await;
    support::wait_event(ns, "KeyCreated").await;

    // Leader election used the chart's Lease in the release namespace.
    let lease = Api::<Lease>::namespaced(ns.client.clone(), &release.namespace)
        .get(&release.fullname())
        .await
        .expect("the Lease");
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(format!("{}-pod", release.fullname()).as_str())
    );

    let rotated_at = Instant::now();
    support::annotate(ns, "auth", json!({"jwtkeys.dev/rotate": "1"})).await;
    let second = wait_for("the rotation", Duration::from_secs(60), || async {
        let key = support::api(ns).get("auth").await.ok()?;
        let active = key.status?.active_key_id?;
        (active != first).then_some(active)
    })
    .await;
    eprintln!(
        "FIGURE rotate annotation -> new key signing (propagationDelay 2s): {:.2?}",
        rotated_at.elapsed()
    );
    let copy = wait_for("the copy to publish both keys", support::REACT, || async {
        let data = support::config_map_data(&ns.client, publish_ns, "auth-jwks").await?;
        let kids = support::jwks_kids(&data);
        (kids.contains(&first) && kids.first() == Some(&second)).then_some(kids)
    })
    .await;
    assert_eq!(copy.len(), 2);

    // Deleting the key removes the copy in the other namespace (delete on configmaps).
    support::api(ns)
        .delete("auth", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the copy to be removed", support::REACT, || async {
        Api::<ConfigMap>::namespaced(ns.client.clone(), publish_ns)
            .get_opt("auth-jwks")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_chart_identity_with_cluster_wide_rbac_creates_publishes_and_rotates_keys() {
    with_temp_ns("chart-cluster", |ns| async move {
        install_crd(&ns.client).await;
        let label = common::random_suffix(8);
        let publish_ns = ns.extra("pub", &[("jwks", &label)]).await;
        support::accept_from(&ns.client, &publish_ns, Some(&format!("{}/*", ns.name))).await;
        let started = Instant::now();
        let release = Release::install(&ns, &[]);
        eprintln!(
            "FIGURE helm install (cluster-wide RBAC): {:.2?}",
            started.elapsed()
        );
        let identity = service_account_identity(&ns, &release.fullname()).await;
        // The chart watches all namespaces here; the operator is limited to this test's namespaces so
        // that it leaves the keys of tests running alongside alone. Same verbs, through the
        // ClusterRoleBinding.
        let operator = ChartOperator::start(
            &ns,
            &release,
            &identity,
            &[
                "--watch-namespace",
                &ns.name,
                "--watch-namespace",
                &publish_ns,
            ],
        )
        .await;
        create_rotate_and_delete_a_key(&ns, &release, &publish_ns, &label, started).await;
        assert!(
            !operator.logs().contains("Forbidden") && !operator.logs().contains("forbidden"),
            "no request was refused:\n{}",
            operator.logs()
        );
    })
    .await;
}

#[tokio::test]
async fn the_chart_identity_with_watch_namespaces_creates_publishes_and_rotates_keys() {
    with_temp_ns("chart-scoped-run", |ns| async move {
        install_crd(&ns.client).await;
        let label = common::random_suffix(8);
        let publish_ns = ns.extra("pub", &[("jwks", &label)]).await;
        support::accept_from(&ns.client, &publish_ns, Some(&format!("{}/*", ns.name))).await;
        let started = Instant::now();
        let release = Release::install(
            &ns,
            &[&format!("watchNamespaces={{{},{publish_ns}}}", ns.name)],
        );
        eprintln!(
            "FIGURE helm install (Roles in 2 namespaces): {:.2?}",
            started.elapsed()
        );
        let identity = service_account_identity(&ns, &release.fullname()).await;
        let operator = ChartOperator::start(&ns, &release, &identity, &[]).await;
        create_rotate_and_delete_a_key(&ns, &release, &publish_ns, &label, started).await;
        assert!(
            !operator.logs().to_lowercase().contains("forbidden"),
            "no request was refused:\n{}",
            operator.logs()
        );
    })
    .await;
}

#[tokio::test]
async fn the_chart_identity_is_refused_outside_its_rights() {
    with_temp_ns("chart-refused", |ns| async move {
        install_crd(&ns.client).await;
        let outside = ns.extra("outside", &[]).await;
        let release = Release::install(&ns, &[&format!("watchNamespaces={{{}}}", ns.name)]);
        let identity = service_account_identity(&ns, &release.fullname()).await;
        let client = identity.client.clone();
        let lp = ListParams::default();

        // Allowed: the watched namespace (a control, so that the refusals below are about rights).
        Api::<Secret>::namespaced(client.clone(), &ns.name)
            .list(&lp)
            .await
            .expect("listing Secrets in a watched namespace");

        // Outside watchNamespaces: nothing.
        let secrets_outside = Api::<Secret>::namespaced(client.clone(), &outside);
        assert!(is_forbidden(secrets_outside.list(&lp).await));
        assert!(is_forbidden(secrets_outside.get("any").await));
        let config_map =
            serde_json::from_value::<ConfigMap>(json!({"metadata": {"name": "x"}})).unwrap();
        assert!(is_forbidden(
            Api::<ConfigMap>::namespaced(client.clone(), &outside)
                .create(&PostParams::default(), &config_map)
                .await
        ));
        assert!(is_forbidden(
            Api::<JwtSigningKey>::namespaced(client.clone(), &outside)
                .list(&lp)
                .await
        ));
        // No cluster-wide reads of Secrets.
        assert!(is_forbidden(
            Api::<Secret>::all(client.clone()).list(&lp).await
        ));
        // In the watched namespace, only the verbs the operator uses: it deletes Secrets one by one
        // (a renamed key's old Secret), never a whole collection.
        assert!(is_forbidden(
            Api::<Secret>::namespaced(client.clone(), &ns.name)
                .delete_collection(&DeleteParams::default(), &lp)
                .await
        ));
        // Leases: only its own, only in the release namespace.
        let lease =
            serde_json::from_value::<Lease>(json!({"metadata": {"name": "other"}})).unwrap();
        assert!(is_forbidden(
            Api::<Lease>::namespaced(client.clone(), &outside)
                .create(&PostParams::default(), &lease)
                .await
        ));
        assert!(is_forbidden(
            Api::<Lease>::namespaced(client.clone(), &ns.name)
                .get("kube-controller-manager")
                .await
        ));
        // Nothing else in the cluster.
        assert!(is_forbidden(
            Api::<Deployment>::namespaced(client.clone(), &ns.name)
                .list(&lp)
                .await
        ));
        assert!(is_forbidden(
            Api::<CustomResourceDefinition>::all(client.clone())
                .list(&lp)
                .await
        ));

        // The operator itself, told to watch a namespace the chart did not grant, stops at start-up
        // with a message saying why.
        let mut operator =
            ChartOperator::start(&ns, &release, &identity, &["--watch-namespace", &outside]).await;
        let code = operator.wait_exit(Duration::from_secs(30)).await;
        assert_eq!(code, Some(2), "exit code; log:\n{}", operator.logs());
        let logs = operator.logs();
        assert!(
            logs.contains("cannot list JwtSigningKeys") && logs.contains("forbidden"),
            "{logs}"
        );
    })
    .await;
}

/// A client for user `user` (in `system:authenticated`), impersonated by the admin.
async fn user_client(user: &str) -> Client {
    let mut config = common::admin_config().await;
    config.auth_info.impersonate = Some(user.into());
    config.auth_info.impersonate_groups = Some(vec!["system:authenticated".into()]);
    Client::try_from(config).unwrap()
}

/// Binds `user` to the built-in ClusterRole `role` in the test namespace.
async fn bind_user(ns: &TestNamespace, user: &str, role: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{user}-{role}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|err| panic!("binding {user} to {role}: {err}"));
}

#[tokio::test]
async fn a_user_with_the_built_in_edit_role_creates_keys_and_a_viewer_only_reads_them() {
    with_temp_ns("chart-user-rbac", |ns| async move {
        install_crd(&ns.client).await;
        let editor = format!("editor-{}", ns.name);
        let viewer = format!("viewer-{}", ns.name);
        bind_user(&ns, &editor, "edit").await;
        bind_user(&ns, &viewer, "view").await;
        let editor_client = user_client(&editor).await;
        let as_editor: Api<JwtSigningKey> = Api::namespaced(editor_client.clone(), &ns.name);
        let as_viewer: Api<JwtSigningKey> = Api::namespaced(user_client(&viewer).await, &ns.name);
        let key = support::jsk("auth", json!({}));

        // Before the chart: the binding is in force (the editor may create a ConfigMap), yet the
        // built-in edit role knows nothing of JwtSigningKeys. (Every other release the tests install
        // leaves the user roles out.)
        let config_map =
            serde_json::from_value::<ConfigMap>(json!({"metadata": {"name": "editor"}})).unwrap();
        wait_for(
            "the editor's RoleBinding to apply",
            Duration::from_secs(30),
            || async {
                match Api::<ConfigMap>::namespaced(editor_client.clone(), &ns.name)
                    .create(&PostParams::default(), &config_map)
                    .await
                {
                    Ok(_) => Some(()),
                    Err(kube::Error::Api(status)) if status.code == 403 => None,
                    Err(err) => panic!("creating a ConfigMap as the editor: {err}"),
                }
            },
        )
        .await;
        assert!(is_forbidden(
            as_editor.create(&PostParams::default(), &key).await
        ));

        let started = Instant::now();
        let _release = Release::install(
            &ns,
            &[
                &format!("watchNamespaces={{{}}}", ns.name),
                "rbac.aggregate.enabled=true",
            ],
        );
        // kube-controller-manager's clusterrole-aggregation controller copies the chart's rules into
        // the built-in roles; until then the editor is refused.
        wait_for(
            "the editor to be allowed to create a JwtSigningKey",
            Duration::from_secs(30),
            || async {
                match as_editor.create(&PostParams::default(), &key).await {
                    Ok(_) => Some(()),
                    Err(kube::Error::Api(status)) if status.code == 403 => None,
                    Err(err) => panic!("creating as the editor: {err}"),
                }
            },
        )
        .await;
        eprintln!(
            "FIGURE helm install -> edit users may create keys: {:.2?}",
            started.elapsed()
        );
        wait_for(
            "the viewer to be allowed to list JwtSigningKeys",
            Duration::from_secs(30),
            || async {
                match as_viewer.list(&ListParams::default()).await {
                    Ok(list) => Some(list),
                    Err(kube::Error::Api(status)) if status.code == 403 => None,
                    Err(err) => panic!("listing as the viewer: {err}"),
                }
            },
        )
        .await;
        as_viewer
            .get("auth")
            .await
            .expect("the viewer reads the key");

        // The viewer changes nothing.
        let other = support::jsk("other", json!({}));
        assert!(is_forbidden(
            as_viewer.create(&PostParams::default(), &other).await
        ));
        let rotate = json!({"metadata": {"annotations": {"jwtkeys.dev/rotate": "viewer"}}});
        assert!(is_forbidden(
            as_viewer
                .patch("auth", &PatchParams::default(), &Patch::Merge(&rotate))
                .await
        ));
        assert!(is_forbidden(
            as_viewer.delete("auth", &DeleteParams::default()).await
        ));

        // The editor changes and deletes keys; neither has rights in another namespace.
        let rotate = json!({"metadata": {"annotations": {"jwtkeys.dev/rotate": "editor"}}});
        as_editor
            .patch("auth", &PatchParams::default(), &Patch::Merge(&rotate))
            .await
            .expect("the editor annotates the key");
        as_editor
            .delete("auth", &DeleteParams::default())
            .await
            .expect("the editor deletes the key");
        let outside = ns.extra("outside", &[]).await;
        assert!(is_forbidden(
            Api::<JwtSigningKey>::namespaced(user_client(&editor).await, &outside)
                .create(&PostParams::default(), &key)
                .await
        ));
    })
    .await;
}

#[tokio::test]
async fn helm_upgrade_applies_changed_values_and_leaves_the_crd_in_place() {
    with_temp_ns("chart-upgrade", |ns| async move {
        install_crd(&ns.client).await;
        let release = Release::install(&ns, &[]);
        let fullname = release.fullname();
        let chart = chart_dir();
        let started = Instant::now();
        helm_ok(&[
            "upgrade",
            &release.name,
            chart.to_str().unwrap(),
            "--namespace",
            &release.namespace,
            "--reuse-values",
            "--set",
            "replicaCount=2",
            "--set",
            &format!("watchNamespaces={{{}}}", ns.name),
            "--set",
            "logFormat=text",
        ]);
        eprintln!("FIGURE helm upgrade: {:.2?}", started.elapsed());

        let deployment = Api::<Deployment>::namespaced(ns.client.clone(), &ns.name)
            .get(&fullname)
            .await
            .unwrap();
        assert_eq!(deployment.spec.replicas, Some(2));
        let container = &deployment.spec.template.spec.unwrap().containers[0];
        let env: BTreeMap<String, Option<String>> = container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        assert_eq!(env["WATCH_NAMESPACES"].as_deref(), Some(ns.name.as_str()));
        assert_eq!(env["LOG_FORMAT"].as_deref(), Some("text"));

        // The cluster-wide rights were replaced by a Role in the watched namespace.
        let role_exists = |kind: &'static str| {
            let args = match kind {
                "clusterrole" => vec!["get", "clusterrole", fullname.as_str()],
                _ => vec!["get", "role", fullname.as_str(), "-n", ns.name.as_str()],
            };
            common::kubectl()
                .args(args)
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(!role_exists("clusterrole"), "the ClusterRole is gone");
        assert!(role_exists("role"), "the Role is there");

        let (_, history, _) = helm(&[
            "history",
            &release.name,
            "--namespace",
            &release.namespace,
            "-o",
            "json",
        ]);
        let history: Value = serde_json::from_str(&history).unwrap();
        assert_eq!(history.as_array().unwrap().len(), 2, "{history}");

        let crd = Api::<CustomResourceDefinition>::all(ns.client.clone())
            .get("jwtsigningkeys.jwtkeys.dev")
            .await
            .expect("the CRD is still installed");
        assert!(crd.metadata.deletion_timestamp.is_none());
    })
    .await;
}
