//! Validation of `rules:` (a pipeline's or a model's): the limit values,
//! target values, thresholds and criteria the stock products judge by, each
//! field checked at its line, and handed to the templates as
//! `params.rules` (sql/rules.sql holds the shipped list).

use chrono::NaiveDate;
use serde_saphyr::Spanned;

use super::diag::did_you_mean;
use super::types::RuleSpec;
use super::validate::Checker;

pub const KINDS: [&str; 5] = ["limit", "target", "information", "alert", "criterion"];
pub const METRICS: [&str; 5] = [
    "hourly",
    "daily_mean",
    "max_daily_8h_mean",
    "annual_mean",
    "aot40",
];
/// The pollutant names the stock templates know (`params.pollutants` maps
/// them to job names).
pub const POLLUTANTS: [&str; 6] = ["co", "no2", "o3", "pm10", "pm25", "so2"];

fn date(c: &mut Checker, who: &str, d: &Option<Spanned<String>>) -> Option<NaiveDate> {
    let d = d.as_ref()?;
    match NaiveDate::parse_from_str(&d.value, "%Y-%m-%d") {
        Ok(x) => Some(x),
        Err(_) => {
            c.err(
                d.into(),
                format!("{who}: `{}` is not a date like `2026-12-12`", d.value),
            );
            None
        }
    }
}

/// Checks `rules` of `who` (a pipeline or model, for messages); `names`
/// are the pollutant names a rule may give (the stock ones, the jobs and
/// the keys of `params.pollutants`). Returns them as the JSON list the
/// templates read.
pub(super) fn check(
    c: &mut Checker,
    who: &str,
    rules: &[Spanned<RuleSpec>],
    names: &[String],
) -> serde_json::Value {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let v = &r.value;
        let at = format!("{who}: rule {} ({})", i + 1, v.instrument.value);
        check_names(c, &at, r, names);
        if v.kind.value == "criterion" && !(v.value.value > 0.0 && v.value.value <= 1.0) {
            c.err(
                (&v.value).into(),
                format!("{at}: a criterion is a fraction of the hours, above 0 and at most 1"),
            );
        }
        if let Some(n) = v.consecutive.as_ref().filter(|n| n.value < 1) {
            c.err(n.into(), format!("{at}: `consecutive` is 1 or more"));
        }
        if let Some(n) = v.years.as_ref().filter(|n| n.value < 1) {
            c.err(n.into(), format!("{at}: `years` is 1 or more"));
        }
        let from = date(c, &at, &v.valid_from);
        let to = date(c, &at, &v.valid_to);
        if let (Some(a), Some(b), Some(s)) = (from, to, &v.valid_to) {
            if a >= b {
                c.err(
                    s.into(),
                    format!("{at}: `valid_to` {b} is not after `valid_from` {a}"),
                );
            }
        }
        out.push(rule_json(v));
    }
    serde_json::Value::Array(out)
}

/// A rule's kind, metric and pollutant are known names (a criterion has no
/// pollutant).
fn check_names(c: &mut Checker, at: &str, r: &Spanned<RuleSpec>, names: &[String]) {
    let v = &r.value;
    if !KINDS.contains(&v.kind.value.as_str()) {
        let hint = did_you_mean(&v.kind.value, KINDS);
        c.err(
            (&v.kind).into(),
            format!(
                "{at}: unknown kind `{}` ({}){hint}",
                v.kind.value,
                KINDS.join(", ")
            ),
        );
    }
    if !METRICS.contains(&v.metric.value.as_str()) {
        let hint = did_you_mean(&v.metric.value, METRICS);
        c.err(
            (&v.metric).into(),
            format!(
                "{at}: unknown metric `{}` ({}){hint}",
                v.metric.value,
                METRICS.join(", ")
            ),
        );
    }
    match (&v.pollutant, v.kind.value == "criterion") {
        (None, false) => c.err(
            r.into(),
            format!("{at}: a {} needs `pollutant`", v.kind.value),
        ),
        (Some(p), true) => c.err(
            p.into(),
            format!("{at}: a criterion applies to every pollutant: drop `pollutant`"),
        ),
        (Some(p), false) if !names.contains(&p.value) => {
            let hint = did_you_mean(&p.value, names.iter().map(String::as_str));
            c.err(
                p.into(),
                format!(
                    "{at}: unknown pollutant `{}` (a stock name, a job, or a key of `params.pollutants`){hint}",
                    p.value
                ),
            );
        }
        _ => {}
    }
}

/// A checked rule as the templates read it.
fn rule_json(v: &RuleSpec) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("instrument".into(), v.instrument.value.clone().into());
    if let Some(p) = &v.pollutant {
        m.insert("pollutant".into(), p.value.clone().into());
    }
    m.insert("kind".into(), v.kind.value.clone().into());
    m.insert("metric".into(), v.metric.value.clone().into());
    m.insert("value".into(), v.value.value.into());
    for (k, f) in [
        ("allowed", &v.allowed),
        ("consecutive", &v.consecutive),
        ("years", &v.years),
    ] {
        if let Some(f) = f {
            m.insert(k.into(), f.value.into());
        }
    }
    for (k, f) in [("valid_from", &v.valid_from), ("valid_to", &v.valid_to)] {
        if let Some(f) = f {
            m.insert(k.into(), f.value.clone().into());
        }
    }
    if let Some(o) = v.outlook {
        m.insert("outlook".into(), o.into());
    }
    serde_json::Value::Object(m)
}
