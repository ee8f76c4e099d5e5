//! Phase 5: the writes of one rotation, for a sample of keys rotated by annotation.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant, SystemTime},
};

use jwt_key_operator::crd::JwtSigningKey;
use kube::{Api, ResourceExt, api::PostParams};
use serde_json::json;

use crate::{
    bounds::QUICK_WRITES_PER_ROTATION,
    cluster::{active_kid, annotate_rotate, is_lease, is_ready, requests_of, watch_until},
    common::{self, RequestKind},
    process::{Supervised, settle},
    report::show,
    setup::Bench,
    support,
};

/// propagationDelay of the keys rotated in phases 5 and 6.
const ROTATION_P: &str = "2s";

/// Phase 5.
pub async fn rotations(b: &Bench<'_>, operator: &mut Supervised) {
    let s = b.scale.rotations;
    b.report.phase(&format!(
        "5. writes per rotation: {s} keys (propagationDelay {ROTATION_P}) rotated by annotation"
    ));
    let api: Api<JwtSigningKey> = Api::namespaced(b.ns.client.clone(), &b.ns.name);
    let names: Vec<String> = (0..s).map(|i| format!("rot-{i:02}")).collect();
    for name in &names {
        let key = support::jsk(
            name,
            b.scale.key_spec(json!({"propagationDelay": ROTATION_P})),
        );
        api.create(&PostParams::default(), &key)
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
    }
    watch_until(
        &api,
        &names,
        "the sample Ready",
        Duration::from_secs(120),
        Some(&mut *operator),
        is_ready,
    )
    .await;
    settle(operator, Duration::from_secs(2), Duration::from_secs(30)).await;
    let mut before = HashMap::new();
    for name in &names {
        let key = api.get(name).await.expect("reading a sample key");
        before.insert(name.clone(), active_kid(&key).expect("an active key"));
    }
    let from = SystemTime::now();
    let requested = Instant::now();
    let value = format!("scale-{}", common::random_suffix(6));
    futures::future::join_all(names.iter().map(|name| annotate_rotate(&api, name, &value))).await;
    let switched = watch_until(
        &api,
        &names,
        "the sample's new keys to sign",
        Duration::from_secs(120),
        Some(&mut *operator),
        |key| {
            active_kid(key).is_some_and(|kid| Some(&kid) != before.get(&key.name_any()))
                && is_ready(key)
        },
    )
    .await;
    let mut took: Vec<f64> = switched
        .values()
        .map(|at| at.duration_since(requested).as_secs_f64())
        .collect();
    took.sort_by(f64::total_cmp);
    // Whatever a follow-up reconcile writes belongs to the rotation too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let to = SystemTime::now();
    b.report.figure(
        "rotation request to new key signing, median",
        took[took.len() / 2],
        "s",
        format!("propagationDelay {ROTATION_P} + activation margin 1 s"),
        None,
    );
    let Some(audit) = &b.audit else {
        println!("  writes skipped: the control plane keeps no audit log");
        return;
    };
    let requests = requests_of(audit, operator, from, to).await;
    let secrets: HashSet<String> = names.iter().map(|n| format!("{n}-signing-key")).collect();
    let config_maps: HashSet<String> = names.iter().map(|n| format!("{n}-jwks")).collect();
    let keys: HashSet<&String> = names.iter().collect();
    let mut writes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut reads = 0;
    for r in requests.iter().filter(|r| !is_lease(r)) {
        if r.kind() == RequestKind::Read {
            reads += 1;
        }
        if r.kind() != RequestKind::Write {
            continue;
        }
        let bucket = match r.resource.as_str() {
            "secrets" if secrets.contains(&r.name) => "secrets",
            "configmaps" if config_maps.contains(&r.name) => "configmaps",
            "jwtsigningkeys" if keys.contains(&r.name) && r.subresource == "status" => {
                "jwtsigningkeys/status"
            }
            "jwtsigningkeys" if keys.contains(&r.name) => "jwtsigningkeys",
            "events"
                if r.name
                    .split_once('.')
                    .is_some_and(|(key, _)| keys.contains(&key.to_string())) =>
            {
                "events"
            }
            _ => "other objects",
        };
        *writes.entry(bucket).or_insert(0) += 1;
    }
    let per = |bucket: &str| writes.get(bucket).copied().unwrap_or(0) as f64 / s as f64;
    let object_writes =
        per("secrets") + per("configmaps") + per("jwtsigningkeys/status") + per("jwtsigningkeys");
    b.report.figure(
        "writes per rotation (events apart)",
        object_writes,
        "",
        format!(
            "secrets {}, configmaps {}, status {}, jwtsigningkeys {}; goal 3 (1 Secret + 1 \
             ConfigMap per published namespace (1) + 1 status); the contract's least is 6 (the \
             Secret saves the next key before it is published and switches after P, the \
             ConfigMap adds it and then lists it first, the status shows it Next then Active)",
            show(per("secrets")),
            show(per("configmaps")),
            show(per("jwtsigningkeys/status")),
            show(per("jwtsigningkeys"))
        ),
        Some(QUICK_WRITES_PER_ROTATION),
    );
    b.report.figure(
        "events per rotation",
        per("events"),
        "",
        format!(
            "other objects written in the window: {}",
            writes.get("other objects").copied().unwrap_or(0)
        ),
        None,
    );
    b.report.figure(
        "reads per rotation",
        reads as f64 / s as f64,
        "",
        "gets and lists, all keys of the operator",
        None,
    );
}
