//! Where the process's log lines go besides stderr while a run reports:
//! into the current run's report queue (set by the runner for the length
//! of a run; runs of one process are sequential), never waiting; a line
//! the full queue cannot take is counted.

use std::sync::{Mutex, OnceLock};

use chrono::Utc;
use tokio::sync::mpsc;

use super::Event;

/// Log lines the queue had no room for (see [`log`]), since the last report finished.
pub(super) static DROPPED_LOGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Where log lines go besides stderr while a run reports (set by the runner
/// for the length of a run; runs of one process are sequential).
static FORWARD: OnceLock<Mutex<Option<mpsc::Sender<Event>>>> = OnceLock::new();

fn forward() -> &'static Mutex<Option<mpsc::Sender<Event>>> {
    FORWARD.get_or_init(|| Mutex::new(None))
}

/// Sends log lines (info and above) to `to` until called again with `None`.
pub fn forward_logs(to: Option<mpsc::Sender<Event>>) {
    *forward().lock().unwrap_or_else(|p| p.into_inner()) = to;
}

/// Hands one log line to the current run's report, if any (never waits).
pub fn log(job: Option<String>, level: u8, message: String) {
    let guard = forward().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tx) = guard.as_ref() {
        let message = crate::secret::redact(&message).into_owned();
        if tx
            .try_send(Event::Log {
                job,
                level,
                message,
                at: Utc::now(),
            })
            .is_err()
        {
            DROPPED_LOGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
