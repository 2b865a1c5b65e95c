//! A result's rows as BigQuery takes them: DuckDB's types as BigQuery's,
//! each row as `insertAll` JSON (timestamps in RFC 3339, non-finite floats
//! as text), requests cut to BigQuery's documented limits, and
//! `insertErrors` told by hour and column.

use ::duckdb::Connection;
use serde_json::{json, Map, Value};

use super::BigQuerySink;
use crate::sinks::SinkError;
use crate::spec::Hour;

/// Rows per `insertAll` request (BigQuery's recommended maximum; the hard
/// limit is 50,000).
pub const INSERT_CHUNK: usize = 500;
/// Bytes of row JSON per `insertAll` request: BigQuery refuses requests over
/// 10 MB, so a request is cut earlier when its rows are wide.
pub const INSERT_BYTES: usize = 8 * 1024 * 1024;
/// A batch's result rows, read from DuckDB, ready to send.
pub struct Rows {
    /// Column name and BigQuery type.
    pub(super) fields: Vec<(String, &'static str)>,
    pub(super) rows: Vec<Map<String, Value>>,
    /// `hour_start` of each row, to name it in errors.
    pub(super) hours: Vec<Option<Hour>>,
}

/// The BigQuery type a DuckDB column becomes, and the SQL that reads it
/// into one of the few values the row conversion knows.
fn bq_type(duck_type: &str, col: &str) -> (&'static str, String) {
    let t = duck_type.to_ascii_uppercase();
    let q = crate::template::quote_ident(col);
    match t.as_str() {
        "BOOLEAN" => ("BOOL", q),
        "TINYINT" | "SMALLINT" | "INTEGER" | "BIGINT" | "UTINYINT" | "USMALLINT" | "UINTEGER"
        | "UBIGINT" | "HUGEINT" => ("INT64", format!("{q}::BIGINT")),
        "FLOAT" | "DOUBLE" | "REAL" => ("FLOAT64", format!("{q}::DOUBLE")),
        _ if t.starts_with("DECIMAL") => ("FLOAT64", format!("{q}::DOUBLE")),
        _ if t.starts_with("TIMESTAMP") => ("TIMESTAMP", format!("epoch_us({q})")),
        "DATE" => ("DATE", format!("{q}::VARCHAR")),
        _ => ("STRING", format!("{q}::VARCHAR")),
    }
}

/// BigQuery's legacy and standard names for one type.
pub(super) fn same_type(a: &str, b: &str) -> bool {
    let norm = |t: &str| {
        match t {
            "FLOAT" => "FLOAT64",
            "INTEGER" => "INT64",
            "BOOLEAN" => "BOOL",
            other => other,
        }
        .to_owned()
    };
    norm(a) == norm(b)
}

fn micros_text(us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(t) if us % 1_000_000 == 0 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => us.to_string(),
    }
}

