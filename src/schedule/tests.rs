//! Stories and property tests for the key schedule, on a fake clock.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::*;
use crate::{crd::Timing, duration::GoDuration};

fn timing(r: i64, p: i64, l: i64) -> Timing {
    Timing {
        rotation_interval: GoDuration::from(std::time::Duration::from_secs(r as u64)),
        propagation_delay: GoDuration::from(std::time::Duration::from_secs(p as u64)),
        max_token_lifetime: GoDuration::from(std::time::Duration::from_secs(l as u64)),
        activation_margin: GoDuration::from(std::time::Duration::ZERO),
        max_published_keys: crate::crd::MAX_PUBLISHED_KEYS,
    }
}

fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn secs(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s)
}

/// A fake key generator and the operator's apply loop, as the reconciler runs it.
struct World {
    timing: Timing,
    keys: KeySet,
    generated: u32,
    signs_now: BTreeSet<String>,
}

impl World {
    fn new(timing: Timing) -> World {
        World {
            timing,
            keys: KeySet::default(),
            generated: 0,
            signs_now: BTreeSet::new(),
        }
    }

    fn jwk(&mut self) -> Jwk {
        self.generated += 1;
        Jwk {
            kty: "RSA".into(),
            use_: "sig".into(),
            alg: "RS256".into(),
            kid: format!("key-{}", self.generated),
            n: "n".into(),
            e: "AQAB".into(),
            ..Jwk::default()
        }
    }

    /// Reconciles at `now`; returns the plan's next change.
    fn reconcile(&mut self, now: Timestamp) -> Option<Timestamp> {
        loop {
            let plan = plan(&self.timing, &self.keys, now);
            self.keys = plan.keys;
            match plan.generate {
                Some(role) => {
                    let jwk = self.jwk();
                    if role == NewKey::SignsNow {
                        self.signs_now.insert(jwk.kid.clone());
                    }
                    self.keys.add_published(jwk, now, role);
                }
                None => return plan.next_change,
            }
        }
    }

    fn active(&self) -> String {
        self.keys.active().expect("a signing key").kid().to_string()
    }

    fn published(&self) -> Vec<String> {
        self.keys
            .published_in_order()
            .iter()
            .map(|k| k.kid().to_string())
            .collect()
    }
}

#[test]
fn first_key_signs_at_once() {
    let mut world = World::new(timing(100, 10, 20));
    let next = world.reconcile(t0());
    assert_eq!(world.active(), "key-1");
    assert_eq!(world.published(), ["key-1"]);
    assert_eq!(
        next,
        Some(t0() + secs(90)),
        "the next key is due P before R ends"
    );
}

#[test]
fn next_key_is_published_p_before_it_signs() {
    let mut world = World::new(timing(100, 10, 20));
    world.reconcile(t0());
    assert_eq!(world.reconcile(t0() + secs(89)), Some(t0() + secs(90)));
    assert_eq!(
        world.published(),
        ["key-1"],
        "nothing happens before it is due"
    );

    let next = world.reconcile(t0() + secs(90));
    assert_eq!(world.published(), ["key-1", "key-2"]);
    assert_eq!(world.active(), "key-1");
    assert_eq!(next, Some(t0() + secs(100)));

    world.reconcile(t0() + secs(100));
    assert_eq!(world.active(), "key-2");
    assert_eq!(
        world.published(),
        ["key-2", "key-1"],
        "signing key first, retired after"
    );
}

#[test]
fn retired_key_stays_published_for_l_plus_p() {
    let mut world = World::new(timing(100, 10, 20));
    world.reconcile(t0());
    world.reconcile(t0() + secs(90));
    let next = world.reconcile(t0() + secs(100));
    let removal = t0() + secs(100 + 20 + 10) + CLOCK_MARGIN;
    assert_eq!(next, Some(removal));
    world.reconcile(removal - SignedDuration::from_millis(1));
    assert!(world.published().contains(&"key-1".to_string()));
    world.reconcile(removal);
    assert_eq!(world.published(), ["key-2"]);
}

#[test]
fn operator_down_through_an_activation_activates_late_never_early() {
    let mut world = World::new(timing(100, 10, 20));
    world.reconcile(t0());
    // Down from 50s to 500s: the next key was never published, so it is published now and signs P later.
    world.reconcile(t0() + secs(500));
    assert_eq!(world.active(), "key-1");
    assert_eq!(world.published(), ["key-1", "key-2"]);
    let next = world.reconcile(t0() + secs(505));
    assert_eq!(
        world.active(),
        "key-1",
        "a key never signs before it was published for P"
    );
    assert_eq!(next, Some(t0() + secs(510)));
    world.reconcile(t0() + secs(510));
    assert_eq!(world.active(), "key-2");
}

