//! `run` and `backfill`: drive the runner and print what was done.

use crate::cli::{BackfillArgs, RunArgs};
use crate::error::{Error, EXIT_OK};
use crate::runner::{self, Mode, Options, Outcome};
use crate::spec::{Config, Pipeline};

pub fn run(config: &Config, a: &RunArgs) -> Result<i32, Error> {
    let p = super::pipeline(config, &a.pipeline)?;
    super::check_jobs(p, &a.filter.jobs)?;
    let opts = Options {
        now: super::now(&a.now)?,
        jobs: a.filter.jobs.clone(),
        mode: Mode::Run,
        wait: a.wait,
    };
    execute(config, p, opts)
}

pub fn backfill(config: &Config, a: &BackfillArgs) -> Result<i32, Error> {
    let p = super::pipeline(config, &a.pipeline)?;
    super::check_jobs(p, &a.filter.jobs)?;
    let (from, to) = super::range(&a.from, &a.to)?;
    let opts = Options {
        now: super::now(&a.now)?,
        jobs: a.filter.jobs.clone(),
        mode: Mode::Backfill { from, to },
        wait: a.wait,
    };
    execute(config, p, opts)
}

fn execute(config: &Config, p: &Pipeline, opts: Options) -> Result<i32, Error> {
    let verb = match opts.mode {
        Mode::Run => "run".to_owned(),
        Mode::Backfill { from, to } => format!("backfill [{from}, {to})"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the runtime: {e}")))?;
    let outcomes = rt.block_on(runner::run(config, p, opts));
    print_report(config, p, &verb, &outcomes);
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if failed > 0 {
        for o in outcomes.iter().filter(|o| !o.ok) {
            eprintln!(
                "error: job `{}`: {}",
                o.job,
                o.error.as_deref().unwrap_or("failed")
            );
        }
        return Err(Error::JobsFailed {
            failed,
            total: outcomes.len(),
        });
    }
    Ok(EXIT_OK)
}

fn print_report(config: &Config, p: &Pipeline, verb: &str, outcomes: &[Outcome]) {
    let width = outcomes.iter().map(|o| o.job.len()).max().unwrap_or(0);
    println!("{verb} of pipeline `{}`:", p.name);
    for o in outcomes {
        let cp = o
            .checkpoint
            .map(|c| c.to_string())
            .unwrap_or_else(|| "none".into());
        let status = if o.ok { "ok" } else { "FAILED" };
        let mut line = format!(
            "  {:width$}  {status:6}  {} hours ({} new, {} redone) in {} batches, {} rows in, {} rows out, checkpoint {cp}",
            o.job, o.hours, o.new_hours, o.redo_hours, o.batches, o.rows_in, o.rows_out
        );
        if o.left_hours > 0 {
            line.push_str(&format!("; {} hours left for the next run", o.left_hours));
        }
        println!("{line}");
    }
    let tables: std::collections::BTreeSet<&str> =
        p.jobs.iter().map(|j| j.table.as_str()).collect();
    let tables: Vec<&str> = tables.into_iter().collect();
    for s in &p.sinks {
        println!(
            "  data: {} ({}), table {}",
            s,
            config.sinks[s].describe(),
            tables.join(", ")
        );
    }
}
