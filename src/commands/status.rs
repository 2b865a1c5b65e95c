//! `status`: per job the checkpoint, each sink's position and lag (and,
//! for a failing sink, its next attempt), gaps (hours some sink lacks) and
//! the last runs; per model its pending hours and the keys owed to a sink
//! that was out. Reads state only.

use std::collections::{BTreeMap, BTreeSet};

use crate::cli::StatusArgs;
use crate::error::{Error, EXIT_OK};
use crate::plan::last_complete;
use crate::spec::{Config, Hour, Pipeline};
use crate::state::{LedgerEntry, State};
use crate::time::Ranges;

/// Hours (between the first hour the job should have and its newest loaded
/// hour) that some sink of the pipeline does not have.
pub fn gaps(p: &Pipeline, ledger: &[LedgerEntry], checkpoint: Option<Hour>) -> Vec<Hour> {
    let mut have: BTreeMap<&str, BTreeSet<Hour>> = BTreeMap::new();
    for e in ledger.iter().filter(|e| e.ok) {
        have.entry(e.sink.as_str()).or_default().insert(e.hour);
    }
    let newest = have
        .values()
        .filter_map(|s| s.last().copied())
        .chain(checkpoint)
        .max();
    let first = p
        .start
        .or_else(|| have.values().filter_map(|s| s.first().copied()).min());
    let (Some(first), Some(newest)) = (first, newest) else {
        return Vec::new();
    };
    let empty = BTreeSet::new();
    let mut out = Vec::new();
    let mut h = first;
    while h <= newest {
        if p.sinks
            .iter()
            .any(|s| !have.get(s.as_str()).unwrap_or(&empty).contains(&h))
        {
            out.push(h);
        }
        h = h.plus(1);
    }
    out
}

/// Hours whose latest load found nothing at the source, so the sinks kept
/// what they held (an older load's rows, or none).
pub fn empty_at_source(ledger: &[LedgerEntry]) -> Vec<Hour> {
    // The ledger is in the order loads happened: the last entry of an hour wins.
    let mut last: BTreeMap<Hour, bool> = BTreeMap::new();
    for e in ledger.iter().filter(|e| e.ok) {
        last.insert(e.hour, e.empty);
    }
    last.into_iter()
        .filter(|(_, e)| *e)
        .map(|(h, _)| h)
        .collect()
}

/// `a..b, c` for runs of consecutive hours.
fn ranges(hours: &[Hour]) -> String {
    Ranges::of_points(hours.iter().copied()).runs().to_string()
}

/// How far a job is from the newest hour due (`due`): `Nh behind`, or,
/// for a pipeline with `end:` that holds its last hour, that it is done.
fn lag(cp: Option<Hour>, due: Hour, end: Option<Hour>) -> String {
    match (cp, end) {
        (None, _) => "never loaded".into(),
        (Some(c), Some(end)) if c >= end.plus(-1) => {
            format!("complete: the pipeline ends at {end} (`end:`)")
        }
        (Some(c), _) => format!("{}h behind", c.hours_until(due).max(0)),
    }
}

pub fn status(config: &Config, a: &StatusArgs) -> Result<i32, Error> {
    let now = super::now(&a.now)?;
    super::run::runtime()?.block_on(report(config, a, now))
}

