//! Hours, instants and hour ranges as a state block's fields hold them:
//! the text the Python flows write and read (RFC3339, or naive UTC from
//! Python), and ranges of hours as `[[from, to], ...]`.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{json, Value};

use crate::time::{Hour, Ranges};

pub(super) fn hour_text(h: Hour) -> String {
    h.0.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(super) fn time_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A datetime as Python or duckhour wrote it: RFC3339, or naive (UTC).
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|n| n.and_utc())
}

/// Ranges as a block holds them: `[[from, to], ...]`; unreadable ones
/// are left out.
pub(super) fn read_ranges(v: Option<&Value>) -> Ranges<Hour> {
    let Some(Value::Array(items)) = v else {
        return Ranges::new();
    };
    items
        .iter()
        .filter_map(|r| {
            let a = r.as_array()?;
            let from = Hour::exact(parse_datetime(a.first()?.as_str()?)?)?;
            let to = Hour::exact(parse_datetime(a.get(1)?.as_str()?)?)?;
            Some((from, to))
        })
        .collect()
}

pub(super) fn write_ranges(r: &Ranges<Hour>) -> Value {
    Value::Array(
        r.iter()
            .map(|(f, t)| json!([hour_text(f), hour_text(t)]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hour {
        Hour::parse(s).unwrap()
    }

    #[test]
    fn datetimes_from_python_and_duckhour() {
        let want = h("2026-11-27T13:00:00Z").0;
        for s in [
            "2026-11-27T13:00:00Z",
            "2026-11-27T13:00:00+00:00",
            "2026-11-27T14:00:00+01:00",
            "2026-11-27T13:00:00",
            "2026-11-27T13:00:00.000000",
            "2026-11-27 13:00:00",
        ] {
            assert_eq!(parse_datetime(s), Some(want), "{s}");
        }
        assert_eq!(parse_datetime("yesterday"), None);
    }

    #[test]
    fn ranges_merge_when_adjacent_or_overlapping() {
        let mut r = Ranges::new();
        r.add(h("2026-01-01T00:00:00Z"), h("2026-01-01T23:00:00Z"));
        r.add(h("2026-01-01T23:00:00Z"), h("2026-01-02T05:00:00Z"));
        r.add(h("2026-01-03T00:00:00Z"), h("2026-01-03T01:00:00Z"));
        // A redo inside a range changes nothing.
        r.add(h("2026-01-01T02:00:00Z"), h("2026-01-01T04:00:00Z"));
        let v = write_ranges(&r);
        assert_eq!(
            v,
            json!([
                ["2026-01-01T00:00:00Z", "2026-01-02T05:00:00Z"],
                ["2026-01-03T00:00:00Z", "2026-01-03T01:00:00Z"]
            ])
        );
        assert_eq!(read_ranges(Some(&v)), r);
        r.remove_point(h("2026-01-01T03:00:00Z"));
        r.remove_point(h("2026-01-03T00:00:00Z"));
        assert_eq!(
            write_ranges(&r),
            json!([
                ["2026-01-01T00:00:00Z", "2026-01-01T03:00:00Z"],
                ["2026-01-01T04:00:00Z", "2026-01-02T05:00:00Z"]
            ])
        );
    }
}
