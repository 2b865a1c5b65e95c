//! The few BigQuery REST calls the sink makes (datasets, tables, insertAll,
//! jobs.query), with retries: connection errors, 429, 5xx and the 403s whose
//! reason is `rateLimitExceeded` or `quotaExceeded` are retried with backoff
//! for up to [`RETRY_BUDGET`], and a write that lost to a concurrent writer
//! (the emulator's DuckLake commit conflict, on any call) is sent again
//! after a jittered wait; a 401 drops the cached token and tries once more.
//! Request bodies are sent uncompressed (the emulator rejects gzip).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::auth::Tokens;
use crate::retry::{retry_after, Failure, Policy, Spent};

pub const RETRY_BUDGET: Duration = Duration::from_secs(60);
pub const GOOGLE_ENDPOINT: &str = "https://bigquery.googleapis.com/bigquery/v2";

/// A failed call: HTTP status (0: no answer), BigQuery's reason and message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub reason: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.status, self.reason.as_str()) {
            (0, _) => write!(f, "{}", self.message),
            (401, _) => write!(
                f,
                "authentication failed (401): {}: check `credentials`",
                self.message
            ),
            (s, "") => write!(f, "HTTP {s}: {}", self.message),
            (s, r) => write!(f, "HTTP {s} {r}: {}", self.message),
        }
    }
}

/// How BigQuery's errors are retried: 429 and a 403 whose reason is
/// `rateLimitExceeded` or `quotaExceeded` are throttling, 5xx transient,
/// the rest permanent.
fn classify(status: u16, reason: &str, retry_after: Option<Duration>) -> Failure {
    match status {
        429 => Failure::Throttled { retry_after },
        403 if matches!(reason, "rateLimitExceeded" | "quotaExceeded") => {
            Failure::Throttled { retry_after }
        }
        500 | 502 | 503 | 504 => Failure::Transient { retry_after },
        _ => Failure::Permanent,
    }
}

/// Whether a failed query lost to another writer's transaction on the same
/// table, as BigQuery says it for DML ("Could not serialize access to table
/// ... due to concurrent update", "Transaction is aborted due to concurrent
/// update against table ...", 400 `invalidQuery`, per its documentation on
/// DML concurrency) and as the emulator does ("Failed to commit DuckLake
/// transaction"). Nothing of the statement was applied.
pub fn is_conflict(e: &ApiError) -> bool {
    const SAID: [&str; 3] = [
        "due to concurrent update",
        "Could not serialize access to table",
        "Failed to commit DuckLake transaction",
    ];
    e.status == 400 && SAID.iter().any(|s| e.message.contains(s))
}

/// Every call: retried within [`RETRY_BUDGET`], throttled or not, waits up to 8 s.
const POLICY: Policy = Policy::timed(RETRY_BUDGET, Duration::from_secs(8));

/// `{"error": {"code", "message", "errors": [{"reason", "message"}]}}`.
fn error_of(status: u16, body: &Value) -> ApiError {
    let e = &body["error"];
    let reason = e["errors"][0]["reason"].as_str().unwrap_or("").to_owned();
    let message = e["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string().chars().take(300).collect());
    ApiError {
        status,
        reason,
        message,
    }
}

/// An answer's status, `Retry-After` and body (JSON; a body that is not
/// JSON as an error message, cut to 300 characters).
async fn answer(resp: reqwest::Response) -> (u16, Option<Duration>, Value) {
    let status = resp.status().as_u16();
    let hint = retry_after(resp.headers());
    let v: Value = match resp.bytes().await {
        Ok(b) if b.is_empty() => Value::Null,
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|_| {
            json!({"error": {"message": String::from_utf8_lossy(&b).chars().take(300).collect::<String>()}})
        }),
        Err(e) => json!({"error": {"message": e.to_string()}}),
    };
    (status, hint, v)
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    pub project: String,
    tokens: Tokens,
    /// Calls sent again after a write conflict ([`is_conflict`]), so far.
    conflicts: std::sync::atomic::AtomicU64,
    /// Off while a sink that failed before is probed: one attempt per call.
    retry: std::sync::atomic::AtomicBool,
}

