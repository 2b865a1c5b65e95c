//! The guarantees under what users do: a template edited to label rows
//! differently, a backfill over hours whose raw data is gone, and every
//! request to BigQuery held to the real service's documented limits (which
//! the emulator does not enforce). Each provokes the failure against the
//! real InfluxDB, the BigQuery emulator and real DuckDB files, and checks
//! what is left in the sinks.

use crate::bigquery_sink::{bq_summary, duck_summary, run, spec, PROJECT};
use crate::util::{bigquery, influx, Act, Recorder, Seen, Ws};

const NOW: &str = "2026-11-21T00:10:00Z";
const DAY: [&str; 4] = [
    "--from",
    "2026-11-20T00:00:00Z",
    "--to",
    "2026-11-21T00:00:00Z",
];

fn backfill(ws: &Ws, extra: &[&str]) -> crate::util::Out {
    let mut args = vec!["backfill", "hourly"];
    args.extend_from_slice(&DAY);
    args.extend_from_slice(&["--now", NOW]);
    args.extend_from_slice(extra);
    run(ws, &args, &[])
}

fn edit_template(ws: &Ws, from: &str, to: &str) {
    let path = ws.path("sql/hourly_mean.sql");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

/// A template that labels `pollutant` otherwise, or shifts `hour_start` out
/// of the batch, fails the batch before any sink is written; on today's
/// main each rerun added a second copy of every row.
#[test]
fn a_template_breaking_the_result_contract_writes_no_sink() {
    let db = "g_contract";
    let ds = "g_contract";
    crate::engine::seed(db);
    let ws = Ws::new(&spec(db, ds, "{type: local, path: state}", ""));
    backfill(&ws, &[]).ok();
    let (duck, bq) = (duck_summary(&ws), bq_summary(ds));
    assert_eq!(duck[0][1], duck[0][2], "one row per (station, hour)");

    edit_template(
        &ws,
        "{{ job.name | sqlstr }} AS pollutant",
        "upper({{ job.name | sqlstr }}) AS pollutant",
    );
    for _ in 0..2 {
        let out = backfill(&ws, &["--job", "co"]).exit(1);
        assert!(
            out.stderr.contains(
                "error: job `co`: template `hourly_mean.sql` of job `co` broke the result contract: column `pollutant`: every row must have 'co' (the job's name); first offending row: {"
            ) && out.stderr.contains("CO") && out.stderr.contains("; no sink was written"),
            "{out:?}"
        );
    }
    assert_eq!(duck_summary(&ws), duck);
    assert_eq!(bq_summary(ds), bq);

    edit_template(
        &ws,
        "upper({{ job.name | sqlstr }}) AS pollutant",
        "{{ job.name | sqlstr }} AS pollutant",
    );
    edit_template(
        &ws,
        "{{ m.hour_of(\"time\") }} AS hour_start",
        // A label shifted by an hour (no ICU here: epoch arithmetic).
        "to_timestamp(epoch_us(time) // 3600000000 * 3600 + 3600) AS hour_start",
    );
    let out = backfill(&ws, &["--job", "no2"]).exit(1);
    assert!(
        out.stderr.contains(
            "template `hourly_mean.sql` of job `no2` broke the result contract: column `hour_start`: every row must be in the batch [2026-11-20T00:00:00Z, 2026-11-20T12:00:00Z); first offending row: {"
        ),
        "{out:?}"
    );
    assert_eq!(duck_summary(&ws), duck);
    assert_eq!(bq_summary(ds), bq);
}

fn rows_between(ws: &Ws, ds: &str, from: &str, to: &str) -> (String, String) {
    let duck = ws.query(
        "wh.duckdb",
        &format!("SELECT count(*) FROM pollutant_hourly WHERE hour_start >= '{from}'::TIMESTAMPTZ AND hour_start < '{to}'::TIMESTAMPTZ"),
    );
    let bq = bigquery().query(
        PROJECT,
        &format!("SELECT COUNT(*) FROM `{PROJECT}.{ds}.pollutant_hourly` WHERE hour_start >= TIMESTAMP '{from}' AND hour_start < TIMESTAMP '{to}'"),
    );
    (duck[0][0].clone(), bq[0][0].clone())
}

/// Raw minutes deleted at the source (as a retention policy would): a
/// backfill keeps the sinks' rows for those hours, says so, and marks them
/// in `status`; `--replace-empty` removes them. On today's main the
/// backfill emptied those hours and said `ok`.
#[test]
fn hours_empty_at_the_source_keep_what_the_sinks_hold() {
    let db = "g_empty";
    let ds = "g_empty";
    crate::engine::seed(db);
    let ws = Ws::new(&spec(db, ds, "{type: local, path: state}", ""));
    assert_eq!(backfill(&ws, &[]).code, 0);
    let (duck, bq) = (duck_summary(&ws), bq_summary(ds));
    let (from, to) = ("2026-11-20T06:00:00Z", "2026-11-20T12:00:00Z");
    let loaded = rows_between(&ws, ds, from, to);
    assert_ne!(loaded.0, "0");
    assert_eq!(loaded.0, loaded.1);

    influx().q_db(
        db,
        &format!("DELETE FROM air_quality WHERE time >= '{from}' AND time < '{to}'"),
    );
    let out = backfill(&ws, &[]).ok();
    for job in ["co", "no2"] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(job))
            .unwrap();
        assert!(
            line.contains("ok")
                && line.ends_with("; 6 hours empty at the source: kept what the sinks hold"),
            "{line}"
        );
    }
    assert_eq!(duck_summary(&ws), duck);
    assert_eq!(bq_summary(ds), bq);
    assert_eq!(rows_between(&ws, ds, from, to), loaded);

    let status = run(&ws, &["status", "hourly", "--now", NOW], &[]).ok();
    assert_eq!(
        status
            .stdout
            .matches("    empty at the source: 6 hours, kept as the sinks held them: 2026-11-20T06:00:00Z..2026-11-20T11:00:00Z\n")
            .count(),
        2,
        "{status:?}"
    );

    let out = backfill(&ws, &["--replace-empty"]).ok();
    assert!(!out.stdout.contains("empty at the source"), "{out:?}");
    assert_eq!(rows_between(&ws, ds, from, to), ("0".into(), "0".into()));
    let status = run(&ws, &["status", "hourly", "--now", NOW], &[]);
    assert!(!status.stdout.contains("empty at the source"), "{status:?}");
}

