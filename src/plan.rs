//! Hour windows: which complete UTC hours a run or a backfill processes, in
//! which batches, and how the checkpoint may move. Pure; no clock, no I/O.

use chrono::{DateTime, Utc};

use crate::spec::Duration;
use crate::time::{Hour, Ranges};

/// `[from, to)`, whole hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub from: Hour,
    pub to: Hour,
}

impl Batch {
    pub fn hours(&self) -> i64 {
        self.from.hours_until(self.to)
    }

    /// Every hour label in the batch.
    pub fn each_hour(&self) -> impl Iterator<Item = Hour> + '_ {
        (0..self.hours()).map(|i| self.from.plus(i))
    }
}

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {})", self.from, self.to)
    }
}

/// The hours one load replaces in every sink: the batch's hours less those
/// the source returned no row for (raw data expires; the sinks' rows are
/// then the only copy), as contiguous ranges. With `replace_empty`, all of
/// the batch's hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub batch: Batch,
    pub ranges: Ranges<Hour>,
}

impl Scope {
    /// `with_rows`: the hours (as [`Hour`]s) the source returned rows for.
    pub fn new(
        batch: Batch,
        with_rows: &std::collections::BTreeSet<Hour>,
        replace_empty: bool,
    ) -> Scope {
        let ranges = if replace_empty {
            Ranges::one(batch.from, batch.to)
        } else {
            Ranges::of_points(batch.each_hour().filter(|h| with_rows.contains(h)))
        };
        Scope { batch, ranges }
    }

    /// Whether the load replaces hour `h`.
    pub fn contains(&self, h: Hour) -> bool {
        self.ranges.contains(h)
    }

    /// The batch's hours left as the sinks hold them.
    pub fn kept_hours(&self) -> i64 {
        self.batch.hours()
            - self
                .ranges
                .iter()
                .map(|(a, b)| a.hours_until(b))
                .sum::<i64>()
    }

    /// `(col >= a AND col < b) OR ...` over the ranges, with `lit` writing
    /// an hour as a literal of the sink's dialect; `FALSE` when none.
    pub fn predicate(&self, col: &str, lit: impl Fn(Hour) -> String) -> String {
        if self.ranges.is_empty() {
            return "FALSE".into();
        }
        let parts: Vec<String> = self
            .ranges
            .iter()
            .map(|(a, b)| format!("({col} >= {} AND {col} < {})", lit(a), lit(b)))
            .collect();
        format!("({})", parts.join(" OR "))
    }
}

/// What one job will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The newest complete hour at `now`.
    pub last_complete: Hour,
    /// Hours after the checkpoint (or from the start) in this plan.
    pub new_hours: i64,
    /// Hours at or before the checkpoint redone for late points.
    pub redo_hours: i64,
    /// Complete hours still pending after this plan (past `max_hours_per_run`).
    pub left_hours: i64,
    pub batches: Vec<Batch>,
}

impl Plan {
    pub fn total_hours(&self) -> i64 {
        self.new_hours + self.redo_hours
    }

    /// The hours of its batches.
    pub fn hours(&self) -> Ranges<Hour> {
        let mut r = Ranges::new();
        for b in &self.batches {
            r.add(b.from, b.to);
        }
        r
    }

    /// The plan of a job whose sinks stand at different positions, as one:
    /// every hour any sink's plan (`per_sink`) holds, in batches of at most
    /// `size` hours cut wherever a sink's hours begin or end, so that each
    /// batch is wholly taken, or not, by each sink. `self` (the plan of the
    /// sink furthest behind) gives the counts.
    pub fn merged(mut self, per_sink: &[Ranges<Hour>], size: u32) -> Plan {
        let mut all = Ranges::new();
        let mut cuts = std::collections::BTreeSet::new();
        for r in per_sink {
            all.extend(r);
            for (a, b) in r.iter() {
                cuts.insert(a);
                cuts.insert(b);
            }
        }
        self.batches = Vec::new();
        for (a, b) in all.iter() {
            let mut at = a;
            for &cut in cuts.range(a.plus(1)..b).chain(std::iter::once(&b)) {
                self.batches.extend(batches(at, cut, size));
                at = cut;
            }
        }
        self
    }
}

