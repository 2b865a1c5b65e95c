//! `serve`: runs pipelines on their cron schedules (in each pipeline's
//! `timezone`, UTC by default) until SIGINT or
//! SIGTERM. A signal lets the batch in progress commit, then stops; nothing
//! is left half-loaded because a batch is one transaction per sink and the
//! checkpoint moves only after it. Two runs of one job never overlap: runs
//! are sequential here, and the job lease guards against other processes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::Notify;
use tracing::info;

use crate::cli::ServeArgs;
use crate::cron::Cron;
use crate::error::{Error, EXIT_JOB_FAILED, EXIT_OK};
use crate::runner::{self, Mode, Options};
use crate::spec::{Config, Pipeline};

pub fn serve(config: &Config, a: &ServeArgs, quiet: bool) -> Result<i32, Error> {
    let served = scheduled(config, a)?;
    // `--now` shifts the clock; it then runs on at the real pace.
    let offset = match &a.now {
        Some(_) => super::now(&a.now)? - Utc::now(),
        None => chrono::Duration::zero(),
    };
    let clock = move || Utc::now() + offset;
    let rt = super::run::runtime()?;
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        {
            let (stop, wake) = (stop.clone(), wake.clone());
            on_signal(move || {
                stop.store(true, Ordering::SeqCst);
                wake.notify_waiters();
            });
        }
        // Everything is due at start: catch up after downtime.
        let mut due: Vec<chrono::DateTime<Utc>> = served.iter().map(|_| clock()).collect();
        let mut failures = 0usize;
        let zones: Vec<String> = served
            .iter()
            .map(|(p, _)| format!("{} ({})", p.name, p.timezone.name()))
            .collect();
        println!("serving {}; stop with Ctrl-C or SIGTERM", zones.join(", "));
        loop {
            let (i, at) = due
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| **t)
                .map(|(i, t)| (i, *t))
                .expect("non-empty");
            let wait = (at - clock()).to_std().unwrap_or_default();
            let notified = wake.notified();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {},
                _ = notified => {},
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let (p, cron) = &served[i];
            let opts = scheduled_run(clock(), stop.clone(), quiet);
            info!(pipeline = %p.name, "scheduled run");
            let outcomes = runner::run(config, p, opts).await;
            if super::run::finish(config, p, "run", &outcomes).is_err() {
                failures += 1;
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
            due[i] = cron
                .next_after_in(clock(), &p.timezone)
                .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
            println!(
                "next run of `{}` at {}",
                p.name,
                due[i].format("%Y-%m-%dT%H:%M:%SZ")
            );
        }
        println!("stopped");
        Ok(if failures > 0 {
            EXIT_JOB_FAILED
        } else {
            EXIT_OK
        })
    })
}

/// The pipelines to serve (those named, else every one with a
/// `schedule`), each with its parsed schedule.
fn scheduled<'a>(config: &'a Config, a: &ServeArgs) -> Result<Vec<(&'a Pipeline, Cron)>, Error> {
    let mut served: Vec<(&Pipeline, Cron)> = Vec::new();
    let names: Vec<String> = if a.pipelines.is_empty() {
        config
            .pipelines
            .values()
            .filter(|p| p.schedule.is_some())
            .map(|p| p.name.clone())
            .collect()
    } else {
        a.pipelines.clone()
    };
    for name in &names {
        let p = super::pipeline(config, name)?;
        let Some(expr) = &p.schedule else {
            return Err(Error::Usage(format!("pipeline `{name}` has no `schedule`")));
        };
        let cron =
            Cron::parse(expr).map_err(|e| Error::Usage(format!("pipeline `{name}`: {e}")))?;
        served.push((p, cron));
    }
    if served.is_empty() {
        return Err(Error::Usage("no pipeline has a `schedule` to serve".into()));
    }
    Ok(served)
}

/// Calls `f` once on Ctrl-C or SIGTERM (from a task of the runtime).
pub(crate) fn on_signal(f: impl FnOnce() + Send + 'static) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
        f();
    });
}

/// A scheduled run's options: a run at `now`, stopped by `stop`.
fn scheduled_run(now: chrono::DateTime<Utc>, stop: Arc<AtomicBool>, quiet: bool) -> Options {
    Options {
        now,
        jobs: Vec::new(),
        mode: Mode::Run,
        wait: false,
        stop,
        progress: super::run::progress_wanted(quiet),
        replace_empty: false,
        alerts: true,
        flow_run: None,
        beats: None,
        models: Vec::new(),
    }
}
