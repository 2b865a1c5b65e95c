//! Small scalar types of the spec: durations (`5m`), whole UTC hours, source spans.
//!
//! They parse inside serde, so a bad value is reported at its `file:line:col`.

use std::fmt;

use serde::{de, Deserialize, Deserializer};

pub use crate::time::{parse_time, Hour};

/// A position in the spec file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span {
    pub line: usize,
    pub col: usize,
}

/// A duration written as a whole number and a unit: `30s`, `5m`, `2h`, `1d`; `0` alone is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn parse(s: &str) -> Result<Duration, String> {
        let t = s.trim();
        if t == "0" {
            return Ok(Duration(std::time::Duration::ZERO));
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad_duration(s))?;
        let secs = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => return Err(bad_duration(s)),
        };
        Ok(Duration(std::time::Duration::from_secs(secs)))
    }

    pub fn secs(&self) -> u64 {
        self.0.as_secs()
    }

    pub fn chrono(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.0.as_secs() as i64)
    }
}

fn bad_duration(s: &str) -> String {
    format!("invalid duration `{s}`: expected a whole number and a unit s, m, h or d (e.g. `5m`)")
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        if s == 0 {
            write!(f, "0s")
        } else if s.is_multiple_of(86_400) {
            write!(f, "{}d", s / 86_400)
        } else if s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(de::Error::custom)
    }
}

impl serde::Serialize for Hour {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hour {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hour::parse(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("5m").unwrap().secs(), 300);
        assert_eq!(Duration::parse("2h").unwrap().secs(), 7200);
        assert_eq!(Duration::parse("1d").unwrap().secs(), 86_400);
        assert_eq!(Duration::parse("30s").unwrap().secs(), 30);
        assert_eq!(Duration::parse("0").unwrap().secs(), 0);
        assert_eq!(Duration::parse("0h").unwrap().secs(), 0);
        for bad in ["", "m", "5", "5 minutes", "-1h", "1.5h", "h5"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Duration::parse("90m").unwrap().to_string(), "90m");
        assert_eq!(Duration::parse("120m").unwrap().to_string(), "2h");
    }
}
