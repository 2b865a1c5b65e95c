//! The run engine against a real InfluxDB and real DuckDB files: values,
//! idempotence, lookback, a failing sink, kill -9, and leases.

use std::collections::BTreeMap;
use std::io::Read;

use crate::util::{influx, Ws};

/// The shipped sample day, written to a fresh database.
pub fn seed(db: &str) {
    seed_into(influx(), db)
}

/// The shipped sample day, written to a fresh database of `ix`.
pub fn seed_into(ix: &crate::util::Influx, db: &str) {
    ix.create_db(db);
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(crate::util::repo().join("data/sample.lp.gz")).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    for chunk in lines.chunks(2000) {
        ix.write(db, &chunk.join("\n"));
    }
}

fn spec(db: &str, batch_hours: u32, lookback: &str) -> String {
    format!(
        "state: {{type: local, path: state}}
sources:
  influx:
    type: influxdb
    url: ${{env:TEST_INFLUX_URL}}
    database: {db}
sinks:
  wh:
    type: duckdb
    path: wh.duckdb
pipelines:
  hourly:
    source: influx
    sinks: [wh]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    batch_hours: {batch_hours}
    lookback: {lookback}
    jobs:
      - name: co
      - name: no2
      - name: o3
      - name: pm10
      - name: pm25
      - name: so2
"
    )
}

const NOW: &str = "2026-11-21T00:10:00Z";

/// `backfill hourly --job co --from FROM --to TO --now NOW`.
fn backfill_co(ws: &Ws, from: &str, to: &str) -> crate::util::Out {
    run(
        ws,
        &[
            "backfill", "hourly", "--job", "co", "--from", from, "--to", to, "--now", NOW,
        ],
    )
}

fn run(ws: &Ws, args: &[&str]) -> crate::util::Out {
    ws.run_env(args, &[("TEST_INFLUX_URL", &influx().url)])
}

type Key = (String, String, String); // pollutant, station, hour (epoch seconds)

/// (avg, min, max, n) per (pollutant, station, hour), computed by InfluxDB itself.
fn influx_hourly(db: &str) -> BTreeMap<Key, (f64, f64, f64, i64)> {
    let mut out = BTreeMap::new();
    for p in ["co", "no2", "o3", "pm10", "pm25", "so2"] {
        let q = format!(
            "SELECT mean(\"{p}\"), min(\"{p}\"), max(\"{p}\"), count(\"{p}\") FROM \"{db}\"..\"air_quality\" WHERE time >= '2026-11-20T00:00:00Z' AND time < '2026-11-21T00:00:00Z' GROUP BY time(1h), \"station\""
        );
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/query", influx().url))
            .query(&[("epoch", "s")])
            .form(&[("q", q.as_str())])
            .send()
            .unwrap()
            .json::<serde_json::Value>()
            .unwrap();
        for s in r["results"][0]["series"].as_array().unwrap() {
            let station = s["tags"]["station"].as_str().unwrap().to_owned();
            for row in s["values"].as_array().unwrap() {
                if row[4].as_i64().unwrap_or(0) == 0 {
                    continue;
                }
                out.insert(
                    (
                        p.to_owned(),
                        station.clone(),
                        row[0].as_i64().unwrap().to_string(),
                    ),
                    (
                        row[1].as_f64().unwrap(),
                        row[2].as_f64().unwrap(),
                        row[3].as_f64().unwrap(),
                        row[4].as_i64().unwrap(),
                    ),
                );
            }
        }
    }
    out
}

/// The sink's rows, keyed like `influx_hourly`, with `valid` and `coverage`.
fn sink_rows(ws: &Ws) -> BTreeMap<Key, (f64, f64, f64, i64, bool, f64)> {
    let rows = ws.query(
        "wh.duckdb",
        "SELECT pollutant, station, epoch_us(hour_start) // 1000000, avg, min, max, n_minutes, valid, coverage FROM pollutant_hourly",
    );
    let mut out = BTreeMap::new();
    for r in rows {
        let key = (r[0].clone(), r[1].clone(), r[2].clone());
        let v = (
            r[3].parse().unwrap(),
            r[4].parse().unwrap(),
            r[5].parse().unwrap(),
            r[6].parse().unwrap(),
            r[7] == "true",
            r[8].parse().unwrap(),
        );
        assert!(
            out.insert(key.clone(), v).is_none(),
            "duplicate row {key:?}"
        );
    }
    out
}

