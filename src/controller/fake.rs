//! An in-memory cluster for the step machine's property tests: one JwtSigningKey, its Secret and
//! ConfigMaps, namespaces that accept copies or not, a clock the test moves, write latency, rules
//! that refuse matching writes, and a log of every version written. It implements [`Effects`], so
//! the reconciles it runs go through the same executor as on the API server, and it checks the
//! invariants after every write the operator makes ([`crate::invariants`]).
//!
//! This checks decisions fast; the end-to-end tests are the proof on a real API server.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
    time::Instant,
};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time},
};
use kube::ResourceExt;

use super::{
    Error, Found, Result, Target,
    backoff::Backoffs,
    effects::{self, Effects},
    machine::{Machine, Memory, Observed, Removal, Report},
    published_jwks,
};
use crate::{
    crd::{Algorithm, JwtSigningKey, JwtSigningKeySpec, accepts},
    invariants::{Checker, Kind, Rules, Version, Writer},
    keys::{Jwk, KeyPair},
    resources,
    time::plus,
};

/// The key's namespace.
pub const HOME: &str = "auth";
/// Namespaces that may get copies.
pub const OTHERS: [&str; 2] = ["ns-a", "ns-b"];

/// How long a standby waits before it takes the Lease of a leader that stopped renewing.
pub const LEASE_DURATION: SignedDuration = SignedDuration::from_secs(15);

/// Which writes a rule refuses.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    /// `Secret`, `ConfigMap`, `Status` (the JwtSigningKey's status), or any (`None`).
    pub kind: Option<&'static str>,
    /// A namespace, or any (`None`).
    pub namespace: Option<String>,
    /// For how long, or which matching write.
    pub span: Span,
}

/// Which of the matching writes a rule refuses.
#[derive(Clone, Debug, PartialEq)]
pub enum Span {
    /// Every one until this instant.
    Until(Timestamp),
    /// Only the Nth from now (1: the next one), however late it comes.
    Nth(u32),
}

/// What this process remembers; a restart drops it.
#[derive(Default)]
struct ProcessMemory {
    next_published: Option<(String, Timestamp)>,
    backoffs: Backoffs,
}

struct State {
    now: Timestamp,
    latency: SignedDuration,
    revision: u64,
    uids: u64,
    jsk: JwtSigningKey,
    namespaces: BTreeMap<String, (BTreeMap<String, String>, Option<String>)>,
    secrets: BTreeMap<String, Secret>,
    config_maps: BTreeMap<String, ConfigMap>,
    /// The Secret and the ConfigMaps (by namespace) under the names the spec used before its
    /// last `secretName` or `configMapName` change.
    former_secret: Option<Secret>,
    former_config_maps: BTreeMap<String, ConfigMap>,
    refusals: Vec<Refusal>,
    memory: ProcessMemory,
    checker: Checker,
    violations: Vec<String>,
    /// Every kid the operator generated, with its algorithm.
    generated: BTreeMap<String, Algorithm>,
    /// Kids planted by hand.
    planted: BTreeSet<String>,
    events: Vec<(&'static str, String)>,
    /// When a write of each (kind, namespace) was last refused.
    last_refused: BTreeMap<(&'static str, String), Timestamp>,
    /// Since when the Secret signs with its key.
    signing_since: Option<Timestamp>,
    /// How late the schedule may run, for what happened that may rightly hold the next key back
    /// (a refused write the key needs, a target that gained or lost keys, a restart).
    excused_until: Option<Timestamp>,
    /// Refused Secret writes (each may cost a generated key).
    refused_secret_writes: usize,
    /// What happened, for a failing case.
    trace: Vec<String>,
    /// The next key to sign may sign at once (the signing key was lost or revoked).
    at_once: bool,
    /// Whether the last reconcile's status write was refused.
    status_refused: bool,
    /// The leader's fence closes at the Nth check from now (before a write); once closed, every
    /// write this process tries is refused by its own executor until a standby takes over.
    fence: Option<u32>,
    fenced: bool,
    /// The leader exited with its fence closed and no process has reconciled since.
    leaderless: bool,
    /// Leaders that exited with their fence closed.
    failovers: usize,
    /// Rotation interval and propagation delay.
    rotation_interval: SignedDuration,
    propagation_delay: SignedDuration,
}

/// The in-memory cluster.
pub struct FakeCluster {
    state: Mutex<State>,
    /// `Instant` of the fake clock's start, for the write backoffs (which count in `Instant`s).
    base: Instant,
    start: Timestamp,
}

fn refused(what: &str) -> kube::Error {
    kube::Error::Api(Box::new(
        serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 503, "reason": "ServiceUnavailable",
            "message": format!("{what} refused by a fault rule"),
        }))
        .expect("a Status"),
    ))
}

fn conflict(what: &str) -> kube::Error {
    kube::Error::Api(Box::new(
        serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 409, "reason": "Conflict",
            "message": format!("{what}: the object has been modified"),
        }))
        .expect("a Status"),
    ))
}

