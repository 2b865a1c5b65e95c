//! duckhour: an embedded, DuckDB-centric ETL engine that turns InfluxDB
//! minute readings into hourly aggregates in DuckDB/MotherDuck and BigQuery.
//!
//! Modules, in the order data flows:
//! - [`cli`]: commands and flags; [`commands`]: what each CLI verb prints.
//! - [`spec`]: `pipelines.yaml` — parse, validate (pure), the checked config;
//!   [`secret`]: secrets and `${env:…}` / `${secret:…}` references.
//! - [`template`]: minijinja SQL templates over `sql/`; [`bind`]: `validate`
//!   runs every template's SQL on empty inputs.
//! - [`time`]: whole hours, ranges of hours and keys, models' key maths
//!   (a leaf).
//! - [`plan`]: hour windows, catch-up batches, lookback, checkpoint moves (pure).
//! - [`sources`]: InfluxDB v1/v2/v3 and line-protocol files, streamed;
//!   [`staged`]: a batch's rows as the transform reads them.
//! - [`duck`]: the embedded DuckDB (staging, transform).
//! - [`sinks`]: DuckDB files / MotherDuck, BigQuery.
//! - [`models`]: products over the hourly rows (daily means, the air-quality
//!   index, annual means, thresholds, ...).
//! - [`state`]: checkpoints, ledger, run history, leases.
//! - [`runner`]: one run of a pipeline; [`cron`] and `serve`: schedules;
//!   [`progress`]: the terminal line; [`logging`]: text or JSON logs.
//! - [`report`]: a run as a Prefect flow run with task runs and logs.
//! - [`memory`]: malloc settings that keep peak memory flat in long runs.
//! - [`http`]: how the HTTP clients show URLs; [`retry`]: the one retry
//!   policy (a failure's class decides; each client classifies its own).
//! - [`prefect`]: the Prefect REST client (blocks, secrets, concurrency leases).
//! - [`error`]: exit codes and the reporter; [`hint`]: what to do about an
//!   error whose cause is known.

pub mod bind;
pub mod cli;
pub mod commands;
pub mod cron;
pub mod duck;
pub mod error;
pub mod health;
pub mod hint;
pub mod http;
pub mod logging;
pub mod memory;
pub mod models;
pub mod plan;
pub mod prefect;
pub mod progress;
pub mod report;
pub mod retry;
pub mod runner;
pub mod secret;
pub mod sinks;
pub mod sources;
pub mod spec;
pub mod staged;
pub mod state;
pub mod template;
pub mod time;

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: cli::Cli) -> i32 {
    logging::init(cli.verbose, cli.quiet, cli.log_format);
    match commands::dispatch(&cli) {
        Ok(code) => code,
        Err(e) => error::report(&e),
    }
}
