//! The key schedule: a pure function from (timing, remembered keys, now) to the desired key set and
//! the next instant anything changes. No I/O and no clock of its own, so every rotation, pause and
//! catch-up can be walked through in tests.
//!
//! Rules (R = rotationInterval, P = propagationDelay, L = maxTokenLifetime):
//! - the first key signs at once;
//! - each later key is published P before it signs, and signs only once it has been published for P;
//! - a key signs for R (or until a requested rotation takes effect), then retires;
//! - a retired key stays published for L + P (plus a small clock margin), then is removed;
//! - revoked keys are dropped at once and never return; a revoked signing key is replaced by a fresh
//!   key that signs at once.
//!
//! Late is always allowed, early never: when the operator was down through a planned change, the plan
//! makes the change now, with every later step measured from now.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{
    crd::{KeyState, KeyStatus, MAX_PUBLISHED_KEYS, Timing},
    keys::Jwk,
    time::{minus, plus, rfc3339_secs, rfc3339_secs_up},
};

/// Extra time a retired key stays published beyond L + P, covering the few milliseconds between
/// the planned instant and the moment the Secret write lands.
pub const CLOCK_MARGIN: SignedDuration = SignedDuration::from_secs(1);

/// What the operator remembers about one published key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    /// The public key (carries `kid` and `alg`).
    pub jwk: Jwk,
    /// When the key was confirmed published in every ConfigMap.
    #[serde(with = "crate::time::rfc3339")]
    pub published_at: Timestamp,
    /// When it started signing; `None` while it is the next key.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::rfc3339::option"
    )]
    pub activated_at: Option<Timestamp>,
    /// When it stopped signing.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::rfc3339::option"
    )]
    pub retired_at: Option<Timestamp>,
    /// Earliest removal promised at retirement; it may grow with the spec, never shrink.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::rfc3339::option"
    )]
    pub remove_after: Option<Timestamp>,
}

impl KeyRecord {
    /// A key that was just published.
    pub fn published(jwk: Jwk, at: Timestamp, signs_now: bool) -> KeyRecord {
        KeyRecord {
            jwk,
            published_at: at,
            activated_at: signs_now.then_some(at),
            retired_at: None,
            remove_after: None,
        }
    }

    /// Key id.
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    fn is_active(&self) -> bool {
        self.activated_at.is_some() && self.retired_at.is_none()
    }

    fn is_next(&self) -> bool {
        self.activated_at.is_none()
    }
}

/// Everything the schedule depends on besides the spec and the clock. Stored in the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeySet {
    /// Published keys, in no particular order.
    #[serde(default)]
    pub keys: Vec<KeyRecord>,
    /// A rotation requested (by annotation) at this instant: the next key signs P after it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::rfc3339::option"
    )]
    pub rotation_requested_at: Option<Timestamp>,
    /// Revoked key ids: never published again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub revoked: BTreeSet<String>,
    /// Last `jwtkeys.dev/rotate` value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_rotate: Option<String>,
    /// Last `jwtkeys.dev/revoke` value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_revoke: Option<String>,
    /// When each revoked kid was revoked, so that the list can be pruned once a kid can no longer
    /// appear.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "crate::time::rfc3339::map"
    )]
    pub revoked_at: BTreeMap<String, Timestamp>,
    /// A generated key saved (with its private half in the Secret) before it is published
    /// everywhere; a retry publishes this key instead of generating another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingKey>,
}

/// A key that was generated and saved, not yet confirmed published in every ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingKey {
    /// The public key.
    pub jwk: Jwk,
    /// When it was generated.
    #[serde(with = "crate::time::rfc3339")]
    pub generated_at: Timestamp,
}

/// The role of a key the plan asks the caller to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewKey {
    /// Signs as soon as it is published (first key, lost or revoked signing key).
    SignsNow,
    /// Published now, signs later.
    Next,
}

/// A change the plan made, for events and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The key started signing.
    Activated(String),
    /// The key stopped signing.
    Retired(String),
    /// The retired key was removed from publication.
    Removed(String),
    /// The key was revoked and dropped.
    Revoked(String),
}

/// The outcome of planning.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Desired key set (without the key to generate, if any).
    pub keys: KeySet,
    /// A key the caller must generate, publish, and add with [`KeySet::add_published`] before
    /// planning again.
    pub generate: Option<NewKey>,
    /// Changes made by this plan.
    pub transitions: Vec<Transition>,
    /// Next instant the plan changes without outside input.
    pub next_change: Option<Timestamp>,
}

