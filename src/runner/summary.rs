//! A run's summary as the rows of a Prefect table artifact (sent by the
//! report, see [`crate::report`]): one row per job and model.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{checkpoint_text, Outcomes, Status};
use crate::error::JobError;
use crate::spec::Hour;

/// The run's summary as a Prefect table artifact's rows: per job (and
/// model), what it loaded or recomputed, the stations with an hour under
/// 75 % coverage, its checkpoint, and what failed.
pub fn table(outcomes: &Outcomes) -> Value {
    let jobs = outcomes.jobs.iter().map(|o| Row {
        name: o.job.clone(),
        status: o.status(),
        hours: o.hours,
        rows: o.rows_out,
        empty_hours: o.empty_hours,
        low_coverage: o.low_coverage.as_ref(),
        checkpoint: o.checkpoint,
        error: o.error.as_ref(),
    });
    let models = outcomes.models.iter().map(|o| Row {
        name: o.task_name(),
        status: o.status(),
        hours: o.input_hours,
        rows: o.rows,
        empty_hours: 0,
        low_coverage: None,
        checkpoint: o.checkpoint,
        error: o.error.as_ref(),
    });
    Value::from(jobs.chain(models).map(|r| r.json()).collect::<Vec<_>>())
}

/// One row of the table.
struct Row<'a> {
    name: String,
    status: Status,
    hours: i64,
    rows: u64,
    empty_hours: i64,
    low_coverage: Option<&'a BTreeSet<String>>,
    checkpoint: Option<Hour>,
    error: Option<&'a JobError>,
}

impl Row<'_> {
    fn json(&self) -> Value {
        let error = self
            .error
            .map(|e| crate::prefect::runs::short(&crate::secret::redact(&e.to_string())));
        json!({
            "job": self.name,
            "state": self.status.artifact_word(),
            "hours": self.hours,
            "rows": self.rows,
            "empty hours": self.empty_hours,
            "stations under 75 % coverage": stations(self.low_coverage),
            "checkpoint": self.checkpoint.map(|_| checkpoint_text(self.checkpoint)).unwrap_or_default(),
            "error": error.unwrap_or_default(),
        })
    }
}

/// The stations in one cell: empty when unknown, at most [`SHOWN`] named,
/// the rest counted.
fn stations(low: Option<&BTreeSet<String>>) -> String {
    /// Stations named in one cell, at most; the rest are counted.
    const SHOWN: usize = 20;
    match low {
        None => String::new(),
        Some(s) if s.is_empty() => "none".into(),
        Some(s) => {
            let mut names: Vec<&str> = s.iter().map(String::as_str).take(SHOWN).collect();
            let more = format!("and {} more", s.len().saturating_sub(SHOWN));
            if s.len() > SHOWN {
                names.push(&more);
            }
            names.join(", ")
        }
    }
}
