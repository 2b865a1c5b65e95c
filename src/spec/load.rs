//! Reading `pipelines.yaml`: file → typed `Spec`, YAML errors → diagnostics.

use std::path::{Path, PathBuf};

use super::diag::{did_you_mean, Diagnostic};
use super::types::Spec;
use super::values::Span;

/// A parsed spec file and what is needed to point into it.
#[derive(Debug)]
pub struct Loaded {
    /// The file as the user named it, for messages.
    pub file: String,
    /// Directory relative paths in the spec are resolved against.
    pub dir: PathBuf,
    /// The file's text.
    pub text: String,
    pub spec: Spec,
}

impl Loaded {
    /// A diagnostic pointing into this file.
    pub fn diag(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(&self.file, &self.text, span, message)
    }
}

/// Reads and parses the spec file.
pub fn load(path: &Path) -> Result<Loaded, Diagnostic> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostic::file(&file, format!("cannot read spec file: {e}")))?;
    parse(&file, path, text)
}

/// Parses spec text that came from `path`.
pub fn parse(file: &str, path: &Path, text: String) -> Result<Loaded, Diagnostic> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match serde_saphyr::from_str::<Spec>(&text) {
        Ok(spec) => Ok(Loaded {
            file: file.to_owned(),
            dir,
            text,
            spec,
        }),
        Err(e) => {
            let span = e
                .location()
                .map(|l| Span {
                    line: l.line() as usize,
                    col: l.column() as usize,
                })
                .unwrap_or_default();
            let raw = e.without_snippet().to_string();
            let found = scalar_at(&text, span);
            Err(Diagnostic::at(
                file,
                &text,
                span,
                yaml_message(&raw, found.as_deref()),
            ))
        }
    }
}

/// Rewrites serde's sentence into ours: drops the trailing position (we print
/// it ourselves) and turns "unknown field/variant" into a suggestion.
fn yaml_message(raw: &str, found: Option<&str>) -> String {
    let msg = match raw.rfind(" at line ") {
        Some(i) if raw[i..].contains(", column ") => &raw[..i],
        _ => raw,
    };
    // serde-saphyr says only "invalid u32": say what was expected and found.
    if let Some(ty) = msg.strip_prefix("invalid ") {
        if matches!(ty, "u8" | "u16" | "u32" | "u64" | "i32" | "i64") {
            return match found {
                Some(f) => format!("expected a whole number, found `{f}`"),
                None => "expected a whole number".to_owned(),
            };
        }
    }
    for (prefix, noun) in [("unknown field `", "key"), ("unknown variant `", "value")] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            if let Some((name, tail)) = rest.split_once('`') {
                let expected = expected_list(tail);
                let hint = did_you_mean(name, expected.iter().map(String::as_str));
                return if hint.is_empty() {
                    format!(
                        "unknown {noun} `{name}`; expected one of: {}",
                        expected.join(", ")
                    )
                } else {
                    format!("unknown {noun} `{name}`{hint}")
                };
            }
        }
    }
    msg.to_owned()
}

/// The plain scalar that starts at `span`, for messages.
fn scalar_at(text: &str, span: Span) -> Option<String> {
    let line = text.lines().nth(span.line.checked_sub(1)?)?;
    let rest: String = line.chars().skip(span.col.saturating_sub(1)).collect();
    let rest = rest
        .split(" #")
        .next()
        .unwrap_or("")
        .trim()
        .trim_end_matches(',');
    (!rest.is_empty()).then(|| rest.chars().take(40).collect())
}

/// Names from serde's ", expected one of a, b" / ", expected `a` or `b`" tails.
fn expected_list(tail: &str) -> Vec<String> {
    let list = tail
        .trim_start_matches(',')
        .trim()
        .trim_start_matches("expected one of")
        .trim_start_matches("expected")
        .trim();
    list.split([',', ' '])
        .map(|s| s.trim().trim_matches('`'))
        .filter(|s| !s.is_empty() && *s != "or")
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        parse("p.yaml", Path::new("p.yaml"), yaml.to_owned())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_key_suggests() {
        let e = err("sourcez: {}\n");
        assert!(
            e.starts_with(
                "error: unknown key `sourcez`; did you mean `sources`?\n  --> p.yaml:1:1"
            ),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_lists_when_nothing_is_close() {
        assert_eq!(
            yaml_message(
                "unknown field `zzz`, expected one of a, b at line 3, column 1",
                None
            ),
            "unknown key `zzz`; expected one of: a, b"
        );
        assert_eq!(
            yaml_message(
                "unknown variant `influx`, expected one of influxdb, line_protocol",
                None
            ),
            "unknown value `influx`; did you mean `influxdb`?"
        );
        assert_eq!(
            yaml_message("invalid u32 at line 2, column 4", Some("lots")),
            "expected a whole number, found `lots`"
        );
    }

    #[test]
    fn parses_minimal() {
        let l = parse("p.yaml", Path::new("dir/p.yaml"), "pipelines: {}\n".into()).unwrap();
        assert!(l.spec.pipelines.is_empty());
        assert_eq!(l.dir, PathBuf::from("dir"));
    }
}
