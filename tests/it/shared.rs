//! Shared extraction: the jobs of a run that read one measurement over the
//! same hours send one InfluxDB query per batch between them, and load
//! exactly what each job's own query loads, with gaps where some fields are
//! missing for some minutes and stations.

use crate::util::{influx, Act, Recorder, Seen, Ws};

const DB: &str = "shared_eq";

/// Six hours of three stations: every field has its own gaps (a missing
/// minute here and there, a field missing for a whole hour of a station,
/// a station that never has `o3`, a minute with no field at all, which
/// InfluxDB cannot even store), so each job's rows differ.
fn seed() {
    let ix = influx();
    ix.create_db(DB);
    let t0 = 1_795_219_200i64; // 2026-11-21T00:00:00Z
    let mut lines = String::new();
    for s in 0..3 {
        for m in 0..360i64 {
            let hour = m / 60;
            let mut fields = Vec::new();
            // `co`: every 7th minute missing, and station 1's hour 2.
            if m % 7 != 3 && !(s == 1 && hour == 2) {
                fields.push(format!("co={}", 0.3 + (m % 11) as f64 / 100.0 + s as f64));
            }
            // `no2`: only in the first 50 minutes of each hour at station 2.
            if s != 2 || m % 60 < 50 {
                fields.push(format!("no2={}", 20 + (m * 7 + s) % 13));
            }
            // `o3`: never at station 0; every other minute elsewhere.
            if s != 0 && m % 2 == 0 {
                fields.push(format!("o3={}.5", 30 + m % 5));
            }
            if fields.is_empty() {
                continue;
            }
            lines.push_str(&format!(
                "air,station=s{s} {} {}\n",
                fields.join(","),
                (t0 + m * 60) * 1_000_000_000
            ));
        }
    }
    ix.write(DB, &lines);
}

fn spec(url: &str, batch_hours: u32) -> String {
    format!(
        "state: {{type: local, path: state}}
sources:
  influx: {{type: influxdb, url: '{url}', database: {DB}}}
sinks:
  wh: {{type: duckdb, path: wh.duckdb}}
pipelines:
  air:
    source: influx
    sinks: [wh]
    measurement: air
    tags: [station]
    start: 2026-11-21T00:00:00Z
    batch_hours: {batch_hours}
    jobs:
      - {{name: co}}
      - {{name: no2}}
      - {{name: o3}}
      - {{name: cob, field: co}}
"
    )
}

/// The InfluxQL statements a recorder saw.
fn statements(seen: &[Seen]) -> Vec<String> {
    asked(seen).into_iter().map(|(q, _)| q).collect()
}

/// The InfluxQL statements a recorder saw, each with the type it was asked in.
fn asked(seen: &[Seen]) -> Vec<(String, String)> {
    seen.iter()
        .filter(|s| s.path.starts_with("/query"))
        .filter_map(|s| {
            let body = String::from_utf8_lossy(&s.body);
            let url = reqwest::Url::parse(&format!("http://x/?{body}")).unwrap();
            let q = url.query_pairs().find(|(k, _)| k == "q")?.1.into_owned();
            q.starts_with("SELECT").then(|| (q, s.accept.clone()))
        })
        .collect()
}

/// The six seeded hours, at a fixed "now".
const RANGE: [&str; 6] = [
    "--from",
    "2026-11-21T00:00:00Z",
    "--to",
    "2026-11-21T06:00:00Z",
    "--now",
    "2026-11-22T00:00:00Z",
];

const COUNT: &str = "SELECT count(\"co\"), count(\"no2\"), count(\"o3\") FROM \"shared_eq\"..\"air\" WHERE time >= '2026-11-21T00:00:00Z' AND time < '2026-11-21T01:00:00Z'";

const MSGPACK: &str = "application/x-msgpack";

