//! Tests against Prefect Cloud's documented answers, replayed by the
//! stand-in of [`cloud`] in front of the real local Prefect server.

mod cloud;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{prefect, slow_sample, with_source, Act, Prefect, Seen, Ws};
use cloud::{detail, Budget, Cloud, MEMBER, NO_SECRETS, OUTSIDER, RUNNER, VIEWER};

/// A two-job pipeline `name` over the sample day, its state and reports in
/// the stand-in's workspace through key `key`.
fn spec(name: &str, key: &str) -> String {
    format!(
        "state: {{type: prefect, url: '${{env:PREFECT_API_URL}}', api_key: {key}, lease: 60s}}
sources:
  sample: {{type: line_protocol, path: data/sample.lp.gz}}
sinks:
  wh: {{type: duckdb, path: wh.duckdb}}
pipelines:
  {name}:
    source: sample
    sinks: [wh]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    batch_hours: 1
    jobs: [{{name: co}}, {{name: no2}}]
"
    )
}

fn flow_runs(p: &Prefect, flow: &str) -> Vec<serde_json::Value> {
    p.flow_runs(flow)
}

/// The states of a flow run's task runs, by name.
fn task_states(p: &Prefect, flow_run: &str) -> Vec<(String, String)> {
    let runs = p.task_runs(flow_run).into_iter();
    runs.map(|(name, state, _)| (name, state)).collect()
}

fn rows_by_job(ws: &Ws) -> Vec<Vec<String>> {
    ws.query(
        "wh.duckdb",
        "SELECT pollutant, count(DISTINCT hour_start), count(*), count(*) = count(DISTINCT (station, hour_start)) FROM pollutant_hourly GROUP BY pollutant ORDER BY pollutant",
    )
}

/// `backfill NAME` over the sample day (2026-11-20), with `env`.
fn backfill_sample_day(ws: &Ws, name: &str, env: &[(&str, &str)]) -> crate::util::Out {
    ws.run_env(
        &[
            "backfill",
            name,
            "--from",
            "2026-11-20T00:00:00Z",
            "--to",
            "2026-11-21T00:00:00Z",
            "--now",
            "2026-11-21T00:10:00Z",
        ],
        env,
    )
}

/// Pipeline `name` holds the sample day exactly: both jobs' 24 hours in
/// the sink, and their checkpoints at its last hour.
fn sample_day_loaded(p: &Prefect, ws: &Ws, name: &str) {
    assert_eq!(
        rows_by_job(ws),
        vec![
            vec!["co", "24", "71", "true"],
            vec!["no2", "24", "71", "true"]
        ]
    );
    for job in ["co", "no2"] {
        assert_eq!(
            p.checkpoint(&format!("{name}-{job}")).as_deref(),
            Some("2026-11-20T23:00:00Z")
        );
    }
}

/// Pipeline `name`'s run `out` loaded the sample day exactly (both jobs, 24
/// hours, checkpoints at its last hour) and reported it: one flow run and
/// its task runs COMPLETED, every log line stored.
fn sample_day_reported(p: &Prefect, cloud: &Cloud, ws: &Ws, out: &crate::util::Out, name: &str) {
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("could not report"), "{}", out.stderr);
    sample_day_loaded(p, ws, name);
    let id = completed_run(p, name);
    every_log_line_stored(p, cloud, &id);
}

/// The one flow run of `flow`, COMPLETED, and both its task runs: its id.
fn completed_run(p: &Prefect, flow: &str) -> String {
    let runs = flow_runs(p, flow);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["state"]["type"], "COMPLETED", "{}", runs[0]);
    let id = runs[0]["id"].as_str().unwrap();
    assert_eq!(
        task_states(p, id),
        vec![
            ("co".into(), "COMPLETED".into()),
            ("no2".into(), "COMPLETED".into())
        ]
    );
    id.to_owned()
}

/// Every log line the stand-in took reached the server, for flow run `id`.
fn every_log_line_stored(p: &Prefect, cloud: &Cloud, id: &str) {
    let sent: usize = cloud
        .rec
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("/logs/") && s.status == 201)
        .map(|s| s.json().as_array().map_or(0, Vec::len))
        .sum();
    // (The server stores logs a moment after it takes them.)
    let t1 = Instant::now();
    let stored = loop {
        let stored = p.post_json(
            "/logs/filter",
            serde_json::json!({"logs": {"flow_run_id": {"any_": [id]}}, "limit": 200}),
        );
        let n = stored.as_array().unwrap().len();
        if n >= sent || t1.elapsed() > Duration::from_secs(30) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(sent > 0 && stored == sent, "{sent} sent, {stored} stored");
}

