//! Prefect Cloud's documented answers, which the local server never gives,
//! replayed by a stand-in in front of the real local Prefect 3.9 server (no
//! Cloud workspace can be reached from here). What it does comes from
//! Prefect's documentation ("Rate limits and data retention",
//! docs.prefect.io/v3/concepts/rate-limits; roles and API keys) and its
//! issue tracker, as README's "Prefect Cloud" cites:
//! - the workspace URL `…/api/accounts/<id>/workspaces/<id>`;
//! - per-minute budgets for requests and for log lines plus events, shared
//!   with "other clients" (the team's other flows), answered 429 with a
//!   `Retry-After` of what is left of the minute (up to 60 s); most tests
//!   scale the window down to 5 s so that they stay short, one keeps it;
//! - 401 for a request without a key or with one the workspace does not know;
//! - log messages over 25,000 characters refused with 422 (the whole
//!   batch), request bodies over 5 MiB with 413;
//! - a key that is not a member of the workspace: 404 on every path;
//! - a key whose role may not read secret data: secret values `********`;
//! - a key whose role may not create blocks, block types or schemas, work
//!   pools or deployments: 403 for those and for block updates; a
//!   Viewer's: 403 for every write (flow runs, logs, events, leases), reads
//!   (GET, `…/filter`, `…/count`) answered;
//! - a lost lease's renewal: 404 (PrefectHQ/prefect#18942), not 410;
//! - a block schema that exists: 409 (the local server answers 200);
//! - connections idle for 30 s closed (its load balancer).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{Act, Prefect, Recorder, Seen};

/// The keys the stand-in knows, by what their role may do.
pub(super) const MEMBER: &str = "pnu_member";
pub(super) const OUTSIDER: &str = "pnu_outsider";
pub(super) const NO_SECRETS: &str = "pnu_nosecrets";
pub(super) const RUNNER: &str = "pnu_runner";
pub(super) const VIEWER: &str = "pnu_viewer";

/// The workspace path of the stand-in's URL, as Cloud's.
const WORKSPACE: &str = "/api/accounts/4d7e0b1e-5a1c-4a8e-9a55-0c6f2b3f7a10/workspaces/9f2c3d4e-1b2a-4c5d-8e9f-a0b1c2d3e4f5";

/// Cloud's budgets, scaled: per `window`, at most `requests` API requests
/// and `lines` log lines plus events (the rest of the window's budget is
/// taken by the team's other clients).
#[derive(Clone, Copy)]
pub(super) struct Budget {
    pub(super) window: Duration,
    pub(super) requests: u32,
    pub(super) lines: u32,
}

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    requests: u32,
    lines: u32,
}

pub(super) struct Cloud {
    pub(super) rec: Recorder,
    /// The workspace API URL to give duckhour.
    pub(super) url: String,
}

/// The JSON items a request carries toward the log-and-event budget.
fn lines_of(s: &Seen) -> u32 {
    let p = s.path.split('?').next().unwrap_or("");
    if s.method == "POST" && (p.ends_with("/logs/") || p.ends_with("/events")) {
        s.json().as_array().map_or(0, |a| a.len() as u32)
    } else {
        0
    }
}

/// What decides before Cloud's own rules, when it decides.
pub(super) type First = Box<dyn Fn(&Seen) -> Option<Act> + Send + Sync>;

pub(super) fn detail(d: &str) -> String {
    serde_json::json!({ "detail": d }).to_string()
}

impl Cloud {
    /// Cloud's answers, with `budget` if any, closing connections idle for
    /// 30 s.
    pub(super) fn start(p: &Prefect, budget: Option<Budget>) -> Cloud {
        Cloud::closing_idle(p, budget, Duration::from_secs(30))
    }

    /// The same, its load balancer closing connections idle for `idle`.
    pub(super) fn closing_idle(p: &Prefect, budget: Option<Budget>, idle: Duration) -> Cloud {
        Cloud::with(p, budget, idle, Box::new(|_| None))
    }

