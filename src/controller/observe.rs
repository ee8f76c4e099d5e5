//! Observe and rebuild: the key state is rebuilt on every reconcile from everything that records it:
//! the Secret's `state.json` and private keys, the public keys published in every owned ConfigMap,
//! and the status. The state is a cache, not an authority:
//! - the ConfigMaps are output, never a source of keys: a published JWK is taken back only when the
//!   Secret (its state or its private keys) or the status recorded its kid (a recorded RFC 7638
//!   kid authenticates the JWK);
//! - a kid that is published, recorded in the status and unknown to the state is kept until at
//!   least now + L + P;
//! - a record whose kid is not the RFC 7638 thumbprint of its key is dropped and rebuilt from
//!   the private key or the published JWK of that kid, so a published JWK always matches the
//!   private key it stands for;
//! - the key in `private.pem` is the signing key when it is known (state, publication or status);
//!   a state that names another signing key was rolled back or edited, and that key retires now;
//! - instants in the future are clamped to now (late is safe, early is not).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use crate::{
    crd::{Algorithm, JwtSigningKeyStatus, KeyState, MAX_PUBLISHED_KEYS, Timing},
    keys::{Jwk, KeyPair},
    schedule::{self, KeyRecord, KeySet, PendingKey},
    time::{parse_rfc3339, plus, rfc3339_secs},
};

/// What the reconciler read, for [`rebuild`].
#[derive(Default)]
pub struct Inputs<'a> {
    /// The Secret's `state.json`.
    pub state_json: Option<&'a str>,
    /// The Secret's `private.pem`.
    pub active_pem: Option<&'a str>,
    /// The Secret's `next-private.pem`.
    pub next_pem: Option<&'a str>,
    /// The Secret's `pending-private.pem`.
    pub pending_pem: Option<&'a str>,
    /// Every JWK found in the ConfigMaps this key owns (home and copies); only those whose kid the
    /// state or the status recorded are taken back.
    pub published: Vec<Jwk>,
    /// The last status written.
    pub status: Option<&'a JwtSigningKeyStatus>,
    /// The spec's algorithm, for keys no record describes.
    pub algorithm: Algorithm,
}

/// The rebuilt state.
pub struct Rebuilt {
    /// The key set to plan from.
    pub keys: KeySet,
    /// Private halves by kid (signing, next and pending keys).
    pub private: BTreeMap<String, KeyPair>,
    /// What was repaired, for the log and events (never key material).
    pub repairs: Vec<String>,
}

/// The Secret's private keys (signing, next, pending), each parsed once. A Secret older than the
/// status (one under a former name that a refused delete left, a restored backup) may hold as
/// next or pending the key the status reports signing: that key signs already, and the one in its
/// `private.pem` retired at the switch and never signs again.
fn secret_keys(input: &Inputs, repairs: &mut Vec<String>) -> [Option<KeyPair>; 3] {
    let parse = |pem: Option<&str>| {
        pem.and_then(|pem| KeyPair::from_private_pem(pem, input.algorithm).ok())
    };
    let [mut active, mut next, mut pending] =
        [input.active_pem, input.next_pem, input.pending_pem].map(parse);
    let signing = input.status.and_then(|s| s.active_key_id.as_deref());
    if let Some(kid) = signing
        && active.as_ref().map(KeyPair::kid) != Some(kid)
    {
        let held = if next.as_ref().is_some_and(|pair| pair.kid() == kid) {
            next.take()
        } else if pending.as_ref().is_some_and(|pair| pair.kid() == kid) {
            pending.take()
        } else {
            None
        };
        if let Some(pair) = held {
            repairs.push(format!(
                "the Secret holds key {kid} as a key still to sign, but the status reports it \
                 signing; it is the signing key"
            ));
            active = Some(pair);
        }
    }
    [active, next, pending]
}

fn is_valid(jwk: &Jwk) -> bool {
    jwk.is_consistent()
}

fn parse_time(value: Option<&str>) -> Option<Timestamp> {
    value.and_then(parse_rfc3339)
}

