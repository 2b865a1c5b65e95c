//! `run` and `backfill`: drive the runner and print what was done.

use std::io::Write;

use crate::cli::{BackfillArgs, RunArgs};
use crate::error::{Error, EXIT_OK};
use crate::runner::{self, checkpoint_text, Mode, Options, Outcomes};
use crate::spec::{Config, Pipeline};

/// Whether to draw progress: stderr is a terminal and not `--quiet`.
pub(crate) fn progress_wanted(quiet: bool) -> bool {
    use std::io::IsTerminal;
    !quiet && std::io::stderr().is_terminal()
}

pub fn run(config: &Config, a: &RunArgs, quiet: bool) -> Result<i32, Error> {
    let p = super::pipeline(config, &a.pipeline)?;
    super::check_jobs(p, &a.filter.jobs)?;
    let opts = Options {
        now: super::now(&a.now)?,
        jobs: a.filter.jobs.clone(),
        mode: Mode::Run,
        wait: a.wait,
        stop: Default::default(),
        progress: progress_wanted(quiet),
        replace_empty: a.replace_empty,
        alerts: true,
        flow_run: None,
        beats: None,
        models: Vec::new(),
    };
    execute(config, p, opts)
}

pub fn backfill(config: &Config, a: &BackfillArgs, quiet: bool) -> Result<i32, Error> {
    let p = super::pipeline(config, &a.pipeline)?;
    super::check_jobs(p, &a.filter.jobs)?;
    super::check_models(p, &a.models)?;
    let (from, to) = super::range(&a.range.from, &a.range.to)?;
    let opts = Options {
        now: super::now(&a.now)?,
        jobs: a.filter.jobs.clone(),
        mode: Mode::Backfill { from, to },
        wait: a.wait,
        stop: Default::default(),
        progress: progress_wanted(quiet),
        replace_empty: a.replace_empty,
        alerts: a.alerts,
        flow_run: None,
        beats: None,
        models: with_upstream(p, &a.models),
    };
    execute(config, p, opts)
}

/// `models` and every model they read, transitively, in the spec's order:
/// a model is recomputed from what those hold.
fn with_upstream(p: &Pipeline, models: &[String]) -> Vec<String> {
    let mut want: Vec<&str> = models.iter().map(String::as_str).collect();
    for m in p.models.iter().rev() {
        if want.contains(&m.name.as_str()) {
            want.extend(m.depends_on.iter().map(String::as_str));
        }
    }
    p.models
        .iter()
        .filter(|m| want.contains(&m.name.as_str()))
        .map(|m| m.name.clone())
        .collect()
}

/// The async runtime every networked command uses.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        // Two workers: what every published scripts/bench number ran with.
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the runtime: {e}")))
}

fn execute(config: &Config, p: &Pipeline, opts: Options) -> Result<i32, Error> {
    let verb = verb(&opts);
    let outcomes = runtime()?.block_on(runner::run(config, p, opts));
    finish(config, p, &verb, &outcomes)
}

pub(crate) fn verb(opts: &Options) -> String {
    match opts.mode {
        Mode::Run => "run".to_owned(),
        Mode::Backfill { from, to } => format!("backfill [{from}, {to})"),
    }
}

/// Prints the report and the failures; the exit status of the outcomes.
pub(crate) fn finish(
    config: &Config,
    p: &Pipeline,
    verb: &str,
    outcomes: &Outcomes,
) -> Result<i32, Error> {
    print_report(config, p, verb, outcomes);
    let failed = outcomes.failed();
    match (failed, outcomes.behind_text()) {
        (0, None) => return Ok(EXIT_OK),
        (0, Some(behind)) => return Err(Error::SinksBehind(behind)),
        (_, Some(behind)) => crate::error::say(&behind),
        (_, None) => {}
    }
    for o in &outcomes.models {
        if let Some(e) = &o.error {
            // A model's error may name the model already.
            let e = e.to_string();
            let named = format!("model `{}`", o.model);
            if e.starts_with(&named) {
                crate::error::say(&e);
            } else {
                crate::error::say(&format!("{named}: {e}"));
            }
        }
    }
    // Jobs that failed for the same reason (a sink or source that could
    // not be set up) are reported once.
    let mut by_error: Vec<(String, Vec<&str>)> = Vec::new();
    for o in &outcomes.jobs {
        let Some(e) = &o.error else { continue };
        let e = e.to_string();
        match by_error.iter_mut().find(|(m, _)| *m == e) {
            Some((_, jobs)) => jobs.push(&o.job),
            None => by_error.push((e, vec![&o.job])),
        }
    }
    for (e, jobs) in by_error {
        let names: Vec<String> = jobs.iter().map(|j| format!("`{j}`")).collect();
        let noun = if jobs.len() == 1 { "job" } else { "jobs" };
        crate::error::say(&format!("{noun} {}: {e}", names.join(", ")));
    }
    Err(Error::JobsFailed {
        failed,
        total: outcomes.total(),
    })
}

fn print_report(config: &Config, p: &Pipeline, verb: &str, outcomes: &Outcomes) {
    let models: Vec<String> = outcomes.models.iter().map(|o| o.task_name()).collect();
    let width = (outcomes.jobs.iter().map(|o| o.job.len()))
        .chain(models.iter().map(String::len))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    out.push_str(&format!("{verb} of pipeline `{}`:\n", p.name));
    for o in &outcomes.jobs {
        let status = o.status();
        let cp = checkpoint_text(o.checkpoint);
        let batches = if o.batches == 1 { "batch" } else { "batches" };
        let mut line = format!(
            "  {:width$}  {status:6}  {} hours ({} new, {} redone) in {} {batches}, {} rows in, {} rows out, checkpoint {cp}",
            o.job, o.hours, o.new_hours, o.redo_hours, o.batches, o.rows_in, o.rows_out
        );
        if o.empty_hours > 0 {
            line.push_str(&format!(
                "; {} hours empty at the source: kept what the sinks hold",
                o.empty_hours
            ));
        }
        if o.left_hours > 0 {
            line.push_str(&format!("; {} hours left for the next run", o.left_hours));
        }
        out.push_str(&line);
        out.push('\n');
    }
    for (o, name) in outcomes.models.iter().zip(&models) {
        out.push_str(&format!(
            "  {name:width$}  {:6}  {}: {} hours read, {} rows, checkpoint {}\n",
            o.status(),
            o.keys(),
            o.input_hours,
            o.rows,
            checkpoint_text(o.checkpoint)
        ));
    }
    if let Some(c) = outcomes.conflicts_text() {
        out.push_str(&format!("  {c}\n"));
    }
    let tables: std::collections::BTreeSet<&str> =
        p.jobs.iter().map(|j| j.table.as_str()).collect();
    let mut tables: Vec<&str> = tables.into_iter().collect();
    tables.extend(p.models.iter().map(|m| m.table.as_str()));
    for s in &p.sinks {
        out.push_str(&format!(
            "  data: {} ({}), {} {}\n",
            s,
            config.sinks[s].describe(),
            if tables.len() == 1 { "table" } else { "tables" },
            tables.join(", ")
        ));
    }
    // Where a newcomer can look at the products of a local file.
    let local = p.sinks.iter().find_map(|s| config.sinks[s].local_file());
    if let (Some(path), Some(m)) = (local, p.models.first()) {
        out.push_str(&format!(
            "  look: duckdb {path} -c 'FROM {} LIMIT 10'   (any DuckDB client reads the file)\n",
            m.table
        ));
    }
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
}
