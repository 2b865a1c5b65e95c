//! Products (models) on the real InfluxDB and real DuckDB files, checked
//! against `products_ref`, an independent computation from the rules, on
//! minute data built to sit on every boundary: hours of 44 and 45 minutes,
//! days of 17 and 18 valid hours, 8-hour windows of 5 and 6, days of 17 and
//! 18 valid 8-hour means, Madrid's 23-hour DST day, index bounds and limit
//! values hit exactly, a station without PM2.5, a whole missing day.

use std::collections::BTreeMap;

use crate::products_ref::{self as r, Points, Table};
use crate::util::{influx, Ws};

const TZ: chrono_tz::Tz = chrono_tz::Europe::Madrid;
/// UTC 2026-03-26T00:00 .. 2026-03-31T00:00 as hour numbers.
const H0: i64 = 1_774_483_200 / 3600;
const H1: i64 = H0 + 120;
const FROM: &str = "2026-03-26T00:00:00Z";
pub(crate) const TO: &str = "2026-03-31T00:00:00Z";
const NOW: &str = "2026-04-02T00:00:00Z";

pub(crate) fn hour(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp() / 3600
}

/// Whether hour `h` starts on Madrid date `d` (`YYYY-MM-DD`).
fn on(h: i64, d: &str) -> bool {
    r::local_date(TZ, h).to_string() == d
}

/// Minutes present and the value of every minute of one hour, or `None`
/// when the station sent nothing. Values are multiples of 1/4, so every sum
/// is exact in binary and a value on a boundary stays on it.
fn plan(station: &str, p: &str, h: i64) -> Option<(i64, f64)> {
    let si = ["a", "b", "c"].iter().position(|s| *s == station).unwrap() as i64;
    let pi = r::POLLUTANTS.iter().position(|x| *x == p).unwrap() as i64;
    let base = [0.5, 30.0, 60.0, 20.0, 10.0, 5.0][pi as usize];
    let mut n = 60;
    let mut v = base + ((si * 7 + pi * 3 + h) % 16) as f64 * 0.25;
    let at = |s: &str| hour(s) == h;
    let local = (h - H0 + 1) % 24; // Madrid hour of day before the DST change
    match (station, p) {
        // A station that never measures PM2.5.
        ("c", "pm25") => return None,
        // A whole missing (Madrid) day.
        ("b", _) if on(h, "2026-03-30") => return None,
        ("a", "pm10") if h % 7 == 0 => n = 44,
        ("a", "pm10") if h % 5 == 0 => n = 45,
        // 18 valid hours of 24 (valid day), then 17 (not).
        ("b", "no2")
            if (hour("2026-03-27T02:00:00Z")..hour("2026-03-27T08:00:00Z")).contains(&h) =>
        {
            n = 44
        }
        ("b", "no2")
            if (hour("2026-03-28T03:00:00Z")..hour("2026-03-28T06:00:00Z")).contains(&h) =>
        {
            return None
        }
        ("b", "no2")
            if (hour("2026-03-28T06:00:00Z")..hour("2026-03-28T10:00:00Z")).contains(&h) =>
        {
            n = 44
        }
        // The 23-hour DST day: 18 valid of 23 (valid), 17 of 23 (not).
        ("c", "so2")
            if (hour("2026-03-29T05:00:00Z")..hour("2026-03-29T10:00:00Z")).contains(&h) =>
        {
            n = 44
        }
        ("c", "co")
            if (hour("2026-03-29T05:00:00Z")..hour("2026-03-29T11:00:00Z")).contains(&h) =>
        {
            n = 44
        }
        // 3 invalid hours in a row: 6 windows of 5 valid hours, 18 valid
        // 8-hour means that day; 4 in a row: 7 windows, 17; 2: windows of 6.
        ("c", "o3")
            if (hour("2026-03-27T05:00:00Z")..hour("2026-03-27T08:00:00Z")).contains(&h) =>
        {
            n = 30
        }
        ("c", "o3")
            if (hour("2026-03-28T05:00:00Z")..hour("2026-03-28T09:00:00Z")).contains(&h) =>
        {
            n = 30
        }
        ("a", "o3")
            if (hour("2026-03-30T05:00:00Z")..hour("2026-03-30T07:00:00Z")).contains(&h) =>
        {
            return None
        }
        _ => {}
    }
    // Index bounds, hit exactly and just passed (2024 bands).
    let eaqi: [(&str, [f64; 5]); 5] = [
        ("2026-03-26T10:00:00Z", [5.0, 15.0, 10.0, 60.0, 20.0]),
        ("2026-03-26T11:00:00Z", [15.25, 45.0, 25.0, 100.25, 40.0]),
        (
            "2026-03-26T12:00:00Z",
            [140.0, 270.25, 150.0, 180.0, 275.25],
        ),
        ("2026-03-26T13:00:00Z", [50.0, 120.0, 60.0, 120.0, 125.0]),
        (
            "2026-03-26T14:00:00Z",
            [90.25, 195.0, 100.25, 160.25, 190.0],
        ),
    ];
    if station == "a" {
        for (t, vals) in eaqi {
            if let Some(i) = ["pm25", "pm10", "no2", "o3", "so2"]
                .iter()
                .position(|x| *x == p)
            {
                if at(t) {
                    return Some((60, vals[i]));
                }
            }
        }
    }
    // Limit values, hit exactly and just passed.
    match (station, p) {
        ("c", "pm10") if on(h, "2026-03-27") => v = if h % 2 == 0 { 49.5 } else { 50.5 },
        ("c", "pm10") if on(h, "2026-03-28") => v = 50.25,
        ("a", "no2") if at("2026-03-27T15:00:00Z") => v = 200.0,
        ("a", "no2") if at("2026-03-27T16:00:00Z") => v = 200.25,
        ("b", "so2") if at("2026-03-26T15:00:00Z") => v = 350.0,
        ("b", "so2") if at("2026-03-26T16:00:00Z") => v = 350.25,
        ("a", "so2") if on(h, "2026-03-28") => v = 125.0,
        ("a", "co") if on(h, "2026-03-27") => v = 4.0,
        ("a", "co") if on(h, "2026-03-29") => v = 4.25,
        ("b", "co") if on(h, "2026-03-27") => v = 10.0,
        ("b", "co") if on(h, "2026-03-28") => v = 10.25,
        ("b", "o3") if on(h, "2026-03-27") && (8..16).contains(&local) => v = 120.0,
        ("b", "o3") if on(h, "2026-03-28") && (8..16).contains(&local) => v = 120.25,
        _ => {}
    }
    Some((n, v))
}

