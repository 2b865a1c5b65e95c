//! Secrets and `${env:NAME}` / `${secret:NAME}` references in spec values.
//!
//! A resolved secret lives in [`Secret`] from the moment it is read: its
//! `Debug` and `Display` print `**REDACTED**`, so it cannot leak through a log
//! line, an error or a panic message by accident. Errors name the reference,
//! never a value.
//!
//! A secret can still reach text another way: a service echoing it in an
//! error, a connection string (`md:db?motherduck_token=…`) shown whole. So
//! every value resolved from `${secret:}`, or from `${env:}` in a
//! credential position, and every key-like parameter of a connection
//! string, is also registered here, and [`redact`] removes them from any
//! text before it is printed, logged or stored (the reporter, the log
//! writer, run records, the panic hook).

use std::borrow::Cow;
use std::fmt;
use std::sync::RwLock;

/// What a redacted value is shown as.
pub const REDACTED: &str = "**REDACTED**";

/// Values shorter than this are not registered: redacting every `abc` in
/// every message would make messages unreadable, and such a value is no
/// credential worth the name.
const MIN_REGISTERED: usize = 4;

/// Values known to be secret, longest first (so a value containing another
/// is replaced whole).
static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remembers `value` as secret for [`redact`].
pub fn register(value: &str) {
    let value = value.trim();
    if value.len() < MIN_REGISTERED {
        return;
    }
    let mut known = KNOWN.write().unwrap_or_else(|p| p.into_inner());
    if !known.iter().any(|k| k == value) {
        known.push(value.to_owned());
        known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

/// Whether a parameter name looks like it carries a credential.
fn key_like(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "token",
        "password",
        "passwd",
        "pwd",
        "secret",
        "key",
        "credential",
        "auth",
        "signature",
    ]
    .iter()
    .any(|k| n.contains(k))
}

/// The `(start, end)` byte ranges of key-like parameter values in `text`
/// (`…?motherduck_token=abc&x=1`, `password=…;`).
fn param_values(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    for (i, _) in text.match_indices('=') {
        let mut k = i;
        while k > 0 && (b[k - 1].is_ascii_alphanumeric() || b"_-.".contains(&b[k - 1])) {
            k -= 1;
        }
        if k == i || !key_like(&text[k..i]) {
            continue;
        }
        let start = i + 1;
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || "&;`'\",)}]".contains(c))
            .map_or(text.len(), |e| start + e);
        if end > start {
            out.push((start, end));
        }
    }
    out
}

/// Registers the key-like parameters of a connection string (a DuckDB
/// path such as `md:db?motherduck_token=…`).
pub fn register_params(conn: &str) {
    for (s, e) in param_values(conn) {
        register(&conn[s..e]);
    }
}

/// `text` with every registered secret and every key-like parameter value
/// replaced by [`REDACTED`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let known = KNOWN.read().unwrap_or_else(|p| p.into_inner());
    let params = param_values(text);
    if params.is_empty() && !known.iter().any(|k| text.contains(k.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e) in params {
        if s >= at {
            out.push_str(&text[at..s]);
            out.push_str(REDACTED);
            at = e;
        }
    }
    out.push_str(&text[at..]);
    for k in known.iter() {
        if out.contains(k.as_str()) {
            out = out.replace(k.as_str(), REDACTED);
        }
    }
    Cow::Owned(out)
}

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

/// One `${kind:name}` in a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Env(String),
    Secret(String),
}

/// Where `${secret:NAME}` values come from.
pub trait SecretSource {
    /// The secret's value, or `None` when this source does not have it.
    fn secret(&self, name: &str) -> Result<Option<Secret>, ResolveError>;

    /// Where `name` was looked for, for the "not found" message.
    fn looked(&self, name: &str) -> String {
        format!("environment variable `{}`", env_name_of_secret(name))
    }
}

/// The environment fallback: `${secret:influxdb-token}` reads `INFLUXDB_TOKEN`.
pub struct EnvSecrets;

