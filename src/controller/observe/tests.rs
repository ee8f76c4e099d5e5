//! Rebuilding the key state from a tampered, emptied, garbled or rolled-back `state.json`.

use jiff::SignedDuration;

use super::*;
use crate::{
    crd::{KeyState, KeyStatus},
    duration::GoDuration,
};

fn timing() -> Timing {
    let secs = |s| GoDuration::from(std::time::Duration::from_secs(s));
    Timing {
        rotation_interval: secs(100),
        propagation_delay: secs(10),
        max_token_lifetime: secs(20),
        activation_margin: secs(0),
        max_published_keys: crate::crd::MAX_PUBLISHED_KEYS,
    }
}

fn now() -> Timestamp {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

fn pairs(n: usize) -> Vec<KeyPair> {
    (0..n)
        .map(|_| KeyPair::generate(2048, Algorithm::RS256).unwrap())
        .collect()
}

fn record(
    pair: &KeyPair,
    activated: Option<i64>,
    retired: Option<i64>,
    remove_after: Option<i64>,
) -> KeyRecord {
    let at = |s: i64| now() + SignedDuration::from_secs(s);
    KeyRecord {
        jwk: pair.jwk.clone(),
        published_at: at(-300),
        activated_at: activated.map(at),
        retired_at: retired.map(at),
        remove_after: remove_after.map(at),
    }
}

/// Signing key 0 (private.pem), next key 1 (next-private.pem), retired keys 2 and 3.
struct Scene {
    pairs: Vec<KeyPair>,
    state: KeySet,
}

impl Scene {
    fn new() -> Scene {
        let pairs = pairs(4);
        let state = KeySet {
            keys: vec![
                record(&pairs[0], Some(-50), None, None),
                record(&pairs[1], None, None, None),
                record(&pairs[2], Some(-150), Some(-50), Some(200)),
                record(&pairs[3], Some(-250), Some(-150), Some(100)),
            ],
            ..KeySet::default()
        };
        Scene { pairs, state }
    }

    fn published(&self) -> Vec<Jwk> {
        self.pairs.iter().map(|p| p.jwk.clone()).collect()
    }

    /// The status the last reconcile wrote: it records every published kid.
    fn status(&self) -> JwtSigningKeyStatus {
        JwtSigningKeyStatus {
            keys: self
                .pairs
                .iter()
                .map(|p| KeyStatus {
                    kid: p.kid().to_string(),
                    state: KeyState::Retired,
                    algorithm: None,
                    created_at: rfc3339_secs(now() - SignedDuration::from_secs(300)),
                    activates_at: None,
                    retires_at: None,
                    remove_after: None,
                })
                .collect(),
            ..JwtSigningKeyStatus::default()
        }
    }

    fn rebuild(&self, state_json: &str) -> Rebuilt {
        rebuild(
            &timing(),
            &Inputs {
                state_json: Some(state_json),
                active_pem: Some(self.pairs[0].private_pem()),
                next_pem: Some(self.pairs[1].private_pem()),
                pending_pem: None,
                published: self.published(),
                status: Some(&self.status()),
                algorithm: Algorithm::RS256,
            },
            now(),
        )
    }
}

fn find<'k>(keys: &'k KeySet, pair: &KeyPair) -> &'k KeyRecord {
    keys.keys
        .iter()
        .find(|k| k.kid() == pair.kid())
        .unwrap_or_else(|| panic!("key {} was dropped", pair.kid()))
}

#[test]
fn an_intact_state_is_taken_as_it_is() {
    let scene = Scene::new();
    let rebuilt = scene.rebuild(&serde_json::to_string(&scene.state).unwrap());
    assert!(rebuilt.repairs.is_empty(), "{:?}", rebuilt.repairs);
    assert_eq!(rebuilt.keys.keys, scene.state.keys);
    assert_eq!(rebuilt.private.len(), 2);
}