/// The kids a ConfigMap publishes.
fn config_map_kids(cm: &ConfigMap) -> Vec<String> {
    published_jwks(cm).into_iter().map(|jwk| jwk.kid).collect()
}

/// The kid a Secret signs with.
fn secret_kid(secret: &Secret) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(resources::KID)
        .map(|kid| String::from_utf8_lossy(&kid.0).into_owned())
}

impl FakeCluster {
    /// A cluster with a JwtSigningKey `auth` in [`HOME`] that publishes to every namespace of
    /// [`OTHERS`] labelled for it; `accepting` says which of them accept copies.
    pub fn new(spec: serde_json::Value, accepting: [bool; 2], latency_ms: i64) -> FakeCluster {
        let spec: JwtSigningKeySpec = serde_json::from_value(spec).expect("a spec");
        let timing = spec.timing().expect("a valid spec");
        let mut jsk = JwtSigningKey::new("auth", spec);
        jsk.metadata.namespace = Some(HOME.into());
        jsk.metadata.uid = Some("uid-auth".into());
        jsk.metadata.generation = Some(1);
        let start = Timestamp::from_second(1_800_000_000).expect("an instant");
        let mut namespaces = BTreeMap::new();
        namespaces.insert(HOME.to_string(), (BTreeMap::new(), None));
        for (ns, accepts) in OTHERS.iter().zip(accepting) {
            namespaces.insert(
                ns.to_string(),
                (
                    BTreeMap::from([("jwks".to_string(), "auth".to_string())]),
                    accepts.then(|| format!("{HOME}/*")),
                ),
            );
        }
        let rules = Rules {
            propagation_delay: timing.propagation_delay.as_signed(),
            retention: timing.max_token_lifetime.as_signed() + timing.propagation_delay.as_signed(),
            slack: SignedDuration::ZERO,
            ..Rules::default()
        };
        FakeCluster {
            state: Mutex::new(State {
                now: start,
                latency: SignedDuration::from_millis(latency_ms),
                revision: 0,
                uids: 0,
                jsk,
                namespaces,
                secrets: BTreeMap::new(),
                config_maps: BTreeMap::new(),
                former_secret: None,
                former_config_maps: BTreeMap::new(),
                refusals: Vec::new(),
                memory: ProcessMemory::default(),
                checker: Checker::new(rules),
                violations: Vec::new(),
                generated: BTreeMap::new(),
                planted: BTreeSet::new(),
                events: Vec::new(),
                last_refused: BTreeMap::new(),
                signing_since: None,
                excused_until: None,
                refused_secret_writes: 0,
                at_once: true,
                trace: Vec::new(),
                status_refused: false,
                fence: None,
                fenced: false,
                leaderless: false,
                failovers: 0,
                rotation_interval: timing.rotation_interval.as_signed(),
                propagation_delay: timing.propagation_delay.as_signed(),
            }),
            base: Instant::now(),
            start,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake cluster lock")
    }

    fn instant(&self, at: Timestamp) -> Instant {
        let since = at.duration_since(self.start);
        self.base + std::time::Duration::try_from(since).unwrap_or_default()
    }

    /// One reconcile, as the controller runs it: read, decide, act. Returns when to look again.
    pub fn reconcile(&self) -> Result<Option<Timestamp>> {
        let (jsk, observed, memory, now) = {
            let mut state = self.state();
            state.status_refused = false;
            state.leaderless = false;
            let jsk = state.jsk.clone();
            let observed = observe(&state, &jsk);
            let target = Target::secret(HOME, &jsk.secret_name());
            let memory = Memory {
                next_published: state.memory.next_published.clone(),
                secret_waiting: state
                    .memory
                    .backoffs
                    .waiting("uid-auth", &target, self.instant(state.now))
                    .map(str::to_string),
                activation_margin: std::time::Duration::from_secs(1).into(),
            };
            (jsk, observed, memory, state.now)
        };
        let machine = Machine::new(&jsk, observed, memory, now);
        futures::executor::block_on(effects::execute(machine, self))
    }

    /// The clock.
    pub fn time(&self) -> Timestamp {
        self.state().now
    }

    /// Moves the clock to `at`, if it is later.
    pub fn advance_to(&self, at: Timestamp) {
        let mut state = self.state();
        state.now = state.now.max(at);
    }

    /// Refuses matching writes until `until`.
    pub fn refuse(&self, refusal: Refusal) {
        self.state().refusals.push(refusal);
    }

    /// Lifts every refusal.
    pub fn heal(&self) {
        self.state().refusals.clear();
    }

    /// The process restarts: what it remembered is gone.
    pub fn restart(&self) {
        let mut state = self.state();
        state.memory = ProcessMemory::default();
        // The instant the next key was published everywhere may be lost with a status write.
        state.excuse_p();
    }

    /// The leader's renewals stop: its fence closes before its Nth write from now (status writes
    /// included), as it does for a leader frozen past the renew deadline.
    pub fn close_fence_at(&self, n: u32) {
        self.state().fence = Some(n.max(1));
    }

    /// Whether the process found its fence closed; a standby then takes over with no memory of
    /// the key (what `restart` does), and the closed fence goes with the old process.
    pub fn take_fenced(&self) -> bool {
        let mut state = self.state();
        if !std::mem::take(&mut state.fenced) {
            return false;
        }
        state.fence = None;
        state.leaderless = true;
        state.failovers += 1;
        // The standby reconciles once it holds the Lease: the schedule may run that much late.
        let by = LEASE_DURATION + state.propagation_delay;
        state.excuse(by);
        drop(state);
        self.restart();
        true
    }

    /// Versions written so far (by anyone), deletes included.
    pub fn versions(&self) -> u64 {
        self.state().revision
    }

    /// Leaders that exited with their fence closed so far.
    pub fn failovers(&self) -> usize {
        self.state().failovers
    }

    /// Namespace `ns` starts or stops accepting copies.
    pub fn accept(&self, ns: &str, accepts: bool) {
        let mut state = self.state();
        if !accepts && state.loses_signing_public(ns) {
            return;
        }
        // Not while the copy of an earlier acceptance still waits to be removed: its verifiers held
        // the keys throughout, which the checker (that stopped following it) cannot tell.
        let detached = state.namespaces.get(ns).is_some_and(|(_, a)| a.is_none())
            && (state.config_maps.contains_key(ns) || state.former_config_maps.contains_key(ns));
        if accepts && detached {
            return;
        }
        let Some((_, accept_from)) = state.namespaces.get_mut(ns) else {
            return;
        };
        let was = accept_from.is_some();
        *accept_from = accepts.then(|| format!("{HOME}/*"));
        // A new target holds the next key P before it signs; one that leaves holds nothing back.
        if accepts && !was {
            state.excuse_p();
        }
        // A copy in a namespace that stopped accepting is no target any more (the operator
        // removes it); one that starts accepting again is followed from what it holds then.
        let held = state.config_maps.get(ns).map(config_map_kids);
        match (was, accepts, held) {
            (true, false, Some(_)) => state.log_external(Kind::ConfigMap, ns, None),
            (false, true, Some(kids)) => state.log_external(Kind::ConfigMap, ns, Some(kids)),
            _ => {}
        }
    }

    /// Someone deletes the ConfigMap in `ns`.
    pub fn delete_config_map(&self, ns: &str) {
        let mut state = self.state();
        if state.loses_signing_public(ns) {
            return;
        }
        if state.config_maps.remove(ns).is_some() {
            state.log_external(Kind::ConfigMap, ns, None);
            state.excuse_p();
        }
    }

    /// Someone deletes the Secret.
    pub fn delete_secret(&self) {
        let mut state = self.state();
        // Not while its signing key is being revoked: with the Secret gone nothing says that key
        // signs, and the operator drops it from every ConfigMap at once, as the contract's
        // revocation asks, where the checker keeps it signing until another key does.
        if let Some(kid) = state.checker.signing().map(str::to_string)
            && state.checker.rules_mut().revoked.contains(&kid)
        {
            return;
        }
        // Nor when no ConfigMap holds the signing key: its public key would be gone with it (a
        // loss that only a backup restores).
        if !state.anywhere(state.checker.signing()) {
            return;
        }
        // Nor when the status never recorded it (its writes were refused): the ConfigMaps are
        // output, and a key recorded neither in the Secret nor in the status is taken for planted.
        let recorded = state.checker.signing().is_none_or(|kid| {
            state
                .jsk
                .status
                .as_ref()
                .is_some_and(|s| s.keys.iter().any(|k| k.kid == kid))
        });
        if !recorded {
            return;
        }
        if state.secrets.remove(HOME).is_some() {
            state.log_external(Kind::Secret, HOME, None);
            state.signing_since = None;
            // Its private keys are gone: a fresh key signs at once.
            state.at_once = true;
        }
    }

    /// Someone with edit rights in `ns` adds a key of their own (with a valid RFC 7638 kid) to its
    /// ConfigMap.
    pub fn plant_key(&self, ns: &str) {
        let planted = KeyPair::generate(0, Algorithm::EdDSA).expect("an Ed25519 key");
        let mut state = self.state();
        let Some(mut cm) = state.config_maps.get(ns).cloned() else {
            return;
        };
        let mut jwks = published_jwks(&cm);
        jwks.push(planted.jwk.clone());
        let refs: Vec<&Jwk> = jwks.iter().collect();
        cm.data = Some(resources::config_map_data_of(&refs).expect("ConfigMap data"));
        state.planted.insert(planted.jwk.kid.clone());
        state.store_config_map(ns, cm, false);
    }

    /// Someone edits the ConfigMap in `ns` down to its first key.
    pub fn truncate_config_map(&self, ns: &str) {
        let mut state = self.state();
        if state.loses_signing_public(ns) {
            return;
        }
        let Some(mut cm) = state.config_maps.get(ns).cloned() else {
            return;
        };
        let jwks = published_jwks(&cm);
        let Some(last) = jwks.last() else { return };
        cm.data = Some(resources::config_map_data_of(&[last]).expect("ConfigMap data"));
        state.store_config_map(ns, cm, false);
        state.excuse_p();
    }

    /// Someone sets an annotation on the JwtSigningKey.
    pub fn annotate(&self, key: &str, value: &str) {
        let mut state = self.state();
        state.excuse_p();
        state
            .jsk
            .annotations_mut()
            .insert(key.to_string(), value.to_string());
    }

    /// Someone changes the spec's `configMapName` (`config_map`) or `secretName`, back and forth
    /// between the default and another name; not again while objects under the former name are
    /// still there.
    pub fn rename(&self, config_map: bool) {
        let mut state = self.state();
        if config_map {
            if !state.former_config_maps.is_empty() {
                return;
            }
            // The operator writes no ConfigMap under the former name again (it removes them): the
            // checker follows the ones under the new name, each from its first version, as
            // objects of their own.
            state.former_config_maps = std::mem::take(&mut state.config_maps);
            let followed: Vec<String> = state.former_config_maps.keys().cloned().collect();
            for ns in followed {
                state.log_external(Kind::ConfigMap, &ns, None);
            }
            let spec = &mut state.jsk.spec;
            spec.config_map_name = match spec.config_map_name {
                None => Some("auth-keys".into()),
                Some(_) => None,
            };
            // New ConfigMaps hold the next key from when they are written.
            state.excuse_p();
        } else {
            if state.former_secret.is_some() {
                return;
            }
            state.former_secret = state.secrets.remove(HOME);
            let spec = &mut state.jsk.spec;
            spec.secret_name = match spec.secret_name {
                None => Some("auth-signing".into()),
                Some(_) => None,
            };
        }
        state.jsk.metadata.generation = state.jsk.metadata.generation.map(|g| g + 1);
    }

    /// Someone changes the spec's algorithm (it applies to the next key).
    pub fn set_algorithm(&self, algorithm: &str) {
        let mut state = self.state();
        state.jsk.spec.algorithm =
            serde_json::from_value(serde_json::json!(algorithm)).expect("an algorithm");
        state.jsk.metadata.generation = state.jsk.metadata.generation.map(|g| g + 1);
        state.excuse_p();
    }

    /// Revokes the signing key (`signing`) or the newest other published key, as a user would:
    /// the annotation names it, and the checker lets it go at once.
    pub fn revoke(&self, signing: bool) {
        let mut state = self.state();
        // With the Secret deleted nothing says which key signs: the contract's rule for a revoked
        // signing key (kept where held until the Secret switches) has nothing to hold to.
        let Some(current) = state.secrets.get(HOME).and_then(secret_kid) else {
            return;
        };
        let status = state.jsk.status.clone().unwrap_or_default();
        let kid = if signing {
            Some(current.clone())
        } else {
            status
                .keys
                .iter()
                .map(|k| k.kid.clone())
                .find(|kid| *kid != current)
        };
        let Some(kid) = kid else { return };
        state.checker.rules_mut().revoked.insert(kid.clone());
        state.excuse_p();
        if current == kid {
            state.at_once = true;
        }
        state
            .jsk
            .annotations_mut()
            .insert(crate::crd::REVOKE_ANNOTATION.to_string(), kid);
    }

    /// After a reconcile: every ConfigMap the key should have, in a namespace whose writes were not
    /// refused lately, exists and holds the key the Secret signs with (a refusing namespace never
    /// holds back the others' repairs).
    pub fn repaired(&self) -> std::result::Result<(), String> {
        let state = self.state();
        // Nothing repairs until the standby leads.
        if state.leaderless {
            return Ok(());
        }
        let Some(signing) = state.secrets.get(HOME).and_then(secret_kid) else {
            return Ok(());
        };
        // A revoked signing key stays only where it is held: a namespace without it gets nothing
        // until a fresh key signs.
        if state.checker.rules().revoked.contains(&signing) {
            return Ok(());
        }
        let wanted = std::iter::once(HOME).chain(
            OTHERS
                .into_iter()
                .filter(|ns| state.namespaces[*ns].1.is_some()),
        );
        for ns in wanted {
            if state.refused_lately("ConfigMap", ns) {
                continue;
            }
            match state.config_maps.get(ns).map(config_map_kids) {
                Some(kids) if kids.contains(&signing) => {}
                Some(kids) => {
                    return Err(format!(
                        "the ConfigMap in {ns} holds {kids:?} after a reconcile, not the signing key \
                         {signing}, though its writes were not refused"
                    ));
                }
                None => {
                    return Err(format!(
                        "no ConfigMap in {ns} after a reconcile, though its writes were not refused"
                    ));
                }
            }
        }
        Ok(())
    }

    /// After a reconcile whose status write was not refused: the status names the key the Secret
    /// signs with and the generation it saw.
    pub fn reported(&self) -> std::result::Result<(), String> {
        let state = self.state();
        if state.status_refused {
            return Ok(());
        }
        let status = state.jsk.status.clone().unwrap_or_default();
        let signing = state.secrets.get(HOME).and_then(secret_kid);
        if signing.is_some() && status.active_key_id != signing {
            return Err(format!(
                "the status names {:?} as the active key after a reconcile, the Secret signs with \
                 {signing:?}, though the status write was not refused",
                status.active_key_id
            ));
        }
        if status.observed_generation != state.jsk.metadata.generation {
            return Err(format!(
                "the status observed generation {:?} after a reconcile of generation {:?}",
                status.observed_generation, state.jsk.metadata.generation
            ));
        }
        Ok(())
    }

    /// After a reconcile: the key that signs has not outlived its rotation interval, unless
    /// something happened that may rightly hold the next key back (a refused write the key
    /// needs, a namespace that started accepting, a ConfigMap deleted or edited, a restart, a
    /// spec or annotation edit), each allowing the schedule to run late from then on. Writes take
    /// their latency; P more allows for it.
    pub fn on_schedule(&self) -> std::result::Result<(), String> {
        let state = self.state();
        let Some(since) = state.signing_since else {
            return Ok(());
        };
        let due = since + state.rotation_interval;
        let allowed = state.excused_until.map_or(due, |at| at.max(due)) + state.propagation_delay;
        if state.now > allowed {
            return Err(format!(
                "the key that signs since {since} still signs at {}, past its rotation at {due}, \
                 though nothing since may hold the next key back",
                state.now
            ));
        }
        Ok(())
    }

    /// Since when the Secret signs with its key.
    pub fn signing_since(&self) -> Option<Timestamp> {
        self.state().signing_since
    }

    /// Refused Secret writes so far.
    pub fn refused_secret_writes(&self) -> usize {
        self.state().refused_secret_writes
    }

    /// The kid the Secret signs with, and the next key (from the status).
    pub fn kids(&self) -> (Option<String>, Vec<String>) {
        let state = self.state();
        let signing = state.secrets.get(HOME).and_then(secret_kid);
        let status = state.jsk.status.clone().unwrap_or_default();
        (signing, status.keys.iter().map(|k| k.kid.clone()).collect())
    }

    /// Every version written, and the events, for a failing case.
    pub fn trace(&self) -> String {
        let state = self.state();
        let events: Vec<String> = state
            .events
            .iter()
            .map(|(reason, message)| format!("{reason}: {message}"))
            .collect();
        format!("{}\n{}", state.trace.join("\n"), events.join("\n"))
    }

    /// Invariant violations seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    /// Kids the operator generated.
    pub fn generated(&self) -> usize {
        self.state().generated.len()
    }

    /// Checks the state a quiet cluster converges to: Ready, every accepting namespace holds a
    /// ConfigMap with the same keys, among them the Secret's signing key, and no other ConfigMap
    /// of the key exists. `Err` names what is off.
    pub fn converged(&self) -> std::result::Result<(), String> {
        let state = self.state();
        let status = state.jsk.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .ok_or("no Ready condition")?;
        if ready.status != "True" {
            return Err(format!("Ready is {}: {}", ready.status, ready.message));
        }
        let signing = state
            .secrets
            .get(HOME)
            .and_then(secret_kid)
            .ok_or("the Secret signs with nothing")?;
        let home = state
            .config_maps
            .get(HOME)
            .map(config_map_kids)
            .ok_or("no home ConfigMap")?;
        if !home.contains(&signing) {
            return Err(format!(
                "the home ConfigMap {home:?} lacks the signing key {signing}"
            ));
        }
        for ns in OTHERS {
            let accepting = state.namespaces[ns].1.is_some();
            match (accepting, state.config_maps.get(ns)) {
                (true, Some(cm)) if config_map_kids(cm) == home => {}
                (true, Some(cm)) => {
                    return Err(format!(
                        "the copy in {ns} holds {:?}, the home ConfigMap {home:?}",
                        config_map_kids(cm)
                    ));
                }
                (true, None) => return Err(format!("no copy in {ns}")),
                (false, Some(_)) => return Err(format!("a copy in {ns}, which does not accept")),
                (false, None) => {}
            }
        }
        if let Some(kid) = home.iter().find(|kid| state.planted.contains(*kid)) {
            return Err(format!("a planted key {kid} is still published"));
        }
        let owned = |meta: &ObjectMeta| resources::is_owned_by(meta, &state.jsk);
        if let Some(ns) = state
            .former_config_maps
            .iter()
            .find(|(_, cm)| owned(&cm.metadata))
            .map(|(ns, _)| ns)
        {
            return Err(format!("a ConfigMap under the former name is left in {ns}"));
        }
        if state
            .former_secret
            .as_ref()
            .is_some_and(|s| owned(&s.metadata))
        {
            return Err("the Secret under the former name is left".into());
        }
        Ok(())
    }
}

impl State {
    /// How many ConfigMaps of targeted namespaces other than `except` hold `kid`.
    fn holders(&self, kid: Option<&str>, except: Option<&str>) -> usize {
        let Some(kid) = kid else { return 0 };
        self.config_maps
            .iter()
            .filter(|(ns, _)| Some(ns.as_str()) != except)
            .filter(|(ns, _)| {
                *ns == HOME || self.namespaces.get(*ns).is_some_and(|(_, a)| a.is_some())
            })
            .filter(|(_, cm)| config_map_kids(cm).iter().any(|k| k == kid))
            .count()
    }

