//! The shared-batch path: which jobs of a run read one query per batch (a
//! group), and a group's batches in order, the next one downloading while
//! this one is transformed and loaded by each of its jobs ([`super::load`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio::sync::Semaphore;
use tracing::{info, info_span, warn, Instrument};

use super::load::{download, load_batch, staged, Input, Member, Staging};
use super::{mode_word, record, JobOutcome, Positions, Shared};
use crate::error::JobError;
use crate::plan::{self, Batch, Plan};
use crate::sources::Fetch;
use crate::spec::{Hour, Job};
use crate::staged::StagedHandle;
use crate::state::Lease;

/// Jobs of a run that read one query per batch: same measurement and tags,
/// same plan. A job alone is a group of one.
pub(super) struct Group {
    pub(super) plan: Plan,
    pub(super) members: Vec<Member>,
}

/// Which jobs share their queries: those with the same batches (the usual
/// case: a pipeline's jobs advance together) reading the same measurement
/// with the same tags. A job with nothing to do, or whose plan differs (a
/// new job catching up, a failed one being redone), is on its own. Indices
/// into `jobs`, each group in the jobs' order.
pub fn sharing(jobs: &[(&Job, &Plan)]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, (job, plan)) in jobs.iter().enumerate() {
        let with = out.iter_mut().find(|g| {
            let (first, fplan) = jobs[g[0]];
            !plan.batches.is_empty()
                && fplan.batches == plan.batches
                && Fetch::of([first]).shares(job)
        });
        match with {
            Some(g) => g.push(i),
            None => out.push(vec![i]),
        }
    }
    out
}

/// A job ready to run: its lease, checkpoint, plan and sinks.
pub(super) struct Planned {
    pub(super) job: Job,
    pub(super) lease: Lease,
    pub(super) checkpoint: Option<Hour>,
    pub(super) plan: Plan,
    pub(super) sinks: Positions,
}

/// Forms the groups of [`sharing`].
pub(super) fn groups(planned: Vec<Planned>) -> Vec<Group> {
    let shape: Vec<Vec<usize>> = {
        let refs: Vec<(&Job, &Plan)> = planned.iter().map(|p| (&p.job, &p.plan)).collect();
        sharing(&refs)
    };
    let mut slots: Vec<Option<Planned>> = planned.into_iter().map(Some).collect();
    let mut out = Vec::new();
    for indices in shape {
        let mut plan = None;
        let mut members = Vec::new();
        for i in indices {
            let Planned {
                job,
                lease,
                checkpoint,
                plan: p,
                sinks,
            } = slots[i].take().expect("each job in one group");
            let o = JobOutcome::planned(&job.name, &p, checkpoint);
            members.push(Member {
                span: info_span!("job", job = %job.name),
                job,
                lease,
                checkpoint,
                sinks,
                out: o,
                started: Utc::now(),
                t0: Instant::now(),
            });
            plan.get_or_insert(p);
        }
        out.push(Group {
            plan: plan.expect("a group has a job"),
            members,
        });
    }
    out
}

