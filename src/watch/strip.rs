//! What the operator's watch caches keep of an object: no `managedFields`, no kubectl
//! bookkeeping, and of the objects it only needs to recognise, no annotation but the one it reads.

use k8s_openapi::{api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::api::PartialObjectMeta;

use crate::{crd::ACCEPT_FROM_ANNOTATION, resources::OWNER_UID_ANNOTATION};

/// What no cached object needs: `managedFields` and kubectl's copy of the last applied object.
pub fn strip_bookkeeping(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Drops `managedFields` and every annotation but `kept`.
fn keep_one_annotation(meta: &mut ObjectMeta, kept: &str) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k == kept);
    }
}

/// What the metadata stores keep: names, labels, owners and the owner annotation of copies.
pub(super) fn keep_ownership_only(meta: &mut ObjectMeta) {
    keep_one_annotation(meta, OWNER_UID_ANNOTATION);
}

/// Namespaces as publication needs them: names, labels, the consent annotation and whether they
/// are terminating.
pub fn strip_namespace(ns: &mut PartialObjectMeta<Namespace>) {
    keep_one_annotation(&mut ns.metadata, ACCEPT_FROM_ANNOTATION);
}
