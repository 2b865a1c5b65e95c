//! Which sinks take writes in this run. A sink that fails (to set up, to
//! load, to take a model's keys) is left out for the rest of the run, and a
//! sink still in its backoff (see [`crate::state::progress`]) is not tried
//! at all: its hours stay pending for it alone while the other sinks go on.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::error::JobError;
use crate::state::progress::Down;
use crate::state::Progress;

/// How long a run gives a sink that failed before to answer its set-up
/// (the one short request that decides whether this run uses it).
pub const PROBE: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a sink takes no writes in this run.
#[derive(Debug, Clone)]
pub enum Out {
    /// It failed in this run.
    Failed(JobError),
    /// Not tried: it failed before and its next attempt is later.
    Waiting(Down),
}

/// The sinks out of this run, by name.
#[derive(Debug, Default)]
pub struct Health(Mutex<BTreeMap<String, Out>>);

impl Health {
    /// The sinks of `progress` (every job's, read before the run) still
    /// waiting at `now`, left out of the run from the start.
    pub fn from_backoff<'a>(
        progress: impl IntoIterator<Item = &'a Progress>,
        now: DateTime<Utc>,
    ) -> Health {
        let mut waiting: BTreeMap<String, Down> = BTreeMap::new();
        for p in progress {
            for (sink, s) in &p.sinks {
                let Some(d) = &s.down else { continue };
                let later = waiting.get(sink).is_none_or(|w| d.next > w.next);
                if later {
                    waiting.insert(sink.clone(), d.clone());
                }
            }
        }
        let out = waiting
            .into_iter()
            .filter(|(_, d)| d.next > now)
            .map(|(s, d)| (s, Out::Waiting(d)))
            .collect();
        Health(Mutex::new(out))
    }

    /// Whether `sink` failed before (a record of it in any job's progress):
    /// its set-up is then a short probe.
    pub fn was_down<'a>(sink: &str, progress: impl IntoIterator<Item = &'a Progress>) -> bool {
        progress.into_iter().any(|p| p.down(sink).is_some())
    }

    pub fn is_up(&self, sink: &str) -> bool {
        !self.lock().contains_key(sink)
    }

    /// Leaves `sink` out for the rest of the run; the first failure is kept.
    pub fn failed(&self, sink: &str, e: JobError) {
        let mut out = self.lock();
        if out.contains_key(sink) {
            return;
        }
        tracing::warn!(sink, error = %e, "sink failed: left out for the rest of this run; its hours stay pending for it");
        out.insert(sink.to_owned(), Out::Failed(e));
    }

    /// The sinks out of the run and why.
    pub fn out(&self) -> BTreeMap<String, Out> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Out>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `progress` after this run: sinks that failed in it get one more failure,
/// sinks not tried keep their record, the others (which took their
/// batches) are cleared.
pub fn after_run(
    progress: &mut Progress,
    sinks: &[String],
    out: &BTreeMap<String, Out>,
    now: DateTime<Utc>,
) {
    for s in sinks {
        match out.get(s) {
            Some(Out::Failed(e)) => progress.failed(s, &crate::secret::redact(&e.to_string()), now),
            Some(Out::Waiting(_)) => {}
            None => {
                if let Some(p) = progress.sinks.get_mut(s) {
                    p.down = None;
                }
            }
        }
    }
}
