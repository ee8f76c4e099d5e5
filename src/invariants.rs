//! The key invariants I1-I3 of the contract (`SPEC.md`), checked on a history of writes: every
//! version of one JwtSigningKey's Secret and ConfigMaps, in the order they were written, each with
//! the instant it was written or seen. Pure and I/O-free, so that the end-to-end tests (versions
//! from watches, ordered by etcd revision) and an in-memory fake cluster (its own write counter and
//! clock) check the same rules with the same code.
//!
//! Feed a [`Checker`] every [`Version`] in write order ([`Checker::observe`]), or hand a whole
//! history to [`check`]. The first broken rule comes back as a [`Violation`] whose text names the
//! invariant, the kid, the namespace and the instants.
//!
//! # What is checked
//! Let `P` be [`Rules::propagation_delay`], `retention` [`Rules::retention`] (L + P) and `slack`
//! [`Rules::slack`], which absorbs the jitter between a write and the instant it was seen. The
//! *signing key* is the kid of the last Secret version that the operator wrote with one; it keeps
//! signing through a Secret deleted or written without a kid (the auth service keeps the files it
//! mounted), until a Secret version names another kid.
//! - **I3, every ConfigMap version**: each version of a ConfigMap that the operator writes holds
//!   the signing key (the first version of a ConfigMap it creates or recreates included) and is
//!   never an empty key set. Exception (SPEC, revocation): a revoked signing key stays only where it
//!   is held until the Secret switches, so a version need not hold it when the ConfigMap's previous
//!   version did not (or the ConfigMap did not exist).
//! - **I3, every switch**: when the Secret switches to a key, every ConfigMap that exists at that
//!   moment holds it (reported as I3), except for [`Rules::signs_at_once`] keys (below).
//! - **I1**: when the Secret switches to a key that is not in [`Rules::signs_at_once`], every
//!   ConfigMap that exists at that moment has held it for at least `P - slack`, *continuously*:
//!   counted from the version that last added it to that ConfigMap. A ConfigMap created, recreated,
//!   or whose key was removed by a hand edit and put back, counts from that version, not from an
//!   earlier publication of the same key in the same namespace.
//! - **I2**: a key that stopped signing (the Secret switched away from it) is in every version of
//!   every ConfigMap that the operator writes until `retention - slack` has passed since, unless it
//!   is in [`Rules::revoked`]. That covers a ConfigMap created or recreated meanwhile: the operator
//!   publishes the same key set everywhere.
//! - **One signing term per key**: a key never signs again once another key has signed after it.
//!
//! # Choices, where the contract leaves room or the earlier end-to-end check differed
//! - I1 is stricter than the end-to-end check it replaces, which counted P from the first time each
//!   namespace ever showed the key: the contract asks that every ConfigMap that should hold the
//!   next key *has held it* for P (the operator counts from the write that last added it, and from
//!   the creation of a recreated ConfigMap). In return, only ConfigMaps that exist at the switch
//!   are asked; one deleted before it (a namespace that stopped accepting) is no target any more,
//!   and one created after it is held to I3 and I2 instead.
//! - A deleted ConfigMap breaks no invariant: the contract makes the operator remove copies from
//!   namespaces that stop matching or accepting, whatever their keys, and a deletion by someone
//!   else is not the operator's write. What it asks of the next version is I3 and I2 as above.
//! - The signing key keeps signing while the Secret is deleted or names no kid (see above): the
//!   contract keeps every published key published through a deleted Secret, and its key stops only
//!   when a new key signs. The earlier I3 check stopped asking for it meanwhile.
//! - [`Rules::signs_at_once`] keys (the first key, a fresh key after an emergency revocation) are
//!   not asked to be in every ConfigMap when they start signing: an emergency revocation switches
//!   the Secret once every ConfigMap that *can* be written holds the fresh key, and reports the
//!   rest (SPEC, Failures). Every version written after the switch must hold them (I3). A caller
//!   that wants them in every ConfigMap too runs a second pass with `Rules::default()`.
//! - Versions by someone other than the operator ([`Writer::Other`]: hand edits, a restored backup)
//!   are not checked, since the contract binds only what the operator writes; a ConfigMap version
//!   changes what that ConfigMap holds (a hand edit that removes the next key breaks its continuity
//!   for I1), and a Secret version by someone else changes nothing the checker follows: the
//!   operator's own writes say which key it makes sign.
//! - The write order says what came first; the instants only measure how long. A later write
//!   seen a little before an earlier one (two watches deliver independently) counts as no time
//!   after it, never as negative time.
//! - A copy that stopped being a target but could not be deleted (a namespace that stopped
//!   accepting and refuses deletes) still exists for the checker, so a switch it does not hold is
//!   reported. The checker cannot tell such a copy from a target.
//! - A checker follows one JwtSigningKey: one Secret and its ConfigMaps, one per namespace. I4
//!   (no private key material outside the Secret) is about content, not kids, and is not here.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use jiff::{SignedDuration, Timestamp};

