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
mod outcome;
mod pieces;
mod positions;
mod summary;

pub use groups::sharing;
use groups::{groups, run_group, Planned};
use models::{holder, lease_models};
pub use outcome::{checkpoint_text, Behind, JobOutcome, Outcomes, Status};
use pieces::{setup, Shared};
use positions::Positions;

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
    /// The run's heartbeat counts (set by [`run`] when it reports to
    /// Prefect), kept in each job's run record.
    pub beats: Option<Arc<crate::report::BeatCounts>>,
    /// Recompute only these models over the backfill's hours, from the
    /// hourly rows the sinks hold (`backfill --model`): no job runs and the
    /// source is not asked anything.
    pub models: Vec<String>,
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

/// A job's plan over the sinks `up` (standing at `at`): each plans from
/// its own position, and the plans are merged into one (see
/// [`Plan::merged`]); with the hours each sink takes. `checkpoint` plans
/// when no sink is up.
pub fn plan_over(
    p: &Pipeline,
    mode: Mode,
    now: DateTime<Utc>,
    checkpoint: Option<Hour>,
    at: &std::collections::BTreeMap<String, Option<Hour>>,
    up: &[&str],
) -> (
    Plan,
    std::collections::BTreeMap<String, crate::time::Ranges<Hour>>,
) {
    let mut takes = std::collections::BTreeMap::new();
    let mut behind: Option<(Option<Hour>, Plan)> = None;
    for s in up {
        let pos = at.get(*s).copied().flatten();
        let plan = plan_for(p, mode, now, pos);
        takes.insert(s.to_string(), plan.hours());
        if behind.as_ref().is_none_or(|(o, _)| pos < *o) {
            behind = Some((pos, plan));
        }
    }
    let behind = behind.map_or_else(|| plan_for(p, mode, now, checkpoint), |(_, plan)| plan);
    let per_sink: Vec<_> = takes.values().cloned().collect();
    (behind.merged(&per_sink, p.batch_hours), takes)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Runs the pipeline's selected jobs, then the models reading them.
pub async fn run(config: &Config, pipeline: &Pipeline, mut opts: Options) -> Outcomes {
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
        opts.beats = report.beats();
        let started = Event::RunStarted {
            pipeline: pipeline.name.clone(),
            run_id: run_id.clone(),
            parameters: parameters(opts.mode, &names),
            tags: vec!["duckhour".into(), mode_word(opts.mode).into()],
        };
        crate::report::forward_logs(report.sender());
        info!(mode = %mode_text(opts.mode), jobs = %names.join(","), "run started");
        // The flow run is made once the leases are taken and the state
        // read: on one server they would meet (SQLite answers one of them
        // 503, "database is locked"), and the leases and state come first.
        let outcomes = run_jobs(config, pipeline, opts, run_id.clone(), jobs, || {
            report.send(started)
        })
        .await;
        info!(
            jobs = outcomes.jobs.len(),
            models = outcomes.models.len(),
            failed = outcomes.failed(),
            hours = outcomes.jobs.iter().map(|o| o.hours).sum::<i64>(),
            rows = outcomes.jobs.iter().map(|o| o.rows_out).sum::<u64>(),
            ms = t0.elapsed().as_millis() as u64,
            "run finished"
        );
        crate::report::forward_logs(None);
        let tasks = outcomes.jobs.iter().map(|o| (o.job.clone(), o.state()));
        let tasks = tasks.chain(outcomes.models.iter().map(|o| (o.task_name(), o.state())));
        for (job, (state, message)) in tasks {
            report.send(Event::JobFinished {
                job,
                state,
                message,
            });
        }
        let (state, message) = outcomes.state();
        if report.is_on() {
            report.send(Event::Summary {
                key: summary::artifact_key(&pipeline.name),
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

/// `run` or `backfill [from, to)`, for logs.
fn mode_text(mode: Mode) -> String {
    match mode {
        Mode::Run => "run".into(),
        Mode::Backfill { from, to } => format!("backfill [{from}, {to})"),
    }
}

/// Leases the jobs, reads their state, opens the run's pieces, then runs
/// the jobs' groups and the models. `leased`: called once the jobs' leases
/// are taken (or refused).
async fn run_jobs(
    config: &Config,
    pipeline: &Pipeline,
    opts: Options,
    run_id: String,
    jobs: Vec<Job>,
    leased: impl FnOnce(),
) -> Outcomes {
    let mut out = Outcomes::default();
    let state = match State::open(&pipeline.state) {
        Ok(s) => s,
        Err(e) => {
            leased();
            out.jobs = jobs
                .iter()
                .map(|j| JobOutcome::failed(&j.name, JobError::from(e.clone())))
                .collect();
            return out;
        }
    };
    // Leases first: a job another process is running must say so before
    // this run opens sinks the other run may hold (a DuckDB file has one writer).
    let held = lease_jobs(&state, pipeline, jobs, opts.wait, &run_id, &mut out.jobs).await;
    let asked = opts.models.clone();
    if held.is_empty() && asked.is_empty() {
        leased();
        return out;
    }
    // The jobs' state, read (and, on a first run, made; else one block
    // written, as a probe) before any sink is opened: a store that refuses
    // (a key outside the workspace, a role that may not write blocks)
    // stops the run here. The flow run is made after it: on one server
    // the block write and the flow run would meet (SQLite answers one 503).
    let keys: Vec<String> = held.iter().map(|(j, _)| j.name.clone()).collect();
    let loaded = state.load(&pipeline.name, &keys).await;
    leased();
    if let Err(e) = loaded {
        for (job, lease) in held {
            lease.release().await;
            out.jobs
                .push(JobOutcome::failed(&job.name, e.clone().into()));
        }
        return out;
    }
    let kind = mode_word(opts.mode);
    let progress = read_progress(&state, pipeline, &held).await;
    let shared = match setup(config, pipeline, state, run_id.clone(), opts, &progress).await {
        Ok(s) => Arc::new(s),
        Err((state, err)) => {
            for (job, lease) in held {
                let o = JobOutcome::failed(&job.name, err.clone());
                record(&state, &pipeline.name, &run_id, kind, &o, Utc::now(), None).await;
                lease.release().await;
                out.jobs.push(o);
            }
            out.models = asked
                .iter()
                .map(|m| crate::models::ModelOutcome::not_run(m, err.clone()))
                .collect();
            return out;
        }
    };
    run_with(shared, held, out, kind).await
}

/// Plans and runs the held jobs, then the models, with what the run holds.
async fn run_with(
    shared: Arc<Shared>,
    held: Vec<(Job, crate::state::Lease)>,
    mut out: Outcomes,
    kind: &str,
) -> Outcomes {
    let pipeline = &shared.pipeline;
    let mut planned = plan_jobs(&shared, held, &mut out.jobs).await;
    // Models reading these jobs: leased after every job (a fixed order,
    // so two runs cannot wait for each other), and told which hours are
    // about to change before any sink is written.
    let holder = holder(&shared.run_id);
    let model_leases = lease_models(&shared, &mut planned, &mut out, &holder).await;
    out.jobs.extend(run_groups(&shared, planned).await);
    shared.progress.finish();
    // Report in the pipeline's job order, then the models.
    out.jobs.sort_by_key(|o| {
        pipeline
            .jobs
            .iter()
            .position(|j| j.name == o.job)
            .unwrap_or(usize::MAX)
    });
    out.models
        .extend(models::recompute(&shared, model_leases, kind, &out.jobs).await);
    out.conflicts = (shared.sinks.iter())
        .map(|s| (s.name().to_owned(), s.conflicts()))
        .filter(|(_, n)| *n > 0)
        .collect();
    out.behind = behind(&shared.health.out(), &out.jobs, pipeline.start);
    out
}

/// The sinks out of the run, each with its lag: from its oldest position
/// over the jobs to the newest hour due.
fn behind(
    out: &std::collections::BTreeMap<String, crate::health::Out>,
    jobs: &[JobOutcome],
    start: Option<Hour>,
) -> Vec<Behind> {
    out.iter()
        .map(|(sink, why)| {
            let hours = jobs
                .iter()
                .filter_map(|o| {
                    let due = o.due?;
                    // A sink that never had a batch stands before `start`.
                    let at = o.positions.get(sink).copied().flatten();
                    let at = at.or(start.map(|s| s.plus(-1)))?;
                    Some(at.hours_until(due).max(0))
                })
                .max()
                .unwrap_or(0);
            let (cause, next) = match why {
                crate::health::Out::Failed(e) => {
                    (crate::secret::redact(&e.to_string()).into_owned(), None)
                }
                crate::health::Out::Waiting(d) => (d.cause.clone(), Some(d.next)),
            };
            Behind {
                sink: sink.clone(),
                hours,
                cause,
                next,
            }
        })
        .collect()
}

/// Each held job's sinks as they stood: which failed, and when each may
/// be tried again (an unreadable state is met again, and reported, when
/// the job is planned).
async fn read_progress(
    state: &State,
    pipeline: &Pipeline,
    held: &[(Job, crate::state::Lease)],
) -> Vec<crate::state::Progress> {
    let mut out = Vec::new();
    for (job, _) in held {
        if let Ok(p) = state.progress(&pipeline.name, &job.name).await {
            out.push(p);
        }
    }
    out
}

/// Takes the jobs' leases; a job whose lease is refused fails (busy: not
/// our run to record, the holder records its own).
async fn lease_jobs(
    state: &State,
    pipeline: &Pipeline,
    jobs: Vec<Job>,
    wait: bool,
    run_id: &str,
    failed: &mut Vec<JobOutcome>,
) -> Vec<(Job, crate::state::Lease)> {
    let keys: Vec<(String, bool)> = jobs.iter().map(|j| (j.name.clone(), wait)).collect();
    let taken = state
        .lease_all(&pipeline.name, &keys, &holder(run_id))
        .await;
    let mut held = Vec::new();
    for (job, lease) in jobs.into_iter().zip(taken) {
        match lease {
            Ok(lease) => held.push((job, lease)),
            Err(e) => failed.push(JobOutcome::failed(&job.name, e.into())),
        }
    }
    held
}

/// Plans every leased job up front (the progress line knows the total);
/// a job whose checkpoint cannot be read fails here, recorded.
async fn plan_jobs(
    shared: &Shared,
    held: Vec<(Job, crate::state::Lease)>,
    failed: &mut Vec<JobOutcome>,
) -> Vec<Planned> {
    let p = &shared.pipeline;
    let kind = mode_word(shared.opts.mode);
    let mut planned = Vec::new();
    for (job, lease) in held {
        let read = async {
            let cp = shared.state.checkpoint(&p.name, &job.name).await?;
            let progress = shared.state.progress(&p.name, &job.name).await?;
            Ok::<_, crate::state::StateError>((cp, progress))
        };
        match read.await {
            Ok((cp, progress)) => {
                let (plan, sinks) = plan_sinks(shared, cp, progress);
                shared.progress.planned(plan.total_hours());
                planned.push(Planned {
                    job,
                    lease,
                    checkpoint: cp,
                    plan,
                    sinks,
                });
            }
            Err(e) => {
                let o = JobOutcome::failed(&job.name, e.into());
                let beats = shared.opts.beats.as_deref();
                record(
                    &shared.state,
                    &p.name,
                    &shared.run_id,
                    kind,
                    &o,
                    Utc::now(),
                    beats,
                )
                .await;
                lease.release().await;
                failed.push(o);
            }
        }
    }
    if planned
        .iter()
        .any(|pl| pl.plan.total_hours() > plan::UNSIZED_HOURS)
    {
        crate::memory::long_run();
    }
    planned
}

/// A job's plan over its sinks: each sink taking writes plans from its own
/// position (a sink that was down catches up, oldest hours first, beside
/// the others' new hours), and the plans are merged into one.
fn plan_sinks(
    shared: &Shared,
    checkpoint: Option<Hour>,
    progress: crate::state::Progress,
) -> (Plan, Positions) {
    let p = &shared.pipeline;
    let at = progress.positions(checkpoint, &p.sinks);
    let up: Vec<&str> = shared.up().map(|s| s.name()).collect();
    let (plan, takes) = plan_over(p, shared.opts.mode, shared.opts.now, checkpoint, &at, &up);
    // With `start`, a sink without a position plans from it anyway.
    let origin = match p.start {
        Some(_) => None,
        None => plan.batches.first().map(|b| b.from.plus(-1)),
    };
    let sinks = Positions {
        stored: progress != crate::state::Progress::default(),
        progress,
        at,
        takes,
        origin,
    };
    (plan, sinks)
}

/// Runs the jobs, those with the same plan and measurement sharing their
/// queries, up to the pipeline's `concurrency` groups at once.
async fn run_groups(shared: &Arc<Shared>, planned: Vec<Planned>) -> Vec<JobOutcome> {
    let sem = Arc::new(Semaphore::new(shared.pipeline.concurrency as usize));
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
    let mut out = Vec::new();
    for (names, h) in handles {
        match h.await {
            Ok(o) => out.extend(o),
            Err(e) => {
                let e = JobError::internal_in("job task failed", e);
                out.extend(names.iter().map(|n| JobOutcome::failed(n, e.clone())))
            }
        }
    }
    out
}

async fn record(
    state: &State,
    pipeline: &str,
    run_id: &str,
    kind: &str,
    o: &JobOutcome,
    started: DateTime<Utc>,
    beats: Option<&crate::report::BeatCounts>,
) {
    let rec = RunRecord {
        run_id: run_id.to_owned(),
        kind: kind.into(),
        started,
        finished: Utc::now(),
        ok: o.error.is_none(),
        hours: o.hours,
        rows: o.rows_out,
        error: o
            .error
            .as_ref()
            .map(|e| crate::secret::redact(&e.to_string()).into_owned()),
        error_kind: o.error.as_ref().map(|e| e.kind().to_owned()),
        low_coverage: (o.low_coverage.as_ref()).map(|l| summary::stations(Some(l))),
        heartbeats: beats.map(|b| {
            let (taken, refused) = b.get();
            crate::state::Heartbeats { taken, refused }
        }),
    };
    if let Err(e) = state.record_run(pipeline, &o.job, &rec).await {
        warn!(job = %o.job, error = %e, "could not record the run");
    }
}
