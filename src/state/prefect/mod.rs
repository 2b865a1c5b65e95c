//! The Prefect store: one `PipelineStateBlock` document per job, the same
//! block the Python flows keep, and a global concurrency limit per job for
//! the lease.
//!
//! The document's data is `{last_processed_hour, pipeline_version, metadata}`.
//! `last_processed_hour` is RFC3339 UTC (`2026-11-27T13:00:00Z`); naive
//! values written by Python are read as UTC. `pipeline_version` is kept as
//! found (`v1.0.0`, the class default, for new documents). duckhour owns
//! these keys of `metadata` and leaves any other key as it found it:
//! - `sinks`: per sink its newest loaded hour, the rows of the last load,
//!   when and by which run, and the last failure;
//! - `ledger`: per sink the hours it has, as merged `[from, to)` ranges (a
//!   year of hourly loads is one range);
//! - `empty_at_source`: hours whose latest load found nothing at the source
//!   (the sinks kept what they held), as merged ranges;
//! - `runs` (the last [`KEEP_RUNS`]) and `last_run`;
//! - `lease`: who holds (or last held) the job's lease (see [`lease`]);
//! - `progress`: each sink's position (the newest hour up to which it holds
//!   every hour) and, while it fails, its backoff; written with the
//!   checkpoint they go with (see [`super::progress`]);
//! - `pending` (a model's block): hours loaded whose products are not yet
//!   recomputed, as merged ranges; `owed`: per sink that was down, the
//!   pending hours whose products it still lacks.
//!
//! Prefect has no compare-and-swap on documents: the lease makes this
//! process the job's only writer, so a run reads the documents of the jobs
//! and models it has leased once, in one request ([`PrefectState::load`]),
//! and then writes each whole from the copy kept here. Writes are few: the
//! ledger, the checkpoint and the holder are written together at most
//! every [`FLUSH_EVERY`] during a run, and at its end with the run's record
//! ([`PrefectState::record_run`]); only a model's pending hours are written
//! at once, since they must be durable before any sink changes. A run
//! killed between writes leaves an older checkpoint: its hours are redone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::{LedgerEntry, Owed, Progress, RunRecord, StateError};

mod lease;
mod ranges;

use crate::prefect::{block_name, BlockDoc, Client, ErrorKind, SchemaIds, STATE_SLUG};
use crate::secret::Prefetched;
use crate::spec::Hour;
use crate::time::Ranges;
pub use lease::PrefectLease;
pub use ranges::parse_datetime;
use ranges::{hour_text, read_ranges, time_text, write_ranges};

/// Runs kept in `metadata.runs`.
pub const KEEP_RUNS: usize = 20;
/// A lease lasts this long unless renewed (`state.lease`); a crashed runner
/// blocks the job for at most this.
pub const LEASE_TTL: Duration = Duration::from_secs(120);

/// How long a change to a document may wait for the next write during a
/// run (the work a killed run may have to redo).
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// When a change to a document is written.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Write {
    /// Now: it must be durable before the caller goes on.
    Now,
    /// With the next write, or now if a change has waited [`FLUSH_EVERY`].
    Soon,
}

/// A document as this run knows it.
#[derive(Debug, Default)]
struct Cached {
    /// Its id once it exists on the server.
    id: Option<String>,
    schema: Option<SchemaIds>,
    data: Map<String, Value>,
    /// Since when it has changes not yet written.
    dirty_since: Option<Instant>,
}

impl Cached {
    fn of(doc: Option<BlockDoc>) -> Cached {
        match doc {
            None => Cached::default(),
            Some(d) => Cached {
                id: Some(d.id),
                schema: d.schema,
                data: match d.data {
                    Value::Object(m) => m,
                    _ => Map::new(),
                },
                dirty_since: None,
            },
        }
    }
}

