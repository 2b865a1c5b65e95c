//! What a run did, typed: a job's outcome, a model's (see
//! [`crate::models::ModelOutcome`]), the status of each, and how each is
//! said to Prefect (task and flow run states with their messages). The
//! printed report and the summary artifact read these; nothing here does
//! I/O.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::JobError;
use crate::models::ModelOutcome;
use crate::plan::Plan;
use crate::prefect::runs::StateType;
use crate::spec::Hour;

/// How a job or a model ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Stopped early on request; what was done is committed.
    Stopped,
    Failed,
}

impl Status {
    /// The Prefect state a task or flow run with this status ends in.
    pub fn state(self) -> StateType {
        match self {
            Status::Ok => StateType::Completed,
            Status::Stopped => StateType::Cancelled,
            Status::Failed => StateType::Failed,
        }
    }

    /// The word in the summary artifact's `state` column.
    pub fn artifact_word(self) -> &'static str {
        match self {
            Status::Ok => "completed",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
        }
    }
}

/// The word in the printed report and the logs: `ok`, `stopped`, `FAILED`.
impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Status::Ok => "ok",
            Status::Stopped => "stopped",
            Status::Failed => "FAILED",
        })
    }
}

/// What happened to one job.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub job: String,
    pub hours: i64,
    pub new_hours: i64,
    pub redo_hours: i64,
    pub left_hours: i64,
    pub batches: usize,
    pub rows_in: u64,
    pub rows_out: u64,
    /// Hours the source returned no row for, left in the sinks as they were.
    pub empty_hours: i64,
    pub checkpoint: Option<Hour>,
    pub error: Option<JobError>,
    /// Stopped early on request; what was done is committed.
    pub stopped: bool,
    /// Stations with an hour under 75 % coverage among those loaded (or
    /// with no row at all though a DuckDB sink held them the day before),
    /// when known (from a result with a `coverage` column).
    pub low_coverage: Option<BTreeSet<String>>,
    /// Where each sink stands after the run (see [`crate::state::progress`]).
    pub positions: BTreeMap<String, Option<Hour>>,
    /// The newest hour due in this run.
    pub due: Option<Hour>,
}

impl JobOutcome {
    /// A job about to run its plan from `checkpoint`.
    pub(super) fn planned(job: &str, plan: &Plan, checkpoint: Option<Hour>) -> JobOutcome {
        JobOutcome {
            checkpoint,
            new_hours: plan.new_hours,
            redo_hours: plan.redo_hours,
            left_hours: plan.left_hours,
            error: None,
            ..JobOutcome::failed(job, JobError::internal(""))
        }
    }

    pub(super) fn failed(job: &str, error: JobError) -> JobOutcome {
        JobOutcome {
            job: job.to_owned(),
            hours: 0,
            new_hours: 0,
            redo_hours: 0,
            left_hours: 0,
            batches: 0,
            rows_in: 0,
            rows_out: 0,
            empty_hours: 0,
            checkpoint: None,
            error: Some(error),
            stopped: false,
            low_coverage: None,
            positions: BTreeMap::new(),
            due: None,
        }
    }

    pub fn status(&self) -> Status {
        match (&self.error, self.stopped) {
            (Some(_), _) => Status::Failed,
            (None, true) => Status::Stopped,
            (None, false) => Status::Ok,
        }
    }

    /// What it did, in one line: the task run's message and the report's.
    pub fn done(&self) -> String {
        let mut m = format!(
            "{} hours, {} rows in, {} rows out, checkpoint {}",
            self.hours,
            self.rows_in,
            self.rows_out,
            checkpoint_text(self.checkpoint)
        );
        if self.empty_hours > 0 {
            m.push_str(&format!(
                "; {} hours empty at the source: kept what the sinks hold",
                self.empty_hours
            ));
        }
        m
    }

    /// Its task run's final state and message.
    pub fn state(&self) -> (StateType, String) {
        let status = self.status();
        let message = match (&self.error, status) {
            (Some(e), _) => e.to_string(),
            (None, Status::Stopped) => {
                format!("stopped on request; loaded so far: {}", self.done())
            }
            (None, _) => self.done(),
        };
        (status.state(), message)
    }
}

impl ModelOutcome {
    pub fn status(&self) -> Status {
        if self.error.is_some() {
            Status::Failed
        } else {
            Status::Ok
        }
    }

