//! Cron schedules, read as Prefect reads them, so that `serve` and a
//! Prefect deployment of the same string fire at the same instants.
//!
//! Parsing is `croner`'s (five fields or an `@hourly`-style alias, month
//! and weekday names, ranges, steps; when both day fields are restricted
//! either may match, as Vixie cron and Prefect's `day_or` do). Matching is
//! on the wall clock of the schedule's time zone, with Prefect's policy
//! for daylight-saving changes (measured against its scheduler in the
//! tests): a wall time that occurs twice fires at its first occurrence,
//! one that a change skips fires shifted forward by the gap, and two wall
//! times that land on one instant fire once. So an hourly schedule pauses
//! two hours when clocks go back, and `30 2 * * *` fires at 03:30 on the
//! spring-forward day.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Cron {
    inner: croner::Cron,
}

/// The instant a wall time of `tz` names: the first of two, or, in a gap,
/// the wall time read with the offset before the gap (shifted forward).
fn localize<Z: TimeZone>(tz: &Z, wall: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // A day earlier is before the change (changes are months apart).
            let before = tz
                .offset_from_utc_datetime(&(wall - Duration::days(1)))
                .fix();
            (wall - Duration::seconds(i64::from(before.local_minus_utc()))).and_utc()
        }
    }
}

impl Cron {
    /// Parses a schedule; an error says why, including one that never fires.
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let inner = parser
            .parse(expr)
            .map_err(|e| format!("`{expr}` is not a cron schedule: {e}"))?;
        let cron = Cron { inner };
        // Every schedule that fires at all does so within 28 years (the
        // calendar repeats); one that does not is a mistake, not a schedule.
        let from = Utc
            .with_ymd_and_hms(2001, 1, 1, 0, 0, 0)
            .single()
            .expect("valid");
        match cron.next_wall(from.naive_utc()) {
            Some(w) if w < from.naive_utc() + Duration::days(366 * 28) => Ok(cron),
            _ => Err(format!("`{expr}` never fires")),
        }
    }

    /// The first wall time after `wall` the schedule names.
    fn next_wall(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        self.inner
            .find_next_occurrence(&wall.and_utc(), false)
            .ok()
            .map(|t| t.naive_utc())
    }

    /// The next fire time strictly after `t`, in UTC.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after_in(t, &Utc)
    }

    /// The next fire time strictly after `t`, reading the schedule in `tz`.
    pub fn next_after_in<Z: TimeZone>(&self, t: DateTime<Utc>, tz: &Z) -> Option<DateTime<Utc>> {
        // From a little before `t`'s wall time: a wall time in a gap fires
        // later than it reads, and a repeated hour reads earlier than it is.
        let mut wall = t.with_timezone(tz).naive_local() - Duration::hours(3);
        for _ in 0..100_000 {
            wall = self.next_wall(wall)?;
            let at = localize(tz, wall);
            if at > t {
                return Some(at);
            }
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
        // 2026-03-29: 02:30 does not exist in Berlin; it fires shifted by
        // the gap, at 03:30 CEST (01:30 UTC), as Prefect's scheduler does.
        let c = Cron::parse("30 2 * * *").unwrap();
        assert_eq!(
            c.next_after_in(t("2026-03-28T12:00:00Z"), &berlin),
            Some(t("2026-03-29T01:30:00Z"))
        );
        // 2026-10-25: 02:00-03:00 happens twice; hourly fires at the first
        // 02:00 (00:00 UTC), then 03:00 CET (02:00 UTC): a two-hour pause.
        let c = Cron::parse("0 * * * *").unwrap();
        assert_eq!(
            c.next_after_in(t("2026-10-24T23:30:00Z"), &berlin),
            Some(t("2026-10-25T00:00:00Z"))
        );
        assert_eq!(
            c.next_after_in(t("2026-10-25T00:00:00Z"), &berlin),
            Some(t("2026-10-25T02:00:00Z"))
        );
    }

    #[test]
    fn names_and_aliases() {
        let c = Cron::parse("0 12 * JAN,JUL SUN").unwrap();
        assert_eq!(
            c.next_after(t("2026-11-27T00:00:00Z")),
            Some(t("2027-01-03T12:00:00Z"))
        );
        let c = Cron::parse("@hourly").unwrap();
        assert_eq!(
            c.next_after(t("2026-11-27T13:04:59Z")),
            Some(t("2026-11-27T14:00:00Z"))
        );
    }

    #[test]
    fn errors() {
        assert!(Cron::parse("5 * * *")
            .unwrap_err()
            .starts_with("`5 * * *` is not a cron schedule"));
        assert!(Cron::parse("61 * * * *").is_err());
        assert!(Cron::parse("*/0 * * * *").is_err());
        assert!(Cron::parse("0 0 5 * * *").is_err(), "no seconds field");
        assert_eq!(
            Cron::parse("0 0 30 2 *").unwrap_err(),
            "`0 0 30 2 *` never fires"
        );
    }
}
