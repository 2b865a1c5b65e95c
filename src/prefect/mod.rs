//! The Prefect REST client: one [`Client`] serves a Prefect server
//! (`http://host:4200/api`) and Prefect Cloud (the workspace URL, with a
//! Bearer API key). This module owns the client, its retries and its
//! errors; what it asks for is in `blocks` (the `PipelineStateBlock` type,
//! schema and documents, secrets), `limits` (concurrency limits and
//! leases), `runs` (flow runs, task runs, logs, events, artifacts) and
//! `deploy` (work pools and deployments).
//!
//! Every call is retried on 429, 408, 502, 503, 504 and connection errors,
//! honouring `Retry-After`, for up to [`RETRY_BUDGET`] (429s for their own
//! budget); 401, 403, 404 and 422 become errors that name the block or
//! limit, with what Prefect said, a plan's refusal told from a role's. Errors never carry a secret: the key
//! is only ever put in a header, and secret values only leave this module
//! inside [`Secret`].

use std::time::Duration;

mod blocks;
pub mod deploy;
mod limits;
pub mod runs;

pub use blocks::{block_name, state_schema_fields, valid_block_name, BlockDoc, SchemaIds};
pub use limits::Take;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::http::shown_url;
use crate::retry::{retry_after, Failure, Policy, Spent};
use crate::secret::Secret;

/// How long one call of a run keeps retrying a server that is restarting or busy.
pub const RETRY_BUDGET: Duration = Duration::from_secs(60);
/// The same for commands that only read (`status`, `dry-run`): answer soon.
pub const READ_RETRY_BUDGET: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The block type slug of the Python class `PipelineStateBlock`.
pub const STATE_SLUG: &str = "pipelinestateblock";

/// What went wrong, without the object it happened to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// 401, with the server's message: no key, an unknown or expired one.
    Unauthorized(String),
    /// 403 for the key's role (or a custom role's missing permission),
    /// with the server's message.
    Forbidden(String),
    /// 403 for a plan's object limit (Cloud's "maximum number of
    /// deployments", ...): not the role's doing.
    PlanLimit(String),
    /// 403 for something the workspace's plan does not include (Cloud's
    /// "plan does not support" a work pool type, ...).
    NotInPlan(String),
    NotFound,
    Conflict(String),
    Invalid(String),
    Status(u16, String),
    /// Unreachable for the given seconds.
    Unreachable(String, u64),
    Protocol(String),
    /// Secret data came back masked (`********`): the key may read blocks
    /// but not their secret values.
    Masked,
    /// 404 on a path every server and workspace has: the URL names no
    /// workspace, or the key is not a member of it (Prefect Cloud answers
    /// such a key 404 on every path).
    NoWorkspace,
}

/// What Prefect puts in place of a secret value for a key that may not read it.
pub const MASKED: &str = "********";

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorKind::Unauthorized(d) => write!(
                f,
                "unauthorized (401): no API key, or one Prefect does not know (mistyped, deleted or expired); check `api_key`{}",
                said(d)
            ),
            ErrorKind::Forbidden(d) => write!(
                f,
                "forbidden (403): the API key's role may not do this; give it the Developer role, or a custom role that may (README, \"Prefect Cloud\"){}",
                said(d)
            ),
            ErrorKind::PlanLimit(d) => write!(
                f,
                "refused by the workspace's plan (403), not by the key's role: a limit of the plan is reached; delete what is no longer used (old deployments, work pools) or move to a plan with a higher limit{}",
                said(d)
            ),
            ErrorKind::NotInPlan(d) => write!(
                f,
                "refused by the workspace's plan (403), not by the key's role: the plan does not include this; upgrade the plan, or do without it (without a work pool and deployments, `duckhour serve` or cron run the pipelines and still report every run to Prefect){}",
                said(d)
            ),
            ErrorKind::NoWorkspace => f.write_str(
                "not found (404) on a path every Prefect server and workspace has: the URL is not an API URL (`http://host:4200/api`, or `https://api.prefect.cloud/api/accounts/<account>/workspaces/<workspace>`), or the API key is not a member of that workspace",
            ),
            ErrorKind::NotFound => f.write_str("not found (404)"),
            ErrorKind::Conflict(d) => write!(f, "conflict (409): {d}"),
            ErrorKind::Invalid(d) => write!(f, "rejected (422): {d}"),
            ErrorKind::Status(s, d) => write!(f, "HTTP {s}: {d}"),
            ErrorKind::Unreachable(m, secs) => write!(f, "unreachable for {secs}s: {m}"),
            ErrorKind::Protocol(m) => write!(f, "unexpected response: {m}"),
            ErrorKind::Masked => f.write_str(
                "its secret value came back masked (`********`): the API key may not read secret block data; give it the Developer role, or a custom role that may read secret blocks",
            ),
        }
    }
}

