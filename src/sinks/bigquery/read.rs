//! Reading rows back from BigQuery, for products computed in a pipeline
//! whose only sink is BigQuery: a `SELECT` page by page, its values as
//! text, copied into a table of the embedded DuckDB with DuckDB's types.

use ::duckdb::Connection;
use serde_json::Value;

use super::{request_id, BigQuerySink};
use crate::sinks::SinkError;

impl BigQuerySink {
    /// Runs a `SELECT` and returns its schema and rows, as text per value
    /// (timestamps as microseconds since the epoch), for the embedded
    /// database (see [`copy_in`]). `label` names the read in errors.
    pub async fn select(&self, sql: &str, label: &str) -> Result<Selected, SinkError> {
        let id = request_id(&format!(
            "{sql}-{}",
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        let (schema, rows) = self
            .api()
            .select(sql, &id, self.location.as_deref())
            .await
            .map_err(|e| self.setup_err(format!("reading {label} back: {e}")))?;
        let rows = rows
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .zip(&schema)
                    .map(|(v, (_, t))| match v {
                        Value::Null => None,
                        Value::String(s) if t == "TIMESTAMP" => Some(timestamp_micros(&s)),
                        Value::String(s) => Some(s),
                        other => Some(other.to_string()),
                    })
                    .collect()
            })
            .collect();
        Ok(Selected { schema, rows })
    }
}

/// Rows read back from BigQuery: its column types and each value as text.
pub struct Selected {
    pub schema: Vec<(String, String)>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// A TIMESTAMP as the REST API gives it (seconds since the epoch, as a
/// float in text: `1.7744832E9`; an emulator may answer RFC 3339), as
/// microseconds since the epoch in text.
fn timestamp_micros(s: &str) -> String {
    if let Ok(secs) = s.parse::<f64>() {
        return ((secs * 1e6).round() as i64).to_string();
    }
    let t = s.replace(' ', "T");
    chrono::DateTime::parse_from_rfc3339(&t)
        .or_else(|_| chrono::DateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f%#z"))
        .map(|d| d.timestamp_micros().to_string())
        .unwrap_or_else(|_| s.to_owned())
}

/// Copies rows read back from BigQuery into the embedded database as table
/// `into` (unquoted name), with DuckDB's types for BigQuery's.
pub fn copy_in(conn: &Connection, rows: &Selected, into: &str) -> Result<(), ::duckdb::Error> {
    let q = crate::template::quote_ident;
    let raw = format!("{into}__text");
    let cols: Vec<String> = rows
        .schema
        .iter()
        .map(|(n, _)| format!("{} VARCHAR", q(n)))
        .collect();
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TABLE {} ({})",
        q(&raw),
        cols.join(", ")
    ))?;
    {
        let mut app = conn.appender(&raw)?;
        for r in &rows.rows {
            app.append_row(::duckdb::appender_params_from_iter(r.iter()))?;
        }
    }
    let typed: Vec<String> = rows
        .schema
        .iter()
        .map(|(n, t)| {
            let c = q(n);
            match t.as_str() {
                "TIMESTAMP" => format!("to_timestamp({c}::BIGINT / 1000000.0) AS {c}"),
                "INTEGER" | "INT64" => format!("{c}::BIGINT AS {c}"),
                "FLOAT" | "FLOAT64" | "NUMERIC" | "BIGNUMERIC" => format!("{c}::DOUBLE AS {c}"),
                "BOOLEAN" | "BOOL" => format!("{c}::BOOLEAN AS {c}"),
                "DATE" => format!("{c}::DATE AS {c}"),
                _ => c,
            }
        })
        .collect();
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TABLE {} AS SELECT {} FROM {}; DROP TABLE {};",
        q(into),
        typed.join(", "),
        q(&raw),
        q(&raw)
    ))
}
