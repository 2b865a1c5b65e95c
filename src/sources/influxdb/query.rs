//! Query text for each InfluxDB dialect. Pure, so `dry-run` prints exactly
//! what `run` sends. Every name from the spec is quoted and escaped: a
//! measurement like `pm2.5`, a tag with spaces or quotes, or a hostile name
//! cannot change the statement.

use crate::plan::Batch;
use crate::sources::Fetch;
use crate::spec::Hour;

/// What one query asks for.
pub struct Target<'a> {
    pub database: &'a str,
    pub retention_policy: Option<&'a str>,
    pub bucket: &'a str,
    pub fetch: &'a Fetch,
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

/// InfluxQL asked in CSV (a server that does not answer MessagePack, such as
/// the v1-compatible `/query` of v3).
///
/// Tags are selected with `::tag` and fields with `::field`, so a tag and
/// a field of the same name cannot be confused; the fields become columns 4
/// and on of the CSV (after `name,tags,time`), then the tags in order. With
/// several fields, InfluxDB leaves out the rows that have none of them and
/// leaves a field a row lacks empty.
pub fn influxql(t: &Target, b: Batch) -> String {
    let job = t.fetch;
    let mut cols = field_columns(job);
    cols.extend(
        job.tags
            .iter()
            .map(|k| format!("{}::tag", influxql_ident(k))),
    );
    format!(
        "SELECT {} FROM {} WHERE {}",
        cols.join(", "),
        influxql_from(t),
        influxql_range(b)
    )
}

/// InfluxQL asked in MessagePack (InfluxDB 1.x): the fields, grouped by the
/// tags. Each series then comes whole, its tag values once in its header,
/// instead of every row carrying them and InfluxDB merging all series by
/// time: at 1,000 stations this halves the server's CPU (README,
/// "Benchmarks").
pub fn influxql_grouped(t: &Target, b: Batch) -> String {
    let job = t.fetch;
    let mut q = format!(
        "SELECT {} FROM {} WHERE {}",
        field_columns(job).join(", "),
        influxql_from(t),
        influxql_range(b)
    );
    if !job.tags.is_empty() {
        let tags: Vec<String> = job.tags.iter().map(|k| influxql_ident(k)).collect();
        q.push_str(" GROUP BY ");
        q.push_str(&tags.join(", "));
    }
    q
}

fn field_columns(job: &Fetch) -> Vec<String> {
    job.fields
        .iter()
        .map(|f| format!("{}::field", influxql_ident(f)))
        .collect()
}

fn influxql_from(t: &Target) -> String {
    let m = influxql_ident(&t.fetch.measurement);
    match t.retention_policy {
        Some(rp) => format!("{}.{}.{m}", influxql_ident(t.database), influxql_ident(rp)),
        None => format!("{}..{m}", influxql_ident(t.database)),
    }
}

fn influxql_range(b: Batch) -> String {
    format!(
        "time >= '{}' AND time < '{}'",
        rfc3339(b.from),
        rfc3339(b.to)
    )
}

/// The points of each field in `b` (InfluxQL), to size batches.
pub fn influxql_count(t: &Target, b: Batch) -> String {
    let counts: Vec<String> = t
        .fetch
        .fields
        .iter()
        .map(|f| format!("count({})", influxql_ident(f)))
        .collect();
    format!(
        "SELECT {} FROM {} WHERE {}",
        counts.join(", "),
        influxql_from(t),
        influxql_range(b)
    )
}

/// The points of the fetch's fields in `b` (Flux), summed into one table.
pub fn flux_count(t: &Target, b: Batch) -> String {
    let q = flux(t, b);
    // The same range and filter, without pivot and keep.
    let filtered = q
        .split("\n  |> ")
        .take(3)
        .collect::<Vec<_>>()
        .join("\n  |> ");
    format!("{filtered}\n  |> count()\n  |> group()\n  |> sum()")
}

