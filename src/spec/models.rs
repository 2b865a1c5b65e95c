//! Validation of a pipeline's `models:`: grain, lookback, time zone,
//! template, table, jobs and `depends_on`, each error at its line.

use std::collections::BTreeSet;

use serde_saphyr::Spanned;

use super::config::{Job, Model};
use super::diag::did_you_mean;
use super::types::{ModelSpec, PipelineSpec};
use super::validate::{check_template, is_identifier, whole_hours, Checker};
use super::values::Span;
use crate::time::{Grain, Zone};

/// A pipeline's model with its defaults, or `None` after reporting why not.
pub(super) fn model_config(
    c: &mut Checker,
    pipeline: &str,
    p: &PipelineSpec,
    m: &Spanned<ModelSpec>,
    jobs: &[Job],
    templates: &BTreeSet<String>,
) -> Option<Model> {
    let v = &m.value;
    let name = &v.name.value;
    let errors = c.errors.len();
    check_name(c, pipeline, p, m, jobs);
    let grain = grain_of(c, v);
    let lookback_hours = whole_hours(c, &format!("model `{name}`"), &v.lookback);
    let zone = zone_of(c, m, grain);
    let template = template_of(c, v, templates);
    let table = table_of(c, m, jobs);
    let names = jobs_of(c, v, jobs);
    let depends_on = depends_on_of(c, p, m);
    let read: Vec<&Job> = jobs.iter().filter(|j| names.contains(&j.name)).collect();
    let tags = read.first().map(|j| j.tags.clone()).unwrap_or_default();
    if let Some(j) = read.iter().find(|j| j.tags != tags) {
        c.err(
            m.into(),
            format!(
                "model `{name}`: its jobs must have the same tags; `{}` has [{}], `{}` has [{}]",
                read[0].name,
                tags.join(", "),
                j.name,
                j.tags.join(", ")
            ),
        );
    }
    let mut hourly_tables: Vec<String> = Vec::new();
    for j in &read {
        if !hourly_tables.contains(&j.table) {
            hourly_tables.push(j.table.clone());
        }
    }
    let params = params_of(c, pipeline, p, m, jobs);
    check_events(c, v);
    (c.errors.len() == errors).then(|| Model {
        name: name.clone(),
        template,
        grain,
        lookback_hours,
        zone,
        table,
        jobs: names,
        tags,
        hourly_tables,
        depends_on,
        params,
        events: v.events.as_ref().map(|e| e.value.clone()),
    })
}

/// The model's name: an identifier in lowercase, once in the pipeline, and
/// not a job's state key.
fn check_name(
    c: &mut Checker,
    pipeline: &str,
    p: &PipelineSpec,
    m: &Spanned<ModelSpec>,
    jobs: &[Job],
) {
    let v = &m.value;
    let name = &v.name.value;
    if !is_identifier(name) || name.chars().any(|ch| ch.is_ascii_uppercase()) {
        c.err(
            (&v.name).into(),
            format!("model `{name}`: a model name is lowercase letters, digits and `_`, not starting with a digit"),
        );
    }
    let first = p.models.iter().position(|o| o.value.name.value == *name);
    if first.is_some_and(|i| !std::ptr::eq(&p.models[i], m)) {
        c.err(
            (&v.name).into(),
            format!("pipeline `{pipeline}`: model `{name}` is defined twice"),
        );
    }
    let key = crate::spec::state_key(name);
    if jobs.iter().any(|j| j.name == key) {
        c.err(
            (&v.name).into(),
            format!("pipeline `{pipeline}`: model `{name}` keeps its state as `{key}`, the name of a job: rename one"),
        );
    }
}

fn grain_of(c: &mut Checker, v: &ModelSpec) -> Grain {
    let name = &v.name.value;
    match v.grain.value.as_str() {
        "hour" => Grain::Hour,
        "day" => Grain::Day,
        "year" => Grain::Year,
        other => {
            let hint = did_you_mean(other, ["hour", "day", "year"]);
            c.err(
                (&v.grain).into(),
                format!("model `{name}`: unknown grain `{other}` (hour, day or year){hint}"),
            );
            Grain::Hour
        }
    }
}

/// The zone of a day or year model's keys (UTC by default): one whose
/// offsets are whole hours.
fn zone_of(c: &mut Checker, m: &Spanned<ModelSpec>, grain: Grain) -> Zone {
    let v = &m.value;
    let name = &v.name.value;
    let zone = match &v.timezone {
        None => Zone::UTC,
        Some(tz) => match Zone::parse(&tz.value) {
            Ok(z) if z.whole_hours() => z,
            Ok(_) => {
                c.err(
                    tz.into(),
                    format!("model `{name}`: time zone `{}` has offsets that are not whole hours, so its days do not hold whole UTC hours", tz.value),
                );
                Zone::UTC
            }
            Err(e) => {
                let hint = did_you_mean(&tz.value, chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()));
                c.err(tz.into(), format!("model `{name}`: {e}{hint}"));
                Zone::UTC
            }
        },
    };
    if grain == Grain::Hour && v.timezone.is_some() {
        let at = v.timezone.as_ref().map(Span::from).unwrap_or(m.into());
        c.err(
            at,
            format!("model `{name}`: `timezone` is for `day` and `year` grains; hour keys are UTC"),
        );
    }
    zone
}