/// The boundary data set as minute points.
pub(crate) fn points() -> Points {
    let mut out = Points::new();
    for s in ["a", "b", "c"] {
        for p in r::POLLUTANTS {
            for h in H0..H1 {
                if let Some((n, v)) = plan(s, p, h) {
                    for m in 0..n {
                        out.insert((s.to_owned(), p.to_owned(), h * 60 + m), v);
                    }
                }
            }
        }
    }
    out
}

/// Writes points to InfluxDB, one field per line.
pub(crate) fn write(db: &str, points: &Points) {
    let lines: Vec<String> = points
        .iter()
        .map(|((s, p, m), v)| format!("air_quality,station={s} {p}={v} {}", m * 60_000_000_000))
        .collect();
    for chunk in lines.chunks(5000) {
        influx().write(db, &chunk.join("\n"));
    }
}

fn models_yaml(tz: &str) -> String {
    format!(
        "    models:
      - {{name: daily_mean, grain: day, timezone: {tz}}}
      - {{name: rolling_8h, template: rolling_mean.sql, grain: hour, lookback: 7h, params: {{hours: 8, min_valid: 6}}}}
      - {{name: rolling_24h, template: rolling_mean.sql, grain: hour, lookback: 23h, params: {{hours: 24, min_valid: 18}}}}
      - {{name: daily_max_8h, grain: day, timezone: {tz}, depends_on: [rolling_8h]}}
      - {{name: eaqi, grain: hour}}
      - {{name: exceedance_days, grain: day, timezone: {tz}, depends_on: [daily_mean, daily_max_8h]}}
      - {{name: exceedances, grain: year, timezone: {tz}, depends_on: [exceedance_days]}}
"
    )
}

pub fn spec(db: &str, sinks: &str, extra_sinks: &str, models: bool) -> String {
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
{extra_sinks}pipelines:
  aq:
    source: influx
    sinks: [{sinks}]
    measurement: air_quality
    start: {FROM}
    end: {TO}
    batch_hours: 48
    jobs:
      - name: co
      - name: no2
      - name: o3
      - name: pm10
      - name: pm25
      - name: so2
{}",
        if models {
            models_yaml("Europe/Madrid")
        } else {
            String::new()
        }
    )
}

