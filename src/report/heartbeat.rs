//! The flow run a run reports into, and its heartbeat: the
//! `prefect.flow-run.heartbeat` event shaped as Prefect's own flow engine
//! sends it, and the task that sends it while the flow run is RUNNING,
//! counting the heartbeats Prefect took and refused (the first refusal is
//! said as a warning: zombie detection is blind without them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::prefect::Client;

/// A flow run as its heartbeat names it: one a worker claimed (RUNNING
/// already), or one a run created.
#[derive(Debug, Clone, Default)]
pub struct FlowRun {
    pub id: String,
    pub name: String,
    pub flow_id: Option<String>,
    /// The flow's name (the pipeline's).
    pub flow_name: String,
    pub deployment_id: Option<String>,
    pub tags: Vec<String>,
}

impl FlowRun {
    /// From the server's JSON of a flow run of the flow `flow_name`.
    pub fn of(fr: &Value, flow_name: &str) -> Option<FlowRun> {
        let s = |k: &str| fr[k].as_str().map(str::to_owned);
        Some(FlowRun {
            id: s("id")?,
            name: s("name").unwrap_or_default(),
            flow_id: s("flow_id"),
            flow_name: flow_name.to_owned(),
            deployment_id: s("deployment_id"),
            tags: fr["tags"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The `prefect.flow-run.heartbeat` event at `at`, as Prefect's flow
    /// engine emits it; its id is derived from the run and the instant.
    pub fn heartbeat(&self, at: DateTime<Utc>) -> Value {
        let mut related = Vec::new();
        if let Some(f) = &self.flow_id {
            related.push(json!({
                "prefect.resource.id": format!("prefect.flow.{f}"),
                "prefect.resource.role": "flow",
                "prefect.resource.name": self.flow_name,
            }));
        }
        if let Some(d) = &self.deployment_id {
            related.push(json!({
                "prefect.resource.id": format!("prefect.deployment.{d}"),
                "prefect.resource.role": "deployment",
            }));
        }
        for t in &self.tags {
            related.push(json!({
                "prefect.resource.id": format!("prefect.tag.{t}"),
                "prefect.resource.role": "tag",
            }));
        }
        let occurred = at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("duckhour:heartbeat:{}:{occurred}", self.id).as_bytes(),
        );
        json!({
            "id": id.to_string(),
            "occurred": occurred,
            "event": "prefect.flow-run.heartbeat",
            "resource": {
                "prefect.resource.id": format!("prefect.flow-run.{}", self.id),
                "prefect.resource.name": self.name,
            },
            "related": related,
            "payload": {},
        })
    }
}

/// The heartbeat of the run's flow run, once it has one.
#[derive(Default)]
pub(super) struct Beat {
    running: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    counts: Arc<Counts>,
}

/// Heartbeats Prefect took and refused (or never answered) so far.
#[derive(Debug, Default)]
pub struct Counts {
    taken: AtomicU64,
    refused: AtomicU64,
}

impl Counts {
    /// (taken, refused) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.taken.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

pub(super) type SharedBeat = Arc<tokio::sync::Mutex<Beat>>;

impl Beat {
    /// Not beating yet; counting into `counts`.
    pub(super) fn counting(counts: Arc<Counts>) -> Beat {
        Beat {
            running: None,
            counts,
        }
    }

    /// Starts beating for `run` every `every` (the first beat at once).
    pub(super) fn start(&mut self, client: Client, run: FlowRun, every: Duration) {
        if self.running.is_some() {
            return;
        }
        let (tx, mut rx) = watch::channel(false);
        let counts = self.counts.clone();
        let task = tokio::spawn(async move {
            loop {
                match client.emit_events(&[run.heartbeat(Utc::now())]).await {
                    Ok(()) => counts.taken.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        // Said once a run; each refusal is counted.
                        if counts.refused.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!(flow_run = %run.id, error = %e, "Prefect did not take this flow run's heartbeat: while heartbeats do not arrive, Prefect cannot tell this run from a dead one (its zombie detection) and may mark it Crashed");
                        } else {
                            tracing::debug!(flow_run = %run.id, error = %e, "heartbeat not sent");
                        }
                        0
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = rx.changed() => return,
                }
            }
        });
        self.running = Some((tx, task));
    }

    /// Heartbeats taken and refused so far.
    pub(super) fn counts(&self) -> (u64, u64) {
        self.counts.get()
    }

    /// Stops beating, once the request under way (if any) is answered.
    pub(super) async fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(true);
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The event Prefect's flow engine sends (`_emit_flow_run_heartbeat`):
    /// its name, resource, related flow, deployment and tags; a repeat at
    /// the same instant is the same event.
    #[test]
    fn heartbeat_is_shaped_as_prefects_own() {
        let fr = json!({
            "id": "5f0c", "name": "bright-owl", "flow_id": "f1",
            "deployment_id": "d1", "tags": ["duckhour"],
        });
        let run = FlowRun::of(&fr, "hourly").unwrap();
        let at = DateTime::parse_from_rfc3339("2026-11-21T00:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let e = run.heartbeat(at);
        assert_eq!(e["event"], "prefect.flow-run.heartbeat");
        assert_eq!(e["occurred"], "2026-11-21T00:10:00.000000Z");
        assert_eq!(
            e["resource"],
            json!({"prefect.resource.id": "prefect.flow-run.5f0c", "prefect.resource.name": "bright-owl"})
        );
        assert_eq!(
            e["related"],
            json!([
                {"prefect.resource.id": "prefect.flow.f1", "prefect.resource.role": "flow", "prefect.resource.name": "hourly"},
                {"prefect.resource.id": "prefect.deployment.d1", "prefect.resource.role": "deployment"},
                {"prefect.resource.id": "prefect.tag.duckhour", "prefect.resource.role": "tag"},
            ])
        );
        assert_eq!(e["id"], run.heartbeat(at)["id"]);
        assert_ne!(
            e["id"],
            run.heartbeat(at + chrono::Duration::seconds(30))["id"]
        );
        assert!(uuid::Uuid::parse_str(e["id"].as_str().unwrap()).is_ok());
    }
}
