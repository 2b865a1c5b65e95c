//! Sources of minute readings: InfluxDB (v1, v2, v3) and line-protocol files.
//!
//! A source reads one job's points for `[from, to)` and streams them, in
//! chunks, to the staging writer (see `duck.rs`) as they are parsed: nothing
//! holds a whole response. A tagged enum, one variant per kind.

pub mod columns;
pub mod influxdb;
pub mod lineproto;

pub use columns::{Columns, CHUNK_ROWS};

use tokio::sync::mpsc;

use crate::plan::Batch;
use crate::secret::SecretSource;
use crate::spec::{Job, SourceConfig};

/// One reading: time in nanoseconds since the epoch, the job's tag values in
/// order (`None` when a point lacks the tag), and a value per field fetched
/// (`columns::MISSING` for a field it lacks). Tag values are shared
/// (`Arc<str>`): a series repeats the same station thousands of times.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub time_ns: i64,
    pub tags: Vec<Option<Tag>>,
    pub values: Vec<f64>,
}

impl Point {
    /// A point of one field.
    pub fn one(time_ns: i64, tags: Vec<Option<Tag>>, value: f64) -> Point {
        Point {
            time_ns,
            tags,
            values: vec![value],
        }
    }
}

pub type Tag = std::sync::Arc<str>;

/// Reuses the previous value of each tag column when it repeats, so rows of
/// one series share one allocation.
#[derive(Debug, Default)]
pub struct TagCache {
    last: Vec<Option<Tag>>,
}

impl TagCache {
    pub fn get(&mut self, col: usize, value: &str) -> Option<Tag> {
        if value.is_empty() {
            return None;
        }
        if self.last.len() <= col {
            self.last.resize(col + 1, None);
        }
        match &self.last[col] {
            Some(t) if &**t == value => Some(t.clone()),
            _ => {
                let t: Tag = value.into();
                self.last[col] = Some(t.clone());
                Some(t)
            }
        }
    }
}

/// What one query reads: a measurement's fields, with the tags. A job's own
/// query reads its field; jobs of a run that read the same measurement and
/// tags over the same hours share one, each reading its own field's column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub measurement: String,
    pub tags: Vec<String>,
    /// Distinct, in the order of the jobs that asked for them.
    pub fields: Vec<String>,
}

impl Fetch {
    /// The query of `jobs`, which must agree on measurement and tags.
    pub fn of<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> Fetch {
        let mut jobs = jobs.into_iter();
        let first = jobs.next().expect("a fetch has a job");
        let mut f = Fetch {
            measurement: first.measurement.clone(),
            tags: first.tags.clone(),
            fields: vec![first.field.clone()],
        };
        for j in jobs {
            debug_assert!(f.shares(j));
            if !f.fields.contains(&j.field) {
                f.fields.push(j.field.clone());
            }
        }
        f
    }

    /// Whether `job` can read from this query.
    pub fn shares(&self, job: &Job) -> bool {
        job.measurement == self.measurement && job.tags == self.tags
    }

    /// The value column of `job`'s field.
    pub fn column(&self, job: &Job) -> usize {
        self.fields
            .iter()
            .position(|f| *f == job.field)
            .expect("the job's field is fetched")
    }
}

/// What a source sends to the staging writer.
#[derive(Debug)]
pub enum StageMsg {
    /// Rows to append, column by column.
    Columns(Columns),
    /// Forget rows with time in `[from_ns, to_ns)`: a sub-query is being retried.
    Discard { from_ns: i64, to_ns: i64 },
    /// Stage a Parquet file with columns `time`, the values and the tags
    /// (InfluxDB 3): `values` names the value columns, in the fetch's order.
    Parquet {
        file: tempfile::NamedTempFile,
        tags: Vec<String>,
        values: Vec<String>,
        reply: tokio::sync::oneshot::Sender<Result<u64, String>>,
    },
}

/// Rows a source may add to a full chunk before it checks `flush_if_full`:
/// it parses a network piece at a time (InfluxDB sends ~3 KB, ~50 rows).
const PIECE_ROWS: usize = 4_096;

/// Room a chunk is made with: full at [`CHUNK_ROWS`], plus a piece's rows,
/// so the last piece never makes a column grow (which doubled it: a chunk
/// then held room for 131,072 rows, and so did every later one).
const CHUNK_ROOM: usize = CHUNK_ROWS + PIECE_ROWS;

