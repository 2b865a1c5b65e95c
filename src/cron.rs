//! Cron schedules: five fields (minute hour day-of-month month day-of-week),
//! read in a time zone (UTC unless configured). Pure; `serve` asks for the
//! next fire time. Across a DST change each UTC minute is matched against the
//! local time it shows: a skipped local time does not fire, a repeated one
//! fires twice (as the wall clock shows it twice).

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    /// Standard cron: when both day fields are restricted, either may match.
    days_restricted: bool,
    weekdays_restricted: bool,
}

fn field(text: &str, lo: u32, hi: u32) -> Result<Vec<bool>, String> {
    let mut set = vec![false; hi as usize + 1];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad(text, lo, hi))?,
            ),
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (num(a, text, lo, hi)?, num(b, text, lo, hi)?)
        } else {
            let a = num(range, text, lo, hi)?;
            (a, if part.contains('/') { hi } else { a })
        };
        if a > b {
            return Err(bad(text, lo, hi));
        }
        let mut v = a;
        while v <= b {
            set[v as usize] = true;
            v += step;
        }
    }
    Ok(set)
}

fn num(s: &str, text: &str, lo: u32, hi: u32) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| bad(text, lo, hi))
}

fn bad(text: &str, lo: u32, hi: u32) -> String {
    format!("bad field `{text}` (allowed {lo}-{hi}, `*`, `,`, `-`, `/`)")
}

impl Cron {
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let f: Vec<&str> = expr.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "`{expr}` must have 5 fields (minute hour day month weekday)"
            ));
        }
        let mut weekdays = field(f[4], 0, 7).map_err(|e| format!("`{expr}`: {e}"))?;
        if weekdays[7] {
            weekdays[0] = true; // 7 is Sunday too
        }
        Ok(Cron {
            minutes: field(f[0], 0, 59).map_err(|e| format!("`{expr}`: {e}"))?,
            hours: field(f[1], 0, 23).map_err(|e| format!("`{expr}`: {e}"))?,
            days: field(f[2], 1, 31).map_err(|e| format!("`{expr}`: {e}"))?,
            months: field(f[3], 1, 12).map_err(|e| format!("`{expr}`: {e}"))?,
            weekdays,
            days_restricted: f[2] != "*",
            weekdays_restricted: f[4] != "*",
        })
    }

    fn matches<T: Datelike + Timelike>(&self, t: T) -> bool {
        let day = self.days[t.day() as usize];
        let weekday = self.weekdays[t.weekday().num_days_from_sunday() as usize];
        let day_ok = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            _ => day && weekday,
        };
        self.minutes[t.minute() as usize]
            && self.hours[t.hour() as usize]
            && self.months[t.month() as usize]
            && day_ok
    }

    /// The first fire time strictly after `t`, within about four years.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after_in(t, &Utc)
    }

    /// The first fire time strictly after `t` with the fields read in `tz`.
    pub fn next_after_in<Z: TimeZone>(&self, t: DateTime<Utc>, tz: &Z) -> Option<DateTime<Utc>> {
        let mut m =
            DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0)? + Duration::minutes(1);
        for _ in 0..(4 * 366 * 24 * 60) {
            if self.matches(m.with_timezone(tz)) {
                return Some(m);
            }
            m += Duration::minutes(1);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn hourly_at_five_past() {
        let c = Cron::parse("5 * * * *").unwrap();
        assert_eq!(
            c.next_after(t("2026-11-27T13:04:59Z")),
            Some(t("2026-11-27T13:05:00Z"))
        );
        assert_eq!(
            c.next_after(t("2026-11-27T13:05:00Z")),
            Some(t("2026-11-27T14:05:00Z"))
        );
    }

    #[test]
    fn steps_ranges_lists_and_days() {
        let c = Cron::parse("*/15 6-7 * * 1-5").unwrap();
        // Friday 2026-11-27 07:50 -> Monday 06:00
        assert_eq!(
            c.next_after(t("2026-11-27T07:50:00Z")),
            Some(t("2026-11-30T06:00:00Z"))
        );
        let c = Cron::parse("0 0 1,15 * *").unwrap();
        assert_eq!(
            c.next_after(t("2026-11-27T00:00:00Z")),
            Some(t("2026-12-01T00:00:00Z"))
        );
        let c = Cron::parse("0 12 * * 7").unwrap();
        assert_eq!(
            c.next_after(t("2026-11-27T00:00:00Z")),
            Some(t("2026-11-29T12:00:00Z"))
        );
        // Day of month OR day of week when both are restricted.
        let c = Cron::parse("0 0 1 * 1").unwrap();
        assert_eq!(
            c.next_after(t("2026-11-27T00:00:00Z")),
            Some(t("2026-11-30T00:00:00Z"))
        );
    }

    #[test]
    fn time_zones_and_dst() {
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let c = Cron::parse("5 6 * * *").unwrap();
        // Winter: 06:05 CET is 05:05 UTC; summer: 06:05 CEST is 04:05 UTC.
        assert_eq!(
            c.next_after_in(t("2026-11-27T00:00:00Z"), &berlin),
            Some(t("2026-11-27T05:05:00Z"))
        );
        assert_eq!(
            c.next_after_in(t("2026-07-01T00:00:00Z"), &berlin),
            Some(t("2026-07-01T04:05:00Z"))
        );
        // 2026-03-29: 02:30 local does not exist in Berlin; the next one is a day later.
        let c = Cron::parse("30 2 * * *").unwrap();
        assert_eq!(
            c.next_after_in(t("2026-03-28T12:00:00Z"), &berlin),
            Some(t("2026-03-30T00:30:00Z"))
        );
    }

    #[test]
    fn errors() {
        assert!(Cron::parse("5 * * *").unwrap_err().contains("5 fields"));
        assert!(Cron::parse("61 * * * *")
            .unwrap_err()
            .contains("bad field `61`"));
        assert!(Cron::parse("*/0 * * * *").is_err());
        assert_eq!(
            Cron::parse("0 0 30 2 *")
                .unwrap()
                .next_after(t("2026-01-01T00:00:00Z")),
            None
        );
    }
}