async fn report(
    config: &Config,
    a: &StatusArgs,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<i32, Error> {
    let pipelines: Vec<&Pipeline> = match &a.pipeline {
        Some(name) => vec![super::pipeline(config, name)?],
        None => config.pipelines.values().collect(),
    };
    for p in pipelines {
        let last = last_complete(now, p.delay);
        let due = crate::plan::last_due(now, p.delay, p.end);
        println!(
            "pipeline `{}` (state {}; last complete hour {last})",
            p.name,
            State::describe(&p.state)
        );
        let state = match State::open_for_reading(&p.state) {
            Ok(s) => s,
            Err(e) => {
                println!("  {e}");
                continue;
            }
        };
        for job in &p.jobs {
            let cp = state.checkpoint(&p.name, &job.name).await?;
            let ledger = state.ledger(&p.name, &job.name).await?;
            let g = gaps(p, &ledger, cp);
            let lag = lag(cp, due, p.end);
            let cp_text = cp.map(|c| c.to_string()).unwrap_or_else(|| "none".into());
            println!("  {}: checkpoint {cp_text}, {lag}", job.name);
            let progress = state.progress(&p.name, &job.name).await?;
            print_sinks(p, &progress, cp, due);
            if g.is_empty() {
                println!("    gaps: none");
            } else {
                println!(
                    "    gaps: {} hours missing in some sink: {}",
                    g.len(),
                    ranges(&g)
                );
            }
            let empty = empty_at_source(&ledger);
            if !empty.is_empty() {
                println!(
                    "    empty at the source: {} hours, kept as the sinks held them: {}",
                    empty.len(),
                    ranges(&empty)
                );
            }
            let runs = state.runs(&p.name, &job.name, 3).await?;
            if let Some(low) = runs.last().and_then(|r| r.low_coverage.as_ref()) {
                println!("    stations under 75 % coverage in the last run: {low}");
            }
            if let Some(h) = runs.last().and_then(|r| r.heartbeats) {
                println!("    {}", heartbeat_health(h));
            }
            print_runs(&runs);
        }
        for m in &p.models {
            print_model(&state, p, m).await?;
        }
    }
    Ok(EXIT_OK)
}

/// A model's checkpoint, the keys owed to a sink that was out, its pending
/// hours and last runs.
async fn print_model(state: &State, p: &Pipeline, m: &crate::spec::Model) -> Result<(), Error> {
    let key = m.state_key();
    let cp = state.checkpoint(&p.name, &key).await?;
    let pending = state.pending(&p.name, &key).await?;
    let cp_text = cp.map(|c| c.to_string()).unwrap_or_else(|| "none".into());
    println!(
        "  model {}: checkpoint {cp_text} (newest hour whose products are recomputed)",
        m.name
    );
    for (sink, hours) in state.owed(&p.name, &key).await? {
        println!("    owed to sink {sink} (out when they were recomputed): hours {hours}");
    }
    if pending.is_empty() {
        println!("    pending: none");
    } else {
        let keys: Vec<String> = crate::models::plan::affected(m, &pending)
            .iter()
            .map(ToString::to_string)
            .collect();
        println!(
            "    pending: hours {pending} (recomputes {} on the next run)",
            keys.join(", ")
        );
    }
    print_runs(&state.runs(&p.name, &key, 3).await?);
    Ok(())
}

/// Each sink's position and lag, and, for one that is failing, since when,
/// how many runs in a row, its next attempt and why (for a pipeline of
/// one sink, only while it fails).
fn print_sinks(p: &Pipeline, progress: &crate::state::Progress, cp: Option<Hour>, due: Hour) {
    // One sink that is not failing stands at the checkpoint: nothing to add.
    if p.sinks.len() == 1 && progress.down(&p.sinks[0]).is_none() {
        return;
    }
    for (sink, at) in progress.positions(cp, &p.sinks) {
        let mut line = match at {
            Some(h) => format!(
                "    sink {sink}: at {h}, {}h behind",
                h.hours_until(due).max(0)
            ),
            None => format!("    sink {sink}: never loaded"),
        };
        if let Some(d) = progress.down(&sink) {
            let runs = if d.failures == 1 { "run" } else { "runs" };
            line.push_str(&format!(
                "; failing since {} ({} {runs} in a row), next attempt after {}: {}",
                d.since.format("%Y-%m-%dT%H:%M:%SZ"),
                d.failures,
                d.next.format("%Y-%m-%dT%H:%M:%SZ"),
                crate::secret::redact(&d.cause)
            ));
        }
        println!("{line}");
    }
}

/// The last runs of a job or model, newest last.
/// What the last run's heartbeats say about Prefect's zombie detection
/// (which marks a flow run it stops hearing from Crashed).
fn heartbeat_health(h: crate::state::Heartbeats) -> String {
    match (h.taken, h.refused) {
        (0, 0) => "zombie detection: no heartbeat was answered before the job ended".into(),
        (t, 0) => format!("zombie detection: Prefect took the last run's heartbeats ({t})"),
        (t, r) => format!(
            "zombie detection blind: Prefect did not take {r} of the last run's {} heartbeats, so it could not tell that run from a dead one and may mark such a run Crashed (the run's log says why)",
            t + r
        ),
    }
}

fn print_runs(runs: &[crate::state::RunRecord]) {
    {
        {
            for r in runs {
                let secs = (r.finished - r.started).num_milliseconds() as f64 / 1000.0;
                let outcome = if r.ok { "ok" } else { "failed" };
                let mut line = format!(
                    "    {} {} {outcome}: {} hours, {} rows, {secs:.1}s",
                    r.started.format("%Y-%m-%dT%H:%M:%SZ"),
                    r.kind,
                    r.hours,
                    r.rows
                );
                if let Some(e) = &r.error {
                    // Records written before redaction existed may hold a connection string.
                    let e = crate::secret::redact(e);
                    match &r.error_kind {
                        Some(kind) => line.push_str(&format!(" — {kind}: {e}")),
                        None => line.push_str(&format!(" — {e}")),
                    }
                }
                println!("{line}");
            }
        }
    }
}
