//! The step machine against generated fault schedules, on the in-memory cluster ([`super::fake`]):
//! refused writes per namespace and object for a span, process restarts, leaders whose fence
//! closes in the middle of a reconcile, namespaces that start or stop accepting copies, deleted
//! and hand-edited ConfigMaps and Secrets (planted keys included), spec edits (the algorithm, the
//! names of the Secret and the ConfigMaps), rotate and revoke
//! annotations, and the clock. After every write the cluster checks
//! I1, I2, I3 on every version of every ConfigMap and that no key set is empty
//! ([`crate::invariants`]); after every reconcile, that a refusing namespace held back no other's
//! repair and that no planted key spread; at the end, that no key-generation storm happened and
//! that once the faults stop the key converges within a bounded number of reconciles.
//!
//! `cargo test --lib schedules` runs 256 cases; `PROPTEST_CASES=20000 cargo test --release --lib
//! schedules` is the longer run.

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::fake::{FakeCluster, HOME, LEASE_DURATION, OTHERS, Refusal, Span};

/// Rotation interval, propagation delay and token lifetime of the generated keys, in seconds.
const R: i64 = 60;
const P: i64 = 10;
const L: i64 = 20;

/// Reconciles a quiet cluster may take to converge.
const CONVERGE_WITHIN: usize = 12;

/// Something that happens to the cluster.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Time passes; the controller reconciles whenever the key asked to be looked at again.
    Wait(u16),
    /// Time passes until this many seconds into the next key's P (the next instant that is
    /// R - P + this after the signing key started signing): the faults that follow fall where a
    /// next key is published but does not sign yet.
    IntoP(u8),
    /// Writes of a kind (Secret, ConfigMap, Status or any) in a namespace (or any) are refused
    /// for a span of seconds.
    Refuse(Option<&'static str>, Option<&'static str>, u16),
    /// The Nth write from now of a kind in a namespace is refused, whenever it comes.
    RefuseNth(Option<&'static str>, Option<&'static str>, u8),
    /// The operator restarts (or fails over): what it remembered is gone.
    Restart,
    /// The leader stops renewing its Lease: its fence closes before its Nth write from now (the
    /// reconcile fails there), and a standby with no memory of the key takes over a lease
    /// duration later.
    Failover(u8),
    /// A namespace starts or stops accepting copies.
    Accept(&'static str, bool),
    /// Someone deletes the ConfigMap in a namespace.
    DeleteConfigMap(&'static str),
    /// Someone deletes the Secret.
    DeleteSecret,
    /// Someone adds a key of their own to the ConfigMap in a namespace.
    PlantKey(&'static str),
    /// Someone edits the ConfigMap in a namespace down to one key.
    Truncate(&'static str),
    /// `jwtkeys.dev/rotate` gets a new value.
    Rotate,
    /// `jwtkeys.dev/revoke` names the signing key (`true`) or another published key.
    Revoke(bool),
    /// The spec's algorithm changes.
    Algorithm(&'static str),
    /// The spec's `configMapName` (`true`) or `secretName` changes.
    Rename(bool),
}

fn namespace() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(HOME), Just(OTHERS[0]), Just(OTHERS[1])]
}

fn copy_namespace() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(OTHERS[0]), Just(OTHERS[1])]
}

fn kind() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        2 => Just(None),
        3 => Just(Some("Secret")),
        3 => Just(Some("ConfigMap")),
        1 => Just(Some("Status")),
    ]
}

fn scope() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![Just(None), namespace().prop_map(Some)]
}

