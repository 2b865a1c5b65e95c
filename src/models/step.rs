//! The model step of a run: record which hours a run is about to load
//! (before it loads them), then recompute every output key those hours
//! touch, in every sink, and only then forget them.
//!
//! Ordering is what makes it exact: a model's pending hours are written
//! under its lease before any job of the run writes a sink, and cleared
//! only after every sink holds the recomputed keys, or is owed them: a
//! sink out of the run (down, or waiting out its backoff) gets the pending
//! hours in the model's `owed` list, recomputed for it when it takes writes
//! again. A crash at any instant
//! therefore leaves the hours pending, and the next run (or `backfill
//! --model`) recomputes them from the hourly rows the sinks hold; each
//! range's replacement is idempotent.

use std::sync::{Mutex, RwLock};

use chrono::Utc;
use duckdb::Connection;
use tracing::{info, warn};

use super::stage;
use crate::error::{EventsFailed, JobError};
use crate::health::Health;
use crate::sinks::models::{read_inputs, Inputs, Tables};
use crate::sinks::Sink;
use crate::spec::{Hour, Model, Pipeline};
use crate::state::{Lease, RunRecord, State};
use crate::template::Templates;
use crate::time::keys::{self, KeyRange};
use crate::time::Ranges;

/// What a model step needs of the run.
pub struct Ctx<'a> {
    pub pipeline: &'a Pipeline,
    pub state: &'a State,
    /// The run's sinks; those out of it ([`Health`]) are skipped, and owed
    /// the keys recomputed meanwhile.
    pub sinks: &'a [Sink],
    pub health: &'a Health,
    /// The sinks models read from: taking writes, and holding every hour
    /// the jobs of this run loaded (a sink still catching up does not).
    pub readers: Vec<&'a Sink>,
    pub conn: &'a Mutex<Connection>,
    /// Held shared by every statement, like the jobs' (see `runner`).
    pub gate: &'a RwLock<()>,
    pub templates: &'a Templates,
    pub run_id: &'a str,
    /// `run` or `backfill`, for the run record.
    pub kind: &'a str,
    /// The first DuckDB sink's tables, listed once per run (models add theirs).
    pub tables: Tables,
    /// The newest hours of the jobs in that sink, found once per run.
    pub newest: Mutex<stage::Newest>,
    /// Where models with `events:` send new episodes; `None`: this run
    /// sends none (a backfill not asked to, or no such model).
    /// (`Err`: the client could not be made; those models fail.)
    pub events: Option<Result<crate::prefect::Client, String>>,
}

/// What happened to one model in a run.
#[derive(Debug, Clone)]
pub struct ModelOutcome {
    pub model: String,
    /// The output keys recomputed, merged.
    pub ranges: Vec<KeyRange>,
    /// Hours of input read, over all ranges.
    pub input_hours: i64,
    /// Rows written to each sink, over all ranges.
    pub rows: u64,
    /// Newest loaded hour whose products are recomputed.
    pub checkpoint: Option<Hour>,
    pub error: Option<JobError>,
}

impl ModelOutcome {
    /// A model skipped with `error` (its hours stay pending).
    pub fn not_run(model: &str, error: JobError) -> ModelOutcome {
        ModelOutcome {
            model: model.to_owned(),
            ranges: Vec::new(),
            input_hours: 0,
            rows: 0,
            checkpoint: None,
            error: Some(error),
        }
    }
}

/// Recomputes every key the model's pending hours touch, in every sink;
/// then clears them, moves its checkpoint and records the run. A failure
/// leaves the pending hours for the next run.
pub async fn recompute(ctx: &Ctx<'_>, m: &Model, lease: &Lease) -> ModelOutcome {
    let started = Utc::now();
    let t0 = std::time::Instant::now();
    let mut out = ModelOutcome {
        model: m.name.clone(),
        ranges: Vec::new(),
        input_hours: 0,
        rows: 0,
        checkpoint: None,
        error: None,
    };
    if let Err(e) = recompute_pending(ctx, m, lease, &mut out).await {
        out.error = Some(e);
    }
    info!(
        model = %m.name,
        ok = out.error.is_none(),
        ranges = out.ranges.len(),
        input_hours = out.input_hours,
        rows = out.rows,
        ms = t0.elapsed().as_millis() as u64,
        error = %out.error.as_ref().map_or_else(String::new, |e| e.to_string()),
        "model finished"
    );
    if out.ranges.is_empty() && out.error.is_none() {
        return out;
    }
    let rec = RunRecord {
        run_id: ctx.run_id.to_owned(),
        kind: ctx.kind.to_owned(),
        started,
        finished: Utc::now(),
        ok: out.error.is_none(),
        hours: out.input_hours,
        rows: out.rows,
        error: out
            .error
            .as_ref()
            .map(|e| crate::secret::redact(&e.to_string()).into_owned()),
        error_kind: out.error.as_ref().map(|e| e.kind().to_owned()),
        low_coverage: None,
        heartbeats: None,
    };
    if lease.check().is_ok() {
        if let Err(e) = ctx
            .state
            .record_run(&ctx.pipeline.name, &m.state_key(), &rec)
            .await
        {
            warn!(model = %m.name, error = %e, "could not record the model's run");
        }
    }
    out
}

