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
    ws.cmd(&[
        "prefect", "worker", "--pool", "it-ops", "--name", name, "--poll", "1",
    ])
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
    p.events(
        serde_json::json!({
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [format!("prefect.flow-run.{id}")]},
        }),
        1,
    )
}

#[test]
fn a_killed_workers_flow_run_is_crashed_by_prefects_zombie_automation_and_no_other() {
    let p = Prefect::start("ops");
    let env = [("PREFECT_API_URL", p.url.as_str())];
    // The automation of Prefect's guide, its window 10 s (the least Prefect
    // takes for a proactive trigger) instead of 90.
    p.python_file("runs.py", &["zombie-automation", "10"]);
    // Its source slowed, so that runs are still going when killed or cancelled.
    let (_slow, sample) = crate::util::slow_sample("po_zombie", Duration::from_millis(300));
    let ws = Ws::new(&crate::util::with_source(SPEC, &sample));
    ws.write("blocked", "not a directory");
    assert_eq!(
        ws.run_env(&["prefect", "deploy", "--pool", "it-ops"], &env)
            .code,
        0
    );
    let via = p.url.clone();

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

/// Minute lines of `field` at `station` for the hour starting `hour` hours
/// after 2026-11-20T00:00Z, every minute at `value`.
fn hour_lines(station: &str, field: &str, hour: i64, value: f64) -> String {
    let t0 = 1_795_132_800 + hour * 3600; // 2026-11-20T00:00:00Z
    (0..60)
        .map(|m| {
            format!(
                "air_quality,station={station} {field}={value} {}000000000\n",
                t0 + m * 60
            )
        })
        .collect()
}

/// The episodes of the definition (Directive 2008/50/EC Annex XII), from
/// hourly values: a run of consecutive hours strictly above `value` that is
/// at least `hours` long is one episode, identified by its first hour.
fn episodes(
    series: &[(&str, &str, Vec<f64>)],
    thresholds: &[(&str, &str, f64, usize)],
) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for (station, pollutant, values) in series {
        for (tp, name, value, hours) in thresholds {
            if tp != pollutant {
                continue;
            }
            let mut run = 0usize;
            for (h, v) in values.iter().enumerate() {
                run = if *v > *value { run + 1 } else { 0 };
                if run == *hours {
                    out.insert(format!(
                        "{pollutant}|{station}|{name}|2026-11-20T{:02}:00:00Z",
                        h + 1 - hours
                    ));
                }
            }
        }
    }
    out
}

