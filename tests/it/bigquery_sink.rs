//! The BigQuery sink against the local-bigquery emulator (started by
//! `scripts/bigquery`), beside a DuckDB sink, from a real InfluxDB: a first
//! load, a rerun, late and vanished data, BigQuery failing while DuckDB
//! succeeds and the recovery, and service-account credentials from a
//! Prefect `gcp-credentials` block or an environment variable.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use base64::Engine;

use crate::util::{bigquery, influx, prefect, Ws};

pub(crate) const PROJECT: &str = "duckhour-it";

pub(crate) fn spec(db: &str, dataset: &str, state: &str, bq_extra: &str) -> String {
    format!(
        "state: {state}
sources:
  influx:
    type: influxdb
    url: ${{env:TEST_INFLUX_URL}}
    database: {db}
sinks:
  wh:
    type: duckdb
    path: wh.duckdb
  bq:
    type: bigquery
    project: {PROJECT}
    dataset: {dataset}
    location: EU
    endpoint: ${{env:TEST_BQ_URL}}
{bq_extra}
pipelines:
  hourly:
    source: influx
    sinks: [wh, bq]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    batch_hours: 12
    jobs:
      - name: co
      - name: no2
"
    )
}

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("TEST_INFLUX_URL", influx().url.clone()),
        ("TEST_BQ_URL", bigquery().url.clone()),
    ]
}

pub(crate) fn run(ws: &Ws, args: &[&str], extra: &[(&str, &str)]) -> crate::util::Out {
    let owned = env();
    let mut all: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    ws.run_env(args, &all)
}

/// Per pollutant: rows, distinct (station, hour), sum of avg x 1000 and of n_minutes.
const SUMMARY: &str = "SELECT pollutant, COUNT(*), COUNT(DISTINCT CONCAT(station, CAST(hour_start AS STRING))), \
     CAST(ROUND(SUM(avg) * 1000) AS INT64), SUM(n_minutes) FROM {t} GROUP BY pollutant ORDER BY pollutant";

pub(crate) fn bq_summary(dataset: &str) -> Vec<Vec<String>> {
    bigquery().query(
        PROJECT,
        &SUMMARY.replace("{t}", &format!("`{PROJECT}.{dataset}.pollutant_hourly`")),
    )
}

pub(crate) fn duck_summary(ws: &Ws) -> Vec<Vec<String>> {
    ws.query(
        "wh.duckdb",
        &SUMMARY
            .replace("{t}", "pollutant_hourly")
            .replace("INT64", "BIGINT")
            .replace(
                "CAST(hour_start AS STRING)",
                "CAST(epoch_us(hour_start) AS VARCHAR)",
            ),
    )
}

/// Every row of BigQuery's table except `loaded_at`, in a stable order.
fn bq_rows(dataset: &str) -> Vec<Vec<String>> {
    bigquery().query(
        PROJECT,
        &format!("SELECT pollutant, station, hour_start, avg, min, max, n_minutes, coverage, valid, unit, source FROM `{PROJECT}.{dataset}.pollutant_hourly` ORDER BY pollutant, station, hour_start"),
    )
}

fn influx_mean(db: &str, field: &str, station: &str, hour: &str, next: &str) -> f64 {
    let v = influx().q(&format!(
        "SELECT mean(\"{field}\") FROM \"{db}\"..\"air_quality\" WHERE station = '{station}' AND time >= '{hour}' AND time < '{next}'"
    ));
    v["results"][0]["series"][0]["values"][0][1]
        .as_f64()
        .unwrap()
}

