//! Sinks: where hourly rows go. Each load replaces exactly the (job, hours)
//! of one batch, atomically, so any hour can be redone any number of times.
//!
//! The result of a batch's SQL sits in the in-memory table `result_<job>`;
//! a sink copies it out. The SQL must return `pollutant` (the job name) and
//! `hour_start`, which scope the replacement.

pub mod duckdb;

use ::duckdb::Connection;

use crate::plan::Batch;
use crate::secret::SecretSource;
use crate::spec::SinkConfig;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink `{sink}`: {message}")]
    Setup { sink: String, message: String },
    #[error("sink `{sink}` hours {range}: {message}")]
    Load {
        sink: String,
        range: String,
        message: String,
    },
}

/// A configured sink.
pub enum Sink {
    Duck(duckdb::DuckSink),
    BigQuery { name: String },
}

impl Sink {
    pub fn new(name: &str, cfg: &SinkConfig, dir: &std::path::Path) -> Sink {
        match cfg {
            SinkConfig::Duckdb {
                path,
                token,
                schema,
            } => Sink::Duck(duckdb::DuckSink::new(
                name,
                path.clone(),
                token.clone(),
                schema.clone(),
                dir.to_path_buf(),
            )),
            SinkConfig::Bigquery { .. } => Sink::BigQuery {
                name: name.to_owned(),
            },
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Sink::Duck(s) => s.name(),
            Sink::BigQuery { name } => name,
        }
    }

    /// Resolves secrets and attaches, before any job starts.
    pub fn prepare(
        &mut self,
        conn: &Connection,
        secrets: &dyn SecretSource,
        home: &std::path::Path,
    ) -> Result<(), SinkError> {
        match self {
            Sink::Duck(s) => s.prepare(conn, secrets, home),
            Sink::BigQuery { name } => Err(SinkError::Setup {
                sink: name.clone(),
                message: "the BigQuery sink is not available in this build yet".into(),
            }),
        }
    }

    /// Replaces `(job, batch hours)` in the sink with `result_<job>`; returns rows written.
    pub fn load(
        &self,
        conn: &Connection,
        job: &str,
        table: &str,
        batch: Batch,
    ) -> Result<u64, SinkError> {
        match self {
            Sink::Duck(s) => s.load(conn, job, table, batch),
            Sink::BigQuery { name } => Err(SinkError::Load {
                sink: name.clone(),
                range: batch.to_string(),
                message: "not available".into(),
            }),
        }
    }
}
