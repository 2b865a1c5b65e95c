//! The state store: checkpoints, the per-hour ledger, run history and leases.
//!
//! A tagged enum rather than a trait object: there are two stores (local
//! files, Prefect blocks) and every command matches on the kind anyway.
//! Methods are async because the Prefect store talks HTTP; the local one
//! does small synchronous file writes inside them.

mod local;
mod prefect;
pub mod progress;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use local::{LocalLease, LocalState};
pub use prefect::{parse_datetime, PrefectLease, PrefectState, LEASE_TTL};
pub use progress::Progress;

/// A model's keys owed to sinks that were down when they were recomputed:
/// per sink, the pending hours whose products it lacks.
pub type Owed = std::collections::BTreeMap<String, Ranges<Hour>>;

use crate::prefect::{Client, PrefectError};
use crate::secret::{self, EnvSecrets};
use crate::spec::{Hour, StateConfig};
use crate::time::Ranges;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("job `{job}` of pipeline `{pipeline}` is already running: lease held by {holder}")]
    Busy {
        pipeline: String,
        job: String,
        holder: String,
    },
    #[error("job `{job}` of pipeline `{pipeline}` lost its lease ({lease}); stopped before its next write")]
    LeaseLost {
        pipeline: String,
        job: String,
        lease: String,
    },
    #[error("state store {place}: {message}")]
    Corrupt { place: String, message: String },
    #[error("state store: {0}")]
    Config(String),
    #[error("state store: {0}")]
    Prefect(#[from] PrefectError),
}

/// One line of the ledger: one sink has (or failed to get) one hour of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub hour: Hour,
    pub sink: String,
    /// Rows of that hour written to the sink.
    pub rows: u64,
    pub ok: bool,
    /// The source returned no row for this hour, so the sink was left as
    /// it was (it may hold rows loaded before the raw data expired).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty: bool,
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
    /// What failed, redacted of every known secret.
    pub error: Option<String>,
    /// [`crate::error::JobError::kind`] of the failure: `lease_busy`,
    /// `lease_lost`, `source`, `sink`, `template`, `state`, `internal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// A job's stations with an hour under 75 % coverage in the run
    /// (`none`, or at most 20 named and the rest counted), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_coverage: Option<String>,
    /// The run's heartbeats to Prefect until this job ended, when it
    /// reported to Prefect: whether Prefect's zombie detection could hear it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeats: Option<Heartbeats>,
}

/// Heartbeats Prefect took, and refused or never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeats {
    pub taken: u64,
    pub refused: u64,
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

/// A Prefect client from a `url` and `api_key` that may use `${env:}` and
/// `${secret:}` (the latter from the environment: a store cannot hold its
/// own key); `what` names the setting in errors (`state`, `prefect`).
pub fn prefect_client(what: &str, url: &str, api_key: Option<&str>) -> Result<Client, StateError> {
    let cfg = |e: secret::ResolveError| StateError::Config(e.to_string());
    let url = secret::resolve(url, &format!("{what} `url`"), &EnvSecrets).map_err(cfg)?;
    let key = match api_key {
        Some(k) => {
            Some(secret::resolve(k, &format!("{what} `api_key`"), &EnvSecrets).map_err(cfg)?)
        }
        None => None,
    };
    let url = url.expose().trim();
    if reqwest::Url::parse(url).is_err() {
        return Err(StateError::Config(format!(
            "{what} `url`: not a URL: `{}`",
            crate::http::shown_url(url)
        )));
    }
    Ok(Client::new(url, key))
}

/// The configured store.
#[derive(Debug)]
pub enum State {
    Local(LocalState),
    Prefect(Box<PrefectState>),
}

impl State {
    /// Opens a store without writing anything. The Prefect URL and API key
    /// may use `${env:}` and `${secret:}` (the latter from the environment:
    /// the store cannot hold its own key).
    pub fn open(config: &StateConfig) -> Result<State, StateError> {
        State::open_with(config, crate::prefect::RETRY_BUDGET)
    }

    /// For commands that only read: a busy or absent server is reported within seconds.
    pub fn open_for_reading(config: &StateConfig) -> Result<State, StateError> {
        State::open_with(config, crate::prefect::READ_RETRY_BUDGET)
    }

    fn open_with(config: &StateConfig, budget: std::time::Duration) -> Result<State, StateError> {
        match config {
            StateConfig::Local { dir } => Ok(State::Local(LocalState::new(dir.clone()))),
            StateConfig::Prefect {
                url,
                api_key,
                block_name,
                lease,
            } => Ok(State::Prefect(Box::new(PrefectState::new(
                prefect_client("state", url, api_key.as_deref())?.with_retry_budget(budget),
                block_name.clone(),
                *lease,
            )))),
        }
    }

    /// A store's description for `status` and reports.
    pub fn describe(config: &StateConfig) -> String {
        match config {
            StateConfig::Local { dir } => format!("local {}", dir.display()),
            StateConfig::Prefect { block_name, .. } => format!("prefect blocks `{block_name}`"),
        }
    }

    /// The Prefect client, when the store is Prefect (it also serves secrets).
    pub fn prefect(&self) -> Option<&PrefectState> {
        match self {
            State::Prefect(p) => Some(p),
            State::Local(_) => None,
        }
    }

    /// Reads the state of the jobs or models `keys`, whose leases this run
    /// holds, at once (one request to Prefect); later reads and writes of
    /// this run use it. Nothing to do for local files.
    pub async fn load(&self, pipeline: &str, keys: &[String]) -> Result<(), StateError> {
        match self {
            State::Local(_) => Ok(()),
            State::Prefect(s) => s.load(pipeline, keys).await,
        }
    }

