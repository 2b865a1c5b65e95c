//! InfluxDB v1 `/query` (also the v1-compatible endpoint of v2 and v3).

use futures_util::StreamExt;

use super::csv::V1Parser;
use super::{status_error, transport, Conn, InfluxErrorKind};
use crate::sources::PointSink;

/// The first result of a query answered in JSON (`db` when given).
async fn json_result(
    conn: &Conn,
    q: &str,
    db: Option<&str>,
) -> Result<serde_json::Value, InfluxErrorKind> {
    let mut req = conn
        .authed(conn.http.post(format!("{}/query", conn.base)))
        .header("Accept", "application/json");
    if let Some(db) = db {
        req = req.query(&[("db", db)]);
    }
    let resp = req
        .form(&[("q", q)])
        .send()
        .await
        .map_err(|e| transport(&e, conn.timeout))?;
    if !resp.status().is_success() {
        return Err(status_error(resp).await);
    }
    let mut body: serde_json::Value = resp.json().await.map_err(|e| {
        let what: String = q.chars().take(40).collect();
        InfluxErrorKind::Parse(format!("{what}: {e}"))
    })?;
    let result = body["results"][0].take();
    if let Some(err) = result["error"].as_str() {
        return Err(InfluxErrorKind::Query(err.to_owned()));
    }
    Ok(result)
}

/// Fails with `NoDatabase` unless the database exists. Asked in JSON,
/// because a CSV response reports a missing database as an empty 200.
pub(crate) async fn check_database(conn: &Conn) -> Result<(), InfluxErrorKind> {
    let result = json_result(conn, "SHOW DATABASES", None).await?;
    let found = result["series"][0]["values"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .any(|r| r[0].as_str() == Some(conn.database.as_str()))
        })
        .unwrap_or(false);
    match (found, &conn.auth) {
        (true, _) => Ok(()),
        (false, super::Auth::None) => Err(InfluxErrorKind::NoDatabase(conn.database.clone())),
        // A user sees only the databases it has privileges on.
        (false, _) => Err(InfluxErrorKind::NoDatabaseVisible(conn.database.clone())),
    }
}

/// Runs a count query (`query::influxql_count`): the largest count, 0 for
/// a range without points.
pub(crate) async fn count(conn: &Conn, q: &str) -> Result<u64, InfluxErrorKind> {
    let result = json_result(conn, q, Some(&conn.database)).await?;
    // `[time, count, count, ...]`; no series at all when nothing is there.
    let row = result["series"][0]["values"][0].as_array();
    Ok(row
        .map(|r| {
            r.iter()
                .skip(1)
                .filter_map(|v| v.as_u64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0))
}

/// Runs one InfluxQL query and streams its rows into `out`.
pub(crate) async fn fetch(
    conn: &Conn,
    q: &str,
    ntags: usize,
    nfields: usize,
    out: &mut PointSink,
) -> Result<(), InfluxErrorKind> {
    let req = conn
        .authed(conn.http.post(format!("{}/query", conn.base)))
        .header("Accept", "application/csv")
        .query(&[
            ("db", conn.database.as_str()),
            ("epoch", "ns"),
            ("chunked", "true"),
            ("chunk_size", "10000"),
        ])
        .form(&[("q", q)]);
    let resp = req.send().await.map_err(|e| transport(&e, conn.timeout))?;
    if !resp.status().is_success() {
        return Err(status_error(resp).await);
    }
    // Rows are parsed into columns as the body arrives; full chunks go to
    // the staging writer, which appends one while the next is parsed.
    let mut parser = V1Parser::new(ntags, nfields);
    let mut stream = resp.bytes_stream();
    let closed = |_| InfluxErrorKind::StagingClosed;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| match transport(&e, conn.timeout) {
            InfluxErrorKind::Timeout(s) => InfluxErrorKind::Timeout(s),
            other => InfluxErrorKind::Truncated(other.to_string()),
        })?;
        parser.push(&chunk, out.columns(ntags))?;
        out.flush_if_full().await.map_err(closed)?;
    }
    parser.finish(out.columns(ntags))?;
    out.flush().await.map_err(closed)
}
