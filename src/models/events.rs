//! A model's rows as Prefect events (`events:` on a model, e.g. threshold
//! alerts): each row whose `episode` its table does not hold yet becomes one
//! event, sent before the range is written to any sink.
//!
//! Sent once: a rerun, a lookback or a backfill recomputing the same hours
//! finds the episode in the table and sends nothing. The event's id is
//! derived from the pipeline, the model and the episode, so the one repeat
//! that can happen (a crash after sending, before the sinks were written)
//! is the same event to Prefect. If Prefect does not take the events, the
//! model fails and keeps its hours pending: the next run sends them.

use duckdb::Connection;
use serde_json::{json, Value};

use super::stage;
use crate::error::{cause, EventsFailed, JobError};
use crate::sinks::Sink;
use crate::spec::Model;
use crate::template::quote_ident;
use crate::time::KeyRange;

/// Events sent in one request (Prefect Cloud takes bodies up to 5 MiB).
const BATCH: usize = 100;

/// One row of the result: its episode, resource and the row as JSON.
struct Row {
    episode: String,
    resource: String,
    payload: Value,
}

/// The event of `row`, named `name`, of `model` in `pipeline`.
fn event(pipeline: &str, model: &str, name: &str, row: &Row, at: &str) -> Value {
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("duckhour:event:{pipeline}:{model}:{}", row.episode).as_bytes(),
    );
    let mut resource = json!({"prefect.resource.id": row.resource});
    if let Some(station) = row.payload.get("station").and_then(Value::as_str) {
        resource["prefect.resource.name"] = json!(station);
    }
    json!({
        "id": id.to_string(),
        "occurred": at,
        "event": name,
        "resource": resource,
        "related": [{
            "prefect.resource.id": format!("duckhour.pipeline.{pipeline}"),
            "prefect.resource.role": "pipeline",
            "prefect.resource.name": pipeline,
        }],
        "payload": row.payload,
    })
}