/// The report line of a job or model.
fn line_of(out: &crate::util::Out, name: &str) -> String {
    out.stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no line for {name}: {out:?}"))
        .to_owned()
}

fn run(ws: &Ws, args: &[&str]) -> crate::util::Out {
    ws.run_env(args, &[("TEST_INFLUX_URL", &influx().url)])
}

/// Every product table of the file, read back.
fn tables(ws: &Ws, like: &BTreeMap<&str, Table>) -> BTreeMap<&'static str, Table> {
    r::queries()
        .into_iter()
        .map(|(name, sql, key)| (name, r::parse(ws.query("wh.duckdb", sql), key, &like[name])))
        .collect()
}

pub(crate) fn assert_products(ws: &Ws, points: &Points) {
    let want = r::expected(points, TZ);
    let got = tables(ws, &want);
    for (name, w) in &want {
        r::assert_same(name, &got[name], w);
    }
}

/// The boundary cases are really in the data (so the comparison covers them).
fn assert_boundaries_present(want: &BTreeMap<&str, Table>) {
    use r::V;
    let dm = &want["daily_mean"];
    let row =
        |t: &Table, k: &[&str]| t[&k.iter().map(|s| s.to_string()).collect::<Vec<_>>()].clone();
    assert_eq!(
        row(dm, &["no2", "b", "2026-03-27"])[1..],
        [V::I(18), V::I(24), V::B(true)]
    );
    assert_eq!(
        row(dm, &["no2", "b", "2026-03-28"])[1..],
        [V::I(17), V::I(24), V::B(false)]
    );
    assert_eq!(
        row(dm, &["so2", "c", "2026-03-29"])[1..],
        [V::I(18), V::I(23), V::B(true)]
    );
    assert_eq!(
        row(dm, &["co", "c", "2026-03-29"])[1..],
        [V::I(17), V::I(23), V::B(false)]
    );
    assert_eq!(row(dm, &["pm10", "c", "2026-03-27"])[0], V::F(Some(50.0)));
    let m8 = &want["daily_max_8h"];
    assert_eq!(
        row(m8, &["o3", "c", "2026-03-27"])[2..],
        [V::I(18), V::I(24), V::B(true)]
    );
    assert_eq!(
        row(m8, &["o3", "c", "2026-03-28"])[2..],
        [V::I(17), V::I(24), V::B(false)]
    );
    assert_eq!(row(m8, &["o3", "b", "2026-03-27"])[0], V::F(Some(120.0)));
    let r8 = &want["rolling_8h"];
    let fives = r8.values().filter(|v| v[1] == V::I(5)).count();
    let sixes = r8.values().filter(|v| v[1] == V::I(6)).count();
    assert!(
        fives > 0 && sixes > 0,
        "8-hour windows of 5 and 6 valid hours"
    );
    let top = row(
        &want["eaqi"],
        &["a", &hour("2026-03-26T12:00:00Z").to_string()],
    );
    assert_eq!(
        top[5..8],
        [
            V::I(6),
            V::S(Some("Extremely poor".into())),
            V::S(Some("pm10,so2".into()))
        ]
    );
    let all = row(
        &want["eaqi"],
        &["a", &hour("2026-03-26T10:00:00Z").to_string()],
    );
    assert_eq!(
        all[5..8],
        [
            V::I(1),
            V::S(Some("Good".into())),
            V::S(Some("pm25,pm10,no2,o3,so2".into()))
        ]
    );
    let ex = &want["exceedances"];
    let k = |p: &str, s: &str, d: &str, m: &str| -> Vec<String> {
        vec![p.into(), s.into(), "2026".into(), d.into(), m.into()]
    };
    let t1 = "(EU) 2024/2881 Annex I Table 1";
    assert_eq!(
        ex[&k("no2", "a", "2008/50/EC Annex XI", "hourly")][4],
        V::I(1)
    );
    assert_eq!(
        ex[&k("pm10", "c", "2008/50/EC Annex XI", "daily_mean")][4],
        V::I(1)
    );
    assert_eq!(ex[&k("pm10", "c", t1, "daily_mean")][4], V::I(2));
    assert_eq!(
        ex[&k("pm10", "c", t1, "daily_mean")][0],
        V::S(Some("outlook".into()))
    );
    assert!(!ex.contains_key(&k("pm25", "c", t1, "daily_mean")));
}

