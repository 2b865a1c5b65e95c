//! The model path of a run: lease the models whose input the run changes,
//! mark the hours about to be loaded as pending before any sink is
//! written, and after the jobs recompute them, each after the models it
//! reads and side by side otherwise (see [`crate::models`] for what a
//! model is and how a range is recomputed).

use std::sync::{Arc, Condvar, Mutex};

use chrono::Utc;
use tracing::Instrument;

use super::{hostname, JobOutcome, Mode, Outcomes, Planned, Shared};
use crate::error::{JobError, Leased};
use crate::models::plan;
use crate::spec::Hour;
use crate::state::{Holder, Lease, StateError};
use crate::time::Ranges;

pub(super) fn holder(run_id: &str) -> Holder {
    Holder {
        pid: std::process::id(),
        host: hostname(),
        since: Utc::now(),
        run_id: run_id.to_owned(),
    }
}

/// The hours a planned job loads in this run, as one range.
fn hours_of(job: &str, planned: &[Planned]) -> Option<(Hour, Hour)> {
    planned
        .iter()
        .find(|pl| pl.job.name == job)
        .and_then(|pl| Some((pl.plan.batches.first()?.from, pl.plan.batches.last()?.to)))
}

/// Leases the models this run touches ([`plan::touched`]: those reading a
/// job with hours to load or named by `--model`, those reading them, those
/// left with pending hours) and marks their hours pending. A model that
/// cannot be leased or marked fails the jobs that read it: loading their
/// hours would leave its products stale.
pub(super) async fn lease_models(
    sh: &Shared,
    planned: &mut Vec<Planned>,
    outcomes: &mut Outcomes,
    holder: &Holder,
) -> Vec<(crate::spec::Model, Lease)> {
    let p = &sh.pipeline;
    let mut models = touched(sh, planned).await;
    // Leases in name order, so that two runs cannot wait for each other.
    models.sort_by(|a, b| a.model.name.cmp(&b.model.name));
    let mut leased: Vec<(&crate::spec::Model, Lease)> = Vec::new();
    let keys: Vec<(String, bool)> = models
        .iter()
        .map(|t| (t.model.state_key(), sh.opts.wait && !t.pending_only))
        .collect();
    let taken = sh.state.lease_all(&p.name, &keys, holder).await;
    for (t, taken) in models.into_iter().zip(taken) {
        match taken {
            Ok(lease) => leased.push((t.model, lease)),
            // Busy: the other run finishes them.
            Err(StateError::Busy { .. }) if t.pending_only => {}
            Err(e) => fail_model(t.model, e, planned, outcomes).await,
        }
    }
    let keys: Vec<String> = leased.iter().map(|(m, _)| m.state_key()).collect();
    if let Err(e) = sh.state.load(&p.name, &keys).await {
        for (m, lease) in leased {
            lease.release().await;
            fail_model(m, e.clone(), planned, outcomes).await;
        }
        return Vec::new();
    }
    mark(sh, leased, planned, outcomes).await
}

/// The models this run touches. Pending hours decide for those no job of
/// this run feeds (unless only some models were asked for): read without
/// their leases, here only.
async fn touched<'a>(sh: &'a Shared, planned: &[Planned]) -> Vec<plan::Touched<'a>> {
    let p = &sh.pipeline;
    let loads_job = |j: &str| hours_of(j, planned).is_some();
    let mut has_pending = std::collections::HashSet::new();
    if sh.opts.models.is_empty() {
        for m in &p.models {
            let key = m.state_key();
            let waiting = sh
                .state
                .pending(&p.name, &key)
                .await
                .is_ok_and(|r| !r.is_empty())
                || sh
                    .state
                    .owed(&p.name, &key)
                    .await
                    .is_ok_and(|o| !o.is_empty());
            if !plan::changes(m, &loads_job, &[]) && waiting {
                has_pending.insert(m.name.clone());
            }
        }
    }
    plan::touched(&p.models, &loads_job, &sh.opts.models, &|m| {
        has_pending.contains(&m.name)
    })
}