/// Points in chunks to the staging writer. Sources parse into the chunk
/// being filled (`columns`); full chunks go to the writer, which appends one
/// while the source parses the next.
pub struct PointSink {
    tx: mpsc::Sender<StageMsg>,
    /// Value columns of every chunk: the fields of the query.
    nfields: usize,
    /// The chunk being filled; made on first use, when the tag count is known.
    cols: Option<Columns>,
    /// Rows handed to the staging writer.
    sent: u64,
}

impl PointSink {
    /// A sink for a query of `nfields` fields.
    pub fn new(tx: mpsc::Sender<StageMsg>, nfields: usize) -> PointSink {
        PointSink {
            tx,
            nfields,
            cols: None,
            sent: 0,
        }
    }

    /// Rows taken so far: handed to staging or waiting in the chunk.
    pub fn rows(&self) -> u64 {
        self.sent + self.cols.as_ref().map_or(0, |c| c.len() as u64)
    }

    /// The chunk being filled, with `ntags` tag columns.
    pub fn columns(&mut self, ntags: usize) -> &mut Columns {
        self.cols
            .get_or_insert_with(|| Columns::with_capacity(ntags, self.nfields, CHUNK_ROOM))
    }

    /// Buffers a point; `flush_if_full` sends full chunks.
    pub fn buffer(&mut self, p: Point) {
        self.columns(p.tags.len()).push_point(&p);
    }

    fn full(&self) -> bool {
        self.cols.as_ref().is_some_and(|c| c.len() >= CHUNK_ROWS)
    }

    /// Takes the chunk's rows to send, counting them as sent. A chunk with
    /// much room left (a batch's last) gives it back first: it is kept
    /// until the batch is transformed.
    fn take(&mut self) -> Option<Columns> {
        let mut chunk = self
            .cols
            .as_mut()
            .filter(|c| !c.is_empty())?
            .take(CHUNK_ROOM);
        if chunk.capacity() - chunk.len() > PIECE_ROWS {
            chunk.shrink_to_fit();
        }
        self.sent += chunk.len() as u64;
        Some(chunk)
    }

    pub async fn flush_if_full(&mut self) -> Result<(), SourceError> {
        if self.full() {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), SourceError> {
        if let Some(chunk) = self.take() {
            self.tx
                .send(StageMsg::Columns(chunk))
                .await
                .map_err(|_| SourceError::StagingClosed)?;
        }
        Ok(())
    }

    /// For blocking sources (files), from a blocking thread.
    pub fn push_blocking(&mut self, p: Point) -> Result<(), SourceError> {
        self.buffer(p);
        if self.full() {
            self.flush_blocking()?;
        }
        Ok(())
    }

    pub fn flush_blocking(&mut self) -> Result<(), SourceError> {
        if let Some(chunk) = self.take() {
            self.tx
                .blocking_send(StageMsg::Columns(chunk))
                .map_err(|_| SourceError::StagingClosed)?;
        }
        Ok(())
    }

    /// Stages a Parquet file through DuckDB; counts its rows.
    pub async fn parquet(
        &mut self,
        file: tempfile::NamedTempFile,
        tags: &[String],
        values: &[String],
    ) -> Result<(), SourceError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(StageMsg::Parquet {
                file,
                tags: tags.to_vec(),
                values: values.to_vec(),
                reply,
            })
            .await
            .map_err(|_| SourceError::StagingClosed)?;
        match rx.await {
            Ok(Ok(n)) => {
                self.sent += n;
                Ok(())
            }
            Ok(Err(m)) => Err(SourceError::Parquet(m)),
            Err(_) => Err(SourceError::StagingClosed),
        }
    }

