//! Installing CustomResourceDefinitions into the test cluster.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};

/// Field manager for objects the tests apply.
pub const TEST_MANAGER: &str = "jwt-key-operator-tests";

/// Applies `crds/jwtsigningkeys.yaml` (server-side apply, forced) and waits until the API server serves
/// it. Safe to call from many tests at once: applying the same object again changes nothing.
pub async fn install_crd(client: &Client) {
    let path = super::repo_root().join("crds/jwtsigningkeys.yaml");
    let yaml = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&yaml).unwrap_or_else(|err| {
        panic!(
            "parsing {} as a CustomResourceDefinition: {err}",
            path.display()
        )
    });
    apply_crd(client, &crd).await;
}

/// Applies `crd` (server-side apply, forced) and waits for its `Established` condition.
pub async fn apply_crd(client: &Client, crd: &CustomResourceDefinition) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    let params = PatchParams::apply(TEST_MANAGER).force();
    crds.patch(&name, &params, &Patch::Apply(crd))
        .await
        .unwrap_or_else(|err| panic!("applying CustomResourceDefinition {name}: {err}"));
    super::wait_for(
        &format!("CustomResourceDefinition {name} to be Established"),
        Duration::from_secs(30),
        || async {
            let crd = crds.get(&name).await.ok()?;
            let established = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        },
    )
    .await;
}