/// Marks, under each model's lease, its pending hours once this run is
/// planned ([`plan::marked`]), in the spec's order (a model after those it
/// reads); the models marked, with their leases. Hours every sink taking
/// writes loads are pending for all of them; hours only some load (a sink
/// catching up) are owed to those alone, so the others' products are not
/// written again.
async fn mark(
    sh: &Shared,
    mut leased: Vec<(&crate::spec::Model, Lease)>,
    planned: &mut Vec<Planned>,
    outcomes: &mut Outcomes,
) -> Vec<(crate::spec::Model, Lease)> {
    let p = &sh.pipeline;
    leased.sort_by_key(|(m, _)| p.models.iter().position(|x| x.name == m.name));
    let mut read = Vec::new();
    for (m, lease) in leased {
        let key = m.state_key();
        let state = async {
            let pending = sh.state.pending(&p.name, &key).await?;
            let owed = sh.state.owed(&p.name, &key).await?;
            Ok::<_, StateError>((pending, owed))
        };
        match state.await {
            Ok((pending, owed)) => read.push((m, lease, pending, owed)),
            Err(e) => {
                lease.release().await;
                fail_model(m, e, planned, outcomes).await;
            }
        }
    }
    let up: Vec<String> = sh.up().map(|s| s.name().to_owned()).collect();
    let loads = Loads {
        sh,
        planned,
        up: &up,
    };
    let refs: Vec<&crate::spec::Model> = read.iter().map(|(m, ..)| *m).collect();
    let find = |m: &crate::spec::Model| read.iter().find(|(x, ..)| x.name == m.name);
    let held = |m: &crate::spec::Model| find(m).map(|r| r.2.clone()).unwrap_or_default();
    let hours = plan::marked(&refs, &|m| loads.common(m), &held);
    let mut owed: Vec<crate::state::Owed> = read.iter().map(|r| r.3.clone()).collect();
    for s in &up {
        let was = |m: &crate::spec::Model| {
            let r = find(m).and_then(|r| r.3.get(s).cloned());
            r.unwrap_or_default()
        };
        let theirs = plan::marked(&refs, &|m| loads.only(m, s), &was);
        for (o, r) in owed.iter_mut().zip(theirs) {
            if !r.is_empty() {
                o.insert(s.clone(), r);
            }
        }
    }
    let mut marked = Vec::new();
    for ((m, lease, before, owed_before), (after, owed)) in
        read.into_iter().zip(hours.into_iter().zip(owed))
    {
        let key = m.state_key();
        let written = async {
            // Both durable before any sink is written.
            if owed != owed_before {
                sh.state.set_owed(&p.name, &key, &owed).await?;
            }
            if after != before {
                sh.state.set_pending(&p.name, &key, &after).await?;
            }
            Ok::<_, StateError>(())
        };
        if let Err(e) = written.await {
            lease.release().await;
            fail_model(m, e, planned, outcomes).await;
            continue;
        }
        marked.push((m.clone(), lease));
    }
    marked
}

/// The hours this run loads for a model's jobs, per sink taking writes.
struct Loads<'a> {
    sh: &'a Shared,
    planned: &'a [Planned],
    up: &'a [String],
}

impl Loads<'_> {
    /// The hours `sink` loads for `m`'s jobs.
    fn of(&self, m: &crate::spec::Model, sink: &str) -> Ranges<Hour> {
        let mut r = Ranges::new();
        for pl in self
            .planned
            .iter()
            .filter(|pl| m.jobs.contains(&pl.job.name))
        {
            if let Some(t) = pl.sinks.takes.get(sink) {
                r.extend(t);
            }
        }
        r
    }

    /// The hours every sink loads for `m` (or the backfill's range, for a
    /// model asked for by `backfill --model`).
    fn common(&self, m: &crate::spec::Model) -> Ranges<Hour> {
        match self.sh.opts.mode {
            Mode::Backfill { from, to } if self.sh.opts.models.contains(&m.name) => {
                return Ranges::one(from, to)
            }
            _ => {}
        }
        let mut each = self.up.iter().map(|s| self.of(m, s));
        let Some(first) = each.next() else {
            return Ranges::new();
        };
        each.fold(first, |acc, r| {
            Ranges::of_points(acc.points().filter(|h| r.contains(*h)))
        })
    }

    /// The hours only some sinks load for `m`, of which `sink` is one.
    fn only(&self, m: &crate::spec::Model, sink: &str) -> Ranges<Hour> {
        let mut r = self.of(m, sink);
        for (a, b) in self.common(m).iter() {
            r.remove(a, b);
        }
        r
    }
}