#[test]
fn operator_down_through_a_removal_removes_late() {
    let mut world = World::new(timing(100, 10, 20));
    world.reconcile(t0());
    world.reconcile(t0() + secs(90));
    world.reconcile(t0() + secs(100));
    // key-1 was due for removal at 131s; the operator returns at 160s.
    world.reconcile(t0() + secs(160));
    assert_eq!(world.published(), ["key-2"]);
}

#[test]
fn a_rotation_request_publishes_now_and_signs_after_p() {
    let mut world = World::new(timing(1000, 10, 20));
    world.reconcile(t0());
    world.keys.rotation_requested_at = Some(t0() + secs(300));
    let next = world.reconcile(t0() + secs(300));
    assert_eq!(world.published(), ["key-1", "key-2"]);
    assert_eq!(next, Some(t0() + secs(310)));
    world.reconcile(t0() + secs(310));
    assert_eq!(world.active(), "key-2");
    assert_eq!(
        world.keys.rotation_requested_at, None,
        "a request acts once"
    );
    world.reconcile(t0() + secs(311));
    assert_eq!(
        next_rotation(&world.timing, &world.keys),
        Some(t0() + secs(310 + 1000)),
        "the new key gets a full interval"
    );
}

#[test]
fn requested_rotations_stop_at_the_bound_of_the_key_type() {
    // RSA-4096: 57 keys keep a JWKS under 50,000 bytes; retention far longer than the requests.
    let mut world = World::new(Timing {
        max_published_keys: 57,
        ..timing(100_000, 1, 100_000)
    });
    world.reconcile(t0());
    for i in 1..200 {
        let now = t0() + secs(2 * i);
        world.keys.rotation_requested_at = Some(now);
        world.reconcile(now);
        world.reconcile(now + secs(1));
    }
    assert_eq!(world.keys.keys.len(), 57, "never more keys than the bound");
}

#[test]
fn revoking_the_signing_key_makes_a_fresh_key_sign_at_once() {
    let mut world = World::new(timing(100, 10, 20));
    world.reconcile(t0());
    world.reconcile(t0() + secs(90));
    world.keys.revoked.insert("key-1".into());
    world.reconcile(t0() + secs(91));
    assert_eq!(world.active(), "key-3");
    assert!(!world.published().contains(&"key-1".to_string()));
    assert!(
        world.published().contains(&"key-2".to_string()),
        "the next key stays published"
    );
}

#[test]
fn revoked_keys_never_return() {
    let mut world = World::new(timing(100, 10, 20));
    world.reconcile(t0());
    let stale = world.keys.clone();
    world.keys.revoked.insert("key-1".into());
    world.reconcile(t0() + secs(1));
    // Even if an old copy of the key set resurfaces, the revocation list wins.
    let mut resurfaced = stale;
    resurfaced.revoked = world.keys.revoked.clone();
    let plan = plan(&world.timing, &resurfaced, t0() + secs(2));
    assert!(plan.keys.keys.iter().all(|k| k.kid() != "key-1"));
}

#[test]
fn a_longer_token_lifetime_extends_retention_and_a_shorter_one_never_shrinks_it() {
    let mut world = World::new(timing(100, 10, 20));
    world.reconcile(t0());
    world.reconcile(t0() + secs(90));
    world.reconcile(t0() + secs(100));
    let promised = t0() + secs(130) + CLOCK_MARGIN;
    world.timing = timing(100, 10, 5);
    assert_eq!(world.reconcile(t0() + secs(101)), Some(promised));
    world.timing = timing(100, 10, 60);
    assert_eq!(
        world.reconcile(t0() + secs(102)),
        Some(t0() + secs(170) + CLOCK_MARGIN)
    );
}

#[test]
fn a_lost_secret_retires_the_signing_key_but_keeps_it_published() {
    let mut world = World::new(timing(100, 10, 20));
    world.reconcile(t0());
    world
        .keys
        .lose_private_keys(&world.timing, t0() + secs(40), false);
    world.reconcile(t0() + secs(40));
    assert_eq!(world.active(), "key-2");
    assert_eq!(world.published(), ["key-2", "key-1"]);
}

