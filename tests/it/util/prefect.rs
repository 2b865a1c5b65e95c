//! A real Prefect 3 server (`scripts/prefect`): the shared one, or one of a
//! test's own to stop and restart.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::{free_port, repo, stop_on_exit};

/// A real Prefect 3 server on 127.0.0.1, started by `scripts/prefect` and
/// stopped by a watchdog when the test process exits.
pub struct Prefect {
    /// The API root, `http://127.0.0.1:PORT/api`.
    pub url: String,
    pub dir: PathBuf,
    pub port: u16,
    http: reqwest::blocking::Client,
}

/// The server the Prefect tests share (each test uses its own pipeline names).
pub fn prefect() -> &'static Prefect {
    static SERVER: OnceLock<Prefect> = OnceLock::new();
    SERVER.get_or_init(|| Prefect::start("shared"))
}

impl Prefect {
    /// A server of one's own (e.g. to restart it).
    pub fn start(name: &str) -> Prefect {
        let dir =
            std::env::temp_dir().join(format!("duckhour-it-prefect-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let port = free_port();
        let p = Prefect {
            url: format!("http://127.0.0.1:{port}/api"),
            dir,
            port,
            http: reqwest::blocking::Client::new(),
        };
        p.up();
        stop_on_exit(&repo().join("scripts/prefect"), &p.dir);
        p
    }

    /// Starts (or restarts) the server in its directory and port.
    pub fn up(&self) {
        let st = Command::new(repo().join("scripts/prefect"))
            .args(["start", self.dir.to_str().unwrap(), &self.port.to_string()])
            .status()
            .expect("scripts/prefect (run scripts/test, which installs Prefect)");
        assert!(
            st.success(),
            "Prefect did not start; run scripts/prefect install"
        );
    }

    pub fn down(&self) {
        let st = Command::new(repo().join("scripts/prefect"))
            .args(["stop", self.dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.http.get(format!("{}{path}", self.url)).send().unwrap();
        let code = r.status().as_u16();
        (code, r.json().unwrap_or(serde_json::Value::Null))
    }

    /// The status of a POST, retried while the server answers 503.
    pub fn post(&self, path: &str, body: serde_json::Value) -> u16 {
        self.post_busy(path, &body).status().as_u16()
    }

    /// A POST, sent again while the server answers 503 or 429 (warming up,
    /// or SQLite busy), for up to 30 s.
    fn post_busy(&self, path: &str, body: &serde_json::Value) -> reqwest::blocking::Response {
        for _ in 0..60 {
            let r = self
                .http
                .post(format!("{}{path}", self.url))
                .json(body)
                .send()
                .unwrap();
            if !matches!(r.status().as_u16(), 503 | 429) {
                return r;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        panic!("{path}: the server stayed busy");
    }

    /// A POST's JSON answer (e.g. a `…/filter` read), retried while busy.
    pub fn post_json(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let r = self.post_busy(path, &body);
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().unwrap()
    }

    /// The flow runs of the flow named `flow` (a pipeline's).
    pub fn flow_runs(&self, flow: &str) -> Vec<serde_json::Value> {
        self.post_json(
            "/flow_runs/filter",
            serde_json::json!({"flows": {"name": {"any_": [flow]}}}),
        )
        .as_array()
        .unwrap()
        .clone()
    }

    /// The task runs of `flow_run`: (name, state type, state message), sorted.
    pub fn task_runs(&self, flow_run: &str) -> Vec<(String, String, String)> {
        let mut out: Vec<(String, String, String)> = self
            .post_json(
                "/task_runs/filter",
                serde_json::json!({"flow_runs": {"id": {"any_": [flow_run]}}}),
            )
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().to_owned(),
                    t["state"]["type"].as_str().unwrap().to_owned(),
                    t["state"]["message"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The events matching `filter` (an `EventFilter`), waiting up to 30 s
    /// for at least `least` of them: the server stores events a moment
    /// after it accepts them.
    pub fn events(&self, filter: serde_json::Value, least: usize) -> Vec<serde_json::Value> {
        let t0 = std::time::Instant::now();
        loop {
            let page = self.post_json(
                "/events/filter",
                serde_json::json!({"filter": filter, "limit": 50}),
            );
            let evs = page["events"].as_array().cloned().unwrap_or_default();
            if evs.len() >= least || t0.elapsed().as_secs() >= 30 {
                return evs;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// A `PipelineStateBlock` document's full JSON (with its schema), or `None`.
    pub fn state_doc(&self, name: &str) -> Option<serde_json::Value> {
        let (code, v) = self.get(&format!(
            "/block_types/slug/pipelinestateblock/block_documents/name/{name}?include_secrets=true"
        ));
        (code == 200).then_some(v)
    }

    /// `last_processed_hour` of a document, as stored.
    pub fn checkpoint(&self, name: &str) -> Option<String> {
        self.state_doc(name)
            .and_then(|d| d["data"]["last_processed_hour"].as_str().map(str::to_owned))
    }

    /// Runs `tests/fixtures/prefect/blocks.py` (the Python block class) with `args`.
    pub fn python(&self, args: &[&str]) -> serde_json::Value {
        self.python_file("blocks.py", args)
    }

    /// Runs `tests/fixtures/prefect/<file>` with `args`; its JSON output.
    pub fn python_file(&self, file: &str, args: &[&str]) -> serde_json::Value {
        let o = Command::new(repo().join("scripts/prefect"))
            .arg("python")
            .arg(repo().join("tests/fixtures/prefect").join(file))
            .args(args)
            .env("PREFECT_API_URL", &self.url)
            .env("PREFECT_HOME", self.dir.join("client"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{file} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

/// Held by the tests that send `air-quality.threshold.exceeded` events to
/// the shared server: an automation one of them makes matches every
/// station's events, so they take turns.
pub fn alert_events() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
