//! `prefect deploy` and `prefect worker`: pipelines as Prefect deployments
//! in a work pool, and a worker that runs what Prefect schedules there (or
//! what the UI's Run button and `prefect deployment run` create).
//!
//! The worker claims a flow run by proposing PENDING: a second claim gets
//! ABORT, so several workers on one pool run each flow run once (and it
//! re-reads the run first: Prefect accepts PENDING from a finished run, so a
//! stale list would otherwise re-run it). It runs
//! one flow run at a time, reports into it (`crate::report`), stops between
//! batches when the run is cancelled from the UI (CANCELLING), and on
//! SIGTERM finishes the batch in progress and claims nothing more.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::cli::{DeployArgs, PrefectBackfillArgs, Split, WorkerArgs};
use crate::error::{Error, EXIT_OK};
use crate::prefect::runs::{state, StateType};
use crate::prefect::Client;
use crate::runner::{self, Mode, Options};
use crate::spec::{Config, Hour, Pipeline};

/// The work pool type duckhour's pools get (Prefect takes any string).
pub const POOL_TYPE: &str = "duckhour";

/// Prefect marks a worker offline after ~90 s without a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// How long a claim under way may still take once the worker is told to stop.
const CLAIM_GRACE: Duration = Duration::from_secs(3);

fn client_for(p: &Pipeline) -> Result<Client, Error> {
    let t = p.report.as_ref().ok_or_else(|| {
        Error::Usage(format!(
            "pipeline `{}` has no Prefect server: give it Prefect state, or set `prefect: {{url: …}}` in the spec",
            p.name
        ))
    })?;
    crate::state::prefect_client("prefect", &t.url, t.api_key.as_deref()).map_err(Error::from)
}

/// The Run form's parameters: mode, jobs, from, to.
fn parameter_schema(p: &Pipeline) -> Value {
    let jobs: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
    let hour = |title: &str, position: u32, doc: &str| {
        json!({
            "title": title, "position": position, "description": doc, "default": null,
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]
        })
    };
    json!({
        "title": "Parameters",
        "type": "object",
        "properties": {
            "mode": {"title": "mode", "position": 0, "type": "string", "enum": ["run", "backfill"], "default": "run",
                     "description": "run: every pending complete hour; backfill: redo [from, to)"},
            "jobs": {"title": "jobs", "position": 1, "type": "array", "items": {"type": "string", "enum": jobs}, "default": [],
                     "description": "only these jobs (empty: all)"},
            "from": hour("from", 2, "backfill: first hour (inclusive, UTC)"),
            "to": hour("to", 3, "backfill: end hour (exclusive, UTC)"),
            "alerts": {"title": "alerts", "position": 4, "default": null,
                       "anyOf": [{"type": "boolean"}, {"type": "null"}],
                       "description": "send threshold alert events for new episodes (default: in run mode only)"},
        },
        "required": []
    })
}

pub fn deploy(config: &Config, a: &DeployArgs) -> Result<i32, Error> {
    let pipelines: Vec<&Pipeline> = if a.pipelines.is_empty() {
        config.pipelines.values().collect()
    } else {
        a.pipelines
            .iter()
            .map(|n| super::pipeline(config, n))
            .collect::<Result<_, _>>()?
    };
    super::run::runtime()?.block_on(async {
        for p in pipelines {
            let client = client_for(p)?;
            client.ensure_work_pool(&a.pool, POOL_TYPE).await.map_err(|e| Error::Other(e.to_string()))?;
            let flow = client.flow_id(&p.name).await.map_err(|e| Error::Other(e.to_string()))?;
            let schedules: Vec<Value> = p
                .schedule
                .iter()
                .map(|cron| {
                    json!({"schedule": {"cron": cron, "timezone": p.timezone.name()}, "active": true})
                })
                .collect();
            let id = client
                .upsert_deployment(&json!({
                    "name": p.name,
                    "flow_id": flow,
                    "work_pool_name": a.pool,
                    "schedules": schedules,
                    "parameters": {},
                    "parameter_openapi_schema": parameter_schema(p),
                    "tags": ["duckhour"],
                    "description": format!("duckhour pipeline `{}` ({} jobs)", p.name, p.jobs.len()),
                }))
                .await
                .map_err(|e| Error::Other(e.to_string()))?;
            let when = match &p.schedule {
                Some(c) => format!("schedule `{c}` ({})", p.timezone.name()),
                None => "on demand only (no `schedule`)".into(),
            };
            println!("deployment `{0}/{0}` ({id}) in work pool `{1}`: {when}", p.name, a.pool);
        }
        Ok(EXIT_OK)
    })
}

