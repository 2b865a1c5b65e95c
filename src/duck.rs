//! The embedded DuckDB: staging, the transform, and the blocking boundary.
//!
//! One in-memory database per process; each job works through its own
//! connection (`try_clone`), so sinks attached once are visible to all jobs.
//! A batch's staging is a view over its rows held in Rust (`crate::staged`).
//! DuckDB calls block, so they run on blocking threads; the staging writer is
//! one such thread, fed chunks by the source over a bounded channel, which
//! overlaps parsing with staging and bounds memory.

use duckdb::Connection;
use tokio::sync::mpsc;

use crate::sources::{Columns, StageMsg};
use crate::staged::{self, Staged, StagedHandle};
use crate::template::{quote_ident, quote_literal};

#[derive(Debug, thiserror::Error)]
pub enum DuckError {
    #[error("DuckDB: {0}")]
    Db(#[from] duckdb::Error),
    #[error("the SQL of job `{job}` failed: {message}")]
    Transform { job: String, message: String },
    #[error("DuckDB extension `{name}` could not be loaded: {message}")]
    Extension { name: String, message: String },
    #[error("the SQL of job `{job}` must return columns {missing}")]
    MissingColumns { job: String, missing: String },
    /// A result row the sinks would not replace on the next load: loading it
    /// would duplicate it on every rerun.
    #[error("template `{template}` of job `{job}` broke the result contract: column `{column}`: {rule}; first offending row: {row}; no sink was written")]
    Contract {
        template: String,
        job: String,
        column: &'static str,
        rule: String,
        row: String,
    },
}

/// Opens the process's in-memory database.
pub fn open() -> Result<Connection, DuckError> {
    let conn = Connection::open_in_memory()?;
    // Keep memory bounded whatever the batch; spill to disk past it.
    conn.execute_batch(
        "SET memory_limit = '512MB'; SET preserve_insertion_order = false; SET threads = 1;",
    )?;
    staged::register(&conn)?;
    Ok(conn)
}

/// Loads DuckDB extensions (`extensions:`) from DuckDB's extension
/// directory, before the database is confined. Nothing is downloaded. With
/// `icu`, the session's time zone is UTC, so that timestamps print and
/// compare the same on every machine.
pub fn load_extensions(conn: &Connection, names: &[String]) -> Result<(), DuckError> {
    if names.is_empty() {
        return Ok(());
    }
    conn.execute_batch("SET autoinstall_known_extensions = false")?;
    for name in names {
        if let Err(e) = conn.execute_batch(&format!("LOAD {}", quote_ident(name))) {
            let dir: Option<String> = conn
                .query_row("SELECT current_setting('extension_directory')", [], |r| {
                    r.get(0)
                })
                .ok()
                .filter(|d: &String| !d.is_empty());
            let version: String = conn
                .query_row("SELECT library_version FROM pragma_version()", [], |r| {
                    r.get(0)
                })
                .unwrap_or_else(|_| "?".into());
            return Err(DuckError::Extension {
                name: name.clone(),
                message: format!(
                    "{e}; put `{name}.duckdb_extension` of DuckDB {version} in {} (`INSTALL {name}` in a DuckDB {version} client does, or copy it from PyPI's `duckdb-extension-{name}=={}`)",
                    dir.unwrap_or_else(|| format!("~/.duckdb/extensions/{version}/<platform>/")),
                    version.trim_start_matches('v')
                ),
            });
        }
        if name == "icu" {
            conn.execute_batch("SET TimeZone = 'UTC'")?;
        }
    }
    Ok(())
}

/// Confines what SQL run from now on can reach: files only under `dirs`
/// (the local sink files' directories, and the staging directory of an
/// InfluxDB 3 Parquet answer), no extension loading or network, and the
/// configuration locked. Templates run here with the process's privileges;
/// without this, a template could read `/proc/self/environ` and with it
/// every credential passed by environment.
pub fn confine(conn: &Connection, dirs: &[std::path::PathBuf]) -> Result<(), DuckError> {
    let list: Vec<String> = dirs
        .iter()
        .map(|d| quote_literal(&format!("{}/", d.display())))
        .collect();
    conn.execute_batch(&format!(
        "SET allowed_directories = [{}]; SET enable_external_access = false; SET lock_configuration = true;",
        list.join(", ")
    ))?;
    Ok(())
}

/// `stage_<job>`, quoted.
pub fn staging_table(job: &str) -> String {
    quote_ident(&format!("stage_{job}"))
}

/// `result_<job>`, quoted.
pub fn result_table(job: &str) -> String {
    quote_ident(&format!("result_{job}"))
}

/// (Re)creates the view `stage_<key>` over field `field` of a batch:
/// `time TIMESTAMPTZ, <tags> VARCHAR, value DOUBLE`, only the rows with a
/// value of that field.
pub fn stage_view(
    conn: &Connection,
    key: &str,
    batch: &StagedHandle,
    field: usize,
) -> Result<(), DuckError> {
    conn.execute_batch(&format!(
        "CREATE OR REPLACE VIEW {} AS SELECT * FROM {}({}, {field})",
        staging_table(key),
        staged::FUNCTION,
        batch.id()
    ))?;
    Ok(())
}

/// Receives chunks into `staged` until the channel closes; returns rows
/// staged. Runs on a blocking thread (a Parquet file is read by DuckDB; its
/// error goes back to the source, which reports it).
/// A Parquet file is read holding `gate` shared (see `runner::Shared`).
pub fn write_staging(
    conn: &Connection,
    staged: &Staged,
    mut rx: mpsc::Receiver<StageMsg>,
    gate: &std::sync::RwLock<()>,
) -> u64 {
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            StageMsg::Columns(cols) => staged.push(cols),
            StageMsg::Discard { from_ns, to_ns } => {
                staged.discard(from_ns, to_ns);
            }
            StageMsg::Parquet {
                file,
                tags,
                values,
                reply,
            } => {
                let g = gate.read().unwrap_or_else(|p| p.into_inner());
                let res = read_parquet(conn, &file, &tags, &values)
                    .map(|cols| {
                        let n = cols.len() as u64;
                        staged.push(cols);
                        n
                    })
                    .map_err(|e| e.to_string());
                drop(g);
                let _ = reply.send(res);
            }
        }
    }
    staged.rows()
}

