//! The law changes on 12 December 2026: Directive (EU) 2024/2881 replaces
//! 2008/50/EC. The threshold episodes, annual means, ozone's three-year
//! target and AOT40 on the real InfluxDB and real DuckDB files, checked
//! against an independent computation written here from the instruments
//! (../shared/reference/eu-air-quality-standards.md), on data built to sit
//! on every boundary the new rules add.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate, TimeZone, Utc};

use crate::products_ref::{assert_same, parse, Table, V};
use crate::util::{influx, Ws};

const TZ: chrono_tz::Tz = chrono_tz::Europe::Berlin;

fn hour(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp() / 3600
}

fn hour_text(h: i64) -> String {
    Utc.timestamp_opt(h * 3600, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn local_date(h: i64) -> NaiveDate {
    Utc.timestamp_opt(h * 3600, 0)
        .unwrap()
        .with_timezone(&TZ)
        .date_naive()
}

/// (pollutant, station, hour) -> (minutes present, value of every minute).
type Plan = BTreeMap<(String, String, i64), (i64, f64)>;

/// Writes the plan to InfluxDB as minute points.
fn write(db: &str, plan: &Plan) {
    influx().create_db(db);
    let mut lines = Vec::new();
    for ((p, s, h), (n, v)) in plan {
        for m in 0..*n {
            lines.push(format!(
                "air_quality,station={s} {p}={v} {}",
                (h * 60 + m) * 60_000_000_000
            ));
        }
    }
    for chunk in lines.chunks(5000) {
        influx().write(db, &chunk.join("\n"));
    }
}

/// Valid hourly averages (at least `min_minutes` minutes) per (pollutant,
/// station), by hour. The average of equal minutes is the minute value,
/// summed as the definition says.
fn valid(plan: &Plan, min_minutes: i64) -> BTreeMap<(String, String), BTreeMap<i64, f64>> {
    let mut out: BTreeMap<(String, String), BTreeMap<i64, f64>> = BTreeMap::new();
    for ((p, s, h), (n, v)) in plan {
        if *n >= min_minutes {
            let avg = (0..*n).map(|_| *v).sum::<f64>() / *n as f64;
            out.entry((p.clone(), s.clone()))
                .or_default()
                .insert(*h, avg);
        }
    }
    out
}

fn newest(plan: &Plan) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (p, _, h) in plan.keys() {
        let e = out.entry(p.clone()).or_insert(*h);
        *e = (*e).max(*h);
    }
    out
}

/// The hours of Berlin date `d`: `[first, last]`.
fn day_hours(d: NaiveDate) -> (i64, i64) {
    let noon = d.and_hms_opt(12, 0, 0).unwrap().and_utc().timestamp() / 3600;
    let hs: Vec<i64> = (noon - 40..noon + 40)
        .filter(|h| local_date(*h) == d)
        .collect();
    (hs[0], *hs.last().unwrap())
}

/// The information and alert thresholds judging a time: (instrument,
/// pollutant, threshold, value, consecutive hours or days, on daily
/// means). 2008/50/EC Annex XII before 12 December 2026; (EU) 2024/2881
/// Annex I Section 4 from that day.
type Threshold = (&'static str, &'static str, &'static str, f64, i64, bool);

fn thresholds(new: bool) -> Vec<Threshold> {
    if !new {
        return vec![
            (
                "2008/50/EC Annex XII B",
                "o3",
                "information",
                180.0,
                1,
                false,
            ),
            ("2008/50/EC Annex XII B", "o3", "alert", 240.0, 1, false),
            ("2008/50/EC Annex XII A", "no2", "alert", 400.0, 3, false),
            ("2008/50/EC Annex XII A", "so2", "alert", 500.0, 3, false),
        ];
    }
    let i = "(EU) 2024/2881 Annex I Section 4";
    vec![
        (i, "so2", "information", 275.0, 1, false),
        (i, "so2", "alert", 350.0, 3, false),
        (i, "no2", "information", 150.0, 1, false),
        (i, "no2", "alert", 200.0, 3, false),
        (i, "o3", "information", 180.0, 1, false),
        (i, "o3", "alert", 240.0, 1, false),
        (i, "pm10", "information", 90.0, 1, true),
        (i, "pm10", "alert", 90.0, 3, true),
        (i, "pm25", "information", 50.0, 1, true),
        (i, "pm25", "alert", 50.0, 3, true),
    ]
}

const SWITCH: &str = "2026-12-12";

/// Hourly episodes: (pollutant, station, reached hour, threshold,
/// instrument) -> (value, first hour, episode id). A window of
/// `consecutive` valid hours all strictly above the value, judged by the
/// rule in force at its last hour (UTC), reached there unless the window
/// ending the hour before was also full under the same rule.
fn hourly_episodes(plan: &Plan) -> Table {
    let switch = hour(&format!("{SWITCH}T00:00:00Z"));
    let mut out = Table::new();
    for ((p, s), series) in valid(plan, 45) {
        for &h in series.keys() {
            for (inst, tp, name, value, c, daily) in thresholds(h >= switch) {
                if daily || tp != p {
                    continue;
                }
                let above = |k: i64| series.get(&k).is_some_and(|v| *v > value);
                let full = (h - c + 1..=h).all(above);
                // The hour before was judged by the same rule (not across the switch).
                let judged_before = (h > switch) == (h >= switch);
                if full && !(judged_before && above(h - c)) {
                    let first = h - c + 1;
                    out.insert(
                        vec![
                            p.clone(),
                            s.clone(),
                            h.to_string(),
                            name.into(),
                            inst.into(),
                        ],
                        vec![
                            V::F(Some(value)),
                            V::S(Some(hour_text(first))),
                            V::S(Some(format!("{p}|{s}|{name}|{}", hour_text(first)))),
                        ],
                    );
                }
            }
        }
    }
    out
}

/// Daily episodes on PM: valid Berlin days (18 of 24 valid hours), over
/// (the pollutant's newest hour is the day's last or later), whose means
/// are strictly above the value for `consecutive` days, judged by the rule
/// in force on the last day.
fn daily_episodes(plan: &Plan) -> Table {
    let newest = newest(plan);
    let switch = date(SWITCH);
    let mut out = Table::new();
    for ((p, s), series) in valid(plan, 45) {
        let mut days: BTreeMap<NaiveDate, Vec<f64>> = BTreeMap::new();
        for (h, v) in &series {
            days.entry(local_date(*h)).or_default().push(*v);
        }
        let mean = |d: NaiveDate| -> Option<f64> {
            let vals = days.get(&d)?;
            let (a, b) = day_hours(d);
            let closed = newest[&p] >= b;
            let ok = 4 * vals.len() as i64 >= 3 * (b - a + 1);
            (closed && ok).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
        };
        for &d in days.keys() {
            for (inst, tp, name, value, c, daily) in thresholds(d >= switch) {
                if !daily || tp != p {
                    continue;
                }
                let above = |k: i64| mean(d - chrono::Duration::days(k)).is_some_and(|m| m > value);
                let full = (0..c).all(above);
                let judged_before = (d.pred_opt().unwrap() >= switch) == (d >= switch);
                if full && !(judged_before && above(c)) {
                    let first = d - chrono::Duration::days(c - 1);
                    out.insert(
                        vec![
                            p.clone(),
                            s.clone(),
                            d.to_string(),
                            name.into(),
                            inst.into(),
                        ],
                        vec![
                            V::F(Some(value)),
                            V::S(Some(first.to_string())),
                            V::S(Some(format!("{p}|{s}|{name}|{first}"))),
                        ],
                    );
                }
            }
        }
    }
    out
}

fn spec(db: &str, start: &str, end: &str, jobs: &str, params: &str, models: &str) -> String {
    format!(
        "state: {{type: local, path: state}}
sources:
  influx:
    type: influxdb
    url: ${{env:TEST_INFLUX_URL}}
    database: {db}
sinks:
  wh: {{type: duckdb, path: wh.duckdb}}
pipelines:
  aq:
    source: influx
    sinks: [wh]
    measurement: air_quality
    start: {start}
    end: {end}
    batch_hours: 744
{params}    jobs: [{jobs}]
    models:
{models}"
    )
}

fn run(ws: &Ws, args: &[&str]) -> crate::util::Out {
    ws.run_env(args, &[("TEST_INFLUX_URL", &influx().url)]).ok()
}

/// The threshold plan: 2026-12-08 .. 2026-12-20 UTC, every hour of 60
/// minutes at a low base value, with the episodes below.
fn threshold_plan() -> Plan {
    let (h0, h1) = (hour("2026-12-08T00:00:00Z"), hour("2026-12-20T00:00:00Z"));
    let base = [
        ("no2", 40.0),
        ("so2", 10.0),
        ("o3", 60.0),
        ("pm10", 20.0),
        ("pm25", 10.0),
    ];
    let mut plan = Plan::new();
    for s in ["s1", "s2"] {
        for (p, v) in base {
            for h in h0..h1 {
                plan.insert((p.into(), s.into(), h), (60, v));
            }
        }
    }
    let mut set = |p: &str, s: &str, from: &str, hours: i64, n: i64, v: f64| {
        let a = hour(from);
        for h in a..a + hours {
            plan.insert((p.into(), s.into(), h), (n, v));
        }
    };
    // NO2: three hours at the new alert threshold (equal: information only),
    // then three just above it (alert); an old-rule alert at 11 Dec 23:00
    // UTC; the first hour of the new rules above 150 and 200, after an hour
    // above 200 on the last day of the old ones (a window across the
    // switch).
    set("no2", "s1", "2026-12-13T10:00:00Z", 3, 60, 200.0);
    set("no2", "s1", "2026-12-14T10:00:00Z", 3, 60, 200.1);
    set("no2", "s1", "2026-12-11T21:00:00Z", 3, 60, 450.0);
    set("no2", "s2", "2026-12-11T22:00:00Z", 1, 60, 160.0);
    set("no2", "s2", "2026-12-11T23:00:00Z", 3, 60, 250.0);
    // SO2: at 275 and just above it; three hours at 350 and just above.
    set("so2", "s1", "2026-12-13T05:00:00Z", 1, 60, 275.0);
    set("so2", "s1", "2026-12-13T06:00:00Z", 1, 60, 275.25);
    set("so2", "s1", "2026-12-13T14:00:00Z", 3, 60, 350.0);
    set("so2", "s1", "2026-12-14T14:00:00Z", 3, 60, 350.25);
    // ... and an hour of 44 minutes inside an otherwise alerting run.
    set("so2", "s2", "2026-12-15T14:00:00Z", 3, 60, 400.0);
    set("so2", "s2", "2026-12-15T15:00:00Z", 1, 44, 400.0);
    // O3 above 180 across the switch; 240 equal, then above.
    set("o3", "s1", "2026-12-11T23:00:00Z", 2, 60, 190.0);
    set("o3", "s1", "2026-12-13T12:00:00Z", 1, 60, 240.0);
    set("o3", "s1", "2026-12-13T13:00:00Z", 1, 60, 240.25);
    // PM10 daily means (Berlin days start at 23:00 UTC in December): 90.0
    // on the 12th, 90.1 on the 13th and 14th, no data on the 15th, 90.1 on
    // the 16th-18th; at s2, 95 on the 10th-12th (before and on the switch).
    let day = |d: &str| format!("{}T23:00:00Z", date(d).pred_opt().unwrap());
    set("pm10", "s1", &day("2026-12-12"), 24, 60, 90.0);
    set("pm10", "s1", &day("2026-12-13"), 48, 60, 90.1);
    set("pm10", "s1", &day("2026-12-16"), 72, 60, 90.1);
    set("pm10", "s2", &day("2026-12-10"), 72, 60, 95.0);
    // PM2.5 at 55 on three days, the middle one with 17 valid hours (7 of
    // 44 minutes): invalid, so no alert; at s2, three valid days just above 50.
    set("pm25", "s1", &day("2026-12-13"), 72, 60, 55.0);
    set("pm25", "s1", &day("2026-12-14"), 7, 44, 55.0);
    set("pm25", "s2", &day("2026-12-13"), 72, 60, 50.25);
    for h in hour(&day("2026-12-15"))..hour(&day("2026-12-16")) {
        plan.remove(&("pm10".into(), "s1".into(), h));
    }
    plan
}

const THRESHOLD_MODELS: &str = "      - {name: daily_mean, grain: day, timezone: Europe/Berlin}
      - {name: threshold_episodes, grain: hour, lookback: 3h}
      - {name: daily_threshold_episodes, grain: day, timezone: Europe/Berlin, lookback: 72h, depends_on: [daily_mean]}
";

fn read_episodes(ws: &Ws, like: &Table) -> (Table, Table) {
    let hourly = parse(
        ws.query(
            "wh.duckdb",
            "SELECT pollutant, station, epoch_us(hour_start) // 3600000000, threshold, instrument, \
             threshold_value, strftime(make_timestamp(epoch_us(first_hour)), '%Y-%m-%dT%H:%M:%SZ'), episode \
             FROM threshold_episodes",
        ),
        5,
        like,
    );
    let daily = parse(
        ws.query(
            "wh.duckdb",
            "SELECT pollutant, station, day::VARCHAR, threshold, instrument, threshold_value, \
             first_day::VARCHAR, episode FROM daily_threshold_episodes",
        ),
        5,
        like,
    );
    (hourly, daily)
}

/// Hourly thresholds switch from 2008/50/EC Annex XII to (EU) 2024/2881
/// Annex I Section 4 at 12 Dec 2026 00:00 UTC, and PM thresholds judge
/// valid daily means from that day: every episode equals the definition,
/// on values equal to and just above each threshold, an invalid hour and
/// an invalid day inside runs, a gap day, and runs across the switch.
#[test]
fn threshold_episodes_follow_the_rule_in_force_on_12_december_2026() {
    let db = "law_thresholds";
    let plan = threshold_plan();
    write(db, &plan);
    let ws = Ws::new(&spec(
        db,
        "2026-12-08T00:00:00Z",
        "2026-12-20T00:00:00Z",
        "{name: no2}, {name: so2}, {name: o3}, {name: pm10}, {name: pm25}",
        "",
        THRESHOLD_MODELS,
    ));
    run(&ws, &["run", "aq", "--now", "2026-12-21T00:00:00Z"]);
    let want_h = hourly_episodes(&plan);
    let want_d = daily_episodes(&plan);
    let (got_h, got_d) = read_episodes(&ws, &want_h);
    assert_same("threshold_episodes", &got_h, &want_h);
    assert_same("daily_threshold_episodes", &got_d, &want_d);

    // The boundaries are in the data: what each provoked.
    let ids = |t: &Table| -> BTreeSet<String> {
        t.values()
            .map(|v| match &v[2] {
                V::S(Some(s)) => s.clone(),
                _ => unreachable!(),
            })
            .collect()
    };
    let (h, d) = (ids(&want_h), ids(&want_d));
    for e in [
        // 200.1 for three hours: alert; 200.0: information only.
        "no2|s1|alert|2026-12-14T10:00:00Z",
        "no2|s1|information|2026-12-13T10:00:00Z",
        // The old NO2 alert on 11 Dec, and the new rules' first hour.
        "no2|s1|alert|2026-12-11T21:00:00Z",
        "no2|s2|information|2026-12-12T00:00:00Z",
        "no2|s2|alert|2026-12-11T23:00:00Z",
        "so2|s1|information|2026-12-13T06:00:00Z",
        "so2|s1|alert|2026-12-14T14:00:00Z",
        "o3|s1|information|2026-12-11T23:00:00Z",
        "o3|s1|information|2026-12-12T00:00:00Z",
        "o3|s1|alert|2026-12-13T13:00:00Z",
    ] {
        assert!(h.contains(e), "{e} not in {h:?}");
    }
    for e in [
        "no2|s1|alert|2026-12-13T10:00:00Z",
        "so2|s1|information|2026-12-13T05:00:00Z",
        "so2|s1|alert|2026-12-13T14:00:00Z",
        "o3|s1|alert|2026-12-13T12:00:00Z",
    ] {
        assert!(!h.contains(e), "{e} in {h:?}");
    }
    assert!(!h.iter().any(|e| e.starts_with("so2|s2|alert")), "{h:?}");
    assert_eq!(
        d,
        BTreeSet::from(
            [
                "pm10|s1|information|2026-12-13",
                "pm10|s1|information|2026-12-16",
                "pm10|s1|alert|2026-12-16",
                "pm10|s2|information|2026-12-12",
                "pm10|s2|alert|2026-12-10",
                "pm25|s1|information|2026-12-13",
                "pm25|s1|information|2026-12-15",
                "pm25|s2|information|2026-12-13",
                "pm25|s2|alert|2026-12-13",
            ]
            .map(String::from)
        )
    );
    let averaging = ws.query(
        "wh.duckdb",
        "SELECT DISTINCT averaging FROM daily_threshold_episodes \
         UNION ALL SELECT DISTINCT averaging FROM threshold_episodes ORDER BY 1",
    );
    assert_eq!(averaging, [["1 day"], ["1 hour"]]);
}

/// The year plan: one reading per hour (`min_minutes: 1`), Berlin years
/// 2024-2027 and 9 days of 2028 (a year in progress).
///
/// NO2 (annual means): 2025, station a 7,884 valid hours of 8,760 (90.0 %,
/// valid under 2008/50/EC) at exactly 40 (not above the limit), b 7,883
/// (89.99 %: not valid); 2027, a 7,446 (85.0 %, valid under 2024/2881) at
/// 40.25 and b 7,445; 2026, c every hour at 20 (the 2030 limit, equal).
///
/// O3 (target days and AOT40) at a: 100 every hour, days of 120.25 (over
/// 120) and 120.0 (not over); 2024 with May 1-5 missing (26 valid days:
/// that month does not count, 5 of 6 remain), 2025 without April and with
/// September 1-4 missing (4 of 6 months: an invalid year), 2026 with April
/// 1-3 missing (27 valid days, the least that counts) and July 1-22
/// missing 10:00-14:59 UTC (994 of 1,104 AOT40 hours: 90 %, valid), and
/// hours at 80.0/80.1 and out-of-window peaks at 07:00, 08:00, 19:00 and
/// 20:00 CET and on the window's first and last days. At b, 2026 only, with
/// one AOT40 hour fewer (993: not valid).
fn year_plan() -> Plan {
    let mut plan = Plan::new();
    let y0 = |y: i32| hour(&format!("{}-12-31T23:00:00Z", y - 1));
    let mut put = |p: &str, s: &str, h: i64, v: f64| {
        plan.insert((p.into(), s.into(), h), (1, v));
    };
    // NO2.
    for (s, y, n, v) in [
        ("a", 2025, 7884, 40.0),
        ("b", 2025, 7883, 40.25),
        ("a", 2027, 7446, 40.25),
        ("b", 2027, 7445, 40.25),
        ("c", 2026, 8760, 20.0),
    ] {
        let end = y0(y + 1);
        for h in end - n..end {
            put("no2", s, h, v);
        }
    }
    for h in y0(2028)..y0(2028) + 9 * 24 {
        put("no2", "a", h, 30.0);
    }
    // O3 at a: every hour of 2024-2027 and 9 days of 2028, at 100.
    let days = |from: &str, n: i64| -> Vec<i64> {
        let a = day_hours(date(from)).0;
        (a..a + n * 24).collect()
    };
    let mut o3: BTreeMap<i64, f64> = (y0(2024)..y0(2028) + 9 * 24).map(|h| (h, 100.0)).collect();
    let mut set_days = |from: &str, n: i64, v: f64| {
        for h in days(from, n) {
            o3.insert(h, v);
        }
    };
    set_days("2024-08-01", 30, 120.25);
    set_days("2024-07-01", 5, 120.0);
    set_days("2025-06-01", 50, 120.25);
    set_days("2026-08-01", 20, 120.25);
    set_days("2027-08-01", 10, 120.25);
    for (t, v) in [
        ("2026-06-10T06:00:00Z", 150.0),
        ("2026-06-10T07:00:00Z", 80.1),
        ("2026-06-10T18:00:00Z", 80.0),
        ("2026-06-10T19:00:00Z", 150.0),
        ("2026-06-11T07:00:00Z", 80.0),
        ("2026-06-11T18:00:00Z", 80.1),
        ("2026-04-30T18:00:00Z", 150.0),
        ("2026-05-01T07:00:00Z", 150.0),
        ("2026-07-31T18:00:00Z", 150.0),
        ("2026-07-31T19:00:00Z", 150.0),
        ("2026-08-01T07:00:00Z", 150.0),
    ] {
        o3.insert(hour(t), v);
    }
    let mut drop: Vec<i64> = Vec::new();
    drop.extend(days("2024-05-01", 5));
    drop.extend(days("2025-04-01", 30));
    drop.extend(days("2025-09-01", 4));
    drop.extend(days("2026-04-01", 3));
    let july_hours = |n: i64| -> Vec<i64> {
        (0..n)
            .flat_map(|d| {
                let a = hour("2026-07-01T10:00:00Z") + d * 24;
                a..a + 5
            })
            .collect()
    };
    drop.extend(july_hours(22));
    let at_b: BTreeMap<i64, f64> = o3
        .range(y0(2026)..y0(2027))
        .filter(|(h, _)| !drop.contains(h) && **h != hour("2026-07-23T10:00:00Z"))
        .map(|(h, v)| (*h, *v))
        .collect();
    for h in drop {
        o3.remove(&h);
    }
    for (h, v) in o3 {
        put("o3", "a", h, v);
    }
    for (h, v) in at_b {
        put("o3", "b", h, v);
    }
    plan
}

const YEAR_MODELS: &str = "      - {name: daily_mean, grain: day, timezone: Europe/Berlin}
      - {name: rolling_8h, template: rolling_mean.sql, grain: hour, lookback: 7h, params: {hours: 8, min_valid: 6}}
      - {name: daily_max_8h, grain: day, timezone: Europe/Berlin, depends_on: [rolling_8h]}
      - {name: annual_mean, grain: year, timezone: Europe/Berlin, depends_on: [daily_mean]}
      - {name: o3_target_days, grain: year, timezone: Europe/Berlin, lookback: 731d, depends_on: [daily_max_8h]}
      - {name: aot40_days, grain: day, timezone: Europe/Berlin}
      - {name: aot40, grain: year, timezone: Europe/Berlin, lookback: 1461d, depends_on: [aot40_days]}
";

/// The Berlin year of hour `h` and its hours `[first, end)`.
fn year_hours(y: i32) -> (i64, i64) {
    let first = |y: i32| day_hours(NaiveDate::from_ymd_opt(y, 1, 1).unwrap()).0;
    (first(y), first(y + 1))
}

fn opt_bool(b: Option<bool>) -> V {
    V::S(b.map(|b| b.to_string()))
}

/// Annual means: per pollutant, station and Berlin year with data, the mean
/// of the valid hourly values and the coverage criterion in force (90 %,
/// 2008/50/EC Annex XI, up to 2026; 85 %, (EU) 2024/2881 Annex V C, after),
/// against each annual limit value judging the year.
fn annual_means(plan: &Plan) -> Table {
    let newest = newest(plan);
    let mut out = Table::new();
    for ((p, s), series) in valid(plan, 1) {
        let mut years: BTreeMap<i32, Vec<f64>> = BTreeMap::new();
        for (h, v) in &series {
            years.entry(local_date(*h).year()).or_default().push(*v);
        }
        for (y, vals) in years {
            let (a, b) = year_hours(y);
            let hours = b - a;
            let n = vals.len() as i64;
            let mean = vals.iter().sum::<f64>() / n as f64;
            let criterion = if y <= 2026 { 0.9 } else { 0.85 };
            // n >= criterion x hours, in integers: 90 % is 9/10, 85 % 17/20.
            let ok = if y <= 2026 {
                10 * n >= 9 * hours
            } else {
                20 * n >= 17 * hours
            };
            let complete = newest[&p] >= b - 1;
            let t1 = "(EU) 2024/2881 Annex I Table 1";
            let mut limits: Vec<(&str, &str, f64)> = Vec::new();
            match (p.as_str(), y) {
                ("no2", ..=2026) => limits.push(("2008/50/EC Annex XI", "in_force", 40.0)),
                ("no2", 2027..=2029) => {
                    limits.push(("(EU) 2024/2881 Annex I Table 2", "in_force", 40.0))
                }
                _ => {}
            }
            if p == "no2" {
                limits.push((t1, if y < 2030 { "outlook" } else { "in_force" }, 20.0));
            }
            let head = |inst: &str| vec![p.clone(), s.clone(), y.to_string(), inst.to_owned()];
            let row = |basis: Option<&str>, limit: Option<f64>| {
                vec![
                    V::F(Some(mean)),
                    V::I(n),
                    V::I(hours),
                    V::F(Some(n as f64 / hours as f64)),
                    V::F(Some(criterion)),
                    V::B(ok),
                    V::B(complete),
                    V::S(basis.map(String::from)),
                    V::F(limit),
                    opt_bool(limit.filter(|_| ok).map(|l| mean > l)),
                ]
            };
            if limits.is_empty() {
                out.insert(head("NULL"), row(None, None));
            }
            for (inst, basis, l) in limits {
                out.insert(head(inst), row(Some(basis), Some(l)));
            }
        }
    }
    out
}

/// The ozone target's days: per station and year, valid days whose maximum
/// daily 8-hour mean is above 120; a year counts with 5 of the 6 months
/// April-September holding 27 valid days; the mean over the valid years
/// among it and the two before (2008/50/EC Annex VII; 2024/2881 Annex I
/// Section 2), against 25 days (2008/50, up to 2026) and 18 (2024/2881:
/// in force from 2027, the outlook before).
fn o3_target(plan: &Plan) -> Table {
    let newest = newest(plan);
    // products_ref counts an hour valid with 45 minutes: one reading here
    // stands for a valid hour.
    let hourly: crate::products_ref::Hourly = valid(plan, 1)
        .into_iter()
        .flat_map(|((p, s), series)| {
            series
                .into_iter()
                .map(move |(h, v)| ((p.clone(), s.clone(), h), (60, v)))
        })
        .collect();
    let m8 = crate::products_ref::daily_max_8h(&hourly, TZ);
    // (station, year) -> (days over, valid days, valid days by month)
    type Year = (i64, i64, BTreeMap<u32, i64>);
    let mut years: BTreeMap<(String, i32), Year> = BTreeMap::new();
    for (k, v) in &m8 {
        if k[0] != "o3" {
            continue;
        }
        let d = date(&k[2]);
        let e = years.entry((k[1].clone(), d.year())).or_default();
        if v[4] == V::B(true) {
            e.1 += 1;
            *e.2.entry(d.month()).or_default() += 1;
            if matches!(v[0], V::F(Some(m)) if m > 120.0) {
                e.0 += 1;
            }
        }
    }
    let valid_year = |m: &BTreeMap<u32, i64>| {
        (4..=9)
            .filter(|x| m.get(x).copied().unwrap_or(0) >= 27)
            .count() as i64
    };
    let mut out = Table::new();
    for ((s, y), (over, n_valid, months)) in &years {
        let rules: Vec<(&str, &str, i64)> = if *y <= 2026 {
            vec![
                ("2008/50/EC Annex VII", "in_force", 25),
                ("(EU) 2024/2881 Annex I Section 2", "outlook", 18),
            ]
        } else {
            vec![("(EU) 2024/2881 Annex I Section 2", "in_force", 18)]
        };
        let counted: Vec<i64> = (y - 2..=*y)
            .filter_map(|yy| years.get(&(s.clone(), yy)))
            .filter(|(_, _, m)| valid_year(m) >= 5)
            .map(|(o, _, _)| *o)
            .collect();
        let mean = (!counted.is_empty())
            .then(|| counted.iter().sum::<i64>() as f64 / counted.len() as f64);
        for (inst, basis, allowed) in rules {
            out.insert(
                vec!["o3".into(), s.clone(), y.to_string(), inst.into()],
                vec![
                    V::I(*over),
                    V::I(*n_valid),
                    V::I(valid_year(months)),
                    V::B(valid_year(months) >= 5),
                    V::B(newest["o3"] >= year_hours(*y).1 - 1),
                    V::F(mean),
                    V::I(counted.len() as i64),
                    V::I(allowed),
                    V::S(Some(basis.into())),
                    opt_bool(mean.map(|m| m > allowed as f64)),
                ],
            );
        }
    }
    out
}

/// AOT40: per station and year, over the valid hourly values from 08:00 to
/// 20:00 Central European Time (UTC+1) on 1 May-31 July, the sum of the
/// excess over 80; valid with 90 % of the 1,104 possible hours; the
/// estimate scaled to the possible hours (2008/50/EC Annex VII); the mean
/// estimate of the valid years among it and the four before, with three
/// at least, against 18,000.
fn aot40(plan: &Plan) -> Table {
    let newest = newest(plan);
    let mut years: BTreeMap<(String, i32), (f64, i64)> = BTreeMap::new();
    for ((p, s), series) in valid(plan, 1) {
        if p != "o3" {
            continue;
        }
        for (h, v) in series {
            let cet = Utc.timestamp_opt((h + 1) * 3600, 0).unwrap().naive_utc();
            let hod = chrono::Timelike::hour(&cet);
            if !(8..20).contains(&hod) || !(5..=7).contains(&cet.month()) {
                continue;
            }
            let e = years.entry((s.clone(), local_date(h).year())).or_default();
            e.1 += 1;
            if v > 80.0 {
                e.0 += v - 80.0;
            }
        }
    }
    let ok = |n: i64| 10 * n >= 9 * 1104;
    let estimate = |(sum, n): (f64, i64)| (n > 0).then(|| sum * 1104.0 / n as f64);
    let mut out = Table::new();
    for ((s, y), (sum, n)) in &years {
        let inst = if *y <= 2026 {
            "2008/50/EC Annex VII"
        } else {
            "(EU) 2024/2881 Annex I Section 2"
        };
        let counted: Vec<f64> = (y - 4..=*y)
            .filter_map(|yy| years.get(&(s.clone(), yy)))
            .filter(|(_, n)| ok(*n))
            .filter_map(|e| estimate(*e))
            .collect();
        let mean = (counted.len() >= 3).then(|| counted.iter().sum::<f64>() / counted.len() as f64);
        let last = hour(&format!("{y}-07-31T18:00:00Z"));
        out.insert(
            vec!["o3".into(), s.clone(), y.to_string(), inst.into()],
            vec![
                V::F(Some(*sum)),
                V::I(*n),
                V::B(ok(*n)),
                V::F(estimate((*sum, *n))),
                V::B(newest["o3"] >= last),
                V::F(mean),
                V::I(counted.len() as i64),
                opt_bool(mean.map(|m| m > 18000.0)),
            ],
        );
    }
    out
}

fn year_tables(ws: &Ws, want: &BTreeMap<&str, Table>) -> BTreeMap<&'static str, Table> {
    let like = |n: &str| &want[n];
    BTreeMap::from([
        (
            "annual_mean",
            parse(
                ws.query(
                    "wh.duckdb",
                    "SELECT pollutant, station, year, coalesce(instrument, 'NULL'), mean, n_valid_hours, \
                     hours_in_year, coverage, criterion, valid, complete, basis, limit_value, over_limit \
                     FROM annual_mean",
                ),
                4,
                like("annual_mean"),
            ),
        ),
        (
            "o3_target_days",
            parse(
                ws.query(
                    "wh.duckdb",
                    "SELECT pollutant, station, year, instrument, n_days_over, n_valid_days, \
                     n_summer_months, valid, complete, mean_days, n_years, allowed, basis, over_target \
                     FROM o3_target_days",
                ),
                4,
                like("o3_target_days"),
            ),
        ),
        (
            "aot40",
            parse(
                ws.query(
                    "wh.duckdb",
                    "SELECT pollutant, station, year, instrument, aot40, n_valid, valid, estimate, \
                     complete, mean_5y, n_years, over_target FROM aot40",
                ),
                4,
                like("aot40"),
            ),
        ),
    ])
}

/// The three year tables equal the definitions over `plan`; returns them.
fn assert_years(ws: &Ws, plan: &Plan) -> BTreeMap<&'static str, Table> {
    let want = BTreeMap::from([
        ("annual_mean", annual_means(plan)),
        ("o3_target_days", o3_target(plan)),
        ("aot40", aot40(plan)),
    ]);
    let got = year_tables(ws, &want);
    for (n, w) in &want {
        assert_same(n, &got[n], w);
    }
    want
}