/// Runs a group's batches, then records each job's run.
pub(super) async fn run_group(sh: Arc<Shared>, mut g: Group) -> Vec<JobOutcome> {
    let shared_with: Vec<String> = g.members.iter().map(|m| m.job.name.clone()).collect();
    for m in &g.members {
        m.span.in_scope(|| {
            let checkpoint = m
                .checkpoint
                .map_or_else(|| "none".to_owned(), |c| c.to_string());
            let (hours, batches) = (g.plan.total_hours(), g.plan.batches.len());
            if shared_with.len() > 1 {
                let shared_with = shared_with.join(",");
                info!(hours, batches, %checkpoint, %shared_with, "job started");
            } else {
                info!(hours, batches, %checkpoint, "job started");
            }
        });
    }
    group_batches(&sh, &mut g).await;
    let kind = mode_word(sh.opts.mode);
    let out = sh.health.out();
    let mut outcomes = Vec::new();
    for mut m in g.members {
        settle_sinks(&sh, &mut m, &out, g.plan.last_complete).await;
        let Member {
            job,
            lease,
            out: outcome,
            span,
            started,
            t0,
            ..
        } = m;
        async {
            // A lost lease means another runner may own the job's block now.
            match lease.check() {
                Ok(()) => {
                    record(
                        &sh.state,
                        &sh.pipeline.name,
                        &sh.run_id,
                        kind,
                        &outcome,
                        started,
                        sh.opts.beats.as_deref(),
                    )
                    .await
                }
                Err(_) => warn!(job = %job.name, "lease lost: this run is not recorded"),
            }
            let result = match &outcome.error {
                Some(e) => e.kind(),
                None if outcome.stopped => "stopped",
                None => "ok",
            };
            info!(
                ok = outcome.error.is_none(),
                outcome = result,
                hours = outcome.hours,
                empty_hours = outcome.empty_hours,
                rows_in = outcome.rows_in,
                rows_out = outcome.rows_out,
                checkpoint = %super::checkpoint_text(outcome.checkpoint),
                error = %outcome.error.as_ref().map_or_else(String::new, |e| e.to_string()),
                ms = t0.elapsed().as_millis() as u64,
                "job finished"
            );
            lease.release().await;
        }
        .instrument(span)
        .await;
        outcomes.push(outcome);
    }
    outcomes
}

/// Records which sinks failed in this run, or were cleared by it, in the
/// job's progress (on the run's clock, `--now`, like the hours), and where
/// each sink stands in its outcome.
async fn settle_sinks(
    sh: &Shared,
    m: &mut Member,
    out: &std::collections::BTreeMap<String, crate::health::Out>,
    due: Hour,
) {
    crate::health::after_run(&mut m.sinks.progress, &sh.pipeline.sinks, out, sh.opts.now);
    if m.lease.check().is_ok() {
        let checkpoint = m.checkpoint;
        if let Err(e) = super::load::save(sh, m, checkpoint).await {
            warn!(job = %m.job.name, error = %e, "could not record the sinks' progress");
        }
    }
    m.out.positions = m.sinks.at.clone();
    m.out.due = Some(due);
}

type Prefetch = tokio::task::JoinHandle<Result<(Staging, u64), JobError>>;

/// Starts downloading `batch` for the group's jobs still going, in the
/// background: one query for all their fields. `None` when none is left;
/// no task when every job's sinks taking the batch can have it read back
/// from a sink that holds it (a sink catching up), so the source is not asked.
fn prefetch(sh: &Arc<Shared>, g: &Group, batch: Batch) -> Option<(Batch, Fetch, Option<Prefetch>)> {
    let active: Vec<&Member> = g.members.iter().filter(|m| m.active()).collect();
    if active.is_empty() {
        return None;
    }
    let fetch = Fetch::of(active.iter().map(|m| &m.job));
    let refill = active
        .iter()
        .all(|m| m.sinks.holder(batch, |s| sh.health.is_up(s)).is_some());
    if refill {
        return Some((batch, fetch, None));
    }
    let sh = sh.clone();
    let f = fetch.clone();
    let span = info_span!("batch", from = %batch.from, to = %batch.to);
    let task = tokio::spawn(async move { download(&sh, &f, batch).await }.instrument(span));
    Some((batch, fetch, Some(task)))
}