/// A model that could not be leased or marked fails, with the jobs reading it.
async fn fail_model(
    m: &crate::spec::Model,
    e: StateError,
    planned: &mut Vec<Planned>,
    outcomes: &mut Outcomes,
) {
    let (own, why) = match JobError::from(e) {
        JobError::LeaseBusy { cause, .. } => (
            JobError::LeaseBusy {
                leased: Leased::Model(m.name.clone()),
                cause: cause.clone(),
            },
            JobError::LeaseBusy {
                leased: Leased::Reader(m.name.clone()),
                cause,
            },
        ),
        other => (other.clone(), other),
    };
    outcomes
        .models
        .push(crate::models::ModelOutcome::not_run(&m.name, own));
    let (reading, rest): (Vec<Planned>, Vec<Planned>) = std::mem::take(planned)
        .into_iter()
        .partition(|pl| m.jobs.contains(&pl.job.name));
    *planned = rest;
    for pl in reading {
        pl.lease.release().await;
        outcomes
            .jobs
            .push(JobOutcome::failed(&pl.job.name, why.clone()));
    }
}

/// Where this run's models send events: the pipeline's Prefect server,
/// when a model has `events:` and the run sends them (`Options::alerts`).
fn events_client(sh: &Shared) -> Option<Result<crate::prefect::Client, String>> {
    let t = sh.pipeline.report.as_ref()?;
    if !sh.opts.alerts || sh.pipeline.models.iter().all(|m| m.events.is_none()) {
        return None;
    }
    Some(
        crate::state::prefect_client("prefect", &t.url, t.api_key.as_deref())
            .map(|c| c.with_retry_budget(std::time::Duration::from_secs(15)))
            .map_err(|e| e.to_string()),
    )
}

/// Recomputes the leased models, up to `concurrency` at once (the
/// pipeline's, as for jobs), each once every model whose rows it reads is
/// done; one whose upstream failed waits with its hours pending. Each
/// lease is released when its model is done; one outcome per model, in
/// the spec's order.
///
/// Models run on threads of their own: most of a model's time is DuckDB
/// statements, run blocking, so two models on one task would take turns.
pub(super) async fn recompute(
    shared: &Arc<Shared>,
    leases: Vec<(crate::spec::Model, Lease)>,
    kind: &str,
    jobs: &[JobOutcome],
) -> Vec<crate::models::ModelOutcome> {
    let ctx = crate::models::Ctx {
        pipeline: &shared.pipeline,
        state: &shared.state,
        sinks: &shared.sinks,
        health: &shared.health,
        readers: readers(shared, jobs),
        conn: &shared.conn,
        gate: &shared.gate,
        templates: &shared.templates,
        run_id: &shared.run_id,
        kind,
        tables: Default::default(),
        newest: Default::default(),
        events: events_client(shared),
    };
    let workers = (shared.pipeline.concurrency as usize).clamp(1, leases.len().max(1));
    let queue = Queue::new(leases);
    let runtime = tokio::runtime::Handle::current();
    let span = tracing::Span::current();
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    while let Some((i, m, lease, upstream_failed)) = queue.next() {
                        let o = one(&ctx, &runtime, &span, &m, lease, upstream_failed);
                        queue.finish(i, &m.name, o);
                    }
                });
            }
        })
    });
    queue.into_done()
}

