//! The one retry policy of duckhour's HTTP clients (Prefect, BigQuery,
//! InfluxDB): each client classifies a failure ([`Failure`]: transient,
//! throttled with the server's `Retry-After`, or permanent) by the rules
//! of its service, and the [`Policy`] alone decides whether and how long
//! to wait. The clients keep only what differs: their classification and
//! their budgets.

use std::time::Duration;

/// What a failed attempt was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Worth another attempt: a server restarting, a connection reset, a
    /// 5xx; `retry_after` when the server said when.
    Transient { retry_after: Option<Duration> },
    /// Refused for rate (429, BigQuery's `rateLimitExceeded`): the request
    /// was not applied; `retry_after` when the server said when.
    Throttled { retry_after: Option<Duration> },
    /// Another writer's transaction on the same table won (BigQuery's
    /// "concurrent update", DuckDB's write-write conflict): nothing was
    /// applied; the whole statement may be sent again, after a jittered
    /// wait so that the writers part.
    Conflict,
    /// Another attempt would get the same answer (400, 401, 403, 404, ...).
    Permanent,
}

/// When to give up, and how fast to back off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The first wait when the server names none; doubled each retry.
    pub base: Duration,
    /// The longest wait between attempts when the server names none.
    pub cap: Duration,
    /// How long one call keeps retrying transient failures.
    pub budget: Duration,
    /// How long one call keeps retrying throttled ones.
    pub throttle_budget: Duration,
    /// At most this many retries, when set (InfluxDB's `retries:`).
    pub retries: Option<u32>,
}

impl Policy {
    /// Retries within `budget`, for throttling too, waits capped at `cap`.
    pub const fn timed(budget: Duration, cap: Duration) -> Policy {
        Policy {
            base: Duration::from_millis(250),
            cap,
            budget,
            throttle_budget: budget,
            retries: None,
        }
    }

    /// At most `retries` retries, waits from `base` capped at `cap`,
    /// whatever the time.
    pub const fn counted(retries: u32, base: Duration, cap: Duration) -> Policy {
        Policy {
            base,
            cap,
            budget: Duration::MAX,
            throttle_budget: Duration::MAX,
            retries: Some(retries),
        }
    }

    /// How long to wait before the next attempt after `failure`, the
    /// `attempt`-th retry (0 for the first), `elapsed` into the call; `None`
    /// to give up.
    pub fn wait(&self, failure: Failure, attempt: u32, elapsed: Duration) -> Option<Duration> {
        let (retry_after, budget) = match failure {
            Failure::Permanent => return None,
            Failure::Transient { retry_after } => (retry_after, self.budget),
            Failure::Throttled { retry_after } => (retry_after, self.throttle_budget),
            Failure::Conflict => (None, self.budget),
        };
        if self.retries.is_some_and(|max| attempt >= max) {
            return None;
        }
        let mut wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
        if failure == Failure::Conflict {
            wait = jitter(wait);
        }
        (elapsed.saturating_add(wait) <= budget).then_some(wait)
    }
}

/// The time one call has spent, told apart by what it waited for: waits
/// out of throttling do not use up the budget for transient failures, so
/// that a 503 met after a minute's `Retry-After` is the first transient
/// failure of the call, not the end of its budget.
#[derive(Debug, Clone, Copy)]
pub struct Spent {
    t0: std::time::Instant,
    throttled: Duration,
}

impl Spent {
    pub fn start() -> Spent {
        Spent {
            t0: std::time::Instant::now(),
            throttled: Duration::ZERO,
        }
    }

    /// Since the call began.
    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    /// [`Policy::wait`] for this call's `attempt`-th retry after `failure`.
    pub fn wait(&mut self, policy: &Policy, failure: Failure, attempt: u32) -> Option<Duration> {
        let throttled = matches!(failure, Failure::Throttled { .. });
        let elapsed = if throttled {
            self.t0.elapsed()
        } else {
            self.t0.elapsed().saturating_sub(self.throttled)
        };
        let wait = policy.wait(failure, attempt, elapsed)?;
        if throttled {
            self.throttled += wait;
        }
        Some(wait)
    }
}

/// How a write that lost to a concurrent writer on the same table is sent
/// again: at most 8 retries, after waits from 0.5 s doubling up to 8 s,
/// each jittered (about 40 s in all, never 60).
pub const CONFLICT: Policy = Policy::counted(8, Duration::from_millis(500), Duration::from_secs(8));

