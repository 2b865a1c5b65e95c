//! What a run holds once its leases are taken: the source, the sinks
//! (prepared; with `--wait`, after waiting for a DuckDB file another
//! process writes), the embedded connection (confined to the sink files'
//! directories unless a sink is MotherDuck), its gate, the templates and the
//! run's options, and which sinks are out of it ([`Health`]). Built once
//! by [`setup`], shared by every job and model.

use std::time::Instant;

use duckdb::Connection;

use super::Options;
use crate::duck;
use crate::error::JobError;
use crate::health::{Health, PROBE};
use crate::retry::{Failure, Policy};
use crate::secret::{EnvSecrets, SecretSource};
use crate::sinks::{Sink, SinkError};
use crate::sources::Source;
use crate::spec::{Config, Pipeline, StateConfig};
use crate::state::State;
use crate::template::Templates;

/// What every job and model of one run shares.
pub(super) struct Shared {
    pub(super) pipeline: Pipeline,
    pub(super) state: State,
    pub(super) source: Source,
    pub(super) sinks: Vec<Sink>,
    pub(super) templates: Templates,
    pub(super) progress: crate::progress::Progress,
    pub(super) conn: std::sync::Mutex<Connection>,
    /// Held (shared) by every statement of the transforms and loads, and
    /// alone by a sink file's reopen: a `DETACH` must not meet another
    /// connection's statement.
    pub(super) gate: std::sync::RwLock<()>,
    pub(super) run_id: String,
    pub(super) opts: Options,
    /// The sinks out of this run (failed, or waiting out their backoff).
    pub(super) health: Health,
}

impl Shared {
    /// The sinks taking writes now.
    pub(super) fn up(&self) -> impl Iterator<Item = &Sink> {
        self.sinks.iter().filter(|s| self.health.is_up(s.name()))
    }
}

/// How long a `--wait` run waits for a DuckDB sink file another process
/// writes (10 minutes), asking again every half second.
const FILE_WAIT: Policy = Policy::timed(
    std::time::Duration::from_secs(600),
    std::time::Duration::from_millis(500),
);

/// Builds what the run holds; on failure, hands the state back to record
/// the jobs' failures.
pub(super) async fn setup(
    config: &Config,
    pipeline: &Pipeline,
    state: State,
    run_id: String,
    opts: Options,
    progress: &[crate::state::Progress],
) -> Result<Shared, (State, JobError)> {
    let mut source = Source::new(&pipeline.source, &config.sources[&pipeline.source]);
    let conn =
        match duck::open().and_then(|c| duck::load_extensions(&c, &config.extensions).map(|_| c)) {
            Ok(c) => c,
            Err(e) => return Err((state, e.into())),
        };
    let home = match &pipeline.state {
        StateConfig::Local { dir } => dir.join("duckdb-home"),
        _ => std::env::temp_dir().join("duckhour-duckdb-home"),
    };
    let secrets = match secrets(config, pipeline, &state).await {
        Ok(s) => s,
        Err(e) => return Err((state, e.into())),
    };
    // Sinks first: a sink that cannot work (e.g. MotherDuck without a
    // token) is out before any extract; with no sink left, the run fails.
    let ready = Ready {
        config,
        pipeline,
        conn: &conn,
        secrets: secrets.as_ref(),
        home: &home,
        opts: &opts,
    };
    let (sinks, health) = match ready.sinks(progress).await {
        Ok(s) => s,
        Err(e) => return Err((state, e)),
    };
    // A models-only run reads the sinks, never the source (its raw data may have expired).
    if opts.models.is_empty() {
        if let Err(e) = source.connect(secrets.as_ref()).await {
            return Err((state, e.into()));
        }
    }
    // From here on the database runs templates: it may reach only the sink
    // files' directories. Not with MotherDuck, whose extension needs the
    // network (and could not be tested confined here).
    if !sinks.iter().any(Sink::is_motherduck) {
        let mut dirs: Vec<std::path::PathBuf> = sinks
            .iter()
            .filter_map(|s| s.local_dir().map(|d| d.to_path_buf()))
            .collect();
        if stages_files(&config.sources[&pipeline.source]) {
            dirs.push(std::env::temp_dir());
        }
        if let Err(e) = duck::confine(&conn, &dirs) {
            return Err((state, e.into()));
        }
    }
    Ok(Shared {
        pipeline: pipeline.clone(),
        state,
        source,
        sinks,
        templates: config.templates(),
        progress: crate::progress::Progress::new(&pipeline.name, opts.progress),
        conn: std::sync::Mutex::new(conn),
        gate: std::sync::RwLock::new(()),
        run_id,
        opts,
        health,
    })
}