/// The sinks models read from: of those taking writes, the ones least
/// behind over this run's jobs (every one of them level, unless a sink
/// that came back is still catching up).
fn readers<'a>(shared: &'a Shared, jobs: &[JobOutcome]) -> Vec<&'a crate::sinks::Sink> {
    let lag = |sink: &str| -> i64 {
        jobs.iter()
            .filter_map(|o| {
                let due = o.due?;
                let at = o.positions.get(sink).copied().flatten();
                Some(at.map_or(i64::MAX, |p| p.hours_until(due).max(0)))
            })
            .max()
            .unwrap_or(0)
    };
    let up: Vec<(&crate::sinks::Sink, i64)> = shared.up().map(|s| (s, lag(s.name()))).collect();
    let least = up.iter().map(|(_, l)| *l).min().unwrap_or(0);
    up.into_iter()
        .filter(|(_, l)| *l == least)
        .map(|(s, _)| s)
        .collect()
}

/// Recomputes `m` on this thread (not one of the runtime's) and releases
/// its lease. A panic fails the model, with its hours pending, instead of
/// the threads waiting for it.
fn one(
    ctx: &crate::models::Ctx<'_>,
    runtime: &tokio::runtime::Handle,
    span: &tracing::Span,
    m: &crate::spec::Model,
    lease: Lease,
    upstream_failed: Option<String>,
) -> crate::models::ModelOutcome {
    let work = async {
        let o = match upstream_failed {
            Some(u) => crate::models::ModelOutcome::not_run(
                &m.name,
                JobError::Upstream {
                    model: m.name.clone(),
                    upstream: u,
                },
            ),
            None => crate::models::recompute(ctx, m, &lease).await,
        };
        lease.release().await;
        o
    };
    let run = std::panic::AssertUnwindSafe(|| runtime.block_on(work.instrument(span.clone())));
    std::panic::catch_unwind(run).unwrap_or_else(|p| {
        let why = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        crate::models::ModelOutcome::not_run(
            &m.name,
            JobError::internal_in(
                format!("model `{}` panicked", m.name),
                crate::secret::redact(&why),
            ),
        )
    })
}

/// The models of a run's model step not done yet, each with what it runs
/// with (its lease).
struct Queue<T> {
    state: Mutex<Waiting<T>>,
    changed: Condvar,
}

struct Waiting<T> {
    /// In the spec's order (a model after those it reads), numbered so.
    waiting: Vec<(usize, crate::spec::Model, T)>,
    running: Vec<String>,
    failed: Vec<String>,
    done: Vec<(usize, crate::models::ModelOutcome)>,
}

impl<T> Queue<T> {
    fn new(models: Vec<(crate::spec::Model, T)>) -> Queue<T> {
        Queue {
            state: Mutex::new(Waiting {
                waiting: models
                    .into_iter()
                    .enumerate()
                    .map(|(i, (m, t))| (i, m, t))
                    .collect(),
                running: Vec::new(),
                failed: Vec::new(),
                done: Vec::new(),
            }),
            changed: Condvar::new(),
        }
    }

    /// The waiting model, of those whose upstream models in this run are
    /// done, with the longest chain of models waiting to read it (then the
    /// first): the chain is what the step cannot finish before. With the
    /// first of its upstream models that failed, if one did; waits while
    /// none is ready and others run; `None` once none waits.
    #[allow(clippy::type_complexity)]
    fn next(&self) -> Option<(usize, crate::spec::Model, T, Option<String>)> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if w.waiting.is_empty() {
                return None;
            }
            let busy = |u: &String, w: &Waiting<T>| {
                w.running.contains(u) || w.waiting.iter().any(|(_, m, _)| &m.name == u)
            };
            let ready = (0..w.waiting.len())
                .filter(|&at| !w.waiting[at].1.depends_on.iter().any(|u| busy(u, &w)))
                .min_by_key(|&at| std::cmp::Reverse(chain(&w.waiting, &w.waiting[at].1.name)));
            if let Some(at) = ready {
                let (i, m, t) = w.waiting.remove(at);
                let failed = m.depends_on.iter().find(|u| w.failed.contains(u)).cloned();
                w.running.push(m.name.clone());
                return Some((i, m, t, failed));
            }
            w = self.changed.wait(w).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn finish(&self, i: usize, model: &str, o: crate::models::ModelOutcome) {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        w.running.retain(|r| r != model);
        if o.error.is_some() {
            w.failed.push(model.to_owned());
        }
        w.done.push((i, o));
        self.changed.notify_all();
    }