impl Api {
    pub fn new(
        http: reqwest::Client,
        endpoint: Option<&str>,
        project: &str,
        tokens: Tokens,
    ) -> Api {
        Api {
            http,
            base: endpoint
                .unwrap_or(GOOGLE_ENDPOINT)
                .trim_end_matches('/')
                .to_owned(),
            project: project.to_owned(),
            tokens,
            conflicts: Default::default(),
            retry: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Whether calls are retried under the policy ([`RETRY_BUDGET`]), or
    /// sent once (a probe).
    pub fn retrying(&self, on: bool) {
        self.retry.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Calls sent again after a write conflict, so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn describe_auth(&self) -> String {
        self.tokens.describe()
    }

    /// The error of a call that got no answer.
    fn unreachable(&self, e: &reqwest::Error) -> ApiError {
        let cause = std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| e.to_string());
        ApiError {
            status: 0,
            reason: String::new(),
            message: format!(
                "{} unreachable: {cause}",
                crate::http::shown_url(&self.base)
            ),
        }
    }

    /// One call; answers other than the retried ones come back as they are.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ApiError> {
        let url = format!("{}/projects/{}{path}", self.base, self.project);
        let mut spent = Spent::start();
        let mut attempt = 0;
        let mut reauthed = false;
        loop {
            let token = self.tokens.token().await.map_err(|m| ApiError {
                status: 0,
                reason: String::new(),
                message: m,
            })?;
            let mut rb = self.http.request(method.clone(), &url);
            if let Some(t) = &token {
                rb = rb.bearer_auth(t.expose());
            }
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let (failure, last) = match rb.send().await {
                Ok(resp) => {
                    let (status, hint, v) = answer(resp).await;
                    if (200..300).contains(&status) {
                        return Ok((status, v));
                    }
                    let err = error_of(status, &v);
                    if status == 401 && token.is_some() && !reauthed {
                        reauthed = true;
                        self.tokens.invalidate().await;
                        continue;
                    }
                    // A write that lost to another writer is sent again
                    // here, unless it carries a requestId: the same id
                    // would get the failed job back, so its caller sends
                    // it again under a new one.
                    let by_id = body.is_some_and(|b| b.get("requestId").is_some());
                    match classify(status, &err.reason, hint) {
                        Failure::Permanent if is_conflict(&err) && !by_id => {
                            self.conflicts
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            (Failure::Conflict, err)
                        }
                        Failure::Permanent => return Ok((status, v)),
                        f => (f, err),
                    }
                }
                Err(e) => (
                    Failure::Transient { retry_after: None },
                    self.unreachable(&e),
                ),
            };
            let retry = self.retry.load(std::sync::atomic::Ordering::Relaxed);
            let Some(wait) = spent.wait(&POLICY, failure, attempt).filter(|_| retry) else {
                let mut last = last;
                last.message = format!(
                    "{} (gave up after {}s of retries)",
                    last.message,
                    spent.elapsed().as_secs()
                );
                return Err(last);
            };
            tracing::debug!(status = last.status, reason = %last.reason, ?wait, "bigquery: retrying");
            attempt += 1;
            tokio::time::sleep(wait).await;
        }
    }

    /// A call that must succeed.
    async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let (status, v) = self.call(method, path, body).await?;
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(error_of(status, &v))
        }
    }

    /// Creates the dataset unless it exists.
    pub async fn ensure_dataset(
        &self,
        dataset: &str,
        location: Option<&str>,
    ) -> Result<(), ApiError> {
        let (status, v) = self
            .call(Method::GET, &format!("/datasets/{dataset}"), None)
            .await?;
        match status {
            200 => return Ok(()),
            404 => {}
            _ => return Err(error_of(status, &v)),
        }
        let mut body =
            json!({"datasetReference": {"projectId": self.project, "datasetId": dataset}});
        if let Some(l) = location {
            body["location"] = json!(l);
        }
        let (status, v) = self.call(Method::POST, "/datasets", Some(&body)).await?;
        match status {
            200 | 201 | 409 => Ok(()),
            _ => Err(error_of(status, &v)),
        }
    }

    /// The table's resource, or `None` when it does not exist.
    pub async fn get_table(&self, dataset: &str, table: &str) -> Result<Option<Value>, ApiError> {
        let (status, v) = self
            .call(
                Method::GET,
                &format!("/datasets/{dataset}/tables/{table}"),
                None,
            )
            .await?;
        match status {
            200 => Ok(Some(v)),
            404 => Ok(None),
            _ => Err(error_of(status, &v)),
        }
    }

    /// Creates a table from its resource; `false` when it already existed.
    pub async fn create_table(&self, dataset: &str, resource: &Value) -> Result<bool, ApiError> {
        let (status, v) = self
            .call(
                Method::POST,
                &format!("/datasets/{dataset}/tables"),
                Some(resource),
            )
            .await?;
        match status {
            200 | 201 => Ok(true),
            409 => Ok(false),
            _ => Err(error_of(status, &v)),
        }
    }

    pub async fn delete_table(&self, dataset: &str, table: &str) -> Result<(), ApiError> {
        let (status, v) = self
            .call(
                Method::DELETE,
                &format!("/datasets/{dataset}/tables/{table}"),
                None,
            )
            .await?;
        match status {
            200 | 204 | 404 => Ok(()),
            _ => Err(error_of(status, &v)),
        }
    }

    /// `tabledata.insertAll`; returns the response (which may hold `insertErrors`).
    pub async fn insert_all(
        &self,
        dataset: &str,
        table: &str,
        rows: Vec<Value>,
    ) -> Result<Value, ApiError> {
        let body = json!({"rows": rows, "skipInvalidRows": false, "ignoreUnknownValues": false});
        self.ok(
            Method::POST,
            &format!("/datasets/{dataset}/tables/{table}/insertAll"),
            Some(&body),
        )
        .await
    }

    /// `jobs.query` of one GoogleSQL statement with a `requestId`, waiting for
    /// it to finish. A duplicate answer to a retried request means the
    /// statement already ran.
    pub async fn query(
        &self,
        sql: &str,
        request_id: &str,
        location: Option<&str>,
    ) -> Result<Value, ApiError> {
        let mut body = json!({
            "query": sql,
            "useLegacySql": false,
            "requestId": request_id,
            "timeoutMs": 60000,
        });
        if let Some(l) = location {
            body["location"] = json!(l);
        }
        let (status, v) = self.call(Method::POST, "/queries", Some(&body)).await?;
        let mut v = match status {
            200 => v,
            409 if error_of(status, &v).reason == "duplicate" => {
                return Ok(json!({"jobComplete": true, "duplicate": true}))
            }
            _ => return Err(error_of(status, &v)),
        };
        let t0 = Instant::now();
        while v["jobComplete"] != json!(true) {
            let job = v["jobReference"]["jobId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if job.is_empty() || t0.elapsed() > Duration::from_secs(600) {
                return Err(ApiError {
                    status: 0,
                    reason: String::new(),
                    message: format!("query did not complete: {}", v["jobReference"]),
                });
            }
            let mut path = format!("/queries/{job}?timeoutMs=10000");
            if let Some(l) = v["jobReference"]["location"].as_str() {
                path.push_str(&format!("&location={l}"));
            }
            v = self.ok(Method::GET, &path, None).await?;
        }
        if let Some(e) = v
            .get("errors")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return Err(ApiError {
                status: 200,
                reason: e["reason"].as_str().unwrap_or("").to_owned(),
                message: e["message"].as_str().unwrap_or("query failed").to_owned(),
            });
        }
        Ok(v)
    }
}