/// The stock products equal the definitions on the boundary data; late
/// points for one hour, then a backfill of it, recompute exactly the keys
/// that depend on it and leave every other row as it was.
#[test]
fn products_equal_their_definitions_and_follow_a_changed_hour() {
    let db = "prod_exact";
    influx().create_db(db);
    let mut pts = points();
    write(db, &pts);
    let ws = Ws::new(&spec(db, "wh", "", true));
    let out = run(&ws, &["run", "aq", "--now", NOW]).ok();
    assert!(out.stdout.contains("model daily_mean"), "{out:?}");
    assert_boundaries_present(&r::expected(&pts, TZ));
    assert_products(&ws, &pts);

    // Nothing new: a second run recomputes nothing.
    let again = run(&ws, &["run", "aq", "--now", NOW]).ok();
    assert!(!again.stdout.contains("model "), "{again:?}");

    // Late points for 09:00 UTC (10:00 in Madrid) at station a.
    let before = tables(&ws, &r::expected(&pts, TZ));
    let late = hour("2026-03-27T09:00:00Z");
    let mut changed = Points::new();
    for (p, v) in [("no2", 200.5), ("pm10", 80.0)] {
        for m in 0..60 {
            changed.insert(("a".into(), p.into(), late * 60 + m), v);
        }
    }
    write(db, &changed);
    pts.extend(changed);
    let out = run(
        &ws,
        &[
            "backfill",
            "aq",
            "--from",
            "2026-03-27T09:00:00Z",
            "--to",
            "2026-03-27T10:00:00Z",
            "--now",
            NOW,
        ],
    )
    .ok();
    // Exactly the dependent keys are recomputed.
    for (model, keys) in [
        ("daily_mean", "day [2026-03-27, 2026-03-28)"),
        (
            "rolling_8h",
            "hour [2026-03-27T09:00:00Z, 2026-03-27T17:00:00Z)",
        ),
        (
            "rolling_24h",
            "hour [2026-03-27T09:00:00Z, 2026-03-28T09:00:00Z)",
        ),
        ("daily_max_8h", "day [2026-03-27, 2026-03-28)"),
        ("eaqi", "hour [2026-03-27T09:00:00Z, 2026-03-27T10:00:00Z)"),
        ("exceedance_days", "day [2026-03-27, 2026-03-28)"),
        ("exceedances", "year [2026, 2027)"),
    ] {
        let line = line_of(&out, &format!("model {model}"));
        assert!(
            line.contains(&format!(" ok      {keys}:")),
            "{model}: {line}"
        );
    }
    assert_products(&ws, &pts);
    // Rows outside the dependent keys are as they were.
    let after = tables(&ws, &r::expected(&pts, TZ));
    let day = "2026-03-27".to_string();
    let outside = |name: &str, k: &Vec<String>| -> bool {
        match name {
            "daily_mean" | "daily_max_8h" => k[2] != day,
            "rolling_8h" => !(late..late + 8).contains(&k[2].parse::<i64>().unwrap()),
            "rolling_24h" => !(late..late + 24).contains(&k[2].parse::<i64>().unwrap()),
            "eaqi" => k[1].parse::<i64>().unwrap() != late,
            "exceedance_days" => k[2] != day,
            _ => false,
        }
    };
    for (name, rows) in &before {
        let kept: Vec<_> = rows.iter().filter(|(k, _)| outside(name, k)).collect();
        let now: Vec<_> = after[name]
            .iter()
            .filter(|(k, _)| outside(name, k))
            .collect();
        assert_eq!(
            kept, now,
            "{name}: rows outside the changed hour's keys changed"
        );
    }
    // And the change reached the products that depend on it.
    assert_ne!(before["eaqi"], after["eaqi"]);
    assert_ne!(before["exceedances"], after["exceedances"]);
}

