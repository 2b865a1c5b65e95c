//! Operating duckhour in Prefect, against a real Prefect 3.9 server of the
//! test's own (it installs an automation and is stopped): heartbeats that
//! let Prefect's documented "zombie flows" automation mark the flow run of
//! a worker killed with -9 as Crashed, and only that one; run summaries as
//! versions of the pipeline's table artifact; and a worker that stops at
//! once on SIGTERM while its server does not answer.

use std::time::{Duration, Instant};

use crate::util::{Prefect, Recorder, Ws};

/// Two pipelines with Prefect state, heartbeats every 2 s: `zombie` loads
/// hour by hour; `failing` writes to a sink whose directory cannot be made.
const SPEC: &str = "prefect: {heartbeat: 2s}
state: {type: prefect, url: '${env:PREFECT_API_URL}', lease: 60s}
sources:
  sample: {type: line_protocol, path: data/sample.lp.gz}
sinks:
  wh: {type: duckdb, path: wh.duckdb}
  blocked: {type: duckdb, path: blocked/wh.duckdb}
pipelines:
  zombie:
    source: sample
    sinks: [wh]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    batch_hours: 1
    jobs: [{name: co}, {name: no2}]
  failing:
    source: sample
    sinks: [blocked]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    jobs: [{name: co}]
";

const BACKFILL: &str =
    r#""mode": "backfill", "from": "2026-11-20T00:00:00Z", "to": "2026-11-22T00:00:00Z""#;

