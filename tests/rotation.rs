//! End-to-end: the rotation lifecycle on the real API server, checked against I1-I3 from a recorded
//! history of every Secret and ConfigMap version.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::{install_crd, wait_for, with_temp_ns};
use jwt_key_operator::crd::{JwtSigningKey, KeyState};
use serde_json::json;
use support::*;

/// Short settings: R = 10s, P = 3s, L = 4s; a retired key stays published L + P (+1s margin).
const SHORT: (&str, &str, &str) = ("10s", "3s", "4s");
const P: Duration = Duration::from_secs(3);
const L_PLUS_P: Duration = Duration::from_secs(7);
/// Watch delivery jitter between the operator's writes and this test's observation of them.
const SLACK: Duration = Duration::from_millis(300);

fn short_spec() -> serde_json::Value {
    json!({"rotationInterval": SHORT.0, "propagationDelay": SHORT.1, "maxTokenLifetime": SHORT.2})
}

async fn wait_signing_kids(history: &History, count: usize, timeout: Duration) -> Vec<String> {
    wait_for(&format!("{count} signing keys"), timeout, || async {
        let kids = history.signing_kids();
        (kids.len() >= count).then_some(kids)
    })
    .await
}

#[tokio::test]
async fn next_key_is_published_before_it_signs_and_retired_keys_stay_for_l_plus_p() {
    with_temp_ns("rot-cycle", |ns| async move {
        install_crd(&ns.client).await;
        let history = History::of(&ns).await;
        let operator = operator(&[&ns.name]);
        let first = create_ready(&ns, &jsk("auth", short_spec())).await;
        wait_reconciled(&operator).await;
        let writes_at_start = metric_sum(&metrics(&operator).await, "jwtkeys_api_writes_total", "");

        // The next key shows up in the status as Next before it signs.
        let key = wait_status(
            &ns,
            "auth",
            "a Next key in the status",
            Duration::from_secs(20),
            |k| {
                k.status
                    .as_ref()
                    .is_some_and(|s| s.keys.iter().any(|k| k.state == KeyState::Next))
            },
        )
        .await;
        let status = key.status.unwrap();
        let next = status
            .keys
            .iter()
            .find(|k| k.state == KeyState::Next)
            .unwrap();
        assert_eq!(
            status.next_rotation_time, next.activates_at,
            "nextRotationTime is the next key's activation"
        );
        assert_eq!(status.keys[0].state, KeyState::Active);

        let kids = wait_signing_kids(&history, 4, Duration::from_secs(60)).await;
        assert_eq!(kids[0], first);
        // Wait until the second key has been removed too, so that removals are in the history.
        wait_for(
            "the second key to leave the ConfigMap",
            Duration::from_secs(30),
            || async {
                let data = config_map_data(&ns.client, &ns.name, "auth-jwks").await?;
                (!jwks_kids(&data).contains(&kids[1])).then_some(())
            },
        )
        .await;
        history.check_invariants(P, L_PLUS_P, SLACK, std::slice::from_ref(&first), &[]);

        let writes =
            metric_sum(&metrics(&operator).await, "jwtkeys_api_writes_total", "") - writes_at_start;
        let rotations = history.signing_kids().len() - 1;
        eprintln!(
            "figure: {writes} API writes over {rotations} rotations = {:.1} per rotation",
            writes / rotations as f64
        );
        // Next key: saved in the Secret, published, its publication recorded, status (4); activation:
        // Secret, ConfigMap order, status (3); removal: ConfigMap, state, status (3).
        assert!(
            writes / rotations as f64 <= 10.0,
            "at most 10 writes per rotation with one ConfigMap"
        );
    })
    .await;
}