/// `wait` spread at random over [wait/2, 3 wait/2) ("equal jitter"), so
/// that writers that conflicted once do not meet again on every retry.
fn jitter(wait: Duration) -> Duration {
    wait.mul_f64(0.5 + fastrand::f64())
}

impl Policy {
    /// The wait before retry `attempt` (0 for the first) when the server
    /// names none: `base` doubled per attempt, at most `cap`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.base.saturating_mul(1 << attempt.min(10)).min(self.cap)
    }
}

/// `Retry-After` in seconds (integer or, as Prefect sends, fractional);
/// HTTP dates are not used by the services we talk to and count as absent.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(300.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_out_of_throttling_leave_the_transient_budget_whole() {
        let p = Policy {
            throttle_budget: Duration::from_secs(120),
            ..Policy::timed(Duration::from_secs(5), Duration::from_secs(4))
        };
        let mut spent = Spent::start();
        // As if the call had waited out a minute's Retry-After already.
        spent.t0 -= Duration::from_secs(60);
        spent.throttled = Duration::from_secs(60);
        let busy = Failure::Transient { retry_after: None };
        assert_eq!(spent.wait(&p, busy, 1), Some(Duration::from_millis(500)));
        let throttled = Failure::Throttled {
            retry_after: Some(Duration::from_secs(60)),
        };
        assert_eq!(spent.wait(&p, throttled, 2), None);
        assert_eq!(p.wait(busy, 1, Duration::from_secs(60)), None);
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn retry_after_parses_seconds_and_fractions() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "2.397546055679059".parse().unwrap());
        assert_eq!(
            retry_after(&h),
            Some(Duration::from_secs_f64(2.397546055679059))
        );
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(S(7)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_grows_then_caps() {
        let p = Policy::timed(S(60), S(4));
        assert_eq!(p.backoff(0), Duration::from_millis(250));
        assert_eq!(p.backoff(2), S(1));
        assert_eq!(p.backoff(9), S(4));
        // InfluxDB's: 500 ms doubling, at most 16 s.
        let influx = Policy::counted(5, Duration::from_millis(500), S(16));
        let waits: Vec<u64> = (0..8)
            .map(|a| influx.backoff(a).as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 16000, 16000]);
    }

    #[test]
    fn the_policy_decides_whether_and_how_long() {
        let p = Policy {
            throttle_budget: S(120),
            ..Policy::timed(S(60), S(4))
        };
        let transient = Failure::Transient { retry_after: None };
        assert_eq!(p.wait(transient, 0, S(0)), Some(Duration::from_millis(250)));
        assert_eq!(p.wait(transient, 5, S(30)), Some(S(4)));
        // A wait that would end past the budget is not started.
        assert_eq!(p.wait(transient, 5, S(57)), None);
        let told = Failure::Transient {
            retry_after: Some(S(10)),
        };
        assert_eq!(p.wait(told, 0, S(50)), Some(S(10)));
        assert_eq!(p.wait(told, 0, S(51)), None);
        // Throttling has its own budget and the server's Retry-After.
        let throttled = Failure::Throttled {
            retry_after: Some(S(60)),
        };
        assert_eq!(p.wait(throttled, 3, S(60)), Some(S(60)));
        assert_eq!(p.wait(throttled, 3, S(61)), None);
        assert_eq!(p.wait(Failure::Permanent, 0, S(0)), None);
        // Counted: the number of retries, whatever the time.
        let c = Policy::counted(2, Duration::from_millis(500), S(16));
        assert_eq!(c.wait(transient, 1, S(100_000)), Some(S(1)));
        assert_eq!(c.wait(transient, 2, S(0)), None);
    }

    #[test]
    fn conflicts_are_retried_jittered_and_bounded() {
        let mut waits = Vec::new();
        for attempt in 0..8 {
            let w = CONFLICT.wait(Failure::Conflict, attempt, S(0)).unwrap();
            let plain = CONFLICT.backoff(attempt);
            assert!(w >= plain / 2 && w < plain * 3 / 2, "{attempt}: {w:?}");
            waits.push(w);
        }
        assert_eq!(CONFLICT.wait(Failure::Conflict, 8, S(0)), None);
        assert!(waits.iter().sum::<Duration>() < S(60), "{waits:?}");
        // Two writers that conflicted do not wait the same (almost surely).
        let a: Vec<_> = (0..8)
            .map(|i| CONFLICT.wait(Failure::Conflict, i, S(0)))
            .collect();
        let b: Vec<_> = (0..8)
            .map(|i| CONFLICT.wait(Failure::Conflict, i, S(0)))
            .collect();
        assert_ne!(a, b);
    }
}