/// The rows of a Parquet file with columns `time`, the value columns
/// `values` and the tags (InfluxDB 3), rows without any value left out.
fn read_parquet(
    conn: &Connection,
    file: &tempfile::NamedTempFile,
    tags: &[String],
    values: &[String],
) -> Result<Columns, duckdb::Error> {
    let mut cols = vec!["epoch_us(time::TIMESTAMPTZ)".to_owned()];
    cols.extend(tags.iter().map(|t| format!("{}::VARCHAR", quote_ident(t))));
    cols.extend(values.iter().map(|v| format!("{}::DOUBLE", quote_ident(v))));
    let any: Vec<String> = values
        .iter()
        .map(|v| format!("{} IS NOT NULL", quote_ident(v)))
        .collect();
    let sql = format!(
        "SELECT {} FROM read_parquet({}) WHERE {}",
        cols.join(", "),
        quote_literal(&file.path().display().to_string()),
        any.join(" OR ")
    );
    let mut out = Columns::with_capacity(tags.len(), values.len(), 0);
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut row_values = Vec::with_capacity(values.len());
    while let Some(r) = rows.next()? {
        let time_us: i64 = r.get(0)?;
        row_values.clear();
        for i in 0..values.len() {
            let v: Option<f64> = r.get(tags.len() + 1 + i)?;
            row_values.push(v.unwrap_or(crate::sources::columns::MISSING));
        }
        out.push_values(time_us.saturating_mul(1000), &row_values);
        for i in 0..tags.len() {
            out.push_tag(i, r.get::<_, Option<String>>(i + 1)?.as_deref());
        }
    }
    Ok(out)
}

/// Rows of `result_<job>`.
pub fn rows(conn: &Connection, job: &str) -> Result<u64, DuckError> {
    let n: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {}", result_table(job)),
        [],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

/// Runs the rendered SQL into `result_<job>`, which must have the columns
/// the sinks replace by.
pub fn transform(conn: &Connection, job: &str, sql: &str) -> Result<(), DuckError> {
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
    Ok(())
}

/// Checks the contract every result row keeps, with one query over the
/// result: `pollutant` is the job's name and `hour_start` lies in the batch.
/// Sinks replace exactly `(job, batch hours)`, so a row outside that key
/// would survive every rerun beside its new copy.
pub fn check_contract(
    conn: &Connection,
    job: &crate::spec::Job,
    batch: crate::plan::Batch,
) -> Result<(), DuckError> {
    let name = quote_literal(&job.name);
    let from = quote_literal(&batch.from.to_string());
    let to = quote_literal(&batch.to.to_string());
    let bad_pollutant = format!("pollutant::VARCHAR IS DISTINCT FROM {name}");
    let in_batch = format!("hour_start >= {from}::TIMESTAMPTZ AND hour_start < {to}::TIMESTAMPTZ");
    let sql = format!(
        "SELECT {bad_pollutant}, duckhour_row::VARCHAR FROM {} duckhour_row \
         WHERE {bad_pollutant} OR hour_start IS NULL OR NOT ({in_batch}) LIMIT 1",
        result_table(&job.name)
    );
    let contract = |column, rule: String, row| DuckError::Contract {
        template: job.template.clone(),
        job: job.name.clone(),
        column,
        rule,
        row,
    };
    let first: Option<(bool, String)> =
        match conn.query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?))) {
            Ok(v) => Some(v),
            Err(duckdb::Error::QueryReturnedNoRows) => None,
            Err(e) => {
                return Err(contract(
                    "hour_start",
                    format!("must be a timestamp comparable with the batch's hours ({e})"),
                    "?".into(),
                ))
            }
        };
    match first {
        None => Ok(()),
        Some((true, row)) => Err(contract(
            "pollutant",
            format!("every row must have {name} (the job's name)"),
            row,
        )),
        Some((false, row)) => Err(contract(
            "hour_start",
            format!(
                "every row must be in the batch [{}, {})",
                batch.from, batch.to
            ),
            row,
        )),
    }
}

