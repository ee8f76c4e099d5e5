//! The reconcile as a step machine. Given what a reconcile observed ([`Observed`]), what this
//! process remembers of the key ([`Memory`]) and `now`, [`Machine::next`] answers the next step and
//! [`Machine::record`] takes its outcome back. No clock, no API and no `async` in here: the executor
//! ([`super::effects::execute`]) performs each step and stamps the instant each call returned.
//!
//! The phases follow the key lifecycle of the contract:
//! - **save**: a key the schedule asks for is generated and saved in the Secret (as the pending
//!   key) before anything publishes it; none is made while the Secret waits to retry a refused
//!   write;
//! - **publish**: every ConfigMap (home first, then the copies) gets every key a verifier may need,
//!   and in every version the key the Secret signs with; never an empty key set;
//! - **hold P**: a next key counts as published from the last write that added it anywhere, and
//!   not at all while a target lacks it; this process remembers that instant before anything else
//!   can fail;
//! - **switch**: the Secret moves to the schedule (a next key signs, the old one retires);
//! - **drop**: keys the schedule removed leave the ConfigMaps, now that the Secret no longer needs
//!   them;
//! - **tidy**: objects under names the key no longer uses go once the current names hold the keys;
//! - **report**: events, gauges and the status, and when to look again.

use std::{borrow::Cow, collections::BTreeMap, time::Duration};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{ResourceExt, runtime::events::EventType};

use super::{
    Error, Found,
    observe::{Inputs, Rebuilt, published_next_since, rebuild},
    publish::{Publication, Write, Written, published_jwks},
    reason::{ConditionReason, EventReason},
    report::{self, Readiness},
};
use crate::{
    crd::{
        ACCEPT_FROM_ANNOTATION, Algorithm, JwtSigningKey, JwtSigningKeyStatus, REVOKE_ANNOTATION,
        ROTATE_ANNOTATION, Timing,
    },
    keys::{Jwk, KeyPair},
    resources::{self, PrivateKeys},
    schedule::{self, NewKey, PendingKey, Plan, Transition},
    time::plus,
};

pub use crate::schedule::KeySet;

/// A write whose return is later than the planned instant by more than this is stamped again in the
/// Secret's state (the retention's clock margin covers the rest).
const STAMP_TOLERANCE: SignedDuration = SignedDuration::from_millis(200);

/// A requeue lands this much after the instant the schedule changes.
pub const REQUEUE_MARGIN: Duration = Duration::from_millis(20);

/// What a reconcile read before deciding anything (reads only, from the caches).
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The Secret under the name the spec gives.
    pub secret: Found<Secret>,
    /// A Secret this key owns under a former name (after a `secretName` change): the source of
    /// the keys while the Secret under the current name is missing, removed once it holds them.
    pub renamed_secret: Option<Secret>,
    /// The ConfigMap under the name the spec gives, in the key's namespace.
    pub home: Found<ConfigMap>,
    /// ConfigMaps this key owns in its own namespace under a former name.
    pub renamed_home: Vec<ConfigMap>,
    /// The copies this key owns in other namespaces (current and former names).
    pub copies: Vec<ConfigMap>,
    /// Namespaces that should hold a copy (selected and accepting), sorted.
    pub targets: Vec<String>,
    /// Namespaces selected that do not accept copies of this key, sorted.
    pub unaccepted: Vec<String>,
    /// For each target without an owned copy: what is under the ConfigMap name there.
    pub looked_up: BTreeMap<String, Result<Found<ConfigMap>, String>>,
    /// The status as stored, when the Secret is missing (it helps rebuild the keys); `None` when it
    /// was not needed.
    pub stored_status: Option<JwtSigningKeyStatus>,
    /// The status a status write is compared with: the stored one, this process's last write, or
    /// the cached object's.
    pub status_baseline: JwtSigningKeyStatus,
}

/// What this process remembers of the key (dropped on a restart).
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// The next key and when this process saw it published in every ConfigMap.
    pub next_published: Option<(String, Timestamp)>,
    /// While the Secret waits to retry a refused write: that write's error.
    pub secret_waiting: Option<String>,
    /// Extra wait before a next key signs, for clock skew between replicas.
    pub activation_margin: crate::duration::GoDuration,
}

/// An event for the key.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// Normal or Warning.
    pub type_: EventType,
    /// The event reason.
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

fn note(type_: EventType, reason: EventReason, message: String) -> Note {
    Note {
        type_,
        reason: reason.as_str(),
        message,
    }
}

/// What a reconcile reports, in this order: events, the rotation counter, the key gauges (set
/// before the status, so that whoever sees the status sees the gauges of the same keys), the
/// status.
#[derive(Clone, Debug)]
pub struct Report {
    /// Events, in order.
    pub events: Vec<Note>,
    /// Rotations that happened (a signing key activated).
    pub rotations: usize,
    /// The keys for the gauges, and the next rotation.
    pub gauges: Option<(KeySet, Option<Timestamp>)>,
    /// The status to write; `None` when the stored one already says this.
    pub status: Option<JwtSigningKeyStatus>,
}

/// An object to delete, with its uid as precondition.
#[derive(Clone, Debug)]
pub enum Removal {
    /// A copy no longer targeted, or a ConfigMap under a former name.
    ConfigMap(ConfigMap),
    /// The Secret under a former name.
    Secret(Secret),
}

impl Removal {
    /// Its namespace.
    pub fn namespace(&self) -> String {
        match self {
            Removal::ConfigMap(cm) => cm.namespace(),
            Removal::Secret(s) => s.namespace(),
        }
        .unwrap_or_default()
    }
}

