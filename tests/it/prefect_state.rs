//! The Prefect state store against a real Prefect 3.9 server (started by
//! `scripts/prefect`): a round trip with the Python block class, a full run
//! with secrets from `Secret` blocks, two runners of one job, a lease
//! revoked mid-run, and the server restarted mid-run.

use std::time::{Duration, Instant};

use crate::util::{
    influx_auth, prefect, slow_sample, with_source, Act, Prefect, Recorder, Seen, Ws,
};

/// A spec over the shipped sample day with Prefect state; `name` keeps the
/// block and limit names of each test apart on the shared server.
fn spec(name: &str, state_extra: &str, batch_hours: u32, jobs: &[&str]) -> String {
    let jobs: String = jobs
        .iter()
        .map(|j| format!("      - name: {j}\n"))
        .collect();
    format!(
        "state:
  type: prefect
  url: ${{env:PREFECT_API_URL}}
{state_extra}
sources:
  sample:
    type: line_protocol
    path: data/sample.lp.gz
sinks:
  wh:
    type: duckdb
    path: wh.duckdb
pipelines:
  {name}:
    source: sample
    sinks: [wh]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    batch_hours: {batch_hours}
    concurrency: 2
    jobs:
{jobs}"
    )
}

fn run(ws: &Ws, p: &Prefect, args: &[&str]) -> crate::util::Out {
    ws.run_env(args, &[("PREFECT_API_URL", &p.url)])
}

/// Hours (and rows) per job in the sink.
fn rows_by_job(ws: &Ws) -> Vec<Vec<String>> {
    ws.query(
        "wh.duckdb",
        "SELECT pollutant, count(DISTINCT hour_start), count(*) FROM pollutant_hourly GROUP BY pollutant ORDER BY pollutant",
    )
}

#[test]
fn round_trip_with_the_python_block_class() {
    let p = prefect();
    let ws = Ws::new(&spec("rt", "", 24, &["co", "no2"]));
    // A single-job pipeline on the flows' old document name.
    ws.write(
        "single.yaml",
        &spec("single", "  block_name: pipeline-state", 24, &["co"]),
    );
    run(&ws, p, &["run", "rt", "--now", "2026-11-21T00:10:00Z"]).ok();
    run(
        &ws,
        p,
        &[
            "-c",
            "single.yaml",
            "run",
            "single",
            "--now",
            "2026-11-21T00:10:00Z",
        ],
    )
    .ok();

    // Python reads what duckhour wrote, through the class, under the same schema.
    let got = p.python(&[
        "load-state",
        "rt-co",
        "load-state",
        "pipeline-state",
        "checksum",
    ]);
    assert_eq!(got[0]["last_processed_hour"], "2026-11-20T23:00:00+00:00");
    assert_eq!(got[0]["tz"], "0:00:00");
    assert_eq!(got[0]["pipeline_version"], "v1.0.0");
    let meta = &got[0]["metadata"];
    assert_eq!(meta["pipeline"], "rt");
    assert_eq!(meta["job"], "co");
    assert_eq!(meta["sinks"]["wh"]["last_hour"], "2026-11-20T23:00:00Z");
    // The sample has three stations (one co hour of one station is missing).
    assert_eq!(meta["sinks"]["wh"]["rows"], 71);
    assert_eq!(
        meta["ledger"]["wh"],
        serde_json::json!([["2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z"]])
    );
    assert_eq!(meta["last_run"]["ok"], true);
    assert_eq!(meta["last_run"]["hours"], 24);
    assert_eq!(got[1]["last_processed_hour"], "2026-11-20T23:00:00+00:00");
    assert_eq!(got[1]["metadata"]["pipeline"], "single");
    let doc = p.state_doc("rt-co").unwrap();
    assert_eq!(doc["block_schema"]["checksum"], got[2]);
    assert_eq!(doc["block_type"]["slug"], "pipelinestateblock");

    // Python moves the checkpoint back with a naive datetime, as the old flows did.
    p.python(&["save-state", "rt-co", "2026-11-20T20:00:00"]);
    assert_eq!(
        p.checkpoint("rt-co").as_deref(),
        Some("2026-11-20T20:00:00")
    );
    let out = run(&ws, p, &["status", "rt", "--now", "2026-11-21T00:10:00Z"]).ok();
    assert!(
        out.stdout
            .contains("co: checkpoint 2026-11-20T20:00:00Z, 3h behind"),
        "{}",
        out.stdout
    );
    let out = run(
        &ws,
        p,
        &[
            "dry-run",
            "rt",
            "--job",
            "co",
            "--now",
            "2026-11-21T00:10:00Z",
        ],
    )
    .ok();
    assert!(
        out.stdout.contains("checkpoint 2026-11-20T20:00:00Z"),
        "{}",
        out.stdout
    );
    // duckhour reads it and redoes the three hours after it, without duplicates.
    let out = run(&ws, p, &["run", "rt", "--now", "2026-11-21T00:10:00Z"]).ok();
    assert!(
        out.stdout.contains(" 3 hours (3 new, 0 redone)"),
        "{}",
        out.stdout
    );
    assert_eq!(
        rows_by_job(&ws),
        vec![vec!["co", "24", "71"], vec!["no2", "24", "71"]]
    );
    let got = p.python(&["load-state", "rt-co"]);
    assert_eq!(got[0]["last_processed_hour"], "2026-11-20T23:00:00+00:00");
    // The document keeps what Python put beside duckhour's keys.
    assert_eq!(got[0]["metadata"]["runs"].as_array().unwrap().len(), 2);
}

