//! Reading a job's hourly rows back from the sink that holds them, into
//! the batch's result table (`result_<job>`), so that a sink that lacks
//! those hours (it was down) gets exactly what the other holds, even once
//! the source no longer has the minutes: one query per batch, none to the
//! source. And the stations a sink held before a batch, which a batch's
//! coverage is judged against.

use std::sync::RwLock;

use ::duckdb::Connection;

use super::bigquery::copy_in;
use super::{Sink, SinkError};
use crate::duck::result_table;
use crate::plan::Batch;
use crate::spec::Job;
use crate::template::quote_literal;

impl Sink {
    /// Fills `result_<job>` with the rows of `job` this sink holds for
    /// `batch`; how many. A sink without the job's table holds none.
    /// (`&mut`: the connection is held across the BigQuery read, and a
    /// shared one could not move between threads.)
    pub async fn read_hourly(
        &self,
        conn: &mut Connection,
        gate: &RwLock<()>,
        job: &Job,
        batch: Batch,
    ) -> Result<u64, SinkError> {
        let result = result_table(&job.name);
        let shared = || gate.read().unwrap_or_else(|p| p.into_inner());
        let empty = |conn: &Connection| -> Result<u64, SinkError> {
            tokio::task::block_in_place(|| {
                let _g = shared();
                conn.execute_batch(&format!(
                    "CREATE OR REPLACE TABLE {result} (pollutant VARCHAR, hour_start TIMESTAMPTZ)"
                ))
            })
            .map_err(|e| self.read_err(job, batch, e))?;
            Ok(0)
        };
        match self {
            Sink::Duck(s) => {
                let has = tokio::task::block_in_place(|| {
                    let _g = shared();
                    s.tables(conn)
                })?;
                if !has.contains(&job.table) {
                    return empty(conn);
                }
                let ts = |h: crate::spec::Hour| {
                    format!("{}::TIMESTAMPTZ", quote_literal(&h.to_string()))
                };
                let sql = format!(
                    "CREATE OR REPLACE TABLE {result} AS SELECT * FROM {} WHERE pollutant = {} AND hour_start >= {} AND hour_start < {} ORDER BY hour_start",
                    s.table_ref(&job.table),
                    quote_literal(&job.name),
                    ts(batch.from),
                    ts(batch.to)
                );
                tokio::task::block_in_place(|| {
                    let _g = shared();
                    conn.execute_batch(&sql)?;
                    conn.query_row(&format!("SELECT count(*) FROM {result}"), [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .map(|n| n as u64)
                })
                .map_err(|e| self.read_err(job, batch, e))
            }
            Sink::BigQuery(bq) => {
                let table = bq.target(&job.table);
                if !bq.has_table(table).await? {
                    return empty(conn);
                }
                let sql = format!(
                    "SELECT * FROM {} WHERE pollutant = '{}' AND hour_start >= {} AND hour_start < {}",
                    bq.table_ref(table),
                    job.name.replace('\\', "\\\\").replace('\'', "\\'"),
                    super::bigquery::hour_literal(batch.from),
                    super::bigquery::hour_literal(batch.to)
                );
                let rows = bq
                    .select(&sql, &format!("the hours {batch} of `{}`", job.name))
                    .await?;
                let n = rows.rows.len() as u64;
                let name = format!("result_{}", job.name);
                let conn: &Connection = conn;
                tokio::task::block_in_place(|| {
                    let _g = shared();
                    copy_in(conn, &rows, &name)
                })
                .map_err(|e| self.read_err(job, batch, e))?;
                Ok(n)
            }
        }
    }

    /// The stations (values of the job's tags, joined by `/`) this sink
    /// holds rows of for `job` in the `hours` hours before `from`: the
    /// stations a batch starting at `from` should have. A DuckDB sink only
    /// (read in place; BigQuery would cost a query a batch), and none when
    /// it has no such table yet.
    pub fn stations_before(
        &self,
        conn: &Connection,
        job: &Job,
        from: crate::spec::Hour,
        hours: i64,
    ) -> Vec<String> {
        let Sink::Duck(s) = self else {
            return Vec::new();
        };
        if job.tags.is_empty() {
            return Vec::new();
        }
        let ts = |h: crate::spec::Hour| format!("{}::TIMESTAMPTZ", quote_literal(&h.to_string()));
        let station: Vec<String> = (job.tags.iter())
            .map(|t| format!("coalesce({}::VARCHAR, '')", crate::template::quote_ident(t)))
            .collect();
        let sql = format!(
            "SELECT DISTINCT concat_ws('/', {}) FROM {} WHERE pollutant = {} AND hour_start >= {} AND hour_start < {}",
            station.join(", "),
            s.table_ref(&job.table),
            quote_literal(&job.name),
            ts(from.plus(-hours)),
            ts(from)
        );
        let read = || -> ::duckdb::Result<Vec<String>> {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect()
        };
        // A sink without the table (nothing loaded yet) knows no station.
        read().unwrap_or_default()
    }

    fn read_err(&self, job: &Job, batch: Batch, e: impl std::fmt::Display) -> SinkError {
        SinkError::ReadBack {
            sink: self.name().to_owned(),
            message: format!(
                "sink `{}`: reading back the hours {batch} of job `{}`: {e}",
                self.name(),
                job.name
            ),
        }
    }
}