/// The flow runs a split backfill makes: (jobs, from, to) each.
pub fn splits(jobs: &[String], from: Hour, to: Hour, split: Split) -> Vec<(String, Hour, Hour)> {
    let mut out = Vec::new();
    for j in jobs {
        match split {
            Split::Job => out.push((j.clone(), from, to)),
            Split::Week => {
                let mut h = from;
                while h < to {
                    let end = h.plus(168).min(to);
                    out.push((j.clone(), h, end));
                    h = end;
                }
            }
        }
    }
    out
}

pub fn backfill(config: &Config, a: &PrefectBackfillArgs) -> Result<i32, Error> {
    let p = super::pipeline(config, &a.pipeline)?;
    super::check_jobs(p, &a.filter.jobs)?;
    let (from, to) = super::range(&a.range.from, &a.range.to)?;
    let jobs: Vec<String> = if a.filter.jobs.is_empty() {
        p.jobs.iter().map(|j| j.name.clone()).collect()
    } else {
        a.filter.jobs.clone()
    };
    let client = client_for(p)?;
    super::run::runtime()?.block_on(async {
        let id = client
            .deployment_id(&p.name, &p.name)
            .await
            .map_err(|e| Error::Other(e.to_string()))?
            .ok_or_else(|| {
                Error::Usage(format!(
                    "pipeline `{}` is not deployed: run `duckhour prefect deploy {}` first",
                    p.name, p.name
                ))
            })?;
        let parts = splits(&jobs, from, to, a.split);
        for (job, f, t) in &parts {
            // A repeated or retried `prefect backfill` makes no second flow
            // run of the same part: Prefect returns the one with this key.
            let body = json!({
                "name": format!("{}-{job}-{}", p.name, f.0.format("%Y%m%d%H")),
                "parameters": {"mode": "backfill", "jobs": [job], "from": f.to_string(), "to": t.to_string()},
                "tags": ["duckhour", "backfill"],
                "idempotency_key": format!("duckhour-backfill/{}/{job}/{f}/{t}", p.name),
            });
            client
                .run_deployment(&id, &body)
                .await
                .map_err(|e| Error::Other(e.to_string()))?;
        }
        println!(
            "{n} flow runs of deployment `{name}/{name}` backfill [{from}, {to}) for the pool's workers",
            n = parts.len(),
            name = p.name
        );
        Ok(EXIT_OK)
    })
}

/// What a flow run's parameters ask for.
fn options_of(
    p: &Pipeline,
    params: &Value,
    stop: Arc<AtomicBool>,
    flow_run: crate::report::FlowRun,
) -> Result<Options, String> {
    let hour = |k: &str| -> Result<Option<Hour>, String> {
        match &params[k] {
            Value::Null => Ok(None),
            Value::String(s) => {
                let t = crate::spec::parse_time(s).map_err(|e| format!("`{k}`: {e}"))?;
                Hour::exact(t)
                    .map(Some)
                    .ok_or_else(|| format!("`{k}`: `{s}` is not a whole hour"))
            }
            v => Err(format!("`{k}`: not a time: {v}")),
        }
    };
    let jobs: Vec<String> = match &params["jobs"] {
        Value::Null => Vec::new(),
        Value::Array(a) => a
            .iter()
            .filter_map(|j| j.as_str().map(str::to_owned))
            .collect(),
        v => return Err(format!("`jobs`: not a list: {v}")),
    };
    if let Some(j) = jobs.iter().find(|j| p.job(j).is_none()) {
        return Err(format!("pipeline `{}` has no job `{j}`", p.name));
    }
    let mode = match params["mode"].as_str().unwrap_or("run") {
        "run" => Mode::Run,
        "backfill" => match (hour("from")?, hour("to")?) {
            (Some(from), Some(to)) if from < to => Mode::Backfill { from, to },
            _ => return Err("backfill needs `from` before `to`".into()),
        },
        other => return Err(format!("`mode` must be run or backfill, not `{other}`")),
    };
    // Alerts: always in run mode; a backfill sends them only when asked.
    let alerts = match &params["alerts"] {
        Value::Null => matches!(mode, Mode::Run),
        Value::Bool(b) => *b,
        v => return Err(format!("`alerts`: not true or false: {v}")),
    };
    Ok(Options {
        now: Utc::now(),
        jobs,
        mode,
        alerts,
        wait: true,
        stop,
        progress: false,
        replace_empty: false,
        flow_run: Some(flow_run),
        beats: None,
        models: Vec::new(),
    })
}