/// A failed call: the server, what it was about (e.g. "block `hourly-co`") and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("prefect {server}: {what}: {kind}")]
pub struct PrefectError {
    pub server: String,
    pub what: String,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    server: String,
    key: Option<Secret>,
    budget: Duration,
    /// How long a call keeps waiting out 429s (Prefect Cloud's rate limits,
    /// each with its `Retry-After`); at least `budget`.
    throttle_budget: Duration,
    timeout: Duration,
    /// A Prefect Cloud workspace: its API is rate limited per minute.
    cloud: bool,
}

/// Prefect Cloud's API URLs name a workspace,
/// `…/api/accounts/<account id>/workspaces/<workspace id>`; a Prefect
/// server's is `…/api`. Told by the path, so that a proxy in front of
/// Cloud counts as Cloud.
fn is_cloud(base: &str) -> bool {
    let path = base.split("://").nth(1).unwrap_or(base);
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    matches!(parts.as_slice(), [.., "api", "accounts", a, "workspaces", w] if !a.is_empty() && !w.is_empty())
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
    /// An earlier attempt of this call may have been applied by the server
    /// though its answer was lost: it timed out, its connection broke after
    /// sending, or a gateway answered 502. (A 503 or 429 from Prefect itself
    /// means the request was not applied.)
    retried: bool,
}

impl Reply {
    fn json(&self) -> Result<Value, ErrorKind> {
        serde_json::from_slice(&self.body).map_err(|e| ErrorKind::Protocol(e.to_string()))
    }
}

const NO_DETAIL: &str = "(no detail)";