#[tokio::test]
async fn the_rotate_annotation_publishes_a_key_now_and_it_signs_after_p() {
    with_temp_ns("rot-annotation", |ns| async move {
        install_crd(&ns.client).await;
        let history = History::of(&ns).await;
        let _operator = operator(&[&ns.name]);
        let first = create_ready(&ns, &jsk("auth", json!({"propagationDelay": "3s"}))).await;

        annotate(&ns, "auth", json!({"jwtkeys.dev/rotate": "2026-11-28"})).await;
        let requested = Instant::now();
        let key = wait_status(
            &ns,
            "auth",
            "the requested key published as Next",
            REACT,
            |k| {
                k.status
                    .as_ref()
                    .is_some_and(|s| s.keys.iter().any(|k| k.state == KeyState::Next))
            },
        )
        .await;
        assert_eq!(
            key.status.unwrap().last_rotate_annotation.as_deref(),
            Some("2026-11-28")
        );
        let kids = wait_signing_kids(&history, 2, REACT).await;
        assert!(
            requested.elapsed() >= P - SLACK,
            "the new key signed only after P"
        );
        history.check_invariants(P, L_PLUS_P, SLACK, std::slice::from_ref(&first), &[]);
        wait_event(&ns, "KeyActivated").await;

        // The same value does not act again.
        annotate(&ns, "auth", json!({"unrelated": "touch"})).await;
        let key = wait_ready(&ns, "auth", "True", "KeysReady").await;
        let status = key.status.unwrap();
        assert_eq!(status.active_key_id.as_ref(), Some(&kids[1]));
        assert!(
            !status.keys.iter().any(|k| k.state == KeyState::Next),
            "no second rotation for the same value"
        );
    })
    .await;
}

/// The next key stays in the Secret as it was saved until it signs, and the instant it was
/// published everywhere is in the status: an operator killed and restarted during P activates it P
/// after it was published, not P after its own restart.
#[tokio::test]
async fn a_restart_during_p_does_not_start_p_again() {
    with_temp_ns("rot-restart-p", |ns| async move {
        const P_LONG: Duration = Duration::from_secs(12);
        install_crd(&ns.client).await;
        let history = History::of(&ns).await;
        let mut operator = operator(&[&ns.name]);
        let spec = json!({"propagationDelay": "12s", "maxTokenLifetime": "10s"});
        let first = create_ready(&ns, &jsk("auth", spec)).await;
        let secret_versions =
            |h: &History| h.versions().iter().filter(|v| v.kind == "Secret").count();
        let before = secret_versions(&history);

        annotate(
            &ns,
            "auth",
            json!({"jwtkeys.dev/rotate": "restart-during-p"}),
        )
        .await;
        let kids = wait_for("the next key in the ConfigMap", REACT, || async {
            let versions = history.versions();
            let cm = versions.iter().rev().find(|v| v.kind == "ConfigMap")?;
            let kids = cm.kids.clone()?;
            (kids.len() == 2).then_some(kids)
        })
        .await;
        let next = kids.iter().find(|k| **k != first).unwrap().clone();
        let first_holding = |kind: &str| {
            history
                .versions()
                .iter()
                .find(|v| v.kind == kind && v.kids.as_ref().is_some_and(|k| k.contains(&next)))
                .map(|v| v.at)
        };
        let published = first_holding("ConfigMap").unwrap();
        let created_at = |key: &JwtSigningKey| {
            key.status
                .as_ref()?
                .keys
                .iter()
                .find(|e| e.kid == next)
                .map(|e| (e.state, e.created_at.clone()))
        };
        let shown = wait_status(&ns, "auth", "the next key in the status", REACT, |k| {
            created_at(k).is_some_and(|(state, _)| state == KeyState::Next)
        })
        .await;
        let (_, published_since) = created_at(&shown).unwrap();
        let between = |from: jiff::Timestamp, to: jiff::Timestamp| {
            Duration::try_from(to.duration_since(from)).unwrap_or_default()
        };
        // Halfway through P: a crash and a restart.
        tokio::time::sleep(between(jiff::Timestamp::now(), published + P_LONG / 2)).await;
        operator.restart();
        let restarted = jiff::Timestamp::now();
        let kids = wait_signing_kids(&history, 2, REACT).await;
        assert_eq!(kids[1], next);
        let activated = first_holding("Secret").unwrap();
        let after_publication = between(published, activated);
        eprintln!(
            "FIGURE restart during P: signed {after_publication:.2?} after publication, {:.2?} \
             after the restart (P = {P_LONG:?})",
            between(restarted, activated)
        );
        let l_plus_p = P_LONG + Duration::from_secs(10);
        history.check_invariants(P_LONG, l_plus_p, SLACK, std::slice::from_ref(&first), &[]);
        // The status shows the instant to the second (taken back as that second's last instant),
        // and activations wait 1 s more for clock skew between replicas: about P + 2 s. Counting P
        // again from the restart would take P + P/2.
        assert!(
            after_publication < P_LONG + Duration::from_secs(4),
            "the next key signed {after_publication:?} after publication (P = {P_LONG:?}): P \
             started again at the restart"
        );
        // The instant the restarted process took from the status is the one it shows: a restart
        // does not move it.
        let signing = wait_status(
            &ns,
            "auth",
            "the next key active in the status",
            REACT,
            |k| created_at(k).is_some_and(|(state, _)| state == KeyState::Active),
        )
        .await;
        assert_eq!(
            created_at(&signing).unwrap().1,
            published_since,
            "the key's createdAt after a restart during P"
        );
        // The rotation wrote the Secret twice: the next key saved, then switched to.
        assert_eq!(
            secret_versions(&history) - before,
            2,
            "{:#?}",
            history.versions()
        );
    })
    .await;
}