/// Each kind of fault with its weight in a schedule that has them all.
fn faults() -> Vec<(u32, BoxedStrategy<Fault>)> {
    vec![
        // Short waits too: the faults that break an invariant often fall within one P.
        (
            6,
            prop_oneof![1u16..12, 1u16..90]
                .prop_map(Fault::Wait)
                .boxed(),
        ),
        (
            3,
            (kind(), scope(), 1u16..200)
                .prop_map(|(kind, ns, secs)| Fault::Refuse(kind, ns, secs))
                .boxed(),
        ),
        (
            2,
            (kind(), scope(), 1u8..6)
                .prop_map(|(kind, ns, n)| Fault::RefuseNth(kind, ns, n))
                .boxed(),
        ),
        (2, (0u8..P as u8).prop_map(Fault::IntoP).boxed()),
        (1, Just(Fault::Restart).boxed()),
        (1, (1u8..6).prop_map(Fault::Failover).boxed()),
        (
            2,
            (copy_namespace(), any::<bool>())
                .prop_map(|(ns, on)| Fault::Accept(ns, on))
                .boxed(),
        ),
        (1, namespace().prop_map(Fault::DeleteConfigMap).boxed()),
        (1, Just(Fault::DeleteSecret).boxed()),
        (1, namespace().prop_map(Fault::PlantKey).boxed()),
        (1, namespace().prop_map(Fault::Truncate).boxed()),
        (1, Just(Fault::Rotate).boxed()),
        (1, any::<bool>().prop_map(Fault::Revoke).boxed()),
        (
            1,
            prop_oneof![Just("EdDSA"), Just("ES256")]
                .prop_map(Fault::Algorithm)
                .boxed(),
        ),
        (1, any::<bool>().prop_map(Fault::Rename).boxed()),
    ]
}

/// A schedule of up to `len` faults. Swarm testing: each schedule draws its own weights, leaving
/// some kinds of fault out and making others frequent, so that the few faults a defect needs
/// together (a refused Secret write, a rotate request and a namespace that starts accepting within
/// one P, say) come together far more often than under fixed weights. Waits are always in.
fn schedule(len: usize) -> impl Strategy<Value = Vec<Fault>> {
    let kinds = faults().len();
    prop::collection::vec(0u32..4, kinds).prop_flat_map(move |scales| {
        let arms: Vec<(u32, BoxedStrategy<Fault>)> = faults()
            .into_iter()
            .zip(scales)
            .enumerate()
            .map(|(i, ((weight, fault), scale))| {
                (if i == 0 { weight } else { weight * scale }, fault)
            })
            .filter(|(weight, _)| *weight > 0)
            .collect();
        prop::collection::vec(prop::strategy::Union::new_weighted(arms), 0..len)
    })
}

fn spec(algorithm: &str) -> serde_json::Value {
    serde_json::json!({
        "algorithm": algorithm,
        "rotationInterval": format!("{R}s"),
        "propagationDelay": format!("{P}s"),
        "maxTokenLifetime": format!("{L}s"),
        "publish": {"namespaceSelector": {"matchLabels": {"jwks": "auth"}}},
    })
}

/// Runs the controller as it runs in a cluster: a reconcile after every change it watches, and
/// at the instant each reconcile asked for (after a failure, at the first retry).
struct Driver {
    cluster: FakeCluster,
    due: Option<Timestamp>,
    reconciles: usize,
    rotates: usize,
    revokes: usize,
    secret_deletes: usize,
    algorithm_changes: usize,
    started: Timestamp,
}

impl Driver {
    fn new(accepting: [bool; 2], latency_ms: i64) -> Driver {
        let cluster = FakeCluster::new(spec("EdDSA"), accepting, latency_ms);
        let started = cluster.time();
        Driver {
            cluster,
            due: None,
            reconciles: 0,
            rotates: 0,
            revokes: 0,
            secret_deletes: 0,
            algorithm_changes: 0,
            started,
        }
    }

    /// One reconcile, then the checks that hold after every reconcile.
    fn reconcile(&mut self) -> Result<(), TestCaseError> {
        self.reconciles += 1;
        self.due = match self.cluster.reconcile() {
            Ok(at) => at,
            // The error policy: the key is tried again when its first waiting write may be.
            Err(_) => Some(self.cluster.time() + SignedDuration::from_secs(2)),
        };
        // A leader whose fence closed exits; the standby reconciles every key once it leads.
        if self.cluster.take_fenced() {
            self.due = Some(self.cluster.time() + LEASE_DURATION);
        }
        let violations = self.cluster.violations();
        prop_assert!(
            violations.is_empty(),
            "{}\n{}",
            violations.join("\n"),
            self.cluster.trace()
        );
        if let Err(problem) = self
            .cluster
            .repaired()
            .and_then(|()| self.cluster.reported())
            .and_then(|()| self.cluster.on_schedule())
        {
            return Err(TestCaseError::fail(format!(
                "{problem}\n{}",
                self.cluster.trace()
            )));
        }
        Ok(())
    }