/// The settings of one job that shape its plan.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub delay: Duration,
    pub start: Option<Hour>,
    /// No hour at or after this is ever planned (`end`).
    pub end: Option<Hour>,
    pub lookback_hours: u32,
    pub max_hours_per_run: u32,
    pub batch_hours: u32,
}

/// The newest hour `h` with `now >= h + 1h + delay`.
pub fn last_complete(now: DateTime<Utc>, delay: Duration) -> Hour {
    Hour::floor(now - delay.chrono()).plus(-1)
}

/// The newest hour a plan may hold: the last complete one, and before `end`.
fn last_planned(now: DateTime<Utc>, settings: &Settings) -> Hour {
    last_due(now, settings.delay, settings.end)
}

/// The newest hour due at `now`: the last complete one, and before `end`
/// (a pipeline with `end:` is finished once it holds `end - 1h`).
pub fn last_due(now: DateTime<Utc>, delay: Duration, end: Option<Hour>) -> Hour {
    let last = last_complete(now, delay);
    match end {
        Some(end) => last.min(end.plus(-1)),
        None => last,
    }
}

/// Where a job with no checkpoint starts: its `start`, else the last complete hour.
pub fn first_hour(settings: &Settings, checkpoint: Option<Hour>, last: Hour) -> Hour {
    match checkpoint {
        Some(c) => c.plus(1),
        None => settings.start.unwrap_or(last),
    }
}

/// The plan of a `run`: catch up from the checkpoint, plus lookback.
pub fn run_plan(now: DateTime<Utc>, settings: &Settings, checkpoint: Option<Hour>) -> Plan {
    let last = last_planned(now, settings);
    let first_new = first_hour(settings, checkpoint, last);
    let pending = first_new.hours_until(last.plus(1)).max(0);
    let new_hours = pending.min(settings.max_hours_per_run as i64);
    let mut redo_from = first_new;
    if checkpoint.is_some() {
        redo_from = first_new.plus(-(settings.lookback_hours as i64));
        if let Some(start) = settings.start {
            redo_from = redo_from.max(start).min(first_new);
        }
    }
    let redo_hours = redo_from.hours_until(first_new);
    let end = first_new.plus(new_hours);
    Plan {
        last_complete: last,
        new_hours,
        redo_hours,
        left_hours: pending - new_hours,
        batches: batches(redo_from, end, settings.batch_hours),
    }
}

/// The plan of a `backfill` of `[from, to)`, clipped to complete hours.
pub fn backfill_plan(
    now: DateTime<Utc>,
    settings: &Settings,
    checkpoint: Option<Hour>,
    from: Hour,
    to: Hour,
) -> Plan {
    let last = last_planned(now, settings);
    let end = to.min(last.plus(1));
    let total = from.hours_until(end).max(0);
    // Hours up to the checkpoint are redone; the rest are new.
    let redo = match checkpoint {
        Some(c) => from.hours_until(c.plus(1)).clamp(0, total),
        None => 0,
    };
    Plan {
        last_complete: last,
        new_hours: total - redo,
        redo_hours: redo,
        left_hours: 0,
        batches: batches(from, from.plus(total), settings.batch_hours),
    }
}

/// Splits `[from, to)` into batches of at most `size` hours.
pub fn batches(from: Hour, to: Hour, size: u32) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let next = at.plus(size.max(1) as i64).min(to);
        out.push(Batch { from: at, to: next });
        at = next;
    }
    out
}

