//! Leader election through a `coordination.k8s.io/v1` Lease, with fencing: the leader stops writing
//! before any other replica can take the Lease.
//!
//! Timing, as client-go's leader election:
//! - a standby takes the Lease only after it has seen the record unchanged for a whole lease
//!   duration, measured on its own monotonic clock (no trust in other replicas' wall clocks);
//! - the leader renews every retry period and may write only while its last successful renewal
//!   *started* less than the renew deadline (two thirds of the lease duration) ago, on its monotonic
//!   clock. A leader that was frozen (SIGSTOP, CPU throttling, a long pause) past the deadline finds
//!   its fence closed when it resumes, makes no write, and exits;
//! - every Lease write carries the `resourceVersion` it read, so two candidates cannot both win;
//! - on shutdown the leader releases the Lease, so a rolling update does not wait a lease duration.
//!
//! Hand-written rather than a crate: the Lease crates at hand keep reporting "leader" from their last
//! known state while renewals fail, which is exactly the window fencing must close.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tracing::{error, info, warn};

/// Whether this replica may write: open while the last renewal that succeeded started less than the
/// renew deadline ago.
#[derive(Debug)]
pub struct Fence {
    renewed: Mutex<Option<Instant>>,
    deadline: Duration,
    /// Set when the process hands the Lease back: renewals stop without ending the process first.
    released: std::sync::atomic::AtomicBool,
    /// Becomes `true` when this replica first takes the Lease. A standby runs its watches before
    /// that, and its reconciles wait for it.
    led: tokio::sync::watch::Sender<bool>,
}

impl Fence {
    /// A closed fence with this renew deadline.
    pub fn new(deadline: Duration) -> Fence {
        Fence {
            renewed: Mutex::new(None),
            deadline,
            released: std::sync::atomic::AtomicBool::new(false),
            led: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Whether this replica has taken the Lease (it may have lost it since: see [`Fence::may_write`]).
    pub fn has_led(&self) -> bool {
        *self.led.borrow()
    }

    /// Waits until this replica has taken the Lease.
    pub async fn wait_led(&self) {
        let mut led = self.led.subscribe();
        // The sender lives as long as `self`, so the wait ends only when the Lease is taken.
        let _ = led.wait_for(|led| *led).await;
    }

    /// Whether a write may start now.
    pub fn may_write(&self) -> bool {
        self.renewed
            .lock()
            .expect("fence lock")
            .is_some_and(|at| at.elapsed() < self.deadline)
    }

    fn renewed_at(&self, started: Instant) {
        let mut renewed = self.renewed.lock().expect("fence lock");
        // A renewal that returns after the release does not open the fence again.
        if self.released() {
            return;
        }
        *renewed = Some(renewed.map_or(started, |at| at.max(started)));
        self.led
            .send_if_modified(|led| !std::mem::replace(led, true));
    }

    fn close(&self) {
        *self.renewed.lock().expect("fence lock") = None;
    }

    fn release(&self) {
        let mut renewed = self.renewed.lock().expect("fence lock");
        self.released
            .store(true, std::sync::atomic::Ordering::SeqCst);
        *renewed = None;
    }

    fn released(&self) -> bool {
        self.released.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One candidate for the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    retry_period: Duration,
    fence: Arc<Fence>,
    /// Whether the Lease was handed back: SIGTERM and the end of the controllers both release it,
    /// and the second waits for the first instead of racing it.
    released: Arc<tokio::sync::Mutex<bool>>,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(e) if e.code == 409)
}

impl LeaderElector {
    /// A candidate for Lease `name` in `namespace`. The renew deadline is two thirds of `duration`,
    /// the retry period two fifteenths (15 s, 10 s and 2 s by default, as client-go's).
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
            retry_period: (duration * 2 / 15).max(Duration::from_millis(100)),
            fence: Arc::new(Fence::new(duration * 2 / 3)),
            released: Arc::default(),
        }
    }

