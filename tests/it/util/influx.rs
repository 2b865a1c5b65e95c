//! A real InfluxDB 1.x (`scripts/influxdb`): the shared open server and one
//! with authentication.

use std::process::Command;
use std::sync::OnceLock;

use super::{free_port, repo, stop_on_exit};

/// A real InfluxDB 1.x on 127.0.0.1, one per test binary, stopped when the
/// test process exits (a watchdog shell waits for our pid).
pub struct Influx {
    pub url: String,
    http: reqwest::blocking::Client,
    basic: Option<(String, String)>,
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
