//! Line protocol: InfluxDB's write and export format, and a file source over it.
//!
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`, with
//! `\` escaping `,`, `=` and space in names, and quoted string field values.
//! Export files (`influx_inspect export`) add `#` comments and `CREATE`
//! statements, which are skipped. Plain or gzip (`.gz`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use flate2::read::MultiGzDecoder;

use super::columns::MISSING;
use super::{Fetch, Point, PointSink, SourceError};
use crate::plan::Batch;

/// A parsed line, borrowing nothing: fine for files of a few MB.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldValue)>,
    pub time_ns: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(String),
}

impl FieldValue {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::Float(v) => Some(*v),
            FieldValue::Int(v) => Some(*v as f64),
            FieldValue::UInt(v) => Some(*v as f64),
            FieldValue::Bool(_) | FieldValue::Str(_) => None,
        }
    }
}

/// Reads one escaped token up to an unescaped delimiter in `stops`.
fn token<'a>(s: &'a str, stops: &[char]) -> (String, &'a str) {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some((_, n)) if stops.contains(&n) || n == '\\' || n == '"' => out.push(n),
                Some((_, n)) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else if stops.contains(&c) {
            return (out, &s[i..]);
        } else {
            out.push(c);
        }
    }
    (out, "")
}

/// Parses one line; `Ok(None)` for blank lines, comments and DDL.
pub fn parse_line(line: &str) -> Result<Option<Line>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("CREATE ") {
        return Ok(None);
    }
    let (measurement, mut rest) = token(trimmed, &[',', ' ']);
    if measurement.is_empty() {
        return Err("missing measurement".into());
    }
    let mut tags = Vec::new();
    while let Some(r) = rest.strip_prefix(',') {
        let (k, r) = token(r, &['=', ' ', ',']);
        let r = r
            .strip_prefix('=')
            .ok_or_else(|| format!("tag `{k}` has no value"))?;
        let (v, r) = token(r, &[',', ' ']);
        tags.push((k, v));
        rest = r;
    }
    let mut rest = rest.trim_start_matches(' ');
    let mut fields = Vec::new();
    loop {
        let (k, r) = token(rest, &['=', ' ', ',']);
        let r = r
            .strip_prefix('=')
            .ok_or_else(|| format!("field `{k}` has no value"))?;
        let (value, r) = if let Some(q) = r.strip_prefix('"') {
            let mut s = String::new();
            let mut end = None;
            let mut it = q.char_indices();
            while let Some((i, c)) = it.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = it.next() {
                            s.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => s.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("field `{k}`: unterminated string"))?;
            (FieldValue::Str(s), &q[end + 1..])
        } else {
            let stop = r.find([',', ' ']).unwrap_or(r.len());
            (parse_scalar(&k, &r[..stop])?, &r[stop..])
        };
        fields.push((k, value));
        match r.strip_prefix(',') {
            Some(more) => rest = more,
            None => {
                rest = r;
                break;
            }
        }
    }
    let ts = rest.trim();
    let time_ns = if ts.is_empty() {
        None
    } else {
        Some(
            ts.parse::<i64>()
                .map_err(|_| format!("bad timestamp `{ts}`"))?,
        )
    };
    Ok(Some(Line {
        measurement,
        tags,
        fields,
        time_ns,
    }))
}

fn parse_scalar(key: &str, v: &str) -> Result<FieldValue, String> {
    let bad = || format!("field `{key}`: bad value `{v}`");
    if let Some(i) = v.strip_suffix('i') {
        return i.parse().map(FieldValue::Int).map_err(|_| bad());
    }
    if let Some(u) = v.strip_suffix('u') {
        return u.parse().map(FieldValue::UInt).map_err(|_| bad());
    }
    match v {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Bool(false)),
        _ => {}
    }
    v.parse().map(FieldValue::Float).map_err(|_| bad())
}

/// A line-protocol file as a source.
pub struct LineProtocolFile {
    name: String,
    path: PathBuf,
}

impl LineProtocolFile {
    pub fn new(name: &str, path: PathBuf) -> LineProtocolFile {
        LineProtocolFile {
            name: name.to_owned(),
            path,
        }
    }

    fn err(&self, message: impl Into<String>) -> SourceError {
        SourceError::File {
            source_name: self.name.clone(),
            path: self.path.display().to_string(),
            message: message.into(),
        }
    }

    pub fn describe(&self, job: &Fetch, b: Batch) -> String {
        let fields: Vec<String> = job.fields.iter().map(|f| format!("{f:?}")).collect();
        format!(
            "scan {} for measurement {:?} field{} {} tags [{}] with time in [{}, {})",
            self.path.display(),
            job.measurement,
            if fields.len() == 1 { "" } else { "s" },
            fields.join(", "),
            job.tags.join(", "),
            b.from,
            b.to
        )
    }

