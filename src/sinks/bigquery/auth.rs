//! BigQuery credentials: a service-account key (RS256 JWT exchanged at its
//! `token_uri`), an `authorized_user` file (refresh token), the GCE metadata
//! server, or nothing (an emulator). Access tokens are cached until a minute
//! before they expire. Key material and tokens live in [`Secret`]s; errors
//! name the credential's kind and its token URL, never its content.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::secret::Secret;

const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Where access tokens come from.
pub enum Credentials {
    /// No `Authorization` header (an emulator).
    Anonymous,
    ServiceAccount {
        email: String,
        key_id: Option<String>,
        key: Box<ring::signature::RsaKeyPair>,
        token_uri: String,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        token_uri: String,
    },
    /// The metadata server of a Google Cloud VM (host from `GCE_METADATA_HOST`).
    Metadata { host: String },
}

/// gcloud's Application Default Credentials file:
/// `$CLOUDSDK_CONFIG/application_default_credentials.json`, else
/// `$HOME/.config/gcloud/application_default_credentials.json`.
fn well_known_file() -> Option<std::path::PathBuf> {
    well_known_file_in(
        std::env::var_os("CLOUDSDK_CONFIG"),
        std::env::var_os("HOME"),
    )
}

fn well_known_file_in(
    cloudsdk_config: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<std::path::PathBuf> {
    let dir = match cloudsdk_config {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => std::path::PathBuf::from(home?).join(".config/gcloud"),
    };
    Some(dir.join("application_default_credentials.json"))
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The DER inside a PEM block (`-----BEGIN PRIVATE KEY-----`).
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn field(v: &Value, key: &str, kind: &str) -> Result<String, String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("{kind} credentials lack `{key}`"))
}

