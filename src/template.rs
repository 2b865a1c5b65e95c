//! SQL templates: a minijinja environment over `sql/`.
//!
//! Templates see `window_start`, `window_end` (RFC 3339 UTC), `job` (name,
//! measurement, field, tags, table, params), `pipeline`, `source`, `params`,
//! `tags` and `staging` (the staging view, already quoted). Filters:
//! `ident` quotes an identifier, `sqlstr` a string literal, `ts` makes a
//! `TIMESTAMPTZ` literal. Undefined variables are errors, so a typo in a
//! template fails `validate` instead of producing wrong SQL.
//!
//! [`check`] is `validate`'s offline part: the spec loaded and validated,
//! then every job's template rendered once.

use std::path::{Path, PathBuf};

use minijinja::{context, path_loader, Environment, UndefinedBehavior, Value};

use crate::spec::{Config, Diagnostic, Hour, Job, Span};

/// The environment over one template directory.
pub struct Templates {
    env: Environment<'static>,
    dir: PathBuf,
    /// How messages name the directory (as the spec wrote it).
    label: String,
}

/// What one rendering is about.
pub struct RenderInput<'a> {
    pub pipeline: &'a str,
    pub source: &'a str,
    pub job: &'a Job,
    pub window_start: Hour,
    pub window_end: Hour,
    pub staging: &'a str,
}

/// What a model's template sees besides the model itself.
pub struct ModelInput<'a> {
    pub pipeline: &'a str,
    pub model: &'a crate::spec::Model,
    /// The table of hourly rows it reads (`hours_from` to `hours_to`).
    pub hourly: &'a str,
    /// The table of UTC hours with their local day, year and day length.
    pub calendar: &'a str,
    /// Per job (`pollutant`), the number `h` of its newest loaded hour.
    pub newest: &'a str,
    /// Per model of `depends_on`, the relation of its rows for the hours read.
    pub inputs: &'a std::collections::BTreeMap<String, String>,
    /// The output keys to compute, as SQL literals of the key column's type.
    pub keys_from: String,
    pub keys_to: String,
    /// The keys' own hours `[from, to)` as hour numbers since the epoch
    /// (`h`), lookback excluded.
    pub key_hours: (i64, i64),
    /// The local calendar years the keys' hours fall in, as a list of
    /// `{year, first_h, hours}` (built by the models, which own the keys).
    pub years: serde_json::Value,
    pub hours_from: Hour,
    pub hours_to: Hour,
}

impl Templates {
    pub fn new(dir: &Path, label: &str) -> Templates {
        let mut env = Environment::new();
        env.set_loader(path_loader(dir));
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(false);
        env.add_filter("ident", |s: String| quote_ident(&s));
        env.add_filter("sqlstr", |v: Value| quote_literal(&v.to_string()));
        env.add_filter("ts", |s: String| {
            format!("TIMESTAMPTZ '{}'", s.replace('\'', "''"))
        });
        // A template refuses what it cannot compute (e.g. a parameter
        // needing more lookback than the model declares).
        env.add_function("fail", |msg: String| -> Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        });
        Templates {
            env,
            dir: dir.to_path_buf(),
            label: label.trim_end_matches('/').to_owned(),
        }
    }

    /// Renders `job.template` for a window; errors name the template and line.
    pub fn render(&self, input: &RenderInput) -> Result<String, Diagnostic> {
        let job = input.job;
        let tmpl = self
            .env
            .get_template(&job.template)
            .map_err(|e| self.diagnostic(&job.template, &e))?;
        let params = Value::from_serialize(&job.params);
        let ctx = context! {
            window_start => input.window_start.to_string(),
            window_end => input.window_end.to_string(),
            pipeline => input.pipeline,
            source => input.source,
            staging => input.staging,
            tags => job.tags.clone(),
            params => params.clone(),
            job => context! {
                name => job.name.clone(),
                measurement => job.measurement.clone(),
                field => job.field.clone(),
                tags => job.tags.clone(),
                table => job.table.clone(),
                template => job.template.clone(),
                params => params,
            },
        };
        let sql = tmpl
            .render(ctx)
            .map_err(|e| self.diagnostic(&job.template, &e))?;
        Ok(tidy(&sql))
    }

    /// Renders a model's template for the output keys `[keys_from, keys_to)`.
    pub fn render_model(&self, input: &ModelInput) -> Result<String, Diagnostic> {
        let m = input.model;
        let tmpl = self
            .env
            .get_template(&m.template)
            .map_err(|e| self.diagnostic(&m.template, &e))?;
        let params = Value::from_serialize(&m.params);
        let ctx = context! {
            pipeline => input.pipeline,
            hourly => input.hourly,
            calendar => input.calendar,
            newest => input.newest,
            inputs => Value::from_serialize(input.inputs),
            key => m.grain.key_column(),
            keys_from => input.keys_from.clone(),
            keys_to => input.keys_to.clone(),
            key_hours_from => input.key_hours.0,
            key_hours_to => input.key_hours.1,
            years => Value::from_serialize(&input.years),
            hours_from => input.hours_from.to_string(),
            hours_to => input.hours_to.to_string(),
            tags => m.tags.clone(),
            jobs => m.jobs.clone(),
            params => params.clone(),
            model => context! {
                name => m.name.clone(),
                grain => m.grain.word(),
                lookback_hours => m.lookback_hours,
                timezone => m.zone.to_string(),
                table => m.table.clone(),
                template => m.template.clone(),
                jobs => m.jobs.clone(),
                params => params,
            },
        };
        let sql = tmpl
            .render(ctx)
            .map_err(|e| self.diagnostic(&m.template, &e))?;
        Ok(tidy(&sql))
    }

    fn diagnostic(&self, template: &str, e: &minijinja::Error) -> Diagnostic {
        // The error may come from an included template: name that one.
        let name = e.name().unwrap_or(template);
        let file = format!("{}/{}", self.label, name);
        let mut msg = match e.detail() {
            Some(d) => format!("{}: {d}", kind_text(e)),
            None => kind_text(e),
        };
        if name != template {
            msg.push_str(&format!(" (included from `{template}`)"));
        }
        let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        match e.line() {
            Some(line) => {
                let col = e
                    .range()
                    .and_then(|r| text.get(..r.start))
                    .map(|before| before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1)
                    .unwrap_or(1);
                Diagnostic::at(&file, &text, Span { line, col }, msg)
            }
            None => Diagnostic::file(&file, msg),
        }
    }
}

