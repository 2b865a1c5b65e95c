//! The products computed from their definitions, independently of
//! duckhour's SQL: plain Rust over the minute points a test wrote.
//!
//! Rules (README "Products"): an hourly value is valid with at least 45 of
//! its 60 minutes (Directive 2008/50/EC Annex VII); a local day needs
//! valid values for 75 % of its hours, rounded up (18 of 24, 18 of 23, 19 of
//! 25); an 8-hour mean needs 6 valid hours, is labelled by the start of its
//! last hour and belongs to that hour's local day; a value equal to a
//! limit does not exceed it; an index value equal to a band's upper bound
//! stays in that band. Means are plain means of valid hourly averages.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{NaiveDate, TimeZone, Utc};

/// The minute points: (station, pollutant, minute since the epoch) -> value.
pub type Points = BTreeMap<(String, String, i64), f64>;

/// One value of an output row, compared exactly except floats (1e-9 relative).
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    F(Option<f64>),
    I(i64),
    B(bool),
    S(Option<String>),
}

pub type Table = BTreeMap<Vec<String>, Vec<V>>;

pub const POLLUTANTS: [&str; 6] = ["co", "no2", "o3", "pm10", "pm25", "so2"];
const EAQI_ORDER: [&str; 5] = ["pm25", "pm10", "no2", "o3", "so2"];

/// The 2024 index: upper bounds of bands 1..5, µg/m3.
fn bounds(p: &str) -> [f64; 5] {
    match p {
        "pm25" => [5.0, 15.0, 50.0, 90.0, 140.0],
        "pm10" => [15.0, 45.0, 120.0, 195.0, 270.0],
        "no2" => [10.0, 25.0, 60.0, 100.0, 150.0],
        "o3" => [60.0, 100.0, 120.0, 160.0, 180.0],
        "so2" => [20.0, 40.0, 125.0, 190.0, 275.0],
        _ => unreachable!(),
    }
}

/// A limit value judging a calendar year: (instrument, basis, pollutant,
/// metric, limit, allowed exceedances a year).
pub type Limit = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    f64,
    i64,
);

/// The limit values of short averaging periods judging calendar year `y`,
/// from the instruments (eu-air-quality-standards.md): 2008/50/EC Annex XI
/// up to 2026 (repealed with effect from 12 December 2026), (EU) 2024/2881
/// Annex I Table 2 (the same values) for 2027-2029, Table 1 from 2030, and
/// Table 1 before 2030 as the `outlook`.
pub fn limits(y: i32) -> Vec<Limit> {
    let old = [
        ("pm10", "daily_mean", 50.0, 35),
        ("no2", "hourly", 200.0, 18),
        ("so2", "hourly", 350.0, 24),
        ("so2", "daily_mean", 125.0, 3),
        ("co", "max_daily_8h_mean", 10.0, 0),
    ];
    let table1 = [
        ("pm25", "daily_mean", 25.0, 18),
        ("pm10", "daily_mean", 45.0, 18),
        ("no2", "hourly", 200.0, 3),
        ("no2", "daily_mean", 50.0, 18),
        ("so2", "hourly", 350.0, 3),
        ("so2", "daily_mean", 50.0, 18),
        ("co", "max_daily_8h_mean", 10.0, 0),
        ("co", "daily_mean", 4.0, 18),
    ];
    let mut out = Vec::new();
    let t1 = "(EU) 2024/2881 Annex I Table 1";
    let (in_force, basis_t1) = match y {
        ..=2026 => (Some("2008/50/EC Annex XI"), "outlook"),
        2027..=2029 => (Some("(EU) 2024/2881 Annex I Table 2"), "outlook"),
        _ => (None, "in_force"),
    };
    if let Some(i) = in_force {
        out.extend(
            old.iter()
                .map(|(p, m, v, a)| (i, "in_force", *p, *m, *v, *a)),
        );
    }
    out.extend(
        table1
            .iter()
            .map(|(p, m, v, a)| (t1, basis_t1, *p, *m, *v, *a)),
    );
    out
}

/// Hourly (pollutant, station, hour number) -> (minutes present, average).
pub type Hourly = BTreeMap<(String, String, i64), (i64, f64)>;

pub fn hourly(points: &Points) -> Hourly {
    let mut acc: BTreeMap<(String, String, i64), (i64, f64)> = BTreeMap::new();
    for ((s, p, minute), v) in points {
        let e = acc
            .entry((p.clone(), s.clone(), minute.div_euclid(60)))
            .or_insert((0, 0.0));
        e.0 += 1;
        e.1 += v;
    }
    acc.into_iter()
        .map(|(k, (n, sum))| (k, (n, sum / n as f64)))
        .collect()
}

fn valid_hour(n: i64) -> bool {
    n >= 45
}