    /// Drops the rows of `[from_ns, to_ns)`, buffered and staged, before a
    /// retry; `rows_taken` is how many the failed attempt took. Sub-queries
    /// never overlap in time, so every row in the range is the attempt's.
    pub async fn discard(
        &mut self,
        from_ns: i64,
        to_ns: i64,
        rows_taken: u64,
    ) -> Result<(), SourceError> {
        let mut buffered = 0;
        if let Some(c) = self.cols.as_mut() {
            let before = c.len();
            c.discard(from_ns, to_ns);
            buffered = (before - c.len()) as u64;
        }
        self.sent -= rows_taken - buffered;
        self.tx
            .send(StageMsg::Discard { from_ns, to_ns })
            .await
            .map_err(|_| SourceError::StagingClosed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source `{source_name}` ({url}) hours {range}: {kind}")]
    Influx {
        source_name: String,
        url: String,
        range: String,
        kind: influxdb::InfluxErrorKind,
    },
    #[error("source `{source_name}` ({path}): {message}")]
    File {
        source_name: String,
        path: String,
        message: String,
    },
    #[error("source `{0}`: {1}")]
    Resolve(String, crate::secret::ResolveError),
    #[error("unreadable Parquet response: {0}")]
    Parquet(String),
    #[error("staging stopped before the source finished")]
    StagingClosed,
}

/// A source ready to describe queries (dry-run) or to connect (run).
pub enum Source {
    Influx(Box<influxdb::Influx>),
    LineProtocol(lineproto::LineProtocolFile),
}

impl Source {
    /// Builds the source without resolving secrets (nothing is contacted).
    pub fn new(name: &str, cfg: &SourceConfig) -> Source {
        match cfg {
            SourceConfig::Influx(c) => {
                Source::Influx(Box::new(influxdb::Influx::new(name, c.clone())))
            }
            SourceConfig::LineProtocol { path } => {
                Source::LineProtocol(lineproto::LineProtocolFile::new(name, path.clone()))
            }
        }
    }

    /// The exact queries a batch sends, in order.
    pub fn queries(&self, fetch: &Fetch, batch: Batch) -> Vec<String> {
        match self {
            Source::Influx(s) => s.queries(fetch, batch),
            Source::LineProtocol(s) => vec![s.describe(fetch, batch)],
        }
    }

    /// Resolves secrets and checks what can be checked once per run
    /// (for InfluxDB v1: that the database exists).
    pub async fn connect(&mut self, secrets: &dyn SecretSource) -> Result<(), SourceError> {
        match self {
            Source::Influx(s) => s.connect(secrets).await,
            Source::LineProtocol(s) => s.check(),
        }
    }

    /// Resolves secrets without contacting anything (no database check).
    pub fn resolve(&mut self, secrets: &dyn SecretSource) -> Result<(), SourceError> {
        match self {
            Source::Influx(s) => s.resolve(secrets),
            Source::LineProtocol(_) => Ok(()),
        }
    }

    /// The query `estimate` sends, for `dry-run`.
    pub fn estimate_query(&self, fetch: &Fetch, batch: Batch) -> Option<String> {
        match self {
            Source::Influx(s) => s.estimate_query(fetch, batch),
            Source::LineProtocol(_) => None,
        }
    }

    /// About how many rows `fetch` returns for `batch`, from a count the
    /// server makes without sending the points (InfluxDB v1); `None` when
    /// not known. Sizes the first batch of a run (see `plan::cut`).
    pub async fn estimate(&self, fetch: &Fetch, batch: Batch) -> Option<u64> {
        match self {
            Source::Influx(s) => s.estimate(fetch, batch).await,
            Source::LineProtocol(_) => None,
        }
    }

    /// Streams the points of `batch` into `out`; returns the row count
    /// (a row holds a value of at least one of the fetch's fields).
    pub async fn extract(
        &self,
        fetch: &Fetch,
        batch: Batch,
        out: &mut PointSink,
    ) -> Result<u64, SourceError> {
        match self {
            Source::Influx(s) => s.extract(fetch, batch, out).await,
            Source::LineProtocol(s) => s.extract(fetch, batch, out).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_their_room_and_the_last_one_gives_back_the_rest() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut sink = PointSink::new(tx, 1);
        // A piece of 100 rows crosses a full chunk before the check.
        for i in 0..CHUNK_ROWS + 100 {
            let c = sink.columns(1);
            c.push(i as i64 * 1_000, 1.0);
            c.push_tag(0, Some("station-01"));
        }
        assert_eq!(sink.columns(1).capacity(), CHUNK_ROOM);
        sink.flush_blocking().unwrap();
        // The last chunk: 10 rows, with room for 10.
        for i in 0..10 {
            let c = sink.columns(1);
            c.push(i * 1_000, 2.0);
            c.push_tag(0, None);
        }
        assert_eq!(sink.columns(1).capacity(), CHUNK_ROOM);
        sink.flush_blocking().unwrap();
        assert_eq!(sink.rows(), CHUNK_ROWS as u64 + 110);
        let StageMsg::Columns(full) = rx.blocking_recv().unwrap() else {
            panic!("expected a chunk")
        };
        assert_eq!(
            (full.len(), full.capacity()),
            (CHUNK_ROWS + 100, CHUNK_ROOM)
        );
        let StageMsg::Columns(last) = rx.blocking_recv().unwrap() else {
            panic!("expected a chunk")
        };
        assert_eq!((last.len(), last.capacity()), (10, 10));
        assert_eq!(last.tag(0, 9), None);
        assert_eq!(last.values()[9], 2.0);
    }
}
