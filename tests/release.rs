//! `scripts/release` builds what a release publishes, and what it builds installs.
//!
//! The script runs with `--keep-changelog` into a temporary folder. Every artifact is checked: the
//! image archives are valid OCI image layouts (every digest and size matches its blob; the config
//! runs the binary as user 65532), the checksums file verifies, the SBOM lists the crates that
//! `Cargo.lock` pins (and no dev-dependency), the CRD is the generated one, the packaged chart has
//! the release's version and appVersion and its image defaults to that version. Then the packaged
//! chart is installed with `helm install` on the control plane. With the test node (`JKO_NODE=1`,
//! as `tests/pods.rs`) the operator image is imported from the archive into the node's containerd,
//! the chart's pod runs it, and a key created in its namespace becomes Ready; without the node the
//! test checks the installed Deployment and says that the pod part was skipped.
//!
//! Without the node the binaries are built with the `dev` profile (`RELEASE_PROFILE=dev`), to spare
//! a release build that nothing here would run; with the node, the release build is the one the
//! node's images already use.

mod common;
mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{repo_root, wait_for, with_temp_ns};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, api::DeleteParams};
use serde_json::{Value, json};
use support::*;

const VERSION: &str = "0.0.0-test.1";

fn sha256_hex(data: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Checks an OCI image layout archive and returns its image config. `name` is the image name the
/// archive carries (`io.containerd.image.name`), `binary` a file the layer must hold.
fn check_oci_archive(archive: &Path, name: &str, binary: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir.path()));
    let read =
        |path: &str| std::fs::read(dir.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let layout: Value = serde_json::from_slice(&read("oci-layout")).expect("oci-layout is JSON");
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    // Every blob is named by its own digest.
    for entry in std::fs::read_dir(dir.path().join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(
            sha256_hex(&std::fs::read(&path).unwrap()),
            name,
            "blob {name}"
        );
    }
    let blob = |descriptor: &Value| -> Vec<u8> {
        let digest = descriptor["digest"].as_str().expect("a digest");
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        let data = read(&format!("blobs/sha256/{hex}"));
        assert_eq!(
            Some(data.len() as u64),
            descriptor["size"].as_u64(),
            "size of {digest}"
        );
        data
    };
    let index: Value = serde_json::from_slice(&read("index.json")).expect("index.json is JSON");
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "one image in {}", archive.display());
    let descriptor = &manifests[0];
    assert_eq!(descriptor["annotations"]["io.containerd.image.name"], name);
    assert_eq!(
        descriptor["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let manifest: Value = serde_json::from_slice(&blob(descriptor)).expect("manifest JSON");
    let config: Value = serde_json::from_slice(&blob(&manifest["config"])).expect("config JSON");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    let layer = blob(&layers[0]);
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", sha256_hex(&layer)),
        "the layer's diff id"
    );
    let layer_path = dir.path().join("layer.tar");
    std::fs::write(&layer_path, layer).unwrap();
    let files = run(Command::new("tar").arg("-tf").arg(&layer_path));
    assert!(
        files.lines().any(|f| f == binary.trim_start_matches('/')),
        "{binary} in the layer of {}",
        archive.display()
    );
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["os"], "linux");
    config
}

/// Runs `scripts/release VERSION --keep-changelog --out <dir>`.
fn release(out: &Path, repository: &str, profile: &str) {
    let changelog = std::fs::read_to_string(repo_root().join("CHANGELOG.md")).unwrap();
    let helm = repo_root().join("target/control-plane/bin/helm");
    run(Command::new(repo_root().join("scripts/release"))
        .args([VERSION, "--keep-changelog", "--out"])
        .arg(out)
        .current_dir(repo_root())
        .env("IMAGE_REPOSITORY", repository)
        .env("EXAMPLES_IMAGE_REPOSITORY", "localhost/jwt-keys-examples")
        .env("RELEASE_PROFILE", profile)
        .env("HELM", helm));
    assert_eq!(
        std::fs::read_to_string(repo_root().join("CHANGELOG.md")).unwrap(),
        changelog,
        "--keep-changelog left CHANGELOG.md as it was"
    );
}

fn artifact(out: &Path, name: &str) -> PathBuf {
    let path = out.join(name);
    assert!(path.is_file(), "the release has {name}");
    path
}

/// The locked version of each crate of Cargo.lock (several versions of one crate are all kept).
fn locked_versions() -> BTreeMap<String, Vec<String>> {
    let lock = std::fs::read_to_string(repo_root().join("Cargo.lock")).unwrap();
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            package
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        if let (Some(name), Some(version)) = (field("name"), field("version")) {
            versions.entry(name).or_default().push(version);
        }
    }
    versions
}

