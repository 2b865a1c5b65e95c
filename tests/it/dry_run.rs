//! `dry-run` prints the plan, queries and SQL exactly, and writes nothing.

use crate::util::Ws;

#[test]
fn demo_dry_run_is_exact_and_writes_nothing() {
    let ws = Ws::shipped();
    let out = ws
        .run(&[
            "dry-run",
            "demo",
            "--job",
            "co",
            "--now",
            "2026-11-21T02:10:00Z",
        ])
        .ok();
    let (jobs, models) = out
        .stdout
        .split_at(out.stdout.find("\nmodel `").unwrap_or(0));
    assert_eq!(jobs, EXPECTED, "{out:?}");
    // Every model reading `co`, the keys the planned day touches, and their SQL.
    for line in [
        "model `daily_mean`: day keys in UTC, lookback 0h, reads co,no2,o3,pm10,pm25,so2 -> table `daily_mean` in sinks: local\n  pending hours in the state: none\n  recomputes day [2026-11-20, 2026-11-21) from the hourly rows of [2026-11-20T00:00:00Z, 2026-11-21T00:00:00Z)\n  sql of the first range (`daily_mean.sql`):\n",
        "  recomputes hour [2026-11-20T00:00:00Z, 2026-11-21T07:00:00Z) from the hourly rows of [2026-11-19T17:00:00Z, 2026-11-21T07:00:00Z)\n",
        "model `exceedances`: year keys in UTC, lookback 0h, reads co,no2,o3,pm10,pm25,so2 and model exceedance_days -> table `exceedances` in sinks: local\n  pending hours in the state: none\n  recomputes year [2026, 2027) from the hourly rows of [2026-01-01T00:00:00Z, 2027-01-01T00:00:00Z)\n",
        "        FROM \"model_input_exceedances_exceedance_days\"\n        WHERE year(day) >= 2026 AND year(day) < 2027\n",
    ] {
        assert!(models.contains(line), "{line}\n{out:?}");
    }
    assert_eq!(models.matches("\nmodel `").count(), 13, "{out:?}");
    assert!(!ws.path(".duckhour").exists());
    assert!(!ws.path("demo.duckdb").exists());
}

#[test]
fn hourly_dry_run_shows_influxql_without_secrets() {
    let ws = Ws::shipped();
    let out = ws
        .run_env(
            &[
                "dry-run",
                "hourly",
                "--job",
                "pm25",
                "--from",
                "2026-11-20T00:00:00Z",
                "--to",
                "2026-11-20T02:00:00Z",
                "--now",
                "2026-11-21T00:00:00Z",
            ],
            &[
                ("INFLUXDB_TOKEN", "secret-marker-1"),
                ("MOTHERDUCK_TOKEN", "secret-marker-2"),
            ],
        )
        .ok();
    // As asked from InfluxDB 1.x (MessagePack), then from any other server.
    assert!(out.stdout.contains("    SELECT \"pm25\"::field FROM \"airquality\"..\"air_quality\" WHERE time >= '2026-11-20T00:00:00Z' AND time < '2026-11-20T02:00:00Z' GROUP BY \"station\"\n    -- in CSV to a server that does not answer MessagePack (not InfluxDB 1.x):\n    SELECT \"pm25\"::field, \"station\"::tag FROM \"airquality\"..\"air_quality\" WHERE time >= '2026-11-20T00:00:00Z' AND time < '2026-11-20T02:00:00Z'\n"), "{out:?}");
    assert!(
        out.stdout
            .contains("checkpoint not read (state store: state `url`: environment variable `PREFECT_API_URL` is not set)"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("secret-marker") && !out.stderr.contains("secret-marker"));
}

const EXPECTED: &str = r#"dry-run: run of pipeline `demo` at 2026-11-21T02:10:00Z (nothing is written)
source: sample
sink: local (duckdb demo.duckdb schema main)
state: local .duckhour

job `co`: checkpoint none; last complete hour 2026-11-20T23:00:00Z
  hours: 24 (24 new, 0 redone)
  batch 1/1: [2026-11-20T00:00:00Z, 2026-11-21T00:00:00Z) 24 hours
  table `pollutant_hourly` in sinks: local
  source queries of batch 1 (1):
    scan data/sample.lp.gz for measurement "air_quality" field "co" tags [station] with time in [2026-11-20T00:00:00Z, 2026-11-21T00:00:00Z)
  sql of batch 1 (`hourly_mean.sql`):
    SELECT
        'co' AS pollutant,
        "station",
        to_timestamp(epoch_us(time) // 3600000000 * 3600) AS hour_start,
        CASE WHEN max(abs(value)) < 1e20 THEN avg(TRY_CAST(value AS DECIMAL(38, 18)))
            ELSE avg(value) END AS avg,
        min(value) AS min,
        max(value) AS max,
        bit_count(bit_or(1::UBIGINT << (epoch_us(time) // 60000000 % 60)::UBIGINT))::BIGINT AS n_minutes,
        n_minutes / 60.0 AS coverage,
        coverage >= 0.75 AS valid,
        'mg/m3' AS unit,
        'sample' AS source,
        current_timestamp AS loaded_at
    FROM "stage_co"
    WHERE time >= TIMESTAMPTZ '2026-11-20T00:00:00Z' AND time < TIMESTAMPTZ '2026-11-21T00:00:00Z'
    GROUP BY ALL
    ORDER BY hour_start, "station"
"#;