/// What a Prefect error body says, shortened: it is shown to the user.
/// Prefect answers `{"detail": ...}` or, for validation errors,
/// `{"exception_message", "exception_detail": [{loc, msg}], "request_body"}`;
/// the request body is never repeated.
fn detail(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => {
            if let Some(Value::Array(items)) = o.get("exception_detail") {
                items
                    .iter()
                    .map(|i| {
                        let loc: Vec<String> = i
                            .get("loc")
                            .and_then(Value::as_array)
                            .map(|l| {
                                l.iter()
                                    .map(|p| {
                                        p.as_str().map_or_else(|| p.to_string(), str::to_owned)
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        let msg = i.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                        format!("{}: {msg}", loc.join("."))
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            } else {
                match o.get("detail").or_else(|| o.get("exception_message")) {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => NO_DETAIL.into(),
                }
            }
        }
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    let mut t: String = text.chars().take(300).collect();
    if t.len() < text.len() {
        t.push('…');
    }
    t
}

/// `; Prefect said: "…"`, or nothing when it said nothing.
fn said(detail: &str) -> String {
    if detail.is_empty() || detail == NO_DETAIL {
        String::new()
    } else {
        format!("; Prefect said: \"{detail}\"")
    }
}

/// What a 403 is about, told by its message as Prefect's own client tells
/// it: "maximum number" is a plan's object limit (`ObjectLimitReached`,
/// prefect/client/orchestration/_deployments/client.py), "plan does not
/// support" a feature outside the plan (`ObjectUnsupported`,
/// _work_pools/client.py); anything else is the role.
fn forbidden(detail: String) -> ErrorKind {
    let lower = detail.to_lowercase();
    if lower.contains("maximum number") {
        ErrorKind::PlanLimit(detail)
    } else if lower.contains("plan does not support") {
        ErrorKind::NotInPlan(detail)
    } else {
        ErrorKind::Forbidden(detail)
    }
}

/// The error for a status the caller did not expect.
fn status_kind(status: StatusCode, body: &[u8]) -> ErrorKind {
    match status.as_u16() {
        401 => ErrorKind::Unauthorized(detail(body)),
        403 => forbidden(detail(body)),
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict(detail(body)),
        422 => ErrorKind::Invalid(detail(body)),
        s => ErrorKind::Status(s, detail(body)),
    }
}

impl Client {
    /// `base` is the API root (`…/api`, or a Cloud workspace URL).
    pub fn new(base: &str, key: Option<Secret>) -> Client {
        // The system's CA certificates only for `https` (reading them costs
        // ~10 ms a process).
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(base.starts_with("https://"))
            // HTTP/1.1, as Prefect's own client speaks to Cloud (it turned
            // HTTP/2 off after requests stalled on a shared connection,
            // PrefectHQ/prefect#15311): a request that times out takes its
            // connection with it, and the retry opens a fresh one, while
            // HTTP/2 would queue every call, the lease renewals included,
            // behind one dead connection.
            .http1_only()
            // Prefect Cloud's load balancer closes connections idle for 30 s
            // (reqwest keeps them 90 s): reusing one it closed costs a failed
            // request. The Python client keeps them 25 s.
            .pool_idle_timeout(Duration::from_secs(25))
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client builds");
        Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            server: shown_url(base),
            key,
            budget: RETRY_BUDGET,
            throttle_budget: RETRY_BUDGET,
            timeout: REQUEST_TIMEOUT,
            cloud: is_cloud(base),
        }
    }

    /// Whether this is a Prefect Cloud workspace (its URL has Cloud's shape).
    pub fn is_cloud(&self) -> bool {
        self.cloud
    }

    /// How long each call keeps retrying (default [`RETRY_BUDGET`]).
    pub fn with_retry_budget(mut self, budget: Duration) -> Client {
        self.budget = budget;
        self.throttle_budget = self.throttle_budget.max(budget);
        self
    }

    /// How long each call keeps waiting while the server answers 429 (a
    /// rate limit: the request was not applied, and `Retry-After` says when
    /// to come back); default the retry budget. A throttled call is slow,
    /// not failed.
    pub fn with_throttle_budget(mut self, budget: Duration) -> Client {
        self.throttle_budget = budget.max(self.budget);
        self
    }

    /// How long one attempt may take (default 30 s); lease renewals use
    /// less, so that one bad round cannot outlast the lease.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    fn err(&self, what: &str, kind: ErrorKind) -> PrefectError {
        PrefectError {
            server: self.server.clone(),
            what: what.to_owned(),
            kind,
        }
    }

    /// One call, retried while the server is busy, restarting or unreachable.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Reply, PrefectError> {
        let url = format!("{}{path}", self.base);
        let policy = Policy {
            throttle_budget: self.throttle_budget,
            ..Policy::timed(self.budget, Duration::from_secs(4))
        };
        let mut spent = Spent::start();
        let mut attempt = 0;
        let mut maybe_applied = false;
        loop {
            let mut rb = self
                .http
                .request(method.clone(), &url)
                .timeout(self.timeout);
            if let Some(k) = &self.key {
                rb = rb.bearer_auth(k.expose());
            }
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let unreachable = |msg: String| ErrorKind::Unreachable(msg, self.budget.as_secs());
            let transient = Failure::Transient { retry_after: None };
            let (failure, kind) = match rb.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Err(e) => {
                            maybe_applied = true;
                            (transient, unreachable(e.to_string()))
                        }
                        Ok(body) => match classify(status, &headers) {
                            None => {
                                return Ok(Reply {
                                    status,
                                    headers,
                                    body,
                                    retried: maybe_applied,
                                })
                            }
                            Some(f) => {
                                // A gateway's answer: the server may have applied it.
                                maybe_applied |= matches!(status.as_u16(), 502 | 504);
                                (f, status_kind(status, &body))
                            }
                        },
                    }
                }
                Err(e) => {
                    // Refused before sending: nothing reached the server.
                    maybe_applied |= !e.is_connect();
                    // reqwest errors carry the URL; ours has no credentials in it.
                    let msg = match std::error::Error::source(&e) {
                        Some(s) => format!("{}", s),
                        None => e.to_string(),
                    };
                    (transient, unreachable(msg))
                }
            };
            let Some(wait) = spent.wait(&policy, failure, attempt) else {
                return Err(self.err(what, kind));
            };
            tracing::debug!(?failure, ?wait, "prefect busy or unreachable, retrying");
            attempt += 1;
            tokio::time::sleep(wait).await;
        }
    }

    /// A call whose only acceptable answers are 2xx.
    async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Reply, PrefectError> {
        let r = self.call(method, path, body, what).await?;
        if r.status.is_success() {
            Ok(r)
        } else {
            Err(self.err(what, status_kind(r.status, &r.body)))
        }
    }

    fn json_of(&self, r: &Reply, what: &str) -> Result<Value, PrefectError> {
        r.json().map_err(|k| self.err(what, k))
    }

    fn id_of(&self, v: &Value, what: &str) -> Result<String, PrefectError> {
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| self.err(what, ErrorKind::Protocol("no `id`".into())))
    }
}

