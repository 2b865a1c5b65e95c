//! Runs reported to a real Prefect 3.9 server as flow runs: a task run per
//! job, the run's log lines, the parameters; a failing sink as a Failed
//! flow run naming the sink and hours; and a server that cannot be reached,
//! which the data work does not wait for.

use crate::util::{prefect, Prefect, Ws};

fn spec(name: &str, state: &str, top: &str, wh: &str) -> String {
    format!(
        "{top}state: {state}
sources:
  sample: {{type: line_protocol, path: data/sample.lp.gz}}
sinks:
  wh: {{type: duckdb, path: '{wh}'}}
pipelines:
  {name}:
    source: sample
    sinks: [wh]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    batch_hours: 12
    jobs: [{{name: co}}, {{name: no2}}]
"
    )
}

const PREFECT_STATE: &str = "{type: prefect, url: '${env:PREFECT_API_URL}'}";
const NOW: &str = "2026-11-21T00:10:00Z";

/// The flow runs of the flow named `pipeline`.
fn flow_runs(p: &Prefect, pipeline: &str) -> Vec<serde_json::Value> {
    p.post_json(
        "/flow_runs/filter",
        serde_json::json!({"flows": {"name": {"any_": [pipeline]}}}),
    )
    .as_array()
    .unwrap()
    .clone()
}

fn task_runs(p: &Prefect, flow_run: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = p
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

#[test]
fn a_run_is_a_flow_run_with_a_task_run_per_job_and_its_logs() {
    let p = prefect();
    let ws = Ws::new(&spec("reported", PREFECT_STATE, "", "wh.duckdb"));
    let out = ws.run_env(
        &["run", "reported", "--now", NOW],
        &[("PREFECT_API_URL", &p.url)],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stderr, "", "{out:?}");
    let runs = flow_runs(p, "reported");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    assert_eq!(run["state"]["message"], "2 jobs, 48 hours, 142 rows");
    assert_eq!(
        run["parameters"],
        serde_json::json!({"mode": "run", "jobs": ["co", "no2"], "from": null, "to": null})
    );
    assert_eq!(run["tags"], serde_json::json!(["duckhour", "run"]));
    let id = run["id"].as_str().unwrap();
    assert_eq!(
        task_runs(p, id),
        vec![
            (
                "co".into(),
                "COMPLETED".into(),
                "24 hours, 4240 rows in, 71 rows out, checkpoint 2026-11-20T23:00:00Z".into()
            ),
            (
                "no2".into(),
                "COMPLETED".into(),
                "24 hours, 4240 rows in, 71 rows out, checkpoint 2026-11-20T23:00:00Z".into()
            ),
        ]
    );
    let logs = p.post_json(
        "/logs/filter",
        serde_json::json!({"logs": {"flow_run_id": {"any_": [id]}}, "limit": 200}),
    );
    let logs = logs.as_array().unwrap();
    let msgs: Vec<&str> = logs
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(msgs.iter().any(|m| m.ends_with("run started")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.ends_with("run finished")), "{msgs:?}");
    // Job lines carry their task run.
    let finished: Vec<&serde_json::Value> = logs
        .iter()
        .filter(|l| l["message"].as_str().unwrap().ends_with("job finished"))
        .collect();
    assert_eq!(finished.len(), 2, "{msgs:?}");
    assert!(finished
        .iter()
        .all(|l| l["task_run_id"].is_string() && l["level"] == 20));
}

#[test]
fn a_failing_sink_is_a_failed_flow_run_naming_the_sink() {
    let p = prefect();
    // The sink's directory cannot be made: a file stands where it would go.
    let ws = Ws::new(&spec("failing", PREFECT_STATE, "", "blocked/wh.duckdb"));
    ws.write("blocked", "not a directory");
    let out = ws.run_env(
        &[
            "backfill",
            "failing",
            "--from",
            "2026-11-20T00:00:00Z",
            "--to",
            "2026-11-20T12:00:00Z",
            "--now",
            NOW,
        ],
        &[("PREFECT_API_URL", &p.url)],
    );
    assert_eq!(out.code, 1, "{out:?}");
    let runs = flow_runs(p, "failing");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(run["state"]["type"], "FAILED", "{run}");
    let msg = run["state"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("2 of 2 jobs failed: job `co`: sink `wh`: "),
        "{msg}"
    );
    assert_eq!(run["parameters"]["mode"], "backfill");
    assert_eq!(run["parameters"]["from"], "2026-11-20T00:00:00Z");
    let tasks = task_runs(p, run["id"].as_str().unwrap());
    assert!(
        tasks
            .iter()
            .all(|t| t.1 == "FAILED" && t.2.starts_with("sink `wh`: ")),
        "{tasks:?}"
    );
    // The checkpoint did not move.
    assert_eq!(p.checkpoint("failing-co"), None);
}

/// With local state and a `prefect:` server that does not answer, the run
/// loads and checkpoints as always and says once what it could not report.
#[test]
fn an_unreachable_prefect_does_not_stop_the_data_work() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let top = format!("prefect: {{url: 'http://127.0.0.1:{closed}/api'}}\n");
    let ws = Ws::new(&spec(
        "offline",
        "{type: local, path: state}",
        &top,
        "wh.duckdb",
    ));
    let t0 = std::time::Instant::now();
    let out = ws.run(&["run", "offline", "--now", NOW]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(t0.elapsed().as_secs() < 30, "took {:?}", t0.elapsed());
    assert_eq!(
        out.stderr
            .matches("could not report this run to Prefect")
            .count(),
        1,
        "{out:?}"
    );
    assert!(
        out.stderr.contains("the data work is done and recorded"),
        "{out:?}"
    );
    assert_eq!(
        ws.query("wh.duckdb", "SELECT count(*) FROM pollutant_hourly"),
        vec![vec!["142".to_owned()]]
    );
    assert!(ws.path("state/offline/co/checkpoint.json").exists());
}
