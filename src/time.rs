//! Timestamps: arithmetic that stays inside the representable range, and the RFC 3339 text (UTC,
//! `Z` suffix) that the Secret's `state.json`, the status and the messages carry.

use std::fmt;

use jiff::{SignedDuration, Timestamp};

/// `t + d`, saturating at the ends of the representable range (years -9999 to 9999) instead of
/// panicking: instants read back from a Secret or a status may lie near them.
pub fn plus(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// `t - d`, saturating like [`plus`].
pub fn minus(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_sub(d).unwrap_or(if d.is_negative() {
        Timestamp::MAX
    } else {
        Timestamp::MIN
    })
}

/// RFC 3339 in UTC with seconds precision (`2026-01-01T00:00:00Z`), the form of status fields and
/// messages; a fraction of a second is cut off.
pub fn rfc3339_secs(t: Timestamp) -> String {
    format!("{t:.0}")
}

/// RFC 3339 in UTC with seconds precision, a fraction of a second rounded up: the form of an
/// instant before which something is promised not to happen.
pub fn rfc3339_secs_up(t: Timestamp) -> String {
    rfc3339_secs(secs_up(t))
}

/// `t` with a fraction of a second rounded up to the next whole second.
pub fn secs_up(t: Timestamp) -> Timestamp {
    let whole = t.as_second();
    let up = if t.subsec_nanosecond() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    };
    Timestamp::from_second(up).unwrap_or(t)
}

/// Parses an RFC 3339 instant with any offset (`Z`, `+02:00`, ...).
pub fn parse_rfc3339(value: &str) -> Option<Timestamp> {
    value.parse().ok()
}

/// RFC 3339 in UTC with as many fraction digits as needed among 0, 3, 6 and 9
/// (`2026-01-01T00:00:00.120Z`): the form `state.json` has always been written in, so that a stored
/// state the operator reads and writes back is byte for byte the same.
struct Rfc3339(Timestamp);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only divisibility matters, which the sign (before 1970) does not change.
        let nanos = self.0.subsec_nanosecond().unsigned_abs();
        let digits = if nanos == 0 {
            0
        } else if nanos.is_multiple_of(1_000_000) {
            3
        } else if nanos.is_multiple_of(1_000) {
            6
        } else {
            9
        };
        write!(f, "{:.*}", digits, self.0)
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Serde for a [`Timestamp`] in `state.json` (`#[serde(with = "crate::time::rfc3339")]`): written
/// as [`Rfc3339`], read from any RFC 3339 instant.
pub mod rfc3339 {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Rfc3339;

    /// Writes `t`.
    pub fn serialize<S: Serializer>(t: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Rfc3339(*t))
    }

    /// Reads a timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        Timestamp::deserialize(deserializer)
    }

    /// The same for an `Option<Timestamp>`.
    pub mod option {
        use jiff::Timestamp;
        use serde::{Deserialize, Deserializer, Serializer};

        use super::Rfc3339;

        /// Writes `t`, `null` for `None`.
        pub fn serialize<S: Serializer>(
            t: &Option<Timestamp>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => serializer.serialize_some(&Rfc3339(*t)),
                None => serializer.serialize_none(),
            }
        }

        /// Reads a timestamp or `null`.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Timestamp>, D::Error> {
            Option::<Timestamp>::deserialize(deserializer)
        }
    }

    /// The same for the values of a map.
    pub mod map {
        use std::collections::BTreeMap;

        use jiff::Timestamp;
        use serde::{Deserialize, Deserializer, Serializer};

        use super::Rfc3339;

        /// Writes the map with its timestamps as [`Rfc3339`].
        pub fn serialize<K: serde::Serialize, S: Serializer>(
            map: &BTreeMap<K, Timestamp>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            serializer.collect_map(map.iter().map(|(k, t)| (k, Rfc3339(*t))))
        }

        /// Reads a map of timestamps.
        pub fn deserialize<'de, K, D>(deserializer: D) -> Result<BTreeMap<K, Timestamp>, D::Error>
        where
            K: Deserialize<'de> + Ord,
            D: Deserializer<'de>,
        {
            BTreeMap::<K, Timestamp>::deserialize(deserializer)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_at_the_ends_of_the_range() {
        let t: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let hour = SignedDuration::from_hours(1);
        assert_eq!(plus(t, hour).to_string(), "2026-01-01T01:00:00Z");
        assert_eq!(minus(t, hour).to_string(), "2025-12-31T23:00:00Z");
        assert_eq!(plus(Timestamp::MAX, hour), Timestamp::MAX);
        assert_eq!(plus(t, SignedDuration::MAX), Timestamp::MAX);
        assert_eq!(plus(Timestamp::MIN, -hour), Timestamp::MIN);
        assert_eq!(minus(Timestamp::MIN, hour), Timestamp::MIN);
        assert_eq!(minus(Timestamp::MAX, -hour), Timestamp::MAX);
        assert_eq!(minus(t, SignedDuration::MAX), Timestamp::MIN);
    }

    #[test]
    fn seconds_precision_cuts_the_fraction() {
        let t: Timestamp = "2026-11-29T04:01:02.987654321Z".parse().unwrap();
        assert_eq!(rfc3339_secs(t), "2026-11-29T04:01:02Z");
        let t: Timestamp = "2026-11-29T04:01:02Z".parse().unwrap();
        assert_eq!(rfc3339_secs(t), "2026-11-29T04:01:02Z");
    }

    #[test]
    fn any_offset_parses_to_the_same_instant() {
        assert_eq!(
            parse_rfc3339("2026-11-29T06:01:02+02:00"),
            parse_rfc3339("2026-11-29T04:01:02Z")
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(
            parse_rfc3339("2026-11-29T04:01:02"),
            None,
            "an offset is required"
        );
    }

    #[test]
    fn state_timestamps_keep_their_fraction_digits() {
        for text in [
            "2026-11-29T04:01:02Z",
            "2026-11-29T04:01:02.100Z",
            "2026-11-29T04:01:02.120Z",
            "2026-11-29T04:01:02.123Z",
            "2026-11-29T04:01:02.123400Z",
            "2026-11-29T04:01:02.123456Z",
            "2026-11-29T04:01:02.123456780Z",
            "2026-11-29T04:01:02.123456789Z",
            "1969-12-31T23:59:59.700Z",
            "1969-12-31T23:59:59.123456789Z",
        ] {
            let t: Timestamp = text.parse().unwrap();
            assert_eq!(Rfc3339(t).to_string(), text);
        }
    }
}
