//! Means that are exact: the same bits whichever range or order they are
//! computed in, and a mean that is exactly on a limit stays on it. The data
//! are what analysers send, integer minute readings, so hourly averages
//! are sixtieths that binary cannot hold, and a sum of DOUBLEs depends on
//! the order it is added in.

use std::collections::BTreeMap;

use crate::products::spec;
use crate::util::{influx, Ws};

/// Madrid's 2026-03-27, in UTC.
const DAY_FROM: i64 = 1_774_566_000 / 3600; // 2026-03-26T23:00:00Z
const STATIONS: i64 = 10;
const NOW: &str = "2026-04-02T00:00:00Z";

/// A small, fixed pseudo-random sequence (no crate needed, same on every machine).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, lo: i64, hi: i64) -> i64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        lo + ((self.0 >> 33) as i64).rem_euclid(hi - lo + 1)
    }
}

/// PM10 minute readings, integers in µg/m3, of stations `s00`..`s09` over
/// 2026-03-26T00:00Z .. 2026-03-31T00:00Z: every minute present, and on
/// Madrid's 2026-03-27 the 1,440 readings of each station add up to 72,000,
/// so that its daily mean is exactly 50: the 2008/50/EC daily limit, which
/// only a mean strictly above it exceeds.
fn readings() -> BTreeMap<(i64, i64), i64> {
    let mut rng = Lcg(20_260_327);
    let first = 1_774_483_200 / 60; // 2026-03-26T00:00:00Z
    let mut out = BTreeMap::new();
    for s in 0..STATIONS {
        for m in first..first + 5 * 1440 {
            out.insert((s, m), rng.next(38, 62));
        }
        let day: Vec<i64> = (DAY_FROM * 60..DAY_FROM * 60 + 1440).collect();
        let mut off = 72_000 - day.iter().map(|m| out[&(s, *m)]).sum::<i64>();
        let mut i = 0;
        while off != 0 {
            let step = off.signum();
            *out.get_mut(&(s, day[i % day.len()])).unwrap() += step;
            off -= step;
            i += 7;
        }
    }
    out
}

fn run(ws: &Ws, args: &[&str]) -> crate::util::Out {
    ws.run_env(args, &[("TEST_INFLUX_URL", &influx().url)])
}

/// `lines` (line protocol, ns) written into a fresh database `db`, and a
/// run of the stock pipeline with all its models over them.
fn run_on(db: &str, lines: &[String]) -> (Ws, crate::util::Out) {
    influx().create_db(db);
    for chunk in lines.chunks(5000) {
        influx().write(db, &chunk.join("\n"));
    }
    let ws = Ws::new(&spec(db, "wh", "", true));
    let out = run(&ws, &["run", "aq", "--now", NOW]);
    (ws, out)
}

/// The rows of the product tables that hold means, every value as DuckDB
/// prints it (a DOUBLE prints as the shortest text that reads back to the
/// same bits).
fn products(ws: &Ws) -> BTreeMap<&'static str, Vec<Vec<String>>> {
    [
        "daily_mean",
        "rolling_8h",
        "rolling_24h",
        "daily_max_8h",
        "exceedance_days",
    ]
    .into_iter()
    .map(|t| {
        (
            t,
            ws.query("wh.duckdb", &format!("SELECT * FROM {t} ORDER BY ALL")),
        )
    })
    .collect()
}

/// A daily mean exactly on the limit is 50 and no exceedance; and a
/// backfill of one hour (its rows replaced, stored again after the rest)
/// leaves every product row with the same bits as the full computation.
/// With DOUBLE sums, 6 of the 10 stations' means were 49.99999999999999,
/// and the backfill of one hour, with the same values, turned station
/// s02's 50.0 into 50.00000000000001: an exceedance where the Directive
/// sees none.
#[test]
fn means_are_exact_on_a_limit_and_the_same_bits_after_a_backfill() {
    let db = "prod_exact_sums";
    let lines: Vec<String> = readings()
        .into_iter()
        .map(|((s, m), v)| {
            format!(
                "air_quality,station=s{s:02} pm10={v} {}",
                m * 60_000_000_000
            )
        })
        .collect();
    let (ws, out) = run_on(db, &lines);
    out.ok();

    // From the definition: 72,000 / 1,440 = 50, which does not exceed 50
    // (2008/50/EC) and exceeds 45 ((EU) 2024/2881).
    let day = ws.query(
        "wh.duckdb",
        "SELECT station, mean, n_valid_hours FROM daily_mean \
         WHERE pollutant = 'pm10' AND day = DATE '2026-03-27' ORDER BY station",
    );
    let want: Vec<Vec<String>> = (0..STATIONS)
        .map(|s| vec![format!("s{s:02}"), "50.0".into(), "24".into()])
        .collect();
    assert_eq!(day, want);
    let exceeded = ws.query(
        "wh.duckdb",
        "SELECT instrument, basis, sum(n_values), sum(n_exceedances) FROM exceedance_days \
         WHERE pollutant = 'pm10' AND metric = 'daily_mean' AND day = DATE '2026-03-27' \
         GROUP BY ALL ORDER BY ALL",
    );
    assert_eq!(
        exceeded,
        [
            ["(EU) 2024/2881 Annex I Table 1", "outlook", "10", "10"],
            ["2008/50/EC Annex XI", "in_force", "10", "0"]
        ]
    );

    let full = products(&ws);
    assert!(
        full["rolling_24h"].len() > 1000,
        "{}",
        full["rolling_24h"].len()
    );
    let out = run(
        &ws,
        &[
            "backfill",
            "aq",
            "--from",
            "2026-03-27T05:00:00Z",
            "--to",
            "2026-03-27T06:00:00Z",
            "--now",
            NOW,
        ],
    )
    .ok();
    assert!(out.stdout.contains("model rolling_24h"), "{out:?}");
    let again = products(&ws);
    for (t, rows) in &full {
        let changed: Vec<_> = rows
            .iter()
            .zip(&again[t])
            .filter(|(a, b)| a != b)
            .take(3)
            .collect();
        assert_eq!(rows.len(), again[t].len(), "{t}");
        assert!(changed.is_empty(), "{t}: {changed:?}");
    }
}