/// Since when a pending key has been published everywhere, according to the status: a process
/// that did not see it published (after a restart or a failover) finds it there. The status shows
/// a key as `Next` only once every target held it, with that instant, in whole seconds (cut, not
/// rounded), as `createdAt`. The instant taken is the last one of that second, so never earlier
/// than the real one, and shown as the same `createdAt` again: a restart neither moves it nor
/// writes the status. It is never before the key was generated, nor after `now`.
pub fn published_next_since(
    status: &JwtSigningKeyStatus,
    pending: &PendingKey,
    now: Timestamp,
) -> Option<Timestamp> {
    let entry = status
        .keys
        .iter()
        .find(|e| e.kid == pending.jwk.kid && e.state == KeyState::Next)?;
    let at = plus(
        parse_time(Some(&entry.created_at))?,
        SignedDuration::from_secs(1) - SignedDuration::from_nanos(1),
    );
    Some(at.max(pending.generated_at).min(now))
}

/// Rebuilds the key set and the private keys from the Secret, the publication and the status.
pub fn rebuild(timing: &Timing, input: &Inputs, now: Timestamp) -> Rebuilt {
    let retention = schedule::retention(timing);
    let mut repairs = Vec::new();
    let mut keys: KeySet = match input.state_json {
        None => KeySet::default(),
        Some(json) => serde_json::from_str(json).unwrap_or_else(|_| {
            repairs.push(
                "state.json does not parse; the key state was rebuilt from the Secret's keys, the \
                 published keys and the status"
                    .to_string(),
            );
            KeySet::default()
        }),
    };

    // Records must describe the key their kid names; duplicates keep the first.
    let mut seen = std::collections::BTreeSet::new();
    keys.keys.retain(|record| {
        let valid = is_valid(&record.jwk);
        if !valid {
            repairs.push(format!(
                "the state's record of key {} does not match its key id; rebuilt from the key itself",
                record.kid()
            ));
        }
        valid && seen.insert(record.kid().to_string())
    });
    if keys.pending.as_ref().is_some_and(|p| !is_valid(&p.jwk)) {
        keys.pending = None;
    }
    for record in keys.keys.iter_mut() {
        record.published_at = record.published_at.min(now);
        record.activated_at = record.activated_at.map(|t| t.min(now));
        record.retired_at = record.retired_at.map(|t| t.min(now));
    }
    if let Some(pending) = keys.pending.as_mut() {
        pending.generated_at = pending.generated_at.min(now);
    }

    // The ConfigMaps are output, never a source of keys: a JWK found in one is taken back only when
    // the operator recorded its kid, in the Secret's state or in the status. The kid is the JWK's
    // RFC 7638 thumbprint, so a recorded kid authenticates the JWK; anything else is foreign
    // (whoever may edit one copy must not plant keys elsewhere) and is left out of every write.
    let seen_anywhere: BTreeMap<String, Jwk> = input
        .published
        .iter()
        .filter(|jwk| is_valid(jwk))
        .map(|jwk| (jwk.kid.clone(), jwk.clone()))
        .collect();
    let [active_pair, next_pair, pending_pair] = secret_keys(input, &mut repairs);
    let in_secret: Vec<String> = [&active_pair, &next_pair, &pending_pair]
        .into_iter()
        .flatten()
        .map(|pair| pair.kid().to_string())
        .collect();
    let recorded = |kid: &str| {
        in_secret.iter().any(|k| k == kid)
            || keys.keys.iter().any(|k| k.kid() == kid)
            || keys.pending.as_ref().is_some_and(|p| p.jwk.kid == kid)
            || input
                .status
                .is_some_and(|s| s.keys.iter().any(|entry| entry.kid == kid))
    };
    let published: BTreeMap<String, Jwk> = seen_anywhere
        .iter()
        .filter(|(kid, _)| recorded(kid))
        .map(|(kid, jwk)| (kid.clone(), jwk.clone()))
        .collect();
    let status_entry = |kid: &str| {
        input
            .status
            .and_then(|s| s.keys.iter().find(|entry| entry.kid == kid))
    };
    let status_time =
        |kid: &str, pick: fn(&crate::crd::KeyStatus) -> Option<&str>| -> Option<Timestamp> {
            parse_time(status_entry(kid).and_then(pick)).map(|t| t.min(now))
        };
    // A record's algorithm is the one its key was published with.
    let jwk_for = |keys: &KeySet, pair: &KeyPair| -> Jwk {
        keys.keys
            .iter()
            .find(|k| k.kid() == pair.kid())
            .map(|k| k.jwk.clone())
            .or_else(|| published.get(pair.kid()).cloned())
            .or_else(|| {
                let alg = status_entry(pair.kid()).and_then(|e| e.algorithm.clone())?;
                Some(Jwk {
                    alg,
                    ..pair.jwk.clone()
                })
            })
            .unwrap_or_else(|| pair.jwk.clone())
    };
    let mut private = BTreeMap::new();

    // The signing key is the one in private.pem, when it is known to have been published.
    let mut active_kid = None;
    if let Some(mut pair) = active_pair {
        let kid = pair.kid().to_string();
        let known = keys.keys.iter().any(|k| k.kid() == kid)
            || published.contains_key(&kid)
            || status_entry(&kid).is_some();
        if known {
            pair.jwk = jwk_for(&keys, &pair);
            match keys.keys.iter_mut().find(|k| k.kid() == kid) {
                Some(record) => {
                    if record.activated_at.is_none() || record.retired_at.is_some() {
                        repairs.push(format!(
                            "the state did not record key {kid} as signing, but the Secret signs with \
                             it; it is the signing key"
                        ));
                        record.activated_at = Some(record.activated_at.unwrap_or(now));
                        record.retired_at = None;
                        record.remove_after = None;
                    }
                }
                None => {
                    repairs.push(format!(
                        "the state did not know the signing key {kid}; recovered from the Secret"
                    ));
                    let published_at =
                        status_time(&kid, |e| Some(e.created_at.as_str())).unwrap_or(now);
                    keys.keys.push(KeyRecord {
                        jwk: pair.jwk.clone(),
                        published_at,
                        activated_at: Some(
                            status_time(&kid, |e| e.activates_at.as_deref())
                                .unwrap_or(now)
                                .max(published_at),
                        ),
                        retired_at: None,
                        remove_after: None,
                    });
                }
            }
            private.insert(kid.clone(), pair);
            active_kid = Some(kid);
        } else {
            repairs.push(format!(
                "private.pem holds key {kid}, which was never published; it is not used"
            ));
        }
    }

    // Keys the state says are signing but the Secret does not hold stopped signing now.
    for record in keys.keys.iter_mut() {
        let signing = record.activated_at.is_some() && record.retired_at.is_none();
        if signing && Some(record.kid()) != active_kid.as_deref() {
            repairs.push(format!(
                "key {} no longer signs (the Secret does not hold it); it stays published for \
                 verification",
                record.kid()
            ));
            record.retired_at = Some(now);
            record.remove_after = Some(
                record
                    .remove_after
                    .map_or(plus(now, retention), |at| at.max(plus(now, retention))),
            );
        }
    }

    // A retired key stays published as long as the status promised: the Secret write that moved
    // its retirement to the instant the Secret switched may have failed after the switch itself
    // succeeded, while the status recorded the later instant.
    for record in keys.keys.iter_mut().filter(|r| r.retired_at.is_some()) {
        let promised =
            parse_time(status_entry(record.kid()).and_then(|e| e.remove_after.as_deref()));
        // The status shows the instant rounded up to the second: a promise that the state's
        // instant already shows is kept as the state has it (no write for a rounding).
        let shown = record.remove_after.map(crate::time::secs_up);
        if let Some(promised) = promised
            && shown.is_none_or(|shown| promised > shown)
        {
            record.remove_after = Some(promised);
        }
    }

    // The next key is the one in next-private.pem, when the state or the publication knows it.
    if let Some(mut pair) = next_pair {
        let kid = pair.kid().to_string();
        pair.jwk = jwk_for(&keys, &pair);
        match keys.keys.iter().find(|k| k.kid() == kid) {
            Some(record) if record.activated_at.is_none() => {
                private.insert(kid, pair);
            }
            Some(_) => {}
            None if published.contains_key(&kid) => {
                repairs.push(format!(
                    "the state did not know the next key {kid}; it counts as published from now"
                ));
                keys.keys
                    .push(KeyRecord::published(pair.jwk.clone(), now, false));
                private.insert(kid, pair);
            }
            None => {}
        }
    }
    // A next key without its private half never signed: verifiers do not need it.
    keys.keys
        .retain(|k| k.activated_at.is_some() || private.contains_key(k.kid()));

    // Without a signing key, the published next key signs now rather than a key nobody has seen.
    if active_kid.is_none()
        && let Some(next) = keys
            .keys
            .iter_mut()
            .filter(|k| k.activated_at.is_none())
            .max_by_key(|k| k.published_at)
    {
        repairs.push(format!(
            "private.pem is missing; the published next key {} signs now",
            next.kid()
        ));
        next.activated_at = Some(now);
    }

    // A pending key needs its private half; a lost state with a pending key in the Secret gets it back.
    match (keys.pending.take(), pending_pair) {
        (Some(pending), Some(pair)) if pending.jwk.kid == pair.kid() => {
            private.insert(pair.kid().to_string(), pair);
            keys.pending = Some(pending);
        }
        (None, Some(pair)) if !keys.keys.iter().any(|k| k.kid() == pair.kid()) => {
            keys.pending = Some(PendingKey {
                jwk: pair.jwk.clone(),
                generated_at: now,
            });
            private.insert(pair.kid().to_string(), pair);
        }
        _ => {}
    }

    // Revoked kids: the state's and the status's.
    for kid in input.status.iter().flat_map(|s| s.revoked_key_ids.iter()) {
        keys.revoked.insert(kid.clone());
    }
    for kid in keys.revoked.clone() {
        keys.revoked_at.entry(kid).or_insert(now);
    }
    if keys
        .pending
        .as_ref()
        .is_some_and(|p| keys.revoked.contains(&p.jwk.kid))
    {
        keys.pending = None;
    }

    // Published keys the state forgot stay published for a full retention from now.
    let pending_kid = keys.pending.as_ref().map(|p| p.jwk.kid.clone());
    for (kid, jwk) in &published {
        let known = keys.keys.iter().any(|k| k.kid() == kid) || pending_kid.as_deref() == Some(kid);
        if known || keys.revoked.contains(kid) {
            continue;
        }
        repairs.push(format!(
            "key {kid} is published but the state did not know it; it stays published until at \
             least {}",
            rfc3339_secs(plus(now, retention))
        ));
        let promised = parse_time(status_entry(kid).and_then(|e| e.remove_after.as_deref()));
        keys.keys.push(KeyRecord {
            jwk: jwk.clone(),
            published_at: status_time(kid, |e| Some(e.created_at.as_str())).unwrap_or(now),
            activated_at: status_time(kid, |e| e.activates_at.as_deref()),
            retired_at: Some(now),
            remove_after: Some(
                promised.map_or(plus(now, retention), |p| p.max(plus(now, retention))),
            ),
        });
    }
    // A retired key the status knows but neither the state nor any ConfigMap does is not revived:
    // the status cannot tell whether it was removed on schedule.

    if keys.handled_rotate.is_none() {
        keys.handled_rotate = input.status.and_then(|s| s.last_rotate_annotation.clone());
    }
    if keys.handled_revoke.is_none() {
        keys.handled_revoke = input.status.and_then(|s| s.last_revoke_annotation.clone());
    }
    prune_revoked(&mut keys, &seen_anywhere, retention, now);
    Rebuilt {
        keys,
        private,
        repairs,
    }
}

/// Keeps a revoked kid while it could still appear (published somewhere, or within a retention of
/// its revocation), and at most [`MAX_PUBLISHED_KEYS`] of them, newest first.
fn prune_revoked(
    keys: &mut KeySet,
    published: &BTreeMap<String, Jwk>,
    retention: SignedDuration,
    now: Timestamp,
) {
    let keep: Vec<(Timestamp, String)> = {
        let mut entries: Vec<(Timestamp, String)> = keys
            .revoked
            .iter()
            .map(|kid| {
                (
                    keys.revoked_at.get(kid).copied().unwrap_or(now),
                    kid.clone(),
                )
            })
            .filter(|(at, kid)| published.contains_key(kid) || plus(*at, retention) > now)
            .collect();
        entries.sort_by(|a, b| b.cmp(a));
        entries.truncate(MAX_PUBLISHED_KEYS as usize);
        entries
    };
    keys.revoked = keep.iter().map(|(_, kid)| kid.clone()).collect();
    keys.revoked_at = keep.into_iter().map(|(at, kid)| (kid, at)).collect();
}

#[cfg(test)]
mod tests;