async fn recompute_pending(
    ctx: &Ctx<'_>,
    m: &Model,
    lease: &Lease,
    out: &mut ModelOutcome,
) -> Result<(), JobError> {
    let key = m.state_key();
    let pipeline = &ctx.pipeline.name;
    out.checkpoint = ctx.state.checkpoint(pipeline, &key).await?;
    let pending = ctx.state.pending(pipeline, &key).await?;
    let owed = ctx.state.owed(pipeline, &key).await?;
    // Keys owed to a sink taking writes again are recomputed with the pending ones.
    let mut hours = pending.clone();
    for (sink, r) in &owed {
        if ctx.health.is_up(sink) {
            hours.extend(r);
        }
    }
    if hours.is_empty() {
        return Ok(());
    }
    // Read from a sink that holds this model's keys as they stand.
    let readers: Vec<&Sink> = {
        let clean: Vec<&Sink> = (ctx.readers.iter().copied())
            .filter(|s| owed.get(s.name()).is_none_or(Ranges::is_empty))
            .collect();
        if clean.is_empty() {
            ctx.readers.clone()
        } else {
            clean
        }
    };
    out.ranges = super::plan::affected(m, &hours);
    // The pending keys go to every sink taking writes; a sink's owed keys
    // beyond them to that sink alone.
    let all = super::plan::affected(m, &pending);
    let mut work: Vec<(KeyRange, Option<&str>)> = all.iter().map(|r| (*r, None)).collect();
    for (sink, r) in owed.iter().filter(|(s, _)| ctx.health.is_up(s)) {
        for k in keys::without(&super::plan::affected(m, r), &all) {
            work.push((k, Some(sink.as_str())));
        }
    }
    let mut loaded: Option<i64> = None;
    for (r, only) in work {
        let (from, to) = keys::inputs(m.zone, m.lookback_hours, r);
        out.input_hours += from.hours_until(to);
        let (rows, newest) = recompute_range(ctx, &readers, m, lease, r, only).await?;
        out.rows += rows;
        loaded = loaded.max(newest);
    }
    lease.check()?;
    settle_owed(ctx, &key, owed, &pending).await?;
    if !pending.is_empty() {
        ctx.state
            .set_pending(pipeline, &key, &Ranges::new())
            .await?;
    }
    // The newest pending hour that holds loaded rows: a model reading
    // another's days may have hours pending past the data.
    let newest = hours
        .span()
        .map(|(_, to)| to.plus(-1))
        .zip(loaded.map(keys::hour_of))
        .map(|(p, l)| p.min(l));
    if let Some(h) = newest.filter(|h| out.checkpoint.is_none_or(|c| c < *h)) {
        ctx.state.set_checkpoint(pipeline, &key, h).await?;
        out.checkpoint = Some(h);
    }
    Ok(())
}

/// After the keys are written: a sink out of the run is owed what was
/// pending; one that took them owes nothing. Durable before the pending
/// hours are cleared.
async fn settle_owed(
    ctx: &Ctx<'_>,
    key: &str,
    mut owed: crate::state::Owed,
    pending: &Ranges<Hour>,
) -> Result<(), JobError> {
    let before = owed.clone();
    for sink in &ctx.pipeline.sinks {
        if ctx.health.is_up(sink) {
            owed.remove(sink);
        } else if !pending.is_empty() {
            owed.entry(sink.clone()).or_default().extend(pending);
        }
    }
    if owed != before {
        ctx.state.set_owed(&ctx.pipeline.name, key, &owed).await?;
    }
    Ok(())
}

