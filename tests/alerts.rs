//! The chart's PrometheusRule (`prometheusRule.enabled`) checked with promtool, built from its own pin
//! (`tests/control-plane/build --promtool`): `promtool check rules` on the rendered rules, and
//! `promtool test rules` with the series an operator really exported in an end-to-end run (its
//! `/metrics` text, names and labels as scraped), replayed once as they were (no alert fires) and
//! once pushed into each alert's condition (each alert fires, with the labels the scrape implies). A
//! rule that names a metric or label the operator does not export finds no series and fails. The
//! run makes every series exist: a copy namespace whose quota refuses ConfigMaps, a namespace whose
//! quota refuses Secrets, and a watched namespace without the operator's RoleBinding.
//! Also: the project's helm renders the chart without `--kube-version`.

mod common;
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use common::{install_crd, wait_for, with_temp_ns};
use k8s_openapi::api::{core::v1::ResourceQuota, rbac::v1::RoleBinding};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::{Value, json};

const RELEASE: &str = "jko";
/// The job the rules select by default: the ServiceMonitor's, the release's full name.
const JOB: &str = "jko-jwt-key-operator";

fn chart() -> PathBuf {
    common::repo_root().join("charts/jwt-key-operator")
}

/// promtool, built once per test process (cached across runs under its own pin hash).
fn promtool() -> PathBuf {
    static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();
    PROMTOOL
        .get_or_init(|| {
            let build = common::repo_root().join("tests/control-plane/build");
            let output = Command::new(&build)
                .arg("--promtool")
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("running tests/control-plane/build --promtool");
            assert!(output.status.success(), "building promtool failed");
            let path = String::from_utf8_lossy(&output.stdout)
                .lines()
                .last()
                .expect("the promtool path")
                .to_string();
            PathBuf::from(path)
        })
        .clone()
}

