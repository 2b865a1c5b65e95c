//! Logs through `tracing` on stderr: readable text by default, JSON on request.
//! Fields first, then a short sentence; spans for pipeline, job and batch.
//! Info lines and above of a run that reports to Prefect are also handed to
//! its report (`crate::report`), tagged with their job.

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

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
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(|| Redacting(std::io::stderr()))
        .with_target(false);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let forward = Forward.with_filter(filter_fn(|m| {
        m.target().starts_with("duckhour") && *m.level() <= Level::INFO
    }));
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(forward)
        .try_init();
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

/// The job a span belongs to, kept on the `job` span.
struct JobName(String);

/// An event's or span's fields as `name=value` pairs, the message last.
#[derive(Default)]
struct Fields {
    pairs: Vec<(String, String)>,
    message: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            name => self.pairs.push((name.to_owned(), value.to_owned())),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            name => self.pairs.push((name.to_owned(), format!("{value:?}"))),
        }
    }
}

impl Fields {
    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `k=v k=v message`, as the text log writes it.
    fn line(&self) -> String {
        let mut out: Vec<String> = self.pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(self.message.clone());
        out.join(" ")
    }
}

/// Hands info lines and above to the run's report, with their job.
struct Forward;

impl<S> Layer<S> for Forward
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "job" {
            return;
        }
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let (Some(job), Some(span)) = (f.get("job"), ctx.span(id)) {
            span.extensions_mut().insert(JobName(job.to_owned()));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = match *event.metadata().level() {
            Level::ERROR => 40,
            Level::WARN => 30,
            _ => 20,
        };
        let job = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find_map(|s| s.extensions().get::<JobName>().map(|j| j.0.clone()))
        });
        let mut f = Fields::default();
        event.record(&mut f);
        crate::report::log(job, level, f.line());
    }
}
