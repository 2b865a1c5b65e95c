//! `dry-run`: the plan, the exact source queries and the rendered SQL. Reads
//! the checkpoints; writes nothing, contacts no source or sink.

use crate::cli::DryRunArgs;
use crate::error::{Error, EXIT_OK};
use crate::plan::Plan;
use crate::runner::{plan_for, sharing, Mode};
use crate::sources::{Fetch, Source};
use crate::spec::{Config, Hour, Job, Model, Pipeline, StateConfig};
use crate::state::{State, StateError};
use crate::template::RenderInput;
use crate::time::Ranges;

pub fn dry_run(config: &Config, a: &DryRunArgs) -> Result<i32, Error> {
    let p = super::pipeline(config, &a.pipeline)?;
    super::check_jobs(p, &a.filter.jobs)?;
    let now = super::now(&a.now)?;
    let mode = match (&a.from, &a.to) {
        (Some(f), Some(t)) => {
            let (from, to) = super::range(f, t)?;
            Mode::Backfill { from, to }
        }
        _ => Mode::Run,
    };
    // Checkpoints are read (never written); a Prefect store that cannot be
    // read says why in the plan instead of failing the dry-run.
    let state = State::open_for_reading(&p.state);
    let rt = super::run::runtime()?;
    let source = Source::new(&p.source, &config.sources[&p.source]);
    let templates = config.templates();

    let mut out = String::new();
    let what = match mode {
        Mode::Run => "run".to_owned(),
        Mode::Backfill { from, to } => format!("backfill [{from}, {to})"),
    };
    out.push_str(&format!(
        "dry-run: {what} of pipeline `{}` at {} (nothing is written)\n",
        p.name,
        now.format("%Y-%m-%dT%H:%M:%SZ")
    ));
    out.push_str(&format!("source: {}\n", p.source));
    for s in &p.sinks {
        out.push_str(&format!("sink: {} ({})\n", s, config.sinks[s].describe()));
    }
    out.push_str(&format!("state: {}\n", State::describe(&p.state)));
    let mut jobs = Vec::new();
    for job in p
        .jobs
        .iter()
        .filter(|j| a.filter.jobs.is_empty() || a.filter.jobs.contains(&j.name))
    {
        let read = match &state {
            Ok(s) => rt.block_on(s.checkpoint(&p.name, &job.name)),
            Err(e) => Err(StateError::Config(e.to_string())),
        };
        let (checkpoint, cp) = match read {
            Ok(Some(c)) => (Some(c), c.to_string()),
            Ok(None) => (None, "none".to_owned()),
            Err(e) if matches!(p.state, StateConfig::Local { .. }) => return Err(e.into()),
            Err(StateError::Config(m)) => (None, format!("not read ({m})")),
            Err(e) => (None, format!("not read ({e})")),
        };
        jobs.push((job, cp, plan_for(p, mode, now, checkpoint)));
    }
    // Which jobs read one query together, as the run will.
    let refs: Vec<(&Job, &Plan)> = jobs.iter().map(|(j, _, plan)| (*j, plan)).collect();
    let groups = sharing(&refs);
    let group_of = |i: usize| groups.iter().find(|g| g.contains(&i)).expect("grouped");
    for (i, (job, cp, plan)) in jobs.iter().enumerate() {
        let job = *job;
        out.push_str(&format!(
            "\njob `{}`: checkpoint {cp}; last complete hour {}\n",
            job.name, plan.last_complete
        ));
        out.push_str(&format!(
            "  hours: {} ({} new, {} redone){}\n",
            plan.total_hours(),
            plan.new_hours,
            plan.redo_hours,
            if plan.left_hours > 0 {
                format!(
                    "; {} more left for later runs (max_hours_per_run)",
                    plan.left_hours
                )
            } else {
                String::new()
            }
        ));
        let n = plan.batches.len();
        for (i, b) in plan.batches.iter().enumerate() {
            out.push_str(&format!("  batch {}/{n}: {b} {} hours\n", i + 1, b.hours()));
        }
        out.push_str(&format!(
            "  table `{}` in sinks: {}\n",
            job.table,
            p.sinks.join(", ")
        ));
        let Some(first) = plan.batches.first() else {
            out.push_str("  nothing to do\n");
            continue;
        };
        let group = group_of(i);
        if group.len() > 1 && group[0] != i {
            out.push_str(&format!(
                "  source queries: shared with job `{}` (above)\n",
                jobs[group[0]].0.name
            ));
        } else {
            let fetch = Fetch::of(group.iter().map(|&k| jobs[k].0));
            let queries = source.queries(&fetch, *first);
            let shared = if group.len() > 1 {
                let names: Vec<String> = group
                    .iter()
                    .map(|&k| format!("`{}`", jobs[k].0.name))
                    .collect();
                format!(", one for jobs {}", names.join(", "))
            } else {
                String::new()
            };
            out.push_str(&format!(
                "  source queries of batch 1 ({}{shared}):\n",
                queries.len()
            ));
            for q in &queries {
                out.push_str(&indent(q, "    "));
            }
            let hour = crate::plan::Batch {
                from: first.from,
                to: first.from.plus(1),
            };
            if let Some(q) = (first.hours() > crate::plan::UNSIZED_HOURS)
                .then(|| source.estimate_query(&fetch, hour))
                .flatten()
            {
                out.push_str(&format!(
                    "  sized first by a count of its first hour (a batch stays within {} values):\n",
                    crate::plan::BATCH_VALUES
                ));
                out.push_str(&indent(&q, "    "));
            }
        }
        let sql = templates
            .render(&RenderInput {
                pipeline: &p.name,
                source: &p.source,
                job,
                window_start: first.from,
                window_end: first.to,
                staging: &crate::duck::staging_table(&job.name),
            })
            .map_err(|d| Error::Spec(vec![d]))?;
        out.push_str(&format!("  sql of batch 1 (`{}`):\n", job.template));
        out.push_str(&indent(&sql, "    "));
        if n > 1 {
            out.push_str("  (other batches differ only in their time bounds)\n");
        }
    }
    // What the state says is already pending, and what the run would mark.
    let pending: Vec<Result<Ranges<Hour>, StateError>> = p
        .models
        .iter()
        .map(|m| match &state {
            Ok(s) => rt.block_on(s.pending(&p.name, &m.state_key())),
            Err(e) => Err(StateError::Config(e.to_string())),
        })
        .collect();
    let loads = |m: &Model| -> Ranges<Hour> {
        jobs.iter()
            .filter(|(j, ..)| m.jobs.contains(&j.name))
            .filter_map(|(_, _, plan)| Some((plan.batches.first()?.from, plan.batches.last()?.to)))
            .collect()
    };
    let held = |m: &Model| {
        let i = p.models.iter().position(|x| x.name == m.name);
        i.and_then(|i| pending[i].as_ref().ok().cloned())
            .unwrap_or_default()
    };
    let models: Vec<&Model> = p.models.iter().collect();
    let marked = crate::models::plan::marked(&models, &loads, &held);
    for ((m, hours), pending) in p.models.iter().zip(&marked).zip(&pending) {
        let pending_text = match pending {
            Ok(r) if r.is_empty() => "none".to_owned(),
            Ok(r) => r.to_string(),
            Err(e) => format!("not read ({e})"),
        };
        out.push_str(&model_plan(p, m, hours, &pending_text, &templates)?);
    }
    print!("{out}");
    Ok(EXIT_OK)
}

