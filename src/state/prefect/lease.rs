//! A job's lease with Prefect: a global concurrency limit of one slot
//! per job (`duckhour-<block name>`), taken with a lease that a background
//! task renews; the jobs of a run share one lease when they can all be
//! taken at once. Its expiry is known locally, so that no write follows
//! a lease that may be gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::PrefectState;
use crate::prefect::{Client, Take};
use crate::state::{Holder, StateError};

/// How a lease of `ttl` is kept: renewed every quarter of it, each renewal
/// given at most a quarter to answer; and trusted for three quarters after
/// the start of the last renewal that succeeded. The server expires it a
/// quarter later, so a runner that could not renew stops writing before
/// anyone else can take the job.
fn quarter(ttl: Duration) -> Duration {
    ttl / 4
}

/// A lease as the server knows it: one id for one or more limits (the
/// jobs or models of a run taken together), renewed in the background until
/// its last user releases it.
#[derive(Debug)]
struct LeaseCore {
    /// For the release, with the store's usual retries.
    release_client: Client,
    id: String,
    ttl: Duration,
    /// Until when the lease may be trusted without another renewal.
    trusted_until: Arc<std::sync::Mutex<Instant>>,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
    /// Jobs holding it and not yet released.
    users: std::sync::atomic::AtomicUsize,
}

/// One job's (or model's) hold on a lease. Its expiry is known locally:
/// every write of the job asks [`PrefectLease::check`] first.
#[derive(Debug)]
pub struct PrefectLease {
    limit: String,
    pipeline: String,
    job: String,
    core: Arc<LeaseCore>,
    released: bool,
}

impl PrefectState {
    fn limit(&self, pipeline: &str, job: &str) -> String {
        format!("duckhour-{}", self.name(pipeline, job))
    }

