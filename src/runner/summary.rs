//! A run's summary as the rows of a Prefect table artifact (sent by the
//! report, see [`crate::report`]): one row per job and model, under the
//! pipeline's artifact key.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{checkpoint_text, Outcomes, Status};
use crate::error::JobError;
use crate::spec::Hour;

/// The artifact key of a pipeline's run summaries (Prefect takes lowercase
/// letters, digits and dashes): the UI shows one artifact per key, with
/// every run's version in its history.
pub fn artifact_key(pipeline: &str) -> String {
    let name: String = pipeline
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect();
    format!("duckhour-{name}")
}

/// The run's summary as a Prefect table artifact's rows: per job (and
/// model), what it loaded or recomputed, the stations with an hour under
/// 75 % coverage, its checkpoint, the sinks behind, and what failed.
pub fn table(outcomes: &Outcomes) -> Value {
    let jobs = outcomes.jobs.iter().map(|o| Row {
        name: o.job.clone(),
        status: o.status(),
        hours: o.hours,
        rows: o.rows_out,
        empty_hours: o.empty_hours,
        low_coverage: o.low_coverage.as_ref(),
        checkpoint: o.checkpoint,
        behind: behind(o),
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
        behind: String::new(),
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
    /// The sinks short of the newest hour due, with their lag.
    behind: String,
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
            "sinks behind": self.behind,
            "error": error.unwrap_or_default(),
        })
    }
}

/// A job's sinks short of the newest hour due (`bq: 6 hours`), `none`, or
/// empty when the job did not run.
fn behind(o: &super::JobOutcome) -> String {
    let Some(due) = o.due else {
        return String::new();
    };
    let lags: Vec<String> = (o.positions.iter())
        .filter_map(|(s, p)| {
            let lag = p.map_or(0, |p| p.hours_until(due));
            (lag > 0).then(|| format!("{s}: {lag} {}", if lag == 1 { "hour" } else { "hours" }))
        })
        .collect();
    if lags.is_empty() {
        "none".into()
    } else {
        lags.join(", ")
    }
}

/// The stations in one cell: empty when unknown, at most [`SHOWN`] named,
/// the rest counted.
pub(super) fn stations(low: Option<&BTreeSet<String>>) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys take lowercase letters, digits and dashes only (Prefect's
    /// `ArtifactKey`); pipeline names may hold more.
    #[test]
    fn artifact_keys() {
        assert_eq!(artifact_key("hourly"), "duckhour-hourly");
        assert_eq!(artifact_key("Air_Quality.v2"), "duckhour-air-quality-v2");
    }
}
