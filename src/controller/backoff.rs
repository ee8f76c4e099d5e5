//! Retries per write target (the Secret, each ConfigMap), not per key: a namespace that keeps
//! refusing its copy retries on its own schedule, while repairs everywhere else happen at once.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::{RETRY_BASE, RETRY_MAX};

/// One object a key writes: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// `Secret` or `ConfigMap`.
    pub kind: &'static str,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl Target {
    /// The Secret `name` in `namespace`.
    pub fn secret(namespace: &str, name: &str) -> Target {
        Target {
            kind: "Secret",
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The ConfigMap `name` in `namespace`.
    pub fn config_map(namespace: &str, name: &str) -> Target {
        Target {
            kind: "ConfigMap",
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// Failures in a row of one target, until when its writes wait, and the last error.
#[derive(Clone, Debug)]
struct Retry {
    failures: u32,
    until: Instant,
    error: String,
}

/// The targets of every key that failed their last write, by key uid.
#[derive(Default)]
pub struct Backoffs {
    retries: HashMap<(String, Target), Retry>,
}

/// The delay after `failures` failures in a row: 2 s doubling up to 5 minutes.
pub fn delay(failures: u32) -> Duration {
    RETRY_BASE
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

impl Backoffs {
    /// While `target` of key `uid` waits after a failure: the last error.
    pub fn waiting(&self, uid: &str, target: &Target, now: Instant) -> Option<&str> {
        self.retries
            .get(&(uid.to_string(), target.clone()))
            .filter(|r| r.until > now)
            .map(|r| r.error.as_str())
    }

    /// Records a failed write of `target`; returns the delay before it is tried again.
    pub fn failed(&mut self, uid: &str, target: &Target, error: String, now: Instant) -> Duration {
        let retry = self
            .retries
            .entry((uid.to_string(), target.clone()))
            .or_insert(Retry {
                failures: 0,
                until: now,
                error: String::new(),
            });
        retry.failures = retry.failures.saturating_add(1);
        let delay = delay(retry.failures);
        retry.until = now + delay;
        retry.error = error;
        delay
    }

    /// A write of `target` went through (or was not needed): its next failure starts over.
    pub fn succeeded(&mut self, uid: &str, target: &Target) {
        self.retries.remove(&(uid.to_string(), target.clone()));
    }

    /// How long until the earliest retry of key `uid`, if any of its targets waits.
    pub fn next_retry(&self, uid: &str, now: Instant) -> Option<Duration> {
        self.retries
            .iter()
            .filter(|((key, _), _)| key == uid)
            .map(|(_, r)| r.until.saturating_duration_since(now))
            .min()
    }

    /// Forgets every target of key `uid` (the key was deleted).
    pub fn forget(&mut self, uid: &str) {
        self.retries.retain(|(key, _), _| key != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_target_backs_off_alone_and_starts_over_after_a_success() {
        let now = Instant::now();
        let mut backoffs = Backoffs::default();
        let frozen = Target::config_map("frozen", "auth-jwks");
        let home = Target::config_map("auth", "auth-jwks");
        let delays: Vec<u64> = (0..10)
            .map(|_| {
                backoffs
                    .failed("k", &frozen, "refused".into(), now)
                    .as_secs()
            })
            .collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoffs.waiting("k", &frozen, now), Some("refused"));
        assert_eq!(backoffs.waiting("k", &home, now), None, "others never wait");
        assert_eq!(backoffs.waiting("other", &frozen, now), None);
        assert_eq!(
            backoffs.waiting("k", &frozen, now + Duration::from_secs(300)),
            None
        );
        assert_eq!(
            backoffs.next_retry("k", now),
            Some(Duration::from_secs(300))
        );
        backoffs.succeeded("k", &frozen);
        assert_eq!(backoffs.next_retry("k", now), None);
        assert_eq!(
            backoffs.failed("k", &frozen, "refused".into(), now),
            Duration::from_secs(2)
        );
        backoffs.forget("k");
        assert_eq!(backoffs.waiting("k", &frozen, now), None);
    }
}