/// The local date of the hour starting at hour number `h`.
pub fn local_date(tz: chrono_tz::Tz, h: i64) -> NaiveDate {
    Utc.timestamp_opt(h * 3600, 0)
        .unwrap()
        .with_timezone(&tz)
        .date_naive()
}

/// How many UTC hours start on local date `d`.
pub fn hours_in_day(tz: chrono_tz::Tz, d: NaiveDate) -> i64 {
    let noon = d.and_hms_opt(12, 0, 0).unwrap().and_utc().timestamp() / 3600;
    (noon - 40..noon + 40)
        .filter(|h| local_date(tz, *h) == d)
        .count() as i64
}

/// `n` valid values of a day of `hours` hours are enough: 75 %, rounded up.
fn day_ok(n: i64, hours: i64) -> bool {
    4 * n >= 3 * hours
}

fn mean(vals: &[f64]) -> Option<f64> {
    (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
}

/// Per pollutant, the newest hour with an hourly row.
fn newest(h: &Hourly) -> BTreeMap<String, i64> {
    let mut out: BTreeMap<String, i64> = BTreeMap::new();
    for (p, _, hour) in h.keys() {
        let e = out.entry(p.clone()).or_insert(*hour);
        *e = (*e).max(*hour);
    }
    out
}

/// (pollutant, station) -> hour -> valid average.
fn valid_series(h: &Hourly) -> BTreeMap<(String, String), BTreeMap<i64, f64>> {
    let mut out: BTreeMap<(String, String), BTreeMap<i64, f64>> = BTreeMap::new();
    for ((p, s, hour), (n, avg)) in h {
        if valid_hour(*n) {
            out.entry((p.clone(), s.clone()))
                .or_default()
                .insert(*hour, *avg);
        }
    }
    out
}

/// Running means of `n` hours: (pollutant, station, label) -> (mean, n_valid).
pub fn running(h: &Hourly, n: i64) -> BTreeMap<(String, String, i64), (f64, i64)> {
    let newest = newest(h);
    let mut out = BTreeMap::new();
    for ((p, s), series) in valid_series(h) {
        let labels: BTreeSet<i64> = series
            .keys()
            .flat_map(|v| *v..*v + n)
            .filter(|l| *l <= newest[&p])
            .collect();
        for l in labels {
            let vals: Vec<f64> = series.range(l - n + 1..=l).map(|(_, v)| *v).collect();
            out.insert(
                (p.clone(), s.clone(), l),
                (mean(&vals).unwrap(), vals.len() as i64),
            );
        }
    }
    out
}

pub fn daily_mean(h: &Hourly, tz: chrono_tz::Tz) -> Table {
    let mut days: BTreeMap<(String, String, NaiveDate), Vec<f64>> = BTreeMap::new();
    for ((p, s, hour), (n, avg)) in h {
        let e = days
            .entry((p.clone(), s.clone(), local_date(tz, *hour)))
            .or_default();
        if valid_hour(*n) {
            e.push(*avg);
        }
    }
    days.into_iter()
        .map(|((p, s, d), vals)| {
            let hours = hours_in_day(tz, d);
            let n = vals.len() as i64;
            (
                vec![p, s, d.to_string()],
                vec![
                    V::F(mean(&vals)),
                    V::I(n),
                    V::I(hours),
                    V::B(day_ok(n, hours)),
                ],
            )
        })
        .collect()
}

pub fn rolling(h: &Hourly, n: i64, min_valid: i64) -> Table {
    running(h, n)
        .into_iter()
        .map(|((p, s, l), (m, k))| {
            (
                vec![p, s, l.to_string()],
                vec![V::F(Some(m)), V::I(k), V::B(k >= min_valid)],
            )
        })
        .collect()
}

/// (pollutant, station, day) -> (max of valid 8-hour means, earliest label
/// reaching it, how many valid, hours in the day).
type Max8 = BTreeMap<(String, String, NaiveDate), (Option<f64>, Option<i64>, i64, i64)>;

fn max_8h(h: &Hourly, tz: chrono_tz::Tz) -> Max8 {
    // (label, mean, valid) of each window, by the day of its label.
    type Windows = Vec<(i64, f64, bool)>;
    let mut days: BTreeMap<(String, String, NaiveDate), Windows> = BTreeMap::new();
    for ((p, s, l), (m, k)) in running(h, 8) {
        days.entry((p, s, local_date(tz, l)))
            .or_default()
            .push((l, m, k >= 6));
    }
    days.into_iter()
        .map(|(key, windows)| {
            let ok: Vec<&(i64, f64, bool)> = windows.iter().filter(|w| w.2).collect();
            let max = ok
                .iter()
                .map(|w| w.1)
                .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
            let at = max.and_then(|m| ok.iter().filter(|w| w.1 == m).map(|w| w.0).min());
            let hours = hours_in_day(tz, key.2);
            (key, (max, at, ok.len() as i64, hours))
        })
        .collect()
}

pub fn daily_max_8h(h: &Hourly, tz: chrono_tz::Tz) -> Table {
    max_8h(h, tz)
        .into_iter()
        .map(|((p, s, d), (max, at, n, hours))| {
            (
                vec![p, s, d.to_string()],
                vec![
                    V::F(max),
                    V::S(at.map(|a| a.to_string())),
                    V::I(n),
                    V::I(hours),
                    V::B(day_ok(n, hours)),
                ],
            )
        })
        .collect()
}

fn band(p: &str, v: f64) -> i64 {
    bounds(p)
        .iter()
        .position(|b| v <= *b)
        .map_or(6, |i| i as i64 + 1)
}

pub fn eaqi(h: &Hourly) -> Table {
    let mut at: BTreeMap<(String, i64), BTreeMap<&str, i64>> = BTreeMap::new();
    for ((p, s, hour), (n, avg)) in h {
        if let Some(name) = EAQI_ORDER.iter().find(|x| *x == p) {
            if valid_hour(*n) {
                at.entry((s.clone(), *hour))
                    .or_default()
                    .insert(name, band(name, *avg));
            }
        }
    }
    at.into_iter()
        .map(|((s, hour), bands)| {
            let idx = *bands.values().max().unwrap();
            let level = [
                "Good",
                "Fair",
                "Moderate",
                "Poor",
                "Very poor",
                "Extremely poor",
            ][idx as usize - 1];
            let dominant: Vec<&str> = EAQI_ORDER
                .iter()
                .copied()
                .filter(|p| bands.get(p) == Some(&idx))
                .collect();
            let has = |p: &str| bands.contains_key(p);
            let mut vals: Vec<V> = EAQI_ORDER
                .iter()
                .map(|p| match bands.get(p) {
                    Some(b) => V::S(Some(b.to_string())),
                    None => V::S(None),
                })
                .collect();
            vals.extend([
                V::I(idx),
                V::S(Some(level.to_owned())),
                V::S(Some(dominant.join(","))),
                V::I(bands.len() as i64),
                V::B(has("no2") && has("o3") && (has("pm25") || has("pm10"))),
            ]);
            (vec![s, hour.to_string()], vals)
        })
        .collect()
}

/// The values each limit is checked against, by local period: valid
/// hourly averages, daily means of valid days, maximum daily 8-hour means
/// of valid days; and the (pollutant, station, period) holding an hourly row.
#[allow(clippy::type_complexity)]
fn limit_values<K: Ord + Clone>(
    h: &Hourly,
    tz: chrono_tz::Tz,
    period: impl Fn(NaiveDate) -> K,
) -> (
    BTreeMap<(&'static str, String, String, K), Vec<f64>>,
    BTreeSet<(String, String, K)>,
) {
    let mut vals: BTreeMap<(&str, String, String, K), Vec<f64>> = BTreeMap::new();
    let mut present = BTreeSet::new();
    for ((p, s, hour), (n, avg)) in h {
        let k = period(local_date(tz, *hour));
        present.insert((p.clone(), s.clone(), k.clone()));
        if valid_hour(*n) {
            vals.entry(("hourly", p.clone(), s.clone(), k))
                .or_default()
                .push(*avg);
        }
    }
    for (k, v) in daily_mean(h, tz) {
        if v[3] == V::B(true) {
            let V::F(Some(m)) = v[0] else { unreachable!() };
            let d: NaiveDate = k[2].parse().unwrap();
            vals.entry(("daily_mean", k[0].clone(), k[1].clone(), period(d)))
                .or_default()
                .push(m);
        }
    }
    for ((p, s, d), (max, _, n, hours)) in max_8h(h, tz) {
        if day_ok(n, hours) {
            vals.entry(("max_daily_8h_mean", p, s, period(d)))
                .or_default()
                .push(max.unwrap());
        }
    }
    (vals, present)
}

/// Per pollutant, station, local day and limit: values and exceedances.
pub fn exceedance_days(h: &Hourly, tz: chrono_tz::Tz) -> Table {
    let (vals, present) = limit_values(h, tz, |d| d);
    let mut out = Table::new();
    for (p, s, d) in present {
        use chrono::Datelike;
        for (instrument, basis, lp, stat, limit, _) in limits(d.year()) {
            if lp != p {
                continue;
            }
            let v = vals
                .get(&(stat, p.clone(), s.clone(), d))
                .cloned()
                .unwrap_or_default();
            out.insert(
                vec![
                    p.clone(),
                    s.clone(),
                    d.to_string(),
                    instrument.into(),
                    stat.into(),
                ],
                vec![
                    V::S(Some(basis.into())),
                    V::I(v.len() as i64),
                    V::I(v.iter().filter(|x| **x > limit).count() as i64),
                ],
            );
        }
    }
    out
}

pub fn exceedances(h: &Hourly, tz: chrono_tz::Tz) -> Table {
    use chrono::Datelike;
    let (vals, present) = limit_values(h, tz, |d| d.year());
    let mut out = Table::new();
    for (p, s, y) in present {
        for (instrument, basis, lp, stat, limit, allowed) in limits(y) {
            if lp != p {
                continue;
            }
            let v = vals
                .get(&(stat, p.clone(), s.clone(), y))
                .cloned()
                .unwrap_or_default();
            let over = v.iter().filter(|x| **x > limit).count() as i64;
            out.insert(
                vec![
                    p.clone(),
                    s.clone(),
                    y.to_string(),
                    instrument.into(),
                    stat.into(),
                ],
                vec![
                    V::S(Some(basis.into())),
                    V::F(Some(limit)),
                    V::I(allowed),
                    V::I(v.len() as i64),
                    V::I(over),
                    V::B(over > allowed),
                ],
            );
        }
    }
    out
}

/// How each product table is read back: the query (key columns first) and
/// how many of its columns are the key.
pub fn queries() -> Vec<(&'static str, &'static str, usize)> {
    vec![
        ("daily_mean", "SELECT pollutant, station, day::VARCHAR, mean, n_valid_hours, hours_in_day, valid FROM daily_mean", 3),
        ("rolling_8h", "SELECT pollutant, station, epoch_us(hour_start) // 3600000000, mean, n_valid, valid FROM rolling_8h", 3),
        ("rolling_24h", "SELECT pollutant, station, epoch_us(hour_start) // 3600000000, mean, n_valid, valid FROM rolling_24h", 3),
        ("daily_max_8h", "SELECT pollutant, station, day::VARCHAR, max_8h, epoch_us(max_8h_hour) // 3600000000, n_valid_8h, hours_in_day, valid FROM daily_max_8h", 3),
        ("eaqi", "SELECT station, epoch_us(hour_start) // 3600000000, pm25_band, pm10_band, no2_band, o3_band, so2_band, eaqi, level, dominant, n_pollutants, complete FROM eaqi", 2),
        ("exceedance_days", "SELECT pollutant, station, day::VARCHAR, instrument, metric, basis, n_values, n_exceedances FROM exceedance_days", 5),
        ("exceedances", "SELECT pollutant, station, year, instrument, metric, basis, limit_value, allowed, n_values, n_exceedances, over_allowed FROM exceedances", 5),
    ]
}

/// Every product from the points.
pub fn expected(points: &Points, tz: chrono_tz::Tz) -> BTreeMap<&'static str, Table> {
    let h = hourly(points);
    BTreeMap::from([
        ("daily_mean", daily_mean(&h, tz)),
        ("rolling_8h", rolling(&h, 8, 6)),
        ("rolling_24h", rolling(&h, 24, 18)),
        ("daily_max_8h", daily_max_8h(&h, tz)),
        ("eaqi", eaqi(&h)),
        ("exceedance_days", exceedance_days(&h, tz)),
        ("exceedances", exceedances(&h, tz)),
    ])
}

/// Rows read back (as text) into a table shaped like `expected`'s.
pub fn parse(rows: Vec<Vec<String>>, key: usize, like: &Table) -> Table {
    let shape = like.values().next().cloned().unwrap_or_default();
    let mut out = Table::new();
    for r in rows {
        let k = r[..key].to_vec();
        let vals = r[key..]
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let null = text == "NULL";
                match shape.get(i) {
                    Some(V::F(_)) => V::F((!null).then(|| text.parse().unwrap())),
                    Some(V::I(_)) => V::I(text.parse().unwrap()),
                    Some(V::B(_)) => V::B(text == "true"),
                    _ => V::S((!null).then(|| text.clone())),
                }
            })
            .collect();
        assert!(out.insert(k.clone(), vals).is_none(), "duplicate row {k:?}");
    }
    out
}

/// Both tables hold the same keys and values (floats within 1e-9 relative).
pub fn assert_same(name: &str, got: &Table, want: &Table) {
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{name}: {} rows, {} expected; missing {missing:?}; unexpected {extra:?}",
        got.len(),
        want.len()
    );
    for (k, w) in want {
        let g = &got[k];
        let same = g.len() == w.len()
            && g.iter().zip(w).all(|(a, b)| match (a, b) {
                (V::F(Some(x)), V::F(Some(y))) => (x - y).abs() <= 1e-9 * y.abs().max(1e-300),
                _ => a == b,
            });
        assert!(same, "{name} {k:?}: got {g:?}, want {w:?}");
    }
}