/// A model's part of the plan: the keys the hours touch, what they read,
/// and the SQL of the first range.
fn model_plan(
    p: &Pipeline,
    m: &Model,
    hours: &Ranges<Hour>,
    pending: &str,
    templates: &crate::template::Templates,
) -> Result<String, Error> {
    let zone = match m.grain {
        crate::time::Grain::Hour => String::new(),
        _ => format!(" in {}", m.zone),
    };
    let mut out = format!(
        "\nmodel `{}`: {} keys{zone}, lookback {}h, reads {} -> table `{}` in sinks: {}\n  pending hours in the state: {pending}\n",
        m.name,
        m.grain.word(),
        m.lookback_hours,
        m.inputs_text(),
        m.table,
        p.sinks.join(", ")
    );
    let ranges = crate::models::step::affected(m, hours);
    let Some(first) = ranges.first() else {
        out.push_str("  nothing to recompute\n");
        return Ok(out);
    };
    for r in &ranges {
        let (a, b) = crate::time::keys::inputs(m.zone, m.lookback_hours, *r);
        out.push_str(&format!(
            "  recomputes {r} from the hourly rows of [{a}, {b})\n"
        ));
    }
    let sql = crate::models::stage::render(templates, &p.name, m, *first)
        .map_err(|d| Error::Spec(vec![d]))?;
    out.push_str(&format!("  sql of the first range (`{}`):\n", m.template));
    out.push_str(&indent(&sql, "    "));
    Ok(out)
}

fn indent(text: &str, pad: &str) -> String {
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}
