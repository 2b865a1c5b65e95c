//! BigQuery, through its REST API (Google's, or an emulator's `endpoint`).
//!
//! A load replaces the batch's (job, hours) in the target table without
//! ever streaming into it (streamed rows are locked against DML for a while):
//! 1. the rows go into a fresh staging table (created with an expiration, so
//!    a crash leaves nothing behind for long) by `insertAll`, at most 500 rows
//!    a request, with insert ids that are the same on every retry;
//! 2. the staging row count is checked;
//! 3. one `MERGE … ON FALSE` inserts every staged row and deletes the target's
//!    rows of the job in the batch's hours (`WHEN NOT MATCHED BY SOURCE AND …`),
//!    atomically, sent with a `requestId`; one that loses to a concurrent
//!    writer on the table (BigQuery's "concurrent update") is sent again,
//!    jittered and bounded ([`crate::retry::CONFLICT`]), with a new one;
//! 4. the staging table is dropped.
//!
//! The target table is created on first use from the result's schema,
//! partitioned by day on `hour_start` and clustered on `pollutant` and the
//! job's tags.

pub mod api;
pub mod auth;
mod read;
mod rows;

pub use read::{copy_in, Selected};
pub use rows::Rows;
use rows::{insert_errors, insert_requests, same_type};

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use ::duckdb::Connection;
use serde_json::{json, Value};

use self::api::Api;
use self::auth::{Credentials, Tokens};
use super::SinkError;
use crate::plan::{Batch, Scope};
use crate::retry::{Failure, CONFLICT};
use crate::secret::{resolve, SecretSource};
use crate::spec::Hour;

/// Longest table id duckhour makes (BigQuery's limit: 1,024 characters).
const MAX_TABLE_ID: usize = 1024;

/// A request or insert id derived from `name`: the same name gives the same
/// UUID (v5), so a retried request repeats its id, and it always fits
/// BigQuery's limits (`requestId` at most 36 ASCII characters, `insertId`
/// at most 128).
pub fn request_id(name: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("duckhour:bigquery:{name}").as_bytes(),
    )
    .to_string()
}

/// The staging table of one load: `<target>_stg_<job>_<hour>_<run>`,
/// letters, digits and `_` only, at most [`MAX_TABLE_ID`] characters (the
/// target part is shortened when needed).
pub fn staging_name(target: &str, job: &str, from: Hour, run_id: &str) -> String {
    let tail = format!(
        "_stg_{}_{}_{}",
        id_part(job),
        from.0.format("%Y%m%d%H"),
        id_part(run_id)
    );
    let room = MAX_TABLE_ID.saturating_sub(tail.len());
    let head: String = id_part(target).chars().take(room).collect();
    format!("{head}{tail}")
}
/// A staging table left by a crash expires after this.
const STAGING_TTL_MS: i64 = 6 * 3600 * 1000;

pub struct BigQuerySink {
    name: String,
    project: String,
    dataset: String,
    location: Option<String>,
    credentials: Option<String>,
    endpoint: Option<String>,
    table: Option<String>,
    dir: PathBuf,
    api: Option<Api>,
    /// Target tables known to exist, with their column types.
    tables: tokio::sync::Mutex<HashMap<String, HashMap<String, String>>>,
    /// MERGEs that lost to a concurrent writer and were sent again, this run.
    conflicts: std::sync::atomic::AtomicU64,
}

pub(super) fn hour_literal(h: Hour) -> String {
    format!("TIMESTAMP '{}'", h.0.format("%Y-%m-%dT%H:%M:%SZ"))
}

