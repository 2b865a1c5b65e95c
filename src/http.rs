//! Small HTTP helpers shared by the clients (InfluxDB, Prefect, BigQuery):
//! how a URL is shown in messages, and how long to wait before a retry.

use std::time::Duration;

/// The URL as shown in messages: no user info, no query string. A value
/// still holding `${env:…}`/`${secret:…}` references is shown as written
/// (the references name variables, not values).
pub fn shown_url(url: &str) -> String {
    if crate::secret::has_references(url) {
        return crate::secret::redact(url).into_owned();
    }
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => "<invalid url>".into(),
    }
}

/// `Retry-After` in seconds (integer or, as Prefect sends, fractional);
/// HTTP dates are not used by the services we talk to and count as absent.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(300.0)))
}

/// Exponential backoff from 250 ms, capped at `cap`.
pub fn backoff(attempt: u32, cap: Duration) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(10))).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parses_seconds_and_fractions() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "2.397546055679059".parse().unwrap());
        assert_eq!(
            retry_after(&h),
            Some(Duration::from_secs_f64(2.397546055679059))
        );
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn shown_url_drops_credentials() {
        assert_eq!(
            shown_url("https://u:p@example.com/api/?key=k"),
            "https://example.com/api"
        );
    }

    #[test]
    fn backoff_grows_then_caps() {
        let cap = Duration::from_secs(4);
        assert_eq!(backoff(0, cap), Duration::from_millis(250));
        assert_eq!(backoff(2, cap), Duration::from_secs(1));
        assert_eq!(backoff(9, cap), cap);
        // InfluxDB retries: the former 250 ms x 2^min(attempt, 6).
        let influx = Duration::from_secs(16);
        for a in 0..12u32 {
            assert_eq!(
                backoff(a, influx),
                Duration::from_millis(250 * 2u64.pow(a.min(6)))
            );
        }
    }
}
