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

/// A `duckhour prefect worker` on `pool`, talking to `api_url`.
fn spawn_worker(ws: &Ws, api_url: &str, pool: &str, name: &str) -> std::process::Child {
    // Polling each second (10 s by default) keeps the tests short.
    ws.cmd(&[
        "prefect", "worker", "--pool", pool, "--name", name, "--poll", "1",
    ])
    .env("PREFECT_API_URL", api_url)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap()
}

/// A run of `deployment` with `params`, made by Prefect's own Python client; its id.
fn trigger(p: &Prefect, deployment: &str, params: &str) -> String {
    let run = p.python_file("runs.py", &["run", deployment, params]);
    run["id"].as_str().unwrap().to_owned()
}

const PREFECT_STATE: &str = "{type: prefect, url: '${env:PREFECT_API_URL}'}";
const NOW: &str = "2026-11-21T00:10:00Z";

/// The flow runs of the flow named `pipeline`.
fn flow_runs(p: &Prefect, pipeline: &str) -> Vec<serde_json::Value> {
    p.flow_runs(pipeline)
}

fn task_runs(p: &Prefect, flow_run: &str) -> Vec<(String, String, String)> {
    p.task_runs(flow_run)
}

#[test]
fn a_run_is_a_flow_run_with_a_task_run_per_job_and_its_logs() {
    let p = prefect();
    let ws = Ws::new(&spec("reported", PREFECT_STATE, "", "wh.duckdb"));
    let out = ws
        .run_env(
            &["run", "reported", "--now", NOW],
            &[("PREFECT_API_URL", &p.url)],
        )
        .ok();
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
    // The run's summary: a table artifact under the pipeline's key.
    let rows = summary(p, id, "duckhour-reported");
    let low = under_75(&sample_minutes(), "co");
    assert_eq!(
        low.len(),
        2,
        "the sample has a thin hour and a missing one: {low:?}"
    );
    let low = low.join(", ");
    let row = |job: &str| {
        serde_json::json!({"job": job, "state": "completed", "hours": 24, "rows": 71,
            "empty hours": 0, "stations under 75 % coverage": low,
            "checkpoint": "2026-11-20T23:00:00Z", "sinks behind": "none", "error": ""})
    };
    assert_eq!(rows, vec![row("co"), row("no2")]);
    // And its flow run had a heartbeat, naming its flow.
    let beats = p.events(
        serde_json::json!({
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [format!("prefect.flow-run.{id}")]},
        }),
        1,
    );
    let beat = &beats[0];
    assert_eq!(
        beat["related"][0],
        serde_json::json!({"prefect.resource.id": format!("prefect.flow.{}", run["flow_id"].as_str().unwrap()),
            "prefect.resource.role": "flow", "prefect.resource.name": "reported"}),
        "{beats:?}"
    );
}

/// The rows of the one table artifact of flow run `id`, which has `key`.
fn summary(p: &Prefect, id: &str, key: &str) -> Vec<serde_json::Value> {
    let arts = p.post_json(
        "/artifacts/filter",
        serde_json::json!({"artifacts": {"flow_run_id": {"any_": [id]}}}),
    );
    let arts = arts.as_array().unwrap();
    assert_eq!(arts.len(), 1, "{arts:?}");
    assert_eq!(arts[0]["key"], key);
    assert_eq!(arts[0]["type"], "table");
    serde_json::from_str(arts[0]["data"].as_str().unwrap()).unwrap()
}

/// The sample's minute points: (station, field, unix seconds).
fn sample_minutes() -> Vec<(String, String, i64)> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(crate::util::repo().join("data/sample.lp.gz")).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    let mut out = Vec::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = l.split(' ');
        let (series, fields, ns) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let station = series.split("station=").nth(1).unwrap().to_owned();
        let t = ns.parse::<i64>().unwrap() / 1_000_000_000;
        for f in fields.split(',') {
            out.push((station.clone(), f.split('=').next().unwrap().to_owned(), t));
        }
    }
    out
}