/// Computes the keys `r` from the hourly rows the sinks hold (see
/// [`read_inputs`]), then replaces them in every sink. Rows written to each
/// sink, and the number of the newest loaded hour read, if any. What it
/// staged and read back is dropped whatever happened.
async fn recompute_range(
    ctx: &Ctx<'_>,
    readers: &[&Sink],
    m: &Model,
    lease: &Lease,
    r: KeyRange,
    only: Option<&str>,
) -> Result<(u64, Option<i64>), JobError> {
    let conn = {
        let c = ctx.conn.lock().unwrap_or_else(|p| p.into_inner());
        c.try_clone().map_err(JobError::internal)?
    };
    let (from, to) = keys::inputs(m.zone, m.lookback_hours, r);
    let (p, tables) = (ctx.pipeline, &ctx.tables);
    let Some(got) = read_inputs(readers, &conn, ctx.gate, tables, p, m, from, to).await? else {
        return Ok((0, None));
    };
    let done = async {
        let computed = compute(ctx, &conn, m, r, &got)?;
        send_events(ctx, readers, &conn, m, r).await?;
        write(ctx, &conn, m, lease, r, computed.0, only).await?;
        Ok(computed)
    }
    .await;
    stage::clear(&conn, m);
    got.drop_scratch(&conn);
    done
}

/// Stages `got` and computes the keys `r` into `m`'s result table: its
/// rows, and the newest loaded hour read.
fn compute(
    ctx: &Ctx<'_>,
    conn: &Connection,
    m: &Model,
    r: KeyRange,
    got: &Inputs,
) -> Result<(u64, Option<i64>), JobError> {
    let (from, to) = keys::inputs(m.zone, m.lookback_hours, r);
    tokio::task::block_in_place(|| {
        let _g = ctx.gate.read().unwrap_or_else(|p| p.into_inner());
        let sql = stage::render(ctx.templates, &ctx.pipeline.name, m, r)
            .map_err(|d| JobError::Template(crate::error::cause(d)))?;
        // The run's newest hours for the sink's own tables; a search of
        // its own for copies read back.
        let mut cached = got
            .own
            .then(|| ctx.newest.lock().unwrap_or_else(|p| p.into_inner()));
        let mut fresh = stage::Newest::default();
        let newest = cached.as_deref_mut().unwrap_or(&mut fresh);
        let newest = stage::load_inputs(conn, m, &sql, &got.hourly, &got.newest, newest, from, to)
            .map_err(stage_err)?;
        drop(cached);
        for (u, source) in &got.upstream {
            let u = ctx.pipeline.model(u).expect("validated");
            stage::load_upstream(conn, m, u, source, from, to).map_err(stage_err)?;
        }
        let rows = stage::compute(conn, m, &sql, r).map_err(stage_err)?;
        Ok((rows, newest))
    })
}

/// Sends the new episodes of the computed keys `r`, for a model with
/// `events:` in a run that sends them.
async fn send_events(
    ctx: &Ctx<'_>,
    readers: &[&Sink],
    conn: &Connection,
    m: &Model,
    r: KeyRange,
) -> Result<(), JobError> {
    let (Some(name), Some(client)) = (&m.events, &ctx.events) else {
        return Ok(());
    };
    let client = client.as_ref().map_err(|e| JobError::Events {
        model: m.name.clone(),
        failed: Box::new(EventsFailed::NoClient {
            event: name.clone(),
            why: e.clone(),
        }),
    })?;
    let pipeline = &ctx.pipeline.name;
    let n = super::events::send_new(client, pipeline, conn, ctx.gate, readers, m, name, r).await?;
    if n > 0 {
        info!(model = %m.name, events = n, "sent {n} `{name}` events for {r}");
    }
    Ok(())
}

/// Replaces the keys `r` in every sink taking writes (or only in `only`)
/// with the `rows` rows computed, under the lease: once it may have
/// expired, another runner may be writing the same keys. A sink that fails
/// is left out of the run (it is owed the keys); the model fails only when
/// no sink took them.
async fn write(
    ctx: &Ctx<'_>,
    conn: &Connection,
    m: &Model,
    lease: &Lease,
    r: KeyRange,
    rows: u64,
    only: Option<&str>,
) -> Result<(), JobError> {
    let result = stage::result_table(m);
    let mut failed = None;
    let mut took = false;
    let targets = (ctx.sinks.iter())
        .filter(|s| ctx.health.is_up(s.name()))
        .filter(|s| only.is_none_or(|o| o == s.name()));
    for sink in targets {
        lease.check()?;
        let written = sink
            .replace_model_keys(conn, ctx.gate, &ctx.tables, &result, m, r, rows, ctx.run_id)
            .await;
        match written {
            Ok(_) => took = true,
            Err(e) => {
                let e = JobError::from(e);
                ctx.health.failed(sink.name(), e.clone());
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) if !took => Err(e),
        _ => Ok(()),
    }
}

fn stage_err(e: stage::StageError) -> JobError {
    match e {
        stage::StageError::Input { .. } => JobError::internal(e),
        _ => JobError::Template(crate::error::cause(e)),
    }
}
