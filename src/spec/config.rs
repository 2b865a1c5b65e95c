//! The validated model: what `validate` hands to `dry-run`, `run` and friends.
//!
//! Defaults are applied here, names are checked, and nothing is left optional
//! that a job needs. String values may still hold `${env:...}`/`${secret:...}`
//! references: they are resolved only when a run needs them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::types::V3Format;
use super::values::{Duration, Hour};

/// A checked spec.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of the spec file; relative paths are resolved against it.
    pub dir: PathBuf,
    pub sql_dir: PathBuf,
    /// The template directory as messages name it (e.g. `sql`).
    pub sql_label: String,
    /// DuckDB extensions to load before templates run.
    pub extensions: Vec<String>,
    pub sources: BTreeMap<String, SourceConfig>,
    pub sinks: BTreeMap<String, SinkConfig>,
    pub pipelines: BTreeMap<String, Pipeline>,
}

/// A Prefect server runs are reported to; values may hold references.
#[derive(Debug, Clone)]
pub struct PrefectTarget {
    pub url: String,
    pub api_key: Option<String>,
    /// How often a flow run's heartbeat event is sent.
    pub heartbeat: std::time::Duration,
}

#[derive(Debug, Clone)]
pub enum StateConfig {
    Local {
        dir: PathBuf,
    },
    Prefect {
        url: String,
        api_key: Option<String>,
        block_name: String,
        /// How long a lease lasts unless renewed.
        lease: std::time::Duration,
    },
}

#[derive(Debug, Clone)]
pub enum SourceConfig {
    Influx(InfluxConfig),
    LineProtocol { path: PathBuf },
}

#[derive(Debug, Clone)]
pub struct InfluxConfig {
    pub version: u8,
    pub url: String,
    pub database: Option<String>,
    pub retention_policy: Option<String>,
    pub org: Option<String>,
    pub bucket: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub format: V3Format,
    pub timeout: Duration,
    pub retries: u32,
    pub max_query_hours: u32,
}

#[derive(Debug, Clone)]
pub enum SinkConfig {
    Duckdb {
        /// A file path (relative to the spec's directory) or `md:...`; may hold references.
        path: String,
        token: Option<String>,
        schema: String,
    },
    Bigquery {
        project: String,
        dataset: String,
        location: Option<String>,
        credentials: Option<String>,
        endpoint: Option<String>,
        table: Option<String>,
    },
}

impl SourceConfig {
    /// The values that may hold `${env:}`/`${secret:}` references.
    pub fn reference_values(&self) -> Vec<&str> {
        match self {
            SourceConfig::Influx(c) => [
                Some(&c.url),
                c.database.as_ref(),
                c.org.as_ref(),
                c.bucket.as_ref(),
                c.username.as_ref(),
                c.password.as_ref(),
                c.token.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect(),
            SourceConfig::LineProtocol { .. } => Vec::new(),
        }
    }
}

impl SinkConfig {
    /// The values that may hold `${env:}`/`${secret:}` references.
    pub fn reference_values(&self) -> Vec<&str> {
        match self {
            SinkConfig::Duckdb { path, token, .. } => [Some(path), token.as_ref()]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect(),
            SinkConfig::Bigquery {
                project,
                credentials,
                endpoint,
                ..
            } => [Some(project), credentials.as_ref(), endpoint.as_ref()]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Duckdb { path, .. } if path.starts_with("md:") => "motherduck",
            SinkConfig::Duckdb { .. } => "duckdb",
            SinkConfig::Bigquery { .. } => "bigquery",
        }
    }

    /// The path of a local DuckDB file, as written (none for MotherDuck,
    /// BigQuery, or a path holding a reference).
    pub fn local_file(&self) -> Option<&str> {
        match self {
            SinkConfig::Duckdb { path, .. } if !path.starts_with("md:") && !path.contains("${") => {
                Some(path)
            }
            _ => None,
        }
    }

    /// One line saying where the data goes, without secrets.
    pub fn describe(&self) -> String {
        match self {
            SinkConfig::Duckdb { path, schema, .. } => {
                let path = crate::secret::redact(path);
                format!("{} {path} schema {schema}", self.kind())
            }
            SinkConfig::Bigquery {
                project,
                dataset,
                endpoint,
                ..
            } => match endpoint {
                Some(e) => format!(
                    "bigquery {project}.{dataset} at {}",
                    crate::http::shown_url(e)
                ),
                None => format!("bigquery {project}.{dataset}"),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub state: StateConfig,
    pub source: String,
    pub sinks: Vec<String>,
    pub delay: Duration,
    pub lookback_hours: u32,
    pub start: Option<Hour>,
    /// No hour at or after this is processed (a fixed data set, a closed network).
    pub end: Option<Hour>,
    pub max_hours_per_run: u32,
    pub batch_hours: u32,
    pub concurrency: u32,
    /// Replace hours the source returned nothing for (default: keep them).
    pub replace_empty: bool,
    pub schedule: Option<String>,
    /// Where runs are reported: the state's Prefect server, else the
    /// top-level `prefect`; `None`: nowhere.
    pub report: Option<PrefectTarget>,
    /// Time zone of `schedule`.
    pub timezone: chrono_tz::Tz,
    pub jobs: Vec<Job>,
    /// Products over the jobs' hourly rows, in the spec's order.
    pub models: Vec<Model>,
}

/// One model with its defaults applied.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub template: String,
    pub grain: crate::time::Grain,
    pub lookback_hours: u32,
    pub zone: crate::time::Zone,
    pub table: String,
    /// The jobs it reads, in the pipeline's order.
    pub jobs: Vec<String>,
    /// The tag columns of those jobs (they all have the same).
    pub tags: Vec<String>,
    /// The table(s) those jobs load, each once.
    pub hourly_tables: Vec<String>,
    /// Models of the pipeline (earlier in its list) whose rows it reads.
    pub depends_on: Vec<String>,
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The Prefect event each new episode row is sent as.
    pub events: Option<String>,
}

impl Model {
    /// The name its checkpoint, pending hours and lease are kept under in
    /// the state store, beside the jobs' (a job name cannot hold `.`
    /// but a Prefect block name cannot either: `model-` and `-` for `_`).
    pub fn state_key(&self) -> String {
        state_key(&self.name)
    }

    /// What it reads, for `list` and `dry-run`: `co,no2 and model daily_mean`.
    pub fn inputs_text(&self) -> String {
        match self.depends_on.len() {
            0 => self.jobs.join(","),
            n => format!(
                "{} and model{} {}",
                self.jobs.join(","),
                if n > 1 { "s" } else { "" },
                self.depends_on.join(", ")
            ),
        }
    }
}

/// See [`Model::state_key`].
pub fn state_key(model: &str) -> String {
    format!("model-{}", model.replace('_', "-"))
}

impl Pipeline {
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// One job with its pipeline's defaults applied.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub measurement: String,
    pub field: String,
    pub tags: Vec<String>,
    pub template: String,
    pub table: String,
    pub params: serde_json::Map<String, serde_json::Value>,
}