/// The next thing to do.
#[derive(Debug)]
pub enum Step {
    /// Delete these objects; the outcome is [`Outcome::Deleted`], one result each, in order.
    Delete(Vec<Removal>),
    /// Generate a key pair; [`Outcome::Generated`].
    Generate {
        /// Its algorithm.
        algorithm: Algorithm,
        /// RSA modulus size (ignored by the other algorithms).
        bits: usize,
    },
    /// Write the Secret (created when `current` is `None`); [`Outcome::SecretWritten`].
    WriteSecret {
        /// The Secret as last read or written.
        current: Option<Box<Secret>>,
        /// What it becomes.
        desired: Box<Secret>,
    },
    /// Write these ConfigMaps, each on its own; [`Outcome::Published`].
    Publish(Vec<Write>),
    /// Remember the next key and when it was published everywhere (or forget it); no I/O;
    /// [`Outcome::Done`].
    Remember(Option<(String, Timestamp)>),
    /// Send events, set gauges, write the status; [`Outcome::Reported`].
    Report(Box<Report>),
    /// The reconcile is over: look again at this instant (`None`: on the next change), or fail.
    Finish(Result<Option<Timestamp>, Error>),
}

/// What a step came to.
#[derive(Debug)]
pub enum Outcome {
    /// One result per removal, in order, with the removal's namespace.
    Deleted(Vec<(String, Result<(), Error>)>),
    /// The key pair and when generation returned.
    Generated(Result<(KeyPair, Timestamp), Error>),
    /// The Secret written and when the write returned; `None` when it already matched.
    SecretWritten(Result<Option<(Secret, Timestamp)>, Error>),
    /// One result per write.
    Published(Vec<Written>),
    /// A step without I/O was taken.
    Done,
    /// The report was made (or the status write failed).
    Reported(Result<(), Error>),
}

/// Where the machine is; the variants that end in `-ing` wait for the outcome of the step they
/// asked for.
enum Phase {
    Refuse(Readiness),
    Refusing,
    Untarget,
    Untargeting,
    Save,
    Generating(NewKey),
    Saving(PendingKey, NewKey),
    PublishNew(PendingKey, NewKey, Option<usize>),
    PublishingNew(PendingKey, NewKey, Option<usize>),
    Published(PendingKey, NewKey, Option<usize>),
    Repair,
    Repairing,
    Hold,
    Holding,
    Switch,
    Switching,
    Restamping,
    SwitchFailed,
    Drop,
    Dropping,
    Dropped,
    RecordingNext,
    RememberNext,
    RememberingNext,
    Tidy,
    Tidying,
    TidySecret,
    TidyingSecret(String),
    Report,
    Reporting(Option<Timestamp>),
    Finish(Result<Option<Timestamp>, Error>),
    Over,
}

/// One reconcile of one JwtSigningKey.
pub struct Machine {
    jsk: JwtSigningKey,
    namespace: String,
    timing: Timing,
    retention: SignedDuration,
    phase: Phase,
    /// The status on the object the reconcile started from.
    old: JwtSigningKeyStatus,
    /// The status a write is compared with.
    baseline: JwtSigningKeyStatus,
    memory: Memory,
    keys: KeySet,
    private: BTreeMap<String, KeyPair>,
    /// The pending key as the Secret holds it (a next key stays held that way until it signs).
    saved_pending: Option<PendingKey>,
    /// The key the Secret signed with when the reconcile started.
    signing_in_secret: Option<Jwk>,
    notes: Vec<Note>,
    publication: Publication,
    secret: Option<Secret>,
    secret_written: bool,
    renamed_secret: Option<Secret>,
    renamed_home: Vec<ConfigMap>,
    unaccepted: Vec<String>,
    known_status: JwtSigningKeyStatus,
    secret_error: Option<Error>,
    planned: Timestamp,
    plan: Option<Plan>,
    failures: BTreeMap<String, String>,
}

fn text<'s>(secret: Option<&'s Secret>, key: &str) -> Option<&'s str> {
    secret
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(key))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
}

impl Machine {
    /// A reconcile of `jsk` from what it observed, what this process remembers, and `now`.
    pub fn new(jsk: &JwtSigningKey, observed: Observed, memory: Memory, now: Timestamp) -> Machine {
        let idle = Machine::idle(jsk, &observed, &memory, now);
        let mut timing = match jsk.spec.timing() {
            Ok(timing) => timing,
            Err(problem) => {
                let ready = Readiness {
                    status: "False",
                    reason: ConditionReason::InvalidSpec,
                    message: problem.to_string(),
                };
                return Machine {
                    phase: Phase::Refuse(ready),
                    ..idle
                };
            }
        };
        timing.activation_margin = memory.activation_margin;
        let (secret, home) = match owned(jsk, observed.secret, observed.home) {
            Ok(owned) => owned,
            Err(ready) => {
                return Machine {
                    phase: Phase::Refuse(ready),
                    timing,
                    ..idle
                };
            }
        };
        let renamed_secret = observed.renamed_secret;
        let known_status = observed.stored_status.unwrap_or_else(|| idle.old.clone());
        let publication = Publication::new(
            jsk,
            home,
            observed.copies,
            &observed.targets,
            observed.looked_up,
        );
        let source = secret.as_ref().or(renamed_secret.as_ref());
        let Rebuilt {
            mut keys,
            private,
            repairs,
        } = rebuild(
            &timing,
            &Inputs {
                state_json: text(source, resources::STATE_JSON),
                active_pem: text(source, resources::PRIVATE_PEM),
                next_pem: text(source, resources::NEXT_PRIVATE_PEM),
                pending_pem: text(source, resources::PENDING_PRIVATE_PEM),
                // Under former names too: after a configMapName change the ConfigMaps under the
                // new name may not hold anything yet.
                published: publication
                    .published()
                    .into_iter()
                    .chain(observed.renamed_home.iter().flat_map(published_jwks))
                    .collect(),
                status: Some(&known_status),
                algorithm: jsk.spec.algorithm,
            },
            now,
        );
        let mut notes: Vec<Note> = repairs
            .into_iter()
            .map(|r| note(EventType::Warning, EventReason::StateRepaired, r))
            .collect();
        take_annotations(jsk, &mut keys, &known_status, now, &mut notes);
        notes.extend(foreign_keys(jsk, &publication, &keys));
        let mut machine = Machine {
            retention: schedule::retention(&timing),
            timing,
            phase: Phase::Untarget,
            signing_in_secret: keys.active().map(|k| k.jwk.clone()),
            saved_pending: keys.pending.clone(),
            keys,
            private,
            notes,
            publication,
            secret,
            renamed_secret,
            renamed_home: observed.renamed_home,
            unaccepted: observed.unaccepted,
            known_status,
            ..idle
        };
        // Every ConfigMap version holds the key the Secret signs with, until the Secret switches.
        let revoked = machine
            .signing_in_secret
            .as_ref()
            .is_some_and(|jwk| machine.keys.revoked.contains(&jwk.kid));
        machine
            .publication
            .set_signing(machine.signing_in_secret.clone(), revoked);
        machine
    }