/// kill -9 at any moment of a run (jobs or models), then a rerun: every
/// product equals the definitions.
#[test]
fn kill_9_during_the_model_step_then_rerun_gives_exact_products() {
    let db = "prod_kill";
    influx().create_db(db);
    let pts = points();
    write(db, &pts);
    // How long a whole run takes here, to kill it at fractions of that.
    let probe = Ws::new(&spec(db, "wh", "", true));
    let t0 = std::time::Instant::now();
    assert_eq!(run(&probe, &["run", "aq", "--now", NOW]).code, 0);
    let total = t0.elapsed().as_millis() as u64;
    for pct in [55u64, 70, 80, 90, 97] {
        let ws = Ws::new(&spec(db, "wh", "", true));
        let mut child = ws
            .cmd(&["run", "aq", "--now", NOW])
            .env("TEST_INFLUX_URL", &influx().url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(total * pct / 100));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let out = run(&ws, &["run", "aq", "--now", NOW]);
        assert_eq!(out.code, 0, "after kill at {pct}%: {out:?}");
        assert_products(&ws, &pts);
    }
}

/// A model whose template fails reports its own error and exit code, moves
/// no job's checkpoint backwards or blocks it, keeps its hours pending,
/// and is redone by the next run once fixed.
#[test]
fn a_failing_model_is_redone_on_the_next_run() {
    let db = "prod_fail";
    influx().create_db(db);
    let pts = points();
    write(db, &pts);
    let ws = Ws::new(&spec(db, "wh", "", true));
    let good = std::fs::read_to_string(ws.path("sql/eaqi.sql")).unwrap();
    ws.write("sql/eaqi.sql", "SELECT no_such_column FROM {{ hourly }}");
    let out = run(&ws, &["run", "aq", "--now", NOW]).exit(1);
    assert!(
        out.stderr
            .contains("error: model `eaqi`: template `eaqi.sql` failed:")
            && out.stderr.contains("no_such_column"),
        "{out:?}"
    );
    // The jobs loaded and moved their checkpoints; the other models ran.
    assert!(
        line_of(&out, "co").contains(" ok      120 hours"),
        "{out:?}"
    );
    assert!(
        line_of(&out, "model daily_mean").contains(" ok "),
        "{out:?}"
    );
    assert!(line_of(&out, "model eaqi").contains(" FAILED "), "{out:?}");
    let status = run(&ws, &["status", "aq", "--now", NOW]);
    assert!(
        status.stdout.contains("model eaqi: checkpoint none")
            && status
                .stdout
                .contains("pending: hours [2026-03-26T00:00:00Z, 2026-03-31T00:00:00Z)"),
        "{status:?}"
    );
    assert!(
        status.stdout.contains("failed: 120 hours, 0 rows"),
        "{status:?}"
    );

    ws.write("sql/eaqi.sql", &good);
    let out = run(&ws, &["run", "aq", "--now", NOW]).ok();
    assert!(out.stdout.contains("model eaqi"), "{out:?}");
    assert!(
        !out.stdout.contains("model daily_mean"),
        "only the failed model is redone: {out:?}"
    );
    assert_products(&ws, &pts);
    let status = run(&ws, &["status", "aq", "--now", NOW]);
    assert!(
        status
            .stdout
            .contains("model eaqi: checkpoint 2026-03-30T23:00:00Z"),
        "{status:?}"
    );
}

/// A model added to a pipeline with history computes it from the hourly
/// rows the sink holds, without asking the source (here: nothing listens
/// at its address).
#[test]
fn a_model_added_later_computes_history_without_the_source() {
    let db = "prod_later";
    influx().create_db(db);
    let pts = points();
    write(db, &pts);
    let ws = Ws::new(&spec(db, "wh", "", false));
    assert_eq!(run(&ws, &["run", "aq", "--now", NOW]).code, 0);
    ws.write("pipelines.yaml", &spec(db, "wh", "", true));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    ws.run_env(
        &[
            "backfill",
            "aq",
            "--model",
            "daily_mean",
            "--model",
            "exceedances",
            "--from",
            FROM,
            "--to",
            TO,
            "--now",
            NOW,
        ],
        &[("TEST_INFLUX_URL", &url)],
    )
    .ok();
    let want = r::expected(&pts, TZ);
    for (name, sql, key) in r::queries() {
        if name == "daily_mean" || name == "exceedances" {
            let got = r::parse(ws.query("wh.duckdb", sql), key, &want[name]);
            r::assert_same(name, &got, &want[name]);
        }
    }
    // With the source down, a run fails its jobs, and says which source.
    ws.run_env(&["run", "aq", "--now", NOW], &[("TEST_INFLUX_URL", &url)])
        .exit(1);
}