    pub fn check(&self) -> Result<(), SourceError> {
        std::fs::metadata(&self.path)
            .map(|_| ())
            .map_err(|e| self.err(e.to_string()))
    }

    pub async fn extract(
        &self,
        job: &Fetch,
        b: Batch,
        out: &mut PointSink,
    ) -> Result<u64, SourceError> {
        let job = job.clone();
        let path = self.path.clone();
        let name = self.name.clone();
        let tx = out.tx.clone();
        let task = tokio::task::spawn_blocking(move || {
            let me = LineProtocolFile::new(&name, path);
            let mut sink = PointSink::new(tx, job.fields.len());
            me.scan(&job, b, &mut sink)?;
            sink.flush_blocking()?;
            Ok::<u64, SourceError>(sink.rows())
        });
        let rows = task
            .await
            .map_err(|e| self.err(format!("reader thread failed: {e}")))??;
        out.sent += rows;
        Ok(rows)
    }

    fn scan(&self, job: &Fetch, b: Batch, out: &mut PointSink) -> Result<(), SourceError> {
        let file = std::fs::File::open(&self.path).map_err(|e| self.err(e.to_string()))?;
        let reader: Box<dyn BufRead> = if self.path.extension().is_some_and(|e| e == "gz") {
            Box::new(BufReader::new(MultiGzDecoder::new(file)))
        } else {
            Box::new(BufReader::new(file))
        };
        let from = b.from.0.timestamp_nanos_opt().unwrap_or(i64::MIN);
        let to = b.to.0.timestamp_nanos_opt().unwrap_or(i64::MAX);
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| self.err(format!("line {}: {e}", n + 1)))?;
            let Some(l) =
                parse_line(&line).map_err(|e| self.err(format!("line {}: {e}", n + 1)))?
            else {
                continue;
            };
            if l.measurement != job.measurement {
                continue;
            }
            let Some(t) = l.time_ns else {
                return Err(self.err(format!("line {}: no timestamp", n + 1)));
            };
            if t < from || t >= to {
                continue;
            }
            let mut values = Vec::with_capacity(job.fields.len());
            for field in &job.fields {
                values.push(match l.fields.iter().find(|(k, _)| k == field) {
                    None => MISSING,
                    Some((_, v)) => v.as_f64().ok_or_else(|| {
                        self.err(format!("line {}: field `{field}` is not numeric", n + 1))
                    })?,
                });
            }
            if values.iter().all(|v| v.is_nan()) {
                continue;
            }
            let tags = job
                .tags
                .iter()
                .map(|k| {
                    l.tags
                        .iter()
                        .find(|(tk, _)| tk == k)
                        .map(|(_, v)| v.as_str().into())
                })
                .collect();
            out.push_blocking(Point {
                time_ns: t,
                tags,
                values,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escapes_and_types() {
        let l = parse_line(r#"air\ quality,station=St\,1\ A,kind=x co=0.5,n=3i,ok=t,s="a \"b\"" 1700000000000000000"#)
            .unwrap()
            .unwrap();
        assert_eq!(l.measurement, "air quality");
        assert_eq!(
            l.tags,
            vec![
                ("station".into(), "St,1 A".into()),
                ("kind".into(), "x".into())
            ]
        );
        assert_eq!(
            l.fields,
            vec![
                ("co".into(), FieldValue::Float(0.5)),
                ("n".into(), FieldValue::Int(3)),
                ("ok".into(), FieldValue::Bool(true)),
                ("s".into(), FieldValue::Str("a \"b\"".into())),
            ]
        );
        assert_eq!(l.time_ns, Some(1_700_000_000_000_000_000));
    }

    #[test]
    fn skips_export_headers() {
        assert_eq!(parse_line("# DML").unwrap(), None);
        assert_eq!(
            parse_line("CREATE DATABASE aq WITH NAME autogen").unwrap(),
            None
        );
        assert_eq!(parse_line("").unwrap(), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_line("m,t=1 f=abc 1")
            .unwrap_err()
            .contains("bad value"));
        assert!(parse_line("m f=1 notatime")
            .unwrap_err()
            .contains("bad timestamp"));
        assert!(parse_line("m,t f=1").unwrap_err().contains("no value"));
    }

    #[test]
    fn no_timestamp_is_none() {
        assert_eq!(parse_line("m f=1").unwrap().unwrap().time_ns, None);
    }
}
