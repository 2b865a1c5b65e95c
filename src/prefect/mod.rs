//! The Prefect REST client: the `PipelineStateBlock` type and schema, block
//! documents, `Secret` and `gcp-credentials` blocks, and global concurrency
//! limits with leases. One client serves a Prefect server
//! (`http://host:4200/api`) and Prefect Cloud (the workspace URL, with a
//! Bearer API key).
//!
//! Every call is retried on 429, 502, 503 and connection errors, honouring
//! `Retry-After`, for up to [`RETRY_BUDGET`]; 401, 403, 404 and 422 become
//! errors that name the block or limit. Errors never carry a secret: the key
//! is only ever put in a header, and secret values only leave this module
//! inside [`Secret`].

use std::time::{Duration, Instant};

pub mod deploy;
pub mod runs;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::http::{backoff, retry_after, shown_url};
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
    Unauthorized,
    Forbidden,
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
            ErrorKind::Unauthorized => {
                f.write_str("unauthorized (401): check the state store's `api_key`")
            }
            ErrorKind::Forbidden => f.write_str(
                "forbidden (403): the API key's role may not do this; give it the Developer role, or a custom role that may (README, \"Prefect Cloud\")",
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

/// A block document as stored.
#[derive(Debug, Clone)]
pub struct BlockDoc {
    pub id: String,
    pub data: Value,
    /// The type and schema it is stored with (absent from an answer that
    /// lacks them), so that writing it back needs no schema lookup.
    pub schema: Option<SchemaIds>,
}

/// Block documents read per request: Prefect's largest page.
const BLOCKS_PER_READ: usize = 200;

/// The ids a `PipelineStateBlock` document is written with.
#[derive(Debug, Clone)]
pub struct SchemaIds {
    pub type_id: String,
    pub schema_id: String,
}

/// The outcome of asking for a lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Take {
    Leased(String),
    /// Held by someone else; the server's hint for when to ask again.
    Busy(Option<Duration>),
    /// Held, but an earlier attempt of this same request may have reached
    /// the server (it timed out or got a 5xx): the holder may be our own
    /// orphaned slot, which frees itself when its lease expires.
    BusyAfterRetry(Option<Duration>),
    /// These limits do not exist (nothing was taken).
    Missing(Vec<String>),
}

/// A block document name is `^[a-z0-9-]+$`.
pub fn valid_block_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
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
                    None => "(no detail)".into(),
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

/// The error for a status the caller did not expect.
fn status_kind(status: StatusCode, body: &[u8]) -> ErrorKind {
    match status.as_u16() {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict(detail(body)),
        422 => ErrorKind::Invalid(detail(body)),
        s => ErrorKind::Status(s, detail(body)),
    }
}

/// The `fields` of the `PipelineStateBlock` schema exactly as the Python
/// client sends them (Prefect 3, pydantic 2), so the server files both
/// under one checksum and each side loads what the other wrote.
pub fn state_schema_fields() -> Value {
    json!({
        "block_schema_references": {},
        "block_type_slug": STATE_SLUG,
        "properties": {
            "last_processed_hour": {
                "anyOf": [{"format": "date-time", "type": "string"}, {"type": "null"}],
                "default": null,
                "title": "Last Processed Hour",
                "position": 0
            },
            "pipeline_version": {
                "default": "v1.0.0",
                "title": "Pipeline Version",
                "type": "string",
                "position": 1
            },
            "metadata": {
                "default": {},
                "title": "Metadata",
                "type": "object",
                "position": 2
            }
        },
        "secret_fields": [],
        "title": "PipelineStateBlock",
        "type": "object"
    })
}