    /// A machine that knows no keys yet and has nothing to do.
    fn idle(jsk: &JwtSigningKey, observed: &Observed, memory: &Memory, now: Timestamp) -> Machine {
        let old = jsk.status.clone().unwrap_or_default();
        Machine {
            jsk: jsk.clone(),
            namespace: jsk.namespace().unwrap_or_default(),
            timing: Timing::default(),
            retention: SignedDuration::ZERO,
            phase: Phase::Over,
            baseline: observed.status_baseline.clone(),
            memory: memory.clone(),
            keys: KeySet::default(),
            private: BTreeMap::new(),
            saved_pending: None,
            signing_in_secret: None,
            notes: Vec::new(),
            publication: Publication::new(jsk, None, Vec::new(), &[], BTreeMap::new()),
            secret: None,
            secret_written: false,
            renamed_secret: None,
            renamed_home: Vec::new(),
            unaccepted: Vec::new(),
            known_status: old.clone(),
            secret_error: None,
            planned: now,
            plan: None,
            failures: BTreeMap::new(),
            old,
        }
    }

    /// The next step, at `now`.
    pub fn next(&mut self, now: Timestamp) -> Step {
        loop {
            let step = match std::mem::replace(&mut self.phase, Phase::Over) {
                Phase::Refuse(ready) => self.refuse(ready, now),
                Phase::Untarget => self.untarget(),
                Phase::Save => self.save(now),
                Phase::Saving(pending, role) => self.saving(pending, role),
                Phase::PublishNew(pending, role, created) => {
                    self.phase = Phase::PublishingNew(pending, role, created);
                    Some(self.publish())
                }
                Phase::Published(pending, role, created) => {
                    self.published(pending, role, created, now)
                }
                Phase::Repair => {
                    self.phase = Phase::Repairing;
                    Some(self.publish())
                }
                Phase::Hold => self.hold(now),
                Phase::Switch => self.switch(now),
                Phase::Restamping => self.restamping(),
                Phase::SwitchFailed => self.switch_failed(now),
                Phase::Drop => self.drop_retired(),
                Phase::Dropped => self.record_next(),
                Phase::RememberNext => {
                    self.phase = Phase::RememberingNext;
                    Some(Step::Remember(remembered(&self.keys)))
                }
                Phase::Tidy => self.tidy(),
                Phase::TidySecret => self.tidy_secret(),
                Phase::Report => self.report_keys(now),
                Phase::Finish(result) => Some(Step::Finish(result)),
                Phase::Reporting(next_change) => Some(Step::Finish(Ok(next_change))),
                Phase::Over => Some(Step::Finish(Ok(None))),
                waiting => {
                    self.phase = waiting;
                    panic!("the machine waits for an outcome: call record first");
                }
            };
            if let Some(step) = step {
                return step;
            }
        }
    }

    /// The spec or an object in the way leaves nothing to do but say why.
    fn refuse(&mut self, ready: Readiness, now: Timestamp) -> Option<Step> {
        self.phase = Phase::Refusing;
        Some(Step::Report(Box::new(self.not_ready(ready, now))))
    }

    /// Copies in namespaces that no longer get one go first.
    fn untarget(&mut self) -> Option<Step> {
        self.phase = Phase::Save;
        let untargeted = self.publication.take_untargeted();
        if untargeted.is_empty() {
            return None;
        }
        self.phase = Phase::Untargeting;
        Some(Step::Delete(
            untargeted.into_iter().map(Removal::ConfigMap).collect(),
        ))
    }

    /// Save: a new key is saved in the Secret before anything publishes it. None is made while
    /// the Secret waits to retry a refused write.
    fn save(&mut self, now: Timestamp) -> Option<Step> {
        let plan = schedule::plan(&self.timing, &self.keys, now);
        let Some(role) = plan.generate else {
            self.phase = Phase::Repair;
            return None;
        };
        let reuse = self
            .keys
            .pending
            .clone()
            .filter(|p| self.private.contains_key(&p.jwk.kid));
        if let Some(pending) = reuse {
            self.phase = Phase::PublishNew(pending, role, None);
            return None;
        }
        if let Some(error) = &self.memory.secret_waiting {
            self.secret_error = Some(Error::Waiting(error.clone()));
            self.phase = Phase::Repair;
            return None;
        }
        self.phase = Phase::Generating(role);
        Some(Step::Generate {
            algorithm: self.jsk.spec.algorithm,
            bits: self.jsk.spec.rsa_key_size() as usize,
        })
    }

    /// The generated key goes into the Secret as pending.
    fn saving(&mut self, pending: PendingKey, role: NewKey) -> Option<Step> {
        self.phase = Phase::Saving(pending, role);
        Some(self.write_secret(desired_secret(&self.jsk, &self.keys, &self.private, None)))
    }

    /// Publish the new key: a next key waits until every target holds it, a key that must sign
    /// now signs once every writable target holds it (when no key signs yet, once the home
    /// ConfigMap holds it).
    fn published(
        &mut self,
        pending: PendingKey,
        role: NewKey,
        created: Option<usize>,
        now: Timestamp,
    ) -> Option<Step> {
        self.phase = Phase::Repair;
        let held = match role {
            NewKey::Next => self.publication.all_written(),
            NewKey::SignsNow => {
                self.signing_in_secret.is_some() || self.publication.home_holds(&pending.jwk.kid)
            }
        };
        if held {
            self.add_published(pending, role, created, now);
            self.phase = Phase::Save;
        }
        None
    }

    /// Hold P: the next key counts from the last write that added it anywhere, and not at all
    /// while a target lacks it; remembered before anything else can fail. (Every target was
    /// brought to every key just before, repairs included, whether or not the Secret can be
    /// written.)
    fn hold(&mut self, now: Timestamp) -> Option<Step> {
        hold_next_until_everywhere(&mut self.keys, &self.publication, now);
        self.phase = Phase::Holding;
        Some(Step::Remember(remembered(&self.keys)))
    }