/// The emulator's root (without `/bigquery/v2`).
pub(crate) fn emulator_root() -> String {
    bigquery().url.trim_end_matches("/bigquery/v2").to_owned()
}

fn id_ok(s: &str, extra: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(c))
}

/// Every documented BigQuery limit on one recorded request; the list of
/// what was broken (empty when it keeps them all).
pub(crate) fn broken_limits(s: &Seen) -> Vec<String> {
    let mut bad = Vec::new();
    let path = s.path.split('?').next().unwrap();
    let segs: Vec<&str> = path.split('/').collect();
    for (i, seg) in segs.iter().enumerate() {
        let next = segs.get(i + 1).copied().unwrap_or("");
        match *seg {
            "datasets" if !next.is_empty() && !id_ok(next, "", 1024) => {
                bad.push(format!("dataset id `{next}`"))
            }
            "tables" if !next.is_empty() && !id_ok(next, "", 1024) => {
                bad.push(format!("table id `{next}`"))
            }
            "queries" if !next.is_empty() && !id_ok(next, "-", 1024) => {
                bad.push(format!("job id `{next}`"))
            }
            _ => {}
        }
    }
    let v = s.json();
    for ptr in ["/datasetReference/datasetId", "/tableReference/datasetId"] {
        if let Some(d) = v.pointer(ptr).and_then(|d| d.as_str()) {
            if !id_ok(d, "", 1024) {
                bad.push(format!("dataset id `{d}` in the body"));
            }
        }
    }
    if let Some(t) = v
        .pointer("/tableReference/tableId")
        .and_then(|t| t.as_str())
    {
        if !id_ok(t, "", 1024) {
            bad.push(format!("table id `{t}` in the body"));
        }
    }
    if s.method == "POST" && path.ends_with("/queries") {
        match v["requestId"].as_str() {
            Some(r) if r.len() <= 36 && r.is_ascii() => {}
            other => bad.push(format!("requestId {other:?}")),
        }
    }
    if path.ends_with("/insertAll") {
        let rows = v["rows"].as_array().unwrap();
        if rows.len() > 50_000 || rows.len() > 500 {
            bad.push(format!("{} rows in one insertAll", rows.len()));
        }
        if s.body.len() > 10 * 1024 * 1024 {
            bad.push(format!("{} bytes in one insertAll", s.body.len()));
        }
        for r in rows {
            match r["insertId"].as_str() {
                Some(id) if id.len() <= 128 => {}
                other => bad.push(format!("insertId {other:?}")),
            }
        }
    }
    bad
}