#[test]
fn loads_reruns_and_follows_late_and_vanished_data() {
    let db = "bq_loads";
    let ds = "it_loads";
    crate::engine::seed(db);
    let ws = Ws::new(&spec(db, ds, "{type: local, path: state}", ""));
    run(
        &ws,
        &["run", "hourly", "--now", "2026-11-21T00:10:00Z"],
        &[],
    )
    .ok();
    let first = bq_summary(ds);
    assert_eq!(
        first.iter().map(|r| r[..3].to_vec()).collect::<Vec<_>>(),
        vec![vec!["co", "71", "71"], vec!["no2", "71", "71"]]
    );
    // The same hourly values as the DuckDB sink, from the same SQL.
    assert_eq!(first, duck_summary(&ws));
    // Created partitioned by day on hour_start, clustered for per-pollutant queries;
    // the staging tables are gone.
    let (_, t) = bigquery().get(&format!(
        "/projects/{PROJECT}/datasets/{ds}/tables/pollutant_hourly"
    ));
    assert_eq!(t["timePartitioning"]["type"], "DAY", "{t}");
    assert_eq!(t["timePartitioning"]["field"], "hour_start");
    assert_eq!(
        t["clustering"]["fields"],
        serde_json::json!(["pollutant", "station"])
    );
    let (_, list) = bigquery().get(&format!("/projects/{PROJECT}/datasets/{ds}/tables"));
    let names: Vec<&str> = list["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tableReference"]["tableId"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["pollutant_hourly"]);

    // Running the same hours again leaves identical rows.
    let before = bq_rows(ds);
    run(
        &ws,
        &[
            "backfill",
            "hourly",
            "--from",
            "2026-11-20T00:00:00Z",
            "--to",
            "2026-11-21T00:00:00Z",
            "--now",
            "2026-11-21T00:10:00Z",
        ],
        &[],
    )
    .ok();
    assert_eq!(bq_rows(ds), before);

    // A late reading changes one hour; a station's hour that vanished is deleted.
    influx().write(
        db,
        "air_quality,station=berlin-mitte co=50 1795150230000000000",
    );
    influx().q_db(
        db,
        "DELETE FROM \"air_quality\" WHERE station = 'muenchen-stachus' AND time >= '2026-11-20T07:00:00Z' AND time < '2026-11-20T08:00:00Z'",
    );
    run(
        &ws,
        &[
            "backfill",
            "hourly",
            "--from",
            "2026-11-20T05:00:00Z",
            "--to",
            "2026-11-20T08:00:00Z",
            "--now",
            "2026-11-21T00:10:00Z",
        ],
        &[],
    )
    .ok();
    let want = influx_mean(
        db,
        "co",
        "berlin-mitte",
        "2026-11-20T05:00:00Z",
        "2026-11-20T06:00:00Z",
    );
    let got = bigquery().query(
        PROJECT,
        &format!("SELECT avg FROM `{PROJECT}.{ds}.pollutant_hourly` WHERE pollutant = 'co' AND station = 'berlin-mitte' AND hour_start = TIMESTAMP '2026-11-20T05:00:00Z'"),
    );
    assert_eq!(got.len(), 1);
    assert!(
        (got[0][0].parse::<f64>().unwrap() - want).abs() < 1e-9,
        "{got:?} vs {want}"
    );
    let seven = bigquery().query(
        PROJECT,
        &format!("SELECT pollutant, station FROM `{PROJECT}.{ds}.pollutant_hourly` WHERE hour_start = TIMESTAMP '2026-11-20T07:00:00Z' ORDER BY 1, 2"),
    );
    assert_eq!(
        seven,
        vec![
            vec!["co", "berlin-mitte"],
            vec!["co", "hamburg-sternschanze"],
            vec!["no2", "berlin-mitte"],
            vec!["no2", "hamburg-sternschanze"],
        ]
    );
    // Both sinks agree after all that.
    assert_eq!(bq_summary(ds), duck_summary(&ws));
}

