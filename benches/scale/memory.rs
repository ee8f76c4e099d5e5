//! Phase 3: the operator's memory after the storm.

use std::time::Duration;

use crate::{
    bounds::QUICK_PEAK_RSS_MIB,
    common::OperatorProcess,
    process::{settle, status_mib},
    setup::Bench,
};

/// Phase 3.
pub async fn memory(b: &Bench<'_>, operator: &OperatorProcess) {
    b.report
        .phase("3. memory after the storm (no reconcile for 3 s)");
    settle(operator, Duration::from_secs(3), Duration::from_secs(60)).await;
    let pid = operator.pid().expect("the operator runs");
    b.report.figure(
        "peak RSS (VmHWM)",
        status_mib(pid, "VmHWM"),
        "MiB",
        format!("{} keys", b.scale.keys),
        Some(QUICK_PEAK_RSS_MIB),
    );
    b.report
        .figure("RSS now (VmRSS)", status_mib(pid, "VmRSS"), "MiB", "", None);
}