impl KeySet {
    /// Whether the state records `kid`: published, pending or revoked.
    pub fn records(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid() == kid)
            || self.pending.as_ref().is_some_and(|p| p.jwk.kid == kid)
            || self.revoked.contains(kid)
    }

    /// Adds a freshly generated key, confirmed published at `at`.
    pub fn add_published(&mut self, jwk: Jwk, at: Timestamp, role: NewKey) {
        self.keys
            .push(KeyRecord::published(jwk, at, role == NewKey::SignsNow));
    }

    /// The signing key.
    pub fn active(&self) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| k.is_active())
    }

    /// The key published to sign next.
    pub fn next(&self) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| k.is_next())
    }

    /// Whether one more key may be published without exceeding `bound` (at most
    /// [`MAX_PUBLISHED_KEYS`]; fewer for RSA-4096, [`Timing::max_published_keys`]).
    pub fn has_room_for_next(&self, bound: u64) -> bool {
        (self.keys.len() as u64) < bound.min(MAX_PUBLISHED_KEYS)
    }

    /// Retired keys, newest retirement first.
    pub fn retired(&self) -> Vec<&KeyRecord> {
        let mut retired: Vec<_> = self
            .keys
            .iter()
            .filter(|k| k.retired_at.is_some())
            .collect();
        retired.sort_by(|a, b| {
            b.retired_at
                .cmp(&a.retired_at)
                .then(b.published_at.cmp(&a.published_at))
        });
        retired
    }

    /// Published keys in `jwks.json` order: signing key, next key, retired keys newest first.
    pub fn published_in_order(&self) -> Vec<&KeyRecord> {
        self.active()
            .into_iter()
            .chain(self.next())
            .chain(self.retired())
            .collect()
    }

    /// Records that the signing key's private half is gone (Secret deleted or corrupted): it stops
    /// signing now and stays published for verification; a next key without its private half is
    /// dropped, having never signed.
    pub fn lose_private_keys(&mut self, timing: &Timing, now: Timestamp, keep_next: bool) {
        let retention = retention(timing);
        self.keys.retain(|k| keep_next || !k.is_next());
        for key in self.keys.iter_mut().filter(|k| k.is_active()) {
            key.retired_at = Some(now);
            key.remove_after = Some(plus(now, retention));
        }
    }
}

/// How long a retired key stays published: L + P plus the clock margin.
pub fn retention(timing: &Timing) -> SignedDuration {
    timing.max_token_lifetime.as_signed() + timing.propagation_delay.as_signed() + CLOCK_MARGIN
}

/// When the signing key is scheduled to stop signing.
fn scheduled_retirement(timing: &Timing, keys: &KeySet, active: &KeyRecord) -> Timestamp {
    let activated = active
        .activated_at
        .expect("active keys have an activation time");
    let by_interval = plus(activated, timing.rotation_interval.as_signed());
    match keys.rotation_requested_at {
        Some(requested) if requested >= activated => {
            by_interval.min(plus(requested, timing.propagation_delay.as_signed()))
        }
        _ => by_interval,
    }
}

/// When the next key may start signing: its scheduled time, but never before it has been
/// published for P.
fn activation_time(
    timing: &Timing,
    keys: &KeySet,
    active: &KeyRecord,
    next: &KeyRecord,
) -> Timestamp {
    scheduled_retirement(timing, keys, active).max(plus(
        plus(next.published_at, timing.propagation_delay.as_signed()),
        timing.activation_margin.as_signed(),
    ))
}