impl Api {
    /// The schema (name, type) and every row of a `SELECT`, page by page
    /// (`jobs.getQueryResults` with the page token); values as BigQuery's
    /// REST API gives them (`f[].v`).
    pub async fn select(
        &self,
        sql: &str,
        request_id: &str,
        location: Option<&str>,
    ) -> Result<(Vec<(String, String)>, Vec<Vec<Value>>), ApiError> {
        let mut v = self.query(sql, request_id, location).await?;
        let schema: Vec<(String, String)> = v["schema"]["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                (
                    f["name"].as_str().unwrap_or_default().to_owned(),
                    f["type"].as_str().unwrap_or("STRING").to_owned(),
                )
            })
            .collect();
        let job = v["jobReference"]["jobId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let location = v["jobReference"]["location"].as_str().map(str::to_owned);
        let mut rows = Vec::new();
        loop {
            for r in v["rows"].as_array().into_iter().flatten() {
                rows.push(
                    r["f"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| c["v"].clone())
                        .collect(),
                );
            }
            let Some(token) = v["pageToken"].as_str().filter(|t| !t.is_empty()) else {
                break;
            };
            if job.is_empty() {
                break;
            }
            let mut path = format!("/queries/{job}?pageToken={}", urlencode(token));
            if let Some(l) = &location {
                path.push_str(&format!("&location={l}"));
            }
            v = self.ok(Method::GET, &path, None).await?;
        }
        Ok((schema, rows))
    }
}

/// Percent-encodes a query parameter value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_errors_are_retried() {
        let told = Some(Duration::from_secs(3));
        assert_eq!(
            classify(429, "", told),
            Failure::Throttled { retry_after: told }
        );
        assert_eq!(
            classify(503, "backendError", None),
            Failure::Transient { retry_after: None }
        );
        for reason in ["rateLimitExceeded", "quotaExceeded"] {
            assert_eq!(
                classify(403, reason, None),
                Failure::Throttled { retry_after: None }
            );
        }
        for (status, reason) in [(403, "accessDenied"), (400, "invalid"), (404, "notFound")] {
            assert_eq!(classify(status, reason, told), Failure::Permanent);
        }
    }

    #[test]
    fn errors_read_bigquery_error_bodies() {
        let body = json!({"error": {"code": 403, "message": "Exceeded rate limits: too many table update operations", "errors": [{"reason": "rateLimitExceeded", "message": "x", "domain": "usageLimits"}], "status": "PERMISSION_DENIED"}});
        let conflict = |m: &str| ApiError {
            status: 400,
            reason: "invalidQuery".into(),
            message: m.into(),
        };
        assert!(is_conflict(&conflict(
            "Could not serialize access to table p:d.t due to concurrent update"
        )));
        assert!(is_conflict(&conflict("Transaction is aborted due to concurrent update against table p:d.t. Transaction ID: 66b4")));
        assert!(is_conflict(&conflict(
            "Failed to commit: Failed to commit DuckLake transaction: conflict"
        )));
        assert!(!is_conflict(&conflict(
            "Syntax error: Unexpected end of script"
        )));
        let e = error_of(403, &body);
        assert_eq!(
            e.to_string(),
            "HTTP 403 rateLimitExceeded: Exceeded rate limits: too many table update operations"
        );
        let e = error_of(
            401,
            &json!({"error": {"code": 401, "message": "Request had invalid authentication credentials."}}),
        );
        assert_eq!(e.to_string(), "authentication failed (401): Request had invalid authentication credentials.: check `credentials`");
    }
}
