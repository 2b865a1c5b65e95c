//! The local BigQuery emulator (`scripts/bigquery`) and its REST API.

use std::process::Command;
use std::sync::OnceLock;

use super::{free_port, repo, stop_on_exit};

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