/// The rows with any of the fetch's fields in `b` (v3 SQL), as `n`.
pub fn v3_count(t: &Target, b: Batch) -> String {
    let q = v3_sql(t, b);
    let from = &q[q.find(" FROM ").expect("a SELECT has a FROM")..];
    let from = from.trim_end_matches(" ORDER BY time");
    format!("SELECT count(*) AS n{from}")
}

/// Flux (v2). `range` is `[start, stop)`; `keep` fixes the columns. One
/// field is read from `_value`; several are pivoted into a column each
/// (named after the field), one row per series and time: `pivot` drops
/// `_field` from the group key, so a series' fields meet in one table.
pub fn flux(t: &Target, b: Batch) -> String {
    let job = t.fetch;
    let one = job.fields.len() == 1;
    let mut keep = vec![flux_string("_time")];
    if one {
        keep.push(flux_string("_value"));
    } else {
        keep.extend(job.fields.iter().map(|f| flux_string(f)));
    }
    keep.extend(job.tags.iter().map(|k| flux_string(k)));
    let fields: Vec<String> = job
        .fields
        .iter()
        .map(|f| format!("r._field == {}", flux_string(f)))
        .collect();
    let fields = if one {
        fields[0].clone()
    } else {
        format!("({})", fields.join(" or "))
    };
    let pivot = if one {
        ""
    } else {
        "\n  |> pivot(rowKey: [\"_time\"], columnKey: [\"_field\"], valueColumn: \"_value\")"
    };
    format!(
        "from(bucket: {})\n  |> range(start: {}, stop: {})\n  |> filter(fn: (r) => r._measurement == {} and {fields}){pivot}\n  |> keep(columns: [{}])",
        flux_string(t.bucket),
        rfc3339(b.from),
        rfc3339(b.to),
        flux_string(&job.measurement),
        keep.join(", ")
    )
}

/// SQL (v3): `time`, the field as `value` (several: each under its own
/// name), then the tags; rows with none of the fields are left out.
pub fn v3_sql(t: &Target, b: Batch) -> String {
    let job = t.fetch;
    let mut cols = vec!["time".to_owned()];
    if let [f] = job.fields.as_slice() {
        cols.push(format!("{} AS value", sql_ident(f)));
    } else {
        cols.extend(job.fields.iter().map(|f| sql_ident(f)));
    }
    cols.extend(job.tags.iter().map(|k| sql_ident(k)));
    let present: Vec<String> = job
        .fields
        .iter()
        .map(|f| format!("{} IS NOT NULL", sql_ident(f)))
        .collect();
    let present = if present.len() == 1 {
        present[0].clone()
    } else {
        format!("({})", present.join(" OR "))
    };
    format!(
        "SELECT {} FROM {} WHERE time >= '{}' AND time < '{}' AND {present} ORDER BY time",
        cols.join(", "),
        sql_ident(&job.measurement),
        rfc3339(b.from),
        rfc3339(b.to),
    )
}