fn worker(ws: &Ws, api_url: &str, name: &str) -> std::process::Child {
    ws.cmd(&["prefect", "worker", "--pool", "it-ops", "--name", name])
        .env("PREFECT_API_URL", api_url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn trigger(p: &Prefect, deployment: &str, params: &str) -> String {
    p.python_file("runs.py", &["run", deployment, params])["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn state_of(p: &Prefect, id: &str) -> String {
    let (code, fr) = p.get(&format!("/flow_runs/{id}"));
    assert_eq!(code, 200, "{fr}");
    fr["state"]["type"].as_str().unwrap().to_owned()
}

/// Waits up to `secs` for the checkpoint `block` to reach `at`.
fn wait_checkpoint(p: &Prefect, block: &str, at: &str, secs: u64) {
    let t0 = Instant::now();
    while p.checkpoint(block).is_none_or(|c| c.as_str() < at) {
        assert!(t0.elapsed().as_secs() < secs, "{block} did not reach {at}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The heartbeat events the server holds for flow run `id`.
fn heartbeats(p: &Prefect, id: &str) -> Vec<serde_json::Value> {
    let page = p.post_json(
        "/events/filter",
        serde_json::json!({"filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [format!("prefect.flow-run.{id}")]},
            "occurred": {"since": "2020-01-01T00:00:00Z"},
        }, "limit": 50}),
    );
    page["events"].as_array().unwrap().clone()
}

#[test]
fn a_killed_workers_flow_run_is_crashed_by_prefects_zombie_automation_and_no_other() {
    let p = Prefect::start("ops");
    let env = [("PREFECT_API_URL", p.url.as_str())];
    // The automation of Prefect's guide, its window 10 s (the least Prefect
    // takes for a proactive trigger) instead of 90.
    p.python_file("runs.py", &["zombie-automation", "10"]);
    let ws = Ws::new(SPEC);
    ws.write("blocked", "not a directory");
    assert_eq!(
        ws.run_env(&["prefect", "deploy", "--pool", "it-ops"], &env)
            .code,
        0
    );
    // Block writes slowed, so that runs are still going when killed or cancelled.
    let rec = Recorder::start(
        p.url.trim_end_matches("/api"),
        Box::new(|s: &crate::util::Seen| {
            if s.method == "PATCH" && s.path.contains("/block_documents/") {
                std::thread::sleep(Duration::from_millis(300));
            }
            crate::util::Act::Forward
        }),
    );
    let via = format!("{}/api", rec.url);

    // 1. A worker killed with -9 in the middle of a flow run.
    let mut first = worker(&ws, &via, "it-doomed");
    let killed = trigger(
        &p,
        "zombie/zombie",
        &format!(r#"{{"jobs": ["co"], {BACKFILL}}}"#),
    );
    wait_checkpoint(&p, "zombie-co", "2026-11-20T03:00:00Z", 90);
    first.kill().unwrap();
    let _ = first.wait();
    let t0 = Instant::now();
    assert_eq!(state_of(&p, &killed), "RUNNING");
    let beats = heartbeats(&p, &killed);
    assert!(!beats.is_empty(), "no heartbeat for the flow run");
    // Shaped as Prefect's flow engine sends them, so the automation matches.
    let related: Vec<(String, String)> = beats[0]["related"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["prefect.resource.role"].as_str().unwrap().to_owned(),
                r["prefect.resource.id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let (_, fr) = p.get(&format!("/flow_runs/{killed}"));
    assert!(
        related.contains(&(
            "flow".into(),
            format!("prefect.flow.{}", fr["flow_id"].as_str().unwrap())
        )),
        "{related:?}"
    );
    assert!(
        related.contains(&(
            "deployment".into(),
            format!(
                "prefect.deployment.{}",
                fr["deployment_id"].as_str().unwrap()
            )
        )),
        "{related:?}"
    );
    while state_of(&p, &killed) != "CRASHED" {
        assert!(
            t0.elapsed().as_secs() < 60,
            "the killed worker's run is still {} after 60 s",
            state_of(&p, &killed)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("crashed {} s after the kill", t0.elapsed().as_secs());

    // 2. A flow run created afterwards completes (once the dead worker's
    // lease lapses) and the rows are exact; a failing and a cancelled run
    // end as such, and none of them is crashed.
    let second = worker(&ws, &via, "it-survivor");
    let done = trigger(
        &p,
        "zombie/zombie",
        &format!(r#"{{"jobs": ["co"], {BACKFILL}}}"#),
    );
    let end = p.python_file("runs.py", &["wait", &done, "150"]);
    assert_eq!(end["state"], "COMPLETED", "{end}");
    let rows = ws.query(
        "wh.duckdb",
        "SELECT count(DISTINCT hour_start), count(*) = count(DISTINCT (station, hour_start)) FROM pollutant_hourly WHERE pollutant = 'co'",
    );
    assert_eq!(rows, vec![vec!["24".to_owned(), "true".to_owned()]]);
    assert_eq!(
        p.checkpoint("zombie-co").as_deref(),
        Some("2026-11-21T23:00:00Z")
    );
    let failed = trigger(&p, "failing/failing", &format!("{{{BACKFILL}}}"));
    let end = p.python_file("runs.py", &["wait", &failed, "60"]);
    assert_eq!(end["state"], "FAILED", "{end}");
    let cancelled = trigger(
        &p,
        "zombie/zombie",
        &format!(r#"{{"jobs": ["no2"], {BACKFILL}}}"#),
    );
    wait_checkpoint(&p, "zombie-no2", "2026-11-20T03:00:00Z", 60);
    assert_eq!(
        p.python_file("runs.py", &["cancel", &cancelled])["status"],
        "ACCEPT"
    );
    let end = p.python_file("runs.py", &["wait", &cancelled, "60"]);
    assert_eq!(end["state"], "CANCELLED", "{end}");
    for id in [&done, &failed, &cancelled] {
        assert!(!heartbeats(&p, id).is_empty(), "no heartbeat for {id}");
    }
    // Each run's summary is a version of the pipeline's table artifact.
    let arts = p.post_json(
        "/artifacts/filter",
        serde_json::json!({"artifacts": {"key": {"any_": ["duckhour-zombie"]}}, "sort": "CREATED_DESC"}),
    );
    let arts: Vec<(String, serde_json::Value)> = arts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let rows: serde_json::Value =
                serde_json::from_str(a["data"].as_str().unwrap()).unwrap();
            (
                a["flow_run_id"].as_str().unwrap().to_owned(),
                rows[0].clone(),
            )
        })
        .collect();
    assert_eq!(arts.len(), 2, "{arts:?}");
    let arts: Vec<_> = arts.into_iter().rev().collect();
    assert_eq!(arts[0].0, done);
    assert_eq!(
        (
            &arts[0].1["job"],
            &arts[0].1["state"],
            &arts[0].1["checkpoint"],
            &arts[0].1["empty hours"]
        ),
        (
            &"co".into(),
            &"completed".into(),
            &"2026-11-21T23:00:00Z".into(),
            &24.into()
        )
    );
    assert_eq!(arts[1].0, cancelled);
    assert_eq!(
        (&arts[1].1["job"], &arts[1].1["state"]),
        (&"no2".into(), &"stopped".into())
    );
    // Past the automation's window and evaluation period: still as they ended.
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(
        [&done, &failed, &cancelled].map(|id| state_of(&p, id)),
        ["COMPLETED", "FAILED", "CANCELLED"]
    );
    assert_eq!(state_of(&p, &killed), "CRASHED");

    // 3. An idle worker whose server does not answer stops at once on SIGTERM.
    p.down();
    std::thread::sleep(Duration::from_secs(3));
    let t0 = Instant::now();
    crate::util::sigterm(second.id());
    let out = second.wait_with_output().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the worker took {:?} to stop",
        t0.elapsed()
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("stopped\n"));
}