/// Throttled all along (three requests and 120 log lines or events a 5 s
/// window, the rest of the budget taken by other clients), a run and then a
/// backfill long enough for lease renewals (60 s leases, renewed every 15
/// s, its source slowed to about 24 s) finish with exact rows and
/// checkpoints, every flow run and task run in its final state, every log
/// line sent, and no lease lost, though renewals were among the requests
/// answered 429.
#[test]
fn throttled_by_cloud_budgets_runs_finish_exact_and_lose_no_lease() {
    let p = prefect();
    let cloud = Cloud::throttled(p, 3);
    let env = [("PREFECT_API_URL", cloud.url.as_str())];
    let ws = Ws::new(&spec("cloudrun", MEMBER));
    let out = ws.run_env(&["run", "cloudrun", "--now", "2026-11-21T00:10:00Z"], &env);
    sample_day_reported(p, &cloud, &ws, &out, "cloudrun");
    assert!(cloud.answered(429) > 0, "the run was never throttled");

    // A backfill that outlasts a renewal period, still throttled.
    let (_slow, sample) = slow_sample("pc_throttled", Duration::from_millis(1000));
    let ws = Ws::new(&with_source(&spec("cloudfill", MEMBER), &sample));
    let t0 = Instant::now();
    let out = backfill_sample_day(&ws, "cloudfill", &env).ok();
    assert!(!out.stderr.contains("lost its lease"), "{}", out.stderr);
    assert!(t0.elapsed() > Duration::from_secs(20), "{:?}", t0.elapsed());
    assert_eq!(
        rows_by_job(&ws),
        vec![
            vec!["co", "24", "71", "true"],
            vec!["no2", "24", "71", "true"]
        ]
    );
    assert_eq!(
        p.checkpoint("cloudfill-no2").as_deref(),
        Some("2026-11-20T23:00:00Z")
    );
    let runs = flow_runs(p, "cloudfill");
    assert_eq!(runs[0]["state"]["type"], "COMPLETED", "{}", runs[0]);
    let seen = cloud.rec.seen();
    let renewals: Vec<u16> = seen
        .iter()
        .filter(|s| s.path.ends_with("/renew"))
        .map(|s| s.status)
        .collect();
    // Renewals were throttled too, and went through after their Retry-After.
    assert!(renewals.contains(&429), "{renewals:?}");
    assert!(
        renewals.contains(&200) || renewals.contains(&204),
        "{renewals:?}"
    );
    eprintln!(
        "renewals answered {renewals:?}; {} answers 429 in all",
        cloud.answered(429)
    );
}