#[test]
fn status_shows_every_key_and_its_schedule() {
    let mut world = World::new(timing(100, 10, 20));
    world.reconcile(t0());
    world.reconcile(t0() + secs(90));
    let statuses = key_statuses(&world.timing, &world.keys);
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[0].state, KeyState::Active);
    assert_eq!(
        statuses[0].retires_at.as_deref(),
        Some("2026-01-01T00:01:40Z")
    );
    assert_eq!(statuses[1].state, KeyState::Next);
    assert_eq!(
        statuses[1].activates_at.as_deref(),
        Some("2026-01-01T00:01:40Z")
    );
    assert_eq!(
        next_rotation(&world.timing, &world.keys),
        Some(t0() + secs(100))
    );
}

/// A `state.json` as the operator has always written it (timestamps in RFC 3339, UTC, `Z`, with
/// 0, 3, 6 or 9 fraction digits as needed).
const STATE_JSON_WRITTEN_BEFORE: &str = concat!(
    r#"{"keys":["#,
    r#"{"jwk":{"kty":"RSA","use":"sig","alg":"RS256","kid":"key-2","n":"n","e":"AQAB"},"#,
    r#""publishedAt":"2026-11-29T04:01:02.123456789Z","activatedAt":"2026-11-29T04:01:12.120Z"},"#,
    r#"{"jwk":{"kty":"RSA","use":"sig","alg":"RS256","kid":"key-1","n":"n","e":"AQAB"},"#,
    r#""publishedAt":"2026-11-28T00:00:00Z","activatedAt":"2026-11-28T00:00:00.123456Z","#,
    r#""retiredAt":"2026-11-29T04:01:12.120Z","removeAfter":"2026-11-29T04:01:43.123456780Z"}],"#,
    r#""rotationRequestedAt":"2026-11-29T04:00:00.500Z","revoked":["key-0"],"#,
    r#""handledRotate":"r1","handledRevoke":"key-0","#,
    r#""revokedAt":{"key-0":"2026-11-29T03:59:59.999999999Z"},"#,
    r#""pending":{"jwk":{"kty":"RSA","use":"sig","alg":"RS256","kid":"key-3","n":"n","e":"AQAB"},"#,
    r#""generatedAt":"2026-11-29T04:02:00Z"}}"#,
);

#[test]
fn a_state_written_before_reads_back_and_writes_the_same_bytes() {
    let at = |s: &str| s.parse::<Timestamp>().unwrap();
    let keys: KeySet = serde_json::from_str(STATE_JSON_WRITTEN_BEFORE).unwrap();
    let active = keys.active().unwrap();
    assert_eq!(active.kid(), "key-2");
    assert_eq!(
        active.published_at,
        at("2026-11-29T04:01:02Z") + SignedDuration::from_nanos(123_456_789)
    );
    assert_eq!(active.activated_at, Some(at("2026-11-29T04:01:12.12Z")));
    let retired = keys.retired()[0];
    assert_eq!(retired.published_at, at("2026-11-28T00:00:00Z"));
    assert_eq!(
        retired.activated_at,
        Some(at("2026-11-28T00:00:00Z") + SignedDuration::from_micros(123_456))
    );
    assert_eq!(
        retired.remove_after,
        Some(at("2026-11-29T04:01:43.12345678Z"))
    );
    assert_eq!(
        keys.rotation_requested_at,
        Some(at("2026-11-29T04:00:00.5Z"))
    );
    assert_eq!(
        keys.revoked_at["key-0"],
        at("2026-11-29T03:59:59.999999999Z")
    );
    assert_eq!(
        keys.pending.as_ref().unwrap().generated_at,
        at("2026-11-29T04:02:00Z")
    );
    assert_eq!(
        serde_json::to_string(&keys).unwrap(),
        STATE_JSON_WRITTEN_BEFORE,
        "an unchanged state is not rewritten"
    );
}

#[test]
fn a_state_with_other_offsets_reads_as_the_same_instants() {
    let json = STATE_JSON_WRITTEN_BEFORE.replace(
        "\"publishedAt\":\"2026-11-28T00:00:00Z\"",
        "\"publishedAt\":\"2026-11-28T02:00:00+02:00\"",
    );
    assert_ne!(json, STATE_JSON_WRITTEN_BEFORE);
    let keys: KeySet = serde_json::from_str(&json).unwrap();
    assert_eq!(
        keys.retired()[0].published_at,
        "2026-11-28T00:00:00Z".parse::<Timestamp>().unwrap()
    );
}

/// Observed life of one key across a simulation.
#[derive(Default, Debug)]
struct Life {
    published: Option<Timestamp>,
    signing_from: Option<Timestamp>,
    signing_until: Option<Timestamp>,
    unpublished: Option<Timestamp>,
}

