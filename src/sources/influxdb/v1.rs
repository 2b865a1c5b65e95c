//! InfluxDB v1 `/query` (also the v1-compatible endpoint of v2 and v3).
//!
//! Points are asked in MessagePack, grouped by the tags, from a server that
//! says it is InfluxDB 1.x (`X-Influxdb-Version` of the database check); in
//! CSV, with the tags as columns, from any other, and from a 1.x server
//! that answers MessagePack with anything else (then the connection stays
//! on CSV).

use std::sync::atomic::Ordering;

use futures_util::StreamExt;

use super::csv::V1Parser;
use super::msgpack::MsgpackParser;
use super::query::{self, Target};
use super::{status_error, transport, Conn, InfluxErrorKind};
use crate::plan::Batch;
use crate::sources::{Columns, PointSink};

const MSGPACK: &str = "application/x-msgpack";

/// The first result of a query answered in JSON (`db` when given), and the
/// server's `X-Influxdb-Version`.
async fn json_result(
    conn: &Conn,
    q: &str,
    db: Option<&str>,
) -> Result<(serde_json::Value, Option<String>), InfluxErrorKind> {
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
    let version = resp
        .headers()
        .get("X-Influxdb-Version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body: serde_json::Value = resp.json().await.map_err(|e| {
        let what: String = q.chars().take(40).collect();
        InfluxErrorKind::Parse(format!("{what}: {e}"))
    })?;
    let result = body["results"][0].take();
    if let Some(err) = result["error"].as_str() {
        return Err(InfluxErrorKind::Query(err.to_owned()));
    }
    Ok((result, version))
}

/// Fails with `NoDatabase` unless the database exists. Asked in JSON,
/// because a CSV response reports a missing database as an empty 200.
/// Points are then asked in MessagePack if the server is InfluxDB 1.x.
pub(crate) async fn check_database(conn: &Conn) -> Result<(), InfluxErrorKind> {
    let (result, version) = json_result(conn, "SHOW DATABASES", None).await?;
    let v1 = version.is_some_and(|v| v.trim_start_matches('v').starts_with("1."));
    conn.msgpack.store(v1, Ordering::Relaxed);
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
    let (result, _) = json_result(conn, q, Some(&conn.database)).await?;
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

/// Streams the points of `t` in `piece` into `out`: in MessagePack when
/// the server speaks it, else in CSV.
pub(crate) async fn fetch(
    conn: &Conn,
    t: &Target<'_>,
    piece: Batch,
    out: &mut PointSink,
) -> Result<(), InfluxErrorKind> {
    let (tags, nfields) = (&t.fetch.tags, t.fetch.fields.len());
    if conn.msgpack.load(Ordering::Relaxed) {
        let q = query::influxql_grouped(t, piece);
        let resp = send(conn, &q, MSGPACK).await?;
        let answered = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if answered.starts_with(MSGPACK) {
            return stream(conn, resp, out, MsgpackParser::new(tags, nfields)).await;
        }
        // Nothing of this answer was read: ask again, in CSV, from now on.
        tracing::debug!(content_type = %answered, "no MessagePack answer: asking in CSV");
        conn.msgpack.store(false, Ordering::Relaxed);
    }
    let q = query::influxql(t, piece);
    let resp = send(conn, &q, "application/csv").await?;
    stream(conn, resp, out, V1Parser::new(tags.len(), nfields)).await
}

/// Parses the body as it arrives, into the chunk being filled; full chunks
/// go to the staging writer, which appends one while the next is parsed.
async fn stream(
    conn: &Conn,
    resp: reqwest::Response,
    out: &mut PointSink,
    mut parser: impl Incremental,
) -> Result<(), InfluxErrorKind> {
    let ntags = parser.ntags();
    let mut body = resp.bytes_stream();
    let closed = |_| InfluxErrorKind::StagingClosed;
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| match transport(&e, conn.timeout) {
            InfluxErrorKind::Timeout(s) => InfluxErrorKind::Timeout(s),
            other => InfluxErrorKind::Truncated(other.to_string()),
        })?;
        parser.push(&piece, out.columns(ntags))?;
        out.flush_if_full().await.map_err(closed)?;
    }
    parser.end(out.columns(ntags))?;
    out.flush().await.map_err(closed)
}

/// A parser of an answer that arrives in pieces.
trait Incremental {
    /// Tag columns of the rows it gives.
    fn ntags(&self) -> usize;
    fn push(&mut self, piece: &[u8], out: &mut Columns) -> Result<(), InfluxErrorKind>;
    /// The body has ended.
    fn end(&mut self, out: &mut Columns) -> Result<(), InfluxErrorKind>;
}

impl Incremental for V1Parser {
    fn ntags(&self) -> usize {
        V1Parser::ntags(self)
    }
    fn push(&mut self, piece: &[u8], out: &mut Columns) -> Result<(), InfluxErrorKind> {
        V1Parser::push(self, piece, out)
    }
    fn end(&mut self, out: &mut Columns) -> Result<(), InfluxErrorKind> {
        self.finish(out)
    }
}

impl Incremental for MsgpackParser {
    fn ntags(&self) -> usize {
        MsgpackParser::ntags(self)
    }
    fn push(&mut self, piece: &[u8], out: &mut Columns) -> Result<(), InfluxErrorKind> {
        MsgpackParser::push(self, piece, out)
    }
    fn end(&mut self, _: &mut Columns) -> Result<(), InfluxErrorKind> {
        self.finish()
    }
}

/// Sends query `q` asking for `accept`; the answer, once its status is a success.
async fn send(conn: &Conn, q: &str, accept: &str) -> Result<reqwest::Response, InfluxErrorKind> {
    let req = conn
        .authed(conn.http.post(format!("{}/query", conn.base)))
        .header("Accept", accept)
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
    Ok(resp)
}