    /// The output keys it recomputed, merged, or that there were none.
    pub fn keys(&self) -> String {
        if self.ranges.is_empty() {
            return if self.error.is_some() {
                "nothing recomputed".into()
            } else {
                "nothing pending".into()
            };
        }
        self.ranges
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The name its task run and report line go by.
    pub fn task_name(&self) -> String {
        format!("model {}", self.model)
    }

    /// Its task run's final state and message.
    pub fn state(&self) -> (StateType, String) {
        let message = match &self.error {
            Some(e) => e.to_string(),
            None => format!(
                "recomputed {}: {} hours read, {} rows, checkpoint {}",
                self.keys(),
                self.input_hours,
                self.rows,
                checkpoint_text(self.checkpoint)
            ),
        };
        (self.status().state(), message)
    }
}

/// A checkpoint as said in reports: the hour, or `none`.
pub fn checkpoint_text(c: Option<Hour>) -> String {
    c.map_or_else(|| "none".to_owned(), |c| c.to_string())
}

/// What a run did: its jobs in the pipeline's order, then its models in
/// the spec's.
#[derive(Debug, Clone, Default)]
pub struct Outcomes {
    pub jobs: Vec<JobOutcome>,
    pub models: Vec<ModelOutcome>,
    /// Per sink that had any: writes that lost to a concurrent writer on
    /// the same table (another job, another worker) and were sent again.
    pub conflicts: Vec<(String, u64)>,
    /// The sinks out of this run (they failed, or wait out their backoff),
    /// with how far behind each is: the run fails on them, the other sinks
    /// took every batch.
    pub behind: Vec<Behind>,
}

/// A sink out of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Behind {
    pub sink: String,
    /// Hours from its oldest position over the jobs to the newest hour due.
    pub hours: i64,
    /// Why, redacted.
    pub cause: String,
    /// Not tried in this run: the next attempt (its backoff).
    pub next: Option<chrono::DateTime<chrono::Utc>>,
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = if self.hours == 1 { "hour" } else { "hours" };
        write!(f, "sink `{}` is {} {unit} behind", self.sink, self.hours)?;
        match self.next {
            Some(t) => write!(
                f,
                " (not tried in this run; next attempt after {}): {}",
                t.format("%Y-%m-%dT%H:%M:%SZ"),
                self.cause
            ),
            None => write!(f, ": {}", self.cause),
        }
    }
}

impl Outcomes {
    /// The sinks behind, in one line.
    pub fn behind_text(&self) -> Option<String> {
        if self.behind.is_empty() {
            return None;
        }
        let each: Vec<String> = self.behind.iter().map(ToString::to_string).collect();
        Some(format!(
            "{}; the other sinks took every hour",
            each.join("; ")
        ))
    }

    /// Jobs and models that failed.
    pub fn failed(&self) -> usize {
        self.jobs.iter().filter(|o| o.error.is_some()).count()
            + self.models.iter().filter(|o| o.error.is_some()).count()
    }

    /// Jobs and models.
    pub fn total(&self) -> usize {
        self.jobs.len() + self.models.len()
    }

    /// The flow run's final state and message: which jobs and models
    /// failed and why.
    pub fn state(&self) -> (StateType, String) {
        let failed: Vec<String> = self
            .jobs
            .iter()
            .filter_map(|o| o.error.as_ref().map(|e| format!("job `{}`: {e}", o.job)))
            .chain(self.models.iter().filter_map(|o| {
                o.error
                    .as_ref()
                    .map(|e| format!("model `{}`: {e}", o.model))
            }))
            .collect();
        if !failed.is_empty() {
            let mut m = format!(
                "{} of {} jobs failed: {}",
                failed.len(),
                self.total(),
                failed.join("; ")
            );
            if let Some(b) = self.behind_text() {
                m.push_str(&format!("; {b}"));
            }
            return (StateType::Failed, m);
        }
        if let Some(b) = self.behind_text() {
            return (StateType::Failed, b);
        }
        let hours: i64 = self.jobs.iter().map(|o| o.hours).sum::<i64>()
            + self.models.iter().map(|o| o.input_hours).sum::<i64>();
        let rows: u64 = self.jobs.iter().map(|o| o.rows_out).sum::<u64>()
            + self.models.iter().map(|o| o.rows).sum::<u64>();
        let mut m = format!("{} jobs, {hours} hours, {rows} rows", self.total());
        if let Some(c) = self.conflicts_text() {
            m.push_str(&format!("; {c}"));
        }
        if self.jobs.iter().any(|o| o.stopped) {
            (
                StateType::Cancelled,
                format!("stopped on request; loaded so far: {m}"),
            )
        } else {
            (StateType::Completed, m)
        }
    }