/// Per product, a summary both dialects compute alike: rows and sums of
/// its numbers (floats as integer thousandths).
const SUMMARIES: [(&str, &str); 7] = [
    ("exceedance_days", "COUNT(*), SUM(n_values), SUM(n_exceedances)"),
    ("daily_mean", "COUNT(*), SUM(n_valid_hours), CAST(ROUND(SUM(mean) * 1000) AS INT64), SUM(CASE WHEN valid THEN 1 ELSE 0 END), COUNT(DISTINCT CONCAT(pollutant, station, CAST(day AS STRING)))"),
    ("rolling_8h", "COUNT(*), SUM(n_valid), CAST(ROUND(SUM(mean) * 1000) AS INT64), SUM(CASE WHEN valid THEN 1 ELSE 0 END)"),
    ("rolling_24h", "COUNT(*), SUM(n_valid), CAST(ROUND(SUM(mean) * 1000) AS INT64), SUM(CASE WHEN valid THEN 1 ELSE 0 END)"),
    ("daily_max_8h", "COUNT(*), SUM(n_valid_8h), CAST(ROUND(SUM(max_8h) * 1000) AS INT64), SUM(CASE WHEN valid THEN 1 ELSE 0 END)"),
    ("eaqi", "COUNT(*), SUM(eaqi), SUM(n_pollutants), SUM(CASE WHEN complete THEN 1 ELSE 0 END), COUNT(DISTINCT dominant)"),
    ("exceedances", "COUNT(*), SUM(n_values), SUM(n_exceedances), SUM(CASE WHEN over_allowed THEN 1 ELSE 0 END)"),
];

/// A BigQuery sink `bq` on the emulator (`TEST_BQ_URL`), into `dataset`.
pub(crate) fn bq_sink(dataset: &str) -> String {
    format!(
        "  bq:
    type: bigquery
    project: {}
    dataset: {dataset}
    location: EU
    endpoint: ${{env:TEST_BQ_URL}}
",
        crate::bigquery_sink::PROJECT
    )
}

pub(crate) fn summaries_equal(ws: &Ws, dataset: &str) {
    use crate::util::bigquery;
    for (t, cols) in SUMMARIES {
        let duck = ws.query(
            "wh.duckdb",
            &format!("SELECT {} FROM {t}", cols.replace("INT64", "BIGINT")),
        );
        let bq = bigquery().query(
            crate::bigquery_sink::PROJECT,
            &format!(
                "SELECT {cols} FROM `{}.{dataset}.{t}`",
                crate::bigquery_sink::PROJECT
            ),
        );
        assert_eq!(duck, bq, "{t}: DuckDB against BigQuery");
        assert_ne!(duck[0][0], "0", "{t} is empty");
    }
}

