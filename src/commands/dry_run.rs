//! `dry-run`: the plan, the exact source queries and the rendered SQL. Reads
//! the checkpoints; writes nothing, contacts no source or sink.

use crate::cli::DryRunArgs;
use crate::error::{Error, EXIT_OK};
use crate::plan::Plan;
use crate::runner::{plan_over, sharing, Mode};
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
    let mut out = header(config, p, mode, now);
    let jobs = job_plans(p, a, mode, now, &state, &rt)?;
    let source = Source::new(&p.source, &config.sources[&p.source]);
    let templates = config.templates();
    // Which jobs read one query together, as the run will.
    let refs: Vec<(&Job, &Plan)> = jobs.iter().map(|(j, _, plan)| (*j, plan)).collect();
    let groups = sharing(&refs);
    for (i, (job, cp, plan)) in jobs.iter().enumerate() {
        out.push_str(&job_part(p, job, cp, plan));
        let Some(first) = plan.batches.first() else {
            out.push_str("  nothing to do\n");
            continue;
        };
        let group = groups.iter().find(|g| g.contains(&i)).expect("grouped");
        if group.len() > 1 && group[0] != i {
            out.push_str(&format!(
                "  source queries: shared with job `{}` (above)\n",
                jobs[group[0]].0.name
            ));
        } else {
            let members: Vec<&Job> = group.iter().map(|&k| jobs[k].0).collect();
            out.push_str(&source_queries(&source, &members, *first));
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
        if plan.batches.len() > 1 {
            out.push_str("  (other batches differ only in their time bounds)\n");
        }
    }
    let pending: Vec<Result<Ranges<Hour>, StateError>> = p
        .models
        .iter()
        .map(|m| match &state {
            Ok(s) => rt.block_on(s.pending(&p.name, &m.state_key())),
            Err(e) => Err(StateError::Config(e.to_string())),
        })
        .collect();
    out.push_str(&models_part(p, &jobs, &pending, &templates)?);
    print!("{out}");
    Ok(EXIT_OK)
}

/// Each selected job with its checkpoint as said and its plan. A local
/// store that cannot be read fails the dry-run; a Prefect one is said.
fn job_plans<'a>(
    p: &'a Pipeline,
    a: &DryRunArgs,
    mode: Mode,
    now: chrono::DateTime<chrono::Utc>,
    state: &Result<State, StateError>,
    rt: &tokio::runtime::Runtime,
) -> Result<Vec<(&'a Job, String, Plan)>, Error> {
    let mut jobs = Vec::new();
    for job in p
        .jobs
        .iter()
        .filter(|j| a.filter.jobs.is_empty() || a.filter.jobs.contains(&j.name))
    {
        let read = match &state {
            Ok(s) => rt.block_on(async {
                let cp = s.checkpoint(&p.name, &job.name).await?;
                Ok((cp, s.progress(&p.name, &job.name).await?))
            }),
            Err(e) => Err(StateError::Config(e.to_string())),
        };
        let (checkpoint, progress, cp) = match read {
            Ok((Some(c), progress)) => (Some(c), progress, c.to_string()),
            Ok((None, progress)) => (None, progress, "none".to_owned()),
            Err(e) if matches!(p.state, StateConfig::Local { .. }) => return Err(e.into()),
            Err(StateError::Config(m)) => (None, Default::default(), format!("not read ({m})")),
            Err(e) => (None, Default::default(), format!("not read ({e})")),
        };
        // As a run would: each sink from its position, those waiting out
        // their backoff left out.
        let at = progress.positions(checkpoint, &p.sinks);
        let waiting = crate::health::Health::from_backoff([&progress], now);
        let mut up: Vec<&str> = (p.sinks.iter().map(String::as_str))
            .filter(|s| waiting.is_up(s))
            .collect();
        if up.is_empty() {
            up = p.sinks.iter().map(String::as_str).collect();
        }
        let (plan, _) = plan_over(p, mode, now, checkpoint, &at, &up);
        let cp = cp + &sinks_note(&progress, &at, &up);
        jobs.push((job, cp, plan));
    }
    Ok(jobs)
}