/// Keys Cloud refuses, each failing at once, before any data work, with
/// an error naming the cause and what to change; and a block schema Cloud
/// answers 409 for, read back.
#[test]
fn cloud_refusals_fail_at_once_and_name_the_cause() {
    let p = prefect();
    let cloud = Cloud::start(p, None);
    let env = [("PREFECT_API_URL", cloud.url.as_str())];

    // A key of another workspace: 404 on every path.
    let ws = Ws::new(&spec("cloudout", OUTSIDER));
    let t0 = Instant::now();
    let out = ws
        .run_env(&["run", "cloudout", "--now", "2026-11-21T00:10:00Z"], &env)
        .exit(1);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert!(
        out.stderr
            .contains("not found (404) on a path every Prefect server and workspace has")
            && out
                .stderr
                .contains("or the API key is not a member of that workspace"),
        "{}",
        out.stderr
    );
    assert!(!ws.path("wh.duckdb").exists(), "data work began");
    assert!(!out.stderr.contains(OUTSIDER), "{}", out.stderr);

    // A role that may not create blocks, on a pipeline's first run.
    let run_at = |ws: &Ws, now: &str| ws.run_env(&["run", "cloudrunner", "--now", now], &env);
    let ws = Ws::new(&spec("cloudrunner", RUNNER));
    let out = run_at(&ws, "2026-11-21T00:10:00Z").exit(1);
    assert!(
        out.stderr.contains(
            "forbidden (403): the API key's role may not do this; give it the Developer role"
        ),
        "{}",
        out.stderr
    );
    assert!(!ws.path("wh.duckdb").exists(), "data work began");
    assert_eq!(p.state_doc("cloudrunner-co"), None);

    // The same role on blocks that exist (a member's key made them): the
    // run stops before any sink file changes, naming the role. On main
    // before this it failed only at the first checkpoint write, after
    // the first batch was in the sink.
    let member = Ws::new(&spec("cloudrunner", MEMBER));
    run_at(&member, "2026-11-20T12:10:00Z").ok();
    std::fs::copy(member.path("wh.duckdb"), ws.path("wh.duckdb")).unwrap();
    let before = std::fs::read(ws.path("wh.duckdb")).unwrap();
    let cp = p.checkpoint("cloudrunner-co");
    assert_eq!(cp.as_deref(), Some("2026-11-20T11:00:00Z"));
    let out = run_at(&ws, "2026-11-21T00:10:00Z").exit(1);
    assert!(
        out.stderr.contains("block `cloudrunner-co`: forbidden (403): the API key's role may not do this; give it the Developer role"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read(ws.path("wh.duckdb")).unwrap(),
        before,
        "a sink file changed"
    );
    assert!(!ws.path("wh.duckdb.wal").exists());
    assert_eq!(p.checkpoint("cloudrunner-co"), cp);
    // Nor deploy.
    let out = ws
        .run_env(&["prefect", "deploy", "--pool", "cloud-runner"], &env)
        .exit(1);
    assert!(out.stderr.contains("forbidden (403)"), "{}", out.stderr);

    // A role that may not read secret data: the masked value is refused.
    p.python(&["save-secret", "pc-influx-password", "admin-secret"]);
    let ws = Ws::new(
        &spec("cloudmask", NO_SECRETS).replace(
            "  sample: {type: line_protocol, path: data/sample.lp.gz}\n",
            &format!(
                "  sample: {{type: influxdb, url: '{}', database: pc_mask, username: admin, password: '${{secret:pc-influx-password}}'}}\n",
                crate::util::influx_auth().url
            ),
        ),
    );
    let out = ws
        .run_env(&["run", "cloudmask", "--now", "2026-11-21T00:10:00Z"], &env)
        .exit(1);
    assert!(
        out.stderr.contains("came back masked (`********`)")
            && out.stderr.contains("Developer role"),
        "{}",
        out.stderr
    );
    assert!(!ws.path("wh.duckdb").exists(), "data work began");

    // A member's first run: the schema exists, Cloud says 409, the run
    // reads it back and completes.
    let ws = Ws::new(&spec("cloudnew", MEMBER));
    ws.run_env(&["run", "cloudnew", "--now", "2026-11-21T00:10:00Z"], &env)
        .ok();
    assert!(
        cloud
            .rec
            .seen()
            .iter()
            .any(|s| s.path.ends_with("/block_schemas/") && s.status == 409),
        "no 409 for the schema"
    );
    assert_eq!(
        p.checkpoint("cloudnew-co").as_deref(),
        Some("2026-11-20T23:00:00Z")
    );
}

/// Refusals told apart, each with Cloud's message and what to do: the
/// plan's (a Hobby-style deployment limit; a work pool type the plan does
/// not include), the key's (unknown: 401) and the role's (a Viewer, refused
/// its first write, the lease, before any data work). Prefect does not
/// publish Cloud's plan-limit texts; Prefect's own client tells them by
/// "maximum number" (`ObjectLimitReached`) and "plan does not support"
/// (`ObjectUnsupported`) in the 403's message, and these carry those words.
#[test]
fn plan_limits_unknown_keys_and_viewers_are_told_apart() {
    let p = prefect();
    let refusing = |path: &'static str, message: &'static str| {
        Cloud::with(
            p,
            None,
            Duration::from_secs(30),
            Box::new(move |s: &Seen| {
                (s.method == "POST" && s.path.ends_with(path))
                    .then(|| Act::Answer(403, detail(message)))
            }),
        )
    };
    let deploy = |cloud: &Cloud, pool: &str| {
        let ws = Ws::new(&spec("cloudplan", MEMBER));
        let env = [("PREFECT_API_URL", cloud.url.as_str())];
        ws.run_env(&["prefect", "deploy", "--pool", pool], &env)
            .exit(1)
            .stderr
    };
    let limit = "Workspace has reached the maximum number of deployments (5) allowed by its plan.";
    let err = deploy(&refusing("/deployments/", limit), "cloud-plan-limit");
    assert!(
        err.contains("deployment `cloudplan`: refused by the workspace's plan (403), not by the key's role: a limit of the plan is reached; delete what is no longer used")
            && err.contains(&format!("Prefect said: \"{limit}\"")),
        "{err}"
    );
    assert!(!err.contains("Developer role"), "{err}");
    let pools = "Your plan does not support work pools of type 'duckhour'.";
    let err = deploy(&refusing("/work_pools/", pools), "cloud-plan-pool");
    assert!(
        err.contains("work pool `cloud-plan-pool`: refused by the workspace's plan (403), not by the key's role: the plan does not include this; upgrade the plan, or do without it")
            && err.contains(&format!("Prefect said: \"{pools}\"")),
        "{err}"
    );

    let cloud = Cloud::start(p, None);
    let env = [("PREFECT_API_URL", cloud.url.as_str())];
    for (name, key, said) in [
        (
            "cloudtypo",
            "pnu_mistyped",
            "unauthorized (401): no API key, or one Prefect does not know (mistyped, deleted or expired); check `api_key`; Prefect said: \"Unauthorized\"",
        ),
        (
            "cloudviewer",
            VIEWER,
            "forbidden (403): the API key's role may not do this; give it the Developer role, or a custom role that may (README, \"Prefect Cloud\"); Prefect said: \"Forbidden: your role does not allow this action\"",
        ),
    ] {
        let ws = Ws::new(&spec(name, key));
        let out = ws
            .run_env(&["run", name, "--now", "2026-11-21T00:10:00Z"], &env)
            .exit(1);
        assert!(out.stderr.contains(said), "{}", out.stderr);
        assert!(!out.stderr.contains(key), "{}", out.stderr);
        assert!(!ws.path("wh.duckdb").exists(), "data work began");
        assert_eq!(p.state_doc(&format!("{name}-co")), None);
    }
    // No key at all: 401 too.
    let ws = Ws::new(&spec("cloudnokey", MEMBER).replace(&format!("api_key: {MEMBER}, "), ""));
    let out = ws
        .run_env(
            &["run", "cloudnokey", "--now", "2026-11-21T00:10:00Z"],
            &env,
        )
        .exit(1);
    assert!(
        out.stderr.contains("unauthorized (401): no API key"),
        "{}",
        out.stderr
    );
    assert!(!ws.path("wh.duckdb").exists(), "data work began");
}

/// A worker serving a `prefect backfill`'s flow runs (one per job) through
/// the stand-in, throttled (six requests a 5 s window, its own polls
/// included): both flow runs complete, each job's task run too, and the
/// rows and checkpoints are exact. Run again, `prefect backfill` makes no
/// second set of flow runs.
#[test]
fn a_throttled_worker_serves_a_backfills_flow_runs() {
    let p = prefect();
    let cloud = Cloud::throttled(p, 6);
    let env = [("PREFECT_API_URL", cloud.url.as_str())];
    let ws = Ws::new(&spec("cloudwork", MEMBER));
    ws.run_env(&["prefect", "deploy", "--pool", "cloud-work"], &env)
        .ok();
    let backfill = [
        "prefect",
        "backfill",
        "cloudwork",
        "--from",
        "2026-11-20T00:00:00Z",
        "--to",
        "2026-11-21T00:00:00Z",
    ];
    ws.run_env(&backfill, &env).ok();
    ws.run_env(&backfill, &env).ok();
    assert_eq!(flow_runs(p, "cloudwork").len(), 2);
    let worker = ws
        .cmd(&[
            "prefect",
            "worker",
            "--pool",
            "cloud-work",
            "--name",
            "cloud-worker",
            "--poll",
            "1",
        ])
        .env("PREFECT_API_URL", &cloud.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let done = loop {
        let runs = flow_runs(p, "cloudwork");
        let ended: Vec<&str> = runs
            .iter()
            .filter_map(|r| r["state"]["type"].as_str())
            .filter(|s| ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"].contains(s))
            .collect();
        if ended.len() == 2 || t0.elapsed() > Duration::from_secs(240) {
            break runs;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    crate::util::sigterm(worker.id());
    let out = worker.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for r in &done {
        assert_eq!(r["state"]["type"], "COMPLETED", "{r}\n{stderr}");
        let id = r["id"].as_str().unwrap();
        assert!(
            task_states(p, id).iter().all(|(_, s)| s == "COMPLETED"),
            "{:?}",
            task_states(p, id)
        );
    }
    sample_day_loaded(p, &ws, "cloudwork");
    assert!(cloud.answered(429) > 0, "never throttled");
}

/// A month's backfill (two stations, one-day batches) with the shortest
/// lease the spec allows (60 s), through the stand-in at Cloud's own
/// scale: windows of a minute, 12 requests and 200 log lines or events in
/// each, every 429 telling the client to come back when the minute ends
/// (up to 60 s). Renewals are among the requests told to wait most of a
/// minute, more than the 45 s a 60 s lease was trusted for before (on main
/// before this, the lease was lost and the run failed): exact hourly rows
/// and checkpoints, no lease lost, its flow run and task runs COMPLETED.
/// The suite's one test that waits out Cloud's real windows (~3 min).
#[test]
fn a_month_backfill_throttled_by_the_minute_loses_no_lease() {
    let p = prefect();
    let ix = crate::util::influx();
    ix.create_db("pc_month");
    // 2026-10-01 .. 2026-10-31, every minute, constant values: every hourly
    // mean is exactly the value.
    let t0 = 1_790_812_800i64; // 2026-10-01T00:00:00Z
    let mut lines = Vec::new();
    for m in 0..30 * 24 * 60 {
        for st in ["s1", "s2"] {
            lines.push(format!(
                "air_quality,station={st} co=0.5,no2=20 {}",
                (t0 + m * 60) * 1_000_000_000
            ));
        }
    }
    for chunk in lines.chunks(10_000) {
        ix.write("pc_month", &chunk.join("\n"));
    }
    let cloud = Cloud::start(
        p,
        Some(Budget {
            window: Duration::from_secs(60),
            requests: 12,
            lines: 200,
        }),
    );
    let env = [("PREFECT_API_URL", cloud.url.as_str())];
    let spec = spec("cloudmonth", MEMBER)
        .replace(
            "  sample: {type: line_protocol, path: data/sample.lp.gz}\n",
            &format!(
                "  sample: {{type: influxdb, url: '{}', database: pc_month}}\n",
                ix.url
            ),
        )
        .replace("start: 2026-11-20T00:00:00Z", "start: 2026-10-01T00:00:00Z")
        .replace("batch_hours: 1", "batch_hours: 24");
    let ws = Ws::new(&spec);
    let out = ws
        .run_env(
            &[
                "backfill",
                "cloudmonth",
                "--from",
                "2026-10-01T00:00:00Z",
                "--to",
                "2026-10-31T00:00:00Z",
                "--now",
                "2026-10-31T00:10:00Z",
            ],
            &env,
        )
        .ok();
    assert!(!out.stderr.contains("could not report"), "{}", out.stderr);
    assert!(!out.stderr.contains("lease"), "{}", out.stderr);
    assert_eq!(
        ws.query(
            "wh.duckdb",
            "SELECT pollutant, count(DISTINCT hour_start), count(*), count(*) = count(DISTINCT (station, hour_start)), min(avg), max(avg) FROM pollutant_hourly GROUP BY pollutant ORDER BY pollutant",
        ),
        vec![
            vec!["co", "720", "1440", "true", "0.5", "0.5"],
            vec!["no2", "720", "1440", "true", "20.0", "20.0"]
        ]
    );
    for job in ["co", "no2"] {
        assert_eq!(
            p.checkpoint(&format!("cloudmonth-{job}")).as_deref(),
            Some("2026-10-30T23:00:00Z")
        );
    }
    completed_run(p, "cloudmonth");
    // Renewals were throttled, and between two that the server took (the
    // take counts as the first) more than 45 s passed at least once: the
    // time a 60 s lease was trusted for before.
    let seen = cloud.rec.seen();
    let keeps: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.ends_with("/renew") || s.path.ends_with("/increment-with-lease"))
        .collect();
    let throttled = keeps.iter().filter(|r| r.status == 429).count();
    let taken: Vec<Instant> = keeps
        .iter()
        .filter(|r| [200, 204].contains(&r.status))
        .map(|r| r.at)
        .collect();
    let gaps: Vec<f64> = taken
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    eprintln!(
        "{} requests, {} answered 429; lease calls {:?}; between those taken {gaps:?}",
        seen.len(),
        cloud.answered(429),
        keeps.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(throttled > 0, "no renewal was throttled");
    assert!(gaps.iter().any(|g| *g > 45.0), "{gaps:?}");
    // Asked for the lease plus Cloud's minute, every time.
    let asked: Vec<u64> = seen
        .iter()
        .filter(|s| s.path.ends_with("/increment-with-lease") || s.path.ends_with("/renew"))
        .map(|s| s.json()["lease_duration"].as_u64().unwrap())
        .collect();
    assert!(
        !asked.is_empty() && asked.iter().all(|d| *d == 120),
        "{asked:?}"
    );
}

/// A pooled connection that died without a word (a NAT or a load balancer
/// dropped it: the stand-in reads the renewal and never answers) does not
/// stall the lease: the renewal gives the attempt a sixteenth of the lease
/// (3.75 s here) and goes again at once on another connection, within the
/// same renewal. On main before this the attempt had an eighth, with no
/// time left for another, and the next try came a quarter of the lease
/// later. duckhour speaks HTTP/1.1 to Prefect, where a request that timed
/// out takes its connection with it; this stand-in speaks plain HTTP/1.1
/// either way (HTTP/2 is negotiated over TLS only), so it shows the
/// renewal's recovery, not the protocol choice.
#[test]
fn a_dead_pooled_connection_does_not_stall_a_renewal() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let p = prefect();
    let stalled = Arc::new(AtomicBool::new(false));
    let once = stalled.clone();
    let cloud = Cloud::with(
        p,
        None,
        Duration::from_secs(30),
        Box::new(move |s: &Seen| {
            let dead = s.path.ends_with("/renew")
                && s.on_connection > 1
                && !once.swap(true, Ordering::SeqCst);
            dead.then_some(Act::Stall)
        }),
    );
    let env = [("PREFECT_API_URL", cloud.url.as_str())];
    let (_slow, sample) = slow_sample("pc_dead", Duration::from_millis(1000));
    let ws = Ws::new(&with_source(&spec("clouddead", MEMBER), &sample));
    let out = backfill_sample_day(&ws, "clouddead", &env);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("lease"), "{}", out.stderr);
    assert!(
        stalled.load(Ordering::SeqCst),
        "no renewal met the dead connection"
    );
    let seen = cloud.rec.seen();
    let renewals: Vec<&Seen> = seen.iter().filter(|s| s.path.ends_with("/renew")).collect();
    let dead = renewals.iter().position(|r| r.status == 0).unwrap();
    let next = renewals
        .get(dead + 1)
        .expect("no renewal after the dead one");
    let after = next.at - renewals[dead].at;
    // Sent again on another connection (the dead one still holds the
    // first) and taken, 3.75 s and a short backoff later.
    assert!(
        after < Duration::from_secs(6) && [200, 204].contains(&next.status),
        "{after:?} {next:?}"
    );
    assert_eq!(
        rows_by_job(&ws),
        vec![
            vec!["co", "24", "71", "true"],
            vec!["no2", "24", "71", "true"]
        ]
    );
    completed_run(p, "clouddead");
    let status = ws.run_env(&["status"], &env).ok().stdout;
    assert_eq!(
        status
            .matches("    zombie detection: Prefect took the last run's heartbeats (")
            .count(),
        2,
        "{status}"
    );
}

/// Cloud's load balancer closes connections idle for 30 s; here (scaled)
/// for 300 ms, against a backfill whose source answers each query after
/// 600 ms, so duckhour finds its pooled connections closed again and
/// again (the race between its reuse and the close included): the
/// backfill is exact, its flow run and task runs complete, and every log
/// line arrives.
#[test]
fn connections_closed_by_clouds_load_balancer_cost_nothing() {
    let p = prefect();
    let cloud = Cloud::closing_idle(p, None, Duration::from_millis(300));
    let env = [("PREFECT_API_URL", cloud.url.as_str())];
    let (_slow, sample) = slow_sample("pc_idle", Duration::from_millis(600));
    let ws = Ws::new(&with_source(&spec("cloudidle", MEMBER), &sample));
    let out = backfill_sample_day(&ws, "cloudidle", &env);
    sample_day_reported(p, &cloud, &ws, &out, "cloudidle");
    let closed = cloud
        .rec
        .idle_closed
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(closed >= 3, "the stand-in closed {closed} idle connections");
    eprintln!(
        "{closed} idle connections closed, {} requests",
        cloud.rec.seen().len()
    );
}

/// Cloud refuses a whole log batch (422) when one message is over 25,000
/// characters. A job failing with a 30,000-character error (its template's
/// `error()`) is logged and reported shortened: no batch is refused, every
/// log line arrives, the failing job's task run is FAILED with the start of
/// its error, the other job's COMPLETED.
#[test]
fn an_error_longer_than_clouds_log_limit_arrives_shortened() {
    let p = prefect();
    let cloud = Cloud::start(p, None);
    let env = [("PREFECT_API_URL", cloud.url.as_str())];
    let ws =
        Ws::new(&spec("cloudlong", MEMBER).replace("{name: co}", "{name: co, template: long.sql}"));
    ws.write(
        "sql/long.sql",
        "SELECT 'co' AS pollutant, to_timestamp(epoch_us(time) // 3600000000 * 3600) AS hour_start, \
         avg(value) + error('long failure ' || repeat('x', 30000))::DOUBLE AS avg \
         FROM {{ staging }} GROUP BY ALL",
    );
    let out = ws.run_env(&["run", "cloudlong", "--now", "2026-11-21T00:10:00Z"], &env);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("long failure xxxx"), "{}", out.stderr);
    assert!(!out.stderr.contains("could not report"), "{}", out.stderr);
    let seen = cloud.rec.seen();
    let sent: Vec<usize> = seen
        .iter()
        .filter(|s| s.path.ends_with("/logs/"))
        .flat_map(|s| s.json().as_array().cloned().unwrap_or_default())
        .filter_map(|l| l["message"].as_str().map(|m| m.chars().count()))
        .collect();
    assert!(!sent.is_empty());
    assert!(
        sent.iter().all(|&n| n <= 4001),
        "a log message of {:?} characters was sent",
        sent.iter().max()
    );
    assert_eq!(cloud.answered(422), 0);
    let runs = flow_runs(p, "cloudlong");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let id = runs[0]["id"].as_str().unwrap();
    assert_eq!(
        task_states(p, id),
        vec![
            ("co".into(), "FAILED".into()),
            ("no2".into(), "COMPLETED".into())
        ]
    );
    assert_eq!(runs[0]["state"]["type"], "FAILED", "{}", runs[0]);
    every_log_line_stored(p, &cloud, id);
    let stored = p.post_json(
        "/logs/filter",
        serde_json::json!({"logs": {"flow_run_id": {"any_": [id]}}, "limit": 200}),
    );
    assert!(
        stored.as_array().unwrap().iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("long failure xxxx"))),
        "{stored}"
    );
}

