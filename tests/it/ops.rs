//! Operating it: `serve`, signals, progress, structured logs, secret hygiene.

use std::time::{Duration, Instant};

use crate::util::{influx, Out, Ws};

fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed().as_secs() < secs,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `serve`, waits for `ready`, sends SIGTERM, returns the output.
fn serve_until(ws: &Ws, args: &[&str], env: &[(&str, &str)], ready: impl FnMut() -> bool) -> Out {
    let mut cmd = ws.cmd(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for("serve to be ready", 30, ready);
    crate::util::sigterm(pid);
    let t0 = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert!(t0.elapsed().as_secs() < 15, "serve took too long to stop");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn demo_with_schedule() -> Ws {
    let spec = std::fs::read_to_string(crate::util::repo().join("pipelines.yaml")).unwrap();
    let spec = spec.replacen(
        "    end: 2026-11-21T00:00:00Z\n    batch_hours: 24\n",
        "    end: 2026-11-21T00:00:00Z\n    batch_hours: 24\n    schedule: \"5 * * * *\"\n",
        1,
    );
    assert!(spec.contains("schedule: \"5 * * * *\"\n    jobs:\n      - name: co\n        params: {unit: mg/m3}\n      - name: no2"), "demo schedule inserted");
    Ws::new(&spec)
}

#[test]
fn serve_catches_up_at_start_then_stops_on_sigterm() {
    let ws = demo_with_schedule();
    let jobs = ["co", "no2", "o3", "pm10", "pm25", "so2"];
    let done: Vec<_> = jobs
        .iter()
        .map(|j| ws.path(&format!(".duckhour/demo/{j}/runs.jsonl")))
        .collect();
    let out = serve_until(
        &ws,
        &["serve", "demo", "--now", "2026-11-21T00:10:00Z"],
        &[],
        || done.iter().all(|p| p.exists()),
    )
    .ok();
    assert!(out.stdout.starts_with("serving demo (UTC); stop with Ctrl-C or SIGTERM\nrun of pipeline `demo`:\n  co                              ok      "), "{out:?}");
    assert!(
        // "next run of `demo` at ..." is printed unless the signal came first.
        out.stdout.ends_with("stopped\n") && out.stdout.matches("  ok  ").count() == 6 + 13,
        "{out:?}"
    );
    assert_eq!(out.stderr, "", "{out:?}");
    let r = ws.query(
        "demo.duckdb",
        "SELECT count(DISTINCT pollutant) FROM pollutant_hourly",
    );
    assert_eq!(r, vec![vec!["6".to_owned()]]);
}

#[test]
fn serve_without_a_schedule_is_a_usage_error() {
    let ws = Ws::shipped();
    let out = ws.run(&["serve", "demo"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (2, "error: pipeline `demo` has no `schedule`\n")
    );
}

/// Six jobs of hour-long batches over a day from the real InfluxDB.
fn slow_spec(db: &str) -> String {
    format!(
        "state: {{type: local, path: state}}
sources:
  influx: {{type: influxdb, url: '${{env:TEST_INFLUX_URL}}', database: {db}, token: '${{secret:influxdb-token}}'}}
sinks:
  wh: {{type: duckdb, path: wh.duckdb}}
pipelines:
  hourly:
    source: influx
    sinks: [wh]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    batch_hours: 1
    schedule: '5 * * * *'
    jobs: [{{name: co}}, {{name: no2}}, {{name: o3}}, {{name: pm10}}, {{name: pm25}}, {{name: so2}}]
"
    )
}

#[test]
fn sigterm_mid_run_commits_the_batch_in_progress_and_leaves_no_trace_of_others() {
    crate::engine::seed("ops_sigterm");
    let ws = Ws::new(&slow_spec("ops_sigterm"));
    let ledger = ws.path("state/hourly/co/ledger.jsonl");
    let url = influx().url.clone();
    let out = serve_until(
        &ws,
        &["serve", "--now", "2026-11-21T00:10:00Z"],
        &[("TEST_INFLUX_URL", &url), ("INFLUXDB_TOKEN", "t")],
        || std::fs::read_to_string(&ledger).is_ok_and(|l| l.lines().count() >= 2),
    )
    .ok();
    assert!(out.stdout.contains("stopped"), "{out:?}");
    // Every job: the sink holds exactly the hours up to its checkpoint.
    let st = ws.run_env(
        &["status", "hourly", "--now", "2026-11-21T00:10:00Z"],
        &[("TEST_INFLUX_URL", &url)],
    );
    for job in ["co", "no2", "o3", "pm10", "pm25", "so2"] {
        let cp = std::fs::read_to_string(ws.path(&format!("state/hourly/{job}/checkpoint.json")))
            .ok()
            .map(|t| {
                serde_json::from_str::<serde_json::Value>(&t).unwrap()["last_processed_hour"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            });
        let beyond = match &cp {
            Some(c) => format!("hour_start > TIMESTAMPTZ '{c}'"),
            None => "true".to_owned(),
        };
        let r = ws.query(
            "wh.duckdb",
            &format!(
                "SELECT count(*) FROM pollutant_hourly WHERE pollutant = '{job}' AND {beyond}"
            ),
        );
        assert_eq!(
            r,
            vec![vec!["0".to_owned()]],
            "{job}: rows past checkpoint {cp:?}; {st:?}"
        );
    }
    // A later run completes the day exactly.
    ws.run_env(
        &["run", "hourly", "--now", "2026-11-21T00:10:00Z"],
        &[("TEST_INFLUX_URL", &url), ("INFLUXDB_TOKEN", "t")],
    )
    .ok();
    let r = ws.query("wh.duckdb", "SELECT count(*), count(DISTINCT (pollutant, station, hour_start)) FROM pollutant_hourly WHERE hour_start < TIMESTAMPTZ '2026-11-21 00:00:00+00'");
    assert_eq!(r, vec![vec!["424".to_owned(), "424".to_owned()]]);
}

#[test]
fn progress_only_on_a_terminal_and_logs_as_json_with_spans() {
    let ws = Ws::shipped();
    let args = "backfill demo --from 2026-11-20T00:00:00Z --to 2026-11-21T00:00:00Z --now 2026-11-22T00:00:00Z";
    // Not a terminal: nothing on stderr.
    let out = ws.run(&args.split(' ').collect::<Vec<_>>());
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{out:?}");
    // A terminal (script(1) gives it a pty): a progress line, then the report.
    let o = std::process::Command::new("script")
        .current_dir(ws.dir.path())
        .args([
            "-qfc",
            &format!("{} {args}", env!("CARGO_BIN_EXE_duckhour")),
            "/dev/null",
        ])
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(
        // Two jobs run at once, so the first batch done may be any job's.
        tty.contains("\rdemo: 24/144 hours, ") && tty.contains(" rows/s"),
        "{tty:?}"
    );
    assert!(
        tty.contains("\rdemo: 144/144 hours, 25320 rows, "),
        "{tty:?}"
    );
    // JSON logs: one object per line, with the pipeline, job and batch spans.
    let out = ws
        .run(&[
            "-v",
            "--log-format",
            "json",
            "backfill",
            "demo",
            "--job",
            "co",
            "--from",
            "2026-11-20T00:00:00Z",
            "--to",
            "2026-11-21T00:00:00Z",
            "--now",
            "2026-11-23T00:10:00Z",
        ])
        .ok();
    let lines = json_lines(&out.stderr);
    let batch = lines
        .iter()
        .find(|l| l["fields"]["message"] == "batch loaded")
        .expect("a batch line");
    let spans: Vec<&str> = batch["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(spans, ["pipeline", "job", "batch"]);
    assert_eq!(batch["spans"][1]["job"], "co");
    assert!(
        batch["fields"]["rows_in"].is_u64()
            && batch["fields"]["rows_out"].is_u64()
            && batch["fields"]["ms"].is_u64()
    );
    let done = lines
        .iter()
        .find(|l| l["fields"]["message"] == "job finished")
        .expect("a job line");
    assert_eq!(done["fields"]["hours"], 24);
}

#[test]
fn no_secret_ever_appears_in_output_logs_or_state() {
    crate::engine::seed("ops_secrets");
    let url = influx().url.clone();
    let auth_url = url.replace("http://", "http://reader:${secret:influx-password}@");
    let cloud = "  cloud:
    source: influx
    sinks: [md]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    schedule: '5 * * * *'
    jobs: [{name: co}]
";
    let spec = slow_spec("ops_secrets")
        .replace("'${env:TEST_INFLUX_URL}'", &format!("'{auth_url}'"))
        .replace("    batch_hours: 1\n", "    batch_hours: 24\n")
        + cloud;
    let spec = spec.replacen(
        "sinks:\n  wh: {type: duckdb, path: wh.duckdb}\n",
        "sinks:\n  wh: {type: duckdb, path: wh.duckdb}\n  md: {type: duckdb, path: 'md:aq', token: '${secret:motherduck-token}'}\n",
        1,
    );
    let ws = Ws::new(&spec);
    let markers = [
        ("INFLUXDB_TOKEN", "SECRET-MARKER-1"),
        ("MOTHERDUCK_TOKEN", "SECRET-MARKER-2"),
        ("INFLUX_PASSWORD", "SECRET-MARKER-3"),
    ];
    let home = ws.path("home").display().to_string();
    let mut env: Vec<(&str, &str)> = markers.to_vec();
    env.push(("HOME", &home));
    let mut printed = String::new();
    let now = "2026-11-21T00:10:00Z";
    for args in [
        vec!["validate"],
        vec!["list"],
        vec!["dry-run", "hourly", "--now", now],
        vec!["dry-run", "cloud", "--now", now],
        vec!["-vv", "--log-format", "json", "run", "hourly", "--now", now],
        vec!["-vv", "run", "cloud", "--now", now],
        vec!["status"],
    ] {
        let out = ws.run_env(&args, &env);
        printed.push_str(&format!("{out:?}"));
    }
    assert!(
        printed.contains("run of pipeline `hourly`:\n  co    ok"),
        "{printed}"
    );
    // Offline the extension cannot load; with network the token is refused.
    assert!(
        printed.contains("error: job `co`: sink `md`: cannot load the MotherDuck extension")
            || printed.contains("error: job `co`: sink `md`: cannot attach MotherDuck database"),
        "{printed}"
    );
    let ledger = ws.path("state/hourly/co/ledger.jsonl");
    let out = serve_until(&ws, &["-vv", "serve", "hourly", "--now", now], &env, || {
        ledger.exists()
    });
    printed.push_str(&format!("{out:?}"));
    for dir in ["state", "home"] {
        for e in crate::util::files_under(&ws.path(dir)) {
            if let Ok(text) = std::fs::read_to_string(&e) {
                printed.push_str(&text);
            }
        }
    }
    for (_, m) in markers {
        assert!(!printed.contains(m), "{m} leaked:\n{printed}");
    }
}

/// A log pipeline gets each run's and job's start and end at the default
/// level with `--log-format json` (before, it got nothing without `-v`).
#[test]
fn json_logs_at_the_default_level_tell_runs_and_jobs() {
    let ws = Ws::shipped();
    let out = ws
        .run(&[
            "--log-format",
            "json",
            "run",
            "demo",
            "--job",
            "co",
            "--now",
            "2026-11-21T00:10:00Z",
        ])
        .ok();
    let lines = json_lines(&out.stderr);
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["fields"]["message"].as_str().unwrap())
        .collect();
    // The demo's 13 models each finish once.
    let mut want = vec!["run started", "job started", "batch loaded", "job finished"];
    want.extend(["model finished"; 13]);
    want.push("run finished");
    assert_eq!(messages, want, "{out:?}");
    assert_eq!(lines[0]["fields"]["jobs"], "co");
    assert_eq!(lines[1]["fields"]["hours"], 24);
    let done = &lines[3]["fields"];
    assert_eq!(
        (&done["outcome"], &done["hours"], &done["checkpoint"]),
        (
            &serde_json::json!("ok"),
            &serde_json::json!(24),
            &serde_json::json!("2026-11-20T23:00:00Z")
        )
    );
    // Models not reading each other finish in either order (side by side).
    let model = &lines[4..17]
        .iter()
        .find(|l| l["fields"]["model"] == "daily_mean")
        .unwrap_or_else(|| panic!("{out:?}"))["fields"];
    assert_eq!(
        (&model["model"], &model["ok"], &model["rows"]),
        (
            &serde_json::json!("daily_mean"),
            &serde_json::json!(true),
            &serde_json::json!(3)
        )
    );
    let end = &lines[17]["fields"];
    assert_eq!(
        (&end["jobs"], &end["models"], &end["failed"]),
        (
            &serde_json::json!(1),
            &serde_json::json!(13),
            &serde_json::json!(0)
        )
    );
}

/// One JSON object per log line.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