/// The shared query of hours `from`..`to` of 2026-11-21, as InfluxDB 1.x
/// is asked (MessagePack) and as another server is (CSV).
fn grouped(from: &str, to: &str) -> String {
    format!("SELECT \"co\"::field, \"no2\"::field, \"o3\"::field FROM \"shared_eq\"..\"air\" WHERE time >= '2026-11-21T{from}:00:00Z' AND time < '2026-11-21T{to}:00:00Z' GROUP BY \"station\"")
}

fn tagged(from: &str, to: &str) -> String {
    format!("SELECT \"co\"::field, \"no2\"::field, \"o3\"::field, \"station\"::tag FROM \"shared_eq\"..\"air\" WHERE time >= '2026-11-21T{from}:00:00Z' AND time < '2026-11-21T{to}:00:00Z'")
}

const ROWS: &str = "SELECT pollutant, station, hour_start::VARCHAR, avg, min, max, n_minutes, \
                    coverage, valid FROM pollutant_hourly ORDER BY ALL";

#[test]
fn jobs_sharing_a_query_load_exactly_what_their_own_queries_load() {
    seed();
    let ix = influx();
    let rec = Recorder::start(&ix.url, Box::new(|_| Act::Forward));
    let range = RANGE;

    // Together: dry-run says who shares, and the run sends one query per batch.
    let together = Ws::new(&spec(&rec.url, 4));
    let dry = together
        .run(&[&["dry-run", "air"][..], &range].concat())
        .ok();
    assert!(
        dry.stdout
            .contains("source queries of batch 1 (1, one for jobs `co`, `no2`, `o3`, `cob`):"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        dry.stdout
            .matches("source queries: shared with job `co` (above)")
            .count(),
        3,
        "{}",
        dry.stdout
    );
    let before = rec.seen().len();
    together
        .run(&[&["backfill", "air"][..], &range].concat())
        .ok();
    let sent = asked(&rec.seen()[before..]);
    // A count of the first hour sizes the batches (see `plan::cut`); a run
    // of 3 hours or less (an hourly run) goes without. InfluxDB 1.x is
    // asked in MessagePack, grouped by the tags.
    assert_eq!(
        sent,
        [
            (COUNT.to_owned(), "application/json".to_owned()),
            (grouped("00", "04"), MSGPACK.to_owned()),
            (grouped("04", "06"), MSGPACK.to_owned()),
        ]
    );

    // Apart: each job alone, with its own query.
    let apart = Ws::new(&spec(&rec.url, 4));
    let before = rec.seen().len();
    for job in ["co", "no2", "o3", "cob"] {
        apart
            .run(&[&["backfill", "air", "--job", job][..], &range].concat())
            .ok();
    }
    let sent = statements(&rec.seen()[before..]);
    let (counts, selects): (Vec<&String>, Vec<&String>) =
        sent.iter().partition(|q| q.starts_with("SELECT count("));
    assert_eq!((counts.len(), selects.len()), (4, 8), "{sent:#?}");
    assert!(selects.iter().all(|q| q.matches("::field").count() == 1));

    let shared = together.query("wh.duckdb", ROWS);
    let own = apart.query("wh.duckdb", ROWS);
    assert_eq!(shared, own);
    // The gaps are there: what each job holds differs.
    let per_job = together.query(
        "wh.duckdb",
        "SELECT pollutant, count(*), sum(n_minutes) FROM pollutant_hourly GROUP BY 1 ORDER BY 1",
    );
    // co: 3 stations x 6 hours, less station 1's hour 2; minutes m % 7 != 3.
    let co_minutes: i64 = (0..3)
        .map(|s| {
            (0..360)
                .filter(|m| m % 7 != 3 && !(s == 1 && m / 60 == 2))
                .count() as i64
        })
        .sum();
    assert_eq!(
        per_job,
        [
            vec!["co".to_owned(), "17".to_owned(), co_minutes.to_string()],
            vec!["cob".to_owned(), "17".to_owned(), co_minutes.to_string()],
            vec![
                "no2".to_owned(),
                "18".to_owned(),
                (360 * 2 + 300).to_string()
            ],
            vec!["o3".to_owned(), "12".to_owned(), (180 * 2).to_string()],
        ]
    );
}

/// One job of a shared query fails at its transform in the second batch:
/// the others load every batch and move their checkpoints; the failing job
/// keeps its first batch (one row an hour in its own table: its template
/// drops the station) and its checkpoint stays there.
#[test]
fn a_job_failing_in_a_shared_query_moves_no_other_checkpoint() {
    seed();
    let ix = influx();
    let spec = spec(&ix.url, 3).replace(
        "      - {name: cob, field: co}\n",
        "      - {name: bad, field: o3, template: bad.sql, table: bad_hourly}\n",
    );
    let ws = Ws::new(&spec);
    // Fails (DuckDB's `error()`) from 03:00 on.
    ws.write(
        "sql/bad.sql",
        "SELECT 'bad' AS pollutant, to_timestamp(epoch_us(time) // 3600000000 * 3600) AS hour_start, \
         CASE WHEN max(epoch_us(time)) < 1795230000000000 THEN avg(value) \
         ELSE error('broken template') END AS avg \
         FROM {{ staging }} GROUP BY ALL",
    );
    let out = ws.run(&[&["backfill", "air"][..], &RANGE].concat());
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("broken template"), "{}", out.stderr);
    let cp = |job: &str| {
        std::fs::read_to_string(ws.path(&format!("state/air/{job}/checkpoint.json"))).unwrap()
    };
    for job in ["co", "no2", "o3"] {
        assert!(
            cp(job).contains("2026-11-21T05:00:00Z"),
            "{job}: {}",
            cp(job)
        );
    }
    assert!(cp("bad").contains("2026-11-21T02:00:00Z"), "{}", cp("bad"));
    let per_job =
        "SELECT pollutant, count(*), max(hour_start)::VARCHAR FROM {} GROUP BY 1 ORDER BY 1";
    assert_eq!(
        ws.query("wh.duckdb", &per_job.replace("{}", "pollutant_hourly")),
        [
            ["co", "17", "2026-11-21 05:00:00+00"],
            ["no2", "18", "2026-11-21 05:00:00+00"],
            ["o3", "12", "2026-11-21 05:00:00+00"],
        ]
    );
    assert_eq!(
        ws.query("wh.duckdb", &per_job.replace("{}", "bad_hourly")),
        [["bad", "3", "2026-11-21 02:00:00+00"]]
    );
}