    /// Time passes: the controller reconciles at every instant a reconcile asked for.
    fn wait(&mut self, secs: i64) -> Result<(), TestCaseError> {
        let until = self.cluster.time() + SignedDuration::from_secs(secs);
        while let Some(due) = self.due
            && due <= until
        {
            self.cluster.advance_to(due);
            self.reconcile()?;
        }
        self.cluster.advance_to(until);
        self.cluster
            .on_schedule()
            .map_err(|problem| TestCaseError::fail(format!("{problem}\n{}", self.cluster.trace())))
    }

    fn apply(&mut self, fault: &Fault) -> Result<(), TestCaseError> {
        let now = self.cluster.time();
        match fault {
            Fault::Wait(secs) => return self.wait(i64::from(*secs)),
            Fault::IntoP(secs) => {
                let Some(since) = self.cluster.signing_since() else {
                    return Ok(());
                };
                let mut at = since + SignedDuration::from_secs(R - P + i64::from(*secs));
                while at <= now {
                    at += SignedDuration::from_secs(R);
                }
                return self.wait(at.duration_since(now).as_secs());
            }
            Fault::Refuse(kind, ns, secs) => self.cluster.refuse(Refusal {
                kind: *kind,
                namespace: ns.map(str::to_string),
                span: Span::Until(now + SignedDuration::from_secs(i64::from(*secs))),
            }),
            // Not a change the watch sees: the fence closes at the write it picks.
            Fault::Failover(n) => {
                self.cluster.close_fence_at(u32::from(*n));
                return Ok(());
            }
            // Not a change the watch sees: the refusal waits for the write it picks.
            Fault::RefuseNth(kind, ns, n) => {
                self.cluster.refuse(Refusal {
                    kind: *kind,
                    namespace: ns.map(str::to_string),
                    span: Span::Nth(u32::from(*n)),
                });
                return Ok(());
            }
            Fault::Restart => self.cluster.restart(),
            Fault::Accept(ns, on) => self.cluster.accept(ns, *on),
            Fault::DeleteConfigMap(ns) => self.cluster.delete_config_map(ns),
            Fault::DeleteSecret => {
                self.secret_deletes += 1;
                self.cluster.delete_secret()
            }
            Fault::PlantKey(ns) => self.cluster.plant_key(ns),
            Fault::Truncate(ns) => self.cluster.truncate_config_map(ns),
            Fault::Rotate => {
                self.rotates += 1;
                self.cluster
                    .annotate(crate::crd::ROTATE_ANNOTATION, &format!("r{}", self.rotates))
            }
            Fault::Revoke(signing) => {
                self.revokes += 1;
                self.cluster.revoke(*signing)
            }
            Fault::Algorithm(alg) => {
                self.algorithm_changes += 1;
                self.cluster.set_algorithm(alg)
            }
            Fault::Rename(config_map) => self.cluster.rename(*config_map),
        }
        // The watch sees the change: the key is reconciled.
        self.reconcile()
    }

    /// The faults stop: within a bounded number of reconciles the key converges.
    fn converge(&mut self) -> Result<(), TestCaseError> {
        self.cluster.heal();
        // Backoffs of writes refused before the heal run out within the longest retry delay.
        self.wait(300)?;
        for _ in 0..CONVERGE_WITHIN {
            if self.cluster.converged().is_ok() {
                return Ok(());
            }
            let next = self
                .due
                .unwrap_or_else(|| self.cluster.time() + SignedDuration::from_secs(1));
            self.cluster.advance_to(next);
            self.reconcile()?;
        }
        match self.cluster.converged() {
            Ok(()) => Ok(()),
            Err(problem) => Err(TestCaseError::fail(format!(
                "not converged {CONVERGE_WITHIN} reconciles after the faults stopped: {problem}"
            ))),
        }
    }

    /// No key-generation storm: one key per rotation the time allows, plus one per request,
    /// lost Secret, algorithm change, refused Secret write (a key not saved is never used) and
    /// failover (a leader fenced before it saved its key).
    fn generation_bound(&self) -> usize {
        let elapsed = self.cluster.time().duration_since(self.started).as_secs();
        2 + (elapsed / R) as usize
            + self.rotates
            + self.revokes
            + self.secret_deletes
            + self.algorithm_changes
            + self.cluster.refused_secret_writes()
            + self.cluster.failovers()
    }
}

