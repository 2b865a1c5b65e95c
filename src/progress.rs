//! Progress of a long run on a terminal: hours done of total, rows, rate.
//! Silent when stderr is not a terminal (logs, CI) or with `--quiet`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub struct Progress {
    enabled: bool,
    label: String,
    total_hours: AtomicI64,
    done_hours: AtomicI64,
    rows: AtomicU64,
    started: Instant,
    drawn: AtomicBool,
    lock: Mutex<()>,
}

impl Progress {
    pub fn new(label: &str, enabled: bool) -> Progress {
        Progress {
            enabled,
            label: label.to_owned(),
            total_hours: AtomicI64::new(0),
            done_hours: AtomicI64::new(0),
            rows: AtomicU64::new(0),
            started: Instant::now(),
            drawn: AtomicBool::new(false),
            lock: Mutex::new(()),
        }
    }

    /// A job planned `hours`.
    pub fn planned(&self, hours: i64) {
        self.total_hours.fetch_add(hours, Ordering::Relaxed);
    }

    /// A batch of `hours` finished, with `rows` staged.
    pub fn batch_done(&self, hours: i64, rows: u64) {
        // Both counters move under the lock, so every line drawn is consistent
        // and the last one drawn shows the totals.
        let _g = self.lock.lock();
        let done = self.done_hours.fetch_add(hours, Ordering::Relaxed) + hours;
        let rows = self.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        if !self.enabled {
            return;
        }
        let total = self.total_hours.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{}: {done}/{total} hours, {rows} rows, {:.0} rows/s   ",
            self.label,
            rows as f64 / secs
        );
        let _ = err.flush();
        self.drawn.store(true, Ordering::Relaxed);
    }

    /// Clears the line before the report is printed.
    pub fn finish(&self) {
        if self.enabled && self.drawn.load(Ordering::Relaxed) {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