/// The flow run's final state meets a 422 (its message refused), then a
/// 30 s spell in which Cloud's load balancer answers every request 502,
/// 503, 504 or 408: the state is sent again with its message cut, then
/// offered until the spell is over, and the flow run ends COMPLETED with
/// its task runs. On main before this the run stopped reporting at the
/// 422 and the flow run stayed RUNNING.
#[test]
fn a_final_state_refused_then_met_by_a_bad_minute_still_arrives() {
    let p = prefect();
    let spell: Arc<Mutex<Option<Instant>>> = Arc::default();
    let s2 = spell.clone();
    let cloud = Cloud::with(
        p,
        None,
        Duration::from_secs(30),
        Box::new(move |s: &Seen| {
            let mut at = s2.lock().unwrap();
            if let Some(t) = *at {
                if t.elapsed() < Duration::from_secs(30) {
                    let (code, text) = match s.at.duration_since(t).as_millis() / 700 % 4 {
                        0 => (502, "Bad Gateway"),
                        1 => (503, "Service Unavailable"),
                        2 => (504, "Gateway Timeout"),
                        _ => (408, "Request Timeout"),
                    };
                    return Some(Act::Answer(code, detail(text)));
                }
                return None;
            }
            let final_state = s.method == "POST"
                && s.path.contains("/flow_runs/")
                && s.path.ends_with("/set_state")
                && s.json()["state"]["type"] == "COMPLETED";
            if final_state {
                *at = Some(Instant::now());
                return Some(Act::Answer(
                    422,
                    serde_json::json!({"exception_message": "Invalid request received.", "exception_detail": [{"loc": ["body", "state", "message"], "msg": "too long", "type": "value_error"}]}).to_string(),
                ));
            }
            None
        }),
    );
    let env = [("PREFECT_API_URL", cloud.url.as_str())];
    let ws = Ws::new(&spec("cloudfinal", MEMBER));
    let t0 = Instant::now();
    let out = backfill_sample_day(&ws, "cloudfinal", &env);
    assert!(
        t0.elapsed() >= Duration::from_secs(30),
        "{:?}",
        t0.elapsed()
    );
    sample_day_reported(p, &cloud, &ws, &out, "cloudfinal");
    // What was offered: the refused state, the same cut down during the
    // spell (each answered by the balancer), then taken.
    let offers: Vec<(u16, serde_json::Value)> = cloud
        .rec
        .seen()
        .iter()
        .filter(|s| s.path.contains("/flow_runs/") && s.path.ends_with("/set_state"))
        .map(|s| (s.status, s.json()["state"].clone()))
        .filter(|(_, st)| st["type"] == "COMPLETED")
        .collect();
    assert_eq!(offers[0].0, 422, "{offers:?}");
    assert_eq!(offers[0].1["message"], "2 jobs, 48 hours, 142 rows");
    assert!(
        offers[1..]
            .iter()
            .all(|(_, st)| st.get("message").is_none()),
        "{offers:?}"
    );
    let (last, spell_answers) = offers[1..].split_last().unwrap();
    assert!([200, 201].contains(&last.0), "{offers:?}");
    assert!(spell_answers.len() >= 3, "{offers:?}");
    assert!(
        spell_answers
            .iter()
            .all(|(c, _)| [502, 503, 504, 408].contains(c)),
        "{offers:?}"
    );
}

