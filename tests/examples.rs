//! Every YAML file under `examples/` parses, every document in it is accepted by the real API server
//! (server-side apply, dry run), and every JwtSigningKey in it deserializes into the Rust type, so the
//! examples the docs point to never rot.
//!
//! Documents are applied into a temporary namespace: a namespaced document's own
//! `metadata.namespace` is dropped (the examples are written for namespaces such as `auth` and `api`
//! that the test cluster does not have); cluster-scoped documents (Namespaces) are dry-run as they are.
//!
//! The verifier examples use other projects' kinds (Istio, Envoy Gateway, Gateway API). Those are
//! listed by name in [`FOREIGN_KINDS`]. The projects publish their CRDs in Go modules
//! ([`FOREIGN_CRDS`]); the test downloads those with `go mod download` and installs the CRDs, so
//! that the examples are dry-run against the published schemas. Where that is not possible (no
//! `go`, no module proxy) the documents of those kinds are parsed and checked for the fields the
//! docs rely on, and each skipped dry run is reported by name. Any other kind the API server does
//! not serve fails the test.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use clap::Parser;
use common::{install_crd, with_temp_ns};
use jwt_key_operator::crd::JwtSigningKey;
use serde_json::Value;

/// Every `.yaml`/`.yml` file under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
    {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The non-empty documents of a YAML file.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    // Empty documents are skipped.
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// Kinds of other projects that the examples use, as (apiVersion, kind), with the CRDs that
/// define them. The local control plane has none of these CRDs installed.
const FOREIGN_KINDS: &[(&str, &str, &str)] = &[
    ("security.istio.io/v1", "RequestAuthentication", "Istio"),
    ("security.istio.io/v1", "AuthorizationPolicy", "Istio"),
    (
        "gateway.envoyproxy.io/v1alpha1",
        "SecurityPolicy",
        "Envoy Gateway",
    ),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", "Gateway API"),
    (
        "gateway.networking.k8s.io/v1beta1",
        "ReferenceGrant",
        "Gateway API",
    ),
];

/// The Go modules, pinned, in which those projects publish the CRDs of [`FOREIGN_KINDS`], and the
/// CRD files in them.
const FOREIGN_CRDS: &[(&str, &str, &[&str])] = &[
    (
        "istio.io/api",
        "v1.32.0",
        &["kubernetes/customresourcedefinitions.gen.yaml"],
    ),
    (
        "sigs.k8s.io/gateway-api",
        "v1.6.3",
        &[
            "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml",
            "config/crd/standard/gateway.networking.k8s.io_referencegrants.yaml",
        ],
    ),
    (
        "github.com/envoyproxy/gateway",
        "v1.5.0",
        &["charts/gateway-helm/crds/generated/gateway.envoyproxy.io_securitypolicies.yaml"],
    ),
];

/// Where `go mod download` put `module@version`.
fn go_module_dir(module: &str, version: &str) -> Result<PathBuf, String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let output = Command::new("go")
        .args(["mod", "download", "-json", &format!("{module}@{version}")])
        .current_dir(scratch.path())
        .output()
        .map_err(|e| format!("cannot run go: {e}"))?;
    let answer: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "go mod download said nothing usable ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    match answer["Dir"].as_str() {
        Some(dir) if output.status.success() => Ok(PathBuf::from(dir)),
        _ => Err(format!("go mod download failed: {}", answer["Error"])),
    }
}