/// Values (rows x fields fetched) one batch may stage: ~40 MB of six-field
/// rows with a tag (a row weighs 8 bytes of time, 4 per tag and 8 per
/// field). A batch's staged rows are what memory grows with, so batches of
/// a wide network are cut to fewer hours; `batch_hours` stays the upper
/// bound. Twenty stations of minute readings (7,200 values an hour over six
/// fields) keep their week-long batches. Each query costs InfluxDB a set-up
/// per series: at 1,000 stations, 2,000,000 values (6-hour batches) cost it
/// 6.9-8.3 s of CPU for 2 days against 6.2-6.4 s at 4,000,000 (11 hours),
/// for a peak RSS of 87-99 against 123-128 MB (scripts/bench data,
/// alternating runs).
pub const BATCH_VALUES: u64 = 4_000_000;

/// A run's first batch is sized by a count of its first hour unless it is
/// this short: an hourly run with the default 2-hour lookback stays one
/// batch and one query (3 hours of six minute-fields is 1,080 values a
/// station, within the budget up to ~3,700 stations).
pub const UNSIZED_HOURS: i64 = 3;

/// Cuts `batch` so that, at `rows_per_hour` rows of `fields` values each,
/// it stays within [`BATCH_VALUES`] (never under one hour); the rest, if
/// any, is the next batch.
pub fn cut(batch: Batch, rows_per_hour: f64, fields: usize) -> (Batch, Option<Batch>) {
    let per_hour = rows_per_hour * fields.max(1) as f64;
    if per_hour <= 0.0 {
        return (batch, None);
    }
    let hours = ((BATCH_VALUES as f64 / per_hour).floor() as i64).max(1);
    if hours >= batch.hours() {
        return (batch, None);
    }
    let mid = batch.from.plus(hours);
    (
        Batch {
            from: batch.from,
            to: mid,
        },
        Some(Batch {
            from: mid,
            to: batch.to,
        }),
    )
}

