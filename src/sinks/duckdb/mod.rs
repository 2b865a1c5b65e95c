//! DuckDB files and MotherDuck (`md:`), through `ATTACH`.
//!
//! Each load is one transaction on the attached database:
//! `DELETE` the batch's (job, hours), `INSERT` the batch's rows, `COMMIT`.
//! The target table is created from the result's schema when missing.
//! Loads into one sink are serialized (jobs run concurrently, and DuckDB
//! would abort one of two transactions touching the same table). A write
//! that still loses to another writer (another connection, MotherDuck's
//! other clients) is rolled back and sent again, jittered and bounded
//! ([`crate::retry::CONFLICT`]), and counted.
//!
//! A local file is reopened (`DETACH`, which checkpoints it, then `ATTACH`)
//! after every [`REOPEN_ROWS`] rows loaded, so that a long backfill holds no
//! more of the file in memory than a short one (see the constant). The
//! reopen is a step of its own (`reopen_if_due`), which the runner takes
//! while no other statement runs on the database: a `DETACH` while another
//! connection's statement holds the file left it attached under the old
//! name, and the `ATTACH` then failed.
//!
//! Opening the file or the MotherDuck database is in [`attach`].

mod attach;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ::duckdb::Connection;

use super::SinkError;
use crate::duck::result_table;
use crate::plan::Scope;
use crate::retry::{Failure, CONFLICT};
use crate::template::{quote_ident, quote_literal};

/// Rows loaded into a local file between two reopenings (more than).
///
/// DuckDB keeps the rows committed to a file uncompressed in memory until it
/// checkpoints the file (at 16 MB of WAL: about 200,000 rows of the
/// benchmark's hourly table), and keeps the blocks a checkpoint wrote cached
/// until its memory limit: both grew with the length of a backfill (peak
/// RSS 75 MB for a month, 98 MB for three). Reopening the file drops both,
/// so a run holds at most this many sink rows (about one 256 KB block a
/// column) whatever its range.
///
/// Why three-quarters of [`ROW_GROUP_ROWS`]: the rows loaded between two
/// reopenings become a row group of their own, and a checkpoint merges
/// adjacent row groups whenever up to four of them fit into fewer
/// (`RowGroupCollection::ScheduleVacuumTasks`), rewriting them uncompressed
/// in memory (RSS spikes of 15-60 MB measured with 20,000 to 81,920 rows
/// and 122,880-row groups). Four groups of more than three-quarters never
/// fit into three, so they are left alone. Measured with `scripts/bench`.
pub const REOPEN_ROWS: u64 = 23_040;

/// Row group size of a local file while duckhour writes it (DuckDB's
/// default: 122,880). A quarter, so that [`REOPEN_ROWS`] is small: the
/// sink's share of the peak is then about one block a column, and a
/// month's backfill (~86,000 rows in the benchmark) reopens three times,
/// like longer ranges do (anonymous memory 24-29 MB for a month against
/// 27-30 for three months, eight alternating rounds; with 46,080 rows in
/// 61,440-row groups, 28-31 against 30-34 in four). Groups of ~23,400 rows
/// cost a little more metadata and compress a little less; any DuckDB
/// reads them.
pub const ROW_GROUP_ROWS: u64 = 30_720;

pub struct DuckSink {
    name: String,
    path: String,
    token: Option<String>,
    schema: String,
    dir: PathBuf,
    alias: String,
    /// The `ATTACH` of a local file, to reopen it; `None` for MotherDuck.
    reattach: Option<String>,
    /// The directory of a local file (absolute), once attached.
    local_dir: Option<PathBuf>,
    /// Rows loaded since the file was last (re)opened. The lock also
    /// serializes loads.
    loaded: Mutex<u64>,
    /// Writes that lost to a concurrent writer and were sent again, this run.
    conflicts: AtomicU64,
}

