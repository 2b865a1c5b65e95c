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