/// Annual means, the ozone target's three-year mean and AOT40's five-year
/// mean equal their definitions on a year at 90.0 % and 89.99 % coverage
/// (2008/50/EC) and at 85.0 % and 84.99 % (2024/2881), a year in progress,
/// an invalid ozone year between two valid ones, months of 26 and 27 valid
/// days, AOT40 hours on every edge of its window and a July at 90 % and
/// just under; then a late hour changes one year and one day, as the
/// hourly run would see it, and everything still equals the definitions.
#[test]
fn annual_means_and_ozone_targets_follow_their_rules() {
    let db = "law_years";
    let mut plan = year_plan();
    write(db, &plan);
    let ws = Ws::new(&spec(
        db,
        "2023-12-31T23:00:00Z",
        "2028-01-09T23:00:00Z",
        "{name: no2}, {name: o3}",
        "    params: {min_minutes: 1}\n",
        YEAR_MODELS,
    ));
    // A run takes at most 720 hours; a backfill the whole range.
    let all = [
        "backfill",
        "aq",
        "--from",
        "2023-12-31T23:00:00Z",
        "--to",
        "2028-01-09T23:00:00Z",
        "--now",
        "2028-01-10T00:00:00Z",
    ];
    run(&ws, &all);
    let want = assert_years(&ws, &plan);
    // What the boundaries provoked.
    let am = &want["annual_mean"];
    let row = |t: &Table, k: [&str; 4]| t[&k.map(String::from).to_vec()].clone();
    let xi = "2008/50/EC Annex XI";
    assert_eq!(row(am, ["no2", "a", "2025", xi])[5], V::B(true));
    assert_eq!(row(am, ["no2", "a", "2025", xi])[9], opt_bool(Some(false)));
    assert_eq!(row(am, ["no2", "b", "2025", xi])[5], V::B(false));
    let t2 = "(EU) 2024/2881 Annex I Table 2";
    assert_eq!(row(am, ["no2", "a", "2027", t2])[5], V::B(true));
    assert_eq!(row(am, ["no2", "a", "2027", t2])[9], opt_bool(Some(true)));
    assert_eq!(row(am, ["no2", "b", "2027", t2])[5], V::B(false));
    assert_eq!(row(am, ["no2", "a", "2028", t2])[6], V::B(false));
    let o3 = &want["o3_target_days"];
    let s2 = "(EU) 2024/2881 Annex I Section 2";
    let vii = "2008/50/EC Annex VII";
    // 2024 and 2026 valid (30 and 20 days), 2025 not: 25, equal to 25.
    assert_eq!(row(o3, ["o3", "a", "2025", vii])[3], V::B(false));
    assert_eq!(
        row(o3, ["o3", "a", "2026", vii])[5..8],
        [V::F(Some(25.0)), V::I(2), V::I(25)]
    );
    assert_eq!(row(o3, ["o3", "a", "2026", vii])[9], opt_bool(Some(false)));
    assert_eq!(row(o3, ["o3", "a", "2026", s2])[9], opt_bool(Some(true)));
    let a40 = &want["aot40"];
    assert_eq!(
        row(a40, ["o3", "a", "2026", vii])[1..3],
        [V::I(994), V::B(true)]
    );
    assert_eq!(
        row(a40, ["o3", "b", "2026", vii])[1..3],
        [V::I(993), V::B(false)]
    );
    assert_eq!(row(a40, ["o3", "a", "2026", vii])[6], V::I(3));
    assert_eq!(row(a40, ["o3", "a", "2025", vii])[5], V::F(None));
    // 10 June 2026: 07:00 CET at 150 (outside), 08:00 at 80.1 (0.1),
    // ten hours at 100 (20 each), 19:00 at 80.0 (in, not above), 20:00 at
    // 150 (outside): 200.1 over 12 valid hours, 11 above 80.
    assert_eq!(
        ws.query(
            "wh.duckdb",
            "SELECT round(aot40_sum, 9)::VARCHAR, n_valid, n_over FROM aot40_days \
             WHERE station = 'a' AND day = DATE '2026-06-10'"
        ),
        [["200.100000000", "12", "11"]]
    );

    // A late hour: 2026-06-10T12:00Z (14:00 CEST) at 300 at a.
    let late = hour("2026-06-10T12:00:00Z");
    plan.insert(("o3".into(), "a".into(), late), (1, 300.0));
    influx().write(
        db,
        &format!(
            "air_quality,station=a o3=300 {}",
            late * 3600 * 1_000_000_000
        ),
    );
    let out = run(
        &ws,
        &[
            "backfill",
            "aq",
            "--from",
            "2026-06-10T12:00:00Z",
            "--to",
            "2026-06-10T13:00:00Z",
            "--now",
            "2028-01-10T00:00:00Z",
        ],
    );
    assert!(out.stdout.contains("model aot40 "), "{out:?}");
    assert_years(&ws, &plan);
}