/// The kind of a written object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// The Secret the auth service signs with.
    Secret,
    /// A ConfigMap that verifiers read (the home one or a copy).
    ConfigMap,
}

/// Who wrote a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Writer {
    /// The operator: its versions are held to the invariants.
    #[default]
    Operator,
    /// Someone else (a hand edit, a restored backup, a deletion by a user): its versions change
    /// what a ConfigMap holds, and are not checked.
    Other,
}

/// One version of the Secret or of a ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Secret or ConfigMap.
    pub kind: Kind,
    /// The object's namespace (one ConfigMap per namespace).
    pub namespace: String,
    /// `None`: deleted. A Secret's signing kid comes first (`Some(vec![])`: a Secret that names no
    /// signing key, such as one holding only a pending key); a ConfigMap's published kids.
    pub kids: Option<Vec<String>>,
    /// The write order: the etcd revision on a real API server, a counter in a fake one.
    pub order: u64,
    /// When it was written or seen.
    pub at: Timestamp,
    /// Who wrote it.
    pub writer: Writer,
}

impl Version {
    /// A Secret version by the operator whose signing kid is `signing`.
    pub fn secret(namespace: &str, signing: Option<&str>, order: u64, at: Timestamp) -> Version {
        Version {
            kind: Kind::Secret,
            namespace: namespace.to_string(),
            kids: Some(signing.into_iter().map(str::to_string).collect()),
            order,
            at,
            writer: Writer::Operator,
        }
    }

    /// A ConfigMap version by the operator that publishes `kids`.
    pub fn config_map(namespace: &str, kids: &[&str], order: u64, at: Timestamp) -> Version {
        Version {
            kind: Kind::ConfigMap,
            namespace: namespace.to_string(),
            kids: Some(kids.iter().map(|k| k.to_string()).collect()),
            order,
            at,
            writer: Writer::Operator,
        }
    }

    /// The deletion of an object, by the operator.
    pub fn deleted(kind: Kind, namespace: &str, order: u64, at: Timestamp) -> Version {
        Version {
            kind,
            namespace: namespace.to_string(),
            kids: None,
            order,
            at,
            writer: Writer::Operator,
        }
    }

    /// The same version, written by `writer`.
    pub fn by(self, writer: Writer) -> Version {
        Version { writer, ..self }
    }

    /// The signing kid a Secret version names.
    fn signing(&self) -> Option<&str> {
        self.kids.as_ref()?.first().map(String::as_str)
    }
}

/// The timing and the exceptions a history is checked against. `Rules::default()` checks I3 and
/// one signing term per key only (P and the retention are zero).
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// P: how long every ConfigMap holds a key before it signs (I1).
    pub propagation_delay: SignedDuration,
    /// How long a key that stopped signing stays in every ConfigMap (I2): L + P.
    pub retention: SignedDuration,
    /// Allowance for the jitter between a write and the instant it was seen, on both sides of I1
    /// and I2.
    pub slack: SignedDuration,
    /// Keys that may sign without having been published for P: the first key, and the fresh key
    /// after an emergency revocation.
    pub signs_at_once: BTreeSet<String>,
    /// Keys that may leave the ConfigMaps at once (emergency revocation).
    pub revoked: BTreeSet<String>,
}

/// A broken invariant, at the version that broke it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// I3: the operator wrote a ConfigMap version with no key at all.
    EmptyKeySet {
        namespace: String,
        order: u64,
        at: Timestamp,
    },
    /// I3: the operator wrote a ConfigMap version without the key the Secret signs with.
    ConfigMapLacksSigningKey {
        kid: String,
        namespace: String,
        kids: Vec<String>,
        order: u64,
        at: Timestamp,
    },
    /// I3: the Secret switched to a key that a ConfigMap existing then does not hold.
    SignsUnpublished {
        kid: String,
        namespace: String,
        kids: Vec<String>,
        order: u64,
        at: Timestamp,
    },
    /// I1: the Secret switched to a key that a ConfigMap had held for less than P.
    SignsTooEarly {
        kid: String,
        namespace: String,
        held_since: Timestamp,
        order: u64,
        at: Timestamp,
        propagation_delay: SignedDuration,
    },
    /// I2: the operator wrote a ConfigMap version without a key that stopped signing less than the
    /// retention ago.
    RemovedTooEarly {
        kid: String,
        namespace: String,
        stopped_at: Timestamp,
        order: u64,
        at: Timestamp,
        retention: SignedDuration,
    },
    /// A key signs again after another key signed.
    SignsAgain {
        kid: String,
        first_signed_at: Timestamp,
        order: u64,
        at: Timestamp,
    },
    /// The versions were not fed in write order.
    OutOfOrder { order: u64, after: u64 },
}