impl DuckSink {
    pub fn new(
        name: &str,
        path: String,
        token: Option<String>,
        schema: String,
        dir: PathBuf,
    ) -> DuckSink {
        DuckSink {
            name: name.to_owned(),
            path,
            token,
            schema,
            dir,
            alias: format!("sink_{}", name.replace('-', "_")),
            reattach: None,
            local_dir: None,
            loaded: Mutex::new(0),
            conflicts: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory of a local file sink; `None` for MotherDuck (or before `prepare`).
    pub fn local_dir(&self) -> Option<&Path> {
        self.local_dir.as_deref()
    }

    /// Whether `prepare` attached MotherDuck (the path is known only once
    /// resolved: it may come from `${env:}`).
    pub fn is_motherduck(&self) -> bool {
        self.reattach.is_none()
    }

    fn setup_err(&self, message: impl Into<String>) -> SinkError {
        SinkError::Setup {
            sink: self.name.clone(),
            message: message.into(),
        }
    }

    fn target(&self, table: &str) -> String {
        format!(
            "{}.{}.{}",
            quote_ident(&self.alias),
            quote_ident(&self.schema),
            quote_ident(table)
        )
    }

    /// A model's key as a DuckDB literal of its column's type.
    pub fn key_literal(grain: crate::time::Grain, k: i64) -> String {
        crate::time::keys::literal(grain, k, |h| {
            format!("TIMESTAMPTZ {}", quote_literal(&h.to_string()))
        })
    }

    /// The sink's table as the connection names it (`sink_x."main"."t"`).
    pub fn table_ref(&self, table: &str) -> String {
        self.target(table)
    }

    /// The tables the sink's schema has (a table is created on first load).
    pub fn tables(
        &self,
        conn: &Connection,
    ) -> Result<std::collections::HashSet<String>, SinkError> {
        let err = |e: ::duckdb::Error| self.setup_err(e.to_string());
        let mut stmt = conn
            .prepare("SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = ?")
            .map_err(err)?;
        let names = stmt
            .query_map([&self.alias, &self.schema], |r| r.get::<_, String>(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        Ok(names)
    }

    pub fn load(
        &self,
        conn: &Connection,
        job: &str,
        table: &str,
        scope: &Scope,
    ) -> Result<u64, SinkError> {
        let hours = scope.predicate("hour_start", |h| {
            format!("{}::TIMESTAMPTZ", quote_literal(&h.to_string()))
        });
        let what = format!("pollutant = {} AND {hours}", quote_literal(job));
        self.replace(
            conn,
            &result_table(job),
            table,
            &what,
            None,
            &scope.batch.to_string(),
        )
    }

    /// Replaces the rows of `table` matching `what` (a predicate over its
    /// columns) with the rows of `result`, in the order of `key` (a quoted
    /// column) if given, in one transaction; creates the table from
    /// `result`'s schema when missing. `range` names what is replaced in
    /// errors. Returns rows written.
    ///
    /// Models give their key when their rows fill more than a row group (a
    /// job's template orders its own rows, by `hour_start` in the shipped
    /// one). In key order, each row group of the table holds a narrow run
    /// of keys even after a long range is recomputed (`backfill --model`
    /// over a year): its zone maps then let a later range's DELETE, and a
    /// downstream model reading a few keys, skip the rest of the table.
    pub fn replace(
        &self,
        conn: &Connection,
        result: &str,
        table: &str,
        what: &str,
        key: Option<&str>,
        range: &str,
    ) -> Result<u64, SinkError> {
        let err = |message: String| SinkError::Load {
            sink: self.name.clone(),
            range: range.to_owned(),
            message,
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let target = self.target(table);
        let mut attempt = 0;
        loop {
            let e = match replace_once(conn, &target, result, what, key) {
                Ok(n) => {
                    *loaded += n;
                    return Ok(n);
                }
                Err(e) => e.to_string(),
            };
            let _ = conn.execute_batch("ROLLBACK");
            let wait = is_conflict(&e)
                .then(|| CONFLICT.wait(Failure::Conflict, attempt, Duration::ZERO))
                .flatten();
            let Some(wait) = wait else {
                let retried = match attempt {
                    0 => String::new(),
                    n => format!(" (after {n} retries of write conflicts)"),
                };
                let e = missing_column(&e, table).unwrap_or(e);
                return Err(err(format!("{e}{retried}")));
            };
            self.conflicts.fetch_add(1, Ordering::Relaxed);
            tracing::info!(sink = %self.name, table, ?wait, "write lost to a concurrent writer; sending it again");
            attempt += 1;
            std::thread::sleep(wait);
        }
    }

    /// Writes that lost to a concurrent writer and were sent again, so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// Reopens a local file once more than [`REOPEN_ROWS`] rows were
    /// loaded since it was opened. Only while no other connection runs a
    /// statement (the runner makes sure). `range` names the batch just loaded.
    pub fn reopen_if_due(&self, conn: &Connection, range: &str) -> Result<(), SinkError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if *loaded <= REOPEN_ROWS {
            return Ok(());
        }
        if let Some(attach) = &self.reattach {
            // The rows are committed; if this fails, the batch is
            // reported failed and redone (replaced) by the next run.
            conn.execute_batch(&format!("DETACH {}; {attach}", quote_ident(&self.alias)))
                .map_err(|e| SinkError::Load {
                    sink: self.name.clone(),
                    range: range.to_owned(),
                    message: format!("rows committed, but reopening the file failed: {e}"),
                })?;
        }
        *loaded = 0;
        Ok(())
    }
}

/// The rows of `target` matching `what` become those of `result`, in one
/// transaction (left open on failure: the caller rolls back).
fn replace_once(
    conn: &Connection,
    target: &str,
    result: &str,
    what: &str,
    key: Option<&str>,
) -> duckdb::Result<u64> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {target} AS SELECT * FROM {result} LIMIT 0;
         BEGIN TRANSACTION;
         DELETE FROM {target} WHERE {what};"
    ))?;
    let n = conn.execute(
        &format!(
            "INSERT INTO {target} BY NAME SELECT * FROM {result}{}",
            key.map(|k| format!(" ORDER BY {k}")).unwrap_or_default()
        ),
        [],
    )?;
    conn.execute_batch("COMMIT")?;
    Ok(n as u64)
}

/// Whether a write lost to another transaction on the same rows or table
/// (DuckDB's optimistic concurrency, MotherDuck's writers): nothing of it
/// was applied, and the same write may be sent again.
fn is_conflict(message: &str) -> bool {
    const SAID: [&str; 3] = [
        "Conflict on tuple deletion",
        "Conflict on update",
        "write-write conflict",
    ];
    SAID.iter().any(|s| message.contains(s))
}

/// DuckDB's binder error for a result column the table lacks (`Table "t"
/// does not have a column with name "c"`, with a "did you mean" that
/// points at the wrong fix), said as the BigQuery sink says it: the
/// template's columns changed since the table was made.
fn missing_column(message: &str, table: &str) -> Option<String> {
    let rest = message
        .split("does not have a column with name \"")
        .nth(1)?;
    let column = rest.split('"').next()?;
    Some(format!(
        "table `{table}` has no column `{column}` that the SQL returns: add it, or drop the table to have it recreated (a model's: then `backfill --model` rebuilds it; README \"Rules\", upgrading)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::EnvSecrets;
    use crate::spec::Hour;

    /// `result_co` := `hours` hours from `from` for 20 stations. (No ICU:
    /// hours are added as epoch seconds.)
    fn result(conn: &Connection, from: &str, hours: i64) {
        conn.execute_batch(&format!(
            "CREATE OR REPLACE TABLE result_co AS \
             SELECT 'co' AS pollutant, 's' || (i % 20) AS station, \
                    to_timestamp({start} + i // 20 * 3600) AS hour_start, i::DOUBLE AS avg \
             FROM range({rows}) t(i)",
            start = Hour::parse(from).unwrap().0.timestamp(),
            rows = hours * 20
        ))
        .unwrap();
    }

    fn batch(from: &str, hours: i64) -> Scope {
        let from = Hour::parse(from).unwrap();
        let b = crate::plan::Batch {
            from,
            to: from.plus(hours),
        };
        Scope::new(b, &Default::default(), true)
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// A sink `wh` on `wh.duckdb` in a new directory, attached to a new
    /// database (the directory lives as long as it is held).
    fn file_sink() -> (tempfile::TempDir, Connection, DuckSink) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::duck::open().unwrap();
        let mut sink = DuckSink::new(
            "wh",
            "wh.duckdb".into(),
            None,
            "main".into(),
            dir.path().to_owned(),
        );
        sink.prepare(&conn, &EnvSecrets, &dir.path().join("home"))
            .unwrap();
        (dir, conn, sink)
    }

    /// Past REOPEN_ROWS the file is checkpointed (its WAL emptied) and
    /// reopened; every row stays, and other connections load on as before.
    #[test]
    fn file_is_reopened_after_reopen_rows_and_keeps_every_row() {
        let (dir, conn, sink) = file_sink();
        // Reopened inside the confinement a run puts the database in.
        crate::duck::confine(&conn, &[sink.local_dir().unwrap().to_path_buf()]).unwrap();
        let wal = dir.path().join("wh.duckdb.wal");
        let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);

        // 20,000 rows: below the threshold, so they wait in the WAL.
        result(&conn, "2026-01-01T00:00:00Z", 1000);
        let n = sink
            .load(&conn, "co", "hourly", &batch("2026-01-01T00:00:00Z", 1000))
            .unwrap();
        assert_eq!(n, 20_000);
        assert!(wal_len() > 250_000, "WAL holds the rows: {}", wal_len());

        sink.reopen_if_due(&conn, "test").unwrap();
        assert!(wal_len() > 250_000, "not due yet: {}", wal_len());

        // 4,000 more cross 23,040: checkpointed and reopened.
        result(&conn, "2026-04-01T00:00:00Z", 200);
        let n = sink
            .load(&conn, "co", "hourly", &batch("2026-04-01T00:00:00Z", 200))
            .unwrap();
        assert_eq!(n, 4_000);
        sink.reopen_if_due(&conn, "test").unwrap();
        assert_eq!(wal_len(), 0);
        assert_eq!(*sink.loaded.lock().unwrap(), 0);

        // Another job's connection loads into the reopened file; a redo
        // replaces its hours.
        let other = conn.try_clone().unwrap();
        for _ in 0..2 {
            result(&other, "2026-05-01T00:00:00Z", 10);
            sink.load(&other, "co", "hourly", &batch("2026-05-01T00:00:00Z", 10))
                .unwrap();
        }
        let t = "sink_wh.main.hourly";
        assert_eq!(count(&conn, &format!("SELECT count(*) FROM {t}")), 24_200);
        assert_eq!(
            count(
                &conn,
                &format!("SELECT count(DISTINCT (station, hour_start)) FROM {t}")
            ),
            24_200
        );
        assert_eq!(*sink.loaded.lock().unwrap(), 400);
    }

    /// A load whose DELETE meets another connection's uncommitted delete
    /// of the same rows (DuckDB: "Conflict on tuple deletion!") is rolled
    /// back and sent again once the other commits: its rows are all there,
    /// once, and the conflict is counted. A load that fails otherwise is
    /// not retried.
    #[test]
    fn a_write_that_loses_to_another_writer_is_sent_again() {
        let (_dir, conn, sink) = file_sink();
        result(&conn, "2026-01-01T00:00:00Z", 10);
        sink.load(&conn, "co", "hourly", &batch("2026-01-01T00:00:00Z", 10))
            .unwrap();
        assert_eq!(sink.conflicts(), 0);
        let t = "sink_wh.main.hourly";
        let other = conn.try_clone().unwrap();
        other
            .execute_batch(&format!(
                "BEGIN; DELETE FROM {t} WHERE station = 's1'; INSERT INTO {t} SELECT * FROM {t} WHERE station = 's2' LIMIT 0;"
            ))
            .unwrap();
        let commit = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            other.execute_batch("COMMIT").unwrap();
        });
        result(&conn, "2026-01-01T00:00:00Z", 10);
        let n = sink
            .load(&conn, "co", "hourly", &batch("2026-01-01T00:00:00Z", 10))
            .unwrap();
        commit.join().unwrap();
        assert_eq!(n, 200);
        assert!(sink.conflicts() >= 1, "{}", sink.conflicts());
        assert_eq!(count(&conn, &format!("SELECT count(*) FROM {t}")), 200);
        assert_eq!(
            count(
                &conn,
                &format!("SELECT count(DISTINCT (station, hour_start)) FROM {t}")
            ),
            200
        );
        // Not a conflict: said at once, not retried.
        let before = sink.conflicts();
        conn.execute_batch("CREATE OR REPLACE TABLE result_co AS SELECT 1 AS nope")
            .unwrap();
        let e = sink
            .load(&conn, "co", "hourly", &batch("2026-01-01T00:00:00Z", 10))
            .unwrap_err();
        assert!(e.to_string().contains("no column `nope`"), "{e}");
        assert_eq!(sink.conflicts(), before);
    }
}
