//! The test control plane is a real Kubernetes control plane: storage, RBAC, service-account tokens,
//! CEL admission, owner-reference permission enforcement, garbage collection and namespace deletion
//! all behave as in a cluster.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{TestNamespace, wait_for, with_temp_ns};
use k8s_openapi::{
    api::{
        authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec},
        core::v1::{ConfigMap, Namespace, Secret, ServiceAccount},
        rbac::v1::{Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta,
        PostParams,
    },
    config::AuthInfo,
};
use serde_json::json;

/// Time for kube-controller-manager to act (garbage collection, namespace deletion).
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(60);

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn is_status(result: &Result<impl Sized, kube::Error>, code: u16) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == code)
}

/// A client that authenticates with a TokenRequest token for ServiceAccount `sa` (created here) and
/// trusts the cluster's CA.
async fn service_account_client(ns: &TestNamespace, sa: &str) -> Client {
    let accounts: Api<ServiceAccount> = Api::namespaced(ns.client.clone(), &ns.name);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(sa.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("creating the ServiceAccount");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = accounts
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .expect("requesting a token for the ServiceAccount")
        .status
        .and_then(|status| status.token)
        .expect("a token in the TokenRequest status");
    assert_eq!(token.split('.').count(), 3, "a TokenRequest token is a JWT");

    let mut config = common::admin_config().await;
    config.auth_info = serde_json::from_value::<AuthInfo>(json!({ "token": token })).unwrap();
    Client::try_from(config).expect("building the ServiceAccount's client")
}

#[tokio::test]
async fn config_map_round_trips_through_the_api_server() {
    with_temp_ns("cp-configmap", |ns| async move {
        let config_maps: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
        let created = config_maps
            .create(
                &PostParams::default(),
                &config_map("greeting", &[("hello", "world"), ("n", "1")]),
            )
            .await
            .expect("creating the ConfigMap");
        assert!(created.uid().is_some(), "the API server assigns a uid");

        let read = config_maps
            .get("greeting")
            .await
            .expect("reading the ConfigMap back");
        let expected: BTreeMap<String, String> = [("hello", "world"), ("n", "1")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        assert_eq!(read.data, Some(expected));
        assert_eq!(read.resource_version(), created.resource_version());

        let listed = config_maps
            .list(&ListParams::default())
            .await
            .expect("listing ConfigMaps");
        assert!(listed.iter().any(|cm| cm.name_any() == "greeting"));
    })
    .await;
}

#[tokio::test]
async fn service_account_without_role_binding_is_refused_secrets() {
    with_temp_ns("cp-rbac", |ns| async move {
        let sa_client = service_account_client(&ns, "nobody").await;
        let secrets: Api<Secret> = Api::namespaced(sa_client, &ns.name);

        let list = secrets.list(&ListParams::default()).await;
        assert!(
            is_status(&list, 403),
            "listing Secrets must be forbidden, got {list:?}"
        );
        let get = secrets.get("anything").await;
        assert!(
            is_status(&get, 403),
            "reading a Secret must be forbidden, got {get:?}"
        );
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("stolen".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let create = secrets.create(&PostParams::default(), &secret).await;
        assert!(
            is_status(&create, 403),
            "creating a Secret must be forbidden, got {create:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn audit_log_records_what_a_service_account_asked_and_nothing_of_the_admin() {
    let Some(audit) = common::AuditLog::open() else {
        eprintln!("skipped: this control plane keeps no audit log");
        return;
    };
    with_temp_ns("cp-audit", |ns| async move {
        let sa_client = service_account_client(&ns, "audited").await;
        let user = format!("system:serviceaccount:{}:audited", ns.name);
        let from = std::time::SystemTime::now();
        let secrets: Api<Secret> = Api::namespaced(sa_client, &ns.name);
        let _ = secrets.list(&ListParams::default()).await;
        let _ = secrets.get("anything").await;
        let _ = secrets
            .create(&PostParams::default(), &Secret::default())
            .await;
        // The admin's requests are not recorded.
        let admin: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
        let _ = admin.list(&ListParams::default()).await;
        let to = std::time::SystemTime::now();

        let requests = wait_for("three audited requests", Duration::from_secs(10), || {
            let requests = audit.requests(&user, from, to);
            async move { (requests.len() >= 3).then_some(requests) }
        })
        .await;
        assert_eq!(
            common::Counts::of(&requests),
            common::Counts {
                reads: 2,
                watches: 0,
                writes: 1,
                other: 0
            },
            "{requests:#?}"
        );
        for request in &requests {
            assert_eq!(request.target(), "secrets");
            assert_eq!(request.namespace, ns.name);
            assert!(request.received <= request.completed);
        }
        assert!(
            requests
                .iter()
                .any(|r| r.verb == "get" && r.name == "anything"),
            "{requests:#?}"
        );
        assert!(
            requests.iter().all(|r| r.code == Some(403)),
            "refused by RBAC: {requests:#?}"
        );
        assert!(audit.requests("admin", from, to).is_empty());
    })
    .await;
}

#[tokio::test]
async fn token_from_token_request_authenticates_as_its_service_account() {
    with_temp_ns("cp-token", |ns| async move {
        let sa_client = service_account_client(&ns, "reviewer").await;
        let review = Api::<SelfSubjectReview>::all(sa_client)
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .expect("a SelfSubjectReview with the token");
        let user = review
            .status
            .and_then(|s| s.user_info)
            .expect("the review names the user");
        assert_eq!(
            user.username.as_deref(),
            Some(format!("system:serviceaccount:{}:reviewer", ns.name).as_str())
        );
        let groups = user.groups.unwrap_or_default();
        assert!(
            groups.contains(&"system:serviceaccounts".to_string()),
            "groups: {groups:?}"
        );
        assert!(
            groups.contains(&format!("system:serviceaccounts:{}", ns.name)),
            "groups: {groups:?}"
        );

        let forged = {
            let mut config = common::admin_config().await;
            config.auth_info =
                serde_json::from_value::<AuthInfo>(json!({ "token": "not.a.token" })).unwrap();
            Client::try_from(config).unwrap()
        };
        let refused = Api::<SelfSubjectReview>::all(forged)
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await;
        assert!(
            is_status(&refused, 401),
            "a forged token must be unauthenticated, got {refused:?}"
        );
    })
    .await;
}

/// Deletes a cluster-scoped CustomResourceDefinition when the test ends, passed or failed.
struct DeleteCrdOnDrop(String);

impl Drop for DeleteCrdOnDrop {
    fn drop(&mut self) {
        let _ = common::kubectl()
            .args([
                "delete",
                "customresourcedefinition",
                &self.0,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}

#[tokio::test]
async fn custom_resource_definition_cel_rule_rejects_a_bad_object() {
    with_temp_ns("cp-cel", |ns| async move {
        let group = format!("{}.cp-test.jwtkeys.dev", common::random_suffix(6));
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("widgets.{group}")},
            "spec": {
                "group": group,
                "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {"spec": {
                            "type": "object",
                            "required": ["min", "max"],
                            "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                            "x-kubernetes-validations": [
                                {"rule": "self.min <= self.max", "message": "min must not exceed max"}
                            ]
                        }}
                    }}
                }]
            }
        }))
        .unwrap();
        let _cleanup = DeleteCrdOnDrop(crd.name_any());
        common::apply_crd(&ns.client, &crd).await;

        let gvk = GroupVersionKind::gvk(&group, "v1", "Widget");
        let widgets: Api<DynamicObject> =
            Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::from_gvk_with_plural(&gvk, "widgets"));
        let widget = |name: &str, min: i64, max: i64| {
            DynamicObject::new(name, &ApiResource::from_gvk_with_plural(&gvk, "widgets"))
                .data(json!({"spec": {"min": min, "max": max}}))
        };

        // An Established CRD may take a moment longer to be routed; 404 is the only answer worth retrying.
        wait_for("a valid Widget to be accepted", Duration::from_secs(30), || async {
            let result = widgets.create(&PostParams::default(), &widget("good", 1, 2)).await;
            if is_status(&result, 404) {
                return None;
            }
            result.expect("creating a valid Widget");
            Some(())
        })
        .await;

        let bad = widgets.create(&PostParams::default(), &widget("bad", 3, 2)).await;
        match bad {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{status:?}");
                assert!(status.message.contains("min must not exceed max"), "{}", status.message);
            }
            other => panic!("a Widget with min > max must be rejected, got {other:?}"),
        }
        assert!(is_status(&widgets.get("bad").await, 404), "the rejected Widget was not stored");
    })
    .await;
}

