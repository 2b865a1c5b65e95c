//! The InfluxDB v1 source against a real InfluxDB 1.x server: staged rows are
//! compared value by value with what was written.

use duckhour::duck;
use duckhour::plan::Batch;
use duckhour::secret::EnvSecrets;
use duckhour::sources::{Fetch, PointSink, Source, SourceError};
use duckhour::spec::{Duration, Hour, InfluxConfig, Job, SourceConfig, V3Format};
use duckhour::staged::StagedHandle;
use tokio::sync::mpsc;

use crate::util::{influx, influx_auth, query, replay_sequence, replay_server};

fn h(s: &str) -> Hour {
    Hour::parse(s).unwrap()
}

fn ns(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap()
}

fn config(url: &str, db: &str) -> InfluxConfig {
    InfluxConfig {
        version: 1,
        url: url.to_owned(),
        database: Some(db.to_owned()),
        retention_policy: None,
        org: None,
        bucket: None,
        username: None,
        password: None,
        token: None,
        format: V3Format::Csv,
        timeout: Duration::parse("30s").unwrap(),
        retries: 1,
        max_query_hours: 24,
    }
}

fn job(measurement: &str, field: &str) -> Job {
    Job {
        name: "x".into(),
        measurement: measurement.into(),
        field: field.into(),
        tags: vec!["station".into()],
        template: "hourly_mean.sql".into(),
        table: "t".into(),
        params: Default::default(),
    }
}

/// Extracts `batch` into a fresh staging view; returns the rows as text.
async fn stage(
    cfg: InfluxConfig,
    job: &Job,
    batch: Batch,
) -> Result<Vec<Vec<String>>, SourceError> {
    let mut src = Source::new("aq", &SourceConfig::Influx(cfg));
    src.connect(&EnvSecrets).await?;
    let conn = duck::open().unwrap();
    let rows = StagedHandle::new(&job.tags, 1);
    duck::stage_view(&conn, &job.name, &rows, 0).unwrap();
    let (tx, rx) = mpsc::channel(4);
    let wconn = conn.try_clone().unwrap();
    let writer = tokio::task::spawn_blocking(move || {
        let n = duck::write_staging(&wconn, rows.staged(), rx, &Default::default());
        (rows, n)
    });
    let mut sink = PointSink::new(tx, 1);
    let res = src.extract(&Fetch::of([job]), batch, &mut sink).await;
    drop(sink);
    let (_rows, staged) = writer.await.unwrap();
    let n = res?;
    assert_eq!(n, staged, "rows counted by the source and by staging");
    let types = query(
        &conn,
        "SELECT typeof(time), typeof(station), typeof(value) FROM stage_x LIMIT 1",
    );
    if !types.is_empty() {
        assert_eq!(types[0], ["TIMESTAMP WITH TIME ZONE", "VARCHAR", "DOUBLE"]);
    }
    Ok(query(
        &conn,
        "SELECT epoch_ns(time), coalesce(station, '<null>'), value FROM stage_x ORDER BY time, station",
    ))
}