    /// Switch the Secret to the schedule.
    fn switch(&mut self, now: Timestamp) -> Option<Step> {
        if self.secret_error.is_some() {
            self.phase = Phase::SwitchFailed;
            return None;
        }
        self.planned = now;
        let plan = schedule::plan(&self.timing, &self.keys, now);
        let desired = desired_secret(
            &self.jsk,
            &plan.keys,
            &self.private,
            self.saved_pending.as_ref(),
        );
        self.plan = Some(plan);
        self.phase = Phase::Switching;
        Some(self.write_secret(desired))
    }

    /// The retirement of the key that stopped signing moves to the instant the switch returned.
    fn restamping(&mut self) -> Option<Step> {
        self.phase = Phase::Restamping;
        let plan = self.plan.as_ref().expect("planned before the switch");
        Some(self.write_secret(desired_secret(
            &self.jsk,
            &plan.keys,
            &self.private,
            self.saved_pending.as_ref(),
        )))
    }

    /// The Secret did not switch: the keys stay as they were before the plan, and the status
    /// records them (the instant the next key was published everywhere included).
    fn switch_failed(&mut self, now: Timestamp) -> Option<Step> {
        let error = self.secret_error.take().expect("a Secret write failed");
        let ready = Readiness {
            status: "False",
            reason: ConditionReason::SecretWriteFailed,
            message: format!(
                "Writing Secret {} failed; the keys it holds are unchanged and ConfigMaps keep \
                 every key it may sign with: {}",
                self.jsk.secret_name(),
                error.brief()
            ),
        };
        let report = self.report(&self.keys.clone(), &[], &ready, now);
        self.phase = Phase::Finish(Err(error));
        Some(Step::Report(Box::new(report)))
    }

    /// Drop what the schedule removed, now that the Secret no longer needs it.
    fn drop_retired(&mut self) -> Option<Step> {
        let plan = self.plan.as_ref().expect("planned before the drop");
        self.keys = plan.keys.clone();
        self.publication
            .set_signing(self.keys.active().map(|k| k.jwk.clone()), false);
        self.phase = Phase::Dropping;
        Some(self.publish())
    }

    /// A write that added the next key somewhere restarts its P: the Secret records it.
    fn record_next(&mut self) -> Option<Step> {
        self.failures.extend(self.publication.failures());
        self.phase = Phase::RememberNext;
        let kid = self.keys.next().map(|k| k.kid().to_string())?;
        let added = self.publication.added_at(&kid)?;
        if let Some(next) = self.keys.keys.iter_mut().find(|k| k.kid() == kid)
            && next.published_at < added
        {
            next.published_at = added;
        }
        self.phase = Phase::RecordingNext;
        Some(self.write_secret(desired_secret(
            &self.jsk,
            &self.keys,
            &self.private,
            self.saved_pending.as_ref(),
        )))
    }

    /// Tidy: ConfigMaps under names this key no longer uses go once the current names hold the
    /// keys; a removal that fails is reported and retried, and skips nothing else.
    fn tidy(&mut self) -> Option<Step> {
        self.phase = Phase::TidySecret;
        if !self.failures.is_empty() {
            return None;
        }
        let old: Vec<ConfigMap> = self
            .renamed_home
            .iter()
            .chain(self.publication.renamed())
            .cloned()
            .collect();
        if old.is_empty() {
            return None;
        }
        self.phase = Phase::Tidying;
        Some(Step::Delete(
            old.into_iter().map(Removal::ConfigMap).collect(),
        ))
    }

    /// The Secret under a former name goes once the current one holds the keys.
    fn tidy_secret(&mut self) -> Option<Step> {
        self.phase = Phase::Report;
        let old = self.renamed_secret.as_ref()?;
        if !(self.secret_written || self.secret.is_some()) {
            return None;
        }
        self.phase = Phase::TidyingSecret(old.name_any());
        Some(Step::Delete(vec![Removal::Secret(old.clone())]))
    }

    /// Report: events, gauges and the status say what the reconcile came to.
    fn report_keys(&mut self, now: Timestamp) -> Option<Step> {
        let plan = self.plan.take().expect("planned before the report");
        let ready = readiness(
            &self.jsk,
            &self.keys,
            &self.failures,
            self.publication.conflicts(),
        );
        let report = self.report(&self.keys.clone(), &plan.transitions, &ready, now);
        self.phase = Phase::Reporting(plan.next_change);
        if !self.failures.is_empty() {
            self.phase = Phase::Finish(Err(Error::Publish(ready.message)));
        }
        Some(Step::Report(Box::new(report)))
    }