#[derive(Clone, Debug)]
enum Event {
    /// Reconcile at the planned instant.
    OnTime,
    /// The operator is away for this many seconds past the planned instant.
    Pause(i64),
    /// A spurious reconcile this many seconds from now, before the planned instant.
    Early(i64),
    Rotate,
    /// Revoke the key at this index of the published list.
    Revoke(usize),
    /// New spec (R, P, L).
    Respec(i64, i64, i64),
}

fn arb_timing() -> impl Strategy<Value = (i64, i64, i64)> {
    (10i64..400).prop_flat_map(|r| (Just(r), 0..r, 1i64..(10 * r)))
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => Just(Event::OnTime),
        2 => (1i64..2000).prop_map(Event::Pause),
        2 => (0i64..50).prop_map(Event::Early),
        1 => Just(Event::Rotate),
        1 => (0usize..4).prop_map(Event::Revoke),
        1 => arb_timing().prop_map(|(r, p, l)| Event::Respec(r, p, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// I1: a key signs only after being published for P (first key and revocations excepted).
    /// I2: a key that signed stays published for L + P after it stopped (revocations excepted).
    /// I3: exactly one signing key, and it is published.
    #[test]
    fn invariants_hold_across_rotations_pauses_and_spec_changes(
        (r, p, l) in arb_timing(),
        events in proptest::collection::vec(arb_event(), 1..120),
    ) {
        let mut world = World::new(timing(r, p, l));
        let mut lives: BTreeMap<String, Life> = BTreeMap::new();
        // The largest L + P in force from each key's retirement on.
        let mut retention: BTreeMap<String, SignedDuration> = BTreeMap::new();
        let mut revoked = BTreeSet::new();
        let mut now = t0();
        let mut next = world.reconcile(now);

        for event in events {
            match event {
                Event::OnTime => now = next.unwrap_or(now + secs(r)).max(now),
                Event::Pause(extra) => now = next.unwrap_or(now).max(now) + secs(extra),
                Event::Early(by) => now += secs(by),
                Event::Rotate => world.keys.rotation_requested_at = Some(now),
                Event::Revoke(index) => {
                    let published = world.published();
                    if let Some(kid) = published.get(index % published.len().max(1)) {
                        world.keys.revoked.insert(kid.clone());
                        revoked.insert(kid.clone());
                    }
                }
                Event::Respec(r2, p2, l2) => world.timing = timing(r2, p2, l2),
            }
            next = world.reconcile(now);
            if let Some(next) = next {
                prop_assert!(next >= now, "next change {next} is not in the past of {now}");
            }

            let published = world.published();
            let active = world.keys.active().map(|k| k.kid().to_string());
            // I3
            prop_assert_eq!(world.keys.keys.iter().filter(|k| k.is_active()).count(), 1);
            let active = active.unwrap();
            prop_assert!(published.contains(&active));
            prop_assert_eq!(&published[0], &active, "jwks.json lists the signing key first");

            let l_plus_p = world.timing.max_token_lifetime.as_signed() + world.timing.propagation_delay.as_signed();
            for kid in &published {
                let life = lives.entry(kid.clone()).or_default();
                life.published.get_or_insert(now);
                prop_assert!(!revoked.contains(kid), "revoked key {kid} is published again");
                if life.signing_until.is_some() {
                    let retained = retention.entry(kid.clone()).or_insert(l_plus_p);
                    *retained = (*retained).max(l_plus_p);
                }
            }
            for (kid, life) in lives.iter_mut() {
                if *kid == active {
                    if life.signing_from.is_none() {
                        // I1
                        let published_for = now.duration_since(life.published.unwrap());
                        if !world.signs_now.contains(kid) {
                            prop_assert!(
                                published_for >= world.timing.propagation_delay.as_signed(),
                                "{kid} signs after being published for only {published_for}"
                            );
                        }
                        life.signing_from = Some(now);
                    }
                } else if life.signing_from.is_some() && life.signing_until.is_none() {
                    life.signing_until = Some(now);
                    retention.insert(kid.clone(), l_plus_p);
                }
                if !published.contains(kid) && life.unpublished.is_none() {
                    life.unpublished = Some(now);
                    if let (Some(until), false) = (life.signing_until, revoked.contains(kid)) {
                        // I2
                        let kept = now.duration_since(until);
                        prop_assert!(
                            kept >= retention[kid],
                            "{kid} removed {kept} after it stopped signing, less than L + P = {}",
                            retention[kid]
                        );
                    }
                }
            }
        }
    }
}