#[test]
fn bigquery_failing_while_duckdb_succeeds_then_recovery() {
    let db = "bq_fail";
    let ds = "it_fail";
    crate::engine::seed(db);
    let bq = bigquery();
    // A table someone made by hand, without the `valid` column the SQL returns.
    assert_eq!(
        bq.post(
            &format!("/projects/{PROJECT}/datasets"),
            serde_json::json!({"datasetReference": {"projectId": PROJECT, "datasetId": ds}})
        ),
        200
    );
    let fields: Vec<serde_json::Value> = [
        ("pollutant", "STRING"),
        ("station", "STRING"),
        ("hour_start", "TIMESTAMP"),
        ("avg", "FLOAT64"),
        ("min", "FLOAT64"),
        ("max", "FLOAT64"),
        ("n_minutes", "INT64"),
        ("coverage", "FLOAT64"),
        ("unit", "STRING"),
        ("source", "STRING"),
        ("loaded_at", "TIMESTAMP"),
    ]
    .iter()
    .map(|(n, t)| serde_json::json!({"name": n, "type": t}))
    .collect();
    assert_eq!(
        bq.post(
            &format!("/projects/{PROJECT}/datasets/{ds}/tables"),
            serde_json::json!({"tableReference": {"projectId": PROJECT, "datasetId": ds, "tableId": "pollutant_hourly"}, "schema": {"fields": fields}})
        ),
        200
    );
    let ws = Ws::new(&spec(db, ds, "{type: local, path: state}", ""));
    let out = run(
        &ws,
        &["run", "hourly", "--now", "2026-11-21T00:10:00Z"],
        &[],
    )
    .exit(1);
    assert!(
        out.stderr.contains(&format!(
            "sink `bq` hours [2026-11-20T00:00:00Z, 2026-11-20T12:00:00Z): table `{PROJECT}.{ds}.pollutant_hourly` has no column `valid` (BOOL) that the SQL returns"
        )),
        "{}",
        out.stderr
    );
    // BigQuery is left out after its first failure; DuckDB takes every
    // hour; the checkpoint (the oldest sink's) did not move.
    assert!(
        out.stderr.contains("error: sink `bq` is 24 hours behind: sink `bq` hours [2026-11-20T00:00:00Z, 2026-11-20T12:00:00Z): table"),
        "{}",
        out.stderr
    );
    assert_eq!(
        ws.query("wh.duckdb", "SELECT pollutant, count(DISTINCT hour_start) FROM pollutant_hourly GROUP BY 1 ORDER BY 1"),
        vec![vec!["co", "24"], vec!["no2", "24"]]
    );
    let st = run(
        &ws,
        &["status", "hourly", "--now", "2026-11-21T00:10:00Z"],
        &[],
    );
    assert!(
        st.stdout.contains("co: checkpoint none, never loaded"),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout.contains(
            "gaps: 24 hours missing in some sink: 2026-11-20T00:00:00Z..2026-11-20T23:00:00Z"
        ),
        "{}",
        st.stdout
    );

    // Repaired (the table dropped, so duckhour creates it): the redo duplicates nothing anywhere.
    assert_eq!(
        bq.delete(&format!(
            "/projects/{PROJECT}/datasets/{ds}/tables/pollutant_hourly"
        )),
        204
    );
    // Within its backoff (5 minutes after the failure, on the run's clock) BigQuery is not tried.
    let out = run(
        &ws,
        &["run", "hourly", "--now", "2026-11-21T00:14:00Z"],
        &[],
    )
    .exit(1);
    assert!(
        out.stderr.contains("error: sink `bq` is 24 hours behind (not tried in this run; next attempt after 2026-11-21T00:15:00Z): sink `bq` hours"),
        "{}",
        out.stderr
    );
    run(
        &ws,
        &["run", "hourly", "--now", "2026-11-21T00:15:00Z"],
        &[],
    )
    .ok();
    let want = vec![
        vec!["co".to_owned(), "71".to_owned(), "71".to_owned()],
        vec!["no2".to_owned(), "71".to_owned(), "71".to_owned()],
    ];
    let bq_rows = bq_summary(ds);
    assert_eq!(
        bq_rows.iter().map(|r| r[..3].to_vec()).collect::<Vec<_>>(),
        want
    );
    assert_eq!(bq_rows, duck_summary(&ws));
    let st = run(
        &ws,
        &["status", "hourly", "--now", "2026-11-21T00:15:00Z"],
        &[],
    );
    assert!(
        st.stdout
            .contains("co: checkpoint 2026-11-20T23:00:00Z, 0h behind"),
        "{}",
        st.stdout
    );
    assert!(st.stdout.contains("gaps: none"), "{}", st.stdout);
}

/// A stand-in for Google's OAuth token endpoint or the metadata server (none
/// can run here): it records each request (head and body) and answers with `response`, a body in the
/// documented shape (`{"access_token", "expires_in", "token_type"}`, or
/// `{"error", "error_description"}` with 400).
fn token_server(status: &'static str, response: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Read headers and the form body (content-length).
            loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len = text[..i]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        log.lock().unwrap().push(text.clone());
                        break;
                    }
                }
            }
            let _ = s.write_all(
                format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{response}", response.len()).as_bytes(),
            );
        }
    });
    (url, seen)
}

