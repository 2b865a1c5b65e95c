//! InfluxDB as a source: one client for v1 (InfluxQL), v2 (Flux) and v3 (SQL).
//!
//! Long ranges are split into sub-queries of at most `max_query_hours`.
//! Responses are parsed as they arrive (see `msgpack.rs`, `csv.rs`,
//! `v2.rs`, `v3.rs`).
//! Transient failures (connect errors, timeouts, 5xx, a body cut short) are
//! retried with backoff; the retried sub-query's staged rows are discarded
//! first, so a retry never duplicates. Permanent ones (400, 401, 403, 404)
//! are not retried. Errors name the source, the URL without credentials and
//! the hour range.

pub mod csv;
pub mod msgpack;
pub mod query;
pub mod v1;
pub mod v2;
pub mod v3;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::{Fetch, PointSink, SourceError};
use crate::plan::{batches, Batch};
use crate::retry::{Failure, Policy};
use crate::secret::{resolve, Secret, SecretSource};
use crate::spec::{InfluxConfig, V3Format};

/// What went wrong talking to InfluxDB.
#[derive(Debug, thiserror::Error)]
pub enum InfluxErrorKind {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("timed out after {0}s")]
    Timeout(u64),
    #[error("authentication failed (HTTP 401): check the username/password or token")]
    Unauthorized,
    #[error("permission denied (HTTP 403): the credentials cannot read this database")]
    Forbidden,
    #[error("query rejected (HTTP 400): {0}")]
    BadQuery(String),
    #[error("not found (HTTP 404): {0}")]
    NotFound(String),
    #[error("server error (HTTP {0}): {1}")]
    Server(u16, String),
    #[error("HTTP {0}: {1}")]
    Http(u16, String),
    #[error("response cut short: {0}")]
    Truncated(String),
    #[error("database `{0}` does not exist")]
    NoDatabase(String),
    #[error("database `{0}` does not exist or these credentials cannot see it")]
    NoDatabaseVisible(String),
    #[error("bad response: {0}")]
    Parse(String),
    #[error("query error: {0}")]
    Query(String),
    #[error("staging stopped before the response was read")]
    StagingClosed,
}

impl InfluxErrorKind {
    /// Connection errors, timeouts, 5xx and bodies cut short are worth
    /// another attempt; the rest would get the same answer.
    fn failure(&self) -> Failure {
        match self {
            InfluxErrorKind::Connect(_)
            | InfluxErrorKind::Timeout(_)
            | InfluxErrorKind::Server(..)
            | InfluxErrorKind::Truncated(_) => Failure::Transient { retry_after: None },
            _ => Failure::Permanent,
        }
    }
}

/// Credentials, resolved at connect time.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    None,
    Basic { user: String, password: Secret },
    Token(Secret),
}

pub struct Influx {
    name: String,
    cfg: InfluxConfig,
    /// Resolved by `connect`.
    conn: Option<Conn>,
}

#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) http: reqwest::Client,
    /// Base URL, resolved, without a trailing slash.
    pub(crate) base: String,
    /// For messages: scheme, host, port and path, never credentials.
    pub(crate) shown: String,
    pub(crate) auth: Auth,
    pub(crate) database: String,
    pub(crate) timeout: Duration,
    /// v1: whether points are asked in MessagePack (see `v1.rs`).
    pub(crate) msgpack: Arc<AtomicBool>,
}

impl Conn {
    pub(crate) fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::None => rb,
            Auth::Basic { user, password } => rb.basic_auth(user, Some(password.expose())),
            Auth::Token(t) => match token_header(t) {
                Some(v) => rb.header(reqwest::header::AUTHORIZATION, v),
                None => rb,
            },
        }
    }
}

/// `Authorization: Token <t>`, marked sensitive so that the HTTP stack never
/// prints it (reqwest's `basic_auth`/`bearer_auth` do the same for theirs).
/// `None` for a token that cannot be a header value (it then fails as 401).
fn token_header(t: &crate::secret::Secret) -> Option<reqwest::header::HeaderValue> {
    let mut v = reqwest::header::HeaderValue::from_str(&format!("Token {}", t.expose())).ok()?;
    v.set_sensitive(true);
    Some(v)
}

pub use crate::http::shown_url;

/// Maps a transport error.
pub(crate) fn transport(e: &reqwest::Error, timeout: Duration) -> InfluxErrorKind {
    if e.is_timeout() {
        InfluxErrorKind::Timeout(timeout.as_secs())
    } else if e.is_connect() {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg = s.to_string();
            src = s.source();
        }
        InfluxErrorKind::Connect(msg)
    } else if e.is_body() || e.is_decode() {
        InfluxErrorKind::Truncated(e.to_string())
    } else {
        InfluxErrorKind::Connect(e.to_string())
    }
}