#[derive(Debug)]
pub struct PrefectState {
    client: Client,
    block_name: String,
    lease_ttl: Duration,
    ids: tokio::sync::OnceCell<SchemaIds>,
    /// The documents read under a lease in this run (see [`Self::load`]),
    /// with the changes not yet written.
    docs: tokio::sync::Mutex<HashMap<String, Cached>>,
    /// The holder of each lease this run took, written into the
    /// document's `metadata.lease` with its next write.
    holders: std::sync::Mutex<HashMap<String, Value>>,
}

fn object<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = m.entry(key).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("object")
}

impl PrefectState {
    pub fn new(client: Client, block_name: String, lease_ttl: Duration) -> PrefectState {
        PrefectState {
            client,
            block_name,
            lease_ttl,
            ids: tokio::sync::OnceCell::new(),
            docs: tokio::sync::Mutex::new(HashMap::new()),
            holders: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The document name of a job.
    pub fn name(&self, pipeline: &str, job: &str) -> String {
        block_name(&self.block_name, pipeline, job)
    }

    fn what(name: &str) -> String {
        format!("block `{name}`")
    }

    async fn fetch(&self, name: &str) -> Result<Option<BlockDoc>, StateError> {
        Ok(self
            .client
            .read_block(STATE_SLUG, name, &Self::what(name))
            .await?)
    }

    /// Reads the documents of `keys` (jobs or models whose leases this
    /// run holds) in one request; later reads and writes of this run use
    /// the copy kept here. Read before the lease is held, a document could
    /// be older than the last holder's final write.
    pub async fn load(&self, pipeline: &str, keys: &[String]) -> Result<(), StateError> {
        let mut docs = self.docs.lock().await;
        let (names, keys): (Vec<String>, Vec<&String>) = keys
            .iter()
            .map(|k| (self.name(pipeline, k), k))
            .filter(|(n, _)| !docs.contains_key(n))
            .unzip();
        if names.is_empty() {
            return Ok(());
        }
        let what = format!("state blocks of pipeline `{pipeline}`");
        let mut found = self.client.read_blocks(STATE_SLUG, &names, &what).await?;
        let mut missing = Vec::new();
        let mut existing = None;
        for (n, key) in names.into_iter().zip(keys) {
            let doc = found.remove(&n);
            match &doc {
                None => missing.push(key),
                Some(d) => {
                    existing.get_or_insert((n.clone(), d.id.clone()));
                }
            }
            docs.insert(n, Cached::of(doc));
        }
        drop(docs);
        // A first run makes one of its blocks now, before any data work: a
        // key whose role may not create blocks fails here, not after the
        // loads. The others are made by their first write (one request
        // each, as an update would be). With every block there, an empty
        // update of one proves the role may update them, as the run will.
        match (missing.first(), existing) {
            (Some(key), _) => self.modify(pipeline, key, Write::Now, |_| {}).await?,
            (None, Some((name, id))) => self.client.touch_block(&id, &Self::what(&name)).await?,
            (None, None) => {}
        }
        Ok(())
    }

    /// A document's data: this run's copy if [`Self::load`]ed, else read.
    async fn data(&self, name: &str) -> Result<Option<Value>, StateError> {
        if let Some(c) = self.docs.lock().await.get(name) {
            let known = c.id.is_some() || c.dirty_since.is_some();
            return Ok(known.then(|| Value::Object(c.data.clone())));
        }
        Ok(self.fetch(name).await?.map(|d| d.data))
    }

    /// The job's checkpoint.
    pub async fn checkpoint(&self, pipeline: &str, job: &str) -> Result<Option<Hour>, StateError> {
        let name = self.name(pipeline, job);
        let data = self.data(&name).await?;
        match data.as_ref().and_then(|d| d.get("last_processed_hour")) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let bad = || StateError::Corrupt {
                    place: format!("prefect block `{name}`"),
                    message: format!("`last_processed_hour` is not an hour: {v}"),
                };
                let t = v.as_str().and_then(parse_datetime).ok_or_else(bad)?;
                Ok(Some(Hour::exact(t).ok_or_else(bad)?))
            }
        }
    }

