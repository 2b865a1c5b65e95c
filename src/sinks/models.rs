//! What the models step asks of the sinks, so that no code outside
//! `sinks/` writes a sink's SQL or tells the sink kinds apart: read back a
//! model's inputs (the hourly rows, an upstream model's keys) and the
//! episodes its table holds, and replace a key range of its table.
//!
//! Reads use the first DuckDB/MotherDuck sink in place, else the first
//! BigQuery sink, whose rows are copied into scratch tables of the embedded
//! database ([`Inputs::drop_scratch`]).

use std::collections::HashSet;
use std::sync::{Mutex, RwLock};

use ::duckdb::Connection;

use super::bigquery::{copy_in, BigQuerySink, Selected};
use super::duckdb::DuckSink;
use super::{Sink, SinkError};
use crate::spec::{Model, Pipeline};
use crate::template::quote_ident;
use crate::time::{keys, Grain, Hour, KeyRange};

/// Results up to this many rows go into a DuckDB sink as computed; longer
/// ones (a long `backfill --model`) in key order. Four of the sink's row
/// groups ([`super::duckdb::ROW_GROUP_ROWS`] rows each, 122,880 in all):
/// sorting a month of `rolling_8h` (86k rows) cost the month's backfill
/// 10-100 ms a model, and a later read of a few of its keys scans at most
/// those four row groups.
const SORTED_OVER_ROWS: u64 = 4 * super::duckdb::ROW_GROUP_ROWS;

/// The first DuckDB sink's tables, listed once per run (models add theirs
/// as they write them).
#[derive(Debug, Default)]
pub struct Tables(Mutex<Option<HashSet<String>>>);

impl Tables {
    fn has(&self, conn: &Connection, sink: &DuckSink, table: &str) -> Result<bool, SinkError> {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if known.is_none() {
            *known = Some(tokio::task::block_in_place(|| sink.tables(conn))?);
        }
        Ok(known.as_ref().is_some_and(|t| t.contains(table)))
    }

    fn written(&self, table: &str) {
        if let Some(known) = self.0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            known.insert(table.to_owned());
        }
    }
}

/// Relations of the embedded database holding a model's inputs for one
/// range of hours.
#[derive(Debug, Default)]
pub struct Inputs {
    /// The hourly rows of each of the model's hourly tables.
    pub hourly: Vec<String>,
    /// Where the newest hour of each job is found (see `stage::Newest`).
    pub newest: Vec<String>,
    /// (upstream model, relation of its rows).
    pub upstream: Vec<(String, String)>,
    /// Whether `hourly` and `newest` are the sink's own tables (not copies).
    pub own: bool,
    /// Copies read back, dropped by [`Inputs::drop_scratch`].
    scratch: Vec<String>,
}

impl Inputs {
    /// Drops the copies read back; nothing for a DuckDB sink's own tables.
    pub fn drop_scratch(&self, conn: &Connection) {
        for t in &self.scratch {
            let _ = conn.execute_batch(&format!("DROP TABLE IF EXISTS {t}"));
        }
    }
}

/// What `m` reads for the hours `[from, to)`: the first DuckDB/MotherDuck
/// sink's tables, else copies of the first BigQuery sink's rows. `None`:
/// nothing loaded yet (or an upstream model's table missing), nothing to
/// compute.
#[allow(clippy::too_many_arguments)]
pub async fn read_inputs(
    sinks: &[&Sink],
    conn: &Connection,
    gate: &RwLock<()>,
    tables: &Tables,
    p: &Pipeline,
    m: &Model,
    from: Hour,
    to: Hour,
) -> Result<Option<Inputs>, SinkError> {
    if let Some(src) = sinks.iter().find_map(|s| s.duck()) {
        return duck_inputs(src, conn, tables, p, m);
    }
    match sinks.iter().find_map(|s| s.bigquery()) {
        Some(bq) => bigquery_inputs(bq, conn, gate, p, m, from, to).await,
        None => Ok(None),
    }
}

