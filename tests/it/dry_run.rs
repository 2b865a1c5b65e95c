//! `dry-run` prints the plan, queries and SQL exactly, and writes nothing.

use crate::util::Ws;

#[test]
fn demo_dry_run_is_exact_and_writes_nothing() {
    let ws = Ws::shipped();
    let out = ws.run(&["dry-run", "demo", "--job", "co", "--now", "2026-11-21T02:10:00Z"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, EXPECTED, "{out:?}");
    assert!(!ws.path(".duckhour").exists());
    assert!(!ws.path("demo.duckdb").exists());
}

#[test]
fn hourly_dry_run_shows_influxql_without_secrets() {
    let ws = Ws::shipped();
    let out = ws.run_env(
        &["dry-run", "hourly", "--job", "pm25", "--from", "2026-11-20T00:00:00Z", "--to", "2026-11-20T02:00:00Z", "--now", "2026-11-21T00:00:00Z"],
        &[("INFLUXDB_TOKEN", "secret-marker-1"), ("MOTHERDUCK_TOKEN", "secret-marker-2")],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("    SELECT \"pm25\"::field, \"station\"::tag FROM \"airquality\"..\"air_quality\" WHERE time >= '2026-11-20T00:00:00Z' AND time < '2026-11-20T02:00:00Z'\n"), "{out:?}");
    assert!(out.stdout.contains("checkpoint not read (remote state store)"), "{out:?}");
    assert!(!out.stdout.contains("secret-marker") && !out.stderr.contains("secret-marker"));
}

const EXPECTED: &str = "EXPECTED";
