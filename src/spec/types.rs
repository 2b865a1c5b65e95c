//! The typed shape of `pipelines.yaml`, as serde reads it.
//!
//! Every field is documented where it is declared; README's spec reference
//! mirrors these comments (a test checks the keys match). Values that later
//! validation must point at are `Spanned` so errors can name `file:line:col`.
//! Connector kinds are a flat struct with a `type` field rather than an
//! internally tagged enum: serde buffers tagged enums and loses locations.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::values::{Hour, Span};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Default state store of the pipelines: where checkpoints, the ledger, run
    /// history and leases live. Default: local, `.duckhour/`.
    #[serde(default)]
    pub state: Option<Spanned<StateSpec>>,
    /// Directory of SQL templates, relative to this file. Default `sql`.
    #[serde(default)]
    pub sql_dir: Option<String>,
    /// DuckDB extensions loaded into the embedded database before any
    /// template runs, e.g. `icu` for DuckDB's time-zone functions. Read
    /// from DuckDB's extension directory; never downloaded. Default none.
    #[serde(default)]
    pub extensions: Vec<Spanned<String>>,
    /// Named sources of minute readings.
    #[serde(default)]
    pub sources: BTreeMap<String, Spanned<SourceSpec>>,
    /// Named destinations of hourly rows.
    #[serde(default)]
    pub sinks: BTreeMap<String, Spanned<SinkSpec>>,
    /// Named pipelines; each is a list of jobs sharing defaults.
    #[serde(default)]
    pub pipelines: BTreeMap<String, Spanned<PipelineSpec>>,
    /// A Prefect server that runs of pipelines with local state are
    /// reported to (flow runs, task runs, logs). Pipelines with Prefect
    /// state report to their state's server.
    #[serde(default)]
    pub prefect: Option<Spanned<PrefectSpec>>,
}

/// `prefect:`, where runs are reported, and how.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefectSpec {
    /// API base URL, e.g. `http://127.0.0.1:4200/api`, for pipelines with
    /// local state (those with Prefect state report to their state's server).
    #[serde(default)]
    pub url: Option<String>,
    /// API key (Prefect Cloud); use `${secret:...}` or `${env:...}`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// How often a process running a flow run sends its
    /// `prefect.flow-run.heartbeat` event, 1s to 10m. Default `30s`.
    #[serde(default)]
    pub heartbeat: Option<Spanned<super::values::Duration>>,
}

/// State store kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// Files under a local directory (the embedded default).
    Local,
    /// `PipelineStateBlock` documents on a Prefect server or Prefect Cloud.
    Prefect,
}

/// `state:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    /// `local` or `prefect`.
    #[serde(rename = "type")]
    pub kind: StateKind,
    /// local: directory for state files, relative to this file. Default `.duckhour`.
    #[serde(default)]
    pub path: Option<String>,
    /// prefect: API base URL, e.g. `http://127.0.0.1:4200/api`.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// prefect: API key (Prefect Cloud); use `${secret:...}` or `${env:...}`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// prefect: block document name template; `{pipeline}` and `{job}` are replaced.
    /// Default `{pipeline}-{job}`.
    #[serde(default)]
    pub block_name: Option<String>,
    /// prefect: how long a job's lease lasts unless renewed (renewed every
    /// quarter of it; a runner that could not renew for three quarters
    /// stops before its next write; on Prefect Cloud a minute more, for
    /// its rate limits). 60 s to 1 day. Default `2m`.
    #[serde(default)]
    pub lease: Option<Spanned<super::values::Duration>>,
}

/// Source kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// An InfluxDB server (v1 InfluxQL, v2 Flux, v3 SQL).
    Influxdb,
    /// A line-protocol file (InfluxDB's export format), plain or gzip.
    LineProtocol,
}

/// Result formats of InfluxDB v3's `query_sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum V3Format {
    Csv,
    Jsonl,
    Parquet,
}

/// An entry of `sources:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// `influxdb` or `line_protocol`.
    #[serde(rename = "type")]
    pub kind: SourceKind,
    /// influxdb: API version, 1, 2 or 3. Default 1.
    #[serde(default)]
    pub version: Option<Spanned<u8>>,
    /// influxdb: base URL, e.g. `http://127.0.0.1:8086`.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// influxdb v1/v3: database name.
    #[serde(default)]
    pub database: Option<String>,
    /// influxdb v1: retention policy; default the database's default policy.
    #[serde(default)]
    pub retention_policy: Option<String>,
    /// influxdb v2: organization name.
    #[serde(default)]
    pub org: Option<String>,
    /// influxdb v2: bucket name.
    #[serde(default)]
    pub bucket: Option<String>,
    /// influxdb v1: user name (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    /// influxdb v1: password; use `${secret:...}`.
    #[serde(default)]
    pub password: Option<String>,
    /// influxdb: API token (v1 compatibility, v2, v3); use `${secret:...}`.
    #[serde(default)]
    pub token: Option<String>,
    /// influxdb v3: result format, `csv`, `jsonl` or `parquet`. Default `csv`.
    #[serde(default)]
    pub format: Option<V3Format>,
    /// influxdb: timeout of one query. Default `5m`.
    #[serde(default)]
    pub timeout: Option<super::values::Duration>,
    /// influxdb: retries of a transient failure (connect error, 5xx, timeout). Default 3.
    #[serde(default)]
    pub retries: Option<u32>,
    /// influxdb: longest time range of one query, in hours; longer ranges are split. Default 168.
    #[serde(default)]
    pub max_query_hours: Option<Spanned<u32>>,
    /// line_protocol: file path, relative to this file; `.gz` is decompressed.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
}