/// Plans the key set at `now`.
pub fn plan(timing: &Timing, current: &KeySet, now: Timestamp) -> Plan {
    let mut keys = current.clone();
    let mut transitions = Vec::new();
    let retention = retention(timing);

    // Revoked keys go at once, whatever their state.
    keys.keys.retain(|k| {
        let revoked = current.revoked.contains(k.kid());
        if revoked {
            transitions.push(Transition::Revoked(k.kid().to_string()));
        }
        !revoked
    });

    // Repair states that should not exist (several signing or next keys): keep the newest, retire
    // the other signing keys now, drop the other next keys (they never signed).
    let newest_active = keys
        .keys
        .iter()
        .filter(|k| k.is_active())
        .max_by_key(|k| k.activated_at)
        .map(|k| k.kid().to_string());
    let newest_next = keys
        .keys
        .iter()
        .filter(|k| k.is_next())
        .max_by_key(|k| k.published_at)
        .map(|k| k.kid().to_string());
    keys.keys
        .retain(|k| !k.is_next() || Some(k.kid()) == newest_next.as_deref());
    for key in keys.keys.iter_mut() {
        if key.is_active() && Some(key.kid()) != newest_active.as_deref() {
            key.retired_at = Some(now);
        }
    }

    // Retention follows the current spec but never shrinks below what was promised.
    for key in keys.keys.iter_mut() {
        if let Some(retired) = key.retired_at {
            let by_spec = plus(retired, retention);
            key.remove_after = Some(
                key.remove_after
                    .map_or(by_spec, |promised| promised.max(by_spec)),
            );
        }
    }

    let mut generate = None;
    // Rotations cascade when the operator was away for several intervals; each step happens at
    // `now` at the earliest, so a bounded loop settles.
    for _ in 0..4 {
        let Some(active) = keys.active().cloned() else {
            generate = Some(NewKey::SignsNow);
            break;
        };
        let Some(next) = keys.next().cloned() else {
            let publish_at = minus(
                scheduled_retirement(timing, &keys, &active),
                timing.propagation_delay.as_signed(),
            );
            // A next key needs room under the bound; requested rotations that would exceed it wait
            // until retired keys are removed (retention is never cut short).
            if now >= publish_at && keys.has_room_for_next(timing.max_published_keys) {
                generate = Some(NewKey::Next);
            }
            break;
        };
        if now < activation_time(timing, &keys, &active, &next) {
            break;
        }
        for key in keys.keys.iter_mut() {
            if key.kid() == active.kid() {
                key.retired_at = Some(now);
                key.remove_after = Some(plus(now, retention));
            } else if key.kid() == next.kid() {
                key.activated_at = Some(now);
            }
        }
        keys.rotation_requested_at = None;
        transitions.push(Transition::Retired(active.kid().to_string()));
        transitions.push(Transition::Activated(next.kid().to_string()));
    }

    // While no key signs (the Secret lost its signing key, and the fresh one is not published yet),
    // the auth service still signs with the last key that signed: it stays, however long ago its
    // retirement was stamped; its retention counts from the Secret write that makes another key
    // sign.
    // (When a lost Secret leaves several keys retired at the same instant, all of them stay.)
    let last_signed = match keys.active() {
        Some(_) => None,
        None => keys.keys.iter().filter_map(|k| k.retired_at).max(),
    };
    keys.keys.retain(|k| {
        let expired = k.remove_after.is_some_and(|at| at <= now)
            && (last_signed.is_none() || k.retired_at != last_signed);
        if expired {
            transitions.push(Transition::Removed(k.kid().to_string()));
        }
        !expired
    });

    let next_change = if generate.is_some() {
        Some(now)
    } else {
        let mut candidates: Vec<Timestamp> =
            keys.keys.iter().filter_map(|k| k.remove_after).collect();
        if let Some(active) = keys.active() {
            match keys.next() {
                Some(next) => candidates.push(activation_time(timing, &keys, active, next)),
                // Without room, the next removal (already a candidate) is when to look again.
                None if keys.has_room_for_next(timing.max_published_keys) => {
                    candidates.push(minus(
                        scheduled_retirement(timing, &keys, active),
                        timing.propagation_delay.as_signed(),
                    ))
                }
                None => {}
            }
        }
        candidates.into_iter().min()
    };

    Plan {
        keys,
        generate,
        transitions,
        next_change,
    }
}

/// When the signing key changes next (the `nextRotationTime` of the status).
pub fn next_rotation(timing: &Timing, keys: &KeySet) -> Option<Timestamp> {
    let active = keys.active()?;
    Some(match keys.next() {
        Some(next) => activation_time(timing, keys, active, next),
        None => scheduled_retirement(timing, keys, active),
    })
}

/// The status entries of the published keys, in `jwks.json` order.
pub fn key_statuses(timing: &Timing, keys: &KeySet) -> Vec<KeyStatus> {
    let r = timing.rotation_interval.as_signed();
    let active = keys.active();
    keys.published_in_order()
        .into_iter()
        .map(|key| {
            let (state, activates, retires) = if key.is_active() {
                let retires = scheduled_retirement(timing, keys, key);
                (KeyState::Active, key.activated_at, Some(retires))
            } else if key.is_next() {
                let activates = active.map(|a| activation_time(timing, keys, a, key));
                (KeyState::Next, activates, activates.map(|t| plus(t, r)))
            } else {
                (KeyState::Retired, key.activated_at, key.retired_at)
            };
            KeyStatus {
                kid: key.kid().to_string(),
                state,
                algorithm: Some(key.jwk.alg.clone()),
                created_at: rfc3339_secs(key.published_at),
                activates_at: activates.map(rfc3339_secs),
                retires_at: retires.map(rfc3339_secs),
                remove_after: key.remove_after.map(rfc3339_secs_up),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