/// An hour of one-decimal NO2 readings whose mean is exactly 200, the
/// hourly limit of both Directives, which only a value strictly above it
/// exceeds: its average is 200 and the day counts no exceedance. Summed as
/// DOUBLEs in time order, the average was 200.00000000000003, an
/// exceedance.
#[test]
fn an_hour_of_decimal_readings_averaging_the_limit_is_not_an_exceedance() {
    let db = "prod_exact_hour";
    let mut rng = Lcg(2);
    // Tenths of µg/m3: 60 readings around 200, adjusted to add up to 12,000.
    let mut tenths: Vec<i64> = (0..60).map(|_| rng.next(1950, 2050)).collect();
    tenths[59] += 120_000 - tenths.iter().sum::<i64>();
    let first = 1_774_483_200 / 60 + 10 * 60; // 2026-03-26T10:00:00Z
    let lines: Vec<String> = tenths
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "air_quality,station=t1 no2={}.{} {}",
                t / 10,
                t % 10,
                (first + i as i64) * 60_000_000_000
            )
        })
        .collect();
    let (ws, out) = run_on(db, &lines);
    out.ok();
    assert_eq!(
        ws.query(
            "wh.duckdb",
            "SELECT hour_start::VARCHAR, avg, n_minutes FROM pollutant_hourly WHERE pollutant = 'no2'"
        ),
        [["2026-03-26 10:00:00+00", "200.0", "60"]]
    );
    assert_eq!(
        ws.query(
            "wh.duckdb",
            "SELECT instrument, n_values, n_exceedances FROM exceedance_days \
             WHERE pollutant = 'no2' AND metric = 'hourly' ORDER BY ALL"
        ),
        [
            ["(EU) 2024/2881 Annex I Table 1", "1", "0"],
            ["2008/50/EC Annex XI", "1", "0"]
        ]
    );
}

/// Exact sums have a range: an hour with a reading of 1e20 or more is
/// still loaded (averaged as DOUBLEs), and a model whose mean would add up
/// an hourly average that large fails, naming itself and the cast, with
/// its hours left pending; the jobs' rows and checkpoints stand.
#[test]
fn readings_beyond_exact_sums_load_and_the_means_over_them_fail_clearly() {
    let db = "prod_exact_range";
    let first: i64 = 1_774_483_200 / 60 + 10 * 60; // 2026-03-26T10:00:00Z
    let mut lines = Vec::new();
    for i in 0..60 {
        // 10:00, every minute 1e21; 11:00, one minute 1e21 and 59 of 1.
        lines.push(format!(
            "air_quality,station=t1 no2=1e21 {}",
            (first + i) * 60_000_000_000
        ));
        let v = if i == 0 { "1e21" } else { "1" };
        lines.push(format!(
            "air_quality,station=t1 no2={v} {}",
            (first + 60 + i) * 60_000_000_000
        ));
    }
    let (ws, out) = run_on(db, &lines);
    assert_eq!(out.code, 1, "{out:?}");
    let hourly = ws.query(
        "wh.duckdb",
        "SELECT hour_start::VARCHAR, avg, n_minutes FROM pollutant_hourly \
         WHERE pollutant = 'no2' ORDER BY hour_start",
    );
    assert_eq!(hourly.len(), 2, "{hourly:?}");
    // As DOUBLEs, within their rounding (60 x 1e21 comes to 9.99...986e20).
    for (row, want) in hourly.iter().zip([1e21, (1e21 + 59.0) / 60.0]) {
        let got: f64 = row[1].parse().unwrap();
        assert!((got - want).abs() <= 1e-12 * want, "{hourly:?}");
        assert_eq!(row[2], "60");
    }
    let line = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{out:?}"))
            .to_owned()
    };
    assert!(
        line("no2").contains(" ok ") && line("no2").contains("checkpoint 2026-03-30T23:00:00Z"),
        "{out:?}"
    );
    assert!(line("model daily_mean").contains("FAILED"), "{out:?}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("DECIMAL(38,18)") && all.contains("daily_mean.sql"),
        "{all}"
    );
    let status = ws.run(&["status", "aq"]);
    assert!(
        status
            .stdout
            .contains("pending: hours [2026-03-26T00:00:00Z, 2026-03-31T00:00:00Z)"),
        "{status:?}"
    );
}
