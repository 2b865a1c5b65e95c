//! Stand-ins in front of or instead of a server: a recording proxy that
//! forwards, delays or rewrites answers on cue, and replayed raw answers.

/// Serves `response` (raw HTTP bytes) to each connection after reading the
/// request, then closes; `None` never answers. This stands in for a real
/// server only where it cannot be made to misbehave on cue; each caller says
/// where its bytes come from (captured with `curl --raw`, or documented).
pub fn replay_server(response: Option<Vec<u8>>) -> String {
    replay_sequence(vec![response; 16])
}

/// Like `replay_server`, with one response per connection, in order.
pub fn replay_sequence(responses: Vec<Option<Vec<u8>>>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (stream, response) in listener.incoming().zip(responses) {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(300)));
                let _ = s.read(&mut buf);
                match response {
                    Some(bytes) => {
                        let _ = s.write_all(&bytes);
                    }
                    None => std::thread::sleep(std::time::Duration::from_secs(5)),
                }
            });
        }
    });
    url
}

/// One request a [`Recorder`] saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, e.g. `/bigquery/v2/projects/p/queries`.
    pub path: String,
    pub body: Vec<u8>,
    /// The `Accept` header sent, empty when none.
    pub accept: String,
    /// The `Authorization` header sent, empty when none.
    pub auth: String,
    /// The status the client got.
    pub status: u16,
    /// The server's own status, when it was asked (0 when not).
    pub upstream: u16,
    /// When the request arrived.
    pub at: std::time::Instant,
    /// Its place on its connection: 1 for a connection's first request,
    /// more for one sent on a pooled connection.
    pub on_connection: usize,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What the recorder does with a request.
pub enum Act {
    Forward,
    /// Answer this (status, JSON body) without forwarding: a 503 provokes a
    /// retry, a 400 a failure.
    Answer(u16, String),
    /// Forward, and when the server granted it (2xx) give the client this
    /// answer instead: a request that took effect while the client saw it
    /// fail. A server's own refusal passes through unchanged.
    ForwardThenAnswer(u16, String),
    /// Forward with this `Accept` header instead of the client's: a server
    /// that does not give the type asked for.
    ForwardAccepting(String),
    /// Answer this (status, headers, JSON body) without forwarding: a 429
    /// with its `Retry-After`.
    AnswerWith(u16, Vec<(String, String)>, String),
    /// Forward, then give the client `map(status, body)` instead of the
    /// server's answer: a service that answers otherwise than the server.
    ForwardMapped(MapAnswer),
    /// Never answer, and keep the connection open (for two minutes): a
    /// connection that died on the way (a NAT or load balancer dropped it
    /// without a word), as the client sees it.
    Stall,
}

/// Turns the server's (status, body) into what the client gets.
pub type MapAnswer = Box<dyn Fn(u16, Vec<u8>) -> (u16, Vec<u8>) + Send>;

/// Decides, per request, what the recorder does (it may also sleep first).
pub type Inject = Box<dyn Fn(&Seen) -> Act + Send + Sync>;