/// A pipeline of the one Prefect server the spec's pipelines report to.
fn one_server(config: &Config) -> Result<&Pipeline, Error> {
    let servers: std::collections::BTreeSet<&str> = config
        .pipelines
        .values()
        .filter_map(|p| p.report.as_ref().map(|t| t.url.as_str()))
        .collect();
    match servers.len() {
        1 => Ok(config.pipelines.values().find(|p| p.report.is_some()).expect("one")),
        0 => Err(Error::Usage("no pipeline has a Prefect server: give it Prefect state, or set `prefect: {url: …}`".into())),
        _ => Err(Error::Usage("the pipelines report to more than one Prefect server; run one worker per server (one spec each)".into())),
    }
}

pub fn worker(config: &Config, a: &WorkerArgs) -> Result<i32, Error> {
    let client = client_for(one_server(config)?)?;
    let poll = Duration::from_secs(a.poll);
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("duckhour-{}", std::process::id()));
    super::run::runtime()?.block_on(async move {
        let shutdown = Arc::new(AtomicBool::new(false));
        let (told, stopping) = tokio::sync::watch::channel(false);
        {
            let shutdown = shutdown.clone();
            super::serve::on_signal(move || {
                shutdown.store(true, Ordering::SeqCst);
                let _ = told.send(true);
            });
        }
        // Whatever the server's state, a worker told to stop while no flow
        // run is under way stops now: calls to an unreachable server are
        // retried for up to a minute, and the worker does not wait for them.
        let told = || {
            let mut s = stopping.clone();
            async move {
                let _ = s.wait_for(|v| *v).await;
            }
        };
        let setup = client.ensure_work_pool(&a.pool, POOL_TYPE);
        tokio::select! {
            r = setup => r.map_err(|e| Error::Other(e.to_string()))?,
            _ = told() => { println!("stopped"); return Ok(EXIT_OK); }
        }
        println!(
            "worker `{name}` polling work pool `{}`; stop with Ctrl-C or SIGTERM",
            a.pool
        );
        let mut beat = tokio::time::Instant::now() - HEARTBEAT;
        'poll: while !shutdown.load(Ordering::SeqCst) {
            let idle = due_runs(&client, &a.pool, &name, &mut beat);
            let due = tokio::select! {
                d = idle => d,
                _ = told() => break 'poll,
            };
            for fr in due {
                // A claim under way gets a moment to finish: one left half
                // done would leave the flow run PENDING. A run claimed while
                // stopping starts stopped, and ends as such.
                let mut claiming = std::pin::pin!(claim(config, &client, &fr));
                let claimed = tokio::select! {
                    c = &mut claiming => c,
                    _ = told() => tokio::time::timeout(CLAIM_GRACE, claiming).await.ok().flatten(),
                };
                if let Some(c) = claimed {
                    if shutdown.load(Ordering::SeqCst) {
                        c.stop.store(true, Ordering::SeqCst);
                    }
                    execute(config, &client, c, &name, shutdown.clone(), poll).await;
                }
                if shutdown.load(Ordering::SeqCst) {
                    break 'poll;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = told() => break 'poll,
            }
        }
        println!("stopped");
        Ok(EXIT_OK)
    })
}

/// The work pool's flow runs due (none when it cannot be read), after
/// the worker's heartbeat when one is due (`beat`: the last one).
async fn due_runs(
    client: &Client,
    pool: &str,
    name: &str,
    beat: &mut tokio::time::Instant,
) -> Vec<serde_json::Value> {
    if beat.elapsed() >= HEARTBEAT {
        if let Err(e) = client.heartbeat(pool, name).await {
            warn!(error = %e, "heartbeat failed");
        }
        *beat = tokio::time::Instant::now();
    }
    match client.due_flow_runs(pool, 10).await {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "cannot read the work pool; retrying");
            Vec::new()
        }
    }
}

/// A flow run this worker claimed (RUNNING), and what it asks for.
struct Claim<'a> {
    id: String,
    pipeline: &'a Pipeline,
    opts: Options,
    stop: Arc<AtomicBool>,
}

