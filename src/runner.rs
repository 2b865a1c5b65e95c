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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use duckdb::Connection;
use tokio::sync::{mpsc, Semaphore};
use tracing::{info, info_span, warn, Instrument};

use crate::duck;
use crate::error::JobError;
use crate::plan::{self, Batch, Plan, Scope, Settings};
use crate::report::{Event, Report};
use crate::secret::{EnvSecrets, SecretSource};
use crate::sinks::{Sink, SinkError};
use crate::sources::{Fetch, PointSink, Source};
use crate::spec::{Config, Hour, Job, Pipeline, StateConfig};
use crate::staged::StagedHandle;
use crate::state::{Holder, Lease, LedgerEntry, RunRecord, State, StateError};
use crate::template::{RenderInput, Templates};

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
    /// Report into this Prefect flow run (one a worker claimed) instead of
    /// a new one.
    pub flow_run: Option<String>,
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

struct Shared {
    pipeline: Pipeline,
    state: State,
    source: Source,
    sinks: Vec<Sink>,
    templates: Templates,
    progress: crate::progress::Progress,
    conn: std::sync::Mutex<Connection>,
    /// Held (shared) by every statement of the transforms and loads, and
    /// alone by a sink file's reopen: a `DETACH` must not meet another
    /// connection's statement.
    gate: std::sync::RwLock<()>,
    run_id: String,
    opts: Options,
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
        report.send(Event::RunStarted {
            pipeline: pipeline.name.clone(),
            run_id: run_id.clone(),
            parameters: parameters(opts.mode, &names),
            tags: vec!["duckhour".into(), mode_word(opts.mode).into()],
        });
        crate::report::forward_logs(report.sender());
        info!(mode = %mode_text(opts.mode), jobs = %names.join(","), "run started");
        let outcomes = run_jobs(config, pipeline, opts, run_id, jobs).await;
        let failed = outcomes.iter().filter(|o| !o.ok).count();
        info!(
            jobs = outcomes.len(),
            failed,
            hours = outcomes.iter().map(|o| o.hours).sum::<i64>(),
            rows = outcomes.iter().map(|o| o.rows_out).sum::<u64>(),
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
        report.send(Event::RunFinished { state, message });
        if let Some(problem) = report.finish(REPORT_WAIT).await {
            warn!("could not report this run to Prefect ({problem}); the data work is done and recorded");
        }
        outcomes
    }
    .instrument(span)
    .await
}

