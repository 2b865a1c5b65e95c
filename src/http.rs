//! How the HTTP clients (InfluxDB, Prefect, BigQuery) show a URL in
//! messages. When they retry is [`crate::retry`]'s.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_url_drops_credentials() {
        assert_eq!(
            shown_url("https://u:p@example.com/api/?key=k"),
            "https://example.com/api"
        );
    }
}