/// A table id part from free text: letters, digits and `_`.
fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl BigQuerySink {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        project: &str,
        dataset: &str,
        location: Option<String>,
        credentials: Option<String>,
        endpoint: Option<String>,
        table: Option<String>,
        dir: PathBuf,
    ) -> BigQuerySink {
        BigQuerySink {
            name: name.to_owned(),
            project: project.to_owned(),
            dataset: dataset.to_owned(),
            location,
            credentials,
            endpoint,
            table,
            dir,
            api: None,
            tables: tokio::sync::Mutex::new(HashMap::new()),
            conflicts: Default::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes that lost to a concurrent writer and were sent again, so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(std::sync::atomic::Ordering::Relaxed)
            + self.api.as_ref().map_or(0, Api::conflicts)
    }

    pub(super) fn setup_err(&self, message: impl Into<String>) -> SinkError {
        SinkError::Setup {
            sink: self.name.clone(),
            message: message.into(),
        }
    }

    fn load_err(&self, batch: Batch, message: impl Into<String>) -> SinkError {
        // Always the whole batch: that is what the run redoes.
        SinkError::Load {
            sink: self.name.clone(),
            range: batch.to_string(),
            message: message.into(),
        }
    }

    /// Resolves the project, endpoint and credentials, and creates the
    /// dataset when missing; with `probe`, those calls are not retried.
    pub async fn prepare(
        &mut self,
        secrets: &dyn SecretSource,
        probe: bool,
    ) -> Result<(), SinkError> {
        // Errors are wrapped in "sink `<name>`: " by `setup_err`: name only the key here.
        let resolved = |value: &str, key: &str| {
            resolve(value, &format!("`{key}`"), secrets).map_err(|e| self.setup_err(e.to_string()))
        };
        let project = resolved(&self.project, "project")?;
        if !crate::spec::bigquery_project(project.expose()) {
            return Err(self.setup_err(format!(
                "`project` `{}` is not a BigQuery project id: 6 to 30 lowercase letters, digits and `-`, starting with a letter",
                project.expose()
            )));
        }
        let endpoint = match &self.endpoint {
            Some(e) => Some(resolved(e, "endpoint")?.expose().to_owned()),
            None => None,
        };
        let creds = match &self.credentials {
            Some(c) => {
                let value = resolved(c, "credentials")?;
                let text = value.expose().trim();
                if text.starts_with('{') {
                    Credentials::from_json(text)
                } else {
                    let path = self.dir.join(text);
                    // A value from `${secret:}`/`${env:}` that is not JSON may
                    // be a key in another encoding: never show it.
                    let shown = if crate::secret::has_references(c) {
                        format!("the value of `{c}` (not JSON, so read as a file path)")
                    } else {
                        path.display().to_string()
                    };
                    std::fs::read_to_string(&path)
                        .map_err(|e| format!("cannot read {shown}: {}", e.kind()))
                        .and_then(|t| Credentials::from_json(&t))
                }
                .map_err(|e| self.setup_err(format!("`credentials`: {e}")))?
            }
            // An emulator needs none; real BigQuery gets Application Default Credentials.
            None if endpoint.is_some()
                && std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_none() =>
            {
                Credentials::Anonymous
            }
            None => Credentials::application_default().map_err(|e| self.setup_err(e))?,
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| self.setup_err(e.to_string()))?;
        let api = Api::new(
            http.clone(),
            endpoint.as_deref(),
            project.expose(),
            Tokens::new(creds, http),
        );
        api.retrying(!probe);
        let ready = api
            .ensure_dataset(&self.dataset, self.location.as_deref())
            .await;
        api.retrying(true);
        ready.map_err(|e| {
            self.setup_err(format!(
                "dataset `{}.{}` ({}): {e}",
                api.project,
                self.dataset,
                api.describe_auth()
            ))
        })?;
        self.api = Some(api);
        Ok(())
    }

    /// Reads `result_<job>` (synchronous: it needs the DuckDB connection).
    pub fn read(&self, conn: &Connection, job: &str) -> Result<Rows, SinkError> {
        self.read_table(conn, &format!("result_{job}"))
    }

    pub(super) fn api(&self) -> &Api {
        self.api.as_ref().expect("prepare() ran before load()")
    }

    fn full(&self, table: &str) -> String {
        format!("`{}.{}.{table}`", self.api().project, self.dataset)
    }

    /// The target exists with every result column, created when missing.
    async fn ensure_target(
        &self,
        target: &str,
        rows: &Rows,
        tags: &[String],
    ) -> Result<(), String> {
        let mut known = self.tables.lock().await;
        let columns = match known.get(target) {
            Some(c) => c.clone(),
            None => {
                let existing = self
                    .api()
                    .get_table(&self.dataset, target)
                    .await
                    .map_err(|e| e.to_string())?;
                let resource = match existing {
                    Some(t) => t,
                    None => self.create_target(target, rows, tags).await?,
                };
                let cols: HashMap<String, String> = resource["schema"]["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| {
                        Some((
                            f["name"].as_str()?.to_owned(),
                            f["type"].as_str()?.to_owned(),
                        ))
                    })
                    .collect();
                known.insert(target.to_owned(), cols.clone());
                cols
            }
        };
        for (n, t) in &rows.fields {
            match columns.get(n) {
                None => {
                    known.remove(target);
                    return Err(format!(
                        "table {} has no column `{n}` ({t}) that the SQL returns: add it, or drop the table to have it recreated",
                        self.full(target)
                    ));
                }
                Some(have) if !same_type(have, t) => {
                    known.remove(target);
                    return Err(format!(
                        "table {}: column `{n}` is {have}, the SQL returns {t}",
                        self.full(target)
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Creates table `target` for `rows`: partitioned by day on
    /// `hour_start` and clustered by `pollutant` and the tags (at most
    /// four), when it has such columns. Its resource as sent.
    async fn create_target(
        &self,
        target: &str,
        rows: &Rows,
        tags: &[String],
    ) -> Result<Value, String> {
        let mut res = json!({
            "tableReference": {"projectId": self.api().project, "datasetId": self.dataset, "tableId": target},
            "schema": {"fields": rows.fields.iter().map(|(n, t)| json!({"name": n, "type": t, "mode": "NULLABLE"})).collect::<Vec<_>>()},
            "description": "Hourly aggregates loaded by duckhour",
        });
        if rows
            .fields
            .iter()
            .any(|(n, t)| n == "hour_start" && *t == "TIMESTAMP")
        {
            res["timePartitioning"] = json!({"type": "DAY", "field": "hour_start"});
        }
        let mut cluster: Vec<&str> = Vec::new();
        for c in std::iter::once("pollutant").chain(tags.iter().map(String::as_str)) {
            if cluster.len() < 4 && rows.fields.iter().any(|(n, t)| n == c && *t == "STRING") {
                cluster.push(c);
            }
        }
        if !cluster.is_empty() {
            res["clustering"] = json!({"fields": cluster});
        }
        self.api()
            .create_table(&self.dataset, &res)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(sink = %self.name, table = target, "created the BigQuery table");
        Ok(res)
    }

    /// Replaces (job, batch hours) in the target with `rows`; returns rows written.
    pub async fn load(
        &self,
        rows: Rows,
        job: &str,
        tags: &[String],
        table: &str,
        scope: &Scope,
        run_id: &str,
    ) -> Result<u64, SinkError> {
        let what = format!(
            "T.`pollutant` = '{}' AND {}",
            job.replace('\\', "\\\\").replace('\'', "\\'"),
            scope.predicate("T.`hour_start`", hour_literal)
        );
        let target = self.target(table);
        let staging = staging_name(target, job, scope.batch.from, run_id);
        self.replace(rows, tags, target, &staging, &what)
            .await
            .map_err(|e| self.load_err(scope.batch, e))
    }

    /// Replaces a model's key range (`what`, a predicate over the target
    /// `T`) in `table` with `rows`; `label` (the model and its first key)
    /// names the staging table, `range` the keys in errors.
    #[allow(clippy::too_many_arguments)]
    pub async fn replace_keys(
        &self,
        rows: Rows,
        tags: &[String],
        table: &str,
        label: &str,
        first: Hour,
        what: &str,
        range: &str,
        run_id: &str,
    ) -> Result<u64, SinkError> {
        let staging = staging_name(table, label, first, run_id);
        self.replace(rows, tags, table, &staging, what)
            .await
            .map_err(|message| SinkError::Load {
                sink: self.name.clone(),
                range: range.to_owned(),
                message,
            })
    }

    /// The rows of `target` matching `what` become `rows`, through the
    /// staging table `staging` (dropped afterwards); returns rows written.
    async fn replace(
        &self,
        rows: Rows,
        tags: &[String],
        target: &str,
        staging: &str,
        what: &str,
    ) -> Result<u64, String> {
        self.ensure_target(target, &rows, tags).await?;
        let result = self.through_staging(&rows, target, staging, what).await;
        // Dropped whatever happened; if this fails too, the table expires by itself.
        if let Err(e) = self.api().delete_table(&self.dataset, staging).await {
            tracing::warn!(sink = %self.name, table = %staging, error = %e, "could not drop the staging table; it expires by itself");
        }
        result?;
        Ok(rows.rows.len() as u64)
    }

    /// The table a job's rows go to: the sink's `table`, else the job's.
    pub fn target<'a>(&'a self, table: &'a str) -> &'a str {
        self.table.as_deref().unwrap_or(table)
    }

    /// Whether the dataset has `table` yet.
    pub async fn has_table(&self, table: &str) -> Result<bool, SinkError> {
        self.api()
            .get_table(&self.dataset, table)
            .await
            .map(|t| t.is_some())
            .map_err(|e| self.setup_err(format!("reading table `{table}`: {e}")))
    }

    /// `table` as a query names it.
    pub fn table_ref(&self, table: &str) -> String {
        self.full(table)
    }

    /// A DATE or TIMESTAMP key literal in BigQuery's dialect.
    pub fn key_literal(grain: crate::time::Grain, k: i64) -> String {
        crate::time::keys::literal(grain, k, hour_literal)
    }

    async fn through_staging(
        &self,
        rows: &Rows,
        target: &str,
        staging: &str,
        what: &str,
    ) -> Result<(), String> {
        let api = self.api();
        let expires = chrono::Utc::now().timestamp_millis() + STAGING_TTL_MS;
        let res = json!({
            "tableReference": {"projectId": api.project, "datasetId": self.dataset, "tableId": staging},
            "schema": {"fields": rows.fields.iter().map(|(n, t)| json!({"name": n, "type": t, "mode": "NULLABLE"})).collect::<Vec<_>>()},
            "expirationTime": expires.to_string(),
        });
        api.create_table(&self.dataset, &res)
            .await
            .map_err(|e| format!("creating staging table `{staging}`: {e}"))?;
        let ids = request_id(staging);
        for (first, end) in insert_requests(&rows.rows) {
            let body: Vec<Value> = rows.rows[first..end]
                .iter()
                .enumerate()
                .map(|(i, r)| json!({"insertId": format!("{ids}-{}", first + i), "json": r}))
                .collect();
            tracing::debug!(table = staging, rows = body.len(), "bigquery insertAll");
            let answer = api
                .insert_all(&self.dataset, staging, body)
                .await
                .map_err(|e| format!("insertAll into `{staging}`: {e}"))?;
            if let Some(errs) = answer.get("insertErrors").and_then(Value::as_array) {
                return Err(insert_errors(errs, rows, first));
            }
        }
        let count = api
            .query(
                &format!("SELECT COUNT(*) AS n FROM {}", self.full(staging)),
                &request_id(&format!("{staging}-count")),
                self.location.as_deref(),
            )
            .await
            .map_err(|e| format!("counting `{staging}`: {e}"))?;
        let staged: Option<u64> = count["rows"][0]["f"][0]["v"]
            .as_str()
            .and_then(|s| s.parse().ok());
        if staged != Some(rows.rows.len() as u64) {
            return Err(format!(
                "staging table `{staging}` holds {} rows, {} were sent",
                staged.map_or("?".into(), |n| n.to_string()),
                rows.rows.len()
            ));
        }
        let cols: Vec<String> = rows.fields.iter().map(|(n, _)| format!("`{n}`")).collect();
        let merge = format!(
            "MERGE {target} T USING {staging} S ON FALSE \
             WHEN NOT MATCHED BY TARGET THEN INSERT ({cols}) VALUES ({src}) \
             WHEN NOT MATCHED BY SOURCE AND {what} THEN DELETE",
            target = self.full(target),
            staging = self.full(staging),
            cols = cols.join(", "),
            src = cols
                .iter()
                .map(|c| format!("S.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        self.merge(&merge, staging, target).await
    }

    /// Sends the MERGE; one that lost to a concurrent writer (nothing of
    /// it applied) is sent again under the conflict policy, each time with
    /// a new requestId: BigQuery answers a repeated one with the first
    /// job's result, the conflict itself.
    async fn merge(&self, merge: &str, staging: &str, target: &str) -> Result<(), String> {
        let mut attempt = 0;
        loop {
            let id = match attempt {
                0 => request_id(&format!("{staging}-merge")),
                n => request_id(&format!("{staging}-merge-{n}")),
            };
            let e = match self.api().query(merge, &id, self.location.as_deref()).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let wait = api::is_conflict(&e)
                .then(|| CONFLICT.wait(Failure::Conflict, attempt, Duration::ZERO))
                .flatten();
            let Some(wait) = wait else {
                let retried = match attempt {
                    0 => String::new(),
                    n => format!(" (after {n} retries of concurrent updates)"),
                };
                return Err(format!("MERGE into {}: {e}{retried}", self.full(target)));
            };
            self.conflicts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(sink = %self.name, table = target, ?wait, "MERGE lost to a concurrent writer; sending it again");
            attempt += 1;
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_bigquery_limits() {
        let id = request_id("pollutant_hourly_stg_co_2026112000_20261129T045000_123Z_4242-merge");
        assert_eq!(id.len(), 36);
        assert_eq!(
            id,
            request_id("pollutant_hourly_stg_co_2026112000_20261129T045000_123Z_4242-merge")
        );
        assert_ne!(
            id,
            request_id("pollutant_hourly_stg_co_2026112000_20261129T045000_123Z_4242-count")
        );
        let long = "t".repeat(2000);
        let s = staging_name(
            &long,
            "pm2-5",
            Hour::parse("2026-11-20T00:00:00Z").unwrap(),
            "20261129T045000.123Z-4242",
        );
        assert_eq!(s.len(), 1024);
        assert!(
            s.ends_with("_stg_pm2_5_2026112000_20261129T045000_123Z_4242"),
            "{s}"
        );
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn id_parts_keep_letters_digits_and_underscores() {
        assert_eq!(id_part("pollutant-hourly.x"), "pollutant_hourly_x");
    }
}