/// A Helm release that is uninstalled when the test ends, passed or failed: its ClusterRole for
/// Namespaces would outlive the test's namespace otherwise.
struct Installed {
    release: String,
    namespace: String,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let output = common::helm()
            .args(["uninstall", &self.release, "--namespace", &self.namespace])
            .output();
        if let Ok(output) = output
            && !output.status.success()
        {
            eprintln!(
                "helm uninstall {}: {}",
                self.release,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

#[tokio::test]
async fn the_release_script_builds_artifacts_that_install() {
    with_temp_ns("release", |ns| async move {
        let node = common::missing_node(&ns.client).await;
        let (repository, profile) = match &node {
            None => ("localhost/jwt-key-operator-release", "release"),
            Some(_) => ("registry.example.com/platform/jwt-key-operator", "dev"),
        };
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path();
        release(out, repository, profile);

        // Checksums.
        let sums = std::fs::read_to_string(artifact(out, "SHA256SUMS")).unwrap();
        let listed: Vec<&str> = sums
            .lines()
            .map(|l| l.split("  ").nth(1).unwrap())
            .collect();
        let operator_archive = format!("jwt-key-operator-{VERSION}.oci.tar");
        let examples_archive = format!("jwt-keys-examples-{VERSION}.oci.tar");
        let chart = format!("jwt-key-operator-{VERSION}.tgz");
        let sbom = format!("jwt-key-operator-{VERSION}.cdx.json");
        let entry = format!("CHANGELOG-{VERSION}.md");
        for name in [
            operator_archive.as_str(),
            &examples_archive,
            &chart,
            &sbom,
            &entry,
            "jwtsigningkeys.yaml",
        ] {
            assert!(
                listed.contains(&name),
                "SHA256SUMS lists {name}: {listed:?}"
            );
        }
        run(Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(out));

        // Images.
        let config = check_oci_archive(
            &artifact(out, &operator_archive),
            &format!("{repository}:{VERSION}"),
            "/usr/local/bin/jwt-key-operator",
        );
        assert_eq!(
            config["config"]["Entrypoint"],
            json!(["/usr/local/bin/jwt-key-operator"])
        );
        assert_eq!(config["config"]["Cmd"], json!(["run"]));
        check_oci_archive(
            &artifact(out, &examples_archive),
            &format!("localhost/jwt-keys-examples:{VERSION}"),
            "/usr/local/bin/auth_service",
        );

        // The CRD, the SBOM, the CHANGELOG entry.
        assert_eq!(
            std::fs::read_to_string(artifact(out, "jwtsigningkeys.yaml")).unwrap(),
            std::fs::read_to_string(repo_root().join("crds/jwtsigningkeys.yaml")).unwrap()
        );
        let bom: Value =
            serde_json::from_slice(&std::fs::read(artifact(out, &sbom)).unwrap()).unwrap();
        assert_eq!(bom["bomFormat"], "CycloneDX");
        assert_eq!(bom["metadata"]["component"]["name"], "jwt-key-operator");
        assert_eq!(bom["metadata"]["component"]["version"], VERSION);
        let locked = locked_versions();
        let components = bom["components"].as_array().expect("components");
        for component in components {
            let name = component["name"].as_str().unwrap();
            let version = component["version"].as_str().unwrap();
            assert!(
                locked
                    .get(name)
                    .is_some_and(|v| v.iter().any(|l| l == version)),
                "the SBOM's {name} {version} is what Cargo.lock pins"
            );
        }
        let names: Vec<&str> = components
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        for crate_name in ["kube", "aws-lc-rs", "tokio", "jwt-keys"] {
            assert!(names.contains(&crate_name), "the SBOM lists {crate_name}");
        }
        for dev_only in ["proptest", "tempfile", "rsa"] {
            assert!(
                !names.contains(&dev_only),
                "the SBOM leaves out the dev-dependency {dev_only}"
            );
        }
        let notes = std::fs::read_to_string(artifact(out, &entry)).unwrap();
        assert!(notes.starts_with(&format!("# jwt-key-operator {VERSION}\n")));
        assert!(
            notes.contains("### Added"),
            "the entry is the Unreleased section:\n{notes}"
        );

        // The packaged chart.
        let chart = artifact(out, &chart);
        let shown = run(common::helm().arg("show").arg("chart").arg(&chart));
        assert!(
            shown.contains(&format!("\nversion: {VERSION}\n")),
            "{shown}"
        );
        assert!(
            shown.contains(&format!("\nappVersion: {VERSION}\n")),
            "{shown}"
        );
        let watch = format!("watchNamespaces={{{}}}", ns.name);
        let release = format!("jko-release-{}", common::random_suffix(5));
        if node.is_none() {
            // The archived image, imported into the node's containerd as a registry would serve
            // it, before the install so that the kubelet finds it at the first try.
            let state = repo_root().join("target/control-plane");
            run(Command::new(state.join("bin/ctr"))
                .arg("--address")
                .arg(state.join("node/containerd.sock"))
                .args(["--namespace", "k8s.io", "images", "import"])
                .arg(out.join(&operator_archive)));
        }
        // The CRD is shared by the tests (common::install_crd applies it), as in tests/chart.rs.
        common::install_crd(&ns.client).await;
        let _installed = Installed {
            release: release.clone(),
            namespace: ns.name.clone(),
        };
        run(common::helm()
            .args(["install", &release])
            .arg(&chart)
            .args([
                "--namespace",
                &ns.name,
                "--set",
                "crds.enabled=false",
                "--set",
                &watch,
            ])
            .args(["--set", "rbac.aggregate.enabled=false"]));
        let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
        let deployment_name = format!("{release}-jwt-key-operator");
        let deployment = deployments
            .get(&deployment_name)
            .await
            .expect("the release's Deployment");
        let image = deployment.spec.template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap();
        assert_eq!(
            image,
            format!("{repository}:{VERSION}"),
            "the image defaults to the release"
        );

        match &node {
            Some(reason) => eprintln!(
                "skipped: running the archived image and creating a key need the node; {reason}"
            ),
            None => {
                // The chart's pod runs the archived image and makes a key Ready.
                wait_for(
                    "the operator pod to be Ready",
                    Duration::from_secs(180),
                    || async {
                        let d = deployments.get(&deployment_name).await.ok()?;
                        (d.status?.ready_replicas? >= 1).then_some(())
                    },
                )
                .await;
                create_ready(&ns, &jsk("auth", json!({}))).await;
                let keys = api(&ns);
                let _ = keys.delete("auth", &DeleteParams::default()).await;
                wait_for("the key to be deleted", REACT, || async {
                    keys.get_opt("auth").await.ok()?.is_none().then_some(())
                })
                .await;
            }
        }
    })
    .await;
}