/// Which of Prefect's answers are retried: 429 is throttling (the request
/// was not applied; `Retry-After` says when to come back), 502 and 503 a
/// server restarting or busy, 504 and 408 Prefect Cloud's load balancer
/// timing out. Every other answer is the caller's to read.
fn classify(status: StatusCode, headers: &reqwest::header::HeaderMap) -> Option<Failure> {
    let retry_after = retry_after(headers);
    match status.as_u16() {
        429 => Some(Failure::Throttled { retry_after }),
        408 | 502 | 503 | 504 => Some(Failure::Transient { retry_after }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_short_and_plain() {
        assert_eq!(detail(br#"{"detail":"Locked"}"#), "Locked");
        assert_eq!(detail(b"oops"), "oops");
        let long = format!("{{\"detail\":\"{}\"}}", "x".repeat(400));
        assert_eq!(detail(long.as_bytes()).chars().count(), 301);
        assert_eq!(
            status_kind(
                StatusCode::UNPROCESSABLE_ENTITY,
                br#"{"detail":[{"msg":"bad"}]}"#
            )
            .to_string(),
            r#"rejected (422): [{"msg":"bad"}]"#
        );
    }

    #[test]
    fn refusals_say_whose_they_are_and_what_prefect_said() {
        let k = |status: u16, body: &str| {
            status_kind(StatusCode::from_u16(status).unwrap(), body.as_bytes()).to_string()
        };
        // The substrings Prefect's own client reads (ObjectLimitReached,
        // ObjectUnsupported); the texts around them are ours.
        let limit = k(
            403,
            r#"{"detail":"Workspace has reached the maximum number of deployments allowed by its plan"}"#,
        );
        assert!(limit.starts_with("refused by the workspace's plan (403), not by the key's role: a limit of the plan is reached"), "{limit}");
        assert!(limit.ends_with(r#"; Prefect said: "Workspace has reached the maximum number of deployments allowed by its plan""#), "{limit}");
        let pool = k(
            403,
            r#"{"detail":"Your plan does not support work pools of type 'kubernetes'"}"#,
        );
        assert!(pool.contains("the plan does not include this"), "{pool}");
        let role = k(403, r#"{"detail":"Forbidden"}"#);
        assert!(
            role.starts_with(
                "forbidden (403): the API key's role may not do this; give it the Developer role"
            ),
            "{role}"
        );
        assert!(role.ends_with(r#"Prefect said: "Forbidden""#), "{role}");
        assert_eq!(
            k(401, ""),
            "unauthorized (401): no API key, or one Prefect does not know (mistyped, deleted or expired); check `api_key`"
        );
    }

    #[test]
    fn cloud_is_told_by_its_workspace_url() {
        let a = "https://api.prefect.cloud/api/accounts/0b1e/workspaces/9f2c";
        assert!(is_cloud(a) && is_cloud(&format!("{a}/")));
        assert!(is_cloud(
            "http://127.0.0.1:8080/api/accounts/a/workspaces/w"
        ));
        assert!(!is_cloud("http://127.0.0.1:4200/api"));
        assert!(!is_cloud("https://api.prefect.cloud/api/accounts/0b1e"));
    }
}