    /// Takes the leases of `keys` (jobs or models, in that order), each
    /// with its `wait`: first all with one request (one lease for all
    /// their limits, one renewal a period, one release), else one by one.
    /// The holder is written with each block's next write: a run that ends
    /// within [`super::FLUSH_EVERY`] costs no request for it.
    pub async fn lease_all(
        &self,
        pipeline: &str,
        keys: &[(String, bool)],
        holder: &Holder,
    ) -> Vec<Result<PrefectLease, StateError>> {
        let mut orphan_until = None;
        if keys.len() > 1 {
            let limits: Vec<String> = keys.iter().map(|(k, _)| self.limit(pipeline, k)).collect();
            let names: Vec<&str> = limits.iter().map(String::as_str).collect();
            let ttl = self.lease_ttl;
            for _ in 0..2 {
                let started = Instant::now();
                match self.client.take_lease(&names, ttl).await {
                    Ok(Take::Leased(id)) => {
                        let core = self.core(id, started);
                        return keys
                            .iter()
                            .map(|(k, _)| Ok(self.lease_of(pipeline, k, core.clone(), holder)))
                            .collect();
                    }
                    // A job's first run: its limit is made, and all are asked again.
                    Ok(Take::Missing(missing)) => {
                        let made = futures_util::future::join_all(
                            missing.iter().map(|m| self.client.ensure_limit(m)),
                        )
                        .await;
                        if let Some(e) = made.into_iter().find_map(Result::err) {
                            let e = StateError::from(e);
                            return keys.iter().map(|_| Err(e.clone())).collect();
                        }
                    }
                    Ok(Take::BusyAfterRetry(_)) => {
                        orphan_until = Some(started + ttl + Duration::from_secs(60));
                        break;
                    }
                    // One is held: each is taken alone, to know which.
                    Ok(Take::Busy(_)) => break,
                    Err(e) => {
                        let e = StateError::from(e);
                        return keys.iter().map(|_| Err(e.clone())).collect();
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (k, wait) in keys {
            out.push(self.lease(pipeline, k, holder, *wait, orphan_until).await);
        }
        out
    }

    /// Takes one key's lease. `orphan_until`: until then, a slot held may
    /// be this run's own, taken by an earlier request whose answer was lost.
    async fn lease(
        &self,
        pipeline: &str,
        job: &str,
        holder: &Holder,
        wait: bool,
        orphan_until: Option<Instant>,
    ) -> Result<PrefectLease, StateError> {
        let limit = self.limit(pipeline, job);
        let ttl = self.lease_ttl;
        // Set when an attempt may have taken a slot whose answer we lost:
        // until that orphan expires, "busy" may mean ourselves.
        let mut own_orphan_until: Option<Instant> = orphan_until;
        let (id, taken_at) = loop {
            let started = Instant::now();
            let busy = match self.client.take_lease(&[&limit], ttl).await {
                Ok(Take::Leased(id)) => break (id, started),
                Ok(Take::BusyAfterRetry(hint)) => {
                    // The server frees an expired slot on its repossessor's
                    // next round (every 15 s by default, later on a busy
                    // server: seen in the suite), not at the instant.
                    own_orphan_until.get_or_insert(started + ttl + Duration::from_secs(60));
                    hint
                }
                Ok(Take::Busy(hint)) => hint,
                // A job's first run (or the limit was deleted): make it.
                Ok(Take::Missing(_)) => {
                    self.client.ensure_limit(&limit).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let maybe_ours = own_orphan_until.is_some_and(|t| Instant::now() < t);
            if wait || maybe_ours {
                let pause = busy
                    .unwrap_or(Duration::from_secs(2))
                    .clamp(Duration::from_millis(200), Duration::from_secs(10));
                tokio::time::sleep(pause).await;
                continue;
            }
            let name = self.name(pipeline, job);
            let recorded = self
                .fetch(&name)
                .await
                .ok()
                .flatten()
                .and_then(|d| d.data.pointer("/metadata/lease").cloned());
            // A holder marked `ended` finished its run: the slot is someone
            // else's, not yet recorded (holders are written with the block).
            let holder = match recorded {
                Some(v) if v.get("ended").is_none() => serde_json::from_value::<Holder>(v)
                    .ok()
                    .map(|h| format!("{h} (prefect limit `{limit}`)")),
                _ => None,
            }
            .unwrap_or_else(|| format!("another runner (prefect limit `{limit}`)"));
            return Err(StateError::Busy {
                pipeline: pipeline.into(),
                job: job.into(),
                holder,
            });
        };
        let core = self.core(id, taken_at);
        Ok(self.lease_of(pipeline, job, core, holder))
    }

    /// A lease taken at `taken_at`, renewed from now on.
    fn core(&self, id: String, taken_at: Instant) -> Arc<LeaseCore> {
        let ttl = self.lease_ttl;
        let lost = Arc::new(AtomicBool::new(false));
        let trusted_until = Arc::new(std::sync::Mutex::new(taken_at + ttl - quarter(ttl)));
        let renewals = self
            .client
            .clone()
            .with_retry_budget(quarter(ttl) / 2)
            .with_request_timeout(quarter(ttl) / 2);
        let renewer = tokio::spawn(renew_loop(
            renewals,
            id.clone(),
            ttl,
            trusted_until.clone(),
            lost.clone(),
        ));
        Arc::new(LeaseCore {
            release_client: self.client.clone(),
            id,
            ttl,
            trusted_until,
            lost,
            renewer,
            users: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// `job`'s share of the lease `core`; its holder kept for the block's next write.
    fn lease_of(
        &self,
        pipeline: &str,
        job: &str,
        core: Arc<LeaseCore>,
        holder: &Holder,
    ) -> PrefectLease {
        core.users.fetch_add(1, Ordering::SeqCst);
        self.holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                self.name(pipeline, job),
                serde_json::to_value(holder).expect("holder serializes"),
            );
        PrefectLease {
            limit: self.limit(pipeline, job),
            pipeline: pipeline.into(),
            job: job.into(),
            core,
            released: false,
        }
    }
}

async fn renew_loop(
    client: Client,
    id: String,
    ttl: Duration,
    trusted_until: Arc<std::sync::Mutex<Instant>>,
    lost: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(quarter(ttl)).await;
        let started = Instant::now();
        match client.renew_lease(&id, ttl).await {
            Ok(true) => {
                *trusted_until.lock().unwrap_or_else(|p| p.into_inner()) =
                    started + ttl - quarter(ttl);
            }
            Ok(false) => {
                tracing::warn!(lease = %id, "lease lost (expired or revoked)");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            // Transient: the next round may pass; `check` decides by the clock.
            Err(e) => tracing::warn!(error = %e, "could not renew the lease"),
        }
    }
}

impl PrefectLease {
    fn lost_error(&self, why: &str) -> StateError {
        StateError::LeaseLost {
            pipeline: self.pipeline.clone(),
            job: self.job.clone(),
            lease: format!("prefect limit `{}`: {why}", self.limit),
        }
    }

    /// `LeaseLost` once the server said the lease is gone, or once the last
    /// successful renewal is three quarters of the lease old: the caller
    /// must not write to any sink, ledger or block after that.
    pub fn check(&self) -> Result<(), StateError> {
        let c = &self.core;
        if c.lost.load(Ordering::SeqCst) {
            return Err(self.lost_error("expired or revoked"));
        }
        let until = *c.trusted_until.lock().unwrap_or_else(|p| p.into_inner());
        if Instant::now() >= until {
            c.lost.store(true, Ordering::SeqCst);
            let secs = (c.ttl - quarter(c.ttl)).as_secs();
            return Err(self.lost_error(&format!("not renewed for {secs}s, it may have expired")));
        }
        Ok(())
    }

    /// Done with the job. The last of a shared lease's jobs gives the slots
    /// back; a failure only delays the next runner until the lease expires.
    pub async fn release(mut self) {
        self.released = true;
        let c = self.core.clone();
        if c.users.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        c.renewer.abort();
        if c.lost.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = c.release_client.release_lease(&c.id).await {
            tracing::warn!(error = %e, "could not release the lease; it expires by itself");
        }
    }
}

impl Drop for PrefectLease {
    fn drop(&mut self) {
        // The last user dropped unreleased (a failed run): renewals stop,
        // the lease expires.
        if !self.released && self.core.users.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.core.renewer.abort();
        }
    }
}