impl BigQuerySink {
    /// Reads a table of the embedded database (unquoted name) as rows to send.
    pub fn read_table(&self, conn: &Connection, table: &str) -> Result<Rows, SinkError> {
        let err = |e: ::duckdb::Error| self.setup_err(format!("reading the result: {e}"));
        let mut stmt = conn
            .prepare(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog = current_database() AND table_name = ? ORDER BY ordinal_position",
            )
            .map_err(err)?;
        let cols: Vec<(String, String)> = stmt
            .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let typed: Vec<(String, &'static str, String)> = cols
            .iter()
            .map(|(c, t)| {
                let (bq, expr) = bq_type(t, c);
                (c.clone(), bq, expr)
            })
            .collect();
        let select = format!(
            "SELECT {} FROM {}",
            typed
                .iter()
                .map(|(_, _, e)| e.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            crate::template::quote_ident(table)
        );
        let hour_col = typed.iter().position(|(c, _, _)| c == "hour_start");
        let mut stmt = conn.prepare(&select).map_err(err)?;
        let mut q = stmt.query([]).map_err(err)?;
        let mut out = Rows {
            fields: typed.iter().map(|(c, t, _)| (c.clone(), *t)).collect(),
            rows: Vec::new(),
            hours: Vec::new(),
        };
        while let Some(r) = q.next().map_err(err)? {
            let mut m = Map::new();
            let mut hour = None;
            for (i, (c, t, _)) in typed.iter().enumerate() {
                use ::duckdb::types::Value as V;
                let v: V = r.get(i).map_err(err)?;
                let j = match (v, *t) {
                    (V::Null, _) => Value::Null,
                    (V::BigInt(us), "TIMESTAMP") => {
                        if Some(i) == hour_col {
                            hour =
                                chrono::DateTime::from_timestamp_micros(us).and_then(Hour::exact);
                        }
                        Value::String(micros_text(us))
                    }
                    (V::Boolean(b), _) => Value::Bool(b),
                    (V::BigInt(n), _) => Value::String(n.to_string()),
                    (V::Double(d), _) if d.is_finite() => json!(d),
                    (V::Double(d), _) if d.is_nan() => json!("NaN"),
                    (V::Double(d), _) => json!(if d > 0.0 { "Infinity" } else { "-Infinity" }),
                    (V::Text(s), _) => Value::String(s),
                    (other, _) => Value::String(format!("{other:?}")),
                };
                m.insert(c.clone(), j);
            }
            out.rows.push(m);
            out.hours.push(hour);
        }
        Ok(out)
    }
}

/// The `[first, end)` row ranges of the `insertAll` requests: at most
/// [`INSERT_CHUNK`] rows and about [`INSERT_BYTES`] of row JSON each.
pub(super) fn insert_requests(rows: &[Map<String, Value>]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut first, mut bytes) = (0, 0);
    for (i, r) in rows.iter().enumerate() {
        // The row as sent, plus its insert id and wrapping (~60 bytes).
        let size = serde_json::to_vec(r).map_or(0, |v| v.len()) + 64;
        if i > first && (i - first == INSERT_CHUNK || bytes + size > INSERT_BYTES) {
            out.push((first, i));
            first = i;
            bytes = 0;
        }
        bytes += size;
    }
    if first < rows.len() {
        out.push((first, rows.len()));
    }
    out
}

/// `insertErrors`, told by hour and column.
pub(super) fn insert_errors(errs: &[Value], rows: &Rows, first: usize) -> String {
    let mut parts = Vec::new();
    for e in errs {
        let idx = first + e["index"].as_u64().unwrap_or(0) as usize;
        for d in e["errors"].as_array().into_iter().flatten() {
            let reason = d["reason"].as_str().unwrap_or("");
            if reason == "stopped" {
                continue; // not inserted because another row of the request failed
            }
            let hour = rows
                .hours
                .get(idx)
                .copied()
                .flatten()
                .map_or_else(|| "?".to_owned(), |h| h.to_string());
            let col = d["location"].as_str().unwrap_or("");
            parts.push(format!(
                "hour {hour}: column `{col}`: {reason}: {}",
                d["message"].as_str().unwrap_or("")
            ));
        }
    }
    let n = parts.len();
    parts.truncate(3);
    format!("insertAll rejected {n} row(s): {}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duckdb_types_map_to_bigquery() {
        assert_eq!(
            bq_type("TIMESTAMP WITH TIME ZONE", "hour_start").0,
            "TIMESTAMP"
        );
        assert_eq!(bq_type("DOUBLE", "x").0, "FLOAT64");
        assert_eq!(bq_type("DECIMAL(18,3)", "x").0, "FLOAT64");
        assert_eq!(bq_type("BIGINT", "x").0, "INT64");
        assert_eq!(bq_type("BOOLEAN", "x").0, "BOOL");
        assert_eq!(bq_type("VARCHAR", "x").0, "STRING");
        assert!(same_type("FLOAT", "FLOAT64") && same_type("INTEGER", "INT64"));
        assert!(!same_type("STRING", "FLOAT64"));
    }

    #[test]
    fn insert_errors_name_hour_and_column() {
        // The answer of the local-bigquery emulator to a row with `v: "x"` for a FLOAT64.
        let answer: Value = serde_json::from_str(r#"{"kind":"bigquery#tableDataInsertAllResponse","insertErrors":[{"errors":[{"reason":"stopped","location":"","message":""}],"index":0},{"errors":[{"reason":"invalid","location":"v","message":"Cannot convert value to float (bad value): x","debugInfo":""}],"index":1}]}"#).unwrap();
        let rows = Rows {
            fields: vec![("v".into(), "FLOAT64")],
            rows: Vec::new(),
            hours: vec![
                Hour::parse("2026-11-20T00:00:00Z").ok(),
                Hour::parse("2026-11-20T01:00:00Z").ok(),
            ],
        };
        assert_eq!(
            insert_errors(answer["insertErrors"].as_array().unwrap(), &rows, 0),
            "insertAll rejected 1 row(s): hour 2026-11-20T01:00:00Z: column `v`: invalid: Cannot convert value to float (bad value): x"
        );
    }

    #[test]
    fn insert_requests_are_cut_by_rows_and_bytes() {
        let small: Vec<Map<String, Value>> = (0..1201)
            .map(|i| json!({"i": i}).as_object().unwrap().clone())
            .collect();
        assert_eq!(
            insert_requests(&small),
            vec![(0, 500), (500, 1000), (1000, 1201)]
        );
        // Rows of ~1 MB: eight fit under the byte budget, not 500.
        let wide: Vec<Map<String, Value>> = (0..20)
            .map(|_| {
                json!({"s": "x".repeat(1 << 20)})
                    .as_object()
                    .unwrap()
                    .clone()
            })
            .collect();
        let reqs = insert_requests(&wide);
        assert_eq!(reqs.first(), Some(&(0, 7)));
        assert_eq!(reqs.last().map(|r| r.1), Some(20));
        assert!(insert_requests(&[]).is_empty());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(micros_text(1_795_132_800_000_000), "2026-11-20T00:00:00Z");
        assert_eq!(
            micros_text(1_795_132_800_000_001),
            "2026-11-20T00:00:00.000001Z"
        );
    }
}
