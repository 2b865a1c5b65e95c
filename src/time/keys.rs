//! Which output keys of a model an hour change touches, and which hourly
//! rows those keys are computed from. Pure: no clock, no I/O.
//!
//! Keys are integers so that ranges merge like hours do: an hour key is the
//! hour's number since the epoch (UTC), a day key the local date's number
//! of days since 1970-01-01, a year key the local calendar year. A local
//! day is the set of UTC hours whose start falls on that date in the
//! model's zone, so a DST day has 23 or 25 of them; zones whose offset is
//! not whole hours cannot hold whole UTC hours and are refused.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Offset, TimeZone, Utc};

use super::Hour;

/// The unit of a model's output key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// UTC hours; key column `hour_start` (TIMESTAMPTZ).
    Hour,
    /// Local days; key column `day` (DATE).
    Day,
    /// Local calendar years; key column `year` (INTEGER).
    Year,
}

impl Grain {
    /// The column every row of such a model carries and the sinks replace by.
    pub fn key_column(self) -> &'static str {
        match self {
            Grain::Hour => "hour_start",
            Grain::Day => "day",
            Grain::Year => "year",
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Grain::Hour => "hour",
            Grain::Day => "day",
            Grain::Year => "year",
        }
    }
}

/// The time zone of a model's days and years: an IANA zone or a fixed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Named(chrono_tz::Tz),
    Fixed(FixedOffset),
}

impl Zone {
    pub const UTC: Zone = Zone::Named(chrono_tz::UTC);

    /// `Europe/Madrid`, `UTC`, or an offset `+01:00` / `-03:00`.
    pub fn parse(s: &str) -> Result<Zone, String> {
        let t = s.trim();
        if let Some(sign) = t.chars().next().filter(|c| *c == '+' || *c == '-') {
            let body = &t[1..];
            let (h, m) = body.split_once(':').unwrap_or((body, "00"));
            let (h, m): (i32, i32) = match (h.parse::<i32>(), m.parse::<i32>()) {
                (Ok(hh), Ok(mm)) if hh <= 14 && mm < 60 && h.len() <= 2 && m.len() == 2 => (hh, mm),
                _ => return Err(format!("`{s}` is not an offset like `+01:00`")),
            };
            let secs = (h * 3600 + m * 60) * if sign == '-' { -1 } else { 1 };
            return FixedOffset::east_opt(secs)
                .map(Zone::Fixed)
                .ok_or_else(|| format!("`{s}` is not an offset like `+01:00`"));
        }
        t.parse::<chrono_tz::Tz>()
            .map(Zone::Named)
            .map_err(|_| format!("unknown time zone `{s}`"))
    }

    /// The offset from UTC at instant `t`, in seconds.
    pub fn offset_secs(&self, t: DateTime<Utc>) -> i32 {
        match self {
            Zone::Named(tz) => tz.offset_from_utc_datetime(&t.naive_utc()).fix(),
            Zone::Fixed(o) => *o,
        }
        .local_minus_utc()
    }

    /// Whether every offset this zone takes between 1970 and 2100 is whole
    /// hours (checked at each month's start and middle, where transitions
    /// would show), so its local days hold whole UTC hours.
    pub fn whole_hours(&self) -> bool {
        (1970..2100).all(|y| {
            (1..=12).all(|m| {
                [1, 15].iter().all(|d| {
                    let t = Utc.with_ymd_and_hms(y, m, *d, 12, 0, 0).unwrap();
                    self.offset_secs(t) % 3600 == 0
                })
            })
        })
    }

    /// The local date the hour starting at `h` falls on.
    pub fn date_of(&self, h: Hour) -> NaiveDate {
        (h.0 + chrono::Duration::seconds(self.offset_secs(h.0) as i64)).date_naive()
    }
}

impl std::fmt::Display for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Zone::Named(tz) => write!(f, "{}", tz.name()),
            Zone::Fixed(o) => write!(f, "{o}"),
        }
    }
}

/// `[from, to)` of integer keys of one grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    pub grain: Grain,
    pub from: i64,
    pub to: i64,
}

/// The keys of `ranges` that are in none of `done` (all of one grain), as
/// ranges.
pub fn without(ranges: &[KeyRange], done: &[KeyRange]) -> Vec<KeyRange> {
    let mut left: super::Ranges<i64> = super::Ranges::new();
    for r in ranges {
        left.add(r.from, r.to);
    }
    for r in done {
        left.remove(r.from, r.to);
    }
    let grain = match ranges.first() {
        Some(r) => r.grain,
        None => return Vec::new(),
    };
    left.iter()
        .map(|(from, to)| KeyRange { grain, from, to })
        .collect()
}