    /// A model's pending hours.
    pub async fn pending(&self, pipeline: &str, key: &str) -> Result<Ranges<Hour>, StateError> {
        let data = self.data(&self.name(pipeline, key)).await?;
        Ok(read_ranges(
            data.as_ref().and_then(|d| d.pointer("/metadata/pending")),
        ))
    }

    /// Written at once: they must be durable before any sink changes.
    pub async fn set_pending(
        &self,
        pipeline: &str,
        key: &str,
        ranges: &Ranges<Hour>,
    ) -> Result<(), StateError> {
        let v = write_ranges(ranges);
        let when = if ranges.is_empty() {
            Write::Soon
        } else {
            Write::Now
        };
        self.modify(pipeline, key, when, |d| {
            object(d, "metadata").insert("pending".into(), v);
        })
        .await
    }

    /// The job's per-sink progress (`metadata.progress`).
    pub async fn progress(&self, pipeline: &str, job: &str) -> Result<Progress, StateError> {
        let name = self.name(pipeline, job);
        let data = self.data(&name).await?;
        match data.as_ref().and_then(|d| d.pointer("/metadata/progress")) {
            None | Some(Value::Null) => Ok(Progress::default()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| StateError::Corrupt {
                place: format!("prefect block `{name}`"),
                message: format!("`metadata.progress`: {e}"),
            }),
        }
    }

    /// With the next write, like the checkpoint it goes with.
    pub async fn set_progress(
        &self,
        pipeline: &str,
        job: &str,
        p: &Progress,
    ) -> Result<(), StateError> {
        let v = serde_json::to_value(p).expect("progress serializes");
        self.modify(pipeline, job, Write::Soon, |d| {
            object(d, "metadata").insert("progress".into(), v);
        })
        .await
    }

    /// A model's keys owed to sinks that were down (`metadata.owed`).
    pub async fn owed(&self, pipeline: &str, key: &str) -> Result<Owed, StateError> {
        let data = self.data(&self.name(pipeline, key)).await?;
        let Some(Value::Object(m)) = data.as_ref().and_then(|d| d.pointer("/metadata/owed")) else {
            return Ok(Owed::new());
        };
        Ok(m.iter()
            .map(|(s, v)| (s.clone(), read_ranges(Some(v))))
            .filter(|(_, r)| !r.is_empty())
            .collect())
    }

