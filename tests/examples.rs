//! Every YAML file under `examples/` parses, every document in it is accepted by the real API server
//! (server-side apply, dry run), and every JwtSigningKey in it deserializes into the Rust type, so the
//! examples the docs point to never rot.
//!
//! Documents are applied into a temporary namespace: a namespaced document's own
//! `metadata.namespace` is dropped (the examples are written for namespaces such as `auth` and `api`
//! that the test cluster does not have); cluster-scoped documents (Namespaces) are dry-run as they are.

mod common;

use std::path::{Path, PathBuf};

use common::{install_crd, with_temp_ns};
use jwt_key_operator::crd::JwtSigningKey;
use serde::Deserialize;
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
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        })
        .filter(|doc| !doc.is_null())
        .collect()
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
        let dir = tempfile::tempdir().unwrap();
        for file in yaml_files(&common::repo_root().join("examples")) {
            for (index, mut doc) in documents(&file).into_iter().enumerate() {
                if let Some(metadata) = doc["metadata"].as_object_mut() {
                    metadata.remove("namespace");
                }
                let path = dir.path().join(format!("doc-{index}.yaml"));
                std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
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
    })
    .await;
}