/// Drops the result's rows outside `scope` (hours the source returned
/// nothing for): the sinks keep what they hold there, so loading a row
/// for such an hour would duplicate it.
pub fn keep_scope(
    conn: &Connection,
    job: &str,
    scope: &crate::plan::Scope,
) -> Result<(), DuckError> {
    if scope.kept_hours() == 0 {
        return Ok(());
    }
    let keep = scope.predicate("hour_start", |h| {
        format!("{}::TIMESTAMPTZ", quote_literal(&h.to_string()))
    });
    conn.execute_batch(&format!(
        "DELETE FROM {} WHERE NOT {keep}",
        result_table(job)
    ))?;
    Ok(())
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

/// The stations (values of `tags`, joined by `/`) with an hour under 75 %
/// coverage in the job's result, an hour of the batch they have no row in
/// (sent nothing) counting as 0 %, and the stations of `known` (those the
/// sinks held before the batch) with no row at all; `None` when the result
/// has no `coverage` column or lacks a tag (a template of one's own).
pub fn low_coverage(
    conn: &Connection,
    job: &str,
    tags: &[String],
    known: &[String],
) -> Result<Option<Vec<String>>, DuckError> {
    let cols = columns(conn, &format!("result_{job}"))?;
    if tags.is_empty()
        || !cols.iter().any(|c| c == "coverage")
        || tags.iter().any(|t| !cols.contains(t))
    {
        return Ok(None);
    }
    let station: Vec<String> = tags
        .iter()
        .map(|t| format!("coalesce({}::VARCHAR, '')", quote_ident(t)))
        .collect();
    // A station also counts for an hour of the batch it sent nothing in
    // (0 of 60 minutes) while others sent readings: it has no row there.
    let mut stmt = conn.prepare(&format!(
        "WITH r AS (SELECT concat_ws('/', {}) AS s, hour_start, coverage FROM {}), \
              hours AS (SELECT count(DISTINCT hour_start) AS n FROM r) \
         SELECT s FROM r GROUP BY s \
         HAVING bool_or(coverage < 0.75) OR count(DISTINCT hour_start) < (SELECT n FROM hours) \
         ORDER BY s",
        station.join(", "),
        result_table(job)
    ))?;
    let mut names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    if !known.is_empty() {
        let mut stmt = conn.prepare(&format!(
            "SELECT DISTINCT concat_ws('/', {}) FROM {}",
            station.join(", "),
            result_table(job)
        ))?;
        let present = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<std::collections::HashSet<_>, _>>()?;
        names.extend(known.iter().filter(|s| !present.contains(*s)).cloned());
        names.sort();
        names.dedup();
    }
    Ok(Some(names))
}

/// Column names of a table in the in-memory database.
pub fn columns(conn: &Connection, table: &str) -> Result<Vec<String>, DuckError> {
    // `pragma_table_info` looks up this one table; information_schema
    // lists every column of every attached database (~2-10 ms a call).
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?) ORDER BY cid")?;
    let names = stmt
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

/// Drops a batch's staging view (`key`) and its job's result table.
pub fn clear(conn: &Connection, key: &str, job: &str) -> Result<(), DuckError> {
    conn.execute_batch(&format!(
        "DROP VIEW IF EXISTS {}; DROP TABLE IF EXISTS {};",
        staging_table(key),
        result_table(job)
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        let out = stmt
            .query_map([], |r| {
                Ok(format!(
                    "{} {} {}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?.unwrap_or("<null>".into()),
                    r.get::<_, f64>(2)?
                ))
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        out
    }

    /// Chunks, a retry's discard and an InfluxDB 3 Parquet answer all end up
    /// in the one staging view, typed as the templates expect.
    #[test]
    fn staging_view_holds_chunks_discards_and_parquet() {
        let conn = open().unwrap();
        let file = tempfile::Builder::new()
            .suffix(".parquet")
            .tempfile()
            .unwrap();
        conn.execute_batch(&format!(
            "COPY (SELECT * FROM (VALUES \
               (TIMESTAMP '2026-01-01 02:00:00', 'p', 7.5), \
               (TIMESTAMP '2026-01-01 02:01:00', NULL, 8.0), \
               (TIMESTAMP '2026-01-01 02:02:00', 'p', NULL)) t(time, station, value)) \
             TO {} (FORMAT parquet)",
            quote_literal(&file.path().display().to_string())
        ))
        .unwrap();
        let tags = vec!["station".to_owned()];
        let staged = StagedHandle::new(&tags, 1);
        stage_view(&conn, "co", &staged, 0).unwrap();
        let (tx, rx) = mpsc::channel(8);
        let mut first = Columns::new(1);
        for (min, tag, v) in [(0, Some("a"), 1.0), (1, Some("b"), 2.0), (60, None, 3.0)] {
            first.push((1_767_225_600 + min * 60) * 1_000_000_000, v);
            first.push_tag(0, tag);
        }
        tx.blocking_send(StageMsg::Columns(first)).unwrap();
        // The retried sub-query covered the first minute only.
        tx.blocking_send(StageMsg::Discard {
            from_ns: 1_767_225_600_000_000_000,
            to_ns: 1_767_225_660_000_000_000,
        })
        .unwrap();
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.blocking_send(StageMsg::Parquet {
            file,
            tags: tags.clone(),
            values: vec!["value".to_owned()],
            reply,
        })
        .unwrap();
        drop(tx);
        let n = write_staging(&conn, staged.staged(), rx, &Default::default());
        assert_eq!(answer.blocking_recv().unwrap(), Ok(2));
        assert_eq!(n, 4);
        assert_eq!(
            rows(
                &conn,
                "SELECT epoch_us(time) // 1000000, station, value FROM stage_co ORDER BY time"
            ),
            [
                "1767225660 b 2",
                "1767229200 <null> 3",
                "1767232800 p 7.5",
                "1767232860 <null> 8"
            ]
        );
        let types = rows(
            &conn,
            "SELECT 0, string_agg(data_type, ','), 0 FROM information_schema.columns WHERE table_name = 'stage_co'",
        );
        assert_eq!(types, ["0 TIMESTAMP WITH TIME ZONE,VARCHAR,DOUBLE 0"]);
        // Once the batch is loaded (its handle dropped) the view reads nothing.
        drop(staged);
        let err = conn
            .prepare("SELECT count(*) FROM stage_co")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no staged batch"), "{err}");
    }

    fn job(name: &str) -> crate::spec::Job {
        crate::spec::Job {
            name: name.into(),
            measurement: "m".into(),
            field: name.into(),
            tags: vec!["station".into()],
            template: "t.sql".into(),
            table: "hourly".into(),
            params: Default::default(),
        }
    }

    /// One query finds the first row a sink would not replace, and says why.
    #[test]
    fn result_contract_names_column_rule_and_row() {
        let conn = open().unwrap();
        let from = crate::spec::Hour::parse("2026-01-01T00:00:00Z").unwrap();
        let batch = crate::plan::Batch {
            from,
            to: from.plus(2),
        };
        let make = |rows: &str| {
            conn.execute_batch(&format!(
                "CREATE OR REPLACE TABLE result_co AS SELECT * FROM (VALUES {rows}) t(pollutant, station, hour_start)"
            ))
            .unwrap()
        };
        make("('co', 'a', '2026-01-01 00:00:00+00'::TIMESTAMPTZ), ('co', 'b', '2026-01-01 01:00:00+00'::TIMESTAMPTZ)");
        check_contract(&conn, &job("co"), batch).unwrap();
        make("('co', 'a', '2026-01-01 00:00:00+00'::TIMESTAMPTZ), ('CO', 'b', '2026-01-01 01:00:00+00'::TIMESTAMPTZ)");
        let e = check_contract(&conn, &job("co"), batch)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("template `t.sql` of job `co` broke the result contract: column `pollutant`: every row must have 'co' (the job's name); first offending row: {")
                && e.contains("CO")
                && e.ends_with("; no sink was written"),
            "{e}"
        );
        make("('co', 'a', '2026-01-01 02:00:00+00'::TIMESTAMPTZ)");
        let e = check_contract(&conn, &job("co"), batch)
            .unwrap_err()
            .to_string();
        assert!(e.contains("column `hour_start`: every row must be in the batch [2026-01-01T00:00:00Z, 2026-01-01T02:00:00Z)"), "{e}");
        make("('co', 'a', NULL::TIMESTAMPTZ)");
        let e = check_contract(&conn, &job("co"), batch)
            .unwrap_err()
            .to_string();
        assert!(e.contains("column `hour_start`"), "{e}");
    }
}
