//! `pipelines.yaml`: parse (typed, with spans), validate (pure), and the
//! checked [`Config`] the commands run from.

mod config;
mod diag;
mod endpoints;
mod load;
mod models;
mod rules;
mod types;
mod validate;
mod values;

pub use config::*;
pub use diag::{did_you_mean, suggest, Diagnostic};
pub use endpoints::{bigquery_id, bigquery_project};
pub use load::{load, parse, Loaded};
pub use types::V3Format;
pub use validate::{is_identifier, validate};
pub use values::{parse_time, Duration, Hour, Span};

use std::path::Path;

use crate::template::{RenderInput, Templates};

/// Loads, validates and renders every job's template once, offline.
pub fn check(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let loaded = load(path).map_err(|d| vec![d])?;
    let config = validate(&loaded)?;
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
