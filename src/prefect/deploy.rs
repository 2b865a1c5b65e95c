//! Work pools, deployments and the worker's side of flow runs: how a
//! pipeline is deployed to Prefect and how a worker finds, claims and
//! follows the runs Prefect schedules (or the UI's Run button creates).

use reqwest::Method;
use serde_json::{json, Value};

use super::{Client, ErrorKind, PrefectError};

impl Client {
    /// Creates the work pool unless it exists (409).
    pub async fn ensure_work_pool(&self, name: &str, kind: &str) -> Result<(), PrefectError> {
        let what = format!("work pool `{name}`");
        let r = self
            .call(
                Method::POST,
                "/work_pools/",
                Some(&json!({"name": name, "type": kind})),
                &what,
            )
            .await?;
        match r.status.as_u16() {
            200 | 201 => Ok(()),
            409 => {
                // It exists: ours only if it has our type. A pool of another
                // type (a process pool of the Python flows, say) is served by
                // other workers, which would take duckhour's flow runs.
                let pool = self
                    .ok(Method::GET, &format!("/work_pools/{name}"), None, &what)
                    .await?;
                let v = self.json_of(&pool, &what)?;
                match v["type"].as_str() {
                    Some(t) if t == kind => Ok(()),
                    t => Err(self.err(
                        &what,
                        ErrorKind::Conflict(format!(
                            "it exists with type `{}`, not `{kind}`: its workers would take duckhour's flow runs; choose another pool with `--pool`",
                            t.unwrap_or("?")
                        )),
                    )),
                }
            }
            _ => Err(self.err(&what, super::status_kind(r.status, &r.body))),
        }
    }

    /// Creates or updates the deployment of this name and flow; its id.
    pub async fn upsert_deployment(&self, body: &Value) -> Result<String, PrefectError> {
        let what = format!("deployment `{}`", body["name"].as_str().unwrap_or("?"));
        let r = self
            .ok(Method::POST, "/deployments/", Some(body), &what)
            .await?;
        self.id_of(&self.json_of(&r, &what)?, &what)
    }

    /// A deployment, a flow run, or a flow by id (`kind`: `deployments`, `flow_runs`, `flows`).
    pub async fn read(&self, kind: &str, id: &str) -> Result<Value, PrefectError> {
        let what = format!("{} {id}", kind.trim_end_matches('s'));
        let r = self
            .ok(Method::GET, &format!("/{kind}/{id}"), None, &what)
            .await?;
        self.json_of(&r, &what)
    }

    /// A deployment's id by flow and deployment name; `None` when missing.
    pub async fn deployment_id(
        &self,
        flow: &str,
        name: &str,
    ) -> Result<Option<String>, PrefectError> {
        let what = format!("deployment `{flow}/{name}`");
        let r = self
            .call(
                Method::GET,
                &format!("/deployments/name/{flow}/{name}"),
                None,
                &what,
            )
            .await?;
        match r.status.as_u16() {
            200 => Ok(Some(self.id_of(&self.json_of(&r, &what)?, &what)?)),
            404 => Ok(None),
            _ => Err(self.err(&what, super::status_kind(r.status, &r.body))),
        }
    }

    /// A flow run of a deployment, as the UI's Run button makes it; its id.
    pub async fn run_deployment(&self, id: &str, body: &Value) -> Result<String, PrefectError> {
        let what = format!("deployment {id}");
        let r = self
            .ok(
                Method::POST,
                &format!("/deployments/{id}/create_flow_run"),
                Some(body),
                &what,
            )
            .await?;
        self.id_of(&self.json_of(&r, &what)?, &what)
    }

    /// Tells the pool this worker is alive.
    pub async fn heartbeat(&self, pool: &str, worker: &str) -> Result<(), PrefectError> {
        let what = format!("work pool `{pool}`");
        self.ok(
            Method::POST,
            &format!("/work_pools/{pool}/workers/heartbeat"),
            Some(&json!({"name": worker, "heartbeat_interval_seconds": 30})),
            &what,
        )
        .await?;
        Ok(())
    }

    /// The pool's flow runs due by now (scheduled, late, or made by the Run button).
    pub async fn due_flow_runs(
        &self,
        pool: &str,
        limit: usize,
    ) -> Result<Vec<Value>, PrefectError> {
        let what = format!("work pool `{pool}`");
        let now = chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let r = self
            .ok(
                Method::POST,
                &format!("/work_pools/{pool}/get_scheduled_flow_runs"),
                Some(&json!({"scheduled_before": now, "limit": limit})),
                &what,
            )
            .await?;
        match self.json_of(&r, &what)? {
            Value::Array(items) => Ok(items
                .into_iter()
                .filter_map(|i| i.get("flow_run").cloned())
                .collect()),
            other => Err(self.err(&what, ErrorKind::Protocol(format!("not a list: {other}")))),
        }
    }
}