impl Client {
    /// `base` is the API root (`…/api`, or a Cloud workspace URL).
    pub fn new(base: &str, key: Option<Secret>) -> Client {
        // The system's CA certificates only for `https` (reading them costs
        // ~10 ms a process).
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(base.starts_with("https://"))
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
        }
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
        let t0 = Instant::now();
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
            let wait = match rb.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let body = match resp.bytes().await {
                        Ok(b) => b,
                        Err(e) => {
                            maybe_applied = true;
                            if t0.elapsed() >= self.budget {
                                return Err(self.err(
                                    what,
                                    ErrorKind::Unreachable(e.to_string(), self.budget.as_secs()),
                                ));
                            }
                            attempt += 1;
                            tokio::time::sleep(backoff(attempt, Duration::from_secs(4))).await;
                            continue;
                        }
                    };
                    if !matches!(status.as_u16(), 429 | 502 | 503) {
                        return Ok(Reply {
                            status,
                            headers,
                            body,
                            retried: maybe_applied,
                        });
                    }
                    maybe_applied |= status.as_u16() == 502;
                    let wait = retry_after(&headers)
                        .unwrap_or_else(|| backoff(attempt, Duration::from_secs(4)));
                    let budget = if status.as_u16() == 429 {
                        self.throttle_budget
                    } else {
                        self.budget
                    };
                    if t0.elapsed() + wait > budget {
                        return Err(self.err(what, status_kind(status, &body)));
                    }
                    tracing::debug!(status = status.as_u16(), ?wait, "prefect busy, retrying");
                    wait
                }
                Err(e) => {
                    // Refused before sending: nothing reached the server.
                    maybe_applied |= !e.is_connect();
                    let wait = backoff(attempt, Duration::from_secs(4));
                    if t0.elapsed() + wait > self.budget {
                        // reqwest errors carry the URL; ours has no credentials in it.
                        let msg = match std::error::Error::source(&e) {
                            Some(s) => format!("{}", s),
                            None => e.to_string(),
                        };
                        return Err(
                            self.err(what, ErrorKind::Unreachable(msg, self.budget.as_secs()))
                        );
                    }
                    tracing::debug!(error = %e, ?wait, "prefect unreachable, retrying");
                    wait
                }
            };
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

    /// A block document from its JSON.
    fn doc_of(&self, v: &Value, what: &str) -> Result<BlockDoc, PrefectError> {
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Ok(BlockDoc {
            id: self.id_of(v, what)?,
            data: v.get("data").cloned().unwrap_or(Value::Null),
            schema: field("block_type_id")
                .zip(field("block_schema_id"))
                .map(|(type_id, schema_id)| SchemaIds { type_id, schema_id }),
        })
    }

    fn id_of(&self, v: &Value, what: &str) -> Result<String, PrefectError> {
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| self.err(what, ErrorKind::Protocol("no `id`".into())))
    }

    /// The `PipelineStateBlock` type and schema, created when missing the
    /// way the Python client registers them.
    pub async fn ensure_state_schema(&self) -> Result<SchemaIds, PrefectError> {
        let what = format!("block type `{STATE_SLUG}`");
        let path = format!("/block_types/slug/{STATE_SLUG}");
        let r = self.call(Method::GET, &path, None, &what).await?;
        let block_type = match r.status.as_u16() {
            200 => self.json_of(&r, &what)?,
            404 => {
                let create = json!({
                    "name": "PipelineStateBlock",
                    "slug": STATE_SLUG,
                    "logo_url": null,
                    "documentation_url": null,
                    "description": "Checkpoint of one pipeline job (written by duckhour and by Python flows).",
                    "code_example": "```python\npipelinestateblock_block = PipelineStateBlock.load(\"BLOCK_NAME\")\n```",
                });
                let r = self
                    .call(Method::POST, "/block_types/", Some(&create), &what)
                    .await?;
                match r.status.as_u16() {
                    200 | 201 => self.json_of(&r, &what)?,
                    // Created meanwhile by someone else.
                    409 => self.json_of(&self.ok(Method::GET, &path, None, &what).await?, &what)?,
                    _ => return Err(self.err(&what, status_kind(r.status, &r.body))),
                }
            }
            _ => return Err(self.err(&what, status_kind(r.status, &r.body))),
        };
        let type_id = self.id_of(&block_type, &what)?;
        let schema = json!({
            "fields": state_schema_fields(),
            "block_type_id": type_id,
            "capabilities": [],
            "version": "non-versioned",
        });
        let what = "block schema of `PipelineStateBlock`";
        // A server answers a schema it has with that schema; Prefect Cloud
        // answers 409, and the schema is then read back by its fields.
        let r = self
            .call(Method::POST, "/block_schemas/", Some(&schema), what)
            .await?;
        let schema_id = match r.status.as_u16() {
            200 | 201 => self.id_of(&self.json_of(&r, what)?, what)?,
            409 => self.find_state_schema(&type_id, what).await?,
            _ => return Err(self.err(what, status_kind(r.status, &r.body))),
        };
        Ok(SchemaIds { type_id, schema_id })
    }

    /// The id of the `PipelineStateBlock` schema whose fields are exactly
    /// [`state_schema_fields`] (the one the Python class registers).
    async fn find_state_schema(&self, type_id: &str, what: &str) -> Result<String, PrefectError> {
        let body = json!({
            "block_schemas": {"block_type_id": {"any_": [type_id]}},
            "limit": BLOCKS_PER_READ,
        });
        let r = self
            .ok(Method::POST, "/block_schemas/filter", Some(&body), what)
            .await?;
        let Value::Array(schemas) = self.json_of(&r, what)? else {
            return Err(self.err(what, ErrorKind::Protocol("not a list".into())));
        };
        let want = state_schema_fields();
        let same = schemas.iter().find(|v| v.get("fields") == Some(&want));
        match same {
            Some(v) => self.id_of(v, what),
            None => Err(self.err(
                what,
                ErrorKind::Conflict(
                    "the server says the schema exists, but none of the type's schemas has its fields".into(),
                ),
            )),
        }
    }

    /// A block document by type slug and name, with its secrets; `None` when missing.
    pub async fn read_block(
        &self,
        slug: &str,
        name: &str,
        what: &str,
    ) -> Result<Option<BlockDoc>, PrefectError> {
        let path =
            format!("/block_types/slug/{slug}/block_documents/name/{name}?include_secrets=true");
        let r = self.call(Method::GET, &path, None, what).await?;
        match r.status.as_u16() {
            200 => Ok(Some(self.doc_of(&self.json_of(&r, what)?, what)?)),
            404 => Ok(None),
            _ => Err(self.err(what, status_kind(r.status, &r.body))),
        }
    }

    /// The named documents of a block type that exist, by name, read in
    /// one request per [`BLOCKS_PER_READ`] names, without secret values.
    pub async fn read_blocks(
        &self,
        slug: &str,
        names: &[String],
        what: &str,
    ) -> Result<std::collections::HashMap<String, BlockDoc>, PrefectError> {
        let mut found = std::collections::HashMap::new();
        for chunk in names.chunks(BLOCKS_PER_READ) {
            let body = json!({
                "block_documents": {"name": {"any_": chunk}, "is_anonymous": {"eq_": false}},
                "block_types": {"slug": {"any_": [slug]}},
                "include_secrets": false,
                "limit": BLOCKS_PER_READ,
            });
            let r = self
                .call(Method::POST, "/block_documents/filter", Some(&body), what)
                .await?;
            match r.status.as_u16() {
                200 => {}
                404 => return Err(self.err(what, ErrorKind::NoWorkspace)),
                _ => return Err(self.err(what, status_kind(r.status, &r.body))),
            }
            let Value::Array(docs) = self.json_of(&r, what)? else {
                return Err(self.err(what, ErrorKind::Protocol("not a list".into())));
            };
            for v in &docs {
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
                if chunk.iter().any(|n| n == name) {
                    found.insert(name.to_owned(), self.doc_of(v, what)?);
                }
            }
        }
        Ok(found)
    }

    /// Creates a named document; `Conflict` when the name is taken.
    pub async fn create_block(
        &self,
        name: &str,
        ids: &SchemaIds,
        data: &Value,
        what: &str,
    ) -> Result<BlockDoc, PrefectError> {
        let body = json!({
            "name": name,
            "data": data,
            "block_schema_id": ids.schema_id,
            "block_type_id": ids.type_id,
            "is_anonymous": false,
        });
        let r = self
            .ok(Method::POST, "/block_documents/", Some(&body), what)
            .await?;
        let v = self.json_of(&r, what)?;
        Ok(BlockDoc {
            id: self.id_of(&v, what)?,
            data: data.clone(),
            schema: Some(ids.clone()),
        })
    }

    /// Replaces the document's data (every top-level key is sent).
    pub async fn update_block(
        &self,
        id: &str,
        ids: &SchemaIds,
        data: &Value,
        what: &str,
    ) -> Result<(), PrefectError> {
        let body = json!({"block_schema_id": ids.schema_id, "data": data});
        self.ok(
            Method::PATCH,
            &format!("/block_documents/{id}"),
            Some(&body),
            what,
        )
        .await?;
        Ok(())
    }

    /// A secret: a `Secret` block's `value`, else a `gcp-credentials`
    /// block's `service_account_info` (as JSON text); `None` when neither exists.
    pub async fn secret(&self, name: &str) -> Result<Option<Secret>, PrefectError> {
        if !valid_block_name(name) {
            return Ok(None);
        }
        let what = format!("secret block `{name}`");
        if let Some(doc) = self.read_block("secret", name, &what).await? {
            return match doc.data.get("value") {
                Some(Value::String(s)) if s == MASKED => Err(self.err(&what, ErrorKind::Masked)),
                Some(Value::String(s)) => Ok(Some(Secret::new(s.clone()))),
                Some(v) if !v.is_null() => Ok(Some(Secret::new(v.to_string()))),
                _ => Err(self.err(&what, ErrorKind::Protocol("no `value`".into()))),
            };
        }
        let what = format!("gcp-credentials block `{name}`");
        if let Some(doc) = self.read_block("gcp-credentials", name, &what).await? {
            let masked = |v: &Value| match v {
                Value::String(s) => s == MASKED,
                Value::Object(m) => m.values().any(|v| v.as_str() == Some(MASKED)),
                _ => false,
            };
            return match doc.data.get("service_account_info") {
                Some(v) if masked(v) => Err(self.err(&what, ErrorKind::Masked)),
                Some(Value::String(s)) => Ok(Some(Secret::new(s.clone()))),
                Some(v @ Value::Object(_)) => Ok(Some(Secret::new(v.to_string()))),
                _ => Err(self.err(
                    &what,
                    ErrorKind::Protocol("no `service_account_info`".into()),
                )),
            };
        }
        Ok(None)
    }

    /// Creates a global concurrency limit of one slot unless it exists.
    pub async fn ensure_limit(&self, name: &str) -> Result<(), PrefectError> {
        let what = format!("concurrency limit `{name}`");
        let body = json!({"name": name, "limit": 1});
        let r = self
            .call(Method::POST, "/v2/concurrency_limits/", Some(&body), &what)
            .await?;
        match r.status.as_u16() {
            200 | 201 | 409 => Ok(()),
            _ => Err(self.err(&what, status_kind(r.status, &r.body))),
        }
    }

    /// Takes one slot of each of the limits `names` with one lease of `ttl`
    /// (all or none: one that is held makes the answer `Busy`).
    pub async fn take_lease(&self, names: &[&str], ttl: Duration) -> Result<Take, PrefectError> {
        let what = match names {
            [one] => format!("concurrency limit `{one}`"),
            _ => format!("concurrency limits `{}`", names.join("`, `")),
        };
        let body = json!({
            "names": names,
            "slots": 1,
            "mode": "concurrency",
            "lease_duration": ttl.as_secs(),
        });
        let r = self
            .call(
                Method::POST,
                "/v2/concurrency_limits/increment-with-lease",
                Some(&body),
                &what,
            )
            .await?;
        match r.status.as_u16() {
            200 => {
                let v = self.json_of(&r, &what)?;
                let id = v.get("lease_id").and_then(Value::as_str);
                // A missing limit is not an error to the server: the lease
                // covers only the limits that exist.
                let granted: Vec<&str> = v
                    .get("limits")
                    .and_then(Value::as_array)
                    .map(|l| l.iter().filter_map(|x| x.get("name")?.as_str()).collect())
                    .unwrap_or_default();
                let missing: Vec<String> = names
                    .iter()
                    .filter(|n| !granted.contains(n))
                    .map(|n| n.to_string())
                    .collect();
                if !missing.is_empty() {
                    if let Some(id) = id {
                        let _ = self.release_lease(id).await;
                    }
                    return Ok(Take::Missing(missing));
                }
                let id =
                    id.ok_or_else(|| self.err(&what, ErrorKind::Protocol("no `lease_id`".into())))?;
                Ok(Take::Leased(id.to_owned()))
            }
            423 if r.retried => Ok(Take::BusyAfterRetry(retry_after(&r.headers))),
            423 => Ok(Take::Busy(retry_after(&r.headers))),
            404 => Err(self.err(&what, ErrorKind::NoWorkspace)),
            _ => Err(self.err(&what, status_kind(r.status, &r.body))),
        }
    }

    /// Extends a lease; `false` when it is gone (410: expired or revoked).
    pub async fn renew_lease(&self, id: &str, ttl: Duration) -> Result<bool, PrefectError> {
        let what = format!("lease {id}");
        let body = json!({"lease_duration": ttl.as_secs()});
        let r = self
            .call(
                Method::POST,
                &format!("/v2/concurrency_limits/leases/{id}/renew"),
                Some(&body),
                &what,
            )
            .await?;
        match r.status.as_u16() {
            200 | 204 => Ok(true),
            // 410 on the server since Oct 2025; Prefect Cloud answered a lost
            // lease's renewal with 404 (PrefectHQ/prefect#18942).
            404 | 410 => Ok(false),
            _ => Err(self.err(&what, status_kind(r.status, &r.body))),
        }
    }

    /// Gives the slot back.
    pub async fn release_lease(&self, id: &str) -> Result<(), PrefectError> {
        let what = format!("lease {id}");
        let body = json!({"lease_id": id});
        self.ok(
            Method::POST,
            "/v2/concurrency_limits/decrement-with-lease",
            Some(&body),
            &what,
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names() {
        assert!(valid_block_name("hourly-co"));
        assert!(valid_block_name("pipeline-state"));
        assert!(!valid_block_name("hourly_co"));
        assert!(!valid_block_name("Hourly"));
        assert!(!valid_block_name(""));
    }

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
}