/// Measurement and field names that need quoting; tag values with spaces,
/// commas and `=`; points exactly on hour boundaries; an empty hour; gaps.
fn seed(db: &str) {
    let ix = influx();
    ix.create_db(db);
    let m = r#"pm2.5\ "raw""#; // measurement `pm2.5 "raw"`
    let lines = [
        format!(
            r#"{m},station=St\ 1\,\ North pm2.5=10.5 {}"#,
            ns("2026-11-20T00:00:00Z")
        ),
        format!(
            r#"{m},station=B\=2 pm2.5=11 {}"#,
            ns("2026-11-20T00:00:00Z")
        ),
        format!(
            r#"{m},station=B\=2 pm2.5=12.25 {}"#,
            ns("2026-11-20T00:30:00Z")
        ),
        format!(
            r#"{m},station=B\=2 pm2.5=-1.5 {}"#,
            ns("2026-11-20T00:59:59Z")
        ),
        format!(
            r#"{m},station=B\=2 pm2.5=13 {}"#,
            ns("2026-11-20T01:00:00Z")
        ),
        format!(r#"{m} pm2.5=14 {}"#, ns("2026-11-20T01:10:00Z")),
        // 02:00-03:00 is empty
        format!(r#"{m},station=B\=2 other=1 {}"#, ns("2026-11-20T02:15:00Z")),
        format!(
            r#"{m},station=B\=2 pm2.5=15 {}"#,
            ns("2026-11-20T03:00:00Z")
        ),
        format!(
            r#"{m},station=B\=2 pm2.5=16 {}"#,
            ns("2026-11-20T04:00:00Z")
        ),
    ];
    ix.write(db, &lines.join("\n"));
}

fn row(t: &str, station: &str, v: &str) -> Vec<String> {
    vec![ns(t).to_string(), station.to_owned(), v.to_owned()]
}

#[tokio::test(flavor = "multi_thread")]
async fn stages_an_hour_with_boundaries_and_quoted_names() {
    seed("src_one_hour");
    let j = job(r#"pm2.5 "raw""#, "pm2.5");
    let batch = Batch {
        from: h("2026-11-20T00:00:00Z"),
        to: h("2026-11-20T01:00:00Z"),
    };
    let rows = stage(config(&influx().url, "src_one_hour"), &j, batch)
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            row("2026-11-20T00:00:00Z", "B=2", "11.0"),
            row("2026-11-20T00:00:00Z", "St 1, North", "10.5"),
            row("2026-11-20T00:30:00Z", "B=2", "12.25"),
            row("2026-11-20T00:59:59Z", "B=2", "-1.5"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn split_sub_queries_cover_the_range_once() {
    seed("src_split");
    let j = job(r#"pm2.5 "raw""#, "pm2.5");
    let mut cfg = config(&influx().url, "src_split");
    cfg.max_query_hours = 1;
    let batch = Batch {
        from: h("2026-11-20T00:00:00Z"),
        to: h("2026-11-20T04:00:00Z"),
    };
    let rows = stage(cfg, &j, batch).await.unwrap();
    assert_eq!(rows.len(), 7, "{rows:?}");
    assert_eq!(rows[4], row("2026-11-20T01:00:00Z", "B=2", "13.0"));
    assert_eq!(rows[5], row("2026-11-20T01:10:00Z", "<null>", "14.0"));
    assert_eq!(rows[6], row("2026-11-20T03:00:00Z", "B=2", "15.0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_hour_stages_nothing() {
    seed("src_empty");
    let j = job(r#"pm2.5 "raw""#, "pm2.5");
    let batch = Batch {
        from: h("2026-11-20T02:00:00Z"),
        to: h("2026-11-20T03:00:00Z"),
    };
    assert_eq!(
        stage(config(&influx().url, "src_empty"), &j, batch)
            .await
            .unwrap(),
        Vec::<Vec<String>>::new()
    );
}

/// The count that sizes a run's first batch: the largest count of the
/// fetch's fields in the hour, from the real server; 0 for an empty hour.
#[tokio::test(flavor = "multi_thread")]
async fn the_row_estimate_is_the_servers_count() {
    let ix = influx();
    ix.create_db("src_estimate");
    let t0 = ns("2026-11-20T00:00:00Z");
    let mut lines = String::new();
    for s in 0..3 {
        for m in 0..90i64 {
            let no2 = if m % 2 == 0 { ",no2=2" } else { "" };
            lines.push_str(&format!(
                "air,station=s{s} co=1{no2} {}\n",
                t0 + m * 60_000_000_000
            ));
        }
    }
    ix.write("src_estimate", &lines);
    let mut src = Source::new("aq", &SourceConfig::Influx(config(&ix.url, "src_estimate")));
    src.connect(&EnvSecrets).await.unwrap();
    let (co, no2) = (job("air", "co"), job("air", "no2"));
    let hour = |from: &str, to: &str| Batch {
        from: h(from),
        to: h(to),
    };
    let first = hour("2026-11-20T00:00:00Z", "2026-11-20T01:00:00Z");
    assert_eq!(
        src.estimate(&Fetch::of([&co, &no2]), first).await,
        Some(180)
    );
    assert_eq!(src.estimate(&Fetch::of([&no2]), first).await, Some(90));
    let second = hour("2026-11-20T01:00:00Z", "2026-11-20T02:00:00Z");
    assert_eq!(src.estimate(&Fetch::of([&no2]), second).await, Some(45));
    let empty = hour("2026-11-20T05:00:00Z", "2026-11-20T06:00:00Z");
    assert_eq!(src.estimate(&Fetch::of([&co]), empty).await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_database_is_an_error_not_an_empty_result() {
    let j = job("m", "f");
    let batch = Batch {
        from: h("2026-11-20T00:00:00Z"),
        to: h("2026-11-20T01:00:00Z"),
    };
    let e = stage(config(&influx().url, "no_such_db"), &j, batch)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "source `aq` ({}) hours (database check): database `no_such_db` does not exist",
            influx().url
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_are_named_without_the_password() {
    let ix = influx_auth();
    ix.create_db("src_auth");
    ix.write("src_auth", "m,station=a f=1 1795132800000000000");
    let j = job("m", "f");
    let batch = Batch {
        from: h("2026-11-20T00:00:00Z"),
        to: h("2026-11-20T01:00:00Z"),
    };
    let mut cfg = config(&ix.url, "src_auth");
    cfg.username = Some("admin".into());
    cfg.password = Some("wrong-password-marker".into());
    let e = stage(cfg.clone(), &j, batch).await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "source `aq` ({}) hours (database check): authentication failed (HTTP 401): check the username/password or token",
            ix.url
        )
    );
    assert!(!e.contains("wrong-password-marker"));
    cfg.password = Some("admin-secret".into());
    let rows = stage(cfg, &j, batch).await.unwrap();
    assert_eq!(rows, vec![row("2026-11-20T00:00:00Z", "a", "1.0")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_names_source_url_and_hours() {
    let j = job("m", "f");
    let batch = Batch {
        from: h("2026-11-20T00:00:00Z"),
        to: h("2026-11-20T01:00:00Z"),
    };
    // Port 9 (discard) is closed on loopback.
    let mut cfg = config("http://user:pw@127.0.0.1:9/", "db");
    cfg.retries = 0;
    let e = stage(cfg, &j, batch).await.unwrap_err().to_string();
    assert!(
        e.starts_with("source `aq` (http://127.0.0.1:9) hours (database check): cannot connect: "),
        "{e}"
    );
    assert!(!e.contains("pw"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_string_field_is_refused_with_the_hours() {
    let ix = influx();
    ix.create_db("src_strings");
    ix.write("src_strings", "m,station=a f=\"high\" 1795132800000000000");
    let j = job("m", "f");
    let batch = Batch {
        from: h("2026-11-20T00:00:00Z"),
        to: h("2026-11-20T01:00:00Z"),
    };
    let e = stage(config(&ix.url, "src_strings"), &j, batch)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "source `aq` ({}) hours [2026-11-20T00:00:00Z, 2026-11-20T01:00:00Z): bad response: value `high` is not numeric",
            ix.url
        )
    );
}

const CAPTURED: &[u8] = include_bytes!("../fixtures/influxdb/v1_chunked_response.bin");

const CAPTURED_400: &[u8] = include_bytes!("../fixtures/influxdb/v1_400_response.bin");

/// InfluxDB 1.6.7's answers (`curl -i --raw`) to `SHOW DATABASES` (with its
/// `X-Influxdb-Version`) and, in MessagePack, to the grouped query of the
/// same two points as `CAPTURED`.
const CAPTURED_SHOW: &[u8] = include_bytes!("../fixtures/influxdb/v1_show_databases_response.bin");
const CAPTURED_MSGPACK: &[u8] = include_bytes!("../fixtures/influxdb/v1_grouped_response.bin");

fn captured_cfg(url: &str, retries: u32) -> InfluxConfig {
    let mut cfg = config(url, "t1");
    cfg.retries = retries;
    cfg
}

/// Fetches through a source whose database check is skipped (the replay
/// server answers every request with the same bytes).
async fn fetch_replayed(url: &str, timeout: &str) -> Result<Vec<Vec<String>>, SourceError> {
    fetch_replayed_retrying(url, timeout, 0).await
}

async fn fetch_replayed_retrying(
    url: &str,
    timeout: &str,
    retries: u32,
) -> Result<Vec<Vec<String>>, SourceError> {
    fetch_replayed_as(url, timeout, retries, false).await
}

/// With `connect`, the replay's first answer is the database check's (its
/// version says whether points are asked in MessagePack); without, the
/// source is only resolved and asks in CSV.
async fn fetch_replayed_as(
    url: &str,
    timeout: &str,
    retries: u32,
    connect: bool,
) -> Result<Vec<Vec<String>>, SourceError> {
    let mut cfg = captured_cfg(url, retries);
    cfg.version = 1;
    cfg.timeout = Duration::parse(timeout).unwrap();
    let mut src = Source::new("aq", &SourceConfig::Influx(cfg));
    if connect {
        src.connect(&EnvSecrets).await.unwrap();
    } else {
        src.resolve(&EnvSecrets).unwrap();
    }
    let j = Job {
        name: "x".into(),
        ..job("air q", "co")
    };
    let conn = duck::open().unwrap();
    let rows = StagedHandle::new(&j.tags, 1);
    duck::stage_view(&conn, "x", &rows, 0).unwrap();
    let (tx, rx) = mpsc::channel(4);
    let wconn = conn.try_clone().unwrap();
    let writer = tokio::task::spawn_blocking(move || {
        let n = duck::write_staging(&wconn, rows.staged(), rx, &Default::default());
        (rows, n)
    });
    let mut sink = PointSink::new(tx, 1);
    let batch = Batch {
        from: h("2023-11-14T22:00:00Z"),
        to: h("2023-11-14T23:00:00Z"),
    };
    let res = src.extract(&Fetch::of([&j]), batch, &mut sink).await;
    drop(sink);
    let (_rows, _) = writer.await.unwrap();
    res?;
    Ok(query(
        &conn,
        "SELECT epoch_ns(time), station, value FROM stage_x ORDER BY time",
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_captured_response_replays_to_the_same_rows() {
    let url = replay_server(Some(CAPTURED.to_vec()));
    let rows = fetch_replayed(&url, "5s").await.unwrap();
    assert_eq!(
        rows,
        vec![
            vec![
                "1700000000000000000".to_owned(),
                "St,1 A".to_owned(),
                "1.0".to_owned()
            ],
            vec![
                "1700000060000000000".to_owned(),
                "B".to_owned(),
                "1.5".to_owned()
            ],
        ]
    );
}

/// A MessagePack answer cut inside a value is retried, and the rows the cut
/// answer gave are dropped: the two points load once.
#[tokio::test(flavor = "multi_thread")]
async fn a_messagepack_answer_cut_short_is_retried_without_duplicating_rows() {
    // Cut inside the second series, after the first one's row.
    let cut = CAPTURED_MSGPACK[..CAPTURED_MSGPACK.len() - 20].to_vec();
    let url = replay_sequence(vec![
        Some(CAPTURED_SHOW.to_vec()),
        Some(cut),
        Some(CAPTURED_MSGPACK.to_vec()),
    ]);
    let rows = fetch_replayed_as(&url, "5s", 3, true).await.unwrap();
    assert_eq!(
        rows,
        [
            ["1700000000000000000", "St,1 A", "1.0"],
            ["1700000060000000000", "B", "1.5"],
        ]
    );
    // Out of retries, the cut is reported as such.
    let url = replay_sequence(vec![
        Some(CAPTURED_SHOW.to_vec()),
        Some(CAPTURED_MSGPACK[..CAPTURED_MSGPACK.len() - 20].to_vec()),
    ]);
    let e = fetch_replayed_as(&url, "5s", 0, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("response cut short"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_body_is_an_error_not_a_short_result() {
    // The captured response, cut inside its first chunk.
    let cut = CAPTURED.len() - 40;
    let url = replay_server(Some(CAPTURED[..cut].to_vec()));
    let e = fetch_replayed(&url, "5s").await.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("source `aq` ({url}) hours [2023-11-14T22:00:00Z, 2023-11-14T23:00:00Z): response cut short: ")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_server_times_out() {
    let url = replay_server(None);
    let e = fetch_replayed(&url, "1s").await.unwrap_err().to_string();
    assert_eq!(e, format!("source `aq` ({url}) hours [2023-11-14T22:00:00Z, 2023-11-14T23:00:00Z): timed out after 1s"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_without_read_permission_gets_403() {
    let ix = influx_auth();
    ix.create_db("src_perm");
    ix.q("DROP USER \"reader\"");
    ix.q("CREATE USER \"reader\" WITH PASSWORD 'reader-pw'");
    // Write-only: the database is visible to the user, reading it is not allowed.
    ix.q("GRANT WRITE ON \"src_perm\" TO \"reader\"");
    let j = job("m", "f");
    let batch = Batch {
        from: h("2026-11-20T00:00:00Z"),
        to: h("2026-11-20T01:00:00Z"),
    };
    let mut cfg = config(&ix.url, "src_perm");
    cfg.username = Some("reader".into());
    cfg.password = Some("reader-pw".into());
    let e = stage(cfg, &j, batch).await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "source `aq` ({}) hours [2026-11-20T00:00:00Z, 2026-11-20T01:00:00Z): permission denied (HTTP 403): the credentials cannot read this database",
            ix.url
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_query_reports_the_servers_reason() {
    let url = replay_server(Some(CAPTURED_400.to_vec()));
    let e = fetch_replayed_retrying(&url, "5s", 3)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!("source `aq` ({url}) hours [2023-11-14T22:00:00Z, 2023-11-14T23:00:00Z): query rejected (HTTP 400): error parsing query: found SELEC, expected SELECT, DELETE, SHOW, CREATE, DROP, EXPLAIN, GRANT, REVOKE, ALTER, SET, KILL at line 1, char 1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_retried_without_duplicating_rows() {
    let unavailable =
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_vec();
    let cut = CAPTURED[..CAPTURED.len() - 40].to_vec();
    let url = replay_sequence(vec![Some(unavailable), Some(cut), Some(CAPTURED.to_vec())]);
    let rows = fetch_replayed_retrying(&url, "5s", 3).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    // Out of retries: the last error is reported.
    let url = replay_sequence(vec![None, None]);
    let e = fetch_replayed_retrying(&url, "1s", 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.ends_with("timed out after 1s"), "{e}");
}
