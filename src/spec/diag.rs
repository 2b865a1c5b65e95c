//! Diagnostics about a user-edited file: `file:line:col`, the line, a caret.
//!
//! One shape for YAML errors, validation errors and template errors, so the
//! reporter prints them all alike and tests can match them exactly.

use std::fmt;

use super::values::Span;

/// One problem in a user file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user named it (e.g. `pipelines.yaml`, `sql/hourly_mean.sql`).
    pub file: String,
    /// Where in `file`; `None` when the problem is the file as a whole.
    pub span: Option<Span>,
    /// The sentence shown after `error: `.
    pub message: String,
    /// The offending source line, when known.
    pub line_text: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at `span` in `file`, quoting the line from `source`.
    pub fn at(file: &str, source: &str, span: Span, message: impl Into<String>) -> Diagnostic {
        let line_text = (span.line > 0)
            .then(|| source.lines().nth(span.line - 1).map(str::to_owned))
            .flatten();
        Diagnostic {
            file: file.to_owned(),
            span: (span.line > 0).then_some(span),
            message: message.into(),
            line_text,
        }
    }

    /// A diagnostic about a whole file.
    pub fn file(file: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            span: None,
            message: message.into(),
            line_text: None,
        }
    }
}

impl std::error::Error for Diagnostic {}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        if let Some(h) = crate::hint::for_message(&self.message) {
            writeln!(f, "  = hint: {h}")?;
        }
        match self.span {
            None => write!(f, "  --> {}", self.file),
            Some(span) => {
                write!(f, "  --> {}:{}:{}", self.file, span.line, span.col)?;
                if let Some(text) = &self.line_text {
                    let num = span.line.to_string();
                    let pad = " ".repeat(num.len());
                    let caret_pad: String = text
                        .chars()
                        .take(span.col.saturating_sub(1))
                        .map(|c| if c == '\t' { '\t' } else { ' ' })
                        .collect();
                    write!(f, "\n{pad} |\n{num} | {text}\n{pad} | {caret_pad}^")?;
                }
                Ok(())
            }
        }
    }
}

/// The closest candidate to `name`, when one is close enough to be a likely typo.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len().max(name.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean `x`?)` or nothing.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match suggest(name, candidates) {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_and_caret() {
        let src = "a: 1\nbb: x\n";
        let d = Diagnostic::at("p.yaml", src, Span { line: 2, col: 5 }, "bad");
        assert_eq!(
            d.to_string(),
            "error: bad\n  --> p.yaml:2:5\n  |\n2 | bb: x\n  |     ^"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("delya", ["delay", "lookback"]), Some("delay"));
        assert_eq!(suggest("infux", ["influx", "sample"]), Some("influx"));
        assert_eq!(suggest("zzzz", ["delay", "jobs"]), None);
        assert_eq!(
            did_you_mean("sinc", ["sinks", "source"]),
            "; did you mean `sinks`?"
        );
    }
}