/// The environment variable a secret name falls back to.
pub fn env_name_of_secret(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl SecretSource for EnvSecrets {
    fn secret(&self, name: &str) -> Result<Option<Secret>, ResolveError> {
        Ok(std::env::var(env_name_of_secret(name)).ok().map(Secret))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("{what}: environment variable `{name}` is not set")]
    MissingEnv { what: String, name: String },
    #[error("{what}: secret `{name}` not found (looked in {looked})")]
    MissingSecret {
        what: String,
        name: String,
        looked: String,
    },
}

/// Secrets fetched from the state store's backend (Prefect blocks) before a
/// run, so resolving stays synchronous; anything else falls back to the environment.
pub struct Prefetched {
    pub found: std::collections::HashMap<String, Secret>,
    /// What was asked, e.g. "Prefect blocks `secret`/`gcp-credentials`".
    pub backend: String,
}

impl SecretSource for Prefetched {
    fn secret(&self, name: &str) -> Result<Option<Secret>, ResolveError> {
        match self.found.get(name) {
            Some(s) => Ok(Some(s.clone())),
            None => EnvSecrets.secret(name),
        }
    }

    fn looked(&self, name: &str) -> String {
        format!(
            "{} `{name}`, then environment variable `{}`",
            self.backend,
            env_name_of_secret(name)
        )
    }
}

/// The `${secret:NAME}` names used in `values`, each once.
pub fn secret_names<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        for r in references(v).unwrap_or_default() {
            if let Reference::Secret(n) = r {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
    }
    out
}

/// Parses the references in `value`; errors describe bad syntax.
pub fn references(value: &str) -> Result<Vec<Reference>, String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "unterminated reference in `{}`",
                redact_refs(value)
            ));
        };
        let inner = &after[..end];
        let r = match inner.split_once(':') {
            Some(("env", n)) if valid_ref_name(n) => Reference::Env(n.to_owned()),
            Some(("secret", n)) if valid_ref_name(n) => Reference::Secret(n.to_owned()),
            _ => {
                return Err(format!(
                    "bad reference `${{{inner}}}`: use `${{env:NAME}}` or `${{secret:NAME}}`"
                ))
            }
        };
        out.push(r);
        rest = &after[end + 1..];
    }
    Ok(out)
}

fn valid_ref_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

fn redact_refs(value: &str) -> String {
    // A spec value is not a secret, but it may be pasted next to one: keep messages short.
    value.chars().take(40).collect()
}

/// Whether a value contains any reference at all.
pub fn has_references(value: &str) -> bool {
    value.contains("${")
}

/// Whether the field `what` names ("sink `md`: `token`") holds a credential.
fn credential_position(what: &str) -> bool {
    ["`token`", "`password`", "`api_key`", "`credentials`"]
        .iter()
        .any(|k| what.contains(k))
}

