//! Reporting a run where the team already looks: a Prefect flow run per
//! pipeline run, a task run per job, and the run's log lines (info and
//! above) attached to them.
//!
//! Reporting never blocks or fails the data work: the runner hands events
//! to a bounded channel without waiting; one task talks to Prefect with
//! short timeouts; after the first failure it stops trying, and the run
//! says once, at its end, what it could not report.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::prefect::runs::{short, state};
use crate::prefect::Client;

/// One thing that happened in a run.
#[derive(Debug, Clone)]
pub enum Event {
    RunStarted {
        pipeline: String,
        run_id: String,
        parameters: Value,
        tags: Vec<String>,
    },
    JobStarted {
        job: String,
    },
    JobFinished {
        job: String,
        /// `COMPLETED`, `FAILED` or `CANCELLED`.
        state: &'static str,
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
    RunFinished {
        state: &'static str,
        message: String,
    },
}

/// Events the channel holds before new ones are dropped (and counted).
const QUEUE: usize = 4096;
/// Log records sent in one request.
const LOG_BATCH: usize = 100;
/// How long one call to Prefect may take, retries included.
const CALL_BUDGET: Duration = Duration::from_secs(5);

/// Where a run reports; `Report::none()` reports nowhere.
pub struct Report {
    tx: Option<mpsc::Sender<Event>>,
    pump: Option<tokio::task::JoinHandle<Option<String>>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl Report {
    pub fn none() -> Report {
        Report {
            tx: None,
            pump: None,
            dropped: Default::default(),
        }
    }

    /// Reports to the Prefect server of `client` (must run inside the
    /// runtime): into `flow_run` when a worker claimed one, else into a new
    /// flow run.
    pub fn prefect(client: Client, flow_run: Option<String>) -> Report {
        let (tx, rx) = mpsc::channel(QUEUE);
        let client = client
            .with_retry_budget(CALL_BUDGET)
            .with_request_timeout(CALL_BUDGET);
        Report {
            tx: Some(tx),
            pump: Some(tokio::spawn(pump(client, rx, flow_run))),
            dropped: Default::default(),
        }
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
        let pump = self.pump.take()?;
        let dropped = self.dropped.load(std::sync::atomic::Ordering::Relaxed);
        let problem = match tokio::time::timeout(wait, pump).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => Some(format!("the reporting task failed: {e}")),
            Err(_) => Some(format!(
                "Prefect did not take the run's report within {}s",
                wait.as_secs()
            )),
        };
        match (problem, dropped) {
            (Some(p), _) => Some(p),
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
    tasks: HashMap<String, String>,
    pipeline: String,
    logs: Vec<Value>,
}

impl Remote {
    async fn task(&mut self, job: &str) -> Result<String, String> {
        if let Some(id) = self.tasks.get(job) {
            return Ok(id.clone());
        }
        let flow_run = self.flow_run.clone().ok_or("no flow run")?;
        let id = self
            .client
            .create_task_run(&json!({
                "flow_run_id": flow_run,
                "task_key": format!("duckhour.{}.{job}", self.pipeline),
                "dynamic_key": "0",
                "name": job,
                "state": state("RUNNING", None),
            }))
            .await
            .map_err(|e| e.to_string())?;
        self.tasks.insert(job.to_owned(), id.clone());
        Ok(id)
    }

    async fn flush_logs(&mut self) -> Result<(), String> {
        while !self.logs.is_empty() {
            let n = self.logs.len().min(LOG_BATCH);
            let batch: Vec<Value> = self.logs.drain(..n).collect();
            self.client
                .send_logs(&batch)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn handle(&mut self, e: Event) -> Result<(), String> {
        match e {
            Event::RunStarted {
                pipeline,
                run_id,
                parameters,
                tags,
            } => {
                self.pipeline = pipeline.clone();
                if self.flow_run.is_some() {
                    // A worker's claimed run: it is RUNNING already.
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
                        "tags": tags,
                        "state": state("RUNNING", None),
                    }))
                    .await
                    .map_err(|e| e.to_string())?;
                self.flow_run = Some(id);
            }
            Event::JobStarted { job } => {
                self.task(&job).await?;
            }
            Event::JobFinished {
                job,
                state: kind,
                message,
            } => {
                self.flush_logs().await?;
                let id = self.task(&job).await?;
                self.client
                    .set_state("task_runs", &id, state(kind, Some(&message)))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Event::Log {
                job,
                level,
                message,
                at,
            } => {
                let task = match &job {
                    Some(j) => Some(self.task(j).await?),
                    None => None,
                };
                self.logs.push(json!({
                    "name": format!("duckhour.{}", self.pipeline),
                    "level": level,
                    "message": short(&message),
                    "timestamp": at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                    "flow_run_id": self.flow_run,
                    "task_run_id": task,
                }));
                if self.logs.len() >= LOG_BATCH {
                    self.flush_logs().await?;
                }
            }
            Event::RunFinished {
                state: kind,
                message,
            } => {
                self.flush_logs().await?;
                let id = self.flow_run.clone().ok_or("no flow run")?;
                self.client
                    .set_state("flow_runs", &id, state(kind, Some(&message)))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

/// Takes events until the channel closes; the first failure ends the
/// reporting (later events are drained and dropped) and is returned.
async fn pump(
    client: Client,
    mut rx: mpsc::Receiver<Event>,
    flow_run: Option<String>,
) -> Option<String> {
    let mut remote = Remote {
        client,
        flow_run,
        tasks: HashMap::new(),
        pipeline: String::new(),
        logs: Vec::new(),
    };
    let mut failed: Option<String> = None;
    loop {
        // Logs go out at least once a second while the run goes on.
        let next = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
        if failed.is_some() {
            match next {
                Ok(None) => break,
                _ => continue,
            }
        }
        let step = match next {
            Ok(Some(e)) => remote.handle(e).await,
            Ok(None) => break,
            Err(_) => remote.flush_logs().await,
        };
        if let Err(e) = step {
            failed = Some(e);
        }
    }
    if failed.is_none() {
        if let Err(e) = remote.flush_logs().await {
            failed = Some(e);
        }
    }
    failed
}

/// Where log lines go besides stderr while a run reports (set by the runner
/// for the length of a run; runs of one process are sequential).
static FORWARD: OnceLock<Mutex<Option<mpsc::Sender<Event>>>> = OnceLock::new();

fn forward() -> &'static Mutex<Option<mpsc::Sender<Event>>> {
    FORWARD.get_or_init(|| Mutex::new(None))
}

/// Sends log lines (info and above) to `to` until called again with `None`.
pub fn forward_logs(to: Option<mpsc::Sender<Event>>) {
    *forward().lock().unwrap_or_else(|p| p.into_inner()) = to;
}

/// Hands one log line to the current run's report, if any (never waits).
pub fn log(job: Option<String>, level: u8, message: String) {
    let guard = forward().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tx) = guard.as_ref() {
        let message = crate::secret::redact(&message).into_owned();
        let _ = tx.try_send(Event::Log {
            job,
            level,
            message,
            at: Utc::now(),
        });
    }
}
