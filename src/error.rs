//! The top-level error, its exit code, and the one place that prints errors;
//! and [`JobError`], why one job failed, carried unchanged from the job to
//! the report, the run record and the exit code.
//!
//! Exit codes scripts can rely on: 0 success, 1 a job failed (or a service
//! could not be reached; the run record's `error_kind` says which cause),
//! 2 bad usage or a bad spec.

use crate::spec::Diagnostic;

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
    /// The state store failed outside any job.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// Anything else that stops the command before jobs start.
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Spec(_) | Error::Usage(_) => EXIT_USAGE,
            Error::JobsFailed { .. } | Error::State(_) | Error::Other(_) => EXIT_JOB_FAILED,
        }
    }
}

/// Why one job failed. Each message names what failed (the source or sink,
/// the template, the lease) and the hours. It may quote a service's answer:
/// every place that shows or stores one redacts it (`secret::redact`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Another runner holds the job's lease; nothing was done.
    #[error("{0}")]
    LeaseBusy(String),
    /// The lease could not be proven valid any more (expired locally,
    /// or the server answered it is gone): the job stopped before its next
    /// write to any sink, ledger or block.
    #[error("{0}")]
    LeaseLost(String),
    /// The source failed (its name and the hours are in the message).
    #[error("{0}")]
    Source(String),
    /// A sink failed to set up (`hours` is `None`) or to load those hours;
    /// the checkpoint did not move.
    #[error("{message}")]
    Sink {
        sink: String,
        hours: Option<String>,
        message: String,
    },
    /// The template did not render, its SQL failed, or its result broke
    /// the contract (`pollutant` = the job, `hour_start` in the batch).
    #[error("{0}")]
    Template(String),
    /// A model was not recomputed because a model whose rows it reads
    /// failed in this run; its hours stay pending.
    #[error("model `{model}` was not recomputed: model `{upstream}`, whose rows it reads, failed; its hours stay pending")]
    Upstream { model: String, upstream: String },
    /// The state store (checkpoint, ledger) failed.
    #[error("{0}")]
    State(String),
    /// Prefect did not take events that must not be lost (a model's
    /// `events:`, e.g. threshold alerts); they are sent again next run.
    #[error("{0}")]
    Events(String),
    /// Anything else (the embedded database, a task that died).
    #[error("{0}")]
    Internal(String),
}

impl JobError {
    /// A short, stable name for records and scripts: `lease_busy`,
    /// `lease_lost`, `source`, `sink`, `template`, `upstream`, `state`,
    /// `events`, `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            JobError::LeaseBusy(_) => "lease_busy",
            JobError::LeaseLost(_) => "lease_lost",
            JobError::Source(_) => "source",
            JobError::Sink { .. } => "sink",
            JobError::Template(_) => "template",
            JobError::Upstream { .. } => "upstream",
            JobError::State(_) => "state",
            JobError::Events(_) => "events",
            JobError::Internal(_) => "internal",
        }
    }
}

impl From<crate::state::StateError> for JobError {
    fn from(e: crate::state::StateError) -> JobError {
        use crate::state::StateError;
        let message = e.to_string();
        match e {
            StateError::Busy { .. } => JobError::LeaseBusy(message),
            StateError::LeaseLost { .. } => JobError::LeaseLost(message),
            _ => JobError::State(message),
        }
    }
}

impl From<crate::sinks::SinkError> for JobError {
    fn from(e: crate::sinks::SinkError) -> JobError {
        use crate::sinks::SinkError;
        let (sink, hours) = match &e {
            SinkError::ReadBack { message, .. } => return JobError::Internal(message.clone()),
            SinkError::Setup { sink, .. } | SinkError::Busy { sink, .. } => (sink.clone(), None),
            SinkError::Load { sink, range, .. } => (sink.clone(), Some(range.clone())),
        };
        JobError::Sink {
            sink,
            hours,
            message: e.to_string(),
        }
    }
}

impl From<crate::duck::DuckError> for JobError {
    fn from(e: crate::duck::DuckError) -> JobError {
        use crate::duck::DuckError;
        let message = e.to_string();
        match e {
            DuckError::Db(_) | DuckError::Extension { .. } => JobError::Internal(message),
            _ => JobError::Template(message),
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