/// A column's text (as DuckDB casts it to VARCHAR; timestamps as epoch
/// microseconds) as JSON of its type: numbers and lists of numbers as
/// numbers, timestamps in RFC 3339 (UTC), the rest as text.
fn json_of(ty: &str, text: Option<String>) -> Value {
    let Some(text) = text else { return Value::Null };
    let numeric = |t: &str| {
        matches!(
            t,
            "TINYINT"
                | "SMALLINT"
                | "INTEGER"
                | "BIGINT"
                | "HUGEINT"
                | "UTINYINT"
                | "USMALLINT"
                | "UINTEGER"
                | "UBIGINT"
                | "FLOAT"
                | "DOUBLE"
        ) || t.starts_with("DECIMAL")
    };
    if ty.starts_with("TIMESTAMP") {
        return text
            .parse::<i64>()
            .ok()
            .and_then(chrono::DateTime::from_timestamp_micros)
            .map_or(Value::String(text), |t| {
                json!(t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            });
    }
    let parsed = if numeric(ty) || ty.strip_suffix("[]").is_some_and(numeric) {
        serde_json::from_str(&text).ok()
    } else if ty == "BOOLEAN" {
        Some(json!(text == "true"))
    } else {
        None
    };
    parsed.unwrap_or(Value::String(text))
}

/// The rows of `m`'s computed result (`model_result_<m>`).
fn rows(conn: &Connection, m: &Model) -> Result<Vec<Row>, JobError> {
    let result = quote_ident(&stage::result_table(m));
    let internal = |e: duckdb::Error| {
        JobError::internal_in(format!("model `{}`: reading its rows", m.name), e)
    };
    let mut stmt = conn
        .prepare(&format!("DESCRIBE SELECT * FROM {result}"))
        .map_err(internal)?;
    let cols: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(internal)?;
    for need in ["episode", "resource"] {
        if !cols.iter().any(|(c, _)| c == need) {
            return Err(JobError::Template(cause(format!(
                "model `{}` sends events: its rows need `episode` and `resource` columns; `{need}` is missing",
                m.name
            ))));
        }
    }
    let select: Vec<String> = cols
        .iter()
        .map(|(c, ty)| {
            let c = quote_ident(c);
            if ty.starts_with("TIMESTAMP") {
                format!("epoch_us({c})::VARCHAR")
            } else {
                format!("{c}::VARCHAR")
            }
        })
        .collect();
    let mut stmt = conn
        .prepare(&format!("SELECT {} FROM {result}", select.join(", ")))
        .map_err(internal)?;
    let n = cols.len();
    let texts: Vec<Vec<Option<String>>> = stmt
        .query_map([], |r| {
            (0..n).map(|i| r.get::<_, Option<String>>(i)).collect()
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(internal)?;
    texts
        .into_iter()
        .map(|row| {
            let payload: serde_json::Map<String, Value> = cols
                .iter()
                .zip(row)
                .map(|((c, ty), text)| (c.clone(), json_of(ty, text)))
                .collect();
            match (payload["episode"].as_str(), payload["resource"].as_str()) {
                (Some(e), Some(r)) => Ok(Row {
                    episode: e.to_owned(),
                    resource: r.to_owned(),
                    payload: Value::Object(payload.clone()),
                }),
                _ => Err(JobError::Template(cause(format!(
                    "model `{}` sends events: a row has no `episode` or `resource`",
                    m.name
                )))),
            }
        })
        .collect()
}

/// Sends the episodes of the computed range `r` of `m` that its table does
/// not hold yet, as events `name`; how many were sent.
#[allow(clippy::too_many_arguments)]
pub async fn send_new(
    client: &crate::prefect::Client,
    pipeline: &str,
    conn: &Connection,
    gate: &std::sync::RwLock<()>,
    sinks: &[&Sink],
    m: &Model,
    name: &str,
    r: KeyRange,
) -> Result<usize, JobError> {
    let rows = tokio::task::block_in_place(|| {
        let _g = gate.read().unwrap_or_else(|p| p.into_inner());
        rows(conn, m)
    })?;
    if rows.is_empty() {
        return Ok(0);
    }
    let held = crate::sinks::models::read_episodes(sinks, conn, gate, m, r).await?;
    let at = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let new: Vec<Value> = rows
        .iter()
        .filter(|row| !held.contains(&row.episode))
        .map(|row| event(pipeline, &m.name, name, row, &at))
        .collect();
    for chunk in new.chunks(BATCH) {
        client
            .emit_events(chunk)
            .await
            .map_err(|e| JobError::Events {
                model: m.name.clone(),
                failed: Box::new(EventsFailed::Refused {
                    event: name.to_owned(),
                    count: new.len(),
                    range: r.to_string(),
                    cause: e,
                }),
            })?;
    }
    Ok(new.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values keep their type: numbers, lists of numbers, UTC timestamps.
    #[test]
    fn payload_values() {
        assert_eq!(json_of("DOUBLE", Some("410.5".into())), json!(410.5));
        assert_eq!(
            json_of("DOUBLE[]", Some("[401.0, 402.5]".into())),
            json!([401.0, 402.5])
        );
        assert_eq!(
            json_of("TIMESTAMP WITH TIME ZONE", Some("1795147200000000".into())),
            json!("2026-11-20T04:00:00Z")
        );
        assert_eq!(json_of("VARCHAR", Some("410".into())), json!("410"));
        assert_eq!(json_of("INTEGER", None), Value::Null);
    }

    /// The id comes from the episode alone: the same episode found by
    /// another run, at another instant, is the same event.
    #[test]
    fn an_episode_is_one_event() {
        let row = Row {
            episode: "no2|berlin-mitte|alert|2026-11-20T03:00:00Z".into(),
            resource: "air-quality.station.berlin-mitte".into(),
            payload: json!({"station": "berlin-mitte", "values": [401.0, 402.5, 410.0]}),
        };
        let a = event(
            "hourly",
            "alerts",
            "air-quality.threshold.exceeded",
            &row,
            "2026-11-20T06:10:00Z",
        );
        let b = event(
            "hourly",
            "alerts",
            "air-quality.threshold.exceeded",
            &row,
            "2026-11-21T00:00:00Z",
        );
        assert_eq!(a["id"], b["id"]);
        assert_eq!(a["event"], "air-quality.threshold.exceeded");
        assert_eq!(
            a["resource"],
            json!({"prefect.resource.id": "air-quality.station.berlin-mitte", "prefect.resource.name": "berlin-mitte"})
        );
        assert_eq!(a["payload"]["values"][2], 410.0);
        let other = Row {
            episode: "no2|berlin-mitte|alert|2026-11-20T04:00:00Z".into(),
            ..row
        };
        assert_ne!(
            a["id"],
            event(
                "hourly",
                "alerts",
                "air-quality.threshold.exceeded",
                &other,
                "2026-11-20T06:10:00Z"
            )["id"]
        );
    }
}
