//! Flow runs, task runs and logs on a Prefect server: how a duckhour run
//! appears where the team already looks. Every call reads the `status` of a
//! `set_state` answer (ACCEPT, REJECT, ABORT, WAIT), never just the HTTP code.

use reqwest::Method;
use serde_json::{json, Value};

use super::{Client, ErrorKind, PrefectError};

/// The state types duckhour proposes or reads (Prefect's `StateType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateType {
    Scheduled,
    Pending,
    Running,
    Completed,
    Failed,
    Cancelling,
    Cancelled,
    Crashed,
}

impl StateType {
    /// The name on the wire: `RUNNING`, `COMPLETED`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            StateType::Scheduled => "SCHEDULED",
            StateType::Pending => "PENDING",
            StateType::Running => "RUNNING",
            StateType::Completed => "COMPLETED",
            StateType::Failed => "FAILED",
            StateType::Cancelling => "CANCELLING",
            StateType::Cancelled => "CANCELLED",
            StateType::Crashed => "CRASHED",
        }
    }

    /// The type of a flow or task run as Prefect returns it (`state.type`).
    pub fn of(run: &Value) -> Option<StateType> {
        use StateType::*;
        [
            Scheduled, Pending, Running, Completed, Failed, Cancelling, Cancelled, Crashed,
        ]
        .into_iter()
        .find(|t| run["state"]["type"] == t.as_str())
    }

    /// A state no run leaves.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StateType::Completed | StateType::Failed | StateType::Cancelled | StateType::Crashed
        )
    }
}

impl std::fmt::Display for StateType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state to propose. Its message (an error may quote a service's answer)
/// is redacted here, the one way messages reach Prefect's states.
pub fn state(kind: StateType, message: Option<&str>) -> Value {
    let mut s = json!({"type": kind.as_str()});
    if let Some(m) = message {
        s["message"] = json!(short(&crate::secret::redact(m)));
    }
    s
}

/// Prefect Cloud caps a log message at 25,000 bytes; state messages are
/// shown in one line of the UI. Both are kept well under.
pub fn short(m: &str) -> String {
    const MAX: usize = 4000;
    if m.len() <= MAX {
        return m.to_owned();
    }
    let mut end = MAX;
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &m[..end])
}

impl Client {
    /// The flow of this name, created when missing (the server's create is create-or-get).
    pub async fn flow_id(&self, name: &str) -> Result<String, PrefectError> {
        let what = format!("flow `{name}`");
        let r = self
            .ok(Method::POST, "/flows/", Some(&json!({"name": name})), &what)
            .await
            .map_err(|mut e| {
                // Every server and workspace takes this create.
                if e.kind == super::ErrorKind::NotFound {
                    e.kind = super::ErrorKind::NoWorkspace;
                }
                e
            })?;
        self.id_of(&self.json_of(&r, &what)?, &what)
    }

    /// A new flow run, already RUNNING.
    pub async fn create_flow_run(&self, body: &Value) -> Result<String, PrefectError> {
        let what = "flow run";
        let r = self
            .ok(Method::POST, "/flow_runs/", Some(body), what)
            .await?;
        self.id_of(&self.json_of(&r, what)?, what)
    }

    /// A task run of a flow run (the same key returns the existing one).
    pub async fn create_task_run(&self, body: &Value) -> Result<String, PrefectError> {
        let what = "task run";
        let r = self
            .ok(Method::POST, "/task_runs/", Some(body), what)
            .await?;
        self.id_of(&self.json_of(&r, what)?, what)
    }

    /// Proposes `state` to a flow run (`kind` "flow_runs") or task run
    /// ("task_runs"); the server's verdict, e.g. `ACCEPT`.
    pub async fn set_state(
        &self,
        kind: &str,
        id: &str,
        state: Value,
    ) -> Result<String, PrefectError> {
        let what = format!("{} {id}", kind.trim_end_matches('s').replace('_', " "));
        let body = json!({"state": state});
        let r = self
            .ok(
                Method::POST,
                &format!("/{kind}/{id}/set_state"),
                Some(&body),
                &what,
            )
            .await?;
        let v = self.json_of(&r, &what)?;
        v.get("status")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| self.err(&what, ErrorKind::Protocol("no `status`".into())))
    }

    /// Creates an artifact (`key`, `type`, `data`, `description`, run ids).
    pub async fn create_artifact(&self, body: &Value) -> Result<(), PrefectError> {
        self.ok(Method::POST, "/artifacts/", Some(body), "artifact")
            .await?;
        Ok(())
    }

    /// Emits events (`POST /events`: a JSON array; the server answers 204).
    pub async fn emit_events(&self, events: &[Value]) -> Result<(), PrefectError> {
        if events.is_empty() {
            return Ok(());
        }
        self.ok(
            Method::POST,
            "/events",
            Some(&Value::from(events.to_vec())),
            "events",
        )
        .await?;
        Ok(())
    }

    /// Sends log records (`name`, `level`, `message`, `timestamp`, run ids).
    pub async fn send_logs(&self, logs: &[Value]) -> Result<(), PrefectError> {
        if logs.is_empty() {
            return Ok(());
        }
        self.ok(
            Method::POST,
            "/logs/",
            Some(&Value::from(logs.to_vec())),
            "logs",
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_short_messages() {
        assert_eq!(state(StateType::Running, None), json!({"type": "RUNNING"}));
        assert_eq!(
            state(StateType::Failed, Some("sink `bq` failed")),
            json!({"type": "FAILED", "message": "sink `bq` failed"})
        );
        crate::secret::register("state-secret-1");
        assert_eq!(
            state(StateType::Failed, Some("denied: state-secret-1")),
            json!({"type": "FAILED", "message": "denied: **REDACTED**"})
        );
        let run = json!({"state": {"type": "CANCELLING"}});
        assert_eq!(StateType::of(&run), Some(StateType::Cancelling));
        assert_eq!(StateType::of(&json!({})), None);
        assert!(StateType::Crashed.is_final() && !StateType::Cancelling.is_final());
        let long = "é".repeat(3000);
        let s = short(&long);
        assert!(s.len() <= 4003 && s.ends_with('…'), "{}", s.len());
    }
}
