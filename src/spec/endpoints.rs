//! Validation of the spec's `state:`, `sources:` and `sinks:` blocks:
//! each kind's required keys, paths made relative to the spec's directory,
//! `${env:}`/`${secret:}` references, and BigQuery's documented name rules.

use std::path::Path;

use serde_saphyr::Spanned;

use super::config::*;
use super::types::*;
use super::validate::{is_identifier, rel, Checker};
use super::values::{Duration, Span};

/// `state:` with its defaults; errors reported to `c`.
pub(super) fn state_config(c: &mut Checker, s: &Spanned<StateSpec>, dir: &Path) -> StateConfig {
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

/// Source `name`, or `None` after reporting why not.
pub(super) fn source_config(
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
        SourceKind::Influxdb => influx_config(c, name, v, span),
    }
}

/// An InfluxDB source: its version's required keys, credentials in pairs,
/// and defaults.
fn influx_config(c: &mut Checker, name: &str, v: &SourceSpec, span: Span) -> Option<SourceConfig> {
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

/// Sink `name`, or `None` after reporting why not.
pub(super) fn sink_config(
    c: &mut Checker,
    name: &str,
    s: &Spanned<SinkSpec>,
) -> Option<SinkConfig> {
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
}
