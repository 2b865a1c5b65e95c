//! Where each sink of a job stands, and which sinks are failing: the
//! per-sink positions kept beside the job's checkpoint (which the Python
//! flows read), and the backoff of a sink that failed.
//!
//! A sink's position is the newest hour up to which it holds every hour of
//! the job (it moves like the checkpoint: never over a hole). The job's
//! checkpoint is the oldest of its sinks' positions, so a flow reading only
//! `last_processed_hour` never skips an hour a sink lacks. The positions
//! are written with the checkpoint they go with: a checkpoint found
//! different was moved by someone else (a Python rewind, an operator), and
//! then it wins for every sink.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::spec::Hour;

/// A job's per-sink progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The checkpoint written with these positions.
    #[serde(default)]
    pub checkpoint: Option<Hour>,
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkProgress>,
}

/// One sink's part of a job's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkProgress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Hour>,
    /// Set while the sink fails; cleared by its next load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<Down>,
}

/// A sink that failed: since when, how many runs in a row, when a run
/// tries it again, and why (redacted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Down {
    pub since: DateTime<Utc>,
    pub failures: u32,
    pub next: DateTime<Utc>,
    pub cause: String,
}

/// The first wait after a sink fails; doubled with each run it fails
/// again, up to [`BACKOFF_MAX`].
pub const BACKOFF_FIRST: std::time::Duration = std::time::Duration::from_secs(5 * 60);
pub const BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// The wait before a sink that failed `failures` runs in a row is tried again.
pub fn backoff(failures: u32) -> std::time::Duration {
    let doublings = failures.saturating_sub(1).min(8);
    (BACKOFF_FIRST * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

impl Progress {
    /// Each of `sinks`' position, given the checkpoint the store holds.
    pub fn positions(
        &self,
        checkpoint: Option<Hour>,
        sinks: &[String],
    ) -> BTreeMap<String, Option<Hour>> {
        sinks
            .iter()
            .map(|s| {
                let p = match self.sinks.get(s) {
                    _ if self.checkpoint != checkpoint => checkpoint,
                    Some(SinkProgress {
                        position: Some(p), ..
                    }) => Some(*p),
                    _ => checkpoint,
                };
                (s.clone(), p)
            })
            .collect()
    }

    /// Whether it says no more than its checkpoint: every sink at it, none
    /// failing.
    pub fn says_nothing_more(&self) -> bool {
        self.sinks
            .values()
            .all(|s| s.down.is_none() && s.position == self.checkpoint)
    }

    /// The failure record of `sink`, if it is failing.
    pub fn down(&self, sink: &str) -> Option<&Down> {
        self.sinks.get(sink).and_then(|s| s.down.as_ref())
    }

    /// Records `sink` as failed at `now` for `cause`: its next attempt
    /// after the backoff of one more failure in a row.
    pub fn failed(&mut self, sink: &str, cause: &str, now: DateTime<Utc>) {
        let s = self.sinks.entry(sink.to_owned()).or_default();
        let (since, failures) = match &s.down {
            Some(d) => (d.since, d.failures + 1),
            None => (now, 1),
        };
        let wait = chrono::Duration::from_std(backoff(failures)).expect("an hour at most");
        s.down = Some(Down {
            since,
            failures,
            next: now + wait,
            cause: cause.to_owned(),
        });
    }
}

/// The checkpoint of `positions`: the oldest; `None` while any sink has none.
pub fn floor(positions: &BTreeMap<String, Option<Hour>>) -> Option<Hour> {
    positions.values().copied().min().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hour {
        Hour::parse(s).unwrap()
    }

    #[test]
    fn positions_follow_the_checkpoint_they_were_written_with() {
        let sinks = vec!["wh".to_owned(), "bq".to_owned(), "new".to_owned()];
        let mut p = Progress {
            checkpoint: Some(h("2026-11-20T03:00:00Z")),
            ..Progress::default()
        };
        p.sinks.insert(
            "wh".into(),
            SinkProgress {
                position: Some(h("2026-11-20T09:00:00Z")),
                down: None,
            },
        );
        p.sinks.insert(
            "bq".into(),
            SinkProgress {
                position: Some(h("2026-11-20T03:00:00Z")),
                down: None,
            },
        );
        let at = p.positions(Some(h("2026-11-20T03:00:00Z")), &sinks);
        assert_eq!(at["wh"], Some(h("2026-11-20T09:00:00Z")));
        assert_eq!(at["bq"], Some(h("2026-11-20T03:00:00Z")));
        // A sink without a position stands at the checkpoint.
        assert_eq!(at["new"], Some(h("2026-11-20T03:00:00Z")));
        assert_eq!(floor(&at), Some(h("2026-11-20T03:00:00Z")));
        // Rewound by someone else (or moved forward): the checkpoint wins.
        let at = p.positions(Some(h("2026-11-19T00:00:00Z")), &sinks);
        assert!(at.values().all(|p| *p == Some(h("2026-11-19T00:00:00Z"))));
        let at = p.positions(None, &sinks);
        assert!(at.values().all(Option::is_none));
        assert_eq!(floor(&at), None);
        // Level and well: nothing beyond the checkpoint to keep.
        assert!(!p.says_nothing_more());
        let level = Progress {
            checkpoint: Some(h("2026-11-20T09:00:00Z")),
            sinks: [
                ("wh", "2026-11-20T09:00:00Z"),
                ("bq", "2026-11-20T09:00:00Z"),
            ]
            .map(|(s, at)| {
                (
                    s.to_owned(),
                    SinkProgress {
                        position: Some(h(at)),
                        down: None,
                    },
                )
            })
            .into(),
        };
        assert!(level.says_nothing_more());
        let mut failing = level.clone();
        failing.failed("bq", "refused", "2026-11-20T10:05:00Z".parse().unwrap());
        assert!(!failing.says_nothing_more());
    }

    #[test]
    fn a_failing_sink_backs_off_from_five_minutes_to_an_hour() {
        let waits: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs() / 60).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60, 60]);
        let t0: DateTime<Utc> = "2026-11-20T10:05:00Z".parse().unwrap();
        let mut p = Progress::default();
        p.failed("bq", "refused", t0);
        p.failed("bq", "refused again", t0 + chrono::Duration::minutes(6));
        let d = p.down("bq").unwrap();
        assert_eq!(
            (d.since, d.failures, d.next, d.cause.as_str()),
            (t0, 2, t0 + chrono::Duration::minutes(16), "refused again")
        );
        assert!(p.down("wh").is_none());
    }
}
