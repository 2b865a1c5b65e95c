//! Reporting a run where the team already looks: a Prefect flow run per
//! pipeline run, a task run per job, and the run's log lines (info and
//! above) attached to them.
//!
//! Reporting never blocks or fails the data work: the runner hands events
//! to a bounded channel without waiting; one task talks to Prefect with
//! short timeouts; after the first failure it stops sending logs and
//! artifacts, and the run says once, at its end, what it could not report.
//!
//! While the flow run is RUNNING, another task sends its
//! `prefect.flow-run.heartbeat` event every `prefect.heartbeat`, shaped as
//! Prefect's own flow engine sends it (resource `prefect.flow-run.<id>`,
//! related flow, deployment and tags), so that the "zombie flows"
//! automation Prefect documents marks the run Crashed once the process is
//! gone. It goes on when the rest of the reporting has given up, and stops
//! (its last request answered) before the run's final state is proposed: a
//! heartbeat after that state would make the automation crash a finished run.
//! The flow run and its heartbeat are in [`heartbeat`].
//!
//! Final states are not given up with the rest: a task run's that fails
//! is offered again at the run's end, and the flow run's is offered until
//! Prefect takes it or [`deliver::FINAL_WAIT`] has passed ([`deliver`]).
//! Log lines reach the queue through [`forward`].

mod deliver;
mod forward;
mod heartbeat;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::prefect::runs::{short, state, StateType};
use crate::prefect::{Client, PrefectError};

pub use forward::{forward_logs, log};
use heartbeat::SharedBeat;
pub use heartbeat::{Counts as BeatCounts, FlowRun};

/// One thing that happened in a run.
#[derive(Debug, Clone)]
pub enum Event {
    RunStarted {
        pipeline: String,
        run_id: String,
        parameters: Value,
        tags: Vec<String>,
    },
    JobFinished {
        job: String,
        /// Completed, failed or cancelled.
        state: StateType,
        message: String,
    },
    /// A log line; `job` when it came from inside a job.
    Log {
        job: Option<String>,
        /// Python's levels: 20 info, 30 warning, 40 error.
        level: u8,
        message: String,
        at: DateTime<Utc>,
    },
    /// The run's summary, a table artifact of the flow run under `key`.
    Summary {
        key: String,
        /// Rows: JSON objects with the same keys.
        table: Value,
        description: String,
    },
    RunFinished {
        state: StateType,
        message: String,
    },
}

/// Events the channel holds before new ones are dropped (and counted).
const QUEUE: usize = 4096;
/// Log records sent in one request.
const LOG_BATCH: usize = 100;
/// How long a log record may wait for more to go with it: a run shorter
/// than this sends its logs in one request at its end, after every task run
/// exists with its final state (one request each, not two).
const LOG_EVERY: Duration = Duration::from_secs(5);
/// How long one call to Prefect may take, retries included.
const CALL_BUDGET: Duration = Duration::from_secs(5);
/// How long one call waits out rate limits (429 and its `Retry-After`;
/// Prefect Cloud's budgets are per minute): throttled, the report is late,
/// not lost.
pub const THROTTLE_BUDGET: Duration = Duration::from_secs(120);

/// Where a run reports; `Report::none()` reports nowhere.
pub struct Report {
    tx: Option<mpsc::Sender<Event>>,
    pump: Option<tokio::task::JoinHandle<Option<String>>>,
    dropped: std::sync::atomic::AtomicU64,
    beat: SharedBeat,
    /// The heartbeat's counts, when it reports to Prefect.
    beats: Option<Arc<BeatCounts>>,
}

impl Report {
    pub fn none() -> Report {
        Report {
            tx: None,
            pump: None,
            dropped: Default::default(),
            beat: Default::default(),
            beats: None,
        }
    }

    /// Reports to the Prefect server of `client` (must run inside the
    /// runtime): into `flow_run` when a worker claimed one, else into a new
    /// flow run; with a heartbeat every `heartbeat` while it runs.
    pub fn prefect(client: Client, flow_run: Option<FlowRun>, heartbeat: Duration) -> Report {
        let (tx, rx) = mpsc::channel(QUEUE);
        let client = client
            .with_retry_budget(CALL_BUDGET)
            .with_throttle_budget(THROTTLE_BUDGET)
            .with_request_timeout(CALL_BUDGET);
        let counts = Arc::new(BeatCounts::default());
        let beat = Arc::new(tokio::sync::Mutex::new(heartbeat::Beat::counting(
            counts.clone(),
        )));
        Report {
            tx: Some(tx),
            pump: Some(tokio::spawn(pump(
                client,
                rx,
                flow_run,
                beat.clone(),
                heartbeat,
            ))),
            dropped: Default::default(),
            beat,
            beats: Some(counts),
        }
    }

