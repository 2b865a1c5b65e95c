//! Pure validation: `Loaded` spec → `Config`, or every problem found, each
//! pointing at its `file:line:col`. No network, no writes; it only lists the
//! template directory so a missing template gets a suggestion.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_saphyr::Spanned;

use super::config::*;
use super::diag::{did_you_mean, Diagnostic};
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
    pub(super) fn err(&mut self, span: Span, msg: impl Into<String>) {
        let d = self.loaded.diag(span, msg);
        self.errors.push(d);
    }

    /// Checks `${kind:NAME}` references in a string value.
    fn refs(&mut self, span: Span, what: &str, value: &str) {
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
    let mut pipelines = BTreeMap::new();
    for (name, p) in &spec.pipelines {
        check_name(&mut c, p.into(), "pipeline", name);
        let state = match &p.value.state {
            Some(s) => state_config(&mut c, s, &dir),
            None => default_state.clone(),
        };
        let mut pipeline = pipeline_config(&mut c, name, p, &templates, state);
        pipeline.report = match &pipeline.state {
            StateConfig::Prefect { url, api_key, .. } => Some(PrefectTarget {
                url: url.clone(),
                api_key: api_key.clone(),
                heartbeat,
            }),
            StateConfig::Local { .. } => report.clone(),
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
            let doc = crate::state::block_name(block_name, name, &key);
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

fn state_config(c: &mut Checker, s: &Spanned<StateSpec>, dir: &Path) -> StateConfig {
    let span: Span = s.into();
    let v = &s.value;
    match v.kind {
        StateKind::Local => {
            for (set, key) in [(v.url.is_some(), "url"), (v.api_key.is_some(), "api_key")] {
                if set {
                    c.err(
                        span,
                        format!("state: `{key}` is only used by `type: prefect`"),
                    );
                }
            }
            if v.lease.is_some() {
                c.err(span, "state: `lease` is only used by `type: prefect`");
            }
            StateConfig::Local {
                dir: rel(dir, v.path.as_deref().unwrap_or(".duckhour")),
            }
        }
        StateKind::Prefect => {
            if let Some(k) = &v.api_key {
                c.refs(span, "state.api_key", k);
            }
            let url = match &v.url {
                Some(u) => {
                    c.refs(u.into(), "state.url", &u.value);
                    u.value.clone()
                }
                None => {
                    c.err(span, "state: `type: prefect` needs `url`");
                    String::new()
                }
            };
            // Prefect takes lease durations of 60 s to 1 day.
            let lease = match &v.lease {
                None => std::time::Duration::from_secs(120),
                Some(l) if (60..=86_400).contains(&l.value.secs()) => {
                    std::time::Duration::from_secs(l.value.secs())
                }
                Some(l) => {
                    c.err(
                        l.into(),
                        format!("state: `lease` must be 60s to 1d, not {}", l.value),
                    );
                    std::time::Duration::from_secs(120)
                }
            };
            StateConfig::Prefect {
                url,
                lease,
                api_key: v.api_key.clone(),
                block_name: v
                    .block_name
                    .clone()
                    .unwrap_or_else(|| "{pipeline}-{job}".into()),
            }
        }
    }
}

fn source_config(
    c: &mut Checker,
    name: &str,
    s: &Spanned<SourceSpec>,
    dir: &Path,
) -> Option<SourceConfig> {
    let span: Span = s.into();
    let v = &s.value;
    for (key, val) in [
        ("url", v.url.as_ref().map(|u| u.value.as_str())),
        ("database", v.database.as_deref()),
        ("username", v.username.as_deref()),
        ("password", v.password.as_deref()),
        ("token", v.token.as_deref()),
        ("org", v.org.as_deref()),
        ("bucket", v.bucket.as_deref()),
    ] {
        if let Some(val) = val {
            c.refs(span, &format!("source `{name}`: `{key}`"), val);
        }
    }
    match v.kind {
        SourceKind::LineProtocol => {
            let Some(path) = &v.path else {
                c.err(
                    span,
                    format!("source `{name}`: `type: line_protocol` needs `path`"),
                );
                return None;
            };
            Some(SourceConfig::LineProtocol {
                path: rel(dir, &path.value),
            })
        }
        SourceKind::Influxdb => {
            let version = v.version.as_ref().map(|v| v.value).unwrap_or(1);
            if !(1..=3).contains(&version) {
                let at = v.version.as_ref().map(Span::from).unwrap_or(span);
                c.err(
                    at,
                    format!("source `{name}`: `version` must be 1, 2 or 3, not {version}"),
                );
            }
            let Some(url) = &v.url else {
                c.err(
                    span,
                    format!("source `{name}`: `type: influxdb` needs `url`"),
                );
                return None;
            };
            let need = |c: &mut Checker, key: &str, val: &Option<String>| {
                if val.is_none() {
                    c.err(
                        span,
                        format!("source `{name}`: InfluxDB v{version} needs `{key}`"),
                    );
                }
            };
            match version {
                1 | 3 => need(c, "database", &v.database),
                _ => {
                    need(c, "org", &v.org);
                    need(c, "bucket", &v.bucket);
                }
            }
            if v.password.is_some() != v.username.is_some() {
                c.err(
                    span,
                    format!("source `{name}`: `username` and `password` go together"),
                );
            }
            let max_query_hours = v.max_query_hours.as_ref().map(|m| m.value).unwrap_or(168);
            if max_query_hours == 0 {
                let at = v.max_query_hours.as_ref().map(Span::from).unwrap_or(span);
                c.err(
                    at,
                    format!("source `{name}`: `max_query_hours` must be at least 1"),
                );
            }
            Some(SourceConfig::Influx(InfluxConfig {
                version,
                url: url.value.clone(),
                database: v.database.clone(),
                retention_policy: v.retention_policy.clone(),
                org: v.org.clone(),
                bucket: v.bucket.clone(),
                username: v.username.clone(),
                password: v.password.clone(),
                token: v.token.clone(),
                format: v.format.unwrap_or(V3Format::Csv),
                timeout: v
                    .timeout
                    .unwrap_or(Duration(std::time::Duration::from_secs(300))),
                retries: v.retries.unwrap_or(3),
                max_query_hours,
            }))
        }
    }
}

fn sink_config(c: &mut Checker, name: &str, s: &Spanned<SinkSpec>) -> Option<SinkConfig> {
    let span: Span = s.into();
    let v = &s.value;
    for (key, val) in [
        ("token", v.token.as_deref()),
        ("credentials", v.credentials.as_deref()),
        ("project", v.project.as_ref().map(|p| p.value.as_str())),
        ("endpoint", v.endpoint.as_deref()),
    ] {
        if let Some(val) = val {
            c.refs(span, &format!("sink `{name}`: `{key}`"), val);
        }
    }
    match v.kind {
        SinkKind::Duckdb => {
            let Some(path) = &v.path else {
                c.err(span, format!("sink `{name}`: `type: duckdb` needs `path`"));
                return None;
            };
            c.refs(path.into(), &format!("sink `{name}`: `path`"), &path.value);
            Some(SinkConfig::Duckdb {
                path: path.value.clone(),
                token: v.token.clone(),
                schema: v.schema.clone().unwrap_or_else(|| "main".into()),
            })
        }
        SinkKind::Bigquery => {
            let (Some(project), Some(dataset)) = (&v.project, &v.dataset) else {
                c.err(
                    span,
                    format!("sink `{name}`: `type: bigquery` needs `project` and `dataset`"),
                );
                return None;
            };
            // BigQuery refuses these names at run time; the emulator does
            // not, so they are checked here against the documented rules.
            if !crate::secret::has_references(&project.value) && !bigquery_project(&project.value) {
                c.err(
                    project.into(),
                    format!("sink `{name}`: `project` `{}` is not a BigQuery project id: 6 to 30 lowercase letters, digits and `-`, starting with a letter and not ending with `-` (a domain-scoped `example.com:my-project` is allowed)", project.value),
                );
            }
            if !bigquery_id(&dataset.value) {
                c.err(
                    dataset.into(),
                    format!("sink `{name}`: `dataset` `{}` is not a BigQuery dataset id: letters, digits and `_`, at most 1,024", dataset.value),
                );
            }
            if let Some(t) = &v.table {
                if !bigquery_id(&t.value) || !is_identifier(&t.value) {
                    c.err(
                        t.into(),
                        format!("sink `{name}`: `table` `{}` must be letters, digits and `_`, not starting with a digit, at most 1,024", t.value),
                    );
                }
            }
            Some(SinkConfig::Bigquery {
                project: project.value.clone(),
                dataset: dataset.value.clone(),
                location: v.location.clone(),
                credentials: v.credentials.clone(),
                endpoint: v.endpoint.clone(),
                table: v.table.as_ref().map(|t| t.value.clone()),
            })
        }
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
    if v.jobs.is_empty() {
        c.err(span, format!("pipeline `{name}`: `jobs` is empty"));
    }
    let default_template_name = v
        .template
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_else(|| DEFAULT_TEMPLATE.into());
    if v.jobs.iter().any(|j| j.value.template.is_none()) {
        let at = v.template.as_ref().map(Span::from).unwrap_or(span);
        check_template(
            c,
            templates,
            at,
            &format!("pipeline `{name}`"),
            &default_template_name,
        );
    }
    let default_table = v.table.as_ref();
    let mut names = BTreeSet::new();
    let mut jobs = Vec::new();
    for j in &v.jobs {
        let jv = &j.value;
        let jname = &jv.name.value;
        check_name(c, (&jv.name).into(), "job", jname);
        if !names.insert(jname.clone()) {
            c.err(
                (&jv.name).into(),
                format!("pipeline `{name}`: job `{jname}` is defined twice"),
            );
        }
        // A pipeline-level template is checked once, above; a job's own one here.
        let template_name = match &jv.template {
            Some(t) => {
                check_template(c, templates, t.into(), &format!("job `{jname}`"), &t.value);
                t.value.clone()
            }
            None => default_template_name.clone(),
        };
        let table = jv.table.as_ref().or(default_table);
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
                    format!("job `{jname}`: tag `{t}` cannot be a column name; use letters, digits and `_`"),
                );
            }
        }
        let mut params: serde_json::Map<_, _> = v
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        params.extend(jv.params.iter().map(|(k, v)| (k.clone(), v.clone())));
        jobs.push(Job {
            name: jname.clone(),
            measurement: measurement.unwrap_or_default(),
            field: jv.field.clone().unwrap_or_else(|| jname.clone()),
            tags,
            template: template_name,
            table: table_name,
            params,
        });
    }
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
fn rel(dir: &Path, p: &str) -> std::path::PathBuf {
    if dir == Path::new(".") {
        std::path::PathBuf::from(p)
    } else {
        dir.join(p)
    }
}

/// A BigQuery dataset (or table) id as duckhour writes them: letters,
/// digits and `_`, 1 to 1,024 characters (BigQuery REST reference, `datasetId`).
pub fn bigquery_id(s: &str) -> bool {
    (1..=1024).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A Google Cloud project id: 6 to 30 lowercase letters, digits and `-`,
/// starting with a letter, not ending with `-`; optionally domain-scoped
/// (`example.com:my-project`).
pub fn bigquery_project(s: &str) -> bool {
    let id = match s.rsplit_once(':') {
        Some((domain, id)) => {
            if domain.is_empty()
                || !domain
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c))
            {
                return false;
            }
            id
        }
        None => s,
    };
    (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
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
    fn bigquery_names() {
        assert!(bigquery_project("duckhour-it") && bigquery_project("example.com:air-quality-1"));
        for bad in [
            "short",
            "Upper-case",
            "ends-with-",
            "1starts-digit",
            "has_underscore",
            "a-very-long-project-id-over-30-chars",
        ] {
            assert!(!bigquery_project(bad), "{bad}");
        }
        assert!(bigquery_id("air_quality_2") && bigquery_id(&"d".repeat(1024)));
        assert!(!bigquery_id("air-quality") && !bigquery_id("") && !bigquery_id(&"d".repeat(1025)));
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("pollutant_hourly"));
        assert!(!is_identifier("1abc"));
        assert!(!is_identifier("a-b"));
    }
}
