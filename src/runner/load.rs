//! The job path of one batch: transform the job's field of the staged
//! rows (or read the batch back from a sink that has it, for a sink that
//! lacks it), check the result contract, load every sink taking the batch,
//! write the ledger, then move the sinks' positions and the job's
//! checkpoint (the oldest position). A failure stops this job only; a sink
//! that fails is left out, its hours pending for it alone.
//!
//! Ordering is what makes it safe: a batch's ledger rows are written after
//! the sink committed, a sink's position only after it has the batch.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::{info, info_span, Instrument};

use super::{JobOutcome, Positions, Shared};
use crate::duck;
use crate::error::JobError;
use crate::plan::{Batch, Scope};
use crate::sources::{Fetch, PointSink};
use crate::spec::{Hour, Job};
use crate::staged::StagedHandle;
use crate::state::{Lease, LedgerEntry};
use crate::template::RenderInput;

/// One job of a group, with what it has done so far.
pub(super) struct Member {
    pub(super) job: Job,
    pub(super) lease: Lease,
    pub(super) checkpoint: Option<Hour>,
    /// Where each sink stands and which batches each takes.
    pub(super) sinks: Positions,
    pub(super) out: JobOutcome,
    pub(super) span: tracing::Span,
    pub(super) started: DateTime<Utc>,
    pub(super) t0: Instant,
}

impl Member {
    pub(super) fn active(&self) -> bool {
        self.out.status() == super::Status::Ok
    }

    pub(super) fn fail(&mut self, e: JobError) {
        self.out.error = Some(e);
    }
}

/// The staging view of a job's `i`-th batch: two alternate, so the next
/// batch can be extracted while this one is transformed and loaded. (`#`
/// cannot appear in a job name.)
pub(super) fn staging_key(job: &str, i: usize) -> String {
    if i.is_multiple_of(2) {
        job.to_owned()
    } else {
        format!("{job}#2")
    }
}

/// Where a batch's rows come from.
pub(super) enum Input {
    /// The source's, staged: field `.1` of them.
    Staged(Arc<StagedHandle>, usize),
    /// The hourly rows the sinks that have the batch hold (those taking it
    /// lack them): read back, the source not asked.
    Refill,
}