/// Claims one flow run; `None`: another worker has it, it is not runnable,
/// or it failed for bad parameters (then it is FAILED).
async fn claim<'a>(config: &'a Config, client: &Client, fr: &Value) -> Option<Claim<'a>> {
    let id = fr["id"].as_str()?;
    // The list may be minutes old by now, and Prefect accepts PENDING from a
    // finished run (a re-run): claim only a run that is still SCHEDULED.
    // Two claims of one SCHEDULED run still race, and there the second
    // PENDING gets ABORT.
    let cur = match client.read("flow_runs", id).await {
        Ok(cur) if StateType::of(&cur) == Some(StateType::Scheduled) => cur,
        _ => return None,
    };
    match client
        .set_state("flow_runs", id, state(StateType::Pending, None))
        .await
    {
        Ok(s) if s == "ACCEPT" => {}
        Ok(_) => return None, // claimed by another worker (ABORT), or not runnable now
        Err(e) => {
            warn!(flow_run = id, error = %e, "could not claim the flow run");
            return None;
        }
    }
    let pipeline = match fr["deployment_id"].as_str() {
        Some(d) => client
            .read("deployments", d)
            .await
            .ok()
            .and_then(|d| d["name"].as_str().map(str::to_owned)),
        None => None,
    };
    let fail = |message: String| async move {
        let _ = client
            .set_state("flow_runs", id, state(StateType::Failed, Some(&message)))
            .await;
        warn!(flow_run = id, "{message}");
    };
    let Some(p) = pipeline.as_deref().and_then(|n| config.pipelines.get(n)) else {
        fail(format!(
            "deployment `{}` names no pipeline of this spec",
            pipeline.unwrap_or_default()
        ))
        .await;
        return None;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let run = crate::report::FlowRun::of(&cur, &p.name).unwrap_or_else(|| crate::report::FlowRun {
        id: id.to_owned(),
        flow_name: p.name.clone(),
        ..Default::default()
    });
    let opts = match options_of(p, &fr["parameters"], stop.clone(), run) {
        Ok(o) => o,
        Err(m) => {
            fail(format!("bad parameters: {m}")).await;
            return None;
        }
    };
    match client
        .set_state("flow_runs", id, state(StateType::Running, None))
        .await
    {
        Ok(s) if s == "ACCEPT" => {}
        other => {
            warn!(flow_run = id, answer = ?other, "the server did not let the flow run start");
            return None;
        }
    }
    Some(Claim {
        id: id.to_owned(),
        pipeline: p,
        opts,
        stop,
    })
}

/// Runs a claimed flow run to its final state.
async fn execute(
    config: &Config,
    client: &Client,
    c: Claim<'_>,
    worker: &str,
    shutdown: Arc<AtomicBool>,
    poll: Duration,
) {
    let (id, p, opts, stop) = (c.id.as_str(), c.pipeline, c.opts, c.stop);
    info!(flow_run = id, pipeline = %p.name, "running a flow run");
    // Between batches the run stops when the UI cancels it or the worker is told to stop.
    let watcher = {
        let (client, id, stop) = (client.clone(), id.to_owned(), stop.clone());
        tokio::spawn(async move {
            // A signal is seen at once; the server is asked once a `poll`.
            let mut asked = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if shutdown.load(Ordering::SeqCst) {
                    stop.store(true, Ordering::SeqCst);
                }
                if asked.elapsed() < poll {
                    continue;
                }
                asked = tokio::time::Instant::now();
                if let Ok(fr) = client.read("flow_runs", &id).await {
                    if StateType::of(&fr) == Some(StateType::Cancelling) {
                        stop.store(true, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    let outcomes = runner::run(config, p, opts).await;
    watcher.abort();
    // The report sets the final state, but gives up at its first failure
    // (a busy server); a claimed run must not stay RUNNING, so the worker
    // makes sure, with the store's full retries.
    let (kind, message) = outcomes.state();
    let ended = match client.read("flow_runs", id).await {
        Ok(fr) => StateType::of(&fr).is_some_and(StateType::is_final),
        Err(_) => false,
    };
    if !ended {
        if let Err(e) = client
            .set_state("flow_runs", id, state(kind, Some(&message)))
            .await
        {
            warn!(flow_run = id, error = %e, "could not set the flow run's final state");
        }
    }
    let _ = super::run::finish(
        config,
        p,
        &format!("flow run {id} by worker `{worker}`"),
        &outcomes,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfills_split_by_job_and_week() {
        let h = |s: &str| Hour::parse(s).unwrap();
        let jobs = vec!["co".to_owned(), "no2".to_owned()];
        let (from, to) = (h("2026-11-01T00:00:00Z"), h("2026-11-16T12:00:00Z"));
        assert_eq!(
            splits(&jobs, from, to, Split::Job),
            vec![("co".into(), from, to), ("no2".into(), from, to)]
        );
        let weeks = splits(&jobs, from, to, Split::Week);
        assert_eq!(weeks.len(), 6);
        assert_eq!(
            weeks[1],
            (
                "co".into(),
                h("2026-11-08T00:00:00Z"),
                h("2026-11-15T00:00:00Z")
            )
        );
        assert_eq!(weeks[2], ("co".into(), h("2026-11-15T00:00:00Z"), to));
    }
}
