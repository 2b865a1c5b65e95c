//! The top-level error, its exit code, and the one place that prints errors;
//! and [`JobError`], why one job failed, carried unchanged from the job to
//! the report, the run record and the exit code.
//!
//! Exit codes scripts can rely on: 0 success, 1 a job failed (or a service
//! could not be reached; the run record's `error_kind` says which cause),
//! 2 bad usage or a bad spec.

use std::sync::Arc;

use crate::duck::DuckError;
use crate::sinks::SinkError;
use crate::sources::SourceError;
use crate::spec::Diagnostic;
use crate::state::StateError;

pub const EXIT_OK: i32 = 0;
pub const EXIT_JOB_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Problems in the spec or its templates.
    #[error("{}", render_diagnostics(.0))]
    Spec(Vec<Diagnostic>),
    /// A bad command line (unknown pipeline, bad time, ...).
    #[error("{0}")]
    Usage(String),
    /// Some jobs failed; each was already reported.
    #[error("{failed} of {total} jobs failed")]
    JobsFailed { failed: usize, total: usize },
    /// Every job loaded what the sinks taking writes take; these sinks
    /// are behind (which, how far, why).
    #[error("{0}")]
    SinksBehind(String),
    /// The state store failed outside any job.
    #[error(transparent)]
    State(#[from] StateError),
    /// Anything else that stops the command before jobs start.
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Spec(_) | Error::Usage(_) => EXIT_USAGE,
            Error::JobsFailed { .. }
            | Error::SinksBehind(_)
            | Error::State(_)
            | Error::Other(_) => EXIT_JOB_FAILED,
        }
    }
}

/// A lower layer's error, kept whole (its type, its fields, its source
/// chain) and shared, so that outcomes can be cloned into reports.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Wraps any error (or a message, e.g. a panic's) as a [`Cause`].
pub fn cause(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Cause {
    Arc::from(e.into())
}

/// Why one job failed. Each variant carries the error of the layer that
/// failed (the state store's, the source's, the sink's, the template's),
/// whose message names what failed and the hours. It may quote a service's
/// answer: every place that shows or stores one redacts it
/// (`secret::redact`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// Another runner holds a lease this job needs (its own, or that of a
    /// model it feeds); nothing was done.
    #[error("{leased}{cause}")]
    LeaseBusy { leased: Leased, cause: StateError },
    /// The lease could not be proven valid any more (expired locally,
    /// or the server answered it is gone): the job stopped before its next
    /// write to any sink, ledger or block.
    #[error("{0}")]
    LeaseLost(StateError),
    /// The source failed (its name and the hours are in the error).
    #[error("{0}")]
    Source(Arc<SourceError>),
    /// A sink failed to set up or to load hours; the checkpoint did not move.
    #[error("{0}")]
    Sink(Arc<SinkError>),
    /// The template did not render, its SQL failed, or its result broke
    /// the contract (`pollutant` = the job, `hour_start` in the batch); or
    /// a model's rows do not have the shape its `events:` need.
    #[error("{0}")]
    Template(Cause),
    /// A model was not recomputed because a model whose rows it reads
    /// failed in this run; its hours stay pending.
    #[error("model `{model}` was not recomputed: model `{upstream}`, whose rows it reads, failed; its hours stay pending")]
    Upstream { model: String, upstream: String },
    /// The state store (checkpoint, ledger) failed.
    #[error("{0}")]
    State(StateError),
    /// Prefect did not take events that must not be lost (a model's
    /// `events:`, e.g. threshold alerts); they are sent again next run.
    #[error("model `{model}`: {failed}")]
    Events {
        model: String,
        failed: Box<EventsFailed>,
    },
    /// Anything else (the embedded database, a task that died), with what
    /// was being done when it is not in the cause.
    #[error("{}{cause}", context.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
    Internal {
        context: Option<String>,
        cause: Cause,
    },
}