#[tokio::test]
async fn config_map_owned_by_a_deleted_object_is_garbage_collected() {
    with_temp_ns("cp-gc", |ns| async move {
        let config_maps: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
        let owner = config_maps
            .create(&PostParams::default(), &config_map("owner", &[]))
            .await
            .expect("creating the owner");
        let mut dependent = config_map("dependent", &[("owned", "yes")]);
        dependent.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: owner.name_any(),
            uid: owner.uid().expect("owner uid"),
            ..Default::default()
        }]);
        config_maps
            .create(&PostParams::default(), &dependent)
            .await
            .expect("creating the dependent");
        let bystander = config_map("bystander", &[]);
        config_maps
            .create(&PostParams::default(), &bystander)
            .await
            .expect("creating an unowned ConfigMap");

        config_maps
            .delete("owner", &DeleteParams::background())
            .await
            .expect("deleting the owner");

        wait_for(
            "the garbage collector to delete the dependent ConfigMap",
            CONTROLLER_TIMEOUT,
            || async { is_status(&config_maps.get("dependent").await, 404).then_some(()) },
        )
        .await;
        config_maps
            .get("bystander")
            .await
            .expect("an unowned ConfigMap stays");
    })
    .await;
}

#[tokio::test]
async fn blocking_owner_deletion_needs_the_right_to_update_the_owners_finalizers() {
    with_temp_ns("cp-owner-refs", |ns| async move {
        let owner = Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name)
            .create(&PostParams::default(), &config_map("owner", &[]))
            .await
            .expect("creating the owner");
        // May create ConfigMaps, but not update the finalizers of any.
        let role: Role = serde_json::from_value(json!({
            "metadata": {"name": "config-map-writer"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}],
        }))
        .unwrap();
        Api::<Role>::namespaced(ns.client.clone(), &ns.name)
            .create(&PostParams::default(), &role)
            .await
            .expect("creating the Role");
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "config-map-writer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "config-map-writer"},
            "subjects": [{"kind": "ServiceAccount", "name": "writer", "namespace": ns.name}],
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(ns.client.clone(), &ns.name)
            .create(&PostParams::default(), &binding)
            .await
            .expect("creating the RoleBinding");
        let writer: Api<ConfigMap> =
            Api::namespaced(service_account_client(&ns, "writer").await, &ns.name);
        let owned = |name: &str, block: bool| {
            let mut dependent = config_map(name, &[]);
            dependent.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: owner.name_any(),
                uid: owner.uid().expect("owner uid"),
                controller: Some(true),
                block_owner_deletion: Some(block),
            }]);
            dependent
        };

        // Allowed without blockOwnerDeletion (once the authorizer has seen the binding).
        wait_for(
            "the writer to create an owned ConfigMap",
            Duration::from_secs(30),
            || async {
                let created = writer
                    .create(&PostParams::default(), &owned("plain", false))
                    .await;
                (!is_status(&created, 403)).then(|| created.expect("creating as the writer"))
            },
        )
        .await;
        // Refused with it: OwnerReferencesPermissionEnforcement is on, as on OpenShift.
        let blocking = writer
            .create(&PostParams::default(), &owned("blocking", true))
            .await;
        match blocking {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "{status:?}");
                assert!(status.message.contains("blockOwnerDeletion"), "{status:?}");
            }
            other => panic!("expected 403 for blockOwnerDeletion, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn deleted_namespace_disappears() {
    with_temp_ns("cp-ns", |ns| async move {
        let doomed = ns.extra("doomed", &[("purpose", "deletion")]).await;
        Api::<ConfigMap>::namespaced(ns.client.clone(), &doomed)
            .create(
                &PostParams::default(),
                &config_map("contents", &[("a", "b")]),
            )
            .await
            .expect("creating a ConfigMap in the namespace");

        let namespaces: Api<Namespace> = Api::all(ns.client.clone());
        namespaces
            .delete(&doomed, &DeleteParams::default())
            .await
            .expect("deleting the namespace");

        wait_for(
            "the namespace controller to remove the namespace",
            CONTROLLER_TIMEOUT,
            || async { is_status(&namespaces.get(&doomed).await, 404).then_some(()) },
        )
        .await;
    })
    .await;
}
