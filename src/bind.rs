//! `validate`'s last check: every job's and model's SQL runs on empty
//! inputs of the right shape in the embedded DuckDB, confined as in a run,
//! so that a function the engine lacks, a misspelt column or a wrong type
//! shows before any run (rendering alone cannot tell).

use duckdb::Connection;

use crate::models::stage;
use crate::spec::{Config, Diagnostic, Hour, Model, Pipeline};
use crate::template::{quote_ident, RenderInput, Templates};
use crate::time::{keys, KeyRange};

/// Binds every template of every pipeline; one diagnostic per failure.
pub fn check(config: &Config, templates: &Templates) -> Result<(), Vec<Diagnostic>> {
    let conn = crate::duck::open()
        .and_then(|c| crate::duck::load_extensions(&c, &config.extensions).map(|_| c))
        .and_then(|c| crate::duck::confine(&c, &[]).map(|_| c))
        .map_err(|e| vec![Diagnostic::file("duckdb", e.to_string())])?;
    let mut errors = Vec::new();
    for p in config.pipelines.values() {
        bind_pipeline(&conn, config, templates, p, &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn file(config: &Config, template: &str) -> String {
    format!("{}/{template}", config.sql_label)
}

fn bind_pipeline(
    conn: &Connection,
    config: &Config,
    templates: &Templates,
    p: &Pipeline,
    errors: &mut Vec<Diagnostic>,
) {
    let start = Hour::parse("2000-01-01T00:00:00Z").expect("constant");
    for job in &p.jobs {
        let stage = quote_ident(&format!("bind_stage_{}", job.name));
        let cols: Vec<String> = std::iter::once("time TIMESTAMPTZ".to_owned())
            .chain(
                job.tags
                    .iter()
                    .map(|t| format!("{} VARCHAR", quote_ident(t))),
            )
            .chain(std::iter::once("value DOUBLE".to_owned()))
            .collect();
        let sql = templates.render(&RenderInput {
            pipeline: &p.name,
            source: &p.source,
            job,
            window_start: start,
            window_end: start.plus(1),
            staging: &stage,
        });
        // Rendering errors were reported by `template::check` already.
        let Ok(sql) = sql else { continue };
        let run = conn.execute_batch(&format!(
            "CREATE OR REPLACE TABLE {stage} ({}); CREATE OR REPLACE TABLE {} AS {sql}",
            cols.join(", "),
            quote_ident(&format!("bind_hourly_{}", job.name))
        ));
        if let Err(e) = run {
            errors.push(Diagnostic::file(
                &file(config, &job.template),
                format!(
                    "job `{}` of pipeline `{}`: its SQL fails on an empty batch: {e}",
                    job.name, p.name
                ),
            ));
        }
    }
    for m in &p.models {
        if let Err(e) = bind_model(conn, templates, p, m) {
            errors.push(Diagnostic::file(
                &file(config, &m.template),
                format!(
                    "model `{}` of pipeline `{}`: its SQL fails on empty hourly rows: {e}",
                    m.name, p.name
                ),
            ));
        }
    }
    let _ = conn.execute_batch("ROLLBACK");
}

/// Runs a model on empty inputs shaped like its jobs' results.
fn bind_model(
    conn: &Connection,
    templates: &Templates,
    p: &Pipeline,
    m: &Model,
) -> Result<(), String> {
    let shapes: Vec<String> = m
        .jobs
        .iter()
        .map(|j| format!("SELECT * FROM {}", quote_ident(&format!("bind_hourly_{j}"))))
        .collect();
    if shapes.is_empty() {
        return Ok(());
    }
    let hourly = quote_ident(&format!("bind_model_hourly_{}", m.name));
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TABLE {hourly} AS {} LIMIT 0",
        shapes.join(" UNION ALL BY NAME ")
    ))
    .map_err(|e| format!("its jobs' results do not combine: {e}"))?;
    stage::empty_inputs(conn, m, &hourly).map_err(|e| e.to_string())?;
    for u in &m.depends_on {
        let view = quote_ident(&stage::input_view(m, u));
        conn.execute_batch(&format!(
            "CREATE OR REPLACE VIEW {view} AS SELECT * FROM {}",
            quote_ident(&format!("bind_out_{u}"))
        ))
        .map_err(|e| format!("model `{u}`, which it reads, did not bind: {e}"))?;
    }
    let r = KeyRange {
        grain: m.grain,
        from: keys::key_of(
            m.grain,
            m.zone,
            Hour::parse("2000-01-01T00:00:00Z").expect("constant"),
        ),
        to: 0,
    };
    let r = KeyRange {
        to: r.from + 1,
        ..r
    };
    let sql = stage::render(templates, &p.name, m, r).map_err(|d| d.to_string())?;
    let out = stage::compute(conn, m, &sql, r)
        .map_err(|e| e.to_string())
        .and_then(|_| {
            // Its shape, for the models that read it.
            conn.execute_batch(&format!(
                "CREATE OR REPLACE TABLE {} AS SELECT * FROM {} LIMIT 0",
                quote_ident(&format!("bind_out_{}", m.name)),
                quote_ident(&stage::result_table(m))
            ))
            .map_err(|e| e.to_string())
        });
    stage::clear(conn, m);
    out
}