/// The test key with its `token_uri` pointed at `token_url`.
fn key_json(token_url: &str) -> serde_json::Value {
    let mut key: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            crate::util::repo().join("tests/fixtures/bigquery/test-service-account.json"),
        )
        .unwrap(),
    )
    .unwrap();
    key["token_uri"] = serde_json::json!(token_url);
    key
}

#[test]
fn service_account_from_a_prefect_block_or_the_environment() {
    let db = "bq_auth";
    let ds = "it_auth";
    crate::engine::seed(db);
    let p = prefect();
    // The Prefect server registers the `gcp-credentials` block type and its
    // schemas (from prefect-gcp's collection metadata) in the background after
    // it starts: wait for them, then save a document the way prefect-gcp's
    // `GcpCredentials(service_account_info=...)` does.
    let http = reqwest::blocking::Client::new();
    let t0 = std::time::Instant::now();
    let (type_id, schema_id) = loop {
        let (_, t) = p.get("/block_types/slug/gcp-credentials");
        if let Some(type_id) = t["id"].as_str() {
            let schemas: serde_json::Value = http
                .post(format!("{}/block_schemas/filter", p.url))
                .json(&serde_json::json!({"block_schemas": {"block_type_id": {"any_": [type_id]}}}))
                .send()
                .unwrap()
                .json()
                .unwrap();
            if let Some(id) = schemas[0]["id"].as_str() {
                break (type_id.to_owned(), id.to_owned());
            }
        }
        assert!(
            t0.elapsed().as_secs() < 60,
            "no gcp-credentials block type on the server"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    let (token_url, seen) = token_server(
        "200 OK",
        r#"{"access_token":"ya29.test-access-token","expires_in":3599,"token_type":"Bearer"}"#,
    );
    let body = serde_json::json!({
        "name": "bq-it-credentials",
        "data": {"service_account_info": key_json(&token_url), "project": PROJECT},
        "block_schema_id": schema_id, "block_type_id": type_id, "is_anonymous": false
    });
    // The server answers 503 while it is still warming up.
    let mut status = 0;
    for _ in 0..120 {
        status = http
            .post(format!("{}/block_documents/", p.url))
            .json(&body)
            .send()
            .unwrap()
            .status()
            .as_u16();
        if status != 503 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // (Only the status on failure: the body would echo the test key.)
    assert!((200..300).contains(&status), "{status}");

    let state = "{type: prefect, url: \"${env:PREFECT_API_URL}\"}";
    let ws = Ws::new(&spec(
        db,
        ds,
        state,
        "    credentials: ${secret:bq-it-credentials}",
    ));
    run(
        &ws,
        &["run", "hourly", "--now", "2026-11-21T00:10:00Z"],
        &[("PREFECT_API_URL", &p.url)],
    )
    .ok();
    assert_eq!(bq_summary(ds).len(), 2);
    // One token for the whole run (cached), asked for with a JWT the key signed.
    let bodies = seen.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let body = bodies[0].split("\r\n\r\n").nth(1).unwrap();
    let form: std::collections::HashMap<String, String> =
        reqwest::Url::parse(&format!("http://x/?{body}"))
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
    assert_eq!(
        form["grant_type"],
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    let claims = form["assertion"].split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["iss"],
        "duckhour-test@duckhour-test.iam.gserviceaccount.com"
    );
    assert_eq!(claims["aud"], token_url);

    // The same key as a file named in the spec, and as Application Default
    // Credentials (GOOGLE_APPLICATION_CREDENTIALS): one token request each.
    let ws = Ws::new(&spec(
        db,
        "it_auth_file",
        "{type: local, path: state}",
        "    credentials: keys/sa.json",
    ));
    ws.write("keys/sa.json", &key_json(&token_url).to_string());
    run(
        &ws,
        &["run", "hourly", "--now", "2026-11-21T00:10:00Z"],
        &[],
    )
    .ok();
    assert_eq!(bq_summary("it_auth_file").len(), 2);
    let ws = Ws::new(&spec(db, "it_auth_adc", "{type: local, path: state}", ""));
    ws.write("adc.json", &key_json(&token_url).to_string());
    let adc = ws.path("adc.json");
    run(
        &ws,
        &["run", "hourly", "--now", "2026-11-21T00:10:00Z"],
        &[("GOOGLE_APPLICATION_CREDENTIALS", adc.to_str().unwrap())],
    )
    .ok();
    assert_eq!(bq_summary("it_auth_adc").len(), 2);
    assert_eq!(seen.lock().unwrap().len(), 3);

    // From an environment variable holding the JSON, with a token endpoint
    // that refuses it: the run fails before any work, naming the sink.
    let (bad_url, _) = token_server(
        "400 Bad Request",
        r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
    );
    let ws = Ws::new(&spec(
        db,
        "it_auth_bad",
        "{type: local, path: state}",
        "    credentials: ${secret:gcp-bad-credentials}",
    ));
    let json = key_json(&bad_url).to_string();
    let out = run(
        &ws,
        &["run", "hourly", "--now", "2026-11-21T00:10:00Z"],
        &[("GCP_BAD_CREDENTIALS", &json)],
    )
    .exit(1);
    assert!(
        out.stderr.contains(&format!(
            "sink `bq`: dataset `{PROJECT}.it_auth_bad` (service account duckhour-test@duckhour-test.iam.gserviceaccount.com): token request to {}: HTTP 400: invalid_grant Invalid JWT Signature.",
            bad_url
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("PRIVATE KEY") && !out.stdout.contains("PRIVATE KEY"));
    // BigQuery is out of the run from its set-up on; the DuckDB file took every hour.
    assert!(
        out.stderr
            .contains("error: sink `bq` is 24 hours behind: sink `bq`: dataset"),
        "{}",
        out.stderr
    );
    assert_eq!(
        ws.query(
            "wh.duckdb",
            "SELECT count(DISTINCT hour_start) FROM pollutant_hourly"
        ),
        vec![vec!["24"]]
    );
}

/// BigQuery's rate-limit, quota and auth answers cannot be provoked from the
/// emulator: a local socket replays them in the documented shape
/// (`{"error": {"code", "message", "errors": [{"reason"}], "status"}}`).
fn bq_error(status: &str, code: u16, reason: &str, message: &str) -> Option<Vec<u8>> {
    let body = serde_json::json!({"error": {"code": code, "message": message, "errors": [{"message": message, "domain": "usageLimits", "reason": reason}], "status": "PERMISSION_DENIED"}}).to_string();
    Some(format!("HTTP/1.1 {status}\r\ncontent-type: application/json; charset=UTF-8\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes())
}

fn replay_api(responses: Vec<Option<Vec<u8>>>) -> duckhour::sinks::bigquery::api::Api {
    use duckhour::sinks::bigquery::auth::{Credentials, Tokens};
    let url = format!("{}/bigquery/v2", crate::util::replay_sequence(responses));
    let http = reqwest::Client::new();
    duckhour::sinks::bigquery::api::Api::new(
        http.clone(),
        Some(&url),
        PROJECT,
        Tokens::new(Credentials::Anonymous, http),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_and_quota_errors_are_retried_auth_errors_are_not() {
    let ok = r#"{"kind":"bigquery#dataset","id":"duckhour-it:aq","datasetReference":{"datasetId":"aq","projectId":"duckhour-it"}}"#;
    let api = replay_api(vec![
        bq_error("403 Forbidden", 403, "rateLimitExceeded", "Exceeded rate limits: too many api requests per user per method for this user_method."),
        bq_error("403 Forbidden", 403, "quotaExceeded", "Quota exceeded: Your project exceeded quota for api requests."),
        bq_error("503 Service Unavailable", 503, "backendError", "Backend error."),
        Some(format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ok}", ok.len()).into_bytes()),
    ]);
    api.ensure_dataset("aq", Some("EU")).await.unwrap();

    let api = replay_api(vec![bq_error(
        "401 Unauthorized",
        401,
        "authError",
        "Request had invalid authentication credentials.",
    )]);
    let e = api.ensure_dataset("aq", None).await.unwrap_err();
    assert_eq!(e.to_string(), "authentication failed (401): Request had invalid authentication credentials.: check `credentials`");

    let api = replay_api(vec![bq_error(
        "403 Forbidden",
        403,
        "accessDenied",
        "Access Denied: Project duckhour-it: User does not have bigquery.datasets.get permission.",
    )]);
    let e = api.ensure_dataset("aq", None).await.unwrap_err();
    assert_eq!(e.to_string(), "HTTP 403 accessDenied: Access Denied: Project duckhour-it: User does not have bigquery.datasets.get permission.");
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_server_token_is_asked_once_with_its_header() {
    use duckhour::sinks::bigquery::auth::{Credentials, Tokens};
    let (url, seen) = token_server(
        "200 OK",
        r#"{"access_token":"ya29.metadata-token","expires_in":3599,"token_type":"Bearer"}"#,
    );
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches("/token")
        .to_owned();
    let tokens = Tokens::new(Credentials::Metadata { host }, reqwest::Client::new());
    for _ in 0..2 {
        let t = tokens.token().await.unwrap().unwrap();
        assert_eq!(t.expose(), "ya29.metadata-token");
    }
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1, "cached: {reqs:?}");
    assert!(
        reqs[0].starts_with("GET /computeMetadata/v1/instance/service-accounts/default/token?scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fbigquery HTTP/1.1"),
        "{}",
        reqs[0]
    );
    assert!(
        reqs[0]
            .to_ascii_lowercase()
            .contains("\r\nmetadata-flavor: google\r\n"),
        "{}",
        reqs[0]
    );
}

#[test]
fn batches_of_more_than_500_rows_go_in_several_requests() {
    let db = "bq_many";
    let ds = "it_many";
    crate::engine::seed(db);
    // A template that keeps every minute: about 2,100 rows in one 12-hour batch.
    let spec = spec(db, ds, "{type: local, path: state}", "").replace(
        "    batch_hours: 12\n",
        "    batch_hours: 12\n    template: minutes.sql\n    table: co_minutes\n",
    );
    let ws = Ws::new(&spec);
    ws.write(
        "sql/minutes.sql",
        "SELECT {{ job.name | sqlstr }} AS pollutant, station, time AS hour_start, value AS avg\n\
         FROM {{ staging }} WHERE time >= {{ window_start | ts }} AND time < {{ window_end | ts }}\n",
    );
    let out = run(
        &ws,
        &[
            "-vv",
            "--log-format",
            "json",
            "backfill",
            "hourly",
            "--job",
            "co",
            "--from",
            "2026-11-20T00:00:00Z",
            "--to",
            "2026-11-20T12:00:00Z",
            "--now",
            "2026-11-21T00:10:00Z",
        ],
        &[],
    )
    .ok();
    let points = influx().q(&format!(
        "SELECT count(\"co\") FROM \"{db}\"..\"air_quality\" WHERE time >= '2026-11-20T00:00:00Z' AND time < '2026-11-20T12:00:00Z'"
    ))["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap();
    assert!(points > 1500, "{points}");
    let bq = bigquery().query(
        PROJECT,
        &format!("SELECT COUNT(*), COUNT(DISTINCT CONCAT(station, CAST(hour_start AS STRING))), CAST(ROUND(SUM(avg) * 1000) AS INT64) FROM `{PROJECT}.{ds}.co_minutes`"),
    );
    let duck = ws.query(
        "wh.duckdb",
        "SELECT COUNT(*), COUNT(DISTINCT (station, hour_start)), CAST(ROUND(SUM(avg) * 1000) AS BIGINT) FROM co_minutes",
    );
    assert_eq!(bq[0][0], points.to_string());
    assert_eq!(bq[0][1], points.to_string());
    assert_eq!(bq, duck);
    // Requests of at most 500 rows: 500, 500, ..., the rest.
    let sizes: Vec<u64> = out
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "bigquery insertAll")
        .map(|v| v["fields"]["rows"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes.iter().sum::<u64>(), points);
    assert!(
        sizes.len() >= 4 && sizes[..sizes.len() - 1].iter().all(|&n| n == 500),
        "{sizes:?}"
    );
}

#[test]
fn a_missing_credentials_secret_is_named_once_before_any_work() {
    let ws = Ws::new(&spec(
        "bq_unused",
        "it_nosecret",
        "{type: local, path: state}",
        "    credentials: ${secret:bq-missing-key}",
    ));
    let out = run(
        &ws,
        &["run", "hourly", "--now", "2026-11-21T00:10:00Z"],
        &[],
    )
    .exit(1);
    assert!(
        out.stderr.contains("sink `bq`: `credentials`: secret `bq-missing-key` not found (looked in environment variable `BQ_MISSING_KEY`)"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("sink `bq`: sink `bq`"),
        "{}",
        out.stderr
    );
}
