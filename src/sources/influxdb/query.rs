//! Query text for each InfluxDB dialect. Pure, so `dry-run` prints exactly
//! what `run` sends. Every name from the spec is quoted and escaped: a
//! measurement like `pm2.5`, a tag with spaces or quotes, or a hostile name
//! cannot change the statement.

use crate::plan::Batch;
use crate::spec::{Hour, Job};

/// What one query asks for.
pub struct Target<'a> {
    pub database: &'a str,
    pub retention_policy: Option<&'a str>,
    pub bucket: &'a str,
    pub job: &'a Job,
}

/// An InfluxQL identifier: double quotes, with `\` and `"` escaped.
pub fn influxql_ident(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Flux string literal: `\`, `"` and the interpolation opener `${` escaped.
pub fn flux_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A SQL identifier for InfluxDB 3 (DataFusion): double quotes, doubled inside.
pub fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn rfc3339(h: Hour) -> String {
    h.to_string()
}

/// InfluxQL (v1, and the v1-compatible `/query` of v2/v3).
///
/// Tags are selected with `::tag` and the field with `::field`, so a tag and
/// a field of the same name cannot be confused; the field becomes column 4
/// of the CSV (after `name,tags,time`), then the tags in order.
pub fn influxql(t: &Target, b: Batch) -> String {
    let job = t.job;
    let mut cols = vec![format!("{}::field", influxql_ident(&job.field))];
    cols.extend(
        job.tags
            .iter()
            .map(|k| format!("{}::tag", influxql_ident(k))),
    );
    let from = match t.retention_policy {
        Some(rp) => format!(
            "{}.{}.{}",
            influxql_ident(t.database),
            influxql_ident(rp),
            influxql_ident(&job.measurement)
        ),
        None => format!(
            "{}..{}",
            influxql_ident(t.database),
            influxql_ident(&job.measurement)
        ),
    };
    format!(
        "SELECT {} FROM {from} WHERE time >= '{}' AND time < '{}'",
        cols.join(", "),
        rfc3339(b.from),
        rfc3339(b.to)
    )
}

/// Flux (v2). `range` is `[start, stop)`; `keep` fixes the columns; the
/// field column is renamed by `_value`.
pub fn flux(t: &Target, b: Batch) -> String {
    let job = t.job;
    let mut keep = vec![flux_string("_time"), flux_string("_value")];
    keep.extend(job.tags.iter().map(|k| flux_string(k)));
    format!(
        "from(bucket: {})\n  |> range(start: {}, stop: {})\n  |> filter(fn: (r) => r._measurement == {} and r._field == {})\n  |> keep(columns: [{}])",
        flux_string(t.bucket),
        rfc3339(b.from),
        rfc3339(b.to),
        flux_string(&job.measurement),
        flux_string(&job.field),
        keep.join(", ")
    )
}

/// SQL (v3): `time`, the field as `value`, then the tags.
pub fn v3_sql(t: &Target, b: Batch) -> String {
    let job = t.job;
    let mut cols = vec![
        "time".to_owned(),
        format!("{} AS value", sql_ident(&job.field)),
    ];
    cols.extend(job.tags.iter().map(|k| sql_ident(k)));
    format!(
        "SELECT {} FROM {} WHERE time >= '{}' AND time < '{}' AND {} IS NOT NULL ORDER BY time",
        cols.join(", "),
        sql_ident(&job.measurement),
        rfc3339(b.from),
        rfc3339(b.to),
        sql_ident(&job.field)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(measurement: &str, field: &str, tags: &[&str]) -> Job {
        Job {
            name: "x".into(),
            measurement: measurement.into(),
            field: field.into(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            template: "t.sql".into(),
            table: "t".into(),
            params: Default::default(),
        }
    }

    fn batch() -> Batch {
        Batch {
            from: Hour::parse("2026-11-20T00:00:00Z").unwrap(),
            to: Hour::parse("2026-11-20T02:00:00Z").unwrap(),
        }
    }

    #[test]
    fn influxql_quotes_every_name() {
        let j = job("pm2.5 \"raw\"", "v\\al", &["station id"]);
        let t = Target {
            database: "aq",
            retention_policy: None,
            bucket: "",
            job: &j,
        };
        assert_eq!(
            influxql(&t, batch()),
            r#"SELECT "v\\al"::field, "station id"::tag FROM "aq".."pm2.5 \"raw\"" WHERE time >= '2026-11-20T00:00:00Z' AND time < '2026-11-20T02:00:00Z'"#
        );
        let t = Target {
            database: "aq",
            retention_policy: Some("autogen"),
            bucket: "",
            job: &j,
        };
        assert!(influxql(&t, batch()).contains(r#"FROM "aq"."autogen"."pm2.5 \"raw\"""#));
    }

    #[test]
    fn injection_stays_inside_the_identifier() {
        let j = job("m\" WHERE 1=1; DROP DATABASE \"aq", "f", &[]);
        let t = Target {
            database: "aq",
            retention_policy: None,
            bucket: "",
            job: &j,
        };
        let q = influxql(&t, batch());
        assert!(q.contains(r#""m\" WHERE 1=1; DROP DATABASE \"aq""#), "{q}");
    }

    #[test]
    fn flux_escapes_strings_and_interpolation() {
        let j = job("m${x}", "f\"", &["station"]);
        let t = Target {
            database: "",
            retention_policy: None,
            bucket: "b",
            job: &j,
        };
        assert_eq!(
            flux(&t, batch()),
            "from(bucket: \"b\")\n  |> range(start: 2026-11-20T00:00:00Z, stop: 2026-11-20T02:00:00Z)\n  |> filter(fn: (r) => r._measurement == \"m\\${x}\" and r._field == \"f\\\"\")\n  |> keep(columns: [\"_time\", \"_value\", \"station\"])"
        );
    }

    #[test]
    fn v3_sql_quotes() {
        let j = job("air \"q\"", "co", &["station"]);
        let t = Target {
            database: "aq",
            retention_policy: None,
            bucket: "",
            job: &j,
        };
        assert_eq!(
            v3_sql(&t, batch()),
            "SELECT time, \"co\" AS value, \"station\" FROM \"air \"\"q\"\"\" WHERE time >= '2026-11-20T00:00:00Z' AND time < '2026-11-20T02:00:00Z' AND \"co\" IS NOT NULL ORDER BY time"
        );
    }
}