/// `helm template` of the chart with `values`; returns every document.
fn render(values: &[&str]) -> Vec<Value> {
    let mut helm = common::helm();
    helm.args(["template", RELEASE])
        .arg(chart())
        .args(["--kube-version", &common::kube_version()]);
    for value in values {
        helm.args(["--set", value]);
    }
    let output = helm.output().expect("running helm template");
    assert!(
        output.status.success(),
        "helm template {values:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_saphyr::from_multiple::<Value>(&String::from_utf8_lossy(&output.stdout))
        .expect("helm renders YAML")
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

fn prometheus_rule(values: &[&str]) -> Value {
    let mut all = vec!["prometheusRule.enabled=true"];
    all.extend_from_slice(values);
    let docs = render(&all);
    let rules: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "PrometheusRule")
        .collect();
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    rules[0].clone()
}

fn run(command: &mut Command) -> (bool, String) {
    let output = command.output().expect("running promtool");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Writes the rule groups of a PrometheusRule as a Prometheus rules file (JSON is YAML).
fn write_rules(dir: &Path, name: &str, rule: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, json!({"groups": rule["spec"]["groups"]}).to_string()).unwrap();
    path
}

/// The alert names of a PrometheusRule.
fn alert_names(rule: &Value) -> Vec<String> {
    rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_projects_helm_renders_and_lints_the_chart_without_a_kube_version() {
    // helm's default Kubernetes version is set when helm is built (tests/control-plane/build), as
    // in a released helm: a plain build assumes 1.20, which the chart's kubeVersion refuses.
    for args in [&["template", RELEASE][..], &["lint"]] {
        let output = common::helm()
            .args(args)
            .arg(chart())
            .output()
            .expect("running helm");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "helm {args:?}: {text}");
        assert!(!text.contains("kubeVersion"), "helm {args:?}: {text}");
    }
}

#[tokio::test]
async fn the_prometheus_rule_is_off_by_default_and_passes_promtool_check_rules() {
    assert!(
        !render(&[]).iter().any(|d| d["kind"] == "PrometheusRule"),
        "off by default"
    );
    for (bad, named) in [
        ("prometheusRule.selector=job", "selector"),
        (
            "prometheusRule.publishedKeysWarning=65",
            "publishedKeysWarning",
        ),
        ("prometheusRule.writeFailureFor=soon", "writeFailureFor"),
    ] {
        let output = common::helm()
            .args(["template", RELEASE])
            .arg(chart())
            .args(["--set", "prometheusRule.enabled=true", "--set", bad])
            .output()
            .expect("running helm");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(named),
            "{bad}: {stderr}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    for values in [
        &[][..],
        &[
            "prometheusRule.selector=namespace=\"ops\"\\,job=~\"jko.*\"",
            "prometheusRule.runbookUrl=https://runbooks.example/jwt",
            "prometheusRule.alertLabels.team=platform",
        ],
    ] {
        let rule = prometheus_rule(values);
        assert_eq!(
            alert_names(&rule),
            [
                "JwtKeysRotationOverdue",
                "JwtKeysPublishFailing",
                "JwtKeysSecretWriteFailing",
                "JwtKeysNoLeader",
                "JwtKeysWatchFailing",
                "JwtKeysNearKeyLimit"
            ]
        );
        let rules = write_rules(dir.path(), "rules.yaml", &rule);
        let (ok, output) = run(Command::new(promtool())
            .args(["check", "rules"])
            .arg(&rules));
        assert!(ok, "promtool check rules {values:?}:\n{output}");
        for alert in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
            let name = alert["alert"].as_str().unwrap().to_lowercase();
            // Each alert names its runbook section, and docs/operations.md has it.
            assert_eq!(
                alert["annotations"]["runbook"],
                json!(format!("docs/operations.md#{name}"))
            );
            let docs =
                std::fs::read_to_string(common::repo_root().join("docs/operations.md")).unwrap();
            assert!(
                docs.to_lowercase().contains(&format!("### {name}\n")),
                "docs/operations.md has no section for {name}"
            );
            if !values.is_empty() {
                assert_eq!(alert["labels"]["team"], "platform");
                assert!(
                    alert["expr"]
                        .as_str()
                        .unwrap()
                        .contains("namespace=\"ops\",job=~\"jko.*\""),
                    "{alert}"
                );
                assert_eq!(
                    alert["annotations"]["runbook_url"],
                    json!(format!("https://runbooks.example/jwt#{name}"))
                );
            }
        }
    }
}

/// One scraped sample: its name and labels (as in the exposition text).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: String,
}

impl Sample {
    /// The series in PromQL notation, with the job label a scrape adds.
    fn series(&self) -> String {
        let mut labels = self.labels.clone();
        labels.insert("job".into(), JOB.into());
        let inner: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", json!(v)))
            .collect();
        format!("{}{{{}}}", self.name, inner.join(","))
    }

    fn label(&self, name: &str) -> String {
        self.labels.get(name).cloned().unwrap_or_default()
    }
}

/// The samples of a Prometheus/OpenMetrics text exposition.
fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let mut map = BTreeMap::new();
            // Values here hold no commas or escaped quotes (names, kids, numbers).
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=')?;
                map.insert(k.to_string(), v.trim_matches('"').to_string());
            }
            Some(Sample {
                name: name.to_string(),
                labels: map,
                value: value.to_string(),
            })
        })
        .collect()
}

async fn quota(ns: &common::TestNamespace, namespace: &str, resource: &str) {
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "none"},
        "spec": {"hard": {resource: "0"}},
    }))
    .unwrap();
    Api::<ResourceQuota>::namespaced(ns.client.clone(), namespace)
        .create(&PostParams::default(), &quota)
        .await
        .expect("creating a ResourceQuota");
}

