//! A run's summary as the rows of a Prefect table artifact (sent by the
//! report, see [`crate::report`]): one row per job and model.

use super::Outcome;

/// The run's summary as a Prefect table artifact's rows: per job (and
/// model), what it loaded or recomputed, the stations with an hour under
/// 75 % coverage, its checkpoint, and what failed.
pub fn table(outcomes: &[Outcome]) -> serde_json::Value {
    /// Stations named in one cell, at most; the rest are counted.
    const SHOWN: usize = 20;
    let rows: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            let state = match (&o.error, o.stopped) {
                (Some(_), _) => "failed",
                (None, true) => "stopped",
                (None, false) => "completed",
            };
            let low = match &o.low_coverage {
                None => String::new(),
                Some(s) if s.is_empty() => "none".into(),
                Some(s) => {
                    let mut names: Vec<&str> = s.iter().map(String::as_str).take(SHOWN).collect();
                    let more = s.len().saturating_sub(SHOWN);
                    let more = format!("and {more} more");
                    if s.len() > SHOWN {
                        names.push(&more);
                    }
                    names.join(", ")
                }
            };
            serde_json::json!({
                "job": o.job,
                "state": state,
                "hours": o.hours,
                "rows": o.rows_out,
                "empty hours": o.empty_hours,
                "stations under 75 % coverage": low,
                "checkpoint": o.checkpoint.map(|c| c.to_string()).unwrap_or_default(),
                "error": o.error.as_ref().map(|e| crate::prefect::runs::short(&crate::secret::redact(&e.to_string()))).unwrap_or_default(),
            })
        })
        .collect();
    serde_json::Value::from(rows)
}
