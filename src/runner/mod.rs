//! One run of a pipeline: for each job, under its lease, plan → extract →
//! transform → load every sink → ledger → checkpoint, batch by batch.
//! Jobs with the same plan on one measurement extract together (one query
//! per batch for all their fields); everything after the extract stays per
//! job, so one job's failure moves no other job's checkpoint.
//!
//! Ordering is what makes it safe: a batch's ledger rows are written after
//! the sink committed, and the checkpoint only after every sink has the
//! batch. A crash at any instant therefore leaves at worst an hour loaded but
//! not checkpointed, which the next run replaces (loads are idempotent).
//! The models reading the jobs follow (see [`crate::models`]).
//!
//! - this file: what a run is (options, outcomes, report) and its order:
//!   leases, pieces, plans, groups, models;
//! - [`groups`]: the shared-batch path: which jobs read one query, and a
//!   group's batches, downloaded ahead;
//! - [`load`]: the job path of one batch: transform, load every sink,
//!   ledger, checkpoint;
//! - [`pieces`]: what a run holds (source, sinks, connection, templates);
//! - [`models`]: the model path: leases, pending hours, recomputation.

mod groups;
mod load;
mod models;
mod pieces;
mod summary;

pub use groups::sharing;
use groups::{groups, run_group, Planned};
use models::{holder, lease_models};
use pieces::{setup, Shared};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tracing::{info, info_span, warn, Instrument};

use crate::error::JobError;
use crate::plan::{self, Plan, Settings};
use crate::report::{Event, Report};
use crate::spec::{Config, Hour, Job, Pipeline};
use crate::state::{RunRecord, State};

/// What to process.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Pending hours since the checkpoint, plus lookback.
    Run,
    /// An explicit `[from, to)`.
    Backfill { from: Hour, to: Hour },
}

pub struct Options {
    pub now: DateTime<Utc>,
    pub jobs: Vec<String>,
    pub mode: Mode,
    pub wait: bool,
    /// Set (by a signal) to stop after the batch in progress.
    pub stop: Arc<AtomicBool>,
    /// Draw a progress line on stderr.
    pub progress: bool,
    /// Replace hours the source returned nothing for (`--replace-empty`);
    /// the pipeline's `replace_empty` also turns it on.
    pub replace_empty: bool,
    /// Send the events of models with `events:` for new episodes (always
    /// in run mode; in a backfill only when asked: `backfill --alerts`).
    pub alerts: bool,
    /// Report into this Prefect flow run (one a worker claimed) instead of
    /// a new one.
    pub flow_run: Option<crate::report::FlowRun>,
    /// Recompute only these models over the backfill's hours, from the
    /// hourly rows the sinks hold (`backfill --model`): no job runs and the
    /// source is not asked anything.
    pub models: Vec<String>,
}

/// What happened to one job.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub job: String,
    pub ok: bool,
    pub hours: i64,
    pub new_hours: i64,
    pub redo_hours: i64,
    pub left_hours: i64,
    pub batches: usize,
    pub rows_in: u64,
    pub rows_out: u64,
    /// Hours the source returned no row for, left in the sinks as they were.
    pub empty_hours: i64,
    pub checkpoint: Option<Hour>,
    pub error: Option<JobError>,
    /// Stopped early on request; what was done is committed.
    pub stopped: bool,
    /// A model's outcome (its name is in `job` as `model <name>`): the
    /// output keys it recomputed.
    pub keys: Option<String>,
    /// Stations with an hour under 75 % coverage among those loaded, when
    /// known (read for a run reported to Prefect, from a result with a
    /// `coverage` column).
    pub low_coverage: Option<std::collections::BTreeSet<String>>,
}

impl Outcome {
    /// A job about to run its plan from `checkpoint`.
    fn planned(job: &str, plan: &Plan, checkpoint: Option<Hour>) -> Outcome {
        Outcome {
            ok: true,
            error: None,
            checkpoint,
            new_hours: plan.new_hours,
            redo_hours: plan.redo_hours,
            left_hours: plan.left_hours,
            ..Outcome::failed(job, JobError::Internal(String::new()))
        }
    }

    fn failed(job: &str, error: JobError) -> Outcome {
        Outcome {
            job: job.to_owned(),
            ok: false,
            hours: 0,
            new_hours: 0,
            redo_hours: 0,
            left_hours: 0,
            batches: 0,
            rows_in: 0,
            rows_out: 0,
            empty_hours: 0,
            checkpoint: None,
            error: Some(error),
            stopped: false,
            keys: None,
            low_coverage: None,
        }
    }

