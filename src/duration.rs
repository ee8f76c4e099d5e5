//! Go-style durations (`720h`, `15m`, `1h30m`, `1.5s`), the format the CRD fields use and the API
//! server's CEL `duration()` accepts.

use std::{fmt, str::FromStr, time::Duration};

/// A non-negative duration written the way Go's `time.ParseDuration` reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(Duration);

/// Why a duration string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Empty input.
    #[error("empty duration")]
    Empty,
    /// A number is missing or malformed.
    #[error(
        "invalid duration {0:?}: expected a number followed by a unit (ns, us, ms, s, m, h), e.g. 720h or 1h30m"
    )]
    Invalid(String),
    /// A unit is missing or unknown.
    #[error("invalid duration {0:?}: unknown or missing unit (use ns, us, ms, s, m or h)")]
    Unit(String),
    /// The value does not fit.
    #[error("invalid duration {0:?}: too large")]
    Overflow(String),
}

impl GoDuration {
    /// The duration as a std `Duration`.
    pub fn as_std(self) -> Duration {
        self.0
    }

    /// Whole milliseconds.
    pub fn as_millis(self) -> u128 {
        self.0.as_millis()
    }

    /// As a signed duration, for arithmetic on timestamps.
    pub fn as_signed(self) -> jiff::SignedDuration {
        jiff::SignedDuration::try_from(self.0).unwrap_or(jiff::SignedDuration::MAX)
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration(d)
    }
}

impl FromStr for GoDuration {
    type Err = ParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.is_empty() {
            return Err(ParseError::Empty);
        }
        if input == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        let invalid = || ParseError::Invalid(input.to_string());
        let mut rest = input;
        let mut total_nanos: u128 = 0;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, after) = rest.split_at(number_len);
            if number.is_empty() || number.starts_with('.') && number.len() == 1 {
                return Err(invalid());
            }
            let (whole, fraction) = match number.split_once('.') {
                Some((w, f)) if !f.contains('.') => (w, f),
                Some(_) => return Err(invalid()),
                None => (number, ""),
            };
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, next) = after.split_at(unit_len);
            let unit_nanos: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60 * 1_000_000_000,
                "h" => 3_600 * 1_000_000_000,
                _ => return Err(ParseError::Unit(input.to_string())),
            };
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole
                    .parse()
                    .map_err(|_| ParseError::Overflow(input.to_string()))?
            };
            let mut value = whole
                .checked_mul(unit_nanos)
                .ok_or_else(|| ParseError::Overflow(input.to_string()))?;
            if !fraction.is_empty() {
                let digits = fraction.len().min(18) as u32;
                let frac: u128 = fraction[..digits as usize].parse().map_err(|_| invalid())?;
                value += frac * unit_nanos / 10u128.pow(digits);
            }
            total_nanos = total_nanos
                .checked_add(value)
                .ok_or_else(|| ParseError::Overflow(input.to_string()))?;
            rest = next;
        }
        // Go limits durations to i64 nanoseconds (about 292 years).
        if total_nanos > i64::MAX as u128 {
            return Err(ParseError::Overflow(input.to_string()));
        }
        Ok(GoDuration(Duration::from_nanos(total_nanos as u64)))
    }
}

impl fmt::Display for GoDuration {
    /// Formats like Go's `Duration.String` for whole seconds (`1h30m0s`), milliseconds otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.0;
        if total.subsec_nanos() != 0 {
            return write!(f, "{}ms", total.as_millis());
        }
        let secs = total.as_secs();
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h{m}m{s}s")
        } else if m > 0 {
            write!(f, "{m}m{s}s")
        } else {
            write!(f, "{s}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Duration, ParseError> {
        s.parse::<GoDuration>().map(GoDuration::as_std)
    }

    #[test]
    fn go_style_durations_parse() {
        assert_eq!(parse("720h").unwrap(), Duration::from_secs(720 * 3600));
        assert_eq!(parse("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("10us").unwrap(), Duration::from_micros(10));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse("2h45m30.5s").unwrap(),
            Duration::from_millis((2 * 3600 + 45 * 60 + 30) * 1000 + 500)
        );
    }

    #[test]
    fn malformed_durations_are_refused_with_a_reason() {
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert!(matches!(parse("10"), Err(ParseError::Unit(_))));
        assert!(matches!(parse("10d"), Err(ParseError::Unit(_))));
        assert!(matches!(parse("h"), Err(ParseError::Invalid(_))));
        assert!(matches!(parse("1..5s"), Err(ParseError::Invalid(_))));
        assert!(matches!(parse("-5s"), Err(ParseError::Invalid(_))));
        assert!(matches!(
            parse("99999999999h"),
            Err(ParseError::Overflow(_))
        ));
    }

    #[test]
    fn display_is_go_like() {
        assert_eq!(GoDuration(Duration::from_secs(5400)).to_string(), "1h30m0s");
        assert_eq!(GoDuration(Duration::from_secs(10)).to_string(), "10s");
    }
}
