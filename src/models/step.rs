//! The model step of a run: record which hours a run is about to load
//! (before it loads them), then recompute every output key those hours
//! touch, in every sink, and only then forget them.
//!
//! Ordering is what makes it exact: a model's pending hours are written
//! under its lease before any job of the run writes a sink, and cleared
//! only after every sink holds the recomputed keys. A crash at any instant
//! therefore leaves the hours pending, and the next run (or `backfill
//! --model`) recomputes them from the hourly rows the sinks hold; each
//! range's replacement is idempotent.

use std::sync::{Mutex, RwLock};

use chrono::Utc;
use duckdb::Connection;
use tracing::{info, warn};

use super::stage;
use crate::error::JobError;
use crate::sinks::bigquery::BigQuerySink;
use crate::sinks::Sink;
use crate::spec::{Hour, Model, Pipeline};
use crate::state::{Lease, RunRecord, State, StateError};
use crate::template::{quote_ident, Templates};
use crate::time::keys::{self, KeyRange};
use crate::time::Ranges;

/// Results up to this many rows go into a DuckDB sink as computed; longer
/// ones (a long `backfill --model`) in key order. Four of the sink's row
/// groups ([`crate::sinks::duckdb::ROW_GROUP_ROWS`] rows each, 122,880 in
/// all): sorting a month of `rolling_8h` (86k rows) cost the month's
/// backfill 10-100 ms a model, and a later read of a few of its keys scans
/// at most those four row groups.
const SORTED_OVER_ROWS: u64 = 4 * crate::sinks::duckdb::ROW_GROUP_ROWS;

/// What a model step needs of the run.
pub struct Ctx<'a> {
    pub pipeline: &'a Pipeline,
    pub state: &'a State,
    pub sinks: &'a [Sink],
    pub conn: &'a Mutex<Connection>,
    /// Held shared by every statement, like the jobs' (see `runner`).
    pub gate: &'a RwLock<()>,
    pub templates: &'a Templates,
    pub run_id: &'a str,
    /// `run` or `backfill`, for the run record.
    pub kind: &'a str,
    /// The first DuckDB sink's tables, listed once per run (models add theirs).
    pub tables: Mutex<Option<std::collections::HashSet<String>>>,
    /// The newest hours of the jobs in that sink, found once per run.
    pub newest: Mutex<stage::Newest>,
    /// Where models with `events:` send new episodes; `None`: this run
    /// sends none (a backfill not asked to, or no such model).
    /// (`Err`: the client could not be made; those models fail.)
    pub events: Option<Result<crate::prefect::Client, String>>,
}

impl Ctx<'_> {
    /// Whether the first DuckDB sink `src` has `table`.
    fn has(
        &self,
        conn: &Connection,
        src: &crate::sinks::duckdb::DuckSink,
        table: &str,
    ) -> Result<bool, JobError> {
        let mut known = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if known.is_none() {
            *known = Some(tokio::task::block_in_place(|| src.tables(conn))?);
        }
        Ok(known.as_ref().is_some_and(|t| t.contains(table)))
    }
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

/// Adds `hours` to the model's pending ranges. Call under its lease, before
/// any of those hours is written to a sink.
/// Returns all its pending hours.
pub async fn mark(
    state: &State,
    pipeline: &str,
    m: &Model,
    hours: &Ranges<Hour>,
) -> Result<Ranges<Hour>, StateError> {
    let key = m.state_key();
    let mut pending = state.pending(pipeline, &key).await?;
    let before = pending.clone();
    pending.extend(hours);
    if pending != before {
        state.set_pending(pipeline, &key, &pending).await?;
    }
    Ok(pending)
}

/// The hours the keys `pending` touches in `m` cover: what a model reading
/// `m`'s rows must count as changed.
pub fn spans(m: &Model, pending: &Ranges<Hour>) -> Ranges<Hour> {
    affected(m, pending)
        .iter()
        .map(|r| {
            let (a, b) = keys::key_hours(m.zone, *r);
            (keys::hour_of(a), keys::hour_of(b))
        })
        .collect()
}