fn merges(seen: &[Seen], job: &str) -> Vec<Seen> {
    seen.iter()
        .filter(|s| {
            let q = s.json()["query"].as_str().unwrap_or("").to_owned();
            q.starts_with("MERGE") && q.contains(&format!("T.`pollutant` = '{job}'"))
        })
        .cloned()
        .collect()
}

/// Every request the sink sends over a multi-batch load, a retried MERGE
/// and a failed one keeps BigQuery's documented limits; a retry repeats its
/// requestId, distinct loads never share one. On today's main every
/// requestId was 64-69 characters.
#[test]
fn every_bigquery_request_keeps_the_documented_limits() {
    let db = "g_limits";
    let ds = "g_limits";
    crate::engine::seed(db);
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let retried = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (f, r) = (failing.clone(), retried.clone());
    let rec = Recorder::start(
        &emulator_root(),
        Box::new(move |s: &Seen| {
            use std::sync::atomic::Ordering::SeqCst;
            let q = s.json()["query"].as_str().unwrap_or("").to_owned();
            if !q.starts_with("MERGE") {
                return Act::Forward;
            }
            // The first MERGE of `co` answers 503 once: the sink retries it.
            if q.contains("T.`pollutant` = 'co'") && !r.swap(true, SeqCst) {
                return Act::Answer(503, r#"{"error":{"code":503,"message":"backend error","errors":[{"reason":"backendError"}]}}"#.into());
            }
            // `no2`'s last batch is refused while `failing` holds.
            if f.load(SeqCst)
                && q.contains("T.`pollutant` = 'no2'")
                && q.contains("T.`hour_start` >= TIMESTAMP '2026-11-20T18:00:00Z'")
            {
                return Act::Answer(400, r#"{"error":{"code":400,"message":"injected refusal","errors":[{"reason":"invalid"}]}}"#.into());
            }
            Act::Forward
        }),
    );
    let ws = Ws::new(
        &spec(db, ds, "{type: local, path: state}", "")
            .replace("batch_hours: 12", "batch_hours: 6"),
    );
    let bq_url = format!("{}/bigquery/v2", rec.url);
    let args = ["run", "hourly", "--now", NOW];
    let out = run(&ws, &args, &[("TEST_BQ_URL", &bq_url)]).exit(1);
    assert!(
        out.stderr.contains("error: sink `bq` is 6 hours behind: sink `bq` hours [2026-11-20T18:00:00Z, 2026-11-21T00:00:00Z): MERGE into `duckhour-it.g_limits.pollutant_hourly`: HTTP 400 invalid: injected refusal; the other sinks took every hour"),
        "{out:?}"
    );
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    // After its backoff (5 minutes), BigQuery gets what it lacks, read
    // back from the DuckDB file.
    let args = ["run", "hourly", "--now", "2026-11-21T00:15:00Z"];
    run(&ws, &args, &[("TEST_BQ_URL", &bq_url)]).ok();

    let seen = rec.seen();
    let broken: Vec<(String, Vec<String>)> = seen
        .iter()
        .map(|s| (s.path.clone(), broken_limits(s)))
        .filter(|(_, b)| !b.is_empty())
        .collect();
    assert!(broken.is_empty(), "{broken:#?}");
    assert!(seen.iter().any(|s| s.path.ends_with("/insertAll")));

    // co: 4 batches, the first MERGE sent twice with one requestId.
    let co = merges(&seen, "co");
    assert_eq!(co.len(), 5, "{co:#?}");
    assert_eq!((co[0].status, co[1].status), (503, 200));
    assert_eq!(co[0].json()["requestId"], co[1].json()["requestId"]);
    assert_eq!(co[0].json()["query"], co[1].json()["query"]);
    // no2: 3 batches, the refused one, and its redo by the second run (a new requestId).
    let no2 = merges(&seen, "no2");
    assert_eq!(
        no2.iter().map(|s| s.status).collect::<Vec<_>>(),
        [200, 200, 200, 400, 200]
    );
    let mut ids: Vec<String> = co[1..]
        .iter()
        .chain(&no2)
        .map(|s| s.json()["requestId"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.iter().all(|i| uuid_like(i)), "{ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 9, "distinct loads never share a requestId");

    // And the rows are exact: BigQuery holds what DuckDB holds.
    assert_eq!(bq_summary(ds), duck_summary(&ws));
}

/// BigQuery's documented answer to DML that met another writer's
/// transaction on the table (its "DML statement conflicts" docs): 400
/// `invalidQuery`, nothing applied.
fn concurrent_update(message: &str) -> Act {
    let body = serde_json::json!({"error": {"code": 400, "message": message, "errors": [{"message": message, "domain": "global", "reason": "invalidQuery"}], "status": "INVALID_ARGUMENT"}});
    Act::Answer(400, body.to_string())
}

/// MERGEs answered with BigQuery's two concurrent-update messages (co's
/// first two, no2's first) are sent again, each time with a new requestId
/// (BigQuery would answer a repeated one with the failed job), the
/// target's creation answered once with the emulator's commit conflict is
/// sent again as it was, and the run completes exact, saying how many
/// writes were sent again. On main before this, the run failed with the
/// first conflict.
#[test]
fn merges_that_meet_a_concurrent_update_are_sent_again() {
    let db = "g_conflict";
    let ds = "g_conflict";
    crate::engine::seed(db);
    let refused = std::sync::Arc::new(std::sync::Mutex::new((0, 0, 0)));
    let r = refused.clone();
    let table = format!("{PROJECT}:{ds}.pollutant_hourly");
    let rec = Recorder::start(
        &emulator_root(),
        Box::new(move |s: &Seen| {
            let mut n = r.lock().unwrap();
            // The target's creation meets the emulator's commit conflict
            // once (it has no requestId: sent again as it is).
            let creates_target = s.method == "POST"
                && s.path.ends_with("/tables")
                && s.json()["tableReference"]["tableId"] == "pollutant_hourly";
            if creates_target && n.2 == 0 {
                n.2 += 1;
                return concurrent_update(
                    "Failed to commit: Failed to commit DuckLake transaction.",
                );
            }
            let q = s.json()["query"].as_str().unwrap_or("").to_owned();
            if !q.starts_with("MERGE") {
                return Act::Forward;
            }
            if q.contains("T.`pollutant` = 'co'") && n.0 < 2 {
                n.0 += 1;
                return concurrent_update(&format!(
                    "Could not serialize access to table {table} due to concurrent update"
                ));
            }
            if q.contains("T.`pollutant` = 'no2'") && n.1 < 1 {
                n.1 += 1;
                return concurrent_update(&format!(
                    "Transaction is aborted due to concurrent update against table {table}. Transaction ID: 66b4a1e2-0000-2a1d-8e7c-3c286d4b2a6e"
                ));
            }
            Act::Forward
        }),
    );
    let ws = Ws::new(&spec(db, ds, "{type: local, path: state}", ""));
    let bq_url = format!("{}/bigquery/v2", rec.url);
    let out = run(
        &ws,
        &["run", "hourly", "--now", NOW],
        &[("TEST_BQ_URL", &bq_url)],
    )
    .ok();
    assert_eq!(*refused.lock().unwrap(), (2, 1, 1));

    // Each job's two batches land once; every refused MERGE (ours, or a
    // real conflict between the two jobs in the emulator) was sent again,
    // the same statement under a new requestId, and is counted.
    let seen = rec.seen();
    let mut resent = 0;
    for job in ["co", "no2"] {
        let m = merges(&seen, job);
        let statuses: Vec<u16> = m.iter().map(|s| s.status).collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            2,
            "{job}: {statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| [200, 400].contains(s)),
            "{job}: {statuses:?}"
        );
        for (i, s) in m.iter().enumerate().filter(|(_, s)| s.status == 400) {
            let next = &m[i + 1];
            assert_eq!(next.json()["query"], s.json()["query"], "{job}");
            assert_ne!(next.json()["requestId"], s.json()["requestId"], "{job}");
            assert!(uuid_like(next.json()["requestId"].as_str().unwrap()));
            resent += 1;
        }
    }
    assert!(resent >= 3, "{resent}");
    // Every 400 was a conflict (ours, or the emulator's on another call,
    // sent again as it was), and each is counted.
    let all = seen.iter().filter(|s| s.status == 400).count();
    assert!(all > resent, "{all} {resent}");
    assert!(
        out.stdout.contains(&format!(
            "writes sent again after conflicts with concurrent writers: {all} to sink `bq`"
        )),
        "{out:?}"
    );
    assert_eq!(bq_summary(ds), duck_summary(&ws));
    assert_eq!(bq_summary(ds).len(), 2);
}

pub(crate) fn uuid_like(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

/// Markers in every credential position users use: a MotherDuck token
/// inside the connection string (as MotherDuck documents it), a BigQuery
/// `credentials` value that is not JSON (from a secret), and an InfluxDB
/// token from the environment. Every command, at every log level, in text
/// and JSON, then every file left behind (state, DuckDB files, the DuckDB
/// home) is searched for them. On today's main the path token was printed
/// in the error and `status`, and stored in `runs.jsonl`.
#[test]
fn no_credential_appears_in_output_logs_state_or_files() {
    let db = "g_secrets";
    crate::engine::seed(db);
    let spec = format!(
        "state: {{type: local, path: state}}
sources:
  influx: {{type: influxdb, url: '${{env:TEST_INFLUX_URL}}', database: {db}, token: '${{env:INFLUX_TOKEN_X}}'}}
sinks:
  wh: {{type: duckdb, path: wh.duckdb}}
  md: {{type: duckdb, path: 'md:aq?motherduck_token=SECRET-MARKER-PATH&saas_mode=true'}}
  bq:
    type: bigquery
    project: {PROJECT}
    dataset: g_secrets
    endpoint: ${{env:TEST_BQ_URL}}
    credentials: ${{secret:bq-key}}
pipelines:
  local:
    source: influx
    sinks: [wh]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    batch_hours: 6
    jobs: [{{name: co}}]
  mother:
    source: influx
    sinks: [md]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    jobs: [{{name: co}}]
  big:
    source: influx
    sinks: [bq]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    jobs: [{{name: co}}]
"
    );
    let ws = Ws::new(&spec);
    let markers = [
        ("INFLUX_TOKEN_X", "SECRET-MARKER-INFLUX"),
        ("BQ_KEY", "U0VDUkVULU1BUktFUi1CUQ=="),
    ];
    let mut env: Vec<(&str, &str)> = markers.to_vec();
    let bq_url = bigquery().url.clone();
    env.push(("TEST_BQ_URL", &bq_url));
    let mut printed = String::new();
    let mut outs = Vec::new();
    for p in ["local", "mother", "big"] {
        for args in [
            vec!["validate"],
            vec!["list"],
            vec!["dry-run", p, "--now", NOW],
            vec!["-vvv", "run", p, "--now", NOW],
            vec![
                "-vvv",
                "--log-format",
                "json",
                "backfill",
                p,
                "--from",
                "2026-11-20T00:00:00Z",
                "--to",
                "2026-11-20T06:00:00Z",
                "--now",
                NOW,
            ],
            vec!["status", p, "--now", NOW],
        ] {
            let out = run(&ws, &args, &env);
            printed.push_str(&format!("{out:?}"));
            outs.push((args.join(" "), out));
        }
    }
    // With every crate's logs (the HTTP stack's too).
    let out = run(
        &ws,
        &["run", "local", "--now", "2026-11-21T06:10:00Z"],
        &[
            ("DUCKHOUR_LOG", "trace"),
            ("INFLUX_TOKEN_X", "SECRET-MARKER-INFLUX"),
        ],
    );
    printed.push_str(&format!("{out:?}"));
    let code = |cmd: &str| outs.iter().find(|(a, _)| a == cmd).unwrap().1.code;
    assert_eq!(code(&format!("-vvv run local --now {NOW}")), 0, "{printed}");
    assert_eq!(
        code(&format!("-vvv run mother --now {NOW}")),
        1,
        "{printed}"
    );
    assert_eq!(code(&format!("-vvv run big --now {NOW}")), 1, "{printed}");
    assert!(
        printed.contains("sink `bq`: `credentials`: cannot read the value of `${secret:bq-key}` (not JSON, so read as a file path)"),
        "{printed}"
    );
    assert!(
        printed.contains(
            "sink: md (motherduck md:aq?motherduck_token=**REDACTED**&saas_mode=true schema main)"
        ),
        "{printed}"
    );
    // An endpoint from the environment is shown as written, not `<invalid url>`.
    assert!(
        printed.contains(
            "data: bq (bigquery duckhour-it.g_secrets at ${env:TEST_BQ_URL}), table pollutant_hourly"
        ),
        "{printed}"
    );
    // Everything but the spec itself, which holds the path as the user wrote it.
    for f in crate::util::files_under(ws.dir.path()) {
        if f == ws.path("pipelines.yaml") {
            continue;
        }
        if let Ok(bytes) = std::fs::read(&f) {
            printed.push_str(&format!("\n--- {}\n", f.display()));
            printed.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    assert!(printed.contains("runs.jsonl"), "state was written");
    for m in [
        "SECRET-MARKER-PATH",
        "SECRET-MARKER-INFLUX",
        "U0VDUkVULU1BUktFUi1CUQ==",
    ] {
        assert!(!printed.contains(m), "{m} leaked:\n{printed}");
    }
}

/// A template that tries to read the process's environment (where tokens
/// given by `${env:}` live) is refused by the confined database, and the
/// error names the template's SQL, not a value. On today's main it read it.
#[test]
fn a_template_cannot_read_the_process_environment() {
    let db = "g_environ";
    crate::engine::seed(db);
    let spec = format!(
        "state: {{type: local, path: state}}
sources:
  influx: {{type: influxdb, url: '${{env:TEST_INFLUX_URL}}', database: {db}, token: '${{env:INFLUX_TOKEN_X}}'}}
sinks:
  wh: {{type: duckdb, path: out/wh.duckdb}}
pipelines:
  hourly:
    source: influx
    sinks: [wh]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    jobs: [{{name: co}}]
"
    );
    let ws = Ws::new(&spec);
    edit_template(
        &ws,
        "    {{ source | sqlstr }} AS source,",
        "    (SELECT content FROM read_text('/proc/self/environ')) AS source,",
    );
    let env = [("INFLUX_TOKEN_X", "SECRET-MARKER-ENVIRON")];
    let out = run(&ws, &["run", "hourly", "--now", NOW], &env).exit(1);
    assert!(
        out.stderr.contains("error: job `co`: the SQL of job `co` failed: Permission Error: Cannot access file \"/proc/self/environ\" - file system operations are disabled by configuration"),
        "{out:?}"
    );
    // The sink file itself is still loaded normally.
    edit_template(
        &ws,
        "    (SELECT content FROM read_text('/proc/self/environ')) AS source,",
        "    {{ source | sqlstr }} AS source,",
    );
    run(&ws, &["run", "hourly", "--now", NOW], &env).ok();
    assert_eq!(
        ws.query("out/wh.duckdb", "SELECT count(*) FROM pollutant_hourly"),
        vec![vec!["71".to_owned()]]
    );
    let files: String = crate::util::files_under(ws.dir.path())
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect();
    assert!(!files.contains("SECRET-MARKER-ENVIRON"));
}
