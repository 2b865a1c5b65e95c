//! The embedded default store: plain files under one directory.
//!
//! `<dir>/<pipeline>/<job>/` holds `checkpoint.json` (replaced atomically:
//! write, fsync, rename, fsync the directory), `ledger.jsonl` and
//! `progress.json` (per-sink positions and failures, see [`super::progress`]),
//! a model's `pending.json` and `owed.json` (likewise), `ledger.jsonl` and
//! `runs.jsonl` (appended and fsynced; a torn last line from a crash is
//! ignored), and `lease` (an OS file lock, released by the kernel when the
//! process dies, with the holder's identity inside). Files, not a database,
//! so several processes can work on different jobs of one directory at once.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use std::collections::BTreeMap;

use super::{Holder, LedgerEntry, Owed, Progress, RunRecord, StateError};
use crate::spec::Hour;
use crate::time::Ranges;

#[derive(Debug, Clone)]
pub struct LocalState {
    dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointFile {
    last_processed_hour: Hour,
    updated_at: chrono::DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PendingFile {
    pending: Vec<(Hour, Hour)>,
    updated_at: chrono::DateTime<Utc>,
}

/// A held lease: the open, locked file.
#[derive(Debug)]
pub struct LocalLease {
    _file: File,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> StateError {
    StateError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl LocalState {
    pub fn new(dir: PathBuf) -> LocalState {
        LocalState { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn job_dir(&self, pipeline: &str, job: &str) -> PathBuf {
        self.dir.join(pipeline).join(job)
    }

    fn ensure_dir(&self, pipeline: &str, job: &str) -> Result<PathBuf, StateError> {
        let d = self.job_dir(pipeline, job);
        std::fs::create_dir_all(&d).map_err(|e| io_err(&d, e))?;
        Ok(d)
    }

    pub fn checkpoint(&self, pipeline: &str, job: &str) -> Result<Option<Hour>, StateError> {
        let path = self.job_dir(pipeline, job).join("checkpoint.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let cp: CheckpointFile = serde_json::from_str(&text)
                    .map_err(|e| io_err(&path, format!("unreadable checkpoint: {e}")))?;
                Ok(Some(cp.last_processed_hour))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    pub fn set_checkpoint(&self, pipeline: &str, job: &str, hour: Hour) -> Result<(), StateError> {
        let body = serde_json::to_vec_pretty(&CheckpointFile {
            last_processed_hour: hour,
            updated_at: Utc::now(),
        })
        .expect("checkpoint serializes");
        self.replace_file(pipeline, job, "checkpoint.json", &body)
    }

    /// A model's hours loaded but not yet recomputed (`pending.json`).
    pub fn pending(&self, pipeline: &str, key: &str) -> Result<Ranges<Hour>, StateError> {
        let path = self.job_dir(pipeline, key).join("pending.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str::<PendingFile>(&text)
                .map(|p| p.pending.into_iter().collect())
                .map_err(|e| io_err(&path, format!("unreadable pending hours: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ranges::new()),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    pub fn set_pending(
        &self,
        pipeline: &str,
        key: &str,
        ranges: &Ranges<Hour>,
    ) -> Result<(), StateError> {
        let body = serde_json::to_vec_pretty(&PendingFile {
            pending: ranges.iter().collect(),
            updated_at: Utc::now(),
        })
        .expect("pending serializes");
        self.replace_file(pipeline, key, "pending.json", &body)
    }

    /// The job's per-sink progress (`progress.json`), written before its
    /// checkpoint: a crash between the two leaves them disagreeing, and
    /// the checkpoint wins (hours redone, nothing skipped).
    pub fn progress(&self, pipeline: &str, job: &str) -> Result<Progress, StateError> {
        self.read_json(pipeline, job, "progress.json", "progress")
    }

    pub fn set_progress(&self, pipeline: &str, job: &str, p: &Progress) -> Result<(), StateError> {
        let body = serde_json::to_vec_pretty(p).expect("progress serializes");
        self.replace_file(pipeline, job, "progress.json", &body)
    }

    /// A model's keys owed to sinks that were down when they were
    /// recomputed (`owed.json`): per sink, the pending hours it lacks.
    pub fn owed(&self, pipeline: &str, key: &str) -> Result<Owed, StateError> {
        let file: BTreeMap<String, Vec<(Hour, Hour)>> =
            self.read_json(pipeline, key, "owed.json", "owed hours")?;
        Ok(file
            .into_iter()
            .map(|(s, r)| (s, r.into_iter().collect()))
            .collect())
    }

    pub fn set_owed(&self, pipeline: &str, key: &str, owed: &Owed) -> Result<(), StateError> {
        let file: BTreeMap<&String, Vec<(Hour, Hour)>> =
            owed.iter().map(|(s, r)| (s, r.iter().collect())).collect();
        let body = serde_json::to_vec_pretty(&file).expect("owed serializes");
        self.replace_file(pipeline, key, "owed.json", &body)
    }

    fn read_json<T: DeserializeOwned + Default>(
        &self,
        pipeline: &str,
        key: &str,
        file: &str,
        what: &str,
    ) -> Result<T, StateError> {
        let path = self.job_dir(pipeline, key).join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| io_err(&path, format!("unreadable {what}: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// Replaces `<job dir>/<file>` atomically: write, fsync, rename, fsync the directory.
    fn replace_file(
        &self,
        pipeline: &str,
        job: &str,
        file: &str,
        body: &[u8],
    ) -> Result<(), StateError> {
        let dir = self.ensure_dir(pipeline, job)?;
        let path = dir.join(file);
        let tmp = dir.join(format!("{file}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&dir)?.sync_all()
        };
        write().map_err(|e| io_err(&path, e))
    }

    fn append<T: Serialize>(
        &self,
        pipeline: &str,
        job: &str,
        file: &str,
        items: &[T],
    ) -> Result<(), StateError> {
        let dir = self.ensure_dir(pipeline, job)?;
        let path = dir.join(file);
        let mut buf = Vec::new();
        for it in items {
            serde_json::to_writer(&mut buf, it).expect("record serializes");
            buf.push(b'\n');
        }
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
            f.write_all(&buf)?;
            f.sync_data()
        };
        write().map_err(|e| io_err(&path, e))
    }

    fn read_lines<T: DeserializeOwned>(
        &self,
        pipeline: &str,
        job: &str,
        file: &str,
    ) -> Result<Vec<T>, StateError> {
        let path = self.job_dir(pipeline, job).join(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path, e)),
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str(line) {
                Ok(v) => out.push(v),
                // A crash can tear only the last append.
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => return Err(io_err(&path, format!("line {}: {e}", i + 1))),
            }
        }
        Ok(out)
    }

    pub fn append_ledger(
        &self,
        pipeline: &str,
        job: &str,
        entries: &[LedgerEntry],
    ) -> Result<(), StateError> {
        self.append(pipeline, job, "ledger.jsonl", entries)
    }

    pub fn ledger(&self, pipeline: &str, job: &str) -> Result<Vec<LedgerEntry>, StateError> {
        self.read_lines(pipeline, job, "ledger.jsonl")
    }

    pub fn record_run(&self, pipeline: &str, job: &str, run: &RunRecord) -> Result<(), StateError> {
        self.append(pipeline, job, "runs.jsonl", std::slice::from_ref(run))
    }

    pub fn runs(
        &self,
        pipeline: &str,
        job: &str,
        last: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        let mut all: Vec<RunRecord> = self.read_lines(pipeline, job, "runs.jsonl")?;
        let skip = all.len().saturating_sub(last);
        Ok(all.split_off(skip))
    }

    pub fn lease(
        &self,
        pipeline: &str,
        job: &str,
        holder: &Holder,
    ) -> Result<LocalLease, StateError> {
        let dir = self.ensure_dir(pipeline, job)?;
        let path = dir.join("lease");
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        match f.try_lock() {
            Ok(()) => {
                let body = serde_json::to_string(holder).expect("holder serializes");
                let write = |f: &mut File| -> std::io::Result<()> {
                    f.set_len(0)?;
                    f.rewind()?;
                    f.write_all(body.as_bytes())?;
                    f.sync_data()
                };
                write(&mut f).map_err(|e| io_err(&path, e))?;
                Ok(LocalLease { _file: f })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = f.read_to_string(&mut text);
                let holder = serde_json::from_str::<Holder>(&text)
                    .map(|h| h.to_string())
                    .unwrap_or_else(|_| "another process".into());
                Err(StateError::Busy {
                    pipeline: pipeline.into(),
                    job: job.into(),
                    holder,
                })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(id: &str) -> Holder {
        Holder {
            pid: 1,
            host: "h".into(),
            since: Utc::now(),
            run_id: id.into(),
        }
    }

    #[test]
    fn checkpoint_round_trip_and_missing() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalState::new(d.path().join("st"));
        assert_eq!(s.checkpoint("p", "j").unwrap(), None);
        let h = Hour::parse("2026-11-20T05:00:00Z").unwrap();
        s.set_checkpoint("p", "j", h).unwrap();
        assert_eq!(s.checkpoint("p", "j").unwrap(), Some(h));
    }

    #[test]
    fn torn_last_ledger_line_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalState::new(d.path().to_path_buf());
        let h = Hour::parse("2026-11-20T05:00:00Z").unwrap();
        let e = LedgerEntry {
            hour: h,
            sink: "a".into(),
            rows: 3,
            ok: true,
            empty: false,
            at: Utc::now(),
            run_id: "r".into(),
        };
        s.append_ledger("p", "j", std::slice::from_ref(&e)).unwrap();
        let path = d.path().join("p/j/ledger.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"from\":\"2026").unwrap();
        assert_eq!(s.ledger("p", "j").unwrap(), vec![e]);
    }

    #[test]
    fn lease_is_exclusive_and_names_holder() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalState::new(d.path().to_path_buf());
        let held = s.lease("p", "j", &holder("first")).unwrap();
        let err = s
            .lease("p", "j", &holder("second"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lease held by pid 1 on h since") && err.contains("(run first)"),
            "{err}"
        );
        drop(held);
        s.lease("p", "j", &holder("third")).unwrap();
    }
}