    /// Written at once: durable before the model's pending hours are cleared.
    pub async fn set_owed(&self, pipeline: &str, key: &str, owed: &Owed) -> Result<(), StateError> {
        let v: Map<String, Value> = owed
            .iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(s, r)| (s.clone(), write_ranges(r)))
            .collect();
        self.modify(pipeline, key, Write::Now, |d| {
            let meta = object(d, "metadata");
            if v.is_empty() {
                meta.remove("owed");
            } else {
                meta.insert("owed".into(), Value::Object(v));
            }
        })
        .await
    }

    /// Applies `f` to the document's data and writes the whole of it when
    /// `when` says so.
    async fn modify(
        &self,
        pipeline: &str,
        job: &str,
        when: Write,
        f: impl FnOnce(&mut Map<String, Value>),
    ) -> Result<(), StateError> {
        let name = self.name(pipeline, job);
        let what = Self::what(&name);
        let mut docs = self.docs.lock().await;
        if !docs.contains_key(&name) {
            let doc = self.fetch(&name).await?;
            docs.insert(name.clone(), Cached::of(doc));
        }
        let c = docs.get_mut(&name).expect("inserted");
        let data = &mut c.data;
        data.entry("last_processed_hour").or_insert(Value::Null);
        data.entry("pipeline_version")
            .or_insert_with(|| json!("v1.0.0"));
        let meta = object(data, "metadata");
        meta.insert(
            "writer".into(),
            json!(concat!("duckhour ", env!("CARGO_PKG_VERSION"))),
        );
        meta.insert("pipeline".into(), json!(pipeline));
        meta.insert("job".into(), json!(job));
        f(data);
        let due = when == Write::Now || c.dirty_since.is_some_and(|t| t.elapsed() >= FLUSH_EVERY);
        if !due {
            c.dirty_since.get_or_insert_with(Instant::now);
            return Ok(());
        }
        if let Some(h) = self
            .holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
        {
            object(&mut c.data, "metadata").insert("lease".into(), h.clone());
        }
        object(&mut c.data, "metadata").insert("updated_at".into(), json!(time_text(Utc::now())));
        let data = Value::Object(c.data.clone());
        self.write_doc(&name, &what, c, data).await
    }

    /// Writes document `name` with `data`: an update of the one cached in
    /// `c`, or a create; a document deleted meanwhile is made anew, one
    /// created meanwhile (a retried create that had landed) updated.
    async fn write_doc(
        &self,
        name: &str,
        what: &str,
        c: &mut Cached,
        data: Value,
    ) -> Result<(), StateError> {
        let ids = match &c.schema {
            Some(ids) if c.id.is_some() => ids.clone(),
            _ => self
                .ids
                .get_or_try_init(|| self.client.ensure_state_schema())
                .await?
                .clone(),
        };
        let written = match c.id.clone() {
            Some(id) => match self.client.update_block(&id, &ids, &data, what).await {
                Err(e) if e.kind == ErrorKind::NotFound => {
                    // Deleted under us: write it anew.
                    let ids = self
                        .ids
                        .get_or_try_init(|| self.client.ensure_state_schema())
                        .await?;
                    self.client.create_block(name, ids, &data, what).await?
                }
                other => {
                    other?;
                    BlockDoc {
                        id,
                        data,
                        schema: Some(ids),
                    }
                }
            },
            None => match self.client.create_block(name, &ids, &data, what).await {
                Err(e) if matches!(e.kind, ErrorKind::Conflict(_)) => {
                    // Created meanwhile (e.g. a retried create that had landed).
                    let d = self.fetch(name).await?.ok_or(e)?;
                    self.client.update_block(&d.id, &ids, &data, what).await?;
                    BlockDoc {
                        id: d.id,
                        data,
                        schema: Some(ids),
                    }
                }
                other => other?,
            },
        };
        c.id = Some(written.id);
        c.schema = written.schema;
        c.dirty_since = None;
        Ok(())
    }

    pub async fn set_checkpoint(
        &self,
        pipeline: &str,
        job: &str,
        hour: Hour,
    ) -> Result<(), StateError> {
        self.modify(pipeline, job, Write::Soon, |d| {
            d.insert("last_processed_hour".into(), json!(hour_text(hour)));
        })
        .await
    }

    pub async fn append_ledger(
        &self,
        pipeline: &str,
        job: &str,
        entries: &[LedgerEntry],
    ) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.modify(pipeline, job, Write::Soon, |d| {
            let meta = object(d, "metadata");
            // Hours whose latest load found nothing at the source (the
            // sinks kept what they held), as merged ranges.
            let mut empty = read_ranges(meta.get("empty_at_source"));
            for e in entries.iter().filter(|e| e.ok) {
                if e.empty {
                    empty.add(e.hour, e.hour.plus(1));
                } else {
                    empty.remove_point(e.hour);
                }
            }
            if empty.is_empty() {
                meta.remove("empty_at_source");
            } else {
                meta.insert("empty_at_source".into(), write_ranges(&empty));
            }
            let mut by_sink: HashMap<&str, Vec<&LedgerEntry>> = HashMap::new();
            for e in entries {
                by_sink.entry(e.sink.as_str()).or_default().push(e);
            }
            for (sink, es) in by_sink {
                let ok: Vec<&&LedgerEntry> = es.iter().filter(|e| e.ok).collect();
                let failed: Vec<&&LedgerEntry> = es.iter().filter(|e| !e.ok).collect();
                let ledger = object(meta, "ledger");
                let mut ranges = read_ranges(ledger.get(sink));
                ranges.extend(&Ranges::of_points(ok.iter().map(|e| e.hour)));
                ledger.insert(sink.to_owned(), write_ranges(&ranges));
                let s = object(object(meta, "sinks"), sink);
                if let Some(last) = ok.iter().map(|e| e.hour).max() {
                    s.insert("last_hour".into(), json!(hour_text(last)));
                    s.insert("rows".into(), json!(ok.iter().map(|e| e.rows).sum::<u64>()));
                    s.insert("at".into(), json!(time_text(ok[0].at)));
                    s.insert("run_id".into(), json!(ok[0].run_id));
                }
                if let (Some(first), Some(last)) = (
                    failed.iter().map(|e| e.hour).min(),
                    failed.iter().map(|e| e.hour).max(),
                ) {
                    s.insert(
                        "last_failure".into(),
                        json!({
                            "from": hour_text(first),
                            "to": hour_text(last.plus(1)),
                            "at": time_text(failed[0].at),
                            "run_id": failed[0].run_id,
                        }),
                    );
                }
            }
        })
        .await
    }

    /// The hours each sink has, one `ok` entry per hour (row counts are kept per sink's last load only).
    pub async fn ledger(&self, pipeline: &str, job: &str) -> Result<Vec<LedgerEntry>, StateError> {
        let Some(data) = self.data(&self.name(pipeline, job)).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let empty = read_ranges(data.pointer("/metadata/empty_at_source"));
        if let Some(Value::Object(ledger)) = data.pointer("/metadata/ledger") {
            for (sink, v) in ledger {
                for h in read_ranges(Some(v)).points() {
                    out.push(LedgerEntry {
                        hour: h,
                        sink: sink.clone(),
                        rows: 0,
                        ok: true,
                        empty: empty.contains(h),
                        at: DateTime::<Utc>::UNIX_EPOCH,
                        run_id: String::new(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The job's (or model's) last write of the run, under its lease: with
    /// every change still unwritten, and its holder marked as ended.
    pub async fn record_run(
        &self,
        pipeline: &str,
        job: &str,
        run: &RunRecord,
    ) -> Result<(), StateError> {
        let rec = serde_json::to_value(run).expect("run serializes");
        if let Some(h) = self
            .holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&self.name(pipeline, job))
            .and_then(Value::as_object_mut)
        {
            h.insert("ended".into(), json!(time_text(run.finished)));
        }
        self.modify(pipeline, job, Write::Now, |d| {
            let meta = object(d, "metadata");
            let runs = meta.entry("runs").or_insert_with(|| json!([]));
            if !runs.is_array() {
                *runs = json!([]);
            }
            let list = runs.as_array_mut().expect("array");
            list.push(rec.clone());
            let skip = list.len().saturating_sub(KEEP_RUNS);
            list.drain(..skip);
            meta.insert("last_run".into(), rec);
        })
        .await
    }

    pub async fn runs(
        &self,
        pipeline: &str,
        job: &str,
        last: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        let Some(data) = self.data(&self.name(pipeline, job)).await? else {
            return Ok(Vec::new());
        };
        let mut all: Vec<RunRecord> = match data.pointer("/metadata/runs") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| serde_json::from_value(v.clone()).ok())
                .collect(),
            _ => Vec::new(),
        };
        let skip = all.len().saturating_sub(last);
        Ok(all.split_off(skip))
    }

    /// Fetches the named secrets from `Secret` / `gcp-credentials` blocks;
    /// names without a block fall back to the environment later.
    pub async fn secrets(&self, names: &[String]) -> Result<Prefetched, StateError> {
        let mut found = HashMap::new();
        for n in names {
            if let Some(s) = self.client.secret(n).await? {
                found.insert(n.clone(), s);
            }
        }
        Ok(Prefetched {
            found,
            backend: "Prefect blocks `secret`/`gcp-credentials`".into(),
        })
    }
}