    /// Takes back the outcome of the last step.
    pub fn record(&mut self, outcome: Outcome) {
        let phase = std::mem::replace(&mut self.phase, Phase::Over);
        self.phase = match (phase, outcome) {
            (Phase::Refusing, Outcome::Reported(result)) => Phase::Finish(result.map(|()| None)),
            (Phase::Untargeting, Outcome::Deleted(results)) => {
                for (ns, result) in results {
                    if let Err(error) = result {
                        self.publication.removal_failed(ns, error.brief());
                    }
                }
                Phase::Save
            }
            (Phase::Generating(role), Outcome::Generated(result)) => match result {
                Ok((pair, at)) => {
                    let pending = PendingKey {
                        jwk: pair.jwk.clone(),
                        generated_at: at,
                    };
                    self.keys.pending = Some(pending.clone());
                    self.private.insert(pair.kid().to_string(), pair);
                    Phase::Saving(pending, role)
                }
                Err(error) => Phase::Finish(Err(error)),
            },
            (Phase::Saving(pending, role), Outcome::SecretWritten(result)) => match result {
                Err(error) => {
                    // Not saved, so never published: the next try makes another.
                    self.private.remove(&pending.jwk.kid);
                    self.keys.pending = self.saved_pending.clone();
                    self.secret_error = Some(error);
                    Phase::Repair
                }
                Ok(written) => {
                    self.secret_written(written);
                    let created = self.notes.len();
                    self.notes.push(note(
                        EventType::Normal,
                        EventReason::KeyCreated,
                        format!(
                            "Generated {} key {} ({})",
                            pending.jwk.alg,
                            pending.jwk.kid,
                            self.private[&pending.jwk.kid].description()
                        ),
                    ));
                    self.saved_pending = Some(pending.clone());
                    Phase::PublishNew(pending, role, Some(created))
                }
            },
            (Phase::PublishingNew(pending, role, created), Outcome::Published(results)) => {
                self.publication.record(results);
                Phase::Published(pending, role, created)
            }
            (Phase::Repairing, Outcome::Published(results)) => {
                self.publication.record(results);
                Phase::Hold
            }
            (Phase::Holding, Outcome::Done) => Phase::Switch,
            (Phase::Switching, Outcome::SecretWritten(result)) => match result {
                Ok(written) => {
                    let returned = written.as_ref().map(|(_, at)| *at);
                    let switched = written.as_ref().is_some_and(|(secret, _)| {
                        signing_kid(Some(secret)).is_some()
                            && signing_kid(Some(secret)) != signing_kid(self.secret.as_ref())
                    });
                    self.secret_written(written);
                    let plan = self.plan.as_mut().expect("planned before the switch");
                    match returned {
                        Some(returned)
                            if restamp(
                                &mut plan.keys,
                                switched,
                                self.planned,
                                returned,
                                self.retention,
                            ) =>
                        {
                            Phase::Restamping
                        }
                        _ => Phase::Drop,
                    }
                }
                Err(error) => {
                    self.secret_error = Some(error);
                    Phase::SwitchFailed
                }
            },
            // The Secret switched, but its state keeps the retirement as planned: the status
            // records the later instant, and the next reconcile keeps the key that long.
            (Phase::Restamping, Outcome::SecretWritten(result)) => {
                match result {
                    Ok(written) => self.secret_written(written),
                    Err(error) => {
                        self.failures.insert(self.namespace.clone(), error.brief());
                    }
                }
                Phase::Drop
            }
            (Phase::Dropping, Outcome::Published(results)) => {
                self.publication.record(results);
                Phase::Dropped
            }
            (Phase::RecordingNext, Outcome::SecretWritten(result)) => {
                match result {
                    Ok(written) => self.secret_written(written),
                    Err(error) => {
                        self.failures.insert(self.namespace.clone(), error.brief());
                    }
                }
                Phase::RememberNext
            }
            (Phase::RememberingNext, Outcome::Done) => Phase::Tidy,
            (Phase::Tidying, Outcome::Deleted(results)) => {
                for (ns, result) in results {
                    if let Err(error) = result {
                        self.failures.insert(ns, error.brief());
                    }
                }
                Phase::TidySecret
            }
            (Phase::TidyingSecret(old), Outcome::Deleted(mut results)) => {
                match results.pop().map(|(_, r)| r) {
                    Some(Err(error)) => {
                        self.failures.insert(self.namespace.clone(), error.brief());
                    }
                    _ => self.notes.push(note(
                        EventType::Normal,
                        EventReason::SecretRenamed,
                        format!(
                            "The keys moved from Secret {old} to {}; the old Secret was deleted",
                            self.jsk.secret_name()
                        ),
                    )),
                }
                Phase::Report
            }
            (Phase::Finish(result), Outcome::Reported(reported)) => {
                Phase::Finish(reported.and(result))
            }
            (Phase::Reporting(next_change), Outcome::Reported(result)) => {
                Phase::Finish(result.map(|()| next_change))
            }
            (_, outcome) => panic!("an outcome the machine did not ask for: {outcome:?}"),
        };
    }

    /// A Secret write, unless the Secret already holds `desired`.
    fn write_secret(&self, desired: Secret) -> Step {
        Step::WriteSecret {
            current: self.secret.clone().map(Box::new),
            desired: Box::new(desired),
        }
    }

    fn secret_written(&mut self, written: Option<(Secret, Timestamp)>) {
        if let Some((secret, _)) = written {
            self.secret = Some(secret);
            self.secret_written = true;
        }
    }

    /// Writes that bring every ConfigMap to the keys as they stand.
    fn publish(&mut self) -> Step {
        Step::Publish(
            self.publication
                .writes(&self.jsk, &publication_order(&self.keys)),
        )
    }

    /// The new key is part of the schedule, published since the write that added it, or (held as
    /// pending since an earlier reconcile) since it was found everywhere.
    fn add_published(
        &mut self,
        pending: PendingKey,
        role: NewKey,
        created: Option<usize>,
        now: Timestamp,
    ) {
        let added = self.publication.added_at(&pending.jwk.kid);
        let published_at = match (added, role) {
            (Some(added), _) => added,
            (None, NewKey::SignsNow) => now,
            (None, NewKey::Next) => self.next_published_since(&pending, now),
        };
        self.keys.pending = None;
        if role == NewKey::SignsNow && self.signing_in_secret.is_none() {
            self.keep_last_signed(now);
        }
        self.keys
            .add_published(pending.jwk.clone(), published_at, role);
        let published = match role {
            NewKey::SignsNow => "is published and signs at once",
            NewKey::Next => "is published in every ConfigMap; it signs after propagationDelay",
        };
        // A next key held as pending is found published on every reconcile until it signs: it
        // gets its event from the reconcile whose writes published it.
        match created {
            Some(i) => self.notes[i].message.push_str(&format!("; it {published}")),
            None if role == NewKey::SignsNow || added.is_some() => self.notes.push(note(
                EventType::Normal,
                EventReason::KeyPublished,
                format!("Key {} {published}", pending.jwk.kid),
            )),
            None => {}
        }
    }

    /// A key that signs at once takes over from the last key that signed (one lost with a deleted
    /// Secret, however long ago its retirement was stamped): that one stops signing no earlier
    /// than now, and stays published for the retention from then (the Secret write that switches
    /// moves it to the instant the write returned, [`restamp`]).
    fn keep_last_signed(&mut self, now: Timestamp) {
        // Which of the keys retired last signed is not known when several were (a deleted Secret
        // that also held the next key): all of them stay.
        let last = self.keys.retired().first().and_then(|k| k.retired_at);
        let retention = self.retention;
        for key in self.keys.keys.iter_mut() {
            if last.is_some() && key.retired_at == last && last < Some(now) {
                key.retired_at = Some(now);
                key.remove_after = Some(
                    key.remove_after
                        .map_or(plus(now, retention), |at| at.max(plus(now, retention))),
                );
            }
        }
    }