    /// The heartbeat's counts as they grow, when this reports to Prefect.
    pub fn beats(&self) -> Option<Arc<BeatCounts>> {
        self.beats.clone()
    }

    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Hands `e` over without waiting; a full queue drops it (counted).
    pub fn send(&self, e: Event) {
        if let Some(tx) = &self.tx {
            if tx.try_send(e).is_err() {
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// A sender for log lines (see [`forward_logs`]).
    pub fn sender(&self) -> Option<mpsc::Sender<Event>> {
        self.tx.clone()
    }

    /// Waits up to `wait` for what is queued to be sent; what could not be
    /// reported, if anything.
    pub async fn finish(mut self, wait: Duration) -> Option<String> {
        self.tx.take();
        // The run is over: no heartbeat may follow (the pump stops it before
        // proposing the final state; here for a pump that gave up).
        let _ = tokio::time::timeout(wait, async { self.beat.lock().await.stop().await }).await;
        let pump = self.pump.take()?;
        let dropped = self.dropped.load(std::sync::atomic::Ordering::Relaxed)
            + forward::DROPPED_LOGS.swap(0, std::sync::atomic::Ordering::Relaxed);
        let problem = match tokio::time::timeout(wait, pump).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => Some(format!("the reporting task failed: {e}")),
            Err(_) => Some(format!(
                "Prefect did not take the run's report within {}s",
                wait.as_secs()
            )),
        };
        match (problem, dropped) {
            (Some(p), 0) => Some(p),
            (Some(p), n) => Some(format!(
                "{p}; {n} more log lines were dropped (reporting fell behind)"
            )),
            (None, 0) => None,
            (None, n) => Some(format!(
                "{n} log lines were dropped (reporting fell behind)"
            )),
        }
    }
}

/// The run's flow run and task runs on the server, as created so far.
struct Remote {
    client: Client,
    flow_run: Option<String>,
    /// The flow run a worker claimed.
    claimed: Option<FlowRun>,
    tasks: HashMap<String, String>,
    pipeline: String,
    /// Log records not sent yet, with their job (its task run is looked up
    /// when they are sent), and since when the oldest waits.
    logs: Vec<(Option<String>, Value)>,
    logs_since: Option<std::time::Instant>,
    /// Log lines given up on.
    unsent: u64,
    /// Final states of task runs Prefect did not take yet (job, state,
    /// message): offered again at the run's end.
    finals: Vec<(String, StateType, String)>,
    beat: SharedBeat,
    heartbeat: Duration,
}

impl Remote {
    /// The job's task run, created RUNNING if it does not exist yet.
    async fn task(&mut self, job: &str) -> Result<String, PrefectError> {
        self.task_in(job, state(StateType::Running, None)).await
    }

    /// The job's task run, created in `initial` if it does not exist yet.
    async fn task_in(&mut self, job: &str, initial: Value) -> Result<String, PrefectError> {
        if let Some(id) = self.tasks.get(job) {
            return Ok(id.clone());
        }
        let flow_run = self.flow_run.clone().ok_or_else(|| PrefectError {
            server: "prefect".into(),
            what: format!("task run `{job}`"),
            kind: crate::prefect::ErrorKind::Protocol("no flow run".into()),
        })?;
        let id = self
            .client
            .create_task_run(&json!({
                "flow_run_id": flow_run,
                "task_key": format!("duckhour.{}.{job}", self.pipeline),
                "dynamic_key": "0",
                "name": job,
                "state": initial,
            }))
            .await?;
        self.tasks.insert(job.to_owned(), id.clone());
        Ok(id)
    }

    async fn flush_logs(&mut self) -> Result<(), String> {
        self.logs_since = None;
        while !self.logs.is_empty() {
            let n = self.logs.len().min(LOG_BATCH);
            let mut batch = Vec::with_capacity(n);
            for (job, mut record) in self.logs.drain(..n).collect::<Vec<_>>() {
                // Lines may come before the flow run is made.
                record["flow_run_id"] = json!(self.flow_run);
                if let Some(j) = job {
                    record["task_run_id"] = json!(self.task(&j).await.map_err(|e| e.to_string())?);
                }
                batch.push(record);
            }
            let n = batch.len() as u64;
            if let Err(e) = deliver::send_logs(&self.client, batch).await {
                self.unsent += n;
                return Err(e.to_string());
            }
        }
        Ok(())
    }

    /// Sends the logs once the oldest has waited [`LOG_EVERY`] and the flow
    /// run they belong to exists (the run makes it once its leases are
    /// taken, which a throttled server may delay).
    async fn flush_due_logs(&mut self) -> Result<(), String> {
        match self.logs_since {
            Some(t) if t.elapsed() >= LOG_EVERY && self.flow_run.is_some() => {
                self.flush_logs().await
            }
            _ => Ok(()),
        }
    }

    async fn handle(&mut self, e: Event) -> Result<(), String> {
        match e {
            Event::RunStarted {
                pipeline,
                run_id,
                parameters,
                tags,
            } => self.run_started(pipeline, run_id, parameters, tags).await,
            Event::JobFinished {
                job,
                state: kind,
                message,
            } => self.job_finished(job, kind, message).await,
            Event::Log {
                job,
                level,
                message,
                at,
            } => self.log(job, level, message, at).await,
            Event::Summary {
                key,
                table,
                description,
            } => self.summary(key, table, description).await,
            Event::RunFinished {
                state: kind,
                message,
            } => self.run_finished(kind, message).await,
        }
    }

    /// The flow run: made (or, claimed by a worker, already RUNNING), and its heartbeat started.
    async fn run_started(
        &mut self,
        pipeline: String,
        run_id: String,
        parameters: Value,
        tags: Vec<String>,
    ) -> Result<(), String> {
        self.pipeline = pipeline.clone();
        if let Some(run) = self.claimed.clone() {
            // A worker's claimed run: it is RUNNING already.
            self.beat
                .lock()
                .await
                .start(self.client.clone(), run, self.heartbeat);
            return Ok(());
        }
        let flow = self
            .client
            .flow_id(&pipeline)
            .await
            .map_err(|e| e.to_string())?;
        let id = self
            .client
            .create_flow_run(&json!({
                "flow_id": flow,
                "name": run_id,
                "parameters": parameters,
                "tags": &tags,
                "state": state(StateType::Running, None),
            }))
            .await
            .map_err(|e| e.to_string())?;
        self.flow_run = Some(id.clone());
        let run = FlowRun {
            id,
            name: run_id,
            flow_id: Some(flow),
            flow_name: pipeline,
            deployment_id: None,
            tags,
        };
        self.beat
            .lock()
            .await
            .start(self.client.clone(), run, self.heartbeat);
        Ok(())
    }

    /// A job's or model's task run in its final state (made in it when
    /// Prefect has not seen the task yet). One the server fails to take is
    /// kept for the run's end ([`Remote::settle`]).
    async fn job_finished(
        &mut self,
        job: String,
        kind: StateType,
        message: String,
    ) -> Result<(), String> {
        match self.finish_task(&job, kind, &message).await {
            Ok(()) => Ok(()),
            Err(e) if deliver::passing(&e) || deliver::refused(&e) => {
                tracing::debug!(task = %job, error = %e, "task run's final state not taken; offered again at the run's end");
                self.finals.push((job, kind, message));
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// One attempt at a task run's final state.
    async fn finish_task(
        &mut self,
        job: &str,
        kind: StateType,
        message: &str,
    ) -> Result<(), PrefectError> {
        let last = state(kind, Some(message));
        match self.tasks.get(job).cloned() {
            Some(id) => self
                .client
                .set_state("task_runs", &id, last)
                .await
                .map(|_| ()),
            // Not seen by Prefect yet: created in its final state.
            None => self.task_in(job, last).await.map(|_| ()),
        }
    }

    /// The task runs' final states kept by [`Remote::job_finished`],
    /// offered until Prefect takes them or the final wait since `since`
    /// is spent (cut down once when refused); those it never took.
    async fn settle(&mut self, since: std::time::Instant) -> Vec<String> {
        let mut lost = Vec::new();
        for (job, kind, message) in std::mem::take(&mut self.finals) {
            let mut message = message;
            let mut attempt = 0;
            loop {
                let e = match self.finish_task(&job, kind, &message).await {
                    Ok(()) => break,
                    Err(e) => e,
                };
                if deliver::refused(&e) && !message.is_empty() {
                    message = deliver::cut(Some(&message)).unwrap_or_default();
                    continue;
                }
                match deliver::passing(&e)
                    .then(|| deliver::next_wait(attempt, since))
                    .flatten()
                {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => {
                        lost.push(format!("task run `{job}`: {e}"));
                        break;
                    }
                }
                attempt += 1;
            }
        }
        lost
    }

    /// A log line, sent in batches once the flow run exists.
    async fn log(
        &mut self,
        job: Option<String>,
        level: u8,
        message: String,
        at: DateTime<Utc>,
    ) -> Result<(), String> {
        self.logs.push((
            job,
            json!({
                "name": format!("duckhour.{}", self.pipeline),
                "level": level,
                "message": short(&message),
                "timestamp": at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                "flow_run_id": null,
                "task_run_id": null,
            }),
        ));
        self.logs_since.get_or_insert_with(std::time::Instant::now);
        if self.logs.len() >= LOG_BATCH && self.flow_run.is_some() {
            self.flush_logs().await?;
        }
        Ok(())
    }

    /// The run's summary as a table artifact; one that cannot be stored costs nothing else.
    async fn summary(
        &mut self,
        key: String,
        table: Value,
        description: String,
    ) -> Result<(), String> {
        let id = self.flow_run.clone().ok_or("no flow run")?;
        let (taken, refused) = self.beat.lock().await.counts();
        let description = match refused {
            0 => description,
            n => format!(
                "{description}; heartbeats: {n} of {} not taken by Prefect (zombie detection cannot see this run)",
                taken + n
            ),
        };
        // A summary that cannot be stored must not cost the run its
        // final state: said, and the reporting goes on.
        if let Err(e) = self
            .client
            .create_artifact(&json!({
                "key": key,
                "type": "table",
                // As Prefect's `create_table_artifact` sends it: a JSON string.
                "data": table.to_string(),
                "description": description,
                "flow_run_id": id,
            }))
            .await
        {
            tracing::warn!(error = %e, "could not store the run's summary in Prefect");
        }
        Ok(())
    }

    /// The flow run's final state, after its logs, its task runs' final
    /// states and its last heartbeat; offered until Prefect takes it (see
    /// [`deliver`]). Logs that could not be sent cost nothing else.
    async fn run_finished(&mut self, kind: StateType, message: String) -> Result<(), String> {
        let since = std::time::Instant::now();
        let logs = self.flush_logs().await;
        if logs.is_err() {
            self.unsent += self.logs.len() as u64;
            self.logs.clear();
        }
        let id = self.flow_run.clone().ok_or("no flow run")?;
        self.beat.lock().await.stop().await;
        let mut lost = self.settle(since).await;
        if let Err(e) =
            deliver::propose(&self.client, "flow_runs", &id, kind, &message, since).await
        {
            lost.push(format!("the flow run's final state: {e}"));
        }
        match (lost.is_empty(), logs) {
            (true, logs) => logs,
            (false, Ok(())) => Err(format!("not taken by Prefect: {}", lost.join("; "))),
            (false, Err(l)) => Err(format!("not taken by Prefect: {}; {l}", lost.join("; "))),
        }
    }
}

/// Takes events until the channel closes; the first failure ends the
/// reporting (later events are drained and dropped) and is returned.
async fn pump(
    client: Client,
    mut rx: mpsc::Receiver<Event>,
    claimed: Option<FlowRun>,
    beat: SharedBeat,
    heartbeat: Duration,
) -> Option<String> {
    let mut remote = Remote {
        client,
        flow_run: claimed.as_ref().map(|r| r.id.clone()),
        claimed,
        tasks: HashMap::new(),
        pipeline: String::new(),
        logs: Vec::new(),
        logs_since: None,
        unsent: 0,
        finals: Vec::new(),
        beat,
        heartbeat,
    };
    let mut failed: Option<String> = None;
    loop {
        // Logs go out once the oldest has waited `LOG_EVERY` (checked every second).
        let next = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
        if let Some(f) = &mut failed {
            match next {
                Ok(None) => break,
                Ok(Some(Event::Log { .. })) => remote.unsent += 1,
                // Final states still go, into a flow run that exists.
                Ok(Some(e @ (Event::JobFinished { .. } | Event::RunFinished { .. })))
                    if remote.flow_run.is_some() =>
                {
                    if let Err(e) = remote.handle(e).await {
                        f.push_str(&format!("; {e}"));
                    }
                }
                _ => {}
            }
            continue;
        }
        let step = match next {
            Ok(Some(e)) => match remote.handle(e).await {
                Ok(()) => remote.flush_due_logs().await,
                err => err,
            },
            Ok(None) => break,
            Err(_) => remote.flush_due_logs().await,
        };
        if let Err(e) = step {
            // Never sent once the reporting gave up: said with the failure.
            remote.unsent += remote.logs.len() as u64;
            remote.logs.clear();
            failed = Some(e);
        }
    }
    if failed.is_none() {
        if let Err(e) = remote.flush_logs().await {
            remote.unsent += remote.logs.len() as u64;
            failed = Some(e);
        }
    }
    match (failed, remote.unsent) {
        (Some(e), 0) => Some(e),
        (Some(e), n) => Some(format!("{e}; {n} log lines not sent")),
        (None, _) => None,
    }
}