/// Hours since the epoch.
pub fn hour_number(h: Hour) -> i64 {
    h.0.timestamp().div_euclid(3600)
}

pub fn hour_of(n: i64) -> Hour {
    Hour(DateTime::from_timestamp(n * 3600, 0).expect("hour in range"))
}

fn day_number(d: NaiveDate) -> i64 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days()
}

fn date_of_number(n: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Duration::days(n)
}

/// The key hour `h` belongs to.
pub fn key_of(grain: Grain, zone: Zone, h: Hour) -> i64 {
    match grain {
        Grain::Hour => hour_number(h),
        Grain::Day => day_number(zone.date_of(h)),
        Grain::Year => zone.date_of(h).year() as i64,
    }
}

/// The first UTC hour of key `k` (the key's hours are `[first(k), first(k+1))`).
pub fn first_hour(grain: Grain, zone: Zone, k: i64) -> Hour {
    let date = match grain {
        Grain::Hour => return hour_of(k),
        Grain::Day => date_of_number(k),
        Grain::Year => NaiveDate::from_ymd_opt(k as i32, 1, 1).expect("year in range"),
    };
    // Local midnight is at most 14 h either side of UTC midnight: start
    // 15 h before and walk to the first hour on or after the date.
    let mut h = Hour(date.and_hms_opt(0, 0, 0).expect("midnight").and_utc()).plus(-15);
    while zone.date_of(h) < date {
        h = h.plus(1);
    }
    h
}

/// Output keys whose value depends on the hours `[from, to)` of input, for a
/// model reading `lookback` hours before each key: hour keys `[from, to +
/// lookback)`; day and year keys holding any of those hours.
pub fn affected(grain: Grain, zone: Zone, lookback: u32, from: Hour, to: Hour) -> KeyRange {
    let last = to.plus(lookback as i64 - 1);
    KeyRange {
        grain,
        from: key_of(grain, zone, from),
        to: key_of(grain, zone, last) + 1,
    }
}

/// The hours of input the keys `r` are computed from: their own hours and
/// `lookback` hours before the first.
pub fn inputs(zone: Zone, lookback: u32, r: KeyRange) -> (Hour, Hour) {
    (
        first_hour(r.grain, zone, r.from).plus(-(lookback as i64)),
        first_hour(r.grain, zone, r.to),
    )
}

/// The hours of the keys `r` themselves, as hour numbers `[from, to)`.
pub fn key_hours(zone: Zone, r: KeyRange) -> (i64, i64) {
    (
        hour_number(first_hour(r.grain, zone, r.from)),
        hour_number(first_hour(r.grain, zone, r.to)),
    )
}

/// One local calendar year: its number, first UTC hour (as an hour number)
/// and length in hours (8760 or 8784 in most zones; more or less in a year
/// a zone changed its standard offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Year {
    pub year: i64,
    pub first_h: i64,
    pub hours: i64,
}

/// Every local calendar year holding an hour of the keys `r`.
pub fn years(zone: Zone, r: KeyRange) -> Vec<Year> {
    if r.from >= r.to {
        return Vec::new();
    }
    let (a, b) = (
        first_hour(r.grain, zone, r.from),
        first_hour(r.grain, zone, r.to),
    );
    let (y0, y1) = (
        key_of(Grain::Year, zone, a),
        key_of(Grain::Year, zone, b.plus(-1)),
    );
    (y0..=y1)
        .map(|y| {
            let (f, t) = (
                hour_number(first_hour(Grain::Year, zone, y)),
                hour_number(first_hour(Grain::Year, zone, y + 1)),
            );
            Year {
                year: y,
                first_h: f,
                hours: t - f,
            }
        })
        .collect()
}

/// One row of the calendar a model's template joins: a UTC hour, its local
/// day and year, and how many hours that day has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarRow {
    pub hour: Hour,
    pub day: NaiveDate,
    pub year: i32,
    pub hours_in_day: i64,
}

/// One local day: its date, first UTC hour and number of hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day {
    pub date: NaiveDate,
    pub first: Hour,
    pub hours: i64,
}

/// Every local day touching the hours `[from, to)`, whole.
pub fn days(zone: Zone, from: Hour, to: Hour) -> Vec<Day> {
    if from >= to {
        return Vec::new();
    }
    let first = key_of(Grain::Day, zone, from);
    let last = key_of(Grain::Day, zone, to.plus(-1));
    (first..=last)
        .map(|d| {
            let (a, b) = (
                first_hour(Grain::Day, zone, d),
                first_hour(Grain::Day, zone, d + 1),
            );
            Day {
                date: date_of_number(d),
                first: a,
                hours: a.hours_until(b),
            }
        })
        .collect()
}

