//! Logs through `tracing` on stderr: readable text by default, JSON on request.
//! Fields first, then a short sentence; spans for pipeline, job and batch.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Text logs start at `warn` (the command prints its own report); JSON logs
/// feed log pipelines, which need every run's and job's start and end, so
/// they start at `info`. `-v` adds a level, `-q` keeps errors only;
/// `DUCKHOUR_LOG` (a `tracing` filter, e.g. `duckhour=debug`) overrides both.
pub fn init(verbose: u8, quiet: bool, format: LogFormat) {
    let base = match format {
        LogFormat::Text => 0,
        LogFormat::Json => 1,
    };
    let level = match (quiet, verbose.saturating_add(base)) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("DUCKHOUR_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("duckhour={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Redacting(std::io::stderr()))
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Stderr with every known secret removed: a log line may quote a service's
/// answer or a connection string (the formatter writes one event per call).
struct Redacting(std::io::Stderr);

impl std::io::Write for Redacting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(crate::secret::redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