/// Sink kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// A DuckDB file, or MotherDuck with an `md:` path.
    Duckdb,
    /// A BigQuery table.
    Bigquery,
}

/// An entry of `sinks:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// `duckdb` or `bigquery`.
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// duckdb: database file (relative to this file) or `md:<database>` for MotherDuck.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// duckdb with `md:`: MotherDuck token; use `${secret:...}`.
    #[serde(default)]
    pub token: Option<String>,
    /// duckdb: schema of the target table. Default `main`.
    #[serde(default)]
    pub schema: Option<String>,
    /// bigquery: project id (6-30 lowercase letters, digits and `-`,
    /// starting with a letter), or `${env:...}`.
    #[serde(default)]
    pub project: Option<Spanned<String>>,
    /// bigquery: dataset id (letters, digits and `_`, at most 1,024).
    #[serde(default)]
    pub dataset: Option<Spanned<String>>,
    /// bigquery: dataset location, e.g. `EU`.
    #[serde(default)]
    pub location: Option<String>,
    /// bigquery: service-account JSON (a file path, or `${secret:...}` holding the JSON);
    /// absent: Application Default Credentials.
    #[serde(default)]
    pub credentials: Option<String>,
    /// bigquery: API endpoint override, e.g. an emulator's `http://127.0.0.1:9050/bigquery/v2`;
    /// with an endpoint, no `credentials` and no `GOOGLE_APPLICATION_CREDENTIALS`,
    /// requests carry no credentials.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// bigquery: target table for every job of the pipelines using this sink
    /// (letters, digits and `_`, at most 1,024). Default: the job's `table`.
    #[serde(default)]
    pub table: Option<Spanned<String>>,
}

/// An entry of `pipelines:`. Its scalar fields are the defaults of its jobs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// This pipeline's state store; default the top-level `state`.
    #[serde(default)]
    pub state: Option<Spanned<StateSpec>>,
    /// Name of the source every job reads.
    pub source: Spanned<String>,
    /// Names of the sinks every job writes.
    pub sinks: Vec<Spanned<String>>,
    /// SQL template under `sql_dir`. Default `hourly_mean.sql`.
    #[serde(default)]
    pub template: Option<Spanned<String>>,
    /// Target table in every sink. Default `pollutant_hourly`.
    #[serde(default)]
    pub table: Option<Spanned<String>>,
    /// Default measurement of the jobs.
    #[serde(default)]
    pub measurement: Option<String>,
    /// Tag keys kept as columns (grouping keys). Default `[station]`.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// An hour `[h, h+1h)` is complete once `now >= h + 1h + delay`. Default `5m`.
    #[serde(default)]
    pub delay: Option<super::values::Duration>,
    /// Hours before the checkpoint redone on every run to absorb late points. Default `0h`.
    #[serde(default)]
    pub lookback: Option<Spanned<super::values::Duration>>,
    /// First hour of every job when it has no checkpoint; absent: the last complete hour.
    #[serde(default)]
    pub start: Option<Hour>,
    /// First hour no job processes (exclusive end), for a data set or
    /// network that ends; `run` then has nothing new past it. Absent: no end.
    #[serde(default)]
    pub end: Option<Hour>,
    /// Most new hours one run processes per job. Default 720.
    #[serde(default)]
    pub max_hours_per_run: Option<Spanned<u32>>,
    /// Most hours per extract and per load (a week: a month of catch-up is 5 batches). Default 168.
    #[serde(default)]
    pub batch_hours: Option<Spanned<u32>>,
    /// Replace hours the source returned no row for (deleting what the sinks
    /// hold for them), as `--replace-empty` does. Default false: such hours
    /// are kept, since raw data expires and the aggregates are then the only copy.
    #[serde(default)]
    pub replace_empty: bool,
    /// Jobs run at the same time. Default 2.
    #[serde(default)]
    pub concurrency: Option<Spanned<u32>>,
    /// Cron schedule (5 fields) for `serve`.
    #[serde(default)]
    pub schedule: Option<Spanned<String>>,
    /// Time zone `schedule` is read in (IANA name, e.g. `Europe/Berlin`). Default UTC.
    /// Hour windows stay UTC whatever this says.
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// Free values every job's template sees as `params` (a job's own `params` win).
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// The rules (limit values, targets, thresholds, criteria) every model
    /// judges by, replacing sql/rules.sql's; a model's own `rules` win.
    #[serde(default)]
    pub rules: Option<Vec<Spanned<RuleSpec>>>,
    /// The jobs, usually one per pollutant.
    pub jobs: Vec<Spanned<JobSpec>>,
    /// Products computed from the jobs' hourly rows (daily means, the air
    /// quality index, ...), kept exact as hours are loaded. Default none.
    #[serde(default)]
    pub models: Vec<Spanned<ModelSpec>>,
}