    /// Whether some targeted ConfigMap holds `kid` (or there is no such key).
    fn anywhere(&self, kid: Option<&str>) -> bool {
        kid.is_none() || self.holders(kid, None) > 0
    }

    /// Whether an edit that takes the ConfigMap in `ns` away from the key (a delete, a hand edit,
    /// a namespace that stops accepting) would lose the signing key's public key: the Secret is
    /// gone and no other ConfigMap holds it. Such a double loss only a backup restores; the
    /// schedules do not make it.
    fn loses_signing_public(&self, ns: &str) -> bool {
        let signing = self.checker.signing().map(str::to_string);
        !self.secrets.contains_key(HOME)
            && signing.is_some()
            && self.holders(signing.as_deref(), Some(ns)) == 0
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    /// Whether a rule refuses this write now; a refusal is recorded, and a rule for the Nth
    /// matching write counts this one.
    fn refuses(&mut self, kind: &'static str, namespace: &str) -> bool {
        let now = self.now;
        let mut refused = false;
        self.refusals.retain_mut(|r| {
            let matches = r.kind.is_none_or(|k| k == kind)
                && r.namespace.as_deref().is_none_or(|ns| ns == namespace);
            match &mut r.span {
                Span::Until(until) => {
                    refused |= matches && *until > now;
                    true
                }
                Span::Nth(n) if matches => {
                    *n -= 1;
                    refused |= *n == 0;
                    *n > 0
                }
                Span::Nth(_) => true,
            }
        });
        if refused {
            self.last_refused
                .insert((kind, namespace.to_string()), self.now);
            // A write the key needs may hold the next key back until its retry (the longest
            // backoff) and P after it; a refused removal of a copy no namespace wants holds nothing.
            let targeted = namespace == HOME
                || self
                    .namespaces
                    .get(namespace)
                    .is_some_and(|(_, a)| a.is_some());
            if targeted {
                self.excuse(SignedDuration::from_secs(300) + self.propagation_delay);
            }
        }
        refused
    }

    /// The schedule may run late by `by` from now.
    fn excuse(&mut self, by: SignedDuration) {
        let until = self.now + by;
        self.excused_until = Some(self.excused_until.map_or(until, |at| at.max(until)));
    }

    /// The schedule may run late by P from now.
    fn excuse_p(&mut self) {
        self.excuse(self.propagation_delay);
    }

    /// Whether a write of (kind, namespace) was refused within the longest write backoff.
    fn refused_lately(&self, kind: &'static str, namespace: &str) -> bool {
        self.last_refused
            .get(&(kind, namespace.to_string()))
            .is_some_and(|at| self.now.duration_since(*at) <= SignedDuration::from_secs(300))
    }

    /// A write someone else made: the checker follows it, and asserts nothing of it.
    fn log_external(&mut self, kind: Kind, namespace: &str, kids: Option<Vec<String>>) {
        let version = Version {
            kind,
            namespace: namespace.to_string(),
            kids,
            order: self.next_revision(),
            at: self.now,
            writer: Writer::Other,
        };
        self.check(version);
    }

    fn check(&mut self, version: Version) {
        self.trace.push(format!(
            "{} {:?} {:?} {} {:?} {:?}",
            version.order,
            version.writer,
            version.kind,
            version.namespace,
            version.kids.as_ref().map(|kids| kids
                .iter()
                .map(|k| k.chars().take(4).collect::<String>())
                .collect::<Vec<_>>()),
            version
                .at
                .duration_since(Timestamp::from_second(1_800_000_000).unwrap())
                .as_secs_f64(),
        ));
        if let Err(violation) = self.checker.observe(&version) {
            self.violations.push(violation.to_string());
        }
    }

    fn store_config_map(&mut self, ns: &str, mut cm: ConfigMap, by_operator: bool) -> ConfigMap {
        let revision = self.next_revision();
        cm.metadata.resource_version = Some(revision.to_string());
        let kids = config_map_kids(&cm);
        if by_operator {
            for kid in kids.iter().filter(|kid| self.planted.contains(*kid)) {
                self.violations.push(format!(
                    "the operator published a planted key {kid} in the ConfigMap in {ns}"
                ));
            }
        }
        self.config_maps.insert(ns.to_string(), cm.clone());
        // The checker follows the ConfigMaps of namespaces the key targets.
        let targeted = ns == HOME || self.namespaces.get(ns).is_some_and(|(_, a)| a.is_some());
        if !by_operator && !targeted {
            return cm;
        }
        self.check(Version {
            kind: Kind::ConfigMap,
            namespace: ns.to_string(),
            kids: Some(kids),
            order: revision,
            at: self.now,
            writer: if by_operator {
                Writer::Operator
            } else {
                Writer::Other
            },
        });
        cm
    }

    /// A create (no `current`, nothing stored) or an update whose resourceVersion is the stored
    /// one, as the API server admits them: `desired` gets its uid and creation time.
    fn admit(
        &mut self,
        kind: &str,
        desired: &mut ObjectMeta,
        current: Option<&ObjectMeta>,
        stored: Option<&ObjectMeta>,
    ) -> std::result::Result<(), kube::Error> {
        match (current, stored) {
            (None, None) => {
                self.uids += 1;
                desired.uid = Some(format!("uid-{}", self.uids));
                desired.creation_timestamp = Some(Time(self.now));
            }
            (Some(current), Some(stored))
                if current.resource_version == stored.resource_version =>
            {
                desired.uid = stored.uid.clone();
                desired.creation_timestamp = stored.creation_timestamp.clone();
            }
            _ => return Err(conflict(kind)),
        }
        Ok(())
    }
}

/// What a reconcile of `jsk` reads from the fake cluster (as `read::observe` reads the caches).
fn observe(state: &State, jsk: &JwtSigningKey) -> Observed {
    let found = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        resources::is_owned_by(meta, jsk)
    };
    let secret = match state.secrets.get(HOME) {
        None => Found::Missing,
        Some(s) if found(&s.metadata) => Found::Owned(s.clone()),
        Some(_) => Found::Foreign,
    };
    let home = match state.config_maps.get(HOME) {
        None => Found::Missing,
        Some(cm) if found(&cm.metadata) => Found::Owned(cm.clone()),
        Some(_) => Found::Foreign,
    };
    let selector: Option<&LabelSelector> = jsk
        .spec
        .publish
        .as_ref()
        .and_then(|p| p.namespace_selector.as_ref());
    let mut targets = Vec::new();
    let mut unaccepted = Vec::new();
    for (ns, (labels, accept_from)) in &state.namespaces {
        if ns == HOME || !selector.is_some_and(|s| super::selector_matches(s, Some(labels))) {
            continue;
        }
        if accepts(accept_from.as_deref(), HOME, &jsk.name_any()) {
            targets.push(ns.clone());
        } else {
            unaccepted.push(ns.clone());
        }
    }
    let copies: Vec<ConfigMap> = state
        .config_maps
        .iter()
        .chain(&state.former_config_maps)
        .filter(|(ns, cm)| *ns != HOME && found(&cm.metadata))
        .map(|(_, cm)| cm.clone())
        .collect();
    let renamed_secret = state.former_secret.clone().filter(|s| found(&s.metadata));
    let renamed_home = state
        .former_config_maps
        .get(HOME)
        .filter(|cm| found(&cm.metadata))
        .cloned()
        .into_iter()
        .collect();
    let looked_up = targets
        .iter()
        .filter(|ns| !state.config_maps.contains_key(*ns))
        .map(|ns| (ns.clone(), Ok(Found::Missing)))
        .collect();
    let status = state.jsk.status.clone().unwrap_or_default();
    Observed {
        stored_status: (matches!(secret, Found::Missing) && renamed_secret.is_none())
            .then(|| status.clone()),
        secret,
        renamed_secret,
        home,
        renamed_home,
        copies,
        targets,
        unaccepted,
        looked_up,
        status_baseline: status,
    }
}

impl Effects for FakeCluster {
    fn now(&self) -> Timestamp {
        self.state().now
    }