fn assert_nothing_published_is_dropped(scene: &Scene, rebuilt: &Rebuilt) {
    let retention = schedule::retention(&timing());
    let keys = &rebuilt.keys;
    assert_eq!(keys.active().map(|k| k.kid()), Some(scene.pairs[0].kid()));
    assert_eq!(keys.next().map(|k| k.kid()), Some(scene.pairs[1].kid()));
    for retired in &scene.pairs[2..] {
        let record = find(keys, retired);
        assert!(
            record.remove_after.unwrap() >= now() + retention,
            "a published key the state forgot stays for a full retention from now"
        );
    }
    // The next key counts as published from now: a late activation, never an early one.
    assert!(find(keys, &scene.pairs[1]).published_at >= now());
    assert!(!rebuilt.repairs.is_empty(), "the repair is reported");
}

#[test]
fn an_emptied_state_drops_no_published_key() {
    let scene = Scene::new();
    let rebuilt = scene.rebuild(r#"{"keys":[]}"#);
    assert_nothing_published_is_dropped(&scene, &rebuilt);
}

#[test]
fn a_garbled_state_drops_no_published_key() {
    let scene = Scene::new();
    let rebuilt = scene.rebuild("{\"keys\": [ {garbage");
    assert_nothing_published_is_dropped(&scene, &rebuilt);
    assert!(rebuilt.repairs[0].contains("state.json does not parse"));
}

#[test]
fn a_rolled_back_state_keeps_the_secrets_signing_key_and_every_published_key() {
    let scene = Scene::new();
    // An older state: key 3 was signing, key 2 was next; keys 0 and 1 did not exist yet.
    let old = KeySet {
        keys: vec![
            record(&scene.pairs[3], Some(-250), None, None),
            record(&scene.pairs[2], None, None, None),
        ],
        ..KeySet::default()
    };
    let rebuilt = scene.rebuild(&serde_json::to_string(&old).unwrap());
    let keys = &rebuilt.keys;
    let retention = schedule::retention(&timing());
    assert_eq!(keys.active().map(|k| k.kid()), Some(scene.pairs[0].kid()));
    assert_eq!(keys.next().map(|k| k.kid()), Some(scene.pairs[1].kid()));
    let former = find(keys, &scene.pairs[3]);
    assert_eq!(
        former.retired_at,
        Some(now()),
        "the key the old state called signing retires now"
    );
    assert!(former.remove_after.unwrap() >= now() + retention);
    let unknown = find(keys, &scene.pairs[2]);
    assert!(unknown.remove_after.unwrap() >= now() + retention);
}

#[test]
fn a_record_whose_modulus_was_altered_is_rebuilt_from_the_private_key() {
    let scene = Scene::new();
    let mut state = scene.state.clone();
    let mut n = state.keys[0].jwk.n.clone().into_bytes();
    n[10] = if n[10] == b'A' { b'B' } else { b'A' };
    state.keys[0].jwk.n = String::from_utf8(n).unwrap();
    let rebuilt = scene.rebuild(&serde_json::to_string(&state).unwrap());
    let active = rebuilt.keys.active().expect("a signing key");
    assert_eq!(
        active.jwk, scene.pairs[0].jwk,
        "the JWK matches the private key"
    );
    assert_eq!(
        active.jwk.kid,
        crate::keys::thumbprint(&active.jwk.n, &active.jwk.e)
    );
}

#[test]
fn instants_in_the_future_are_clamped_to_now() {
    let scene = Scene::new();
    let mut state = scene.state.clone();
    state.keys[1].published_at = now() + SignedDuration::from_hours(300 * 24);
    state.keys[0].activated_at = Some(now() + SignedDuration::from_hours(300 * 24));
    state.keys[2].retired_at = Some(now() + SignedDuration::from_hours(300 * 24));
    let rebuilt = scene.rebuild(&serde_json::to_string(&state).unwrap());
    for key in &rebuilt.keys.keys {
        assert!(key.published_at <= now());
        assert!(key.activated_at.is_none_or(|t| t <= now()));
        assert!(key.retired_at.is_none_or(|t| t <= now()));
    }
}

#[test]
fn instants_at_the_ends_of_the_range_do_not_overflow() {
    let scene = Scene::new();
    let mut state = scene.state.clone();
    state.rotation_requested_at = Some(Timestamp::MAX);
    state.keys[1].published_at = Timestamp::MIN;
    state.keys[2].remove_after = Some(Timestamp::MAX);
    state.keys[3].published_at = Timestamp::MIN;
    state.keys[3].activated_at = Some(Timestamp::MIN);
    state.revoked.insert("gone".into());
    state.revoked_at.insert("gone".into(), Timestamp::MAX);
    let rebuilt = scene.rebuild(&serde_json::to_string(&state).unwrap());
    assert_eq!(rebuilt.keys.rotation_requested_at, Some(Timestamp::MAX));
    assert!(rebuilt.keys.revoked.contains("gone"));
    let plan = schedule::plan(&timing(), &rebuilt.keys, now());
    assert_eq!(
        plan.keys.active().map(|k| k.kid()),
        Some(scene.pairs[0].kid())
    );
    schedule::next_rotation(&timing(), &plan.keys);
    schedule::key_statuses(&timing(), &plan.keys);
}

#[test]
fn a_lost_private_pem_promotes_the_published_next_key() {
    let scene = Scene::new();
    let rebuilt = rebuild(
        &timing(),
        &Inputs {
            state_json: Some(&serde_json::to_string(&scene.state).unwrap()),
            active_pem: None,
            next_pem: Some(scene.pairs[1].private_pem()),
            published: scene.published(),
            algorithm: Algorithm::RS256,
            ..Inputs::default()
        },
        now(),
    );
    let keys = &rebuilt.keys;
    assert_eq!(keys.active().map(|k| k.kid()), Some(scene.pairs[1].kid()));
    let lost = find(keys, &scene.pairs[0]);
    assert_eq!(lost.retired_at, Some(now()));
    assert!(keys.next().is_none());
}

#[test]
fn a_private_key_that_was_never_published_does_not_sign() {
    let scene = Scene::new();
    let stranger = pairs(1).remove(0);
    let rebuilt = rebuild(
        &timing(),
        &Inputs {
            state_json: Some(&serde_json::to_string(&scene.state).unwrap()),
            active_pem: Some(stranger.private_pem()),
            published: scene.published(),
            algorithm: Algorithm::RS256,
            ..Inputs::default()
        },
        now(),
    );
    assert!(rebuilt.keys.keys.iter().all(|k| k.kid() != stranger.kid()));
    assert!(
        rebuilt.keys.active().is_none(),
        "no published key can sign: the schedule makes a fresh one"
    );
}

#[test]
fn without_a_state_the_status_gives_the_schedule_back() {
    let scene = Scene::new();
    let status = JwtSigningKeyStatus {
        keys: vec![KeyStatus {
            kid: scene.pairs[2].kid().to_string(),
            state: KeyState::Retired,
            algorithm: Some("RS256".into()),
            created_at: "2026-06-01T11:50:00Z".into(),
            activates_at: Some("2026-06-01T11:52:00Z".into()),
            retires_at: Some("2026-06-01T11:58:00Z".into()),
            remove_after: Some("2026-06-02T00:00:00Z".into()),
        }],
        revoked_key_ids: vec![scene.pairs[3].kid().to_string()],
        ..JwtSigningKeyStatus::default()
    };
    let rebuilt = rebuild(
        &timing(),
        &Inputs {
            state_json: None,
            active_pem: Some(scene.pairs[0].private_pem()),
            published: scene.published(),
            status: Some(&status),
            algorithm: Algorithm::RS256,
            ..Inputs::default()
        },
        now(),
    );
    let retired = find(&rebuilt.keys, &scene.pairs[2]);
    assert_eq!(
        retired.remove_after,
        Some("2026-06-02T00:00:00Z".parse().unwrap()),
        "the removal the status promised is kept"
    );
    assert!(
        rebuilt.keys.revoked.contains(scene.pairs[3].kid()),
        "revocations survive a lost state"
    );
    assert!(
        rebuilt
            .keys
            .keys
            .iter()
            .all(|k| k.kid() != scene.pairs[3].kid()),
        "a revoked key is not revived from a ConfigMap"
    );
}

#[test]
fn the_revoked_list_is_bounded_and_forgets_kids_that_can_no_longer_appear() {
    let scene = Scene::new();
    let mut state = scene.state.clone();
    let retention = schedule::retention(&timing());
    for i in 0..100 {
        let kid = format!("old-{i}");
        state.revoked.insert(kid.clone());
        state
            .revoked_at
            .insert(kid, now() - retention - SignedDuration::from_secs(1));
    }
    for i in 0..70 {
        let kid = format!("recent-{i}");
        state.revoked.insert(kid.clone());
        state
            .revoked_at
            .insert(kid, now() - SignedDuration::from_millis(i));
    }
    let rebuilt = scene.rebuild(&serde_json::to_string(&state).unwrap());
    let revoked = &rebuilt.keys.revoked;
    assert!(revoked.iter().all(|k| k.starts_with("recent-")));
    assert_eq!(revoked.len(), MAX_PUBLISHED_KEYS as usize);
    assert!(
        revoked.contains("recent-0"),
        "the newest revocations are kept"
    );
}

#[test]
fn a_restarted_process_counts_a_published_next_key_from_the_end_of_the_status_second() {
    let pair = &pairs(1)[0];
    let pending = PendingKey {
        jwk: pair.jwk.clone(),
        generated_at: now() - SignedDuration::from_secs(30),
    };
    let entry = |state: KeyState, created_at: Timestamp| KeyStatus {
        kid: pair.kid().to_string(),
        state,
        algorithm: Some("RS256".into()),
        created_at: rfc3339_secs(created_at),
        activates_at: None,
        retires_at: None,
        remove_after: None,
    };
    let status = |entries: Vec<KeyStatus>| JwtSigningKeyStatus {
        keys: entries,
        ..JwtSigningKeyStatus::default()
    };
    // Published everywhere at 11:59:40.7; the status says 11:59:40, in whole seconds.
    let published = now() - SignedDuration::from_millis(19_300);
    let since = published_next_since(
        &status(vec![entry(KeyState::Next, published)]),
        &pending,
        now(),
    );
    assert_eq!(
        since,
        Some(now() - SignedDuration::from_secs(19) - SignedDuration::from_nanos(1)),
        "the last instant of that second, never earlier"
    );
    assert!(since.unwrap() >= published);
    // Shown again as it was: a restart does not move it.
    assert_eq!(
        rfc3339_secs(since.unwrap()),
        rfc3339_secs(published),
        "the status's createdAt after a restart"
    );
    // Never before the key was generated (a status restored from an older backup), nor in the future.
    let restored = now() - SignedDuration::from_secs(3600);
    assert_eq!(
        published_next_since(
            &status(vec![entry(KeyState::Next, restored)]),
            &pending,
            now()
        ),
        Some(pending.generated_at)
    );
    let future = now() + SignedDuration::from_secs(3600);
    assert_eq!(
        published_next_since(
            &status(vec![entry(KeyState::Next, future)]),
            &pending,
            now()
        ),
        Some(now())
    );
    // Only a Next entry for this very key counts.
    assert_eq!(
        published_next_since(
            &status(vec![entry(KeyState::Active, published)]),
            &pending,
            now()
        ),
        None
    );
    assert_eq!(published_next_since(&status(vec![]), &pending, now()), None);
}

#[test]
fn a_published_key_that_neither_the_state_nor_the_status_recorded_is_never_taken_back() {
    let scene = Scene::new();
    let planted = pairs(1).remove(0);
    let mut published = scene.published();
    published.push(planted.jwk.clone());
    for state_json in [serde_json::to_string(&scene.state).unwrap(), String::new()] {
        let rebuilt = rebuild(
            &timing(),
            &Inputs {
                state_json: Some(&state_json),
                active_pem: Some(scene.pairs[0].private_pem()),
                next_pem: Some(scene.pairs[1].private_pem()),
                pending_pem: None,
                published: published.clone(),
                status: Some(&scene.status()),
                algorithm: Algorithm::RS256,
            },
            now(),
        );
        assert!(
            rebuilt.keys.keys.iter().all(|k| k.kid() != planted.kid()),
            "a key found only in a ConfigMap was adopted"
        );
        for pair in &scene.pairs {
            find(&rebuilt.keys, pair);
        }
    }
    // Without a status, a lost state recovers the Secret's signing key, and nothing found only in
    // the ConfigMaps.
    let rebuilt = rebuild(
        &timing(),
        &Inputs {
            state_json: None,
            active_pem: Some(scene.pairs[0].private_pem()),
            next_pem: None,
            pending_pem: None,
            published,
            status: None,
            algorithm: Algorithm::RS256,
        },
        now(),
    );
    let kids: Vec<&str> = rebuilt.keys.keys.iter().map(|k| k.kid()).collect();
    assert_eq!(kids, [scene.pairs[0].kid()]);
}