fn assert_matches_influx(ws: &Ws, db: &str) {
    let want = influx_hourly(db);
    let got = sink_rows(ws);
    assert_eq!(got.len(), want.len(), "row count");
    for (k, (avg, min, max, n)) in &want {
        let g = got.get(k).unwrap_or_else(|| panic!("missing {k:?}"));
        assert!(
            (g.0 - avg).abs() <= 1e-9 * avg.abs().max(1.0),
            "{k:?} avg {} vs {avg}",
            g.0
        );
        assert_eq!((g.1, g.2, g.3), (*min, *max, *n), "{k:?}");
        assert_eq!(g.4, *n >= 45, "{k:?} valid");
        assert!((g.5 - *n as f64 / 60.0).abs() < 1e-12, "{k:?} coverage");
    }
}

#[test]
fn one_day_matches_influx_then_a_second_run_changes_nothing() {
    seed("eng_day");
    let ws = Ws::new(&spec("eng_day", 24, "0h"));
    let out = run(&ws, &["run", "hourly", "--now", NOW]).ok();
    assert!(out.stdout.contains("  co    ok      24 hours (24 new, 0 redone) in 1 batch, 4240 rows in, 71 rows out, checkpoint 2026-11-20T23:00:00Z\n"), "{out:?}");
    assert_matches_influx(&ws, "eng_day");
    // The sample's gaps: 40 minutes at hamburg 03:00 (invalid), no muenchen 14:00 row.
    let r = ws.query("wh.duckdb", "SELECT n_minutes, valid FROM pollutant_hourly WHERE pollutant = 'no2' AND station = 'hamburg-sternschanze' AND hour_start = TIMESTAMPTZ '2026-11-20 03:00:00+00'");
    assert_eq!(r, vec![vec!["40".to_owned(), "false".to_owned()]]);

    // The ledger: one line per hour and sink, with that hour's rows.
    let ledger = std::fs::read_to_string(ws.path("state/hourly/co/ledger.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> = ledger
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 24);
    assert!(entries.iter().all(|e| e["ok"] == true && e["sink"] == "wh"));
    assert_eq!(
        entries
            .iter()
            .map(|e| e["rows"].as_u64().unwrap())
            .sum::<u64>(),
        71
    );
    let h14 = entries
        .iter()
        .find(|e| e["hour"] == "2026-11-20T14:00:00Z")
        .unwrap();
    assert_eq!(h14["rows"], 2, "muenchen has no readings at 14:00");
    // Every sink well and level: no positions beside the checkpoint.
    assert!(!ws.path("state/hourly/co/progress.json").exists());
    let before = ws.query("wh.duckdb", "SELECT * FROM pollutant_hourly ORDER BY ALL");
    let out = run(&ws, &["run", "hourly", "--now", NOW]).ok();
    assert!(out.stdout.contains("  co    ok      0 hours (0 new, 0 redone) in 0 batches, 0 rows in, 0 rows out, checkpoint 2026-11-20T23:00:00Z\n"), "{out:?}");
    assert_eq!(
        ws.query("wh.duckdb", "SELECT * FROM pollutant_hourly ORDER BY ALL"),
        before
    );

    let out = run(&ws, &["status", "hourly", "--now", NOW]).ok();
    assert!(out.stdout.starts_with("pipeline `hourly` (state local state; last complete hour 2026-11-20T23:00:00Z)\n  co: checkpoint 2026-11-20T23:00:00Z, 0h behind\n    gaps: none\n"), "{out:?}");
}

#[test]
fn late_points_are_absorbed_by_lookback() {
    seed("eng_late");
    let ws = Ws::new(&spec("eng_late", 24, "2h"));
    assert_eq!(
        run(&ws, &["run", "hourly", "--job", "co", "--now", NOW]).code,
        0
    );
    // A late minute in the last hour, and one outside the lookback.
    influx().write(
        "eng_late",
        "air_quality,station=berlin-mitte co=100 1795219140000000000\nair_quality,station=berlin-mitte co=100 1795132800000000001",
    );
    let out = run(&ws, &["run", "hourly", "--job", "co", "--now", NOW]).ok();
    assert!(out.stdout.contains("  co  ok      2 hours (0 new, 2 redone) in 1 batch, 360 rows in, 6 rows out, checkpoint 2026-11-20T23:00:00Z\n"), "{out:?}");
    let r = ws.query("wh.duckdb", "SELECT max, n_minutes FROM pollutant_hourly WHERE station = 'berlin-mitte' AND hour_start = TIMESTAMPTZ '2026-11-20 23:00:00+00'");
    assert_eq!(r, vec![vec!["100.0".to_owned(), "60".to_owned()]]);
    let r = ws.query("wh.duckdb", "SELECT max < 100 FROM pollutant_hourly WHERE station = 'berlin-mitte' AND hour_start = TIMESTAMPTZ '2026-11-20 00:00:00+00'");
    assert_eq!(
        r,
        vec![vec!["true".to_owned()]],
        "outside the lookback: untouched"
    );
    // A backfill picks it up; two readings in one minute count as one minute.
    backfill_co(&ws, "2026-11-20T00:00:00Z", "2026-11-20T01:00:00Z").ok();
    let r = ws.query("wh.duckdb", "SELECT max, n_minutes FROM pollutant_hourly WHERE station = 'berlin-mitte' AND hour_start = TIMESTAMPTZ '2026-11-20 00:00:00+00'");
    assert_eq!(r, vec![vec!["100.0".to_owned(), "60".to_owned()]]);
}

/// A sink table whose CHECK constraint rejects hours from 12:00 on: a real
/// DuckDB failure in the middle of a run.
const FAULTY_TABLE: &str = "CREATE TABLE pollutant_hourly (
    pollutant VARCHAR, station VARCHAR,
    hour_start TIMESTAMP WITH TIME ZONE CHECK (hour_start < TIMESTAMPTZ '2026-11-20 12:00:00+00'),
    avg DOUBLE, min DOUBLE, max DOUBLE, n_minutes BIGINT, coverage DOUBLE, valid BOOLEAN,
    unit VARCHAR, source VARCHAR, loaded_at TIMESTAMP WITH TIME ZONE)";

