//! A sink that is down holds back nothing else (#35), against a real
//! InfluxDB, the BigQuery emulator and a DuckDB file: while BigQuery does
//! not answer, the DuckDB file gets every hour and every product (checked
//! against the independent computation of `products_ref`); the state keeps
//! each sink's position and the checkpoint at the lagging one's; once
//! BigQuery answers again, with the source's minutes of the missed hours
//! deleted meanwhile, it is brought level from the DuckDB file, row for
//! row. "Down" is the sink's endpoint at an address where nothing listens
//! (the emulator is shared by the suite's other tests and stays up): the
//! same connection refusal a stopped server gives.

use std::collections::BTreeMap;

use crate::products::{assert_products, bq_sink, hour, points, spec, summaries_equal, write};
use crate::products_ref::Points;
use crate::util::{bigquery, influx, Ws};

/// `http://127.0.0.1:<port>` where nothing listens.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

/// BigQuery's answer to an expired or revoked key (its documented 401,
/// `UNAUTHENTICATED`, reason `authError`), to every request: a cause that
/// is not retried, so the first failing run is as quick as the next ones.
fn expired_key() -> String {
    let message = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.";
    let body = serde_json::json!({"error": {"code": 401, "message": message, "errors": [{"message": message, "domain": "global", "reason": "authError", "location": "Authorization", "locationType": "header"}], "status": "UNAUTHENTICATED"}}).to_string();
    crate::util::replay_server(Some(
        format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json; charset=UTF-8\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    ))
}