    /// A model that could not be recomputed at all.
    fn model_failed(model: &str, error: JobError) -> Outcome {
        Outcome {
            keys: Some("nothing recomputed".into()),
            ..Outcome::failed(&Outcome::model_name(model), error)
        }
    }

    /// The name a model's outcome is reported under.
    pub fn model_name(model: &str) -> String {
        format!("model {model}")
    }

    fn model(o: crate::models::ModelOutcome) -> Outcome {
        let keys = o
            .ranges
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Outcome {
            ok: o.ok,
            error: o.error,
            checkpoint: o.checkpoint,
            hours: o.input_hours,
            batches: o.ranges.len(),
            rows_out: o.rows,
            keys: Some(if keys.is_empty() {
                "nothing pending".into()
            } else {
                keys
            }),
            ..Outcome::failed(
                &Outcome::model_name(&o.model),
                JobError::Internal(String::new()),
            )
        }
    }
}

/// The plan settings of a pipeline.
pub fn settings(p: &Pipeline) -> Settings {
    Settings {
        delay: p.delay,
        start: p.start,
        end: p.end,
        lookback_hours: p.lookback_hours,
        max_hours_per_run: p.max_hours_per_run,
        batch_hours: p.batch_hours,
    }
}

/// The plan of one job in `mode`.
pub fn plan_for(p: &Pipeline, mode: Mode, now: DateTime<Utc>, checkpoint: Option<Hour>) -> Plan {
    let s = settings(p);
    match mode {
        Mode::Run => plan::run_plan(now, &s, checkpoint),
        Mode::Backfill { from, to } => plan::backfill_plan(now, &s, checkpoint, from, to),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Runs the pipeline's selected jobs; one outcome per job.
pub async fn run(config: &Config, pipeline: &Pipeline, opts: Options) -> Vec<Outcome> {
    let run_id = format!(
        "{}-{}",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id()
    );
    let span = info_span!("pipeline", pipeline = %pipeline.name, run_id = %run_id);
    async move {
        let jobs: Vec<Job> = pipeline
            .jobs
            .iter()
            .filter(|_| opts.models.is_empty())
            .filter(|j| opts.jobs.is_empty() || opts.jobs.contains(&j.name))
            .cloned()
            .collect();
        let t0 = Instant::now();
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        let report = open_report(pipeline, opts.flow_run.clone());
        let started = Event::RunStarted {
            pipeline: pipeline.name.clone(),
            run_id: run_id.clone(),
            parameters: parameters(opts.mode, &names),
            tags: vec!["duckhour".into(), mode_word(opts.mode).into()],
        };
        crate::report::forward_logs(report.sender());
        info!(mode = %mode_text(opts.mode), jobs = %names.join(","), "run started");
        // The flow run is made once the leases are taken: on one server
        // the two would meet (SQLite answers one of them 503, "database is
        // locked"), and the leases come first.
        let outcomes = run_jobs(config, pipeline, opts, run_id.clone(), jobs, || {
            report.send(started)
        })
        .await;
        let failed = outcomes.iter().filter(|o| !o.ok).count();
        let (models, jobs): (Vec<&Outcome>, Vec<&Outcome>) =
            outcomes.iter().partition(|o| o.keys.is_some());
        info!(
            jobs = jobs.len(),
            models = models.len(),
            failed,
            hours = jobs.iter().map(|o| o.hours).sum::<i64>(),
            rows = jobs.iter().map(|o| o.rows_out).sum::<u64>(),
            ms = t0.elapsed().as_millis() as u64,
            "run finished"
        );
        crate::report::forward_logs(None);
        for o in &outcomes {
            let (state, message) = job_state(o);
            report.send(Event::JobFinished {
                job: o.job.clone(),
                state,
                message,
            });
        }
        let (state, message) = run_state(&outcomes);
        if report.is_on() {
            report.send(Event::Summary {
                key: crate::report::artifact_key(&pipeline.name),
                table: summary::table(&outcomes),
                description: format!(
                    "duckhour run `{run_id}` of pipeline `{}`: {}",
                    pipeline.name,
                    crate::prefect::runs::short(&crate::secret::redact(&message))
                ),
            });
        }
        report.send(Event::RunFinished { state, message });
        if let Some(problem) = report.finish(REPORT_WAIT).await {
            warn!("could not report this run to Prefect ({problem}); the data work is done and recorded");
        }
        outcomes
    }
    .instrument(span)
    .await
}

/// How long the end of a run waits for its report to reach Prefect: a
/// server that does not answer is given up within seconds, one that
/// throttles (429) is waited for (see [`crate::report::THROTTLE_BUDGET`]).
const REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(150);

/// The pipeline's report: its Prefect server's flow runs, or nowhere.
fn open_report(pipeline: &Pipeline, flow_run: Option<crate::report::FlowRun>) -> Report {
    let Some(t) = &pipeline.report else {
        return Report::none();
    };
    match crate::state::prefect_client("prefect", &t.url, t.api_key.as_deref()) {
        Ok(client) => Report::prefect(client, flow_run, t.heartbeat),
        Err(e) => {
            warn!(error = %e, "cannot report this run to Prefect");
            Report::none()
        }
    }
}

fn mode_word(mode: Mode) -> &'static str {
    match mode {
        Mode::Run => "run",
        Mode::Backfill { .. } => "backfill",
    }
}

/// The flow run's parameters: mode, jobs, from, to (the Run form's fields).
fn parameters(mode: Mode, jobs: &[&str]) -> serde_json::Value {
    let (from, to) = match mode {
        Mode::Run => (None, None),
        Mode::Backfill { from, to } => (Some(from.to_string()), Some(to.to_string())),
    };
    serde_json::json!({"mode": mode_word(mode), "jobs": jobs, "from": from, "to": to})
}

/// A job's task-run state and message.
fn job_state(o: &Outcome) -> (&'static str, String) {
    match (&o.error, o.stopped) {
        (Some(e), _) => ("FAILED", e.to_string()),
        (None, _) if o.keys.is_some() => (
            "COMPLETED",
            format!(
                "recomputed {}: {} hours read, {} rows, checkpoint {}",
                o.keys.as_deref().unwrap_or_default(),
                o.hours,
                o.rows_out,
                o.checkpoint
                    .map_or_else(|| "none".to_owned(), |c| c.to_string())
            ),
        ),
        (None, stopped) => {
            let mut m = format!(
                "{} hours, {} rows in, {} rows out, checkpoint {}",
                o.hours,
                o.rows_in,
                o.rows_out,
                o.checkpoint
                    .map_or_else(|| "none".to_owned(), |c| c.to_string())
            );
            if o.empty_hours > 0 {
                m.push_str(&format!(
                    "; {} hours empty at the source: kept what the sinks hold",
                    o.empty_hours
                ));
            }
            if stopped {
                (
                    "CANCELLED",
                    format!("stopped on request; loaded so far: {m}"),
                )
            } else {
                ("COMPLETED", m)
            }
        }
    }
}

/// The flow run's final state and message: which jobs failed and why.
pub fn run_state(outcomes: &[Outcome]) -> (&'static str, String) {
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.error.as_ref().map(|e| format!("job `{}`: {e}", o.job)))
        .collect();
    if !failed.is_empty() {
        let m = format!(
            "{} of {} jobs failed: {}",
            failed.len(),
            outcomes.len(),
            failed.join("; ")
        );
        return ("FAILED", m);
    }
    let hours: i64 = outcomes.iter().map(|o| o.hours).sum();
    let rows: u64 = outcomes.iter().map(|o| o.rows_out).sum();
    let m = format!("{} jobs, {hours} hours, {rows} rows", outcomes.len());
    if outcomes.iter().any(|o| o.stopped) {
        (
            "CANCELLED",
            format!("stopped on request; loaded so far: {m}"),
        )
    } else {
        ("COMPLETED", m)
    }
}