#[test]
fn full_run_with_secrets_from_prefect_blocks() {
    let p = prefect();
    let ix = influx_auth();
    crate::engine::seed_into(ix, "pf_secrets");
    let ws = Ws::new(&format!(
        "state:
  type: prefect
  url: ${{env:PREFECT_API_URL}}
sources:
  influx:
    type: influxdb
    url: {url}
    database: pf_secrets
    username: admin
    password: ${{secret:pf-influx-password}}
sinks:
  wh:
    type: duckdb
    path: wh.duckdb
pipelines:
  sec:
    source: influx
    sinks: [wh]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    jobs:
      - name: co
      - name: so2
",
        url = ix.url
    ));
    // Not in a block and not in the environment: the error says where it looked.
    let out = run(&ws, p, &["run", "sec", "--now", "2026-11-21T00:10:00Z"]).exit(1);
    assert!(
        out.stderr.contains(
            "secret `pf-influx-password` not found (looked in Prefect blocks `secret`/`gcp-credentials` `pf-influx-password`, then environment variable `PF_INFLUX_PASSWORD`)"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(p.checkpoint("sec-co"), None);

    p.python(&["save-secret", "pf-influx-password", "admin-secret"]);
    let out = run(
        &ws,
        p,
        &["run", "sec", "--now", "2026-11-21T00:10:00Z", "-v"],
    )
    .ok();
    assert_eq!(
        rows_by_job(&ws),
        vec![vec!["co", "24", "71"], vec!["so2", "24", "69"]]
    );
    assert_eq!(
        p.checkpoint("sec-so2").as_deref(),
        Some("2026-11-20T23:00:00Z")
    );
    // The secret is nowhere: not in the output, not in the state documents.
    let doc = p.state_doc("sec-co").unwrap().to_string();
    for text in [&out.stdout, &out.stderr, &doc] {
        assert!(!text.contains("admin-secret"), "{text}");
    }
    // A wrong password in the block is InfluxDB's 401, named, with nothing moved.
    p.python(&["save-secret", "pf-influx-password", "wrong-password"]);
    let out = run(&ws, p, &["run", "sec", "--now", "2026-11-21T03:10:00Z"]).exit(1);
    assert!(out.stderr.contains("401"), "{}", out.stderr);
    assert!(!out.stderr.contains("wrong-password"), "{}", out.stderr);
    assert_eq!(
        p.checkpoint("sec-co").as_deref(),
        Some("2026-11-20T23:00:00Z")
    );
}

/// Starts a long backfill (one-hour batches over two days) in the background.
fn start_long_run(ws: &Ws, api_url: &str, pipeline: &str) -> std::process::Child {
    ws.cmd(&[
        "backfill",
        pipeline,
        "--from",
        "2026-11-20T00:00:00Z",
        "--to",
        "2026-11-22T00:00:00Z",
        "--now",
        "2026-11-22T00:10:00Z",
    ])
    .env("PREFECT_API_URL", api_url)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap()
}

/// Waits until `f` holds (polling), or panics after `secs`.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn finish(child: std::process::Child) -> crate::util::Out {
    let o = child.wait_with_output().unwrap();
    crate::util::Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn two_runners_of_one_job() {
    let p = prefect();
    // Slowed, so that it still runs when the others come (the holder stays
    // in the block's metadata after a run, so it alone proves nothing).
    let (_slow, sample) = slow_sample("pf_two", Duration::from_millis(300));
    let ws = Ws::new(&with_source(&spec("two", "", 1, &["co"]), &sample));
    let first = start_long_run(&ws, &p.url, "two");
    let pid = first.id();
    // The holder is written with the block's first write (within 5 s).
    wait_for(60, "the first runner's lease", || {
        p.state_doc("two-co")
            .is_some_and(|d| d["data"]["metadata"]["lease"]["pid"] == pid)
    });
    let out = run(&ws, p, &["run", "two", "--now", "2026-11-22T00:10:00Z"]).exit(1);
    assert!(
        out.stderr.contains(&format!(
            "job `co` of pipeline `two` is already running: lease held by pid {pid} on "
        )) && out.stderr.contains("(prefect limit `duckhour-two-co`)"),
        "{}",
        out.stderr
    );
    // One that waits gets the job after the first.
    let waiter = ws
        .cmd(&["run", "two", "--wait", "--now", "2026-11-22T00:10:00Z"])
        .env("PREFECT_API_URL", &p.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let first = finish(first).ok();
    assert!(
        first.stdout.contains(" 48 hours (48 new, 0 redone)"),
        "{}",
        first.stdout
    );
    finish(waiter).ok();
    assert_eq!(rows_by_job(&ws), vec![vec!["co", "24", "71"]]);
    assert_eq!(
        p.checkpoint("two-co").as_deref(),
        Some("2026-11-21T23:00:00Z")
    );
    // Both released their slot.
    let (_, limit) = p.get("/v2/concurrency_limits/duckhour-two-co");
    assert_eq!(limit["active_slots"], 0, "{limit}");
}

#[test]
fn a_revoked_lease_is_noticed_at_its_next_renewal_and_nothing_is_written_after() {
    let p = prefect();
    // A 60 s lease is renewed every 15 s; the run lasts about 29 s.
    let (_slow, sample) = slow_sample("pf_lost", Duration::from_millis(600));
    let ws = Ws::new(&with_source(
        &spec("lost", "  lease: 60s", 1, &["co"]),
        &sample,
    ));
    let rec = Recorder::start(
        p.url.trim_end_matches("/api"),
        Box::new(|_: &Seen| Act::Forward),
    );
    let child = start_long_run(&ws, &format!("{}/api", rec.url), "lost");
    wait_for(60, "a few batches", || {
        p.checkpoint("lost-co")
            .is_some_and(|c| c.as_str() >= "2026-11-20T03:00:00Z")
    });
    // Revoke the runner's lease as an operator (or an expiry) would: its id
    // is in the server's lease storage, the only lease on this limit.
    let (_, limit) = p.get("/v2/concurrency_limits/duckhour-lost-co");
    let limit_id = limit["id"].as_str().unwrap().to_owned();
    let lease_id = std::fs::read_dir(p.dir.join("concurrency_leases"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let text = std::fs::read_to_string(e.path()).ok()?;
            text.contains(&limit_id)
                .then(|| e.path().file_stem()?.to_str().map(str::to_owned))?
        })
        .next()
        .expect("the runner's lease file");
    assert_eq!(
        p.post(
            "/v2/concurrency_limits/decrement-with-lease",
            serde_json::json!({"lease_id": lease_id})
        ),
        204
    );
    let revoked = Instant::now();
    let out = finish(child).exit(1);
    assert!(
        out.stderr.contains("job `co` of pipeline `lost` lost its lease (prefect limit `duckhour-lost-co`: expired or revoked); stopped before its next write"),
        "{}",
        out.stderr
    );
    // The first renewal after the revocation (410) tells the runner; no
    // block write follows it (one the runner had begun as that renewal
    // went out may arrive just after it).
    let seen = rec.seen();
    let refused = seen
        .iter()
        .find(|s| s.path.contains("/renew") && s.at > revoked)
        .expect("a renewal after the revocation");
    assert!(
        matches!(refused.status, 404 | 410),
        "{}: {}",
        refused.path,
        refused.status
    );
    assert!(
        refused.at < revoked + Duration::from_secs(16),
        "renewed {:?} after the revocation",
        refused.at - revoked
    );
    let late: Vec<&Seen> = seen
        .iter()
        .filter(|s| {
            s.path.contains("/block_documents")
                && s.method != "GET"
                && !s.path.contains("/filter")
                && s.at > refused.at + Duration::from_secs(1)
        })
        .collect();
    assert!(
        late.is_empty(),
        "written after the lease was lost: {:?}",
        late.iter().map(|s| &s.path).collect::<Vec<_>>()
    );
    // The checkpoint never passes the rows: every hour up to it is loaded.
    let cp = p.checkpoint("lost-co").unwrap();
    assert!(
        cp.as_str() < "2026-11-21T23:00:00Z",
        "the run ended before noticing: {cp}"
    );
    let loaded: i64 = ws.query(
        "wh.duckdb",
        &format!(
            "SELECT count(DISTINCT hour_start) FROM pollutant_hourly WHERE hour_start <= '{}'",
            &cp[..19]
        ),
    )[0][0]
        .parse()
        .unwrap();
    let hours =
        (cp[8..10].parse::<i64>().unwrap() - 20) * 24 + cp[11..13].parse::<i64>().unwrap() + 1;
    assert_eq!(loaded, hours.min(24), "checkpoint {cp}");
    // The next run takes over from the checkpoint and finishes the job.
    next_run_completes(&ws, p, "lost", &["co"]);
}

#[test]
fn server_restarted_mid_run() {
    let p = Prefect::start("restart");
    let (_slow, sample) = slow_sample("pf_restart", Duration::from_millis(300));
    let ws = Ws::new(&with_source(&spec("rs", "", 1, &["co", "no2"]), &sample));
    let mut child = start_long_run(&ws, &p.url, "rs");
    wait_for(60, "a few batches", || {
        p.checkpoint("rs-co")
            .is_some_and(|c| c.as_str() >= "2026-11-20T02:00:00Z")
    });
    let before = p.checkpoint("rs-co").unwrap();
    assert!(
        before.as_str() < "2026-11-21T23:00:00Z",
        "the run ended before the restart"
    );
    p.down();
    std::thread::sleep(Duration::from_secs(1));
    p.up();
    // The checkpoint, read while the run goes on, only moves forward.
    let mut seen = vec![before];
    while child.try_wait().unwrap().is_none() {
        if let Some(c) = p.checkpoint("rs-co") {
            assert!(c >= *seen.last().unwrap(), "moved back: {seen:?} then {c}");
            seen.push(c);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = finish(child);
    eprintln!("run across the restart: exit {}", out.code);
    // Either the run rode out the restart (retries) or it failed naming Prefect.
    if out.code != 0 {
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains("prefect http://127.0.0.1"), "{out:?}");
    }
    for job in ["co", "no2"] {
        // Never past a missing hour: every hour up to the checkpoint is in the sink.
        if let Some(cp) = p.checkpoint(&format!("rs-{job}")) {
            let n: i64 = ws.query(
                "wh.duckdb",
                &format!(
                    "SELECT count(DISTINCT hour_start) FROM pollutant_hourly WHERE pollutant = '{job}' AND hour_start <= '{}'",
                    &cp[..19]
                ),
            )[0][0]
                .parse()
                .unwrap();
            let hours = (cp[8..10].parse::<i64>().unwrap() - 20) * 24
                + cp[11..13].parse::<i64>().unwrap()
                + 1;
            assert_eq!(n, hours.min(24), "{job}: checkpoint {cp}");
        }
    }
    // Whatever happened, the next run completes with exact rows.
    next_run_completes(&ws, &p, "rs", &["co", "no2"]);
}

/// The next run (waiting for the lease if needed) completes the pipeline's
/// two days: every job has its 24 hours and 71 rows, checkpoint at the end.
fn next_run_completes(ws: &Ws, p: &Prefect, pipeline: &str, jobs: &[&str]) {
    run(
        ws,
        p,
        &["run", pipeline, "--wait", "--now", "2026-11-22T00:10:00Z"],
    )
    .ok();
    let want: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| vec![j.to_string(), "24".into(), "71".into()])
        .collect();
    assert_eq!(rows_by_job(ws), want);
    for j in jobs {
        assert_eq!(
            p.checkpoint(&format!("{pipeline}-{j}")).as_deref(),
            Some("2026-11-21T23:00:00Z"),
            "{j}"
        );
    }
}

/// Renewals dropped by a proxy while the run goes on (its source slowed
/// so that the run outlasts its lease): the runner stops before its next
/// write once its last renewal is three quarters of the lease old, before
/// the server can give the job to anyone else; a second runner then takes
/// the job and the rows and checkpoint are exact. On today's main the
/// runner kept writing its ledger and run record from its cached document.
#[test]
fn a_runner_that_cannot_renew_stops_writing_before_its_lease_expires() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let p = prefect();
    let dropping = std::sync::Arc::new(AtomicBool::new(false));
    let d = dropping.clone();
    let rec = Recorder::start(
        p.url.trim_end_matches("/api"),
        Box::new(move |s: &Seen| {
            if s.path.contains("/renew") && d.load(SeqCst) {
                return Act::Answer(503, r#"{"detail":"renewal dropped by the test"}"#.into());
            }
            Act::Forward
        }),
    );
    // Slowed so that the run (about 72 s) outlasts its lease.
    let (_slow, sample) = slow_sample("pf_expiry", Duration::from_millis(1500));
    let ws = Ws::new(&with_source(
        &spec("expiry", "  lease: 60s", 1, &["co"]),
        &sample,
    ));
    let via_proxy = format!("{}/api", rec.url);
    let child = ws
        .cmd(&[
            "backfill",
            "expiry",
            "--from",
            "2026-11-20T00:00:00Z",
            "--to",
            "2026-11-22T00:00:00Z",
            "--now",
            "2026-11-22T00:10:00Z",
        ])
        .env("PREFECT_API_URL", &via_proxy)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(90, "a few batches", || {
        p.checkpoint("expiry-co")
            .is_some_and(|c| c.as_str() >= "2026-11-20T02:00:00Z")
    });
    dropping.store(true, SeqCst);
    let dropped_at = Instant::now();
    let out = finish(child).exit(1);
    assert!(
        out.stderr.contains("error: job `co`: job `co` of pipeline `expiry` lost its lease (prefect limit `duckhour-expiry-co`: not renewed for 45s, it may have expired); stopped before its next write"),
        "{out:?}"
    );
    let seen = rec.seen();
    let last_renewal = seen
        .iter()
        // The take counts as the first renewal (the drop may come before the second).
        .filter(|s| {
            (s.path.contains("/renew") || s.path.ends_with("/increment-with-lease"))
                && (200..300).contains(&s.status)
        })
        .map(|s| s.at)
        .max()
        .expect("the lease taken");
    let last_write = seen
        .iter()
        .filter(|s| {
            s.method != "GET" && s.path.contains("/block_documents") && !s.path.contains("/filter")
        })
        .map(|s| s.at)
        .max()
        .unwrap();
    // It went on while the lease was good, and wrote nothing once it may
    // have expired (the server keeps it 60 s after the last renewal).
    assert!(last_write > dropped_at, "no write after the drop");
    let margin = last_renewal + Duration::from_secs(60) - last_write;
    eprintln!("last block write {margin:?} before the lease could expire");
    // The runner checks 45 s after its last renewal; a write it began just
    // before may arrive later on a loaded machine (2.6 s late was seen), and
    // the margin to the server's 60 s is there for that.
    assert!(
        last_write < last_renewal + Duration::from_secs(57),
        "wrote {:?} after its last renewal",
        last_write - last_renewal
    );
    let cp = p.checkpoint("expiry-co").unwrap();
    assert!(cp.as_str() < "2026-11-21T23:00:00Z", "{cp}");
    // A second runner takes the job once the server lets the lease go.
    next_run_completes(&ws, p, "expiry", &["co"]);
}

/// The server grants the lease but its answer is lost (a gateway answers
/// 502 and the client retries): the retry meets the runner's own orphaned
/// slot (423).
/// The runner keeps trying until that slot expires instead of reporting
/// itself as "another runner", and then runs the job.
#[test]
fn a_lease_granted_but_not_answered_does_not_block_its_own_runner() {
    // A server of its own: under the other tests' load, SQLite answers 503
    // ("database is locked") to the very take this test means to be granted.
    let own = Prefect::start("orphan");
    let p = &own;
    // A server still warming up answers 503 itself: wait until it grants.
    wait_for(60, "the server to create limits", || {
        matches!(
            p.post(
                "/v2/concurrency_limits/",
                serde_json::json!({"name": "warm-up", "limit": 1})
            ),
            201 | 409
        )
    });
    wait_for(60, "the server to grant leases", || {
        p.post(
            "/v2/concurrency_limits/increment-with-lease",
            serde_json::json!({"names": ["warm-up"], "slots": 1, "mode": "concurrency", "lease_duration": 60}),
        ) == 200
    });
    // Lose the answer to the first take the server grants; one it refuses
    // itself (SQLite's 503 under load) passes through and is retried.
    type Log = std::sync::Arc<std::sync::Mutex<Vec<Seen>>>;
    let log: std::sync::Arc<std::sync::OnceLock<Log>> = Default::default();
    let l = log.clone();
    let is_take = |s: &Seen| s.path.ends_with("/increment-with-lease");
    let rec = Recorder::start(
        p.url.trim_end_matches("/api"),
        Box::new(move |s: &Seen| {
            let lost = l.get().is_some_and(|seen| {
                let seen = seen.lock().unwrap();
                seen.iter()
                    .any(|t| is_take(t) && (t.status, t.upstream) == (502, 200))
            });
            if is_take(s) && !lost {
                return Act::ForwardThenAnswer(502, r#"{"detail":"Bad Gateway"}"#.into());
            }
            Act::Forward
        }),
    );
    log.set(rec.seen.clone()).unwrap();
    // The job's limit exists, as after its first run (the first run makes
    // it once its take finds none).
    assert_eq!(
        p.post(
            "/v2/concurrency_limits/",
            serde_json::json!({"name": "duckhour-orphan-co", "limit": 1})
        ),
        201
    );
    let ws = Ws::new(&spec("orphan", "  lease: 60s", 24, &["co"]));
    let via_proxy = format!("{}/api", rec.url);
    ws.run_env(
        &["run", "orphan", "--now", "2026-11-21T00:10:00Z"],
        &[("PREFECT_API_URL", &via_proxy)],
    )
    .ok();
    assert_eq!(rows_by_job(&ws), vec![vec!["co", "24", "71"]]);
    let takes: Vec<(u16, u16)> = rec
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("/increment-with-lease"))
        .map(|s| (s.status, s.upstream))
        .collect();
    // The server granted a take whose answer the client saw as a 502; the
    // runner's retries then met its own slot (423) until it expired.
    let granted = takes.iter().position(|t| *t == (502, 200));
    let granted = granted.unwrap_or_else(|| panic!("no granted take was lost: {takes:?}"));
    let after: Vec<u16> = takes[granted + 1..].iter().map(|t| t.0).collect();
    assert!(after.contains(&423), "{takes:?}");
    assert_eq!(after.last(), Some(&200), "{takes:?}");
    assert_eq!(after.iter().filter(|s| **s == 200).count(), 1, "{takes:?}");
}

/// Models keep their state in `PipelineStateBlock` documents of their own,
/// which the Python class reads and writes: pending hours in `metadata`, the
/// checkpoint in `last_processed_hour`. A Python save keeps them, and a
/// model left pending there is recomputed by the next run.
#[test]
fn model_state_lives_in_blocks_the_python_class_reads() {
    let p = prefect();
    let spec = spec("mdl", "", 24, &["co", "no2"]).replace(
        "    jobs:\n",
        "    models:\n      - {name: daily_mean, grain: day}\n    jobs:\n",
    );
    let ws = Ws::new(&spec);
    let out = run(&ws, p, &["run", "mdl", "--now", "2026-11-21T00:10:00Z"]).ok();
    assert!(
        out.stdout.contains("day [2026-11-20, 2026-11-21)"),
        "{out:?}"
    );
    let got = p.python(&["load-state", "mdl-model-daily-mean"]);
    assert_eq!(got[0]["last_processed_hour"], "2026-11-20T23:00:00+00:00");
    assert_eq!(got[0]["metadata"]["pending"], serde_json::json!([]));
    assert_eq!(got[0]["metadata"]["job"], "model-daily-mean");
    let means = |ws: &Ws| {
        ws.query("wh.duckdb", "SELECT pollutant, count(*), round(sum(mean), 6) FROM daily_mean GROUP BY ALL ORDER BY ALL")
    };
    let first = means(&ws);
    assert_eq!(first.len(), 2, "{first:?}");

    // Python saves the block (as the old flows would); the pending hours survive.
    p.python(&["save-state", "mdl-model-daily-mean", "2026-11-20T23:00:00"]);
    let doc = p.state_doc("mdl-model-daily-mean").unwrap();
    assert_eq!(doc["data"]["metadata"]["pending"], serde_json::json!([]));

    // Rows removed behind duckhour's back come back when the hours are pending
    // again: a backfill of one hour recomputes that day from the sink.
    let conn = duckdb::Connection::open(ws.path("wh.duckdb")).unwrap();
    conn.execute_batch("DELETE FROM daily_mean").unwrap();
    drop(conn);
    run(
        &ws,
        p,
        &[
            "backfill",
            "mdl",
            "--from",
            "2026-11-20T05:00:00Z",
            "--to",
            "2026-11-20T06:00:00Z",
            "--now",
            "2026-11-21T00:10:00Z",
        ],
    )
    .ok();
    assert_eq!(means(&ws), first);
    let out = run(&ws, p, &["status", "mdl", "--now", "2026-11-21T00:10:00Z"]);
    assert!(
        out.stdout
            .contains("model daily_mean: checkpoint 2026-11-20T23:00:00Z")
            && out.stdout.contains("pending: none"),
        "{out:?}"
    );
}