/// The same products in BigQuery beside DuckDB: after a first run, after a
/// changed hour is backfilled, and after a run killed in the middle.
#[test]
fn products_in_bigquery_equal_those_in_duckdb() {
    use crate::util::bigquery;
    let db = "prod_bq";
    influx().create_db(db);
    let mut pts = points();
    write(db, &pts);
    let dataset = "prod_models";
    let bq = bq_sink(dataset);
    let env = |ws: &Ws, args: &[&str]| {
        ws.run_env(
            args,
            &[
                ("TEST_INFLUX_URL", &influx().url),
                ("TEST_BQ_URL", &bigquery().url),
            ],
        )
    };
    let ws = Ws::new(&spec(db, "wh, bq", &bq, true));
    env(&ws, &["run", "aq", "--now", NOW]).ok();
    assert_products(&ws, &pts);
    summaries_equal(&ws, dataset);

    let late = hour("2026-03-27T09:00:00Z");
    let mut changed = Points::new();
    for m in 0..60 {
        changed.insert(("a".into(), "no2".into(), late * 60 + m), 200.5);
    }
    write(db, &changed);
    pts.extend(changed);
    env(
        &ws,
        &[
            "backfill",
            "aq",
            "--from",
            "2026-03-27T09:00:00Z",
            "--to",
            "2026-03-27T10:00:00Z",
            "--now",
            NOW,
        ],
    )
    .ok();
    assert_products(&ws, &pts);
    summaries_equal(&ws, dataset);

    // Killed in the middle of a whole backfill, then run again.
    let t0 = std::time::Instant::now();
    let mut child = ws
        .cmd(&["backfill", "aq", "--from", FROM, "--to", TO, "--now", NOW])
        .env("TEST_INFLUX_URL", &influx().url)
        .env("TEST_BQ_URL", &bigquery().url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3000));
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = t0;
    env(&ws, &["run", "aq", "--now", NOW]).ok();
    assert_products(&ws, &pts);
    summaries_equal(&ws, dataset);

    // A pipeline whose only sink is BigQuery reads its hourly rows back
    // from BigQuery: the same products as DuckDB's above.
    let only = "prod_models_only";
    let bq_only = bq.replace(dataset, only);
    let ws2 = Ws::new(&spec(db, "bq", &bq_only, true));
    env(&ws2, &["run", "aq", "--now", NOW]).ok();
    summaries_equal(&ws, only);
    // Its history, rebuilt from BigQuery with nothing at the source's address.
    let t = format!("`{}.{only}.daily_mean`", crate::bigquery_sink::PROJECT);
    bigquery().query(
        crate::bigquery_sink::PROJECT,
        &format!("DELETE FROM {t} WHERE TRUE"),
    );
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    ws2.run_env(
        &[
            "backfill",
            "aq",
            "--model",
            "daily_mean",
            "--from",
            FROM,
            "--to",
            TO,
            "--now",
            NOW,
        ],
        &[("TEST_INFLUX_URL", &url), ("TEST_BQ_URL", &bigquery().url)],
    )
    .ok();
    summaries_equal(&ws, only);
}

/// With `extensions: [icu]` and the extension where DuckDB keeps it (as
/// `INSTALL icu` leaves it; here the file of PyPI's duckdb-extension-icu
/// 1.5.5 that scripts/bigquery installs), DuckDB's time-zone functions work
/// in a model; without the file, `validate` and `run` say which file goes
/// where; without the key, they say to add it.
#[test]
fn duckdb_time_zone_functions_work_with_the_icu_extension() {
    let spec = "extensions: [icu]
sources:
  sample: {type: line_protocol, path: data/sample.lp.gz}
sinks:
  wh: {type: duckdb, path: wh.duckdb}
pipelines:
  demo:
    source: sample
    sinks: [wh]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    end: 2026-11-21T00:00:00Z
    jobs: [{name: no2}]
    models:
      - {name: local_hours, grain: hour}
";
    let ws = Ws::new(spec);
    ws.write(
        "sql/local_hours.sql",
        "SELECT pollutant, station, hour_start, hour(hour_start AT TIME ZONE 'Europe/Madrid') AS local_hour, \
         strftime(hour_start AT TIME ZONE 'America/New_York', '%Y-%m-%d') AS ny_day \
         FROM {{ hourly }} WHERE hour_start >= {{ keys_from }} AND hour_start < {{ keys_to }}",
    );
    // Without `extensions:`, DuckDB's autoloading error is followed by
    // the spec key to add.
    ws.write(
        "pipelines.yaml",
        spec.trim_start_matches("extensions: [icu]\n"),
    );
    let hint = "  = hint: the SQL uses DuckDB's `icu` extension: add `extensions: [icu]` to pipelines.yaml";
    let out = ws.run(&["validate"]).exit(2);
    assert!(
        out.stderr.contains("the required extension 'icu'") && out.stderr.contains(hint),
        "{out:?}"
    );
    let out = ws
        .run(&["run", "demo", "--now", "2026-11-22T00:00:00Z"])
        .exit(1);
    assert!(out.stderr.contains(hint), "{out:?}");
    ws.write("pipelines.yaml", spec);
    let out = ws.run(&["validate"]).exit(2);
    assert!(
        out.stderr
            .contains("DuckDB extension `icu` could not be loaded:")
            && out
                .stderr
                .contains("put `icu.duckdb_extension` of DuckDB v1.5.5 in"),
        "{out:?}"
    );
    let out = ws
        .run(&["run", "demo", "--now", "2026-11-22T00:00:00Z"])
        .exit(1);
    assert!(
        out.stderr
            .contains("DuckDB extension `icu` could not be loaded"),
        "{out:?}"
    );

    let file = std::path::Path::new(
        "/var/tmp/duckhour-py/bigquery/duckdb-home/.duckdb/extensions/v1.5.5/linux_amd64/icu.duckdb_extension",
    );
    assert!(
        file.exists(),
        "run scripts/bigquery install (scripts/test does)"
    );
    let dir = ws.path("home/.duckdb/extensions/v1.5.5/linux_amd64");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(file, dir.join("icu.duckdb_extension")).unwrap();
    ws.run(&["validate"]).ok();
    ws.run(&["run", "demo", "--now", "2026-11-22T00:00:00Z"])
        .ok();
    let rows = ws.query(
        "wh.duckdb",
        "SELECT epoch_us(hour_start) // 1000000, local_hour, ny_day FROM local_hours",
    );
    assert_eq!(rows.len(), 71, "{rows:?}");
    for r in rows {
        let t = chrono::DateTime::from_timestamp(r[0].parse().unwrap(), 0).unwrap();
        use chrono::Timelike;
        let madrid = t.with_timezone(&chrono_tz::Europe::Madrid);
        let ny = t.with_timezone(&chrono_tz::America::New_York);
        assert_eq!(r[1], madrid.hour().to_string(), "{t}");
        assert_eq!(r[2], ny.format("%Y-%m-%d").to_string(), "{t}");
    }
}

