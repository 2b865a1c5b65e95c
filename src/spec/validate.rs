//! Pure validation: `Loaded` spec → `Config`, or every problem found, each
//! pointing at its `file:line:col`. No network, no writes; it only lists the
//! template directory so a missing template gets a suggestion.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_saphyr::Spanned;

use super::config::*;
use super::diag::{did_you_mean, Diagnostic};
use super::endpoints::{sink_config, source_config, state_config};
use super::load::Loaded;
use super::types::*;
use super::values::{Duration, Span};
use crate::secret;

const DEFAULT_TEMPLATE: &str = "hourly_mean.sql";
const DEFAULT_TABLE: &str = "pollutant_hourly";

pub(super) struct Checker<'a> {
    pub(super) loaded: &'a Loaded,
    pub(super) errors: Vec<Diagnostic>,
}

impl Checker<'_> {
    /// Reports an error (once: the same error found twice is one).
    pub(super) fn err(&mut self, span: Span, msg: impl Into<String>) {
        let d = self.loaded.diag(span, msg);
        if !self.errors.contains(&d) {
            self.errors.push(d);
        }
    }

    /// Checks `${kind:NAME}` references in a string value.
    pub(super) fn refs(&mut self, span: Span, what: &str, value: &str) {
        if let Err(e) = secret::references(value) {
            self.err(span, format!("{what}: {e}"));
        }
    }
}

/// Validates the spec and applies defaults.
pub fn validate(loaded: &Loaded) -> Result<Config, Vec<Diagnostic>> {
    let mut c = Checker {
        loaded,
        errors: Vec::new(),
    };
    let spec = &loaded.spec;
    let dir = loaded.dir.clone();
    let sql_dir = rel(&dir, spec.sql_dir.as_deref().unwrap_or("sql"));
    let templates = list_templates(&sql_dir);

    let default_state = match &spec.state {
        None => StateConfig::Local {
            dir: rel(&dir, ".duckhour"),
        },
        Some(s) => state_config(&mut c, s, &dir),
    };

    let (heartbeat, report) = prefect_report(&mut c);
    check_extensions(&mut c);
    let mut sources = BTreeMap::new();
    for (name, s) in &spec.sources {
        check_name(&mut c, s.into(), "source", name);
        if let Some(cfg) = source_config(&mut c, name, s, &dir) {
            sources.insert(name.clone(), cfg);
        }
    }
    let mut sinks = BTreeMap::new();
    for (name, s) in &spec.sinks {
        check_name(&mut c, s.into(), "sink", name);
        if let Some(cfg) = sink_config(&mut c, name, s) {
            sinks.insert(name.clone(), cfg);
        }
    }
    let pipelines = pipelines_config(
        &mut c,
        &templates,
        &default_state,
        heartbeat,
        report.as_ref(),
    );
    check_block_names(&mut c, &pipelines);
    if spec.pipelines.is_empty() {
        c.errors.push(Diagnostic::file(
            &loaded.file,
            "the spec defines no pipelines",
        ));
    }

    if c.errors.is_empty() {
        let label = spec.sql_dir.clone().unwrap_or_else(|| "sql".into());
        let sql_label = match loaded.dir.to_str() {
            Some(".") | Some("") | None => label,
            Some(d) => format!("{d}/{label}"),
        };
        Ok(Config {
            dir,
            sql_dir,
            sql_label,
            extensions: spec.extensions.iter().map(|e| e.value.clone()).collect(),
            sources,
            sinks,
            pipelines,
        })
    } else {
        c.errors.sort_by_key(|d| d.span);
        Err(c.errors)
    }
}

/// The heartbeat every pipeline's runs send, and where runs of pipelines
/// with local state report (`prefect: {url}`).
fn prefect_report(c: &mut Checker) -> (std::time::Duration, Option<PrefectTarget>) {
    let spec = &c.loaded.spec;
    // Prefect's own flow engine beats every 30 s or more; tests and tight
    // automations may want less, and more than 10 min defeats the purpose.
    let heartbeat = match spec
        .prefect
        .as_ref()
        .and_then(|p| p.value.heartbeat.as_ref())
    {
        None => std::time::Duration::from_secs(30),
        Some(h) if (1..=600).contains(&h.value.secs()) => {
            std::time::Duration::from_secs(h.value.secs())
        }
        Some(h) => {
            c.err(
                h.into(),
                format!("prefect: `heartbeat` must be 1s to 10m, not {}", h.value),
            );
            std::time::Duration::from_secs(30)
        }
    };
    if let Some(p) = spec.prefect.as_ref() {
        if p.value.url.is_none() && p.value.api_key.is_some() {
            c.err(p.into(), "prefect: `api_key` is only used with `url`");
        }
    }
    let report = spec.prefect.as_ref().and_then(|p| {
        let url = p.value.url.as_ref()?;
        c.refs(p.into(), "prefect.url", url);
        if let Some(k) = &p.value.api_key {
            c.refs(p.into(), "prefect.api_key", k);
        }
        Some(PrefectTarget {
            url: url.clone(),
            api_key: p.value.api_key.clone(),
            heartbeat,
        })
    });
    (heartbeat, report)
}