/// How long a `--wait` run waits for a DuckDB sink file another process writes.
const FILE_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// How long the end of a run waits for its report to reach Prefect.
const REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The pipeline's report: its Prefect server's flow runs, or nowhere.
fn open_report(pipeline: &Pipeline, flow_run: Option<String>) -> Report {
    let Some(t) = &pipeline.report else {
        return Report::none();
    };
    match crate::state::prefect_client("prefect", &t.url, t.api_key.as_deref()) {
        Ok(client) => Report::prefect(client, flow_run),
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

async fn run_jobs(
    config: &Config,
    pipeline: &Pipeline,
    opts: Options,
    run_id: String,
    jobs: Vec<Job>,
) -> Vec<Outcome> {
    {
        let state = match State::open(&pipeline.state) {
            Ok(s) => s,
            Err(e) => {
                return jobs
                    .iter()
                    .map(|j| Outcome::failed(&j.name, JobError::from(e.clone())))
                    .collect()
            }
        };
        // Leases first: a job another process is running must say so before
        // this run opens sinks the other run may hold (a DuckDB file has one writer).
        let mut leased = Vec::new();
        let mut outcomes = Vec::new();
        for job in jobs {
            let holder = Holder {
                pid: std::process::id(),
                host: hostname(),
                since: Utc::now(),
                run_id: run_id.clone(),
            };
            match state
                .lease(&pipeline.name, &job.name, &holder, opts.wait)
                .await
            {
                Ok(lease) => leased.push((job, lease)),
                // Busy: not our run to record; the holder records its own.
                Err(e) => outcomes.push(Outcome::failed(&job.name, e.into())),
            }
        }
        let asked = opts.models.clone();
        if leased.is_empty() && asked.is_empty() {
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
        let ctx = crate::models::Ctx {
            pipeline: &shared.pipeline,
            state: &shared.state,
            sinks: &shared.sinks,
            conn: &shared.conn,
            gate: &shared.gate,
            templates: &shared.templates,
            run_id: &shared.run_id,
            kind,
        };
        // In the spec's order: a model after those whose rows it reads.
        let mut failed: Vec<String> = Vec::new();
        for (m, lease) in model_leases {
            let o = match m.depends_on.iter().find(|u| failed.contains(u)) {
                Some(u) => crate::models::ModelOutcome::not_run(
                    &m.name,
                    JobError::Template(format!(
                        "model `{}` was not recomputed: model `{u}`, whose rows it reads, failed; its hours stay pending",
                        m.name
                    )),
                ),
                None => crate::models::recompute(&ctx, &m, &lease).await,
            };
            if !o.ok {
                failed.push(m.name.clone());
            }
            lease.release().await;
            outcomes.push(Outcome::model(o));
        }
        outcomes
    }
}

fn holder(run_id: &str) -> Holder {
    Holder {
        pid: std::process::id(),
        host: hostname(),
        since: Utc::now(),
        run_id: run_id.to_owned(),
    }
}

/// Leases the models this run changes the input of (those reading a job
/// with hours to load, or those `--model` names) and marks those hours
/// pending. A model that cannot be leased or marked fails the jobs that
/// read it: loading their hours would leave its products stale.
async fn lease_models(
    sh: &Shared,
    planned: &mut Vec<Planned>,
    outcomes: &mut Vec<Outcome>,
    holder: &Holder,
) -> Vec<(crate::spec::Model, Lease)> {
    let p = &sh.pipeline;
    let hours_of = |job: &str, planned: &[Planned]| -> Option<(Hour, Hour)> {
        planned
            .iter()
            .find(|(j, ..)| j.name == job)
            .and_then(|(_, _, _, plan)| Some((plan.batches.first()?.from, plan.batches.last()?.to)))
    };
    let needed = |m: &crate::spec::Model| {
        sh.opts.models.contains(&m.name) || m.jobs.iter().any(|j| hours_of(j, planned).is_some())
    };
    // Also those left with pending hours by a run that died or failed
    // (unless only some models were asked for): the loads happened, the
    // products must follow. Busy, they are the other run's to finish.
    // Models reading another's rows follow it: its recomputed keys are
    // their changed input.
    let mut models: Vec<(&crate::spec::Model, bool)> = Vec::new();
    for m in &p.models {
        let upstream: Vec<bool> = models
            .iter()
            .filter(|(u, _)| m.depends_on.contains(&u.name))
            .map(|(_, pending_only)| *pending_only)
            .collect();
        if needed(m) || upstream.iter().any(|only| !only) {
            models.push((m, false));
        } else if !upstream.is_empty()
            || (sh.opts.models.is_empty()
                && sh
                    .state
                    .pending(&p.name, &m.state_key())
                    .await
                    .is_ok_and(|r| !r.is_empty()))
        {
            models.push((m, true));
        }
    }
    // Leases in name order, so that two runs cannot wait for each other.
    models.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let mut leased: Vec<(&crate::spec::Model, Lease)> = Vec::new();
    for (m, pending_only) in models {
        let taken = sh
            .state
            .lease(
                &p.name,
                &m.state_key(),
                holder,
                sh.opts.wait && !pending_only,
            )
            .await;
        match taken {
            Ok(lease) => leased.push((m, lease)),
            Err(StateError::Busy { .. }) if pending_only => {}
            Err(e) => fail_model(m, e, planned, outcomes).await,
        }
    }
    // Marks in the spec's order (a model after those it reads): the hours
    // its jobs are about to load, or the backfill's range, and the hours of
    // the keys its upstream models will recompute.
    leased.sort_by_key(|(m, _)| p.models.iter().position(|x| x.name == m.name));
    let mut marked: Vec<(crate::spec::Model, Lease)> = Vec::new();
    let mut pending_of: Vec<(String, Vec<(Hour, Hour)>)> = Vec::new();
    for (m, lease) in leased {
        let mut hours: Vec<(Hour, Hour)> = match sh.opts.mode {
            Mode::Backfill { from, to } if sh.opts.models.contains(&m.name) => vec![(from, to)],
            _ => m.jobs.iter().filter_map(|j| hours_of(j, planned)).collect(),
        };
        for (u, pending) in &pending_of {
            if m.depends_on.contains(u) {
                let u = p.model(u).expect("validated");
                hours.extend(crate::models::step::spans(u, pending));
            }
        }
        match crate::models::mark(&sh.state, &p.name, m, &hours).await {
            Ok(pending) => {
                pending_of.push((m.name.clone(), pending));
                marked.push((m.clone(), lease));
            }
            Err(e) => {
                lease.release().await;
                fail_model(m, e, planned, outcomes).await;
            }
        }
    }
    marked
}

/// A model that could not be leased or marked fails, with the jobs reading it.
async fn fail_model(
    m: &crate::spec::Model,
    e: StateError,
    planned: &mut Vec<Planned>,
    outcomes: &mut Vec<Outcome>,
) {
    let (own, why) = match JobError::from(e) {
        JobError::LeaseBusy(msg) => (
            JobError::LeaseBusy(format!(
                "model `{}` is being recomputed by another run: {msg}",
                m.name
            )),
            JobError::LeaseBusy(format!(
                "model `{}`, which reads this job, is being recomputed by another run: {msg}",
                m.name
            )),
        ),
        other => (other.clone(), other),
    };
    outcomes.push(Outcome::model_failed(&m.name, own));
    let (reading, rest): (Vec<Planned>, Vec<Planned>) = std::mem::take(planned)
        .into_iter()
        .partition(|(j, ..)| m.jobs.contains(&j.name));
    *planned = rest;
    for (job, lease, ..) in reading {
        lease.release().await;
        outcomes.push(Outcome::failed(&job.name, why.clone()));
    }
}

async fn setup(
    config: &Config,
    pipeline: &Pipeline,
    state: State,
    run_id: String,
    opts: Options,
) -> Result<Shared, (State, JobError)> {
    let mut source = Source::new(&pipeline.source, &config.sources[&pipeline.source]);
    let conn = match duck::open() {
        Ok(c) => c,
        Err(e) => return Err((state, e.into())),
    };
    let home = match &pipeline.state {
        StateConfig::Local { dir } => dir.join("duckdb-home"),
        _ => std::env::temp_dir().join("duckhour-duckdb-home"),
    };
    // `${secret:}` values: from Prefect blocks when the state is there, else the environment.
    let values = config.sources[&pipeline.source]
        .reference_values()
        .into_iter()
        .chain(
            pipeline
                .sinks
                .iter()
                .flat_map(|s| config.sinks[s].reference_values()),
        );
    let names = crate::secret::secret_names(values);
    let secrets: Box<dyn SecretSource + Send + Sync> = match state.prefect() {
        Some(p) if !names.is_empty() => match p.secrets(&names).await {
            Ok(s) => Box::new(s),
            Err(e) => return Err((state, e.into())),
        },
        _ => Box::new(EnvSecrets),
    };
    // Sinks first: a sink that cannot work (e.g. MotherDuck without a token) fails before any extract.
    let mut sinks = Vec::new();
    for name in &pipeline.sinks {
        let mut sink = Sink::new(name, &config.sinks[name], &config.dir);
        let t0 = Instant::now();
        let mut attempt = 0;
        loop {
            match sink.prepare(&conn, secrets.as_ref(), &home).await {
                Ok(()) => break,
                // A DuckDB file has one writer process: with `--wait` (and in a
                // worker), wait for it as for a job's lease.
                Err(SinkError::Busy { .. }) if opts.wait && t0.elapsed() < FILE_WAIT => {
                    attempt += 1;
                    tokio::time::sleep(crate::http::backoff(
                        attempt,
                        std::time::Duration::from_millis(500),
                    ))
                    .await;
                }
                Err(e) => return Err((state, e.into())),
            }
        }
        sinks.push(sink);
    }
    // A models-only run reads the sinks, never the source (its raw data may have expired).
    if opts.models.is_empty() {
        if let Err(e) = source.connect(secrets.as_ref()).await {
            return Err((state, JobError::Source(e.to_string())));
        }
    }
    // From here on the database runs templates: it may reach only the sink
    // files' directories. Not with MotherDuck, whose extension needs the
    // network (and could not be tested confined here).
    if !sinks.iter().any(Sink::is_motherduck) {
        let mut dirs: Vec<std::path::PathBuf> = sinks
            .iter()
            .filter_map(|s| s.local_dir().map(|d| d.to_path_buf()))
            .collect();
        if stages_files(&config.sources[&pipeline.source]) {
            dirs.push(std::env::temp_dir());
        }
        if let Err(e) = duck::confine(&conn, &dirs) {
            return Err((state, e.into()));
        }
    }
    Ok(Shared {
        pipeline: pipeline.clone(),
        state,
        source,
        sinks,
        templates: config.templates(),
        progress: crate::progress::Progress::new(&pipeline.name, opts.progress),
        conn: std::sync::Mutex::new(conn),
        gate: std::sync::RwLock::new(()),
        run_id,
        opts,
    })
}

/// Whether the source hands DuckDB files to read (InfluxDB 3 Parquet answers,
/// in the temporary directory).
fn stages_files(source: &crate::spec::SourceConfig) -> bool {
    matches!(source, crate::spec::SourceConfig::Influx(c)
        if c.version == 3 && matches!(c.format, crate::spec::V3Format::Parquet))
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

/// Jobs of a run that read one query per batch: same measurement and tags,
/// same plan. A job alone is a group of one.
struct Group {
    plan: Plan,
    members: Vec<Member>,
}

/// One job of a group, with what it has done so far.
struct Member {
    job: Job,
    lease: Lease,
    checkpoint: Option<Hour>,
    out: Outcome,
    span: tracing::Span,
    started: DateTime<Utc>,
    t0: Instant,
}

impl Member {
    fn active(&self) -> bool {
        self.out.ok && !self.out.stopped
    }

    fn fail(&mut self, e: JobError) {
        self.out.ok = false;
        self.out.error = Some(e);
    }
}

/// Which jobs share their queries: those with the same batches (the usual
/// case: a pipeline's jobs advance together) reading the same measurement
/// with the same tags. A job with nothing to do, or whose plan differs (a
/// new job catching up, a failed one being redone), is on its own. Indices
/// into `jobs`, each group in the jobs' order.
pub fn sharing(jobs: &[(&Job, &Plan)]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, (job, plan)) in jobs.iter().enumerate() {
        let with = out.iter_mut().find(|g| {
            let (first, fplan) = jobs[g[0]];
            !plan.batches.is_empty()
                && fplan.batches == plan.batches
                && Fetch::of([first]).shares(job)
        });
        match with {
            Some(g) => g.push(i),
            None => out.push(vec![i]),
        }
    }
    out
}

/// A job ready to run: its lease, checkpoint and plan.
type Planned = (Job, Lease, Option<Hour>, Plan);

/// Forms the groups of [`sharing`].
fn groups(planned: Vec<Planned>) -> Vec<Group> {
    let shape: Vec<Vec<usize>> = {
        let refs: Vec<(&Job, &Plan)> = planned.iter().map(|(j, _, _, p)| (j, p)).collect();
        sharing(&refs)
    };
    let mut slots: Vec<Option<Planned>> = planned.into_iter().map(Some).collect();
    let mut out = Vec::new();
    for indices in shape {
        let mut plan = None;
        let mut members = Vec::new();
        for i in indices {
            let (job, lease, checkpoint, p) = slots[i].take().expect("each job in one group");
            let o = Outcome::planned(&job.name, &p, checkpoint);
            members.push(Member {
                span: info_span!("job", job = %job.name),
                job,
                lease,
                checkpoint,
                out: o,
                started: Utc::now(),
                t0: Instant::now(),
            });
            plan.get_or_insert(p);
        }
        out.push(Group {
            plan: plan.expect("a group has a job"),
            members,
        });
    }
    out
}

/// Runs a group's batches, then records each job's run.
async fn run_group(sh: Arc<Shared>, mut g: Group) -> Vec<Outcome> {
    let shared_with: Vec<String> = g.members.iter().map(|m| m.job.name.clone()).collect();
    for m in &g.members {
        m.span.in_scope(|| {
            let checkpoint = m
                .checkpoint
                .map_or_else(|| "none".to_owned(), |c| c.to_string());
            let (hours, batches) = (g.plan.total_hours(), g.plan.batches.len());
            if shared_with.len() > 1 {
                let shared_with = shared_with.join(",");
                info!(hours, batches, %checkpoint, %shared_with, "job started");
            } else {
                info!(hours, batches, %checkpoint, "job started");
            }
        });
    }
    group_batches(&sh, &mut g).await;
    let kind = mode_word(sh.opts.mode);
    let mut outcomes = Vec::new();
    for m in g.members {
        let Member {
            job,
            lease,
            out: outcome,
            span,
            started,
            t0,
            ..
        } = m;
        async {
            // A lost lease means another runner may own the job's block now.
            match lease.check() {
                Ok(()) => {
                    record(
                        &sh.state,
                        &sh.pipeline.name,
                        &sh.run_id,
                        kind,
                        &outcome,
                        started,
                    )
                    .await
                }
                Err(_) => warn!(job = %job.name, "lease lost: this run is not recorded"),
            }
            let result = match (&outcome.error, outcome.stopped) {
                (Some(e), _) => e.kind(),
                (None, true) => "stopped",
                (None, false) => "ok",
            };
            info!(
                ok = outcome.ok,
                outcome = result,
                hours = outcome.hours,
                empty_hours = outcome.empty_hours,
                rows_in = outcome.rows_in,
                rows_out = outcome.rows_out,
                checkpoint = %outcome.checkpoint.map_or_else(|| "none".to_owned(), |c| c.to_string()),
                error = %outcome.error.as_ref().map_or_else(String::new, |e| e.to_string()),
                ms = t0.elapsed().as_millis() as u64,
                "job finished"
            );
            lease.release().await;
        }
        .instrument(span)
        .await;
        outcomes.push(outcome);
    }
    outcomes
}

/// The staging view of a job's `i`-th batch: two alternate, so the next
/// batch can be extracted while this one is transformed and loaded. (`#`
/// cannot appear in a job name.)
fn staging_key(job: &str, i: usize) -> String {
    if i.is_multiple_of(2) {
        job.to_owned()
    } else {
        format!("{job}#2")
    }
}

type Prefetch = tokio::task::JoinHandle<Result<(Staging, u64), JobError>>;

/// Starts downloading `batch` for the group's jobs still going, in the
/// background: one query for all their fields. `None` when none is left.
fn prefetch(sh: &Arc<Shared>, g: &Group, batch: Batch) -> Option<(Batch, Fetch, Prefetch)> {
    let active: Vec<&Job> = g
        .members
        .iter()
        .filter(|m| m.active())
        .map(|m| &m.job)
        .collect();
    if active.is_empty() {
        return None;
    }
    let fetch = Fetch::of(active);
    let sh = sh.clone();
    let f = fetch.clone();
    let span = info_span!("batch", from = %batch.from, to = %batch.to);
    let task = tokio::spawn(async move { download(&sh, &f, batch).await }.instrument(span));
    Some((batch, fetch, task))
}

/// The batches of one group, in order. As soon as a batch's download ends,
/// the next one's begins, so the source stays busy while this batch's last
/// chunk is parsed, transformed and loaded; each job's loads, ledger and
/// checkpoint stay strictly in order. A job whose transform or load fails
/// stops there (its checkpoint stays); the others go on. A failed download
/// fails every job that was to read it.
async fn group_batches(sh: &Arc<Shared>, g: &mut Group) {
    // The plan's batches, cut further as the rows an hour become known so
    // that a batch stays within `plan::BATCH_VALUES` however wide the network.
    let mut queue: std::collections::VecDeque<Batch> = g.plan.batches.iter().copied().collect();
    let mut rate = None;
    if let Some(first) = queue.front().filter(|b| b.hours() > plan::UNSIZED_HOURS) {
        let fetch = Fetch::of(g.members.iter().map(|m| &m.job));
        let hour = Batch {
            from: first.from,
            to: first.from.plus(1),
        };
        rate = sh.source.estimate(&fetch, hour).await.map(|n| n as f64);
    }
    let mut next = take_batch(&mut queue, rate, g).and_then(|b| prefetch(sh, g, b));
    let mut i = 0;
    while let Some((batch, fetch, extracting)) = next.take() {
        let batch = &batch;
        if sh.opts.stop.load(Ordering::Relaxed) {
            extracting.abort();
            g.members
                .iter_mut()
                .filter(|m| m.active())
                .for_each(|m| m.out.stopped = true);
            break;
        }
        let t0 = Instant::now();
        let downloaded = match extracting.await {
            Ok(r) => r,
            Err(e) => Err(JobError::Internal(format!("extract task failed: {e}"))),
        };
        let readers = |g: &mut Group| -> Vec<usize> {
            (0..g.members.len())
                .filter(|&k| {
                    g.members[k].active() && fetch.fields.contains(&g.members[k].job.field)
                })
                .collect()
        };
        let (writer, rows) = match downloaded {
            Ok(w) => w,
            Err(e) => {
                for k in readers(g) {
                    g.members[k].fail(e.clone());
                }
                break;
            }
        };
        // An empty batch (an outage) says nothing about the next one.
        if rows > 0 {
            rate = Some(rows as f64 / batch.hours() as f64);
        }
        if !sh.opts.stop.load(Ordering::Relaxed) {
            next = take_batch(&mut queue, rate, g).and_then(|b| prefetch(sh, g, b));
        }
        let (handle, _) = match staged(writer).await {
            Ok(staged) => staged,
            Err(e) => {
                for k in readers(g) {
                    g.members[k].fail(e.clone());
                }
                if let Some((_, _, h)) = next.take() {
                    h.abort();
                }
                break;
            }
        };
        // The batch's rows are freed once the last reader has transformed them.
        let mut handle = Some(Arc::new(handle));
        // The jobs reading this batch transform and load it side by side,
        // as many at once as the pipeline's `concurrency`.
        let readers = readers(g);
        let sem = Arc::new(Semaphore::new(sh.pipeline.concurrency.max(1) as usize));
        let mut slots = Vec::new();
        for (k, m) in std::mem::take(&mut g.members).into_iter().enumerate() {
            if !readers.contains(&k) {
                slots.push(Slot::Idle(Box::new(m)));
                continue;
            }
            let staged = handle.clone().expect("held until every reader has it");
            let field = fetch.column(&m.job);
            let (sh, sem, batch) = (sh.clone(), sem.clone(), *batch);
            slots.push(Slot::Busy(tokio::spawn(async move {
                let _permit = sem.acquire().await.expect("semaphore open");
                load_batch(&sh, m, batch, i, staged, field, t0).await
            })));
        }
        // Each reader holds the batch's rows until its transform has read them.
        drop(handle.take());
        for slot in slots {
            g.members.push(match slot {
                Slot::Idle(m) => *m,
                Slot::Busy(task) => match task.await {
                    Ok(m) => m,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                },
            });
        }
        if !g.members.iter().any(Member::active) {
            if let Some((_, _, h)) = next.take() {
                h.abort();
            }
            break;
        }
        if next.is_none() && !queue.is_empty() {
            // Stopped on request before the next extract began.
            g.members
                .iter_mut()
                .filter(|m| m.active())
                .for_each(|m| m.out.stopped = true);
            break;
        }
        i += 1;
    }
}

/// A member of a group while a batch is loaded: waiting, or loading it.
enum Slot {
    Idle(Box<Member>),
    Busy(tokio::task::JoinHandle<Member>),
}

/// One job's part of a batch: transform its field's rows, load every
/// sink, then move its checkpoint. A failure stops this job only.
async fn load_batch(
    sh: &Arc<Shared>,
    mut m: Member,
    batch: Batch,
    i: usize,
    staged: Arc<StagedHandle>,
    field: usize,
    t0: Instant,
) -> Member {
    let span = info_span!(parent: &m.span, "batch", from = %batch.from, to = %batch.to);
    let key = staging_key(&m.job.name, i);
    let loaded = transform_load(sh, &m.job, &m.lease, batch, &key, staged, field)
        .instrument(span.clone())
        .await;
    match loaded {
        Ok(Loaded {
            rows_in,
            rows_out,
            kept,
        }) => {
            span.in_scope(|| {
                info!(
                    rows_in,
                    rows_out,
                    empty_hours = kept,
                    ms = t0.elapsed().as_millis() as u64,
                    "batch loaded"
                );
                if kept > 0 {
                    info!(
                        empty_hours = kept,
                        "{kept} hours empty at the source: kept what the sinks hold"
                    );
                }
            });
            m.out.rows_in += rows_in;
            m.out.rows_out += rows_out;
            m.out.empty_hours += kept;
            m.out.hours += batch.hours();
            m.out.batches += 1;
            sh.progress.batch_done(batch.hours(), rows_in);
        }
        Err(e) => {
            m.fail(e);
            return m;
        }
    }
    let advanced = plan::advance(m.checkpoint, sh.pipeline.start, batch);
    if advanced != m.checkpoint {
        if let Some(h) = advanced {
            // Still ours? A lost lease means another runner may own the job now.
            let moved = match m.lease.confirm().await {
                Ok(()) => {
                    sh.state
                        .set_checkpoint(&sh.pipeline.name, &m.job.name, h)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = moved {
                m.fail(e.into());
                return m;
            }
        }
        m.checkpoint = advanced;
        m.out.checkpoint = advanced;
    }
    m
}

/// The next batch, cut to the value budget at `rate` rows an hour.
fn take_batch(
    queue: &mut std::collections::VecDeque<Batch>,
    rate: Option<f64>,
    g: &Group,
) -> Option<Batch> {
    let b = queue.pop_front()?;
    let Some(rate) = rate else { return Some(b) };
    let fields = Fetch::of(g.members.iter().filter(|m| m.active()).map(|m| &m.job))
        .fields
        .len();
    let (b, rest) = plan::cut(b, rate, fields);
    if let Some(rest) = rest {
        queue.push_front(rest);
    }
    Some(b)
}

/// The staging writer of a batch still taking the last chunk after the
/// download ended; it hands back the batch's rows (kept until the batch is
/// transformed) and how many there are.
type Staging = tokio::task::JoinHandle<(StagedHandle, u64)>;

/// Downloads one batch of `fetch`. Returns once the source has answered in
/// full, with the staging writer still finishing the last chunk, so the
/// next query can start at once; and how many rows it sent.
async fn download(
    sh: &Arc<Shared>,
    fetch: &Fetch,
    batch: Batch,
) -> Result<(Staging, u64), JobError> {
    let conn = {
        let c = sh.conn.lock().unwrap_or_else(|p| p.into_inner());
        c.try_clone()
            .map_err(|e| JobError::Internal(e.to_string()))?
    };
    let rows = StagedHandle::new(&fetch.tags, fetch.fields.len());
    let (tx, rx) = mpsc::channel(4);
    let gate = sh.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let n = duck::write_staging(&conn, rows.staged(), rx, &gate.gate);
        (rows, n)
    });
    let mut sink = PointSink::new(tx, fetch.fields.len());
    let t0 = Instant::now();
    let extracted = sh.source.extract(fetch, batch, &mut sink).await;
    drop(sink);
    tracing::debug!(
        ms = t0.elapsed().as_millis() as u64,
        fields = fetch.fields.len(),
        "downloaded"
    );
    let rows = extracted.map_err(|e| JobError::Source(e.to_string()))?;
    Ok((writer, rows))
}

/// Waits for the staging writer; the batch's rows and how many.
async fn staged(writer: Staging) -> Result<(StagedHandle, u64), JobError> {
    writer
        .await
        .map_err(|e| JobError::Internal(format!("staging thread failed: {e}")))
}

/// What one batch's load did.
struct Loaded {
    /// Rows of the job's field the batch had.
    rows_in: u64,
    /// Rows the transform produced and the sinks got.
    rows_out: u64,
    /// Hours the source returned nothing for, left as the sinks hold them.
    kept: i64,
}

/// Transforms the staged batch (field `field` of it) and loads it into
/// every sink. This job's hold on the batch's rows (`staged`) is dropped as
/// soon as the transform has read them, so a job waiting for a sink holds
/// only its result and the next batch. Before any sink is touched, the result must keep the
/// contract (`pollutant` = the job, `hour_start` in the batch), and rows of
/// hours the source returned nothing for are left out: those hours stay as
/// the sinks hold them unless `replace_empty`.
async fn transform_load(
    sh: &Shared,
    job: &Job,
    lease: &Lease,
    batch: Batch,
    key: &str,
    staged: Arc<StagedHandle>,
    field: usize,
) -> Result<Loaded, JobError> {
    let conn = {
        let c = sh.conn.lock().unwrap_or_else(|p| p.into_inner());
        c.try_clone()
            .map_err(|e| JobError::Internal(e.to_string()))?
    };
    let shared = || sh.gate.read().unwrap_or_else(|p| p.into_inner());
    tokio::task::block_in_place(|| {
        let _g = shared();
        duck::stage_view(&conn, key, &staged, field)
    })?;
    let staging = duck::staging_table(key);
    let sql = sh
        .templates
        .render(&RenderInput {
            pipeline: &sh.pipeline.name,
            source: &sh.pipeline.source,
            job,
            window_start: batch.from,
            window_end: batch.to,
            staging: &staging,
        })
        .map_err(|d| JobError::Template(d.to_string()))?;
    let (rows_in, with_rows) = staged.staged().field_rows(field);
    let replace_empty = sh.opts.replace_empty || sh.pipeline.replace_empty;
    let scope = Scope::new(batch, &with_rows, replace_empty);
    let rows_out = tokio::task::block_in_place(|| {
        let _g = shared();
        duck::transform(&conn, &job.name, &sql)?;
        drop(staged);
        duck::check_contract(&conn, job, batch)?;
        duck::keep_scope(&conn, &job.name, &scope)?;
        duck::rows(&conn, &job.name)
    })?;

    let per_hour = tokio::task::block_in_place(|| {
        let _g = shared();
        duck::rows_per_hour(&conn, &job.name)
    })?;
    for sink in &sh.sinks {
        // Every write asks the lease first: once it may have expired,
        // another runner may be writing the same hours.
        lease.check()?;
        // Nothing to replace: every hour was empty at the source.
        let loaded = if scope.ranges.is_empty() {
            Ok(0)
        } else {
            match tokio::task::block_in_place(|| {
                let _g = shared();
                sink.unload(&conn, &job.name, &job.table, &scope)
            }) {
                Ok(u) => sink.finish(u, job, &scope, &sh.run_id).await,
                Err(e) => Err(e),
            }
        };
        let ok = loaded.is_ok();
        let at = Utc::now();
        let entries: Vec<LedgerEntry> = batch
            .each_hour()
            .map(|hour| LedgerEntry {
                hour,
                sink: sink.name().to_owned(),
                rows: if ok {
                    per_hour.get(&hour).copied().unwrap_or(0)
                } else {
                    0
                },
                ok,
                empty: !scope.contains(hour),
                at,
                run_id: sh.run_id.clone(),
            })
            .collect();
        let recorded = match lease.check() {
            Ok(()) => {
                sh.state
                    .append_ledger(&sh.pipeline.name, &job.name, &entries)
                    .await
            }
            Err(e) => Err(e),
        };
        loaded?;
        recorded?;
        tokio::task::block_in_place(|| {
            let _alone = sh.gate.write().unwrap_or_else(|p| p.into_inner());
            sink.reopen_if_due(&conn, &batch.to_string())
        })?;
    }
    let _ = tokio::task::block_in_place(|| {
        let _g = shared();
        duck::clear(&conn, key, &job.name)
    });
    Ok(Loaded {
        rows_in,
        rows_out,
        kept: scope.kept_hours(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, measurement: &str, field: &str) -> Job {
        Job {
            name: name.into(),
            measurement: measurement.into(),
            field: field.into(),
            tags: vec!["station".into()],
            template: "t.sql".into(),
            table: "t".into(),
            params: Default::default(),
        }
    }

    fn plan(from: &str, to: &str) -> Plan {
        let (from, to) = (Hour::parse(from).unwrap(), Hour::parse(to).unwrap());
        Plan {
            last_complete: to,
            new_hours: 0,
            redo_hours: 0,
            left_hours: 0,
            batches: if from == to {
                vec![]
            } else {
                vec![Batch { from, to }]
            },
        }
    }

    /// Jobs advancing together on one measurement share; a job catching up,
    /// one on another measurement or with nothing to do reads on its own.
    #[test]
    fn jobs_with_the_same_batches_and_measurement_share_a_query() {
        let together = plan("2026-11-20T00:00:00Z", "2026-11-20T03:00:00Z");
        let behind = plan("2026-11-19T00:00:00Z", "2026-11-20T03:00:00Z");
        let idle = plan("2026-11-20T03:00:00Z", "2026-11-20T03:00:00Z");
        let (co, no2, o3, new, other, idle1, idle2) = (
            job("co", "air", "co"),
            job("no2", "air", "no2"),
            job("o3", "air", "o3"),
            job("pm10", "air", "pm10"),
            job("temp", "weather", "t"),
            job("so2", "air", "so2"),
            job("pm25", "air", "pm25"),
        );
        let jobs = [
            (&co, &together),
            (&new, &behind),
            (&no2, &together),
            (&other, &together),
            (&idle1, &idle),
            (&idle2, &idle),
            (&o3, &together),
        ];
        assert_eq!(
            sharing(&jobs),
            vec![vec![0, 2, 6], vec![1], vec![3], vec![4], vec![5]]
        );
    }
}