    /// The outcomes, in the order the models were given.
    fn into_done(self) -> Vec<crate::models::ModelOutcome> {
        let mut done = self
            .state
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .done;
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, o)| o).collect()
    }
}

/// How many models, at most, wait one after another to read `model`
/// (0 when none of `waiting` reads it).
fn chain<T>(waiting: &[(usize, crate::spec::Model, T)], model: &str) -> usize {
    waiting
        .iter()
        .filter(|(_, m, _)| m.depends_on.iter().any(|u| u == model))
        .map(|(_, m, _)| 1 + chain(waiting, &m.name))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelOutcome;
    use crate::time::{Grain, Zone};
    use std::time::{Duration, Instant};

    fn model(name: &str, depends_on: &[&str]) -> crate::spec::Model {
        crate::spec::Model {
            name: name.into(),
            template: "m.sql".into(),
            grain: Grain::Hour,
            lookback_hours: 0,
            zone: Zone::UTC,
            table: name.into(),
            jobs: vec!["co".into()],
            tags: vec![],
            hourly_tables: vec![],
            depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
            params: Default::default(),
            events: None,
        }
    }

    /// Of the models ready, the one with the longest chain of readers goes
    /// first: with one thread, y (read by z) before x, given first.
    #[test]
    fn the_longest_chain_of_models_starts_first() {
        let queue = Queue::new(vec![
            (model("x", &[]), ()),
            (model("y", &[]), ()),
            (model("z", &["y"]), ()),
        ]);
        let mut order = Vec::new();
        while let Some((i, m, (), _)) = queue.next() {
            order.push(m.name.clone());
            queue.finish(
                i,
                &m.name,
                ModelOutcome::not_run(&m.name, JobError::internal("x")),
            );
        }
        assert_eq!(order, ["y", "x", "z"]);
    }

    /// Two threads over a, b (reads a), c, d (reads b and c), with a failing:
    /// c runs beside a, b waits for a and is told it failed, d waits for
    /// both; outcomes come back in the order given.
    #[test]
    fn models_run_beside_each_other_and_after_those_they_read() {
        let models = vec![
            (model("a", &[]), Duration::from_millis(300)),
            (model("b", &["a"]), Duration::ZERO),
            (model("c", &[]), Duration::from_millis(100)),
            (model("d", &["b", "c"]), Duration::ZERO),
        ];
        let queue = Queue::new(models);
        let t0 = Instant::now();
        let log = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while let Some((i, m, pause, failed)) = queue.next() {
                        let started = t0.elapsed();
                        std::thread::sleep(pause);
                        log.lock()
                            .unwrap()
                            .push((m.name.clone(), started, t0.elapsed(), failed));
                        let mut o = ModelOutcome::not_run(&m.name, JobError::internal("x"));
                        if m.name != "a" {
                            o.error = None;
                        }
                        queue.finish(i, &m.name, o);
                    }
                });
            }
        });
        let log = log.into_inner().unwrap();
        let at = |n: &str| log.iter().find(|l| l.0 == n).unwrap().clone();
        let (a, b, c, d) = (at("a"), at("b"), at("c"), at("d"));
        assert!(c.1 < a.2, "c ran beside a: {log:?}");
        assert!(b.1 >= a.2 && d.1 >= b.2 && d.1 >= c.2, "{log:?}");
        assert_eq!(b.3.as_deref(), Some("a"));
        assert_eq!((a.3, c.3, d.3), (None, None, None));
        let names: Vec<String> = queue.into_done().into_iter().map(|o| o.model).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
    }
}
