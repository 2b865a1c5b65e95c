//! The top-level error, its exit code, and the one place that prints errors.
//!
//! Exit codes scripts can rely on: 0 success, 1 a job failed (or a service
//! could not be reached), 2 bad usage or a bad spec.

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

/// Prints `e` on stderr and returns its exit code.
pub fn report(e: &Error) -> i32 {
    match e {
        Error::Spec(_) => eprintln!("{e}"),
        _ => eprintln!("error: {e}"),
    }
    e.exit_code()
}