    /// The fence the reconcilers check before every write.
    pub fn fence(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    /// Waits until this replica holds the Lease. API errors are retried.
    pub async fn acquire(&self) {
        let mut observed: Option<(String, Instant)> = None;
        loop {
            let started = Instant::now();
            match self.try_acquire(&mut observed).await {
                Ok(true) => {
                    self.fence.renewed_at(started);
                    info!(lease = self.name, identity = self.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, lease = self.name, "leader election: cannot read or take the Lease")
                }
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    fn spec(&self, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    async fn try_acquire(
        &self,
        observed: &mut Option<(String, Instant)>,
    ) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let version = lease.resource_version().unwrap_or_default();
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if observed.as_ref().is_none_or(|(seen, _)| *seen != version) {
            *observed = Some((version.clone(), Instant::now()));
        }
        let unchanged_for = observed
            .as_ref()
            .map(|(_, at)| at.elapsed())
            .unwrap_or_default();
        let their_duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(self.duration);
        let free = holder.is_none() || holder.as_deref() == Some(&self.identity);
        if !free && unchanged_for < their_duration {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0)
            + i32::from(holder.as_deref() != Some(&self.identity));
        match self.patch(&version, &self.spec(transitions)).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes `spec` only if the Lease is still at `version` (a merge patch with a
    /// `resourceVersion` precondition: a 409 when anyone wrote it meanwhile).
    async fn patch(&self, version: &str, spec: &LeaseSpec) -> Result<(), kube::Error> {
        self.api
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"resourceVersion": version},
                    "spec": {
                        "holderIdentity": spec.holder_identity,
                        "leaseDurationSeconds": spec.lease_duration_seconds,
                        "acquireTime": spec.acquire_time,
                        "renewTime": spec.renew_time,
                        "leaseTransitions": spec.lease_transitions,
                    },
                })),
            )
            .await
            .map(|_| ())
    }

    /// Renews the Lease. `Ok(false)` when another replica holds it.
    async fn renew(&self) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        let version = lease.resource_version().unwrap_or_default();
        let mut spec = lease.spec.unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return Ok(false);
        }
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(self.duration.as_secs().max(1) as i32);
        self.patch(&version, &spec).await.map(|_| true)
    }

    /// Renews the Lease every retry period until the process ends, on a thread of its own with its
    /// own runtime and API client: a storm of reconciles and key generations on the main runtime
    /// must not delay a renewal past the renew deadline. When a renewal is missing at the deadline,
    /// or the Lease went to another replica, the process exits.
    pub fn keep_renewing(self: Arc<Self>) {
        let spawned = std::thread::Builder::new()
            .name("lease-renewal".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        error!(error = %e, "cannot start the Lease renewal runtime; exiting");
                        std::process::exit(1);
                    }
                };
                runtime.block_on(async move {
                    let elector = match Client::try_default().await {
                        Ok(client) => LeaderElector {
                            api: Api::namespaced(
                                client,
                                self.api.namespace().unwrap_or("default"),
                            ),
                            name: self.name.clone(),
                            identity: self.identity.clone(),
                            duration: self.duration,
                            retry_period: self.retry_period,
                            fence: self.fence.clone(),
                            released: self.released.clone(),
                        },
                        Err(e) => {
                            warn!(error = %e, "no separate API client for the Lease renewal; sharing the main one");
                            LeaderElector {
                                api: self.api.clone(),
                                name: self.name.clone(),
                                identity: self.identity.clone(),
                                duration: self.duration,
                                retry_period: self.retry_period,
                                fence: self.fence.clone(),
                                released: self.released.clone(),
                            }
                        }
                    };
                    elector.renew_until_lost().await
                })
            });
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the Lease renewal thread; exiting");
            std::process::exit(1);
        }
    }

    async fn renew_until_lost(&self) {
        loop {
            tokio::time::sleep(self.retry_period).await;
            // Handing the Lease back (SIGTERM) closes the fence on purpose; the release ends the
            // process once the Lease is free.
            if self.fence.released() {
                return;
            }
            if !self.fence.may_write() {
                error!(
                    lease = self.name,
                    "the Lease was not renewed within the renew deadline; exiting so that another \
                     replica takes over"
                );
                std::process::exit(1);
            }
            let started = Instant::now();
            let renewal =
                tokio::time::timeout(self.retry_period.max(Duration::from_secs(1)), self.renew())
                    .await;
            // A renewal that returns after the release neither counts nor ends the process.
            if self.fence.released() {
                return;
            }
            match renewal {
                Ok(Ok(true)) => self.fence.renewed_at(started),
                Ok(Ok(false)) => {
                    self.fence.close();
                    error!(
                        lease = self.name,
                        "lost the Lease to another replica; exiting"
                    );
                    std::process::exit(1);
                }
                Ok(Err(e)) => warn!(error = %e, lease = self.name, "renewing the Lease failed"),
                Err(_) => warn!(lease = self.name, "renewing the Lease timed out"),
            }
        }
    }

    /// Stops writing and hands the Lease back, so that a standby takes over at once.
    pub async fn release(&self) {
        let mut released = self.released.lock().await;
        if *released {
            return;
        }
        self.fence.release();
        // A renewal still in flight may change the Lease between the read and the write: a
        // conflict reads it again.
        let mut result = self.hand_back().await;
        for _ in 0..3 {
            match &result {
                Err(e) if is_conflict(e) => result = self.hand_back().await,
                _ => break,
            }
        }
        match result {
            Ok(()) => info!(lease = self.name, "released the Lease"),
            Err(e) => warn!(error = %e, lease = self.name, "releasing the Lease failed"),
        }
        *released = true;
    }

    /// Clears the holder of the Lease if it is this replica.
    async fn hand_back(&self) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let version = lease.resource_version().unwrap_or_default();
        let mut spec = lease.spec.unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        self.patch(&version, &spec).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_is_closed_until_renewed_and_closes_after_the_deadline() {
        let fence = Fence::new(Duration::from_millis(50));
        assert!(!fence.may_write());
        assert!(!fence.has_led());
        fence.renewed_at(Instant::now());
        assert!(fence.may_write());
        assert!(fence.has_led());
        fence.renewed_at(Instant::now() - Duration::from_millis(60));
        assert!(
            fence.may_write(),
            "an older renewal never moves the fence back"
        );
        fence.close();
        assert!(!fence.may_write());
        assert!(
            fence.has_led(),
            "a replica that led once stays past the wait"
        );
        fence.renewed_at(Instant::now() - Duration::from_millis(60));
        assert!(
            !fence.may_write(),
            "a renewal that started past the deadline does not open it"
        );
    }

    #[tokio::test]
    async fn waiting_for_the_lease_ends_when_the_fence_first_opens() {
        let fence = Arc::new(Fence::new(Duration::from_secs(10)));
        let waiter = tokio::spawn({
            let fence = fence.clone();
            async move { fence.wait_led().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "no Lease yet");
        fence.renewed_at(Instant::now());
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the wait ends once the Lease is taken")
            .expect("the waiter does not panic");
        // Once led, a wait returns at once.
        tokio::time::timeout(Duration::from_secs(5), fence.wait_led())
            .await
            .expect("a replica that led does not wait again");
    }
}