/// A recording HTTP/1.1 proxy in front of a real server (the BigQuery
/// emulator, InfluxDB, Prefect): every request is kept byte for byte, so
/// tests can check what duckhour sends against the real service's
/// documented limits, which the emulator does not enforce. Answers pass
/// through byte for byte, with the server's content type and InfluxDB's
/// `X-Influxdb-*` headers.
pub struct Recorder {
    /// The proxy's root, `http://127.0.0.1:PORT`.
    pub url: String,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    /// Connections it closed because they stayed idle (`start_closing_idle`).
    pub idle_closed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Recorder {
    /// Forwards to `upstream` (its root, e.g. `http://127.0.0.1:9050`).
    pub fn start(upstream: &str, inject: Inject) -> Recorder {
        Recorder::start_closing_idle(upstream, inject, None, "")
    }

    /// The same, closing a connection that stays `idle` between requests
    /// (as Prefect Cloud's load balancer does after 30 s), and forwarding
    /// paths under `prefix` (e.g. a Cloud workspace's
    /// `/api/accounts/<a>/workspaces/<w>`) as under `/api`; `Seen` keeps
    /// the path as sent.
    pub fn start_closing_idle(
        upstream: &str,
        inject: Inject,
        idle: Option<std::time::Duration>,
        prefix: &str,
    ) -> Recorder {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let idle_closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let inject = std::sync::Arc::new(inject);
        let (upstream, log, closed) = (upstream.to_owned(), seen.clone(), idle_closed.clone());
        let prefix = prefix.to_owned();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (upstream, log, inject) = (upstream.clone(), log.clone(), inject.clone());
                let (closed, prefix) = (closed.clone(), prefix.clone());
                std::thread::spawn(move || {
                    let mut on_connection = 0;
                    let http = reqwest::blocking::Client::new();
                    let _ = stream.set_read_timeout(idle);
                    let mut out = stream.try_clone().unwrap();
                    let mut r = BufReader::new(stream);
                    loop {
                        let mut line = String::new();
                        match r.read_line(&mut line) {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(e) => {
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) {
                                    closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                }
                                return;
                            }
                        }
                        let mut parts = line.split_whitespace();
                        let method = parts.next().unwrap_or("").to_owned();
                        let path = parts.next().unwrap_or("").to_owned();
                        let mut len = 0usize;
                        let mut headers = Vec::new();
                        loop {
                            let mut h = String::new();
                            r.read_line(&mut h).unwrap();
                            let h = h.trim_end().to_owned();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
                                if k == "content-length" {
                                    len = v.parse().unwrap();
                                }
                                if matches!(k.as_str(), "authorization" | "content-type" | "accept")
                                {
                                    headers.push((k, v));
                                }
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).unwrap();
                        on_connection += 1;
                        let mut s = Seen {
                            method: method.clone(),
                            path: path.clone(),
                            body: body.clone(),
                            accept: headers
                                .iter()
                                .find(|(k, _)| k == "accept")
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default(),
                            auth: headers
                                .iter()
                                .find(|(k, _)| k == "authorization")
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default(),
                            status: 0,
                            upstream: 0,
                            at: std::time::Instant::now(),
                            on_connection,
                        };
                        let act = inject(&s);
                        let path = match path.strip_prefix(prefix.as_str()) {
                            Some(rest) if !prefix.is_empty() => format!("/api{rest}"),
                            _ => path,
                        };
                        let (status, answer, kept) = match act {
                            Act::Stall => {
                                log.lock().unwrap().push(s);
                                std::thread::sleep(std::time::Duration::from_secs(120));
                                return;
                            }
                            Act::Answer(status, body) => (status, body.into_bytes(), Vec::new()),
                            Act::AnswerWith(status, headers, body) => {
                                (status, body.into_bytes(), headers)
                            }
                            Act::Forward
                            | Act::ForwardThenAnswer(..)
                            | Act::ForwardMapped(_)
                            | Act::ForwardAccepting(_) => {
                                let mut rb = http
                                    .request(method.parse().unwrap(), format!("{upstream}{path}"));
                                for (k, v) in &headers {
                                    match &act {
                                        Act::ForwardAccepting(a) if k == "accept" => {
                                            rb = rb.header(k, a.as_str())
                                        }
                                        _ => rb = rb.header(k, v),
                                    }
                                }
                                let resp = rb.body(body).send().unwrap();
                                let status = resp.status().as_u16();
                                s.upstream = status;
                                // The server's own type and version go to the client.
                                let kept: Vec<(String, String)> = resp
                                    .headers()
                                    .iter()
                                    .filter(|(k, _)| {
                                        k.as_str() == "content-type"
                                            || k.as_str().starts_with("x-influxdb-")
                                    })
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_owned())
                                    })
                                    .collect();
                                let bytes = resp.bytes().unwrap().to_vec();
                                match act {
                                    Act::ForwardThenAnswer(s, b)
                                        if (200..300).contains(&status) =>
                                    {
                                        (s, b.into_bytes(), Vec::new())
                                    }
                                    Act::ForwardMapped(map) => {
                                        let (s, b) = map(status, bytes);
                                        (s, b, kept)
                                    }
                                    _ => (status, bytes, kept),
                                }
                            }
                        };
                        s.status = status;
                        log.lock().unwrap().push(s);
                        let mut head = format!("HTTP/1.1 {status} X\r\n");
                        if !kept.iter().any(|(k, _)| k == "content-type") {
                            head.push_str("content-type: application/json\r\n");
                        }
                        for (k, v) in &kept {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str(&format!("content-length: {}\r\n\r\n", answer.len()));
                        if out.write_all(head.as_bytes()).is_err()
                            || out.write_all(&answer).is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Recorder {
            url,
            seen,
            idle_closed,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}
