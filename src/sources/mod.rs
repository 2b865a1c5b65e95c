//! Sources of minute readings: InfluxDB (v1, v2, v3) and line-protocol files.
//!
//! A source reads one job's points for `[from, to)` and streams them, in
//! chunks, to the staging writer (see `duck.rs`) as they are parsed: nothing
//! holds a whole response. A tagged enum, one variant per kind.

pub mod influxdb;
pub mod lineproto;

use tokio::sync::mpsc;

use crate::plan::Batch;
use crate::secret::SecretSource;
use crate::spec::{Job, SourceConfig};

/// One reading: time in nanoseconds since the epoch, the job's tag values in
/// order (`None` when a point lacks the tag), and the value. Tag values are
/// shared (`Arc<str>`): a series repeats the same station thousands of times.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub time_ns: i64,
    pub tags: Vec<Option<Tag>>,
    pub value: f64,
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

/// What a source sends to the staging writer.
#[derive(Debug)]
pub enum StageMsg {
    Rows(Vec<Point>),
    /// Forget rows with time in `[from_ns, to_ns)`: a sub-query is being retried.
    Discard {
        from_ns: i64,
        to_ns: i64,
    },
    /// Stage InfluxDB v1 CSV data rows (`name,tags,time,value,<tags>`, no
    /// header) with DuckDB's own CSV reader: much cheaper than row by row.
    V1Csv {
        rows: Vec<u8>,
        ntags: usize,
        reply: tokio::sync::oneshot::Sender<Result<u64, String>>,
    },
    /// Stage a Parquet file with columns `time`, `value` and the tags (InfluxDB 3).
    Parquet {
        file: tempfile::NamedTempFile,
        tags: Vec<String>,
        reply: tokio::sync::oneshot::Sender<Result<u64, String>>,
    },
}

/// Points in chunks to the staging writer.
pub struct PointSink {
    tx: mpsc::Sender<StageMsg>,
    buf: Vec<Point>,
    pub rows: u64,
    /// Acknowledgements of CSV chunks the writer is still parsing.
    pending: std::collections::VecDeque<tokio::sync::oneshot::Receiver<Result<u64, String>>>,
}

/// CSV chunks in flight: one parsing while the next downloads.
const CSV_IN_FLIGHT: usize = 2;

/// Rows per message to the writer.
pub const CHUNK_ROWS: usize = 8192;

impl PointSink {
    pub fn new(tx: mpsc::Sender<StageMsg>) -> PointSink {
        PointSink {
            tx,
            buf: Vec::with_capacity(CHUNK_ROWS),
            rows: 0,
            pending: Default::default(),
        }
    }

    /// Sends a chunk of v1 CSV data rows; waits for older chunks so that at
    /// most `CSV_IN_FLIGHT` are in flight. A chunk DuckDB rejects is an error
    /// here, in the source that sent it.
    pub async fn v1_csv(&mut self, rows: Vec<u8>, ntags: usize) -> Result<(), CsvError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(StageMsg::V1Csv { rows, ntags, reply })
            .await
            .map_err(|_| CsvError::Closed)?;
        self.pending.push_back(rx);
        while self.pending.len() > CSV_IN_FLIGHT {
            self.ack_oldest().await?;
        }
        Ok(())
    }

    /// Waits until every CSV chunk sent is staged.
    pub async fn csv_done(&mut self) -> Result<(), CsvError> {
        while !self.pending.is_empty() {
            self.ack_oldest().await?;
        }
        Ok(())
    }

    async fn ack_oldest(&mut self) -> Result<(), CsvError> {
        let Some(rx) = self.pending.pop_front() else {
            return Ok(());
        };
        match rx.await {
            Ok(Ok(n)) => {
                self.rows += n;
                Ok(())
            }
            Ok(Err(m)) => Err(CsvError::Rejected(m)),
            Err(_) => Err(CsvError::Closed),
        }
    }

    /// Buffers a point; `flush_if_full` sends full chunks.
    pub fn buffer(&mut self, p: Point) {
        self.buf.push(p);
        self.rows += 1;
    }

    pub async fn flush_if_full(&mut self) -> Result<(), SourceError> {
        if self.buf.len() >= CHUNK_ROWS {
            self.flush().await?;
        }
        Ok(())
    }

    /// For blocking sources (files), from a blocking thread.
    pub fn push_blocking(&mut self, p: Point) -> Result<(), SourceError> {
        self.buf.push(p);
        self.rows += 1;
        if self.buf.len() >= CHUNK_ROWS {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_ROWS));
            self.tx
                .blocking_send(StageMsg::Rows(chunk))
                .map_err(|_| SourceError::StagingClosed)?;
        }
        Ok(())
    }

    pub fn flush_blocking(&mut self) -> Result<(), SourceError> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.tx
                .blocking_send(StageMsg::Rows(chunk))
                .map_err(|_| SourceError::StagingClosed)?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), SourceError> {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_ROWS));
            self.tx
                .send(StageMsg::Rows(chunk))
                .await
                .map_err(|_| SourceError::StagingClosed)?;
        }
        Ok(())
    }

    /// Stages a Parquet file through DuckDB; counts its rows.
    pub async fn parquet(
        &mut self,
        file: tempfile::NamedTempFile,
        tags: &[String],
    ) -> Result<(), SourceError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(StageMsg::Parquet {
                file,
                tags: tags.to_vec(),
                reply,
            })
            .await
            .map_err(|_| SourceError::StagingClosed)?;
        match rx.await {
            Ok(Ok(n)) => {
                self.rows += n;
                Ok(())
            }
            Ok(Err(m)) => Err(SourceError::Parquet(m)),
            Err(_) => Err(SourceError::StagingClosed),
        }
    }

    /// Drops buffered and staged rows of `[from_ns, to_ns)` before a retry.
    pub async fn discard(
        &mut self,
        from_ns: i64,
        to_ns: i64,
        rows_sent: u64,
    ) -> Result<(), SourceError> {
        self.buf
            .retain(|p| p.time_ns < from_ns || p.time_ns >= to_ns);
        self.rows -= rows_sent;
        self.tx
            .send(StageMsg::Discard { from_ns, to_ns })
            .await
            .map_err(|_| SourceError::StagingClosed)
    }
}

/// Why a CSV chunk was not staged.
#[derive(Debug)]
pub enum CsvError {
    Closed,
    Rejected(String),
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
    pub fn queries(&self, job: &Job, batch: Batch) -> Vec<String> {
        match self {
            Source::Influx(s) => s.queries(job, batch),
            Source::LineProtocol(s) => vec![s.describe(job, batch)],
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

    /// Streams the job's points of `batch` into `out`; returns the row count.
    pub async fn extract(
        &self,
        job: &Job,
        batch: Batch,
        out: &mut PointSink,
    ) -> Result<u64, SourceError> {
        match self {
            Source::Influx(s) => s.extract(job, batch, out).await,
            Source::LineProtocol(s) => s.extract(job, batch, out).await,
        }
    }
}