/// Where `${secret:}` values come from: Prefect blocks when the state is
/// there, else the environment.
async fn secrets(
    config: &Config,
    pipeline: &Pipeline,
    state: &State,
) -> Result<Box<dyn SecretSource + Send + Sync>, crate::state::StateError> {
    let values = (config.sources[&pipeline.source]
        .reference_values()
        .into_iter())
    .chain(
        pipeline
            .sinks
            .iter()
            .flat_map(|s| config.sinks[s].reference_values()),
    );
    let names = crate::secret::secret_names(values);
    Ok(match state.prefect() {
        Some(p) if !names.is_empty() => Box::new(p.secrets(&names).await?),
        _ => Box::new(EnvSecrets),
    })
}

/// What preparing the sinks needs of the run.
struct Ready<'a> {
    config: &'a Config,
    pipeline: &'a Pipeline,
    conn: &'a Connection,
    secrets: &'a (dyn SecretSource + Send + Sync),
    home: &'a std::path::Path,
    opts: &'a Options,
}

impl Ready<'_> {
    /// The pipeline's sinks, prepared, and those out of the run: a sink
    /// still in its backoff (`progress`: the jobs' state) is not tried, one
    /// that failed before gets a short probe, one that fails now is out.
    /// Fails only when no sink is left.
    async fn sinks(
        &self,
        progress: &[crate::state::Progress],
    ) -> Result<(Vec<Sink>, Health), JobError> {
        let p = self.pipeline;
        let mut health = Health::from_backoff(progress, self.opts.now);
        if p.sinks.iter().all(|s| !health.is_up(s)) {
            // Every sink waits: a run that wrote nowhere would only wait too.
            health = Health::default();
        }
        let mut sinks = Vec::new();
        let mut first_error = None;
        for name in p.sinks.iter().filter(|s| health.is_up(s)) {
            let sink = Sink::new(name, &self.config.sinks[name], &self.config.dir);
            let probe = Health::was_down(name, progress).then_some(PROBE);
            let (conn, secrets, home) = (self.conn, self.secrets, self.home);
            match prepare(sink, conn, secrets, home, self.opts.wait, probe).await {
                Ok(sink) => sinks.push(sink),
                Err(e) => {
                    let e = JobError::from(e);
                    first_error.get_or_insert_with(|| e.clone());
                    health.failed(name, e);
                }
            }
        }
        match (sinks.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            _ => Ok((sinks, health)),
        }
    }
}

/// Prepares `sink`. A DuckDB file has one writer process: with `wait`
/// (`--wait`, and in a worker) a file another process holds is waited
/// for, as a job's lease is.
async fn prepare(
    mut sink: Sink,
    conn: &::duckdb::Connection,
    secrets: &(dyn SecretSource + Send + Sync),
    home: &std::path::Path,
    wait: bool,
    probe: Option<std::time::Duration>,
) -> Result<Sink, SinkError> {
    let t0 = Instant::now();
    let mut attempt = 0;
    loop {
        let prepared = match probe {
            None => sink.prepare(conn, secrets, home, false).await,
            Some(limit) => tokio::time::timeout(limit, sink.prepare(conn, secrets, home, true))
                .await
                .unwrap_or_else(|_| {
                    Err(SinkError::Setup {
                        sink: sink.name().to_owned(),
                        message: format!(
                            "no answer within {} s (it failed in an earlier run too)",
                            limit.as_secs()
                        ),
                    })
                }),
        };
        let e = match prepared {
            Ok(()) => return Ok(sink),
            Err(e) => e,
        };
        let busy = match e {
            SinkError::Busy { .. } if wait => Failure::Transient { retry_after: None },
            _ => Failure::Permanent,
        };
        let Some(pause) = FILE_WAIT.wait(busy, attempt, t0.elapsed()) else {
            return Err(e);
        };
        attempt += 1;
        tokio::time::sleep(pause).await;
    }
}

/// Whether the source hands DuckDB files to read (InfluxDB 3 Parquet answers,
/// in the temporary directory).
fn stages_files(source: &crate::spec::SourceConfig) -> bool {
    matches!(source, crate::spec::SourceConfig::Influx(c)
        if c.version == 3 && matches!(c.format, crate::spec::V3Format::Parquet))
}