#[tokio::test]
async fn the_revoke_annotation_drops_keys_at_once_and_a_fresh_key_signs() {
    with_temp_ns("rot-revoke", |ns| async move {
        install_crd(&ns.client).await;
        let _operator = operator(&[&ns.name]);
        let first = create_ready(&ns, &jsk("auth", json!({"propagationDelay": "2s"}))).await;
        // Rotate once so that a retired key is published too.
        annotate(&ns, "auth", json!({"jwtkeys.dev/rotate": "1"})).await;
        let second = wait_new_signing_key(&ns, "auth", &first).await;

        annotate(
            &ns,
            "auth",
            json!({"jwtkeys.dev/revoke": format!("{first},{second}")}),
        )
        .await;
        let key = wait_status(&ns, "auth", "both keys revoked", REACT, |k| {
            k.status
                .as_ref()
                .is_some_and(|s| s.revoked_key_ids.len() == 2)
        })
        .await;
        let status = key.status.unwrap();
        let fresh = status.active_key_id.clone().unwrap();
        assert!(fresh != first && fresh != second);
        let data = config_map_data(&ns.client, &ns.name, "auth-jwks")
            .await
            .unwrap();
        assert_eq!(
            jwks_kids(&data),
            std::slice::from_ref(&fresh),
            "revoked keys are gone from the ConfigMap"
        );
        assert!(
            !data
                .keys()
                .any(|k| k.starts_with(&first) || k.starts_with(&second))
        );
        let secret = secret_text(&ns.client, &ns.name, "auth-signing-key")
            .await
            .unwrap();
        assert_eq!(secret["kid"], fresh);
        let state: serde_json::Value = serde_json::from_str(&secret["state.json"]).unwrap();
        let remembered: Vec<&str> = state["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["jwk"]["kid"].as_str().unwrap())
            .collect();
        assert_eq!(remembered, [fresh.as_str()], "and from the Secret's state");
        assert!(
            !secret
                .values()
                .any(|v| v.contains(&second) && !v.contains("revoked")),
            "only the revocation list names them"
        );
        let (_, _, message) = wait_event(&ns, "KeyRevoked").await;
        assert!(message.contains(&first) || message.contains(&second));

        // Revoked keys never return, even when the ConfigMap is recreated.
        kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(ns.client.clone(), &ns.name)
            .delete("auth-jwks", &Default::default())
            .await
            .unwrap();
        let data = wait_for("the ConfigMap recreated", REACT, || {
            config_map_data(&ns.client, &ns.name, "auth-jwks")
        })
        .await;
        assert_eq!(jwks_kids(&data), [fresh]);
    })
    .await;
}

#[tokio::test]
async fn algorithm_and_key_size_changes_apply_to_the_next_key() {
    with_temp_ns("rot-algorithm", |ns| async move {
        install_crd(&ns.client).await;
        let _operator = operator(&[&ns.name]);
        let first = create_ready(&ns, &jsk("auth", json!({"propagationDelay": "2s"}))).await;
        api(&ns)
            .patch(
                "auth",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": {"algorithm": "PS512", "keySize": 3072}})),
            )
            .await
            .unwrap();
        let key = wait_ready(&ns, "auth", "True", "KeysReady").await;
        assert_eq!(
            key.status.unwrap().active_key_id.as_deref(),
            Some(first.as_str()),
            "the signing key stays"
        );
        assert_eq!(
            secret_text(&ns.client, &ns.name, "auth-signing-key")
                .await
                .unwrap()["algorithm"],
            "RS256"
        );

        annotate(&ns, "auth", json!({"jwtkeys.dev/rotate": "new-algorithm"})).await;
        let secret = wait_for("the next key to sign", REACT, || async {
            let secret = secret_text(&ns.client, &ns.name, "auth-signing-key").await?;
            (secret["kid"] != first).then_some(secret)
        })
        .await;
        assert_eq!(secret["algorithm"], "PS512");
        // The ConfigMap puts the new signing key first right after the Secret switches.
        let jwks = wait_for("the new signing key first in jwks.json", REACT, || async {
            let data = config_map_data(&ns.client, &ns.name, "auth-jwks").await?;
            let jwks: serde_json::Value = serde_json::from_str(&data["jwks.json"]).ok()?;
            (jwks["keys"][0]["alg"] == "PS512").then_some(jwks)
        })
        .await;
        assert_eq!(
            jwks["keys"][0]["n"].as_str().unwrap().len(),
            512,
            "3072-bit modulus"
        );
        assert_eq!(
            jwks["keys"][1]["alg"], "RS256",
            "the retired key keeps its algorithm"
        );
    })
    .await;
}

#[tokio::test]
async fn after_downtime_the_operator_catches_up_late_never_early() {
    with_temp_ns("rot-catch-up", |ns| async move {
        install_crd(&ns.client).await;
        // I1-I3 hold in the copy in another namespace too.
        let (history, copy) = History::with_copy(&ns).await;
        let mut operator = operator(&[&ns.name, &copy]);
        let first = create_ready(&ns, &jsk("auth", publish_to_copies(short_spec()))).await;
        wait_signing_kids(&history, 2, Duration::from_secs(30)).await;
        // The first key is retired now; its removal and the next activation are planned.
        let key = wait_status(
            &ns,
            "auth",
            "the first key retired in the status",
            REACT,
            |k| {
                k.status.as_ref().is_some_and(|s| {
                    s.keys.iter().any(|k| {
                        k.kid == first && k.state == KeyState::Retired && k.remove_after.is_some()
                    })
                })
            },
        )
        .await;
        let status = key.status.unwrap();
        let retired = status.keys.iter().find(|k| k.kid == first).unwrap();
        let planned_removal: jiff::Timestamp =
            retired.remove_after.as_ref().unwrap().parse().unwrap();
        let planned_rotation: jiff::Timestamp =
            status.next_rotation_time.as_ref().unwrap().parse().unwrap();

        operator.kill();
        let down_at = history.versions().len();
        wait_for(
            "the planned removal and activation to pass",
            Duration::from_secs(40),
            || async {
                let now = jiff::Timestamp::now();
                (now > planned_removal + jiff::SignedDuration::from_secs(3)
                    && now > planned_rotation + jiff::SignedDuration::from_secs(3))
                .then_some(())
            },
        )
        .await;
        assert_eq!(
            history.versions().len(),
            down_at,
            "nothing changes while the operator is down"
        );

        let restarted = jiff::Timestamp::now();
        operator.restart();
        let kids = wait_signing_kids(&history, 3, Duration::from_secs(30)).await;
        wait_for("the first key to be removed", REACT, || async {
            let data = config_map_data(&ns.client, &ns.name, "auth-jwks").await?;
            (!jwks_kids(&data).contains(&first)).then_some(())
        })
        .await;
        let status = api(&ns).get("auth").await.unwrap().status.unwrap();
        let third = status.keys.iter().find(|k| k.kid == kids[2]).unwrap();
        let activated: jiff::Timestamp = third.activates_at.as_ref().unwrap().parse().unwrap();
        assert!(
            activated >= restarted + jiff::SignedDuration::from_secs(2),
            "late activation, after P from the restart"
        );
        assert!(activated > planned_rotation, "late, never early");
        history.check_invariants(P, L_PLUS_P, SLACK, std::slice::from_ref(&first), &[]);
    })
    .await;
}

#[tokio::test]
async fn an_idle_operator_writes_nothing() {
    with_temp_ns("rot-idle", |ns| async move {
        install_crd(&ns.client).await;
        let started = std::time::SystemTime::now();
        let operator = operator(&[&ns.name]);
        create(&ns, &jsk("auth", json!({}))).await;
        wait_ready(&ns, "auth", "True", "KeysReady").await;
        wait_reconciled(&operator).await;
        let before = metrics(&operator).await;
        // Edits that change nothing the operator owns make it reconcile, and write nothing.
        // One edit at a time: two edits that arrive before a reconcile starts are one reconcile.
        for value in ["1", "2"] {
            let reconciles = operator.logs().matches("reconciled").count();
            annotate(&ns, "auth", json!({"unrelated": value})).await;
            wait_for("a reconcile of the edit", REACT, || async {
                (operator.logs().matches("reconciled").count() > reconciles).then_some(())
            })
            .await;
        }
        let after = metrics(&operator).await;
        assert_eq!(
            metric_sum(&before, "jwtkeys_api_writes_total", ""),
            metric_sum(&after, "jwtkeys_api_writes_total", ""),
            "no API writes while nothing is due"
        );
        // The next wake-up is the planned change (the next key, R - P = 719h45m from now), not a poll.
        let last = operator
            .logs()
            .lines()
            .rev()
            .find(|l| l.contains("reconciled"))
            .unwrap()
            .to_string();
        let seconds: f64 = last
            .split("requeue_after: Some(")
            .nth(1)
            .and_then(|s| s.split('s').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (2_590_000.0..=2_591_100.0).contains(&seconds),
            "requeue in {seconds}s: {last}"
        );

        // Idle watches are ended by the API server and opened again; each watch asks for its own
        // timeout, so that an operator's watches are not all opened again at the same moment.
        let Some(audit) = common::AuditLog::open() else {
            eprintln!("skipped the watch timeouts: this control plane keeps no audit log");
            return;
        };
        let user = operator.username();
        let timeouts = wait_for("the operator's six watches in the audit log", REACT, || {
            let watches: Vec<u32> = audit
                .requests(&user, started, std::time::SystemTime::now())
                .iter()
                .filter(|r| r.verb == "watch")
                .filter_map(|r| {
                    r.request_uri
                        .split(['?', '&'])
                        .find_map(|p| p.strip_prefix("timeoutSeconds="))
                        .and_then(|t| t.parse().ok())
                })
                .collect();
            async move { (watches.len() >= 6).then_some(watches) }
        })
        .await;
        assert!(
            timeouts.iter().all(|t| (300..600).contains(t)),
            "watch timeouts between 5 and 10 minutes: {timeouts:?}"
        );
        assert!(
            timeouts.iter().any(|t| *t != timeouts[0]),
            "watch timeouts drawn for each watch: {timeouts:?}"
        );
    })
    .await;
}