/// Installs the CRDs of [`FOREIGN_CRDS`] that can be downloaded (cluster-wide; no other test uses
/// these kinds) and waits until they are established.
fn install_foreign_crds() {
    for (module, version, files) in FOREIGN_CRDS {
        let dir = match go_module_dir(module, version) {
            Ok(dir) => dir,
            Err(why) => {
                eprintln!("cannot get the CRDs of {module}@{version}: {why}");
                continue;
            }
        };
        for file in *files {
            let path = dir.join(file);
            for args in [
                &[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager",
                    common::TEST_MANAGER,
                ][..],
                &["wait", "--for", "condition=established", "--timeout=60s"][..],
            ] {
                // `kubectl wait` fails rather than waits while a new CRD has no status yet.
                let mut attempts = 0;
                let output = loop {
                    let output = common::kubectl()
                        .args(args)
                        .arg("-f")
                        .arg(&path)
                        .output()
                        .unwrap();
                    let no_status_yet = String::from_utf8_lossy(&output.stderr)
                        .contains(".status.conditions accessor error");
                    attempts += 1;
                    if output.status.success() || !no_status_yet || attempts == 50 {
                        break output;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                };
                assert!(
                    output.status.success(),
                    "kubectl {} -f {}: {}",
                    args[0],
                    path.display(),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        eprintln!("installed the CRDs of {module}@{version}: {files:?}");
    }
}

fn foreign_project(doc: &Value) -> Option<&'static str> {
    FOREIGN_KINDS
        .iter()
        .find(|(api_version, kind, _)| doc["apiVersion"] == *api_version && doc["kind"] == *kind)
        .map(|(_, _, project)| *project)
}

/// Whether the API server serves `kind` in `api_version`.
async fn served(client: &kube::Client, api_version: &str, kind: &str) -> bool {
    let resources = if api_version.contains('/') {
        client.list_api_group_resources(api_version).await
    } else {
        client.list_core_api_resources(api_version).await
    };
    resources.is_ok_and(|list| list.resources.iter().any(|r| r.kind == kind))
}

/// The fields of the verifier examples that docs/consumers.md relies on: each points its verifier at
/// the serve-jwks Service (or, for oauth2-proxy, the issuer it serves discovery for).
fn check_verifier_example(file: &Path, doc: &Value) {
    const JWKS_URI: &str = "http://jwks-endpoint.auth.svc.cluster.local/.well-known/jwks.json";
    const ISSUER: &str = "https://auth.example";
    let what = format!("{}: {}", file.display(), describe(doc));
    match doc["kind"].as_str().unwrap_or_default() {
        "RequestAuthentication" => {
            let rule = &doc["spec"]["jwtRules"][0];
            assert_eq!(rule["jwksUri"], JWKS_URI, "{what}");
            assert_eq!(rule["issuer"], ISSUER, "{what}");
        }
        "AuthorizationPolicy" => {
            let principals = &doc["spec"]["rules"][0]["from"][0]["source"]["requestPrincipals"];
            assert_eq!(
                principals,
                &serde_json::json!([format!("{ISSUER}/*")]),
                "{what}"
            );
        }
        "SecurityPolicy" => {
            let provider = &doc["spec"]["jwt"]["providers"][0];
            assert_eq!(provider["remoteJWKS"]["uri"], JWKS_URI, "{what}");
            assert_eq!(provider["issuer"], ISSUER, "{what}");
        }
        "Deployment" if doc["metadata"]["name"] == "oauth2-proxy" => {
            let args = &doc["spec"]["template"]["spec"]["containers"][0]["args"];
            assert!(
                args.as_array()
                    .unwrap()
                    .contains(&Value::from(format!("--extra-jwt-issuers={ISSUER}=api"))),
                "{what}: {args}"
            );
        }
        "Deployment" if doc["metadata"]["name"] == "jwks-endpoint" => {
            let container = &doc["spec"]["template"]["spec"]["containers"][0];
            let args: Vec<&str> = container["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(args[0], "serve-jwks", "{what}");
            assert!(args.contains(&"--dir=/jwks"), "{what}: {args:?}");
            assert!(
                args.contains(&format!("--issuer={ISSUER}").as_str()),
                "{what}: {args:?}"
            );
            // The flags parse as the binary parses them.
            jwt_key_operator::cli::Cli::try_parse_from(
                std::iter::once("jwt-key-operator").chain(args.iter().copied()),
            )
            .unwrap_or_else(|e| panic!("{what}: the arguments do not parse: {e}"));
        }
        _ => {}
    }
}

fn describe(doc: &Value) -> String {
    format!("{} {}", doc["kind"], doc["metadata"]["name"])
}

#[test]
fn every_example_parses_and_every_signing_key_is_a_valid_jwt_signing_key() {
    let files = yaml_files(&common::repo_root().join("examples"));
    assert!(files.len() >= 3, "examples found: {files:?}");
    let mut signing_keys = 0;
    for file in &files {
        let docs = documents(file);
        assert!(!docs.is_empty(), "{} has no document", file.display());
        for doc in docs {
            for field in ["apiVersion", "kind"] {
                assert!(
                    doc[field].is_string(),
                    "{}: a document without {field}",
                    file.display()
                );
            }
            assert!(
                doc["metadata"]["name"].is_string(),
                "{}: {} has no name",
                file.display(),
                doc["kind"]
            );
            check_verifier_example(file, &doc);
            if doc["kind"] == "JwtSigningKey" {
                let key: JwtSigningKey = serde_json::from_value(doc.clone())
                    .unwrap_or_else(|e| panic!("{}: not a JwtSigningKey: {e}", file.display()));
                key.spec.timing().unwrap_or_else(|e| {
                    panic!(
                        "{}: the JwtSigningKey's timing is invalid: {e}",
                        file.display()
                    )
                });
                signing_keys += 1;
            }
        }
    }
    assert!(signing_keys >= 1, "no JwtSigningKey among the examples");
}

#[tokio::test]
async fn every_example_document_is_accepted_by_the_api_server() {
    with_temp_ns("examples", |ns| async move {
        install_crd(&ns.client).await;
        install_foreign_crds();
        let dir = tempfile::tempdir().unwrap();
        let mut skipped = Vec::new();
        for file in yaml_files(&common::repo_root().join("examples")) {
            for (index, mut doc) in documents(&file).into_iter().enumerate() {
                if let Some(project) = foreign_project(&doc) {
                    let api_version = doc["apiVersion"].as_str().unwrap();
                    let kind = doc["kind"].as_str().unwrap();
                    if !served(&ns.client, api_version, kind).await {
                        eprintln!(
                            "SKIPPED server dry run of {} ({}): {kind}.{api_version} ({project}) \
                             is not installed on the test cluster; parsed and checked only",
                            file.display(),
                            describe(&doc)
                        );
                        skipped.push(describe(&doc));
                        continue;
                    }
                }
                if let Some(metadata) = doc["metadata"].as_object_mut() {
                    metadata.remove("namespace");
                }
                let path = dir.path().join(format!("doc-{index}.yaml"));
                std::fs::write(&path, serde_saphyr::to_string(&doc).unwrap()).unwrap();
                let output = common::kubectl()
                    .args(["apply", "--server-side", "--dry-run=server"])
                    .args(["--field-manager", common::TEST_MANAGER])
                    .args(["-n", &ns.name, "-f"])
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(
                    output.status.success(),
                    "{} ({}): refused by the API server: {}",
                    file.display(),
                    describe(&doc),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        eprintln!(
            "examples: {} foreign documents not dry-run (CRD absent): {skipped:?}",
            skipped.len()
        );
    })
    .await;
}
