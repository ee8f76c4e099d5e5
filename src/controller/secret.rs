//! Switch the Secret: the only object that decides which key signs. Every write carries the
//! `resourceVersion` this reconcile read (a missing Secret is created, and a 409 means another
//! writer got there first), so a stale writer gets a conflict instead of overwriting; data entries
//! anyone else added are removed by the same write, so only the operator's entries remain.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use tracing::info;

use super::{Error, Reconciliation, Result, backoff::Target, create_or_update};
use crate::resources;

/// The Secret as this reconcile knows it.
pub struct SecretWriter {
    api: Api<Secret>,
    name: String,
    current: Option<Secret>,
    written: bool,
}

impl Reconciliation<'_> {
    /// Deletes a Secret this key owns under a name it no longer uses, with its uid as precondition.
    pub(super) async fn delete_secret(&self, old: &Secret) -> Result<()> {
        let name = old.name_any();
        let name = name.as_str();
        self.ctx.check_fence()?;
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let params = kube::api::DeleteParams {
            preconditions: old.uid().map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..kube::api::DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                self.ctx.metrics.api_write("secret");
                self.ctx.secrets.deleted(&self.namespace, name);
                info!(name, "removed Secret under a former name");
                Ok(())
            }
            // Gone, or replaced by another object of that name (a 409 on the uid).
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                self.ctx.secrets.deleted(&self.namespace, name);
                Ok(())
            }
            Err(e) => Err(Error::ApplySecret(name.to_string(), e)),
        }
    }
}

impl SecretWriter {
    /// `current` is the owned Secret read at the start (`None` when missing).
    pub fn new(api: Api<Secret>, name: String, current: Option<Secret>) -> SecretWriter {
        SecretWriter {
            api,
            name,
            current,
            written: false,
        }
    }

    /// Whether the Secret exists under its name now (read or written in this reconcile).
    pub fn written(&self) -> bool {
        self.written || self.current.is_some()
    }

    /// Writes `desired` unless the stored Secret already matches. Returns when the write returned,
    /// or `None` when nothing was written.
    pub async fn write(
        &mut self,
        run: &Reconciliation<'_>,
        desired: Secret,
    ) -> Result<Option<Timestamp>> {
        if let Some(current) = &self.current
            && resources::secret_data_matches(current, &desired)
            && resources::is_in_sync(&current.metadata, &desired.metadata)
        {
            return Ok(None);
        }
        let target = Target::secret(&run.namespace, &self.name);
        if let Some(error) = run.ctx.waiting(run.jsk, &target) {
            return Err(Error::Waiting(error));
        }
        run.ctx.check_fence()?;
        let written = match create_or_update(&self.api, self.current.as_ref(), &desired).await {
            Ok(written) => written,
            Err(e) => {
                let error = Error::ApplySecret(self.name.clone(), e);
                run.ctx.write_failed(run.jsk, &target, &error);
                return Err(error);
            }
        };
        run.ctx.write_succeeded(run.jsk, &target);
        match self.current {
            None => info!(name = self.name, "created Secret"),
            Some(_) => info!(name = self.name, "wrote Secret"),
        }
        run.ctx.metrics.api_write("secret");
        run.ctx.secrets.wrote(&written);
        self.current = Some(written);
        self.written = true;
        Ok(Some(Timestamp::now()))
    }
}