/// The sinks' positions, when they differ, and those a run would leave
/// out (waiting out their backoff): ` (sinks: wh at …, bq at …, not tried
/// until …)`; empty when every sink stands at the checkpoint.
fn sinks_note(
    progress: &crate::state::Progress,
    at: &std::collections::BTreeMap<String, Option<crate::spec::Hour>>,
    up: &[&str],
) -> String {
    let same = at.values().collect::<std::collections::BTreeSet<_>>().len() <= 1;
    if same && up.len() == at.len() {
        return String::new();
    }
    let each: Vec<String> = at
        .iter()
        .map(|(s, p)| {
            let mut t = format!("{s} at {}", crate::runner::checkpoint_text(*p));
            if let (false, Some(d)) = (up.contains(&s.as_str()), progress.down(s)) {
                t.push_str(&format!(
                    ", not tried until {}",
                    d.next.format("%Y-%m-%dT%H:%M:%SZ")
                ));
            }
            t
        })
        .collect();
    format!(" (sinks: {})", each.join(", "))
}

/// What runs where: the mode, the source, the sinks, the state.
fn header(config: &Config, p: &Pipeline, mode: Mode, now: chrono::DateTime<chrono::Utc>) -> String {
    let what = match mode {
        Mode::Run => "run".to_owned(),
        Mode::Backfill { from, to } => format!("backfill [{from}, {to})"),
    };
    let mut out = format!(
        "dry-run: {what} of pipeline `{}` at {} (nothing is written)\n",
        p.name,
        now.format("%Y-%m-%dT%H:%M:%SZ")
    );
    out.push_str(&format!("source: {}\n", p.source));
    for s in &p.sinks {
        out.push_str(&format!("sink: {} ({})\n", s, config.sinks[s].describe()));
    }
    out.push_str(&format!("state: {}\n", State::describe(&p.state)));
    out
}

/// A job's plan: its checkpoint `cp`, hours and batches, and its table.
fn job_part(p: &Pipeline, job: &Job, cp: &str, plan: &Plan) -> String {
    let mut out = format!(
        "\njob `{}`: checkpoint {cp}; last complete hour {}\n",
        job.name, plan.last_complete
    );
    let left = if plan.left_hours > 0 {
        format!(
            "; {} more left for later runs (max_hours_per_run)",
            plan.left_hours
        )
    } else {
        String::new()
    };
    out.push_str(&format!(
        "  hours: {} ({} new, {} redone){left}\n",
        plan.total_hours(),
        plan.new_hours,
        plan.redo_hours,
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
    out
}

/// The source queries of the first batch `first` of a group of jobs that
/// read one query together, and the count that sizes a long batch.
fn source_queries(source: &Source, group: &[&Job], first: crate::plan::Batch) -> String {
    let fetch = Fetch::of(group.iter().copied());
    let queries = source.queries(&fetch, first);
    let shared = if group.len() > 1 {
        let names: Vec<String> = group.iter().map(|j| format!("`{}`", j.name)).collect();
        format!(", one for jobs {}", names.join(", "))
    } else {
        String::new()
    };
    let mut out = format!("  source queries of batch 1 ({}{shared}):\n", queries.len());
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
    out
}

/// Every model's part: what the state says is already pending (`pending`,
/// in the spec's order), and what the run would mark and recompute.
fn models_part(
    p: &Pipeline,
    jobs: &[(&Job, String, Plan)],
    pending: &[Result<Ranges<Hour>, StateError>],
    templates: &crate::template::Templates,
) -> Result<String, Error> {
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
    let mut out = String::new();
    for ((m, hours), pending) in p.models.iter().zip(&marked).zip(pending) {
        let pending_text = match pending {
            Ok(r) if r.is_empty() => "none".to_owned(),
            Ok(r) => r.to_string(),
            Err(e) => format!("not read ({e})"),
        };
        out.push_str(&model_plan(p, m, hours, &pending_text, templates)?);
    }
    Ok(out)
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
    let ranges = crate::models::plan::affected(m, hours);
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
