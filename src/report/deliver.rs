//! The final states of a run's task runs and flow run, which must reach
//! Prefect while the process lives (a run left RUNNING is later marked
//! Crashed by Prefect's unresponsive-run detection, though it finished): a
//! state Prefect refuses as invalid or too large (422, 413) is sent again
//! with its message cut down; one that meets a load balancer's bad minute
//! (5xx, 408, 504) or no answer is offered again until [`FINAL_WAIT`] after
//! the run's work ended. Log batches refused the same way are cut down too
//! ([`send_logs`]).

use std::time::{Duration, Instant};

use crate::prefect::runs::{state, StateType};
use crate::prefect::{Client, ErrorKind, PrefectError};
use crate::retry::{Failure, Policy};

/// How long after the run's work ended its final states are offered
/// again to a server that fails or does not answer (within the runner's
/// wait for its report).
pub const FINAL_WAIT: Duration = Duration::from_secs(120);

/// Offers between attempts: from 0.25 s doubling to 8 s, within [`FINAL_WAIT`].
const POLICY: Policy = Policy::timed(FINAL_WAIT, Duration::from_secs(8));

/// A state message cut down once Prefect refused it: at most this many characters.
const CUT: usize = 200;

/// Whether another attempt may get another answer: the server, or a
/// gateway in its way, failed (5xx, 408), or nothing answered.
pub fn passing(e: &PrefectError) -> bool {
    match &e.kind {
        ErrorKind::Status(s, _) => *s >= 500 || *s == 408,
        ErrorKind::Unreachable(..) => true,
        _ => false,
    }
}

/// Whether Prefect refused the request's content (its size or a field):
/// the same request cut down may pass.
pub fn refused(e: &PrefectError) -> bool {
    matches!(e.kind, ErrorKind::Invalid(_) | ErrorKind::Status(413, _))
}

/// `m` cut down: to [`CUT`] characters, then none at all.
pub fn cut(m: Option<&str>) -> Option<String> {
    match m {
        Some(m) if m.chars().count() > CUT => {
            Some(format!("{}…", m.chars().take(CUT).collect::<String>()))
        }
        _ => None,
    }
}

/// How long to wait before attempt `attempt + 1` of a delivery that
/// began its retries at `since`; `None` once [`FINAL_WAIT`] is spent.
pub fn next_wait(attempt: u32, since: Instant) -> Option<Duration> {
    POLICY.wait(
        Failure::Transient { retry_after: None },
        attempt,
        since.elapsed(),
    )
}

/// Proposes `kind` with `message` to `runs` (`task_runs` or `flow_runs`)
/// `id` until Prefect takes it, cutting the message down when refused, and
/// offering it again while the server fails, within [`FINAL_WAIT`] of
/// `since`.
pub async fn propose(
    client: &Client,
    runs: &str,
    id: &str,
    kind: StateType,
    message: &str,
    since: Instant,
) -> Result<(), PrefectError> {
    let mut message = Some(message.to_owned());
    let mut attempt = 0;
    loop {
        let e = match client
            .set_state(runs, id, state(kind, message.as_deref()))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if refused(&e) && message.is_some() {
            tracing::warn!(error = %e, "Prefect refused the final state; sending it with a shorter message");
            message = cut(message.as_deref());
            continue;
        }
        let wait = passing(&e).then(|| next_wait(attempt, since)).flatten();
        let Some(wait) = wait else {
            return Err(e);
        };
        tracing::debug!(error = %e, ?wait, "final state not taken; offering it again");
        attempt += 1;
        tokio::time::sleep(wait).await;
    }
}

/// A log message cut down once Prefect refused its batch as invalid (422:
/// Prefect Cloud's limit is 25,000 characters a message).
const LOG_CUT: usize = 1000;

/// Sends a batch of log records; one Prefect refuses as too large (413)
/// goes in halves, one it refuses as invalid (422) once more with every
/// message cut to [`LOG_CUT`] characters.
pub async fn send_logs(client: &Client, batch: Vec<serde_json::Value>) -> Result<(), PrefectError> {
    let mut todo = vec![(batch, false)];
    while let Some((b, shortened)) = todo.pop() {
        let e = match client.send_logs(&b).await {
            Ok(()) => continue,
            Err(e) => e,
        };
        match e.kind {
            ErrorKind::Status(413, _) if b.len() > 1 => {
                let mut first = b;
                let second = first.split_off(first.len() / 2);
                todo.push((second, shortened));
                todo.push((first, shortened));
            }
            ErrorKind::Invalid(_) if !shortened => {
                tracing::debug!(error = %e, "Prefect refused a batch of log lines; sending it with shorter messages");
                let b = b
                    .into_iter()
                    .map(|mut l| {
                        if let Some(m) = l["message"].as_str() {
                            if m.chars().count() > LOG_CUT {
                                let m = format!("{}…", m.chars().take(LOG_CUT).collect::<String>());
                                l["message"] = m.into();
                            }
                        }
                        l
                    })
                    .collect();
                todo.push((b, true));
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind) -> PrefectError {
        PrefectError {
            server: "s".into(),
            what: "flow run x".into(),
            kind,
        }
    }

    #[test]
    fn what_is_offered_again_and_what_is_cut() {
        for k in [
            ErrorKind::Status(500, "x".into()),
            ErrorKind::Status(502, "x".into()),
            ErrorKind::Status(504, "x".into()),
            ErrorKind::Status(408, "x".into()),
            ErrorKind::Unreachable("reset".into(), 5),
        ] {
            assert!(passing(&err(k.clone())), "{k}");
            assert!(!refused(&err(k)));
        }
        for k in [
            ErrorKind::Invalid("too long".into()),
            ErrorKind::Status(413, "x".into()),
        ] {
            assert!(refused(&err(k.clone())), "{k}");
            assert!(!passing(&err(k)));
        }
        for k in [
            ErrorKind::Unauthorized(String::new()),
            ErrorKind::Forbidden(String::new()),
            ErrorKind::NotFound,
        ] {
            assert!(!passing(&err(k.clone())) && !refused(&err(k)));
        }
        let long = "é".repeat(300);
        let once = cut(Some(&long)).unwrap();
        assert_eq!(once.chars().count(), CUT + 1);
        assert_eq!(cut(Some(&once[..once.len() - '…'.len_utf8()])), None);
        assert_eq!(cut(Some("2 jobs, 48 hours, 142 rows")), None);
    }

    #[test]
    fn offers_go_on_for_the_final_wait_only() {
        let now = Instant::now();
        assert_eq!(next_wait(0, now), Some(Duration::from_millis(250)));
        assert_eq!(next_wait(9, now), Some(Duration::from_secs(8)));
        if let Some(long_ago) = now.checked_sub(FINAL_WAIT) {
            assert_eq!(next_wait(3, long_ago), None);
        }
    }
}