/// One job's part of a batch: transform its field's rows (or read them
/// back from a sink that has them), load every sink taking the batch, then
/// move the sinks' positions and the checkpoint. A sink that fails is left
/// out from then on; the job fails only when no sink took the batch.
pub(super) async fn load_batch(
    sh: &Arc<Shared>,
    mut m: Member,
    batch: Batch,
    i: usize,
    input: Input,
    t0: Instant,
) -> Member {
    let span = info_span!(parent: &m.span, "batch", from = %batch.from, to = %batch.to);
    let key = staging_key(&m.job.name, i);
    let loaded = transform_load(sh, &m, batch, &key, input)
        .instrument(span.clone())
        .await;
    let took = match loaded {
        Ok(Loaded {
            rows_in,
            rows_out,
            kept,
            low_coverage,
            took,
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
            if let Some(low) = low_coverage {
                let all = m.out.low_coverage.get_or_insert_with(Default::default);
                all.extend(low);
            }
            m.out.hours += batch.hours();
            m.out.batches += 1;
            sh.progress.batch_done(batch.hours(), rows_in);
            took
        }
        Err(e) => {
            m.fail(e);
            return m;
        }
    };
    let before = m.sinks.at.clone();
    for s in &took {
        m.sinks.advance(s, sh.pipeline.start, batch);
    }
    if m.sinks.at != before {
        let advanced = m.sinks.checkpoint();
        // Still ours? A lost lease means another runner may own the job now.
        let moved = match m.lease.check() {
            Ok(()) => save(sh, &mut m, advanced).await,
            Err(e) => Err(e),
        };
        if let Err(e) = moved {
            m.fail(e.into());
            return m;
        }
        m.checkpoint = advanced;
        m.out.checkpoint = advanced;
    }
    m
}

/// Writes the sinks' positions, then (when it moved) the checkpoint.
/// Positions that say no more than the checkpoint (every sink at it, none
/// failing) are not written while the store holds none: a run whose sinks
/// are all well writes its checkpoint only, as before.
pub(super) async fn save(
    sh: &Shared,
    m: &mut Member,
    checkpoint: Option<Hour>,
) -> Result<(), crate::state::StateError> {
    let (p, job) = (&sh.pipeline.name, &m.job.name);
    let progress = m.sinks.to_progress();
    if m.sinks.stored || !progress.says_nothing_more() {
        sh.state.set_progress(p, job, &progress).await?;
        m.sinks.stored = true;
    }
    match checkpoint {
        Some(h) if checkpoint != m.checkpoint => sh.state.set_checkpoint(p, job, h).await,
        _ => Ok(()),
    }
}

/// The staging writer of a batch still taking the last chunk after the
/// download ended; it hands back the batch's rows (kept until the batch is
/// transformed) and how many there are.
pub(super) type Staging = tokio::task::JoinHandle<(StagedHandle, u64)>;

/// Downloads one batch of `fetch`. Returns once the source has answered in
/// full, with the staging writer still finishing the last chunk, so the
/// next query can start at once; and how many rows it sent.
pub(super) async fn download(
    sh: &Arc<Shared>,
    fetch: &Fetch,
    batch: Batch,
) -> Result<(Staging, u64), JobError> {
    let conn = {
        let c = sh.conn.lock().unwrap_or_else(|p| p.into_inner());
        c.try_clone().map_err(JobError::internal)?
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
    let rows = extracted?;
    Ok((writer, rows))
}

/// Waits for the staging writer; the batch's rows and how many.
pub(super) async fn staged(writer: Staging) -> Result<(StagedHandle, u64), JobError> {
    writer
        .await
        .map_err(|e| JobError::internal_in("staging thread failed", e))
}

/// What one batch's load did.
struct Loaded {
    /// Rows of the job's field the batch had.
    rows_in: u64,
    /// Rows the transform produced and the sinks got.
    rows_out: u64,
    /// Hours the source returned nothing for, left as the sinks hold them.
    kept: i64,
    /// Stations with an hour under 75 % coverage.
    low_coverage: Option<Vec<String>>,
    /// The sinks that took the batch.
    took: Vec<String>,
}

/// Transforms the staged batch (or reads it back from a sink that has it)
/// and loads it into every sink taking it. This job's hold on the batch's
/// rows (`staged`) is dropped as soon as the transform has read them, so a
/// job waiting for a sink holds only its result and the next batch. Before
/// any sink is touched, the result must keep the contract (`pollutant` =
/// the job, `hour_start` in the batch), and rows of hours the source
/// returned nothing for are left out: those hours stay as the sinks hold
/// them unless `replace_empty`.
async fn transform_load(
    sh: &Shared,
    m: &Member,
    batch: Batch,
    key: &str,
    input: Input,
) -> Result<Loaded, JobError> {
    let (job, lease) = (&m.job, &m.lease);
    let mut conn = {
        let c = sh.conn.lock().unwrap_or_else(|p| p.into_inner());
        c.try_clone().map_err(JobError::internal)?
    };
    let shared = || sh.gate.read().unwrap_or_else(|p| p.into_inner());
    let Transformed {
        rows_in,
        rows_out,
        scope,
        per_hour,
        low_coverage,
    } = match input {
        Input::Staged(staged, field) => transform(sh, &conn, job, batch, key, staged, field)?,
        Input::Refill => refill(sh, &mut conn, m, batch).await?,
    };
    let mut took = Vec::new();
    let mut failed = None;
    for sink in sh.up().filter(|s| m.sinks.takes(s.name(), batch)) {
        // Every write asks the lease first: once it may have expired,
        // another runner may be writing the same hours.
        lease.check()?;
        // Nothing to replace: every hour was empty at the source.
        let loaded = match scope.ranges.is_empty() {
            true => Ok(0),
            false => put(sh, &mut conn, sink, job, &scope, &sh.run_id).await,
        };
        let entries = ledger(sh, sink.name(), &scope, &per_hour, loaded.is_ok());
        lease.check()?;
        (sh.state)
            .append_ledger(&sh.pipeline.name, &job.name, &entries)
            .await?;
        match loaded {
            Ok(_) => took.push(sink.name().to_owned()),
            Err(e) => {
                // This sink's hours stay pending for it alone; the others go on.
                let e = JobError::from(e);
                sh.health.failed(sink.name(), e.clone());
                failed.get_or_insert(e);
                continue;
            }
        }
        tokio::task::block_in_place(|| {
            let _alone = sh.gate.write().unwrap_or_else(|p| p.into_inner());
            sink.reopen_if_due(&conn, &batch.to_string())
        })?;
    }
    let unfilled = fill_kept(sh, &mut conn, m, &scope, &took).await?;
    took.retain(|s| !unfilled.contains(s));
    let _ = tokio::task::block_in_place(|| {
        let _g = shared();
        duck::clear(&conn, key, &job.name)
    });
    if let (true, Some(e)) = (took.is_empty(), failed) {
        return Err(e);
    }
    Ok(Loaded {
        rows_in,
        rows_out,
        kept: scope.kept_hours(),
        low_coverage,
        took,
    })
}

/// Hours of the batch the source had nothing for are kept as the sinks
/// hold them; a sink that took the batch without holding them (it is
/// catching up, and the source no longer has those minutes) gets them from
/// a sink that does. A sink that fails here is left out like any other
/// (returned: it does not have the batch).
async fn fill_kept(
    sh: &Shared,
    conn: &mut ::duckdb::Connection,
    m: &Member,
    scope: &Scope,
    took: &[String],
) -> Result<Vec<String>, JobError> {
    let mut unfilled = Vec::new();
    for name in took {
        let at = m.sinks.at.get(name).copied().flatten();
        let mut lacking = crate::time::Ranges::new();
        for h in scope.batch.each_hour() {
            if !scope.contains(h) && at.is_none_or(|p| h > p) {
                lacking.add(h, h.plus(1));
            }
        }
        let Some((_, to)) = lacking.span() else {
            continue;
        };
        let last = to.plus(-1);
        let holder = (m.sinks.at.iter())
            .filter(|(s, p)| *s != name && p.is_some_and(|p| p >= last))
            .find_map(|(s, _)| sh.up().find(|x| x.name() == s));
        let (Some(holder), Some(sink)) = (holder, sh.up().find(|x| x.name() == name)) else {
            continue;
        };
        for (from, to) in lacking.iter() {
            let part = Batch { from, to };
            let rows = holder.read_hourly(conn, &sh.gate, &m.job, part).await?;
            if rows == 0 {
                continue;
            }
            let part = Scope {
                batch: scope.batch,
                ranges: crate::time::Ranges::one(from, to),
            };
            // A staging table (and request ids) of its own, apart from the batch's load.
            let loaded = put(
                sh,
                conn,
                sink,
                &m.job,
                &part,
                &format!("{}-kept", sh.run_id),
            )
            .await;
            match loaded {
                Ok(n) => info!(
                    sink = name.as_str(),
                    from_sink = holder.name(),
                    rows = n,
                    "hours empty at the source filled from the sink that has them"
                ),
                Err(e) => {
                    sh.health.failed(name, JobError::from(e));
                    unfilled.push(name.clone());
                    break;
                }
            }
        }
    }
    Ok(unfilled)
}

/// Replaces the scope's hours of the job in `sink` with `result_<job>`;
/// rows written. `run_id` names BigQuery's staging table.
async fn put(
    sh: &Shared,
    conn: &mut ::duckdb::Connection,
    sink: &crate::sinks::Sink,
    job: &Job,
    scope: &Scope,
    run_id: &str,
) -> Result<u64, crate::sinks::SinkError> {
    let unloaded = tokio::task::block_in_place(|| {
        let _g = sh.gate.read().unwrap_or_else(|p| p.into_inner());
        sink.unload(&*conn, &job.name, &job.table, scope)
    })?;
    sink.finish(unloaded, job, scope, run_id).await
}

/// The batch's rows read back from a sink that has them (see
/// [`Positions::holder`]): every hour of the batch is replaced with them.
async fn refill(
    sh: &Shared,
    conn: &mut ::duckdb::Connection,
    m: &Member,
    batch: Batch,
) -> Result<Transformed, JobError> {
    let holder = m
        .sinks
        .holder(batch, |s| sh.health.is_up(s))
        .and_then(|h| sh.up().find(|s| s.name() == h))
        .ok_or_else(|| JobError::internal(format!("no sink holds {batch} any more")))?;
    let rows_out = holder.read_hourly(conn, &sh.gate, &m.job, batch).await?;
    info!(
        from_sink = holder.name(),
        rows = rows_out,
        "read back from the sink that has these hours"
    );
    let per_hour = tokio::task::block_in_place(|| {
        let _g = sh.gate.read().unwrap_or_else(|p| p.into_inner());
        duck::rows_per_hour(&*conn, &m.job.name)
    })?;
    Ok(Transformed {
        rows_in: 0,
        rows_out,
        scope: Scope {
            batch,
            ranges: crate::time::Ranges::one(batch.from, batch.to),
        },
        per_hour,
        low_coverage: None,
    })
}

/// How far back the stations a batch should have are looked up.
const KNOWN_HOURS: i64 = 24;

/// What a batch's transform left in the embedded database for its sinks.
struct Transformed {
    rows_in: u64,
    rows_out: u64,
    /// The hours the load replaces.
    scope: Scope,
    per_hour: std::collections::HashMap<Hour, u64>,
    low_coverage: Option<Vec<String>>,
}

/// Runs the job's template over its field of the staged batch into
/// `result_<job>`, checks the result contract and keeps the scope's hours.
fn transform(
    sh: &Shared,
    conn: &::duckdb::Connection,
    job: &Job,
    batch: Batch,
    key: &str,
    staged: Arc<StagedHandle>,
    field: usize,
) -> Result<Transformed, JobError> {
    let shared = || sh.gate.read().unwrap_or_else(|p| p.into_inner());
    tokio::task::block_in_place(|| {
        let _g = shared();
        duck::stage_view(conn, key, &staged, field)
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
        .map_err(|d| JobError::Template(crate::error::cause(d)))?;
    let (rows_in, with_rows) = staged.staged().field_rows(field);
    let replace_empty = sh.opts.replace_empty || sh.pipeline.replace_empty;
    let scope = Scope::new(batch, &with_rows, replace_empty);
    let rows_out = tokio::task::block_in_place(|| {
        let _g = shared();
        duck::transform(conn, &job.name, &sql)?;
        drop(staged);
        duck::check_contract(conn, job, batch)?;
        duck::keep_scope(conn, &job.name, &scope)?;
        duck::rows(conn, &job.name)
    })?;

    let (per_hour, low_coverage) = tokio::task::block_in_place(|| {
        let _g = shared();
        // The stations a DuckDB sink held the day before: one that sent
        // nothing in the whole batch is under 75 % too.
        let known = (sh.up().find(|s| s.duck().is_some()))
            .map(|s| s.stations_before(conn, job, batch.from, KNOWN_HOURS))
            .unwrap_or_default();
        let low = duck::low_coverage(conn, &job.name, &job.tags, &known)?;
        Ok::<_, crate::duck::DuckError>((duck::rows_per_hour(conn, &job.name)?, low))
    })?;
    Ok(Transformed {
        rows_in,
        rows_out,
        scope,
        per_hour,
        low_coverage,
    })
}

/// A sink's ledger entries for the batch: every hour `ok` with its rows,
/// or failed; hours outside the scope kept what the sink held.
fn ledger(
    sh: &Shared,
    sink: &str,
    scope: &Scope,
    per_hour: &std::collections::HashMap<Hour, u64>,
    ok: bool,
) -> Vec<LedgerEntry> {
    let at = Utc::now();
    scope
        .batch
        .each_hour()
        .map(|hour| LedgerEntry {
            hour,
            sink: sink.to_owned(),
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
        .collect()
}
