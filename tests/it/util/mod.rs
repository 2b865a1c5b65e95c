//! Test helpers: a scratch workspace with the repo's `sql/` and `data/` and
//! the real binary run inside it; the real servers the tests talk to, one
//! module per service, each started by its `scripts/` entry and stopped
//! when the test process exits; and the recording proxy and replayed
//! answers that stand in where a real server cannot misbehave on cue.

mod bigquery;
mod influx;
mod prefect;
mod proxy;

pub use bigquery::bigquery;
pub use influx::{influx, influx_auth, Influx};
pub use prefect::{alert_events, prefect, Prefect};
pub use proxy::{replay_sequence, replay_server, Act, Recorder, Seen};

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Text written as an indented raw string, as the output it stands for:
/// the first newline dropped, the common indentation removed, and the
/// closing line's indentation ignored. A literal that does not start with
/// a newline is returned as it is.
pub fn text(s: &str) -> String {
    let Some(body) = s.strip_prefix('\n') else {
        return s.to_owned();
    };
    let lines: Vec<&str> = body.split('\n').collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| {
            if l.trim().is_empty() {
                ""
            } else {
                &l[indent..]
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Out {
    /// Asserts the command exited 0, showing its output if not; returns it.
    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }

    /// Asserts the command exited `code`, showing its output if not.
    #[track_caller]
    pub fn exit(self, code: i32) -> Out {
        assert_eq!(self.code, code, "{self:?}");
        self
    }
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
