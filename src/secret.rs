//! Secrets and `${env:NAME}` / `${secret:NAME}` references in spec values.
//!
//! A resolved secret lives in [`Secret`] from the moment it is read: its
//! `Debug` and `Display` print `**REDACTED**`, so it cannot leak through a log
//! line, an error or a panic message by accident. Errors name the reference,
//! never a value.

use std::fmt;

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
    #[error("secret `{name}`: {message}")]
    Backend { name: String, message: String },
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

/// Resolves every reference in `value`. `what` names the field for errors,
/// e.g. "source `influx`: `token`".
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
                Ok(v) => out.push_str(&v),
                Err(_) => {
                    return Err(ResolveError::MissingEnv {
                        what: what.to_owned(),
                        name: n.to_owned(),
                    })
                }
            },
            Some(("secret", n)) => match secrets.secret(n)? {
                Some(v) => out.push_str(v.expose()),
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
    fn env_names() {
        assert_eq!(env_name_of_secret("motherduck-token"), "MOTHERDUCK_TOKEN");
    }
}