/// Its template (`<name>.sql` by default), which must exist.
fn template_of(c: &mut Checker, v: &ModelSpec, templates: &BTreeSet<String>) -> String {
    let name = &v.name.value;
    let who = format!("model `{name}`");
    match &v.template {
        Some(t) => {
            check_template(c, templates, t.into(), &who, &t.value);
            t.value.clone()
        }
        None => {
            let t = format!("{name}.sql");
            check_template(c, templates, (&v.name).into(), &who, &t);
            t
        }
    }
}

/// Its table (its name by default): an identifier no job loads into.
fn table_of(c: &mut Checker, m: &Spanned<ModelSpec>, jobs: &[Job]) -> String {
    let v = &m.value;
    let name = &v.name.value;
    let table = v
        .table
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_else(|| name.clone());
    let at = v.table.as_ref().map(Span::from).unwrap_or(m.into());
    if !is_identifier(&table) {
        c.err(
            at,
            format!("model `{name}`: table `{table}` must be letters, digits and `_`, not starting with a digit"),
        );
    }
    if let Some(j) = jobs.iter().find(|j| j.table == table) {
        c.err(
            at,
            format!(
                "model `{name}`: table `{table}` is where job `{}` loads its hourly rows",
                j.name
            ),
        );
    }
    table
}

/// The jobs it reads (all by default), in the pipeline's order.
fn jobs_of(c: &mut Checker, v: &ModelSpec, jobs: &[Job]) -> Vec<String> {
    let name = &v.name.value;
    let Some(list) = &v.jobs else {
        return jobs.iter().map(|j| j.name.clone()).collect();
    };
    for j in list {
        if !jobs.iter().any(|k| k.name == j.value) {
            let hint = did_you_mean(&j.value, jobs.iter().map(|k| k.name.as_str()));
            c.err(
                j.into(),
                format!("model `{name}`: unknown job `{}`{hint}", j.value),
            );
        }
    }
    jobs.iter()
        .filter(|k| list.iter().any(|j| j.value == k.name))
        .map(|k| k.name.clone())
        .collect()
}

/// The models it reads: each listed before it.
fn depends_on_of(c: &mut Checker, p: &PipelineSpec, m: &Spanned<ModelSpec>) -> Vec<String> {
    let name = &m.value.name.value;
    let mut depends_on = Vec::new();
    for d in &m.value.depends_on {
        let earlier: Vec<&str> = p
            .models
            .iter()
            .take_while(|o| !std::ptr::eq(*o, m))
            .map(|o| o.value.name.value.as_str())
            .collect();
        if earlier.contains(&d.value.as_str()) {
            depends_on.push(d.value.clone());
        } else if p.models.iter().any(|o| o.value.name.value == d.value) {
            c.err(
                d.into(),
                format!(
                    "model `{name}`: `depends_on: {}` must name a model listed before it",
                    d.value
                ),
            );
        } else {
            let hint = did_you_mean(
                &d.value,
                p.models.iter().map(|o| o.value.name.value.as_str()),
            );
            c.err(
                d.into(),
                format!(
                    "model `{name}`: unknown model `{}` in `depends_on`{hint}",
                    d.value
                ),
            );
        }
    }
    depends_on
}

/// Its `params` (the pipeline's, then its own), with the checked `rules:`
/// (its own or the pipeline's) as `params.rules`.
fn params_of(
    c: &mut Checker,
    pipeline: &str,
    p: &PipelineSpec,
    m: &Spanned<ModelSpec>,
    jobs: &[Job],
) -> serde_json::Map<String, serde_json::Value> {
    let v = &m.value;
    let name = &v.name.value;
    let mut params: serde_json::Map<_, _> = p
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.extend(v.params.iter().map(|(k, v)| (k.clone(), v.clone())));
    if params.contains_key("rules") {
        c.err(
            m.into(),
            format!("model `{name}`: set the rules with `rules:` (README \"Rules\"), not `params.rules`"),
        );
    }
    if let Some(rules) = v.rules.as_ref().or(p.rules.as_ref()) {
        let mut names: Vec<String> = super::rules::POLLUTANTS.map(String::from).to_vec();
        names.extend(jobs.iter().map(|j| j.name.clone()));
        if let Some(serde_json::Value::Object(map)) = params.get("pollutants") {
            names.extend(map.keys().cloned());
        }
        // The pipeline's rules are checked for each model that uses them;
        // the checker reports an error once.
        let who = match &v.rules {
            Some(_) => format!("model `{name}`"),
            None => format!("pipeline `{pipeline}`"),
        };
        let list = super::rules::check(c, &who, rules, &names);
        params.insert("rules".into(), list);
    }
    params
}

/// `events:` is an event name with a dot.
fn check_events(c: &mut Checker, v: &ModelSpec) {
    let Some(e) = &v.events else { return };
    let ok = e.value.contains('.')
        && e.value
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch));
    if !ok {
        c.err(
            e.into(),
            format!(
                "model `{}`: `events: {}` must be an event name of lowercase letters, digits, `.`, `_` and `-`, with a dot (e.g. `air-quality.threshold.exceeded`)",
                v.name.value, e.value
            ),
        );
    }
}