/// Whose lease another runner holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leased {
    /// The job's own.
    Job,
    /// That of a model this run was to recompute.
    Model(String),
    /// That of a model that reads the job's rows.
    Reader(String),
}

impl std::fmt::Display for Leased {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leased::Job => Ok(()),
            Leased::Model(m) => write!(f, "model `{m}` is being recomputed by another run: "),
            Leased::Reader(m) => write!(
                f,
                "model `{m}`, which reads this job, is being recomputed by another run: "
            ),
        }
    }
}

/// How sending a model's `events:` failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EventsFailed {
    /// No client to send them with (Prefect is not configured or its
    /// secrets did not resolve).
    #[error("cannot send its `{event}` events: {why}")]
    NoClient { event: String, why: String },
    /// Prefect refused or did not answer.
    #[error("Prefect did not take {count} `{event}` events for {range}: {cause}; its hours stay pending and the next run sends them")]
    Refused {
        event: String,
        count: usize,
        range: String,
        cause: crate::prefect::PrefectError,
    },
}

impl JobError {
    /// A short, stable name for records and scripts: `lease_busy`,
    /// `lease_lost`, `source`, `sink`, `template`, `upstream`, `state`,
    /// `events`, `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            JobError::LeaseBusy { .. } => "lease_busy",
            JobError::LeaseLost(_) => "lease_lost",
            JobError::Source(_) => "source",
            JobError::Sink(_) => "sink",
            JobError::Template(_) => "template",
            JobError::Upstream { .. } => "upstream",
            JobError::State(_) => "state",
            JobError::Events { .. } => "events",
            JobError::Internal { .. } => "internal",
        }
    }

    /// An internal failure whose cause says what it is about.
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> JobError {
        JobError::Internal {
            context: None,
            cause: cause(e),
        }
    }

    /// An internal failure while doing `context`.
    pub fn internal_in(
        context: impl Into<String>,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> JobError {
        JobError::Internal {
            context: Some(context.into()),
            cause: cause(e),
        }
    }
}

impl From<StateError> for JobError {
    fn from(e: StateError) -> JobError {
        match e {
            StateError::Busy { .. } => JobError::LeaseBusy {
                leased: Leased::Job,
                cause: e,
            },
            StateError::LeaseLost { .. } => JobError::LeaseLost(e),
            _ => JobError::State(e),
        }
    }
}

impl From<SourceError> for JobError {
    fn from(e: SourceError) -> JobError {
        JobError::Source(Arc::new(e))
    }
}

impl From<SinkError> for JobError {
    fn from(e: SinkError) -> JobError {
        match e {
            SinkError::ReadBack { .. } => JobError::internal(e),
            _ => JobError::Sink(Arc::new(e)),
        }
    }
}

impl From<DuckError> for JobError {
    fn from(e: DuckError) -> JobError {
        match e {
            DuckError::Db(_) | DuckError::Extension { .. } => JobError::internal(e),
            _ => JobError::Template(cause(e)),
        }
    }
}

fn render_diagnostics(ds: &[Diagnostic]) -> String {
    let mut out = ds
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n\n");
    if ds.len() > 1 {
        out.push_str(&format!("\n\n{} errors", ds.len()));
    }
    out
}

/// Prints `e` on stderr (with every known secret redacted) and returns its exit code.
pub fn report(e: &Error) -> i32 {
    match e {
        Error::Spec(_) => eprintln!("{}", crate::secret::redact(&e.to_string())),
        _ => say(&e.to_string()),
    }
    e.exit_code()
}

/// Says one error on stderr, the one way errors are printed outside the
/// spec's diagnostics: `error: ` and the text, every known secret
/// redacted, and the hint when its cause is known ([`crate::hint`]).
pub fn say(text: &str) {
    let text = crate::secret::redact(text);
    eprintln!("error: {text}");
    if let Some(h) = crate::hint::for_message(&text) {
        eprintln!("  = hint: {h}");
    }
}