/// `extensions:` are DuckDB extension names.
fn check_extensions(c: &mut Checker) {
    let spec = &c.loaded.spec;
    for e in &spec.extensions {
        let ok = !e.value.is_empty()
            && e.value
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
        if !ok {
            c.err(
                e.into(),
                format!("extensions: `{}` is not a DuckDB extension name (lowercase letters, digits, `_`)", e.value),
            );
        }
    }
}

/// Each pipeline with its state (its own, or `default_state`) and where
/// its runs report: its Prefect state's server, else `report`.
fn pipelines_config(
    c: &mut Checker,
    templates: &BTreeSet<String>,
    default_state: &StateConfig,
    heartbeat: std::time::Duration,
    report: Option<&PrefectTarget>,
) -> BTreeMap<String, Pipeline> {
    let spec = &c.loaded.spec;
    let dir = c.loaded.dir.clone();
    let mut pipelines = BTreeMap::new();
    for (name, p) in &spec.pipelines {
        check_name(c, p.into(), "pipeline", name);
        let state = match &p.value.state {
            Some(s) => state_config(c, s, &dir),
            None => default_state.clone(),
        };
        let mut pipeline = pipeline_config(c, name, p, templates, state);
        pipeline.report = match &pipeline.state {
            StateConfig::Prefect { url, api_key, .. } => Some(PrefectTarget {
                url: url.clone(),
                api_key: api_key.clone(),
                heartbeat,
            }),
            StateConfig::Local { .. } => report.cloned(),
        };
        if pipeline.report.is_none() {
            for m in &p.value.models {
                if let Some(e) = &m.value.events {
                    c.err(
                        e.into(),
                        format!(
                            "model `{}` sends events to Prefect, but pipeline `{name}` reports to no Prefect server: give it Prefect state, or set `prefect: {{url: …}}`",
                            m.value.name.value
                        ),
                    );
                }
            }
        }
        pipelines.insert(name.clone(), pipeline);
    }
    pipelines
}

/// Prefect block names are `^[a-z0-9-]+$`, and two jobs must not share a
/// document on one server.
fn check_block_names(c: &mut Checker, pipelines: &BTreeMap<String, Pipeline>) {
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    for (name, p) in pipelines {
        let StateConfig::Prefect {
            url, block_name, ..
        } = &p.state
        else {
            continue;
        };
        let spec = &c.loaded.spec;
        let span: Span = match spec.pipelines[name]
            .value
            .state
            .as_ref()
            .or(spec.state.as_ref())
        {
            Some(s) => s.into(),
            None => continue,
        };
        // Models keep their state in blocks of their own, beside the jobs'.
        let keys = p
            .jobs
            .iter()
            .map(|j| (j.name.clone(), format!("job `{}`", j.name)))
            .chain(
                p.models
                    .iter()
                    .map(|m| (m.state_key(), format!("model `{}`", m.name))),
            );
        for (key, what) in keys {
            let doc = crate::prefect::block_name(block_name, name, &key);
            if !crate::prefect::valid_block_name(&doc) {
                c.err(
                    span,
                    format!(
                        "state: block name `{doc}` (from `block_name: {block_name}` for {what} of pipeline `{name}`) must use only lowercase letters, digits and `-`"
                    ),
                );
                continue;
            }
            let who = format!("{what} of pipeline `{name}`");
            if let Some(other) = seen.insert((url.clone(), doc.clone()), who.clone()) {
                c.err(
                    span,
                    format!(
                        "state: {who} and {other} would share the block `{doc}`: put `{{job}}` (and `{{pipeline}}`) in `block_name`"
                    ),
                );
            }
        }
    }
}

fn check_name(c: &mut Checker, span: Span, what: &str, name: &str) {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '-');
    if !ok {
        c.err(
            span,
            format!("{what} name `{name}` must use only lowercase letters, digits, `_` and `-`"),
        );
    }
}