    /// When a next key that every target holds was published everywhere, when no write of this
    /// reconcile added it: this process's record of an earlier reconcile, or the status (a
    /// process that restarted during P), never before the newest ConfigMap holding it was created
    /// (a namespace that started accepting, a recreated ConfigMap, which a crash may have kept out
    /// of both); otherwise now.
    fn next_published_since(&self, pending: &PendingKey, now: Timestamp) -> Timestamp {
        let remembered = self
            .memory
            .next_published
            .as_ref()
            .filter(|(kid, _)| *kid == pending.jwk.kid)
            .map(|(_, at)| *at);
        let recorded =
            remembered.or_else(|| published_next_since(&self.known_status, pending, now));
        match recorded {
            Some(at) => at
                .max(
                    self.publication
                        .created_holding(&pending.jwk.kid)
                        .unwrap_or(at),
                )
                .min(now),
            None => now,
        }
    }

    /// Events for what happened, a Warning when the Ready condition turns false for a new reason,
    /// the gauges and the status.
    fn report(
        &self,
        keys: &KeySet,
        transitions: &[Transition],
        ready: &Readiness,
        now: Timestamp,
    ) -> Report {
        let mut events = self.notes.clone();
        if self.unaccepted != self.old.unaccepted_namespaces && !self.unaccepted.is_empty() {
            events.push(note(
                EventType::Normal,
                EventReason::NamespaceNotAccepted,
                format!(
                    "Namespace(s) {} match publish.namespaceSelector but do not accept copies of this \
                     key (annotation {ACCEPT_FROM_ANNOTATION} naming {ns}/{} or {ns}/*); nothing is \
                     written there",
                    self.unaccepted.join(", "),
                    self.jsk.name_any(),
                    ns = self.namespace,
                ),
            ));
        }
        let mut rotations = 0;
        for transition in transitions {
            events.push(match transition {
                Transition::Activated(kid) => {
                    rotations += 1;
                    note(
                        EventType::Normal,
                        EventReason::KeyActivated,
                        format!("Key {kid} now signs"),
                    )
                }
                Transition::Retired(kid) => note(
                    EventType::Normal,
                    EventReason::KeyRetired,
                    format!("Key {kid} stopped signing; it stays published for verification"),
                ),
                Transition::Removed(kid) => note(
                    EventType::Normal,
                    EventReason::KeyRemoved,
                    format!("Key {kid} is no longer published"),
                ),
                Transition::Revoked(kid) => note(
                    EventType::Normal,
                    EventReason::KeyRevoked,
                    format!(
                        "Key {kid} was revoked and removed from the Secret and every ConfigMap"
                    ),
                ),
            });
        }
        events.extend(report::warning_if_new(ready, &self.old));
        let mut status = report::status(
            &self.jsk,
            &self.timing,
            keys,
            self.publication.published_namespaces(),
            ready,
            &self.old,
            now,
        );
        status.unaccepted_namespaces = self.unaccepted.clone();
        Report {
            events,
            rotations,
            gauges: Some((keys.clone(), schedule::next_rotation(&self.timing, keys))),
            status: report::changed(status, &self.baseline),
        }
    }

    /// The Ready condition turns false: a Warning when the reason is new, and the status.
    fn not_ready(&self, ready: Readiness, now: Timestamp) -> Report {
        let mut status = self.old.clone();
        status.observed_generation = self.jsk.metadata.generation;
        status.conditions = vec![report::ready_condition(&self.jsk, &ready, &self.old, now)];
        Report {
            events: report::warning_if_new(&ready, &self.old)
                .into_iter()
                .collect(),
            rotations: 0,
            gauges: None,
            status: report::changed(status, &self.baseline),
        }
    }
}

/// The Secret and the home ConfigMap, when this key owns those that exist; a Readiness saying
/// which one is in the way otherwise (it is left untouched).
fn owned(
    jsk: &JwtSigningKey,
    secret: Found<Secret>,
    home: Found<ConfigMap>,
) -> Result<(Option<Secret>, Option<ConfigMap>), Readiness> {
    let secret = mine(
        secret,
        ConditionReason::SecretConflict,
        "Secret",
        &jsk.secret_name(),
        "secretName",
    )?;
    let home = mine(
        home,
        ConditionReason::ConfigMapConflict,
        "ConfigMap",
        &jsk.config_map_name(),
        "configMapName",
    )?;
    Ok((secret, home))
}

/// The object if this key owns it, none if missing; a conflict naming it otherwise.
fn mine<T>(
    found: Found<T>,
    reason: ConditionReason,
    kind: &str,
    name: &str,
    field: &str,
) -> Result<Option<T>, Readiness> {
    match found {
        Found::Foreign => Err(Readiness {
            status: "False",
            reason,
            message: format!(
                "{kind} {name} exists and is not managed by this JwtSigningKey; it is left \
                 untouched. Delete or rename it, or set spec.{field}."
            ),
        }),
        Found::Owned(object) => Ok(Some(object)),
        Found::Missing => Ok(None),
    }
}

/// What the ConfigMaps name and the operator never recorded was put there by whoever may edit
/// them: the next write removes it, and it reaches no other ConfigMap. A Warning per namespace.
fn foreign_keys(jsk: &JwtSigningKey, publication: &Publication, keys: &KeySet) -> Vec<Note> {
    publication
        .foreign_kids(|kid| keys.records(kid))
        .into_iter()
        .map(|(ns, kids)| {
            note(
                EventType::Warning,
                EventReason::ForeignKeyRemoved,
                format!(
                    "ConfigMap {} in namespace {ns} held key(s) {} that this JwtSigningKey never \
                     published; they are removed and published nowhere else",
                    jsk.config_map_name(),
                    kids.join(", ")
                ),
            )
        })
        .collect()
}

/// The next key and when it was published everywhere, for this process's memory.
fn remembered(keys: &KeySet) -> Option<(String, Timestamp)> {
    keys.next()
        .map(|next| (next.kid().to_string(), next.published_at))
}