/// The points before hour `h` (hours since the epoch): what the sinks hold
/// once every hour before it is loaded.
fn before(points: &Points, h: i64) -> Points {
    points
        .iter()
        .filter(|((_, _, m), _)| *m < h * 60)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Every hourly row, one line each (values to a thousandth), in order.
const HOURLY: &str =
    "SELECT pollutant, station, CAST(hour_start AS STRING), CAST(ROUND(avg * 1000) AS INT64), \
     CAST(ROUND(min * 1000) AS INT64), CAST(ROUND(max * 1000) AS INT64), n_minutes \
     FROM {t} ORDER BY 1, 2, 3";

fn duck_hourly(ws: &Ws) -> Vec<Vec<String>> {
    ws.query(
        "wh.duckdb",
        &HOURLY
            .replace("{t}", "pollutant_hourly")
            .replace("INT64", "BIGINT")
            .replace(
                "CAST(hour_start AS STRING)",
                "CAST(hour_start::TIMESTAMP AS VARCHAR) || '+00'",
            ),
    )
}

fn bq_hourly(dataset: &str) -> Vec<Vec<String>> {
    let t = format!(
        "`{}.{dataset}.pollutant_hourly`",
        crate::bigquery_sink::PROJECT
    );
    bigquery().query(crate::bigquery_sink::PROJECT, &HOURLY.replace("{t}", &t))
}

/// Product tables read row by row in both sinks (values to a thousandth).
const PRODUCT_ROWS: [(&str, &str); 3] = [
    ("daily_mean", "pollutant, station, CAST(day AS STRING), n_valid_hours, COALESCE(CAST(ROUND(mean * 1000) AS INT64), -1)"),
    ("rolling_8h", "pollutant, station, CAST(hour_start AS STRING), n_valid, COALESCE(CAST(ROUND(mean * 1000) AS INT64), -1)"),
    ("eaqi", "station, CAST(hour_start AS STRING), COALESCE(eaqi, -1), n_pollutants"),
];

/// The product tables of [`PRODUCT_ROWS`] are equal row for row in the
/// DuckDB file and BigQuery's dataset `ds`.
fn products_equal_row_for_row(ws: &Ws, ds: &str) {
    for (t, cols) in PRODUCT_ROWS {
        let duck = ws.query(
            "wh.duckdb",
            &format!("SELECT {cols} FROM {t} ORDER BY 1, 2, 3")
                .replace("INT64", "BIGINT")
                .replace(
                    "CAST(hour_start AS STRING)",
                    "CAST(hour_start::TIMESTAMP AS VARCHAR) || '+00'",
                ),
        );
        let bq = bigquery().query(
            crate::bigquery_sink::PROJECT,
            &format!(
                "SELECT {cols} FROM `{}.{ds}.{t}` ORDER BY 1, 2, 3",
                crate::bigquery_sink::PROJECT
            ),
        );
        assert!(!duck.is_empty(), "{t} is empty");
        assert_eq!(duck, bq, "{t}: DuckDB against BigQuery, row for row");
    }
}

/// Hour `h` (since the epoch) as `CAST(hour_start AS STRING)` writes it.
fn text(h: i64) -> String {
    chrono::DateTime::from_timestamp(h * 3600, 0)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S+00")
        .to_string()
}

/// Ledger lines of one run: hours per sink.
fn ledger_hours(ws: &Ws, job: &str, run: usize) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(ws.path(&format!("state/aq/{job}/ledger.jsonl"))).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut runs: Vec<String> = Vec::new();
    for l in &lines {
        let id = l["run_id"].as_str().unwrap().to_owned();
        if !runs.contains(&id) {
            runs.push(id);
        }
    }
    let mut out = BTreeMap::new();
    for l in lines.iter().filter(|l| l["run_id"] == runs[run].as_str()) {
        if l["ok"] == true {
            *out.entry(l["sink"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    out
}

fn checkpoint(ws: &Ws, job: &str) -> String {
    let text =
        std::fs::read_to_string(ws.path(&format!("state/aq/{job}/checkpoint.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["last_processed_hour"].as_str().unwrap().to_owned()
}

#[test]
fn bigquery_down_for_six_hours_then_brought_level_from_duckdb() {
    let db = "sink_down";
    influx().create_db(db);
    let pts = points();
    write(db, &pts);
    let ds = "sink_down";
    let yaml = spec(db, "wh, bq", &bq_sink(ds), true).replace(
        "    batch_hours: 48\n",
        "    batch_hours: 48\n    lookback: 2h\n",
    );
    assert!(yaml.contains("lookback: 2h"));
    let ws = Ws::new(&yaml);
    // Down: first an expired key, then nothing listening at all.
    let (expired, dead) = (expired_key(), dead_url());
    let run = |now: &str, bq: &str| {
        ws.run_env(
            &["run", "aq", "--now", now],
            &[("TEST_INFLUX_URL", &influx().url), ("TEST_BQ_URL", bq)],
        )
    };
    let at = |h: i64| {
        chrono::DateTime::from_timestamp(h * 3600, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    // Both sinks up: every hour before 12:00 on the 29th.
    let noon = hour("2026-03-29T12:00:00Z");
    run(&at(noon).replace(":00:00Z", ":05:00Z"), &bigquery().url).ok();
    assert_products(&ws, &before(&pts, noon));
    summaries_equal(&ws, ds);

    // BigQuery down for six hourly runs.
    for k in 1..=6 {
        let due = noon + k;
        let now = at(due).replace(":00:00Z", ":05:00Z");
        let out = run(&now, if k == 1 { &expired } else { &dead }).exit(1);
        let unit = if k == 1 { "hour" } else { "hours" };
        assert!(
            out.stderr
                .contains(&format!("error: sink `bq` is {k} {unit} behind: sink `bq`")),
            "run {k}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("the other sinks took every hour"),
            "{}",
            out.stderr
        );
        // Every hour and every product in the DuckDB file.
        assert_products(&ws, &before(&pts, due));
        for job in ["co", "o3"] {
            assert_eq!(
                checkpoint(&ws, job),
                "2026-03-29T11:00:00Z",
                "{job} after run {k}"
            );
        }
        // BigQuery's hours are untouched.
        assert_eq!(
            bq_hourly(ds)
                .iter()
                .filter(|r| r[2] >= at(noon).replace('T', " ").replace('Z', "+00"))
                .count(),
            0
        );
    }
    let progress: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path("state/aq/co/progress.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(progress["sinks"]["wh"]["position"], "2026-03-29T17:00:00Z");
    assert_eq!(progress["sinks"]["bq"]["position"], "2026-03-29T11:00:00Z");
    assert_eq!(progress["sinks"]["bq"]["down"]["failures"], 6);
    let st = ws
        .run_env(
            &["status", "aq", "--now", "2026-03-29T18:05:00Z"],
            &[("TEST_INFLUX_URL", &influx().url), ("TEST_BQ_URL", &dead)],
        )
        .ok();
    assert!(
        st.stdout.contains("  co: checkpoint 2026-03-29T11:00:00Z, 6h behind\n    sink bq: at 2026-03-29T11:00:00Z, 6h behind; failing since 2026-03-29T13:05:00Z (6 runs in a row), next attempt after 2026-03-29T19:05:00Z: sink `bq`: dataset"),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout
            .contains("    sink wh: at 2026-03-29T17:00:00Z, 0h behind\n"),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout.contains("  model daily_mean: checkpoint 2026-03-29T17:00:00Z (newest hour whose products are recomputed)\n    owed to sink bq (out when they were recomputed): hours [2026-03-29T10:00:00Z, 2026-03-29T18:00:00Z)"),
        "{}",
        st.stdout
    );

    // dry-run says what the next run does: BigQuery from its position (due
    // again), the DuckDB file from its own, in batches cut where it begins.
    let dry_run = |now: &str| {
        let args = ["dry-run", "aq", "--job", "co", "--now", now];
        let env = [
            ("TEST_INFLUX_URL", influx().url.as_str()),
            ("TEST_BQ_URL", dead.as_str()),
        ];
        ws.run_env(&args, &env).ok()
    };
    let dry = dry_run("2026-03-29T19:05:00Z");
    assert!(
        dry.stdout.contains("job `co`: checkpoint 2026-03-29T11:00:00Z (sinks: bq at 2026-03-29T11:00:00Z, wh at 2026-03-29T17:00:00Z); last complete hour 2026-03-29T18:00:00Z\n  hours: 9 (7 new, 2 redone)\n  batch 1/2: [2026-03-29T10:00:00Z, 2026-03-29T16:00:00Z) 6 hours\n  batch 2/2: [2026-03-29T16:00:00Z, 2026-03-29T19:00:00Z) 3 hours\n"),
        "{}",
        dry.stdout
    );
    let dry = dry_run("2026-03-29T18:30:00Z");
    assert!(
        dry.stdout.contains("(sinks: bq at 2026-03-29T11:00:00Z, not tried until 2026-03-29T19:05:00Z, wh at 2026-03-29T17:00:00Z)"),
        "{}",
        dry.stdout
    );

    // The source's minutes of the missed hours are gone; BigQuery answers again.
    influx().q_db(
        db,
        &format!(
            "DELETE FROM air_quality WHERE time >= '{}' AND time < '{}'",
            at(noon),
            at(noon + 6)
        ),
    );
    let out = run(&at(noon + 7).replace(":00:00Z", ":05:00Z"), &bigquery().url).ok();
    assert!(!out.stderr.contains("behind"), "{}", out.stderr);
    // Level, row for row, hourly and products; the DuckDB file unchanged.
    let duck = duck_hourly(&ws);
    assert_eq!(duck.len(), bq_hourly(ds).len());
    assert_eq!(bq_hourly(ds), duck);
    summaries_equal(&ws, ds);
    products_equal_row_for_row(&ws, ds);
    assert_products(&ws, &before(&pts, noon + 7));
    for job in ["co", "o3"] {
        assert_eq!(checkpoint(&ws, job), "2026-03-29T18:00:00Z");
    }
    // In that run the DuckDB file took its own three hours (the new one
    // and two of lookback), BigQuery the nine it lacked or looks back on.
    let runs = 8;
    assert_eq!(
        ledger_hours(&ws, "co", runs - 1),
        BTreeMap::from([("wh".to_owned(), 3), ("bq".to_owned(), 9)])
    );
}

/// The mirror case: the DuckDB file is held by another process (a DuckDB
/// file has one writer) for two days while BigQuery takes every hour and
/// the products, read from BigQuery. Freed, with the source's minutes of
/// those days deleted, the file is brought level from BigQuery; a catch-up
/// killed with SIGKILL in the middle and run again leaves both exact.
#[test]
fn a_duckdb_file_held_by_another_process_catches_up_from_bigquery() {
    let db = "sink_down_duck";
    influx().create_db(db);
    let pts = points();
    write(db, &pts);
    let ds = "sink_down_duck";
    let ws = Ws::new(&spec(db, "wh, bq", &bq_sink(ds), true));
    let env = [
        ("TEST_INFLUX_URL", influx().url.as_str()),
        ("TEST_BQ_URL", bigquery().url.as_str()),
    ];
    let run = |now: &str| ws.run_env(&["run", "aq", "--now", now], &env);
    let day2 = hour("2026-03-27T00:00:00Z");
    run("2026-03-27T00:05:00Z").ok();
    assert_products(&ws, &before(&pts, day2));

    let held = duckdb::Connection::open(ws.path("wh.duckdb")).unwrap();
    let out = run("2026-03-29T00:05:00Z").exit(1);
    assert!(
        out.stderr
            .contains("error: sink `wh` is 48 hours behind: sink `wh`:"),
        "{}",
        out.stderr
    );
    drop(held);
    // BigQuery has the two days and their products, as computed from the definitions.
    let day4 = hour("2026-03-29T00:00:00Z");
    let hourly = bq_hourly(ds);
    let want: std::collections::BTreeSet<(&str, &str, i64)> = pts
        .keys()
        .map(|(s, p, m)| (s.as_str(), p.as_str(), m / 60))
        .filter(|(_, _, h)| (day2..day4).contains(h))
        .collect();
    assert_eq!(
        hourly.iter().filter(|r| r[2] >= text(day2)).count(),
        want.len()
    );
    influx().q_db(
        db,
        "DELETE FROM air_quality WHERE time >= '2026-03-27T00:00:00Z' AND time < '2026-03-29T00:00:00Z'",
    );
    // Killed in the middle of its catch-up, then run again (after the
    // backoff); BigQuery behind a recording proxy, to count its writes.
    let rec = crate::util::Recorder::start(
        &crate::guarantees::emulator_root(),
        Box::new(|_: &crate::util::Seen| crate::util::Act::Forward),
    );
    let proxied = format!("{}/bigquery/v2", rec.url);
    let env = [
        ("TEST_INFLUX_URL", influx().url.as_str()),
        ("TEST_BQ_URL", proxied.as_str()),
    ];
    let run = |now: &str| ws.run_env(&["run", "aq", "--now", now], &env);
    let mut child = ws
        .cmd(&["run", "aq", "--now", "2026-03-29T00:10:00Z"])
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the catch-up ended before the kill"
    );
    let _ = child.kill();
    child.wait().unwrap();
    let out = run("2026-03-29T00:10:00Z").ok();
    assert!(!out.stderr.contains("behind"), "{}", out.stderr);
    assert_eq!(duck_hourly(&ws), bq_hourly(ds));
    assert_products(&ws, &before(&pts, day4));
    summaries_equal(&ws, ds);
    products_equal_row_for_row(&ws, ds);
    // BigQuery, level all along, was read from, never written: no hourly
    // load and no product key again.
    let writes: Vec<String> = (rec.seen().iter())
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .filter(|b| {
            b.contains("MERGE") || b.contains("\"rows\"") || b.contains("\"tableReference\"")
        })
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    assert!(rec
        .seen()
        .iter()
        .any(|s| String::from_utf8_lossy(&s.body).contains("SELECT * FROM")));

    // Station b sends nothing from Madrid's 30 March on (22:00 UTC): an
    // hourly run whose one hour it is absent from counts it under 75 %
    // coverage, in the run's record and in `status`.
    run("2026-03-29T22:05:00Z").ok();
    run("2026-03-29T23:05:00Z").ok();
    let st = ws
        .run_env(&["status", "aq", "--now", "2026-03-29T23:05:00Z"], &env)
        .ok();
    let co = st
        .stdout
        .split("  co: ")
        .nth(1)
        .unwrap()
        .split("  no2: ")
        .next()
        .unwrap();
    assert!(
        co.contains("    stations under 75 % coverage in the last run: b\n"),
        "{}",
        st.stdout
    );
    let pm25 = st
        .stdout
        .split("  pm25: ")
        .nth(1)
        .unwrap()
        .split("  so2: ")
        .next()
        .unwrap();
    assert!(
        pm25.contains("    stations under 75 % coverage in the last run: b\n"),
        "c never sent pm25, so it is not expected there: {}",
        st.stdout
    );
}