impl Credentials {
    /// Credentials from the JSON of a key file (`service_account` or `authorized_user`).
    pub fn from_json(text: &str) -> Result<Credentials, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            format!(
                "credentials are not JSON (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        match v.get("type").and_then(Value::as_str) {
            Some("service_account") => {
                let kind = "service-account";
                let pem = field(&v, "private_key", kind)?;
                let der = pem_der(&pem)
                    .ok_or_else(|| "service-account `private_key` is not a PEM key".to_owned())?;
                let key = ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(|e| {
                    format!("service-account `private_key` is not an RSA PKCS#8 key: {e}")
                })?;
                Ok(Credentials::ServiceAccount {
                    email: field(&v, "client_email", kind)?,
                    key_id: v
                        .get("private_key_id")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    key: Box::new(key),
                    token_uri: v
                        .get("token_uri")
                        .and_then(Value::as_str)
                        .unwrap_or(GOOGLE_TOKEN_URI)
                        .to_owned(),
                })
            }
            Some("authorized_user") => {
                let kind = "authorized-user";
                Ok(Credentials::AuthorizedUser {
                    client_id: field(&v, "client_id", kind)?,
                    client_secret: Secret::new(field(&v, "client_secret", kind)?),
                    refresh_token: Secret::new(field(&v, "refresh_token", kind)?),
                    token_uri: v
                        .get("token_uri")
                        .and_then(Value::as_str)
                        .unwrap_or(GOOGLE_TOKEN_URI)
                        .to_owned(),
                })
            }
            Some(other) => Err(format!(
                "credentials of type `{other}` are not supported (use a service-account key or ADC)"
            )),
            None => Err("credentials lack `type`".into()),
        }
    }

    /// Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, else the metadata server.
    pub fn application_default() -> Result<Credentials, String> {
        match std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
            Ok(path) if !path.is_empty() => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!("GOOGLE_APPLICATION_CREDENTIALS: cannot read {path}: {e}")
                })?;
                Credentials::from_json(&text)
                    .map_err(|e| format!("GOOGLE_APPLICATION_CREDENTIALS ({path}): {e}"))
            }
            _ => match well_known_file().filter(|p| p.is_file()) {
                // `gcloud auth application-default login` writes this
                // (an authorized-user refresh token, usually).
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?;
                    Credentials::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
                }
                None => Ok(Credentials::Metadata {
                    host: std::env::var("GCE_METADATA_HOST")
                        .unwrap_or_else(|_| "metadata.google.internal".into()),
                }),
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Credentials::Anonymous => "no credentials".into(),
            Credentials::ServiceAccount { email, .. } => format!("service account {email}"),
            Credentials::AuthorizedUser { .. } => "authorized-user credentials".into(),
            Credentials::Metadata { host } => format!("metadata server {host}"),
        }
    }

    /// The signed JWT a service account exchanges for an access token.
    pub fn assertion(&self, now: i64) -> Result<String, String> {
        let Credentials::ServiceAccount {
            email,
            key_id,
            key,
            token_uri,
        } = self
        else {
            return Err("not a service account".into());
        };
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(k) = key_id {
            header["kid"] = Value::String(k.clone());
        }
        let claims = serde_json::json!({
            "iss": email,
            "scope": SCOPE,
            "aud": token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut sig = vec![0u8; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| "cannot sign the token request".to_owned())?;
        Ok(format!("{signing_input}.{}", b64(&sig)))
    }
}

/// Access tokens for one sink, fetched when needed and cached.
pub struct Tokens {
    creds: Credentials,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

impl Tokens {
    pub fn new(creds: Credentials, http: reqwest::Client) -> Tokens {
        Tokens {
            creds,
            http,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    pub fn describe(&self) -> String {
        self.creds.describe()
    }

    /// Forgets the cached token (after a 401).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    /// A valid access token, or `None` for anonymous requests.
    pub async fn token(&self) -> Result<Option<Secret>, String> {
        if matches!(self.creds, Credentials::Anonymous) {
            return Ok(None);
        }
        let mut cached = self.cached.lock().await;
        if let Some((t, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(Some(t.clone()));
            }
        }
        let (token, expires_in) = self.fetch().await?;
        let life = Duration::from_secs(expires_in.saturating_sub(60).max(1));
        *cached = Some((token.clone(), Instant::now() + life));
        Ok(Some(token))
    }

    async fn fetch(&self) -> Result<(Secret, u64), String> {
        let (what, rb) = match &self.creds {
            Credentials::Anonymous => unreachable!("anonymous has no token"),
            Credentials::ServiceAccount { token_uri, .. } => {
                let jwt = self.creds.assertion(chrono::Utc::now().timestamp())?;
                (
                    format!("token request to {}", crate::http::shown_url(token_uri)),
                    self.http.post(token_uri).form(&[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                        ("assertion", jwt.as_str()),
                    ]),
                )
            }
            Credentials::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => (
                format!("token request to {}", crate::http::shown_url(token_uri)),
                self.http.post(token_uri).form(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.expose()),
                    ("refresh_token", refresh_token.expose()),
                ]),
            ),
            Credentials::Metadata { host } => (
                format!("metadata server {host}"),
                self.http
                    .get(format!(
                        "http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
                    ))
                    .query(&[("scopes", SCOPE)])
                    .header("Metadata-Flavor", "Google")
                    .timeout(Duration::from_secs(5)),
            ),
        };
        let resp = rb.send().await.map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            format!("{what} failed: {cause}")
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            // OAuth errors are `{"error", "error_description"}`; neither holds the key.
            let err = body.get("error").and_then(Value::as_str).unwrap_or("");
            let desc = body
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(format!("{what}: HTTP {}: {err} {desc}", status.as_u16())
                .trim_end()
                .to_owned());
        }
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{what}: no `access_token` in the answer"))?;
        let expires = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(3600);
        Ok((Secret::new(token), expires))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_FILE: &str =
        include_str!("../../../tests/fixtures/bigquery/test-service-account.json");

    #[test]
    fn service_account_jwt_is_signed_rs256_by_its_key() {
        let c = Credentials::from_json(KEY_FILE).unwrap();
        let jwt = c.assertion(1_800_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let dec = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap()
        };
        let header: Value = serde_json::from_slice(&dec(parts[0])).unwrap();
        let claims: Value = serde_json::from_slice(&dec(parts[1])).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(
            claims["iss"],
            "duckhour-test@duckhour-test.iam.gserviceaccount.com"
        );
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(claims["exp"], 1_800_003_600);
        let Credentials::ServiceAccount { key, .. } = &c else {
            panic!("service account")
        };
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            key.public().as_ref(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        public.verify(signed.as_bytes(), &dec(parts[2])).unwrap();
        assert!(public.verify(b"tampered", &dec(parts[2])).is_err());
    }

    #[test]
    fn bad_credentials_say_why_without_content() {
        let e = Credentials::from_json(
            "{\"type\": \"service_account\", \"private_key\": \"zzz-secret\"}",
        )
        .unwrap_err();
        assert_eq!(e, "service-account `private_key` is not a PEM key");
        let e = Credentials::from_json("not json zzz-secret").unwrap_err();
        assert_eq!(e, "credentials are not JSON (line 1, column 2)");
        let e = Credentials::from_json("{\"type\": \"external_account\"}").unwrap_err();
        assert!(e.contains("`external_account` are not supported"), "{e}");
    }

    #[test]
    fn gclouds_well_known_file() {
        assert_eq!(
            well_known_file_in(None, Some("/home/u".into())),
            Some("/home/u/.config/gcloud/application_default_credentials.json".into())
        );
        assert_eq!(
            well_known_file_in(Some("/etc/gc".into()), Some("/home/u".into())),
            Some("/etc/gc/application_default_credentials.json".into())
        );
        assert_eq!(well_known_file_in(Some("".into()), None), None);
    }
}