/// The products' BigQuery loads keep BigQuery's documented limits (which
/// the emulator does not enforce): every request through a recording proxy
/// is checked as the jobs' are, each key range's MERGE has its own UUID
/// requestId, and a MERGE answered 503 is retried with the same one; the
/// products end equal to DuckDB's.
#[test]
fn product_loads_keep_bigquerys_documented_limits() {
    use crate::util::{Act, Recorder, Seen};
    let db = "prod_limits";
    influx().create_db(db);
    write(db, &points());
    let retried = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = retried.clone();
    let rec = Recorder::start(
        &crate::guarantees::emulator_root(),
        Box::new(move |s: &Seen| {
            let q = s.json()["query"].as_str().unwrap_or("").to_owned();
            if q.starts_with("MERGE")
                && q.contains(".daily_mean`")
                && !r.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                return Act::Answer(503, r#"{"error":{"code":503,"message":"backend error","errors":[{"reason":"backendError"}]}}"#.into());
            }
            Act::Forward
        }),
    );
    let dataset = "prod_limits";
    let bq = bq_sink(dataset);
    let ws = Ws::new(&spec(db, "wh, bq", &bq, true));
    let bq_url = format!("{}/bigquery/v2", rec.url);
    ws.run_env(
        &["run", "aq", "--now", NOW],
        &[("TEST_INFLUX_URL", &influx().url), ("TEST_BQ_URL", &bq_url)],
    )
    .ok();
    let seen = rec.seen();
    let broken: Vec<(String, Vec<String>)> = seen
        .iter()
        .map(|s| (s.path.clone(), crate::guarantees::broken_limits(s)))
        .filter(|(_, b)| !b.is_empty())
        .collect();
    assert!(broken.is_empty(), "{broken:#?}");
    let merges: Vec<&Seen> = seen
        .iter()
        .filter(|s| {
            s.json()["query"]
                .as_str()
                .is_some_and(|q| q.starts_with("MERGE"))
        })
        .collect();
    let of = |t: &str| -> Vec<&Seen> {
        merges
            .iter()
            .copied()
            .filter(|s| {
                s.json()["query"]
                    .as_str()
                    .unwrap()
                    .contains(&format!(".{t}`"))
            })
            .collect()
    };
    let daily = of("daily_mean");
    assert_eq!(
        daily.iter().map(|s| s.status).collect::<Vec<_>>(),
        [503, 200],
        "{daily:#?}"
    );
    assert_eq!(daily[0].json()["requestId"], daily[1].json()["requestId"]);
    // One MERGE per model (one key range each here) and per job batch, each its own id.
    for t in [
        "rolling_8h",
        "rolling_24h",
        "daily_max_8h",
        "eaqi",
        "exceedance_days",
        "exceedances",
    ] {
        assert_eq!(of(t).len(), 1, "{t}");
    }
    let mut ids: Vec<String> = merges
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.json()["requestId"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        ids.iter().all(|i| crate::guarantees::uuid_like(i)),
        "{ids:?}"
    );
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "distinct loads never share a requestId");
    summaries_equal(&ws, dataset);
}
