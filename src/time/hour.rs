//! A whole UTC hour, the label of the window `[h, h+1h)`, and RFC 3339
//! times. The spec reads both (its serde impls live in `spec::values`).

use std::fmt;

use chrono::{DateTime, Timelike, Utc};

use super::ranges::Point;

/// A whole UTC hour, the label of the window `[h, h+1h)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hour(pub DateTime<Utc>);

impl Hour {
    /// Parses RFC 3339 and requires minutes, seconds and fractions to be zero.
    pub fn parse(s: &str) -> Result<Hour, String> {
        let t = parse_time(s)?;
        Hour::exact(t)
            .ok_or_else(|| format!("`{s}` is not a whole hour (minutes and seconds must be 0)"))
    }

    /// `Some` when `t` is exactly on an hour.
    pub fn exact(t: DateTime<Utc>) -> Option<Hour> {
        (t.minute() == 0 && t.second() == 0 && t.nanosecond() == 0).then_some(Hour(t))
    }

    /// The hour containing `t`.
    pub fn floor(t: DateTime<Utc>) -> Hour {
        let secs = t.timestamp().div_euclid(3600) * 3600;
        Hour(DateTime::from_timestamp(secs, 0).expect("hour in range"))
    }

    pub fn plus(&self, hours: i64) -> Hour {
        Hour(self.0 + chrono::Duration::hours(hours))
    }

    /// Whole hours from `self` to `other` (negative when `other` is earlier).
    pub fn hours_until(&self, other: Hour) -> i64 {
        (other.0 - self.0).num_hours()
    }
}

impl Point for Hour {
    fn next(self) -> Hour {
        self.plus(1)
    }
}

impl fmt::Display for Hour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%SZ"))
    }
}

/// Parses an RFC 3339 timestamp into UTC; the error names the input.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("invalid time `{s}`: expected RFC 3339, e.g. `2026-11-27T13:00:00Z`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours() {
        let h = Hour::parse("2026-11-27T13:00:00Z").unwrap();
        assert_eq!(h.to_string(), "2026-11-27T13:00:00Z");
        assert_eq!(Hour::parse("2026-11-27T14:00:00+01:00").unwrap(), h);
        assert!(Hour::parse("2026-11-27T13:30:00Z")
            .unwrap_err()
            .contains("not a whole hour"));
        assert!(Hour::parse("yesterday").unwrap_err().contains("RFC 3339"));
        let t = parse_time("2026-11-27T13:59:59.999Z").unwrap();
        assert_eq!(Hour::floor(t), h);
        assert_eq!(h.plus(11).to_string(), "2026-11-28T00:00:00Z");
        assert_eq!(h.hours_until(h.plus(-3)), -3);
        let r = crate::time::Ranges::of_points([h, h.plus(1), h.plus(3)]);
        assert_eq!(
            r.runs().to_string(),
            "2026-11-27T13:00:00Z..2026-11-27T14:00:00Z, 2026-11-27T16:00:00Z"
        );
    }
}