fn kind_text(e: &minijinja::Error) -> String {
    use minijinja::ErrorKind::*;
    match e.kind() {
        SyntaxError => "template syntax error".into(),
        UndefinedError => "undefined value in template".into(),
        TemplateNotFound => "template not found".into(),
        UnknownFilter => "unknown filter".into(),
        UnknownFunction => "unknown function".into(),
        other => format!("template error: {other}"),
    }
}

/// Drops trailing spaces and runs of blank lines left by template tags.
fn tidy(sql: &str) -> String {
    let mut out = String::new();
    let mut blank = false;
    for line in sql.lines() {
        let l = line.trim_end();
        if l.is_empty() {
            if !blank && !out.is_empty() {
                out.push('\n');
            }
            blank = true;
            continue;
        }
        blank = false;
        out.push_str(l);
        out.push('\n');
    }
    out.trim_end().to_owned()
}

/// A double-quoted SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A single-quoted SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Loads, validates and renders every job's template once, offline.
pub fn check(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let loaded = crate::spec::load(path).map_err(|d| vec![d])?;
    let config = crate::spec::validate(&loaded)?;
    check_templates(&config, &config.templates())?;
    Ok(config)
}

impl Config {
    /// The template environment over `sql_dir`.
    pub fn templates(&self) -> Templates {
        Templates::new(&self.sql_dir, &self.sql_label)
    }
}

/// Renders each job's template for a sample window, so template errors show at `validate`.
pub fn check_templates(config: &Config, templates: &Templates) -> Result<(), Vec<Diagnostic>> {
    let mut errors: Vec<Diagnostic> = Vec::new();
    let start = Hour::parse("2000-01-01T00:00:00Z").expect("constant");
    for p in config.pipelines.values() {
        for job in &p.jobs {
            let input = RenderInput {
                pipeline: &p.name,
                source: &p.source,
                job,
                window_start: start,
                window_end: start.plus(1),
                staging: "\"staging\"",
            };
            if let Err(d) = templates.render(&input) {
                if !errors.contains(&d) {
                    errors.push(d);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(template: &str) -> Job {
        let mut params = serde_json::Map::new();
        params.insert("min_coverage".into(), serde_json::json!(0.75));
        Job {
            name: "co".into(),
            measurement: "air_quality".into(),
            field: "co".into(),
            tags: vec!["station".into()],
            template: template.into(),
            table: "pollutant_hourly".into(),
            params,
        }
    }

    fn render(files: &[(&str, &str)], template: &str) -> Result<String, Diagnostic> {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        let t = Templates::new(dir.path(), "sql");
        let j = job(template);
        t.render(&RenderInput {
            pipeline: "p",
            source: "s",
            job: &j,
            window_start: Hour::parse("2026-11-20T00:00:00Z").unwrap(),
            window_end: Hour::parse("2026-11-20T02:00:00Z").unwrap(),
            staging: "\"stage_co\"",
        })
    }

    #[test]
    fn renders_context_filters_includes_and_macros() {
        let out = render(
            &[
                ("m.sql", "{% macro cov(n) %}{{ n }} / 60.0{% endmacro %}"),
                ("cols.sql", "{% for t in tags %}{{ t | ident }}, {% endfor %}"),
                (
                    "t.sql",
                    "{% import 'm.sql' as m %}SELECT {{ job.name | sqlstr }}, {% include 'cols.sql' %}{{ m.cov('n') }}\n\n\nFROM {{ staging }} WHERE time >= {{ window_start | ts }} AND {{ params.min_coverage }} < 1",
                ),
            ],
            "t.sql",
        )
        .unwrap();
        assert_eq!(
            out,
            "SELECT 'co', \"station\", n / 60.0\n\nFROM \"stage_co\" WHERE time >= TIMESTAMPTZ '2026-11-20T00:00:00Z' AND 0.75 < 1"
        );
    }

    #[test]
    fn syntax_error_names_template_and_line() {
        let e = render(&[("t.sql", "SELECT 1\nFROM {{ staging \n")], "t.sql").unwrap_err();
        assert_eq!(e.file, "sql/t.sql");
        assert_eq!(e.span.map(|s| s.line), Some(2));
        assert!(
            e.message.starts_with("template syntax error"),
            "{}",
            e.message
        );
    }

    #[test]
    fn undefined_variable_is_an_error() {
        let e = render(&[("t.sql", "SELECT {{ windw_start }}")], "t.sql").unwrap_err();
        assert!(
            e.message.starts_with("undefined value in template"),
            "{}",
            e.message
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
