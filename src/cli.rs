//! Command-line interface: commands and flags, each documented for `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// duckhour: hourly aggregates of InfluxDB minute readings, loaded into
/// DuckDB/MotherDuck and BigQuery, with checkpoints that never skip or repeat an hour.
#[derive(Debug, Parser)]
#[command(name = "duckhour", version, about, long_about = None)]
pub struct Cli {
    /// The pipeline spec file.
    #[arg(
        long,
        short = 'c',
        global = true,
        default_value = "pipelines.yaml",
        env = "DUCKHOUR_CONFIG"
    )]
    pub config: PathBuf,

    /// More log output (-v: info, -vv: debug, -vvv: trace); default warnings and errors.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the spec and every SQL template, offline (no network, no writes).
    Validate,
    /// List pipelines and their jobs.
    List,
    /// Show what `run` (or `backfill` with --from/--to) would do: hours,
    /// batches, sinks, the exact source queries and rendered SQL. Writes nothing.
    DryRun(DryRunArgs),
    /// Process every pending complete hour of a pipeline's jobs and load all sinks.
    Run(RunArgs),
    /// Re-process an explicit hour range, idempotently; never moves a checkpoint backwards.
    Backfill(BackfillArgs),
    /// Per job: checkpoint, each sink's position and lag, gaps and the last runs.
    Status(StatusArgs),
    /// Run pipelines on their `schedule:` until SIGINT/SIGTERM. Each starts
    /// with a run right away (catching up after downtime), then on schedule.
    Serve(ServeArgs),
    /// Prefect: deploy the pipelines, and run them from a work pool.
    #[command(subcommand)]
    Prefect(PrefectCommand),
}

#[derive(Debug, Subcommand)]
pub enum PrefectCommand {
    /// Create or update one deployment per pipeline (its `schedule` and
    /// `timezone`, a typed Run form: mode, jobs, from, to) in a work pool,
    /// created if missing. Running it again changes nothing.
    Deploy(DeployArgs),
    /// Run the flow runs due in a work pool (scheduled, or made with the
    /// Run button or `prefect deployment run`), one at a time, until
    /// SIGINT/SIGTERM; several workers share a pool.
    Worker(WorkerArgs),
    /// Create flow runs that backfill `[from, to)` of a deployed pipeline,
    /// one per job (or per job and week), for the pool's workers to share.
    Backfill(PrefectBackfillArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Split {
    /// One flow run per job.
    Job,
    /// One flow run per job and week (168 hours from `--from`).
    Week,
}

#[derive(Debug, Args)]
pub struct PrefectBackfillArgs {
    /// The pipeline (deployed with `prefect deploy`).
    pub pipeline: String,
    #[command(flatten)]
    pub range: HourRange,
    #[command(flatten)]
    pub filter: JobFilter,
    /// How to cut the range into flow runs.
    #[arg(long, value_enum, default_value_t = Split::Job)]
    pub split: Split,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Pipelines to deploy; default all.
    pub pipelines: Vec<String>,
    /// The work pool.
    #[arg(long, default_value = "duckhour")]
    pub pool: String,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The work pool to take flow runs from.
    #[arg(long, default_value = "duckhour")]
    pub pool: String,
    /// This worker's name in the pool; default `duckhour-<pid>`.
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds between asking the pool for due flow runs (and a running
    /// flow run for a cancel), 1 to 300; default 10, as Prefect's own
    /// workers (each ask counts against Prefect Cloud's request limit).
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub poll: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Pipelines to serve; default every pipeline with a `schedule`.
    pub pipelines: Vec<String>,
    /// Pretend the current time is this when serving starts (RFC 3339);
    /// the clock then runs on from there (replays, tests).
    #[arg(long)]
    pub now: Option<String>,
}

#[derive(Debug, Args)]
pub struct JobFilter {
    /// Only this job (repeatable).
    #[arg(long = "job", short = 'j', value_name = "JOB")]
    pub jobs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DryRunArgs {
    /// The pipeline to plan.
    pub pipeline: String,
    #[command(flatten)]
    pub filter: JobFilter,
    /// Plan a backfill from this hour (RFC 3339, inclusive); needs --to.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// Plan a backfill up to this hour (RFC 3339, exclusive); needs --from.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Pretend the current time is this (RFC 3339).
    #[arg(long)]
    pub now: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline to run.
    pub pipeline: String,
    #[command(flatten)]
    pub filter: JobFilter,
    /// Pretend the current time is this (RFC 3339).
    #[arg(long)]
    pub now: Option<String>,
    /// Wait for a job's lease instead of failing when another run holds it.
    #[arg(long)]
    pub wait: bool,
    /// Replace hours the source returned nothing for (their rows in the
    /// sinks are deleted); by default such hours are kept as the sinks hold them.
    #[arg(long)]
    pub replace_empty: bool,
}

/// `--from T --to T`: the hours `[from, to)` of a backfill.
#[derive(Debug, Args)]
pub struct HourRange {
    /// First hour (RFC 3339, inclusive).
    #[arg(long)]
    pub from: String,
    /// End hour (RFC 3339, exclusive).
    #[arg(long)]
    pub to: String,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The pipeline to backfill.
    pub pipeline: String,
    #[command(flatten)]
    pub range: HourRange,
    #[command(flatten)]
    pub filter: JobFilter,
    /// Pretend the current time is this (RFC 3339).
    #[arg(long)]
    pub now: Option<String>,
    /// Wait for a job's lease instead of failing when another run holds it.
    #[arg(long)]
    pub wait: bool,
    /// Replace hours the source returned nothing for (their rows in the
    /// sinks are deleted); by default such hours are kept as the sinks hold them.
    #[arg(long)]
    pub replace_empty: bool,
    /// Recompute only this model (repeatable; with the models it reads)
    /// over the range, from the rows the sinks hold: no job runs and the
    /// source is not read.
    #[arg(long = "model", short = 'm', value_name = "MODEL", conflicts_with_all = ["jobs", "replace_empty"])]
    pub models: Vec<String>,
    /// Send the events of models with `events:` (threshold alerts) for
    /// episodes the backfill finds; by default only `run` (and `serve`, and
    /// a worker's runs in run mode) sends them.
    #[arg(long)]
    pub alerts: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// Pretend the current time is this (RFC 3339).
    #[arg(long)]
    pub now: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(args: &[&str]) -> Result<WorkerArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["duckhour", "prefect", "worker"], args].concat())?;
        match cli.command {
            Command::Prefect(PrefectCommand::Worker(w)) => Ok(w),
            other => panic!("{other:?}"),
        }
    }

    /// The worker polls every 10 s unless told (as Prefect's own workers
    /// against Cloud), 1 to 300 s.
    #[test]
    fn worker_poll_default_and_range() {
        assert_eq!(worker(&[]).unwrap().poll, 10);
        assert_eq!(worker(&["--poll", "1"]).unwrap().poll, 1);
        assert!(worker(&["--poll", "0"]).is_err());
        assert!(worker(&["--poll", "301"]).is_err());
    }
}