/// The calendar of every local day touching `[from, to)`, hour by hour.
pub fn calendar(zone: Zone, from: Hour, to: Hour) -> Vec<CalendarRow> {
    days(zone, from, to)
        .into_iter()
        .flat_map(|d| {
            (0..d.hours).map(move |i| CalendarRow {
                hour: d.first.plus(i),
                day: d.date,
                year: d.date.year(),
                hours_in_day: d.hours,
            })
        })
        .collect()
}

/// A key as a SQL literal of its column's type (DuckDB's and BigQuery's
/// dialects agree on these forms, given the hour column's `lit`).
pub fn literal(grain: Grain, k: i64, hour_lit: impl Fn(Hour) -> String) -> String {
    match grain {
        Grain::Hour => hour_lit(hour_of(k)),
        Grain::Day => format!("DATE '{}'", date_of_number(k)),
        Grain::Year => k.to_string(),
    }
}

/// `col >= a AND col < b` over the keys `r`: the predicate a sink replaces
/// or reads a key range by, with `col` the quoted column and `lit` writing
/// a key in the dialect at hand.
pub fn between(col: &str, r: KeyRange, lit: impl Fn(Grain, i64) -> String) -> String {
    format!(
        "{col} >= {} AND {col} < {}",
        lit(r.grain, r.from),
        lit(r.grain, r.to)
    )
}

/// A key as people read it: `2026-03-29T01:00:00Z`, `2026-03-29`, `2026`.
pub fn shown(grain: Grain, k: i64) -> String {
    match grain {
        Grain::Hour => hour_of(k).to_string(),
        Grain::Day => date_of_number(k).to_string(),
        Grain::Year => k.to_string(),
    }
}