    /// `writes sent again after conflicts with concurrent writers: 2 to
    /// sink `bq``, when there were any.
    pub fn conflicts_text(&self) -> Option<String> {
        if self.conflicts.is_empty() {
            return None;
        }
        let per: Vec<String> = self
            .conflicts
            .iter()
            .map(|(sink, n)| format!("{n} to sink `{sink}`"))
            .collect();
        Some(format!(
            "writes sent again after conflicts with concurrent writers: {}",
            per.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(s: &str) -> Hour {
        Hour::parse(s).unwrap()
    }

    #[test]
    fn statuses_and_states() {
        let mut o = JobOutcome::failed(
            "co",
            JobError::Template(crate::error::cause("influx `f` failed")),
        );
        assert_eq!(o.status(), Status::Failed);
        assert_eq!(
            o.state(),
            (StateType::Failed, "influx `f` failed".to_owned())
        );
        o.error = None;
        o.hours = 2;
        o.rows_in = 120;
        o.rows_out = 4;
        o.checkpoint = Some(hour("2026-11-20T01:00:00Z"));
        assert_eq!(
            o.state(),
            (
                StateType::Completed,
                "2 hours, 120 rows in, 4 rows out, checkpoint 2026-11-20T01:00:00Z".to_owned()
            )
        );
        o.stopped = true;
        o.empty_hours = 1;
        assert_eq!(o.status(), Status::Stopped);
        assert_eq!(
            o.state().1,
            "stopped on request; loaded so far: 2 hours, 120 rows in, 4 rows out, checkpoint 2026-11-20T01:00:00Z; 1 hours empty at the source: kept what the sinks hold"
        );
        assert_eq!(
            format!("{:6}|{}", Status::Ok, Status::Failed),
            "ok    |FAILED"
        );
    }

    #[test]
    fn a_run_names_what_failed() {
        let mut m = ModelOutcome::not_run("eaqi", JobError::internal("boom"));
        let jobs = vec![JobOutcome {
            error: None,
            hours: 3,
            rows_out: 6,
            ..JobOutcome::failed("co", JobError::internal(""))
        }];
        let run = Outcomes {
            jobs: jobs.clone(),
            models: vec![m.clone()],
            conflicts: vec![],
            behind: vec![],
        };
        assert_eq!(m.keys(), "nothing recomputed");
        assert_eq!(
            run.state(),
            (
                StateType::Failed,
                "1 of 2 jobs failed: model `eaqi`: boom".to_owned()
            )
        );
        m.error = None;
        assert_eq!(m.keys(), "nothing pending");
        let mut run = Outcomes {
            jobs,
            models: vec![m],
            conflicts: vec![],
            behind: vec![],
        };
        assert_eq!(
            run.state(),
            (StateType::Completed, "2 jobs, 3 hours, 6 rows".to_owned())
        );
        run.conflicts = vec![("bq".into(), 2), ("wh".into(), 1)];
        assert_eq!(
            run.state().1,
            "2 jobs, 3 hours, 6 rows; writes sent again after conflicts with concurrent writers: 2 to sink `bq`, 1 to sink `wh`"
        );
        run.behind = vec![
            Behind {
                sink: "bq".into(),
                hours: 6,
                cause: "sink `bq`: connection refused".into(),
                next: None,
            },
            Behind {
                sink: "md".into(),
                hours: 1,
                cause: "sink `md`: file busy".into(),
                next: Some("2026-11-20T10:35:00Z".parse().unwrap()),
            },
        ];
        assert_eq!(
            run.state(),
            (
                StateType::Failed,
                "sink `bq` is 6 hours behind: sink `bq`: connection refused; sink `md` is 1 hour behind (not tried in this run; next attempt after 2026-11-20T10:35:00Z): sink `md`: file busy; the other sinks took every hour".to_owned()
            )
        );
    }
}