/// The batches of one group, in order. As soon as a batch's download ends,
/// the next one's begins, so the source stays busy while this batch's last
/// chunk is parsed, transformed and loaded; each job's loads, ledger and
/// checkpoint stay strictly in order. A job whose transform or load fails
/// stops there (its checkpoint stays); the others go on. A failed download
/// fails every job that was to read it.
async fn group_batches(sh: &Arc<Shared>, g: &mut Group) {
    // The plan's batches, cut further as the rows an hour become known so
    // that a batch stays within `plan::BATCH_VALUES` however wide the network.
    let mut queue: std::collections::VecDeque<Batch> = g.plan.batches.iter().copied().collect();
    let mut rate = first_rate(sh, g, queue.front()).await;
    let mut next = take_batch(&mut queue, rate, g).and_then(|b| prefetch(sh, g, b));
    let mut i = 0;
    while let Some((batch, fetch, extracting)) = next.take() {
        let batch = &batch;
        if sh.opts.stop.load(Ordering::Relaxed) {
            if let Some(t) = extracting {
                t.abort();
            }
            stopped(g);
            break;
        }
        let t0 = Instant::now();
        let Some(extracting) = extracting else {
            next = take_batch(&mut queue, rate, g).and_then(|b| prefetch(sh, g, b));
            load_readers(sh, g, &going(g), None, &fetch, *batch, i, t0).await;
            if !g.members.iter().any(Member::active) {
                abort(&mut next);
                break;
            }
            i += 1;
            continue;
        };
        let downloaded = match extracting.await {
            Ok(r) => r,
            Err(e) => Err(JobError::internal_in("extract task failed", e)),
        };
        let readers = |g: &mut Group| -> Vec<usize> {
            (0..g.members.len())
                .filter(|&k| {
                    g.members[k].active() && fetch.fields.contains(&g.members[k].job.field)
                })
                .collect()
        };
        let (writer, rows) = match downloaded {
            Ok(w) => w,
            Err(e) => {
                for k in readers(g) {
                    g.members[k].fail(e.clone());
                }
                break;
            }
        };
        // An empty batch (an outage) says nothing about the next one.
        if rows > 0 {
            rate = Some(rows as f64 / batch.hours() as f64);
        }
        if !sh.opts.stop.load(Ordering::Relaxed) {
            next = take_batch(&mut queue, rate, g).and_then(|b| prefetch(sh, g, b));
        }
        let (handle, _) = match staged(writer).await {
            Ok(staged) => staged,
            Err(e) => {
                for k in readers(g) {
                    g.members[k].fail(e.clone());
                }
                abort(&mut next);
                break;
            }
        };
        let readers = readers(g);
        load_readers(sh, g, &readers, Some(handle), &fetch, *batch, i, t0).await;
        if !g.members.iter().any(Member::active) {
            abort(&mut next);
            break;
        }
        if next.is_none() && !queue.is_empty() {
            // Stopped on request before the next extract began.
            stopped(g);
            break;
        }
        i += 1;
    }
}

/// The indices of the group's jobs still going.
fn going(g: &Group) -> Vec<usize> {
    (0..g.members.len())
        .filter(|&k| g.members[k].active())
        .collect()
}

/// The group's jobs still going stop here, on request.
fn stopped(g: &mut Group) {
    (g.members.iter_mut())
        .filter(|m| m.active())
        .for_each(|m| m.out.stopped = true);
}

/// Stops the next batch's download, if one started.
fn abort(next: &mut Option<(Batch, Fetch, Option<Prefetch>)>) {
    if let Some((_, _, Some(h))) = next.take() {
        h.abort();
    }
}

/// Rows an hour, counted at the source for its first hour, when the first
/// batch is long enough to need sizing.
async fn first_rate(sh: &Arc<Shared>, g: &Group, first: Option<&Batch>) -> Option<f64> {
    let first = first.filter(|b| b.hours() > plan::UNSIZED_HOURS)?;
    let fetch = Fetch::of(g.members.iter().map(|m| &m.job));
    let hour = Batch {
        from: first.from,
        to: first.from.plus(1),
    };
    sh.source.estimate(&fetch, hour).await.map(|n| n as f64)
}

