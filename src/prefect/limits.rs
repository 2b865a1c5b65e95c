//! Global concurrency limits and their leases: one slot per job (or
//! model), taken for many names in one request, renewed and given back.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::{status_kind, Client, ErrorKind, PrefectError};
use crate::retry::retry_after;

/// The outcome of asking for a lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Take {
    Leased(String),
    /// Held by someone else; the server's hint for when to ask again.
    Busy(Option<Duration>),
    /// Held, but an earlier attempt of this same request may have reached
    /// the server (it timed out or got a 5xx): the holder may be our own
    /// orphaned slot, which frees itself when its lease expires.
    BusyAfterRetry(Option<Duration>),
    /// These limits do not exist (nothing was taken).
    Missing(Vec<String>),
}

impl Client {
    /// Creates a global concurrency limit of one slot unless it exists.
    pub async fn ensure_limit(&self, name: &str) -> Result<(), PrefectError> {
        let what = format!("concurrency limit `{name}`");
        let body = json!({"name": name, "limit": 1});
        let r = self
            .call(Method::POST, "/v2/concurrency_limits/", Some(&body), &what)
            .await?;
        match r.status.as_u16() {
            200 | 201 | 409 => Ok(()),
            _ => Err(self.err(&what, status_kind(r.status, &r.body))),
        }
    }

    /// Takes one slot of each of the limits `names` with one lease of `ttl`
    /// (all or none: one that is held makes the answer `Busy`).
    pub async fn take_lease(&self, names: &[&str], ttl: Duration) -> Result<Take, PrefectError> {
        let what = match names {
            [one] => format!("concurrency limit `{one}`"),
            _ => format!("concurrency limits `{}`", names.join("`, `")),
        };
        let body = json!({
            "names": names,
            "slots": 1,
            "mode": "concurrency",
            "lease_duration": ttl.as_secs(),
        });
        let r = self
            .call(
                Method::POST,
                "/v2/concurrency_limits/increment-with-lease",
                Some(&body),
                &what,
            )
            .await?;
        match r.status.as_u16() {
            200 => {
                let v = self.json_of(&r, &what)?;
                let id = v.get("lease_id").and_then(Value::as_str);
                // A missing limit is not an error to the server: the lease
                // covers only the limits that exist.
                let granted: Vec<&str> = v
                    .get("limits")
                    .and_then(Value::as_array)
                    .map(|l| l.iter().filter_map(|x| x.get("name")?.as_str()).collect())
                    .unwrap_or_default();
                let missing: Vec<String> = names
                    .iter()
                    .filter(|n| !granted.contains(n))
                    .map(|n| n.to_string())
                    .collect();
                if !missing.is_empty() {
                    if let Some(id) = id {
                        let _ = self.release_lease(id).await;
                    }
                    return Ok(Take::Missing(missing));
                }
                let id =
                    id.ok_or_else(|| self.err(&what, ErrorKind::Protocol("no `lease_id`".into())))?;
                Ok(Take::Leased(id.to_owned()))
            }
            423 if r.retried => Ok(Take::BusyAfterRetry(retry_after(&r.headers))),
            423 => Ok(Take::Busy(retry_after(&r.headers))),
            404 => Err(self.err(&what, ErrorKind::NoWorkspace)),
            _ => Err(self.err(&what, status_kind(r.status, &r.body))),
        }
    }

    /// Extends a lease; `false` when it is gone (410: expired or revoked).
    pub async fn renew_lease(&self, id: &str, ttl: Duration) -> Result<bool, PrefectError> {
        let what = format!("lease {id}");
        let body = json!({"lease_duration": ttl.as_secs()});
        let r = self
            .call(
                Method::POST,
                &format!("/v2/concurrency_limits/leases/{id}/renew"),
                Some(&body),
                &what,
            )
            .await?;
        match r.status.as_u16() {
            200 | 204 => Ok(true),
            // 410 on the server since Oct 2025; Prefect Cloud answered a lost
            // lease's renewal with 404 (PrefectHQ/prefect#18942).
            404 | 410 => Ok(false),
            _ => Err(self.err(&what, status_kind(r.status, &r.body))),
        }
    }

    /// Gives the slot back.
    pub async fn release_lease(&self, id: &str) -> Result<(), PrefectError> {
        let what = format!("lease {id}");
        let body = json!({"lease_id": id});
        self.ok(
            Method::POST,
            "/v2/concurrency_limits/decrement-with-lease",
            Some(&body),
            &what,
        )
        .await?;
        Ok(())
    }
}