impl std::fmt::Display for KeyRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}, {})",
            self.grain.word(),
            shown(self.grain, self.from),
            shown(self.grain, self.to)
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_left_once_others_are_done() {
        let r = |from, to| KeyRange {
            grain: Grain::Day,
            from,
            to,
        };
        assert_eq!(
            without(&[r(1, 10), r(20, 22)], &[r(3, 5), r(9, 21)]),
            vec![r(1, 3), r(5, 9), r(21, 22)]
        );
        assert_eq!(without(&[r(1, 3)], &[r(0, 4)]), vec![]);
        assert_eq!(without(&[], &[r(0, 4)]), vec![]);
    }

    use super::*;

    fn h(s: &str) -> Hour {
        Hour::parse(s).unwrap()
    }
    fn madrid() -> Zone {
        Zone::parse("Europe/Madrid").unwrap()
    }

    #[test]
    fn zones_parse_names_and_offsets() {
        assert_eq!(Zone::parse("UTC").unwrap(), Zone::UTC);
        assert_eq!(
            Zone::parse("+01:00").unwrap(),
            Zone::Fixed(FixedOffset::east_opt(3600).unwrap())
        );
        assert_eq!(
            Zone::parse("-03:30").unwrap(),
            Zone::Fixed(FixedOffset::east_opt(-12600).unwrap())
        );
        assert!(Zone::parse("Europe/Madird").is_err());
        assert!(Zone::parse("+1:99").is_err());
        assert!(madrid().whole_hours());
        assert!(!Zone::parse("Asia/Kolkata").unwrap().whole_hours());
        assert!(!Zone::parse("+05:30").unwrap().whole_hours());
    }

    /// Madrid's spring-forward day (2026-03-29) has 23 hours, its
    /// fall-back day (2026-10-25) 25, every other day 24; each day starts
    /// at local midnight.
    #[test]
    fn dst_days_have_23_and_25_hours() {
        let cal = calendar(
            madrid(),
            h("2026-03-28T00:00:00Z"),
            h("2026-03-31T00:00:00Z"),
        );
        let count = |d: &str| {
            let d: NaiveDate = d.parse().unwrap();
            let rows: Vec<_> = cal.iter().filter(|r| r.day == d).collect();
            assert!(rows.iter().all(|r| r.hours_in_day == rows.len() as i64));
            (rows.len(), rows[0].hour)
        };
        assert_eq!(count("2026-03-28"), (24, h("2026-03-27T23:00:00Z")));
        assert_eq!(count("2026-03-29"), (23, h("2026-03-28T23:00:00Z")));
        assert_eq!(count("2026-03-30"), (24, h("2026-03-29T22:00:00Z")));
        let cal = calendar(
            madrid(),
            h("2026-10-25T00:00:00Z"),
            h("2026-10-25T01:00:00Z"),
        );
        assert_eq!(cal.len(), 25);
        assert_eq!(cal[0].hour, h("2026-10-24T22:00:00Z"));
        assert_eq!(cal[24].hour, h("2026-10-25T22:00:00Z"));
        // UTC and fixed offsets: always 24.
        let plus1 = Zone::parse("+01:00").unwrap();
        let cal = calendar(plus1, h("2026-03-29T05:00:00Z"), h("2026-03-29T06:00:00Z"));
        assert_eq!((cal.len(), cal[0].hour), (24, h("2026-03-28T23:00:00Z")));
    }

    /// An hour change touches: hour keys through its lookback; the local
    /// days (and years) holding the changed hours or the lookback after.
    #[test]
    fn affected_keys_and_their_inputs() {
        let r = affected(
            Grain::Hour,
            Zone::UTC,
            7,
            h("2026-01-05T10:00:00Z"),
            h("2026-01-05T11:00:00Z"),
        );
        assert_eq!(
            (shown(r.grain, r.from), shown(r.grain, r.to)),
            ("2026-01-05T10:00:00Z".into(), "2026-01-05T18:00:00Z".into())
        );
        assert_eq!(
            inputs(Zone::UTC, 7, r),
            (h("2026-01-05T03:00:00Z"), h("2026-01-05T18:00:00Z"))
        );

        // 22:00 UTC on 03-28 is 23:00 in Madrid: with 7 h of lookback the
        // 8-hour means labelled up to 04:00 local on the 29th change, so both days.
        let r = affected(
            Grain::Day,
            madrid(),
            7,
            h("2026-03-28T22:00:00Z"),
            h("2026-03-28T23:00:00Z"),
        );
        assert_eq!(r.to - r.from, 2);
        assert_eq!(shown(r.grain, r.from), "2026-03-28");
        assert_eq!(
            inputs(madrid(), 7, r),
            (h("2026-03-27T16:00:00Z"), h("2026-03-29T22:00:00Z"))
        );
        // Without lookback only the hour's own day.
        let r = affected(
            Grain::Day,
            madrid(),
            0,
            h("2026-03-28T22:00:00Z"),
            h("2026-03-28T23:00:00Z"),
        );
        assert_eq!(
            (shown(r.grain, r.from), r.to - r.from),
            ("2026-03-28".into(), 1)
        );
        // 23:00 UTC on 12-31 is already next year in Madrid.
        let r = affected(
            Grain::Year,
            madrid(),
            0,
            h("2026-12-31T23:00:00Z"),
            h("2027-01-01T00:00:00Z"),
        );
        assert_eq!((r.from, r.to), (2027, 2028));
        assert_eq!(
            inputs(madrid(), 0, r),
            (h("2026-12-31T23:00:00Z"), h("2027-12-31T23:00:00Z"))
        );
        let r = affected(
            Grain::Year,
            Zone::UTC,
            7,
            h("2026-12-31T20:00:00Z"),
            h("2026-12-31T21:00:00Z"),
        );
        assert_eq!((r.from, r.to), (2026, 2028));
    }

    #[test]
    fn literals() {
        let lit = |h: Hour| format!("'{h}'");
        assert_eq!(literal(Grain::Hour, 0, lit), "'1970-01-01T00:00:00Z'");
        assert_eq!(
            literal(Grain::Day, 20_541, |_| String::new()),
            "DATE '2026-03-29'"
        );
        assert_eq!(literal(Grain::Year, 2026, |_| String::new()), "2026");
    }

    /// A year's hours in its zone: 8760, 8784 in a leap year, starting at
    /// local midnight (23:00 UTC the day before in Berlin); keys of any
    /// grain name the years their hours fall in.
    #[test]
    fn years_hold_their_local_hours() {
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        let y = |k| KeyRange {
            grain: Grain::Year,
            from: k,
            to: k + 1,
        };
        let got = years(berlin, y(2028));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].hours, 8784);
        assert_eq!(hour_of(got[0].first_h), h("2027-12-31T23:00:00Z"));
        assert_eq!(years(Zone::UTC, y(2027))[0].hours, 8760);
        let days = KeyRange {
            grain: Grain::Day,
            from: key_of(Grain::Day, berlin, h("2026-12-31T12:00:00Z")),
            to: key_of(Grain::Day, berlin, h("2027-01-01T12:00:00Z")) + 1,
        };
        let ys: Vec<i64> = years(berlin, days).iter().map(|y| y.year).collect();
        assert_eq!(ys, [2026, 2027]);
    }
}