/// Public keys in `jwks.json` order: signing keys (newest first), next keys, the pending key,
/// retired keys newest first. Revoked keys are left out (the publication adds the key the Secret
/// still signs with until it switches, a revoked one only where it is held,
/// [`Publication::set_signing`]).
fn publication_order(keys: &KeySet) -> Vec<Jwk> {
    let mut signing: Vec<_> = keys
        .keys
        .iter()
        .filter(|k| k.activated_at.is_some() && k.retired_at.is_none())
        .collect();
    signing.sort_by_key(|k| std::cmp::Reverse(k.activated_at));
    let mut next: Vec<_> = keys
        .keys
        .iter()
        .filter(|k| k.activated_at.is_none())
        .collect();
    next.sort_by_key(|k| std::cmp::Reverse(k.published_at));
    let mut order: Vec<Jwk> = signing
        .into_iter()
        .chain(next)
        .map(|k| k.jwk.clone())
        .chain(keys.pending.iter().map(|p| p.jwk.clone()))
        .chain(keys.retired().into_iter().map(|k| k.jwk.clone()))
        .filter(|jwk| !keys.revoked.contains(&jwk.kid))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    order.retain(|jwk| seen.insert(jwk.kid.clone()));
    order
}

/// When the Secret write that made a new key sign returned (`returned`, `switched`), the key that
/// signed until then stops signing: its retention counts from that moment, whenever its retirement
/// was stamped (at `planned` by this plan, or earlier, when a deleted Secret lost it and a pending
/// key was saved before its successor could sign). It moves when `returned` is more than
/// [`STAMP_TOLERANCE`] later; an activation at `planned` moves with it. An activation alone keeps
/// its planned instant, which only shifts the next rotation by the write's latency, and costs no
/// second Secret write. Returns whether anything moved.
fn restamp(
    keys: &mut KeySet,
    switched: bool,
    planned: Timestamp,
    returned: Timestamp,
    retention: SignedDuration,
) -> bool {
    let last = keys
        .retired()
        .into_iter()
        .filter(|k| !keys.revoked.contains(k.kid()))
        .max_by_key(|k| k.retired_at)
        .map(|k| k.kid().to_string());
    let Some(last) = last.filter(|_| switched) else {
        return false;
    };
    let late =
        |at: Option<Timestamp>| at.is_some_and(|at| returned.duration_since(at) > STAMP_TOLERANCE);
    let Some(key) = keys
        .keys
        .iter_mut()
        .find(|k| k.kid() == last && late(k.retired_at))
    else {
        return false;
    };
    key.retired_at = Some(returned);
    key.remove_after = Some(key.remove_after.map_or(plus(returned, retention), |at| {
        at.max(plus(returned, retention))
    }));
    for key in keys.keys.iter_mut() {
        if key.activated_at == Some(planned) {
            key.activated_at = Some(returned);
        }
    }
    true
}

fn signing_kid(secret: Option<&Secret>) -> Option<&str> {
    text(secret, resources::KID)
}

/// The Secret for `keys`. A next key that the Secret holds as the pending key it was saved as
/// (`saved`) stays written that way until it signs: publishing it costs no Secret write. The
/// instant it was published everywhere is kept in memory ([`Memory::next_published`]) and in
/// the status, which a process that restarts during P reads it from
/// ([`published_next_since`]); a process that finds it in neither counts from its own
/// first look, so an activation can come later, never earlier.
pub(super) fn desired_secret(
    jsk: &JwtSigningKey,
    keys: &KeySet,
    private: &BTreeMap<String, KeyPair>,
    saved: Option<&PendingKey>,
) -> Secret {
    let held_as_pending = saved.filter(|saved| {
        keys.pending.is_none() && keys.next().is_some_and(|next| next.kid() == saved.jwk.kid)
    });
    let keys = match held_as_pending {
        Some(saved) => {
            let mut held = keys.clone();
            held.keys.retain(|k| k.kid() != saved.jwk.kid);
            held.pending = Some(saved.clone());
            Cow::Owned(held)
        }
        None => Cow::Borrowed(keys),
    };
    // Each private key is written with the JWK it was published as: its algorithm is the one it
    // was made for, even when the spec names another by now (that one applies to the next key).
    let pair = |jwk: &Jwk| {
        private.get(&jwk.kid).cloned().map(|mut pair| {
            pair.jwk = jwk.clone();
            pair
        })
    };
    let private_keys = PrivateKeys {
        active: keys.active().and_then(|k| pair(&k.jwk)),
        next: keys.next().and_then(|k| pair(&k.jwk)),
        pending: keys.pending.as_ref().and_then(|p| pair(&p.jwk)),
    };
    resources::secret(jsk, &keys, &private_keys)
}

/// A next key that some target does not hold yet has not been published for any time at all: it
/// counts from now, and from the write that finally adds it.
fn hold_next_until_everywhere(keys: &mut KeySet, publication: &Publication, now: Timestamp) {
    let Some(kid) = keys.next().map(|k| k.kid().to_string()) else {
        return;
    };
    let since = if publication.everywhere(&kid) {
        publication.added_at(&kid)
    } else {
        Some(now)
    };
    if let Some(since) = since
        && let Some(next) = keys.keys.iter_mut().find(|k| k.kid() == kid)
    {
        next.published_at = next.published_at.max(since);
    }
}

fn readiness(
    jsk: &JwtSigningKey,
    keys: &KeySet,
    failures: &BTreeMap<String, String>,
    conflicts: &[String],
) -> Readiness {
    let name = jsk.config_map_name();
    if !failures.is_empty() {
        let namespaces: Vec<&str> = failures.keys().map(String::as_str).collect();
        let first = failures.values().next().cloned().unwrap_or_default();
        return Readiness {
            status: "False",
            reason: ConditionReason::PublishFailed,
            message: format!(
                "Publishing ConfigMap {name} failed in namespace(s) {}; retrying with backoff. A next \
                 key signs only once every namespace holds it. First error: {first}",
                namespaces.join(", ")
            ),
        };
    }
    if !conflicts.is_empty() {
        return Readiness {
            status: "False",
            reason: ConditionReason::ConfigMapConflict,
            message: format!(
                "ConfigMap {name} exists and is not managed by this JwtSigningKey in namespace(s) {}; \
                 those are left untouched and get no copy",
                conflicts.join(", ")
            ),
        };
    }
    Readiness {
        status: "True",
        reason: ConditionReason::KeysReady,
        message: format!(
            "{} key(s) published; key {} signs",
            keys.keys.len(),
            keys.active().map(|k| k.kid()).unwrap_or("-")
        ),
    }
}