/// The checkpoint after `batch` reached every sink: it moves forward only when
/// the batch touches or overlaps the hours right after it, so it never skips a
/// hole and never moves backwards.
pub fn advance(checkpoint: Option<Hour>, start: Option<Hour>, batch: Batch) -> Option<Hour> {
    let newest = batch.to.plus(-1);
    match checkpoint {
        Some(c) if batch.from <= c.plus(1) => Some(c.max(newest)),
        Some(c) => Some(c),
        None => match start {
            Some(s) if batch.from <= s && batch.to > s => Some(newest),
            Some(_) => None,
            // No start: a first run begins wherever its plan begins.
            None => Some(newest),
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sinks_at_different_positions_share_one_plan_cut_where_each_begins() {
        let h = |s: &str| Hour::parse(s).unwrap();
        let s = Settings {
            delay: Duration(std::time::Duration::ZERO),
            start: None,
            end: None,
            lookback_hours: 2,
            max_hours_per_run: 720,
            batch_hours: 24,
        };
        let now = "2026-11-20T12:05:00Z".parse().unwrap();
        // The warehouse is level (checkpoint 10:00); BigQuery is six hours behind.
        let level = run_plan(now, &s, Some(h("2026-11-20T10:00:00Z")));
        let behind = run_plan(now, &s, Some(h("2026-11-20T04:00:00Z")));
        let plan = behind.clone().merged(&[level.hours(), behind.hours()], 4);
        let cut: Vec<(String, String)> = plan
            .batches
            .iter()
            .map(|b| {
                (
                    b.from.to_string()[11..16].to_owned(),
                    b.to.to_string()[11..16].to_owned(),
                )
            })
            .collect();
        let want = [("03:00", "07:00"), ("07:00", "09:00"), ("09:00", "12:00")];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(cut, want);
        assert_eq!(
            (plan.new_hours, plan.redo_hours),
            (behind.new_hours, behind.redo_hours)
        );
        // Each batch is wholly in or out of each sink's hours.
        for b in &plan.batches {
            for r in [level.hours(), behind.hours()] {
                let inside = b.each_hour().filter(|x| r.contains(*x)).count() as i64;
                assert!(inside == 0 || inside == b.hours(), "{b} splits {r:?}");
            }
        }
        // A hole between two sinks' hours stays a hole.
        let far = run_plan(
            now,
            &Settings {
                max_hours_per_run: 3,
                ..s
            },
            Some(h("2026-11-19T00:00:00Z")),
        );
        let plan = far.clone().merged(&[level.hours(), far.hours()], 24);
        assert_eq!(plan.hours().len(), 2);
    }

    #[test]
    fn batches_are_cut_to_the_value_budget() {
        let h = |s: &str| Hour::parse(s).unwrap();
        let week = Batch {
            from: h("2026-11-01T00:00:00Z"),
            to: h("2026-11-08T00:00:00Z"),
        };
        // Twenty stations of six fields: the week stays whole.
        assert_eq!(cut(week, 1_200.0, 6), (week, None));
        // A thousand: 360,000 values an hour, so 11 hours.
        let (first, rest) = cut(week, 60_000.0, 6);
        assert_eq!(first.to, h("2026-11-01T11:00:00Z"));
        assert_eq!(
            rest,
            Some(Batch {
                from: h("2026-11-01T11:00:00Z"),
                to: week.to
            })
        );
        // Never under an hour; nothing known, nothing cut.
        assert_eq!(cut(week, 1e9, 6).0.hours(), 1);
        assert_eq!(cut(week, 0.0, 6), (week, None));
    }

    use super::*;
    use crate::spec::parse_time;

    fn h(s: &str) -> Hour {
        Hour::parse(s).unwrap()
    }

    fn settings() -> Settings {
        Settings {
            end: None,
            delay: Duration::parse("5m").unwrap(),
            start: None,
            lookback_hours: 0,
            max_hours_per_run: 720,
            batch_hours: 24,
        }
    }

    #[test]
    fn completeness_respects_delay() {
        let d = Duration::parse("5m").unwrap();
        assert_eq!(
            last_complete(parse_time("2026-11-27T13:04:59Z").unwrap(), d),
            h("2026-11-27T11:00:00Z")
        );
        assert_eq!(
            last_complete(parse_time("2026-11-27T13:05:00Z").unwrap(), d),
            h("2026-11-27T12:00:00Z")
        );
    }

    #[test]
    fn first_run_without_start_does_the_previous_complete_hour() {
        let p = run_plan(
            parse_time("2026-11-27T13:10:00Z").unwrap(),
            &settings(),
            None,
        );
        assert_eq!(
            p.batches,
            vec![Batch {
                from: h("2026-11-27T12:00:00Z"),
                to: h("2026-11-27T13:00:00Z")
            }]
        );
        assert_eq!((p.new_hours, p.redo_hours, p.left_hours), (1, 0, 0));
    }

    #[test]
    fn catch_up_in_batches_with_limit() {
        let mut s = settings();
        s.start = Some(h("2026-11-01T00:00:00Z"));
        s.max_hours_per_run = 50;
        let p = run_plan(parse_time("2026-11-27T13:10:00Z").unwrap(), &s, None);
        assert_eq!(p.new_hours, 50);
        assert_eq!(p.left_hours, 26 * 24 + 13 - 50);
        assert_eq!(p.batches.len(), 3);
        assert_eq!(
            p.batches[2],
            Batch {
                from: h("2026-11-03T00:00:00Z"),
                to: h("2026-11-03T02:00:00Z")
            }
        );
    }

    #[test]
    fn up_to_date_with_lookback_redoes_only_lookback() {
        let mut s = settings();
        s.lookback_hours = 2;
        let cp = Some(h("2026-11-27T12:00:00Z"));
        let p = run_plan(parse_time("2026-11-27T13:10:00Z").unwrap(), &s, cp);
        assert_eq!((p.new_hours, p.redo_hours), (0, 2));
        assert_eq!(
            p.batches,
            vec![Batch {
                from: h("2026-11-27T11:00:00Z"),
                to: h("2026-11-27T13:00:00Z")
            }]
        );
        // Lookback never reaches before start.
        s.start = Some(h("2026-11-27T12:00:00Z"));
        let p = run_plan(parse_time("2026-11-27T13:10:00Z").unwrap(), &s, cp);
        assert_eq!(p.redo_hours, 1);
    }

    #[test]
    fn nothing_to_do() {
        let cp = Some(h("2026-11-27T12:00:00Z"));
        let p = run_plan(parse_time("2026-11-27T13:10:00Z").unwrap(), &settings(), cp);
        assert!(p.batches.is_empty());
        assert_eq!(p.total_hours(), 0);
    }

    #[test]
    fn backfill_clips_to_complete_hours_and_counts_redo() {
        let cp = Some(h("2026-11-27T05:00:00Z"));
        let p = backfill_plan(
            parse_time("2026-11-27T13:10:00Z").unwrap(),
            &settings(),
            cp,
            h("2026-11-27T00:00:00Z"),
            h("2026-11-28T00:00:00Z"),
        );
        assert_eq!((p.redo_hours, p.new_hours), (6, 7));
        assert_eq!(
            p.batches,
            vec![Batch {
                from: h("2026-11-27T00:00:00Z"),
                to: h("2026-11-27T13:00:00Z")
            }]
        );
    }

    #[test]
    fn checkpoint_moves_forward_only_without_holes() {
        let b = |f: &str, t: &str| Batch {
            from: h(f),
            to: h(t),
        };
        let cp = Some(h("2026-11-27T05:00:00Z"));
        assert_eq!(
            advance(cp, None, b("2026-11-27T06:00:00Z", "2026-11-27T08:00:00Z")),
            Some(h("2026-11-27T07:00:00Z"))
        );
        // a hole: stays
        assert_eq!(
            advance(cp, None, b("2026-11-27T07:00:00Z", "2026-11-27T08:00:00Z")),
            cp
        );
        // an older range: never backwards
        assert_eq!(
            advance(cp, None, b("2026-11-27T00:00:00Z", "2026-11-27T02:00:00Z")),
            cp
        );
        let start = Some(h("2026-11-27T00:00:00Z"));
        assert_eq!(
            advance(
                None,
                start,
                b("2026-11-27T00:00:00Z", "2026-11-27T02:00:00Z")
            ),
            Some(h("2026-11-27T01:00:00Z"))
        );
        assert_eq!(
            advance(
                None,
                start,
                b("2026-11-27T03:00:00Z", "2026-11-27T04:00:00Z")
            ),
            None
        );
    }

    #[test]
    fn scope_leaves_out_hours_without_source_rows() {
        let b = Batch {
            from: h("2026-01-01T00:00:00Z"),
            to: h("2026-01-01T06:00:00Z"),
        };
        let rows: std::collections::BTreeSet<Hour> =
            [0, 1, 3, 5].into_iter().map(|i| b.from.plus(i)).collect();
        let s = Scope::new(b, &rows, false);
        let r = |f: i64, t: i64| (b.from.plus(f), b.from.plus(t));
        assert_eq!(
            s.ranges.iter().collect::<Vec<_>>(),
            vec![r(0, 2), r(3, 4), r(5, 6)]
        );
        assert_eq!(s.kept_hours(), 2);
        assert!(s.contains(b.from.plus(1)) && !s.contains(b.from.plus(2)));
        assert_eq!(
            s.predicate("h", |x| format!("'{x}'")),
            "((h >= '2026-01-01T00:00:00Z' AND h < '2026-01-01T02:00:00Z') OR (h >= '2026-01-01T03:00:00Z' AND h < '2026-01-01T04:00:00Z') OR (h >= '2026-01-01T05:00:00Z' AND h < '2026-01-01T06:00:00Z'))"
        );
        let none = Scope::new(b, &Default::default(), false);
        assert_eq!((none.ranges.len(), none.kept_hours()), (0, 6));
        assert_eq!(none.predicate("h", |x| x.to_string()), "FALSE");
        let all = Scope::new(b, &Default::default(), true);
        assert_eq!(
            (all.kept_hours(), all.ranges),
            (0, Ranges::one(b.from, b.to))
        );
    }
}
