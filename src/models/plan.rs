//! Which models a run touches, the hours each has pending once the run
//! has marked its own, and the keys those touch ([`affected`]): pure (no
//! state, no clock), shared by `run`, `dry-run` and `status`. As in
//! SQLMesh's scheduler, the models own their intervals: the hours a run's
//! jobs load (or a `backfill --model` range) and the hours of the keys an
//! upstream model recomputes become a model's pending hours; the keys
//! those touch are what it recomputes.

use crate::spec::Model;
use crate::time::keys::{self, KeyRange};
use crate::time::{Hour, Ranges};

/// A model a run touches.
#[derive(Debug, Clone, Copy)]
pub struct Touched<'a> {
    pub model: &'a Model,
    /// The run only finishes hours left pending (by a run that died or
    /// failed, or an upstream model's): a lease another run holds is that
    /// run's to finish, not a failure.
    pub pending_only: bool,
}

/// Whether a model's input changes in this run: it reads a job with hours
/// to load, or `--model` names it.
pub fn changes(m: &Model, job_loads: &dyn Fn(&str) -> bool, asked: &[String]) -> bool {
    asked.contains(&m.name) || m.jobs.iter().any(|j| job_loads(j))
}

/// The models a run touches, in the spec's order: those whose input it
/// changes, those reading one of those (their input changes with it), and,
/// unless only some models were asked for, those with pending hours
/// (`pending(m)`; asked only of models none of the above).
pub fn touched<'a>(
    models: &'a [Model],
    job_loads: &dyn Fn(&str) -> bool,
    asked: &[String],
    pending: &dyn Fn(&Model) -> bool,
) -> Vec<Touched<'a>> {
    let mut out: Vec<Touched<'a>> = Vec::new();
    for m in models {
        let upstream: Vec<bool> = out
            .iter()
            .filter(|t| m.depends_on.contains(&t.model.name))
            .map(|t| t.pending_only)
            .collect();
        if changes(m, job_loads, asked) || upstream.iter().any(|only| !only) {
            out.push(Touched {
                model: m,
                pending_only: false,
            });
        } else if !upstream.is_empty() || (asked.is_empty() && pending(m)) {
            out.push(Touched {
                model: m,
                pending_only: true,
            });
        }
    }
    out
}

/// The hours each of `models` (in the spec's order) has pending once the
/// run has marked: what the state holds (`pending`), the hours the run
/// loads for it (`loads`), and the hours of the keys each model it reads
/// will recompute.
pub fn marked(
    models: &[&Model],
    loads: &dyn Fn(&Model) -> Ranges<Hour>,
    pending: &dyn Fn(&Model) -> Ranges<Hour>,
) -> Vec<Ranges<Hour>> {
    let mut out: Vec<Ranges<Hour>> = Vec::with_capacity(models.len());
    for (i, m) in models.iter().enumerate() {
        let mut hours = pending(m);
        hours.extend(&loads(m));
        for (u, theirs) in models[..i].iter().zip(&out) {
            if m.depends_on.contains(&u.name) {
                hours.extend(&spans(u, theirs));
            }
        }
        out.push(hours);
    }
    out
}

/// The hours the keys `pending` touches in `m` cover: what a model reading
/// `m`'s rows must count as changed.
pub fn spans(m: &Model, pending: &Ranges<Hour>) -> Ranges<Hour> {
    affected(m, pending)
        .iter()
        .map(|r| {
            let (a, b) = keys::key_hours(m.zone, *r);
            (keys::hour_of(a), keys::hour_of(b))
        })
        .collect()
}