fn pipeline_config(
    c: &mut Checker,
    name: &str,
    p: &Spanned<PipelineSpec>,
    templates: &BTreeSet<String>,
    state: StateConfig,
) -> Pipeline {
    let span: Span = p.into();
    let v = &p.value;
    check_source_and_sinks(c, name, v, span);
    let lookback_hours = whole_hours(c, &format!("pipeline `{name}`"), &v.lookback);
    let positive = |c: &mut Checker, key: &str, val: &Option<Spanned<u32>>, default: u32| match val
    {
        Some(s) if s.value == 0 => {
            c.err(
                s.into(),
                format!("pipeline `{name}`: `{key}` must be at least 1"),
            );
            default
        }
        Some(s) => s.value,
        None => default,
    };
    let max_hours_per_run = positive(c, "max_hours_per_run", &v.max_hours_per_run, 720);
    let batch_hours = positive(c, "batch_hours", &v.batch_hours, 168);
    let concurrency = positive(c, "concurrency", &v.concurrency, 2);
    if let Some(s) = &v.schedule {
        if let Err(e) = crate::cron::Cron::parse(&s.value) {
            c.err(s.into(), format!("pipeline `{name}`: `schedule` {e}"));
        }
    }
    let timezone = match &v.timezone {
        None => chrono_tz::UTC,
        Some(tz) => tz.value.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
            let hint = did_you_mean(&tz.value, chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()));
            c.err(
                tz.into(),
                format!("pipeline `{name}`: unknown time zone `{}`{hint}", tz.value),
            );
            chrono_tz::UTC
        }),
    };
    let jobs = jobs_config(c, name, p, templates);
    let models = v
        .models
        .iter()
        .filter_map(|m| super::models::model_config(c, name, v, m, &jobs, templates))
        .collect();
    Pipeline {
        name: name.to_owned(),
        state,
        source: v.source.value.clone(),
        sinks: v.sinks.iter().map(|s| s.value.clone()).collect(),
        delay: v
            .delay
            .unwrap_or(Duration(std::time::Duration::from_secs(300))),
        lookback_hours,
        start: v.start,
        end: v.end,
        max_hours_per_run,
        batch_hours,
        concurrency,
        replace_empty: v.replace_empty,
        schedule: v.schedule.as_ref().map(|s| s.value.clone()),
        report: None,
        timezone,
        jobs,
        models,
    }
}

/// A pipeline's source exists; its sinks exist, are not empty and each is
/// listed once.
fn check_source_and_sinks(c: &mut Checker, name: &str, v: &PipelineSpec, span: Span) {
    let spec = &c.loaded.spec;
    if !spec.sources.contains_key(&v.source.value) {
        let hint = did_you_mean(&v.source.value, spec.sources.keys().map(String::as_str));
        c.err(
            (&v.source).into(),
            format!(
                "pipeline `{name}`: unknown source `{}`{hint}",
                v.source.value
            ),
        );
    }
    if v.sinks.is_empty() {
        c.err(span, format!("pipeline `{name}`: `sinks` is empty"));
    }
    let mut seen_sinks = BTreeSet::new();
    for s in &v.sinks {
        let spec = &c.loaded.spec;
        if !spec.sinks.contains_key(&s.value) {
            let hint = did_you_mean(&s.value, spec.sinks.keys().map(String::as_str));
            c.err(
                s.into(),
                format!("pipeline `{name}`: unknown sink `{}`{hint}", s.value),
            );
        } else if !seen_sinks.insert(s.value.clone()) {
            c.err(
                s.into(),
                format!("pipeline `{name}`: sink `{}` is listed twice", s.value),
            );
        }
    }
}

/// A pipeline's jobs with their defaults (the pipeline's template, table,
/// measurement, tags and params), each name once.
fn jobs_config(
    c: &mut Checker,
    name: &str,
    p: &Spanned<PipelineSpec>,
    templates: &BTreeSet<String>,
) -> Vec<Job> {
    let v = &p.value;
    if v.jobs.is_empty() {
        c.err(p.into(), format!("pipeline `{name}`: `jobs` is empty"));
    }
    let default_template = v
        .template
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_else(|| DEFAULT_TEMPLATE.into());
    if v.jobs.iter().any(|j| j.value.template.is_none()) {
        let at = v.template.as_ref().map(Span::from).unwrap_or(p.into());
        check_template(
            c,
            templates,
            at,
            &format!("pipeline `{name}`"),
            &default_template,
        );
    }
    let mut names = BTreeSet::new();
    let mut jobs = Vec::new();
    for j in &v.jobs {
        let jname = &j.value.name.value;
        check_name(c, (&j.value.name).into(), "job", jname);
        if !names.insert(jname.clone()) {
            c.err(
                (&j.value.name).into(),
                format!("pipeline `{name}`: job `{jname}` is defined twice"),
            );
        }
        jobs.push(job_config(c, v, j, &default_template, templates));
    }
    jobs
}