impl Violation {
    /// The invariant it breaks: `I1`, `I2`, `I3`, `one signing term` or `write order`.
    pub fn invariant(&self) -> &'static str {
        match self {
            Violation::EmptyKeySet { .. }
            | Violation::ConfigMapLacksSigningKey { .. }
            | Violation::SignsUnpublished { .. } => "I3",
            Violation::SignsTooEarly { .. } => "I1",
            Violation::RemovedTooEarly { .. } => "I2",
            Violation::SignsAgain { .. } => "one signing term",
            Violation::OutOfOrder { .. } => "write order",
        }
    }

    /// The write order of the version that broke it.
    pub fn order(&self) -> u64 {
        match self {
            Violation::EmptyKeySet { order, .. }
            | Violation::ConfigMapLacksSigningKey { order, .. }
            | Violation::SignsUnpublished { order, .. }
            | Violation::SignsTooEarly { order, .. }
            | Violation::RemovedTooEarly { order, .. }
            | Violation::SignsAgain { order, .. }
            | Violation::OutOfOrder { order, .. } => *order,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let invariant = self.invariant();
        match self {
            Violation::EmptyKeySet {
                namespace,
                order,
                at,
            } => write!(
                f,
                "{invariant}: the ConfigMap in {namespace} was written as an empty key set \
                 (write {order} at {at})"
            ),
            Violation::ConfigMapLacksSigningKey {
                kid,
                namespace,
                kids,
                order,
                at,
            } => write!(
                f,
                "{invariant}: a version of the ConfigMap in {namespace} lacks the signing key {kid}: \
                 it holds {kids:?} (write {order} at {at})"
            ),
            Violation::SignsUnpublished {
                kid,
                namespace,
                kids,
                order,
                at,
            } => write!(
                f,
                "{invariant}: the Secret signs with {kid} (write {order} at {at}) while the \
                 ConfigMap in {namespace} holds {kids:?}"
            ),
            Violation::SignsTooEarly {
                kid,
                namespace,
                held_since,
                order,
                at,
                propagation_delay,
            } => write!(
                f,
                "{invariant}: key {kid} signs at {at} (write {order}), {:#} after the ConfigMap in \
                 {namespace} started holding it at {held_since} (< P = {propagation_delay:#})",
                to_millis(elapsed(*held_since, *at))
            ),
            Violation::RemovedTooEarly {
                kid,
                namespace,
                stopped_at,
                order,
                at,
                retention,
            } => write!(
                f,
                "{invariant}: key {kid} is missing from the ConfigMap in {namespace} at {at} \
                 (write {order}), {:#} after it stopped signing at {stopped_at} \
                 (< retention {retention:#})",
                to_millis(elapsed(*stopped_at, *at))
            ),
            Violation::SignsAgain {
                kid,
                first_signed_at,
                order,
                at,
            } => write!(
                f,
                "{invariant}: key {kid} signs again at {at} (write {order}) after another key; it \
                 first signed at {first_signed_at}"
            ),
            Violation::OutOfOrder { order, after } => write!(
                f,
                "{invariant}: version {order} was fed after version {after}"
            ),
        }
    }
}

impl std::error::Error for Violation {}

/// What one ConfigMap holds now, and since when it has held each key without a break.
#[derive(Debug)]
struct Held {
    kids: Vec<String>,
    since: BTreeMap<String, Timestamp>,
}

/// Checks the invariants version by version: feed it every version of one JwtSigningKey's Secret
/// and ConfigMaps in write order.
#[derive(Debug)]
pub struct Checker {
    rules: Rules,
    last_order: Option<u64>,
    /// Existing ConfigMaps by namespace.
    config_maps: BTreeMap<String, Held>,
    /// The key the Secret signs with, by the operator's last Secret version that named one.
    signing: Option<String>,
    /// When each key first signed.
    signed: BTreeMap<String, Timestamp>,
    /// When each key that signed stopped.
    stopped: BTreeMap<String, Timestamp>,
}