/// The members `readers` of `g` transform and load the staged batch (or,
/// with none, the batch read back from a sink that has it) side by side,
/// as many at once as the pipeline's `concurrency`; the others wait. The
/// batch's rows are freed once the last reader has transformed them.
#[allow(clippy::too_many_arguments)]
async fn load_readers(
    sh: &Arc<Shared>,
    g: &mut Group,
    readers: &[usize],
    handle: Option<StagedHandle>,
    fetch: &Fetch,
    batch: Batch,
    i: usize,
    t0: Instant,
) {
    let mut handle = handle.map(Arc::new);
    let refill = handle.is_none();
    let sem = Arc::new(Semaphore::new(sh.pipeline.concurrency.max(1) as usize));
    let mut slots = Vec::new();
    for (k, m) in std::mem::take(&mut g.members).into_iter().enumerate() {
        if !readers.contains(&k) {
            slots.push(Slot::Idle(Box::new(m)));
            continue;
        }
        let input = match &handle {
            Some(h) => Input::Staged(h.clone(), fetch.column(&m.job)),
            None if refill => Input::Refill,
            None => unreachable!("held until every reader has it"),
        };
        let (sh, sem) = (sh.clone(), sem.clone());
        slots.push(Slot::Busy(tokio::spawn(async move {
            let _permit = sem.acquire().await.expect("semaphore open");
            load_batch(&sh, m, batch, i, input, t0).await
        })));
    }
    // Each reader holds the batch's rows until its transform has read them.
    drop(handle.take());
    for slot in slots {
        g.members.push(match slot {
            Slot::Idle(m) => *m,
            Slot::Busy(task) => match task.await {
                Ok(m) => m,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
        });
    }
}

/// A member of a group while a batch is loaded: waiting, or loading it.
enum Slot {
    Idle(Box<Member>),
    Busy(tokio::task::JoinHandle<Member>),
}

/// The next batch, cut to the value budget at `rate` rows an hour.
fn take_batch(
    queue: &mut std::collections::VecDeque<Batch>,
    rate: Option<f64>,
    g: &Group,
) -> Option<Batch> {
    let b = queue.pop_front()?;
    let Some(rate) = rate else { return Some(b) };
    let fields = Fetch::of(g.members.iter().filter(|m| m.active()).map(|m| &m.job))
        .fields
        .len();
    let (b, rest) = plan::cut(b, rate, fields);
    if let Some(rest) = rest {
        queue.push_front(rest);
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, measurement: &str, field: &str) -> Job {
        Job {
            name: name.into(),
            measurement: measurement.into(),
            field: field.into(),
            tags: vec!["station".into()],
            template: "t.sql".into(),
            table: "t".into(),
            params: Default::default(),
        }
    }

    fn plan(from: &str, to: &str) -> Plan {
        let (from, to) = (Hour::parse(from).unwrap(), Hour::parse(to).unwrap());
        Plan {
            last_complete: to,
            new_hours: 0,
            redo_hours: 0,
            left_hours: 0,
            batches: if from == to {
                vec![]
            } else {
                vec![Batch { from, to }]
            },
        }
    }

    /// Jobs advancing together on one measurement share; a job catching up,
    /// one on another measurement or with nothing to do reads on its own.
    #[test]
    fn jobs_with_the_same_batches_and_measurement_share_a_query() {
        let together = plan("2026-11-20T00:00:00Z", "2026-11-20T03:00:00Z");
        let behind = plan("2026-11-19T00:00:00Z", "2026-11-20T03:00:00Z");
        let idle = plan("2026-11-20T03:00:00Z", "2026-11-20T03:00:00Z");
        let (co, no2, o3, new, other, idle1, idle2) = (
            job("co", "air", "co"),
            job("no2", "air", "no2"),
            job("o3", "air", "o3"),
            job("pm10", "air", "pm10"),
            job("temp", "weather", "t"),
            job("so2", "air", "so2"),
            job("pm25", "air", "pm25"),
        );
        let jobs = [
            (&co, &together),
            (&new, &behind),
            (&no2, &together),
            (&other, &together),
            (&idle1, &idle),
            (&idle2, &idle),
            (&o3, &together),
        ];
        assert_eq!(
            sharing(&jobs),
            vec![vec![0, 2, 6], vec![1], vec![3], vec![4], vec![5]]
        );
    }
}
