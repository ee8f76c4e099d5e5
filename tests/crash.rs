//! End-to-end: the operator killed with SIGKILL at random moments across many rotations never
//! breaks I1-I3, never loses the signing key and never replaces it without a rotation.

mod common;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{install_crd, with_temp_ns};
use serde_json::json;
use support::*;

/// A small deterministic generator, seeded from the clock and printed so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn millis(&mut self, range: std::ops::Range<u64>) -> Duration {
        Duration::from_millis(range.start + self.next() % (range.end - range.start))
    }
}

#[tokio::test]
async fn sigkill_at_random_moments_never_breaks_the_invariants() {
    let rotations: usize = std::env::var("JKO_CRASH_ROTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed = std::env::var("JKO_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test: {rotations} rotations, seed {seed} (JKO_CRASH_SEED to replay)");
    let mut rng = XorShift(seed);

    with_temp_ns("crash", |ns| async move {
        install_crd(&ns.client).await;
        // I1-I3 hold in the copy in another namespace too.
        let (history, copy) = History::with_copy(&ns).await;
        let mut operator = operator(&[&ns.name, &copy]);
        let spec = publish_to_copies(
            json!({"rotationInterval": "10s", "propagationDelay": "3s", "maxTokenLifetime": "4s"}),
        );
        let first = create_ready(&ns, &jsk("auth", spec)).await;

        let deadline =
            std::time::Instant::now() + Duration::from_secs(rotations as u64 * 10 * 2 + 120);
        let mut kills = 0;
        while history.signing_kids().len() <= rotations {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} rotations before the deadline",
                history.signing_kids().len() - 1
            );
            // The pause is the random moment of the next crash, not a wait for a condition.
            tokio::time::sleep(rng.millis(300..7000)).await;
            operator.kill();
            kills += 1;
            if rng.next().is_multiple_of(3) {
                tokio::time::sleep(rng.millis(0..2500)).await;
            }
            operator.restart();
        }
        let signing = history.signing_kids();
        eprintln!(
            "figure: {kills} SIGKILLs across {} rotations, {} Secret/ConfigMap versions recorded",
            signing.len() - 1,
            history.versions().len()
        );
        assert!(
            kills >= rotations / 2,
            "the operator was killed often enough to matter"
        );
        // Only the first key may sign without pre-publication: any other such key would mean the
        // signing key was lost or replaced without a rotation.
        history.check_invariants(
            Duration::from_secs(3),
            Duration::from_secs(7),
            Duration::from_millis(300),
            &[first],
            &[],
        );
    })
    .await;
}