/// A spec's start for the tests that read a line-protocol file (no server).
const LP: &str = "state: {type: local, path: state}
sources:
  points: {type: line_protocol, path: points.lp}
sinks:
  wh: {type: duckdb, path: wh.duckdb}
pipelines:
";

/// PM jobs from 12 December 2026 (23:00 UTC, Berlin's 13th) and their daily
/// threshold episodes, sent as Prefect events.
const PM_EPISODES: &str = "    start: 2026-12-12T23:00:00Z
    jobs: [{name: pm10}, {name: pm25}]
    models:
      - {name: daily_mean, grain: day, timezone: Europe/Berlin}
      - name: daily_threshold_episodes
        grain: day
        timezone: Europe/Berlin
        lookback: 72h
        depends_on: [daily_mean]
        events: air-quality.threshold.exceeded
";

/// Minute lines for `plan`, in line protocol.
fn lines(plan: &Plan) -> String {
    let mut out = String::new();
    for ((p, s, h), (n, v)) in plan {
        for m in 0..*n {
            out.push_str(&format!(
                "air_quality,station={s} {p}={v} {}\n",
                (h * 60 + m) * 60_000_000_000
            ));
        }
    }
    out
}

/// PM episodes on daily means go out as Prefect events exactly once: when
/// the day that reaches them is over, not before; never again on a rerun,
/// a backfill asked to alert, or a late point that changes a day's mean
/// but not the episode; and a late point that makes an episode sends it.
#[test]
fn daily_pm_episodes_are_sent_to_prefect_once_each() {
    let _turn = crate::util::alert_events();
    let p = crate::util::prefect();
    let spec = "prefect: {url: '${env:PREFECT_API_URL}'}
"
    .to_owned()
        + LP
        + "  pm:
    source: points
    sinks: [wh]
    measurement: air_quality
" + PM_EPISODES;
    let ws = Ws::new(&spec);
    // Berlin days 13-16 December: PM10 95 on the 13th-15th at pmev1, 20
    // elsewhere; PM2.5 at 10.
    let d0 = hour("2026-12-12T23:00:00Z");
    let mut plan = Plan::new();
    for h in d0..d0 + 4 * 24 {
        let pm10 = if h < d0 + 72 { 95.0 } else { 20.0 };
        plan.insert(("pm10".into(), "pmev1".into(), h), (60, pm10));
        plan.insert(("pm25".into(), "pmev2".into(), h), (60, 10.0));
    }
    ws.write("points.lp", &lines(&plan));
    let env = [("PREFECT_API_URL", p.url.as_str())];
    let go = |args: &[&str]| {
        ws.run_env(args, &env).ok();
    };
    let sent = |least: usize| -> BTreeSet<String> {
        let evs = p.events(
            serde_json::json!({"event": {"name": ["air-quality.threshold.exceeded"]},
                "resource": {"id_prefix": ["air-quality.station.pmev"]}}),
            least,
        );
        let ids: Vec<String> = evs
            .iter()
            .map(|e| {
                assert_eq!(e["payload"]["averaging"], "1 day", "{e}");
                e["payload"]["episode"].as_str().unwrap().to_owned()
            })
            .collect();
        let set: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(set.len(), ids.len(), "an episode sent twice: {ids:?}");
        set
    };
    let settle = || std::thread::sleep(std::time::Duration::from_secs(3));
    // Hourly runs: the 13th is over at 23:00 UTC; the 14th is not yet at noon.
    go(&["run", "pm", "--now", "2026-12-14T12:00:00Z"]);
    assert_eq!(
        sent(1),
        BTreeSet::from(["pm10|pmev1|information|2026-12-13".to_owned()])
    );
    go(&["run", "pm", "--now", "2026-12-16T23:00:00Z"]);
    let both = BTreeSet::from([
        "pm10|pmev1|information|2026-12-13".to_owned(),
        "pm10|pmev1|alert|2026-12-13".to_owned(),
    ]);
    assert_eq!(sent(2), both);
    // A rerun and a backfill asked to alert: nothing new.
    go(&["run", "pm", "--now", "2026-12-16T23:00:00Z"]);
    let all = [
        "backfill",
        "pm",
        "--from",
        "2026-12-12T23:00:00Z",
        "--to",
        "2026-12-16T23:00:00Z",
        "--alerts",
        "--now",
        "2026-12-16T23:00:00Z",
    ];
    go(&all);
    settle();
    assert_eq!(sent(2), both);
    // A late point changes the 14th's mean (still above): the same episodes.
    plan.insert(("pm10".into(), "pmev1".into(), d0 + 30), (60, 120.0));
    // Late points make an episode at pmev2: PM2.5 at 60 on the 15th.
    for h in d0 + 48..d0 + 72 {
        plan.insert(("pm25".into(), "pmev2".into(), h), (60, 60.0));
    }
    ws.write("points.lp", &lines(&plan));
    go(&all);
    settle();
    let mut three = both.clone();
    three.insert("pm25|pmev2|information|2026-12-15".to_owned());
    assert_eq!(sent(3), three);
    let means = ws.query(
        "wh.duckdb",
        "SELECT round(mean::DOUBLE, 4)::VARCHAR FROM daily_mean \
         WHERE pollutant = 'pm10' AND day = DATE '2026-12-14'",
    );
    assert_eq!(means, [["96.0417"]]);
}