impl Checker {
    /// A checker of `rules` that has seen nothing yet.
    pub fn new(rules: Rules) -> Checker {
        Checker {
            rules,
            last_order: None,
            config_maps: BTreeMap::new(),
            signing: None,
            signed: BTreeMap::new(),
            stopped: BTreeMap::new(),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The rules, for a caller that learns exceptions as the history goes (a revocation it
    /// requested, the fresh key that follows it).
    pub fn rules_mut(&mut self) -> &mut Rules {
        &mut self.rules
    }

    /// The key the Secret signs with, as far as the versions seen say.
    pub fn signing(&self) -> Option<&str> {
        self.signing.as_deref()
    }

    /// The kids the ConfigMap in `namespace` holds now; `None` when it does not exist.
    pub fn held(&self, namespace: &str) -> Option<&[String]> {
        self.config_maps.get(namespace).map(|h| h.kids.as_slice())
    }

    /// Takes the next version in write order, and answers the first invariant it breaks. A version
    /// in order counts either way, so the checker can go on after a violation; one out of order
    /// (an older write than the last one seen) is refused and changes nothing.
    pub fn observe(&mut self, version: &Version) -> Result<(), Violation> {
        if let Some(after) = self.last_order
            && version.order < after
        {
            return Err(Violation::OutOfOrder {
                order: version.order,
                after,
            });
        }
        self.last_order = Some(version.order);
        match version.kind {
            Kind::ConfigMap => self.observe_config_map(version),
            Kind::Secret => self.observe_secret(version),
        }
    }

    fn observe_config_map(&mut self, version: &Version) -> Result<(), Violation> {
        let Some(kids) = &version.kids else {
            self.config_maps.remove(&version.namespace);
            return Ok(());
        };
        let previous = self.config_maps.get(&version.namespace);
        // A key held by the previous version is held since then; any other since this one.
        let since = kids
            .iter()
            .map(|kid| {
                let before = previous.and_then(|p| p.since.get(kid)).copied();
                (kid.clone(), before.unwrap_or(version.at))
            })
            .collect();
        let result = match version.writer {
            Writer::Operator => self.check_config_map(version, kids, previous),
            Writer::Other => Ok(()),
        };
        self.config_maps.insert(
            version.namespace.clone(),
            Held {
                kids: kids.clone(),
                since,
            },
        );
        result
    }

    /// I3 and I2 on a ConfigMap version the operator wrote.
    fn check_config_map(
        &self,
        version: &Version,
        kids: &[String],
        previous: Option<&Held>,
    ) -> Result<(), Violation> {
        let namespace = &version.namespace;
        if kids.is_empty() {
            return Err(Violation::EmptyKeySet {
                namespace: namespace.clone(),
                order: version.order,
                at: version.at,
            });
        }
        if let Some(signing) = &self.signing
            && !kids.contains(signing)
        {
            // A revoked signing key stays only where it was held, until the Secret switches.
            let held_before = previous.is_some_and(|p| p.kids.contains(signing));
            if !self.rules.revoked.contains(signing) || held_before {
                return Err(Violation::ConfigMapLacksSigningKey {
                    kid: signing.clone(),
                    namespace: namespace.clone(),
                    kids: kids.to_vec(),
                    order: version.order,
                    at: version.at,
                });
            }
        }
        for (kid, stopped_at) in &self.stopped {
            if kids.contains(kid) || self.rules.revoked.contains(kid) {
                continue;
            }
            if elapsed(*stopped_at, version.at) + self.rules.slack < self.rules.retention {
                return Err(Violation::RemovedTooEarly {
                    kid: kid.clone(),
                    namespace: namespace.clone(),
                    stopped_at: *stopped_at,
                    order: version.order,
                    at: version.at,
                    retention: self.rules.retention,
                });
            }
        }
        Ok(())
    }

    fn observe_secret(&mut self, version: &Version) -> Result<(), Violation> {
        if version.writer == Writer::Other {
            return Ok(());
        }
        let Some(kid) = version.signing() else {
            return Ok(());
        };
        if self.signing.as_deref() == Some(kid) {
            return Ok(());
        }
        let result = self.check_switch(version, kid);
        if let Some(old) = self.signing.replace(kid.to_string()) {
            self.stopped.insert(old, version.at);
        }
        self.signed.entry(kid.to_string()).or_insert(version.at);
        result
    }

    /// One signing term, I3 and I1 on a Secret version that switches to `kid`.
    fn check_switch(&self, version: &Version, kid: &str) -> Result<(), Violation> {
        if let Some(first) = self.signed.get(kid) {
            return Err(Violation::SignsAgain {
                kid: kid.to_string(),
                first_signed_at: *first,
                order: version.order,
                at: version.at,
            });
        }
        if self.rules.signs_at_once.contains(kid) {
            return Ok(());
        }
        for (namespace, held) in &self.config_maps {
            let Some(since) = held.since.get(kid) else {
                return Err(Violation::SignsUnpublished {
                    kid: kid.to_string(),
                    namespace: namespace.clone(),
                    kids: held.kids.clone(),
                    order: version.order,
                    at: version.at,
                });
            };
            if elapsed(*since, version.at) + self.rules.slack < self.rules.propagation_delay {
                return Err(Violation::SignsTooEarly {
                    kid: kid.to_string(),
                    namespace: namespace.clone(),
                    held_since: *since,
                    order: version.order,
                    at: version.at,
                    propagation_delay: self.rules.propagation_delay,
                });
            }
        }
        Ok(())
    }
}

/// The time from `from` to `to`, an earlier write to a later one: never negative, since the write
/// order already says which came first (two watches can deliver a later write a little sooner).
fn elapsed(from: Timestamp, to: Timestamp) -> SignedDuration {
    to.duration_since(from).max(SignedDuration::ZERO)
}

/// `d` cut to whole milliseconds, for messages.
fn to_millis(d: SignedDuration) -> SignedDuration {
    SignedDuration::from_millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Checks a whole history, in any order: the versions are put in write order, and a version
/// seen twice (the same order, kind and namespace, as a watch that lists again delivers it) counts
/// once, at the first instant it was seen. Answers the first violation.
pub fn check<'a>(
    rules: Rules,
    versions: impl IntoIterator<Item = &'a Version>,
) -> Result<(), Violation> {
    let mut versions: Vec<&Version> = versions.into_iter().collect();
    versions.sort_by_key(|v| (v.order, v.at));
    versions.dedup_by_key(|v| (v.order, v.kind, v.namespace.clone()));
    let mut checker = Checker::new(rules);
    versions.into_iter().try_for_each(|v| checker.observe(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "home";
    const COPY: &str = "copy";

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    /// P = 10 s, retention = 20 s, slack = 300 ms; the first key `a` signs at once.
    fn rules() -> Rules {
        Rules {
            propagation_delay: SignedDuration::from_secs(10),
            retention: SignedDuration::from_secs(20),
            slack: SignedDuration::from_millis(300),
            signs_at_once: ["a".to_string()].into(),
            revoked: BTreeSet::new(),
        }
    }

    /// A history written at the given seconds, in this order.
    struct History(Vec<Version>);

    impl History {
        fn new() -> History {
            History(Vec::new())
        }
        fn secret(mut self, secs: i64, signing: Option<&str>) -> History {
            let order = self.0.len() as u64 + 1;
            self.0.push(Version::secret(HOME, signing, order, at(secs)));
            self
        }
        fn config_map(mut self, secs: i64, namespace: &str, kids: &[&str]) -> History {
            let order = self.0.len() as u64 + 1;
            self.0
                .push(Version::config_map(namespace, kids, order, at(secs)));
            self
        }
        fn deleted(mut self, secs: i64, kind: Kind, namespace: &str) -> History {
            let order = self.0.len() as u64 + 1;
            self.0
                .push(Version::deleted(kind, namespace, order, at(secs)));
            self
        }
        /// The last version, written by someone else.
        fn by_other(mut self) -> History {
            let last = self.0.pop().unwrap();
            self.0.push(last.by(Writer::Other));
            self
        }
        fn check(&self, rules: Rules) -> Result<(), Violation> {
            check(rules, &self.0)
        }
    }

    /// `a` signs at once, `b` is published at 10 in both namespaces and signs at 20, `a` leaves at
    /// 40 (20 s after it stopped).
    fn rotation() -> History {
        History::new()
            .secret(0, None)
            .config_map(1, HOME, &["a"])
            .config_map(1, COPY, &["a"])
            .secret(2, Some("a"))
            .config_map(10, HOME, &["a", "b"])
            .config_map(10, COPY, &["a", "b"])
            .secret(20, Some("b"))
            .config_map(21, HOME, &["b", "a"])
            .config_map(21, COPY, &["b", "a"])
            .config_map(40, HOME, &["b"])
            .config_map(40, COPY, &["b"])
    }

    #[test]
    fn a_rotation_by_the_contract_breaks_nothing() {
        assert_eq!(rotation().check(rules()), Ok(()));
    }

    #[test]
    fn i3_an_empty_key_set_is_a_violation() {
        let history = History::new().secret(0, None).config_map(1, HOME, &[]);
        let violation = history.check(rules()).unwrap_err();
        assert!(
            matches!(violation, Violation::EmptyKeySet { .. }),
            "{violation}"
        );
        assert_eq!(violation.invariant(), "I3");
        assert!(
            violation.to_string().contains("empty key set"),
            "{violation}"
        );
    }

    #[test]
    fn i3_a_config_map_version_without_the_signing_key_is_a_violation() {
        let history = rotation().config_map(41, COPY, &["c"]);
        let violation = history.check(rules()).unwrap_err();
        assert_eq!(
            violation,
            Violation::ConfigMapLacksSigningKey {
                kid: "b".into(),
                namespace: COPY.into(),
                kids: vec!["c".into()],
                order: 12,
                at: at(41),
            }
        );
        let text = violation.to_string();
        assert!(
            text.starts_with("I3:") && text.contains(" b") && text.contains(COPY),
            "{text}"
        );
    }

    #[test]
    fn i3_a_recreated_config_map_is_born_holding_the_signing_key() {
        let recreated = rotation()
            .deleted(41, Kind::ConfigMap, HOME)
            .config_map(42, HOME, &["b"]);
        assert_eq!(recreated.check(rules()), Ok(()));
        let without = rotation()
            .deleted(41, Kind::ConfigMap, HOME)
            .config_map(42, HOME, &["c"]);
        assert!(matches!(
            without.check(rules()),
            Err(Violation::ConfigMapLacksSigningKey { order: 13, .. })
        ));
    }

    #[test]
    fn i3_the_secret_switches_only_to_a_key_every_existing_config_map_holds() {
        // `b` reaches the home ConfigMap only; the copy exists and lacks it.
        let history = History::new()
            .config_map(1, HOME, &["a"])
            .config_map(1, COPY, &["a"])
            .secret(2, Some("a"))
            .config_map(10, HOME, &["a", "b"])
            .secret(20, Some("b"));
        let violation = history.check(rules()).unwrap_err();
        assert_eq!(
            violation,
            Violation::SignsUnpublished {
                kid: "b".into(),
                namespace: COPY.into(),
                kids: vec!["a".into()],
                order: 5,
                at: at(20),
            }
        );
        // With no rules but I3, the first key too.
        let first = History::new()
            .config_map(1, HOME, &["x"])
            .secret(2, Some("a"));
        assert!(matches!(
            first.check(Rules::default()),
            Err(Violation::SignsUnpublished { .. })
        ));
    }

    #[test]
    fn i1_a_key_that_signs_before_p_is_a_violation() {
        let history = History::new()
            .config_map(1, HOME, &["a"])
            .secret(2, Some("a"))
            .config_map(10, HOME, &["a", "b"])
            .secret(19, Some("b"));
        let violation = history.check(rules()).unwrap_err();
        assert_eq!(
            violation,
            Violation::SignsTooEarly {
                kid: "b".into(),
                namespace: HOME.into(),
                held_since: at(10),
                order: 4,
                at: at(19),
                propagation_delay: SignedDuration::from_secs(10),
            }
        );
        let text = violation.to_string();
        assert!(
            text.starts_with("I1:") && text.contains("9s after") && text.contains("P = 10s"),
            "{text}"
        );
    }

    #[test]
    fn i1_the_slack_absorbs_jitter_and_nothing_more() {
        let signs_at = |at: Timestamp| {
            let mut history = History::new()
                .config_map(1, HOME, &["a"])
                .secret(2, Some("a"))
                .config_map(10, HOME, &["a", "b"]);
            history.0.push(Version::secret(HOME, Some("b"), 4, at));
            history.check(rules())
        };
        assert_eq!(signs_at(at(20) - SignedDuration::from_millis(300)), Ok(()));
        assert!(signs_at(at(20) - SignedDuration::from_millis(301)).is_err());
    }

    #[test]
    fn the_write_order_says_what_came_first_when_the_instants_disagree() {
        // The switch is seen 20 ms before the publication that precedes it, and the removal of
        // `a` 20 ms before the switch away from it: nothing to hold for, I3 holds.
        let history = History(vec![
            Version::config_map(HOME, &["a"], 1, at(1)),
            Version::secret(HOME, Some("a"), 2, at(1) - SignedDuration::from_millis(20)),
            Version::config_map(HOME, &["a", "b"], 3, at(5)),
            Version::secret(HOME, Some("b"), 4, at(6)),
            Version::config_map(HOME, &["b"], 5, at(6) - SignedDuration::from_millis(20)),
        ]);
        assert_eq!(history.check(Rules::default()), Ok(()));
        assert!(matches!(
            history.check(rules()),
            Err(Violation::SignsTooEarly { .. })
        ));
    }

    #[test]
    fn i1_counts_p_per_namespace_from_when_each_got_the_key() {
        // The copy starts accepting during P and gets the key at 15.
        let history = History::new()
            .config_map(1, HOME, &["a"])
            .secret(2, Some("a"))
            .config_map(10, HOME, &["a", "b"])
            .config_map(15, COPY, &["a", "b"]);
        assert!(matches!(
            history.secret(20, Some("b")).check(rules()),
            Err(Violation::SignsTooEarly { namespace, .. }) if namespace == COPY
        ));
        let history = History::new()
            .config_map(1, HOME, &["a"])
            .secret(2, Some("a"))
            .config_map(10, HOME, &["a", "b"])
            .config_map(15, COPY, &["a", "b"]);
        assert_eq!(history.secret(25, Some("b")).check(rules()), Ok(()));
    }

    #[test]
    fn i1_a_recreated_config_map_counts_from_its_new_version() {
        let recreated = || {
            History::new()
                .config_map(1, HOME, &["a"])
                .secret(2, Some("a"))
                .config_map(10, HOME, &["a", "b"])
                .deleted(12, Kind::ConfigMap, HOME)
                .config_map(13, HOME, &["a", "b"])
        };
        assert!(matches!(
            recreated().secret(20, Some("b")).check(rules()),
            Err(Violation::SignsTooEarly { held_since, .. }) if held_since == at(13)
        ));
        assert_eq!(recreated().secret(23, Some("b")).check(rules()), Ok(()));
    }

    #[test]
    fn i1_a_hand_edit_that_drops_the_next_key_starts_p_again() {
        let history = History::new()
            .config_map(1, HOME, &["a"])
            .secret(2, Some("a"))
            .config_map(10, HOME, &["a", "b"])
            .config_map(12, HOME, &["a"])
            .by_other()
            .config_map(13, HOME, &["a", "b"])
            .secret(20, Some("b"));
        assert!(matches!(
            history.check(rules()),
            Err(Violation::SignsTooEarly { held_since, .. }) if held_since == at(13)
        ));
    }

    #[test]
    fn i1_rewriting_a_config_map_that_keeps_the_key_does_not_start_p_again() {
        let history = History::new()
            .config_map(1, HOME, &["a"])
            .secret(2, Some("a"))
            .config_map(10, HOME, &["a", "b"])
            .config_map(15, HOME, &["a", "b", "x"])
            .config_map(16, HOME, &["a", "b"])
            .secret(20, Some("b"));
        assert_eq!(history.check(rules()), Ok(()));
    }

    #[test]
    fn i1_a_config_map_deleted_before_the_switch_is_no_target() {
        let history = History::new()
            .config_map(1, HOME, &["a"])
            .config_map(1, COPY, &["a"])
            .secret(2, Some("a"))
            .config_map(10, HOME, &["a", "b"])
            .deleted(11, Kind::ConfigMap, COPY)
            .secret(20, Some("b"));
        assert_eq!(history.check(rules()), Ok(()));
    }

    #[test]
    fn i1_signs_at_once_keys_need_no_p() {
        let history = History::new()
            .config_map(1, HOME, &["a"])
            .secret(2, Some("a"))
            .config_map(3, HOME, &["a", "b"])
            .secret(4, Some("b"));
        assert!(matches!(
            history.check(rules()),
            Err(Violation::SignsTooEarly { .. })
        ));
        let mut emergency = rules();
        emergency.signs_at_once.insert("b".into());
        assert_eq!(history.check(emergency), Ok(()));
    }

    #[test]
    fn i2_a_key_removed_before_the_retention_is_a_violation() {
        // `a` stopped at 20 and leaves the copy at 39.
        let history = History::new()
            .config_map(1, HOME, &["a"])
            .secret(2, Some("a"))
            .config_map(10, HOME, &["a", "b"])
            .config_map(10, COPY, &["a", "b"])
            .secret(20, Some("b"))
            .config_map(39, COPY, &["b"]);
        let violation = history.check(rules()).unwrap_err();
        assert_eq!(
            violation,
            Violation::RemovedTooEarly {
                kid: "a".into(),
                namespace: COPY.into(),
                stopped_at: at(20),
                order: 6,
                at: at(39),
                retention: SignedDuration::from_secs(20),
            }
        );
        let text = violation.to_string();
        assert!(
            text.starts_with("I2:") && text.contains("19s after") && text.contains(COPY),
            "{text}"
        );
    }

    #[test]
    fn i2_a_config_map_recreated_within_the_retention_holds_the_retired_key() {
        let recreated = |kids: &[&str]| {
            rotation()
                .deleted(41, Kind::ConfigMap, HOME)
                .config_map(42, HOME, &["b", "c"])
                .config_map(42, COPY, &["b", "c"])
                .secret(52, Some("c"))
                .deleted(53, Kind::ConfigMap, COPY)
                .config_map(54, COPY, kids)
        };
        assert_eq!(recreated(&["c", "b"]).check(rules()), Ok(()));
        assert!(matches!(
            recreated(&["c"]).check(rules()),
            Err(Violation::RemovedTooEarly { kid, .. }) if kid == "b"
        ));
    }

    #[test]
    fn i2_revoked_keys_may_leave_at_once() {
        // `a` is revoked: the home ConfigMap drops it with the switch to a fresh key.
        let history = History::new()
            .config_map(1, HOME, &["a"])
            .secret(2, Some("a"))
            .config_map(5, HOME, &["a", "b"])
            .secret(6, Some("b"))
            .config_map(7, HOME, &["b"]);
        let mut emergency = rules();
        emergency.signs_at_once.insert("b".into());
        assert!(matches!(
            history.check(emergency.clone()),
            Err(Violation::RemovedTooEarly { .. })
        ));
        emergency.revoked.insert("a".into());
        assert_eq!(history.check(emergency), Ok(()));
    }

    #[test]
    fn a_revoked_signing_key_stays_only_where_it_is_held() {
        let mut emergency = rules();
        emergency.revoked.insert("a".into());
        emergency.signs_at_once.insert("b".into());
        // A copy created during the revocation gets only the fresh key; the home one keeps `a`
        // until the Secret switches.
        let created = History::new()
            .config_map(1, HOME, &["a"])
            .secret(2, Some("a"))
            .config_map(5, HOME, &["a", "b"])
            .config_map(5, COPY, &["b"])
            .secret(6, Some("b"));
        assert_eq!(created.check(emergency.clone()), Ok(()));
        let dropped_early = History::new()
            .config_map(1, HOME, &["a"])
            .secret(2, Some("a"))
            .config_map(5, HOME, &["b"]);
        assert!(matches!(
            dropped_early.check(emergency),
            Err(Violation::ConfigMapLacksSigningKey { .. })
        ));
    }

    #[test]
    fn an_emergency_key_may_sign_before_a_refusing_copy_holds_it() {
        let mut emergency = rules();
        emergency.revoked.insert("a".into());
        emergency.signs_at_once.insert("b".into());
        // The copy refuses writes: it keeps `a` and lacks `b` when the Secret switches; its next
        // version must hold `b`.
        let history = History::new()
            .config_map(1, HOME, &["a"])
            .config_map(1, COPY, &["a"])
            .secret(2, Some("a"))
            .config_map(5, HOME, &["a", "b"])
            .secret(6, Some("b"));
        assert_eq!(history.check(emergency.clone()), Ok(()));
        assert_eq!(
            history
                .config_map(30, COPY, &["b"])
                .check(emergency.clone()),
            Ok(())
        );
        let history = History::new()
            .config_map(1, HOME, &["a"])
            .config_map(1, COPY, &["a"])
            .secret(2, Some("a"))
            .config_map(5, HOME, &["a", "b"])
            .secret(6, Some("b"))
            .config_map(30, COPY, &["a"]);
        assert!(matches!(
            history.check(emergency),
            Err(Violation::ConfigMapLacksSigningKey { .. })
        ));
    }

    #[test]
    fn a_key_never_signs_twice() {
        let history = rotation().secret(50, Some("a"));
        let violation = history.check(rules()).unwrap_err();
        assert_eq!(
            violation,
            Violation::SignsAgain {
                kid: "a".into(),
                first_signed_at: at(2),
                order: 12,
                at: at(50),
            }
        );
        assert!(violation.to_string().contains("signs again"), "{violation}");
    }

    #[test]
    fn the_signing_key_signs_on_through_a_deleted_secret() {
        // The Secret is deleted at 30; the ConfigMaps keep `b`, and the key that follows signs
        // at once: `b` stopped only then.
        let mut rules = rules();
        rules.signs_at_once.insert("c".into());
        let history = rotation()
            .deleted(41, Kind::Secret, HOME)
            .config_map(42, HOME, &["b", "c"])
            .config_map(42, COPY, &["b", "c"])
            .secret(43, Some("c"));
        assert_eq!(history.check(rules.clone()), Ok(()));
        let dropped = rotation()
            .deleted(41, Kind::Secret, HOME)
            .config_map(42, HOME, &["c"]);
        assert!(matches!(
            dropped.check(rules.clone()),
            Err(Violation::ConfigMapLacksSigningKey { kid, .. }) if kid == "b"
        ));
        let early = history.config_map(60, HOME, &["c"]);
        assert!(matches!(
            early.check(rules),
            Err(Violation::RemovedTooEarly { stopped_at, .. }) if stopped_at == at(43)
        ));
    }

    #[test]
    fn versions_by_someone_else_are_not_held_to_the_invariants() {
        // A tenant empties its copy; the operator puts the keys back.
        let history = rotation()
            .config_map(41, COPY, &[])
            .by_other()
            .config_map(42, COPY, &["b"]);
        assert_eq!(history.check(rules()), Ok(()));
        // A Secret restored from a backup does not make the operator's repair a second term.
        let restored = rotation()
            .secret(41, Some("a"))
            .by_other()
            .secret(42, Some("b"));
        assert_eq!(restored.check(rules()), Ok(()));
    }

    #[test]
    fn a_whole_history_is_checked_in_write_order_once_per_version() {
        // Delivered out of order, and the switch twice (a watch that listed again).
        let mut versions = rotation().0;
        let switch = versions.iter().find(|v| v.order == 7).unwrap().clone();
        versions.push(Version {
            at: at(99),
            ..switch
        });
        versions.reverse();
        assert_eq!(check(rules(), &versions), Ok(()));
    }

    #[test]
    fn a_checker_refuses_versions_out_of_write_order() {
        let mut checker = Checker::new(rules());
        checker
            .observe(&Version::config_map(HOME, &["a"], 5, at(0)))
            .unwrap();
        assert_eq!(
            checker.observe(&Version::secret(HOME, Some("a"), 4, at(1))),
            Err(Violation::OutOfOrder { order: 4, after: 5 })
        );
    }

    #[test]
    fn a_checker_goes_on_after_a_violation() {
        let mut checker = Checker::new(rules());
        checker
            .observe(&Version::config_map(HOME, &["a"], 1, at(1)))
            .unwrap();
        checker
            .observe(&Version::secret(HOME, Some("a"), 2, at(2)))
            .unwrap();
        assert!(
            checker
                .observe(&Version::config_map(HOME, &["b"], 3, at(3)))
                .is_err()
        );
        assert_eq!(checker.held(HOME), Some(&["b".to_string()][..]));
        assert_eq!(checker.signing(), Some("a"));
        checker.rules_mut().signs_at_once.insert("b".into());
        assert_eq!(
            checker.observe(&Version::secret(HOME, Some("b"), 4, at(4))),
            Ok(())
        );
    }
}