/// The value columns a v3 answer names, in the fetch's order.
pub fn v3_value_columns(f: &Fetch) -> Vec<String> {
    if f.fields.len() == 1 {
        vec!["value".to_owned()]
    } else {
        f.fields.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spec::Job;

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
            fetch: &Fetch::of([&j]),
        };
        assert_eq!(
            influxql(&t, batch()),
            r#"SELECT "v\\al"::field, "station id"::tag FROM "aq".."pm2.5 \"raw\"" WHERE time >= '2026-11-20T00:00:00Z' AND time < '2026-11-20T02:00:00Z'"#
        );
        let t = Target {
            database: "aq",
            retention_policy: Some("autogen"),
            bucket: "",
            fetch: &Fetch::of([&j]),
        };
        assert!(influxql(&t, batch()).contains(r#"FROM "aq"."autogen"."pm2.5 \"raw\"""#));
        assert_eq!(
            influxql_grouped(&t, batch()),
            r#"SELECT "v\\al"::field FROM "aq"."autogen"."pm2.5 \"raw\"" WHERE time >= '2026-11-20T00:00:00Z' AND time < '2026-11-20T02:00:00Z' GROUP BY "station id""#
        );
        let untagged = job("m", "f", &[]);
        let t = Target {
            fetch: &Fetch::of([&untagged]),
            ..t
        };
        assert!(influxql_grouped(&t, batch()).ends_with("< '2026-11-20T02:00:00Z'"));
    }

    #[test]
    fn injection_stays_inside_the_identifier() {
        let j = job("m\" WHERE 1=1; DROP DATABASE \"aq", "f", &[]);
        let t = Target {
            database: "aq",
            retention_policy: None,
            bucket: "",
            fetch: &Fetch::of([&j]),
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
            fetch: &Fetch::of([&j]),
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
            fetch: &Fetch::of([&j]),
        };
        assert_eq!(
            v3_sql(&t, batch()),
            "SELECT time, \"co\" AS value, \"station\" FROM \"air \"\"q\"\"\" WHERE time >= '2026-11-20T00:00:00Z' AND time < '2026-11-20T02:00:00Z' AND \"co\" IS NOT NULL ORDER BY time"
        );
    }

    /// One query for the jobs sharing it: each field once, in the jobs'
    /// order; a job with its own field keeps today's query.
    #[test]
    fn a_shared_fetch_asks_for_every_field_once() {
        let (co, no2, co_b) = (
            job("air", "co", &["station"]),
            job("air", "no2", &["station"]),
            job("air", "co", &["station"]),
        );
        let fetch = Fetch::of([&co, &no2, &co_b]);
        assert_eq!(fetch.fields, ["co", "no2"]);
        assert_eq!((fetch.column(&co_b), fetch.column(&no2)), (0, 1));
        assert!(!fetch.shares(&job("air", "co", &[])));
        let t = |bucket: &'static str| Target {
            database: "aq",
            retention_policy: None,
            bucket,
            fetch: &fetch,
        };
        assert_eq!(
            influxql(&t(""), batch()),
            r#"SELECT "co"::field, "no2"::field, "station"::tag FROM "aq".."air" WHERE time >= '2026-11-20T00:00:00Z' AND time < '2026-11-20T02:00:00Z'"#
        );
        assert_eq!(
            flux(&t("b"), batch()),
            "from(bucket: \"b\")\n  |> range(start: 2026-11-20T00:00:00Z, stop: 2026-11-20T02:00:00Z)\n  |> filter(fn: (r) => r._measurement == \"air\" and (r._field == \"co\" or r._field == \"no2\"))\n  |> pivot(rowKey: [\"_time\"], columnKey: [\"_field\"], valueColumn: \"_value\")\n  |> keep(columns: [\"_time\", \"co\", \"no2\", \"station\"])"
        );
        assert_eq!(
            v3_sql(&t(""), batch()),
            "SELECT time, \"co\", \"no2\", \"station\" FROM \"air\" WHERE time >= '2026-11-20T00:00:00Z' AND time < '2026-11-20T02:00:00Z' AND (\"co\" IS NOT NULL OR \"no2\" IS NOT NULL) ORDER BY time"
        );
        assert_eq!(v3_value_columns(&fetch), ["co", "no2"]);
        assert_eq!(
            flux_count(&t("b"), batch()),
            "from(bucket: \"b\")\n  |> range(start: 2026-11-20T00:00:00Z, stop: 2026-11-20T02:00:00Z)\n  |> filter(fn: (r) => r._measurement == \"air\" and (r._field == \"co\" or r._field == \"no2\"))\n  |> count()\n  |> group()\n  |> sum()"
        );
        assert_eq!(
            v3_count(&t(""), batch()),
            "SELECT count(*) AS n FROM \"air\" WHERE time >= '2026-11-20T00:00:00Z' AND time < '2026-11-20T02:00:00Z' AND (\"co\" IS NOT NULL OR \"no2\" IS NOT NULL)"
        );
        assert_eq!(
            influxql_count(&t(""), batch()),
            r#"SELECT count("co"), count("no2") FROM "aq".."air" WHERE time >= '2026-11-20T00:00:00Z' AND time < '2026-11-20T02:00:00Z'"#
        );
    }
}