#[tokio::test]
async fn every_alert_fires_on_the_operators_real_metrics_and_none_while_healthy() {
    with_temp_ns("alerts", |ns| async move {
        install_crd(&ns.client).await;
        // A copy namespace that accepts the key but allows no new ConfigMap (publish fails), and a
        // namespace that allows no Secret (the Secret write fails).
        let copy = ns.extra("copy", &[("jwks", "auth")]).await;
        support::accept_from(&ns.client, &copy, Some(&format!("{}/auth", ns.name))).await;
        quota(&ns, &copy, "count/configmaps").await;
        let blocked = ns.extra("blocked", &[]).await;
        quota(&ns, &blocked, "count/secrets").await;
        // A namespace the operator watches without the rights to (its RoleBinding deleted before
        // the operator starts again): its lists fail.
        let deaf = ns.extra("deaf", &[]).await;
        let mut operator = support::operator(&[&ns.name, &copy, &blocked, &deaf]);
        operator.tolerate_refusals();
        support::create(
            &ns,
            &support::jsk("auth", support::publish_to_copies(json!({}))),
        )
        .await;
        Api::<jwt_key_operator::crd::JwtSigningKey>::namespaced(ns.client.clone(), &blocked)
            .create(&PostParams::default(), &support::jsk("blocked", json!({})))
            .await
            .unwrap();
        let first = wait_for(
            "the operator to count a publish failure and a Secret write failure",
            support::REACT,
            || async {
                let text = support::metrics(&operator).await;
                (text.contains("error=\"PublishFailed\"")
                    && text.contains("error=\"ApplySecret\"")
                    && text.contains("jwtkeys_next_rotation_timestamp_seconds{"))
                .then_some(text)
            },
        )
        .await;
        // A process whose lists keep failing reconciles nothing (it waits for its caches): its
        // watch errors come from a second scrape, as another instance of the same job.
        Api::<RoleBinding>::namespaced(ns.client.clone(), &deaf)
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .expect("deleting the operator's RoleBinding");
        operator.restart();
        // The scrape finds the port in the log: the new process's, once it serves.
        wait_for(
            "the restarted operator to serve /metrics",
            support::REACT,
            || async { (operator.logs().matches("serving /metrics").count() >= 2).then_some(()) },
        )
        .await;
        let second = wait_for(
            "the operator to count failed lists",
            support::REACT,
            || async {
                let text = support::metrics(&operator).await;
                text.contains("jwtkeys_watch_errors_total{").then_some(text)
            },
        )
        .await;
        let body_of = |text: &str| text.split("\r\n\r\n").nth(1).unwrap_or(text).to_string();
        let with_instance = |mut sample: Sample, instance: &str| {
            sample.labels.insert("instance".into(), instance.into());
            sample
        };
        let mut samples: Vec<Sample> = parse_exposition(&body_of(&first))
            .into_iter()
            .map(|s| with_instance(s, "a"))
            .collect();
        samples.extend(
            parse_exposition(&body_of(&second))
                .into_iter()
                .filter(|s| s.name == "jwtkeys_watch_errors_total")
                .map(|s| with_instance(s, "b")),
        );
        let body = format!("{}\n{}", body_of(&first), body_of(&second));
        let of =
            |name: &str| -> Vec<&Sample> { samples.iter().filter(|s| s.name == name).collect() };

        let watch: Vec<Sample> = of("jwtkeys_watch_errors_total")
            .into_iter()
            .cloned()
            .collect();
        let all = samples.clone();

        // As scraped: constant values for two hours.
        let steady = |s: &Sample| format!("{}+0x120", s.value);
        // Each alert's condition: the rotation time at 0 (long past), errors growing, no leader,
        // 60 published keys.
        let failing = |s: &Sample| match s.name.as_str() {
            "jwtkeys_next_rotation_timestamp_seconds" | "jwtkeys_leader" => "0+0x120".to_string(),
            "jwtkeys_reconcile_errors_total" | "jwtkeys_watch_errors_total" => {
                format!("{}+1x120", s.value)
            }
            "jwtkeys_published_keys" => "60+0x120".to_string(),
            _ => steady(s),
        };
        let input = |values: &dyn Fn(&Sample) -> String| -> Vec<Value> {
            all.iter()
                .map(|s| json!({"series": s.series(), "values": values(s)}))
                .collect()
        };

        // What each alert must report, derived from the scraped series.
        let with = |labels: BTreeMap<String, String>, severity: &str| {
            let mut labels = labels;
            labels.insert("severity".into(), severity.into());
            json!({"exp_labels": labels})
        };
        let per_series = |name: &str, severity: &str| -> Vec<Value> {
            of(name)
                .into_iter()
                .map(|s| {
                    let mut labels = s.labels.clone();
                    labels.insert("job".into(), JOB.into());
                    with(labels, severity)
                })
                .collect()
        };
        let per_key = |errors: &[&str]| -> Vec<Value> {
            let keys: BTreeSet<(String, String)> = of("jwtkeys_reconcile_errors_total")
                .into_iter()
                .filter(|s| errors.contains(&s.label("error").as_str()))
                .map(|s| (s.label("namespace"), s.label("name")))
                .collect();
            keys.into_iter()
                .map(|(namespace, name)| {
                    with(
                        BTreeMap::from([("namespace".into(), namespace), ("name".into(), name)]),
                        "critical",
                    )
                })
                .collect()
        };
        let expected: Vec<(&str, Vec<Value>)> = vec![
            (
                "JwtKeysRotationOverdue",
                per_series("jwtkeys_next_rotation_timestamp_seconds", "warning"),
            ),
            (
                "JwtKeysPublishFailing",
                per_key(&["PublishFailed", "DeleteConfigMap", "GetConfigMap"]),
            ),
            (
                "JwtKeysSecretWriteFailing",
                per_key(&["ApplySecret", "GetSecret"]),
            ),
            ("JwtKeysNoLeader", vec![with(BTreeMap::new(), "critical")]),
            (
                "JwtKeysWatchFailing",
                watch
                    .iter()
                    .map(|s| {
                        with(
                            BTreeMap::from([("resource".into(), s.label("resource"))]),
                            "warning",
                        )
                    })
                    .collect(),
            ),
            (
                "JwtKeysNearKeyLimit",
                per_series("jwtkeys_published_keys", "warning"),
            ),
        ];
        for (alert, alerts) in &expected {
            assert!(
                !alerts.is_empty(),
                "{alert}: no series in the scrape:\n{body}"
            );
        }
        assert!(
            expected[1]
                .1
                .iter()
                .any(|a| a["exp_labels"]["name"] == "auth")
                && expected[2]
                    .1
                    .iter()
                    .any(|a| a["exp_labels"]["name"] == "blocked"),
            "{expected:?}"
        );

        // Annotations are compared exactly by promtool: the unit test runs the rules without them
        // (their templates are checked by `promtool check rules` above and below).
        let dir = tempfile::tempdir().unwrap();
        let mut rule = prometheus_rule(&[]);
        let full = write_rules(dir.path(), "full.yaml", &rule);
        let (ok, output) = run(Command::new(promtool()).args(["check", "rules"]).arg(&full));
        assert!(ok, "{output}");
        for alert in rule["spec"]["groups"][0]["rules"].as_array_mut().unwrap() {
            alert.as_object_mut().unwrap().remove("annotations");
        }
        let rules = write_rules(dir.path(), "rules.yaml", &rule);
        let at = "60m";
        let tests = json!({
            "rule_files": [rules],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "name": "as scraped",
                    "interval": "1m",
                    "input_series": input(&steady),
                    "alert_rule_test": expected.iter().map(|(alert, _)| json!({
                        "eval_time": at, "alertname": alert, "exp_alerts": [],
                    })).collect::<Vec<_>>(),
                },
                {
                    "name": "failing",
                    "interval": "1m",
                    "input_series": input(&failing),
                    "alert_rule_test": expected.iter().map(|(alert, alerts)| json!({
                        "eval_time": at, "alertname": alert, "exp_alerts": alerts,
                    })).collect::<Vec<_>>(),
                },
            ],
        });
        let test_file = dir.path().join("tests.yaml");
        std::fs::write(&test_file, tests.to_string()).unwrap();
        let (ok, output) = run(Command::new(promtool())
            .args(["test", "rules"])
            .arg(&test_file));
        assert!(
            ok,
            "promtool test rules:\n{output}\nscraped /metrics:\n{body}"
        );
        eprintln!("promtool test rules: {}", output.trim());
    })
    .await;
}
