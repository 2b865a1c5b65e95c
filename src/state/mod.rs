//! The state store: checkpoints, the per-hour ledger, run history and leases.
//!
//! A tagged enum rather than a trait object: there are two stores (local
//! files, Prefect blocks) and every command matches on the kind anyway.

mod local;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use local::{LocalLease, LocalState};

use crate::spec::{Hour, StateConfig};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("job `{job}` of pipeline `{pipeline}` is already running: lease held by {holder}")]
    Busy {
        pipeline: String,
        job: String,
        holder: String,
    },
    #[error("state store: {0}")]
    Unsupported(String),
}

/// One line of the ledger: one sink has (or failed to get) one hour of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub hour: Hour,
    pub sink: String,
    /// Rows of that hour written to the sink.
    pub rows: u64,
    pub ok: bool,
    pub at: DateTime<Utc>,
    pub run_id: String,
}

/// One finished run of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    /// `run` or `backfill`.
    pub kind: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub ok: bool,
    pub hours: i64,
    pub rows: u64,
    pub error: Option<String>,
}

/// Who holds a lease, written beside it for the next runner to read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub since: DateTime<Utc>,
    pub run_id: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {} since {} (run {})",
            self.pid,
            self.host,
            self.since.format("%Y-%m-%dT%H:%M:%SZ"),
            self.run_id
        )
    }
}

/// The configured store.
#[derive(Debug)]
pub enum State {
    Local(LocalState),
}

impl State {
    /// Opens a store without writing anything.
    pub fn open(config: &StateConfig) -> Result<State, StateError> {
        match config {
            StateConfig::Local { dir } => Ok(State::Local(LocalState::new(dir.clone()))),
            StateConfig::Prefect { .. } => Err(StateError::Unsupported(
                "the prefect state store is not available in this build yet".into(),
            )),
        }
    }

    pub fn describe(config: &StateConfig) -> String {
        match config {
            StateConfig::Local { dir } => format!("local {}", dir.display()),
            StateConfig::Prefect { block_name, .. } => format!("prefect blocks `{block_name}`"),
        }
    }

    pub fn checkpoint(&self, pipeline: &str, job: &str) -> Result<Option<Hour>, StateError> {
        match self {
            State::Local(s) => s.checkpoint(pipeline, job),
        }
    }

    pub fn set_checkpoint(&self, pipeline: &str, job: &str, hour: Hour) -> Result<(), StateError> {
        match self {
            State::Local(s) => s.set_checkpoint(pipeline, job, hour),
        }
    }

    pub fn append_ledger(
        &self,
        pipeline: &str,
        job: &str,
        entries: &[LedgerEntry],
    ) -> Result<(), StateError> {
        match self {
            State::Local(s) => s.append_ledger(pipeline, job, entries),
        }
    }

    pub fn ledger(&self, pipeline: &str, job: &str) -> Result<Vec<LedgerEntry>, StateError> {
        match self {
            State::Local(s) => s.ledger(pipeline, job),
        }
    }

    pub fn record_run(&self, pipeline: &str, job: &str, run: &RunRecord) -> Result<(), StateError> {
        match self {
            State::Local(s) => s.record_run(pipeline, job, run),
        }
    }

    pub fn runs(
        &self,
        pipeline: &str,
        job: &str,
        last: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        match self {
            State::Local(s) => s.runs(pipeline, job, last),
        }
    }

    /// Takes the job's lease; `Busy` names the holder. With `wait`, polls until free.
    pub fn lease(
        &self,
        pipeline: &str,
        job: &str,
        holder: &Holder,
        wait: bool,
    ) -> Result<Lease, StateError> {
        match self {
            State::Local(s) => loop {
                match s.lease(pipeline, job, holder) {
                    Err(StateError::Busy { .. }) if wait => {
                        std::thread::sleep(std::time::Duration::from_millis(500))
                    }
                    other => return other.map(Lease::Local),
                }
            },
        }
    }
}

/// A held lease; released when dropped (and by the OS if the process dies).
#[derive(Debug)]
pub enum Lease {
    Local(LocalLease),
}
