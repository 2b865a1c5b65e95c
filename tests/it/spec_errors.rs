//! Broken specs: each gives its exact message and exit code 2.

use crate::util::{text, Ws};

const BASE: &str = "\
sources:
  sample:
    type: line_protocol
    path: data/sample.lp.gz
sinks:
  local:
    type: duckdb
    path: out.duckdb
pipelines:
  demo:
    source: sample
    sinks: [local]
    measurement: air_quality
    delay: 5m
    jobs:
      - name: co
      - name: no2
";

/// Runs `validate` on BASE with `from` replaced by `to`.
fn validate_with(from: &str, to: &str) -> crate::util::Out {
    assert!(BASE.contains(from), "{from}");
    let ws = Ws::new(&BASE.replacen(from, to, 1));
    ws.run(&["validate"])
}

fn assert_error(out: crate::util::Out, expected: &str) {
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stdout, "", "{out:?}");
    assert_eq!(out.stderr, expected, "{out:?}");
}

#[test]
fn base_spec_is_valid() {
    let ws = Ws::new(BASE);
    let out = ws.run(&["validate"]).ok();
    assert_eq!(
        out.stdout,
        "pipelines.yaml is valid: 1 pipelines, 2 jobs, 0 models, 1 sources, 1 sinks\n"
    );
}

#[test]
fn yaml_syntax_error() {
    assert_error(
        validate_with("sinks: [local]", "sinks: [local"),
        &text(
            r#"
        error: illegal placement of ':' indicator
          --> pipelines.yaml:13:16
           |
        13 |     measurement: air_quality
           |                ^
        "#,
        ),
    );
}

#[test]
fn wrong_type() {
    assert_error(
        validate_with("    delay: 5m\n", "    delay: 5m\n    batch_hours: lots\n"),
        &text(
            r#"
        error: expected a whole number, found `lots`
          --> pipelines.yaml:15:18
           |
        15 |     batch_hours: lots
           |                  ^
        "#,
        ),
    );
}

#[test]
fn unknown_key_suggests() {
    assert_error(
        validate_with("    delay: 5m", "    delya: 5m"),
        &text(
            r#"
        error: unknown key `delya`; did you mean `delay`?
          --> pipelines.yaml:14:5
           |
        14 |     delya: 5m
           |     ^
        "#,
        ),
    );
}

#[test]
fn missing_source() {
    assert_error(
        validate_with("source: sample", "source: sampel"),
        &text(
            r#"
        error: pipeline `demo`: unknown source `sampel`; did you mean `sample`?
          --> pipelines.yaml:11:13
           |
        11 |     source: sampel
           |             ^
        "#,
        ),
    );
}

#[test]
fn missing_template() {
    assert_error(
        validate_with(
            "    delay: 5m\n",
            "    delay: 5m\n    template: hourly_maen.sql\n",
        ),
        &text(
            r#"
        error: pipeline `demo`: template `hourly_maen.sql` not found in `sql`; did you mean `hourly_mean.sql`?
          --> pipelines.yaml:15:15
           |
        15 |     template: hourly_maen.sql
           |               ^
        "#,
        ),
    );
}

#[test]
fn template_syntax_error() {
    let ws = Ws::new(&BASE.replacen(
        "    delay: 5m\n",
        "    delay: 5m\n    template: broken.sql\n",
        1,
    ));
    ws.write(
        "sql/broken.sql",
        "SELECT *\nFROM {{ staging }\nWHERE true\n",
    );
    assert_error(
        ws.run(&["validate"]),
        &text(
            r#"
        error: template syntax error: unexpected `}`, expected end of variable block
          --> sql/broken.sql:2:17
          |
        2 | FROM {{ staging }
          |                 ^
        "#,
        ),
    );
}

#[test]
fn bad_duration() {
    assert_error(
        validate_with("delay: 5m", "delay: 5 minutes"),
        &text(
            r#"
        error: invalid duration `5 minutes`: expected a whole number and a unit s, m, h or d (e.g. `5m`)
          --> pipelines.yaml:14:12
           |
        14 |     delay: 5 minutes
           |            ^
        "#,
        ),
    );
}

#[test]
fn duplicate_job() {
    assert_error(
        validate_with("      - name: no2", "      - name: co"),
        &text(
            r#"
        error: pipeline `demo`: job `co` is defined twice
          --> pipelines.yaml:17:15
           |
        17 |       - name: co
           |               ^
        "#,
        ),
    );
}

#[test]
fn several_errors_are_all_reported() {
    let out = validate_with("sinks: [local]", "sinks: [locl, local]");
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("unknown sink `locl`; did you mean `local`?"),
        "{out:?}"
    );
}

