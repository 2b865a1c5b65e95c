//! Test helpers: a scratch workspace with the repo's `sql/` and `data/`, the
//! real binary run inside it, and a real InfluxDB started by `scripts/influxdb`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A temporary directory holding a spec, `sql/` and `data/`.
pub struct Ws {
    pub dir: tempfile::TempDir,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Ws {
    /// A workspace whose `pipelines.yaml` is `spec`.
    pub fn new(spec: &str) -> Ws {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo().join("sql"), &dir.path().join("sql"));
        copy_dir(&repo().join("data"), &dir.path().join("data"));
        std::fs::write(dir.path().join("pipelines.yaml"), spec).unwrap();
        Ws { dir }
    }

    /// A workspace with the shipped `pipelines.yaml`.
    pub fn shipped() -> Ws {
        Ws::new(&std::fs::read_to_string(repo().join("pipelines.yaml")).unwrap())
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, body: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_duckhour"));
        c.current_dir(self.dir.path())
            .args(args)
            // Hermetic: nothing in the developer's environment changes an
            // outcome (a Prefect profile, Google or MotherDuck credentials,
            // a gcloud ADC file under HOME); a test passes what it needs.
            .env("HOME", self.dir.path().join("home"));
        for var in [
            "DUCKHOUR_CONFIG",
            "DUCKHOUR_LOG",
            "PREFECT_API_URL",
            "PREFECT_API_KEY",
            "PREFECT_PROFILE",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GOOGLE_CLOUD_PROJECT",
            "CLOUDSDK_CONFIG",
            "GCP_CREDENTIALS",
            "MOTHERDUCK_TOKEN",
            "motherduck_token",
            "INFLUXDB_TOKEN",
        ] {
            c.env_remove(var);
        }
        c
    }

    /// Runs the binary in the workspace and waits.
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut c = self.cmd(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Rows of a query against a DuckDB file in the workspace, as text.
    pub fn query(&self, db: &str, sql: &str) -> Vec<Vec<String>> {
        let conn = duckdb::Connection::open(self.path(db)).unwrap();
        query(&conn, sql)
    }
}

/// Rows of a query, each value rendered by DuckDB as VARCHAR.
pub fn query(conn: &duckdb::Connection, sql: &str) -> Vec<Vec<String>> {
    let wrapped = format!("SELECT COLUMNS(*)::VARCHAR FROM ({sql})");
    let mut stmt = conn.prepare(&wrapped).unwrap();
    let mut rows = stmt.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        let n = r.as_ref().column_count();
        out.push(
            (0..n)
                .map(|i| {
                    r.get::<_, Option<String>>(i)
                        .unwrap()
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect(),
        );
    }
    out
}

/// Stops the server started in `dir` by `script` (and removes `dir`) once
/// this test process exits: a detached shell waits for our pid. It runs a
/// copy of the script kept in `dir`, since CI may remove the clone before
/// the shell wakes up.
fn stop_on_exit(script: &Path, dir: &Path) {
    let copy = dir.join(".stop-script");
    std::fs::copy(script, &copy).unwrap();
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; bash {copy} stop {dir}; rm -rf {dir}",
        pid = std::process::id(),
        copy = copy.display(),
        dir = dir.display()
    );
    // Detached on purpose: it must outlive this process to stop the server.
    #[allow(clippy::zombie_processes)]
    Command::new("setsid")
        .args(["sh", "-c", &watchdog])
        .spawn()
        .unwrap();
}

/// A real InfluxDB 1.x on 127.0.0.1, one per test binary, stopped when the
/// test process exits (a watchdog shell waits for our pid).
pub struct Influx {
    pub url: String,
    http: reqwest::blocking::Client,
    basic: Option<(String, String)>,
}

fn free_port() -> u16 {
    // Two consecutive free ports: HTTP and RPC.
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// The shared server without authentication.
pub fn influx() -> &'static Influx {
    static SERVER: OnceLock<Influx> = OnceLock::new();
    SERVER.get_or_init(|| start_influx("open", ""))
}

/// A second server with authentication on; user `admin`, password `admin-secret`.
pub fn influx_auth() -> &'static Influx {
    static SERVER: OnceLock<Influx> = OnceLock::new();
    SERVER.get_or_init(|| start_influx("auth", "auth"))
}