/// Resolves every reference in `value`. `what` names the field for errors,
/// e.g. "source `influx`: `token`". Values from `${secret:}`, and from
/// `${env:}` in a credential position, are registered for [`redact`].
pub fn resolve(
    value: &str,
    what: &str,
    secrets: &dyn SecretSource,
) -> Result<Secret, ResolveError> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find('}').unwrap_or(after.len());
        let inner = &after[..end];
        match inner.split_once(':') {
            Some(("env", n)) => match std::env::var(n) {
                Ok(v) => {
                    if credential_position(what) {
                        register(&v);
                    }
                    out.push_str(&v)
                }
                Err(_) => {
                    return Err(ResolveError::MissingEnv {
                        what: what.to_owned(),
                        name: n.to_owned(),
                    })
                }
            },
            Some(("secret", n)) => match secrets.secret(n)? {
                Some(v) => {
                    register(v.expose());
                    out.push_str(v.expose())
                }
                None => {
                    return Err(ResolveError::MissingSecret {
                        what: what.to_owned(),
                        name: n.to_owned(),
                        looked: secrets.looked(n),
                    })
                }
            },
            _ => out.push_str(&rest[i..i + 2 + end + 1]),
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(Secret(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl SecretSource for Fixed {
        fn secret(&self, name: &str) -> Result<Option<Secret>, ResolveError> {
            Ok((name == "tok").then(|| Secret::new("s3cr3t")))
        }
    }

    #[test]
    fn redacts() {
        let s = Secret::new("s3cr3t");
        assert_eq!(format!("{s} {s:?}"), "**REDACTED** **REDACTED**");
        assert_eq!(s.expose(), "s3cr3t");
    }

    #[test]
    fn parses_references() {
        assert_eq!(
            references("a${env:X}b${secret:influxdb-token}").unwrap(),
            vec![
                Reference::Env("X".into()),
                Reference::Secret("influxdb-token".into())
            ]
        );
        assert!(references("${vault:x}")
            .unwrap_err()
            .contains("bad reference"));
        assert!(references("${env:X").unwrap_err().contains("unterminated"));
        assert!(references("plain").unwrap().is_empty());
    }

    #[test]
    fn resolves() {
        std::env::set_var("DUCKHOUR_TEST_HOST", "h");
        let v = resolve(
            "http://${env:DUCKHOUR_TEST_HOST}:1/${secret:tok}",
            "x",
            &Fixed,
        )
        .unwrap();
        assert_eq!(v.expose(), "http://h:1/s3cr3t");
        let e = resolve("${env:DUCKHOUR_TEST_NOPE}", "source `a`: `url`", &Fixed).unwrap_err();
        assert_eq!(
            e.to_string(),
            "source `a`: `url`: environment variable `DUCKHOUR_TEST_NOPE` is not set"
        );
        let e = resolve("${secret:other-key}", "sink `b`: `token`", &Fixed).unwrap_err();
        assert_eq!(
            e.to_string(),
            "sink `b`: `token`: secret `other-key` not found (looked in environment variable `OTHER_KEY`)"
        );
    }

    #[test]
    fn prefetched_first_then_environment() {
        std::env::set_var("DUCKHOUR_TEST_FALLBACK", "from-env");
        let p = Prefetched {
            found: [("influxdb-token".to_owned(), Secret::new("from-block"))].into(),
            backend: "Prefect blocks".into(),
        };
        let v = resolve(
            "${secret:influxdb-token}/${secret:duckhour-test-fallback}",
            "x",
            &p,
        )
        .unwrap();
        assert_eq!(v.expose(), "from-block/from-env");
        let e = resolve("${secret:nope}", "sink `b`: `token`", &p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "sink `b`: `token`: secret `nope` not found (looked in Prefect blocks `nope`, then environment variable `NOPE`)"
        );
        assert_eq!(
            secret_names(["${secret:a}${env:B}", "${secret:a}", "${secret:c}"]),
            vec!["a".to_owned(), "c".to_owned()]
        );
    }

    #[test]
    fn redacts_registered_values_and_key_like_parameters() {
        register("s3cr3t-value-1");
        register("abc"); // too short to be worth it
        assert_eq!(
            redact("failed: s3cr3t-value-1 was refused; abc"),
            "failed: **REDACTED** was refused; abc"
        );
        assert_eq!(
            redact("cannot attach `md:air?motherduck_token=eyJhbG.x-y&saas_mode=true`: 401"),
            "cannot attach `md:air?motherduck_token=**REDACTED**&saas_mode=true`: 401"
        );
        assert_eq!(
            redact("host=h;Password=p4ss;user=u"),
            "host=h;Password=**REDACTED**;user=u"
        );
        assert_eq!(redact("a=1 b=2"), "a=1 b=2");
        register_params("md:x?MOTHERDUCK_TOKEN=tok-from-path");
        assert_eq!(redact("echo tok-from-path"), "echo **REDACTED**");
        // Resolving a secret registers it.
        let v = resolve("${secret:tok}", "sink `b`: `path`", &Fixed).unwrap();
        assert_eq!(redact(&format!("x {} y", v.expose())), "x **REDACTED** y");
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name_of_secret("motherduck-token"), "MOTHERDUCK_TOKEN");
    }
}