/// A server that does not answer MessagePack (the v1 API of InfluxDB 3
/// answers JSON or CSV only) is asked again in CSV, with the tags as
/// columns, and so is every later query of the run; the rows are the same.
/// The server here is InfluxDB 1.x behind a proxy that asks it for JSON
/// where duckhour asked for MessagePack.
#[test]
fn a_server_without_messagepack_is_asked_in_csv_for_the_same_rows() {
    seed();
    let ix = influx();
    let rec = Recorder::start(
        &ix.url,
        Box::new(|s| {
            if s.accept == MSGPACK {
                Act::ForwardAccepting("application/json".into())
            } else {
                Act::Forward
            }
        }),
    );
    let csv = Ws::new(&spec(&rec.url, 4));
    csv.run(&[&["backfill", "air"][..], &RANGE].concat()).ok();
    let csv_type = "application/csv".to_owned();
    assert_eq!(
        asked(&rec.seen()),
        [
            (COUNT.to_owned(), "application/json".to_owned()),
            (grouped("00", "04"), MSGPACK.to_owned()),
            (tagged("00", "04"), csv_type.clone()),
            (tagged("04", "06"), csv_type),
        ]
    );
    let direct = Ws::new(&spec(&ix.url, 4));
    direct
        .run(&[&["backfill", "air"][..], &RANGE].concat())
        .ok();
    let rows = csv.query("wh.duckdb", ROWS);
    assert_eq!(rows.len(), 17 * 2 + 18 + 12);
    assert_eq!(rows, direct.query("wh.duckdb", ROWS));
}