/// An entry of a pipeline's `models:`: a SQL template over the hourly rows
/// of the pipeline's jobs, recomputed for the output keys a load touches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Model name: lowercase letters, digits and `_`; unique in its pipeline.
    pub name: Spanned<String>,
    /// SQL template under `sql_dir`. Default `<name>.sql`.
    #[serde(default)]
    pub template: Option<Spanned<String>>,
    /// Unit of the output key: `hour` (column `hour_start`), `day` (`day`,
    /// a local date) or `year` (`year`, a local calendar year).
    pub grain: Spanned<String>,
    /// How far before an output key its inputs reach, whole hours (`7h`
    /// for an 8-hour mean ending at that hour). Default `0h`.
    #[serde(default)]
    pub lookback: Option<Spanned<super::values::Duration>>,
    /// Time zone of `day` and `year` keys: an IANA name (`Europe/Madrid`)
    /// or a fixed offset (`+01:00`), with whole-hour offsets. Default UTC.
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// Target table in every sink of the pipeline. Default the model's name.
    #[serde(default)]
    pub table: Option<Spanned<String>>,
    /// Jobs whose hourly rows the model reads. Default all of the pipeline's.
    #[serde(default)]
    pub jobs: Option<Vec<Spanned<String>>>,
    /// Models (listed before this one) whose output rows it reads as
    /// `inputs.<name>`; their recomputed keys make this one's pending.
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    /// Values the template sees as `params`, merged over the pipeline's.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Rules replacing the pipeline's (or sql/rules.sql's) for this model.
    #[serde(default)]
    pub rules: Option<Vec<Spanned<RuleSpec>>>,
    /// A Prefect event name (e.g. `air-quality.threshold.exceeded`): each
    /// row of the model with an `episode` not yet in its table is sent as
    /// one such event, its id derived from the episode. The rows need
    /// `episode` and `resource` columns. Default: no events.
    #[serde(default)]
    pub events: Option<Spanned<String>>,
}

/// One rule of `rules:`: a limit value, target value, information or
/// alert threshold, or coverage criterion, with its period of validity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The instrument setting it, e.g. `(EU) 2024/2881 Annex I Section 4`.
    pub instrument: Spanned<String>,
    /// co, no2, o3, pm10, pm25, so2 (or a job, or a key of
    /// `params.pollutants`); none for a criterion.
    #[serde(default)]
    pub pollutant: Option<Spanned<String>>,
    /// limit, target, information, alert or criterion.
    pub kind: Spanned<String>,
    /// hourly, daily_mean, max_daily_8h_mean, annual_mean or aot40.
    pub metric: Spanned<String>,
    /// The value (µg/m3; CO mg/m3; AOT40 µg/m3·h; a criterion a fraction).
    pub value: Spanned<f64>,
    /// Exceedances allowed a calendar year. Default 0.
    #[serde(default)]
    pub allowed: Option<Spanned<u32>>,
    /// Consecutive hours (hourly thresholds) or days (daily ones). Default 1.
    #[serde(default)]
    pub consecutive: Option<Spanned<u32>>,
    /// Years a target is averaged over. Default 1.
    #[serde(default)]
    pub years: Option<Spanned<u32>>,
    /// First date it applies to (`2026-12-12`). Default: always.
    #[serde(default)]
    pub valid_from: Option<Spanned<String>>,
    /// First date it no longer applies to. Default: never.
    #[serde(default)]
    pub valid_to: Option<Spanned<String>>,
    /// Also reported for the years before `valid_from` (`basis: outlook`).
    #[serde(default)]
    pub outlook: Option<bool>,
}

/// An entry of a pipeline's `jobs:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Job name: lowercase letters, digits, `_` and `-`; unique in its pipeline.
    pub name: Spanned<String>,
    /// Measurement to read; default the pipeline's.
    #[serde(default)]
    pub measurement: Option<String>,
    /// Field to read; default the job's name.
    #[serde(default)]
    pub field: Option<String>,
    /// Tag keys kept as columns; default the pipeline's.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// SQL template; default the pipeline's.
    #[serde(default)]
    pub template: Option<Spanned<String>>,
    /// Target table; default the pipeline's.
    #[serde(default)]
    pub table: Option<Spanned<String>>,
    /// Values the template sees as `params`, merged over the pipeline's.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
}

impl<T> From<&Spanned<T>> for Span {
    fn from(s: &Spanned<T>) -> Span {
        Span {
            line: s.referenced.line() as usize,
            col: s.referenced.column() as usize,
        }
    }
}
