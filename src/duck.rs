//! The embedded DuckDB: staging tables, the transform, and the blocking boundary.
//!
//! One in-memory database per process; each job works through its own
//! connection (`try_clone`), so sinks attached once are visible to all jobs.
//! DuckDB calls block, so they run on blocking threads; the staging writer is
//! one such thread, fed chunks by the source over a bounded channel, which
//! overlaps parsing with appending and bounds memory.

use duckdb::Connection;
use tokio::sync::mpsc;

use crate::sources::StageMsg;
use crate::template::{quote_ident, quote_literal};

#[derive(Debug, thiserror::Error)]
pub enum DuckError {
    #[error("DuckDB: {0}")]
    Db(#[from] duckdb::Error),
    #[error("the SQL of job `{job}` failed: {message}")]
    Transform { job: String, message: String },
    #[error("the SQL of job `{job}` must return columns {missing}")]
    MissingColumns { job: String, missing: String },
}

/// Opens the process's in-memory database.
pub fn open() -> Result<Connection, DuckError> {
    let conn = Connection::open_in_memory()?;
    // Keep memory bounded whatever the batch; spill to disk past it.
    conn.execute_batch(
        "SET memory_limit = '512MB'; SET preserve_insertion_order = false; SET threads = 1;",
    )?;
    Ok(conn)
}

/// `stage_<job>`, quoted.
pub fn staging_table(job: &str) -> String {
    quote_ident(&format!("stage_{job}"))
}

/// `result_<job>`, quoted.
pub fn result_table(job: &str) -> String {
    quote_ident(&format!("result_{job}"))
}

/// (Re)creates an empty staging table: `time TIMESTAMPTZ, <tags> VARCHAR, value DOUBLE`.
pub fn create_staging(conn: &Connection, job: &str, tags: &[String]) -> Result<(), DuckError> {
    let mut cols = vec!["time TIMESTAMPTZ NOT NULL".to_owned()];
    cols.extend(tags.iter().map(|t| format!("{} VARCHAR", quote_ident(t))));
    cols.push("value DOUBLE".into());
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TABLE {} ({})",
        staging_table(job),
        cols.join(", ")
    ))?;
    Ok(())
}

/// Receives chunks until the channel closes; returns rows staged.
/// Runs on a blocking thread.
pub fn write_staging(
    conn: &Connection,
    job: &str,
    mut rx: mpsc::Receiver<StageMsg>,
) -> Result<u64, DuckError> {
    let table = format!("stage_{job}");
    let mut rows = 0u64;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            StageMsg::Columns(cols) => {
                let n = cols.len() as u64;
                let mut app = conn.appender(&table)?;
                app.append_record_batch(cols.into_batch())?;
                app.flush()?;
                rows += n;
            }
            StageMsg::Discard { from_ns, to_ns } => {
                let n = conn.execute(
                    &format!(
                        "DELETE FROM {} WHERE time >= make_timestamp(?::BIGINT)::TIMESTAMPTZ AND time < make_timestamp(?::BIGINT)::TIMESTAMPTZ",
                        staging_table(job)
                    ),
                    duckdb::params![from_ns.div_euclid(1000), to_ns.div_euclid(1000)],
                )?;
                rows = rows.saturating_sub(n as u64);
            }
            StageMsg::Parquet { file, tags, reply } => {
                let mut cols = vec!["time::TIMESTAMPTZ".to_owned()];
                cols.extend(tags.iter().map(|t| format!("{}::VARCHAR", quote_ident(t))));
                cols.push("value::DOUBLE".into());
                let sql = format!(
                    "INSERT INTO {} SELECT {} FROM read_parquet({}) WHERE value IS NOT NULL",
                    staging_table(job),
                    cols.join(", "),
                    quote_literal(&file.path().display().to_string())
                );
                let res = conn
                    .execute(&sql, [])
                    .map(|n| n as u64)
                    .map_err(|e| e.to_string());
                if let Ok(n) = res {
                    rows += n;
                }
                let _ = reply.send(res);
            }
        }
    }
    Ok(rows)
}

/// Runs the rendered SQL into `result_<job>`; returns its row count.
pub fn transform(conn: &Connection, job: &str, sql: &str) -> Result<u64, DuckError> {
    let create = format!("CREATE OR REPLACE TABLE {} AS {}", result_table(job), sql);
    conn.execute_batch(&create)
        .map_err(|e| DuckError::Transform {
            job: job.to_owned(),
            message: e.to_string(),
        })?;
    let cols = columns(conn, &format!("result_{job}"))?;
    let missing: Vec<&str> = ["pollutant", "hour_start"]
        .into_iter()
        .filter(|c| !cols.iter().any(|x| x == c))
        .collect();
    if !missing.is_empty() {
        return Err(DuckError::MissingColumns {
            job: job.to_owned(),
            missing: missing.join(", "),
        });
    }
    let n: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {}", result_table(job)),
        [],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

/// Rows of `result_<job>` per hour, for the ledger.
pub fn rows_per_hour(
    conn: &Connection,
    job: &str,
) -> Result<std::collections::HashMap<crate::spec::Hour, u64>, DuckError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT epoch_us(hour_start) // 1000000, count(*) FROM {} GROUP BY 1",
        result_table(job)
    ))?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = std::collections::HashMap::new();
    for row in rows {
        let (secs, n) = row?;
        if let Some(h) =
            chrono::DateTime::from_timestamp(secs, 0).and_then(crate::spec::Hour::exact)
        {
            out.insert(h, n as u64);
        }
    }
    Ok(out)
}

/// Column names of a table in the in-memory database.
pub fn columns(conn: &Connection, table: &str) -> Result<Vec<String>, DuckError> {
    let mut stmt = conn.prepare(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() AND table_name = ? ORDER BY ordinal_position",
    )?;
    let names = stmt
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

/// Drops a batch's staging table (`key`) and its job's result table.
pub fn clear(conn: &Connection, key: &str, job: &str) -> Result<(), DuckError> {
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
        staging_table(key),
        result_table(job)
    ))?;
    Ok(())
}