/// With one sink out (a second DuckDB file held by another process), the
/// episodes are sent once from the sink that takes the rows; when the file
/// is free again and brought level (its hourly rows read back from the
/// first, its episode keys recomputed for it), nothing is sent again, and
/// both files hold the same episodes. (wh2 is listed first: the models'
/// reads would go to it if they did not skip a sink owed keys.)
#[test]
fn episodes_are_sent_once_while_a_sink_is_out_and_not_again_when_it_catches_up() {
    let _turn = crate::util::alert_events();
    let p = crate::util::prefect();
    let spec = "prefect: {url: '${env:PREFECT_API_URL}'}
"
    .to_owned()
        + &LP.replace(
            "  wh: {type: duckdb, path: wh.duckdb}\n",
            "  wh: {type: duckdb, path: wh.duckdb}\n  wh2: {type: duckdb, path: wh2.duckdb}\n",
        )
        + "  lag:
    source: points
    sinks: [wh2, wh]
    measurement: air_quality
" + PM_EPISODES;
    assert!(spec.contains("wh2: {type: duckdb"));
    let ws = Ws::new(&spec);
    // PM10 95 on Berlin's 13th-15th December at pmlag1: an information and
    // an alert episode on the 13th (alerts count days in a row).
    let d0 = hour("2026-12-12T23:00:00Z");
    let mut plan = Plan::new();
    for h in d0..d0 + 4 * 24 {
        let pm10 = if h < d0 + 72 { 95.0 } else { 20.0 };
        plan.insert(("pm10".into(), "pmlag1".into(), h), (60, pm10));
        plan.insert(("pm25".into(), "pmlag2".into(), h), (60, 10.0));
    }
    ws.write("points.lp", &lines(&plan));
    // Through a recording proxy: Prefect keeps one event per id (duckhour's
    // are derived from the episode), so what was sent is counted here.
    let rec = crate::util::Recorder::start(
        p.url.trim_end_matches("/api"),
        Box::new(|_: &crate::util::Seen| crate::util::Act::Forward),
    );
    let api = format!("{}/api", rec.url);
    let env = [("PREFECT_API_URL", api.as_str())];
    let posted = || -> Vec<String> {
        let mut ids: Vec<String> = (rec.seen().iter())
            .filter(|s| s.method == "POST" && s.path.ends_with("/api/events"))
            .flat_map(|s| s.json().as_array().cloned().unwrap_or_default())
            .filter(|e| e["event"] == "air-quality.threshold.exceeded")
            .map(|e| e["payload"]["episode"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let sent = |least: usize| -> Vec<String> {
        let evs = p.events(
            serde_json::json!({"event": {"name": ["air-quality.threshold.exceeded"]},
                "resource": {"id_prefix": ["air-quality.station.pmlag"]}}),
            least,
        );
        let mut ids: Vec<String> = evs
            .iter()
            .map(|e| e["payload"]["episode"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    // Both up for the first hours, then wh2 held for the rest.
    ws.run_env(&["run", "lag", "--now", "2026-12-13T06:00:00Z"], &env)
        .ok();
    let held = duckdb::Connection::open(ws.path("wh2.duckdb")).unwrap();
    let out = ws
        .run_env(&["run", "lag", "--now", "2026-12-16T23:00:00Z"], &env)
        .exit(1);
    drop(held);
    assert!(
        out.stderr.contains("error: sink `wh2` is "),
        "{}",
        out.stderr
    );
    let both = vec![
        "pm10|pmlag1|alert|2026-12-13".to_owned(),
        "pm10|pmlag1|information|2026-12-13".to_owned(),
    ];
    assert_eq!(sent(2), both);
    assert_eq!(posted(), both);
    // Free again: wh2 is brought level; nothing is sent again.
    let out = ws
        .run_env(&["run", "lag", "--now", "2026-12-16T23:10:00Z"], &env)
        .ok();
    assert!(!out.stderr.contains("behind"), "{}", out.stderr);
    assert_eq!(posted(), both);
    assert_eq!(sent(2), both);
    let episodes = "SELECT episode::VARCHAR FROM daily_threshold_episodes ORDER BY 1";
    assert_eq!(
        ws.query("wh2.duckdb", episodes),
        ws.query("wh.duckdb", episodes)
    );
    assert_eq!(ws.query("wh.duckdb", episodes).len(), 2);
    let means = "SELECT pollutant, station, day::VARCHAR, round(mean::DOUBLE, 4)::VARCHAR FROM daily_mean ORDER BY 1, 2, 3";
    assert_eq!(ws.query("wh2.duckdb", means), ws.query("wh.duckdb", means));
}

/// The README's national rules, as printed, replace the shipped ones: a
/// PM10 day of 2027 above 50 is an information episode of the national
/// decree, and no EU information threshold (90) is judged any more.
#[test]
fn readme_national_rules_replace_the_shipped_ones() {
    let readme = std::fs::read_to_string(crate::util::repo().join("README.md")).unwrap();
    let block = readme
        .split("**A network's own values, in YAML.**")
        .nth(1)
        .and_then(|s| s.split("```yaml\n").nth(1))
        .and_then(|s| s.split("```").next())
        .unwrap();
    assert!(block.starts_with("    rules:\n"), "{block}");
    let spec = format!(
        "{LP}  national:
    source: points
    sinks: [wh]
    measurement: air_quality
    start: 2027-01-04T23:00:00Z
{block}    jobs: [{{name: pm10}}]
    models:
      - {{name: daily_mean, grain: day, timezone: Europe/Berlin}}
      - {{name: annual_mean, grain: year, timezone: Europe/Berlin, depends_on: [daily_mean]}}
      - {{name: daily_threshold_episodes, grain: day, timezone: Europe/Berlin, lookback: 72h, depends_on: [daily_mean]}}
"
    );
    let ws = Ws::new(&spec);
    // Berlin 5-7 January 2027: 60, 95, 20.
    let d0 = hour("2027-01-04T23:00:00Z");
    let mut plan = Plan::new();
    for h in d0..d0 + 72 {
        let v = [60.0, 95.0, 20.0][((h - d0) / 24) as usize];
        plan.insert(("pm10".into(), "n1".into(), h), (60, v));
    }
    ws.write("points.lp", &lines(&plan));
    ws.run(&["run", "national", "--now", "2027-01-08T00:00:00Z"])
        .ok();
    assert_eq!(
        ws.query(
            "wh.duckdb",
            "SELECT day::VARCHAR, threshold, threshold_value::VARCHAR, instrument FROM daily_threshold_episodes ORDER BY ALL"
        ),
        [["2027-01-05", "information", "50.0", "national decree 2026/12"]]
    );
    assert_eq!(
        ws.query(
            "wh.duckdb",
            "SELECT instrument, basis, limit_value::VARCHAR, criterion::VARCHAR FROM annual_mean"
        ),
        [["(EU) 2024/2881 Annex I Table 2", "in_force", "40.0", "0.85"]]
    );
}

/// A pipeline made before the rules: its `daily_mean` table lacks
/// `valid_sum`. The model fails saying so (not DuckDB's "did you mean
/// valid"), the jobs' rows load, and after the table is dropped a
/// `backfill --model` rebuilds it and the annual means from the sink alone.
#[test]
fn a_table_made_before_the_rules_is_named_and_rebuilt() {
    let spec = LP.to_owned()
        + "  up:
    source: points
    sinks: [wh]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    jobs: [{name: no2}]
    models:
      - {name: daily_mean, grain: day}
      - {name: annual_mean, grain: year, depends_on: [daily_mean]}
";
    let ws = Ws::new(&spec);
    let d0 = hour("2026-11-20T00:00:00Z");
    let mut plan = Plan::new();
    for h in d0..d0 + 24 {
        plan.insert(("no2".into(), "u1".into(), h), (60, 30.0));
    }
    ws.write("points.lp", &lines(&plan));
    // The table as the stock daily_mean made it before this change.
    let exec = |sql: &str| {
        duckdb::Connection::open(ws.path("wh.duckdb"))
            .unwrap()
            .execute_batch(sql)
            .unwrap()
    };
    exec(
        "CREATE TABLE daily_mean (pollutant VARCHAR, station VARCHAR, day DATE, mean DECIMAL(38,18), \
         n_valid_hours BIGINT, hours_in_day BIGINT, valid BOOLEAN, unit VARCHAR)",
    );
    let out = ws
        .run(&["run", "up", "--now", "2026-11-21T00:10:00Z"])
        .exit(1);
    assert!(
        out.stderr.contains("error: model `daily_mean`: sink `wh` hours day [2026-11-20, 2026-11-21): table `daily_mean` has no column `valid_sum` that the SQL returns: add it, or drop the table to have it recreated (a model's: then `backfill --model` rebuilds it; README \"Rules\", upgrading)"),
        "{out:?}"
    );
    assert_eq!(
        ws.query("wh.duckdb", "SELECT count(*) FROM pollutant_hourly"),
        [["24"]]
    );
    exec("DROP TABLE daily_mean");
    ws.run(&[
        "backfill",
        "up",
        "--from",
        "2026-11-20T00:00:00Z",
        "--to",
        "2026-11-21T00:00:00Z",
        "--model",
        "annual_mean",
        "--now",
        "2026-11-21T00:10:00Z",
    ])
    .ok();
    assert_eq!(
        ws.query(
            "wh.duckdb",
            "SELECT mean::VARCHAR, n_valid_hours::VARCHAR, instrument FROM annual_mean ORDER BY ALL"
        ),
        [
            ["30.0", "24", "(EU) 2024/2881 Annex I Table 1"],
            ["30.0", "24", "2008/50/EC Annex XI"]
        ]
    );
}

/// A pipeline whose only sink is BigQuery (the emulator): the products
/// are computed from the hourly rows and the upstream products read back
/// from BigQuery, their lists, dates and exact sums stored in BigQuery's
/// types, and the episodes are those of the definition.
#[test]
fn the_new_products_work_from_bigquery_alone() {
    use crate::util::bigquery;
    let db = "law_bq";
    let plan = threshold_plan();
    write(db, &plan);
    let dataset = "law_products";
    // The threshold test's pipeline, into BigQuery alone, with annual means.
    let spec = spec(
        db,
        "2026-12-08T00:00:00Z",
        "2026-12-20T00:00:00Z",
        "{name: no2}, {name: so2}, {name: o3}, {name: pm10}, {name: pm25}",
        "",
        &format!(
            "{THRESHOLD_MODELS}      - {{name: annual_mean, grain: year, timezone: Europe/Berlin, depends_on: [daily_mean]}}\n"
        ),
    )
    .replace(
        "  wh: {type: duckdb, path: wh.duckdb}\n",
        &format!(
            "  bq:\n    type: bigquery\n    project: {}\n    dataset: {dataset}\n    location: EU\n    endpoint: ${{env:TEST_BQ_URL}}\n",
            crate::bigquery_sink::PROJECT
        ),
    )
    .replace("sinks: [wh]", "sinks: [bq]");
    let ws = Ws::new(&spec);
    ws.run_env(
        &["run", "aq", "--now", "2026-12-21T00:00:00Z"],
        &[
            ("TEST_INFLUX_URL", &influx().url),
            ("TEST_BQ_URL", &bigquery().url),
        ],
    )
    .ok();
    let q = |sql: &str| {
        bigquery().query(
            crate::bigquery_sink::PROJECT,
            &sql.replace(
                "$t",
                &format!("{}.{dataset}", crate::bigquery_sink::PROJECT),
            ),
        )
    };
    let ids = |t: &Table| -> Vec<Vec<String>> {
        let mut v: Vec<Vec<String>> = t
            .values()
            .map(|r| match &r[2] {
                V::S(Some(s)) => vec![s.clone()],
                _ => unreachable!(),
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        q("SELECT episode FROM `$t.threshold_episodes` ORDER BY episode"),
        ids(&hourly_episodes(&plan))
    );
    assert_eq!(
        q("SELECT episode FROM `$t.daily_threshold_episodes` ORDER BY episode"),
        ids(&daily_episodes(&plan))
    );
    // Each episode's values (a list, which the sink stores as its text):
    // three for a three-day alert; its first day a DATE.
    assert_eq!(
        q("SELECT `values`, CAST(first_day AS STRING), averaging FROM `$t.daily_threshold_episodes` \
           WHERE episode = 'pm25|s2|alert|2026-12-13'"),
        [["[50.25, 50.25, 50.25]", "2026-12-13", "1 day"]]
    );
    // The year's NO2 mean at s1 from the day rows read back: the hours of
    // the plan, 2026-12-08 to 2026-12-20.
    let vals: Vec<f64> = valid(&plan, 45)[&("no2".to_owned(), "s1".to_owned())]
        .values()
        .copied()
        .collect();
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    let got = q(
        "SELECT mean, n_valid_hours FROM `$t.annual_mean` \
                 WHERE pollutant = 'no2' AND station = 's1' AND instrument = '2008/50/EC Annex XI'",
    );
    assert_eq!(got[0][1], vals.len().to_string());
    let m: f64 = got[0][0].parse().unwrap();
    assert!((m - mean).abs() <= 1e-9 * mean, "{m} against {mean}");
}