/// The output keys of `m` that `pending` hours touch, merged.
pub fn affected(m: &Model, pending: &Ranges<Hour>) -> Vec<KeyRange> {
    let keys: Ranges<i64> = pending
        .iter()
        .map(|(a, b)| keys::affected(m.grain, m.zone, m.lookback_hours, a, b))
        .map(|r| (r.from, r.to))
        .collect();
    keys.iter()
        .map(|(from, to)| KeyRange {
            grain: m.grain,
            from,
            to,
        })
        .collect()
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
    if pending.is_empty() {
        return Ok(());
    }
    out.ranges = affected(m, &pending);
    let mut loaded: Option<i64> = None;
    for r in out.ranges.clone() {
        let (from, to) = keys::inputs(m.zone, m.lookback_hours, r);
        out.input_hours += from.hours_until(to);
        let (rows, newest) = recompute_range(ctx, m, lease, r).await?;
        out.rows += rows;
        loaded = loaded.max(newest);
    }
    lease.check()?;
    ctx.state
        .set_pending(pipeline, &key, &Ranges::new())
        .await?;
    // The newest pending hour that holds loaded rows: a model reading
    // another's days may have hours pending past the data.
    let newest = pending
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

/// Where a model's inputs are read, once a range's are known: relations of
/// the embedded database.
struct Inputs {
    hourly: Vec<String>,
    newest: Vec<String>,
    /// (upstream model, relation of its rows).
    upstream: Vec<(String, String)>,
    /// Copies read back from BigQuery, dropped after the range.
    scratch: Vec<String>,
    /// Whether `newest` are the sink's own tables (see [`stage::Newest`]).
    own: bool,
}

/// The relations the range `r` of `m` reads: the tables of the first
/// DuckDB/MotherDuck sink, else copies read back from the first BigQuery
/// sink. `None`: nothing loaded yet, nothing to compute.
async fn inputs(
    ctx: &Ctx<'_>,
    m: &Model,
    conn: &Connection,
    from: Hour,
    to: Hour,
) -> Result<Option<Inputs>, JobError> {
    let shared = || ctx.gate.read().unwrap_or_else(|p| p.into_inner());
    let mut got = Inputs {
        hourly: Vec::new(),
        newest: Vec::new(),
        upstream: Vec::new(),
        scratch: Vec::new(),
        own: false,
    };
    if let Some(src) = ctx.sinks.iter().find_map(Sink::duck) {
        for t in &m.hourly_tables {
            if ctx.has(conn, src, t)? {
                got.hourly.push(src.table_ref(t));
            }
        }
        got.newest = got.hourly.clone();
        got.own = true;
        for u in &m.depends_on {
            let u = ctx.pipeline.model(u).expect("validated");
            if !ctx.has(conn, src, &u.table)? {
                return Ok(None);
            }
            got.upstream.push((u.name.clone(), src.table_ref(&u.table)));
        }
        return Ok((!got.hourly.is_empty()).then_some(got));
    }
    let Some(bq) = ctx.sinks.iter().find_map(Sink::bigquery) else {
        return Ok(None);
    };
    let ts = |h: Hour| BigQuerySink::key_literal(keys::Grain::Hour, keys::hour_number(h));
    let jobs: Vec<String> = m
        .jobs
        .iter()
        .map(|j| format!("'{}'", j.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    let copy = |rows: crate::sinks::bigquery::Selected, name: String| {
        tokio::task::block_in_place(|| {
            let _g = shared();
            crate::sinks::bigquery::copy_in(conn, &rows, &name)
        })
        .map(|_| quote_ident(&name))
        .map_err(|e| JobError::Internal(format!("model `{}`: copying rows read back: {e}", m.name)))
    };
    for (i, t) in m.hourly_tables.iter().enumerate() {
        if !bq.has_table(t).await? {
            continue;
        }
        let table = bq.table_ref(t);
        let filter = format!(
            "pollutant IN ({}) AND hour_start >= {}",
            jobs.join(", "),
            ts(from)
        );
        let rows = bq
            .select(
                &format!(
                    "SELECT * FROM {table} WHERE {filter} AND hour_start < {}",
                    ts(to)
                ),
                &format!("table `{t}`"),
            )
            .await?;
        let newest = bq
            .select(
                &format!("SELECT pollutant, MAX(hour_start) AS hour_start FROM {table} WHERE {filter} GROUP BY pollutant"),
                &format!("the newest hours of `{t}`"),
            )
            .await?;
        got.hourly
            .push(copy(rows, format!("model_bq_hourly_{}_{i}", m.name))?);
        got.newest
            .push(copy(newest, format!("model_bq_newest_{}_{i}", m.name))?);
    }
    got.scratch = got.hourly.iter().chain(&got.newest).cloned().collect();
    for u in &m.depends_on {
        let u = ctx.pipeline.model(u).expect("validated");
        if !bq.has_table(&u.table).await? {
            return Ok(None);
        }
        let r = KeyRange {
            grain: u.grain,
            from: keys::key_of(u.grain, u.zone, from),
            to: keys::key_of(u.grain, u.zone, to.plus(-1)) + 1,
        };
        let col = format!("`{}`", u.grain.key_column());
        let rows = bq
            .select(
                &format!(
                    "SELECT * FROM {} WHERE {}",
                    bq.table_ref(&u.table),
                    stage::replaced(&col, r, BigQuerySink::key_literal)
                ),
                &format!("model `{}`", u.name),
            )
            .await?;
        let name = copy(rows, format!("model_bq_input_{}_{}", m.name, u.name))?;
        got.scratch.push(name.clone());
        got.upstream.push((u.name.clone(), name));
    }
    Ok((!got.hourly.is_empty()).then_some(got))
}

/// Computes the keys `r` from the hourly rows the sinks hold (see
/// [`inputs`]), then replaces them in every sink. Rows written to each
/// sink, and the number of the newest loaded hour read, if any.
async fn recompute_range(
    ctx: &Ctx<'_>,
    m: &Model,
    lease: &Lease,
    r: KeyRange,
) -> Result<(u64, Option<i64>), JobError> {
    let conn = {
        let c = ctx.conn.lock().unwrap_or_else(|p| p.into_inner());
        c.try_clone()
            .map_err(|e| JobError::Internal(e.to_string()))?
    };
    let shared = || ctx.gate.read().unwrap_or_else(|p| p.into_inner());
    let (from, to) = keys::inputs(m.zone, m.lookback_hours, r);
    let t0 = std::time::Instant::now();
    let step = |what: &str| tracing::debug!(model = %m.name, us = t0.elapsed().as_micros() as u64, "{what}");
    let found = inputs(ctx, m, &conn, from, to).await;
    step("inputs found");
    let drop_scratch = |got: &Option<Inputs>| {
        for t in got.iter().flat_map(|g| &g.scratch) {
            let _ = conn.execute_batch(&format!("DROP TABLE IF EXISTS {t}"));
        }
    };
    let got = match found {
        Ok(g) => g,
        Err(e) => return Err(e),
    };
    let computed =
        tokio::task::block_in_place(|| -> Result<Option<(u64, Option<i64>)>, JobError> {
            let _g = shared();
            let Some(got) = &got else { return Ok(None) };
            let sql = stage::render(ctx.templates, &ctx.pipeline.name, m, r)
                .map_err(|d| JobError::Template(d.to_string()))?;
            // The run's newest hours for the sink's own tables; a search of
            // its own for copies read back.
            let mut cached = got
                .own
                .then(|| ctx.newest.lock().unwrap_or_else(|p| p.into_inner()));
            let mut fresh = stage::Newest::default();
            let newest = cached.as_deref_mut().unwrap_or(&mut fresh);
            let newest =
                stage::load_inputs(&conn, m, &sql, &got.hourly, &got.newest, newest, from, to)
                    .map_err(stage_err)?;
            drop(cached);
            for (u, source) in &got.upstream {
                let u = ctx.pipeline.model(u).expect("validated");
                stage::load_upstream(&conn, m, u, source, from, to).map_err(stage_err)?;
            }
            step("rendered");
            let rows = stage::compute(&conn, m, &sql, r).map_err(stage_err)?;
            step("computed");
            Ok(Some((rows, newest)))
        });
    let computed = match computed {
        Ok(Some(n)) => n,
        Ok(None) => {
            stage::clear(&conn, m);
            drop_scratch(&got);
            return Ok((0, None));
        }
        Err(e) => {
            stage::clear(&conn, m);
            drop_scratch(&got);
            return Err(e);
        }
    };
    if let (Some(name), Some(client)) = (&m.events, &ctx.events) {
        let sent = match client {
            Ok(client) => {
                super::events::send_new(
                    client,
                    &ctx.pipeline.name,
                    &conn,
                    ctx.gate,
                    ctx.sinks,
                    m,
                    name,
                    r,
                )
                .await
            }
            Err(e) => Err(JobError::Events(format!(
                "model `{}`: cannot send its `{name}` events: {e}",
                m.name
            ))),
        };
        match sent {
            Ok(0) => {}
            Ok(n) => info!(model = %m.name, events = n, "sent {n} `{name}` events for {r}"),
            Err(e) => {
                stage::clear(&conn, m);
                drop_scratch(&got);
                return Err(e);
            }
        }
    }
    let result = stage::result_table(m);
    let range = r.to_string();
    let mut failed = None;
    for sink in ctx.sinks {
        // As for jobs: once the lease may have expired, another runner may
        // be writing the same keys.
        if let Err(e) = lease.check() {
            failed = Some(e.into());
            break;
        }
        let written = match sink {
            Sink::Duck(s) => tokio::task::block_in_place(|| {
                let _g = shared();
                let col = quote_ident(m.grain.key_column());
                let what = stage::replaced(&col, r, stage::key_literal);
                // In key order past a few row groups: their zone maps then
                // keep later reads of a few keys narrow.
                let order = (computed.0 > SORTED_OVER_ROWS).then_some(col.as_str());
                s.replace(&conn, &quote_ident(&result), &m.table, &what, order, &range)
            }),
            Sink::BigQuery(s) => {
                let rows = tokio::task::block_in_place(|| {
                    let _g = shared();
                    s.read_table(&conn, &result)
                });
                match rows {
                    Ok(rows) => {
                        let col = format!("T.`{}`", m.grain.key_column());
                        let what = stage::replaced(&col, r, BigQuerySink::key_literal);
                        let first = keys::first_hour(r.grain, m.zone, r.from);
                        s.replace_keys(
                            rows, &m.tags, &m.table, &m.name, first, &what, &range, ctx.run_id,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = written {
            failed = Some(e.into());
            break;
        }
        if let Some(known) = ctx
            .tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            known.insert(m.table.clone());
        }
    }
    step("written");
    stage::clear(&conn, m);
    drop_scratch(&got);
    step("cleared");
    match failed {
        Some(e) => Err(e),
        None => Ok(computed),
    }
}

fn stage_err(e: stage::StageError) -> JobError {
    match e {
        stage::StageError::Input { .. } => JobError::Internal(e.to_string()),
        _ => JobError::Template(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Grain, Zone};

    fn model(grain: Grain, lookback: u32, zone: &str) -> Model {
        Model {
            name: "m".into(),
            template: "m.sql".into(),
            grain,
            lookback_hours: lookback,
            zone: Zone::parse(zone).unwrap(),
            table: "m".into(),
            jobs: vec!["co".into()],
            tags: vec!["station".into()],
            hourly_tables: vec!["pollutant_hourly".into()],
            depends_on: vec![],
            params: Default::default(),
            events: None,
        }
    }

    fn h(s: &str) -> Hour {
        Hour::parse(s).unwrap()
    }

    /// Disjoint pending hours give one key range each, merged when their
    /// keys touch; a model reading a day model sees the whole days
    /// recomputed as its changed hours.
    #[test]
    fn pending_hours_to_keys_and_downstream_hours() {
        let day = model(Grain::Day, 7, "Europe/Madrid");
        let pending: Ranges<Hour> = [
            (h("2026-03-27T09:00:00Z"), h("2026-03-27T10:00:00Z")),
            (h("2026-03-27T12:00:00Z"), h("2026-03-27T13:00:00Z")),
            (h("2026-05-01T00:00:00Z"), h("2026-05-01T01:00:00Z")),
        ]
        .into_iter()
        .collect();
        let keys: Vec<String> = affected(&day, &pending)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            keys,
            [
                "day [2026-03-27, 2026-03-28)",
                "day [2026-05-01, 2026-05-02)"
            ]
        );
        assert_eq!(
            spans(&day, &pending).iter().collect::<Vec<_>>(),
            vec![
                (h("2026-03-26T23:00:00Z"), h("2026-03-27T23:00:00Z")),
                (h("2026-04-30T22:00:00Z"), h("2026-05-01T22:00:00Z")),
            ]
        );
        let year = model(Grain::Year, 0, "Europe/Madrid");
        let keys: Vec<String> = affected(&year, &spans(&day, &pending))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(keys, ["year [2026, 2027)"]);
    }
}