/// Stations with an hour where `field` has fewer than 45 of 60 minutes
/// (under 75 % coverage), sorted; an hour that other stations sent
/// readings in and the station none (0 of 60) counts too. The sample has
/// both: one station with thin hours, another with an hour missing.
fn under_75(minutes: &[(String, String, i64)], field: &str) -> Vec<String> {
    let mut per: std::collections::BTreeMap<(&str, i64), u32> = Default::default();
    for (s, _, t) in minutes.iter().filter(|m| m.1 == field) {
        *per.entry((s.as_str(), t.div_euclid(3600))).or_default() += 1;
    }
    let stations: std::collections::BTreeSet<&str> = per.keys().map(|k| k.0).collect();
    let hours: std::collections::BTreeSet<i64> = per.keys().map(|k| k.1).collect();
    let low: std::collections::BTreeSet<String> = stations
        .iter()
        .filter(|s| {
            hours
                .iter()
                .any(|h| per.get(&(**s, *h)).copied().unwrap_or(0) < 45)
        })
        .map(|s| (*s).to_owned())
        .collect();
    low.into_iter().collect()
}

#[test]
fn a_failing_sink_is_a_failed_flow_run_naming_the_sink() {
    let p = prefect();
    // The sink's directory cannot be made: a file stands where it would go.
    let ws = Ws::new(&spec("failing", PREFECT_STATE, "", "blocked/wh.duckdb"));
    ws.write("blocked", "not a directory");
    ws.run_env(
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
    )
    .exit(1);
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
    // The summary says what failed, per job.
    let rows = summary(p, run["id"].as_str().unwrap(), "duckhour-failing");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (row, job) in rows.iter().zip(["co", "no2"]) {
        assert_eq!(row["job"], job);
        assert_eq!(row["state"], "failed");
        assert_eq!(row["rows"], 0);
        assert_eq!(row["checkpoint"], "");
        assert!(
            row["error"].as_str().unwrap().starts_with("sink `wh`: "),
            "{row}"
        );
    }
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
    let out = ws.run(&["run", "offline", "--now", NOW]).ok();
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

/// Python drives, duckhour executes: `prefect deploy` (twice: nothing
/// changes), a duckhour worker on the pool, a deployment run with
/// parameters triggered through Prefect's own Python client, and the final
/// state, task runs and logs read back through it; the rows are exact.
#[test]
fn a_deployment_run_from_python_is_executed_by_a_duckhour_worker() {
    let p = prefect();
    let spec = spec("deployed", PREFECT_STATE, "", "wh.duckdb").replace(
        "    batch_hours: 12\n",
        "    batch_hours: 12\n    schedule: '5 * * * *'\n    timezone: Europe/Madrid\n",
    );
    let ws = Ws::new(&spec);
    let env = [("PREFECT_API_URL", p.url.as_str())];
    let first = ws
        .run_env(&["prefect", "deploy", "--pool", "it-pool"], &env)
        .ok();
    assert!(
        first.stdout.starts_with("deployment `deployed/deployed` (")
            && first
                .stdout
                .ends_with(") in work pool `it-pool`: schedule `5 * * * *` (Europe/Madrid)\n"),
        "{first:?}"
    );
    let again = ws.run_env(&["prefect", "deploy", "--pool", "it-pool"], &env);
    assert_eq!(again.stdout, first.stdout, "the same deployment, unchanged");
    let id = first.stdout.split(['(', ')']).nth(1).unwrap();
    let (code, d) = p.get(&format!("/deployments/{id}"));
    assert_eq!(code, 200);
    assert_eq!(d["work_pool_name"], "it-pool");
    assert_eq!(d["schedules"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d["schedules"][0]["schedule"]["cron"], "5 * * * *");
    assert_eq!(d["schedules"][0]["schedule"]["timezone"], "Europe/Madrid");
    assert_eq!(
        d["parameter_openapi_schema"]["properties"]["mode"]["enum"],
        serde_json::json!(["run", "backfill"])
    );
    assert_eq!(
        d["parameter_openapi_schema"]["properties"]["jobs"]["items"]["enum"],
        serde_json::json!(["co", "no2"])
    );

    let worker = spawn_worker(&ws, &p.url, "it-pool", "it-worker");
    let fid = trigger(
        p,
        "deployed/deployed",
        r#"{"mode": "backfill", "jobs": ["co"], "from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z"}"#,
    );
    let done = p.python_file("runs.py", &["wait", &fid, "90"]);
    crate::util::sigterm(worker.id());
    let w = worker.wait_with_output().unwrap();
    let w_out = String::from_utf8_lossy(&w.stdout);
    let w_err = String::from_utf8_lossy(&w.stderr);
    assert_eq!(done["state"], "COMPLETED", "{done}\n{w_out}\n{w_err}");
    assert_eq!(done["message"], "1 jobs, 24 hours, 71 rows");
    let tasks = done["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{done}");
    assert_eq!(tasks[0][0], "co");
    assert_eq!(tasks[0][1], "COMPLETED");
    assert!(
        tasks[0][2]
            .as_str()
            .unwrap()
            .starts_with("24 hours, 4240 rows in, 71 rows out"),
        "{done}"
    );
    let logs: Vec<&str> = done["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(logs.iter().any(|l| l.ends_with("job finished")), "{logs:?}");
    assert_eq!(
        ws.query(
            "wh.duckdb",
            "SELECT pollutant, count(*) FROM pollutant_hourly GROUP BY 1"
        ),
        vec![vec!["co".to_owned(), "71".to_owned()]]
    );
    // SIGTERM: the worker stops cleanly.
    assert_eq!(w.status.code(), Some(0), "{w_out}\n{w_err}");
    assert!(w_out.ends_with("stopped\n"), "{w_out}");
}

/// A cancel as the UI sends it (CANCELLING) while a worker runs a long
/// backfill: the worker stops between batches, the flow run ends
/// Cancelled, what was committed stays, and the checkpoint matches the rows.
#[test]
fn a_flow_run_cancelled_from_prefect_stops_between_batches() {
    let p = prefect();
    // Its source slowed, so that the run is still going when cancelled.
    let (_slow, sample) =
        crate::util::slow_sample("pr_cancelled", std::time::Duration::from_millis(300));
    let spec = spec("cancelled", PREFECT_STATE, "", "wh.duckdb")
        .replace("    batch_hours: 12\n", "    batch_hours: 1\n");
    let ws = Ws::new(&crate::util::with_source(&spec, &sample));
    let env = [("PREFECT_API_URL", p.url.as_str())];
    assert_eq!(
        ws.run_env(&["prefect", "deploy", "--pool", "it-cancel"], &env)
            .code,
        0
    );
    let worker = spawn_worker(&ws, &p.url, "it-cancel", "it-canceller");
    let fid = trigger(
        p,
        "cancelled/cancelled",
        r#"{"mode": "backfill", "jobs": ["co"], "from": "2026-11-20T00:00:00Z", "to": "2026-11-22T00:00:00Z"}"#,
    );
    let fid = fid.as_str();
    let t0 = std::time::Instant::now();
    while p
        .checkpoint("cancelled-co")
        .is_none_or(|c| c.as_str() < "2026-11-20T03:00:00Z")
    {
        assert!(t0.elapsed().as_secs() < 90, "the run did not get going");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        p.python_file("runs.py", &["cancel", fid])["status"],
        "ACCEPT"
    );
    let done = p.python_file("runs.py", &["wait", fid, "60"]);
    crate::util::sigterm(worker.id());
    let _ = worker.wait_with_output().unwrap();
    assert_eq!(done["state"], "CANCELLED", "{done}");
    assert!(
        done["message"]
            .as_str()
            .unwrap()
            .starts_with("stopped on request; loaded so far: 1 jobs, "),
        "{done}"
    );
    let cp = p.checkpoint("cancelled-co").unwrap();
    assert!(cp.as_str() < "2026-11-21T23:00:00Z", "stopped early: {cp}");
    // Every hour up to the checkpoint is in the sink, and nothing twice.
    let r = ws.query(
        "wh.duckdb",
        &format!("SELECT count(DISTINCT hour_start), count(*) = count(DISTINCT (station, hour_start)) FROM pollutant_hourly WHERE hour_start <= '{}'", &cp[..19]),
    );
    let hours =
        cp[11..13].parse::<i64>().unwrap() + 1 + (cp[8..10].parse::<i64>().unwrap() - 20) * 24;
    assert_eq!(
        r,
        vec![vec![hours.min(24).to_string(), "true".to_owned()]],
        "checkpoint {cp}"
    );
}

/// Three workers on one pool and 108 flow runs from `prefect backfill
/// --split week` (six jobs, 18 weeks): every flow run completes, each ran
/// once (the server's `run_count`, and no two workers report the same run),
/// the runs spread over the workers, and the sink holds every row once.
#[test]
fn three_workers_share_a_split_backfill_and_run_each_flow_run_once() {
    fleet(3);
}

/// The same with two workers.
#[test]
fn two_workers_share_a_split_backfill_and_run_each_flow_run_once() {
    fleet(2);
}

fn fleet(n: usize) {
    // A server of its own: 108 runs would slow every other Prefect test.
    let own = Prefect::start(&format!("fleet{n}"));
    let p = &own;
    let spec = format!(
        "state: {PREFECT_STATE}
sources:
  sample: {{type: line_protocol, path: data/sample.lp.gz}}
sinks:
  wh: {{type: duckdb, path: wh.duckdb}}
pipelines:
  fleet:
    source: sample
    sinks: [wh]
    measurement: air_quality
    start: 2026-07-24T00:00:00Z
    jobs: [{{name: co}}, {{name: no2}}, {{name: o3}}, {{name: pm10}}, {{name: pm25}}, {{name: so2}}]
"
    );
    let ws = Ws::new(&spec);
    let env = [("PREFECT_API_URL", p.url.as_str())];
    assert_eq!(
        ws.run_env(&["prefect", "deploy", "--pool", "it-fleet"], &env)
            .code,
        0
    );
    let workers: Vec<std::process::Child> = (1..=n)
        .map(|i| spawn_worker(&ws, &p.url, "it-fleet", &format!("w{i}")))
        .collect();
    // 120 days that end with the sample day: in the past whatever today is.
    let out = ws
        .run_env(
            &[
                "prefect",
                "backfill",
                "fleet",
                "--from",
                "2026-07-24T00:00:00Z",
                "--to",
                "2026-11-21T00:00:00Z",
                "--split",
                "week",
            ],
            &env,
        )
        .ok();
    assert!(
        out.stdout
            .starts_with("108 flow runs of deployment `fleet/fleet`"),
        "{out:?}"
    );
    let (_, d) = p.get("/deployments/name/fleet/fleet");
    let dep = d["id"].as_str().unwrap().to_owned();
    let runs = || {
        p.post_json(
            "/flow_runs/filter",
            serde_json::json!({"deployments": {"id": {"any_": [dep]}}, "limit": 200}),
        )
        .as_array()
        .unwrap()
        .clone()
    };
    let t0 = std::time::Instant::now();
    loop {
        let rs = runs();
        if rs.len() == 108
            && rs
                .iter()
                .all(|r| r["state"]["type"] == "COMPLETED" || r["state"]["type"] == "FAILED")
        {
            break;
        }
        assert!(
            t0.elapsed().as_secs() < 600,
            "not done: {:?}",
            rs.iter()
                .map(|r| r["state"]["type"].clone())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let rs = runs();
    let outs: Vec<String> = workers
        .into_iter()
        .map(|w| {
            crate::util::sigterm(w.id());
            String::from_utf8_lossy(&w.wait_with_output().unwrap().stdout).into_owned()
        })
        .collect();
    let failed: Vec<&serde_json::Value> = rs
        .iter()
        .filter(|r| r["state"]["type"] != "COMPLETED")
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let counts: Vec<&serde_json::Value> = rs.iter().map(|r| &r["run_count"]).collect();
    assert!(
        rs.iter().all(|r| r["run_count"] == 1),
        "run counts {counts:?}"
    );
    // Who ran what, from the workers' own reports.
    let mut seen = std::collections::BTreeMap::new();
    for (i, o) in outs.iter().enumerate() {
        for line in o.lines().filter(|l| l.starts_with("flow run ")) {
            let id = line.split(' ').nth(2).unwrap().to_owned();
            assert!(seen.insert(id, i).is_none(), "{line} ran twice");
        }
    }
    assert_eq!(seen.len(), 108);
    let per_worker: Vec<usize> = (0..n)
        .map(|i| seen.values().filter(|w| **w == i).count())
        .collect();
    eprintln!("flow runs per worker: {per_worker:?}");
    assert!(per_worker.iter().all(|n| *n > 0), "{per_worker:?}");
    assert_eq!(
        ws.query(
            "wh.duckdb",
            "SELECT pollutant, count(*), count(DISTINCT (station, hour_start)) FROM pollutant_hourly GROUP BY 1 ORDER BY 1"
        ),
        [("co", 71), ("no2", 71), ("o3", 71), ("pm10", 71), ("pm25", 71), ("so2", 69)]
            .iter()
            .map(|(p, n)| vec![p.to_string(), n.to_string(), n.to_string()])
            .collect::<Vec<_>>()
    );
}

/// Three workers take `prefect backfill --split job` of the sample day:
/// six flow runs whose MERGEs go into one BigQuery table at once (the
/// emulator answers two at once with its DuckLake commit conflict), behind
/// a proxy that also answers the first MERGE of co, o3 and pm25 with
/// BigQuery's documented concurrent-update error. Every flow run
/// completes, those three say how many writes they sent again, and the
/// table holds every (station, hour) of each pollutant once, as counted
/// from the sample's minutes. On main before this, a run failed on the
/// first conflict and its rows were missing.
#[test]
fn workers_loading_one_bigquery_table_at_once_all_complete() {
    use crate::util::{bigquery, Act, Recorder, Seen};
    // A server of its own: three workers polling each second would slow
    // every other Prefect test (SQLite answers them 503 when busy).
    let own = Prefect::start("bqfleet");
    let p = &own;
    let ds = "pr_bq_fleet";
    let refused = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let r = refused.clone();
    let table = format!("duckhour-it:{ds}.pollutant_hourly");
    let rec = Recorder::start(
        bigquery().url.trim_end_matches("/bigquery/v2"),
        Box::new(move |s: &Seen| {
            let q = s.json()["query"].as_str().unwrap_or("").to_owned();
            let job = ["co", "o3", "pm25"]
                .into_iter()
                .find(|j| q.starts_with("MERGE") && q.contains(&format!("T.`pollutant` = '{j}'")));
            match job {
                Some(j) if r.lock().unwrap().insert(j) => {
                    let m = format!(
                        "Could not serialize access to table {table} due to concurrent update"
                    );
                    let body = serde_json::json!({"error": {"code": 400, "message": m, "errors": [{"message": m, "domain": "global", "reason": "invalidQuery"}], "status": "INVALID_ARGUMENT"}});
                    Act::Answer(400, body.to_string())
                }
                _ => Act::Forward,
            }
        }),
    );
    let spec = format!(
        "state: {PREFECT_STATE}
sources:
  sample: {{type: line_protocol, path: data/sample.lp.gz}}
sinks:
  bq: {{type: bigquery, project: duckhour-it, dataset: {ds}, location: EU, endpoint: '${{env:TEST_BQ_URL}}'}}
pipelines:
  bqfleet:
    source: sample
    sinks: [bq]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    jobs: [{{name: co}}, {{name: no2}}, {{name: o3}}, {{name: pm10}}, {{name: pm25}}, {{name: so2}}]
"
    );
    let ws = Ws::new(&spec);
    let bq_url = format!("{}/bigquery/v2", rec.url);
    let env = [
        ("PREFECT_API_URL", p.url.as_str()),
        ("TEST_BQ_URL", bq_url.as_str()),
    ];
    ws.run_env(
        &["prefect", "deploy", "bqfleet", "--pool", "it-bqfleet"],
        &env,
    )
    .ok();
    let workers: Vec<std::process::Child> = (1..=3)
        .map(|i| {
            ws.cmd(&[
                "prefect",
                "worker",
                "--pool",
                "it-bqfleet",
                "--name",
                &format!("b{i}"),
                "--poll",
                "1",
            ])
            .env("PREFECT_API_URL", &p.url)
            .env("TEST_BQ_URL", &bq_url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
        })
        .collect();
    let backfill = [
        "prefect",
        "backfill",
        "bqfleet",
        "--from",
        "2026-11-20T00:00:00Z",
        "--to",
        "2026-11-21T00:00:00Z",
        "--split",
        "job",
    ];
    ws.run_env(&backfill, &env).ok();
    let t0 = std::time::Instant::now();
    let runs = loop {
        let rs = flow_runs(p, "bqfleet");
        let done = |r: &serde_json::Value| {
            ["COMPLETED", "FAILED", "CRASHED"].contains(&r["state"]["type"].as_str().unwrap_or(""))
        };
        if rs.len() == 6 && rs.iter().all(done) {
            break rs;
        }
        assert!(t0.elapsed().as_secs() < 300, "not done: {rs:#?}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    for w in workers {
        crate::util::sigterm(w.id());
        let _ = w.wait_with_output();
    }
    let mut states: Vec<(String, String, String)> = runs
        .iter()
        .map(|r| {
            (
                r["parameters"]["jobs"][0].as_str().unwrap().to_owned(),
                r["state"]["type"].as_str().unwrap().to_owned(),
                r["state"]["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    states.sort();
    assert!(states.iter().all(|s| s.1 == "COMPLETED"), "{states:#?}");
    for (job, _, message) in &states {
        if ["co", "o3", "pm25"].contains(&job.as_str()) {
            assert!(
                message.contains("writes sent again after conflicts with concurrent writers: ")
                    && message.contains(" to sink `bq`"),
                "{job}: {message}"
            );
        }
    }
    assert_eq!(refused.lock().unwrap().len(), 3);
    // Each (station, hour) a pollutant has minutes in, once.
    let mut expected: std::collections::BTreeMap<
        String,
        std::collections::BTreeSet<(String, i64)>,
    > = Default::default();
    for (station, field, t) in sample_minutes() {
        expected
            .entry(field)
            .or_default()
            .insert((station, t.div_euclid(3600)));
    }
    let expected: Vec<Vec<String>> = expected
        .iter()
        .map(|(f, keys)| vec![f.clone(), keys.len().to_string(), keys.len().to_string()])
        .collect();
    let got = bigquery().query(
        "duckhour-it",
        &format!("SELECT pollutant, COUNT(*), COUNT(DISTINCT CONCAT(station, CAST(hour_start AS STRING))) FROM `duckhour-it.{ds}.pollutant_hourly` GROUP BY pollutant ORDER BY pollutant"),
    );
    assert_eq!(got, expected);
}

/// The same cron string fires at the same instants in `serve` and in a
/// Prefect deployment: Prefect's scheduler is asked for the runs of a few
/// schedules over fixed windows around both 2027 DST changes in
/// Europe/Madrid (so not today's date), and duckhour's `Cron` computes them.
#[test]
fn schedules_fire_when_prefects_scheduler_says() {
    use chrono::{DateTime, Utc};
    let p = prefect();
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    let windows = [
        ("2027-03-26T00:00:00Z", "2027-03-31T00:00:00Z"),
        ("2027-10-29T00:00:00Z", "2027-11-03T00:00:00Z"),
    ];
    let madrid: chrono_tz::Tz = "Europe/Madrid".parse().unwrap();
    let flow = p.post_json("/flows/", serde_json::json!({"name": "cron-agreement"}));
    for (i, cron) in [
        "0 * * * *",
        "30 2 * * *",
        "*/20 1-3 * * *",
        "0 9 * * MON-FRI",
        "0 0 1 * SUN",
        "15 3 * MAR,OCT SUN",
        "@daily",
    ]
    .iter()
    .enumerate()
    {
        let d = p.post_json(
            "/deployments/",
            serde_json::json!({
                "name": format!("cron-{i}"),
                "flow_id": flow["id"],
                "schedules": [{"schedule": {"cron": cron, "timezone": "Europe/Madrid"}, "active": true}],
            }),
        );
        let id = d["id"].as_str().unwrap();
        let mut want = Vec::new();
        let ours = duckhour::cron::Cron::parse(cron).unwrap();
        for (from, to) in windows {
            assert_eq!(
                p.post(
                    &format!("/deployments/{id}/schedule"),
                    serde_json::json!({
                        "start_time": from, "end_time": to, "max_runs": 1000,
                        "min_time": (t(to) - t(from)).num_seconds() as f64,
                    })
                ),
                200,
                "{cron}"
            );
            let mut at = t(from) - chrono::Duration::seconds(1);
            while let Some(next) = ours.next_after_in(at, &madrid) {
                if next > t(to) {
                    break;
                }
                want.push(next);
                at = next;
            }
        }
        // By run id: the scheduler may still be inserting runs while the
        // pages are read, which shifts the offsets and repeats a row.
        let mut by_id = std::collections::BTreeMap::new();
        for offset in (0..).step_by(200) {
            let page = p.post_json(
                "/flow_runs/filter",
                serde_json::json!({"deployments": {"id": {"any_": [id]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 200, "offset": offset}),
            );
            let page = page.as_array().unwrap();
            for r in page {
                by_id.insert(
                    r["id"].as_str().unwrap().to_owned(),
                    t(r["expected_start_time"].as_str().unwrap()),
                );
            }
            if page.len() < 200 {
                break;
            }
        }
        let mut got: Vec<_> = by_id.into_values().collect();
        got.sort();
        got.retain(|g| windows.iter().any(|(f, to)| *g >= t(f) && *g <= t(to)));
        assert!(!want.is_empty(), "{cron}");
        assert_eq!(got, want, "`{cron}` in Europe/Madrid");
    }
}

/// The Prefect server stops while a reported run is going (its source
/// slowed through a proxy): the data work completes (every row, the
/// checkpoint at the end), and the run says once what it could not report.
#[test]
fn prefect_stopped_mid_run_does_not_stop_the_data_work() {
    let own = Prefect::start("stopped");
    let db = "runs_stopped";
    crate::engine::seed(db);
    let slow = crate::util::Recorder::start(
        &crate::util::influx().url,
        Box::new(|s: &crate::util::Seen| {
            if s.path.starts_with("/query") {
                std::thread::sleep(std::time::Duration::from_millis(400));
            }
            crate::util::Act::Forward
        }),
    );
    let spec = format!(
        "prefect: {{url: '{}'}}
state: {{type: local, path: state}}
sources:
  influx: {{type: influxdb, url: '{}', database: {db}}}
sinks:
  wh: {{type: duckdb, path: wh.duckdb}}
pipelines:
  stopped:
    source: influx
    sinks: [wh]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    batch_hours: 1
    jobs: [{{name: co}}]
",
        own.url, slow.url
    );
    let ws = Ws::new(&spec);
    let child = ws
        .cmd(&["-v", "run", "stopped", "--now", NOW])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the run shows in Prefect, stop the server.
    let t0 = std::time::Instant::now();
    while flow_runs(&own, "stopped").is_empty() {
        assert!(
            t0.elapsed().as_secs() < 60,
            "the run never showed in Prefect"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    own.down();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr
            .matches("could not report this run to Prefect")
            .count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        ws.query("wh.duckdb", "SELECT count(*) FROM pollutant_hourly"),
        vec![vec!["71".to_owned()]]
    );
    assert!(
        std::fs::read_to_string(ws.path("state/stopped/co/checkpoint.json"))
            .unwrap()
            .contains("2026-11-20T23:00:00Z")
    );
}

/// A sink out of the run (a second DuckDB file held by another process)
/// with Prefect state: the flow run is Failed naming the sink, its lag and
/// the cause; the summary artifact gives each job's sinks behind; the
/// seed's Python class reads `last_processed_hour` at the hour the lagging
/// sink holds. A rewind written by the Python class is honoured for every
/// sink once the file is free again.
#[test]
fn a_sink_out_of_the_run_fails_the_flow_run_and_holds_the_python_checkpoint() {
    let p = prefect();
    let yaml = spec("lagging", PREFECT_STATE, "", "wh.duckdb")
        .replace(
            "sinks:\n  wh: {type: duckdb, path: 'wh.duckdb'}\n",
            "sinks:\n  wh: {type: duckdb, path: 'wh.duckdb'}\n  wh2: {type: duckdb, path: 'wh2.duckdb'}\n",
        )
        .replace("    sinks: [wh]\n", "    sinks: [wh, wh2]\n");
    assert!(yaml.contains("sinks: [wh, wh2]"));
    let ws = Ws::new(&yaml);
    let run = |now: &str| {
        ws.run_env(
            &["run", "lagging", "--now", now],
            &[("PREFECT_API_URL", &p.url)],
        )
    };
    run("2026-11-20T12:10:00Z").ok();
    let held = duckdb::Connection::open(ws.path("wh2.duckdb")).unwrap();
    let out = run(NOW).exit(1);
    drop(held);
    assert!(
        out.stderr
            .contains("error: sink `wh2` is 12 hours behind: sink `wh2`: "),
        "{}",
        out.stderr
    );
    let mut runs = flow_runs(p, "lagging");
    runs.sort_by_key(|r| r["created"].as_str().unwrap().to_owned());
    let failed = &runs[1];
    assert_eq!(failed["state"]["type"], "FAILED", "{failed}");
    let message = failed["state"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("sink `wh2` is 12 hours behind: sink `wh2`: ")
            && message.ends_with("; the other sinks took every hour"),
        "{message}"
    );
    let rows = summary(p, failed["id"].as_str().unwrap(), "duckhour-lagging");
    assert_eq!(
        rows.iter()
            .map(|r| (
                r["job"].clone(),
                r["state"].clone(),
                r["sinks behind"].clone()
            ))
            .collect::<Vec<_>>(),
        [
            ("co", "completed", "wh2: 12 hours"),
            ("no2", "completed", "wh2: 12 hours")
        ]
        .map(|(j, s, b)| (j.into(), s.into(), b.into()))
    );
    // The Python flows read the hour every sink has.
    let got = p.python(&["load-state", "lagging-co"]);
    assert_eq!(got[0]["last_processed_hour"], "2026-11-20T11:00:00+00:00");
    let progress = &got[0]["metadata"]["progress"];
    assert_eq!(progress["sinks"]["wh"]["position"], "2026-11-20T23:00:00Z");
    assert_eq!(progress["sinks"]["wh2"]["position"], "2026-11-20T11:00:00Z");
    assert_eq!(progress["sinks"]["wh2"]["down"]["failures"], 1);

    // Rewound by Python to 08:00: after the backoff both files redo from 09:00.
    p.python(&["save-state", "lagging-co", "2026-11-20T08:00:00"]);
    let out = run("2026-11-21T00:15:00Z").ok();
    assert!(
        out.stdout
            .contains("co   ok      15 hours (15 new, 0 redone)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("no2  ok      12 hours (12 new, 0 redone)"),
        "{}",
        out.stdout
    );
    let count = "SELECT pollutant, count(DISTINCT hour_start), count(*) FROM pollutant_hourly GROUP BY 1 ORDER BY 1";
    assert_eq!(ws.query("wh.duckdb", count), ws.query("wh2.duckdb", count));
    assert_eq!(ws.query("wh2.duckdb", count)[0][1], "24");
    let got = p.python(&["load-state", "lagging-co"]);
    assert_eq!(got[0]["last_processed_hour"], "2026-11-20T23:00:00+00:00");
    assert_eq!(
        got[0]["metadata"]["progress"]["sinks"]["wh2"].get("down"),
        None
    );
}
