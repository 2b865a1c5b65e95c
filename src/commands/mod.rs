//! The CLI verbs: each loads the spec, does its work and prints its report.
//! Errors go back to `error::report`, the single place that prints them.

mod dry_run;
mod prefect;
mod run;
mod serve;
mod status;

use chrono::{DateTime, Utc};

use crate::cli::{Cli, Command, PrefectCommand};
use crate::error::{Error, EXIT_OK};
use crate::spec::{did_you_mean, parse_time, Config, Hour, Pipeline};

pub fn dispatch(cli: &Cli) -> Result<i32, Error> {
    let config = crate::template::check(&cli.config).map_err(Error::Spec)?;
    match &cli.command {
        Command::Validate => validate(cli, &config),
        Command::List => list(&config),
        Command::DryRun(a) => dry_run::dry_run(&config, a),
        Command::Run(a) => run::run(&config, a, cli.quiet),
        Command::Backfill(a) => run::backfill(&config, a, cli.quiet),
        Command::Serve(a) => serve::serve(&config, a, cli.quiet),
        Command::Status(a) => status::status(&config, a),
        Command::Prefect(PrefectCommand::Deploy(a)) => prefect::deploy(&config, a),
        Command::Prefect(PrefectCommand::Worker(a)) => prefect::worker(&config, a),
        Command::Prefect(PrefectCommand::Backfill(a)) => prefect::backfill(&config, a),
    }
}

fn validate(cli: &Cli, config: &Config) -> Result<i32, Error> {
    // Only here, not before every command: it costs a DuckDB and a run of
    // every template, which an hourly run should not pay.
    crate::bind::check(config, &config.templates()).map_err(Error::Spec)?;
    let jobs: usize = config.pipelines.values().map(|p| p.jobs.len()).sum();
    let models: usize = config.pipelines.values().map(|p| p.models.len()).sum();
    println!(
        "{} is valid: {} pipelines, {} jobs, {} models, {} sources, {} sinks",
        cli.config.display(),
        config.pipelines.len(),
        jobs,
        models,
        config.sources.len(),
        config.sinks.len()
    );
    Ok(EXIT_OK)
}

fn list(config: &Config) -> Result<i32, Error> {
    for p in config.pipelines.values() {
        println!(
            "{}  source {} -> sinks {}  ({} jobs{})",
            p.name,
            p.source,
            p.sinks.join(", "),
            p.jobs.len(),
            p.schedule
                .as_ref()
                .map(|s| format!(", schedule `{s}`"))
                .unwrap_or_default()
        );
        let width = p.jobs.iter().map(|j| j.name.len()).max().unwrap_or(0);
        for j in &p.jobs {
            println!(
                "  {:width$}  {}.{} -> {} via {}",
                j.name, j.measurement, j.field, j.table, j.template
            );
        }
        let width = p.models.iter().map(|m| m.name.len()).max().unwrap_or(0);
        for m in &p.models {
            let zone = match m.grain {
                crate::time::Grain::Hour => String::new(),
                _ => format!(" ({})", m.zone),
            };
            let events = m.events.as_ref().map_or_else(String::new, |e| {
                format!(", new episodes as Prefect events `{e}`")
            });
            println!(
                "  model {:width$}  {}{zone}, lookback {}h, reads {} -> {} via {}{events}",
                m.name,
                m.grain.word(),
                m.lookback_hours,
                m.inputs_text(),
                m.table,
                m.template
            );
        }
    }
    Ok(EXIT_OK)
}

/// The pipeline named on the command line, or a usage error with a suggestion.
pub(crate) fn pipeline<'a>(config: &'a Config, name: &str) -> Result<&'a Pipeline, Error> {
    config.pipelines.get(name).ok_or_else(|| {
        let hint = did_you_mean(name, config.pipelines.keys().map(String::as_str));
        Error::Usage(format!("unknown pipeline `{name}`{hint}"))
    })
}

/// Checks `--job` names against the pipeline.
pub(crate) fn check_jobs(p: &Pipeline, jobs: &[String]) -> Result<(), Error> {
    for j in jobs {
        if p.job(j).is_none() {
            let hint = did_you_mean(j, p.jobs.iter().map(|j| j.name.as_str()));
            return Err(Error::Usage(format!(
                "pipeline `{}` has no job `{j}`{hint}",
                p.name
            )));
        }
    }
    Ok(())
}

/// Checks `--model` names against the pipeline.
pub(crate) fn check_models(p: &Pipeline, models: &[String]) -> Result<(), Error> {
    for m in models {
        if p.model(m).is_none() {
            let hint = did_you_mean(m, p.models.iter().map(|m| m.name.as_str()));
            return Err(Error::Usage(format!(
                "pipeline `{}` has no model `{m}`{hint}",
                p.name
            )));
        }
    }
    Ok(())
}

/// `--now`, or the clock.
pub(crate) fn now(arg: &Option<String>) -> Result<DateTime<Utc>, Error> {
    match arg {
        Some(s) => parse_time(s).map_err(|e| Error::Usage(format!("--now: {e}"))),
        None => Ok(Utc::now()),
    }
}

/// An hour flag (`--from`, `--to`).
pub(crate) fn hour(flag: &str, s: &str) -> Result<Hour, Error> {
    Hour::parse(s).map_err(|e| Error::Usage(format!("{flag}: {e}")))
}

/// `--from`/`--to` as a non-empty range.
pub(crate) fn range(from: &str, to: &str) -> Result<(Hour, Hour), Error> {
    let (f, t) = (hour("--from", from)?, hour("--to", to)?);
    if f >= t {
        return Err(Error::Usage(format!("--from {f} must be before --to {t}")));
    }
    Ok((f, t))
}