/// Heartbeats Cloud refuses (403 on events, as for a role below
/// Developer): the run warns once, however many are refused, and its
/// summary artifact says how many did not arrive. On main before this a
/// refused heartbeat was logged at debug level only.
#[test]
fn refused_heartbeats_are_said_once_and_counted() {
    let p = prefect();
    let cloud = Cloud::with(
        p,
        None,
        Duration::from_secs(30),
        Box::new(|s: &Seen| {
            let beat = s.method == "POST"
                && s.path.ends_with("/events")
                && s.json()[0]["event"] == "prefect.flow-run.heartbeat";
            beat.then(|| {
                Act::Answer(
                    403,
                    detail("Forbidden: your role does not allow this action"),
                )
            })
        }),
    );
    let env = [("PREFECT_API_URL", cloud.url.as_str())];
    // A slow source and a 1 s heartbeat: several beats while the run works.
    let (_slow, sample) = slow_sample("pc_beat", Duration::from_millis(400));
    let ws = Ws::new(&with_source(
        &spec("cloudbeat", MEMBER).replace("lease: 60s}", "lease: 60s}\nprefect: {heartbeat: 1s}"),
        &sample,
    ));
    let out = backfill_sample_day(&ws, "cloudbeat", &env);
    assert_eq!(out.code, 0, "{out:?}");
    let refused = cloud
        .rec
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("/events") && s.status == 403)
        .count();
    assert!(refused >= 3, "{refused}");
    assert_eq!(
        out.stderr
            .matches("Prefect did not take this flow run's heartbeat")
            .count(),
        1,
        "{}",
        out.stderr
    );
    let runs = flow_runs(p, "cloudbeat");
    let id = runs[0]["id"].as_str().unwrap();
    let arts = p.post_json(
        "/artifacts/filter",
        serde_json::json!({"artifacts": {"flow_run_id": {"any_": [id]}}}),
    );
    let description = arts[0]["description"].as_str().unwrap();
    assert!(
        description.ends_with(&format!(
            "; heartbeats: {refused} of {refused} not taken by Prefect (zombie detection cannot see this run)"
        )),
        "{description}"
    );
    assert_eq!(runs[0]["state"]["type"], "COMPLETED");
    // And `status` says so for each job's last run.
    let status = ws.run_env(&["status"], &env).ok().stdout;
    assert_eq!(
        status
            .matches("    zombie detection blind: Prefect did not take ")
            .count(),
        2,
        "{status}"
    );
}