fn start_influx(name: &str, auth: &str) -> Influx {
    {
        let dir =
            std::env::temp_dir().join(format!("duckhour-it-influx-{name}-{}", std::process::id()));
        let port = free_port();
        let script = repo().join("scripts/influxdb");
        let st = Command::new(&script)
            .args(["start", dir.to_str().unwrap(), &port.to_string(), auth])
            .status()
            .expect("scripts/influxdb (run scripts/test, which installs InfluxDB)");
        assert!(
            st.success(),
            "InfluxDB did not start; is it installed? run scripts/influxdb install"
        );
        stop_on_exit(&script, &dir);
        Influx {
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::blocking::Client::new(),
            basic: (!auth.is_empty()).then(|| ("admin".to_owned(), "admin-secret".to_owned())),
        }
    }
}

impl Influx {
    pub fn q(&self, q: &str) -> serde_json::Value {
        self.q_db("", q)
    }

    /// A statement run against database `db` (e.g. `DELETE`, which takes no qualified name).
    pub fn q_db(&self, db: &str, q: &str) -> serde_json::Value {
        let mut rb = self
            .http
            .post(format!("{}/query", self.url))
            .form(&[("q", q), ("db", db)]);
        if let Some((u, p)) = &self.basic {
            rb = rb.basic_auth(u, Some(p));
        }
        let r = rb.send().unwrap();
        assert!(r.status().is_success(), "{q}: {}", r.status());
        r.json().unwrap()
    }

    pub fn create_db(&self, db: &str) {
        self.q(&format!("DROP DATABASE \"{db}\""));
        self.q(&format!("CREATE DATABASE \"{db}\""));
    }

    /// Writes line protocol (ns precision).
    pub fn write(&self, db: &str, lines: &str) {
        let mut rb = self
            .http
            .post(format!("{}/write", self.url))
            .query(&[("db", db), ("precision", "ns")])
            .body(lines.to_owned());
        if let Some((u, p)) = &self.basic {
            rb = rb.basic_auth(u, Some(p));
        }
        let r = rb.send().unwrap();
        assert_eq!(r.status().as_u16(), 204, "write: {}", r.text().unwrap());
    }
}

/// Serves `response` (raw HTTP bytes) to each connection after reading the
/// request, then closes; `None` never answers. This stands in for a real
/// server only where it cannot be made to misbehave on cue; each caller says
/// where its bytes come from (captured with `curl --raw`, or documented).
pub fn replay_server(response: Option<Vec<u8>>) -> String {
    replay_sequence(vec![response; 16])
}

/// Like `replay_server`, with one response per connection, in order.
pub fn replay_sequence(responses: Vec<Option<Vec<u8>>>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (stream, response) in listener.incoming().zip(responses) {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(300)));
                let _ = s.read(&mut buf);
                match response {
                    Some(bytes) => {
                        let _ = s.write_all(&bytes);
                    }
                    None => std::thread::sleep(std::time::Duration::from_secs(5)),
                }
            });
        }
    });
    url
}

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

/// The local-bigquery emulator on 127.0.0.1, one per test binary, started by
/// `scripts/bigquery` and stopped by a watchdog when the test process exits.
pub struct BigQuery {
    /// The API root, `http://127.0.0.1:PORT/bigquery/v2`.
    pub url: String,
    http: reqwest::blocking::Client,
}

pub fn bigquery() -> &'static BigQuery {
    static SERVER: OnceLock<BigQuery> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("duckhour-it-bigquery-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let port = free_port();
        let script = repo().join("scripts/bigquery");
        let st = Command::new(&script)
            .args(["start", dir.to_str().unwrap(), &port.to_string()])
            .status()
            .expect("scripts/bigquery (run scripts/test, which installs the emulator)");
        assert!(
            st.success(),
            "the BigQuery emulator did not start; run scripts/bigquery install"
        );
        stop_on_exit(&script, &dir);
        BigQuery {
            url: format!("http://127.0.0.1:{port}/bigquery/v2"),
            http: reqwest::blocking::Client::new(),
        }
    })
}

