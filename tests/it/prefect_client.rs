//! The Prefect client's retries and error messages. A real Prefect server
//! cannot be made to answer 429, 503 or 401 on cue, so a local socket replays
//! responses: captured from Prefect 3.9.1 (401, 404, 410, 422; see
//! `tests/fixtures/prefect/README.md`) or, for 200/429/503, built in the
//! shape the server sends (its JSON, and `Retry-After` in seconds, which
//! Prefect writes as a fraction).

use std::time::{Duration, Instant};

use duckhour::prefect::{Client, Take};
use duckhour::secret::Secret;

use crate::util::{replay_sequence, Ws};

const R401: &[u8] = include_bytes!("../fixtures/prefect/401_response.bin");
const R404: &[u8] = include_bytes!("../fixtures/prefect/404_response.bin");
const R410: &[u8] = include_bytes!("../fixtures/prefect/410_response.bin");
const R422: &[u8] = include_bytes!("../fixtures/prefect/422_response.bin");

const KEY: &str = "pnu_do-not-print-me";

fn response(status: &str, headers: &str, body: &str) -> Option<Vec<u8>> {
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

fn lease_granted() -> Option<Vec<u8>> {
    response(
        "200 OK",
        "",
        r#"{"lease_id":"c6ee139f-cc0a-4db1-a2fd-b5d30c732848","limits":[{"id":"50480f33-02d6-4c3a-bc4b-b25c5993502e","name":"duckhour-p-co","limit":1}]}"#,
    )
}

fn client(responses: Vec<Option<Vec<u8>>>) -> (Client, String) {
    let base = format!("{}/api", replay_sequence(responses));
    (Client::new(&base, Some(Secret::new(KEY))), base)
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_429_502_503_honouring_retry_after() {
    let (c, _) = client(vec![
        response(
            "429 Too Many Requests",
            "retry-after: 1\r\n",
            r#"{"detail":"Too many requests"}"#,
        ),
        response(
            "503 Service Unavailable",
            "retry-after: 0.5\r\n",
            r#"{"detail":"Service Unavailable"}"#,
        ),
        response("502 Bad Gateway", "", "bad gateway"),
        lease_granted(),
    ]);
    let t0 = Instant::now();
    let got = c
        .take_lease(&["duckhour-p-co"], Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(
        got,
        Take::Leased("c6ee139f-cc0a-4db1-a2fd-b5d30c732848".into())
    );
    // 1 s + 0.5 s as asked, then a short backoff after the 502.
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_and_lost_leases() {
    let (c, _) = client(vec![
        response(
            "423 Locked",
            "retry-after: 2.397546055679059\r\n",
            r#"{"detail":"Locked"}"#,
        ),
        Some(R410.to_vec()),
        // Prefect Cloud answered a lost lease's renewal 404 (PrefectHQ/prefect#18942).
        Some(R404.to_vec()),
    ]);
    assert_eq!(
        c.take_lease(&["duckhour-p-co"], Duration::from_secs(120))
            .await
            .unwrap(),
        Take::Busy(Some(Duration::from_secs_f64(2.397546055679059)))
    );
    for _ in 0..2 {
        assert!(!c
            .renew_lease(
                "c6ee139f-cc0a-4db1-a2fd-b5d30c732848",
                Duration::from_secs(120)
            )
            .await
            .unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_name_the_limit_or_block_and_never_the_key() {
    let (c, base) = client(vec![Some(R401.to_vec())]);
    let e = c
        .ensure_limit("duckhour-p-co")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!("prefect {base}: concurrency limit `duckhour-p-co`: unauthorized (401): no API key, or one Prefect does not know (mistyped, deleted or expired); check `api_key`; Prefect said: \"Unauthorized\"")
    );

    let (c, base) = client(vec![Some(R422.to_vec())]);
    let e = c
        .take_lease(&["duckhour-p-co"], Duration::from_secs(120))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!("prefect {base}: concurrency limit `duckhour-p-co`: rejected (422): body.lease_duration: Input should be greater than or equal to 60")
    );

    // A wrong API root: the block type is neither there nor creatable.
    let (c, base) = client(vec![Some(R404.to_vec()), Some(R404.to_vec())]);
    let e = c.ensure_state_schema().await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!("prefect {base}: block type `pipelinestateblock`: not found (404)")
    );
    assert!(!e.contains(KEY));
}

#[test]
fn a_rejected_key_fails_the_run_before_any_work() {
    let url = replay_sequence(vec![Some(R401.to_vec()); 4]);
    let ws = Ws::new(&format!(
        "state:
  type: prefect
  url: {url}/api
  api_key: ${{secret:prefect-api-key}}
sources:
  sample: {{type: line_protocol, path: data/sample.lp.gz}}
sinks:
  wh: {{type: duckdb, path: wh.duckdb}}
pipelines:
  p:
    source: sample
    sinks: [wh]
    measurement: air_quality
    start: 2026-11-20T00:00:00Z
    jobs:
      - name: co
"
    ));
    let out = ws
        .run_env(
            &["run", "p", "--now", "2026-11-21T00:10:00Z"],
            &[("PREFECT_API_KEY", KEY)],
        )
        .exit(1);
    assert!(
        out.stderr.contains(&format!(
            "prefect {url}/api: concurrency limit `duckhour-p-co`: unauthorized (401)"
        )),
        "{out:?}"
    );
    assert!(!out.stderr.contains(KEY) && !out.stdout.contains(KEY));
    assert!(!ws.path("wh.duckdb").exists());
}

/// Prefect Cloud answered a lost lease's renewal with 404 (2025,
/// PrefectHQ/prefect#18942) before the server's 410: both are a lost lease,
/// never an error to retry.
#[tokio::test(flavor = "multi_thread")]
async fn a_404_renewal_is_a_lost_lease() {
    let (c, _) = client(vec![Some(R404.to_vec())]);
    assert!(!c
        .renew_lease(
            "c6ee139f-cc0a-4db1-a2fd-b5d30c732848",
            Duration::from_secs(120)
        )
        .await
        .unwrap());
}

/// A key that may read blocks but not secret data gets `********` in place
/// of the value (Prefect Cloud's Viewer and Runner roles): that is never a
/// credential; the error says what to change.
#[tokio::test(flavor = "multi_thread")]
async fn a_masked_secret_is_refused_with_the_role_to_give() {
    let doc = r#"{"id":"9d5c1b9e-4c1f-4d7e-9d54-1f1d0c5e2a11","name":"motherduck-token","data":{"value":"********"},"block_schema_id":"0b1c","block_type_id":"0a1b","is_anonymous":false}"#;
    let (c, base) = client(vec![response("200 OK", "", doc)]);
    let e = c.secret("motherduck-token").await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!("prefect {base}: secret block `motherduck-token`: its secret value came back masked (`********`): the API key may not read secret block data; give it the Developer role, or a custom role that may read secret blocks")
    );
    let gcp = r#"{"id":"9d5c1b9e-4c1f-4d7e-9d54-1f1d0c5e2a12","name":"gcp","data":{"service_account_info":{"type":"service_account","private_key":"********"}},"block_schema_id":"0b1c","block_type_id":"0a1b","is_anonymous":false}"#;
    let (c, _) = client(vec![Some(R404.to_vec()), response("200 OK", "", gcp)]);
    let e = c.secret("gcp").await.unwrap_err().to_string();
    assert!(
        e.contains("gcp-credentials block `gcp`: its secret value came back masked"),
        "{e}"
    );
}