fn run(accepting: [bool; 2], latency_ms: i64, faults: &[Fault]) -> Result<(), TestCaseError> {
    let mut driver = Driver::new(accepting, latency_ms);
    // The key is created by the first fault's reconcile (a fault may already be in force).
    for fault in faults {
        driver.apply(fault)?;
    }
    driver.converge()?;
    let (generated, bound) = (driver.cluster.generated(), driver.generation_bound());
    prop_assert!(
        generated <= bound,
        "{generated} keys generated, more than {bound} (a key-generation storm)"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_iters: 4096,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_invariants_hold_under_generated_fault_schedules(
        accepting in any::<[bool; 2]>(),
        latency_ms in 0i64..1500,
        faults in schedule(40),
    ) {
        run(accepting, latency_ms, &faults)?;
    }
}

#[test]
fn a_quiet_key_rotates_on_schedule_and_converges() {
    let mut driver = Driver::new([true, false], 100);
    driver.reconcile().unwrap();
    let (first, _) = driver.cluster.kids();
    driver.wait(5 * R).unwrap();
    let (later, _) = driver.cluster.kids();
    assert_ne!(first, later, "the key rotated");
    assert!(driver.cluster.generated() >= 5, "one key per rotation");
    driver.converge().unwrap();
    assert!(driver.cluster.generated() <= driver.generation_bound());
}

#[test]
fn a_restart_writes_nothing_when_nothing_changed() {
    // Slow writes put fractions of a second in every instant the state records; the status shows
    // them rounded up to the second, and a restarted process must not take that for a change.
    let mut driver = Driver::new([true, false], 337);
    driver.reconcile().unwrap();
    driver.wait(R + 5).unwrap();
    let (_, reported) = driver.cluster.kids();
    assert_eq!(reported.len(), 2, "a retired key is still published");
    let before = driver.cluster.versions();
    driver.cluster.restart();
    driver.reconcile().unwrap();
    assert_eq!(
        driver.cluster.versions(),
        before,
        "a restart wrote something\n{}",
        driver.cluster.trace()
    );
}

/// Schedules the property test found, kept as they shrank.
#[test]
fn a_key_lost_with_its_secret_stays_published_until_its_successor_signs_and_for_l_plus_p_after() {
    // The Secret is deleted while every ConfigMap write is refused for 31 s: no successor can be
    // published, and the lost key (the auth service still signs with its mounted copy) outlived
    // the retention its rebuild stamped.
    let faults = [
        Fault::Refuse(Some("ConfigMap"), None, 31),
        Fault::DeleteSecret,
        Fault::Wait(30),
    ];
    run([false, false], 0, &faults).unwrap();
}

#[test]
fn the_retention_of_a_key_lost_with_its_secret_counts_from_the_switch_to_its_successor() {
    // Slow writes: the successor is published in two ConfigMaps before the Secret switches to it,
    // more than the clock margin after the lost key's retirement was stamped.
    run([false, true], 501, &[Fault::DeleteSecret, Fault::Wait(1)]).unwrap();
}

#[test]
fn a_deleted_secret_that_also_held_the_next_key_keeps_both_published() {
    // The next key was published at 50 s; the Secret goes: both keys retire at the same instant,
    // and the one that signed is not known.
    let faults = [
        Fault::Wait(50),
        Fault::Refuse(Some("ConfigMap"), None, 1),
        Fault::DeleteSecret,
    ];
    run([false, false], 0, &faults).unwrap();
}

#[test]
fn a_namespace_that_starts_accepting_during_p_holds_the_next_key_for_p_before_it_signs() {
    // The next key is published at 50 s; at 53 s a namespace starts accepting and gets it, in a
    // reconcile whose Secret write is refused (a rotate request changes the Secret): the instant
    // the key was published everywhere moved to 53 s, and the next reconcile must not take the
    // older one.
    let faults = [
        // The key is created at 0 (a reconcile that changes nothing else).
        Fault::Restart,
        Fault::Wait(53),
        Fault::Refuse(Some("Secret"), None, 5),
        Fault::Rotate,
        Fault::Accept(OTHERS[1], true),
        Fault::Wait(30),
    ];
    run([false, false], 0, &faults).unwrap();
}

#[test]
fn a_failed_restamp_after_the_secret_switched_reports_the_key_it_switched_to() {
    let faults = [
        Fault::PlantKey(HOME),
        Fault::Wait(62),
        Fault::RefuseNth(Some("Secret"), None, 3),
        Fault::Revoke(true),
    ];
    run([false, true], 0, &faults).unwrap();
}

#[test]
fn a_copy_that_could_not_be_removed_does_not_hold_the_next_key_back() {
    // ns-b stops accepting while every ConfigMap write is refused: its copy stays behind, and its
    // failed removal must not count as a failed publication that keeps the next key from signing.
    let faults = [
        Fault::Accept(OTHERS[0], false),
        Fault::Rotate,
        Fault::Accept(OTHERS[1], true),
        Fault::Refuse(Some("ConfigMap"), None, 66),
        Fault::Accept(OTHERS[1], false),
        Fault::IntoP(6),
        Fault::IntoP(0),
    ];
    run([false, false], 637, &faults).unwrap();
}

#[test]
fn a_leader_fenced_between_saving_the_next_key_and_publishing_it_leaves_it_to_the_standby() {
    let mut driver = Driver::new([true, false], 0);
    driver.reconcile().unwrap();
    let (first, _) = driver.cluster.kids();
    // At R - P the next key is saved in the Secret (one write), then published: the fence closes
    // before the ConfigMap write.
    driver.cluster.close_fence_at(2);
    driver.wait(R - P + 1).unwrap();
    assert_eq!(driver.cluster.failovers(), 1, "the fence closed");
    let (signing, reported) = driver.cluster.kids();
    assert_eq!(signing, first, "nothing switched before the standby led");
    driver.wait(2 * R).unwrap();
    let (later, _) = driver.cluster.kids();
    assert_ne!(later, first, "the standby rotated the key");
    assert_eq!(
        reported,
        first.iter().cloned().collect::<Vec<_>>(),
        "the fenced leader wrote no status after saving the next key"
    );
    driver.converge().unwrap();
    assert!(driver.cluster.generated() <= driver.generation_bound());
}

#[test]
fn a_secret_under_a_former_name_goes_though_its_delete_did_not_happen_before_a_failover() {
    // The Secret is renamed twice; the second time the leader's fence closes right after the new
    // Secret is written, before the old one is deleted. The standby finds the new Secret and must
    // still delete the old one (it holds private keys), not leave it for good.
    let faults = [
        Fault::Rename(false),
        Fault::Failover(3),
        Fault::Rename(false),
    ];
    run([false, false], 0, &faults).unwrap();
}

#[test]
fn a_configmap_rename_while_the_secret_is_lost_keeps_the_lost_key_published_under_the_new_name() {
    // The Secret is deleted and cannot be written again; then the ConfigMaps are renamed. The
    // auth service still signs with its mounted copy of the lost key, whose public key only the
    // ConfigMaps under the former name hold: the ConfigMaps under the new name must hold it too.
    let faults = [
        Fault::Restart,
        Fault::Refuse(Some("Secret"), None, 100),
        Fault::DeleteSecret,
        Fault::Rename(true),
        Fault::Wait(5),
    ];
    run([true, false], 0, &faults).unwrap();
}

#[test]
fn a_secret_left_under_a_former_name_does_not_make_a_retired_key_sign_again() {
    // As the property test shrank it. Secret writes are refused from the next key's publication
    // on (the old Secret keeps it as pending); the Secret is renamed, the reconcile that writes
    // the new Secret switches to the next key and cannot delete the old one (the refusal still
    // holds). Then the new Secret is deleted: the keys come back from the old one, which names the
    // first key as signing, and the first key must not sign again.
    let faults = [
        Fault::Refuse(Some("Status"), None, 1),
        Fault::IntoP(0),
        Fault::Refuse(Some("Secret"), None, 139),
        Fault::Wait(66),
        Fault::IntoP(4),
        Fault::Algorithm("EdDSA"),
        Fault::IntoP(0),
        Fault::Rename(false),
        Fault::DeleteSecret,
    ];
    run([false, false], 0, &faults).unwrap();
}