/// `run` or `backfill [from, to)`, for logs.
fn mode_text(mode: Mode) -> String {
    match mode {
        Mode::Run => "run".into(),
        Mode::Backfill { from, to } => format!("backfill [{from}, {to})"),
    }
}

/// `leased`: called once the jobs' leases are taken (or refused).
async fn run_jobs(
    config: &Config,
    pipeline: &Pipeline,
    opts: Options,
    run_id: String,
    jobs: Vec<Job>,
    leased: impl FnOnce(),
) -> Vec<Outcome> {
    {
        let state = match State::open(&pipeline.state) {
            Ok(s) => s,
            Err(e) => {
                leased();
                return jobs
                    .iter()
                    .map(|j| Outcome::failed(&j.name, JobError::from(e.clone())))
                    .collect();
            }
        };
        // Leases first: a job another process is running must say so before
        // this run opens sinks the other run may hold (a DuckDB file has one writer).
        let on_leased = leased;
        let mut leased = Vec::new();
        let mut outcomes = Vec::new();
        let keys: Vec<(String, bool)> = jobs.iter().map(|j| (j.name.clone(), opts.wait)).collect();
        let taken = state
            .lease_all(&pipeline.name, &keys, &holder(&run_id))
            .await;
        on_leased();
        for (job, lease) in jobs.into_iter().zip(taken) {
            match lease {
                Ok(lease) => leased.push((job, lease)),
                // Busy: not our run to record; the holder records its own.
                Err(e) => outcomes.push(Outcome::failed(&job.name, e.into())),
            }
        }
        let asked = opts.models.clone();
        if leased.is_empty() && asked.is_empty() {
            return outcomes;
        }
        // The jobs' state, read (and, on a first run, made) before any sink
        // is opened: a store that refuses (a key outside the workspace, a
        // role that may not write blocks) stops the run here.
        let keys: Vec<String> = leased.iter().map(|(j, _)| j.name.clone()).collect();
        if let Err(e) = state.load(&pipeline.name, &keys).await {
            for (job, lease) in leased {
                lease.release().await;
                outcomes.push(Outcome::failed(&job.name, e.clone().into()));
            }
            return outcomes;
        }
        let kind = mode_word(opts.mode);
        let shared = match setup(config, pipeline, state, run_id.clone(), opts).await {
            Ok(s) => Arc::new(s),
            Err((state, err)) => {
                for (job, lease) in leased {
                    let o = Outcome::failed(&job.name, err.clone());
                    record(&state, &pipeline.name, &run_id, kind, &o, Utc::now()).await;
                    lease.release().await;
                    outcomes.push(o);
                }
                for m in &asked {
                    outcomes.push(Outcome::model_failed(m, err.clone()));
                }
                return outcomes;
            }
        };
        // Plan every job up front (the progress line knows the total), then
        // let jobs with the same plan and measurement share their queries.
        let mut planned = Vec::new();
        for (job, lease) in leased {
            match shared.state.checkpoint(&pipeline.name, &job.name).await {
                Ok(cp) => {
                    let plan = plan_for(pipeline, shared.opts.mode, shared.opts.now, cp);
                    shared.progress.planned(plan.total_hours());
                    planned.push((job, lease, cp, plan));
                }
                Err(e) => {
                    let o = Outcome::failed(&job.name, e.into());
                    record(&shared.state, &pipeline.name, &run_id, kind, &o, Utc::now()).await;
                    lease.release().await;
                    outcomes.push(o);
                }
            }
        }
        if planned
            .iter()
            .any(|(_, _, _, plan)| plan.total_hours() > plan::UNSIZED_HOURS)
        {
            crate::memory::long_run();
        }
        // Models reading these jobs: leased after every job (a fixed order,
        // so two runs cannot wait for each other), and told which hours are
        // about to change before any sink is written.
        let model_leases =
            lease_models(&shared, &mut planned, &mut outcomes, &holder(&run_id)).await;
        let sem = Arc::new(Semaphore::new(pipeline.concurrency as usize));
        let mut handles = Vec::new();
        for group in groups(planned) {
            let shared = shared.clone();
            let sem = sem.clone();
            let names: Vec<String> = group.members.iter().map(|m| m.job.name.clone()).collect();
            handles.push((
                names,
                tokio::spawn(
                    async move {
                        let _permit = sem.acquire().await.expect("semaphore open");
                        run_group(shared, group).await
                    }
                    .in_current_span(),
                ),
            ));
        }
        for (names, h) in handles {
            match h.await {
                Ok(o) => outcomes.extend(o),
                Err(e) => outcomes.extend(names.iter().map(|n| {
                    Outcome::failed(n, JobError::Internal(format!("job task failed: {e}")))
                })),
            }
        }
        shared.progress.finish();
        // Report in the pipeline's job order, then the models.
        outcomes.sort_by_key(|o| {
            pipeline
                .jobs
                .iter()
                .position(|j| j.name == o.job)
                .unwrap_or(usize::MAX)
        });
        outcomes.extend(models::recompute(&shared, model_leases, kind).await);
        outcomes
    }
}

async fn record(
    state: &State,
    pipeline: &str,
    run_id: &str,
    kind: &str,
    o: &Outcome,
    started: DateTime<Utc>,
) {
    let rec = RunRecord {
        run_id: run_id.to_owned(),
        kind: kind.into(),
        started,
        finished: Utc::now(),
        ok: o.ok,
        hours: o.hours,
        rows: o.rows_out,
        error: o
            .error
            .as_ref()
            .map(|e| crate::secret::redact(&e.to_string()).into_owned()),
        error_kind: o.error.as_ref().map(|e| e.kind().to_owned()),
    };
    if let Err(e) = state.record_run(pipeline, &o.job, &rec).await {
        warn!(job = %o.job, error = %e, "could not record the run");
    }
}