/// The output keys of `m` that `pending` hours touch, merged.
pub fn affected(m: &Model, pending: &Ranges<Hour>) -> Vec<KeyRange> {
    let keys: Ranges<i64> = pending
        .iter()
        .map(|(a, b)| keys::affected(m.grain, m.zone, m.lookback_hours, a, b))
        .map(|r| (r.from, r.to))
        .collect();
    keys.iter()
        .map(|(from, to)| KeyRange {
            grain: m.grain,
            from,
            to,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Grain, Zone};

    fn model(name: &str, grain: Grain, jobs: &[&str], reads: &[&str]) -> Model {
        Model {
            name: name.into(),
            template: format!("{name}.sql"),
            grain,
            lookback_hours: 0,
            zone: Zone::parse("Europe/Madrid").unwrap(),
            table: name.into(),
            jobs: jobs.iter().map(|j| j.to_string()).collect(),
            tags: vec!["station".into()],
            hourly_tables: vec!["pollutant_hourly".into()],
            depends_on: reads.iter().map(|j| j.to_string()).collect(),
            params: Default::default(),
            events: None,
        }
    }

    fn h(s: &str) -> Hour {
        Hour::parse(s).unwrap()
    }

    /// a reads the loading job, b reads a, c another job with hours left
    /// pending, d nothing pending: a and b change, c is finished, d is
    /// left alone; with `--model a`, c is left alone too.
    #[test]
    fn a_run_touches_what_changes_what_reads_it_and_what_is_pending() {
        let models = [
            model("a", Grain::Day, &["co"], &[]),
            model("b", Grain::Year, &[], &["a"]),
            model("c", Grain::Hour, &["no2"], &[]),
            model("d", Grain::Hour, &["so2"], &[]),
        ];
        let loads = |j: &str| j == "co";
        let pending = |m: &Model| m.name == "c";
        let got: Vec<(&str, bool)> = touched(&models, &loads, &[], &pending)
            .iter()
            .map(|t| (t.model.name.as_str(), t.pending_only))
            .collect();
        assert_eq!(got, [("a", false), ("b", false), ("c", true)]);
        let none = |_: &str| false;
        let got: Vec<(&str, bool)> = touched(&models, &none, &["a".into()], &pending)
            .iter()
            .map(|t| (t.model.name.as_str(), t.pending_only))
            .collect();
        assert_eq!(got, [("a", false), ("b", false)]);
        // An upstream model only finishing its pending hours: so does b.
        let got: Vec<(&str, bool)> = touched(&models[..2], &none, &[], &|m| m.name == "a")
            .iter()
            .map(|t| (t.model.name.as_str(), t.pending_only))
            .collect();
        assert_eq!(got, [("a", true), ("b", true)]);
    }

    /// A model's marked hours: its pending ones, the run's, and the whole
    /// local days its upstream day model recomputes.
    #[test]
    fn marked_hours_follow_the_models_read() {
        let models = [
            model("a", Grain::Day, &["co"], &[]),
            model("b", Grain::Hour, &[], &["a"]),
        ];
        let refs: Vec<&Model> = models.iter().collect();
        let run = Ranges::one(h("2026-03-27T09:00:00Z"), h("2026-03-27T11:00:00Z"));
        let old = Ranges::one(h("2026-01-05T00:00:00Z"), h("2026-01-05T01:00:00Z"));
        let loads = |m: &Model| {
            if m.name == "a" {
                run.clone()
            } else {
                Ranges::new()
            }
        };
        let pending = |m: &Model| {
            if m.name == "b" {
                old.clone()
            } else {
                Ranges::new()
            }
        };
        let got = marked(&refs, &loads, &pending);
        assert_eq!(got[0], run);
        let mut want = old.clone();
        // 27 March in Madrid (UTC+1): 23:00 UTC the day before to 23:00.
        want.add(h("2026-03-26T23:00:00Z"), h("2026-03-27T23:00:00Z"));
        assert_eq!(got[1], want);
    }

    fn zoned(grain: Grain, lookback: u32, zone: &str) -> Model {
        Model {
            lookback_hours: lookback,
            zone: Zone::parse(zone).unwrap(),
            ..model("m", grain, &["co"], &[])
        }
    }

    /// Disjoint pending hours give one key range each, merged when their
    /// keys touch; a model reading a day model sees the whole days
    /// recomputed as its changed hours.
    #[test]
    fn pending_hours_to_keys_and_downstream_hours() {
        let day = zoned(Grain::Day, 7, "Europe/Madrid");
        let pending: Ranges<Hour> = [
            (h("2026-03-27T09:00:00Z"), h("2026-03-27T10:00:00Z")),
            (h("2026-03-27T12:00:00Z"), h("2026-03-27T13:00:00Z")),
            (h("2026-05-01T00:00:00Z"), h("2026-05-01T01:00:00Z")),
        ]
        .into_iter()
        .collect();
        let keys: Vec<String> = affected(&day, &pending)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            keys,
            [
                "day [2026-03-27, 2026-03-28)",
                "day [2026-05-01, 2026-05-02)"
            ]
        );
        assert_eq!(
            spans(&day, &pending).iter().collect::<Vec<_>>(),
            vec![
                (h("2026-03-26T23:00:00Z"), h("2026-03-27T23:00:00Z")),
                (h("2026-04-30T22:00:00Z"), h("2026-05-01T22:00:00Z")),
            ]
        );
        let year = zoned(Grain::Year, 0, "Europe/Madrid");
        let keys: Vec<String> = affected(&year, &spans(&day, &pending))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(keys, ["year [2026, 2027)"]);
    }
}