/// Maps a non-success status to an error, reading a short body for the message.
pub(crate) async fn status_error(resp: reqwest::Response) -> InfluxErrorKind {
    let status = resp.status().as_u16();
    let header = resp
        .headers()
        .get("X-Influxdb-Error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.trim().chars().take(300).collect();
    let msg = header.unwrap_or(body);
    match status {
        400 => InfluxErrorKind::BadQuery(msg),
        401 => InfluxErrorKind::Unauthorized,
        403 => InfluxErrorKind::Forbidden,
        404 => InfluxErrorKind::NotFound(msg),
        500..=599 => InfluxErrorKind::Server(status, msg),
        _ => InfluxErrorKind::Http(status, msg),
    }
}

impl Influx {
    pub fn new(name: &str, cfg: InfluxConfig) -> Influx {
        Influx {
            name: name.to_owned(),
            cfg,
            conn: None,
        }
    }

    fn target<'a>(&'a self, fetch: &'a Fetch) -> query::Target<'a> {
        query::Target {
            database: self.cfg.database.as_deref().unwrap_or(""),
            retention_policy: self.cfg.retention_policy.as_deref(),
            bucket: self.cfg.bucket.as_deref().unwrap_or(""),
            fetch,
        }
    }

    /// Sub-ranges of a batch, each one query.
    fn pieces(&self, b: Batch) -> Vec<Batch> {
        batches(b.from, b.to, self.cfg.max_query_hours)
    }

    /// The queries of a batch, in order. v1 shows both forms: which one is
    /// sent depends on the server (see `v1.rs`).
    pub fn queries(&self, fetch: &Fetch, b: Batch) -> Vec<String> {
        let t = self.target(fetch);
        self.pieces(b)
            .into_iter()
            .map(|p| match self.cfg.version {
                1 => format!(
                    "{}\n-- in CSV to a server that does not answer MessagePack (not InfluxDB 1.x):\n{}",
                    query::influxql_grouped(&t, p),
                    query::influxql(&t, p)
                ),
                2 => query::flux(&t, p),
                _ => query::v3_sql(&t, p),
            })
            .collect()
    }

    fn err(&self, b: Batch, kind: InfluxErrorKind) -> SourceError {
        let url = self
            .conn
            .as_ref()
            .map(|c| c.shown.clone())
            .unwrap_or_else(|| "<unresolved url>".into());
        SourceError::Influx {
            source_name: self.name.clone(),
            url,
            range: b.to_string(),
            kind,
        }
    }

    /// Resolves the URL and credentials and builds the client; contacts nothing.
    pub fn resolve(&mut self, secrets: &dyn SecretSource) -> Result<(), SourceError> {
        let r = |v: &str, key: &str| {
            resolve(v, &format!("`{key}`"), secrets)
                .map_err(|e| SourceError::Resolve(self.name.clone(), e))
        };
        let base = r(&self.cfg.url, "url")?
            .expose()
            .trim_end_matches('/')
            .to_owned();
        let auth = match (&self.cfg.token, &self.cfg.username, &self.cfg.password) {
            (Some(t), _, _) => Auth::Token(r(t, "token")?),
            (None, Some(u), Some(p)) => Auth::Basic {
                user: r(u, "username")?.expose().to_owned(),
                password: r(p, "password")?,
            },
            _ => Auth::None,
        };
        let database = match &self.cfg.database {
            Some(d) => r(d, "database")?.expose().to_owned(),
            None => String::new(),
        };
        let timeout = self.cfg.timeout.0;
        // Reading the system's CA certificates costs ~10 ms a process (a
        // hundred-odd files): only for an `https` URL.
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(base.starts_with("https://"))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(timeout)
            .build()
            .map_err(|e| SourceError::File {
                source_name: self.name.clone(),
                path: shown_url(&base),
                message: e.to_string(),
            })?;
        let conn = Conn {
            http,
            shown: shown_url(&base),
            base,
            auth,
            database,
            timeout,
            msgpack: Arc::default(),
        };
        self.conn = Some(conn);
        Ok(())
    }

    /// `retries:` retries of a transient failure, 500 ms doubling, at most 16 s apart.
    fn policy(&self) -> Policy {
        Policy::counted(
            self.cfg.retries,
            Duration::from_millis(500),
            Duration::from_secs(16),
        )
    }

    /// `resolve`, then the checks worth one round trip per run.
    pub async fn connect(&mut self, secrets: &dyn SecretSource) -> Result<(), SourceError> {
        self.resolve(secrets)?;
        if self.cfg.version == 1 {
            let conn = self.conn.as_ref().expect("just set");
            // A CSV response hides "database not found" as an empty 200: ask once, in JSON.
            let whole = Batch {
                from: crate::spec::Hour::floor(chrono::Utc::now()),
                to: crate::spec::Hour::floor(chrono::Utc::now()),
            };
            let mut attempt = 0;
            loop {
                let k = match v1::check_database(conn).await {
                    Ok(()) => break,
                    Err(k) => k,
                };
                match self.policy().wait(k.failure(), attempt, Duration::ZERO) {
                    Some(wait) => {
                        attempt += 1;
                        tokio::time::sleep(wait).await;
                    }
                    None => {
                        let mut e = self.err(whole, k);
                        if let SourceError::Influx { range, .. } = &mut e {
                            *range = "(database check)".into();
                        }
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// The count query of `estimate`, in the source's dialect.
    pub fn estimate_query(&self, fetch: &Fetch, b: Batch) -> Option<String> {
        let t = self.target(fetch);
        Some(match self.cfg.version {
            1 => query::influxql_count(&t, b),
            2 => query::flux_count(&t, b),
            _ => query::v3_count(&t, b),
        })
    }

    /// About the rows of `fetch` in `b`, counted by the server without
    /// sending the points: v1 the largest count of one field (a row holds
    /// at least one), v2 the points of all the fields (at least the rows),
    /// v3 the rows. A failure is no estimate (the extract that follows
    /// reports errors).
    pub async fn estimate(&self, fetch: &Fetch, b: Batch) -> Option<u64> {
        let conn = self.conn.as_ref()?;
        let q = self.estimate_query(fetch, b)?;
        let counted = match self.cfg.version {
            1 => v1::count(conn, &q).await,
            2 => v2::count(conn, self.cfg.org.as_deref().unwrap_or(""), &q).await,
            _ => v3::count(conn, &q).await,
        };
        match counted {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::debug!(source = %self.name, error = %e, "no row estimate");
                None
            }
        }
    }

    pub async fn extract(
        &self,
        fetch: &Fetch,
        b: Batch,
        out: &mut PointSink,
    ) -> Result<u64, SourceError> {
        let conn = self.conn.as_ref().expect("connect() before extract()");
        let t = self.target(fetch);
        let job = fetch;
        let mut total = 0;
        for piece in self.pieces(b) {
            let mut attempt = 0;
            loop {
                let before = out.rows();
                let res = match self.cfg.version {
                    1 => v1::fetch(conn, &t, piece, out).await,
                    2 => {
                        let org = self.cfg.org.as_deref().unwrap_or("");
                        v2::fetch(conn, org, &query::flux(&t, piece), job, out).await
                    }
                    _ => {
                        v3::fetch(
                            conn,
                            &query::v3_sql(&t, piece),
                            self.cfg.format,
                            &job.tags,
                            &query::v3_value_columns(job),
                            out,
                        )
                        .await
                    }
                };
                let k = match res {
                    Ok(()) => {
                        total += out.rows() - before;
                        break;
                    }
                    Err(k) => k,
                };
                let Some(wait) = self.policy().wait(k.failure(), attempt, Duration::ZERO) else {
                    return Err(self.err(piece, k));
                };
                attempt += 1;
                tracing::warn!(source = %self.name, range = %piece, attempt, error = %k, "retrying query");
                let (from_ns, to_ns) = ns_range(piece);
                let sent = out.rows() - before;
                out.discard(from_ns, to_ns, sent).await?;
                tokio::time::sleep(wait).await;
            }
        }
        out.flush().await?;
        Ok(total)
    }
}

pub(crate) fn ns_range(b: Batch) -> (i64, i64) {
    (
        b.from.0.timestamp_nanos_opt().unwrap_or(i64::MIN),
        b.to.0.timestamp_nanos_opt().unwrap_or(i64::MAX),
    )
}

/// A whole (small) answer body; a body cut short is `Truncated`.
pub(crate) async fn body_text(resp: reqwest::Response) -> Result<String, InfluxErrorKind> {
    resp.text()
        .await
        .map_err(|e| InfluxErrorKind::Truncated(e.to_string()))
}

/// Feeds a response body, as it arrives, to a line handler that buffers
/// points in `out`; full chunks go to staging between network reads.
pub(crate) async fn for_each_line(
    resp: reqwest::Response,
    timeout: Duration,
    out: &mut PointSink,
    mut f: impl FnMut(&str, &mut PointSink) -> Result<(), InfluxErrorKind>,
) -> Result<(), InfluxErrorKind> {
    let mut stream = resp.bytes_stream();
    let mut carry: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| match transport(&e, timeout) {
            InfluxErrorKind::Timeout(s) => InfluxErrorKind::Timeout(s),
            other => InfluxErrorKind::Truncated(other.to_string()),
        })?;
        carry.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(nl) = carry[start..].iter().position(|&b| b == b'\n') {
            let line = std::str::from_utf8(&carry[start..start + nl])
                .map_err(|_| InfluxErrorKind::Parse("response is not UTF-8".into()))?;
            f(line.trim_end_matches('\r'), out)?;
            start += nl + 1;
        }
        carry.drain(..start);
        out.flush_if_full()
            .await
            .map_err(|_| InfluxErrorKind::StagingClosed)?;
    }
    if !carry.is_empty() {
        let line = std::str::from_utf8(&carry)
            .map_err(|_| InfluxErrorKind::Parse("response is not UTF-8".into()))?;
        f(line.trim_end_matches('\r'), out)?;
    }
    Ok(())
}

/// The version-specific format setting, for messages.
pub fn format_name(f: V3Format) -> &'static str {
    match f {
        V3Format::Csv => "csv",
        V3Format::Jsonl => "jsonl",
        V3Format::Parquet => "parquet",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_token_header_is_sensitive() {
        let v = super::token_header(&crate::secret::Secret::new("tok-123")).unwrap();
        assert!(v.is_sensitive());
        assert_eq!(format!("{v:?}"), "Sensitive");
    }
}
