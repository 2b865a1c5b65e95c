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

/// How a lease of `ttl` (the spec's `lease`) is kept: renewed every
/// quarter of `ttl`, each renewal given an eighth to answer in all for
/// failures other than throttling, and each attempt half of that, so that
/// an attempt lost on a dead pooled connection leaves time for one on a
/// fresh connection; and trusted until a
/// quarter of `ttl` before the server would expire it, counted from the
/// start of the last renewal that succeeded: a runner that could not renew
/// stops writing before anyone else can take the job.
///
/// Prefect Cloud rate-limits its API per minute, so a 429 may say "come
/// back in up to 60 s", to a renewal too, and under load Cloud calls
/// normal. There the server is asked for `ttl` plus [`CLOUD_WINDOW`]: a
/// renewal throttled right after one that succeeded waits out the whole
/// window and still finds the slot held, for every `lease` the spec allows
/// (60 s and up), while the other jobs of the team see the slot free
/// `ttl` plus a minute after a crash. A renewal waits out 429s for as long
/// as the lease stays trusted. A server that does not throttle (a
/// self-hosted Prefect server) is asked for `ttl`, as before.
#[derive(Debug, Clone, Copy)]
struct Keep {
    ttl: Duration,
    /// What the server is asked for.
    asked: Duration,
}

/// Prefect Cloud's rate-limit window: the longest `Retry-After` it gives.
pub const CLOUD_WINDOW: Duration = Duration::from_secs(60);

/// The longest lease Prefect grants (a day), as the spec's `lease` is checked.
const LONGEST: Duration = Duration::from_secs(86_400);

impl Keep {
    fn new(ttl: Duration, cloud: bool) -> Keep {
        let asked = if cloud {
            (ttl + CLOUD_WINDOW).min(LONGEST).max(ttl)
        } else {
            ttl
        };
        Keep { ttl, asked }
    }

    fn every(&self) -> Duration {
        self.ttl / 4
    }

    /// How long after a renewal's start the lease is trusted.
    fn trust(&self) -> Duration {
        self.asked - self.ttl / 4
    }

    /// How long a renewal, sent a quarter after the last success, may wait
    /// out throttling: until the trust ends.
    fn throttled_for(&self) -> Duration {
        self.trust() - self.every()
    }

    /// For failures other than throttling, in all.
    fn answer_within(&self) -> Duration {
        self.ttl / 8
    }

    /// For one attempt.
    fn attempt(&self) -> Duration {
        self.ttl / 16
    }
}

/// A lease as the server knows it: one id for one or more limits (the
/// jobs or models of a run taken together), renewed in the background until
/// its last user releases it.
#[derive(Debug)]
struct LeaseCore {
    /// For the release, with the store's usual retries.
    release_client: Client,
    id: String,
    keep: Keep,
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
            let asked = self.keep().asked;
            for _ in 0..2 {
                let started = Instant::now();
                match self.client.take_lease(&names, asked).await {
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
                        orphan_until = Some(started + asked + Duration::from_secs(60));
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
        let asked = self.keep().asked;
        // Set when an attempt may have taken a slot whose answer we lost:
        // until that orphan expires, "busy" may mean ourselves.
        let mut own_orphan_until: Option<Instant> = orphan_until;
        let (id, taken_at) = loop {
            let started = Instant::now();
            let busy = match self.client.take_lease(&[&limit], asked).await {
                Ok(Take::Leased(id)) => break (id, started),
                Ok(Take::BusyAfterRetry(hint)) => {
                    // The server frees an expired slot on its repossessor's
                    // next round (every 15 s by default, later on a busy
                    // server: seen in the suite), not at the instant.
                    own_orphan_until.get_or_insert(started + asked + Duration::from_secs(60));
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

    /// How this store keeps its leases.
    fn keep(&self) -> Keep {
        Keep::new(self.lease_ttl, self.client.is_cloud())
    }

    /// A lease taken at `taken_at`, renewed from now on.
    fn core(&self, id: String, taken_at: Instant) -> Arc<LeaseCore> {
        let keep = self.keep();
        let lost = Arc::new(AtomicBool::new(false));
        let trusted_until = Arc::new(std::sync::Mutex::new(taken_at + keep.trust()));
        let renewals = self
            .client
            .clone()
            .with_retry_budget(keep.answer_within())
            .with_throttle_budget(keep.throttled_for())
            .with_request_timeout(keep.attempt());
        let renewer = tokio::spawn(renew_loop(
            renewals,
            id.clone(),
            keep,
            trusted_until.clone(),
            lost.clone(),
        ));
        Arc::new(LeaseCore {
            release_client: self.client.clone(),
            id,
            keep,
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
    keep: Keep,
    trusted_until: Arc<std::sync::Mutex<Instant>>,
    lost: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(keep.every()).await;
        let started = Instant::now();
        match client.renew_lease(&id, keep.asked).await {
            Ok(true) => {
                *trusted_until.lock().unwrap_or_else(|p| p.into_inner()) = started + keep.trust();
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
    /// successful renewal is older than the trust ([`Keep`]): the caller
    /// must not write to any sink, ledger or block after that.
    pub fn check(&self) -> Result<(), StateError> {
        let c = &self.core;
        if c.lost.load(Ordering::SeqCst) {
            return Err(self.lost_error("expired or revoked"));
        }
        let until = *c.trusted_until.lock().unwrap_or_else(|p| p.into_inner());
        if Instant::now() >= until {
            c.lost.store(true, Ordering::SeqCst);
            let secs = c.keep.trust().as_secs();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// For every lease the spec allows, on Cloud: a renewal sent on time
    /// and told to come back after a whole window, then answered within
    /// its eighth, lands while the lease is still trusted, and the trust
    /// ends before the server would expire the slot. Off Cloud, the server
    /// is asked for `lease` alone and the trust is three quarters of it.
    #[test]
    fn a_renewal_throttled_for_a_whole_window_keeps_the_lease() {
        for secs in [60, 61, 90, 120, 300, 3600, 86_399, 86_400] {
            let k = Keep::new(Duration::from_secs(secs), true);
            let renewed = k.every() + CLOUD_WINDOW + k.answer_within();
            assert!(renewed < k.trust(), "{secs}: {renewed:?} {k:?}");
            assert!(CLOUD_WINDOW <= k.throttled_for(), "{secs}: {k:?}");
            assert!(k.trust() < k.asked && k.asked <= LONGEST, "{secs}: {k:?}");
            let local = Keep::new(Duration::from_secs(secs), false);
            assert_eq!(local.asked, local.ttl);
            assert_eq!(local.trust(), local.ttl * 3 / 4);
        }
        let k = Keep::new(Duration::from_secs(60), true);
        assert_eq!(
            (k.asked, k.trust(), k.throttled_for()),
            (
                Duration::from_secs(120),
                Duration::from_secs(105),
                Duration::from_secs(90)
            )
        );
    }
}
