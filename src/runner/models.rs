//! The model path of a run: lease the models whose input the run changes,
//! mark the hours about to be loaded as pending before any sink is
//! written, and after the jobs recompute them in the spec's order (see
//! [`crate::models`] for what a model is and how a range is recomputed).

use std::sync::Arc;

use chrono::Utc;

use super::{hostname, Mode, Outcome, Planned, Shared};
use crate::error::JobError;
use crate::spec::Hour;
use crate::state::{Holder, Lease, StateError};

pub(super) fn holder(run_id: &str) -> Holder {
    Holder {
        pid: std::process::id(),
        host: hostname(),
        since: Utc::now(),
        run_id: run_id.to_owned(),
    }
}

/// Leases the models this run changes the input of (those reading a job
/// with hours to load, or those `--model` names) and marks those hours
/// pending. A model that cannot be leased or marked fails the jobs that
/// read it: loading their hours would leave its products stale.
pub(super) async fn lease_models(
    sh: &Shared,
    planned: &mut Vec<Planned>,
    outcomes: &mut Vec<Outcome>,
    holder: &Holder,
) -> Vec<(crate::spec::Model, Lease)> {
    let p = &sh.pipeline;
    let hours_of = |job: &str, planned: &[Planned]| -> Option<(Hour, Hour)> {
        planned
            .iter()
            .find(|(j, ..)| j.name == job)
            .and_then(|(_, _, _, plan)| Some((plan.batches.first()?.from, plan.batches.last()?.to)))
    };
    let needed = |m: &crate::spec::Model| {
        sh.opts.models.contains(&m.name) || m.jobs.iter().any(|j| hours_of(j, planned).is_some())
    };
    // Also those left with pending hours by a run that died or failed
    // (unless only some models were asked for): the loads happened, the
    // products must follow. Busy, they are the other run's to finish.
    // Models reading another's rows follow it: its recomputed keys are
    // their changed input.
    let mut models: Vec<(&crate::spec::Model, bool)> = Vec::new();
    for m in &p.models {
        let upstream: Vec<bool> = models
            .iter()
            .filter(|(u, _)| m.depends_on.contains(&u.name))
            .map(|(_, pending_only)| *pending_only)
            .collect();
        if needed(m) || upstream.iter().any(|only| !only) {
            models.push((m, false));
        } else if !upstream.is_empty()
            || (sh.opts.models.is_empty()
                && sh
                    .state
                    .pending(&p.name, &m.state_key())
                    .await
                    .is_ok_and(|r| !r.is_empty()))
        {
            models.push((m, true));
        }
    }
    // Leases in name order, so that two runs cannot wait for each other.
    models.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let mut leased: Vec<(&crate::spec::Model, Lease)> = Vec::new();
    let keys: Vec<(String, bool)> = models
        .iter()
        .map(|(m, pending_only)| (m.state_key(), sh.opts.wait && !pending_only))
        .collect();
    let taken = sh.state.lease_all(&p.name, &keys, holder).await;
    for ((m, pending_only), taken) in models.into_iter().zip(taken) {
        match taken {
            Ok(lease) => leased.push((m, lease)),
            Err(StateError::Busy { .. }) if pending_only => {}
            Err(e) => fail_model(m, e, planned, outcomes).await,
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
    // Marks in the spec's order (a model after those it reads): the hours
    // its jobs are about to load, or the backfill's range, and the hours of
    // the keys its upstream models will recompute.
    leased.sort_by_key(|(m, _)| p.models.iter().position(|x| x.name == m.name));
    let mut marked: Vec<(crate::spec::Model, Lease)> = Vec::new();
    let mut pending_of: Vec<(String, Vec<(Hour, Hour)>)> = Vec::new();
    for (m, lease) in leased {
        let mut hours: Vec<(Hour, Hour)> = match sh.opts.mode {
            Mode::Backfill { from, to } if sh.opts.models.contains(&m.name) => vec![(from, to)],
            _ => m.jobs.iter().filter_map(|j| hours_of(j, planned)).collect(),
        };
        for (u, pending) in &pending_of {
            if m.depends_on.contains(u) {
                let u = p.model(u).expect("validated");
                hours.extend(crate::models::step::spans(u, pending));
            }
        }
        match crate::models::mark(&sh.state, &p.name, m, &hours).await {
            Ok(pending) => {
                pending_of.push((m.name.clone(), pending));
                marked.push((m.clone(), lease));
            }
            Err(e) => {
                lease.release().await;
                fail_model(m, e, planned, outcomes).await;
            }
        }
    }
    marked
}

/// A model that could not be leased or marked fails, with the jobs reading it.
async fn fail_model(
    m: &crate::spec::Model,
    e: StateError,
    planned: &mut Vec<Planned>,
    outcomes: &mut Vec<Outcome>,
) {
    let (own, why) = match JobError::from(e) {
        JobError::LeaseBusy(msg) => (
            JobError::LeaseBusy(format!(
                "model `{}` is being recomputed by another run: {msg}",
                m.name
            )),
            JobError::LeaseBusy(format!(
                "model `{}`, which reads this job, is being recomputed by another run: {msg}",
                m.name
            )),
        ),
        other => (other.clone(), other),
    };
    outcomes.push(Outcome::model_failed(&m.name, own));
    let (reading, rest): (Vec<Planned>, Vec<Planned>) = std::mem::take(planned)
        .into_iter()
        .partition(|(j, ..)| m.jobs.contains(&j.name));
    *planned = rest;
    for (job, lease, ..) in reading {
        lease.release().await;
        outcomes.push(Outcome::failed(&job.name, why.clone()));
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

/// Recomputes the leased models in the spec's order (a model after those
/// whose rows it reads; one whose upstream failed waits with its hours
/// pending), releasing each lease; one outcome per model.
pub(super) async fn recompute(
    shared: &Arc<Shared>,
    leases: Vec<(crate::spec::Model, Lease)>,
    kind: &str,
) -> Vec<Outcome> {
    let ctx = crate::models::Ctx {
        pipeline: &shared.pipeline,
        state: &shared.state,
        sinks: &shared.sinks,
        conn: &shared.conn,
        gate: &shared.gate,
        templates: &shared.templates,
        run_id: &shared.run_id,
        kind,
        tables: Default::default(),
        newest: Default::default(),
        events: events_client(shared),
    };
    let mut failed: Vec<String> = Vec::new();
    let mut outcomes = Vec::new();
    for (m, lease) in leases {
        let o = match m.depends_on.iter().find(|u| failed.contains(u)) {
            Some(u) => crate::models::ModelOutcome::not_run(
                &m.name,
                JobError::Template(format!(
                    "model `{}` was not recomputed: model `{u}`, whose rows it reads, failed; its hours stay pending",
                    m.name
                )),
            ),
            None => crate::models::recompute(&ctx, &m, &lease).await,
        };
        if !o.ok {
            failed.push(m.name.clone());
        }
        lease.release().await;
        outcomes.push(Outcome::model(o));
    }
    outcomes
}