    /// The same, `first` deciding before Cloud's own rules (a load
    /// balancer's bad minute, a refusal on cue).
    pub(super) fn with(p: &Prefect, budget: Option<Budget>, idle: Duration, first: First) -> Cloud {
        let window = Arc::new(Mutex::new(Window::default()));
        let rec = Recorder::start_closing_idle(
            p.url.trim_end_matches("/api"),
            Box::new(move |s: &Seen| {
                if let Some(act) = first(s) {
                    return act;
                }
                let key = s.auth.trim_start_matches("Bearer ").to_owned();
                let path = s.path.split('?').next().unwrap_or("").to_owned();
                if ![MEMBER, OUTSIDER, NO_SECRETS, RUNNER, VIEWER].contains(&key.as_str()) {
                    return Act::Answer(401, detail("Unauthorized"));
                }
                if key == OUTSIDER || !path.starts_with(WORKSPACE) {
                    return Act::Answer(404, detail("Not Found"));
                }
                if s.body.len() > 5 * 1024 * 1024 {
                    return Act::Answer(413, detail("Request Entity Too Large"));
                }
                if let Some(b) = budget {
                    let mut w = window.lock().unwrap();
                    let now = Instant::now();
                    if w.started.is_none_or(|t| now >= t + b.window) {
                        *w = Window {
                            started: Some(now),
                            ..Window::default()
                        };
                    }
                    let lines = lines_of(s);
                    if w.requests + 1 > b.requests || w.lines + lines > b.lines {
                        let left = (w.started.unwrap() + b.window - now).as_secs_f64().ceil();
                        return Act::AnswerWith(
                            429,
                            vec![("retry-after".into(), format!("{}", left.max(1.0)))],
                            detail("Rate limit exceeded"),
                        );
                    }
                    w.requests += 1;
                    w.lines += lines;
                }
                if path.ends_with("/logs/") {
                    let long = s.json().as_array().is_some_and(|a| {
                        a.iter().any(|l| {
                            l["message"]
                                .as_str()
                                .is_some_and(|m| m.chars().count() > 25_000)
                        })
                    });
                    if long {
                        return Act::Answer(422, detail("Log message exceeds 25000 characters"));
                    }
                }
                let creates = s.method == "POST"
                    && [
                        "/block_documents/",
                        "/block_types/",
                        "/block_schemas/",
                        "/work_pools/",
                        "/deployments/",
                    ]
                    .iter()
                    .any(|p| path.ends_with(p));
                let updates = s.method == "PATCH"
                    && (path.contains("/work_pools/")
                        || path.contains("/deployments/")
                        || path.contains("/block_documents/"));
                let reads = s.method == "GET"
                    || path.ends_with("/filter")
                    || path.ends_with("/count")
                    || path.ends_with("/paginate");
                if (key == RUNNER && (creates || updates)) || (key == VIEWER && !reads) {
                    return Act::Answer(
                        403,
                        detail("Forbidden: your role does not allow this action"),
                    );
                }
                if path.ends_with("/renew") {
                    return Act::ForwardMapped(Box::new(|status, body| {
                        if status == 410 {
                            (404, detail("Lease not found").into_bytes())
                        } else {
                            (status, body)
                        }
                    }));
                }
                if s.method == "POST" && path.ends_with("/block_schemas/") {
                    return Act::ForwardMapped(Box::new(|status, body| {
                        if status == 200 {
                            (409, detail("Block schema already exists.").into_bytes())
                        } else {
                            (status, body)
                        }
                    }));
                }
                if key == NO_SECRETS && s.method == "GET" && path.contains("/block_documents/") {
                    return Act::ForwardMapped(Box::new(|status, body| {
                        let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) else {
                            return (status, body);
                        };
                        let masked = match v["block_type"]["slug"].as_str() {
                            Some("secret") => {
                                v["data"]["value"] = "********".into();
                                true
                            }
                            Some("gcp-credentials") => {
                                v["data"]["service_account_info"] = "********".into();
                                true
                            }
                            _ => false,
                        };
                        if masked {
                            (status, v.to_string().into_bytes())
                        } else {
                            (status, body)
                        }
                    }));
                }
                Act::Forward
            }),
            Some(idle),
            WORKSPACE,
        );
        let url = format!("{}{WORKSPACE}", rec.url);
        Cloud { rec, url }
    }

    /// Throttled: `requests` a 5 s window, and 120 log lines or events (at
    /// least a batch of log lines, 100: Cloud's smallest plan takes 2,000 a
    /// minute).
    pub(super) fn throttled(p: &Prefect, requests: u32) -> Cloud {
        Cloud::start(
            p,
            Some(Budget {
                window: Duration::from_secs(5),
                requests,
                lines: 120,
            }),
        )
    }

    /// How many answers of `status` it gave.
    pub(super) fn answered(&self, status: u16) -> usize {
        self.rec
            .seen()
            .iter()
            .filter(|s| s.status == status)
            .count()
    }
}