/// Acts on new values of the rotate and revoke annotations (each value once). A value counts as
/// handled when the state or the status says so.
fn take_annotations(
    jsk: &JwtSigningKey,
    keys: &mut KeySet,
    status: &JwtSigningKeyStatus,
    now: Timestamp,
    notes: &mut Vec<Note>,
) {
    let annotations = jsk.annotations();
    if let Some(value) = annotations.get(ROTATE_ANNOTATION)
        && keys.handled_rotate.as_ref() != Some(value)
        && status.last_rotate_annotation.as_ref() != Some(value)
    {
        keys.handled_rotate = Some(value.clone());
        keys.rotation_requested_at = Some(now);
        notes.push(note(
            EventType::Normal,
            EventReason::RotationRequested,
            format!("Rotation requested ({ROTATE_ANNOTATION}={value})"),
        ));
    }
    if let Some(value) = annotations.get(REVOKE_ANNOTATION)
        && keys.handled_revoke.as_ref() != Some(value)
        && status.last_revoke_annotation.as_ref() != Some(value)
    {
        keys.handled_revoke = Some(value.clone());
        for kid in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let known = keys.keys.iter().any(|k| k.kid() == kid)
                || keys.pending.as_ref().is_some_and(|p| p.jwk.kid == kid);
            if !known {
                notes.push(note(
                    EventType::Warning,
                    EventReason::RevokeUnknownKey,
                    format!("Key {kid} is not published by this JwtSigningKey; nothing to revoke"),
                ));
                continue;
            }
            keys.revoked.insert(kid.to_string());
            keys.revoked_at.insert(kid.to_string(), now);
            if keys.pending.as_ref().is_some_and(|p| p.jwk.kid == kid) {
                keys.pending = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::KeyRecord;

    #[test]
    fn a_next_key_saved_as_pending_is_written_as_it_was_saved_until_it_signs() {
        let mut jsk = JwtSigningKey::new(
            "auth",
            serde_json::from_value(serde_json::json!({})).unwrap(),
        );
        jsk.metadata.namespace = Some("auth".into());
        jsk.metadata.uid = Some("uid-1".into());
        let t = |s| Timestamp::from_second(s).unwrap();
        let (signing, next) = (
            KeyPair::generate(2048, crate::crd::Algorithm::RS256).unwrap(),
            KeyPair::generate(2048, crate::crd::Algorithm::RS256).unwrap(),
        );
        let private: BTreeMap<String, KeyPair> = [&signing, &next]
            .map(|p| (p.kid().to_string(), p.clone()))
            .into_iter()
            .collect();
        let saved = PendingKey {
            jwk: next.jwk.clone(),
            generated_at: t(100),
        };
        // As saved before publication: the signing key and the pending key.
        let mut keys = KeySet {
            keys: vec![KeyRecord::published(signing.jwk.clone(), t(0), true)],
            pending: Some(saved.clone()),
            ..KeySet::default()
        };
        let stored = desired_secret(&jsk, &keys, &private, None);
        // Published everywhere: the next key of the schedule.
        keys.pending = None;
        keys.keys
            .push(KeyRecord::published(next.jwk.clone(), t(110), false));
        assert_eq!(
            desired_secret(&jsk, &keys, &private, Some(&saved)).data,
            stored.data,
            "publishing the saved key changes nothing in the Secret"
        );
        let legacy = desired_secret(&jsk, &keys, &private, None);
        assert!(
            legacy
                .data
                .as_ref()
                .unwrap()
                .contains_key(resources::NEXT_PRIVATE_PEM),
            "a next key the Secret does not hold as pending is written as the next key"
        );
        // Once it signs, the Secret holds it as the signing key and no pending key.
        let plan = schedule::plan(
            &serde_json::from_value::<crate::crd::JwtSigningKeySpec>(serde_json::json!({
                "rotationInterval": "100s", "propagationDelay": "10s", "maxTokenLifetime": "10s"
            }))
            .unwrap()
            .timing()
            .unwrap(),
            &keys,
            t(1000),
        );
        assert_eq!(plan.keys.active().map(|k| k.kid()), Some(next.kid()));
        let switched = desired_secret(&jsk, &plan.keys, &private, Some(&saved));
        let data = switched.data.unwrap();
        assert_eq!(data[resources::KID].0, next.kid().as_bytes());
        assert!(!data.contains_key(resources::PENDING_PRIVATE_PEM));
    }

    #[test]
    fn the_secret_names_the_algorithm_its_signing_key_was_published_with() {
        let mut jsk = JwtSigningKey::new(
            "auth",
            serde_json::from_value(serde_json::json!({"algorithm": "PS256"})).unwrap(),
        );
        jsk.metadata.namespace = Some("auth".into());
        // Generated for RS256 and published so; the spec says PS256 by now, and the private key
        // as read back from the Secret carries the spec's algorithm.
        let generated = KeyPair::generate(2048, crate::crd::Algorithm::RS256).unwrap();
        let read_back =
            KeyPair::from_private_pem(generated.private_pem(), crate::crd::Algorithm::PS256)
                .unwrap();
        assert_eq!(read_back.jwk.alg, "PS256");
        let keys = KeySet {
            keys: vec![KeyRecord::published(
                generated.jwk.clone(),
                Timestamp::UNIX_EPOCH,
                true,
            )],
            ..KeySet::default()
        };
        let private = [(generated.kid().to_string(), read_back)].into();
        let secret = desired_secret(&jsk, &keys, &private, None);
        assert_eq!(
            secret.data.unwrap()[resources::ALGORITHM].0,
            b"RS256",
            "the algorithm of the key that signs, not the spec's"
        );
    }
}