fn duck_inputs(
    src: &DuckSink,
    conn: &Connection,
    tables: &Tables,
    p: &Pipeline,
    m: &Model,
) -> Result<Option<Inputs>, SinkError> {
    let mut got = Inputs {
        own: true,
        ..Inputs::default()
    };
    for t in &m.hourly_tables {
        if tables.has(conn, src, t)? {
            got.hourly.push(src.table_ref(t));
        }
    }
    got.newest = got.hourly.clone();
    for u in &m.depends_on {
        let u = p.model(u).expect("validated");
        if !tables.has(conn, src, &u.table)? {
            return Ok(None);
        }
        got.upstream.push((u.name.clone(), src.table_ref(&u.table)));
    }
    Ok((!got.hourly.is_empty()).then_some(got))
}

async fn bigquery_inputs(
    bq: &BigQuerySink,
    conn: &Connection,
    gate: &RwLock<()>,
    p: &Pipeline,
    m: &Model,
    from: Hour,
    to: Hour,
) -> Result<Option<Inputs>, SinkError> {
    let read = ReadBack { bq, conn, gate, m };
    let ts = |h: Hour| BigQuerySink::key_literal(Grain::Hour, keys::hour_number(h));
    let jobs: Vec<String> = m
        .jobs
        .iter()
        .map(|j| format!("'{}'", j.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    let mut got = Inputs::default();
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
        let rows = format!(
            "SELECT * FROM {table} WHERE {filter} AND hour_start < {}",
            ts(to)
        );
        let newest = format!("SELECT pollutant, MAX(hour_start) AS hour_start FROM {table} WHERE {filter} GROUP BY pollutant");
        let label = format!("table `{t}`");
        let name = format!("model_bq_hourly_{}_{i}", m.name);
        got.hourly.push(read.copy(&rows, &label, &name).await?);
        let label = format!("the newest hours of `{t}`");
        let name = format!("model_bq_newest_{}_{i}", m.name);
        got.newest.push(read.copy(&newest, &label, &name).await?);
    }
    got.scratch = got.hourly.iter().chain(&got.newest).cloned().collect();
    for u in &m.depends_on {
        let u = p.model(u).expect("validated");
        if !bq.has_table(&u.table).await? {
            got.drop_scratch(conn);
            return Ok(None);
        }
        let r = KeyRange {
            grain: u.grain,
            from: keys::key_of(u.grain, u.zone, from),
            to: keys::key_of(u.grain, u.zone, to.plus(-1)) + 1,
        };
        let col = format!("`{}`", u.grain.key_column());
        let rows = format!(
            "SELECT * FROM {} WHERE {}",
            bq.table_ref(&u.table),
            keys::between(&col, r, BigQuerySink::key_literal)
        );
        let label = format!("model `{}`", u.name);
        let name = format!("model_bq_input_{}_{}", m.name, u.name);
        let name = read.copy(&rows, &label, &name).await?;
        got.scratch.push(name.clone());
        got.upstream.push((u.name.clone(), name));
    }
    if got.hourly.is_empty() {
        got.drop_scratch(conn);
        return Ok(None);
    }
    Ok(Some(got))
}

/// Reading rows of a BigQuery sink back into the embedded database, for
/// model `m`.
struct ReadBack<'a> {
    bq: &'a BigQuerySink,
    conn: &'a Connection,
    gate: &'a RwLock<()>,
    m: &'a Model,
}

impl ReadBack<'_> {
    /// Runs `sql` (`label` names it in errors) and copies its rows into the
    /// table `name`; the table as quoted.
    async fn copy(&self, sql: &str, label: &str, name: &str) -> Result<String, SinkError> {
        let rows: Selected = self.bq.select(sql, label).await?;
        tokio::task::block_in_place(|| {
            let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
            copy_in(self.conn, &rows, name)
        })
        .map(|_| quote_ident(name))
        .map_err(|e| SinkError::ReadBack {
            sink: self.bq.name().to_owned(),
            message: format!("model `{}`: copying rows read back: {e}", self.m.name),
        })
    }
}