/// A listener for the webhook: the `text` of every POST it gets.
fn listener() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            seen.lock()
                .unwrap()
                .push(v["text"].as_str().unwrap_or("").to_owned());
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// Threshold alerts as Prefect events: an automation with a webhook
/// notification (Prefect's own actions service) fires exactly once per
/// episode across a run, a rerun, a backfill of the same hours and a
/// backfill of old hours, which alerts only when asked (`--alerts`).
#[test]
fn threshold_episodes_notify_once_each_through_a_prefect_automation() {
    let _turn = crate::util::alert_events();
    let p = crate::util::prefect();
    let (url, got) = listener();
    p.python_file("runs.py", &["alert-automation", &url]);
    // Hourly values 00:00 .. 08:00: a short O3 peak, a longer one over the
    // alert threshold, O3 exactly at 180 (not above); NO2 above 400 for two
    // hours (no episode) then three and a fourth; SO2 exactly at 500.
    let series: Vec<(&str, &str, Vec<f64>)> = vec![
        (
            "alpha",
            "o3",
            vec![50.0, 50.0, 200.0, 180.0, 50.0, 250.0, 250.0, 50.0, 50.0],
        ),
        (
            "beta",
            "no2",
            vec![50.0, 450.0, 450.0, 100.0, 410.0, 410.0, 410.0, 410.0, 50.0],
        ),
        (
            "beta",
            "so2",
            vec![500.0, 500.0, 500.0, 500.0, 20.0, 20.0, 20.0, 20.0, 20.0],
        ),
    ];
    let thresholds = [
        ("o3", "information", 180.0, 1),
        ("o3", "alert", 240.0, 1),
        ("no2", "alert", 400.0, 3),
        ("so2", "alert", 500.0, 3),
    ];
    let lines = |series: &[(&str, &str, Vec<f64>)]| -> String {
        series
            .iter()
            .flat_map(|(s, f, v)| {
                v.iter()
                    .enumerate()
                    .map(move |(h, x)| hour_lines(s, f, h as i64, *x))
            })
            .collect()
    };
    let spec = "prefect: {url: '${env:PREFECT_API_URL}'}
state: {type: local, path: state}
sources:
  points: {type: line_protocol, path: points.lp}
sinks:
  wh: {type: duckdb, path: wh.duckdb}
pipelines:
  alerting:
    source: points
    sinks: [wh]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    jobs: [{name: o3}, {name: no2}, {name: so2}]
    models:
      - name: threshold_episodes
        grain: hour
        lookback: 3h
        events: air-quality.threshold.exceeded
";
    let ws = Ws::new(spec);
    ws.write("points.lp", &lines(&series));
    let expected = episodes(&series, &thresholds);
    assert_eq!(expected.len(), 4, "{expected:?}");
    let wait_for = |n: usize| {
        let t0 = Instant::now();
        while got.lock().unwrap().len() < n && t0.elapsed().as_secs() < 30 {
            std::thread::sleep(Duration::from_millis(200));
        }
        // And nothing more arrives.
        std::thread::sleep(Duration::from_secs(5));
        let mut seen: Vec<String> = got.lock().unwrap().clone();
        seen.sort();
        seen
    };
    let now = ["--now", "2026-11-20T09:30:00Z"];
    let run_at =
        |api: &str, args: &[&str]| ws.run_env(&[args, &now].concat(), &[("PREFECT_API_URL", api)]);
    let run = |args: &[&str]| run_at(&p.url, args).ok();
    run(&["run", "alerting"]);
    assert_eq!(wait_for(4), expected.iter().cloned().collect::<Vec<_>>());
    let rows = ws.query(
        "wh.duckdb",
        "SELECT episode FROM threshold_episodes ORDER BY episode",
    );
    assert_eq!(
        rows.into_iter().flatten().collect::<Vec<_>>(),
        expected.iter().cloned().collect::<Vec<_>>()
    );
    // A rerun, and a backfill of the same hours even when asked: nothing new.
    run(&["run", "alerting"]);
    run(&[
        "backfill",
        "alerting",
        "--from",
        "2026-11-20T00:00:00Z",
        "--to",
        "2026-11-20T09:00:00Z",
        "--alerts",
    ]);
    assert_eq!(wait_for(4).len(), 4);
    // Late points of old hours make new episodes: a backfill finds them
    // (its table gets them) but alerts only when asked.
    let late: Vec<(&str, &str, Vec<f64>)> = vec![
        (
            "gamma",
            "no2",
            vec![420.0, 420.0, 420.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0],
        ),
        (
            "delta",
            "o3",
            vec![50.0, 190.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0],
        ),
    ];
    let all: Vec<(&str, &str, Vec<f64>)> =
        series.iter().cloned().chain(late.iter().cloned()).collect();
    ws.write("points.lp", &lines(&all));
    let everything = episodes(&all, &thresholds);
    assert_eq!(everything.len(), 6);
    run(&[
        "backfill",
        "alerting",
        "--job",
        "no2",
        "--from",
        "2026-11-20T00:00:00Z",
        "--to",
        "2026-11-20T09:00:00Z",
    ]);
    assert_eq!(wait_for(4).len(), 4, "a backfill not asked to alert did");
    run(&[
        "backfill",
        "alerting",
        "--job",
        "o3",
        "--from",
        "2026-11-20T00:00:00Z",
        "--to",
        "2026-11-20T09:00:00Z",
        "--alerts",
    ]);
    let seen = wait_for(5);
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(
        seen.contains(&"o3|delta|information|2026-11-20T01:00:00Z".to_owned()),
        "{seen:?}"
    );
    let rows = ws.query(
        "wh.duckdb",
        "SELECT episode FROM threshold_episodes ORDER BY episode",
    );
    assert_eq!(
        rows.into_iter().flatten().collect::<Vec<_>>(),
        everything.iter().cloned().collect::<Vec<_>>()
    );
    // Prefect refusing the events: the model fails, writes nothing and
    // keeps its hours; the next run (nothing new to load) sends them.
    let refusing = Recorder::start(
        p.url.trim_end_matches("/api"),
        Box::new(|s: &crate::util::Seen| {
            if s.method == "POST" && s.path.ends_with("/api/events") {
                crate::util::Act::Answer(400, r#"{"detail": "refused by the test"}"#.into())
            } else {
                crate::util::Act::Forward
            }
        }),
    );
    let late: Vec<(&str, &str, Vec<f64>)> = vec![(
        "epsilon",
        "o3",
        vec![50.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0, 181.0, 50.0],
    )];
    let all: Vec<(&str, &str, Vec<f64>)> =
        all.iter().cloned().chain(late.iter().cloned()).collect();
    ws.write("points.lp", &lines(&all));
    let out = run_at(
        &format!("{}/api", refusing.url),
        &[
            "backfill",
            "alerting",
            "--job",
            "o3",
            "--from",
            "2026-11-20T00:00:00Z",
            "--to",
            "2026-11-20T09:00:00Z",
            "--alerts",
        ],
    )
    .exit(1);
    assert!(
        out.stderr.contains("error: model `threshold_episodes`: Prefect did not take 1 `air-quality.threshold.exceeded` events for hour [2026-11-20T00:00:00Z, 2026-11-20T12:00:00Z): "),
        "{out:?}"
    );
    let rows = ws.query(
        "wh.duckdb",
        "SELECT count(*) FROM threshold_episodes WHERE episode LIKE '%epsilon%'",
    );
    assert_eq!(rows, vec![vec!["0".to_owned()]]);
    assert_eq!(wait_for(5).len(), 5);
    run(&["run", "alerting"]);
    let seen = wait_for(6);
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(
        seen.contains(&"o3|epsilon|information|2026-11-20T07:00:00Z".to_owned()),
        "{seen:?}"
    );
    // Prefect holds one event per alerted episode, with the station as its resource.
    let stations =
        ["alpha", "beta", "delta", "epsilon", "gamma"].map(|s| format!("air-quality.station.{s}"));
    let evs = p.events(
        serde_json::json!({"event": {"name": ["air-quality.threshold.exceeded"]},
            "resource": {"id": stations}}),
        6,
    );
    let mut evs: Vec<(String, String)> = evs
        .iter()
        .map(|e| {
            (
                e["payload"]["episode"].as_str().unwrap().to_owned(),
                e["resource"]["prefect.resource.id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    evs.sort();
    assert_eq!(evs.len(), 6, "{evs:?}");
    assert!(evs.contains(&(
        "no2|beta|alert|2026-11-20T04:00:00Z".into(),
        "air-quality.station.beta".into()
    )));
}

/// `prefect backfill` run twice (or retried) makes each flow run once:
/// every part carries an idempotency key, and Prefect returns the run that
/// has it.
#[test]
fn a_repeated_prefect_backfill_makes_no_second_flow_runs() {
    let p = crate::util::prefect();
    let ws = Ws::new(&SPEC.replace("zombie", "twice"));
    let env = [("PREFECT_API_URL", p.url.as_str())];
    assert_eq!(
        ws.run_env(&["prefect", "deploy", "twice", "--pool", "it-twice"], &env)
            .code,
        0
    );
    let backfill = [
        "prefect",
        "backfill",
        "twice",
        "--from",
        "2026-11-20T00:00:00Z",
        "--to",
        "2026-11-22T00:00:00Z",
        "--split",
        "job",
    ];
    for _ in 0..2 {
        let out = ws.run_env(&backfill, &env).ok();
        assert!(
            out.stdout
                .starts_with("2 flow runs of deployment `twice/twice`"),
            "{out:?}"
        );
    }
    let runs = p.post_json(
        "/flow_runs/filter",
        serde_json::json!({"flows": {"name": {"any_": ["twice"]}}}),
    );
    let mut jobs: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["parameters"]["jobs"][0].as_str().unwrap().to_owned())
        .collect();
    jobs.sort();
    assert_eq!(jobs, ["co", "no2"]);
}

/// `prefect deploy` refuses a pool name already used by a pool of another
/// type (its workers would take duckhour's flow runs), and says what to do.
#[test]
fn deploy_refuses_a_pool_of_another_type() {
    let p = crate::util::prefect();
    assert_eq!(
        p.post(
            "/work_pools/",
            serde_json::json!({"name": "it-python-pool", "type": "process"})
        ),
        201
    );
    let ws = Ws::new(&SPEC.replace("zombie", "pooled"));
    let out = ws
        .run_env(
            &["prefect", "deploy", "pooled", "--pool", "it-python-pool"],
            &[("PREFECT_API_URL", p.url.as_str())],
        )
        .exit(1);
    assert!(
        out.stderr.contains("work pool `it-python-pool`: conflict (409): it exists with type `process`, not `duckhour`: its workers would take duckhour's flow runs; choose another pool with `--pool`"),
        "{out:?}"
    );
    // Nothing was deployed into it.
    let (code, _) = p.get("/deployments/name/pooled/pooled");
    assert_eq!(code, 404);
}