/// One job with the pipeline's defaults.
fn job_config(
    c: &mut Checker,
    v: &PipelineSpec,
    j: &Spanned<JobSpec>,
    default_template: &str,
    templates: &BTreeSet<String>,
) -> Job {
    let jv = &j.value;
    let jname = &jv.name.value;
    // A pipeline-level template is checked once, above; a job's own one here.
    let template_name = match &jv.template {
        Some(t) => {
            check_template(c, templates, t.into(), &format!("job `{jname}`"), &t.value);
            t.value.clone()
        }
        None => default_template.to_owned(),
    };
    let table = jv.table.as_ref().or(v.table.as_ref());
    let table_name = table
        .map(|t| t.value.clone())
        .unwrap_or_else(|| DEFAULT_TABLE.into());
    if !is_identifier(&table_name) {
        let at = table.map(Span::from).unwrap_or_else(|| j.into());
        c.err(
            at,
            format!("job `{jname}`: table `{table_name}` must be letters, digits and `_`, not starting with a digit"),
        );
    }
    let measurement = jv.measurement.clone().or_else(|| v.measurement.clone());
    if measurement.is_none() {
        c.err(
            j.into(),
            format!("job `{jname}`: no `measurement` (set it on the job or the pipeline)"),
        );
    }
    let tags = jv
        .tags
        .clone()
        .or_else(|| v.tags.clone())
        .unwrap_or_else(|| vec!["station".into()]);
    for t in &tags {
        if !is_identifier(t) {
            c.err(
                j.into(),
                format!(
                    "job `{jname}`: tag `{t}` cannot be a column name; use letters, digits and `_`"
                ),
            );
        }
    }
    let mut params: serde_json::Map<_, _> = v
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.extend(jv.params.iter().map(|(k, v)| (k.clone(), v.clone())));
    Job {
        name: jname.clone(),
        measurement: measurement.unwrap_or_default(),
        field: jv.field.clone().unwrap_or_else(|| jname.clone()),
        tags,
        template: template_name,
        table: table_name,
        params,
    }
}

/// A `lookback` in whole hours (0 when absent); `who` names its owner in the error.
pub(super) fn whole_hours(c: &mut Checker, who: &str, l: &Option<Spanned<Duration>>) -> u32 {
    match l {
        None => 0,
        Some(l) if l.value.secs() % 3600 != 0 => {
            c.err(
                l.into(),
                format!("{who}: `lookback` must be whole hours, not {}", l.value),
            );
            0
        }
        Some(l) => (l.value.secs() / 3600) as u32,
    }
}

pub(super) fn check_template(
    c: &mut Checker,
    templates: &BTreeSet<String>,
    at: Span,
    who: &str,
    name: &str,
) {
    if !templates.contains(name) {
        let hint = did_you_mean(name, templates.iter().map(String::as_str));
        let dir = sql_dir_label(c);
        c.err(
            at,
            format!("{who}: template `{name}` not found in `{dir}`{hint}"),
        );
    }
}

fn sql_dir_label(c: &Checker) -> String {
    c.loaded
        .spec
        .sql_dir
        .clone()
        .unwrap_or_else(|| "sql".into())
}

/// Names of `*.sql` files under `dir` (recursively, `/`-separated).
fn list_templates(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if p.extension().is_some_and(|x| x == "sql") {
                if let Ok(rel) = p.strip_prefix(base) {
                    out.insert(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// `p` relative to the spec's directory, without a leading `./` when that is the cwd.
pub(super) fn rel(dir: &Path, p: &str) -> std::path::PathBuf {
    if dir == Path::new(".") {
        std::path::PathBuf::from(p)
    } else {
        dir.join(p)
    }
}

/// A plain SQL identifier: we quote it anyway, but a simple one keeps every sink happy.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_identifier("pollutant_hourly"));
        assert!(!is_identifier("1abc"));
        assert!(!is_identifier("a-b"));
    }
}