/// The episodes (column `episode`) `m`'s table holds for the keys `r`: in
/// the first DuckDB/MotherDuck sink, else the first BigQuery sink.
pub async fn read_episodes(
    sinks: &[&Sink],
    conn: &Connection,
    gate: &RwLock<()>,
    m: &Model,
    r: KeyRange,
) -> Result<HashSet<String>, SinkError> {
    let mut out = HashSet::new();
    let col = m.grain.key_column();
    if let Some(s) = sinks.iter().find_map(|s| s.duck()) {
        let shared = || gate.read().unwrap_or_else(|p| p.into_inner());
        if !tokio::task::block_in_place(|| {
            let _g = shared();
            s.tables(conn)
        })?
        .contains(&m.table)
        {
            return Ok(out);
        }
        let sql = format!(
            "SELECT DISTINCT episode::VARCHAR FROM {} WHERE {}",
            s.table_ref(&m.table),
            keys::between(&quote_ident(col), r, DuckSink::key_literal)
        );
        let read = tokio::task::block_in_place(|| {
            let _g = shared();
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map([], |r| r.get::<_, Option<String>>(0))?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| SinkError::ReadBack {
            sink: s.name().to_owned(),
            message: format!("model `{}`: reading its episodes: {e}", m.name),
        })?;
        out.extend(read.into_iter().flatten());
        return Ok(out);
    }
    if let Some(bq) = sinks.iter().find_map(|s| s.bigquery()) {
        if !bq.has_table(&m.table).await? {
            return Ok(out);
        }
        let sel = bq
            .select(
                &format!(
                    "SELECT DISTINCT episode FROM {} WHERE {}",
                    bq.table_ref(&m.table),
                    keys::between(&format!("`{col}`"), r, BigQuerySink::key_literal)
                ),
                &format!("the episodes of model `{}`", m.name),
            )
            .await?;
        out.extend(
            sel.rows
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten()),
        );
    }
    Ok(out)
}

impl Sink {
    /// Replaces the keys `r` of `m`'s table with the `rows` rows of
    /// `result` (a table of `conn`); returns rows written. `run_id` names
    /// BigQuery's staging table.
    #[allow(clippy::too_many_arguments)]
    pub async fn replace_model_keys(
        &self,
        conn: &Connection,
        gate: &RwLock<()>,
        tables: &Tables,
        result: &str,
        m: &Model,
        r: KeyRange,
        rows: u64,
        run_id: &str,
    ) -> Result<u64, SinkError> {
        let shared = || gate.read().unwrap_or_else(|p| p.into_inner());
        let range = r.to_string();
        let written = match self {
            Sink::Duck(s) => tokio::task::block_in_place(|| {
                let _g = shared();
                let col = quote_ident(m.grain.key_column());
                let what = keys::between(&col, r, DuckSink::key_literal);
                // In key order past a few row groups: their zone maps then
                // keep later reads of a few keys narrow.
                let order = (rows > SORTED_OVER_ROWS).then_some(col.as_str());
                s.replace(conn, &quote_ident(result), &m.table, &what, order, &range)
            }),
            Sink::BigQuery(s) => {
                let read = tokio::task::block_in_place(|| {
                    let _g = shared();
                    s.read_table(conn, result)
                })?;
                let col = format!("T.`{}`", m.grain.key_column());
                let what = keys::between(&col, r, BigQuerySink::key_literal);
                let first = keys::first_hour(r.grain, m.zone, r.from);
                s.replace_keys(
                    read, &m.tags, &m.table, &m.name, first, &what, &range, run_id,
                )
                .await
            }
        }?;
        tables.written(&m.table);
        Ok(written)
    }
}