#[test]
fn a_failing_sink_keeps_the_checkpoint_and_the_next_run_repairs() {
    seed("eng_fail");
    let ws = Ws::new(&spec("eng_fail", 6, "0h"));
    {
        let c = duckdb::Connection::open(ws.path("wh.duckdb")).unwrap();
        c.execute_batch(FAULTY_TABLE).unwrap();
    }
    let out = run(&ws, &["run", "hourly", "--job", "co", "--now", NOW]).exit(1);
    assert!(
        out.stderr.contains(
            "error: job `co`: sink `wh` hours [2026-11-20T12:00:00Z, 2026-11-20T18:00:00Z): "
        ),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("  co  FAILED  12 hours (24 new, 0 redone) in 2 batches"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("checkpoint 2026-11-20T11:00:00Z"),
        "{out:?}"
    );
    let r = ws.query("wh.duckdb", "SELECT count(*), max(hour_start) < TIMESTAMPTZ '2026-11-20 12:00:00+00' FROM pollutant_hourly");
    assert_eq!(r, vec![vec!["36".to_owned(), "true".to_owned()]]);
    let st = run(&ws, &["status", "hourly", "--now", NOW]);
    assert!(
        st.stdout
            .contains("  co: checkpoint 2026-11-20T11:00:00Z, 12h behind\n"),
        "{st:?}"
    );
    assert!(
        st.stdout.contains("run failed: 12 hours, 36 rows"),
        "{st:?}"
    );

    // Remove the fault (same table without the constraint) and run again.
    {
        let c = duckdb::Connection::open(ws.path("wh.duckdb")).unwrap();
        c.execute_batch("CREATE TABLE fixed AS SELECT * FROM pollutant_hourly; DROP TABLE pollutant_hourly; ALTER TABLE fixed RENAME TO pollutant_hourly;").unwrap();
    }
    let out = run(&ws, &["run", "hourly", "--now", NOW]).ok();
    assert!(
        out.stdout
            .contains("  co    ok      12 hours (12 new, 0 redone) in 2 batches"),
        "{out:?}"
    );
    assert_matches_influx(&ws, "eng_fail");
}

#[test]
fn kill_9_at_any_moment_then_rerun_gives_exact_rows() {
    seed("eng_kill");
    for delay_ms in [60u64, 250, 700] {
        let ws = Ws::new(&spec("eng_kill", 1, "0h"));
        let mut child = ws
            .cmd(&["run", "hourly", "--now", NOW])
            .env("TEST_INFLUX_URL", &influx().url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let finished_early = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let out = run(&ws, &["run", "hourly", "--now", NOW]);
        assert_eq!(out.code, 0, "after kill at {delay_ms} ms: {out:?}");
        assert_matches_influx(&ws, "eng_kill");
        if finished_early {
            eprintln!("note: the run finished before the kill at {delay_ms} ms");
        }
    }
}

#[test]
fn two_runs_of_one_job_one_works_the_other_names_the_holder() {
    seed("eng_lease");
    for _attempt in 0..5 {
        let ws = Ws::new(&spec("eng_lease", 1, "0h"));
        let mut first = ws
            .cmd(&["run", "hourly", "--job", "co", "--now", NOW])
            .env("TEST_INFLUX_URL", &influx().url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lease = ws.path("state/hourly/co/lease");
        let t0 = std::time::Instant::now();
        while !std::fs::read_to_string(&lease)
            .is_ok_and(|s| s.contains(&format!("\"pid\":{}", first.id())))
        {
            assert!(
                t0.elapsed().as_secs() < 20,
                "the first run never took its lease"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let second = run(&ws, &["run", "hourly", "--job", "co", "--now", NOW]);
        let first_status = first.wait().unwrap();
        if second.code == 0 {
            continue; // the first run finished in between: try again
        }
        assert!(first_status.success());
        assert_eq!(second.code, 1, "{second:?}");
        let holder = format!("lease held by pid {} on ", first.id());
        assert!(
            second
                .stderr
                .contains("error: job `co`: job `co` of pipeline `hourly` is already running: ")
                && second.stderr.contains(&holder),
            "{second:?}"
        );
        let r = ws.query("wh.duckdb", "SELECT count(*) FROM pollutant_hourly");
        assert_eq!(r, vec![vec!["71".to_owned()]]);
        return;
    }
    panic!("the first run always finished before the second started");
}

#[test]
fn demo_runs_with_no_service_and_a_second_run_loads_nothing_new() {
    let ws = Ws::shipped();
    // Far past the sample: the demo ends with it (`end:`), whatever the date.
    let out = ws
        .run(&["run", "demo", "--now", "2031-05-05T00:10:00Z"])
        .ok();
    assert_eq!(
        out.stdout,
        r#"run of pipeline `demo`:
  co                              ok      24 hours (24 new, 0 redone) in 1 batch, 4240 rows in, 71 rows out, checkpoint 2026-11-20T23:00:00Z
  no2                             ok      24 hours (24 new, 0 redone) in 1 batch, 4240 rows in, 71 rows out, checkpoint 2026-11-20T23:00:00Z
  o3                              ok      24 hours (24 new, 0 redone) in 1 batch, 4240 rows in, 71 rows out, checkpoint 2026-11-20T23:00:00Z
  pm10                            ok      24 hours (24 new, 0 redone) in 1 batch, 4240 rows in, 71 rows out, checkpoint 2026-11-20T23:00:00Z
  pm25                            ok      24 hours (24 new, 0 redone) in 1 batch, 4240 rows in, 71 rows out, checkpoint 2026-11-20T23:00:00Z
  so2                             ok      24 hours (24 new, 0 redone) in 1 batch, 4120 rows in, 69 rows out, checkpoint 2026-11-20T23:00:00Z
  model daily_mean                ok      day [2026-11-20, 2026-11-21): 24 hours read, 18 rows, checkpoint 2026-11-20T23:00:00Z
  model rolling_8h                ok      hour [2026-11-20T00:00:00Z, 2026-11-21T07:00:00Z): 38 hours read, 432 rows, checkpoint 2026-11-20T23:00:00Z
  model rolling_24h               ok      hour [2026-11-20T00:00:00Z, 2026-11-21T23:00:00Z): 70 hours read, 432 rows, checkpoint 2026-11-20T23:00:00Z
  model daily_max_8h              ok      day [2026-11-20, 2026-11-22): 48 hours read, 18 rows, checkpoint 2026-11-20T23:00:00Z
  model eaqi                      ok      hour [2026-11-20T00:00:00Z, 2026-11-21T00:00:00Z): 24 hours read, 70 rows, checkpoint 2026-11-20T23:00:00Z
  model exceedance_days           ok      day [2026-11-20, 2026-11-22): 48 hours read, 39 rows, checkpoint 2026-11-20T23:00:00Z
  model exceedances               ok      year [2026, 2027): 8760 hours read, 39 rows, checkpoint 2026-11-20T23:00:00Z
  model annual_mean               ok      year [2026, 2027): 8760 hours read, 27 rows, checkpoint 2026-11-20T23:00:00Z
  model o3_target_days            ok      year [2026, 2029): 43848 hours read, 6 rows, checkpoint 2026-11-20T23:00:00Z
  model aot40_days                ok      day [2026-11-20, 2026-11-21): 24 hours read, 0 rows, checkpoint 2026-11-20T23:00:00Z
  model aot40                     ok      year [2026, 2031): 78888 hours read, 0 rows, checkpoint 2026-11-20T23:00:00Z
  model threshold_episodes        ok      hour [2026-11-20T00:00:00Z, 2026-11-21T03:00:00Z): 30 hours read, 0 rows, checkpoint 2026-11-20T23:00:00Z
  model daily_threshold_episodes  ok      day [2026-11-20, 2026-11-24): 168 hours read, 0 rows, checkpoint 2026-11-20T23:00:00Z
  data: local (duckdb demo.duckdb schema main), tables pollutant_hourly, daily_mean, rolling_8h, rolling_24h, daily_max_8h, eaqi, exceedance_days, exceedances, annual_mean, o3_target_days, aot40_days, aot40, threshold_episodes, daily_threshold_episodes
  look: duckdb demo.duckdb -c 'FROM daily_mean LIMIT 10'   (any DuckDB client reads the file)
"#
    );
    // The real clock (no --now): nothing new, no product recomputed.
    let out = ws.run(&["run", "demo"]).ok();
    assert!(
        out.stdout
            .contains("  co    ok      0 hours (0 new, 0 redone) in 0 batches"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("model "), "{out:?}");
    let r = ws.query(
        "demo.duckdb",
        "SELECT count(*), count(DISTINCT pollutant), sum(valid::INT) FROM pollutant_hourly",
    );
    assert_eq!(
        r,
        vec![vec!["424".to_owned(), "6".to_owned(), "418".to_owned()]]
    );
    let r = ws.query(
        "demo.duckdb",
        "SELECT count(*), sum(valid::INT), min(hours_in_day) FROM daily_mean",
    );
    assert_eq!(
        r,
        vec![vec!["18".to_owned(), "18".to_owned(), "24".to_owned()]]
    );
    // Finished, whatever the date: not "N h behind" (it read "389h behind"
    // two weeks after the sample).
    let st = ws
        .run(&["status", "demo", "--now", "2031-05-05T00:10:00Z"])
        .ok();
    assert!(
        st.stdout.contains(
            "  co: checkpoint 2026-11-20T23:00:00Z, complete: the pipeline ends at 2026-11-21T00:00:00Z (`end:`)\n"
        ),
        "{st:?}"
    );
    assert!(!st.stdout.contains("behind"), "{st:?}");
}

#[test]
fn motherduck_without_a_token_fails_before_any_work() {
    let ws = Ws::new(
        "sources:\n  s: {type: line_protocol, path: data/sample.lp.gz}\nsinks:\n  md: {type: duckdb, path: 'md:airquality'}\npipelines:\n  p:\n    source: s\n    sinks: [md]\n    measurement: air_quality\n    start: 2026-11-20T00:00:00Z\n    jobs: [{name: co}]\n",
    );
    let out = ws.run(&["run", "p", "--now", NOW]).exit(1);
    assert!(out.stderr.contains("error: job `co`: sink `md`: MotherDuck (`md:airquality`) needs a token: `token:` (e.g. `token: ${secret:motherduck-token}`), `?motherduck_token=` in `path`, or the `motherduck_token` environment variable"), "{out:?}");
    assert!(
        !ws.path("state/p/co/checkpoint.json").exists()
            && !ws.path(".duckhour/p/co/checkpoint.json").exists()
    );
}

#[test]
fn backfill_fills_a_range_and_never_moves_the_checkpoint_back() {
    seed("eng_backfill");
    let ws = Ws::new(&spec("eng_backfill", 6, "0h"));
    let out = backfill_co(&ws, "2026-11-20T06:00:00Z", "2026-11-20T12:00:00Z").ok();
    assert!(out.stdout.starts_with("backfill [2026-11-20T06:00:00Z, 2026-11-20T12:00:00Z) of pipeline `hourly`:\n  co  ok      6 hours (6 new, 0 redone) in 1 batch, 1080 rows in, 18 rows out, checkpoint none\n"), "{out:?}");
    let st = run(&ws, &["status", "hourly", "--now", NOW]);
    assert!(st.stdout.contains("  co: checkpoint none, never loaded\n    gaps: 6 hours missing in some sink: 2026-11-20T00:00:00Z..2026-11-20T05:00:00Z\n"), "{st:?}");

    let out = run(&ws, &["run", "hourly", "--job", "co", "--now", NOW]);
    assert!(out.stdout.contains("24 hours (24 new, 0 redone) in 4 batches, 4240 rows in, 71 rows out, checkpoint 2026-11-20T23:00:00Z"), "{out:?}");
    let out = backfill_co(&ws, "2026-11-20T00:00:00Z", "2026-11-20T06:00:00Z");
    assert!(out.stdout.contains("  co  ok      6 hours (0 new, 6 redone) in 1 batch, 1060 rows in, 18 rows out, checkpoint 2026-11-20T23:00:00Z\n"), "{out:?}");
    let st = run(&ws, &["status", "hourly", "--now", NOW]);
    assert!(
        st.stdout
            .contains("  co: checkpoint 2026-11-20T23:00:00Z, 0h behind\n    gaps: none\n"),
        "{st:?}"
    );
    assert!(
        st.stdout.contains(" backfill ok: 6 hours, 18 rows"),
        "{st:?}"
    );
    let r = ws.query(
        "wh.duckdb",
        "SELECT count(*), count(DISTINCT (station, hour_start)) FROM pollutant_hourly",
    );
    assert_eq!(r, vec![vec!["71".to_owned(), "71".to_owned()]]);
}

#[test]
fn motherduck_offline_fails_naming_the_sink_and_never_the_token() {
    let ws = Ws::new(
        "sources:\n  s: {type: line_protocol, path: data/sample.lp.gz}\nsinks:\n  md: {type: duckdb, path: 'md:airquality', token: '${secret:motherduck-token}'}\npipelines:\n  p:\n    source: s\n    sinks: [md]\n    measurement: air_quality\n    start: 2026-11-20T00:00:00Z\n    jobs: [{name: co}]\n",
    );
    let out = ws
        .run_env(
            &["run", "p", "--now", NOW],
            &[
                ("MOTHERDUCK_TOKEN", "md-token-marker-123"),
                ("HOME", ws.path("home").to_str().unwrap()),
            ],
        )
        .exit(1);
    // Offline the extension cannot load; with network it loads, and the
    // made-up token is refused at ATTACH. Either way the sink is named.
    assert!(
        out.stderr
            .contains("error: job `co`: sink `md`: cannot load the MotherDuck extension: ")
            || out.stderr.contains(
                "error: job `co`: sink `md`: cannot attach MotherDuck database `md:airquality`: "
            ),
        "{out:?}"
    );
    assert!(
        !out.stderr.contains("md-token-marker-123") && !out.stdout.contains("md-token-marker-123"),
        "{out:?}"
    );
    assert!(!ws.path(".duckhour/p/co/checkpoint.json").exists());
}