impl BigQuery {
    /// Rows of a GoogleSQL query, every value as the API renders it.
    pub fn query(&self, project: &str, sql: &str) -> Vec<Vec<String>> {
        let v: serde_json::Value = self
            .http
            .post(format!("{}/projects/{project}/queries", self.url))
            .json(&serde_json::json!({"query": sql, "useLegacySql": false}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(v.get("error").is_none(), "{sql}: {v}");
        v["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                r["f"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["v"].as_str().unwrap_or("NULL").to_owned())
                    .collect()
            })
            .collect()
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.http.get(format!("{}{path}", self.url)).send().unwrap();
        (
            r.status().as_u16(),
            r.json().unwrap_or(serde_json::Value::Null),
        )
    }

    pub fn post(&self, path: &str, body: serde_json::Value) -> u16 {
        self.http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    }

    pub fn delete(&self, path: &str) -> u16 {
        self.http
            .delete(format!("{}{path}", self.url))
            .send()
            .unwrap()
            .status()
            .as_u16()
    }
}

/// One request a [`Recorder`] saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, e.g. `/bigquery/v2/projects/p/queries`.
    pub path: String,
    pub body: Vec<u8>,
    /// The `Accept` header sent, empty when none.
    pub accept: String,
    /// The `Authorization` header sent, empty when none.
    pub auth: String,
    /// The status the client got.
    pub status: u16,
    /// The server's own status, when it was asked (0 when not).
    pub upstream: u16,
    /// When the request arrived.
    pub at: std::time::Instant,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What the recorder does with a request.
pub enum Act {
    Forward,
    /// Answer this (status, JSON body) without forwarding: a 503 provokes a
    /// retry, a 400 a failure.
    Answer(u16, String),
    /// Forward, and when the server granted it (2xx) give the client this
    /// answer instead: a request that took effect while the client saw it
    /// fail. A server's own refusal passes through unchanged.
    ForwardThenAnswer(u16, String),
    /// Forward with this `Accept` header instead of the client's: a server
    /// that does not give the type asked for.
    ForwardAccepting(String),
    /// Answer this (status, headers, JSON body) without forwarding: a 429
    /// with its `Retry-After`.
    AnswerWith(u16, Vec<(String, String)>, String),
    /// Forward, then give the client `map(status, body)` instead of the
    /// server's answer: a service that answers otherwise than the server.
    ForwardMapped(MapAnswer),
}

/// Turns the server's (status, body) into what the client gets.
pub type MapAnswer = Box<dyn Fn(u16, Vec<u8>) -> (u16, Vec<u8>) + Send>;

/// Decides, per request, what the recorder does (it may also sleep first).
pub type Inject = Box<dyn Fn(&Seen) -> Act + Send + Sync>;

/// A recording HTTP/1.1 proxy in front of a real server (the BigQuery
/// emulator, InfluxDB, Prefect): every request is kept byte for byte, so
/// tests can check what duckhour sends against the real service's
/// documented limits, which the emulator does not enforce. Answers pass
/// through byte for byte, with the server's content type and InfluxDB's
/// `X-Influxdb-*` headers.
pub struct Recorder {
    /// The proxy's root, `http://127.0.0.1:PORT`.
    pub url: String,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    /// Connections it closed because they stayed idle (`start_closing_idle`).
    pub idle_closed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Recorder {
    /// Forwards to `upstream` (its root, e.g. `http://127.0.0.1:9050`).
    pub fn start(upstream: &str, inject: Inject) -> Recorder {
        Recorder::start_closing_idle(upstream, inject, None)
    }

    /// The same, closing a connection that stays `idle` between requests
    /// (as Prefect Cloud's load balancer does after 30 s).
    pub fn start_closing_idle(
        upstream: &str,
        inject: Inject,
        idle: Option<std::time::Duration>,
    ) -> Recorder {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let idle_closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let inject = std::sync::Arc::new(inject);
        let (upstream, log, closed) = (upstream.to_owned(), seen.clone(), idle_closed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (upstream, log, inject) = (upstream.clone(), log.clone(), inject.clone());
                let closed = closed.clone();
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::new();
                    let _ = stream.set_read_timeout(idle);
                    let mut out = stream.try_clone().unwrap();
                    let mut r = BufReader::new(stream);
                    loop {
                        let mut line = String::new();
                        match r.read_line(&mut line) {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(e) => {
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) {
                                    closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                }
                                return;
                            }
                        }
                        let mut parts = line.split_whitespace();
                        let method = parts.next().unwrap_or("").to_owned();
                        let path = parts.next().unwrap_or("").to_owned();
                        let mut len = 0usize;
                        let mut headers = Vec::new();
                        loop {
                            let mut h = String::new();
                            r.read_line(&mut h).unwrap();
                            let h = h.trim_end().to_owned();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
                                if k == "content-length" {
                                    len = v.parse().unwrap();
                                }
                                if matches!(k.as_str(), "authorization" | "content-type" | "accept")
                                {
                                    headers.push((k, v));
                                }
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).unwrap();
                        let mut s = Seen {
                            method: method.clone(),
                            path: path.clone(),
                            body: body.clone(),
                            accept: headers
                                .iter()
                                .find(|(k, _)| k == "accept")
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default(),
                            auth: headers
                                .iter()
                                .find(|(k, _)| k == "authorization")
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default(),
                            status: 0,
                            upstream: 0,
                            at: std::time::Instant::now(),
                        };
                        let act = inject(&s);
                        let (status, answer, kept) = match act {
                            Act::Answer(status, body) => (status, body.into_bytes(), Vec::new()),
                            Act::AnswerWith(status, headers, body) => {
                                (status, body.into_bytes(), headers)
                            }
                            Act::Forward
                            | Act::ForwardThenAnswer(..)
                            | Act::ForwardMapped(_)
                            | Act::ForwardAccepting(_) => {
                                let mut rb = http
                                    .request(method.parse().unwrap(), format!("{upstream}{path}"));
                                for (k, v) in &headers {
                                    match &act {
                                        Act::ForwardAccepting(a) if k == "accept" => {
                                            rb = rb.header(k, a.as_str())
                                        }
                                        _ => rb = rb.header(k, v),
                                    }
                                }
                                let resp = rb.body(body).send().unwrap();
                                let status = resp.status().as_u16();
                                s.upstream = status;
                                // The server's own type and version go to the client.
                                let kept: Vec<(String, String)> = resp
                                    .headers()
                                    .iter()
                                    .filter(|(k, _)| {
                                        k.as_str() == "content-type"
                                            || k.as_str().starts_with("x-influxdb-")
                                    })
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_owned())
                                    })
                                    .collect();
                                let bytes = resp.bytes().unwrap().to_vec();
                                match act {
                                    Act::ForwardThenAnswer(s, b)
                                        if (200..300).contains(&status) =>
                                    {
                                        (s, b.into_bytes(), Vec::new())
                                    }
                                    Act::ForwardMapped(map) => {
                                        let (s, b) = map(status, bytes);
                                        (s, b, kept)
                                    }
                                    _ => (status, bytes, kept),
                                }
                            }
                        };
                        s.status = status;
                        log.lock().unwrap().push(s);
                        let mut head = format!("HTTP/1.1 {status} X\r\n");
                        if !kept.iter().any(|(k, _)| k == "content-type") {
                            head.push_str("content-type: application/json\r\n");
                        }
                        for (k, v) in &kept {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str(&format!("content-length: {}\r\n\r\n", answer.len()));
                        if out.write_all(head.as_bytes()).is_err()
                            || out.write_all(&answer).is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Recorder {
            url,
            seen,
            idle_closed,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Every file below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Sends SIGTERM to a child process.
pub fn sigterm(pid: u32) {
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// For tests that act on a run while it goes on (kill it, revoke its lease,
/// cancel it, restart its server): the shipped sample day in the shared
/// InfluxDB's database `db`, behind a proxy that answers every request
/// `delay` late, so that a backfill of one-hour batches lasts about
/// 48 x `delay` whatever the machine. Returns the proxy (keep it alive) and
/// the `sources:` entry named `sample` to put in a spec.
pub fn slow_sample(db: &str, delay: std::time::Duration) -> (Recorder, String) {
    crate::engine::seed_into(influx(), db);
    let rec = Recorder::start(
        &influx().url,
        Box::new(move |_: &Seen| {
            std::thread::sleep(delay);
            Act::Forward
        }),
    );
    let entry = format!(
        "  sample: {{type: influxdb, url: \"{}\", database: {db}}}\n",
        rec.url
    );
    (rec, entry)
}

/// `spec` with its `sample` source (the shipped file, in either of the
/// suite's two spellings) replaced by `entry`.
pub fn with_source(spec: &str, entry: &str) -> String {
    let multi = "  sample:\n    type: line_protocol\n    path: data/sample.lp.gz\n";
    let one = "  sample: {type: line_protocol, path: data/sample.lp.gz}\n";
    assert!(spec.contains(multi) || spec.contains(one), "{spec}");
    spec.replace(multi, entry).replace(one, entry)
}
