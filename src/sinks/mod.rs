//! Sinks: where hourly rows go. Each load replaces exactly the (job, hours)
//! of one batch, atomically, so any hour can be redone any number of times.
//!
//! The result of a batch's SQL sits in the in-memory table `result_<job>`;
//! a sink copies it out. Every row has `pollutant` = the job's name and an
//! `hour_start` inside the [`Scope`] (checked before any sink is touched),
//! which is exactly what a load replaces: the batch's hours, less those the
//! source returned nothing for unless the user asked to replace them.

pub mod bigquery;
pub mod duckdb;
pub mod models;
mod refill;

use ::duckdb::Connection;

use crate::plan::Scope;
use crate::secret::SecretSource;
use crate::spec::SinkConfig;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink `{sink}`: {message}")]
    Setup { sink: String, message: String },
    /// Another process writes the sink's file (a DuckDB file has one
    /// writer); it frees when that run ends.
    #[error("sink `{sink}`: {message}")]
    Busy { sink: String, message: String },
    #[error("sink `{sink}` hours {range}: {message}")]
    Load {
        sink: String,
        range: String,
        message: String,
    },
    /// Rows read back from the sink could not be read or copied in the
    /// embedded database (the message names the model).
    #[error("{message}")]
    ReadBack { sink: String, message: String },
}

/// A configured sink.
pub enum Sink {
    Duck(Box<duckdb::DuckSink>),
    BigQuery(Box<bigquery::BigQuerySink>),
}

/// The part of a load done with the DuckDB connection.
pub enum Unloaded {
    /// A DuckDB sink loads entirely there: rows written.
    Done(u64),
    /// BigQuery: the rows, to send.
    Rows(bigquery::Rows),
}

impl Sink {
    pub fn new(name: &str, cfg: &SinkConfig, dir: &std::path::Path) -> Sink {
        match cfg {
            SinkConfig::Duckdb {
                path,
                token,
                schema,
            } => Sink::Duck(Box::new(duckdb::DuckSink::new(
                name,
                path.clone(),
                token.clone(),
                schema.clone(),
                dir.to_path_buf(),
            ))),
            SinkConfig::Bigquery {
                project,
                dataset,
                location,
                credentials,
                endpoint,
                table,
            } => Sink::BigQuery(Box::new(bigquery::BigQuerySink::new(
                name,
                project,
                dataset,
                location.clone(),
                credentials.clone(),
                endpoint.clone(),
                table.clone(),
                dir.to_path_buf(),
            ))),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Sink::Duck(s) => s.name(),
            Sink::BigQuery(s) => s.name(),
        }
    }

    /// Writes that lost to a concurrent writer and were sent again, so far.
    pub fn conflicts(&self) -> u64 {
        match self {
            Sink::Duck(s) => s.conflicts(),
            Sink::BigQuery(s) => s.conflicts(),
        }
    }

    /// The directory of a local DuckDB file, which the confined database
    /// must still reach (`duck::confine`).
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        match self {
            Sink::Duck(s) => s.local_dir(),
            Sink::BigQuery(_) => None,
        }
    }

    /// The DuckDB (or MotherDuck) sink, if this is one.
    pub fn duck(&self) -> Option<&duckdb::DuckSink> {
        match self {
            Sink::Duck(s) => Some(s),
            Sink::BigQuery(_) => None,
        }
    }

    /// The BigQuery sink, if this is one.
    pub fn bigquery(&self) -> Option<&bigquery::BigQuerySink> {
        match self {
            Sink::BigQuery(s) => Some(s),
            Sink::Duck(_) => None,
        }
    }

    /// MotherDuck: its extension needs the network, so a run writing to it
    /// is not confined.
    pub fn is_motherduck(&self) -> bool {
        matches!(self, Sink::Duck(s) if s.is_motherduck())
    }

    /// Resolves secrets and attaches (DuckDB) or creates the dataset
    /// (BigQuery), before any job starts. `probe`: the sink failed in an
    /// earlier run, so its set-up is one attempt, not retried (a BigQuery
    /// call that gets no answer fails at once instead of within a minute).
    pub async fn prepare(
        &mut self,
        conn: &Connection,
        secrets: &dyn SecretSource,
        home: &std::path::Path,
        probe: bool,
    ) -> Result<(), SinkError> {
        match self {
            Sink::Duck(s) => s.prepare(conn, secrets, home),
            Sink::BigQuery(s) => s.prepare(secrets, probe).await,
        }
    }

    /// Step one of a load, with the connection: a DuckDB sink replaces
    /// `(job, scope hours)` with `result_<job>` here; BigQuery reads the rows.
    pub fn unload(
        &self,
        conn: &Connection,
        job: &str,
        table: &str,
        scope: &Scope,
    ) -> Result<Unloaded, SinkError> {
        match self {
            Sink::Duck(s) => s.load(conn, job, table, scope).map(Unloaded::Done),
            Sink::BigQuery(s) => s.read(conn, job).map(Unloaded::Rows),
        }
    }

    /// A DuckDB file's periodic reopen, when due; nothing for BigQuery.
    /// Only while no other statement runs on the database.
    pub fn reopen_if_due(&self, conn: &Connection, range: &str) -> Result<(), SinkError> {
        match self {
            Sink::Duck(s) => s.reopen_if_due(conn, range),
            Sink::BigQuery(_) => Ok(()),
        }
    }

    /// Step two, without the connection: BigQuery replaces `(job, scope
    /// hours)` with the rows. Returns rows written.
    pub async fn finish(
        &self,
        unloaded: Unloaded,
        job: &crate::spec::Job,
        scope: &Scope,
        run_id: &str,
    ) -> Result<u64, SinkError> {
        match (self, unloaded) {
            (_, Unloaded::Done(n)) => Ok(n),
            (Sink::BigQuery(s), Unloaded::Rows(rows)) => {
                s.load(rows, &job.name, &job.tags, &job.table, scope, run_id)
                    .await
            }
            (Sink::Duck(_), Unloaded::Rows(_)) => unreachable!("DuckDB sinks load in unload()"),
        }
    }
}