    pub async fn checkpoint(&self, pipeline: &str, job: &str) -> Result<Option<Hour>, StateError> {
        match self {
            State::Local(s) => s.checkpoint(pipeline, job),
            State::Prefect(s) => s.checkpoint(pipeline, job).await,
        }
    }

    pub async fn set_checkpoint(
        &self,
        pipeline: &str,
        job: &str,
        hour: Hour,
    ) -> Result<(), StateError> {
        match self {
            State::Local(s) => s.set_checkpoint(pipeline, job, hour),
            State::Prefect(s) => s.set_checkpoint(pipeline, job, hour).await,
        }
    }

    pub async fn append_ledger(
        &self,
        pipeline: &str,
        job: &str,
        entries: &[LedgerEntry],
    ) -> Result<(), StateError> {
        match self {
            State::Local(s) => s.append_ledger(pipeline, job, entries),
            State::Prefect(s) => s.append_ledger(pipeline, job, entries).await,
        }
    }

    pub async fn ledger(&self, pipeline: &str, job: &str) -> Result<Vec<LedgerEntry>, StateError> {
        match self {
            State::Local(s) => s.ledger(pipeline, job),
            State::Prefect(s) => s.ledger(pipeline, job).await,
        }
    }

    /// A model's hours loaded but not yet recomputed, as merged ranges
    /// (`key`: [`crate::spec::Model::state_key`]).
    pub async fn pending(&self, pipeline: &str, key: &str) -> Result<Ranges<Hour>, StateError> {
        match self {
            State::Local(s) => s.pending(pipeline, key),
            State::Prefect(s) => s.pending(pipeline, key).await,
        }
    }

    pub async fn set_pending(
        &self,
        pipeline: &str,
        key: &str,
        ranges: &Ranges<Hour>,
    ) -> Result<(), StateError> {
        match self {
            State::Local(s) => s.set_pending(pipeline, key, ranges),
            State::Prefect(s) => s.set_pending(pipeline, key, ranges).await,
        }
    }

    /// A job's per-sink progress (see [`progress`]).
    pub async fn progress(&self, pipeline: &str, job: &str) -> Result<Progress, StateError> {
        match self {
            State::Local(s) => s.progress(pipeline, job),
            State::Prefect(s) => s.progress(pipeline, job).await,
        }
    }

    /// Written before (local files) or with (Prefect) the checkpoint.
    pub async fn set_progress(
        &self,
        pipeline: &str,
        job: &str,
        p: &Progress,
    ) -> Result<(), StateError> {
        match self {
            State::Local(s) => s.set_progress(pipeline, job, p),
            State::Prefect(s) => s.set_progress(pipeline, job, p).await,
        }
    }

    /// A model's keys owed to sinks that were down ([`Owed`]).
    pub async fn owed(&self, pipeline: &str, key: &str) -> Result<Owed, StateError> {
        match self {
            State::Local(s) => s.owed(pipeline, key),
            State::Prefect(s) => s.owed(pipeline, key).await,
        }
    }

    /// Written at once: durable before the model's pending hours are cleared.
    pub async fn set_owed(&self, pipeline: &str, key: &str, owed: &Owed) -> Result<(), StateError> {
        match self {
            State::Local(s) => s.set_owed(pipeline, key, owed),
            State::Prefect(s) => s.set_owed(pipeline, key, owed).await,
        }
    }

    pub async fn record_run(
        &self,
        pipeline: &str,
        job: &str,
        run: &RunRecord,
    ) -> Result<(), StateError> {
        match self {
            State::Local(s) => s.record_run(pipeline, job, run),
            State::Prefect(s) => s.record_run(pipeline, job, run).await,
        }
    }

    pub async fn runs(
        &self,
        pipeline: &str,
        job: &str,
        last: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        match self {
            State::Local(s) => s.runs(pipeline, job, last),
            State::Prefect(s) => s.runs(pipeline, job, last).await,
        }
    }

    /// Takes the leases of `keys` (jobs or models), in that order, each
    /// with its `wait` (poll until free) or not (`Busy` names the holder).
    /// With Prefect, all are first asked for in one request.
    pub async fn lease_all(
        &self,
        pipeline: &str,
        keys: &[(String, bool)],
        holder: &Holder,
    ) -> Vec<Result<Lease, StateError>> {
        match self {
            State::Local(s) => {
                let mut out = Vec::new();
                for (key, wait) in keys {
                    out.push(loop {
                        match s.lease(pipeline, key, holder) {
                            Err(StateError::Busy { .. }) if *wait => {
                                tokio::time::sleep(std::time::Duration::from_millis(500)).await
                            }
                            other => break other.map(Lease::Local),
                        }
                    });
                }
                out
            }
            State::Prefect(s) => s
                .lease_all(pipeline, keys, holder)
                .await
                .into_iter()
                .map(|l| l.map(|l| Lease::Prefect(Box::new(l))))
                .collect(),
        }
    }
}

/// A held lease. A local one is released when dropped (and by the OS if the
/// process dies); a Prefect one by [`Lease::release`], or when it expires.
#[derive(Debug)]
pub enum Lease {
    Local(LocalLease),
    Prefect(Box<PrefectLease>),
}

impl Lease {
    /// Whether the job may still write (to a sink, the ledger, its block):
    /// a Prefect lease is trusted until three quarters of its duration
    /// after its last renewal, or until the server says it is gone.
    pub fn check(&self) -> Result<(), StateError> {
        match self {
            Lease::Local(_) => Ok(()),
            Lease::Prefect(l) => l.check(),
        }
    }

    pub async fn release(self) {
        match self {
            Lease::Local(l) => drop(l),
            Lease::Prefect(l) => l.release().await,
        }
    }
}