    fn check_fence(&self) -> Result<()> {
        let mut state = self.state();
        if state.fenced {
            return Err(Error::Fenced);
        }
        match state.fence {
            Some(n) if n <= 1 => {
                state.fence = None;
                state.fenced = true;
                let closed = format!("{}: the fence closes", state.now);
                state.trace.push(closed);
                Err(Error::Fenced)
            }
            Some(n) => {
                state.fence = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn waiting(&self, target: &Target) -> Option<String> {
        let state = self.state();
        state
            .memory
            .backoffs
            .waiting("uid-auth", target, self.instant(state.now))
            .map(str::to_string)
    }

    fn write_failed(&self, target: &Target, error: &Error) {
        let mut state = self.state();
        let now = self.instant(state.now);
        state
            .memory
            .backoffs
            .failed("uid-auth", target, error.brief(), now);
    }

    fn write_succeeded(&self, target: &Target) {
        self.state().memory.backoffs.succeeded("uid-auth", target);
    }

    fn remember_next(&self, next: Option<(String, Timestamp)>) {
        self.state().memory.next_published = next;
    }

    async fn generate(&self, algorithm: Algorithm, bits: usize) -> Result<KeyPair> {
        let pair = KeyPair::generate(bits, algorithm).map_err(Error::GenerateKey)?;
        self.state()
            .generated
            .insert(pair.jwk.kid.clone(), algorithm);
        Ok(pair)
    }

    async fn write_secret(
        &self,
        current: Option<&Secret>,
        desired: &Secret,
    ) -> std::result::Result<Secret, kube::Error> {
        let mut state = self.state();
        state.now = plus(state.now, state.latency);
        if state.refuses("Secret", HOME) {
            state.refused_secret_writes += 1;
            return Err(refused("Secret"));
        }
        let stored = state.secrets.get(HOME).map(|s| s.metadata.clone());
        let mut secret = desired.clone();
        state.admit(
            "Secret",
            &mut secret.metadata,
            current.map(|c| &c.metadata),
            stored.as_ref(),
        )?;
        let revision = state.next_revision();
        secret.metadata.resource_version = Some(revision.to_string());
        let kid = secret_kid(&secret);
        // The first key (and the first after a lost Secret) signs once the home ConfigMap holds it.
        let before = state
            .secrets
            .get(HOME)
            .or(state.former_secret.as_ref())
            .and_then(secret_kid);
        if let Some(kid) = &kid
            && before.is_none()
            && !state
                .config_maps
                .get(HOME)
                .or(state.former_config_maps.get(HOME))
                .is_some_and(|cm| config_map_kids(cm).contains(kid))
        {
            state.violations.push(format!(
                "I3: key {kid} signs before the home ConfigMap holds it (the Secret named no key)"
            ));
        }
        if let Some(kid) = &kid
            && state.checker.signing() != Some(kid.as_str())
            && std::mem::take(&mut state.at_once)
        {
            state.checker.rules_mut().signs_at_once.insert(kid.clone());
        }
        if let Some(kid) = &kid {
            if before.as_ref() != Some(kid) {
                state.signing_since = Some(state.now);
            }
            // The Secret names the algorithm of the key it signs with.
            let named = secret
                .data
                .as_ref()
                .and_then(|d| d.get(resources::ALGORITHM))
                .map(|a| String::from_utf8_lossy(&a.0).into_owned());
            let generated = state.generated.get(kid).map(|a| a.as_str().to_string());
            if generated.is_some() && named != generated {
                state.violations.push(format!(
                    "the Secret names algorithm {named:?} while its key {kid} is {generated:?}"
                ));
            }
        }
        state.secrets.insert(HOME.to_string(), secret.clone());
        let at = state.now;
        state.check(Version {
            kind: Kind::Secret,
            namespace: HOME.into(),
            kids: Some(kid.into_iter().collect()),
            order: revision,
            at,
            writer: Writer::Operator,
        });
        Ok(secret)
    }

    async fn write_config_map(
        &self,
        current: Option<&ConfigMap>,
        desired: &ConfigMap,
    ) -> std::result::Result<ConfigMap, kube::Error> {
        let mut state = self.state();
        state.now = plus(state.now, state.latency);
        let ns = desired.namespace().unwrap_or_default();
        if state.refuses("ConfigMap", &ns) {
            return Err(refused("ConfigMap"));
        }
        let stored = state.config_maps.get(&ns).map(|cm| cm.metadata.clone());
        let mut cm = desired.clone();
        state.admit(
            "ConfigMap",
            &mut cm.metadata,
            current.map(|c| &c.metadata),
            stored.as_ref(),
        )?;
        Ok(state.store_config_map(&ns, cm, true))
    }

    async fn delete(&self, removal: &Removal) -> std::result::Result<(), kube::Error> {
        let mut state = self.state();
        state.now = plus(state.now, state.latency);
        let ns = removal.namespace();
        match removal {
            Removal::ConfigMap(cm) => {
                if state.refuses("ConfigMap", &ns) {
                    return Err(refused("ConfigMap"));
                }
                // The checker stopped following the ConfigMaps under a former name at the rename.
                let former = cm.name_any() != state.jsk.config_map_name();
                let stored = if former {
                    &mut state.former_config_maps
                } else {
                    &mut state.config_maps
                };
                if stored.get(&ns).map(|s| s.uid()) != Some(cm.uid()) {
                    return Ok(());
                }
                stored.remove(&ns);
                if former {
                    return Ok(());
                }
                let order = state.next_revision();
                let at = state.now;
                state.check(Version {
                    kind: Kind::ConfigMap,
                    namespace: ns,
                    kids: None,
                    order,
                    at,
                    writer: Writer::Operator,
                });
            }
            // Only a Secret under a former name is ever removed.
            Removal::Secret(secret) => {
                if state.refuses("Secret", HOME) {
                    return Err(refused("Secret"));
                }
                if state.former_secret.as_ref().map(|s| s.uid()) == Some(secret.uid()) {
                    state.former_secret = None;
                }
            }
        }
        Ok(())
    }

    async fn report(&self, report: Report) -> Result<()> {
        let mut state = self.state();
        for note in report.events {
            state.events.push((note.reason, note.message));
        }
        if let Some(status) = report.status {
            // As on the API server: the fence is checked before the status write.
            drop(state);
            if let Err(e) = self.check_fence() {
                self.state().status_refused = true;
                return Err(e);
            }
            let mut state = self.state();
            if state.refuses("Status", HOME) {
                state.status_refused = true;
                return Err(Error::ApplyStatus(refused("status")));
            }
            state.jsk.status = Some(status);
        }
        Ok(())
    }
}
