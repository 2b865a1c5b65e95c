//! A batch's staged rows: kept in Rust as the source parsed them, and read
//! by the transform through the table function `duckhour_staged(id)`, so
//! DuckDB never appends them to a table of its own (no column statistics,
//! no string storage, and nothing of the batch left in the database once
//! it is loaded). The registry maps ids to batches; a `StagedHandle` owns
//! its entry and removes it when dropped.
//!
//! A batch fetched for several jobs holds a value column per field;
//! `duckhour_staged(id, k)` reads field `k`'s column and leaves out the rows
//! that lack it, so each job sees exactly the rows its own query would
//! have returned.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use duckdb::core::{DataChunkHandle, Inserter, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{BindInfo, InitInfo, TableFunctionInfo, VTab};
use duckdb::Connection;

use crate::sources::Columns;

/// The table function's name.
pub const FUNCTION: &str = "duckhour_staged";

/// One batch's rows, chunk by chunk, and its tag names (column names).
#[derive(Debug)]
pub struct Staged {
    tags: Vec<String>,
    nfields: usize,
    chunks: Mutex<Vec<Columns>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Staged {
    pub fn push(&self, cols: Columns) {
        if !cols.is_empty() {
            lock(&self.chunks).push(cols);
        }
    }

    /// Drops rows with time in `[from_ns, to_ns)`; returns how many.
    pub fn discard(&self, from_ns: i64, to_ns: i64) -> u64 {
        let mut dropped = 0;
        for c in lock(&self.chunks).iter_mut() {
            let before = c.len();
            c.discard(from_ns, to_ns);
            dropped += (before - c.len()) as u64;
        }
        dropped
    }

    /// Rows (a row has a value of at least one field).
    pub fn rows(&self) -> u64 {
        lock(&self.chunks).iter().map(|c| c.len() as u64).sum()
    }

    /// Rows with a value of field `field` (what that job's own query
    /// returns), and the UTC hours that hold at least one of them: an hour
    /// the source returned nothing for is left in the sinks as it is.
    pub fn field_rows(&self, field: usize) -> (u64, std::collections::BTreeSet<crate::spec::Hour>) {
        const HOUR_US: i64 = 3_600_000_000;
        let mut hours = std::collections::BTreeSet::new();
        let mut rows = 0;
        for c in lock(&self.chunks).iter() {
            let mut last = None;
            for (&t, v) in c.times().iter().zip(c.field(field)) {
                if v.is_nan() {
                    continue;
                }
                rows += 1;
                let h = t.div_euclid(HOUR_US);
                if last != Some(h) {
                    last = Some(h);
                    if let Some(t) = chrono::DateTime::from_timestamp(h * 3600, 0) {
                        hours.insert(crate::spec::Hour(t));
                    }
                }
            }
        }
        (rows, hours)
    }
}

static REGISTRY: Mutex<BTreeMap<u64, Arc<Staged>>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A registered batch; dropping it unregisters the batch (a query already
/// reading it keeps its own reference).
#[derive(Debug)]
pub struct StagedHandle {
    id: u64,
    staged: Arc<Staged>,
}

impl StagedHandle {
    /// A batch of `nfields` value columns.
    pub fn new(tags: &[String], nfields: usize) -> StagedHandle {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let staged = Arc::new(Staged {
            tags: tags.to_vec(),
            nfields,
            chunks: Mutex::new(Vec::new()),
        });
        lock(&REGISTRY).insert(id, staged.clone());
        StagedHandle { id, staged }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn staged(&self) -> &Staged {
        &self.staged
    }
}

impl Drop for StagedHandle {
    fn drop(&mut self) {
        lock(&REGISTRY).remove(&self.id);
    }
}

/// Registers `duckhour_staged(id, field)` with the database of `conn`.
pub fn register(conn: &Connection) -> duckdb::Result<()> {
    conn.register_table_function::<StagedScan>(FUNCTION)
}

/// The scan: `time TIMESTAMPTZ, <tags> VARCHAR, value DOUBLE`.
struct StagedScan;

/// What a scan reads: the batch, and which field's column.
struct Bound {
    staged: Arc<Staged>,
    field: usize,
}

/// Where the scan is: chunk, and row within it.
#[derive(Default)]
struct Cursor {
    chunk: usize,
    row: usize,
}

impl VTab for StagedScan {
    type BindData = Bound;
    type InitData = Mutex<Cursor>;

    fn bind(bind: &BindInfo) -> Result<Self::BindData, Box<dyn Error>> {
        let id = bind.get_parameter(0).to_int64();
        let staged = u64::try_from(id)
            .ok()
            .and_then(|id| lock(&REGISTRY).get(&id).cloned())
            .ok_or_else(|| format!("no staged batch {id} (it was loaded or abandoned)"))?;
        let field = bind.get_parameter(1).to_int64();
        let field = usize::try_from(field)
            .ok()
            .filter(|f| *f < staged.nfields)
            .ok_or_else(|| format!("staged batch {id} has no field {field}"))?;
        bind.add_result_column("time", LogicalTypeHandle::from(LogicalTypeId::TimestampTZ));
        for t in &staged.tags {
            bind.add_result_column(t, LogicalTypeHandle::from(LogicalTypeId::Varchar));
        }
        bind.add_result_column("value", LogicalTypeHandle::from(LogicalTypeId::Double));
        Ok(Bound { staged, field })
    }

    fn init(_: &InitInfo) -> Result<Self::InitData, Box<dyn Error>> {
        Ok(Mutex::new(Cursor::default()))
    }

    fn func(
        info: &TableFunctionInfo<Self>,
        output: &mut DataChunkHandle,
    ) -> Result<(), Box<dyn Error>> {
        let Bound { staged, field } = info.get_bind_data();
        let mut at = lock(info.get_init_data());
        let chunks = lock(&staged.chunks);
        let capacity = output.flat_vector(0).capacity();
        // The chunk and rows to emit: a run of rows for one field; with
        // several, the next rows that have this field. An empty answer ends
        // the scan, so chunks without any are skipped.
        let mut picked = Vec::new();
        let (c, run) = loop {
            while at.chunk < chunks.len() && at.row >= chunks[at.chunk].len() {
                at.chunk += 1;
                at.row = 0;
            }
            let Some(c) = chunks.get(at.chunk) else {
                output.set_len(0);
                return Ok(());
            };
            if staged.nfields == 1 {
                let n = (c.len() - at.row).min(capacity);
                let run = at.row..at.row + n;
                at.row += n;
                break (c, Some(run));
            }
            let values = c.field(*field);
            while at.row < c.len() && picked.len() < capacity {
                if !values[at.row].is_nan() {
                    picked.push(at.row);
                }
                at.row += 1;
            }
            if !picked.is_empty() {
                break (c, None);
            }
        };
        let n = run.as_ref().map_or(picked.len(), |r| r.len());
        let values = c.field(*field);
        let mut time = output.flat_vector(0);
        // SAFETY: column 0 was declared TIMESTAMPTZ (stored as i64
        // microseconds), `n` is within the vector's capacity, and `time` is
        // the only reference to its storage.
        let t = unsafe { time.as_mut_slice_with_len::<i64>(n) };
        match &run {
            Some(r) => t.copy_from_slice(&c.times()[r.clone()]),
            None => t
                .iter_mut()
                .zip(&picked)
                .for_each(|(o, &row)| *o = c.times()[row]),
        }
        for col in 0..staged.tags.len() {
            let mut v = output.flat_vector(col + 1);
            let mut put = |i: usize, row: usize| match c.tag(col, row) {
                Some(s) => v.insert(i, s),
                None => v.set_null(i),
            };
            match &run {
                Some(r) => r.clone().enumerate().for_each(|(i, row)| put(i, row)),
                None => picked.iter().enumerate().for_each(|(i, &row)| put(i, row)),
            }
        }
        let mut value = output.flat_vector(staged.tags.len() + 1);
        // SAFETY: the last column was declared DOUBLE (f64), `n` is within
        // the vector's capacity, and `value` is the only reference to it.
        let out = unsafe { value.as_mut_slice_with_len::<f64>(n) };
        match &run {
            Some(r) => out.copy_from_slice(&values[r.clone()]),
            None => out
                .iter_mut()
                .zip(&picked)
                .for_each(|(o, &row)| *o = values[row]),
        }
        output.set_len(n);
        Ok(())
    }

    fn parameters() -> Option<Vec<LogicalTypeHandle>> {
        Some(vec![
            LogicalTypeHandle::from(LogicalTypeId::Bigint),
            LogicalTypeHandle::from(LogicalTypeId::Bigint),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(rows: &[(i64, Option<&str>, f64)]) -> Columns {
        let mut c = Columns::new(1);
        for (t, tag, v) in rows {
            c.push(t * 1_000_000_000, *v);
            c.push_tag(0, *tag);
        }
        c
    }

    #[test]
    fn scans_every_chunk_with_nulls_and_discards() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        let h = StagedHandle::new(&["station".to_owned()], 1);
        h.staged()
            .push(chunk(&[(60, Some("a"), 1.5), (120, None, 2.5)]));
        h.staged().push(Columns::new(1));
        // More rows than one DuckDB vector, and a long string (not inlined).
        let long = "station-with-a-name-longer-than-twelve-bytes";
        let big: Vec<(i64, Option<&str>, f64)> = (0..5000)
            .map(|i| (3600 + i, Some(long), i as f64))
            .collect();
        h.staged().push(chunk(&big));
        assert_eq!(h.staged().discard(3_600_000_000_000, 3_610_000_000_000), 10);
        assert_eq!(h.staged().rows(), 2 + 4990);
        let sql = format!(
            "SELECT count(*), count(station), sum(value), min(epoch_us(time)), max(epoch_us(time)), \
             count(DISTINCT station), max(length(station)) FROM {FUNCTION}({}, 0)",
            h.id()
        );
        let got: (i64, i64, f64, i64, i64, i64, i64) = conn
            .query_row(&sql, [], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .unwrap();
        let sum_big: f64 = (10..5000).map(|i| i as f64).sum();
        assert_eq!(
            got,
            (
                4992,
                4991,
                4.0 + sum_big,
                60_000_000,
                8_599_000_000,
                2,
                long.len() as i64
            )
        );
        let (ty, station): (String, Option<String>) = conn
            .query_row(
                &format!(
                    "SELECT typeof(time), station FROM {FUNCTION}({}, 0) WHERE value = 2.5",
                    h.id()
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((ty.as_str(), station), ("TIMESTAMP WITH TIME ZONE", None));
    }

    /// A batch fetched for two jobs: each field's scan returns exactly the
    /// rows that have it, across chunks (one with none of field 1) and
    /// across DuckDB vectors.
    #[test]
    fn a_shared_batch_scans_each_field_without_the_rows_that_lack_it() {
        use crate::sources::columns::MISSING;
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        let h = StagedHandle::new(&["station".to_owned()], 2);
        let mut a = Columns::with_capacity(1, 2, 0);
        // 5,000 rows: field 0 on every row, field 1 on every third.
        for i in 0..5000i64 {
            let second = if i % 3 == 0 { i as f64 } else { MISSING };
            a.push_values(i * 60_000_000_000, &[1.0, second]);
            a.push_tag(0, Some(if i % 2 == 0 { "a" } else { "b" }));
        }
        let mut b = Columns::with_capacity(1, 2, 0);
        b.push_values(400_000 * 60_000_000_000, &[2.0, MISSING]);
        b.push_tag(0, None);
        let mut c = Columns::with_capacity(1, 2, 0);
        c.push_values(500_000 * 60_000_000_000, &[MISSING, 0.5]);
        c.push_tag(0, Some("c"));
        h.staged().push(a);
        h.staged().push(b);
        h.staged().push(c);
        let scan = |field: usize| -> (i64, f64, i64, i64) {
            conn.query_row(
                &format!(
                    "SELECT count(*), sum(value), count(station), max(epoch_us(time)) FROM {FUNCTION}({}, {field})",
                    h.id()
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap()
        };
        assert_eq!(scan(0), (5001, 5002.0, 5000, 400_000 * 60_000_000));
        let thirds: f64 = (0..5000).filter(|i| i % 3 == 0).map(|i| i as f64).sum();
        assert_eq!(
            scan(1),
            (1667 + 1, thirds + 0.5, 1668, 500_000 * 60_000_000)
        );
        assert_eq!(h.staged().field_rows(0).0, 5001);
        assert_eq!(h.staged().field_rows(1).0, 1668);
        assert_eq!(h.staged().rows(), 5002);
        let hours = |f: usize| h.staged().field_rows(f).1.len();
        // 5,000 minutes span 84 hours; the lone rows add one hour each.
        assert_eq!((hours(0), hours(1)), (84 + 1, 84 + 1));
        let err = conn
            .query_row(
                &format!("SELECT count(*) FROM {FUNCTION}({}, 2)", h.id()),
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no field 2"), "{err}");
    }

    #[test]
    fn a_dropped_handle_is_gone() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        let h = StagedHandle::new(&[], 1);
        let id = h.id();
        drop(h);
        let err = conn
            .query_row(
                &format!("SELECT count(*) FROM {FUNCTION}({id}, 0)"),
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("no staged batch {id}")), "{err}");
    }
}