#[test]
fn unknown_pipeline_is_a_usage_error() {
    let ws = Ws::new(BASE);
    let out = ws.run(&["dry-run", "dmo", "--now", "2026-11-20T03:10:00Z"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (2, "error: unknown pipeline `dmo`; did you mean `demo`?\n")
    );
    let out = ws.run(&["dry-run", "demo", "--job", "c0"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            2,
            "error: pipeline `demo` has no job `c0`; did you mean `co`?\n"
        )
    );
}

#[test]
fn missing_env_is_reported_when_a_run_needs_it_without_values() {
    let spec = BASE.replacen(
        "path: out.duckdb",
        "path: ${env:DUCKHOUR_TEST_UNSET_DIR}/out.duckdb",
        1,
    );
    let ws = Ws::new(&spec);
    // validate and dry-run do not need it
    assert_eq!(ws.run(&["validate"]).code, 0);
    let out = ws
        .run(&["run", "demo", "--now", "2026-11-20T03:10:00Z"])
        .exit(1);
    assert!(
        out.stderr.contains(
            "sink `local`: `path`: environment variable `DUCKHOUR_TEST_UNSET_DIR` is not set"
        ),
        "{out:?}"
    );
}

#[test]
fn shipped_spec_validates_and_lists() {
    let ws = Ws::shipped();
    let out = ws.run(&["validate"]).ok();
    assert_eq!(
        out.stdout,
        "pipelines.yaml is valid: 2 pipelines, 12 jobs, 26 models, 2 sources, 3 sinks\n"
    );
    let out = ws.run(&["list"]).ok();
    assert!(out.stdout.starts_with("demo  source sample -> sinks local  (6 jobs)\n  co    air_quality.co -> pollutant_hourly via hourly_mean.sql\n"), "{out:?}");
    assert!(
        out.stdout.contains(
            "hourly  source influx -> sinks motherduck, bigquery  (6 jobs, schedule `5 * * * *`)\n"
        ),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(
            "  model daily_max_8h              day (Europe/Berlin), lookback 0h, reads co,no2,o3,pm10,pm25,so2 and model rolling_8h -> daily_max_8h via daily_max_8h.sql\n  model eaqi                      hour, lookback 0h, reads co,no2,o3,pm10,pm25,so2 -> eaqi via eaqi.sql\n  model exceedance_days           day (Europe/Berlin), lookback 0h, reads co,no2,o3,pm10,pm25,so2 and models daily_mean, daily_max_8h -> exceedance_days via exceedance_days.sql\n  model exceedances               year (Europe/Berlin), lookback 0h, reads co,no2,o3,pm10,pm25,so2 and model exceedance_days -> exceedances via exceedances.sql\n  model annual_mean               year (Europe/Berlin), lookback 0h, reads co,no2,o3,pm10,pm25,so2 and model daily_mean -> annual_mean via annual_mean.sql\n  model o3_target_days            year (Europe/Berlin), lookback 17544h, reads co,no2,o3,pm10,pm25,so2 and model daily_max_8h -> o3_target_days via o3_target_days.sql\n  model aot40_days                day (Europe/Berlin), lookback 0h, reads co,no2,o3,pm10,pm25,so2 -> aot40_days via aot40_days.sql\n  model aot40                     year (Europe/Berlin), lookback 35064h, reads co,no2,o3,pm10,pm25,so2 and model aot40_days -> aot40 via aot40.sql\n  model threshold_episodes        hour, lookback 3h, reads co,no2,o3,pm10,pm25,so2 -> threshold_episodes via threshold_episodes.sql, new episodes as Prefect events `air-quality.threshold.exceeded`\n  model daily_threshold_episodes  day (Europe/Berlin), lookback 72h, reads co,no2,o3,pm10,pm25,so2 and model daily_mean -> daily_threshold_episodes via daily_threshold_episodes.sql, new episodes as Prefect events `air-quality.threshold.exceeded`\n"
        ),
        "{out:?}"
    );
}

/// Models: a bad grain, an unknown job and time zone each point at their
/// line with a suggestion; a zone whose days do not hold whole UTC hours is
/// refused; a model table may not be a job's.
#[test]
fn model_errors_point_at_their_line() {
    let with = |models: &str| {
        validate_with(
            "      - name: no2\n",
            &format!("      - name: no2\n    models:\n{models}"),
        )
    };
    assert_error(
        with("      - {name: daily_mean, grain: dya}\n"),
        &text(
            r#"
        error: model `daily_mean`: unknown grain `dya` (hour, day or year); did you mean `day`?
          --> pipelines.yaml:19:35
           |
        19 |       - {name: daily_mean, grain: dya}
           |                                   ^
        "#,
        ),
    );
    assert_error(
        with("      - {name: daily_mean, grain: day, jobs: [co, no3]}\n"),
        &text(
            r#"
        error: model `daily_mean`: unknown job `no3`; did you mean `no2`?
          --> pipelines.yaml:19:51
           |
        19 |       - {name: daily_mean, grain: day, jobs: [co, no3]}
           |                                                   ^
        "#,
        ),
    );
    assert_error(
        with("      - {name: daily_mean, grain: day, timezone: Europe/Madird}\n"),
        &text(
            r#"
        error: model `daily_mean`: unknown time zone `Europe/Madird`; did you mean `Europe/Madrid`?
          --> pipelines.yaml:19:50
           |
        19 |       - {name: daily_mean, grain: day, timezone: Europe/Madird}
           |                                                  ^
        "#,
        ),
    );
    let out = with("      - {name: daily_mean, grain: day, timezone: Asia/Kolkata}\n").exit(2);
    assert!(
        out.stderr
            .contains("time zone `Asia/Kolkata` has offsets that are not whole hours"),
        "{out:?}"
    );
    let out = with("      - {name: daily_mean, grain: day, table: pollutant_hourly}\n");
    assert!(
        out.stderr
            .contains("table `pollutant_hourly` is where job `co` loads its hourly rows"),
        "{out:?}"
    );
    let out = with("      - {name: daily_mean, template: daily_maen.sql, grain: day}\n");
    assert!(
        out.stderr.contains(
            "template `daily_maen.sql` not found in `sql`; did you mean `daily_mean.sql`?"
        ),
        "{out:?}"
    );
}

/// `validate` runs every template on empty inputs: a model using DuckDB's
/// ICU time-zone functions (absent from the embedded engine) or a column
/// the hourly rows lack fails there, naming the file, not in a run.
#[test]
fn validate_binds_model_sql_before_any_run() {
    let ws = Ws::new(&BASE.replacen(
        "      - name: no2\n",
        "      - name: no2\n    models:\n      - {name: by_local_hour, grain: hour}\n      - {name: typo, grain: day}\n",
        1,
    ));
    ws.write(
        "sql/by_local_hour.sql",
        "SELECT pollutant, station, hour_start, hour(hour_start AT TIME ZONE 'Europe/Madrid') AS local_hour FROM {{ hourly }}",
    );
    ws.write(
        "sql/typo.sql",
        "SELECT pollutant, station, day, avgg FROM {{ hourly }} JOIN {{ calendar }} USING (h)",
    );
    let out = ws.run(&["validate"]).exit(2);
    assert!(
        out.stderr.contains(
            "error: model `by_local_hour` of pipeline `demo`: its SQL fails on empty hourly rows:"
        ),
        "{out:?}"
    );
    assert!(out.stderr.contains("icu"), "{out:?}");
    assert!(out.stderr.contains("--> sql/by_local_hour.sql"), "{out:?}");
    assert!(
        out.stderr.contains(
            "error: model `typo` of pipeline `demo`: its SQL fails on empty hourly rows:"
        ) && out.stderr.contains("avgg"),
        "{out:?}"
    );
}

#[test]
fn unknown_time_zone_suggests() {
    assert_error(
        validate_with(
            "    delay: 5m\n",
            "    delay: 5m\n    timezone: Europe/Berln\n",
        ),
        &text(
            r#"
        error: pipeline `demo`: unknown time zone `Europe/Berln`; did you mean `Europe/Berlin`?
          --> pipelines.yaml:15:15
           |
        15 |     timezone: Europe/Berln
           |               ^
        "#,
        ),
    );
}

#[test]
fn prefect_block_names_must_be_valid_and_distinct() {
    // The flows' old single document name, on a pipeline with two jobs.
    let out = validate_with(
        "    delay: 5m\n",
        "    delay: 5m\n    state: {type: prefect, url: \"http://127.0.0.1:4200/api\", block_name: pipeline-state}\n",
    ).exit(2);
    assert!(
        out.stderr.starts_with(&text(r#"
            error: state: job `no2` of pipeline `demo` and job `co` of pipeline `demo` would share the block `pipeline-state`: put `{job}` (and `{pipeline}`) in `block_name`
              --> pipelines.yaml:15:12
            "#)),
        "{out:?}"
    );
    // Prefect block names take no `_`.
    let out = validate_with(
        "      - name: no2\n",
        "      - name: no_2\n  other:\n    source: sample\n    sinks: [local]\n    measurement: air_quality\n    state: {type: prefect, url: \"http://127.0.0.1:4200/api\"}\n    jobs:\n      - name: pm2_5\n",
    ).exit(2);
    assert!(
        out.stderr.starts_with("error: state: block name `other-pm2_5` (from `block_name: {pipeline}-{job}` for job `pm2_5` of pipeline `other`) must use only lowercase letters, digits and `-`\n"),
        "{out:?}"
    );
}

/// Names BigQuery would refuse (the emulator takes any) fail `validate`,
/// each pointing at its line.
#[test]
fn bigquery_names_bigquery_would_refuse() {
    let out = validate_with(
        "    path: out.duckdb\n",
        "    path: out.duckdb\n  bq:\n    type: bigquery\n    project: My_Project\n    dataset: air-quality\n    table: hourly.v2\n",
    );
    assert_error(
        out,
        &text(
            r#"
        error: sink `bq`: `project` `My_Project` is not a BigQuery project id: 6 to 30 lowercase letters, digits and `-`, starting with a letter and not ending with `-` (a domain-scoped `example.com:my-project` is allowed)
          --> pipelines.yaml:11:14
           |
        11 |     project: My_Project
           |              ^

        error: sink `bq`: `dataset` `air-quality` is not a BigQuery dataset id: letters, digits and `_`, at most 1,024
          --> pipelines.yaml:12:14
           |
        12 |     dataset: air-quality
           |              ^

        error: sink `bq`: `table` `hourly.v2` must be letters, digits and `_`, not starting with a digit, at most 1,024
          --> pipelines.yaml:13:12
           |
        13 |     table: hourly.v2
           |            ^

        3 errors
        "#,
        ),
    );
    // A project from the environment is checked when the run resolves it, not here.
    let ws = Ws::new(&BASE.replacen(
        "    path: out.duckdb\n",
        "    path: out.duckdb\n  bq:\n    type: bigquery\n    project: ${env:GCP_PROJECT}\n    dataset: air_quality\n",
        1,
    ));
    assert_eq!(ws.run(&["validate"]).code, 0);
}

/// `prefect.heartbeat` out of its range points at itself; `api_key` alone
/// (nothing to report to) is refused.
#[test]
fn prefect_heartbeat_range() {
    let out = validate_with("sources:\n", "prefect: {heartbeat: 20m}\nsources:\n").exit(2);
    assert!(
        out.stderr.starts_with(&text(
            r#"
            error: prefect: `heartbeat` must be 1s to 10m, not 20m
              --> pipelines.yaml:1:22
            "#
        )),
        "{out:?}"
    );
    let out = validate_with("sources:\n", "prefect: {api_key: k}\nsources:\n").exit(2);
    assert!(
        out.stderr
            .starts_with("error: prefect: `api_key` is only used with `url`\n"),
        "{out:?}"
    );
    validate_with("sources:\n", "prefect: {heartbeat: 45s}\nsources:\n").ok();
}

/// A model with `events:` needs a Prefect server to send them to, and an
/// event name Prefect can match.
#[test]
fn model_events_need_prefect_and_a_name() {
    let model = "    models:\n      - {name: threshold_episodes, grain: hour, lookback: 3h, events: air-quality.threshold.exceeded}\n";
    let out = validate_with(
        "      - name: no2\n",
        &format!("      - name: no2\n{model}"),
    )
    .exit(2);
    assert!(
        out.stderr.starts_with(&text(r#"
            error: model `threshold_episodes` sends events to Prefect, but pipeline `demo` reports to no Prefect server: give it Prefect state, or set `prefect: {url: …}`
              --> pipelines.yaml:19:71
            "#)),
        "{out:?}"
    );
    validate_with(
        "sources:\n",
        "prefect: {url: 'http://127.0.0.1:4200/api'}\nsources:\n",
    )
    .ok();
    let ws = Ws::new(
        &BASE
            .replacen(
                "sources:\n",
                "prefect: {url: 'http://127.0.0.1:4200/api'}\nsources:\n",
                1,
            )
            .replacen(
                "      - name: no2\n",
                &format!(
                    "      - name: no2\n{}",
                    model.replace("air-quality.threshold.exceeded", "Alert")
                ),
                1,
            ),
    );
    let out = ws.run(&["validate"]).exit(2);
    assert!(
        out.stderr
            .contains("model `threshold_episodes`: `events: Alert` must be an event name"),
        "{out:?}"
    );
    let ws = Ws::new(
        &BASE
            .replacen(
                "sources:\n",
                "prefect: {url: 'http://127.0.0.1:4200/api'}\nsources:\n",
                1,
            )
            .replacen(
                "      - name: no2\n",
                &format!("      - name: no2\n{model}"),
                1,
            ),
    );
    ws.run(&["validate"]).ok();
}

/// Rules: each wrong field points at its line and column, with a
/// suggestion where a name is close; a pipeline's rules wrong once are
/// reported once, whatever number of models use them.
#[test]
fn rule_errors_point_at_their_field() {
    let rules = "    rules:
      - {instrument: nat, pollutant: pm01, kind: alrt, metric: daily_maen, value: 50}
      - {instrument: crit, kind: criterion, metric: annual_mean, value: 85, valid_from: \"2026-13-01\"}
      - {instrument: late, pollutant: no2, kind: limit, metric: hourly, value: 200, valid_from: \"2027-01-01\", valid_to: \"2026-01-01\"}
";
    let out = validate_with(
        "    jobs:\n",
        &format!("{rules}    models:\n      - {{name: daily_mean, grain: day}}\n      - {{name: eaqi, grain: hour}}\n    jobs:\n"),
    );
    assert_error(
        out,
        r#"error: pipeline `demo`: rule 1 (nat): unknown pollutant `pm01` (a stock name, a job, or a key of `params.pollutants`); did you mean `pm10`?
  --> pipelines.yaml:16:38
   |
16 |       - {instrument: nat, pollutant: pm01, kind: alrt, metric: daily_maen, value: 50}
   |                                      ^

error: pipeline `demo`: rule 1 (nat): unknown kind `alrt` (limit, target, information, alert, criterion); did you mean `alert`?
  --> pipelines.yaml:16:50
   |
16 |       - {instrument: nat, pollutant: pm01, kind: alrt, metric: daily_maen, value: 50}
   |                                                  ^

error: pipeline `demo`: rule 1 (nat): unknown metric `daily_maen` (hourly, daily_mean, max_daily_8h_mean, annual_mean, aot40); did you mean `daily_mean`?
  --> pipelines.yaml:16:64
   |
16 |       - {instrument: nat, pollutant: pm01, kind: alrt, metric: daily_maen, value: 50}
   |                                                                ^

error: pipeline `demo`: rule 2 (crit): a criterion is a fraction of the hours, above 0 and at most 1
  --> pipelines.yaml:17:73
   |
17 |       - {instrument: crit, kind: criterion, metric: annual_mean, value: 85, valid_from: "2026-13-01"}
   |                                                                         ^

error: pipeline `demo`: rule 2 (crit): `2026-13-01` is not a date like `2026-12-12`
  --> pipelines.yaml:17:89
   |
17 |       - {instrument: crit, kind: criterion, metric: annual_mean, value: 85, valid_from: "2026-13-01"}
   |                                                                                         ^

error: pipeline `demo`: rule 3 (late): `valid_to` 2026-01-01 is not after `valid_from` 2027-01-01
  --> pipelines.yaml:18:121
   |
18 |       - {instrument: late, pollutant: no2, kind: limit, metric: hourly, value: 200, valid_from: "2027-01-01", valid_to: "2026-01-01"}
   |                                                                                                                         ^

6 errors
"#,
    );
    // A misspelt key, and rules under `params`, are refused too.
    let out = validate_with(
        "    jobs:\n",
        "    models:\n      - {name: eaqi, grain: hour, rules: [{instrument: x, kind: alert, metric: hourly, value: 1, pollutant: o3, consecutiv: 3}]}\n    jobs:\n",
    ).exit(2);
    assert!(
        out.stderr.starts_with(&text(
            r#"
                error: unknown key `consecutiv`; did you mean `consecutive`?
                  --> pipelines.yaml:16:113
                "#
        )),
        "{out:?}"
    );
    let out = validate_with(
        "    jobs:\n",
        "    models:\n      - {name: eaqi, grain: hour, params: {rules: []}}\n    jobs:\n",
    )
    .exit(2);
    assert!(
        out.stderr.contains(
            "error: model `eaqi`: set the rules with `rules:` (README \"Rules\"), not `params.rules`"
        ),
        "{out:?}"
    );
}
