//! InfluxDB v1 `/query` (also the v1-compatible endpoint of v2 and v3).

use futures_util::StreamExt;

use super::csv::V1Chunker;
use super::{status_error, transport, Conn, InfluxErrorKind};
use crate::sources::{CsvError, PointSink};

/// Bytes of data rows per chunk handed to DuckDB's CSV reader.
const CHUNK_BYTES: usize = 4 << 20;

/// Fails with `NoDatabase` unless the database exists. Asked in JSON,
/// because a CSV response reports a missing database as an empty 200.
pub(crate) async fn check_database(conn: &Conn) -> Result<(), InfluxErrorKind> {
    let req = conn
        .authed(conn.http.post(format!("{}/query", conn.base)))
        .header("Accept", "application/json")
        .form(&[("q", "SHOW DATABASES")]);
    let resp = req.send().await.map_err(|e| transport(&e, conn.timeout))?;
    if !resp.status().is_success() {
        return Err(status_error(resp).await);
    }
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| InfluxErrorKind::Parse(format!("SHOW DATABASES: {e}")))?;
    let result = &body["results"][0];
    if let Some(err) = result["error"].as_str() {
        return Err(InfluxErrorKind::Query(err.to_owned()));
    }
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

/// Runs one InfluxQL query and streams its rows into `out`.
pub(crate) async fn fetch(
    conn: &Conn,
    q: &str,
    ntags: usize,
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
    // Rows are cut into chunks at line ends as the body arrives; DuckDB parses
    // one chunk while the next downloads.
    let mut chunker = V1Chunker::new(ntags);
    let mut stream = resp.bytes_stream();
    let mut carry: Vec<u8> = Vec::new();
    let staged = |e: CsvError| match e {
        CsvError::Closed => InfluxErrorKind::StagingClosed,
        CsvError::Rejected(m) => InfluxErrorKind::Parse(m),
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| match transport(&e, conn.timeout) {
            InfluxErrorKind::Timeout(s) => InfluxErrorKind::Timeout(s),
            other => InfluxErrorKind::Truncated(other.to_string()),
        })?;
        carry.extend_from_slice(&chunk);
        let start = chunker.feed(&carry)?;
        carry.drain(..start);
        if chunker.buf.len() >= CHUNK_BYTES {
            let rows = std::mem::take(&mut chunker.buf);
            out.v1_csv(rows, ntags).await.map_err(staged)?;
        }
    }
    if !carry.is_empty() {
        let line = std::mem::take(&mut carry);
        chunker.line(line.strip_suffix(b"\r").unwrap_or(&line))?;
    }
    if !chunker.buf.is_empty() {
        let rows = std::mem::take(&mut chunker.buf);
        out.v1_csv(rows, ntags).await.map_err(staged)?;
    }
    out.csv_done().await.map_err(staged)
}
