//! The Lease of this process: who it is as a candidate, and how it hands the Lease back when it
//! is stopped.

use std::{sync::Arc, time::Duration};

use kube::Client;
use tracing::{info, warn};

use crate::{cli::RunArgs, leader::LeaderElector};

/// On SIGTERM or SIGINT, the leader closes its fence (no write starts after that), hands the Lease
/// back so that a standby takes over at once, and exits.
pub(super) fn release_on_signal(elector: Arc<LeaderElector>) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; the Lease will expire instead of being released");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        elector.release().await;
        std::process::exit(0);
    });
}

/// The Lease candidate of this process.
pub(super) fn elector(client: &Client, args: &RunArgs, scope: Option<&[String]>) -> LeaderElector {
    let namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .or_else(|| scope.and_then(|s| s.first().cloned()))
        .unwrap_or_else(|| "default".into());
    let identity = std::env::var("POD_NAME")
        .ok()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    info!(
        lease = args.leader_election_id,
        namespace, identity, "waiting to become leader"
    );
    LeaderElector::new(
        client.clone(),
        &namespace,
        &args.leader_election_id,
        &identity,
        Duration::from_secs(args.lease_duration_seconds.max(2)),
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "jwt-key-operator".into())
}
